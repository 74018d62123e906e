//! The event model: everything that can happen to a job, as recorded in the log.
//!
//! Events are facts, in past tense. The engine core decides them, the log makes
//! them durable, replay folds them back into state. They are stored with rkyv
//! (see `codec`) and published as JSON (see `wire`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::action::{RecoveryAction, Until};
use crate::ids::{JobId, RequestId, TargetId, WorkerId};

/// Where a job is in its walk. `Queue` is the wait before the first freeze.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum Stage {
    Queue,
    Freeze,
    Snapshot,
    Thaw,
    FlushLogs,
    /// Housekeeping after a completed job: delete snapshots beyond `keep_last`.
    Prune,
    /// Off the freeze window, after the snapshot is recorded: prove a restore
    /// point restores (`core/src/verify.rs`). The command's `attempt` is the
    /// verification's run number.
    Verify,
    /// Ask the provider which snapshots of the target it still holds
    /// (`core/src/reconcile.rs`). The command's job is `JobId::NONE`, its
    /// `attempt` the reconcile's run number; the answer is `Listed`.
    Reconcile,
    // Recovery (`core/src/recovery.rs`): the command's job is the recovery
    // job, its `attempt` 1, its `recovery` the arguments.
    /// Writer: stop (or fence) the application before an in-place restore.
    Stop,
    /// Provider: snapshot the live data (application stopped) before an
    /// in-place restore reverts it; the command's `snapshot_name` is its name.
    SafetySnapshot,
    /// Provider: bring restore point `snapshot_name` back (in place, to a
    /// path beside production, or as a clone).
    Restore,
    /// Provider: undo an in-place restore that failed or was interrupted,
    /// back to the live data as it was (kept aside, or the safety snapshot).
    Rollback,
    /// Writer: start the application again after an in-place restore.
    Start,
    /// Provider: expose restore point `snapshot_name` on a host.
    Mount,
    /// Provider: take away a mount, or remove a clone.
    Unmount,
}

impl Stage {
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Queue => "queue",
            Stage::Freeze => "freeze",
            Stage::Snapshot => "snapshot",
            Stage::Thaw => "thaw",
            Stage::FlushLogs => "flush-logs",
            Stage::Prune => "prune",
            Stage::Verify => "verify",
            Stage::Reconcile => "reconcile",
            Stage::Stop => "stop",
            Stage::SafetySnapshot => "safety-snapshot",
            Stage::Restore => "restore",
            Stage::Rollback => "rollback",
            Stage::Start => "start",
            Stage::Mount => "mount",
            Stage::Unmount => "unmount",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of backup the snapshot is. A `full` backup lets the application
/// truncate its logs afterwards; a `copy` changes nothing in the application.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    #[default]
    Full,
    Copy,
}

impl SnapshotKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SnapshotKind::Full => "full",
            SnapshotKind::Copy => "copy",
        }
    }
}

/// A point-in-time copy as the provider reports it.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    JsonSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct SnapshotInfo {
    /// Deterministic name (`ids::snapshot_name`).
    pub name: String,
    /// Provider kind: `copy`, `btrfs`, `qcow2`, `3par`, `exec`, `none`.
    pub provider: String,
    /// Where it is: a path, a subvolume, an image + tag, a volume name.
    pub location: String,
    /// Size in bytes, when the provider knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// True when a redelivered command found the snapshot already taken.
    #[serde(default)]
    pub existed: bool,
    /// The array's own clock on the copy (3PAR `expiration_hours` /
    /// `retention_hours`). Not in the stored record (the log keeps it as a
    /// `SnapshotExpiry` event; leaving it out keeps old records readable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[rkyv(with = rkyv::with::Skip)]
    pub array_expiry: Option<ArrayExpiry>,
}

/// How long a storage array keeps a copy by itself, counted from when it was
/// cut: it removes the copy after `expiration_hours` and refuses to delete it
/// before `retention_hours` (3PAR virtual copies).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    JsonSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ArrayExpiry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_hours: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_hours: Option<u32>,
}

