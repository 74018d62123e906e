//! `decide`: from state and one input, the facts (events) that follow. Pure; never
//! produces an event that `evolve` cannot apply.

use std::collections::BTreeSet;

use recman_events::{
    Event, EventBody, JobId, Outcome, Report, SnapshotRequest, Stage, StepDetail, StepError, TargetId,
};

use crate::evolve::apply_job;
use crate::policy::CoreConfig;
use crate::rng::Rng;
use crate::state::{Job, JobState, State, StepStatus};

/// After this many thaw failures or thaw-stage timeouts the job fails loudly.
pub const MAX_THAW_TRIES: u32 = 8;

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
    Cancel {
        job: JobId,
        reason: String,
    },
}

/// The answer to the sender of a request or a cancel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Accepted { job: JobId, existing: bool },
    Rejected { code: &'static str, message: String },
    None,
}

/// Deliberately broken decisions, to prove the simulator catches them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// After a failure, move on without thawing what was frozen.
    SkipCompensatingThaw,
    /// Never force the thaw at the freeze limit.
    NoForcedThaw,
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
    decide_with(state, cfg, rng, input, now_ms, None)
}

/// `decide` with an optional deliberate bug (simulator self-test only).
pub fn decide_with(
    state: &State,
    cfg: &CoreConfig,
    rng: &mut Rng,
    input: &Input,
    now_ms: u64,
    mutation: Option<Mutation>,
) -> (Vec<Event>, Reply) {
    let mut d = Decider {
        state,
        cfg,
        rng,
        now: now_ms,
        mutation,
        out: Vec::new(),
        released: BTreeSet::new(),
    };
    let reply = match input {
        Input::Request { req, origin, new_job } => d.request(req, origin, *new_job),
        Input::Report(r) => {
            d.report(r);
            Reply::None
        }
        Input::TimerFired => {
            d.timer();
            Reply::None
        }
        Input::Cancel { job, reason } => d.cancel(*job, reason),
    };
    d.promote();
    (d.out, reply)
}

struct Decider<'a> {
    state: &'a State,
    cfg: &'a CoreConfig,
    rng: &'a mut Rng,
    now: u64,
    mutation: Option<Mutation>,
    out: Vec<Event>,
    /// Jobs that ended in this decision (their queue places are free).
    released: BTreeSet<JobId>,
}

impl Decider<'_> {
    fn emit(&mut self, job: &mut Job, body: EventBody) {
        let ev = Event {
            at_ms: self.now,
            job: job.id,
            body,
        };
        apply_job(job, &ev);
        self.out.push(ev);
    }

    /// Runs `f` on a scratch copy of the job, then the follow-ups.
    fn with_job(&mut self, id: JobId, f: impl FnOnce(&mut Self, &mut Job)) {
        let Some(job) = self.state.jobs.get(&id) else {
            return;
        };
        let mut job = job.clone();
        f(self, &mut job);
        self.advance(&mut job);
        if job.state.is_terminal() {
            self.released.insert(id);
        }
    }

    fn request(&mut self, req: &SnapshotRequest, origin: &str, new_job: JobId) -> Reply {
        if let Some(&job) = self.state.requests.get(&req.request_id) {
            // The same request again is the same job; the same id with other
            // targets or kind is a different request, refused (not silently
            // answered with a job that does not cover it).
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
        if let Err(e) = req.validate() {
            return Reply::Rejected {
                code: "invalid_request",
                message: e.to_string(),
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
        let mut behind: Vec<JobId> = req
            .targets
            .iter()
            .filter_map(|t| self.state.queues.get(t).and_then(|q| q.front().copied()))
            .collect();
        behind.sort();
        behind.dedup();
        if behind.is_empty() {
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
        let timeout = if stage == Stage::Thaw {
            p.thaw_try_ms()
        } else {
            p.stage_timeout_ms
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
                        self.emit(
                            job,
                            EventBody::Completed {
                                attempt,
                                snapshot,
                                freeze_window_us,
                            },
                        );
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
        if r.stage == Stage::Prune {
            self.prune_report(r);
            return;
        }
        let Some(job) = self.state.jobs.get(&r.job) else {
            return;
        };
        if r.attempt != job.attempt || job.state.is_terminal() && r.stage != Stage::Snapshot {
            return;
        }
        self.with_job(r.job, |d, job| {
            d.check_thaw_by(job);
            match r.stage {
                Stage::Freeze => d.freeze_report(job, r),
                Stage::Snapshot => d.snapshot_report(job, r),
                Stage::Thaw => d.thaw_report(job, r),
                Stage::FlushLogs => d.flush_report(job, r),
                Stage::Queue | Stage::Prune => {}
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

    fn snapshot_report(&mut self, job: &mut Job, r: &Report) {
        let Some(first) = job.targets.first().cloned() else {
            return;
        };
        if job.state == JobState::Snapshotting && job.snapshot_status == StepStatus::Pending {
            match &r.outcome {
                Outcome::Ok {
                    detail: d @ StepDetail::Snapshot(_),
                } => self.step_ok(job, r, Stage::Snapshot, &first, d.clone()),
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
        } else if job.snapshot_status != StepStatus::Idle && job.snapshot.is_none() {
            // A late snapshot (after a forced thaw or a failure): record it; the
            // attempt has failed already.
            if let Outcome::Ok {
                detail: d @ StepDetail::Snapshot(_),
            } = &r.outcome
            {
                self.step_ok(job, r, Stage::Snapshot, &first, d.clone());
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

    fn prune_report(&mut self, r: &Report) {
        let Outcome::Ok {
            detail: StepDetail::Pruned { deleted },
        } = &r.outcome
        else {
            return;
        };
        for t in &r.targets {
            let Some(cat) = self.state.catalog.get(t) else {
                continue;
            };
            for name in deleted {
                let mut seen = BTreeSet::new();
                for e in cat.iter().filter(|e| &e.name == name) {
                    if seen.insert(e.job) && !self.out.iter().any(|x| matches!(&x.body, EventBody::SnapshotDeleted { target, name: n } if target == t && n == name && x.job == e.job)) {
                        self.out.push(Event {
                            at_ms: self.now,
                            job: e.job,
                            body: EventBody::SnapshotDeleted {
                                target: t.clone(),
                                name: name.clone(),
                            },
                        });
                    }
                }
            }
        }
    }

    /// Starts every queued job that became first in all its queues.
    fn promote(&mut self) {
        if self.released.is_empty() {
            return;
        }
        let released = std::mem::take(&mut self.released);
        let first = |t: &TargetId| -> Option<JobId> {
            self.state
                .queues
                .get(t)
                .and_then(|q| q.iter().find(|j| !released.contains(j)).copied())
        };
        let mut candidates = BTreeSet::new();
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
            {
                start.push(c);
            }
        }
        for id in start {
            self.with_job(id, |d, job| d.start_attempt(job, 1));
        }
    }
}
