//! The `postgres` verifier: proves a `btrfs` or `copy` snapshot of a
//! PostgreSQL data directory restores. Entry points: [`verify`] and, on the
//! worker's start, [`cleanup`].
//!
//! 1. A writable clone in a scratch directory beside the snapshots,
//!    `<dest>/.recman-verify/<worker pid>.<n>/clone` (`btrfs subvolume
//!    snapshot` of the read-only snapshot: same filesystem, no data copied;
//!    `cp -a --reflink=auto` for `copy`).
//! 2. The clone gets the snapshot's stored `backup_label` (from the
//!    `postgres` writer's `label_dir`), `recovery.signal`, a `restore_command`
//!    reading the writer's `wal_archive` and `recovery_target = 'immediate'`
//!    with `promote`. Without an archive or a label the clone is started as
//!    after a crash, from its own `pg_wal` (an atomic btrfs snapshot is a
//!    crash-consistent image). A `tablespace_map` or a tablespace link is
//!    refused: the clone would write into the live cluster's tablespaces.
//! 3. `postgres` runs as the owner of the data directory (it refuses root),
//!    in its own process group, killed if the worker dies, with every
//!    setting that could reach outside the clone overridden on its command
//!    line: no TCP listener (`listen_addresses = ''`: a trusted socket in a
//!    private directory, so no other local user reaches a copy of
//!    production data), no archiving, no synchronous standbys, its own
//!    `hba_file`.
//! 4. When it accepts connections and `pg_is_in_recovery()` is false:
//!    `pg_amcheck --all --install-missing`, then the configured queries
//!    (their first rows go into `checked`). A relation pg_amcheck complains
//!    about is named in the error.
//! 5. Stopped (fast, then immediate, then SIGKILL), the clone removed.
//!
//! Every wait is bounded by the command's budget, keeping a reserve for the
//! stop and the removal. A worker killed mid-verification leaves a clone
//! (and, if the kill signal did not reach it, a running `postgres`):
//! [`cleanup`] stops and removes both when the worker starts again.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use recman_config::{PgVerifyConfig, TargetConfig, WriterConfig};
use recman_events::StepError;
use tokio::time::Instant;

use crate::pgserver::{
    free_port, io_err, left, process_alive, release_shm, shell_quote, spawn, stop, stop_orphan, user_name,
    wait_ready, Conn,
};

/// The scratch directory inside the provider's `dest`.
pub const SCRATCH: &str = ".recman-verify";
/// Longest Unix socket path (`sun_path` is 108 bytes with its NUL).
const SOCKET_PATH_MAX: usize = 107;
/// Prefix of a socket directory in the temp dir, when the scratch path is too long.
const SOCKET_FALLBACK: &str = "recman-pgv.";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// How the snapshot is cloned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CloneKind {
    Btrfs,
    Copy,
}

/// One verification's scratch: the clone, its socket dir, its log.
struct Scratch {
    dir: PathBuf,
    clone: PathBuf,
    sock: PathBuf,
    kind: CloneKind,
}

/// Verifies snapshot `name` at `snap` (inside `dest`) within `budget`.
pub async fn verify(
    cfg: &TargetConfig,
    p: &PgVerifyConfig,
    kind: CloneKind,
    dest: &Path,
    snap: &Path,
    name: &str,
    budget: Duration,
) -> Result<String, StepError> {
    let started = Instant::now();
    let end = started + budget;
    // Kept for stopping PostgreSQL and removing the clone.
    let reserve = (budget / 5).min(Duration::from_secs(30));
    let work_end = end - reserve;
    if !snap.is_dir() {
        return Err(StepError::new(
            "snapshot_missing",
            format!("{} is not there (deleted?)", snap.display()),
            false,
        ));
    }
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let tag = format!("{}.{n}", std::process::id());
    let root = dest.join(SCRATCH);
    let dir = root.join(&tag);
    for d in [&root, &dir] {
        fs::create_dir_all(d).map_err(|e| io_err("creating", d, e))?;
        // Traversable by the PostgreSQL user, listable by nobody else.
        fs::set_permissions(d, fs::Permissions::from_mode(0o711)).map_err(|e| io_err("chmod", d, e))?;
    }
    let mut sock = dir.join("s");
    if sock.as_os_str().len() + ".s.PGSQL.65535".len() + 1 > SOCKET_PATH_MAX {
        sock = std::env::temp_dir().join(format!("{SOCKET_FALLBACK}{tag}"));
    }
    let s = Scratch {
        clone: dir.join("clone"),
        dir,
        sock,
        kind,
    };
    let mut server: Option<tokio::process::Child> = None;
    let r = run(cfg, p, snap, name, &s, &mut server, work_end, started).await;
    let stopped = match server.as_mut() {
        Some(child) => stop(child, end, "verify_cleanup_failed").await,
        None => Ok(()),
    };
    let removed = remove(&s, &p.data_dir, end).await;
    let checked = r?;
    stopped?;
    removed?;
    Ok(checked)
}

