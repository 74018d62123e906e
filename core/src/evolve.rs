//! `evolve`: the only way state changes. Total and deterministic; used live and in replay.

use recman_events::{Event, EventBody, JobId, Stage, StepDetail};

use crate::decide::MAX_PRUNE_TRIES;
use crate::recovery::Op;
use crate::state::{
    targets_fingerprint, CatalogEntry, Failure, Job, JobState, PendingPrune, RequestEntry, State, StepStatus,
    TargetProgress,
};

/// Folds one event into the state. Events that do not fit (unknown job, stale
/// attempt) change nothing but the `applied` counter. Finished jobs and old
/// request ids leave as the event time passes their bound (`state::Bounds`).
pub fn evolve(state: &mut State, ev: &Event) {
    fold(state, ev, None);
}

/// What left the state at one event (`evolve_retiring`).
#[derive(Clone, Debug, Default)]
pub struct Retired {
    /// Snapshot jobs that left `State::jobs`.
    pub jobs: Vec<Job>,
    /// Recovery jobs that left the recovery ledger.
    pub ops: Vec<Op>,
}

/// [`evolve`], handing the jobs and recoveries that left the state at this
/// event to `retired` (the read side keeps the most recent ones).
pub fn evolve_retiring(state: &mut State, ev: &Event, retired: &mut Retired) {
    fold(state, ev, Some(retired));
}

fn fold(state: &mut State, ev: &Event, mut retired: Option<&mut Retired>) {
    state.applied += 1;
    expire(state, ev, retired.as_deref_mut().map(|r| &mut r.jobs));
    crate::recovery::expire(state, ev, retired.map(|r| &mut r.ops));
    fold_event(state, ev);
}

/// Request ids past the window, and finished jobs past their stay, leave
/// (`state::Bounds`). The event's own job stays for another stay: the
/// decision that made this event saw it.
fn expire(state: &mut State, ev: &Event, mut retired: Option<&mut Vec<Job>>) {
    let window = state.bounds.request_window_ms;
    state
        .requests
        .expire(|e| e.at_ms.saturating_add(window) <= ev.at_ms);
    let keep = state.bounds.keep_finished_ms.max(1);
    while let Some(&(at, id)) = state.retiring.first() {
        if at >= ev.at_ms {
            break;
        }
        state.retiring.pop_first();
        if id == ev.job {
            if state.jobs.contains_key(&id) {
                state.retiring.insert((ev.at_ms.saturating_add(keep), id));
            }
            continue;
        }
        if let Some(job) = retire(state, id) {
            if let Some(out) = retired.as_deref_mut() {
                out.push(job);
            }
        }
    }
}

/// Whether finished job `id` must stay (`state::Bounds`): a delete it asked
/// for has no outcome yet (its retry timer is set exactly while one is
/// pending: `settle_requester` clears it), or it made a target's newest
/// restore point that a snapshot job made (`State::newest_snapshot_job`).
fn held(state: &State, job: &Job) -> bool {
    let id = job.id;
    job.prune_retry_at_ms.is_some()
        || job
            .targets
            .iter()
            .any(|t| state.newest_snapshot_job(t) == Some(id))
}

/// Takes finished job `id` out of the state unless it is held.
fn retire(state: &mut State, id: JobId) -> Option<Job> {
    let job = state.jobs.get(&id)?;
    if !job.state.is_terminal() || held(state, job) {
        return None;
    }
    let job = state.jobs.remove(&id)?;
    if let Some(d) = job.deadline() {
        state.deadlines.remove(&(d, id));
    }
    state.active.remove(&id);
    if job.targets.len() > 1
        && job.targets.iter().any(|t| {
            state
                .catalog
                .get(t)
                .is_some_and(|c| c.iter().any(|e| e.job == id))
        })
    {
        state.groups.insert(id, job.targets.clone());
    }
    state.retired += 1;
    Some(job)
}

/// A hold on job `id` may have ended: it leaves after another stay.
fn requeue(state: &mut State, id: JobId, at: u64) {
    if state.jobs.get(&id).is_some_and(|j| j.state.is_terminal()) {
        let keep = state.bounds.keep_finished_ms.max(1);
        state.retiring.insert((at.saturating_add(keep), id));
    }
}

