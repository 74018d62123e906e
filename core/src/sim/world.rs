//! The simulated world: targets that really freeze and thaw, writer and provider
//! workers with latencies, failures, crashes and watchdogs.

use std::collections::{HashMap, HashSet};

use recman_events::{JobId, SnapshotInfo, StepError, WorkerId};

/// One attempt of one job.
pub type Key = (JobId, u32);

/// What the world knows about one target.
#[derive(Default)]
pub struct TargetWorld {
    /// Frozen by (job, attempt), worker index, deadline of the watchdog.
    pub frozen: Option<(Key, usize, u64)>,
    /// Attempts that got a thaw: a late freeze of theirs is refused.
    pub thawed: HashSet<Key>,
    /// Outcome of each attempt's freeze: a redelivered freeze is not run twice.
    pub freeze_results: HashMap<Key, Result<u64, StepError>>,
    pub watchdog_thawed: HashSet<Key>,
}

/// One worker process.
pub struct Worker {
    pub id: WorkerId,
    pub pool: usize,
    pub alive: bool,
    pub incarnation: u32,
}

/// The array: snapshots by name, and how each attempt's snapshot was cut.
#[derive(Default)]
pub struct Provider {
    pub snapshots: HashSet<String>,
    /// Names deleted by retention: a late duplicate command must not bring one back.
    pub deleted: HashSet<String>,
    pub created: HashMap<Key, u32>,
    /// Whether every member was frozen by that attempt when the snapshot was cut.
    pub consistent: HashMap<Key, bool>,
}

impl Provider {
    pub fn info(name: &str, existed: bool) -> SnapshotInfo {
        SnapshotInfo {
            name: name.to_string(),
            provider: "sim".into(),
            location: format!("sim:{name}"),
            size_bytes: None,
            existed,
        }
    }
}
