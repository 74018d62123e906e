//! The core's state: jobs with their per-target progress and timeline, FIFO queues per
//! target, the request-id index and the catalog of completed snapshots.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use recman_events::{JobId, RequestId, SnapshotInfo, SnapshotKind, Stage, StepError, TargetId, WorkerId};
use serde::Serialize;

/// Where a job is. The job lifecycle (design notes, "Job lifecycle"):
///
/// ```text
/// Requested → Queued → Freezing → Frozen → Snapshotting → Snapshotted → Thawing → Thawed → FlushingLogs → Completed
///                 ╰──── any failure before freeze: retry with backoff, or Failed
///    any failure or timeout after the first freeze: Thawing (compensation) → retry whole job, or Failed
///    cancel: before freeze → Cancelled; after → Thawing → Cancelled
/// ```
///
/// `Requested` is the `JobRequested` event itself (the job is `Queued` once it
/// exists); a retry waits in `RetryWait` for its backoff, then starts its
/// next attempt (`Freezing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Freezing,
    Frozen,
    Snapshotting,
    Snapshotted,
    Thawing,
    Thawed,
    FlushingLogs,
    RetryWait,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed | JobState::Cancelled)
    }

    /// Freeze commands may have landed and no thaw has started yet.
    pub fn before_thaw(self) -> bool {
        matches!(
            self,
            JobState::Freezing | JobState::Frozen | JobState::Snapshotting | JobState::Snapshotted
        )
    }
}

/// Progress of one step of one target (or of the group's snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not asked for in this attempt.
    #[default]
    Idle,
    Pending,
    Done,
    Failed,
}

/// One target's progress in the current attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TargetProgress {
    pub freeze: StepStatus,
    pub thaw: StepStatus,
    pub flush: StepStatus,
    /// The worker whose Frozen report we accepted: thaws go back to it.
    pub frozen_by: Option<WorkerId>,
    pub frozen_at_ms: Option<u64>,
    pub freeze_window_us: Option<u64>,
    pub thawed_by_watchdog: bool,
}

/// Why the current attempt failed (the first failure wins).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Failure {
    pub stage: Stage,
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl Failure {
    pub fn reason(&self) -> String {
        format!("{} {}: {}", self.stage, self.code, self.message)
    }
}

/// One stage of one attempt, for the HTTP API's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TimelineEntry {
    pub stage: Stage,
    pub attempt: u32,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub outcome: Option<String>,
}

/// One job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Job {
    pub id: JobId,
    pub request_id: RequestId,
    pub origin: String,
    pub kind: SnapshotKind,
    pub targets: Vec<TargetId>,
    pub requested_at_ms: u64,
    pub state: JobState,
    /// Current attempt (0 while queued).
    pub attempt: u32,
    pub stage: Option<Stage>,
    pub stage_deadline_ms: Option<u64>,
    /// Parallel to `targets`.
    pub progress: Vec<TargetProgress>,
    pub snapshot_status: StepStatus,
    #[serde(with = "crate::checkpoint::embed")]
    pub snapshot: Option<SnapshotInfo>,
    /// The snapshot reported after the attempt had already failed (logs of
    /// earlier builds record it as a step; see `late_names`).
    pub late_snapshot: bool,
    /// Names of this job's snapshots recorded as late (`LateSnapshot`), any
    /// attempt: not restore points, deleted by the engine.
    pub late_names: Vec<String>,
    /// When the deletes this job asked for (`PruneRequested`) are asked
    /// again while outcomes are missing.
    pub prune_retry_at_ms: Option<u64>,
    pub first_frozen_at_ms: Option<u64>,
    pub freeze_budget_ms: u64,
    pub watchdog_at_ms: u64,
    /// When the engine thaws regardless of the snapshot (set by the first Frozen).
    pub thaw_by_ms: Option<u64>,
    pub forced_thaw: bool,
    pub failure: Option<Failure>,
    pub cancel: Option<String>,
    /// Thaw failures and thaw-stage timeouts in this attempt.
    pub thaw_tries: u32,
    pub retry_at_ms: Option<u64>,
    pub retry_attempt: u32,
    pub last_error: Option<StepError>,
    pub timeline: Vec<TimelineEntry>,
    pub finished_at_ms: Option<u64>,
    /// Final reason of a failed or cancelled job.
    pub outcome: Option<String>,
}