#[allow(clippy::too_many_arguments)]
async fn run(
    cfg: &TargetConfig,
    p: &PgVerifyConfig,
    snap: &Path,
    name: &str,
    s: &Scratch,
    server: &mut Option<tokio::process::Child>,
    end: Instant,
    started: Instant,
) -> Result<String, StepError> {
    make_clone(snap, s, end).await?;
    let data = s.clone.join(&p.data_dir);
    if !data.join("PG_VERSION").is_file() {
        return Err(StepError::new(
            "not_a_cluster",
            format!(
                "snapshot {name} has no PG_VERSION in {}: set [target.verify] data_dir to the data \
                 directory's path inside the snapshot (e.g. \"data\")",
                snap.join(&p.data_dir).display()
            ),
            false,
        ));
    }
    let meta = fs::metadata(&data).map_err(|e| io_err("reading", &data, e))?;
    let (uid, gid) = (meta.uid(), meta.gid());
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if uid == 0 {
        return Err(StepError::new(
            "verify_unsupported",
            format!(
                "{} is owned by root: PostgreSQL refuses to run as root (the data directory belongs to the \
                 postgres OS user)",
                data.display()
            ),
            false,
        ));
    }
    if euid != 0 && euid != uid {
        return Err(StepError::new(
            "permission_denied",
            format!(
                "the data directory of snapshot {name} belongs to uid {uid}: run the verify worker as root \
                 (it starts PostgreSQL as that user) or as that user"
            ),
            false,
        ));
    }
    let writer = match &cfg.writer {
        WriterConfig::Postgres(w) => Some(w),
        _ => None,
    };
    let label = writer
        .map(|w| w.label_dir.join(name))
        .filter(|d| d.join("backup_label").is_file());
    let archive = writer.and_then(|w| w.wal_archive.clone());
    let settings = prepare(&data, s, label.as_deref(), archive.as_deref(), uid, gid)?;
    let mode = match (&label, &archive) {
        (Some(_), Some(_)) => "recovered from its backup_label and the WAL archive",
        (Some(_), None) => "crash recovery from its pg_wal (no wal_archive configured)",
        (None, _) => "crash recovery from its pg_wal (no backup_label stored)",
    };
    let port = free_port()?;
    let log = s.dir.join("postgres.log");
    *server = Some(spawn(
        (&p.bin_dir, "[target.verify] bin_dir"),
        &data,
        &log,
        port,
        &settings,
        &s.dir,
        uid,
        gid,
    )?);
    let user = match &p.user {
        Some(u) => u.clone(),
        None => user_name(uid).ok_or_else(|| {
            StepError::new(
                "verify_unsupported",
                format!("uid {uid} (the data directory's owner) has no name: set [target.verify] user"),
                false,
            )
        })?,
    };
    let conn = Conn {
        sock: s.sock.clone(),
        port,
        user,
    };
    let child = server
        .as_mut()
        .ok_or_else(|| StepError::new("internal", "no server", true))?;
    wait_ready(child, &conn, &log, &format!("the clone of {name}"), end).await?;
    let ready = started.elapsed();
    let amcheck = amcheck(p, &conn, name, end).await?;
    let mut checked = format!("{mode} in {:.1} s; {amcheck}", ready.as_secs_f64());
    for q in &p.queries {
        let row = query(&conn, &p.dbname, q, end).await?;
        checked.push_str(&format!("; {q} = {row}"));
    }
    Ok(crate::exec::tail(&checked))
}

