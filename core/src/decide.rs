//! `decide`: from state and one input, the facts (events) that follow. Pure; never
//! produces an event that `evolve` cannot apply.

use std::collections::{BTreeMap, BTreeSet};

use recman_events::{
    legacy_snapshot_name, snapshot_name, Event, EventBody, JobId, Outcome, RecoveryAction, Report, RequestId,
    SnapshotInfo, SnapshotRequest, Stage, StepDetail, StepError, TargetId, WorkerId, SCHEMA_VERSION,
};

use crate::due::DueIndex;
use crate::evolve::apply_job;
use crate::policy::CoreConfig;
use crate::retention::{self, RetentionPolicy};
use crate::rng::Rng;
use crate::schedule::{self, Plan, RpoPlan};
use crate::state::{CatalogEntry, Job, JobState, State, StepStatus};

/// After this many thaw failures or thaw-stage timeouts the job fails loudly.
pub const MAX_THAW_TRIES: u32 = 8;
/// A snapshot's delete is asked for at most this often (unanswered, or
/// failed with a retryable error); then `PruneFailed` says so and the
/// target's next prune tries again.
pub const MAX_PRUNE_TRIES: u32 = 5;

/// The name of one attempt's snapshot (the `LegacySnapshotNames` mutation
/// brings back the old one).
pub fn attempt_snapshot_name(job: JobId, attempt: u32, mutation: Option<Mutation>) -> String {
    if mutation == Some(Mutation::LegacySnapshotNames) {
        legacy_snapshot_name(job, attempt)
    } else {
        snapshot_name(job, attempt)
    }
}

/// What the core is asked to react to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A snapshot request; `new_job` is used only if the request id is new.
    Request {
        req: SnapshotRequest,
        origin: String,
        new_job: JobId,
    },
    Report(Report),
    /// The runtime's timer reached `next_deadline`.
    TimerFired,
    /// The engine starts on its replayed log: what fell due while it was
    /// down is decided (before anything is sent again), and retention catches
    /// up with snapshots beyond `keep_last` that no prune was asked for.
    Start,
    Cancel {
        job: JobId,
        reason: String,
    },
    /// Pause a schedule (`recman schedules pause`): its slots are skipped
    /// until it is resumed.
    PauseSchedule {
        schedule: String,
        reason: String,
    },
    /// Resume a schedule: slots count from now (the paused ones are not caught up).
    ResumeSchedule {
        schedule: String,
    },
    /// An operator's `recman prune`: retention over the catalog of
    /// `targets` now (the same plan as after a completed job). A target with
    /// `require_approval` that has something to delete gets a prune job
    /// (`RecoveryAction::Prune`) that waits for a second admin instead; the
    /// first is `new_job`, the next [`JobId::nth`] of it.
    Prune {
        targets: Vec<TargetId>,
        new_job: JobId,
    },
    /// An operator's `recman verify`: verify restore point `name` of
    /// `target` (again), under the job that took it.
    Verify {
        target: TargetId,
        name: String,
        origin: String,
    },
    /// `recman restore|mount|unmount|clone`: a recovery job (`recovery`);
    /// `new_job` is used only if the request id is new.
    Recover {
        ask: crate::recovery::Ask,
        origin: String,
        new_job: JobId,
    },
    /// A second admin approves recovery `job` (`by`: the approver; the
    /// requester's own approval is refused).
    Approve {
        job: JobId,
        by: String,
    },
    /// An operator's `recman reconcile`: list `target`'s snapshots and
    /// compare them with the catalog (a request already waiting or running
    /// is the answer).
    Reconcile {
        target: TargetId,
        origin: String,
    },
}

impl Input {
    /// Its kind, one word (`recman simulate` names its slowest decision).
    pub fn kind(&self) -> &'static str {
        match self {
            Input::Request { .. } => "request",
            Input::Report(_) => "report",
            Input::TimerFired => "timer",
            Input::Start => "start",
            Input::Cancel { .. } => "cancel",
            Input::PauseSchedule { .. } => "pause-schedule",
            Input::ResumeSchedule { .. } => "resume-schedule",
            Input::Prune { .. } => "prune",
            Input::Verify { .. } => "verify",
            Input::Recover { .. } => "recover",
            Input::Approve { .. } => "approve",
            Input::Reconcile { .. } => "reconcile",
        }
    }
}

/// The answer to the sender of a request or a cancel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Accepted {
        job: JobId,
        existing: bool,
    },
    Rejected {
        code: &'static str,
        message: String,
    },
    /// `Input::Prune`: how many deletes were asked for, and the prune jobs
    /// of guarded targets that wait for approval (new or already waiting).
    Pruning {
        asked: usize,
        awaiting: Vec<(TargetId, JobId)>,
    },
    None,
}

/// Deliberately broken decisions, to prove the simulator catches them: each
/// breaks one rule, and `core/tests/sim_checks.rs` shows the invariant that
/// must fire for it. Several bring back a defect fixed before (named in its
/// doc), so the simulator is shown to catch that defect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// After a failure, move on without thawing what was frozen.
    SkipCompensatingThaw,
    /// Never force the thaw at the freeze limit.
    NoForcedThaw,
    /// A freeze that failed or timed out counts as not landed: no thaw
    /// (the defect of issue 12 item 1).
    NoThawAfterFailedFreeze,
    /// A request starts at once even when its targets are busy.
    IgnoreQueue,
    /// Snapshot names of earlier builds, 32 bits of time and 32 random bits
    /// (issue 12 item 4).
    LegacySnapshotNames,
    /// A group's snapshot starts as soon as one member is frozen.
    SnapshotBeforeAllFrozen,
    /// Late snapshots are not recorded, and nothing an attempt may have left
    /// on the storage is deleted (issue 12 item 2).
    NoDiscard,
    /// Prune outcomes are not recorded (issue 12 item 5).
    PruneUnrecorded,
    /// A request id sent again makes a new job.
    ForgetRequests,
    /// A consistency group is refused.
    RejectGroups,
    /// A job that becomes first in its queues is never started.
    NeverPromote,
    /// Folding the log keeps a deleted snapshot in the catalog (live and in
    /// replay alike: only an independent fold can tell).
    CatalogKeepsDeleted,
    /// After a restart the in-flight commands go out before the timers that
    /// fell due while the engine was down are decided (issue 12 item 2).
    ResendBeforeTimers,
    /// The simulator's engine sends a batch's commands before its events are
    /// durable (the runtime's order reversed).
    SendBeforeAppend,
    /// A schedule's slot is recognised neither by the slot recorded nor by
    /// its request id: it fires again at every timer.
    RefireSlots,
    /// A job of a target starts while the target is being verified, and a
    /// verification starts while jobs wait for its target.
    FreezeDuringVerify,
    /// Retention does not know which points are verified.
    PruneNewestVerified,
    /// A reconcile's list answer leaves the vanished points in the catalog.
    ReconcileKeepsVanished,
    /// A reconcile neither holds its target (jobs run while the provider
    /// lists) nor compares with the catalog as it was when it asked.
    ReconcileUnguarded,
    /// An in-place restore goes from the stop straight to the restore, with
    /// no safety snapshot.
    RestoreWithoutSafety,
    /// Retention does not know which points are mounted or being read.
    PruneMounted,
    /// A recovery starts while a job holds or waits for its target.
    RecoverWhileBusy,
    /// A failed restore is not rolled back: the application is started and
    /// the log says the data is as before.
    NoRollback,
    /// The start after a rollback tells the worker the data was restored
    /// (a database would replay the point's log over other files).
    RestoredAfterRollback,
    /// The simulated log accepts an append from an engine whose epoch is no
    /// longer the log's (no fencing): a deposed leader appends.
    NoFencing,
    /// A standby that takes over keeps the old leader's epoch instead of
    /// taking the next one.
    TakeoverKeepsEpoch,
    /// An engine whose append was refused (fenced) sends the batch's
    /// commands anyway and carries on.
    IgnoreFenced,
    /// An in-place restore awaiting its second admin starts anyway.
    SkipApproval,
    /// The simulated engine's checkpoints lose a field (the request-id
    /// index): a restart from one forgets requests.
    CheckpointLosesField,
}

