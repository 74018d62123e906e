//! Recovery: restore, mount and clone as jobs of their own, decided here,
//! carried out by the target's workers, every step an event. Pure, like the
//! rest of the core.
//!
//! Entry points: [`evolve`] (the ledger folds the recovery events),
//! [`request`] (`recman restore|mount|unmount|clone`), [`starts`] (after a
//! step is folded: which recovery to start), [`report`] and [`timeouts`]
//! (from `decide`), [`effects`] and [`recover`] (the step's command),
//! [`busy`] (a target being recovered takes no freeze), [`pinned`]
//! (retention never deletes a mounted point or one being read),
//! [`expired_mounts`] (`max_mount_age`) and [`approve`] (four-eyes).
//!
//! The steps of each action:
//!
//! ```text
//! in place:  stop → safety-snapshot → restore → start → completed
//!            stop or safety-snapshot fails: start → failed (live untouched)
//!            restore fails or times out: rollback → start → failed (rolled back)
//!            rollback fails: failed (unknown: the application is not started
//!            on data that may be half restored; the safety snapshot holds
//!            the state before)
//!            start fails: failed (restored, or as the earlier failure left it)
//! to PATH, clone:  restore → completed | failed (untouched)
//! mount:           mount → completed (the mount is recorded) | failed
//! unmount, remove: unmount → completed (the record goes) | failed
//! ```
//!
//! Four-eyes (`require_approval` on the target): an in-place restore is
//! recorded with `ApprovalRequired` and waits (`awaiting_approval`, in its
//! target's queue, its point pinned) until an admin other than its
//! requester approves it (`Approved`, whose `by` is the approver); then it
//! is `pending` like any other. At `expires_ms` without approval it fails,
//! never run, the live data untouched ([`timeouts`]); an approval after
//! that is refused.
//!
//! The rules:
//! - one recovery at a time per target, oldest request first; an in-place
//!   restore only on an idle target (no job holds it or waits for it, no
//!   verification or reconcile runs), and while it runs a new job of the
//!   target waits in the queue (`decide` asks [`busy`]), so no freeze
//!   overlaps it. Mounts, clones and restores beside production read a
//!   snapshot and leave the live data alone: they run alongside jobs;
//! - an in-place restore is refused while the target is busy (it must not
//!   wait behind work whose result it would overwrite) and without
//!   `confirm`; the safety snapshot is an ordinary restore point (the
//!   recovery's job, catalogued when its step is done), taken with the
//!   application stopped, so it is consistent without a freeze, and it is
//!   recorded before the restore step is sent;
//! - the restore point must be in the target's catalog, not being deleted;
//!   while a recovery waits for or reads it, and while it is mounted,
//!   retention keeps it ([`pinned`]);
//! - every step has a deadline (the worker's own timeout plus the grace);
//!   a step that does not answer is failed (`timeout`) and the compensation
//!   above runs, so a crash of the worker mid-step ends in a rollback, or in
//!   the restore when the redelivered step finishes first (steps are
//!   idempotent on the workers).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use recman_events::{
    snapshot_name, Command, Event, EventBody, JobId, LiveData, Outcome, PoolName, RecoveryAction,
    RecoveryArgs, Report, RequestId, SnapshotKind, Stage, StepDetail, StepError, TargetId, Until, WorkerId,
    SCHEMA_VERSION,
};
use serde::Serialize;

use crate::effects::{Destination, Outgoing};
use crate::policy::{CoreConfig, STAGE_GRACE_MS};
use crate::state::{CatalogEntry, State, TimelineEntry};

/// Where a recovery job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    /// Waiting for a second admin's approval (`require_approval`).
    AwaitingApproval,
    /// Waiting for its target to be idle.
    Pending,
    Running,
    Completed,
    Failed,
}

impl OpState {
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::AwaitingApproval => "awaiting_approval",
            OpState::Pending => "pending",
            OpState::Running => "running",
            OpState::Completed => "completed",
            OpState::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, OpState::Completed | OpState::Failed)
    }
}

/// One recovery job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Op {
    pub id: JobId,
    pub request_id: RequestId,
    pub target: TargetId,
    /// The restore point (for unmount and remove: the one mounted or cloned).
    pub name: String,
    #[serde(with = "crate::checkpoint::embed")]
    pub action: RecoveryAction,
    pub origin: String,
    /// Who asked for it (the request's `by`).
    pub by: String,
    /// Four-eyes: when the request expires unapproved, and who approved it.
    pub approval: Option<Approval>,
    pub requested_ms: u64,
    pub state: OpState,
    /// The step in flight, and when the engine gives up on it.
    pub stage: Option<Stage>,
    pub deadline_ms: Option<u64>,
    /// The safety snapshot's name once its step is done (in place).
    pub safety: Option<String>,
    /// The restore step was sent: the live data may have changed (in place).
    pub reverting: bool,
    /// The first failure, and where it left the live data.
    pub failure: Option<(String, LiveData)>,
    /// Where the data is (the restore's path, the mount point, the clone).
    pub location: Option<String>,
    /// The worker of each step done (an unmount goes back to the mount's).
    pub workers: BTreeMap<String, WorkerId>,
    pub timeline: Vec<TimelineEntry>,
    pub finished_ms: Option<u64>,
    /// How it ended: the location, or the failure.
    pub outcome: Option<String>,
    pub live: Option<LiveData>,
}

/// A recovery's four-eyes approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Approval {
    /// Unapproved by then, the recovery fails without running.
    pub expires_ms: u64,
    /// The second admin (`None`: not approved yet).
    pub by: Option<String>,
    pub at_ms: Option<u64>,
}

/// A restore point exposed on a host by recovery job `job`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Mount {
    pub job: JobId,
    pub target: TargetId,
    pub name: String,
    pub location: String,
    pub worker: WorkerId,
    pub since_ms: u64,
    pub writable: bool,
    /// Where it was asked to be (`--on`): its unmount goes there too.
    pub on: Option<String>,
    /// The engine asked for its unmount (`max_mount_age`): it does not ask
    /// again, also once that request left the window.
    pub expiry_asked: bool,
}

/// A clone, kept until removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Clone {
    pub job: JobId,
    pub target: TargetId,
    /// The restore point it was cloned from.
    pub point: String,
    pub location: String,
    pub worker: WorkerId,
    pub since_ms: u64,
}

/// The recoveries of the state, rebuilt from the log by [`evolve`]: those
/// not ended and those ended less than `Bounds::keep_finished_ms` ago
/// ([`expire`]), the request ids of the window, the mounts and clones that
/// exist.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    pub ops: BTreeMap<JobId, Op>,
    /// Request ids within the window (`Bounds::request_window_ms`), also of
    /// recoveries that left `ops`.
    pub requests: HashMap<RequestId, Asked>,
    /// The ids of `requests`, in arrival order (for the window).
    pub arrivals: VecDeque<RequestId>,
    /// Ended recoveries by when they may leave `ops`.
    pub retiring: BTreeSet<(u64, JobId)>,
    /// Recoveries that left `ops` so far.
    pub retired: u64,
    /// Per target, recoveries not started yet, oldest first.
    pub wanted: BTreeMap<TargetId, VecDeque<JobId>>,
    /// Per target, the recovery running.
    pub running: BTreeMap<TargetId, JobId>,
    /// Index of `Op::deadline_ms`.
    pub deadlines: BTreeSet<(u64, JobId)>,
    /// Mounts by the job that made them.
    pub mounts: BTreeMap<JobId, Mount>,
    /// Clones by name.
    pub clones: BTreeMap<String, Clone>,
}