async fn make_clone(snap: &Path, s: &Scratch, end: Instant) -> Result<(), StepError> {
    let (src, dst) = (snap.display().to_string(), s.clone.display().to_string());
    let argv: Vec<String> = match s.kind {
        CloneKind::Btrfs => ["btrfs", "subvolume", "snapshot", &src, &dst]
            .map(String::from)
            .to_vec(),
        CloneKind::Copy => ["cp", "-a", "--reflink=auto", &src, &dst]
            .map(String::from)
            .to_vec(),
    };
    crate::exec::run(&argv, &[], left(end)).await.map_err(|e| {
        StepError::new(
            e.code,
            format!(
                "cloning {src} into {dst}: {} (is there space for the clone?)",
                e.message
            ),
            e.retryable,
        )
    })?;
    Ok(())
}

/// Readies the clone's data directory; returns the `-c` settings.
fn prepare(
    data: &Path,
    s: &Scratch,
    label: Option<&Path>,
    archive: Option<&Path>,
    uid: u32,
    gid: u32,
) -> Result<Vec<(String, String)>, StepError> {
    let tblspc = data.join("pg_tblspc");
    let linked = fs::read_dir(&tblspc)
        .map(|rd| rd.filter_map(Result::ok).count())
        .unwrap_or(0);
    if linked > 0 || label.is_some_and(|l| l.join("tablespace_map").is_file()) {
        return Err(StepError::new(
            "verify_unsupported",
            format!(
                "{} has tablespaces outside the data directory: a clone would recover into the live \
                 cluster's tablespace directories, so the postgres verifier refuses it",
                tblspc.display()
            ),
            false,
        ));
    }
    crate::pgserver::clear_recovery_files(data)?;
    let write = |p: &Path, text: &str, owned: bool| -> Result<(), StepError> {
        fs::write(p, text).map_err(|e| io_err("writing", p, e))?;
        if owned {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| io_err("chown", p, e))?;
        }
        Ok(())
    };
    // A Debian cluster keeps its configuration in /etc: none in the data dir.
    if !data.join("postgresql.conf").exists() {
        write(&data.join("postgresql.conf"), "", true)?;
    }
    let hba = s.dir.join("pg_hba.conf");
    write(&hba, "local all all trust\n", true)?;
    let ident = s.dir.join("pg_ident.conf");
    write(&ident, "", true)?;
    fs::create_dir_all(&s.sock).map_err(|e| io_err("creating", &s.sock, e))?;
    fs::set_permissions(&s.sock, fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err("chmod", &s.sock, e))?;
    std::os::unix::fs::chown(&s.sock, Some(uid), Some(gid)).map_err(|e| io_err("chown", &s.sock, e))?;
    let set = |k: &str, v: &str| (k.to_string(), v.to_string());
    let mut settings = vec![
        set("data_directory", &data.display().to_string()),
        set("hba_file", &hba.display().to_string()),
        set("ident_file", &ident.display().to_string()),
        set("listen_addresses", ""),
        set("unix_socket_directories", &s.sock.display().to_string()),
        set("unix_socket_permissions", "0700"),
        // Never the live cluster's external pid file.
        set(
            "external_pid_file",
            &s.sock.join("external.pid").display().to_string(),
        ),
        set("archive_mode", "off"),
        set("synchronous_standby_names", ""),
        set("primary_conninfo", ""),
        set("ssl", "off"),
        set("logging_collector", "off"),
        set("log_destination", "stderr"),
        set("autovacuum", "off"),
        set("shared_buffers", "128MB"),
        set("huge_pages", "off"),
        // Not a hot standby: no connections before it is promoted, and no
        // check that max_connections & co. are at least the primary's.
        set("hot_standby", "off"),
    ];
    if let (Some(l), Some(a)) = (label, archive) {
        fs::copy(l.join("backup_label"), data.join("backup_label"))
            .map_err(|e| io_err("copying", &l.join("backup_label"), e))?;
        std::os::unix::fs::chown(data.join("backup_label"), Some(uid), Some(gid))
            .map_err(|e| io_err("chown", &data.join("backup_label"), e))?;
        write(&data.join("recovery.signal"), "", true)?;
        settings.push(set(
            "restore_command",
            &format!("cp {}/%f %p", shell_quote(&a.display().to_string())),
        ));
        settings.push(set("recovery_target", "immediate"));
        settings.push(set("recovery_target_action", "promote"));
    }
    Ok(settings)
}

