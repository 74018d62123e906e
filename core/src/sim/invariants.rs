//! The invariants the simulator checks, each in one place under the name a
//! violation carries: `every_freeze_thawed`, `freeze_window`,
//! `one_job_per_target`, `one_snapshot_per_attempt`, `snapshot_name`,
//! `consistent_snapshot`, `request_idempotent` (and `request_accepted`),
//! `no_request_lost`, `replay_exact`, `timer_progress`, and with
//! `--faults none` `engine_thaws_before_watchdog`.

use std::collections::HashMap;

use recman_events::{Command, EventBody, JobId, TargetId};

use super::scheduler::T0;
use super::world::{expected_name, Key};
use super::{Checked, Faults, Sim, Violation, FREEZE_LIMIT};
use crate::{Core, Reply};

/// What the checks keep track of besides the engine and the world.
#[derive(Default)]
pub(super) struct Checks {
    /// When each attempt first froze a target (the freeze window starts there).
    pub first_freeze: HashMap<Key, u64>,
    /// The job that holds each target, from `AttemptStarted` to its end.
    pub holder: HashMap<TargetId, JobId>,
    /// Commands and reports of each job, for the trace of a violation.
    pub messages: HashMap<JobId, Vec<String>>,
    /// Requests answered with a job, and jobs finished.
    pub accepted: usize,
    pub finished: usize,
}

impl Sim {
    /// A broken invariant, with the events and messages of `job`.
    fn violation(&self, invariant: &'static str, job: Option<JobId>, detail: String) -> Box<Violation> {
        let mut trace = Vec::new();
        if let Some(j) = job {
            for e in self.engine.log.iter().filter(|e| e.job == j) {
                trace.push(format!("{:>8} event {:?}", e.at_ms - T0, e.body));
            }
            if let Some(m) = self.checks.messages.get(&j) {
                trace.push("-- messages --".into());
                trace.extend(m.iter().cloned());
            }
        }
        Box::new(Violation {
            seed: self.cfg.seed,
            invariant,
            detail,
            at_ms: self.sched.elapsed(),
            job,
            trace,
        })
    }

    /// `request_idempotent`: a request is answered with one job, however often
    /// it is sent; `request_accepted`: a valid request is never refused.
    pub(super) fn check_request_reply(&mut self, i: usize, reply: Reply) -> Checked<()> {
        match reply {
            Reply::Accepted { job, existing } => match self.clients[i].job {
                None if !existing => {
                    self.clients[i].job = Some(job);
                    self.checks.accepted += 1;
                }
                Some(j) if j == job && existing => {}
                None if existing => {
                    // Accepted before, but that reply never arrived.
                    self.clients[i].job = Some(job);
                    self.checks.accepted += 1;
                }
                prev => {
                    return Err(self.violation(
                        "request_idempotent",
                        Some(job),
                        format!("request r{i} answered job {job} existing={existing}, before {prev:?}"),
                    ))
                }
            },
            other => {
                return Err(self.violation("request_accepted", None, format!("request r{i}: {other:?}")))
            }
        }
        Ok(())
    }

    /// `timer_progress`: a due timer, once handled, is no longer due.
    pub(super) fn check_timer_progress(&self) -> Checked<()> {
        let now = self.sched.now;
        if self.engine.up && self.engine.core.next_deadline().is_some_and(|d| d <= now) {
            let job = self.engine.core.state().deadlines.first().map(|(_, j)| *j);
            let d = "a due timer changed nothing: the engine would spin".to_string();
            return Err(self.violation("timer_progress", job, d));
        }
        Ok(())
    }

    /// `snapshot_name`: the engine names each attempt's snapshot from job and attempt.
    pub(super) fn check_snapshot_name(&self, cmd: &Command, name: &str) -> Checked<()> {
        let expected = expected_name(cmd);
        if name != expected {
            return Err(self.violation(
                "snapshot_name",
                Some(cmd.job),
                format!("snapshot command named {name:?}, expected {expected}"),
            ));
        }
        Ok(())
    }

    /// `one_snapshot_per_attempt`: the array cut `n` snapshots for this attempt.
    pub(super) fn check_one_snapshot(&self, cmd: &Command, n: u32) -> Checked<()> {
        if n > 1 {
            return Err(self.violation(
                "one_snapshot_per_attempt",
                Some(cmd.job),
                format!("attempt {} took {n} snapshots", cmd.attempt),
            ));
        }
        Ok(())
    }

    /// `freeze_window`: an attempt's writers were frozen `window` ms, at most the limit.
    pub(super) fn check_freeze_window(&self, key: Key, window: u64) -> Checked<()> {
        if window > FREEZE_LIMIT {
            return Err(self.violation(
                "freeze_window",
                Some(key.0),
                format!(
                    "attempt {} kept writers frozen {window} ms > limit {FREEZE_LIMIT} ms",
                    key.1
                ),
            ));
        }
        Ok(())
    }

