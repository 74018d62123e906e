//! The read side: a projection of the event log into jobs with timelines,
//! targets, the snapshot catalog and metrics. Pure functions over events,
//! shared by the HTTP API (fed live by `EventLog::subscribe`), the CLI read
//! commands on a data dir, and `recman replay --until`.
//!
//! Job state comes from folding the log with the core's own `evolve`, so the
//! view can never disagree with the engine about where a job is.
//!
//! Bounded like the core's state: a finished job leaves the core state after
//! its stay (`recman_core::Bounds`); the view then keeps the last
//! [`RECENT_FINISHED`] finished jobs that left, and older ones are read from
//! the log by id ([`job_from_log`]). The jobs list shows what is in memory:
//! every unfinished job, the jobs finished within the stay, and the last
//! [`RECENT_FINISHED`] before that.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use recman_events::{
    ArrayExpiry, EventBody, EventLog, JobId, LiveData, LogError, RecoveryAction, RequestId, SnapshotInfo,
    Stage, StepDetail, StoredEvent, TargetId, WorkerId,
};
use serde::{Deserialize, Serialize};

use recman_core::recovery::{Op, OpState};
use recman_core::{evolve_retiring, Job, JobState, Retired, State};

use recent::Recent;

/// Finished jobs the view keeps in memory after they left the core state
/// (the jobs list shows them; older ones are read from the log by id).
pub const RECENT_FINISHED: usize = 10_000;

pub mod metrics;
mod recent;
pub mod schedules;
pub mod section;
pub mod time;

use metrics::{Family, Histogram, FREEZE_BUCKETS, STAGE_BUCKETS};

/// Where to stop a rebuild (`recman replay --until`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Everything.
    End,
    /// Up to and including this sequence number.
    Seq(u64),
    /// Events recorded at or before this Unix time (ms).
    Time(u64),
}

impl std::str::FromStr for Until {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.parse::<u64>() {
            return Ok(Until::Seq(n));
        }
        time::parse_rfc3339(s)
            .map(Until::Time)
            .map_err(|e| format!("{e}; or give a sequence number"))
    }
}

/// One step report as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    pub stage: Stage,
    pub attempt: u32,
    pub target: TargetId,
    #[serde(default)]
    pub worker: Option<WorkerId>,
    pub at_ms: u64,
    #[serde(default)]
    pub duration_us: Option<u64>,
    pub ok: bool,
    /// `code: message` of a failed step; `thawed by watchdog` for a watchdog thaw.
    #[serde(default)]
    pub note: Option<String>,
}

/// One stage of one attempt of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineStage {
    pub stage: Stage,
    pub attempt: u32,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub outcome: Option<String>,
    /// Workers' reports for this stage and attempt.
    pub steps: Vec<StepView>,
}

/// The freeze window of a job's last attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreezeWindow {
    pub first_frozen_at_ms: Option<u64>,
    /// Longest per-target window as measured by the workers (µs).
    pub window_us: Option<u64>,
    /// The limit the engine enforced (freeze budget, ms).
    pub budget_ms: u64,
    pub targets: Vec<TargetWindow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetWindow {
    pub target: TargetId,
    pub window_us: Option<u64>,
    pub by_watchdog: bool,
}

/// A job in a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub id: JobId,
    pub request_id: String,
    /// `queued`, `freezing`, `frozen`, `snapshotting`, `snapshotted`, `thawing`,
    /// `thawed`, `flushing_logs`, `retry_wait`, `completed`, `failed`, `cancelled`.
    pub state: String,
    pub targets: Vec<TargetId>,
    pub kind: String,
    pub origin: String,
    /// Who requested it (the `by` of its request event): an API user,
    /// `amqp:<user>`, `cli:<unix user>`, `schedule:<id>`; absent when
    /// unknown (logs from before `by` existed) or the engine's own.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
    pub attempt: u32,
    pub stage: Option<Stage>,
    pub requested_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub snapshot: Option<String>,
    /// Reason of a failed or cancelled job.
    pub outcome: Option<String>,
}

/// A job with its timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub timeline: Vec<TimelineStage>,
    pub freeze_window: FreezeWindow,
    pub snapshot_info: Option<SnapshotInfo>,
    pub cancel_reason: Option<String>,
    pub last_error: Option<String>,
    /// A recovery job's own facts (restore, mount, clone; absent for a
    /// snapshot job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryView>,
}

/// What a recovery job did with a restore point (`recman job ID`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryView {
    /// As requested: `{"type": "in_place"}`, `{"type": "to", "path": …}`, …
    pub action: RecoveryAction,
    /// The restore point (for unmount and remove_clone: the one mounted or cloned).
    pub point: String,
    /// Where the data is: the restored path, the mount point, the clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// In place: the safety snapshot taken before the revert (a restore
    /// point of the target, listed by `recman snapshots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_snapshot: Option<String>,
    /// A failed recovery: where it left the live data (`untouched`,
    /// `rolled_back`, `restored`, `unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveData>,
    /// Four-eyes (`require_approval`): when the request expires unapproved,
    /// and the second admin who approved it (the requester is `by`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalView>,
}

/// A recovery's four-eyes approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalView {
    /// Unapproved by then, it fails without running (Unix ms).
    pub expires_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at_ms: Option<u64>,
}

/// A restore point exposed on a host (`recman mounts`, `GET /v1/mounts`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountView {
    /// The recovery job that mounted it: `recman unmount JOB`.
    pub job: JobId,
    pub target: TargetId,
    /// The restore point.
    pub snapshot: String,
    pub location: String,
    pub worker: WorkerId,
    pub since_ms: u64,
    pub writable: bool,
}