/// `pg_amcheck --all`: what it found, or the relations it complained about.
async fn amcheck(p: &PgVerifyConfig, conn: &Conn, name: &str, end: Instant) -> Result<String, StepError> {
    let prog = p.bin_dir.join("pg_amcheck");
    let mut cmd = tokio::process::Command::new(&prog);
    cmd.args(["--all", "--install-missing", "--no-password", "-h"])
        .arg(&conn.sock)
        .args(["-p", &conn.port.to_string(), "-U", &conn.user])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    crate::exec::die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| crate::pgserver::cannot_run(&prog, e, "[target.verify] bin_dir"))?;
    let out = match tokio::time::timeout_at(end, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(StepError::new("exec_failed", format!("pg_amcheck: {e}"), false)),
        Err(_) => {
            return Err(StepError::new(
                "timeout",
                format!("pg_amcheck on the clone of {name} did not finish in time: stopped"),
                true,
            ))
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Ok("pg_amcheck --all: no corruption found".into());
    }
    let rels = complained_about(&stdout);
    if rels.is_empty() {
        return Err(StepError::new(
            "amcheck_failed",
            format!(
                "pg_amcheck on the clone of {name} failed ({}): {}",
                out.status,
                crate::exec::tail(&format!("{stdout}{stderr}"))
            ),
            false,
        ));
    }
    Err(StepError::new(
        "corrupt_relation",
        crate::exec::tail(&format!(
            "pg_amcheck found corruption in snapshot {name}: {}: {}",
            rels.join(", "),
            stdout.trim()
        )),
        false,
    ))
}

/// The relations named by pg_amcheck's report lines (`heap table
/// "db.schema.rel", block 0, offset 1:` / `btree index "db.schema.idx":`).
pub fn complained_about(report: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in report.lines() {
        let line = line.trim_start();
        for kind in ["heap table \"", "btree index \"", "toast table \""] {
            if let Some(rest) = line.strip_prefix(kind) {
                if let Some((rel, _)) = rest.split_once('"') {
                    let what = format!("{kind}{rel}\"");
                    if !out.contains(&what) {
                        out.push(what);
                    }
                }
            }
        }
    }
    out
}

/// The first row of `q` in `dbname`, its values joined by ", ".
async fn query(conn: &Conn, dbname: &str, q: &str, end: Instant) -> Result<String, StepError> {
    let fail = |e: String| {
        StepError::new(
            "query_failed",
            crate::exec::tail(&format!("query \"{q}\" on the clone failed: {e}")),
            false,
        )
    };
    let run = async {
        let (client, connection) = conn
            .config(dbname)
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let h = tokio::spawn(connection);
        let r = client.simple_query(q).await.map_err(|e| e.to_string());
        drop(client);
        h.abort();
        r
    };
    let msgs = tokio::time::timeout_at(end, run)
        .await
        .map_err(|_| StepError::new("timeout", format!("query \"{q}\" did not finish in time"), true))?
        .map_err(fail)?;
    for m in msgs {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
            let vals: Vec<String> = (0..row.len())
                .map(|i| row.get(i).unwrap_or("NULL").to_string())
                .collect();
            return Ok(vals.join(", "));
        }
    }
    Ok("no rows".into())
}

/// Removes the clone, its scratch and socket directories.
async fn remove(s: &Scratch, data_dir: &Path, end: Instant) -> Result<(), StepError> {
    let (dir, clone, sock) = (s.dir.clone(), s.clone.clone(), s.sock.clone());
    let data = clone.join(data_dir);
    let work = crate::blocking("postgres-verify", move || {
        release_shm(&data);
        remove_clone(&clone)?;
        let _ = fs::remove_dir_all(&sock);
        fs::remove_dir_all(&dir).map_err(|e| io_err("removing", &dir, e))
    });
    let budget = left(end).max(Duration::from_secs(30));
    tokio::time::timeout(budget, work).await.unwrap_or_else(|_| {
        Err(StepError::new(
            "verify_cleanup_failed",
            "removing the clone did not finish in time (the worker removes it when it starts)",
            true,
        ))
    })
}

