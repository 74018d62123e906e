//! The invariants the simulator checks, each in one place under the name a
//! violation carries (`INVARIANTS` lists them with what they promise).
//! `core/tests/sim_checks.rs` shows each one fire under a deliberate mutation.

use std::collections::{HashMap, HashSet};

use recman_events::{Command, Event, EventBody, JobId, Stage, StepDetail, TargetId};

use super::world::{expected_name, Frozen, Key, ADOPT_POLL_MS};
use super::{Checked, Faults, Sim, Violation, FREEZE_LIMIT};
use crate::Reply;

/// Every invariant the simulator checks, with what it promises.
pub const INVARIANTS: &[(&str, &str)] = &[
    (
        "every_freeze_thawed",
        "a job moves on only with its targets thawed (or fails loudly); nothing is frozen at the end",
    ),
    (
        "thawed_within_limit",
        "no target stays frozen longer than its freeze limit, even when the worker that froze it dies \
         (only a host with no live worker at the deadline waits for its first worker to start)",
    ),
    (
        "freeze_window",
        "the freeze window recorded for a thaw is the real one, whichever process thawed \
         (after a thaw cut short by a crash, never a shorter one)",
    ),
    ("one_job_per_target", "a target is held by one job at a time"),
    (
        "one_freeze_per_attempt",
        "an attempt freezes each target at most once: the writer's freeze runs once per attempt, whichever \
         process of the host gets the command",
    ),
    (
        "no_freeze_after_thaw",
        "no freeze lands on a target after a thaw of its attempt ran there",
    ),
    (
        "thaw_own_attempt",
        "a thaw (or watchdog) only ends the freeze of its own job attempt",
    ),
    ("one_snapshot_per_attempt", "an attempt cuts at most one snapshot"),
    (
        "snapshot_name",
        "snapshot names are the engine's fleet-unique names, at most 31 characters, one per attempt",
    ),
    (
        "consistent_snapshot",
        "a completed job's snapshot was cut while every member stayed frozen by its attempt",
    ),
    (
        "no_snapshot_after_thaw",
        "no snapshot is asked for or started after its attempt's thaw deadline",
    ),
    (
        "no_unrecorded_snapshot",
        "at the end, every snapshot recman took is in the catalog (late ones and failed attempts' are deleted)",
    ),
    (
        "catalog_matches_storage",
        "at the end, every snapshot in the catalog exists on the storage",
    ),
    (
        "durable_before_send",
        "no command leaves the engine before the event that caused it is durable",
    ),
    (
        "request_idempotent",
        "a request id is answered with one job, however often it is sent",
    ),
    ("request_accepted", "a valid request is never refused"),
    ("no_request_lost", "every accepted request's job finishes"),
    (
        "replay_exact",
        "the state rebuilt from the log equals the live state, and an independent fold of the log agrees",
    ),
    (
        "checkpoint_exact",
        "an engine that starts from its newest checkpoint and the log after it has the state (and next \
         timer) of a fold of the whole log",
    ),
    ("timer_progress", "a due timer, once handled, is no longer due"),
    (
        "no_slot_fires_twice",
        "a schedule's slot fires at most once, across restarts and crashes in the middle of a firing",
    ),
    (
        "engine_thaws_before_watchdog",
        "without lost messages or crashes the engine's thaw always comes before the watchdog's",
    ),
    (
        "verify_outside_freeze",
        "a verification never overlaps a freeze of the same target (neither starts while the other runs)",
    ),
    (
        "newest_verified_kept",
        "retention never asks to delete a target's newest verified restore point",
    ),
    (
        "reconcile_catalog_agrees",
        "once a reconcile ended, the catalog lists no restore point the storage had lost before it started \
         (but one being deleted or verified, which the next reconcile looks at again)",
    ),
    (
        "reconcile_vanished_held",
        "a reconcile never declares vanished a snapshot the storage still holds",
    ),
    (
        "recovery_outside_freeze",
        "no recovery step that touches the live data runs while the target is frozen or a job holds it",
    ),
    (
        "approved_before_restore",
        "no step of an in-place restore of a target with require_approval runs without an approval, durable \
         in the log before its expiry, by an identity other than its requester's",
    ),
    (
        "safety_before_restore",
        "an in-place restore runs only once its safety snapshot is durable, and that snapshot holds the data \
         as it was when the application stopped",
    ),
    ("mounted_never_pruned", "a prune never deletes a mounted restore point"),
    (
        "recovery_outcome_true",
        "what the log says of a target's live data when a restore ends is true, and no application is \
         started on half-restored data",
    ),
    (
        "verify_cleanup",
        "a verify worker that died leaves no clone behind once it is up again (cleanup on start)",
    ),
    (
        "appends_by_leader",
        "every append in the log was made by the engine holding the leadership, under its epoch, and the \
         log's epochs never go back: a deposed engine's appends are refused (two engines)",
    ),
    (
        "one_leader_per_epoch",
        "at most one engine acts (appends or sends a command) as the leader of any epoch",
    ),
];

