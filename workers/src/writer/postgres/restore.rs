//! Recovery of a PostgreSQL cluster whose files a provider restored (in
//! place, or beside production with `--to`): the restore point's stored
//! `backup_label` goes back into the data directory with `recovery.signal`
//! and a `restore_command` reading `wal_archive`; a private server (no TCP
//! listener, a socket in a private directory, run as the directory's owner,
//! killed with the worker: `crate::pgserver`) replays WAL to the target
//! (the restore point itself, a time, or the end of the archive), is
//! promoted, and is shut down cleanly. The caller then starts the cluster
//! as usual (in place: the writer's `start` hook), on consistent files, so
//! no application ever connects to a half-recovered database.
//!
//! Steps are redelivered after a crash, so the data directory carries a
//! mark, `recman_recovery`, holding `JOB recovering` or `JOB done`: a
//! second run of the same job resumes a recovery (PostgreSQL continues from
//! its control file; the label is not put back over a recovery in
//! progress) or does nothing once it is done (the application may be
//! running on the data by then). A new restore of the files brings the
//! point's own data directory back, without this job's mark.
//!
//! Beside production the private server does not archive (the copy must
//! not write its new timeline into production's archive), and
//! `archive_mode = off` is left in the copy's `postgresql.auto.conf`. In
//! place it archives as the cluster's own configuration says, so the new
//! timeline's history file reaches the archive as after any promotion.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use recman_config::PostgresConfig;
use recman_events::{JobId, StepError, TargetId, Until};
use tokio::time::Instant;

use crate::pgserver::{self, io_err, Conn};

/// The mark of a recovery in the data directory.
pub const MARK: &str = "recman_recovery";
/// Prefix of a private server's scratch directory in the temp dir.
const SCRATCH_PREFIX: &str = "recman-pgr.";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// What to recover: restore point `point` of `target`, replayed `until`.
#[derive(Clone, Debug)]
pub struct Replay<'a> {
    pub target: &'a TargetId,
    pub point: &'a str,
    pub until: Option<Until>,
    pub job: JobId,
    /// Beside production (`--to`): the copy does not archive.
    pub beside: bool,
    /// When the step's deadline passes.
    pub end: Instant,
}

/// How the point can be recovered, decided before any file is touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The stored `backup_label` and the WAL archive.
    Archive { label: PathBuf, archive: PathBuf },
    /// Crash recovery from the point's own `pg_wal` (an atomic snapshot is
    /// a crash-consistent image); why the archive is not used.
    Crash { why: &'static str },
}

fn refuse(code: &str, msg: String) -> StepError {
    StepError::new(code, msg, false)
}

/// Checks, before the restore touches anything, that restore point `point`
/// can be recovered as asked: a replay past the point needs its label and
/// the archive; a tablespace outside the data directory is not restored by
/// the provider, so its cluster is refused.
pub fn plan(cfg: &PostgresConfig, r: &Replay<'_>) -> Result<Plan, StepError> {
    let t = r.target;
    if cfg.data_directory.is_none() {
        return Err(refuse(
            "not_supported",
            format!(
                "target {t}: the postgres writer has no data_directory: set data_directory = \"/path/to/data\" \
                 in [target.writer] (inside the provider's source) so a restore recovers the cluster"
            ),
        ));
    }
    let dir = cfg.label_dir.join(r.point);
    let label = dir.join("backup_label");
    if dir.join("tablespace_map").is_file() {
        return Err(refuse(
            "not_supported",
            format!(
                "restore point {} of {t} has a tablespace_map: tablespaces outside the data directory are not \
                 part of the provider's snapshot, so the cluster cannot be restored consistently",
                r.point
            ),
        ));
    }
    let plan = match (label.is_file(), &cfg.wal_archive) {
        (true, Some(a)) => Plan::Archive {
            label,
            archive: a.clone(),
        },
        (false, _) => Plan::Crash {
            why: "no backup_label stored for the point",
        },
        (true, None) => Plan::Crash {
            why: "no wal_archive configured",
        },
    };
    if let (Some(u), Plan::Crash { why }) = (r.until, &plan) {
        return Err(refuse(
            "not_supported",
            format!(
                "--until {u} replays the WAL archive past restore point {} of {t}, but there is {why}: restore \
                 the point itself",
                r.point
            ),
        ));
    }
    Ok(plan)
}