/// Blocking: deletes a clone (a btrfs subvolume or a directory).
fn remove_clone(clone: &Path) -> Result<(), StepError> {
    let Ok(meta) = fs::symlink_metadata(clone) else {
        return Ok(());
    };
    // Inode 256 is the root directory of every btrfs subvolume.
    if !(meta.is_dir() && meta.ino() == 256) {
        return fs::remove_dir_all(clone).map_err(|e| io_err("removing", clone, e));
    }
    let out = std::process::Command::new("btrfs")
        .args(["subvolume", "delete"])
        .arg(clone)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io_err("running btrfs subvolume delete on", clone, e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(StepError::new(
        "verify_cleanup_failed",
        format!(
            "btrfs subvolume delete {}: {}",
            clone.display(),
            crate::exec::tail(&String::from_utf8_lossy(&out.stderr))
        ),
        true,
    ))
}

/// Blocking, on the worker's start: for each scratch entry of a worker that
/// is gone, stops a PostgreSQL still running on its clone (immediate, then
/// SIGKILL), removes the clone and the entry; returns what it removed. A
/// live worker's verification (another process of the host) is left alone.
pub fn cleanup(dest: &Path, data_dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let root = dest.join(SCRATCH);
    let dead = |name: &str| -> bool {
        let Some(pid) = name.split_once('.').and_then(|(p, _)| p.parse::<i32>().ok()) else {
            return false;
        };
        pid != std::process::id() as i32 && !process_alive(pid)
    };
    if let Ok(rd) = fs::read_dir(&root) {
        for e in rd.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !dead(&name) {
                continue;
            }
            let dir = e.path();
            let clone = dir.join("clone");
            let data = clone.join(data_dir);
            if let Some(pid) = stop_orphan(&data) {
                removed.push(format!("PostgreSQL (pid {pid}) on {}", data.display()));
            }
            release_shm(&data);
            match remove_clone(&clone) {
                Ok(()) => {}
                Err(err) => {
                    tracing::warn!(clone = %clone.display(), code = %err.code, message = %err.message, "could not remove a verification clone");
                    continue;
                }
            }
            if fs::remove_dir_all(&dir).is_ok() {
                removed.push(dir.display().to_string());
            }
        }
    }
    if let Ok(rd) = fs::read_dir(std::env::temp_dir()) {
        for e in rd.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(tag) = name.strip_prefix(SOCKET_FALLBACK) {
                if dead(tag) && fs::remove_dir_all(e.path()).is_ok() {
                    removed.push(e.path().display().to_string());
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_relations_pg_amcheck_complained_about() {
        let report = "heap table \"postgres.public.known\", block 0, offset 1:\n    line pointer ...\n\
                      heap table \"postgres.public.known\", block 0, offset 2:\n    x\n\
                      btree index \"postgres.public.known_pkey\":\n    ERROR:  invalid page\n";
        assert_eq!(
            complained_about(report),
            [
                "heap table \"postgres.public.known\"",
                "btree index \"postgres.public.known_pkey\""
            ]
        );
        assert!(complained_about("pg_amcheck: error: connection failed").is_empty());
    }

    #[test]
    fn restore_command_quotes_the_archive() {
        assert_eq!(shell_quote("/srv/a b"), "'/srv/a b'");
        assert_eq!(shell_quote("/srv/it's"), r"'/srv/it'\''s'");
    }

    #[test]
    fn cleanup_leaves_a_live_workers_scratch_and_removes_a_dead_ones() {
        let dest = tempfile::tempdir().unwrap();
        let root = dest.path().join(SCRATCH);
        let live = root.join(format!("{}.0", std::process::id()));
        // A child that has exited and been reaped: its pid is free.
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = c.id();
        c.wait().unwrap();
        let dead = root.join(format!("{dead_pid}.3"));
        for d in [&live, &dead] {
            fs::create_dir_all(d.join("clone/data")).unwrap();
        }
        let removed = cleanup(dest.path(), Path::new("data"));
        assert!(live.exists());
        assert!(!dead.exists(), "{removed:?}");
        assert_eq!(removed, [dead.display().to_string()]);
    }
}