/// What the checks keep track of besides the engine and the world.
#[derive(Default)]
pub(super) struct Checks {
    /// The job that holds each target, from `AttemptStarted` to its end.
    pub holder: HashMap<TargetId, JobId>,
    /// Requests answered with a job, and jobs finished.
    pub accepted: usize,
    pub finished: usize,
    /// What happened to each attempt's freeze of each target (`At`): one
    /// entry per (target, attempt), not one per fact, to stay small.
    pub at: HashMap<(usize, Key), At>,
    /// Stages whose cause is in the durable log: per job, its attempts (or
    /// runs) with a bit per stage.
    pub durable: HashMap<JobId, Vec<(u32, u32)>>,
    /// Deletes whose cause is in the durable log.
    pub durable_prunes: HashSet<(JobId, TargetId, String)>,
    /// Reconcile runs whose `ReconcileStarted` is in the durable log.
    pub durable_reconciles: HashSet<(TargetId, u32)>,
    /// The attempt each snapshot name was given to, by a hash of the name
    /// (two names with one hash would be a false alarm, never a miss).
    pub names: HashMap<u64, Key>,
    /// Schedule slots fired (schedule, slot) and their job.
    pub slots: HashMap<(String, u64), JobId>,
    /// Jobs requested by schedules.
    pub fired: usize,
    /// How each job ended, as the state said at its end: the checks still
    /// know it once the job left the state (`state::Bounds`).
    pub ended: HashMap<JobId, Ended>,
    /// Jobs that failed loudly and were retired from `ended` (`check_replay`).
    pub loud_gone: HashSet<JobId>,
    /// Snapshot names recorded late (`LateSnapshot`), for a message.
    pub late: HashSet<String>,
}

/// What happened to one attempt's freeze of one target (bits of `flags`),
/// and the real window (ms) of that freeze once it ended.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct At {
    flags: u8,
    window: Option<u64>,
}

/// The attempt froze the target (a second freeze is a violation).
pub(super) const FROZE: u8 = 1;
/// The writer's freeze ran for it, and returned success (its window is
/// known exactly; a failed one's is the time since it began).
pub(super) const RAN: u8 = 2;
pub(super) const OK: u8 = 4;
/// A thaw (command or watchdog) of the attempt ran on the target.
pub(super) const THAWED: u8 = 8;
/// Its holder died during its thaw (landed or not): a later thaw records
/// the window up to itself.
pub(super) const INTERRUPTED: u8 = 16;

impl Checks {
    /// Sets `flag` of attempt `key` on target `t`; false if it was set.
    pub fn mark(&mut self, t: usize, key: Key, flag: u8) -> bool {
        let a = self.at.entry((t, key)).or_default();
        let new = a.flags & flag == 0;
        a.flags |= flag;
        new
    }

    /// Whether `flag` of attempt `key` on target `t` is set.
    pub fn has(&self, t: usize, key: Key, flag: u8) -> bool {
        self.at.get(&(t, key)).is_some_and(|a| a.flags & flag != 0)
    }

    /// The real window of attempt `key`'s freeze of `t`, once it ended.
    pub fn set_window(&mut self, t: usize, key: Key, ms: u64) {
        self.at.entry((t, key)).or_default().window = Some(ms);
    }

    pub fn window(&self, t: usize, key: Key) -> Option<u64> {
        self.at.get(&(t, key)).and_then(|a| a.window)
    }