/// A clone of a restore point (`recman clones`, `GET /v1/clones`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneView {
    pub name: String,
    /// The recovery job that made it.
    pub job: JobId,
    pub target: TargetId,
    /// The restore point it was cloned from.
    pub snapshot: String,
    pub location: String,
    pub worker: WorkerId,
    pub since_ms: u64,
}

/// A target and what it is doing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetView {
    pub id: TargetId,
    /// `idle`, the state of the job holding it (`freezing`, `frozen`, …),
    /// or `recovering` while a recovery job runs on it.
    pub state: String,
    pub job: Option<JobId>,
    /// Jobs waiting behind the one holding it.
    pub queue_depth: usize,
    pub last_snapshot: Option<SnapshotRef>,
    pub last_failure: Option<FailureRef>,
    /// The last snapshot of this target that could not be deleted (it still
    /// exists), until a later prune of it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prune_failure: Option<PruneFailureRef>,
    /// The target's RPO and whether it is breached (`rpo_breached` /
    /// `rpo_restored`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<RpoView>,
}

/// A target's RPO as the log tells it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RpoView {
    pub rpo_ms: u64,
    pub breached: bool,
    /// When the current breach began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breached_at_ms: Option<u64>,
}

/// A snapshot a prune could not delete (`prune_failed`): it still exists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneFailureRef {
    pub name: String,
    pub job: JobId,
    pub at_ms: u64,
    /// The provider's error: `code: message`.
    pub error: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub name: String,
    pub job: JobId,
    pub at_ms: u64,
    pub location: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureRef {
    pub job: JobId,
    pub at_ms: u64,
    pub reason: String,
}

/// A restore point recman holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    pub name: String,
    pub targets: Vec<TargetId>,
    pub job: JobId,
    /// When the provider reported the point-in-time copy (Unix ms).
    pub cut_at_ms: u64,
    pub kind: String,
    pub provider: String,
    /// Provider id: a path, a subvolume, an image + tag, a volume name.
    pub location: String,
    pub size_bytes: Option<u64>,
    pub freeze_window_us: u64,
    /// Expiry under `keep_last`; absent when the target keeps every snapshot.
    pub retention: Option<Retention>,
    /// Why the last prune of it failed (it is still there, and retention
    /// tries again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_failure: Option<String>,
    /// Where its verification stands, per target that has a record
    /// (empty: never verified nor asked for).
    #[serde(default)]
    pub verification: Vec<VerificationView>,
    /// The array's own clock on it (3PAR), when the provider set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_expiry: Option<ArrayExpiryView>,
    /// Why retention must keep it now (rule `in_use`): mounted, or a
    /// recovery waits for it or reads it. One line per target that uses it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_use: Vec<String>,
}

/// How long the array keeps a restore point by itself (`SnapshotExpiry`):
/// the configured hours and the instants they give from the cut.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayExpiryView {
    /// The array removes it this long after the cut (`expiration_hours`)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_hours: Option<u32>,
    /// ...at this instant (Unix ms); a reconcile then finds it gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// The array refuses to delete it this long after the cut (`retention_hours`)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_hours: Option<u32>,
    /// ...until this instant (Unix ms): a prune before it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_until_ms: Option<u64>,
}

impl ArrayExpiryView {
    fn new(e: ArrayExpiry, cut_at_ms: u64) -> Self {
        let at = |h: Option<u32>| h.map(|h| cut_at_ms.saturating_add(u64::from(h) * 3_600_000));
        ArrayExpiryView {
            expiration_hours: e.expiration_hours,
            expires_at_ms: at(e.expiration_hours),
            retention_hours: e.retention_hours,
            retained_until_ms: at(e.retention_hours),
        }
    }
}

/// One target's verification of a restore point (`recman verify`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationView {
    pub target: TargetId,
    /// `unverified`, `pending`, `running`, `verified` or `failed`.
    pub status: String,
    /// Runs started so far.
    pub runs: u32,
    /// When it last passed (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at_ms: Option<u64>,
    /// When the last run ended (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
    /// What the last run checked, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `keep_last` retention: this snapshot is pruned after `expires_after` more
/// completed snapshots of its target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retention {
    pub keep_last: u32,
    pub newer: u32,
    pub expires_after: u32,
}

/// Per-job facts the core state does not keep.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct JobExtra {
    /// The `by` of the job's request.
    by: String,
    steps: Vec<StepView>,
    snapshot_at_ms: Option<u64>,
    /// The `SnapshotExpiry` of the job's snapshots, by name.
    array_expiry: BTreeMap<String, Expiry>,
}

/// An [`ArrayExpiry`] in a shape every serde format keeps (the checkpoint's
/// view section).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Expiry {
    expiration_hours: Option<u32>,
    retention_hours: Option<u32>,
}

impl From<ArrayExpiry> for Expiry {
    fn from(e: ArrayExpiry) -> Self {
        Expiry {
            expiration_hours: e.expiration_hours,
            retention_hours: e.retention_hours,
        }
    }
}

impl From<Expiry> for ArrayExpiry {
    fn from(e: Expiry) -> Self {
        ArrayExpiry {
            expiration_hours: e.expiration_hours,
            retention_hours: e.retention_hours,
        }
    }
}

