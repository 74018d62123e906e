//! `[target.recovery]`: the limits of a target's recovery jobs (restore,
//! mount, clone; `recman-core`'s `recovery`).
//!
//! ```toml
//! [target.recovery]
//! timeout = "1h"          # one restore, rollback, mount or unmount step (default 1h)
//! max_mount_age = "8h"    # a mount older than this is taken away (default: kept)
//! ```

use std::time::Duration;

use toml::de::DeTable;

use super::{cx_keys, field, join, parse_duration, ConfigError, Cx};

/// How long a worker may take over one restore, rollback, mount or unmount step.
pub const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest `max_mount_age`: a year (a mount meant to stay longer is a clone).
const MAX_MOUNT_AGE: Duration = Duration::from_secs(366 * 86_400);
/// The shortest `max_mount_age` (the engine's timers are not finer than this).
const MIN_MOUNT_AGE: Duration = Duration::from_secs(60);

/// A target's `[target.recovery]` (all defaults when absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// A worker's time for one restore, rollback, mount or unmount step
    /// (stop and start use the writer's timeout, the safety snapshot the
    /// provider's).
    pub timeout: Duration,
    /// Mounts older than this are unmounted by the engine (none: kept until
    /// `recman unmount`).
    pub max_mount_age: Option<Duration>,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            timeout: DEFAULT_RECOVERY_TIMEOUT,
            max_mount_age: None,
        }
    }
}

pub(crate) fn read(cx: &Cx<'_>, t: &DeTable<'_>, path: &str) -> Result<RecoveryConfig, ConfigError> {
    let Some(v) = field(t, "recovery") else {
        return Ok(RecoveryConfig::default());
    };
    let key = join(path, "recovery");
    let tbl: &DeTable<'_> = cx.table(v, &key)?;
    cx_keys(cx, tbl, &key, &["timeout", "max_mount_age"])?;
    let timeout = cx
        .duration(tbl, &key, "timeout")?
        .unwrap_or(DEFAULT_RECOVERY_TIMEOUT);
    let max_mount_age = match cx.string(tbl, &key, "max_mount_age")? {
        None => None,
        Some((s, span)) => {
            let k = join(&key, "max_mount_age");
            let d = parse_duration(s.trim()).map_err(|m| cx.err(span.clone(), &k, m))?;
            if !(MIN_MOUNT_AGE..=MAX_MOUNT_AGE).contains(&d) {
                return Err(cx.err(
                    span,
                    &k,
                    format!("\"{s}\" is out of range: from 1m to 366d (leave it out to keep mounts)"),
                ));
            }
            Some(d)
        }
    };
    Ok(RecoveryConfig {
        timeout,
        max_mount_age,
    })
}