impl ArrayExpiry {
    /// The expiry of a group of copies: the earliest removal and the
    /// longest retention of any part.
    pub fn combine(self, other: ArrayExpiry) -> ArrayExpiry {
        let min = |a: Option<u32>, b: Option<u32>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        ArrayExpiry {
            expiration_hours: min(self.expiration_hours, other.expiration_hours),
            retention_hours: self.retention_hours.max(other.retention_hours),
        }
    }
}

/// What a successful step produced.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    JsonSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepDetail {
    #[default]
    None,
    /// The writer is frozen; the worker armed its watchdog for `deadline_ms`.
    Frozen {
        deadline_ms: u64,
    },
    Snapshot(SnapshotInfo),
    /// The writer is thawed. `freeze_window_us` is measured by the worker from
    /// the freeze's return to the thaw's return.
    Thawed {
        freeze_window_us: u64,
        #[serde(default)]
        by_watchdog: bool,
    },
    Flushed,
    /// The outcome of a prune command: the names now gone (deleted, or not
    /// there), and those that could not be deleted with the provider's error.
    Pruned {
        deleted: Vec<String>,
        /// Not in the stored record (the log keeps each failure as a
        /// `PruneFailed` event; leaving it out keeps old records readable).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[rkyv(with = rkyv::with::Skip)]
        failed: Vec<PruneFailure>,
    },
    /// A verifier found the restore point sound; `checked` says what it
    /// looked at (`1234 files, 5.6 GB`, `qemu-img check: no errors`).
    Verified {
        checked: String,
    },
    /// The answer to a reconcile: the names of the snapshots the provider
    /// holds for the target (`Provider::list`).
    Listed {
        names: Vec<String>,
    },
    /// A recovery step's outcome: where the data now is (the restored path,
    /// the mount point, the clone), and what the step saw (`info`, e.g. the
    /// recovered LSN); empty when there is nothing to say.
    Recovered {
        location: String,
        #[serde(default)]
        info: String,
    },
}

/// Where a failed recovery left the target's live data.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    JsonSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LiveData {
    /// Never touched (the failure came before any revert, or the action
    /// does not touch it).
    Untouched,
    /// A revert began and was undone: the live data is as it was before.
    RolledBack,
    /// Restored, but a later step failed (the application did not start).
    Restored,
    /// A revert began and could not be undone: the safety snapshot holds
    /// the state before; an operator must look.
    Unknown,
}

/// A snapshot a prune could not delete, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PruneFailure {
    pub name: String,
    pub error: StepError,
}

/// A failed step, as the worker (or the engine, for timeouts) saw it.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    JsonSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct StepError {
    /// Stable machine-readable code: `unknown_target`, `exec_failed`, `timeout`, …
    pub code: String,
    /// Human-readable reason (stderr is truncated before it gets here).
    pub message: String,
    /// Whether trying again may help (VSS: RETRYABLE, TIMEOUT, OUTOFRESOURCES).
    pub retryable: bool,
}

/// `code: message`, as every report of a failed step shows it.
impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl StepError {
    pub fn new(code: impl Into<String>, message: impl Into<String>, retryable: bool) -> Self {
        StepError {
            code: code.into(),
            message: message.into(),
            retryable,
        }
    }
}

/// One recorded fact about one job. `at_ms` is Unix time in milliseconds as
/// passed to the core (never read from a clock inside it). `by` is who
/// caused it: an API user's name, `amqp:<broker user>`, `cli:<unix user>`,
/// `schedule:<id>`; empty for what the engine decided by itself (a worker's
/// report, a timer). Records of version 1 have none (read as empty).
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    JsonSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Event {
    pub at_ms: u64,
    pub job: JobId,
    pub body: EventBody,
    /// Who caused it: an API user's name, `amqp:<broker user>`,
    /// `cli:<unix user>`, `schedule:<id>`; absent for what the engine
    /// decided by itself (a worker's report, a timeout, retention).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
}