fn fold_event(state: &mut State, ev: &Event) {
    if crate::schedule::evolve(&mut state.book, ev)
        || crate::verify::evolve(&mut state.verify, ev)
        || crate::reconcile::evolve(&mut state.reconcile, ev)
        || crate::reconcile::started(state, ev)
        || crate::recovery::evolve(state, ev)
    {
        return;
    }
    if let EventBody::Requested {
        request_id,
        targets,
        kind,
        origin,
    } = &ev.body
    {
        // The same request folded again, also after its job left, is no new job.
        if state.jobs.contains_key(&ev.job) || state.requests.get(request_id).is_some_and(|e| e.job == ev.job)
        {
            return;
        }
        let job = Job::new(
            ev.job,
            request_id.clone(),
            origin.clone(),
            *kind,
            targets.clone(),
            ev.at_ms,
        );
        for t in targets {
            state.queues.entry(t.clone()).or_default().push_back(ev.job);
        }
        state.requests.insert(
            request_id.clone(),
            RequestEntry {
                job: ev.job,
                at_ms: ev.at_ms,
                kind: *kind,
                targets: targets_fingerprint(targets),
            },
        );
        state.jobs.insert(ev.job, job);
        return;
    }
    match &ev.body {
        EventBody::PruneRequested {
            target,
            names,
            retry_at_ms,
        } => {
            if !state.jobs.contains_key(&ev.job) {
                return;
            }
            for name in names {
                let key = (target.clone(), name.clone());
                let (owner, tries) = match state.prunes.get(&key) {
                    Some(p) => (p.owner, p.tries + 1),
                    None => (
                        state
                            .catalog
                            .get(target)
                            .and_then(|c| c.iter().find(|e| &e.name == name))
                            .map_or(ev.job, |e| e.job),
                        1,
                    ),
                };
                let pending = PendingPrune {
                    owner,
                    requester: ev.job,
                    tries,
                };
                if let Some(old) = state.prunes.insert(key, pending) {
                    if old.requester != ev.job {
                        settle_requester(state, old.requester, ev.at_ms);
                    }
                }
            }
            with_deadline(state, ev.job, |job| job.prune_retry_at_ms = Some(*retry_at_ms));
            return;
        }
        EventBody::SnapshotDeleted { target, name } | EventBody::SnapshotVanished { target, name } => {
            if let EventBody::SnapshotVanished { .. } = &ev.body {
                // A vanished point's verification record goes like a deleted one's.
                crate::verify::evolve(
                    &mut state.verify,
                    &Event {
                        at_ms: ev.at_ms,
                        job: ev.job,
                        body: EventBody::SnapshotDeleted {
                            target: target.clone(),
                            name: name.clone(),
                        },
                        by: String::new(),
                    },
                );
            }
            if let Some(c) = state.catalog.get_mut(target) {
                c.retain(|e| !(e.name == *name && e.job == ev.job));
            }
            if let Some(members) = state.groups.get(&ev.job) {
                let listed = members.iter().any(|t| {
                    state
                        .catalog
                        .get(t)
                        .is_some_and(|c| c.iter().any(|e| e.job == ev.job))
                });
                if !listed {
                    state.groups.remove(&ev.job);
                }
            }
            if let Some(p) = state.prunes.remove(&(target.clone(), name.clone())) {
                requeue(state, p.owner, ev.at_ms);
                settle_requester(state, p.requester, ev.at_ms);
            }
            return;
        }
        EventBody::PruneFailed { target, name, error } => {
            let key = (target.clone(), name.clone());
            let Some(p) = state.prunes.get(&key) else {
                return;
            };
            let (requester, owner) = (p.requester, p.owner);
            if !(error.retryable && p.tries < MAX_PRUNE_TRIES) {
                state.prunes.remove(&key);
                requeue(state, owner, ev.at_ms);
                settle_requester(state, requester, ev.at_ms);
            }
            return;
        }
        EventBody::LateSnapshot { snapshot, .. } => {
            if let Some(job) = state.jobs.get_mut(&ev.job) {
                if !job.late_names.contains(&snapshot.name) {
                    job.late_names.push(snapshot.name.clone());
                }
            }
            return;
        }
        _ => {}
    }
    let Some(job) = state.jobs.get_mut(&ev.job) else {
        return;
    };
    let before = job.deadline();
    let was_terminal = job.state.is_terminal();
    apply_job(job, ev);
    let after = job.deadline();
    let now_terminal = job.state.is_terminal();
    if before != after {
        if let Some(d) = before {
            state.deadlines.remove(&(d, ev.job));
        }
        if let Some(d) = after {
            state.deadlines.insert((d, ev.job));
        }
    }
    // The jobs of the previous newest restore points of its targets (no
    // longer held for retention).
    let mut older = Vec::new();
    match &ev.body {
        EventBody::AttemptStarted { .. } if !now_terminal => {
            state.active.insert(ev.job);
        }
        EventBody::Completed { snapshot, .. } if !was_terminal => {
            for t in &job.targets {
                // `State::newest_snapshot_job`, field by field (`job` is borrowed).
                let newest = state
                    .catalog
                    .get(t)
                    .and_then(|c| c.iter().rev().find(|e| !e.safety))
                    .map(|e| e.job);
                older.extend(newest.filter(|j| *j != ev.job));
                let c = state.catalog.entry(t.clone()).or_default();
                c.push(CatalogEntry {
                    name: snapshot.name.clone(),
                    job: ev.job,
                    at_ms: ev.at_ms,
                    kind: job.kind,
                    safety: false,
                });
            }
        }
        _ => {}
    }
    if now_terminal && !was_terminal {
        let targets = job.targets.clone();
        requeue(state, ev.job, ev.at_ms);
        state.active.remove(&ev.job);
        for t in &targets {
            if let Some(q) = state.queues.get_mut(t) {
                if q.front() == Some(&ev.job) {
                    q.pop_front();
                } else {
                    q.retain(|j| *j != ev.job);
                }
                if q.is_empty() {
                    state.queues.remove(t);
                }
            }
        }
    }
    for id in older {
        requeue(state, id, ev.at_ms);
    }
}