/// A recovery's request id in the window: its job, and enough of the request
/// to tell the same request from another one with the same id once the job
/// left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Asked {
    pub job: JobId,
    /// Event time of the request.
    pub at_ms: u64,
    pub target: TargetId,
    pub name: String,
    #[serde(with = "crate::checkpoint::embed")]
    pub action: RecoveryAction,
}

/// The worker of a mount that may exist but whose step never answered.
pub const UNKNOWN_WORKER: &str = "unknown";

/// What a request asks for, as the core takes it (validated on the wire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub request_id: RequestId,
    pub target: Option<TargetId>,
    pub snapshot: Option<String>,
    pub action: RecoveryAction,
    pub confirm: bool,
}

/// The steps of an action, in order, when all goes well.
pub fn first_stage(action: &RecoveryAction) -> Stage {
    match action {
        RecoveryAction::InPlace { .. } => Stage::Stop,
        RecoveryAction::To { .. } | RecoveryAction::Clone { .. } => Stage::Restore,
        RecoveryAction::Mount { .. } => Stage::Mount,
        RecoveryAction::Unmount { .. } | RecoveryAction::RemoveClone { .. } => Stage::Unmount,
        // No step of its own: approved, it asks for the deletes at once
        // (`decide`), carried out as retention's.
        RecoveryAction::Prune => Stage::Prune,
    }
}

/// The safety snapshot's name: the recovery job's first attempt's.
pub fn safety_name(op: JobId) -> String {
    snapshot_name(op, 1)
}

/// Whether `stage` is a recovery step.
pub fn is_recovery_stage(stage: Stage) -> bool {
    matches!(
        stage,
        Stage::Stop
            | Stage::SafetySnapshot
            | Stage::Restore
            | Stage::Rollback
            | Stage::Start
            | Stage::Mount
            | Stage::Unmount
    )
}

/// Folds a recovery event (true), with the catalog at hand: a safety
/// snapshot enters it when its step is done.
pub fn evolve(state: &mut State, ev: &Event) -> bool {
    let keep = state.bounds.keep_finished_ms.max(1);
    let l = &mut state.recovery;
    match &ev.body {
        EventBody::RecoveryRequested {
            request_id,
            target,
            name,
            action,
            origin,
        } => {
            // The same request folded again, also after its job left, is no new job.
            if l.ops.contains_key(&ev.job) || l.requests.get(request_id).is_some_and(|a| a.job == ev.job) {
                return true;
            }
            l.ops.insert(
                ev.job,
                Op {
                    id: ev.job,
                    request_id: request_id.clone(),
                    target: target.clone(),
                    name: name.clone(),
                    action: action.clone(),
                    origin: origin.clone(),
                    by: ev.by.clone(),
                    approval: None,
                    requested_ms: ev.at_ms,
                    state: OpState::Pending,
                    stage: None,
                    deadline_ms: None,
                    safety: None,
                    reverting: false,
                    failure: None,
                    location: None,
                    workers: BTreeMap::new(),
                    timeline: Vec::new(),
                    finished_ms: None,
                    outcome: None,
                    live: None,
                },
            );
            let asked = Asked {
                job: ev.job,
                at_ms: ev.at_ms,
                target: target.clone(),
                name: name.clone(),
                action: action.clone(),
            };
            if l.requests.insert(request_id.clone(), asked).is_none() {
                l.arrivals.push_back(request_id.clone());
            }
            if let RecoveryAction::Unmount { mount } = action {
                if *request_id == expiry_request(*mount) {
                    if let Some(m) = l.mounts.get_mut(mount) {
                        m.expiry_asked = true;
                    }
                }
            }
            l.wanted.entry(target.clone()).or_default().push_back(ev.job);
        }
        EventBody::RecoveryStepStarted { stage, deadline_ms } => {
            let Some(op) = l.ops.get_mut(&ev.job) else {
                return true;
            };
            if op.state.is_terminal() {
                return true;
            }
            if matches!(op.state, OpState::Pending | OpState::AwaitingApproval) {
                if let Some(q) = l.wanted.get_mut(&op.target) {
                    q.retain(|j| *j != ev.job);
                    if q.is_empty() {
                        l.wanted.remove(&op.target);
                    }
                }
                l.running.insert(op.target.clone(), ev.job);
            }
            if let Some(d) = op.deadline_ms {
                l.deadlines.remove(&(d, ev.job));
            }
            op.state = OpState::Running;
            op.stage = Some(*stage);
            op.deadline_ms = Some(*deadline_ms);
            if *stage == Stage::Restore && op.action.is_in_place() {
                op.reverting = true;
            }
            l.deadlines.insert((*deadline_ms, ev.job));
            op.timeline.push(TimelineEntry {
                stage: *stage,
                attempt: 1,
                started_ms: ev.at_ms,
                ended_ms: None,
                outcome: None,
            });
        }
        EventBody::RecoveryStepDone {
            stage,
            worker,
            location,
            ..
        } => {
            let Some(op) = l.ops.get_mut(&ev.job) else {
                return true;
            };
            if op.stage != Some(*stage) || op.state != OpState::Running {
                return true;
            }
            end_step(op, ev.at_ms, "ok".into());
            op.workers.insert(stage.as_str().to_string(), worker.clone());
            match stage {
                Stage::SafetySnapshot => {
                    op.safety = Some(location.clone());
                    let entry = CatalogEntry {
                        name: location.clone(),
                        job: ev.job,
                        at_ms: ev.at_ms,
                        kind: Default::default(),
                        safety: true,
                    };
                    let target = op.target.clone();
                    let c = state.catalog.entry(target).or_default();
                    if !c.iter().any(|e| e.name == entry.name) {
                        c.push(entry);
                    }
                }
                Stage::Restore | Stage::Mount => op.location = Some(location.clone()),
                _ => {}
            }
        }
        EventBody::RecoveryStepFailed { stage, error, .. } => {
            let Some(op) = l.ops.get_mut(&ev.job) else {
                return true;
            };
            if op.stage != Some(*stage) || op.state != OpState::Running {
                return true;
            }
            end_step(op, ev.at_ms, error.to_string());
            if op.failure.is_none() {
                op.failure = Some(failure_of(op, *stage, error));
            }
        }
        EventBody::RecoveryCompleted { location } => {
            let Some(op) = l.ops.get(&ev.job).cloned() else {
                return true;
            };
            if op.state.is_terminal() {
                return true;
            }
            finish(l, ev, OpState::Completed, location.clone(), None, keep);
            let worker = |s: Stage| {
                op.workers
                    .get(s.as_str())
                    .cloned()
                    .unwrap_or_else(|| WorkerId::from("?"))
            };
            match &op.action {
                RecoveryAction::Mount { writable, on } => {
                    l.mounts.insert(
                        ev.job,
                        Mount {
                            job: ev.job,
                            target: op.target.clone(),
                            name: op.name.clone(),
                            location: location.clone(),
                            worker: worker(Stage::Mount),
                            since_ms: ev.at_ms,
                            writable: *writable,
                            on: on.clone(),
                            expiry_asked: false,
                        },
                    );
                }
                RecoveryAction::Unmount { mount } => {
                    l.mounts.remove(mount);
                }
                RecoveryAction::Clone { name } => {
                    l.clones.insert(
                        name.clone(),
                        Clone {
                            job: ev.job,
                            target: op.target.clone(),
                            point: op.name.clone(),
                            location: location.clone(),
                            worker: worker(Stage::Restore),
                            since_ms: ev.at_ms,
                        },
                    );
                }
                RecoveryAction::RemoveClone { name } => {
                    l.clones.remove(name);
                }
                RecoveryAction::InPlace { .. } | RecoveryAction::To { .. } | RecoveryAction::Prune => {}
            }
        }
        EventBody::RecoveryFailed { reason, live } => {
            let Some(op) = l.ops.get(&ev.job).cloned().filter(|op| !op.state.is_terminal()) else {
                return true;
            };
            finish(l, ev, OpState::Failed, reason.clone(), Some(*live), keep);
            // A mount whose taking away did not succeed may be there: it is
            // recorded (retention keeps its point; `recman unmount` takes it
            // away, the provider finding it by the job).
            if let RecoveryAction::Mount { writable, on } = op.action {
                if !op.workers.contains_key(Stage::Unmount.as_str()) {
                    l.mounts.insert(
                        ev.job,
                        Mount {
                            job: ev.job,
                            target: op.target.clone(),
                            name: op.name.clone(),
                            location: op.location.clone().unwrap_or_default(),
                            worker: op
                                .workers
                                .get(Stage::Mount.as_str())
                                .cloned()
                                .unwrap_or_else(|| WorkerId::from(UNKNOWN_WORKER)),
                            since_ms: ev.at_ms,
                            writable,
                            on,
                            expiry_asked: false,
                        },
                    );
                }
            }
        }
        EventBody::ApprovalRequired { expires_ms } => {
            let Some(op) = l.ops.get_mut(&ev.job).filter(|op| op.state == OpState::Pending) else {
                return true;
            };
            op.state = OpState::AwaitingApproval;
            op.approval = Some(Approval {
                expires_ms: *expires_ms,
                by: None,
                at_ms: None,
            });
            // The expiry is the op's deadline until it is approved.
            op.deadline_ms = Some(*expires_ms);
            l.deadlines.insert((*expires_ms, ev.job));
        }
        EventBody::Approved { .. } => {
            let Some(op) = l
                .ops
                .get_mut(&ev.job)
                .filter(|op| op.state == OpState::AwaitingApproval)
            else {
                return true;
            };
            op.state = OpState::Pending;
            if let Some(d) = op.deadline_ms.take() {
                l.deadlines.remove(&(d, ev.job));
            }
            if let Some(a) = op.approval.as_mut() {
                a.by = Some(ev.by.clone());
                a.at_ms = Some(ev.at_ms);
            }
        }
        EventBody::RecoveryStepNoted { stage, note } => {
            let step = l
                .ops
                .get_mut(&ev.job)
                .and_then(|op| op.timeline.iter_mut().rev().find(|t| t.stage == *stage));
            if let Some(t) = step {
                t.outcome = Some(format!("ok: {note}"));
            }
        }
        _ => return false,
    }
    true
}

