//! `reconcile_every`: how often a target's catalog is checked against its
//! provider's list (`recman-core`'s `reconcile`).
//!
//! ```toml
//! [[target]]
//! reconcile_every = "24h"   # the default; "0" or "off": only on demand
//! ```
//!
//! Providers that cannot list (`exec`) or keep nothing to list (`none`) are
//! never reconciled: the default is off for them, and asking for it is an
//! error.

use std::time::Duration;

use toml::de::DeTable;

use super::{join, parse_duration, ConfigError, Cx, ProviderConfig};

/// The default interval for providers that can list.
pub const DEFAULT_RECONCILE_EVERY: Duration = Duration::from_secs(86_400);

const MIN: Duration = Duration::from_secs(60);
const MAX: Duration = Duration::from_secs(366 * 86_400);

/// The target's `reconcile_every` (none: off).
pub(crate) fn every(
    cx: &Cx<'_>,
    t: &DeTable<'_>,
    path: &str,
    provider: &ProviderConfig,
) -> Result<Option<Duration>, ConfigError> {
    let lists = !matches!(provider, ProviderConfig::None | ProviderConfig::Exec(_));
    let key = join(path, "reconcile_every");
    let Some((s, span)) = cx.string(t, path, "reconcile_every")? else {
        return Ok(lists.then_some(DEFAULT_RECONCILE_EVERY));
    };
    let v = s.trim();
    if v == "0" || v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let d = parse_duration(v).map_err(|m| cx.err(span.clone(), &key, m))?;
    if !(MIN..=MAX).contains(&d) {
        return Err(cx.err(
            span,
            &key,
            format!("\"{s}\" is out of range: from 1m to 366d (\"off\" to reconcile only on demand)"),
        ));
    }
    if !lists {
        return Err(cx.err(
            span,
            &key,
            format!(
                "the {} provider cannot list its snapshots, so there is nothing to reconcile \
                 (leave reconcile_every out, or set it to \"off\")",
                provider.kind()
            ),
        ));
    }
    Ok(Some(d))
}