/// The projection. `apply` every event in order; query with the methods.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// The core's state, folded with the core's `evolve`.
    pub state: State,
    pub last_seq: u64,
    pub last_at_ms: u64,
    extra: BTreeMap<JobId, JobExtra>,
    /// The catalog in the order it was filled (key: a running number).
    catalog: BTreeMap<u64, SnapshotEntry>,
    /// The catalog entry of each job (a job has at most one).
    catalog_by_job: HashMap<JobId, u64>,
    catalog_next: u64,
    last_snapshot: BTreeMap<TargetId, SnapshotRef>,
    last_failure: BTreeMap<TargetId, FailureRef>,
    last_prune_failure: BTreeMap<TargetId, PruneFailureRef>,
    /// Targets of the config (shown even before their first job) with `keep_last`.
    pub retention: BTreeMap<TargetId, Option<u32>>,
    /// Every retention rule of each configured target (`recman prune`).
    pub policies: BTreeMap<TargetId, recman_core::RetentionPolicy>,
    stage_hist: Family,
    freeze_hist: Family,
    step_failures: BTreeMap<String, u64>,
    /// The config's schedules (`schedules`).
    schedules: Vec<recman_core::schedule::Schedule>,
    /// Finished jobs that left `state.jobs`, the last [`RECENT_FINISHED`].
    recent: Recent<Job>,
    /// Jobs by state that left `state.jobs` (the job gauges count them, so
    /// they never go down when a finished job leaves memory).
    left_by_state: BTreeMap<&'static str, u64>,
    /// Recovery jobs that left the core state's ledger, the last `recent_cap`.
    recent_ops: Recent<Op>,
    /// How many jobs (and, apart, recovery jobs) a read keeps after they
    /// left the core state.
    recent_cap: usize,
    /// Scratch: jobs and recovery jobs that left the core state at the
    /// event being folded.
    retired: Retired,
}

impl View {
    /// An empty view knowing the config's targets and their `keep_last`.
    pub fn new(retention: BTreeMap<TargetId, Option<u32>>) -> Self {
        View {
            retention,
            recent_cap: RECENT_FINISHED,
            ..View::default()
        }
    }

    /// With the engine's bounds (how long finished jobs stay in the core
    /// state) and how many finished jobs the view keeps after that.
    pub fn with_bounds(mut self, bounds: recman_core::Bounds, recent: usize) -> Self {
        self.state.bounds = bounds;
        self.recent_cap = recent;
        self
    }

    /// How many finished jobs it keeps after they left the core state.
    pub fn recent_cap(&self) -> usize {
        self.recent_cap
    }

    /// A recovery job in memory: in the core state or among the recent finished.
    fn any_op(&self, id: &JobId) -> Option<&Op> {
        self.state
            .recovery
            .ops
            .get(id)
            .or_else(|| self.recent_ops.get(id))
    }

    /// The per-job facts of `job`, when it is in memory.
    fn extra_of(&mut self, job: JobId) -> Option<&mut JobExtra> {
        if !self.in_memory(&job) {
            return None;
        }
        Some(self.extra.entry(job).or_default())
    }

    /// A snapshot job in memory: in the core state or among the recent finished.
    fn any_job(&self, id: &JobId) -> Option<&Job> {
        self.state.jobs.get(id).or_else(|| self.recent.get(id))
    }

    /// The job (snapshot or recovery) of request id `r` when the id is in
    /// the request window but the job left memory (`job_from_log` has it).
    pub fn request_left_memory(&self, r: &RequestId) -> Option<JobId> {
        let job = match self.state.requests.get(r) {
            Some(e) => e.job,
            None => self.state.recovery.requests.get(r)?.job,
        };
        (!self.in_memory(&job)).then_some(job)
    }

    /// Whether facts of job `id` are kept in memory (per-job extras of a job
    /// that left memory are not kept again by a late event).
    fn in_memory(&self, id: &JobId) -> bool {
        self.state.jobs.contains_key(id)
            || self.recent.contains(id)
            || self.state.recovery.ops.contains_key(id)
            || self.recent_ops.contains(id)
    }

    /// With the config's retention rules (for the prune plan).
    pub fn with_policies(mut self, policies: BTreeMap<TargetId, recman_core::RetentionPolicy>) -> Self {
        self.policies = policies;
        self
    }

    /// Folds `events` from `log` up to `until`.
    pub fn build(mut self, log: &dyn EventLog, until: Until) -> Result<View, LogError> {
        let mut from = self.last_seq + 1;
        loop {
            let batch = log.read(from, 4096)?;
            let Some(last) = batch.last() else { break };
            from = last.seq + 1;
            for e in &batch {
                let stop = match until {
                    Until::End => false,
                    Until::Seq(s) => e.seq > s,
                    Until::Time(t) => e.event.at_ms > t,
                };
                if stop {
                    return Ok(self);
                }
                self.apply(e);
            }
        }
        Ok(self)
    }