/// Request ids past the window, and ended recoveries past their stay,
/// leave (`state::Bounds`), as snapshot jobs do (`evolve`): at the first
/// event later than `keep_finished_ms` after the end, unless the event is
/// the recovery's own (then after another stay). What they leave behind
/// needs none of them: a mount or a clone is its own record, a safety
/// snapshot's catalog entry says it is one (`CatalogEntry::safety`). The
/// ones that leave go to `retired` (the read side keeps the most recent
/// ones). A late event of a recovery that left changes nothing, as one of
/// an ended recovery does not; a reconcile no longer knows the name of a
/// safety snapshot whose step never answered (reported as unknown, as a
/// late snapshot of a job that left is).
pub fn expire(state: &mut State, ev: &Event, mut retired: Option<&mut Vec<Op>>) {
    let window = state.bounds.request_window_ms;
    let keep = state.bounds.keep_finished_ms.max(1);
    let l = &mut state.recovery;
    while let Some(r) = l.arrivals.front() {
        match l.requests.get(r) {
            Some(a) if a.at_ms.saturating_add(window) > ev.at_ms => break,
            Some(_) => {
                l.requests.remove(r);
            }
            None => {}
        }
        l.arrivals.pop_front();
    }
    while let Some(&(at, id)) = l.retiring.first() {
        if at >= ev.at_ms {
            break;
        }
        l.retiring.pop_first();
        let Some(op) = l.ops.get(&id) else {
            continue;
        };
        if id == ev.job || !op.state.is_terminal() {
            l.retiring.insert((ev.at_ms.saturating_add(keep), id));
            continue;
        }
        if let Some(op) = l.ops.remove(&id) {
            l.retired += 1;
            if let Some(out) = retired.as_deref_mut() {
                out.push(op);
            }
        }
    }
}

fn end_step(op: &mut Op, at: u64, outcome: String) {
    if let Some(t) = op.timeline.last_mut() {
        if t.ended_ms.is_none() {
            t.ended_ms = Some(at);
            t.outcome = Some(outcome);
        }
    }
}

fn finish(l: &mut Ledger, ev: &Event, state: OpState, outcome: String, live: Option<LiveData>, keep: u64) {
    let Some(op) = l.ops.get_mut(&ev.job) else {
        return;
    };
    l.retiring.insert((ev.at_ms.saturating_add(keep), ev.job));
    if let Some(d) = op.deadline_ms.take() {
        l.deadlines.remove(&(d, ev.job));
    }
    if l.running.get(&op.target) == Some(&ev.job) {
        l.running.remove(&op.target);
    }
    if let Some(q) = l.wanted.get_mut(&op.target) {
        q.retain(|j| *j != ev.job);
        if q.is_empty() {
            l.wanted.remove(&op.target);
        }
    }
    op.state = state;
    op.stage = None;
    op.finished_ms = Some(ev.at_ms);
    op.outcome = Some(outcome);
    op.live = live;
}

/// Whether an in-place restore runs on `t` (no freeze of `t` may start;
/// mounts, clones and restores beside production run alongside jobs).
pub fn busy(state: &State, t: &TargetId) -> bool {
    state
        .recovery
        .running
        .get(t)
        .and_then(|id| state.recovery.ops.get(id))
        .is_some_and(|op| op.action.is_in_place())
}

/// Targets whose recovery ends with one of `events`.
pub fn ended(state: &State, events: &[Event]) -> BTreeSet<TargetId> {
    events
        .iter()
        .filter(|e| e.body.is_recovery_end())
        .filter_map(|e| state.recovery.ops.get(&e.job).map(|op| op.target.clone()))
        .collect()
}

