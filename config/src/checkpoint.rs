//! `[checkpoint]`: how often the engine writes a checkpoint of its state
//! (start-up then loads the newest and replays only the log after it), and
//! how many it keeps.
//!
//! ```toml
//! [checkpoint]
//! every_events = 100000   # after this many new events (default), at least 1000
//! every = "10m"           # or after this long with new events (default), from 1s to 24h
//! keep = 3                # the newest kept (default), from 1 to 100
//! ```

use std::time::Duration;

use toml::de::DeTable;

use super::{field, ConfigError, Cx};

pub const DEFAULT_EVERY_EVENTS: u64 = 100_000;
pub const DEFAULT_EVERY: Duration = Duration::from_secs(600);
pub const DEFAULT_KEEP: u32 = 3;
const MIN_EVERY_EVENTS: u32 = 1_000;
const MIN_EVERY: Duration = Duration::from_secs(1);
const MAX_EVERY: Duration = Duration::from_secs(24 * 3600);

/// `[checkpoint]` of the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// A checkpoint once this many events were appended since the last one.
    pub every_events: u64,
    /// Or once this long passed since the last one (with new events).
    pub every: Duration,
    /// How many are kept, newest first.
    pub keep: u32,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_events: DEFAULT_EVERY_EVENTS,
            every: DEFAULT_EVERY,
            keep: DEFAULT_KEEP,
        }
    }
}

pub(crate) fn parse(cx: &Cx<'_>, root: &DeTable<'_>) -> Result<CheckpointConfig, ConfigError> {
    let Some(v) = field(root, "checkpoint") else {
        return Ok(CheckpointConfig::default());
    };
    let t = cx.table(v, "checkpoint")?;
    cx.check_keys(t, "checkpoint", &["every_events", "every", "keep"])?;
    let span = |key: &str| field(t, key).map(|v| v.span()).unwrap_or_default();
    let mut out = CheckpointConfig::default();
    if let Some(n) = cx.u32(t, "checkpoint", "every_events")? {
        if n < MIN_EVERY_EVENTS {
            return Err(cx.err(
                span("every_events"),
                "checkpoint.every_events",
                format!("{n} is too small: at least {MIN_EVERY_EVENTS}"),
            ));
        }
        out.every_events = n as u64;
    }
    if let Some(d) = cx.duration(t, "checkpoint", "every")? {
        if !(MIN_EVERY..=MAX_EVERY).contains(&d) {
            return Err(cx.err(
                span("every"),
                "checkpoint.every",
                format!("{d:?} is out of range: from {MIN_EVERY:?} to {MAX_EVERY:?}"),
            ));
        }
        out.every = d;
    }
    if let Some(k) = cx.u32(t, "checkpoint", "keep")? {
        if !(1..=100).contains(&k) {
            return Err(cx.err(
                span("keep"),
                "checkpoint.keep",
                format!("{k} is out of range: from 1 to 100"),
            ));
        }
        out.keep = k;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{CheckpointConfig, Config, ConfigError};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_str(text, "/etc/recman/recman.toml")
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(parse("").unwrap().checkpoint, CheckpointConfig::default());
        let c = parse("[checkpoint]\nevery_events = 5000\nevery = \"30s\"\nkeep = 5\n")
            .unwrap()
            .checkpoint;
        assert_eq!(
            c,
            CheckpointConfig {
                every_events: 5000,
                every: Duration::from_secs(30),
                keep: 5
            }
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        for (text, key, line) in [
            ("[checkpoint]\nevery_events = 10\n", "checkpoint.every_events", 2),
            ("[checkpoint]\n\nevery = \"0s\"\n", "checkpoint.every", 3),
            ("[checkpoint]\nkeep = 0\n", "checkpoint.keep", 2),
            ("[checkpoint]\nkeep = \"x\"\n", "checkpoint.keep", 2),
            ("[checkpoint]\nevery_event = 5000\n", "checkpoint", 2),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains("/etc/recman/recman.toml"), "{e}");
            assert!(e.contains(&format!(":{line}")), "{text}: {e}");
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