impl Mutation {
    /// Every mutation, for the self-test that runs each one.
    pub const ALL: &'static [Mutation] = &[
        Mutation::SkipCompensatingThaw,
        Mutation::NoForcedThaw,
        Mutation::NoThawAfterFailedFreeze,
        Mutation::IgnoreQueue,
        Mutation::LegacySnapshotNames,
        Mutation::SnapshotBeforeAllFrozen,
        Mutation::NoDiscard,
        Mutation::PruneUnrecorded,
        Mutation::ForgetRequests,
        Mutation::RejectGroups,
        Mutation::NeverPromote,
        Mutation::CatalogKeepsDeleted,
        Mutation::ResendBeforeTimers,
        Mutation::SendBeforeAppend,
        Mutation::RefireSlots,
        Mutation::FreezeDuringVerify,
        Mutation::PruneNewestVerified,
        Mutation::ReconcileKeepsVanished,
        Mutation::ReconcileUnguarded,
        Mutation::RestoreWithoutSafety,
        Mutation::PruneMounted,
        Mutation::RecoverWhileBusy,
        Mutation::NoRollback,
        Mutation::RestoredAfterRollback,
        Mutation::NoFencing,
        Mutation::TakeoverKeepsEpoch,
        Mutation::IgnoreFenced,
        Mutation::SkipApproval,
        Mutation::CheckpointLosesField,
    ];

    /// Its name on the command line (`recman simulate --mutation`).
    pub fn name(self) -> String {
        kebab(&format!("{self:?}"))
    }

    /// The mutation of that name.
    pub fn parse(s: &str) -> Option<Mutation> {
        Mutation::ALL.iter().copied().find(|m| m.name() == s)
    }
}

/// `SkipCompensatingThaw` -> `skip-compensating-thaw`.
pub(crate) fn kebab(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `req` asks for what `job` was created for: the same kind and the
/// same targets, in any order.
fn same_request(job: &Job, req: &SnapshotRequest) -> bool {
    job.kind == req.kind
        && job.targets.len() == req.targets.len()
        && job.targets.iter().collect::<BTreeSet<_>>() == req.targets.iter().collect::<BTreeSet<_>>()
}

/// Decides the events that follow `input`.
pub fn decide(
    state: &State,
    cfg: &CoreConfig,
    rng: &mut Rng,
    input: &Input,
    now_ms: u64,
) -> (Vec<Event>, Reply) {
    decide_indexed(state, cfg, None, rng, input, now_ms)
}

/// [`decide`], a timer looking only at the schedules and RPOs `due` says
/// fell due (`None`: at every one; the decisions are the same).
pub fn decide_indexed(
    state: &State,
    cfg: &CoreConfig,
    due: Option<&DueIndex>,
    rng: &mut Rng,
    input: &Input,
    now_ms: u64,
) -> (Vec<Event>, Reply) {
    let mutation = cfg.mutation;
    let mut d = Decider {
        state,
        cfg,
        due,
        rng,
        now: now_ms,
        mutation,
        out: Vec::new(),
        released: BTreeSet::new(),
        ended: BTreeSet::new(),
        claimed: BTreeMap::new(),
    };
    let reply = match input {
        Input::Request { req, origin, new_job } => d.request(req, origin, *new_job),
        Input::Report(r) => {
            d.report(r);
            Reply::None
        }
        Input::TimerFired => {
            d.timer();
            d.out.extend(crate::verify::timeouts(state, now_ms));
            d.out.extend(crate::reconcile::timeouts(state, now_ms));
            d.out.extend(crate::recovery::timeouts(state, cfg, now_ms));
            d.out.extend(crate::recovery::expired_mounts(
                state,
                cfg,
                now_ms,
                due.map(|i| &i.mounts),
            ));
            d.policies(false);
            d.reconciles(false);
            Reply::None
        }
        Input::Start => {
            d.timer();
            d.out.extend(crate::verify::timeouts(state, now_ms));
            d.out.extend(crate::reconcile::timeouts(state, now_ms));
            d.out.extend(crate::recovery::timeouts(state, cfg, now_ms));
            d.out.extend(crate::recovery::expired_mounts(
                state,
                cfg,
                now_ms,
                due.map(|i| &i.mounts),
            ));
            d.catch_up_retention(None);
            d.policies(true);
            d.reconciles(true);
            Reply::None
        }
        Input::Prune { targets, new_job } => d.prune(targets, *new_job),
        Input::Approve { job, by } => match crate::recovery::approve(state, *job, by, now_ms) {
            Ok(Some(ev)) => {
                d.out.push(ev);
                d.approved_prune(*job);
                Reply::Accepted {
                    job: *job,
                    existing: false,
                }
            }
            Ok(None) => Reply::Accepted {
                job: *job,
                existing: true,
            },
            Err((code, message)) => Reply::Rejected { code, message },
        },
        Input::Cancel { job, reason } => d.cancel(*job, reason),
        Input::PauseSchedule { schedule, reason } => d.pause(schedule, Some(reason)),
        Input::ResumeSchedule { schedule } => d.pause(schedule, None),
        Input::Verify { target, name, origin } => {
            match crate::verify::request(state, cfg, target, name, origin, now_ms) {
                Ok(ev) => {
                    let job = ev.job;
                    d.out.push(ev);
                    Reply::Accepted { job, existing: false }
                }
                Err((code, message)) => Reply::Rejected { code, message },
            }
        }
        Input::Recover { ask, origin, new_job } => {
            match crate::recovery::request(state, cfg, ask, origin, *new_job, now_ms) {
                Ok(Ok(events)) => {
                    let job = *new_job;
                    d.out.extend(events);
                    Reply::Accepted { job, existing: false }
                }
                Ok(Err(job)) => Reply::Accepted { job, existing: true },
                Err((code, message)) => Reply::Rejected { code, message },
            }
        }
        Input::Reconcile { target, origin } => {
            match crate::reconcile::request(state, cfg, target, origin, now_ms) {
                Ok(Some(ev)) => {
                    d.out.push(ev);
                    Reply::Accepted {
                        job: JobId::NONE,
                        existing: false,
                    }
                }
                Ok(None) => Reply::Accepted {
                    job: JobId::NONE,
                    existing: true,
                },
                Err(e) => Reply::Rejected {
                    code: "unknown_target",
                    message: e.message,
                },
            }
        }
    };
    d.rpo_restored();
    d.promote();
    (d.out, reply)
}

struct Decider<'a> {
    state: &'a State,
    cfg: &'a CoreConfig,
    /// The due schedules and RPOs (see `due`); `None`: look at all.
    due: Option<&'a DueIndex>,
    rng: &'a mut Rng,
    now: u64,
    mutation: Option<Mutation>,
    out: Vec<Event>,
    /// Jobs that ended in this decision (their queue places are free).
    released: BTreeSet<JobId>,
    /// The same, kept after `promote` takes `released`: a schedule's slot
    /// queued behind one of them fires in this decision.
    ended: BTreeSet<JobId>,
    /// Jobs requested in this decision, by target (the last one): a later
    /// request of the same decision queues behind it.
    claimed: BTreeMap<TargetId, JobId>,
}