/// The recoveries not ended of target `t` (every target: `None`): those
/// waiting and the one running, never the whole history.
fn pending<'a>(l: &'a Ledger, t: Option<&'a TargetId>) -> impl Iterator<Item = &'a Op> + 'a {
    let wanted: Vec<&VecDeque<JobId>> = match t {
        Some(t) => l.wanted.get(t).into_iter().collect(),
        None => l.wanted.values().collect(),
    };
    let running: Vec<&JobId> = match t {
        Some(t) => l.running.get(t).into_iter().collect(),
        None => l.running.values().collect(),
    };
    wanted
        .into_iter()
        .flatten()
        .chain(running)
        .filter_map(|id| l.ops.get(id))
}

/// Why retention must keep point `name` of `t`: it is mounted, or a
/// recovery waits for it or reads it.
pub fn pinned(state: &State, t: &TargetId, name: &str) -> Option<String> {
    let l = &state.recovery;
    if let Some(m) = l.mounts.values().find(|m| &m.target == t && m.name == name) {
        return Some(format!("mounted by {} at {}", m.job, m.location));
    }
    let reading = |id: &JobId| {
        l.ops
            .get(id)
            .filter(|op| op.name == name && !op.state.is_terminal())
            .map(|op| format!("{} {} reads it", op.action.as_str(), op.id))
    };
    if let Some(why) = l.running.get(t).and_then(reading) {
        return Some(why);
    }
    l.wanted.get(t).and_then(|q| q.iter().find_map(reading))
}

/// Names recovery jobs of `t` may have left on the storage (their safety
/// snapshots): a reconcile knows them.
pub fn names_of(state: &State, t: &TargetId) -> Vec<String> {
    state
        .recovery
        .ops
        .values()
        .filter(|op| &op.target == t && op.action.is_in_place())
        .map(|op| safety_name(op.id))
        .collect()
}

/// A request, checked against the state: the `RecoveryRequested` event
/// (with `ApprovalRequired` for an in-place restore or a prune of a target
/// that requires approval), or the job that already has this request id, or
/// the refusal.
pub fn request(
    state: &State,
    cfg: &CoreConfig,
    ask: &Ask,
    origin: &str,
    new_job: JobId,
    now: u64,
) -> Result<Result<Vec<Event>, JobId>, (&'static str, String)> {
    let l = &state.recovery;
    if let Some(asked) = l.requests.get(&ask.request_id) {
        let (id, op) = (&asked.job, asked);
        let same = op.action == ask.action
            && ask.target.as_ref().is_none_or(|t| *t == op.target)
            && ask.snapshot.as_ref().is_none_or(|s| *s == op.name);
        return if same {
            Ok(Err(*id))
        } else {
            Err((
                "request_id_in_use",
                format!(
                    "request id {} is job {id} ({} of {}), not this request",
                    ask.request_id,
                    op.action.as_str(),
                    op.name
                ),
            ))
        };
    }
    if state.request(&ask.request_id, now).is_some() {
        return Err((
            "request_id_in_use",
            format!("request id {} is a snapshot job's", ask.request_id),
        ));
    }
    // The target and point: given, or those of the mount or clone.
    let (target, name) = match &ask.action {
        RecoveryAction::Unmount { mount } => {
            let Some(m) = l.mounts.get(mount) else {
                return Err((
                    "unknown_mount",
                    format!("{mount} is not a mount (see `recman mounts`)"),
                ));
            };
            if pending(l, Some(&m.target)).any(|op| op.action == RecoveryAction::Unmount { mount: *mount }) {
                return Err((
                    "unmount_pending",
                    format!("mount {mount} is being taken away already"),
                ));
            }
            (m.target.clone(), m.name.clone())
        }
        RecoveryAction::RemoveClone { name } => {
            let Some(c) = l.clones.get(name) else {
                return Err((
                    "unknown_clone",
                    format!("{name} is not a clone (see `recman clones`)"),
                ));
            };
            if pending(l, Some(&c.target))
                .any(|op| op.action == RecoveryAction::RemoveClone { name: name.clone() })
            {
                return Err(("remove_pending", format!("clone {name} is being removed already")));
            }
            (c.target.clone(), c.point.clone())
        }
        RecoveryAction::Prune => {
            let Some(t) = &ask.target else {
                return Err((
                    "invalid_request",
                    "prune needs the target whose retention rules apply".into(),
                ));
            };
            if cfg.targets.get(t).is_some_and(|p| p.approval_ms.is_none()) {
                return Err((
                    "approval_not_required",
                    format!(
                        "{t} has no require_approval: prune it directly (`recman prune {t}`, POST /v1/prune)"
                    ),
                ));
            }
            if pending(l, Some(t)).any(|op| op.action == RecoveryAction::Prune) {
                return Err((
                    "prune_pending",
                    format!("a prune of {t} waits for approval already (see `recman jobs`)"),
                ));
            }
            (t.clone(), String::new())
        }
        _ => {
            let Some(n) = &ask.snapshot else {
                return Err((
                    "invalid_request",
                    format!("{} needs a snapshot", ask.action.as_str()),
                ));
            };
            // Without a target: the one whose catalog lists the name (a
            // group's point is listed by every member: then it must be said).
            let t = match &ask.target {
                Some(t) => t.clone(),
                None => {
                    let owners: Vec<&TargetId> = state
                        .catalog
                        .iter()
                        .filter(|(_, c)| c.iter().any(|e| e.name == *n))
                        .map(|(t, _)| t)
                        .collect();
                    match owners.as_slice() {
                        [t] => (*t).clone(),
                        [] => {
                            return Err((
                                "unknown_snapshot",
                                format!("{n} is not a restore point of any target (see `recman snapshots`)"),
                            ))
                        }
                        many => {
                            return Err((
                                "target_required",
                                format!(
                                    "{n} is a restore point of a group ({}): name the target",
                                    many.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
                                ),
                            ))
                        }
                    }
                }
            };
            (t, n.clone())
        }
    };
    if let Some(t) = &ask.target {
        if *t != target {
            return Err((
                "wrong_target",
                format!("{} belongs to target {target}, not {t}", ask.action.as_str()),
            ));
        }
    }
    if !cfg.targets.contains_key(&target) {
        return Err((
            "unknown_target",
            format!("{target} is not a target of this engine's config (see `recman targets`)"),
        ));
    }
    match &ask.action {
        RecoveryAction::Unmount { .. } | RecoveryAction::RemoveClone { .. } | RecoveryAction::Prune => {}
        action => {
            check_point(state, &target, &name)?;
            if let Some(until) = action.until() {
                check_until(state, cfg, &target, &name, until, now)?;
            }
            if let RecoveryAction::Clone { name: clone } = action {
                let taken = l.clones.contains_key(clone)
                    || pending(l, None).any(|op| op.action == RecoveryAction::Clone { name: clone.clone() });
                if taken {
                    return Err((
                        "clone_exists",
                        format!("a clone named {clone} exists (see `recman clones`)"),
                    ));
                }
            }
            if action.is_in_place() {
                if !ask.confirm {
                    return Err((
                        "confirmation_required",
                        "an in-place restore overwrites the live data: confirm it (CLI --yes, \"confirm\": true)"
                            .into(),
                    ));
                }
                let unguarded = cfg.mutation == Some(crate::Mutation::RecoverWhileBusy);
                if let Some(why) = target_busy(state, &target).filter(|_| !unguarded) {
                    return Err((
                        "target_busy",
                        format!("{target} is busy ({why}); try again when it is idle"),
                    ));
                }
            }
        }
    }
    let approval = cfg
        .targets
        .get(&target)
        .and_then(|p| p.approval_ms)
        .filter(|_| needs_approval(&ask.action));
    let mut out = vec![Event {
        at_ms: now,
        job: new_job,
        body: EventBody::RecoveryRequested {
            request_id: ask.request_id.clone(),
            target,
            name,
            action: ask.action.clone(),
            origin: origin.to_string(),
        },
        by: String::new(),
    }];
    if let Some(ms) = approval {
        out.push(Event {
            at_ms: now,
            job: new_job,
            body: EventBody::ApprovalRequired {
                expires_ms: now.saturating_add(ms),
            },
            by: String::new(),
        });
    }
    Ok(Ok(out))
}

