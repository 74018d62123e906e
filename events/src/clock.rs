//! The wall clock, read in one place: Unix time in milliseconds. The engine
//! core never reads it (time is its `now_ms` argument); the engine runtime,
//! the workers and the tools call [`now_ms`].

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