impl Job {
    pub fn new(
        id: JobId,
        request_id: RequestId,
        origin: String,
        kind: SnapshotKind,
        targets: Vec<TargetId>,
        at: u64,
    ) -> Self {
        let n = targets.len();
        Job {
            id,
            request_id,
            origin,
            kind,
            targets,
            requested_at_ms: at,
            state: JobState::Queued,
            attempt: 0,
            stage: Some(Stage::Queue),
            stage_deadline_ms: None,
            progress: vec![TargetProgress::default(); n],
            snapshot_status: StepStatus::Idle,
            snapshot: None,
            late_snapshot: false,
            late_names: Vec::new(),
            prune_retry_at_ms: None,
            first_frozen_at_ms: None,
            freeze_budget_ms: 0,
            watchdog_at_ms: 0,
            thaw_by_ms: None,
            forced_thaw: false,
            failure: None,
            cancel: None,
            thaw_tries: 0,
            retry_at_ms: None,
            retry_attempt: 0,
            last_error: None,
            timeline: vec![TimelineEntry {
                stage: Stage::Queue,
                attempt: 0,
                started_ms: at,
                ended_ms: None,
                outcome: None,
            }],
            finished_at_ms: None,
            outcome: None,
        }
    }

    pub fn index_of(&self, t: &TargetId) -> Option<usize> {
        self.targets.iter().position(|x| x == t)
    }

    /// Targets a freeze may have reached that are not known thawed: a freeze
    /// sent and not answered, done, or failed (a freeze that failed or timed
    /// out may have landed: thaw is idempotent, and the worker's thaw of an
    /// attempt that froze nothing is a recorded no-op).
    pub fn needs_thaw(&self, i: usize) -> bool {
        let p = &self.progress[i];
        p.freeze != StepStatus::Idle && p.thaw != StepStatus::Done
    }

    pub fn any_needs_thaw(&self) -> bool {
        (0..self.targets.len()).any(|i| self.needs_thaw(i))
    }

    /// When the runtime must call back for this job.
    pub fn deadline(&self) -> Option<u64> {
        let stage = self.stage_deadline();
        match (stage, self.prune_retry_at_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn stage_deadline(&self) -> Option<u64> {
        match self.state {
            JobState::RetryWait => self.retry_at_ms,
            s if s.before_thaw() => match (self.stage_deadline_ms, self.thaw_by_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            JobState::Thawing | JobState::Thawed | JobState::FlushingLogs => self.stage_deadline_ms,
            _ => None,
        }
    }
}

/// A completed snapshot, for retention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CatalogEntry {
    pub name: String,
    pub job: JobId,
    pub at_ms: u64,
}

/// A snapshot the engine asked to delete and whose outcome is not recorded yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PendingPrune {
    /// The job that took it (its `SnapshotDeleted` / `PruneFailed` go there).
    pub owner: JobId,
    /// The job whose `PruneRequested` asked for it (its timer asks again).
    pub requester: JobId,
    /// How often it was asked for.
    pub tries: u32,
}

/// Everything the engine knows; rebuilt exactly by folding the log with `evolve`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub jobs: BTreeMap<JobId, Job>,
    /// Per target, jobs in arrival order; the head is the one that may run.
    pub queues: BTreeMap<TargetId, VecDeque<JobId>>,
    pub requests: HashMap<RequestId, JobId>,
    /// Per target, completed snapshots oldest first.
    pub catalog: BTreeMap<TargetId, Vec<CatalogEntry>>,
    /// Jobs past the queue and not finished.
    pub active: BTreeSet<JobId>,
    /// Index of `Job::deadline` for `next_deadline` and timers.
    pub deadlines: BTreeSet<(u64, JobId)>,
    /// Deletes asked for (`PruneRequested`) and not answered, by target and name.
    pub prunes: BTreeMap<(TargetId, String), PendingPrune>,
    /// Number of events folded in.
    pub applied: u64,
    /// Schedules and RPOs (`schedule`).
    pub book: crate::schedule::Book,
    /// Verification of restore points (`verify`).
    pub verify: crate::verify::Ledger,
    /// The catalog checked against the storage (`reconcile`).
    pub reconcile: crate::reconcile::Ledger,
    /// Restores, mounts and clones (`recovery`).
    pub recovery: crate::recovery::Ledger,
}

impl State {
    pub fn job(&self, id: &JobId) -> Option<&Job> {
        self.jobs.get(id)
    }

    /// The job currently holding a target (head of its queue, past the queue).
    pub fn holder(&self, t: &TargetId) -> Option<JobId> {
        let head = *self.queues.get(t)?.front()?;
        self.active.contains(&head).then_some(head)
    }

    /// The deletes `requester` asked for that have no outcome yet, by target.
    pub fn prunes_of(&self, requester: JobId) -> BTreeMap<TargetId, Vec<String>> {
        let mut out: BTreeMap<TargetId, Vec<String>> = BTreeMap::new();
        for ((t, name), p) in &self.prunes {
            if p.requester == requester {
                out.entry(t.clone()).or_default().push(name.clone());
            }
        }
        out
    }
}