/// The job lifecycle of `design.md`, one variant per fact.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    JsonSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A request was accepted. More than one target = a consistency group.
    Requested {
        request_id: RequestId,
        targets: Vec<TargetId>,
        kind: SnapshotKind,
        /// Where it came from: `cli`, `http`, `amqp`, `bench`, `sim`.
        origin: String,
    },
    /// The job waits because a target is busy with another job.
    Queued {
        behind: Vec<JobId>,
    },
    /// The job left the queue (or retried) and begins attempt `attempt` at freeze.
    AttemptStarted {
        attempt: u32,
        /// Milliseconds from the first Frozen report to the engine's forced
        /// thaw (`freeze_limit - thaw_margin`), recorded so replay needs no config.
        #[serde(default)]
        freeze_budget_ms: u64,
        /// Absolute Unix ms given to the writers' watchdogs in the freeze
        /// commands (`start + freeze_limit - thaw_margin / 2`).
        #[serde(default)]
        watchdog_at_ms: u64,
    },
    /// Commands of a stage were (about to be) sent; `deadline_ms` is its timeout.
    StageStarted {
        stage: Stage,
        attempt: u32,
        deadline_ms: u64,
    },
    StepSucceeded {
        stage: Stage,
        attempt: u32,
        target: TargetId,
        worker: WorkerId,
        duration_us: u64,
        detail: StepDetail,
    },
    StepFailed {
        stage: Stage,
        attempt: u32,
        target: TargetId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<WorkerId>,
        error: StepError,
    },
    /// A stage did not finish before its deadline.
    StageTimedOut {
        stage: Stage,
        attempt: u32,
    },
    /// The freeze limit was reached before the snapshot reported: the engine
    /// thaws now, and the attempt fails.
    ForcedThaw {
        attempt: u32,
        reason: String,
    },
    /// A worker's watchdog thawed a target by itself (no thaw arrived in time,
    /// or the worker found it frozen on start).
    WatchdogThawed {
        attempt: u32,
        target: TargetId,
        worker: WorkerId,
        freeze_window_us: u64,
    },
    /// The attempt failed after the freeze and everything is thawed again;
    /// attempt `next_attempt` starts at `not_before_ms`.
    RetryScheduled {
        next_attempt: u32,
        not_before_ms: u64,
        reason: String,
    },
    Completed {
        attempt: u32,
        snapshot: SnapshotInfo,
        /// Longest per-target freeze window of the attempt, as measured by workers.
        freeze_window_us: u64,
    },
    Failed {
        attempt: u32,
        reason: String,
    },
    CancelRequested {
        reason: String,
    },
    Cancelled,
    /// A snapshot is gone from the storage: retention or the engine deleted
    /// it, or a prune found it not there (the job is the one that took it).
    SnapshotDeleted {
        target: TargetId,
        name: String,
    },
    // New variants go below, at the end, and must not make the archived
    // enum larger (`tests::the_archived_layout_is_unchanged`): rkyv has no
    // schema evolution, and old records must stay readable.
    /// A snapshot reported after its attempt's thaw deadline, after a thaw
    /// or failure of the attempt, or by an earlier attempt: cut while writers
    /// may have been running again, so not application-consistent and not a
    /// restore point. The engine deletes it (`PruneRequested`).
    LateSnapshot {
        attempt: u32,
        target: TargetId,
        worker: WorkerId,
        snapshot: SnapshotInfo,
    },
    /// The engine asks the provider pool of `target` to delete `names`
    /// (retention beyond `keep_last`, a late snapshot, or the snapshot an
    /// attempt may have left when it failed). Asked again at `retry_at_ms`
    /// while an outcome is missing; each outcome is a `SnapshotDeleted` or a
    /// `PruneFailed`.
    PruneRequested {
        target: TargetId,
        names: Vec<String>,
        retry_at_ms: u64,
    },
    /// A snapshot could not be deleted (the provider's error, or no answer):
    /// it still exists. A retryable error is tried again; otherwise the
    /// snapshot stays listed and the target's next prune tries again. The job
    /// is the one that took it.
    PruneFailed {
        target: TargetId,
        name: String,
        error: StepError,
    },
    // Protection policies (schedules, RPO): facts about no job carry
    // `JobId::NONE` (see `core/src/schedule.rs`).
    /// A schedule's config as the engine started with it (`spec`, its
    /// canonical text; empty = removed). Recorded at start-up when it
    /// differs from the last one recorded; the schedule's slots count from
    /// here. Job: `JobId::NONE`.
    ScheduleChanged {
        schedule: String,
        spec: String,
    },
    /// A schedule's slot fired: the job is the one it requested (request id
    /// `schedule:<id>:<slot>`, so one slot is one job, whatever restarts).
    ScheduleFired {
        schedule: String,
        slot_ms: u64,
    },
    /// Slots that did not fire (`missed` of them, the newest `slot_ms`):
    /// overlap, catch-up after downtime, or a request the core refused.
    /// Job: `JobId::NONE`.
    ScheduleSkipped {
        schedule: String,
        slot_ms: u64,
        missed: u32,
        reason: String,
    },
    /// A slot waits for the schedule's running job (`overlap = "queue_one"`)
    /// and fires when it ends. Job: the running one.
    ScheduleQueued {
        schedule: String,
        slot_ms: u64,
    },
    /// A schedule was paused (`paused`) or resumed. Job: `JobId::NONE`.
    SchedulePaused {
        schedule: String,
        paused: bool,
        reason: String,
    },
    /// A target's RPO as the engine started with it (0 = none). Job: `JobId::NONE`.
    RpoChanged {
        target: TargetId,
        rpo_ms: u64,
    },
    /// The newest good restore point of `target` became older than its RPO
    /// (`last_good_ms` 0: it has none). Job: `JobId::NONE`.
    RpoBreached {
        target: TargetId,
        rpo_ms: u64,
        last_good_ms: u64,
    },
    /// `target` has a restore point within its RPO again. Job: the one that
    /// made it (`JobId::NONE` when a config change did).
    RpoRestored {
        target: TargetId,
        rpo_ms: u64,
        last_good_ms: u64,
    },
    // Verified restore points (`core/src/verify.rs`): the job of each is the
    // one that took the snapshot.
    /// Snapshot `name` of `target` is to be verified (`origin`: `auto` after
    /// its job, `cli`/`http` on demand). `replaces`: requests of the same
    /// target not started yet that this one makes moot (`newest_daily`).
    VerifyRequested {
        target: TargetId,
        name: String,
        origin: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replaces: Vec<String>,
    },
    /// Verification run `run` of snapshot `name` of `target` was sent to the
    /// verify pool; the engine gives up at `deadline_ms`.
    VerifyStarted {
        target: TargetId,
        name: String,
        run: u32,
        deadline_ms: u64,
    },
    /// The restore point was verified: `checked` says what was looked at.
    Verified {
        target: TargetId,
        name: String,
        run: u32,
        duration_us: u64,
        checked: String,
    },
    /// The verification failed (the error names the file or relation), timed
    /// out or could not run. The snapshot stays; the point is marked failed.
    VerifyFailed {
        target: TargetId,
        name: String,
        run: u32,
        error: StepError,
    },
    // The catalog checked against the storage (`core/src/reconcile.rs`).
    // Job: `JobId::NONE`, but for `SnapshotVanished` (the job that took it).
    /// `target`'s snapshots are to be listed and compared with the catalog
    /// (`origin`: `schedule` for `reconcile_every`, `cli`/`http` on demand).
    ReconcileRequested {
        target: TargetId,
        origin: String,
    },
    /// Reconcile run `run` of `target` was sent to its provider pool; the
    /// engine gives up at `deadline_ms`. The catalog it is compared with is
    /// the one of this moment.
    ReconcileStarted {
        target: TargetId,
        run: u32,
        deadline_ms: u64,
    },
    /// A restore point in the catalog that the provider no longer lists
    /// (an array expiration, a delete by hand): it leaves the catalog, and
    /// retention and the RPO see it gone.
    SnapshotVanished {
        target: TargetId,
        name: String,
    },
    /// Snapshots the provider lists that look like recman's (the
    /// `rm-…-aN` names) but that no event records: reported, never deleted.
    SnapshotUnknown {
        target: TargetId,
        names: Vec<String>,
    },
    /// Reconcile run `run` of `target` ended: the provider listed `listed`
    /// snapshots; `vanished` left the catalog, `unknown` were reported.
    Reconciled {
        target: TargetId,
        run: u32,
        listed: u32,
        vanished: u32,
        unknown: u32,
    },
    /// The provider could not list (its error), or did not answer in time.
    /// The catalog is unchanged.
    ReconcileFailed {
        target: TargetId,
        run: u32,
        error: StepError,
    },
    /// The array keeps restore point `name` of `target` on its own clock
    /// (3PAR `expiration_hours` / `retention_hours`, counted from the cut):
    /// recorded with the snapshot step, before the job's `Completed`
    /// (`target`: the job's first). Job: the one that took it.
    SnapshotExpiry {
        target: TargetId,
        name: String,
        expiry: ArrayExpiry,
    },
    // Recovery (`core/src/recovery.rs`): restore, mount and clone are jobs
    // of their own; the job of each event is the recovery's.
    /// A recovery of restore point `name` of `target` was accepted.
    RecoveryRequested {
        request_id: RequestId,
        target: TargetId,
        name: String,
        /// Stored in its version-1 layout (`action::Stored`).
        #[rkyv(with = crate::action::AsStored)]
        action: RecoveryAction,
        /// Where it came from: `cli`, `http`, `amqp`, `max_mount_age`, `sim`.
        origin: String,
    },
    /// Step `stage` was sent; the engine gives up at `deadline_ms`.
    RecoveryStepStarted {
        stage: Stage,
        deadline_ms: u64,
    },
    RecoveryStepDone {
        stage: Stage,
        worker: WorkerId,
        duration_us: u64,
        /// Where the data now is (path, mount point, clone), or the safety
        /// snapshot's name; empty when the step has nothing to say.
        location: String,
    },
    /// A step failed, or did not answer by its deadline (`timeout`).
    RecoveryStepFailed {
        stage: Stage,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<WorkerId>,
        error: StepError,
    },
    RecoveryCompleted {
        location: String,
    },
    RecoveryFailed {
        reason: String,
        /// Where the live data was left.
        live: LiveData,
    },
    /// What recovery step `stage` found, recorded with its
    /// `RecoveryStepDone` (a database: the LSN and time it recovered to).
    RecoveryStepNoted {
        stage: Stage,
        note: String,
    },
    /// The recovery overwrites a target with `require_approval`: it waits
    /// (`awaiting_approval`) until an admin other than its requester (the
    /// `by` of `RecoveryRequested`) approves it, and fails, never run, if
    /// none did by `expires_ms`.
    ApprovalRequired {
        expires_ms: u64,
    },
    /// A second admin (this event's `by`) approved the recovery that
    /// `requester` asked for: it starts when its target is idle.
    Approved {
        requester: String,
    },
}