/// The prune job of `t` waiting for approval, if any.
pub fn waiting_prune(state: &State, t: &TargetId) -> Option<JobId> {
    pending(&state.recovery, Some(t))
        .find(|op| op.action == RecoveryAction::Prune && op.state == OpState::AwaitingApproval)
        .map(|op| op.id)
}

/// What waits for a second admin on a target with `require_approval`: an
/// in-place restore (it overwrites the live data) and a prune (it deletes
/// restore points). Restores beside production, mounts and clones read a
/// point and leave the live data alone; unmount and remove take away only
/// what recman made.
pub fn needs_approval(action: &RecoveryAction) -> bool {
    action.is_in_place() || *action == RecoveryAction::Prune
}

/// A second admin's approval of recovery `job` (`by`: the approver, whom
/// the API checked to be an admin of the target): the `Approved` event;
/// `None` when it was approved already; else the refusal (its requester,
/// an anonymous caller, too late, nothing to approve).
pub fn approve(
    state: &State,
    job: JobId,
    by: &str,
    now: u64,
) -> Result<Option<Event>, (&'static str, String)> {
    let Some(op) = state.recovery.ops.get(&job) else {
        return Err(("unknown_job", format!("no recovery job {job}")));
    };
    let Some(a) = &op.approval else {
        return Err((
            "approval_not_required",
            format!(
                "job {job} ({} of {}) needs no approval: it is not an in-place restore or a prune of a target with require_approval",
                op.action.as_str(),
                op.target
            ),
        ));
    };
    if let Some(approver) = &a.by {
        return if approver == by {
            Ok(None)
        } else {
            Err((
                "already_approved",
                format!("job {job} was approved by {approver} already"),
            ))
        };
    }
    if op.state != OpState::AwaitingApproval || now >= a.expires_ms {
        return Err((
            "approval_expired",
            format!(
                "job {job} is no longer awaiting approval: its request expired at {} ({}); ask for the restore again",
                Until::Time(a.expires_ms),
                op.outcome.as_deref().unwrap_or("not approved in time")
            ),
        ));
    }
    if by.is_empty() {
        return Err((
            "approver_unknown",
            "an approval needs an identified admin (an API user); an anonymous caller cannot be the second pair of eyes"
                .into(),
        ));
    }
    if by == op.by {
        return Err((
            "self_approval",
            format!(
                "{by} requested job {job}: four-eyes needs a second admin to approve it, not its requester"
            ),
        ));
    }
    Ok(Some(Event {
        at_ms: now,
        job,
        body: EventBody::Approved {
            requester: op.by.clone(),
        },
        by: by.to_string(),
    }))
}

/// The failure of a request that no second admin approved in time.
fn approval_expired(op: &Op, expires_ms: u64, now: u64) -> Event {
    let by = if op.by.is_empty() { "?" } else { op.by.as_str() };
    Event {
        at_ms: now,
        job: op.id,
        body: EventBody::RecoveryFailed {
            reason: format!(
                "approval expired: no second admin approved the {} requested by {by} by {}; nothing was run",
                op.action.as_str(),
                Until::Time(expires_ms)
            ),
            live: LiveData::Untouched,
        },
        by: String::new(),
    }
}

/// A restore replaying the log `until` a time or its end: only a database
/// has a log to replay (the `postgres` writer), and a time must lie between
/// the restore point and now (before the point the backup is not consistent
/// yet; after now the archive ends first, and recovery fails).
fn check_until(
    state: &State,
    cfg: &CoreConfig,
    t: &TargetId,
    name: &str,
    until: Until,
    now: u64,
) -> Result<(), (&'static str, String)> {
    let writer = cfg
        .targets
        .get(t)
        .and_then(|p| p.fingerprint.as_deref())
        .and_then(|f| f.split('/').next());
    if let Some(w) = writer.filter(|w| *w != "postgres") {
        return Err((
            "not_supported",
            format!(
                "--until replays a database's log: target {t}'s writer is {w}, not postgres (restore the point itself)"
            ),
        ));
    }
    let Until::Time(at) = until else { return Ok(()) };
    let taken = state
        .catalog
        .get(t)
        .and_then(|c| c.iter().find(|e| e.name == name))
        .map(|e| e.at_ms);
    if let Some(taken) = taken.filter(|taken| at < *taken) {
        return Err((
            "until_before_point",
            format!(
                "{name} was completed at {}, after {until}: recovery cannot stop before its restore point is \
                 consistent; pick an older restore point (`recman snapshots {t}`)",
                Until::Time(taken)
            ),
        ));
    }
    if at > now {
        return Err((
            "until_in_future",
            format!(
                "{until} is in the future: the archive ends before it and recovery would fail; use --until latest \
                 for the end of the archive"
            ),
        ));
    }
    Ok(())
}

/// The restore point `name` of `t` may be read: in the catalog, not being deleted.
fn check_point(state: &State, t: &TargetId, name: &str) -> Result<(), (&'static str, String)> {
    let listed = state
        .catalog
        .get(t)
        .is_some_and(|c| c.iter().any(|e| e.name == name));
    if !listed {
        let elsewhere = state
            .catalog
            .iter()
            .find(|(_, c)| c.iter().any(|e| e.name == name))
            .map(|(other, _)| other.clone());
        return Err(match elsewhere {
            Some(other) => (
                "wrong_target",
                format!("{name} is a restore point of {other}, not of {t}"),
            ),
            None => (
                "unknown_snapshot",
                format!("{name} is not a restore point of {t} (deleted, or never taken: see `recman snapshots {t}`)"),
            ),
        });
    }
    if state.prunes.contains_key(&(t.clone(), name.to_string())) {
        return Err(("snapshot_deleting", format!("{name} of {t} is being deleted")));
    }
    Ok(())
}

/// Why `t` is not idle, if it is not.
fn target_busy(state: &State, t: &TargetId) -> Option<String> {
    if let Some(j) = state.queues.get(t).and_then(|q| q.front()) {
        return Some(format!("job {j} holds or waits for it"));
    }
    if let Some(op) = state.recovery.running.get(t) {
        return Some(format!("recovery {op} runs"));
    }
    if state.recovery.wanted.get(t).is_some_and(|q| !q.is_empty()) {
        return Some("a recovery waits for it".into());
    }
    if crate::verify::busy(state, t) {
        return Some("a verification runs".into());
    }
    if crate::reconcile::busy(state, t) {
        return Some("a reconcile runs".into());
    }
    None
}