impl Decider<'_> {
    fn emit(&mut self, job: &mut Job, body: EventBody) {
        let ev = Event {
            at_ms: self.now,
            job: job.id,
            body,
            by: String::new(),
        };
        apply_job(job, &ev);
        self.out.push(ev);
    }

    /// Runs `f` on a scratch copy of the job, then the follow-ups.
    fn with_job(&mut self, id: JobId, f: impl FnOnce(&mut Self, &mut Job)) {
        let Some(job) = self.state.jobs.get(&id) else {
            return;
        };
        let was_terminal = job.state.is_terminal();
        let mut job = job.clone();
        f(self, &mut job);
        self.advance(&mut job);
        if job.state.is_terminal() && !was_terminal {
            self.released.insert(id);
            self.ended.insert(id);
        }
    }

    fn request(&mut self, req: &SnapshotRequest, origin: &str, new_job: JobId) -> Reply {
        if let (Some(entry), false) = (
            self.state.request(&req.request_id, self.now),
            self.mutation == Some(Mutation::ForgetRequests),
        ) {
            // The same request again (within the request-id window, see
            // `state::Bounds`) is the same job; the same id with other
            // targets or kind is a different request, refused (not silently
            // answered with a job that does not cover it).
            let job = entry.job;
            if !self.state.jobs.contains_key(&job)
                && (entry.kind != req.kind
                    || entry.targets != crate::state::targets_fingerprint(&req.targets))
            {
                return Reply::Rejected {
                    code: "request_id_in_use",
                    message: format!(
                        "request id {} is job {job}, a snapshot of other targets or kind; send another request id for other targets or kind",
                        req.request_id,
                    ),
                };
            }
            if let Some(existing) = self.state.jobs.get(&job) {
                if !same_request(existing, req) {
                    return Reply::Rejected {
                        code: "request_id_in_use",
                        message: format!(
                            "request id {} is job {job}, a {} snapshot of [{}]; send another request id for other targets or kind",
                            req.request_id,
                            existing.kind.as_str(),
                            existing.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "),
                        ),
                    };
                }
            }
            return Reply::Accepted { job, existing: true };
        }
        if let Some(job) = self.state.recovery.requests.get(&req.request_id).map(|a| a.job) {
            return Reply::Rejected {
                code: "request_id_in_use",
                message: format!("request id {} is recovery job {job}", req.request_id),
            };
        }
        if let Err(e) = req.validate() {
            return Reply::Rejected {
                code: "invalid_request",
                message: e.to_string(),
            };
        }
        if self.mutation == Some(Mutation::RejectGroups) && req.targets.len() > 1 {
            return Reply::Rejected {
                code: "invalid_request",
                message: "groups refused (mutation)".into(),
            };
        }
        let mut provider = None;
        for t in &req.targets {
            let Some(p) = self.cfg.targets.get(t) else {
                return Reply::Rejected {
                    code: "unknown_target",
                    message: format!("target {t} is not in the engine's config"),
                };
            };
            match provider {
                None => provider = Some(&p.provider_pool),
                Some(pp) if pp != &p.provider_pool => {
                    return Reply::Rejected {
                        code: "group_spans_provider_pools",
                        message: format!(
                            "a consistency group needs one provider pool; {t} uses {} and another member uses {pp}",
                            p.provider_pool
                        ),
                    }
                }
                Some(_) => {}
            }
        }
        if self.state.jobs.contains_key(&new_job) {
            return Reply::Rejected {
                code: "job_id_in_use",
                message: format!("job id {new_job} already exists"),
            };
        }
        let mut job = Job::new(
            new_job,
            req.request_id.clone(),
            origin.to_string(),
            req.kind,
            req.targets.clone(),
            self.now,
        );
        self.emit(
            &mut job,
            EventBody::Requested {
                request_id: req.request_id.clone(),
                targets: req.targets.clone(),
                kind: req.kind,
                origin: origin.to_string(),
            },
        );
        // The first job of each queue that still holds its place (one that
        // ended in this decision does not), or one requested in this decision.
        let released = &self.released;
        let mut behind: Vec<JobId> = req
            .targets
            .iter()
            .filter_map(|t| {
                self.state
                    .queues
                    .get(t)
                    .and_then(|q| q.iter().find(|j| !released.contains(j)).copied())
                    .or_else(|| self.claimed.get(t).copied())
            })
            .collect();
        for t in &req.targets {
            self.claimed.insert(t.clone(), new_job);
        }
        behind.sort();
        behind.dedup();
        let verifying = req.targets.iter().any(|t| self.verifying(t));
        if (behind.is_empty() && !verifying) || self.mutation == Some(Mutation::IgnoreQueue) {
            self.start_attempt(&mut job, 1);
        } else {
            self.emit(&mut job, EventBody::Queued { behind });
        }
        Reply::Accepted {
            job: new_job,
            existing: false,
        }
    }

    fn start_attempt(&mut self, job: &mut Job, attempt: u32) {
        let p = self.cfg.job_policy(&job.targets);
        self.emit(
            job,
            EventBody::AttemptStarted {
                attempt,
                freeze_budget_ms: p.freeze_budget_ms(),
                watchdog_at_ms: self.now.saturating_add(p.watchdog_offset_ms()),
            },
        );
        self.stage(job, Stage::Freeze);
    }

    fn stage(&mut self, job: &mut Job, stage: Stage) {
        let p = self.cfg.job_policy(&job.targets);
        let attempt = job.attempt;
        let timeout = match stage {
            Stage::Thaw => p.thaw_try_ms(),
            // A freeze that has not reported within the freeze budget is of
            // no use (the snapshot must come before the forced thaw) and may
            // have landed: the engine thaws it before the writers' watchdog.
            Stage::Freeze => p.stage_timeout_ms.min(p.freeze_budget_ms()),
            Stage::Snapshot => p.snapshot_timeout_ms,
            _ => p.stage_timeout_ms,
        };
        self.emit(
            job,
            EventBody::StageStarted {
                stage,
                attempt,
                deadline_ms: self.now.saturating_add(timeout),
            },
        );
    }

    /// Follow-ups that need no input: next stage, compensation, retry, end.
    fn advance(&mut self, job: &mut Job) {
        for _ in 0..16 {
            let attempt = job.attempt;
            match job.state {
                JobState::Queued | JobState::RetryWait if job.cancel.is_some() => {
                    self.emit(job, EventBody::Cancelled);
                }
                s if s.before_thaw() && (job.failure.is_some() || job.cancel.is_some()) => {
                    if job.any_needs_thaw() && self.mutation != Some(Mutation::SkipCompensatingThaw) {
                        self.stage(job, Stage::Thaw);
                    } else {
                        self.resolve(job);
                    }
                }
                JobState::Frozen => self.stage(job, Stage::Snapshot),
                JobState::Freezing
                    if self.mutation == Some(Mutation::SnapshotBeforeAllFrozen)
                        && job.failure.is_none()
                        && job.cancel.is_none()
                        && job.progress.iter().any(|p| p.freeze == StepStatus::Done) =>
                {
                    self.stage(job, Stage::Snapshot)
                }
                JobState::Snapshotted => self.stage(job, Stage::Thaw),
                JobState::Thawing if job.thaw_tries > MAX_THAW_TRIES => {
                    let stuck: Vec<String> = (0..job.targets.len())
                        .filter(|i| job.needs_thaw(*i))
                        .map(|i| job.targets[i].to_string())
                        .collect();
                    let reason = format!(
                        "thaw_failed: {} thaw tries failed or timed out; {} may still be frozen until the \
                         workers' watchdog thaws them at {} ms",
                        job.thaw_tries,
                        stuck.join(", "),
                        job.watchdog_at_ms
                    );
                    self.discard_attempt(job);
                    self.emit(job, EventBody::Failed { attempt, reason });
                }
                JobState::Thawing if job.stage_deadline_ms.is_none() => self.stage(job, Stage::Thaw),
                JobState::Thawed => {
                    if job.cancel.is_some() || job.failure.is_some() {
                        self.resolve(job);
                    } else {
                        self.stage(job, Stage::FlushLogs);
                    }
                }
                JobState::FlushingLogs => {
                    if job.cancel.is_some() || job.failure.is_some() {
                        self.resolve(job);
                    } else if job.progress.iter().all(|p| p.flush == StepStatus::Done) {
                        let Some(snapshot) = job.snapshot.clone() else {
                            // Cannot happen (flush starts after the snapshot); fail rather than guess.
                            self.emit(
                                job,
                                EventBody::Failed {
                                    attempt,
                                    reason: "internal: no snapshot recorded".into(),
                                },
                            );
                            continue;
                        };
                        let freeze_window_us = job
                            .progress
                            .iter()
                            .filter_map(|p| p.freeze_window_us)
                            .max()
                            .unwrap_or(0);
                        let name = snapshot.name.clone();
                        self.emit(
                            job,
                            EventBody::Completed {
                                attempt,
                                snapshot,
                                freeze_window_us,
                            },
                        );
                        self.retention(job, &name);
                    } else {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Everything is thawed (or nothing was frozen): cancel, retry or fail.
    fn resolve(&mut self, job: &mut Job) {
        let attempt = job.attempt;
        self.discard_attempt(job);
        if job.cancel.is_some() {
            self.emit(job, EventBody::Cancelled);
            return;
        }
        let Some(f) = job.failure.clone() else { return };
        let p = self.cfg.job_policy(&job.targets);
        if f.retryable && attempt <= p.max_retries {
            let delay = p.backoff_ms(attempt, self.rng);
            self.emit(
                job,
                EventBody::RetryScheduled {
                    next_attempt: attempt + 1,
                    not_before_ms: self.now.saturating_add(delay),
                    reason: f.reason(),
                },
            );
        } else {
            let why = if f.retryable { "retries exhausted: " } else { "" };
            self.emit(
                job,
                EventBody::Failed {
                    attempt,
                    reason: format!("{why}{}", f.reason()),
                },
            );
        }
    }

    fn cancel(&mut self, id: JobId, reason: &str) -> Reply {
        let Some(job) = self.state.jobs.get(&id) else {
            return Reply::Rejected {
                code: "unknown_job",
                message: format!("no job {id}"),
            };
        };
        if job.state.is_terminal() {
            return Reply::Rejected {
                code: "already_finished",
                message: format!("job {id} already ended ({:?})", job.state),
            };
        }
        if job.cancel.is_some() {
            return Reply::Accepted {
                job: id,
                existing: true,
            };
        }
        // Client text is bounded before it is stored (the API refuses longer ones).
        let reason = recman_events::wire::bounded(reason, recman_events::wire::MAX_REASON_LEN).to_string();
        self.with_job(id, |d, job| {
            d.emit(job, EventBody::CancelRequested { reason });
        });
        Reply::Accepted {
            job: id,
            existing: false,
        }
    }

    /// The attempt ends without a restore point: whatever snapshot its
    /// snapshot command may have left (cut late, cut with its report lost,
    /// or cut in time before a later stage failed) is deleted by name (a
    /// delete of a name that is not there counts as done).
    fn discard_attempt(&mut self, job: &mut Job) {
        if job.snapshot_status == StepStatus::Idle || self.mutation == Some(Mutation::NoDiscard) {
            return;
        }
        let name = attempt_snapshot_name(job.id, job.attempt, self.mutation);
        self.request_prunes(job, &[name]);
    }

    /// Asks the provider pool of each of `job`'s targets to delete `names`
    /// (those not asked for already), under `job`.
    fn request_prunes(&mut self, job: &mut Job, names: &[String]) {
        let retry_at_ms = self.now.saturating_add(self.prune_retry_ms(&job.targets));
        for t in job.targets.clone() {
            let names: Vec<String> = names
                .iter()
                .filter(|n| !self.state.prunes.contains_key(&(t.clone(), (*n).clone())))
                .cloned()
                .collect();
            if !names.is_empty() {
                self.emit(
                    job,
                    EventBody::PruneRequested {
                        target: t,
                        names,
                        retry_at_ms,
                    },
                );
            }
        }
    }

    fn prune_retry_ms(&self, targets: &[TargetId]) -> u64 {
        self.cfg.job_policy(targets).snapshot_timeout_ms.max(1_000)
    }

    /// Retention after `job` completed with snapshot `name`: the plan over
    /// each of its targets' catalog as it will be with this point
    /// (`retention::plan`; a consistency group is pruned as a whole), asked
    /// for under `job`.
    fn retention(&mut self, job: &mut Job, name: &str) {
        let extra: Vec<(TargetId, CatalogEntry)> = job
            .targets
            .iter()
            .map(|t| {
                let e = CatalogEntry {
                    name: name.to_string(),
                    job: job.id,
                    at_ms: self.now,
                    kind: job.kind,
                    safety: false,
                };
                (t.clone(), e)
            })
            .collect();
        let seed: Vec<TargetId> = job
            .targets
            .iter()
            .filter(|t| !self.target_retention(t).keeps_all())
            .cloned()
            .collect();
        if seed.is_empty() {
            return;
        }
        let view = self.retention_view();
        let plan = retention::plan(&view, |t| self.target_retention(t), &seed, &extra);
        let retry_at_ms = self.now.saturating_add(self.prune_retry_ms(&job.targets));
        for (target, names) in plan.prune {
            self.emit(
                job,
                EventBody::PruneRequested {
                    target,
                    names,
                    retry_at_ms,
                },
            );
        }
    }

    /// A target's retention rules (a target no longer in the config keeps everything).
    fn target_retention(&self, t: &TargetId) -> RetentionPolicy {
        self.cfg.targets.get(t).map(|p| p.retention()).unwrap_or_default()
    }

    /// `Input::Prune`: the deletes of unguarded targets asked for now; a
    /// guarded target with something to delete gets a prune job that waits
    /// for approval (or its waiting one is named again).
    fn prune(&mut self, targets: &[TargetId], new_job: JobId) -> Reply {
        let guarded = |t: &TargetId| self.cfg.targets.get(t).is_some_and(|p| p.approval_ms.is_some());
        let (held, free): (Vec<TargetId>, Vec<TargetId>) = targets.iter().cloned().partition(|t| guarded(t));
        // A consistency group's point goes from every member at once: the
        // direct prune must not reach a guarded member through a group.
        // Checked first: a refusal leaves nothing recorded.
        let view = self.retention_view();
        let plan = retention::plan(&view, |x| self.target_retention(x), &free, &[]);
        let reached: Vec<&str> = plan
            .prune
            .iter()
            .filter(|(t, names)| !names.is_empty() && guarded(t))
            .map(|(t, _)| t.as_str())
            .collect();
        if !reached.is_empty() {
            return Reply::Rejected {
                code: "approval_required",
                message: format!(
                    "pruning {} would delete consistency-group restore points of {}, whose deletes need a \
                     second admin's approval (require_approval = true): nothing was deleted. Prune {} \
                     (`recman prune {}`): once approved, it deletes the group's points from every member",
                    free.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "),
                    reached.join(", "),
                    reached.join(", "),
                    reached.join(" "),
                ),
            };
        }
        drop(view);
        let mut awaiting = Vec::new();
        let mut recorded = Vec::new();
        let mut n = 0;
        for t in held {
            if let Some(job) = crate::recovery::waiting_prune(self.state, &t) {
                awaiting.push((t, job));
                continue;
            }
            if self.target_retention(&t).keeps_all() {
                continue;
            }
            let view = self.retention_view();
            let plan = retention::plan(&view, |x| self.target_retention(x), std::slice::from_ref(&t), &[]);
            if plan.prune.iter().all(|(_, names)| names.is_empty()) {
                continue;
            }
            drop(view);
            let job = new_job.nth(n);
            n += 1;
            let ask = crate::recovery::Ask {
                request_id: RequestId::from(format!("prune-{job}").as_str()),
                target: Some(t.clone()),
                snapshot: None,
                action: RecoveryAction::Prune,
                confirm: true,
            };
            match crate::recovery::request(self.state, self.cfg, &ask, "prune", job, self.now) {
                Ok(Ok(events)) => {
                    recorded.extend(events);
                    awaiting.push((t, job));
                }
                Ok(Err(existing)) => awaiting.push((t, existing)),
                // Nothing of this prune is recorded.
                Err((code, message)) => return Reply::Rejected { code, message },
            }
        }
        self.out.extend(recorded);
        let asked = if free.is_empty() {
            0
        } else {
            self.catch_up_retention(Some(&free))
        };
        Reply::Pruning { asked, awaiting }
    }

    /// An approved prune (`RecoveryAction::Prune`) of a guarded target: its
    /// deletes are asked for now, by the target's rules as they stand, and
    /// the recovery job ends with how many.
    fn approved_prune(&mut self, job: JobId) {
        let Some(op) = self.state.recovery.ops.get(&job) else {
            return;
        };
        if op.action != RecoveryAction::Prune {
            return;
        }
        let target = op.target.clone();
        let asked = self.catch_up_retention(Some(std::slice::from_ref(&target)));
        self.out.push(Event {
            at_ms: self.now,
            job,
            body: EventBody::RecoveryCompleted {
                location: format!("{asked} restore point(s) of {target} asked to be deleted"),
            },
            by: String::new(),
        });
    }

    /// On start, and on `Input::Prune` for `only` targets: retention over
    /// the catalog as it is (a log of an earlier build, a one-shot run that
    /// stopped first, changed rules, or an operator's `recman prune`), asked
    /// for under the job of each target's newest restore point. Returns how
    /// many deletes were asked for.
    fn catch_up_retention(&mut self, only: Option<&[TargetId]>) -> usize {
        let seed: Vec<TargetId> = match only {
            Some(ts) => ts
                .iter()
                .filter(|t| !self.target_retention(t).keeps_all())
                .cloned()
                .collect(),
            None => self
                .state
                .catalog
                .keys()
                .filter(|t| !self.target_retention(t).keeps_all())
                .cloned()
                .collect(),
        };
        let view = self.retention_view();
        let plan = retention::plan(&view, |t| self.target_retention(t), &seed, &[]);
        let mut asked = 0;
        for (target, names) in plan.prune {
            // The deletes go under the newest snapshot job of the target (a
            // recovery's safety snapshot may be newer: its job is no
            // snapshot job and has no timers for them).
            let newest = self.state.newest_snapshot_job(&target);
            let Some(job) = newest.and_then(|j| self.state.jobs.get(&j)) else {
                continue;
            };
            asked += names.len();
            let retry_at_ms = self.now.saturating_add(self.prune_retry_ms(&job.targets));
            self.out.push(Event {
                at_ms: self.now,
                job: job.id,
                body: EventBody::PruneRequested {
                    target,
                    names,
                    retry_at_ms,
                },
                by: String::new(),
            });
        }
        asked
    }

    /// The retry timer of the deletes `job` asked for: asks again for those
    /// still without an outcome, or gives up on those asked for too often.
    fn retry_prunes(&mut self, job: &mut Job) {
        if job.prune_retry_at_ms.is_none_or(|t| t > self.now) {
            return;
        }
        let retry_at_ms = self.now.saturating_add(self.prune_retry_ms(&job.targets));
        let mut asked = false;
        for (target, names) in self.state.prunes_of(job.id) {
            let mut again = Vec::new();
            for name in names {
                let Some(p) = self.state.prunes.get(&(target.clone(), name.clone())) else {
                    continue;
                };
                if p.tries >= MAX_PRUNE_TRIES {
                    let error = StepError::new(
                        "no_answer",
                        format!(
                            "no outcome after {} requests to delete {name} of {target}: it may still exist; \
                             the target's next prune tries again",
                            p.tries
                        ),
                        false,
                    );
                    self.out.push(Event {
                        at_ms: self.now,
                        job: p.owner,
                        body: EventBody::PruneFailed {
                            target: target.clone(),
                            name,
                            error,
                        },
                        by: String::new(),
                    });
                } else {
                    again.push(name);
                }
            }
            if !again.is_empty() {
                asked = true;
                self.emit(
                    job,
                    EventBody::PruneRequested {
                        target,
                        names: again,
                        retry_at_ms,
                    },
                );
            }
        }
        if !asked {
            // Nothing asked again: the timer must not stay due (evolve
            // clears it once the given-up deletes are folded in).
            job.prune_retry_at_ms = None;
        }
    }

    /// Forces the thaw when the freeze limit is reached (also on a late input).
    fn check_thaw_by(&mut self, job: &mut Job) {
        if self.mutation == Some(Mutation::NoForcedThaw) {
            return;
        }
        if let Some(by) = job.thaw_by_ms {
            if job.state.before_thaw() && self.now >= by {
                let attempt = job.attempt;
                self.emit(
                    job,
                    EventBody::ForcedThaw {
                        attempt,
                        reason: format!(
                            "freeze limit: thaw due at {by} ms and the snapshot has not reported"
                        ),
                    },
                );
            }
        }
    }

    fn timer(&mut self) {
        let due: Vec<JobId> = self
            .state
            .deadlines
            .iter()
            .take_while(|(d, _)| *d <= self.now)
            .map(|(_, j)| *j)
            .collect();
        for id in due {
            self.with_job(id, |d, job| {
                d.retry_prunes(job);
                if job.state.is_terminal() {
                    return;
                }
                if job.state == JobState::RetryWait {
                    if job.retry_at_ms.is_some_and(|t| t <= d.now) {
                        let next = job.retry_attempt.max(job.attempt + 1);
                        d.start_attempt(job, next);
                    }
                    return;
                }
                d.check_thaw_by(job);
                if job.stage_deadline_ms.is_some_and(|t| t <= d.now) {
                    if let Some(stage) = job.stage {
                        let attempt = job.attempt;
                        d.emit(job, EventBody::StageTimedOut { stage, attempt });
                    }
                }
            });
        }
    }

    fn report(&mut self, r: &Report) {
        if r.stage == Stage::Verify {
            let events = crate::verify::report(self.state, r, self.now);
            self.out.extend(events);
            return;
        }
        if r.stage == Stage::Prune {
            self.prune_report(r);
            return;
        }
        if r.stage == Stage::Reconcile {
            let events = crate::reconcile::report(self.state, self.cfg, r, self.now);
            self.out.extend(events);
            return;
        }
        if crate::recovery::is_recovery_stage(r.stage) {
            let events = crate::recovery::report(self.state, self.cfg, r, self.now);
            self.out.extend(events);
            return;
        }
        let Some(job) = self.state.jobs.get(&r.job) else {
            return;
        };
        if r.stage == Stage::Snapshot && !self.accepts_snapshot(job, r) {
            self.late_snapshot(r);
            return;
        }
        if r.attempt != job.attempt || job.state.is_terminal() {
            return;
        }
        self.with_job(r.job, |d, job| {
            d.check_thaw_by(job);
            match r.stage {
                Stage::Freeze => d.freeze_report(job, r),
                Stage::Snapshot => d.snapshot_report(job, r),
                Stage::Thaw => d.thaw_report(job, r),
                Stage::FlushLogs => d.flush_report(job, r),
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
        });
    }

    fn step_ok(&mut self, job: &mut Job, r: &Report, stage: Stage, target: &TargetId, detail: StepDetail) {
        let attempt = job.attempt;
        self.emit(
            job,
            EventBody::StepSucceeded {
                stage,
                attempt,
                target: target.clone(),
                worker: r.worker.clone(),
                duration_us: r.duration_us,
                detail,
            },
        );
    }

    fn step_err(&mut self, job: &mut Job, r: &Report, stage: Stage, target: &TargetId, error: StepError) {
        let attempt = job.attempt;
        self.emit(
            job,
            EventBody::StepFailed {
                stage,
                attempt,
                target: target.clone(),
                worker: Some(r.worker.clone()),
                error,
            },
        );
    }

    fn freeze_report(&mut self, job: &mut Job, r: &Report) {
        for t in &r.targets {
            let Some(i) = job.index_of(t) else { continue };
            if job.progress[i].freeze != StepStatus::Pending {
                continue;
            }
            match &r.outcome {
                Outcome::Ok { detail } => self.step_ok(job, r, Stage::Freeze, t, detail.clone()),
                Outcome::Err { error } => self.step_err(job, r, Stage::Freeze, t, error.clone()),
            }
        }
    }

    /// Whether a snapshot report can make the attempt's restore point: its
    /// own attempt, in the snapshot stage, while every writer is frozen.
    fn accepts_snapshot(&self, job: &Job, r: &Report) -> bool {
        let snapshotting = job.state == JobState::Snapshotting
            || self.mutation == Some(Mutation::SnapshotBeforeAllFrozen) && job.state == JobState::Freezing;
        r.attempt == job.attempt
            && snapshotting
            && job.snapshot_status == StepStatus::Pending
            && job.thaw_by_ms.is_none_or(|by| self.now < by)
    }

    /// A snapshot that cannot be a restore point (late, another attempt's, a
    /// failed or finished attempt's): recorded once as `LateSnapshot` and
    /// deleted. A duplicate of the restore point or of a known late one, or
    /// an error, changes nothing.
    fn late_snapshot(&mut self, r: &Report) {
        let Outcome::Ok {
            detail: StepDetail::Snapshot(info),
        } = &r.outcome
        else {
            return;
        };
        if self.mutation == Some(Mutation::NoDiscard) {
            return;
        }
        let id = r.job;
        let known = |job: &Job| {
            job.snapshot.as_ref().is_some_and(|s| s.name == info.name)
                && !job.late_snapshot
                && job.snapshot_status == StepStatus::Done
                || job.late_names.contains(&info.name)
        };
        if self.state.jobs.get(&id).is_none_or(known) {
            return;
        }
        let (attempt, worker, info) = (r.attempt, r.worker.clone(), info.clone());
        self.with_job(id, |d, job| d.record_late(job, attempt, worker, info));
    }

    fn record_late(&mut self, job: &mut Job, attempt: u32, worker: WorkerId, snapshot: SnapshotInfo) {
        let Some(first) = job.targets.first().cloned() else {
            return;
        };
        let name = snapshot.name.clone();
        self.emit(
            job,
            EventBody::LateSnapshot {
                attempt,
                target: first,
                worker,
                snapshot,
            },
        );
        self.request_prunes(job, &[name]);
    }

    fn snapshot_report(&mut self, job: &mut Job, r: &Report) {
        let Some(first) = job.targets.first().cloned() else {
            return;
        };
        if self.accepts_snapshot(job, r) {
            match &r.outcome {
                Outcome::Ok {
                    detail: d @ StepDetail::Snapshot(info),
                } => {
                    self.step_ok(job, r, Stage::Snapshot, &first, d.clone());
                    // The stored step leaves the array's clock out: its own event keeps it.
                    if let Some(expiry) = info.array_expiry {
                        let name = info.name.clone();
                        self.emit(
                            job,
                            EventBody::SnapshotExpiry {
                                target: first,
                                name,
                                expiry,
                            },
                        );
                    }
                }
                Outcome::Ok { detail } => {
                    let e = StepError::new(
                        "bad_report",
                        format!("snapshot report without snapshot info: {detail:?}"),
                        false,
                    );
                    self.step_err(job, r, Stage::Snapshot, &first, e)
                }
                Outcome::Err { error } => self.step_err(job, r, Stage::Snapshot, &first, error.clone()),
            }
        }
    }

    fn thaw_report(&mut self, job: &mut Job, r: &Report) {
        for t in &r.targets {
            let Some(i) = job.index_of(t) else { continue };
            let p = &job.progress[i];
            if p.thaw == StepStatus::Done || p.freeze == StepStatus::Idle {
                continue;
            }
            let pending = p.thaw == StepStatus::Pending;
            let attempt = job.attempt;
            match &r.outcome {
                Outcome::Ok {
                    detail:
                        StepDetail::Thawed {
                            freeze_window_us,
                            by_watchdog: true,
                        },
                } => self.emit(
                    job,
                    EventBody::WatchdogThawed {
                        attempt,
                        target: t.clone(),
                        worker: r.worker.clone(),
                        freeze_window_us: *freeze_window_us,
                    },
                ),
                Outcome::Ok { detail } if pending => self.step_ok(job, r, Stage::Thaw, t, detail.clone()),
                Outcome::Err { error } if pending => self.step_err(job, r, Stage::Thaw, t, error.clone()),
                _ => {}
            }
        }
    }

    fn flush_report(&mut self, job: &mut Job, r: &Report) {
        if job.state != JobState::FlushingLogs {
            return;
        }
        for t in &r.targets {
            let Some(i) = job.index_of(t) else { continue };
            if job.progress[i].flush != StepStatus::Pending {
                continue;
            }
            match &r.outcome {
                Outcome::Ok { detail } => self.step_ok(job, r, Stage::FlushLogs, t, detail.clone()),
                Outcome::Err { error } => self.step_err(job, r, Stage::FlushLogs, t, error.clone()),
            }
        }
    }

    /// A prune's outcome, per name: `SnapshotDeleted` (gone: deleted, or not
    /// there) or `PruneFailed`, under the job that took the snapshot. Only
    /// deletes still waiting for an outcome, or catalog entries, are recorded
    /// (a redelivered report changes nothing).
    fn prune_report(&mut self, r: &Report) {
        if self.mutation == Some(Mutation::PruneUnrecorded) {
            return;
        }
        let (deleted, failed) = match &r.outcome {
            Outcome::Ok {
                detail: StepDetail::Pruned { deleted, failed },
            } => (
                deleted.clone(),
                failed.iter().map(|f| (f.name.clone(), f.error.clone())).collect(),
            ),
            Outcome::Ok { .. } => return,
            // The whole prune failed: every delete this job asked of the
            // target gets the error.
            Outcome::Err { error } => {
                let mut all: Vec<(String, StepError)> = Vec::new();
                for t in &r.targets {
                    for name in self.state.prunes_of(r.job).remove(t).unwrap_or_default() {
                        all.push((name, error.clone()));
                    }
                }
                (Vec::new(), all)
            }
        };
        let mut seen = BTreeSet::new();
        for t in &r.targets {
            for name in &deleted {
                for owner in self.owners(t, name) {
                    if seen.insert((t.clone(), name.clone(), owner)) {
                        self.out.push(Event {
                            at_ms: self.now,
                            job: owner,
                            body: EventBody::SnapshotDeleted {
                                target: t.clone(),
                                name: name.clone(),
                            },
                            by: String::new(),
                        });
                    }
                }
            }
            for (name, error) in &failed {
                let Some(p) = self.state.prunes.get(&(t.clone(), name.clone())) else {
                    continue;
                };
                if seen.insert((t.clone(), name.clone(), p.owner)) {
                    self.out.push(Event {
                        at_ms: self.now,
                        job: p.owner,
                        body: EventBody::PruneFailed {
                            target: t.clone(),
                            name: name.clone(),
                            error: error.clone(),
                        },
                        by: String::new(),
                    });
                }
            }
        }
    }

    /// The jobs whose snapshot `name` of `t` is waiting for its delete or
    /// listed in the catalog.
    fn owners(&self, t: &TargetId, name: &str) -> BTreeSet<JobId> {
        let mut out = BTreeSet::new();
        if let Some(p) = self.state.prunes.get(&(t.clone(), name.to_string())) {
            out.insert(p.owner);
        }
        if let Some(cat) = self.state.catalog.get(t) {
            out.extend(cat.iter().filter(|e| e.name == name).map(|e| e.job));
        }
        out
    }

    /// An event of no job (schedules, RPOs).
    fn push_none(&mut self, body: EventBody) {
        self.push_for(JobId::NONE, body);
    }

    fn push_for(&mut self, job: JobId, body: EventBody) {
        self.out.push(Event {
            at_ms: self.now,
            job,
            body,
            by: String::new(),
        });
    }

    /// Schedules and RPOs at a timer (`start`: also their config changes).
    fn policies(&mut self, start: bool) {
        let refire = self.mutation == Some(Mutation::RefireSlots);
        // At start every schedule and RPO is looked at (config changes);
        // the mutation ignores recorded slots, which the index does not.
        let (sched, rpo) = match self.due {
            Some(ix) if !start && !refire => {
                let (mut s, r) = ix.due(self.now, crate::due::MAX_DUE_PER_DECISION);
                // A slot queued behind a job that ended in this decision.
                s.extend(self.ended.iter().flat_map(|j| ix.watching(j)));
                s.sort_unstable();
                s.dedup();
                (Some(s), Some(r))
            }
            _ => (None, None),
        };
        let ended = &self.ended;
        for p in schedule::plan(
            self.state,
            self.cfg,
            self.now,
            start,
            refire,
            sched.as_deref(),
            ended,
        ) {
            match p {
                Plan::Changed { schedule, spec } => {
                    self.push_none(EventBody::ScheduleChanged { schedule, spec })
                }
                Plan::Skip {
                    schedule,
                    slot_ms,
                    missed,
                    reason,
                } => self.push_none(EventBody::ScheduleSkipped {
                    schedule,
                    slot_ms,
                    missed,
                    reason,
                }),
                Plan::Queue {
                    schedule,
                    slot_ms,
                    behind,
                } => self.push_for(behind, EventBody::ScheduleQueued { schedule, slot_ms }),
                Plan::Fire { schedule, slot_ms } => self.fire(schedule, slot_ms),
            }
        }
        let completed = self.completed_targets();
        for p in schedule::rpo_plan(self.state, self.cfg, self.now, start, rpo.as_deref()) {
            match p {
                RpoPlan::Changed { target, rpo_ms } => {
                    self.push_none(EventBody::RpoChanged { target, rpo_ms })
                }
                RpoPlan::Breached {
                    target,
                    rpo_ms,
                    last_good_ms,
                } if !completed.contains(&target) => self.push_none(EventBody::RpoBreached {
                    target,
                    rpo_ms,
                    last_good_ms,
                }),
                RpoPlan::Breached { .. } => {}
                RpoPlan::Restored {
                    target,
                    rpo_ms,
                    last_good_ms,
                } => self.push_none(EventBody::RpoRestored {
                    target,
                    rpo_ms,
                    last_good_ms,
                }),
            }
        }
    }

    /// One slot of schedule `i` fires: its request, unless the slot's
    /// request id (or job id) is known already.
    fn fire(&mut self, i: usize, slot_ms: u64) {
        let Some(s) = self.cfg.schedules.get(i) else {
            return;
        };
        let (mut request_id, mut job) = (s.request_id(slot_ms), s.job_id(slot_ms));
        if self.mutation == Some(Mutation::RefireSlots) {
            let r = self.rng.next_u64();
            request_id = RequestId::new(format!("{request_id}:{r:x}"));
            job = JobId::from_parts(self.now, u128::from(r));
        }
        let known = self
            .state
            .request(&request_id, self.now)
            .map(|e| e.job)
            .or_else(|| self.state.jobs.contains_key(&job).then_some(job));
        let id = s.id.clone();
        if let Some(existing) = known {
            self.push_none(EventBody::ScheduleSkipped {
                schedule: id,
                slot_ms,
                missed: 1,
                reason: format!("already fired: request {request_id} is job {existing}"),
            });
            return;
        }
        let req = SnapshotRequest {
            schema_version: SCHEMA_VERSION,
            request_id,
            targets: s.targets.clone(),
            kind: s.kind,
        };
        match self.request(&req, &format!("schedule:{id}"), job) {
            Reply::Accepted { job, .. } => self.push_for(
                job,
                EventBody::ScheduleFired {
                    schedule: id,
                    slot_ms,
                },
            ),
            Reply::Rejected { code, message } => self.push_none(EventBody::ScheduleSkipped {
                schedule: id,
                slot_ms,
                missed: 1,
                reason: format!("refused: {code}: {message}"),
            }),
            Reply::None | Reply::Pruning { .. } => {}
        }
    }

    /// Targets of the jobs completed in this decision.
    fn completed_targets(&self) -> BTreeSet<TargetId> {
        let mut out = BTreeSet::new();
        for e in &self.out {
            if let EventBody::Completed { .. } = e.body {
                if let Some(j) = self.state.jobs.get(&e.job) {
                    out.extend(j.targets.iter().cloned());
                }
            }
        }
        out
    }

    /// A breached RPO is restored by a job completed in this decision, or
    /// (`rpo_counts = "verified"`) by a restore point verified in it that
    /// is younger than the RPO.
    fn rpo_restored(&mut self) {
        let mut restored: Vec<(TargetId, u64, JobId, u64)> = Vec::new();
        let already: BTreeSet<TargetId> = self
            .out
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::RpoRestored { target, .. } => Some(target.clone()),
                _ => None,
            })
            .collect();
        for e in &self.out {
            let (targets, last_good): (Vec<&TargetId>, u64) = match &e.body {
                EventBody::Completed { .. } => {
                    let Some(j) = self.state.jobs.get(&e.job) else {
                        continue;
                    };
                    let counted = j
                        .targets
                        .iter()
                        .filter(|t| !self.cfg.targets.get(*t).is_some_and(|p| p.rpo_verified))
                        .collect();
                    (counted, self.now)
                }
                EventBody::Verified { target, name, .. }
                    if self.cfg.targets.get(target).is_some_and(|p| p.rpo_verified) =>
                {
                    let Some(at) = self
                        .state
                        .catalog
                        .get(target)
                        .and_then(|c| c.iter().find(|c| c.name == *name))
                        .map(|c| c.at_ms)
                    else {
                        continue;
                    };
                    (vec![target], at)
                }
                // A recovery's safety snapshot is a restore point too (the
                // full scan of a timer counts it: so must this).
                EventBody::RecoveryStepDone {
                    stage: Stage::SafetySnapshot,
                    ..
                } => {
                    let Some(op) = self.state.recovery.ops.get(&e.job) else {
                        continue;
                    };
                    if self.cfg.targets.get(&op.target).is_some_and(|p| p.rpo_verified) {
                        continue;
                    }
                    (vec![&op.target], self.now)
                }
                _ => continue,
            };
            for t in targets {
                let Some(r) = self.state.book.rpo.get(t).filter(|r| r.breached && r.rpo_ms > 0) else {
                    continue;
                };
                if self.now >= last_good.saturating_add(r.rpo_ms) {
                    continue; // verified, but already older than the RPO
                }
                if !already.contains(t) && !restored.iter().any(|(x, ..)| x == t) {
                    restored.push((t.clone(), r.rpo_ms, e.job, last_good));
                }
            }
        }
        for (target, rpo_ms, job, last_good_ms) in restored {
            self.push_for(
                job,
                EventBody::RpoRestored {
                    target,
                    rpo_ms,
                    last_good_ms,
                },
            );
        }
    }

    /// Pauses (`reason`) or resumes (`None`) a schedule of the config.
    fn pause(&mut self, id: &str, reason: Option<&String>) -> Reply {
        if !self.cfg.schedules.iter().any(|s| s.id == id) {
            return Reply::Rejected {
                code: "unknown_schedule",
                message: format!("no schedule \"{id}\" in the engine's config"),
            };
        }
        let paused = self
            .state
            .book
            .schedules
            .get(id)
            .is_some_and(|s| s.paused.is_some());
        if paused == reason.is_some() {
            return Reply::Accepted {
                job: JobId::NONE,
                existing: true,
            };
        }
        let reason = reason
            .map(|r| recman_events::wire::bounded(r, recman_events::wire::MAX_REASON_LEN).to_string())
            .unwrap_or_default();
        self.push_none(EventBody::SchedulePaused {
            schedule: id.to_string(),
            paused: !paused,
            reason,
        });
        Reply::Accepted {
            job: JobId::NONE,
            existing: false,
        }
    }

    /// Whether a verification runs on `t` after this decision's events (no
    /// freeze of `t` may start; `FreezeDuringVerify` ignores it).
    fn verifying(&self, t: &TargetId) -> bool {
        (self.mutation != Some(Mutation::FreezeDuringVerify)
            && crate::verify::busy(self.state, t)
            && !crate::verify::ended(&self.out).contains(t))
            || self.reconciling(t)
            || self.recovering(t)
    }

    /// Whether a recovery runs on `t` after this decision's events (no
    /// freeze of `t` may start).
    fn recovering(&self, t: &TargetId) -> bool {
        crate::recovery::busy(self.state, t) && !crate::recovery::ended(self.state, &self.out).contains(t)
    }

    /// Whether a reconcile runs on `t` after this decision's events (no
    /// freeze of `t` may start; `ReconcileUnguarded` ignores it).
    fn reconciling(&self, t: &TargetId) -> bool {
        self.mutation != Some(Mutation::ReconcileUnguarded)
            && crate::reconcile::busy(self.state, t)
            && !crate::reconcile::ended(&self.out).contains(t)
    }

    /// The periodic reconciles due now (`start`: every target looked at).
    fn reconciles(&mut self, start: bool) {
        let due = match self.due {
            Some(ix) if !start => Some(ix.due_reconciles(self.now)),
            _ => None,
        };
        let asked = crate::reconcile::plan(self.state, self.cfg, self.now, due.as_deref());
        self.out.extend(asked);
    }

    /// The state retention plans over (`PruneNewestVerified`: without the
    /// verification records).
    fn retention_view(&self) -> std::borrow::Cow<'_, State> {
        if self.mutation == Some(Mutation::PruneNewestVerified) {
            let mut s = self.state.clone();
            s.verify = Default::default();
            std::borrow::Cow::Owned(s)
        } else if self.mutation == Some(Mutation::PruneMounted) {
            let mut s = self.state.clone();
            s.recovery = Default::default();
            std::borrow::Cow::Owned(s)
        } else {
            std::borrow::Cow::Borrowed(self.state)
        }
    }

    /// Starts every queued job that became first in all its queues.
    fn promote(&mut self) {
        let mut verified = crate::verify::ended(&self.out);
        verified.extend(crate::reconcile::ended(&self.out));
        verified.extend(crate::recovery::ended(self.state, &self.out));
        if (self.released.is_empty() && verified.is_empty()) || self.mutation == Some(Mutation::NeverPromote)
        {
            return;
        }
        let released = std::mem::take(&mut self.released);
        let first = |t: &TargetId| -> Option<JobId> {
            self.state
                .queues
                .get(t)
                .and_then(|q| q.iter().find(|j| !released.contains(j)).copied())
        };
        let mut candidates: BTreeSet<JobId> = verified.iter().filter_map(first).collect();
        for id in &released {
            if let Some(job) = self.state.jobs.get(id) {
                for t in &job.targets {
                    if let Some(c) = first(t) {
                        candidates.insert(c);
                    }
                }
            }
        }
        let mut start = Vec::new();
        for c in candidates {
            let Some(job) = self.state.jobs.get(&c) else {
                continue;
            };
            if job.state == JobState::Queued
                && job.cancel.is_none()
                && job.targets.iter().all(|t| first(t) == Some(c))
                && !job.targets.iter().any(|t| self.verifying(t))
            {
                start.push(c);
            }
        }
        for id in start {
            self.with_job(id, |d, job| d.start_attempt(job, 1));
        }
    }
}
