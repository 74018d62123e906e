//! The core's state: jobs with their per-target progress and timeline, FIFO queues per
//! target, the request-id window and the catalog of completed snapshots; bounded
//! (finished jobs leave, request ids expire: see [`Bounds`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

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
    /// The kind of the job that took it (its job may have left `State::jobs`).
    pub kind: SnapshotKind,
    /// A recovery's safety snapshot (`job` is the recovery's, which may
    /// have left the recovery ledger), not a snapshot job's restore point.
    pub safety: bool,
}

/// How long finished jobs and request ids stay in [`State`], measured on
/// event time (the `at_ms` of the events folded), so a replay of the log
/// keeps and drops exactly what the live engine did.
///
/// **Finished jobs.** A job leaves `State::jobs` (and every per-job index)
/// at the first event later than `keep_finished_ms` after its end, unless
/// something may still need it: a delete it asked for is still without an
/// outcome (`State::prunes`: its timer asks again, under the job), its
/// delete retry timer runs, or it made the newest restore point of one of
/// its targets that a snapshot job made ([`State::newest_snapshot_job`]:
/// retention catching up asks for deletes under that job). It then
/// leaves once that hold ends (the outcome, or a newer restore point), after
/// the same delay. A delete of a restore point whose job left needs no job:
/// its outcome names the point, and folds into the catalog and prunes. An event
/// for a job that is due to leave keeps it that long again. Events for a job
/// that left (a duplicate or late report, a late snapshot, a delete outcome
/// of an old restore point) fold like events of an unknown job: they change
/// nothing but the catalog, prunes and ledgers they name, and never bring the
/// job back. The catalog keeps what retention needs (job id, kind; a group's
/// members in `State::groups`). A late snapshot reported after its job left
/// is not recorded (a reconcile lists it as unknown).
///
/// **Request ids.** A request id answers with its job (idempotency) for
/// `request_window_ms` after its request's event; after that the same id is
/// a new request.
///
/// **Recovery jobs** (restore, mount, clone) leave and expire by the same
/// bounds, with no hold: what they made is recorded on its own
/// ([`crate::recovery::expire`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Bounds {
    /// Idempotency window of request ids (default 7 days).
    pub request_window_ms: u64,
    /// How long a finished job stays after its end (default 1 h; at least 1 ms,
    /// so a job is still there for the rest of the decision that ended it).
    pub keep_finished_ms: u64,
}

/// Default idempotency window of request ids: 7 days.
pub const DEFAULT_REQUEST_WINDOW_MS: u64 = 7 * 24 * 3_600_000;
/// Default time a finished job stays in the state: 1 hour.
pub const DEFAULT_KEEP_FINISHED_MS: u64 = 3_600_000;

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            request_window_ms: DEFAULT_REQUEST_WINDOW_MS,
            keep_finished_ms: DEFAULT_KEEP_FINISHED_MS,
        }
    }
}

/// A request id in the window: its job, and enough of the request to tell
/// the same request from another one with the same id once the job left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RequestEntry {
    pub job: JobId,
    /// Event time of the request.
    pub at_ms: u64,
    pub kind: SnapshotKind,
    /// [`targets_fingerprint`] of the request's targets.
    pub targets: u64,
}

/// FNV-1a over the sorted, distinct target ids: equal for the same set of targets.
pub fn targets_fingerprint(targets: &[TargetId]) -> u64 {
    let set: BTreeSet<&TargetId> = targets.iter().collect();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ targets.len() as u64;
    for t in set {
        for b in t.as_str().bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
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
    /// Request ids within the window (`Bounds::request_window_ms`).
    pub requests: crate::window::RequestWindow,
    /// Finished jobs by when they may leave `jobs` (`Bounds`).
    pub retiring: BTreeSet<(u64, JobId)>,
    /// Members of consistency-group jobs that left `jobs` while their
    /// restore points are still in the catalog (retention deletes a group's
    /// point on every member).
    pub groups: BTreeMap<JobId, Vec<TargetId>>,
    /// Jobs that left `jobs` so far.
    pub retired: u64,
    /// How long finished jobs and request ids stay (set from `CoreConfig`).
    pub bounds: Bounds,
    /// Per target, completed snapshots oldest first.
    pub catalog: BTreeMap<TargetId, Vec<CatalogEntry>>,
    /// Jobs past the queue and not finished.
    pub active: BTreeSet<JobId>,
    /// Index of `Job::deadline` for `next_deadline` and timers.
    pub deadlines: BTreeSet<(u64, JobId)>,
    /// Deletes asked for (`PruneRequested`) and not answered, by target and name.
    pub prunes: crate::prunes::PendingPrunes,
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

    /// The request id's entry when it is within the window at `now_ms`.
    pub fn request(&self, id: &RequestId, now_ms: u64) -> Option<&RequestEntry> {
        self.requests
            .get(id)
            .filter(|e| now_ms < e.at_ms.saturating_add(self.bounds.request_window_ms))
    }

    /// The members of job `id`'s restore point: the job's targets while it
    /// is in `jobs`, a group's from `groups` after, else just `t`.
    pub fn members(&self, id: &JobId, t: &TargetId) -> Vec<TargetId> {
        match (self.jobs.get(id), self.groups.get(id)) {
            (Some(j), _) => j.targets.clone(),
            (None, Some(g)) => g.clone(),
            (None, None) => vec![t.clone()],
        }
    }

    /// The snapshot job of `t`'s newest restore point that a snapshot job
    /// made (a recovery's safety snapshot may be newer): retention catching
    /// up files its deletes under it, so it stays in the state.
    pub fn newest_snapshot_job(&self, t: &TargetId) -> Option<JobId> {
        self.catalog
            .get(t)?
            .iter()
            .rev()
            .find(|e| !e.safety)
            .map(|e| e.job)
    }

    /// The job currently holding a target (head of its queue, past the queue).
    pub fn holder(&self, t: &TargetId) -> Option<JobId> {
        let head = *self.queues.get(t)?.front()?;
        self.active.contains(&head).then_some(head)
    }

    /// The deletes `requester` asked for that have no outcome yet, by target.
    pub fn prunes_of(&self, requester: JobId) -> BTreeMap<TargetId, Vec<String>> {
        let mut out: BTreeMap<TargetId, Vec<String>> = BTreeMap::new();
        for (t, name) in self.prunes.of(requester) {
            out.entry(t.clone()).or_default().push(name.clone());
        }
        out
    }
}