/// The data directory under `root`, a tree holding what the provider's live
/// tree `live` holds.
pub fn data_under(cfg: &PostgresConfig, live: &Path, root: &Path) -> Result<PathBuf, StepError> {
    let data = cfg.data_directory.as_deref().unwrap_or(live);
    let rel = data.strip_prefix(live).map_err(|_| {
        refuse(
            "config_error",
            format!(
                "data_directory {} is not inside the provider's source {}: the restore does not hold it",
                data.display(),
                live.display()
            ),
        )
    })?;
    Ok(root.join(rel))
}

/// Recovers the cluster in `data` as `r` asks; what it recovered to.
pub async fn recover(cfg: &PostgresConfig, data: &Path, r: &Replay<'_>) -> Result<String, StepError> {
    let plan = plan(cfg, r)?;
    let started = Instant::now();
    let (cfg2, data2, job, beside, plan2) = (cfg.clone(), data.to_path_buf(), r.job, r.beside, plan.clone());
    let prepared = crate::blocking("postgres-restore", move || {
        prepare(&cfg2, &data2, job, beside, &plan2)
    })
    .await?;
    let Prepared {
        resume,
        owner: (uid, gid),
        scratch,
    } = match prepared {
        Some(p) => p,
        None => return Ok(format!("recovered earlier by job {job}")),
    };
    let out = run(cfg, data, r, &plan, &scratch, (uid, gid), resume).await;
    let _ = fs::remove_dir_all(&scratch);
    let note = out?;
    let data2 = data.to_path_buf();
    crate::blocking("postgres-restore", move || {
        if beside {
            leave_unarchived(&data2, uid, gid)?;
        }
        write_mark(&data2, &format!("{job} done"), uid, gid)
    })
    .await?;
    Ok(format!("{note} in {:.1} s", started.elapsed().as_secs_f64()))
}

struct Prepared {
    /// A recovery of this job was under way: PostgreSQL resumes it.
    resume: bool,
    owner: (u32, u32),
    scratch: PathBuf,
}