    /// Folds one event in. Events must come in sequence order.
    pub fn apply(&mut self, e: &StoredEvent) {
        let ev = &e.event;
        // Facts after a job's end (a duplicate Completed, say) move nothing.
        let was_terminal = self
            .state
            .jobs
            .get(&ev.job)
            .is_some_and(|j| j.state.is_terminal());
        let mut retired = std::mem::take(&mut self.retired);
        evolve_retiring(&mut self.state, ev, &mut retired);
        // The per-job facts of what is pushed out of the recent go with it.
        let extra = &mut self.extra;
        for j in retired.jobs.drain(..) {
            *self.left_by_state.entry(state_name(j.state)).or_default() += 1;
            self.recent.keep(j, self.recent_cap, |old| {
                extra.remove(&old);
            });
        }
        for op in retired.ops.drain(..) {
            self.recent_ops.keep(op, self.recent_cap, |old| {
                extra.remove(&old);
            });
        }
        self.retired = retired;
        self.last_seq = e.seq;
        self.last_at_ms = ev.at_ms;
        let job = ev.job;
        if matches!(
            ev.body,
            EventBody::Requested { .. } | EventBody::RecoveryRequested { .. }
        ) && !ev.by.is_empty()
        {
            if let Some(x) = self.extra_of(job) {
                x.by = ev.by.clone();
            }
        }
        match &ev.body {
            EventBody::StepSucceeded {
                stage,
                attempt,
                target,
                worker,
                duration_us,
                detail,
            } => {
                self.stage_hist
                    .entry(stage_labels(target, *stage))
                    .or_insert_with(|| Histogram::new(STAGE_BUCKETS))
                    .observe(*duration_us as f64 / 1e6);
                match detail {
                    StepDetail::Thawed { freeze_window_us, .. } => {
                        self.observe_freeze(target, *freeze_window_us)
                    }
                    StepDetail::Snapshot(_) => {
                        let current = self.state.jobs.get(&job).map_or(0, |j| j.attempt);
                        if let Some(x) = self.extra_of(job) {
                            if x.snapshot_at_ms.is_none() || *attempt >= current {
                                x.snapshot_at_ms = Some(ev.at_ms);
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(x) = self.extra_of(job) {
                    x.steps.push(StepView {
                        stage: *stage,
                        attempt: *attempt,
                        target: target.clone(),
                        worker: Some(worker.clone()),
                        at_ms: ev.at_ms,
                        duration_us: Some(*duration_us),
                        ok: true,
                        note: None,
                    });
                }
            }
            EventBody::StepFailed {
                stage,
                attempt,
                target,
                worker,
                error,
            } => {
                *self
                    .step_failures
                    .entry(stage_labels(target, *stage))
                    .or_default() += 1;
                if let Some(x) = self.extra_of(job) {
                    x.steps.push(StepView {
                        stage: *stage,
                        attempt: *attempt,
                        target: target.clone(),
                        worker: worker.clone(),
                        at_ms: ev.at_ms,
                        duration_us: None,
                        ok: false,
                        note: Some(error.to_string()),
                    });
                }
            }
            EventBody::WatchdogThawed {
                attempt,
                target,
                worker,
                freeze_window_us,
            } => {
                self.observe_freeze(target, *freeze_window_us);
                if let Some(x) = self.extra_of(job) {
                    x.steps.push(StepView {
                        stage: Stage::Thaw,
                        attempt: *attempt,
                        target: target.clone(),
                        worker: Some(worker.clone()),
                        at_ms: ev.at_ms,
                        duration_us: None,
                        ok: true,
                        note: Some("thawed by watchdog".into()),
                    });
                }
            }
            EventBody::Completed {
                snapshot,
                freeze_window_us,
                ..
            } => {
                let Some(j) = self.state.jobs.get(&job) else {
                    return;
                };
                let cut = self
                    .extra
                    .get(&job)
                    .and_then(|x| x.snapshot_at_ms)
                    .unwrap_or(ev.at_ms);
                if self.catalog_by_job.contains_key(&job) {
                    return;
                }
                for t in &j.targets {
                    self.last_snapshot.insert(
                        t.clone(),
                        SnapshotRef {
                            name: snapshot.name.clone(),
                            job,
                            at_ms: cut,
                            location: snapshot.location.clone(),
                        },
                    );
                }
                let entry = SnapshotEntry {
                    name: snapshot.name.clone(),
                    targets: j.targets.clone(),
                    job,
                    cut_at_ms: cut,
                    kind: j.kind.as_str().to_string(),
                    provider: snapshot.provider.clone(),
                    location: snapshot.location.clone(),
                    size_bytes: snapshot.size_bytes,
                    freeze_window_us: *freeze_window_us,
                    retention: None,
                    prune_failure: None,
                    verification: Vec::new(),
                    array_expiry: self
                        .extra
                        .get(&job)
                        .and_then(|x| x.array_expiry.get(&snapshot.name))
                        .map(|e| ArrayExpiryView::new((*e).into(), cut)),
                    in_use: Vec::new(),
                };
                self.catalog_push(entry);
            }
            EventBody::RecoveryStepDone {
                stage,
                worker,
                duration_us,
                location,
            } => {
                let Some(op) = self.state.recovery.ops.get(&job) else {
                    return;
                };
                let target = op.target.clone();
                if let Some(x) = self.extra_of(job) {
                    x.steps.push(StepView {
                        stage: *stage,
                        attempt: 1,
                        target: target.clone(),
                        worker: Some(worker.clone()),
                        at_ms: ev.at_ms,
                        duration_us: Some(*duration_us),
                        ok: true,
                        note: None,
                    });
                }
                // The safety snapshot is a restore point of the target (the
                // core catalogued it with this event).
                if *stage == Stage::SafetySnapshot && !self.catalog_by_job.contains_key(&job) {
                    self.catalog_push(SnapshotEntry {
                        name: location.clone(),
                        targets: vec![target],
                        job,
                        cut_at_ms: ev.at_ms,
                        kind: SAFETY_KIND.into(),
                        provider: String::new(),
                        location: String::new(),
                        size_bytes: None,
                        freeze_window_us: 0,
                        retention: None,
                        prune_failure: None,
                        verification: Vec::new(),
                        array_expiry: None,
                        in_use: Vec::new(),
                    });
                }
            }
            EventBody::RecoveryStepFailed { stage, worker, error } => {
                let Some(op) = self.state.recovery.ops.get(&job) else {
                    return;
                };
                let target = op.target.clone();
                if let Some(x) = self.extra_of(job) {
                    x.steps.push(StepView {
                        stage: *stage,
                        attempt: 1,
                        target,
                        worker: worker.clone(),
                        at_ms: ev.at_ms,
                        duration_us: None,
                        ok: false,
                        note: Some(error.to_string()),
                    });
                }
            }
            EventBody::RecoveryStepNoted { stage, note } => {
                let step = self
                    .extra
                    .get_mut(&job)
                    .and_then(|x| x.steps.iter_mut().rev().find(|s| s.stage == *stage && s.ok));
                if let Some(s) = step {
                    s.note = Some(note.clone());
                }
            }
            EventBody::Failed { reason, .. } if !was_terminal => {
                if let Some(j) = self.state.jobs.get(&job) {
                    for t in &j.targets {
                        self.last_failure.insert(
                            t.clone(),
                            FailureRef {
                                job,
                                at_ms: ev.at_ms,
                                reason: reason.clone(),
                            },
                        );
                    }
                }
            }
            EventBody::SnapshotExpiry { name, expiry, .. } => {
                if let Some(x) = self.extra_of(job) {
                    x.array_expiry.insert(name.clone(), (*expiry).into());
                }
            }
            EventBody::PruneFailed { target, name, error } => {
                let error = format!("{}: {}", error.code, error.message);
                if let Some(c) = self.catalog_of(&job).filter(|c| &c.name == name) {
                    c.prune_failure = Some(error.clone());
                }
                self.last_prune_failure.insert(
                    target.clone(),
                    PruneFailureRef {
                        name: name.clone(),
                        job,
                        at_ms: ev.at_ms,
                        error,
                    },
                );
            }
            EventBody::SnapshotDeleted { target, name } | EventBody::SnapshotVanished { target, name } => {
                if self
                    .last_prune_failure
                    .get(target)
                    .is_some_and(|f| f.job == job && &f.name == name)
                {
                    self.last_prune_failure.remove(target);
                }
                if let Some(c) = self.catalog_of(&job).filter(|c| &c.name == name) {
                    c.targets.retain(|t| t != target);
                    if c.targets.is_empty() {
                        if let Some(k) = self.catalog_by_job.remove(&job) {
                            self.catalog.remove(&k);
                        }
                    }
                }
                if self
                    .last_snapshot
                    .get(target)
                    .is_some_and(|s| s.job == job && &s.name == name)
                {
                    self.last_snapshot.remove(target);
                }
            }
            _ => {}
        }
    }

    /// Adds `e` at the catalog's end (newest).
    fn catalog_push(&mut self, e: SnapshotEntry) {
        let k = self.catalog_next;
        self.catalog_next += 1;
        self.catalog_by_job.insert(e.job, k);
        self.catalog.insert(k, e);
    }

    /// The catalog entry of job `id`.
    fn catalog_of(&mut self, id: &JobId) -> Option<&mut SnapshotEntry> {
        let k = self.catalog_by_job.get(id)?;
        self.catalog.get_mut(k)
    }

    fn observe_freeze(&mut self, target: &TargetId, us: u64) {
        self.freeze_hist
            .entry(format!("target=\"{}\"", metrics::label(target.as_str())))
            .or_insert_with(|| Histogram::new(FREEZE_BUCKETS))
            .observe(us as f64 / 1e6);
    }

    /// Job `id` when it is in memory (see [`job_from_log`] for the others).
    pub fn job(&self, id: &JobId) -> Option<JobDetail> {
        let Some(j) = self.any_job(id) else {
            return self.recovery_job(id);
        };
        let steps = self.extra.get(id).map(|x| x.steps.as_slice()).unwrap_or(&[]);
        let timeline = j
            .timeline
            .iter()
            .map(|t| TimelineStage {
                stage: t.stage,
                attempt: t.attempt,
                started_ms: t.started_ms,
                ended_ms: t.ended_ms,
                duration_ms: t.ended_ms.map(|e| e.saturating_sub(t.started_ms)),
                outcome: t.outcome.clone(),
                steps: steps
                    .iter()
                    .filter(|s| s.stage == t.stage && s.attempt == t.attempt)
                    .cloned()
                    .collect(),
            })
            .collect();
        let targets: Vec<TargetWindow> = j
            .targets
            .iter()
            .zip(&j.progress)
            .map(|(t, p)| TargetWindow {
                target: t.clone(),
                window_us: p.freeze_window_us,
                by_watchdog: p.thawed_by_watchdog,
            })
            .collect();
        Some(JobDetail {
            summary: summary(j, self.by_of(&j.id)),
            timeline,
            freeze_window: FreezeWindow {
                first_frozen_at_ms: j.first_frozen_at_ms,
                window_us: targets.iter().filter_map(|t| t.window_us).max(),
                budget_ms: j.freeze_budget_ms,
                targets,
            },
            snapshot_info: j.snapshot.clone(),
            cancel_reason: j.cancel.clone(),
            last_error: j.last_error.as_ref().map(ToString::to_string),
            recovery: None,
        })
    }

    /// A recovery job in the shape of a job: its steps as the timeline (one
    /// attempt), no freeze window, and what it did in `recovery`.
    fn recovery_job(&self, id: &JobId) -> Option<JobDetail> {
        let op = self.any_op(id)?;
        let steps = self.extra.get(id).map(|x| x.steps.as_slice()).unwrap_or(&[]);
        let timeline = op
            .timeline
            .iter()
            .map(|t| TimelineStage {
                stage: t.stage,
                attempt: t.attempt,
                started_ms: t.started_ms,
                ended_ms: t.ended_ms,
                duration_ms: t.ended_ms.map(|e| e.saturating_sub(t.started_ms)),
                outcome: t.outcome.clone(),
                steps: steps
                    .iter()
                    .filter(|s| s.stage == t.stage && s.at_ms >= t.started_ms)
                    .take(1)
                    .cloned()
                    .collect(),
            })
            .collect();
        let failed = op.state == OpState::Failed;
        Some(JobDetail {
            summary: recovery_summary(op, self.by_of(&op.id)),
            timeline,
            freeze_window: FreezeWindow {
                first_frozen_at_ms: None,
                window_us: None,
                budget_ms: 0,
                targets: Vec::new(),
            },
            snapshot_info: None,
            cancel_reason: None,
            last_error: op.failure.as_ref().map(|(r, _)| r.clone()),
            recovery: Some(RecoveryView {
                action: op.action.clone(),
                point: op.name.clone(),
                location: op.location.clone().filter(|l| !l.is_empty()),
                safety_snapshot: op.safety.clone(),
                live: if failed { op.live } else { None },
                approval: op.approval.as_ref().map(|a| ApprovalView {
                    expires_at_ms: a.expires_ms,
                    approved_by: a.by.clone(),
                    approved_at_ms: a.at_ms,
                }),
            }),
        })
    }

    /// Restore points exposed on hosts, oldest first.
    /// Who requested job `id` (empty: unknown or the engine).
    fn by_of(&self, id: &JobId) -> &str {
        self.extra.get(id).map_or("", |x| x.by.as_str())
    }

    /// The targets of the config's schedule `id` (`None`: no such schedule).
    pub fn schedule_targets(&self, id: &str) -> Option<Vec<TargetId>> {
        self.schedules
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.targets.clone())
    }

    /// The targets a job acts on: a snapshot job's, or a recovery's one.
    pub fn job_targets(&self, id: &JobId) -> Vec<TargetId> {
        if let Some(j) = self.any_job(id) {
            return j.targets.clone();
        }
        self.state
            .recovery
            .ops
            .get(id)
            .map(|o| vec![o.target.clone()])
            .unwrap_or_default()
    }

    pub fn mounts(&self) -> Vec<MountView> {
        let mut out: Vec<MountView> = self
            .state
            .recovery
            .mounts
            .values()
            .map(|m| MountView {
                job: m.job,
                target: m.target.clone(),
                snapshot: m.name.clone(),
                location: m.location.clone(),
                worker: m.worker.clone(),
                since_ms: m.since_ms,
                writable: m.writable,
            })
            .collect();
        out.sort_by_key(|m| (m.since_ms, m.job));
        out
    }

    /// Clones, by name.
    pub fn clones(&self) -> Vec<CloneView> {
        self.state
            .recovery
            .clones
            .iter()
            .map(|(name, c)| CloneView {
                name: name.clone(),
                job: c.job,
                target: c.target.clone(),
                snapshot: c.point.clone(),
                location: c.location.clone(),
                worker: c.worker.clone(),
                since_ms: c.since_ms,
            })
            .collect()
    }

    /// Jobs in memory newest first, filtered: every unfinished job, those
    /// finished within the engine's stay, and the last [`RECENT_FINISHED`]
    /// finished before. `request`: only the job of that request id (found
    /// through the request index, not a scan, within the request-id
    /// window); `after` continues a previous page. Returns the page and the
    /// cursor of the next one.
    pub fn jobs(
        &self,
        state: Option<&str>,
        target: Option<&TargetId>,
        request: Option<&RequestId>,
        after: Option<JobId>,
        limit: usize,
    ) -> (Vec<JobSummary>, Option<JobId>) {
        let (all, ops): (Box<dyn Iterator<Item = &Job>>, Box<dyn Iterator<Item = &Op>>) = match request {
            Some(r) => (
                Box::new(
                    self.state
                        .requests
                        .get(r)
                        .and_then(|e| self.any_job(&e.job))
                        .into_iter(),
                ),
                Box::new(
                    self.state
                        .recovery
                        .requests
                        .get(r)
                        .and_then(|a| self.any_op(&a.job))
                        .into_iter(),
                ),
            ),
            None => (
                Box::new(self.recent.newest_first(self.state.jobs.values())),
                Box::new(self.recent_ops.newest_first(self.state.recovery.ops.values())),
            ),
        };
        let jobs = all
            .filter(|j| after.is_none_or(|a| j.id < a))
            .filter(|j| target.is_none_or(|t| j.targets.contains(t)))
            .map(|j| summary(j, self.by_of(&j.id)));
        let ops = ops
            .filter(|o| after.is_none_or(|a| o.id < a))
            .filter(|o| target.is_none_or(|t| o.target == *t))
            .map(|o| recovery_summary(o, self.by_of(&o.id)));
        // Both newest first (job ids are UUIDv7: time-ordered): merged.
        let mut jobs = jobs.peekable();
        let mut ops = ops.peekable();
        let merged = std::iter::from_fn(|| match (jobs.peek(), ops.peek()) {
            (Some(j), Some(o)) if o.id > j.id => ops.next(),
            (Some(_), _) => jobs.next(),
            (None, _) => ops.next(),
        });
        let mut page: Vec<JobSummary> = Vec::new();
        let mut more = false;
        for j in merged.filter(|j| state.is_none_or(|s| j.state == s)) {
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(j);
        }
        let next = if more { page.last().map(|j| j.id) } else { None };
        (page, next)
    }

    pub fn targets(&self) -> Vec<TargetView> {
        let ids: BTreeSet<&TargetId> = self
            .retention
            .keys()
            .chain(self.state.queues.keys())
            .chain(self.last_snapshot.keys())
            .chain(self.last_failure.keys())
            .collect();
        ids.into_iter()
            .cloned()
            .map(|t| {
                let holder = self.state.holder(&t);
                let depth = self.state.queues.get(&t).map_or(0, |q| q.len()) - usize::from(holder.is_some());
                // A recovery holds it while it runs (no job starts meanwhile).
                let recovering = self.state.recovery.running.get(&t).copied();
                TargetView {
                    state: match (holder.and_then(|h| self.state.jobs.get(&h)), recovering) {
                        (Some(j), _) => state_name(j.state),
                        (None, Some(_)) => RECOVERING,
                        (None, None) => "idle",
                    }
                    .to_string(),
                    job: holder.or(recovering),
                    queue_depth: depth,
                    last_snapshot: self.last_snapshot.get(&t).cloned(),
                    last_failure: self.last_failure.get(&t).cloned(),
                    last_prune_failure: self.last_prune_failure.get(&t).cloned(),
                    rpo: self
                        .state
                        .book
                        .rpo
                        .get(&t)
                        .filter(|r| r.rpo_ms > 0)
                        .map(|r| RpoView {
                            rpo_ms: r.rpo_ms,
                            breached: r.breached,
                            breached_at_ms: r.breached_at_ms,
                        }),
                    id: t,
                }
            })
            .collect()
    }

    /// The catalog, newest first, optionally of one target.
    pub fn snapshots(&self, target: Option<&TargetId>) -> Vec<SnapshotEntry> {
        let mut out: Vec<SnapshotEntry> = Vec::new();
        // Per target, the entries newer than the one at hand (newest first).
        let mut seen: HashMap<&TargetId, u32> = HashMap::new();
        for c in self.catalog.values().rev() {
            let newer_of: Vec<u32> = c
                .targets
                .iter()
                .map(|t| {
                    let n = seen.entry(t).or_default();
                    *n += 1;
                    *n - 1
                })
                .collect();
            if target.is_some_and(|t| !c.targets.contains(t)) {
                continue;
            }
            let mut e = c.clone();
            e.verification = c
                .targets
                .iter()
                .filter_map(|t| {
                    let r = self.state.verify.record(t, &c.name)?;
                    Some(VerificationView {
                        target: t.clone(),
                        status: r.status.as_str().to_string(),
                        runs: r.runs,
                        verified_at_ms: r.verified_at_ms,
                        ended_at_ms: r.ended_at_ms,
                        detail: r.detail.clone(),
                    })
                })
                .collect();
            e.in_use = c
                .targets
                .iter()
                .filter_map(|t| recman_core::recovery::pinned(&self.state, t, &c.name))
                .collect();
            for (t, newer) in c.targets.iter().zip(newer_of) {
                let Some(Some(keep)) = self.retention.get(t) else {
                    continue;
                };
                let left = keep.saturating_sub(newer);
                if e.retention.as_ref().is_none_or(|r| left < r.expires_after) {
                    e.retention = Some(Retention {
                        keep_last: *keep,
                        newer,
                        expires_after: left,
                    });
                }
            }
            out.push(e);
        }
        out
    }

    /// Prometheus text of everything the log tells.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        metrics::header(out, "recman_jobs", "gauge", "Jobs by state.");
        let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
        for s in ALL_STATES {
            by_state.insert(state_name(*s), 0);
        }
        for j in self.state.jobs.values() {
            *by_state.entry(state_name(j.state)).or_default() += 1;
        }
        for (s, n) in &self.left_by_state {
            *by_state.entry(s).or_default() += n;
        }
        for (s, n) in by_state {
            let _ = writeln!(out, "recman_jobs{{state=\"{s}\"}} {n}");
        }
        metrics::header(
            out,
            "recman_queue_depth",
            "gauge",
            "Jobs waiting per target behind the one holding it.",
        );
        for t in self.targets() {
            let _ = writeln!(
                out,
                "recman_queue_depth{{target=\"{}\"}} {}",
                metrics::label(t.id.as_str()),
                t.queue_depth
            );
        }
        metrics::render_family(
            out,
            "recman_stage_duration_seconds",
            "Duration of successful steps as measured by the workers, per target and stage.",
            &self.stage_hist,
        );
        metrics::render_family(
            out,
            "recman_freeze_window_seconds",
            "Freeze windows (freeze return to thaw return) as measured by the workers, per target.",
            &self.freeze_hist,
        );
        metrics::header(
            out,
            "recman_step_failures_total",
            "counter",
            "Failed steps per target and stage.",
        );
        for (l, n) in &self.step_failures {
            let _ = writeln!(out, "recman_step_failures_total{{{l}}} {n}");
        }
        metrics::header(out, "recman_snapshots", "gauge", "Snapshots in the catalog.");
        let _ = writeln!(out, "recman_snapshots {}", self.catalog.len());
        metrics::header(
            out,
            "recman_log_last_seq",
            "gauge",
            "Sequence number of the last event folded in.",
        );
        let _ = writeln!(out, "recman_log_last_seq {}", self.last_seq);
        self.render_rpo_metrics(out);
    }

    /// `recman_last_good_snapshot_timestamp_seconds` and `recman_rpo_breached` per target.
    fn render_rpo_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        metrics::header(
            out,
            "recman_last_good_snapshot_timestamp_seconds",
            "gauge",
            "Unix time of each target's newest good restore point.",
        );
        for (t, cat) in &self.state.catalog {
            if let Some(at) = cat.iter().map(|e| e.at_ms).max() {
                let _ = writeln!(
                    out,
                    "recman_last_good_snapshot_timestamp_seconds{{target=\"{}\"}} {:.3}",
                    metrics::label(t.as_str()),
                    at as f64 / 1000.0
                );
            }
        }
        metrics::header(
            out,
            "recman_rpo_breached",
            "gauge",
            "1 while a target's newest good restore point is older than its rpo.",
        );
        for (t, r) in self.state.book.rpo.iter().filter(|(_, r)| r.rpo_ms > 0) {
            let _ = writeln!(
                out,
                "recman_rpo_breached{{target=\"{}\"}} {}",
                metrics::label(t.as_str()),
                u8::from(r.breached)
            );
        }
    }
}

fn stage_labels(target: &TargetId, stage: Stage) -> String {
    format!(
        "target=\"{}\",stage=\"{}\"",
        metrics::label(target.as_str()),
        stage.as_str()
    )
}

const ALL_STATES: &[JobState] = &[
    JobState::Queued,
    JobState::Freezing,
    JobState::Frozen,
    JobState::Snapshotting,
    JobState::Snapshotted,
    JobState::Thawing,
    JobState::Thawed,
    JobState::FlushingLogs,
    JobState::RetryWait,
    JobState::Completed,
    JobState::Failed,
    JobState::Cancelled,
];

/// The API name of a job state.
pub fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Queued => "queued",
        JobState::Freezing => "freezing",
        JobState::Frozen => "frozen",
        JobState::Snapshotting => "snapshotting",
        JobState::Snapshotted => "snapshotted",
        JobState::Thawing => "thawing",
        JobState::Thawed => "thawed",
        JobState::FlushingLogs => "flushing_logs",
        JobState::RetryWait => "retry_wait",
        JobState::Completed => "completed",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// True when some job of `state` may hold a frozen target (freeze sent, thaw
/// not done): what a clean shutdown waits for.
pub fn any_frozen(state: &State) -> bool {
    state.active.iter().any(|id| {
        state
            .jobs
            .get(id)
            .is_some_and(|j| j.state.before_thaw() || j.state == JobState::Thawing || j.any_needs_thaw())
    })
}

/// Every state name, for validating filters (`running`: a recovery job's).
pub fn state_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = ALL_STATES.iter().map(|s| state_name(*s)).collect();
    names.push(RECOVERY_RUNNING);
    names.push(AWAITING_APPROVAL);
    names
}