impl EventBody {
    /// A short stable name, also the first part of the events routing key.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Requested { .. } => "requested",
            EventBody::Queued { .. } => "queued",
            EventBody::AttemptStarted { .. } => "attempt_started",
            EventBody::StageStarted { .. } => "stage_started",
            EventBody::StepSucceeded { .. } => "step_succeeded",
            EventBody::StepFailed { .. } => "step_failed",
            EventBody::StageTimedOut { .. } => "stage_timed_out",
            EventBody::ForcedThaw { .. } => "forced_thaw",
            EventBody::WatchdogThawed { .. } => "watchdog_thawed",
            EventBody::RetryScheduled { .. } => "retry_scheduled",
            EventBody::Completed { .. } => "completed",
            EventBody::Failed { .. } => "failed",
            EventBody::CancelRequested { .. } => "cancel_requested",
            EventBody::Cancelled => "cancelled",
            EventBody::SnapshotDeleted { .. } => "snapshot_deleted",
            EventBody::LateSnapshot { .. } => "late_snapshot",
            EventBody::PruneRequested { .. } => "prune_requested",
            EventBody::PruneFailed { .. } => "prune_failed",
            EventBody::ScheduleChanged { .. } => "schedule_changed",
            EventBody::ScheduleFired { .. } => "schedule_fired",
            EventBody::ScheduleSkipped { .. } => "schedule_skipped",
            EventBody::ScheduleQueued { .. } => "schedule_queued",
            EventBody::SchedulePaused { paused: true, .. } => "schedule_paused",
            EventBody::SchedulePaused { paused: false, .. } => "schedule_resumed",
            EventBody::RpoChanged { .. } => "rpo_changed",
            EventBody::RpoBreached { .. } => "rpo_breached",
            EventBody::RpoRestored { .. } => "rpo_restored",
            EventBody::VerifyRequested { .. } => "verify_requested",
            EventBody::VerifyStarted { .. } => "verify_started",
            EventBody::Verified { .. } => "verified",
            EventBody::VerifyFailed { .. } => "verify_failed",
            EventBody::ReconcileRequested { .. } => "reconcile_requested",
            EventBody::ReconcileStarted { .. } => "reconcile_started",
            EventBody::SnapshotVanished { .. } => "snapshot_vanished",
            EventBody::SnapshotUnknown { .. } => "snapshot_unknown",
            EventBody::Reconciled { .. } => "reconciled",
            EventBody::ReconcileFailed { .. } => "reconcile_failed",
            EventBody::SnapshotExpiry { .. } => "snapshot_expiry",
            EventBody::RecoveryRequested { .. } => "recovery_requested",
            EventBody::RecoveryStepStarted { .. } => "recovery_step_started",
            EventBody::RecoveryStepDone { .. } => "recovery_step_done",
            EventBody::RecoveryStepFailed { .. } => "recovery_step_failed",
            EventBody::RecoveryCompleted { .. } => "recovery_completed",
            EventBody::RecoveryFailed { .. } => "recovery_failed",
            EventBody::RecoveryStepNoted { .. } => "recovery_step_noted",
            EventBody::ApprovalRequired { .. } => "approval_required",
            EventBody::Approved { .. } => "approved",
        }
    }

    /// True for the events that end a job.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventBody::Completed { .. } | EventBody::Failed { .. } | EventBody::Cancelled
        ) || self.is_recovery_end()
    }

    /// True for the events that end a recovery job.
    pub fn is_recovery_end(&self) -> bool {
        matches!(
            self,
            EventBody::RecoveryCompleted { .. } | EventBody::RecoveryFailed { .. }
        )
    }
}