    /// `freeze_window`, for targets still frozen: none for longer than the limit.
    pub(super) fn check_frozen_windows(&self) -> Checked<()> {
        let now = self.sched.now;
        for tw in &self.world.targets {
            if let Some(key) = tw.frozen {
                let first = self.checks.first_freeze.get(&key).copied().unwrap_or(now);
                if now - first > FREEZE_LIMIT {
                    return Err(self.violation(
                        "freeze_window",
                        Some(key.0),
                        format!("still frozen {} ms after the first freeze", now - first),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `engine_thaws_before_watchdog`: without lost messages or crashes the
    /// engine's own thaw (layer 1) always comes before the watchdog (layer 2).
    pub(super) fn check_engine_thaws_before_watchdog(&self, t: usize, key: Key) -> Checked<()> {
        if self.cfg.faults == Faults::None {
            let d = format!(
                "{} thawed by the watchdog: the engine did not thaw in time",
                self.world.target_ids[t]
            );
            return Err(self.violation("engine_thaws_before_watchdog", Some(key.0), d));
        }
        Ok(())
    }

    /// `replay_exact`: the state rebuilt from the log equals the live state.
    pub(super) fn check_replay(&self) -> Checked<()> {
        let mut core = Core::new(self.engine.cfg.clone());
        for e in &self.engine.log {
            core.apply(e);
        }
        if core.state() != self.engine.core.state() {
            let job = self
                .engine
                .core
                .state()
                .jobs
                .iter()
                .find(|(id, j)| core.state().jobs.get(id) != Some(j))
                .map(|(id, _)| *id);
            return Err(self.violation(
                "replay_exact",
                job,
                "state rebuilt from the log differs from the live state".into(),
            ));
        }
        Ok(())
    }

    /// Invariants at each event the engine makes durable: `one_job_per_target`,
    /// `every_freeze_thawed` (a job moves on only with its targets thawed, or
    /// fails loudly) and `consistent_snapshot`.
    pub(super) fn check_event(&mut self, k: usize) -> Checked<()> {
        let e = &self.engine.log[k];
        let job_id = e.job;
        let Some(job) = self.engine.core.state().jobs.get(&job_id) else {
            return Ok(());
        };
        let targets = job.targets.clone();
        let attempt = job.attempt;
        match &e.body {
            EventBody::AttemptStarted { .. } => {
                for t in &targets {
                    if let Some(other) = self.checks.holder.get(t) {
                        if *other != job_id {
                            let d = format!("job {job_id} started on {t} while job {other} holds it");
                            return Err(self.violation("one_job_per_target", Some(job_id), d));
                        }
                    }
                    self.checks.holder.insert(t.clone(), job_id);
                }
            }
            EventBody::RetryScheduled { .. }
            | EventBody::Completed { .. }
            | EventBody::Failed { .. }
            | EventBody::Cancelled => {
                let loud =
                    matches!(&e.body, EventBody::Failed { reason, .. } if reason.starts_with("thaw_failed"));
                let kind = e.body.kind();
                if !loud {
                    for t in &targets {
                        let i = self.world.target_index[t];
                        if self.world.targets[i].frozen == Some((job_id, attempt)) {
                            let d = format!(
                                "job moved on ({kind}) while {t} is still frozen by its attempt {attempt}"
                            );
                            return Err(self.violation("every_freeze_thawed", Some(job_id), d));
                        }
                    }
                }
                if let EventBody::Completed { attempt, .. } = &e.body {
                    if self.world.provider.consistent.get(&(job_id, *attempt)) != Some(&true) {
                        let d = format!("completed with attempt {attempt}'s snapshot, not cut while every writer was frozen");
                        return Err(self.violation("consistent_snapshot", Some(job_id), d));
                    }
                }
                if e.body.is_terminal() {
                    self.checks.finished += 1;
                    for t in &targets {
                        if self.checks.holder.get(t) == Some(&job_id) {
                            self.checks.holder.remove(t);
                        }
                    }
                    match &e.body {
                        EventBody::Completed { .. } => self.summary.completed += 1,
                        EventBody::Failed { .. } => self.summary.failed += 1,
                        _ => self.summary.cancelled += 1,
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// At quiescence: `every_freeze_thawed` (nothing still frozen),
    /// `no_request_lost` (every request accepted, every job finished) and a
    /// last `replay_exact`.
    pub(super) fn finish(&mut self) -> Checked<()> {
        self.summary.virtual_ms = self.sched.elapsed();
        self.summary.events = self.engine.log.len();
        for (t, tw) in self.world.targets.iter().enumerate() {
            if let Some(key) = tw.frozen {
                let d = format!("{} still frozen at the end", self.world.target_ids[t]);
                return Err(self.violation("every_freeze_thawed", Some(key.0), d));
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            let Some(job) = c.job else {
                return Err(self.violation("no_request_lost", None, format!("request r{i} never accepted")));
            };
            match self.engine.core.state().jobs.get(&job) {
                Some(j) if j.state.is_terminal() => {}
                other => {
                    let d = format!(
                        "job of request r{i} not finished at quiescence: {:?}",
                        other.map(|j| j.state)
                    );
                    return Err(self.violation("no_request_lost", Some(job), d));
                }
            }
        }
        if self
            .engine
            .core
            .state()
            .jobs
            .values()
            .any(|j| !j.state.is_terminal())
        {
            return Err(self.violation("no_request_lost", None, "a job is not finished".into()));
        }
        self.check_replay()
    }
}
