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
//! ```

use std::time::Duration;

use recman_core::verify::VerifySchedule;
use recman_events::{PoolName, TargetId};
use toml::de::DeTable;

use super::{cx_keys, field, join, ConfigError, Cx};

/// Verifiers this build has.
const KINDS: &[&str] = &["checksum", "qemu-img", "exec"];
/// Named by the issue, not built yet.
const KINDS_LATER: &[&str] = &["postgres"];

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
}

impl VerifyKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            VerifyKind::Checksum => "checksum",
            VerifyKind::QemuImg => "qemu-img",
            VerifyKind::Exec { .. } => "exec",
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