/// Changes job `id`, keeping the deadline index in step.
fn with_deadline(state: &mut State, id: JobId, f: impl FnOnce(&mut Job)) {
    let Some(job) = state.jobs.get_mut(&id) else {
        return;
    };
    let before = job.deadline();
    f(job);
    let after = job.deadline();
    if before != after {
        if let Some(d) = before {
            state.deadlines.remove(&(d, id));
        }
        if let Some(d) = after {
            state.deadlines.insert((d, id));
        }
    }
}

/// A delete `requester` asked for has its outcome: when none is left, its
/// retry timer stops (and a finished requester may leave).
fn settle_requester(state: &mut State, requester: JobId, at: u64) {
    if state.prunes.asked_by(requester) {
        return;
    }
    with_deadline(state, requester, |job| job.prune_retry_at_ms = None);
    requeue(state, requester, at);
}

fn close_timeline(job: &mut Job, at: u64, outcome: &str) {
    if let Some(e) = job.timeline.last_mut() {
        if e.ended_ms.is_none() {
            e.ended_ms = Some(at);
            e.outcome = Some(outcome.to_string());
        }
    }
}

fn set_failure(job: &mut Job, f: Failure) {
    if job.failure.is_none() {
        job.failure = Some(f);
    }
}

/// The job-local part of `evolve`; the decider also runs it on a scratch copy.
pub(crate) fn apply_job(job: &mut Job, ev: &Event) {
    if job.state.is_terminal() {
        // Facts after the end (a late snapshot, a retention delete) are kept
        // for the record but move nothing.
        if let EventBody::StepSucceeded {
            stage: Stage::Snapshot,
            attempt,
            detail: StepDetail::Snapshot(info),
            ..
        } = &ev.body
        {
            if *attempt == job.attempt && job.snapshot.is_none() {
                job.snapshot = Some(info.clone());
                job.late_snapshot = true;
            }
        }
        return;
    }
    let at = ev.at_ms;
    match &ev.body {
        EventBody::Requested { .. }
        | EventBody::SnapshotDeleted { .. }
        | EventBody::LateSnapshot { .. }
        | EventBody::PruneRequested { .. }
        | EventBody::PruneFailed { .. }
        | EventBody::ScheduleChanged { .. }
        | EventBody::ScheduleFired { .. }
        | EventBody::ScheduleSkipped { .. }
        | EventBody::ScheduleQueued { .. }
        | EventBody::SchedulePaused { .. }
        | EventBody::RpoChanged { .. }
        | EventBody::RpoBreached { .. }
        | EventBody::RpoRestored { .. }
        | EventBody::VerifyRequested { .. }
        | EventBody::VerifyStarted { .. }
        | EventBody::Verified { .. }
        | EventBody::VerifyFailed { .. }
        | EventBody::ReconcileRequested { .. }
        | EventBody::ReconcileStarted { .. }
        | EventBody::SnapshotVanished { .. }
        | EventBody::SnapshotUnknown { .. }
        | EventBody::Reconciled { .. }
        | EventBody::ReconcileFailed { .. }
        | EventBody::SnapshotExpiry { .. }
        | EventBody::RecoveryRequested { .. }
        | EventBody::RecoveryStepStarted { .. }
        | EventBody::RecoveryStepDone { .. }
        | EventBody::RecoveryStepFailed { .. }
        | EventBody::RecoveryCompleted { .. }
        | EventBody::RecoveryFailed { .. }
        | EventBody::RecoveryStepNoted { .. }
        | EventBody::ApprovalRequired { .. }
        | EventBody::Approved { .. } => {}
        EventBody::Queued { .. } => {}
        EventBody::AttemptStarted {
            attempt,
            freeze_budget_ms,
            watchdog_at_ms,
        } => {
            close_timeline(job, at, "started");
            job.attempt = *attempt;
            job.progress = vec![TargetProgress::default(); job.targets.len()];
            job.snapshot_status = StepStatus::Idle;
            job.snapshot = None;
            job.late_snapshot = false;
            job.first_frozen_at_ms = None;
            job.freeze_budget_ms = *freeze_budget_ms;
            job.watchdog_at_ms = *watchdog_at_ms;
            job.thaw_by_ms = None;
            job.forced_thaw = false;
            job.failure = None;
            job.thaw_tries = 0;
            job.retry_at_ms = None;
            job.stage = None;
            job.stage_deadline_ms = None;
            job.state = JobState::Freezing;
        }
        EventBody::StageStarted {
            stage,
            attempt,
            deadline_ms,
        } => {
            if *attempt != job.attempt {
                return;
            }
            let restart = job.stage == Some(*stage);
            if !restart {
                close_timeline(job, at, "done");
                job.timeline.push(crate::state::TimelineEntry {
                    stage: *stage,
                    attempt: *attempt,
                    started_ms: at,
                    ended_ms: None,
                    outcome: None,
                });
            }
            job.stage = Some(*stage);
            job.stage_deadline_ms = Some(*deadline_ms);
            match stage {
                Stage::Freeze => {
                    job.state = JobState::Freezing;
                    for p in &mut job.progress {
                        p.freeze = StepStatus::Pending;
                    }
                }
                Stage::Snapshot => {
                    job.state = JobState::Snapshotting;
                    job.snapshot_status = StepStatus::Pending;
                }
                Stage::Thaw => {
                    job.state = JobState::Thawing;
                    job.thaw_by_ms = None;
                    for i in 0..job.targets.len() {
                        if job.needs_thaw(i) {
                            job.progress[i].thaw = StepStatus::Pending;
                        }
                    }
                    if !job.any_needs_thaw() {
                        job.state = JobState::Thawed;
                    }
                }
                Stage::FlushLogs => {
                    job.state = JobState::FlushingLogs;
                    for p in &mut job.progress {
                        p.flush = StepStatus::Pending;
                    }
                }
                Stage::Queue | Stage::Prune | Stage::Verify | Stage::Reconcile => {}
                // Recovery steps are `recovery`'s.
                Stage::Stop
                | Stage::SafetySnapshot
                | Stage::Restore
                | Stage::Rollback
                | Stage::Start
                | Stage::Mount
                | Stage::Unmount => {}
            }
        }
        EventBody::StepSucceeded {
            stage,
            attempt,
            target,
            worker,
            detail,
            ..
        } => {
            if *attempt != job.attempt {
                return;
            }
            match stage {
                Stage::Snapshot => {
                    if let StepDetail::Snapshot(info) = detail {
                        if job.state == JobState::Snapshotting && job.snapshot_status == StepStatus::Pending {
                            job.snapshot = Some(info.clone());
                            job.snapshot_status = StepStatus::Done;
                            job.state = JobState::Snapshotted;
                        } else if job.snapshot.is_none() {
                            job.snapshot = Some(info.clone());
                            job.late_snapshot = true;
                        }
                    }
                }
                _ => {
                    let Some(i) = job.index_of(target) else { return };
                    match stage {
                        Stage::Freeze => {
                            let p = &mut job.progress[i];
                            p.freeze = StepStatus::Done;
                            p.frozen_by = Some(worker.clone());
                            p.frozen_at_ms = Some(at);
                            if job.state == JobState::Freezing {
                                if job.first_frozen_at_ms.is_none() {
                                    job.first_frozen_at_ms = Some(at);
                                    let by = at.saturating_add(job.freeze_budget_ms).min(job.watchdog_at_ms);
                                    job.thaw_by_ms = Some(by);
                                }
                                if job.progress.iter().all(|p| p.freeze == StepStatus::Done) {
                                    job.state = JobState::Frozen;
                                }
                            }
                        }
                        Stage::Thaw => {
                            let p = &mut job.progress[i];
                            p.thaw = StepStatus::Done;
                            if let StepDetail::Thawed { freeze_window_us, .. } = detail {
                                p.freeze_window_us = Some(*freeze_window_us);
                            }
                            if job.state == JobState::Thawing && !job.any_needs_thaw() {
                                job.state = JobState::Thawed;
                            }
                        }
                        Stage::FlushLogs => job.progress[i].flush = StepStatus::Done,
                        _ => {}
                    }
                }
            }
        }
        EventBody::StepFailed {
            stage,
            attempt,
            target,
            worker,
            error,
        } => {
            if *attempt != job.attempt {
                return;
            }
            job.last_error = Some(error.clone());
            let idx = job.index_of(target);
            match stage {
                Stage::Freeze => {
                    if let Some(i) = idx {
                        let p = &mut job.progress[i];
                        p.freeze = StepStatus::Failed;
                        // It may have landed there: the thaw goes back to it first.
                        if p.frozen_by.is_none() {
                            p.frozen_by.clone_from(worker);
                        }
                    }
                }
                Stage::Snapshot => job.snapshot_status = StepStatus::Failed,
                Stage::Thaw => {
                    job.thaw_tries += 1;
                    return;
                }
                Stage::FlushLogs => {
                    if let Some(i) = idx {
                        job.progress[i].flush = StepStatus::Failed;
                    }
                }
                _ => return,
            }
            set_failure(
                job,
                Failure {
                    stage: *stage,
                    code: error.code.clone(),
                    message: format!("{target}: {}", error.message),
                    retryable: error.retryable,
                },
            );
        }
        EventBody::StageTimedOut { stage, attempt } => {
            if *attempt != job.attempt {
                return;
            }
            job.stage_deadline_ms = None;
            if *stage == Stage::Thaw {
                job.thaw_tries += 1;
            } else {
                set_failure(
                    job,
                    Failure {
                        stage: *stage,
                        code: "timeout".into(),
                        message: format!("{stage} stage timed out"),
                        retryable: true,
                    },
                );
            }
        }
        EventBody::ForcedThaw { attempt, reason } => {
            if *attempt != job.attempt {
                return;
            }
            job.forced_thaw = true;
            job.thaw_by_ms = None;
            set_failure(
                job,
                Failure {
                    stage: job.stage.unwrap_or(Stage::Snapshot),
                    code: "freeze_limit".into(),
                    message: reason.clone(),
                    retryable: true,
                },
            );
        }
        EventBody::WatchdogThawed {
            attempt,
            target,
            freeze_window_us,
            ..
        } => {
            if *attempt != job.attempt {
                return;
            }
            let Some(i) = job.index_of(target) else { return };
            let p = &mut job.progress[i];
            p.thaw = StepStatus::Done;
            p.thawed_by_watchdog = true;
            p.freeze_window_us = Some(*freeze_window_us);
            if job.state.before_thaw() {
                set_failure(
                    job,
                    Failure {
                        stage: job.stage.unwrap_or(Stage::Freeze),
                        code: "watchdog_thawed".into(),
                        message: format!("{target} was thawed by its worker's watchdog before the snapshot"),
                        retryable: true,
                    },
                );
            } else if job.state == JobState::Thawing && !job.any_needs_thaw() {
                job.state = JobState::Thawed;
            }
        }
        EventBody::RetryScheduled {
            next_attempt,
            not_before_ms,
            reason,
        } => {
            close_timeline(job, at, reason);
            job.state = JobState::RetryWait;
            job.retry_at_ms = Some(*not_before_ms);
            job.retry_attempt = *next_attempt;
            job.stage = None;
            job.stage_deadline_ms = None;
            job.thaw_by_ms = None;
        }
        EventBody::Completed { snapshot, .. } => {
            close_timeline(job, at, "completed");
            job.snapshot = Some(snapshot.clone());
            job.state = JobState::Completed;
            job.finished_at_ms = Some(at);
            job.stage = None;
        }
        EventBody::Failed { reason, .. } => {
            close_timeline(job, at, "failed");
            job.state = JobState::Failed;
            job.outcome = Some(reason.clone());
            job.finished_at_ms = Some(at);
            job.stage = None;
        }
        EventBody::CancelRequested { reason } => {
            if job.cancel.is_none() {
                job.cancel = Some(reason.clone());
            }
        }
        EventBody::Cancelled => {
            close_timeline(job, at, "cancelled");
            job.state = JobState::Cancelled;
            job.outcome = job.cancel.clone();
            job.finished_at_ms = Some(at);
            job.stage = None;
        }
    }
}