/// Blocking: readies `data` for recovery; `None` when this job recovered it already.
fn prepare(
    cfg: &PostgresConfig,
    data: &Path,
    job: JobId,
    beside: bool,
    plan: &Plan,
) -> Result<Option<Prepared>, StepError> {
    if !data.join("PG_VERSION").is_file() {
        return Err(refuse(
            "not_a_cluster",
            format!(
                "{} has no PG_VERSION after the restore: is data_directory the cluster's data directory?",
                data.display()
            ),
        ));
    }
    if let Some(pid) = pgserver::running_postmaster(data) {
        return Err(StepError::new(
            "cluster_running",
            format!(
                "a PostgreSQL server (pid {pid}) runs on {}: it must be stopped before recovery",
                data.display()
            ),
            true,
        ));
    }
    let meta = fs::metadata(data).map_err(|e| io_err("reading", data, e))?;
    let (uid, gid) = (meta.uid(), meta.gid());
    if uid == 0 {
        return Err(refuse(
            "not_supported",
            format!(
                "{} is owned by root: PostgreSQL refuses to run as root",
                data.display()
            ),
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && euid != uid {
        return Err(refuse(
            "permission_denied",
            format!(
                "{} belongs to uid {uid}: run the worker as root (it starts PostgreSQL as that user) or as that user",
                data.display()
            ),
        ));
    }
    let mark = fs::read_to_string(data.join(MARK)).unwrap_or_default();
    let mark = mark.trim();
    if mark == format!("{job} done") {
        return Ok(None);
    }
    let resume = mark == format!("{job} recovering");
    if !resume {
        pgserver::clear_recovery_files(data)?;
        if let Plan::Archive { label, .. } = plan {
            let to = data.join("backup_label");
            fs::copy(label, &to).map_err(|e| io_err("copying", label, e))?;
            std::os::unix::fs::chown(&to, Some(uid), Some(gid)).map_err(|e| io_err("chown", &to, e))?;
        }
    }
    if resume {
        // The killed server's lock file and shared memory (its children
        // exit when they see the postmaster gone).
        pgserver::release_shm(data);
        let pid = data.join("postmaster.pid");
        match fs::remove_file(&pid) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &pid, e)),
        }
    }
    // A resumed recovery keeps its signal, or has none left because it was
    // promoted already (PostgreSQL removes it then): it is not put back.
    if matches!(plan, Plan::Archive { .. }) && !resume {
        let sig = data.join("recovery.signal");
        fs::write(&sig, "").map_err(|e| io_err("writing", &sig, e))?;
        std::os::unix::fs::chown(&sig, Some(uid), Some(gid)).map_err(|e| io_err("chown", &sig, e))?;
    }
    if !data.join("postgresql.conf").exists() {
        if beside {
            // A Debian cluster keeps its configuration in /etc: the copy gets an empty one.
            let p = data.join("postgresql.conf");
            fs::write(&p, "").map_err(|e| io_err("writing", &p, e))?;
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(|e| io_err("chown", &p, e))?;
        } else if cfg.config_file.is_none() {
            return Err(refuse(
                "config_error",
                format!(
                    "{} has no postgresql.conf: set config_file = \"/etc/postgresql/15/main/postgresql.conf\" in \
                     [target.writer], so the recovery runs with the cluster's own settings",
                    data.display()
                ),
            ));
        }
    }
    write_mark(data, &format!("{job} recovering"), uid, gid)?;
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let scratch = std::env::temp_dir().join(format!("{SCRATCH_PREFIX}{}.{n}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir(&scratch).map_err(|e| io_err("creating", &scratch, e))?;
    fs::set_permissions(&scratch, fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err("chmod", &scratch, e))?;
    std::os::unix::fs::chown(&scratch, Some(uid), Some(gid)).map_err(|e| io_err("chown", &scratch, e))?;
    for (f, text) in [("pg_hba.conf", "local all all trust\n"), ("pg_ident.conf", "")] {
        let p = scratch.join(f);
        fs::write(&p, text).map_err(|e| io_err("writing", &p, e))?;
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(|e| io_err("chown", &p, e))?;
    }
    Ok(Some(Prepared {
        resume,
        owner: (uid, gid),
        scratch,
    }))
}

/// On the worker's start: the scratch directories (socket, hba file, log)
/// of recoveries whose worker process is gone. Blocking.
pub fn cleanup() -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir(std::env::temp_dir()) else {
        return removed;
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(SCRATCH_PREFIX)
            .and_then(|rest| rest.split('.').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() as i32
            && !pgserver::process_alive(pid)
            && fs::remove_dir_all(e.path()).is_ok()
        {
            removed.push(e.path().display().to_string());
        }
    }
    removed
}

/// Blocking: writes the mark durably.
fn write_mark(data: &Path, text: &str, uid: u32, gid: u32) -> Result<(), StepError> {
    let p = data.join(MARK);
    let tmp = data.join(format!("{MARK}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(|e| io_err("writing", &tmp, e))?;
    f.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err("writing", &tmp, e))?;
    std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(|e| io_err("chown", &tmp, e))?;
    fs::rename(&tmp, &p).map_err(|e| io_err("renaming", &tmp, e))?;
    fs::File::open(data)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing", data, e))
}

/// Blocking: the copy beside production must not archive into production's
/// archive when it is started.
fn leave_unarchived(data: &Path, uid: u32, gid: u32) -> Result<(), StepError> {
    let p = data.join("postgresql.auto.conf");
    let mut text = fs::read_to_string(&p).unwrap_or_default();
    if text.contains("# recman restore --to") {
        return Ok(());
    }
    text.push_str(
        "# recman restore --to: this copy must not archive into the production cluster's WAL archive.\n\
         # Remove the next line (or ALTER SYSTEM RESET archive_mode) to archive elsewhere.\n\
         archive_mode = 'off'\n",
    );
    fs::write(&p, text).map_err(|e| io_err("writing", &p, e))?;
    std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(|e| io_err("chown", &p, e))
}

/// The recovery settings on the private server's command line.
pub fn settings(
    cfg: &PostgresConfig,
    data: &Path,
    scratch: &Path,
    r: &Replay<'_>,
    plan: &Plan,
) -> Vec<(String, String)> {
    let set = |k: &str, v: &str| (k.to_string(), v.to_string());
    let path = |p: &Path| p.display().to_string();
    let mut s = Vec::new();
    if !data.join("postgresql.conf").exists() {
        if let Some(c) = &cfg.config_file {
            s.push(set("config_file", &path(c)));
        }
    }
    s.extend([
        set("data_directory", &path(data)),
        set("hba_file", &path(&scratch.join("pg_hba.conf"))),
        set("ident_file", &path(&scratch.join("pg_ident.conf"))),
        set("listen_addresses", ""),
        set("unix_socket_directories", &path(scratch)),
        set("unix_socket_permissions", "0700"),
        set("external_pid_file", &path(&scratch.join("external.pid"))),
        set("synchronous_standby_names", ""),
        set("primary_conninfo", ""),
        set("ssl", "off"),
        set("logging_collector", "off"),
        set("log_destination", "stderr"),
        set("hot_standby", "off"),
    ]);
    if r.beside {
        s.push(set("archive_mode", "off"));
    }
    if let Plan::Archive { archive, .. } = plan {
        s.push(set(
            "restore_command",
            &format!("cp {}/%f %p", pgserver::shell_quote(&path(archive))),
        ));
        s.push(set("recovery_target_action", "promote"));
        s.push(set("recovery_target_timeline", "latest"));
        match r.until {
            None => s.push(set("recovery_target", "immediate")),
            Some(Until::Time(ms)) => s.push(set("recovery_target_time", &pg_time(ms))),
            Some(Until::Latest) => {}
        }
    }
    s
}

/// `2026-11-30 10:15:00.123+00`: PostgreSQL's `recovery_target_time`
/// takes no `T` and no `Z`.
fn pg_time(ms: u64) -> String {
    let t = recman_events::time::rfc3339(ms);
    format!("{}+00", t.trim_end_matches('Z').replacen('T', " ", 1))
}

async fn run(
    cfg: &PostgresConfig,
    data: &Path,
    r: &Replay<'_>,
    plan: &Plan,
    scratch: &Path,
    (uid, gid): (u32, u32),
    resume: bool,
) -> Result<String, StepError> {
    let settings = settings(cfg, data, scratch, r, plan);
    let port = pgserver::free_port()?;
    let log = scratch.join("postgres.log");
    let mut child = pgserver::spawn(
        (&cfg.bin_dir, "[target.writer] bin_dir"),
        data,
        &log,
        port,
        &settings,
        scratch,
        uid,
        gid,
    )?;
    let user = pgserver::user_name(uid).ok_or_else(|| {
        refuse(
            "not_supported",
            format!("uid {uid} (the data directory's owner) has no name"),
        )
    })?;
    let conn = Conn {
        sock: scratch.to_path_buf(),
        port,
        user,
    };
    // Keep a reserve of the step's time for the shutdown.
    let reserve = r
        .end
        .saturating_duration_since(Instant::now())
        .div_f64(5.0)
        .min(std::time::Duration::from_secs(30));
    let what = format!("restore point {} of {}", r.point, r.target);
    let ready = pgserver::wait_ready(&mut child, &conn, &log, &what, r.end - reserve).await;
    let found = match ready {
        Ok(()) => recovered_to(&conn, r.end - reserve).await,
        Err(e) => Err(e),
    };
    let stopped = pgserver::stop(&mut child, r.end, "postgres_stop_failed").await;
    let found = found?;
    stopped?;
    let to = match (plan, r.until) {
        (Plan::Crash { why }, _) => format!("crash recovery from its pg_wal ({why})"),
        (Plan::Archive { .. }, None) => "the restore point (backup_label and WAL archive)".to_string(),
        (Plan::Archive { .. }, Some(Until::Latest)) => "the end of the WAL archive".to_string(),
        (Plan::Archive { .. }, Some(u @ Until::Time(_))) => format!("{u} (WAL archive)"),
    };
    let resumed = if resume { ", resumed" } else { "" };
    Ok(format!("recovered to {to}{resumed}: {found}"))
}

/// `LSN 0/5000060 on timeline 2, last transaction replayed 2026-…`.
async fn recovered_to(conn: &Conn, end: Instant) -> Result<String, StepError> {
    let q = "SELECT pg_current_wal_lsn()::text, substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8), \
             coalesce(to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), 'none')";
    let row = tokio::time::timeout_at(end, conn.query_one("template1", q))
        .await
        .map_err(|_| {
            StepError::new(
                "timeout",
                "reading the recovered LSN did not finish in time",
                true,
            )
        })?
        .map_err(|e| StepError::new("query_failed", format!("reading the recovered LSN: {e}"), true))?;
    let (lsn, tli, at): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let tli = u32::from_str_radix(&tli, 16).map_or(tli, |t| t.to_string());
    Ok(format!(
        "LSN {lsn} on timeline {tli}, last transaction replayed {at}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_time_is_written_as_postgres_reads_it() {
        assert_eq!(pg_time(951_868_800_500), "2000-03-01 00:00:00.500+00");
    }

    #[test]
    fn cleanup_removes_a_dead_workers_scratch_only() {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let dead = c.id();
        c.wait().unwrap();
        let tmp = std::env::temp_dir();
        let gone = tmp.join(format!("{SCRATCH_PREFIX}{dead}.0"));
        let mine = tmp.join(format!("{SCRATCH_PREFIX}{}.77", std::process::id()));
        for d in [&gone, &mine] {
            fs::create_dir_all(d).unwrap();
        }
        let removed = cleanup();
        assert!(!gone.exists(), "{removed:?}");
        assert!(mine.exists());
        fs::remove_dir_all(&mine).unwrap();
    }
}