/// The state of a recovery job that waits for a second admin's approval.
pub const AWAITING_APPROVAL: &str = "awaiting_approval";

/// The state of a recovery job that runs a step (a waiting one is `queued`).
pub const RECOVERY_RUNNING: &str = "running";

/// A target's state while a recovery job runs on it.
pub const RECOVERING: &str = "recovering";

/// The `kind` of a safety snapshot in the catalog.
pub const SAFETY_KIND: &str = "safety";

/// The API name of a recovery job's state.
pub fn op_state_name(s: OpState) -> &'static str {
    match s {
        OpState::AwaitingApproval => AWAITING_APPROVAL,
        OpState::Pending => "queued",
        OpState::Running => RECOVERY_RUNNING,
        OpState::Completed => "completed",
        OpState::Failed => "failed",
    }
}

/// A recovery job in a list: `kind` is its action (`restore`,
/// `restore_to`, `mount`, `unmount`, `clone`, `remove_clone`), `snapshot`
/// the restore point, `outcome` where the data is or why it failed.
fn recovery_summary(op: &Op, by: &str) -> JobSummary {
    JobSummary {
        id: op.id,
        request_id: op.request_id.as_str().to_string(),
        state: op_state_name(op.state).to_string(),
        targets: vec![op.target.clone()],
        kind: op.action.as_str().to_string(),
        origin: op.origin.clone(),
        by: by.to_string(),
        attempt: 1,
        stage: op.stage,
        requested_at_ms: op.requested_ms,
        finished_at_ms: op.finished_ms,
        snapshot: Some(op.name.clone()),
        outcome: op.outcome.clone().filter(|o| !o.is_empty()),
    }
}

