//! Four-eyes approval of a target's destructive actions: `require_approval`
//! and `approval_expiry` (an in-place restore waits for a second admin;
//! `recman prune` of the target is refused).
//!
//! ```toml
//! [[target]]
//! id = "db01"
//! require_approval = true   # default false
//! approval_expiry = "1h"    # how long a request waits for its approval (default 1h, 1s to 24h)
//! ```

use std::time::Duration;

use toml::de::DeTable;

use super::{field, join, ConfigError, Cx};

/// How long a request waits for its second admin by default.
pub const DEFAULT_APPROVAL_EXPIRY: Duration = Duration::from_secs(3600);

/// The keys of a target this module reads.
pub const KEYS: &[&str] = &["require_approval", "approval_expiry"];

/// The expiry of a target's approvals when it requires them (`None`: it does not).
pub(crate) fn read(cx: &Cx<'_>, t: &DeTable<'_>, path: &str) -> Result<Option<Duration>, ConfigError> {
    let required = cx.bool(t, path, "require_approval")?.unwrap_or(false);
    let expiry = cx.duration(t, path, "approval_expiry")?;
    if expiry.is_some() && !required {
        let span = field(t, "approval_expiry").map(|v| v.span()).unwrap_or_default();
        return Err(cx.err(
            span,
            &join(path, "approval_expiry"),
            "approval_expiry without require_approval = true has no effect: set both, or leave it out",
        ));
    }
    Ok(required.then(|| expiry.unwrap_or(DEFAULT_APPROVAL_EXPIRY)))
}
