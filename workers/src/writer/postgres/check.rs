//! The `postgres` writer's preflight (`recman check`): the server answers,
//! is a primary of version ≥ 15, the role has the rights (`rights.rs`),
//! archiving is on and succeeding (`pg_stat_archiver`) when the writer waits
//! for it, `label_dir` and `wal_archive` are usable, and each kept restore
//! point finds the WAL it needs in `wal_archive`. Nothing is started.

use std::path::Path;

use recman_config::PostgresConfig;
use tokio::time::Instant;

use super::{archive_off_message, prune, rights, wal, PostgresWriter};
use crate::check::{fs, Finding};

const S: &str = "postgres";

/// Every finding for target `target`.
pub async fn run(target: &str, cfg: &PostgresConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let w = PostgresWriter::new(target, cfg.clone());
    match w.connect(Instant::now() + cfg.timeout).await {
        Err(e) => out.push(Finding::fail(S, e.message)),
        Ok((client, conn)) => {
            match server(cfg, &client).await {
                Ok(f) => out.extend(f),
                Err(e) => out.push(Finding::fail(S, format!("target {target}: {}", super::full(&e)))),
            }
            conn.abort();
        }
    }
    out.extend(fs::writable_dir(S, "label_dir", &cfg.label_dir));
    if let Some(a) = &cfg.wal_archive {
        out.extend(archive(cfg, a));
    } else if cfg.wait_for_archive {
        out.push(Finding::warn(
            S,
            "wal_archive is not set: cannot check that the archive holds the WAL a restore needs",
        ));
    }
    out
}

async fn server(
    cfg: &PostgresConfig,
    c: &tokio_postgres::Client,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let mut out = Vec::new();
    let row = c
        .query_one(
            "SELECT current_user::text, current_setting('server_version_num')::int, \
             current_setting('server_version'), pg_is_in_recovery()",
            &[],
        )
        .await?;
    let (user, num, version, standby): (String, i32, String, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if num < 150_000 {
        out.push(Finding::fail(
            S,
            format!("PostgreSQL {version}: the writer needs 15 or later (pg_backup_start/pg_backup_stop)"),
        ));
        return Ok(out);
    }
    out.push(Finding::ok(
        S,
        format!(
            "connected to {}:{} as {user}, PostgreSQL {version}",
            cfg.host, cfg.port
        ),
    ));
    if standby {
        out.push(Finding::fail(
            S,
            "the server is a standby (in recovery): pg_switch_wal cannot run there; point the writer at the primary",
        ));
    }
    let missing = rights::missing(c, cfg.wait_for_archive).await?;
    if missing.is_empty() {
        let names: Vec<&str> = rights::needed(cfg.wait_for_archive).map(|r| r.function).collect();
        out.push(Finding::ok(
            S,
            format!("role {user} may execute {}", names.join(", ")),
        ));
    } else {
        out.push(Finding::fail(S, rights::refusal(&user, &missing)));
    }
    let mode: String = c
        .query_one("SELECT current_setting('archive_mode')", &[])
        .await?
        .get(0);
    if mode == "off" {
        if cfg.wait_for_archive {
            out.push(Finding::fail(S, archive_off_message("this target")));
        } else {
            out.push(Finding::warn(
                S,
                "archive_mode is off: a snapshot restores only without its backup_label (crash-consistent)",
            ));
        }
        return Ok(out);
    }
    let a = c
        .query_one(
            "SELECT archived_count, last_archived_wal, last_archived_time::text, failed_count, last_failed_wal, \
             last_failed_time::text, coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) \
             FROM pg_stat_archiver",
            &[],
        )
        .await?;
    let (archived, last, last_t): (i64, Option<String>, Option<String>) = (a.get(0), a.get(1), a.get(2));
    let (failed, last_failed, failed_t, failing): (i64, Option<String>, Option<String>, bool) =
        (a.get(3), a.get(4), a.get(5), a.get(6));
    if failing {
        out.push(Finding::fail(
            S,
            format!(
                "archive_command is failing: {failed} failure(s), the last for {} at {} after the last success \
                 ({}); see the server log",
                last_failed.as_deref().unwrap_or("?"),
                failed_t.as_deref().unwrap_or("?"),
                last.as_deref().unwrap_or("none")
            ),
        ));
    } else if archived == 0 {
        out.push(Finding::warn(
            S,
            format!(
                "archive_mode = {mode} but nothing archived yet (pg_stat_archiver): is archive_command set?"
            ),
        ));
    } else {
        out.push(Finding::ok(
            S,
            format!(
                "archive_mode = {mode}, archive_command succeeding: {archived} archived, last {} at {}",
                last.as_deref().unwrap_or("?"),
                last_t.as_deref().unwrap_or("?")
            ),
        ));
    }
    Ok(out)
}

/// The archive is a directory (writable with `prune_wal`), and every kept
/// restore point (a label directory) finds its WAL there: the segments
/// from its start to the stop its `.backup` history file names.
fn archive(cfg: &PostgresConfig, dir: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        out.push(Finding::fail(
            S,
            format!("wal_archive {} is not a directory", dir.display()),
        ));
        return out;
    }
    if cfg.prune_wal {
        out.extend(fs::writable_dir(S, "wal_archive", dir).into_iter().take(1));
    }
    let names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => {
            out.push(Finding::fail(S, format!("wal_archive {}: {e}", dir.display())));
            return out;
        }
    };
    let has = |seg: &str| {
        names
            .iter()
            .any(|n| wal::segment_of(n) == Some(seg) && !n.contains(".backup") && !n.contains(".partial"))
    };
    let labels = match std::fs::read_dir(&cfg.label_dir) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.path().join("backup_label").is_file())
            .collect::<Vec<_>>(),
        Err(_) => Vec::new(),
    };
    let mut bad = Vec::new();
    for l in &labels {
        let name = l.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(l.path().join("backup_label")).unwrap_or_default();
        let Some(start) = wal::label_start_segment(&text) else {
            bad.push(format!("{name}: backup_label without START WAL LOCATION"));
            continue;
        };
        let stop = names
            .iter()
            .filter(|n| n.starts_with(&start) && n.contains(".backup"))
            .find_map(|n| {
                std::fs::read_to_string(dir.join(n))
                    .ok()
                    .and_then(|h| wal::history_stop_segment(&h))
            });
        let Some(stop) = stop else {
            bad.push(format!(
                "{name}: no backup history file {start}.*.backup in the archive"
            ));
            continue;
        };
        if let Some(gap) = wal::segments_between(&start, &stop).into_iter().find(|s| !has(s)) {
            bad.push(format!(
                "{name}: needs {gap} ({start} to {stop}), not in the archive"
            ));
        }
    }
    if bad.is_empty() {
        out.push(Finding::ok(
            S,
            format!(
                "wal_archive {}: the WAL each of {} labelled restore point(s) needs is there",
                dir.display(),
                labels.len()
            ),
        ));
    } else {
        out.push(Finding::fail(
            S,
            format!(
                "wal_archive {}: a restore would miss WAL: {}",
                dir.display(),
                bad.join("; ")
            ),
        ));
    }
    if cfg.prune_wal {
        if let Ok(Some(oldest)) = prune::oldest_kept_start(&cfg.label_dir, None) {
            out.push(Finding::ok(
                S,
                format!("prune_wal: WAL before {oldest} may be removed by retention"),
            ));
        }
    }
    out
}
