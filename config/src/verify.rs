//! `[target.verify]`: how a target's restore points are proved to restore
//! (issue 15). The core's rules are in `recman-core`'s `verify`; the
//! verifiers in `recman-workers`' `verify`.
//!
//! ```toml
//! [target.verify]
//! type = "checksum"       # | "qemu-img" | "exec" | "postgres"
//! pool = "host.verify"    # optional, default the provider pool
//! timeout = "30m"
//! schedule = "each"       # | "newest_daily"
//! command = ["/usr/local/bin/check", "--quick"]   # exec only
//! # postgres only (all optional):
//! data_dir = "data"       # the cluster's data directory inside the snapshot
//! bin_dir = "/usr/lib/postgresql/15/bin"
//! user = "postgres"       # the role pg_amcheck and the queries connect as
//! dbname = "postgres"     # where the queries run
//! queries = ["select count(*) from t"]
//! ```

use std::path::{Component, PathBuf};
use std::time::Duration;

use recman_core::verify::VerifySchedule;
use recman_events::{PoolName, TargetId};
use toml::de::DeTable;

use super::{cx_keys, field, join, ConfigError, Cx};

/// Verifiers this build has.
const KINDS: &[&str] = &["checksum", "qemu-img", "exec", "postgres"];
/// Named by the issue, not built yet.
const KINDS_LATER: &[&str] = &[];

/// Where the `postgres` verifier finds `postgres` and `pg_amcheck` by default
/// (Debian's layout).
pub const DEFAULT_PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// Default time a worker gives one verification.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What checks a restore point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyKind {
    /// Re-reads the snapshot and compares it with the manifest (size and
    /// BLAKE3 of every file) the provider wrote while taking it.
    Checksum,
    /// `qemu-img check` of the image at the snapshot.
    QemuImg,
    /// A hook: argv run with `RECMAN_SNAPSHOT`, `RECMAN_SNAPSHOT_LOCATION`,
    /// `RECMAN_TARGET` in a clean environment; exit 0 = verified.
    Exec { command: Vec<String> },
    /// A throw-away PostgreSQL on a writable clone of the snapshot:
    /// recovery to consistency, `pg_amcheck --all`, the queries.
    Postgres(PgVerifyConfig),
}

/// `type = "postgres"`: how the clone of a snapshot is started and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgVerifyConfig {
    /// The data directory inside the snapshot, relative (empty: its root).
    pub data_dir: PathBuf,
    /// Where `postgres` and `pg_amcheck` are.
    pub bin_dir: PathBuf,
    /// The role to connect as (default: the OS user owning the data
    /// directory, which is initdb's default superuser name).
    pub user: Option<String>,
    /// The database the queries run in.
    pub dbname: String,
    /// Run after pg_amcheck; the first row of each goes into `checked`.
    pub queries: Vec<String>,
}

impl VerifyKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            VerifyKind::Checksum => "checksum",
            VerifyKind::QemuImg => "qemu-img",
            VerifyKind::Exec { .. } => "exec",
            VerifyKind::Postgres(_) => "postgres",
        }
    }
}

/// A target's `[target.verify]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyConfig {
    pub kind: VerifyKind,
    /// The pool whose workers verify (default: the provider pool).
    pub pool: Option<PoolName>,
    pub timeout: Duration,
    pub schedule: VerifySchedule,
}

pub(crate) fn read(
    cx: &Cx<'_>,
    t: &DeTable<'_>,
    path: &str,
    target: &TargetId,
    provider_pool: &PoolName,
) -> Result<Option<VerifyConfig>, ConfigError> {
    let Some(v) = field(t, "verify") else {
        return Ok(None);
    };
    let key = join(path, "verify");
    let tbl: &DeTable<'_> = cx.table(v, &key)?;
    let span = v.span();
    let kind = cx.kind(tbl, span.clone(), &key, "verifier", KINDS, KINDS_LATER)?;
    let pool = match cx.string(tbl, &key, "pool")? {
        None => None,
        Some((s, span)) => Some(PoolName::new(cx.id(&s, span, &join(&key, "pool"))?)),
    };
    let timeout = cx
        .duration(tbl, &key, "timeout")?
        .unwrap_or(DEFAULT_VERIFY_TIMEOUT);
    let schedule = match cx.string(tbl, &key, "schedule")? {
        None => VerifySchedule::Each,
        Some((s, _)) if s == "each" => VerifySchedule::Each,
        Some((s, _)) if s == "newest_daily" => VerifySchedule::NewestDaily,
        Some((s, span)) => {
            return Err(cx.err(
                span,
                &join(&key, "schedule"),
                format!("unknown schedule \"{s}\" (expected \"each\" or \"newest_daily\")"),
            ))
        }
    };
    let kind = match kind.as_str() {
        "exec" => {
            cx_keys(cx, tbl, &key, &["type", "pool", "timeout", "schedule", "command"])?;
            cx.note_hooks(
                tbl,
                &key,
                &["command"],
                target,
                pool.as_ref().unwrap_or(provider_pool),
            );
            let command = cx.required(cx.argv(tbl, &key, "command")?, span, &key, "command")?;
            VerifyKind::Exec { command }
        }
        "postgres" => {
            cx_keys(
                cx,
                tbl,
                &key,
                &[
                    "type", "pool", "timeout", "schedule", "data_dir", "bin_dir", "user", "dbname", "queries",
                ],
            )?;
            VerifyKind::Postgres(read_postgres(cx, tbl, &key)?)
        }
        other => {
            cx_keys(cx, tbl, &key, &["type", "pool", "timeout", "schedule"])?;
            if other == "checksum" {
                VerifyKind::Checksum
            } else {
                VerifyKind::QemuImg
            }
        }
    };
    Ok(Some(VerifyConfig {
        kind,
        pool,
        timeout,
        schedule,
    }))
}

fn read_postgres(cx: &Cx<'_>, tbl: &DeTable<'_>, key: &str) -> Result<PgVerifyConfig, ConfigError> {
    let data_dir = match cx.string(tbl, key, "data_dir")? {
        None => PathBuf::new(),
        Some((s, span)) => {
            let p = PathBuf::from(&s);
            if !p
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
            {
                return Err(cx.err(
                    span,
                    &join(key, "data_dir"),
                    format!("\"{s}\" must be a path inside the snapshot, relative and without \"..\" (e.g. \"data\")"),
                ));
            }
            p
        }
    };
    let bin_dir = cx
        .path(tbl, key, "bin_dir")?
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PG_BIN_DIR));
    let user = cx.string(tbl, key, "user")?.map(|(s, _)| s);
    let dbname = cx
        .string(tbl, key, "dbname")?
        .map(|(s, _)| s)
        .unwrap_or_else(|| "postgres".into());
    let queries = match field(tbl, "queries") {
        None => Vec::new(),
        Some(v) => {
            let q = cx.strings(v, &join(key, "queries"))?;
            if q.iter().any(|s| s.trim().is_empty()) {
                return Err(cx.err(v.span(), &join(key, "queries"), "a query is empty"));
            }
            q
        }
    };
    Ok(PgVerifyConfig {
        data_dir,
        bin_dir,
        user,
        dbname,
        queries,
    })
}