/// Targets a step's `events` touched (their recovery may start now).
pub fn touched(state: &State, events: &[Event]) -> BTreeSet<TargetId> {
    let mut out = BTreeSet::new();
    for e in events {
        match &e.body {
            EventBody::RecoveryRequested { target, .. } => {
                out.insert(target.clone());
            }
            EventBody::Approved { .. } => {
                if let Some(op) = state.recovery.ops.get(&e.job) {
                    out.insert(op.target.clone());
                }
            }
            EventBody::Verified { target, .. }
            | EventBody::VerifyFailed { target, .. }
            | EventBody::Reconciled { target, .. }
            | EventBody::ReconcileFailed { target, .. } => {
                out.insert(target.clone());
            }
            b if b.is_terminal() => {
                if let Some(j) = state.jobs.get(&e.job) {
                    out.extend(j.targets.iter().cloned());
                }
                if let Some(op) = state.recovery.ops.get(&e.job) {
                    out.insert(op.target.clone());
                }
            }
            _ => {}
        }
    }
    out.retain(|t| state.recovery.wanted.contains_key(t));
    out
}

/// The recoveries to start on `targets` now: the oldest request of each
/// idle one (not one awaiting approval: those behind it go first).
pub fn starts(state: &State, cfg: &CoreConfig, now: u64, targets: &BTreeSet<TargetId>) -> Vec<Event> {
    let mut out = Vec::new();
    for t in targets {
        let ready = |id: &&JobId| {
            state
                .recovery
                .ops
                .get(*id)
                .is_some_and(|op| op.state == OpState::Pending)
                || cfg.mutation == Some(crate::Mutation::SkipApproval)
        };
        let Some(&id) = state.recovery.wanted.get(t).and_then(|q| q.iter().find(ready)) else {
            continue;
        };
        let op = &state.recovery.ops[&id];
        if op.action == RecoveryAction::Prune {
            // A prune has no step: its approval asks for the deletes and
            // ends it (`decide`). Only a core that skips approval gets here.
            out.push(Event {
                at_ms: now,
                job: id,
                body: EventBody::RecoveryCompleted {
                    location: "pruned without approval".into(),
                },
                by: String::new(),
            });
            continue;
        }
        let unguarded = cfg.mutation == Some(crate::Mutation::RecoverWhileBusy)
            || !state.recovery.ops[&id].action.is_in_place();
        if state.recovery.running.contains_key(t)
            || (!unguarded
                && (state.queues.get(t).is_some_and(|q| !q.is_empty())
                    || crate::verify::busy(state, t)
                    || crate::reconcile::busy(state, t)))
        {
            continue;
        }
        out.push(step_started(cfg, op, first_stage(&op.action), now));
    }
    out
}

fn step_started(cfg: &CoreConfig, op: &Op, stage: Stage, now: u64) -> Event {
    let mut timeout = step_timeout(cfg, &op.target, stage);
    if stage == Stage::Start && op.reverting && op.failure.is_none() {
        // The start of restored data first recovers it (a database replays
        // its log): the recovery's time, not only the writer's.
        timeout = timeout.saturating_add(step_timeout(cfg, &op.target, Stage::Restore));
    }
    Event {
        at_ms: now,
        job: op.id,
        body: EventBody::RecoveryStepStarted {
            stage,
            deadline_ms: now.saturating_add(timeout).saturating_add(STAGE_GRACE_MS),
        },
        by: String::new(),
    }
}

/// The worker's own timeout of `stage` on `t`.
pub fn step_timeout(cfg: &CoreConfig, t: &TargetId, stage: Stage) -> u64 {
    let Some(p) = cfg.targets.get(t) else {
        return 60_000;
    };
    match stage {
        Stage::Stop | Stage::Start => p.writer_timeout_ms,
        Stage::SafetySnapshot => p.provider_timeout_ms,
        _ => p.recovery_timeout_ms,
    }
}

/// What follows a step's outcome: the next step, or the end.
fn next(cfg: &CoreConfig, op: &Op, stage: Stage, failed: Option<&StepError>, now: u64) -> Vec<Event> {
    let end_ok = |location: String| Event {
        at_ms: now,
        job: op.id,
        body: EventBody::RecoveryCompleted { location },
        by: String::new(),
    };
    let end_failed = |reason: String, live: LiveData| Event {
        at_ms: now,
        job: op.id,
        body: EventBody::RecoveryFailed { reason, live },
        by: String::new(),
    };
    let go = |s: Stage| step_started(cfg, op, s, now);
    let why = |e: &StepError| format!("{stage} {e}");
    if let RecoveryAction::Mount { .. } = op.action {
        // A mount that failed or did not answer may have been made: it is
        // taken away before the job ends, so no mount the catalog does not
        // know keeps a restore point busy (or is deleted under).
        return match (stage, failed) {
            (Stage::Mount, None) => vec![end_ok(op.location.clone().unwrap_or_default())],
            (Stage::Mount, Some(_)) => vec![go(Stage::Unmount)],
            (_, Some(e)) => vec![end_failed(
                format!(
                    "{}; then {}: a mount may be left on the host",
                    op.failure.as_ref().map_or("mount failed", |(r, _)| r.as_str()),
                    why(e)
                ),
                LiveData::Untouched,
            )],
            (_, None) => vec![end_failed(
                op.failure
                    .as_ref()
                    .map_or("mount failed".into(), |(r, _)| r.clone()),
                LiveData::Untouched,
            )],
        };
    }
    if !op.action.is_in_place() {
        return vec![match failed {
            None => end_ok(op.location.clone().unwrap_or_default()),
            Some(e) => end_failed(why(e), LiveData::Untouched),
        }];
    }
    let m = cfg.mutation;
    match (stage, failed) {
        (Stage::Stop, None) if m == Some(crate::Mutation::RestoreWithoutSafety) => vec![go(Stage::Restore)],
        (Stage::Restore, Some(_)) if m == Some(crate::Mutation::NoRollback) => vec![go(Stage::Start)],
        (Stage::Stop, None) => vec![go(Stage::SafetySnapshot)],
        (Stage::SafetySnapshot, None) => vec![go(Stage::Restore)],
        (Stage::Restore, None) => vec![go(Stage::Start)],
        (Stage::Stop | Stage::SafetySnapshot, Some(_)) => vec![go(Stage::Start)],
        (Stage::Restore, Some(_)) => vec![go(Stage::Rollback)],
        (Stage::Rollback, None) => vec![go(Stage::Start)],
        (Stage::Rollback, Some(e)) => {
            let first = op
                .failure
                .as_ref()
                .map_or(String::new(), |(r, _)| format!("{r}; "));
            vec![end_failed(
                format!(
                    "{first}{}: the live data may be half restored and the application was not started; \
                     the safety snapshot {} holds the state before",
                    why(e),
                    op.safety.as_deref().unwrap_or("(none)")
                ),
                LiveData::Unknown,
            )]
        }
        (Stage::Start, None) => match &op.failure {
            None => vec![end_ok(op.location.clone().unwrap_or_default())],
            Some((reason, live)) => vec![end_failed(reason.clone(), *live)],
        },
        (Stage::Start, Some(e)) => match &op.failure {
            // An earlier step's failure, not this start's own.
            Some((reason, live)) if *reason != failure_of(op, stage, e).0 => {
                vec![end_failed(format!("{reason}; then {}", why(e)), *live)]
            }
            _ if op.reverting => vec![end_failed(
                format!("restored, but the application did not start: {}", why(e)),
                LiveData::Restored,
            )],
            _ => vec![end_failed(why(e), LiveData::Untouched)],
        },
        // No other step belongs to an in-place restore.
        (_, Some(e)) => vec![end_failed(why(e), LiveData::Unknown)],
        (_, None) => vec![end_ok(op.location.clone().unwrap_or_default())],
    }
}

