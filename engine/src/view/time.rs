//! Times as the CLI shows them: RFC 3339 (from `recman_events::time`) and ages.

pub use recman_events::time::{parse_rfc3339, rfc3339};

/// How long before `now_ms` `at_ms` was, roughly: `40s`, `12m`, `5h`, `3d`.
pub fn age(at_ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(at_ms) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7_199 => format!("{}m", s / 60),
        7_200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}