fn summary(j: &Job, by: &str) -> JobSummary {
    JobSummary {
        id: j.id,
        request_id: j.request_id.as_str().to_string(),
        state: state_name(j.state).to_string(),
        targets: j.targets.clone(),
        kind: j.kind.as_str().to_string(),
        origin: j.origin.clone(),
        by: by.to_string(),
        attempt: j.attempt,
        stage: j.stage,
        requested_at_ms: j.requested_at_ms,
        finished_at_ms: j.finished_at_ms,
        snapshot: j.snapshot.as_ref().map(|s| s.name.clone()),
        outcome: j.outcome.clone(),
    }
}

/// Job `id` read from the log (`EventLog::read_job`) and folded on its own:
/// a job that left memory, with its full timeline.
pub fn job_from_log(log: &dyn EventLog, id: JobId) -> Result<Option<JobDetail>, LogError> {
    let events = log.read_job(id)?;
    if events.is_empty() {
        return Ok(None);
    }
    let mut v = View::new(BTreeMap::new()).with_bounds(
        recman_core::Bounds {
            request_window_ms: u64::MAX,
            keep_finished_ms: u64::MAX,
        },
        0,
    );
    for e in &events {
        v.apply(e);
    }
    Ok(v.job(&id))
}

/// Everything the API shows of `view` (every job in memory with its
/// timeline, the targets, the catalog, mounts, clones, the metrics text):
/// a view started from a checkpoint must show what a full fold shows.
pub fn shown(view: &View) -> serde_json::Value {
    let (jobs, _) = view.jobs(None, None, None, None, usize::MAX);
    let details: Vec<Option<JobDetail>> = jobs.iter().map(|j| view.job(&j.id)).collect();
    let mut metrics = String::new();
    view.render_metrics(&mut metrics);
    serde_json::json!({
        "last_seq": view.last_seq,
        "jobs": jobs,
        "details": details,
        "targets": view.targets(),
        "snapshots": view.snapshots(None),
        "mounts": view.mounts(),
        "clones": view.clones(),
        "metrics": metrics,
    })
}

/// A comparable rendering of the core state (`recman replay` against a server):
/// every job in full, the queues, the catalog and the counters.
pub fn digest(state: &State) -> serde_json::Value {
    let queues: BTreeMap<&TargetId, Vec<JobId>> = state
        .queues
        .iter()
        .map(|(t, q)| (t, q.iter().copied().collect()))
        .collect();
    let mut requests: Vec<(&str, JobId)> = state.requests.iter().map(|(r, e)| (r.as_str(), e.job)).collect();
    requests.sort();
    serde_json::json!({
        "applied": state.applied,
        "jobs": state.jobs.values().collect::<Vec<_>>(),
        "queues": queues,
        "catalog": state.catalog,
        "active": state.active,
        "deadlines": state.deadlines,
        "requests": requests,
    })
}

#[cfg(test)]
mod tests;