/// The failure a step's error records on an in-place restore (the first
/// wins): a failed restore is rolled back next (a failed rollback ends as
/// unknown by itself); a failed start after a restore leaves it restored.
fn failure_of(op: &Op, stage: Stage, e: &StepError) -> (String, LiveData) {
    let live = match stage {
        Stage::Restore | Stage::Rollback => LiveData::RolledBack,
        Stage::Start if op.reverting => LiveData::Restored,
        _ => LiveData::Untouched,
    };
    (format!("{stage} {e}"), live)
}

/// A worker's answer to the step in flight (a stale or duplicate report
/// changes nothing).
pub fn report(state: &State, cfg: &CoreConfig, r: &Report, now: u64) -> Vec<Event> {
    let Some(op) = state.recovery.ops.get(&r.job) else {
        return Vec::new();
    };
    if op.state != OpState::Running || op.stage != Some(r.stage) || r.attempt != 1 {
        return Vec::new();
    }
    let failed = |error: StepError| step_failed(cfg, op, r.stage, Some(r.worker.clone()), error, now);
    match &r.outcome {
        Outcome::Err { error } => failed(error.clone()),
        Outcome::Ok { detail } => {
            let location = match (r.stage, detail) {
                (Stage::SafetySnapshot, StepDetail::Snapshot(info)) => {
                    if info.name != safety_name(op.id) {
                        return failed(StepError::new(
                            "bad_report",
                            format!(
                                "{} reported safety snapshot {}, not {}",
                                r.worker,
                                info.name,
                                safety_name(op.id)
                            ),
                            false,
                        ));
                    }
                    info.name.clone()
                }
                (Stage::SafetySnapshot, _) => {
                    return failed(StepError::new(
                        "bad_report",
                        format!("{} answered safety-snapshot with another step's report", r.worker),
                        false,
                    ))
                }
                (_, StepDetail::Recovered { location, .. }) => location.clone(),
                (_, _) => String::new(),
            };
            if location.len() > recman_events::wire::MAX_PATH_LEN {
                return failed(StepError::new(
                    "bad_report",
                    format!(
                        "{} reported a location of {} bytes (at most {})",
                        r.worker,
                        location.len(),
                        recman_events::wire::MAX_PATH_LEN
                    ),
                    false,
                ));
            }
            let mut out = vec![Event {
                at_ms: now,
                job: op.id,
                body: EventBody::RecoveryStepDone {
                    stage: r.stage,
                    worker: r.worker.clone(),
                    duration_us: r.duration_us,
                    location: location.clone(),
                },
                by: String::new(),
            }];
            if let StepDetail::Recovered { info, .. } = detail {
                if !info.is_empty() {
                    out.push(Event {
                        at_ms: now,
                        job: op.id,
                        body: EventBody::RecoveryStepNoted {
                            stage: r.stage,
                            note: recman_events::wire::bounded(info, recman_events::wire::MAX_REASON_LEN)
                                .to_string(),
                        },
                        by: String::new(),
                    });
                }
            }
            let mut after = op.clone();
            match r.stage {
                Stage::SafetySnapshot => after.safety = Some(location),
                Stage::Restore | Stage::Mount => after.location = Some(location),
                _ => {}
            }
            out.extend(next(cfg, &after, r.stage, None, now));
            out
        }
    }
}

fn step_failed(
    cfg: &CoreConfig,
    op: &Op,
    stage: Stage,
    worker: Option<WorkerId>,
    error: StepError,
    now: u64,
) -> Vec<Event> {
    let mut after = op.clone();
    if after.failure.is_none() {
        after.failure = Some(failure_of(op, stage, &error));
    }
    let mut out = vec![Event {
        at_ms: now,
        job: op.id,
        body: EventBody::RecoveryStepFailed {
            stage,
            worker,
            error: error.clone(),
        },
        by: String::new(),
    }];
    out.extend(next(cfg, &after, stage, Some(&error), now));
    out
}

/// Steps whose deadline passed with no answer, and requests whose
/// approval expired.
pub fn timeouts(state: &State, cfg: &CoreConfig, now: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for (d, id) in state.recovery.deadlines.iter().take_while(|(d, _)| *d <= now) {
        let Some(op) = state.recovery.ops.get(id) else {
            continue;
        };
        if op.state == OpState::AwaitingApproval {
            out.push(approval_expired(op, *d, now));
            continue;
        }
        let Some(stage) = op.stage else { continue };
        out.extend(step_failed(
            cfg,
            op,
            stage,
            None,
            StepError::new(
                "timeout",
                format!("no answer by {d} ms (the worker's deadline and the grace passed)"),
                true,
            ),
            now,
        ));
    }
    out
}

/// When mount `m` is taken away by the engine (`max_mount_age`): none
/// without a limit, while an unmount of it runs, or once the engine asked
/// (a failed unmount is the operator's to retry).
pub(crate) fn mount_due(state: &State, cfg: &CoreConfig, m: &Mount) -> Option<u64> {
    let age = cfg.targets.get(&m.target)?.max_mount_age_ms?;
    let action = RecoveryAction::Unmount { mount: m.job };
    let asked = m.expiry_asked || pending(&state.recovery, Some(&m.target)).any(|op| op.action == action);
    (!asked).then(|| m.since_ms.saturating_add(age))
}

fn expiry_request(mount: JobId) -> RequestId {
    RequestId::new(format!("max_mount_age:{mount}"))
}

/// The mounts older than their target's `max_mount_age`: each is taken
/// away by a recovery job of its own (origin `max_mount_age`; its id and
/// request id follow from the mount's, so a restart asks for the same one).
/// With the index (`ix`) only the mounts due are looked at; either way
/// they come in mount id order.
pub fn expired_mounts(
    state: &State,
    cfg: &CoreConfig,
    now: u64,
    ix: Option<&crate::mounts_due::MountsDue>,
) -> Vec<Event> {
    let due: Vec<&Mount> = match ix {
        Some(ix) => ix
            .due_by(now)
            .into_iter()
            .filter_map(|id| state.recovery.mounts.get(&id))
            .collect(),
        None => state
            .recovery
            .mounts
            .values()
            .filter(|m| mount_due(state, cfg, m).is_some_and(|d| d <= now))
            .collect(),
    };
    let mut out = Vec::new();
    for m in due {
        out.push(Event {
            at_ms: now,
            job: JobId::from_parts(now, m.job.0.as_u128() ^ 0x006d_6178_5f6d_6f75_6e74_5f61_6765),
            body: EventBody::RecoveryRequested {
                request_id: expiry_request(m.job),
                target: m.target.clone(),
                name: m.name.clone(),
                action: RecoveryAction::Unmount { mount: m.job },
                origin: "max_mount_age".into(),
            },
            by: String::new(),
        });
    }
    out
}