/// An event as read back from the log, with its global sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Old records stay readable only while the archived layout of an event
    /// is what it was (88 bytes, 8-aligned, for record version 1): variants
    /// are added at the end and no larger than the largest one.
    #[test]
    fn the_archived_layout_is_unchanged() {
        assert_eq!(std::mem::size_of::<ArchivedEventBody>(), 88);
        assert_eq!(std::mem::align_of::<ArchivedEventBody>(), 8);
        assert_eq!(std::mem::size_of::<ArchivedStepDetail>(), 56);
        // Record version 2 added `by` to the event, beside the body.
        assert_eq!(std::mem::size_of::<ArchivedEvent>(), 120);
        assert_eq!(std::mem::size_of::<crate::codec::v1::ArchivedEvent>(), 112);
        // A recovery's action: the first six variants are version 1's.
        assert_eq!(std::mem::size_of::<crate::action::ArchivedStored>(), 20);
        assert_eq!(std::mem::align_of::<crate::action::ArchivedStored>(), 4);
    }

    #[test]
    fn a_pruned_report_keeps_its_failures_on_the_wire_only() {
        let d = StepDetail::Pruned {
            deleted: vec!["a".into()],
            failed: vec![PruneFailure {
                name: "b".into(),
                error: StepError::new("3par_has_child", "has a child", false),
            }],
        };
        let json = serde_json::to_string(&d).expect("json");
        assert!(json.contains("3par_has_child"), "{json}");
        assert_eq!(serde_json::from_str::<StepDetail>(&json).expect("json"), d);
        let old: StepDetail = serde_json::from_str(r#"{"type":"pruned","deleted":["a"]}"#).expect("json");
        assert_eq!(
            old,
            StepDetail::Pruned {
                deleted: vec!["a".into()],
                failed: vec![]
            }
        );
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&d).expect("archive");
        let back = rkyv::from_bytes::<StepDetail, rkyv::rancor::Error>(&bytes).expect("unarchive");
        assert_eq!(
            back,
            StepDetail::Pruned {
                deleted: vec!["a".into()],
                failed: vec![]
            }
        );
    }
}
