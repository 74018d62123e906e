//! The event model: everything that can happen to a job, as recorded in the log.
//!
//! Events are facts, in past tense. The engine core decides them, the log makes
//! them durable, replay folds them back into state. They are stored with rkyv
//! (see `codec`) and published as JSON (see `wire`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// Snapshots deleted by retention (names).
    Pruned {
        deleted: Vec<String>,
    },
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
/// passed to the core (never read from a clock inside it).
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
    /// Retention removed a snapshot (the job is the one that took it).
    SnapshotDeleted {
        target: TargetId,
        name: String,
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
        }
    }

    /// True for the events that end a job.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventBody::Completed { .. } | EventBody::Failed { .. } | EventBody::Cancelled
        )
    }
}

/// An event as read back from the log, with its global sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: Event,
}