/// When the runtime must call back: a step's deadline, or a mount's age
/// limit (`mounts`, the earliest of [`mounts_due`], which the core keeps as
/// events fold in: a look at every mount at every input cost O(mounts)).
pub fn next_due(state: &State, mounts: Option<u64>) -> Option<u64> {
    let step = state.recovery.deadlines.first().map(|(d, _)| *d);
    [step, mounts].into_iter().flatten().min()
}

/// The earliest age limit of a mount the engine must take away. It reads
/// only the recovery ledger, which only recovery events change
/// ([`changes_mounts_due`]).
pub fn mounts_due(state: &State, cfg: &CoreConfig) -> Option<u64> {
    state
        .recovery
        .mounts
        .values()
        .filter_map(|m| mount_due(state, cfg, m))
        .min()
}

/// Whether folding `body` may change [`mounts_due`]: the events
/// [`evolve`] folds into the ledger.
pub fn changes_mounts_due(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::RecoveryRequested { .. }
            | EventBody::RecoveryStepStarted { .. }
            | EventBody::RecoveryStepDone { .. }
            | EventBody::RecoveryStepFailed { .. }
            | EventBody::RecoveryCompleted { .. }
            | EventBody::RecoveryFailed { .. }
            | EventBody::ApprovalRequired { .. }
            | EventBody::Approved { .. }
            | EventBody::RecoveryStepNoted { .. }
    )
}

/// The command of `event` (a `RecoveryStepStarted`), if it is one.
pub fn effects(state: &State, cfg: &CoreConfig, event: &Event) -> Option<Outgoing> {
    let EventBody::RecoveryStepStarted { .. } = &event.body else {
        return None;
    };
    command(state, cfg, &event.job)
}

/// The commands of every step in flight (after a restart).
pub fn recover(state: &State, cfg: &CoreConfig) -> Vec<Outgoing> {
    state
        .recovery
        .running
        .values()
        .filter_map(|id| command(state, cfg, id))
        .collect()
}

/// The worker a new mount request names with `on` (`recman mount --on`),
/// when `on` is not a pool of the config: the runtime refuses the request
/// if its bus can tell that no such worker is connected, rather than let
/// the mount go to the target's provider pool, on another host than asked.
/// `None` for everything else (another action, no `on`, a pool, a 3PAR
/// target whose `on` is the array's host, a request id already known, a
/// point whose target cannot be told: `request` answers those).
pub fn mount_worker(state: &State, cfg: &CoreConfig, ask: &Ask) -> Option<WorkerId> {
    let RecoveryAction::Mount { on: Some(on), .. } = &ask.action else {
        return None;
    };
    if state.recovery.requests.contains_key(&ask.request_id) {
        return None;
    }
    let target = match &ask.target {
        Some(t) => t.clone(),
        None => {
            let n = ask.snapshot.as_ref()?;
            let mut owners = state
                .catalog
                .iter()
                .filter(|(_, c)| c.iter().any(|e| e.name == *n))
                .map(|(t, _)| t);
            let t = owners.next()?;
            if owners.next().is_some() {
                return None;
            }
            t.clone()
        }
    };
    match mount_place(cfg, cfg.targets.get(&target)?, Some(on)) {
        Destination::Worker { worker, .. } => Some(worker),
        Destination::Pool(_) => None,
    }
}

/// Where a mount (and its unmount) runs: `on` names a pool of the config,
/// else a worker (its own queue; the provider pool if it is gone); none is
/// the provider pool. A `3par` mount is always the array pool's work (`on`
/// is then the host the array exports the copy to).
fn mount_place(cfg: &CoreConfig, p: &crate::TargetPolicy, on: Option<&str>) -> Destination {
    let array = p.fingerprint.as_deref().is_some_and(|f| f.ends_with("/3par"));
    match on {
        Some(on) if !array => {
            let pool = cfg
                .targets
                .values()
                .any(|t| t.provider_pool.as_str() == on || t.writer_pool.as_str() == on);
            if pool {
                Destination::Pool(PoolName::from(on))
            } else {
                Destination::Worker {
                    worker: WorkerId::from(on),
                    fallback: p.provider_pool.clone(),
                }
            }
        }
        _ => Destination::Pool(p.provider_pool.clone()),
    }
}

fn command(state: &State, cfg: &CoreConfig, id: &JobId) -> Option<Outgoing> {
    let op = state.recovery.ops.get(id)?;
    let stage = op.stage?;
    let p = cfg.targets.get(&op.target)?;
    let t = &op.target;
    let mut location = None;
    // Every step goes to a pool, never to one worker's own queue: a worker
    // that restarted has a new id and nobody would take it (a rollback or
    // an unmount would wait out its deadline). The host's recovery lock
    // serialises a target's steps, whichever worker of the pool runs them.
    let to = match (stage, &op.action) {
        (Stage::Stop | Stage::Start, _) => Destination::Pool(p.writer_pool.clone()),
        (Stage::Unmount, RecoveryAction::Unmount { mount }) => {
            let m = state.recovery.mounts.get(mount)?;
            location = Some(m.location.clone()).filter(|l| !l.is_empty());
            mount_place(cfg, p, m.on.as_deref())
        }
        (Stage::Mount | Stage::Unmount, RecoveryAction::Mount { on, .. }) => {
            mount_place(cfg, p, on.as_deref())
        }
        (Stage::Unmount, RecoveryAction::RemoveClone { name }) => {
            let c = state.recovery.clones.get(name)?;
            location = Some(c.location.clone());
            Destination::Pool(p.provider_pool.clone())
        }
        _ => Destination::Pool(p.provider_pool.clone()),
    };
    let snapshot = match stage {
        Stage::SafetySnapshot => safety_name(op.id),
        _ => op.name.clone(),
    };
    Some(Outgoing {
        to,
        command: Command {
            schema_version: SCHEMA_VERSION,
            message_id: Command::message_id_for(op.id, 1, stage, t),
            job: op.id,
            attempt: 1,
            stage,
            targets: vec![t.clone()],
            kind: SnapshotKind::Copy,
            snapshot_name: Some(snapshot),
            // The worker's own stop: the engine's deadline less the grace.
            thaw_deadline_ms: op.deadline_ms.map(|d| d.saturating_sub(STAGE_GRACE_MS)),
            prune: Vec::new(),
            fingerprints: p.fingerprint.clone().into_iter().collect(),
            recovery: Some(RecoveryArgs {
                action: op.action.clone(),
                safety: op
                    .safety
                    .clone()
                    .or_else(|| (op.action.is_in_place()).then(|| safety_name(op.id))),
                location,
                // The restore step answered and nothing failed since.
                restored: stage == Stage::Start
                    && op.reverting
                    && (op.failure.is_none() || cfg.mutation == Some(crate::Mutation::RestoredAfterRollback)),
            }),
        },
    })
}
