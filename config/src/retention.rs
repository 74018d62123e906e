//! Retention keys of a `[[target]]` besides `keep_last`: `keep_within` and
//! the tiers `keep_hourly`, `keep_daily`, `keep_weekly`, `keep_monthly`
//! (restic's `forget --keep-*`; the rules are in `recman-core`'s `retention`).

use std::time::Duration;

use toml::de::DeTable;

use super::{field, join, parse_duration, ConfigError, Cx};

/// The keys this module reads (for the target's list of allowed keys).
pub const KEYS: &[&str] = &[
    "keep_within",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
];

/// Longest `keep_within`: 100 years.
const MAX_KEEP_WITHIN: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

/// A target's retention rules besides `keep_last`; none set = no such rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Keep every restore point taken within this long before the newest one.
    pub keep_within: Option<Duration>,
    /// Keep the newest restore point of each of the last N hours / days /
    /// ISO weeks / months (UTC) that have one.
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
}

pub(crate) fn read(cx: &Cx<'_>, t: &DeTable<'_>, path: &str) -> Result<RetentionConfig, ConfigError> {
    let keep_within = match cx.string(t, path, "keep_within")? {
        None => None,
        Some((s, span)) => {
            let key = join(path, "keep_within");
            let d = parse_duration(&s).map_err(|m| cx.err(span.clone(), &key, m))?;
            if d.is_zero() || d > MAX_KEEP_WITHIN {
                return Err(cx.err(
                    span,
                    &key,
                    format!("\"{s}\" must be more than 0 and at most 100 years (e.g. \"14d\", \"36h\")"),
                ));
            }
            Some(d)
        }
    };
    let tier = |key: &str| -> Result<Option<u32>, ConfigError> {
        let n = cx.u32(t, path, key)?;
        if n == Some(0) {
            let span = field(t, key).map(|v| v.span()).unwrap_or_default();
            return Err(cx.err(
                span,
                &join(path, key),
                "must be at least 1 (leave it out for no such rule)",
            ));
        }
        Ok(n)
    };
    Ok(RetentionConfig {
        keep_within,
        keep_hourly: tier("keep_hourly")?,
        keep_daily: tier("keep_daily")?,
        keep_weekly: tier("keep_weekly")?,
        keep_monthly: tier("keep_monthly")?,
    })
}