    /// Stage `stage` of `job`'s attempt (or run) `attempt` is durable.
    pub fn set_durable(&mut self, job: JobId, attempt: u32, stage: Stage) {
        let runs = self.durable.entry(job).or_default();
        let bit = 1u32 << (stage as u32);
        match runs.iter_mut().find(|(a, _)| *a == attempt) {
            Some((_, bits)) => *bits |= bit,
            None => runs.push((attempt, bit)),
        }
    }

    pub fn is_durable(&self, job: JobId, attempt: u32, stage: Stage) -> bool {
        let bit = 1u32 << (stage as u32);
        self.durable
            .get(&job)
            .is_some_and(|runs| runs.iter().any(|(a, bits)| *a == attempt && bits & bit != 0))
    }
}

/// The key of a snapshot name in `Checks::names`.
fn name_hash(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// A finished job as the state held it when it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Ended {
    pub state: crate::JobState,
    pub attempt: u32,
    pub snapshot: Option<String>,
    /// It failed loudly (`thaw_failed`): its freeze may be left to the watchdog.
    pub loud: bool,
}

impl Sim {
    /// A broken invariant, with the events and messages of `job`.
    pub(super) fn violation(
        &self,
        invariant: &'static str,
        job: Option<JobId>,
        detail: String,
    ) -> Box<Violation> {
        let trace = job.map(|j| self.traces.of(j)).unwrap_or_default();
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

    /// `timer_progress`: a due timer, once handled, is no longer due, or
    /// it took a batch of the schedules and RPOs due (`backlog` before it;
    /// `due::MAX_DUE_PER_DECISION` at a time): the engine never spins.
    pub(super) fn check_timer_progress(&self, backlog: usize) -> Checked<()> {
        let now = self.sched.now;
        let core = &self.engine.core;
        let took_some = || core.due_index().due_count(now) < backlog;
        if self.engine.up && core.next_deadline().is_some_and(|d| d <= now) && !took_some() {
            let job = core.state().deadlines.first().map(|(_, j)| *j);
            let d = format!(
                "a due timer changed nothing: the engine would spin (job timers {:?}, policy timers {:?} \
                 due {:?}, verify timers {:?})",
                crate::next_deadline(core.state()),
                core.due_index().first(),
                core.due_index().due(now, usize::MAX),
                crate::verify::next_due(core.state()),
            );
            return Err(self.violation("timer_progress", job, d));
        }
        Ok(())
    }

    /// `snapshot_name`: the engine's name for the attempt, short enough for
    /// 3PAR, and never given to two attempts.
    pub(super) fn check_snapshot_name(&mut self, cmd: &Command, name: &str) -> Checked<()> {
        let expected = expected_name(cmd);
        let key = (cmd.job, cmd.attempt);
        let why = if name != expected {
            Some(format!("snapshot command named {name:?}, expected {expected}"))
        } else if name.len() > 31 {
            Some(format!("{name:?} is longer than 3PAR's 31 characters"))
        } else {
            match self.checks.names.insert(name_hash(name), key) {
                Some(other) if other != key => Some(format!(
                    "{name:?} was given to job {} attempt {} already",
                    other.0, other.1
                )),
                _ => None,
            }
        };
        match why {
            Some(d) => Err(self.violation("snapshot_name", Some(cmd.job), d)),
            None => Ok(()),
        }
    }

    /// `one_snapshot_per_attempt`: the storage cut `n` snapshots for this attempt.
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

    /// `no_snapshot_after_thaw`, the engine's half: a snapshot command is
    /// never sent once its attempt's thaw deadline has passed.
    pub(super) fn check_snapshot_sent_in_time(&self, cmd: &Command) -> Checked<()> {
        if cmd.stage != Stage::Snapshot {
            return Ok(());
        }
        if let Some(d) = cmd.thaw_deadline_ms.filter(|d| self.sched.now >= *d) {
            let why = format!(
                "the engine sent attempt {}'s snapshot {} ms after its thaw deadline",
                cmd.attempt,
                self.sched.now - d
            );
            return Err(self.violation("no_snapshot_after_thaw", Some(cmd.job), why));
        }
        Ok(())
    }

    /// `no_snapshot_after_thaw`, the workers' half: no snapshot is started
    /// after its attempt's thaw deadline.
    pub(super) fn check_snapshot_in_time(&self, cmd: &Command) -> Checked<()> {
        if let Some(d) = cmd.thaw_deadline_ms.filter(|d| self.sched.now >= *d) {
            let why = format!(
                "attempt {}'s snapshot was started {} ms after its thaw deadline",
                cmd.attempt,
                self.sched.now - d
            );
            return Err(self.violation("no_snapshot_after_thaw", Some(cmd.job), why));
        }
        Ok(())
    }

    /// `durable_before_send`: the event that caused a command is in the log.
    pub(super) fn check_durable_before_send(&self, cmd: &Command) -> Checked<()> {
        let durable = match cmd.stage {
            Stage::Prune => cmd.targets.iter().all(|t| {
                cmd.prune.iter().all(|n| {
                    self.checks
                        .durable_prunes
                        .contains(&(cmd.job, t.clone(), n.clone()))
                })
            }),
            Stage::Reconcile => cmd
                .targets
                .first()
                .is_some_and(|t| self.checks.durable_reconciles.contains(&(t.clone(), cmd.attempt))),
            s => self.checks.is_durable(cmd.job, cmd.attempt, s),
        };
        if !durable {
            let why = format!(
                "a {} command of attempt {} left before its cause was durable",
                cmd.stage, cmd.attempt
            );
            return Err(self.violation("durable_before_send", Some(cmd.job), why));
        }
        Ok(())
    }

    /// `appends_by_leader`: process `pid` appends under `epoch`; it must
    /// hold the leadership (the lock and the log's current epoch), and the
    /// log's epochs never go back.
    pub(super) fn check_append_by_leader(&self, pid: usize, epoch: u64) -> Checked<()> {
        let (holder, current) = (self.lead.holder, self.lead.epoch);
        let last = self.lead.appends.last().map(|r| r.1);
        let why = if pid != holder || epoch != current {
            Some(format!(
                "engine {pid} appended under epoch {epoch} while engine {holder} leads epoch {current}"
            ))
        } else {
            last.filter(|l| epoch < *l)
                .map(|l| format!("engine {pid} appended under epoch {epoch} after records of epoch {l}"))
        };
        match why {
            Some(d) => Err(self.violation("appends_by_leader", None, d)),
            None => Ok(()),
        }
    }

    /// `one_leader_per_epoch`: process `pid` acts (appends, sends) as the
    /// leader of `epoch`; no other process may have acted for it.
    pub(super) fn check_one_leader(&mut self, pid: usize, epoch: u64) -> Checked<()> {
        let i = epoch as usize;
        if self.lead.acted.len() <= i {
            self.lead.acted.resize(i + 1, None);
        }
        match self.lead.acted[i] {
            Some(other) if other != pid => {
                let d = format!(
                    "engine {pid} acts as the leader of epoch {epoch}, for which engine {other} acted"
                );
                Err(self.violation("one_leader_per_epoch", None, d))
            }
            _ => {
                self.lead.acted[i] = Some(pid);
                Ok(())
            }
        }
    }

    /// `one_freeze_per_attempt`: the writer's freeze of attempt `key` is
    /// called on target `t` (by any process of its host) a second time.
    pub(super) fn check_freeze_runs_once(&mut self, t: usize, key: Key) -> Checked<()> {
        if !self.checks.mark(t, key, RAN) {
            let d = format!(
                "the writer's freeze of {} ran a second time for attempt {}",
                self.world.target_ids[t], key.1
            );
            return Err(self.violation("one_freeze_per_attempt", Some(key.0), d));
        }
        Ok(())
    }

    /// `no_freeze_after_thaw`: attempt `key`'s freeze lands on target `t`
    /// after a thaw of that attempt ran there.
    pub(super) fn check_no_freeze_after_thaw(&self, t: usize, key: Key) -> Checked<()> {
        if self.checks.has(t, key, THAWED) {
            let d = format!(
                "attempt {}'s freeze landed on {} after a thaw of that attempt ran there",
                key.1, self.world.target_ids[t]
            );
            return Err(self.violation("no_freeze_after_thaw", Some(key.0), d));
        }
        Ok(())
    }

    /// `one_freeze_per_attempt`: attempt `key` freezes target `t` again.
    pub(super) fn check_one_freeze(&mut self, t: usize, key: Key) -> Checked<()> {
        if !self.checks.mark(t, key, FROZE) {
            let d = format!(
                "attempt {} froze {} a second time",
                key.1, self.world.target_ids[t]
            );
            return Err(self.violation("one_freeze_per_attempt", Some(key.0), d));
        }
        Ok(())
    }

    /// `thaw_own_attempt`: a thaw of attempt `by` ends the freeze of `held`.
    pub(super) fn check_thaw_own(&self, t: usize, by: Key, held: Key, watchdog: bool) -> Checked<()> {
        if by != held {
            let who = if watchdog {
                "a watchdog armed for"
            } else {
                "a thaw of"
            };
            let d = format!(
                "{who} job {} attempt {} ended the freeze of {} by job {} attempt {}",
                by.0, by.1, self.world.target_ids[t], held.0, held.1
            );
            return Err(self.violation("thaw_own_attempt", Some(held.0), d));
        }
        Ok(())
    }

    /// Whether target `t`'s host had no live worker at the deadline of
    /// freeze `f` (so no watchdog could thaw it), until `until`. A worker
    /// that started and died in the same instant (before the watchdog it
    /// armed on adopting could run) does not end an outage.
    fn excused(&self, t: usize, f: &Frozen, now: u64) -> bool {
        let host = self.world.targets[t].host;
        let mut merged: Vec<(u64, Option<u64>)> = Vec::new();
        for &(s, e) in &self.world.outages[host] {
            match merged.last_mut() {
                Some(last) if last.1 == Some(s) => last.1 = e,
                _ => merged.push((s, e)),
            }
        }
        merged.iter().any(|(s, e)| {
            *s <= f.deadline + ADOPT_POLL_MS && e.is_none_or(|e| e >= f.deadline && now <= e + 1)
        })
    }

    /// `thawed_within_limit`, when freeze `f` of target `t` ends at `now`.
    pub(super) fn check_thawed_within_limit(&self, t: usize, f: Frozen, now: u64) -> Checked<()> {
        let window = now - f.since;
        if window > FREEZE_LIMIT && !self.excused(t, &f, now) {
            let d = format!(
                "attempt {} kept {} frozen {window} ms > limit {FREEZE_LIMIT} ms",
                f.key.1, self.world.target_ids[t]
            );
            return Err(self.violation("thawed_within_limit", Some(f.key.0), d));
        }
        Ok(())
    }

    /// `thawed_within_limit`, for targets still frozen.
    pub(super) fn check_frozen_windows(&self) -> Checked<()> {
        let now = self.sched.now;
        for (t, tw) in self.world.targets.iter().enumerate() {
            if let Some(f) = tw.frozen {
                if now - f.since > FREEZE_LIMIT && !self.excused(t, &f, now) {
                    return Err(self.violation(
                        "thawed_within_limit",
                        Some(f.key.0),
                        format!(
                            "{} still frozen {} ms after attempt {}'s freeze",
                            self.world.target_ids[t],
                            now - f.since,
                            f.key.1
                        ),
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

    /// `replay_exact`: the state rebuilt from the log (by the same code, with
    /// the same mutation) equals the live state, and an independently
    /// written fold of the log (`reference`) agrees with both on every job's
    /// end, attempt and snapshot, and on the catalog. The fold of the whole
    /// log is the fold to the last point where this held and of the log
    /// after it (`Sim::fold_log`): by induction, the fold of every record.
    /// The reference folds each event as it is appended; jobs it found
    /// ended and out of the state are retired from it and from `ended`
    /// (their fold can no longer change).
    pub(super) fn check_replay(&mut self) -> Checked<()> {
        let core = self
            .fold_log()
            .map_err(|d| self.violation("replay_exact", None, d))?;
        let live = self.engine.core.state();
        if core.state() != live {
            let job = live
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
        let gone = match self.reference.compare(live, &self.checks.ended) {
            Ok(gone) => gone,
            Err((job, why)) => return Err(self.violation("replay_exact", job, why)),
        };
        self.set_replay_point(&core);
        self.reference.retire(&gone);
        for j in gone {
            if self.checks.ended.remove(&j).is_some_and(|e| e.loud) {
                self.checks.loud_gone.insert(j);
            }
        }
        Ok(())
    }

    /// Invariants at each event the engine makes durable: `one_job_per_target`,
    /// `every_freeze_thawed` (a job moves on only with its targets thawed, or
    /// fails loudly), `consistent_snapshot` and `freeze_window`; and what
    /// `durable_before_send` needs.
    pub(super) fn check_event(&mut self, e: &Event) -> Checked<()> {
        let job_id = e.job;
        match &e.body {
            EventBody::StageStarted { stage, attempt, .. } => {
                self.checks.set_durable(job_id, *attempt, *stage);
            }
            EventBody::ScheduleFired { schedule, slot_ms } => {
                self.summary.fired += 1;
                self.checks.fired += 1;
                if let Some(first) = self.checks.slots.insert((schedule.clone(), *slot_ms), job_id) {
                    let d = format!(
                        "schedule {schedule} fired slot {} again (job {job_id}; first job {first})",
                        crate::schedule::rfc3339(*slot_ms)
                    );
                    return Err(self.violation("no_slot_fires_twice", Some(job_id), d));
                }
            }
            EventBody::RpoBreached { .. } => self.summary.rpo_breaches += 1,
            EventBody::LateSnapshot { snapshot, .. } => {
                self.checks.late.insert(snapshot.name.clone());
            }
            EventBody::VerifyStarted { run, .. } => {
                self.checks.set_durable(job_id, *run, Stage::Verify);
            }
            EventBody::Verified { .. } => self.summary.verified += 1,
            EventBody::ReconcileStarted { target, run, .. } => {
                self.checks.durable_reconciles.insert((target.clone(), *run));
            }
            EventBody::SnapshotVanished { .. }
            | EventBody::Reconciled { .. }
            | EventBody::ReconcileFailed { .. } => {
                let body = e.body.clone();
                return self.check_reconcile_event(job_id, &body);
            }
            EventBody::VerifyFailed { .. } => self.summary.verify_failed += 1,
            EventBody::RecoveryStepStarted { .. }
            | EventBody::RecoveryStepDone { .. }
            | EventBody::RecoveryCompleted { .. }
            | EventBody::RecoveryFailed { .. } => {
                let body = e.body.clone();
                return self.check_recovery_event(job_id, &body);
            }
            EventBody::RecoveryRequested { .. }
            | EventBody::ApprovalRequired { .. }
            | EventBody::Approved { .. } => {
                let (body, by, at) = (e.body.clone(), e.by.clone(), e.at_ms);
                self.note_approval(job_id, &body, by, at);
                return Ok(());
            }
            EventBody::PruneRequested { target, names, .. } => {
                self.check_newest_verified_kept(job_id, target, names)?;
                for n in names {
                    self.checks
                        .durable_prunes
                        .insert((job_id, target.clone(), n.clone()));
                }
            }
            _ => {}
        }
        let Some(job) = self.engine.core.state().jobs.get(&job_id) else {
            return Ok(());
        };
        let targets = job.targets.clone();
        let attempt = job.attempt;
        let ended = e.body.is_terminal().then(|| Ended {
            state: job.state,
            attempt: job.attempt,
            snapshot: job.snapshot.as_ref().map(|s| s.name.clone()),
            loud: job
                .outcome
                .as_deref()
                .is_some_and(|o| o.starts_with("thaw_failed")),
        });
        if let Some(ended) = ended {
            self.checks.ended.insert(job_id, ended);
        }
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
            EventBody::StepSucceeded {
                stage: Stage::Thaw,
                attempt,
                target,
                detail: StepDetail::Thawed { freeze_window_us, .. },
                ..
            }
            | EventBody::WatchdogThawed {
                attempt,
                target,
                freeze_window_us,
                ..
            } => {
                let (attempt, window) = (*attempt, *freeze_window_us);
                let target = target.clone();
                self.check_recorded_window(job_id, attempt, &target, window)?;
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
                        if self.world.targets[i].frozen.map(|f| f.key) == Some((job_id, attempt)) {
                            let d = format!(
                                "job moved on ({kind}) while {t} is still frozen by its attempt {attempt}"
                            );
                            return Err(self.violation("every_freeze_thawed", Some(job_id), d));
                        }
                    }
                }
                if let EventBody::Completed { attempt, .. } = &e.body {
                    if self.world.storage.consistent.get(&(job_id, *attempt)) != Some(&true) {
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

    /// `freeze_window`: a recorded thaw of an attempt whose freeze returned
    /// success carries the real window of that freeze (or, after a thaw cut
    /// short by a crash, a longer one), and one whose freeze never ran here
    /// 0. A failed freeze's window is unknown to the worker (it may not
    /// have landed): it reports the time since the freeze began, an upper
    /// bound, not checked.
    fn check_recorded_window(
        &self,
        job: JobId,
        attempt: u32,
        target: &TargetId,
        recorded_us: u64,
    ) -> Checked<()> {
        let Some(&t) = self.world.target_index.get(target) else {
            return Ok(());
        };
        let key = (job, attempt);
        if self.checks.has(t, key, RAN) && !self.checks.has(t, key, OK) {
            return Ok(());
        }
        let real_us = self.checks.window(t, key).map_or(0, |ms| ms * 1_000);
        // After a thaw cut short by its process's death nobody knows
        // whether it landed: the next thaw's window is an upper bound,
        // never shorter than the real one.
        let interrupted = self.checks.has(t, key, INTERRUPTED);
        if recorded_us != real_us && !(interrupted && recorded_us > real_us) {
            let d = format!(
                "the thaw of {target} by attempt {attempt} was recorded with a {recorded_us} µs freeze window; it was {real_us} µs"
            );
            return Err(self.violation("freeze_window", Some(job), d));
        }
        Ok(())
    }

    /// At quiescence: `every_freeze_thawed` (nothing still frozen),
    /// `no_request_lost` (every request accepted, every job finished), a
    /// last `replay_exact`, and the storage against the catalog
    /// (`catalog_matches_storage`, `no_unrecorded_snapshot`).
    pub(super) fn finish(&mut self) -> Checked<()> {
        self.summary.virtual_ms = self.sched.elapsed();
        self.summary.events = self.log_len;
        for (t, tw) in self.world.targets.iter().enumerate() {
            if let Some(f) = tw.frozen {
                let d = format!("{} still frozen at the end", self.world.target_ids[t]);
                return Err(self.violation("every_freeze_thawed", Some(f.key.0), d));
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            let Some(job) = c.job else {
                return Err(self.violation("no_request_lost", None, format!("request r{i} never accepted")));
            };
            match self.engine.core.state().jobs.get(&job) {
                Some(j) if j.state.is_terminal() => {}
                // It left the state: it ended (`replay_exact` checks how).
                None if self.checks.ended.contains_key(&job) || self.reference.is_gone(&job) => {}
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
        self.check_recoveries_ended()?;
        self.check_replay()?;
        let state = self.engine.core.state();
        for (t, entries) in &state.catalog {
            let i = self.world.target_index[t];
            for e in entries {
                if !self.world.storage.snapshots.contains_key(&(i, e.name.clone())) {
                    let d = format!("the catalog lists {} of {t}, which is not on the storage", e.name);
                    return Err(self.violation("catalog_matches_storage", Some(e.job), d));
                }
            }
        }
        let listed: HashSet<(&str, &str)> = state
            .catalog
            .iter()
            .flat_map(|(t, c)| c.iter().map(move |e| (t.as_str(), e.name.as_str())))
            .collect();
        let mut stray: Vec<(&String, Key)> = self
            .world
            .storage
            .snapshots
            .iter()
            .filter_map(|((t, n), s)| s.owner.map(|k| (*t, n, k)))
            .filter(|(t, n, _)| !listed.contains(&(self.world.target_ids[*t].as_str(), n.as_str())))
            .filter(|(_, _, k)| !self.stray_safety(k.0))
            .map(|(_, n, k)| (n, k))
            .collect();
        stray.sort();
        if let Some((name, key)) = stray.first() {
            let late = self.checks.late.contains(*name);
            let d = format!(
                "{name} (attempt {}) is on the storage and not in the catalog ({}; {} such)",
                key.1,
                if late {
                    "recorded late, never deleted"
                } else {
                    "in no event"
                },
                stray.len()
            );
            return Err(self.violation("no_unrecorded_snapshot", Some(key.0), d));
        }
        Ok(())
    }
}
