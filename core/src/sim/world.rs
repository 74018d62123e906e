//! The simulated world: targets that really freeze and thaw, the storage of
//! the arrays, hosts whose worker processes follow the worker core's rules
//! (`crate::worker`), with latencies, failures, crashes and watchdogs.
//!
//! What is shared and what is not, as in the runtime:
//! - the host's freeze state of each target (`TargetMemory`) is shared by
//!   the worker processes of its host and survives their crashes (the
//!   runtime keeps it in the state directory);
//! - a process's own memory (answered commands, deleted snapshot names) and
//!   its watchdog timers die with it; a live process of the host takes over
//!   the holds of a dead one (`worker::adoptable`) within `ADOPT_POLL_MS`,
//!   and a process that starts takes over at once.
//!
//! Steps: a writer step (freeze, thaw, flush) and a prune act at once when a
//! process takes the command and report after a latency; a snapshot takes
//! its name on the storage at once and is cut over its latency: it is
//! consistent only if every member stays frozen by its attempt throughout.
//! A process that dies before reporting leaves the command unacknowledged:
//! it goes back to its queue and is delivered again (at least once).

use std::collections::HashMap;

use recman_events::{
    snapshot_name, Command, Outcome, PoolName, SnapshotInfo, SnapshotKind, Stage, StepDetail, StepError,
    TargetId, WorkerId, SCHEMA_VERSION,
};

use super::scheduler::Ev;
use super::{Checked, Sim, FREEZE_LIMIT};
use crate::worker::{
    self, AttemptKey, Existing, Hold, Plan, Process, Recent, SnapshotPlan, TargetMemory, ThawPlan, ThawedBy,
};
use crate::Destination;

/// One attempt of one job.
pub type Key = AttemptKey;

/// How soon a live process of a host takes over the holds of a dead one
/// (the runtime polls the state directory this often).
pub const ADOPT_POLL_MS: u64 = 200;

/// A freeze that holds a target's writes now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frozen {
    pub key: Key,
    /// When the writer froze.
    pub since: u64,
    /// When its watchdog must thaw it at the latest (the hold's deadline).
    pub deadline: u64,
}

/// One target as it really is.
pub struct TargetWorld {
    pub frozen: Option<Frozen>,
    /// Bumped at every freeze and thaw: a snapshot whose members kept their
    /// generation over its cut saw one unbroken freeze.
    pub generation: u64,
    /// The host (pool) whose workers run its writer.
    pub host: usize,
}

/// One worker process (and its later incarnations, after a crash).
pub struct Worker {
    pub id: WorkerId,
    pub pool: usize,
    pub alive: bool,
    pub incarnation: u32,
    /// Outcomes of the commands this process answered (lost on a crash).
    pub recent: Recent<Outcome>,
    /// Snapshot names this process deleted (lost on a crash).
    pub pruned: Recent<()>,
    /// The freeze state under `worker::Mutation::FreezeStatePerProcess`
    /// (per target; lost on a crash).
    pub own_memory: HashMap<usize, TargetMemory>,
    /// Commands taken and not yet acknowledged (reported), with where they
    /// came from: they go back there if the process dies.
    pub inflight: HashMap<u64, (Destination, Command)>,
}

impl Worker {
    pub fn new(id: WorkerId, pool: usize) -> Worker {
        Worker {
            id,
            pool,
            alive: true,
            incarnation: 0,
            recent: Recent::default(),
            pruned: Recent::default(),
            own_memory: HashMap::new(),
            inflight: HashMap::new(),
        }
    }
}

/// One snapshot on the storage.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The attempt that took it; `None`: not recman's (a name collision).
    pub owner: Option<Key>,
    /// When its cut is complete (a command that finds it reports it then).
    pub ends_at: u64,
}

/// The arrays' storage: snapshots by target (a group's snapshot is one
/// copy per member, as a 3PAR volume set's) and name, and how each
/// attempt's was cut.
#[derive(Default)]
pub struct Storage {
    pub snapshots: HashMap<(usize, String), Stored>,
    /// Snapshots cut per attempt (one, however often the command came).
    pub created: HashMap<Key, u32>,
    /// Whether every member stayed frozen by that attempt over the cut.
    pub consistent: HashMap<Key, bool>,
}

/// Targets, the storage, the worker processes and their pools.
pub struct World {
    pub target_ids: Vec<TargetId>,
    pub target_index: HashMap<TargetId, usize>,
    pub targets: Vec<TargetWorld>,
    /// The host's freeze state of each target (shared by its host's
    /// processes, surviving their crashes).
    pub memory: Vec<TargetMemory>,
    pub storage: Storage,
    /// Live data, aside copies, mounts and the host's recovery records.
    pub recovery: super::recovery::RecoveryWorld,
    pub workers: Vec<Worker>,
    pub worker_index: HashMap<WorkerId, usize>,
    /// Each pool's name and workers; `host.*` pools are the hosts.
    pub pools: Vec<(PoolName, Vec<usize>)>,
    pub pool_index: HashMap<PoolName, usize>,
    /// Targets whose writer each pool runs.
    pub pool_targets: Vec<Vec<usize>>,
    /// Commands waiting in each pool's queue for a live worker.
    pub backlog: Vec<Vec<Command>>,
    /// Commands waiting in each worker's own queue while it is down.
    pub own_queue: Vec<Vec<Command>>,
    /// Per pool: when its last process died with none left (an outage), and
    /// when it ended; for `thawed_within_limit`.
    pub outages: Vec<Vec<(u64, Option<u64>)>>,
    /// Per array (pool): until when it is slower than the freeze limit.
    pub slow_until: Vec<u64>,
    /// Verifications running and clones left behind.
    pub verify: super::verify::VerifyWorld,
    /// Restore points the storage lost behind recman's back, and when.
    pub lost: HashMap<(usize, String), u64>,
    next_step: u64,
}

impl World {
    pub fn new(
        target_ids: Vec<TargetId>,
        target_hosts: Vec<usize>,
        workers: Vec<Worker>,
        pools: Vec<(PoolName, Vec<usize>)>,
    ) -> World {
        let target_index = target_ids
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, t)| (t, i))
            .collect();
        let worker_index = workers
            .iter()
            .enumerate()
            .map(|(i, w)| (w.id.clone(), i))
            .collect();
        let pool_index = pools.iter().enumerate().map(|(i, p)| (p.0.clone(), i)).collect();
        let mut pool_targets = vec![Vec::new(); pools.len()];
        for (t, h) in target_hosts.iter().enumerate() {
            pool_targets[*h].push(t);
        }
        World {
            targets: target_hosts
                .iter()
                .map(|h| TargetWorld {
                    frozen: None,
                    generation: 0,
                    host: *h,
                })
                .collect(),
            memory: target_ids.iter().map(|_| TargetMemory::default()).collect(),
            target_ids,
            target_index,
            storage: Storage::default(),
            recovery: Default::default(),
            own_queue: vec![Vec::new(); workers.len()],
            workers,
            worker_index,
            backlog: vec![Vec::new(); pools.len()],
            outages: vec![Vec::new(); pools.len()],
            slow_until: vec![0; pools.len()],
            pool_targets,
            pools,
            pool_index,
            verify: Default::default(),
            lost: HashMap::new(),
            next_step: 0,
        }
    }

    /// The process `w` is now.
    pub fn process(&self, w: usize) -> Process {
        Process {
            worker: self.workers[w].id.clone(),
            token: ((w as u64) << 32) | u64::from(self.workers[w].incarnation),
        }
    }

    /// Whether `p` is a live process (its worker up, in that incarnation).
    pub fn alive(&self, p: &Process) -> bool {
        let w = (p.token >> 32) as usize;
        self.workers
            .get(w)
            .is_some_and(|x| x.alive && u64::from(x.incarnation) == (p.token & 0xffff_ffff))
    }

    pub fn any_alive(&self, pool: usize) -> bool {
        self.pools[pool].1.iter().any(|w| self.workers[*w].alive)
    }
}

impl Sim {
    /// The freeze state worker `w` sees for target `t`: its host's, or its
    /// own under `FreezeStatePerProcess`.
    fn mem(&mut self, w: usize, t: usize) -> &mut TargetMemory {
        if self.cfg.worker_mutation == Some(worker::Mutation::FreezeStatePerProcess) {
            return self.world.workers[w].own_memory.entry(t).or_default();
        }
        &mut self.world.memory[t]
    }

    /// Worker `w` takes `cmd` from `from` (its queue or its pool): answers a
    /// redelivery from its memory, or runs the step as the worker core's
    /// rules say; the report goes out after the step's latency.
    pub(super) fn take(&mut self, w: usize, from: Destination, cmd: Command) -> Checked<()> {
        self.world.next_step += 1;
        let step = self.world.next_step;
        self.world.workers[w].inflight.insert(step, (from, cmd.clone()));
        let inc = self.world.workers[w].incarnation;
        if let Some(outcome) = self.world.workers[w].recent.get(&cmd.message_id).cloned() {
            let lat = self.rng.range(1, 5);
            self.push(self.sched.now + lat, Ev::Reported(w, inc, step, outcome));
            return Ok(());
        }
        let (outcome, lat) = match cmd.stage {
            Stage::Freeze => self.freeze(w, &cmd)?,
            Stage::Thaw => (self.thaw(w, &cmd)?, self.rng.range(2, 40)),
            Stage::Snapshot => self.snapshot(w, &cmd)?,
            Stage::FlushLogs => {
                let outcome = match self.random_failure(0.01, 0.001) {
                    Some(error) => Outcome::Err { error },
                    None => Outcome::Ok {
                        detail: StepDetail::Flushed,
                    },
                };
                (Some(outcome), self.rng.range(2, 40))
            }
            Stage::Prune => (Some(self.prune(w, &cmd)?), self.rng.range(2, 40)),
            Stage::Verify => self.verify(w, step, &cmd)?,
            Stage::Reconcile => self.list(&cmd),
            Stage::Queue => (None, 0),
            Stage::Stop
            | Stage::SafetySnapshot
            | Stage::Restore
            | Stage::Rollback
            | Stage::Start
            | Stage::Mount
            | Stage::Unmount => self.recovery_step(w, step, &cmd)?,
        };
        // `None`: a freeze that hangs; its report comes when the runtime's
        // bounded freeze gives up (pushed by `freeze`), or never.
        if let Some(o) = outcome {
            self.push(self.sched.now + lat, Ev::Reported(w, inc, step, o));
        }
        Ok(())
    }

    /// The report of step `step` of worker `w` is ready: sent, and the
    /// command acknowledged, if the process still lives; otherwise the
    /// command was never acknowledged and goes back to its queue.
    pub(super) fn reported(&mut self, w: usize, inc: u32, step: u64, outcome: Outcome) -> Checked<()> {
        if !self.world.workers[w].alive || self.world.workers[w].incarnation != inc {
            return Ok(());
        }
        let Some((_, cmd)) = self.world.workers[w].inflight.remove(&step) else {
            return Ok(());
        };
        if cmd.stage == Stage::Verify {
            self.verify_done(w, step, &cmd, &outcome);
        }
        self.recovery_answered(&cmd, &outcome);
        self.world.workers[w]
            .recent
            .insert_first(cmd.message_id.clone(), outcome.clone());
        self.report(w, &cmd, outcome);
        Ok(())
    }

    /// A freeze: the rules of `worker::plan_freeze`; a freeze that runs is
    /// held before the writer is called and its watchdog armed then. Returns
    /// the outcome (`None`: the freeze hangs) and its latency.
    fn freeze(&mut self, w: usize, cmd: &Command) -> Checked<(Option<Outcome>, u64)> {
        let lat = self.rng.range(2, 40);
        let Some(&t) = cmd.targets.first().and_then(|t| self.world.target_index.get(t)) else {
            return Ok((None, 0));
        };
        let key = (cmd.job, cmd.attempt);
        let now = self.sched.now;
        let m = self.cfg.worker_mutation;
        self.mem(w, t).expire(now);
        let plan = worker::plan_freeze_with(self.mem(w, t), key, cmd.thaw_deadline_ms, now, m);
        let res = match plan {
            Plan::Answer(first) => first,
            Plan::Refuse(e) => Err(e),
            Plan::Run => {
                let deadline_ms = worker::freeze_deadline_ms(now, cmd.thaw_deadline_ms, FREEZE_LIMIT);
                let hold = Hold {
                    job: cmd.job,
                    attempt: cmd.attempt,
                    kind: cmd.kind,
                    process: self.world.process(w),
                    frozen_at_ms: now,
                    deadline_ms,
                };
                self.mem(w, t).record_freeze_start(hold);
                self.check_freeze_runs_once(t, key)?;
                let inc = self.world.workers[w].incarnation;
                let armed_before = m != Some(worker::Mutation::WatchdogAfterFreeze);
                if armed_before {
                    self.push(deadline_ms.max(now), Ev::Watchdog(w, inc, t, key));
                }
                // The writer: it freezes, or fails; a failure may have
                // landed, and a freeze may hang until the bounded call gives up.
                let r = if let Some(e) = self.random_failure(0.02, 0.003) {
                    Err(e)
                } else if self.rng.chance(0.01) {
                    self.freeze_world(t, key, deadline_ms)?;
                    Err(StepError::new(
                        "sim_failed_after_freezing",
                        "the freeze hook froze the application, then failed",
                        true,
                    ))
                } else if self.rng.chance(0.005) {
                    self.freeze_world(t, key, deadline_ms)?;
                    let e = StepError::new(
                        "timeout",
                        "the freeze did not return before its deadline: stopped (it may have landed)",
                        true,
                    );
                    self.mem(w, t).record_freeze(key, Err(e.clone()), now);
                    if !armed_before {
                        self.mem(w, t).forget_failed_hold(key);
                    }
                    let step = self.world.next_step;
                    let at = deadline_ms.max(now) + 1;
                    self.push(at, Ev::Reported(w, inc, step, Outcome::Err { error: e }));
                    return Ok((None, 0));
                } else if self.world.targets[t].frozen.is_some() {
                    // A writer frozen by someone else refuses (FIFREEZE:
                    // EBUSY): it knows this did not land.
                    Err(StepError::new(
                        worker::NOT_LANDED,
                        "the writer is frozen already",
                        true,
                    ))
                } else {
                    self.freeze_world(t, key, deadline_ms)?;
                    self.checks.mark(t, key, super::invariants::OK);
                    Ok(deadline_ms)
                };
                if r.is_ok() && self.outcome_lost(key) {
                    // The runtime writes a freeze's outcome after its report:
                    // this one never landed (the process died just after the
                    // report, or the write failed). The hold answers for it.
                    self.summary.unrecorded += 1;
                    self.note(cmd.job, format!("freeze outcome a{} not recorded", cmd.attempt));
                } else {
                    self.mem(w, t).record_freeze(key, r.clone(), now);
                }
                match &r {
                    Ok(_) if !armed_before => self.push(deadline_ms.max(now), Ev::Watchdog(w, inc, t, key)),
                    Err(_) if !armed_before => self.mem(w, t).forget_failed_hold(key),
                    _ => {}
                }
                r
            }
        };
        let outcome = match res {
            Ok(deadline_ms) => Outcome::Ok {
                detail: StepDetail::Frozen { deadline_ms },
            },
            Err(error) => Outcome::Err { error },
        };
        Ok((Some(outcome), lat))
    }

    /// Whether the outcome of attempt `key`'s freeze is lost before it is
    /// written (with crash faults, one attempt in 16, picked by its id so
    /// that no draw of the seed moves).
    fn outcome_lost(&self, key: Key) -> bool {
        self.cfg.faults.crash() && (key.0.as_u128() ^ u128::from(key.1)) % 16 == 0
    }

    /// The writer's freeze of target `t` by attempt `key` lands.
    fn freeze_world(&mut self, t: usize, key: Key, deadline: u64) -> Checked<()> {
        self.check_no_verify_during_freeze(t, key.0)?;
        self.check_no_freeze_after_thaw(t, key)?;
        self.check_one_freeze(t, key)?;
        let now = self.sched.now;
        let tw = &mut self.world.targets[t];
        tw.generation += 1;
        if tw.frozen.is_none() {
            tw.frozen = Some(Frozen {
                key,
                since: now,
                deadline,
            });
        }
        Ok(())
    }

    fn thaw(&mut self, w: usize, cmd: &Command) -> Checked<Option<Outcome>> {
        let Some(&t) = cmd.targets.first().and_then(|t| self.world.target_index.get(t)) else {
            return Ok(None);
        };
        let key = (cmd.job, cmd.attempt);
        let now = self.sched.now;
        let m = self.cfg.worker_mutation;
        let me = self.world.process(w);
        self.mem(w, t).expire(now);
        let plan = worker::plan_thaw_with(self.mem(w, t), key, m);
        if let ThawPlan::Own(h) = &plan {
            // Ending another attempt's hold is ending its freeze, landed or not.
            self.check_thaw_own(t, key, h.key(), false)?;
        }
        let window_us = worker::thaw_window_us(&plan, now, &me, m);
        if self.dies_during_thaw(w, t, &plan, ThawedBy::Command, window_us)? {
            return Ok(None);
        }
        self.mem(w, t)
            .record_thaw(key, ThawedBy::Command, window_us, &plan, now);
        if plan.runs() {
            if let Some(error) = self.random_failure(0.01, 0.0) {
                if let ThawPlan::Own(h) = plan {
                    self.mem(w, t).record_thaw_failed(h);
                }
                return Ok(Some(Outcome::Err { error }));
            }
            self.thaw_world(t, key, false)?;
        }
        self.checks.mark(t, key, super::invariants::THAWED);
        let detail = StepDetail::Thawed {
            freeze_window_us: window_us,
            by_watchdog: plan.by_watchdog(),
        };
        Ok(Some(Outcome::Ok { detail }))
    }

    /// A snapshot: what the storage holds under its name decides, then the
    /// worker core's rules; a snapshot taken holds its name from now and is
    /// cut over the step's latency. Returns the outcome and the latency.
    fn snapshot(&mut self, w: usize, cmd: &Command) -> Checked<(Option<Outcome>, u64)> {
        let key = (cmd.job, cmd.attempt);
        let name = cmd.snapshot_name.clone().unwrap_or_default();
        let now = self.sched.now;
        self.check_snapshot_name(cmd, &name)?;
        let lat = self.snapshot_latency(cmd);
        let members: Vec<usize> = cmd
            .targets
            .iter()
            .filter_map(|t| self.world.target_index.get(t).copied())
            .collect();
        let Some(&first) = members.first() else {
            return Ok((None, 0));
        };
        let at = |t: usize| (t, name.clone());
        if self.net_faults()
            && !self.world.storage.snapshots.contains_key(&at(first))
            && self.rng.chance(0.002)
        {
            // Another system took this name first (a collision recman's
            // names make all but impossible, or a leftover of a lost log).
            for &t in &members {
                self.world.storage.snapshots.insert(
                    at(t),
                    Stored {
                        owner: None,
                        ends_at: now,
                    },
                );
            }
        }
        let (existing, ends_at) = match self.world.storage.snapshots.get(&at(first)) {
            None => (Existing::Absent, now),
            Some(Stored {
                owner: Some(k),
                ends_at,
            }) => (Existing::Owned(*k), *ends_at),
            Some(Stored { owner: None, .. }) => (Existing::Foreign("a volume of another system".into()), now),
        };
        let mut plan = SnapshotPlan::Run;
        for tid in &cmd.targets {
            let Some(&t) = self.world.target_index.get(tid) else {
                continue;
            };
            let pruned = self.world.workers[w].pruned.contains(&name);
            let p = worker::plan_snapshot(
                &self.world.memory[t],
                pruned,
                tid,
                &name,
                key,
                &existing,
                cmd.thaw_deadline_ms,
                now,
                self.cfg.worker_mutation,
            );
            if p != SnapshotPlan::Run {
                plan = p;
                break;
            }
        }
        let info = |existed| StepDetail::Snapshot(Self::info(&name, existed));
        match plan {
            SnapshotPlan::Refuse(error) => Ok((Some(Outcome::Err { error }), self.rng.range(1, 10))),
            SnapshotPlan::Report => {
                // Reported once it is complete.
                let lat = self.rng.range(1, 10).max(ends_at.saturating_sub(now));
                Ok((Some(Outcome::Ok { detail: info(true) }), lat))
            }
            SnapshotPlan::Run => {
                if let Some(error) = self.random_failure(0.02, 0.003) {
                    return Ok((Some(Outcome::Err { error }), lat));
                }
                self.check_snapshot_in_time(cmd)?;
                for &t in &members {
                    self.world.storage.snapshots.insert(
                        at(t),
                        Stored {
                            owner: Some(key),
                            ends_at: now + lat,
                        },
                    );
                }
                let n = {
                    let n = self.world.storage.created.entry(key).or_insert(0);
                    *n += 1;
                    *n
                };
                self.check_one_snapshot(cmd, n)?;
                for &t in &members {
                    self.app_writes(t, &name);
                }
                let gens = self.generations(&cmd.targets, key);
                self.push(now + lat, Ev::CutEnds(key, cmd.targets.clone(), gens));
                Ok((Some(Outcome::Ok { detail: info(false) }), lat))
            }
        }
    }

    /// The generation of each member while frozen by `key` (`None` if one is not).
    fn generations(&self, targets: &[TargetId], key: Key) -> Option<Vec<u64>> {
        targets
            .iter()
            .map(|t| {
                let tw = &self.world.targets[*self.world.target_index.get(t)?];
                (tw.frozen.map(|f| f.key) == Some(key)).then_some(tw.generation)
            })
            .collect()
    }

    /// The cut of attempt `key`'s snapshot ends (whatever became of the
    /// process that took it): consistent if every member stayed frozen by
    /// that attempt (same generation) since the cut began.
    pub(super) fn cut_ends(&mut self, key: Key, targets: &[TargetId], start: Option<Vec<u64>>) {
        let consistent = start.is_some() && start == self.generations(targets, key);
        self.world.storage.consistent.entry(key).or_insert(consistent);
    }

    /// How long a snapshot takes: mostly quick, now and then slower than
    /// the freeze limit, always while its array has a slow spell.
    fn snapshot_latency(&mut self, cmd: &Command) -> u64 {
        let array = cmd
            .targets
            .first()
            .and_then(|t| self.core_cfg.targets.get(t))
            .and_then(|p| self.world.pool_index.get(&p.provider_pool))
            .copied();
        if let Some(a) = array {
            if self.world.slow_until[a] > self.sched.now {
                return self.rng.range(FREEZE_LIMIT, 2 * FREEZE_LIMIT);
            }
        }
        if self.rng.chance(0.005) {
            self.rng.range(6_000, 14_000)
        } else {
            self.rng.range(5, 200)
        }
    }

    fn prune(&mut self, w: usize, cmd: &Command) -> Checked<Outcome> {
        let mut deleted = Vec::new();
        let mut failed = Vec::new();
        let Some(&t) = cmd.targets.first().and_then(|t| self.world.target_index.get(t)) else {
            return Ok(Outcome::Ok {
                detail: StepDetail::Pruned { deleted, failed },
            });
        };
        for n in &cmd.prune {
            let at = (t, n.clone());
            if let Some(error) = self.random_failure(0.01, 0.0) {
                failed.push(recman_events::PruneFailure {
                    name: n.clone(),
                    error,
                });
                continue;
            }
            // Only recman's own snapshots: another system's is not deleted
            // (3PAR checks the copy's base, the others their marker).
            if self
                .world
                .storage
                .snapshots
                .get(&at)
                .is_some_and(|s| s.owner.is_none())
            {
                failed.push(recman_events::PruneFailure {
                    name: n.clone(),
                    error: StepError::new("not_ours", "not a snapshot recman took: not deleted", false),
                });
                continue;
            }
            if self.world.storage.snapshots.contains_key(&at) {
                self.check_not_mounted(t, n, cmd.job)?;
            }
            self.world.storage.snapshots.remove(&at);
            self.world.workers[w].pruned.insert_first(n.clone(), ());
            deleted.push(n.clone());
        }
        Ok(Outcome::Ok {
            detail: StepDetail::Pruned { deleted, failed },
        })
    }

    /// The watchdog of process `w` (incarnation `inc`) armed for attempt
    /// `key` on target `t` is due: it died with its process, or it thaws
    /// that freeze (and only that one) and reports it.
    pub(super) fn watchdog(&mut self, w: usize, inc: u32, t: usize, key: Key) -> Checked<()> {
        if !self.world.workers[w].alive || self.world.workers[w].incarnation != inc {
            return Ok(());
        }
        let m = self.cfg.worker_mutation;
        let now = self.sched.now;
        let plan = worker::plan_thaw_with(self.mem(w, t), key, m);
        let ThawPlan::Own(hold) = &plan else {
            return Ok(());
        };
        let froze = hold.key();
        self.check_thaw_own(t, key, froze, true)?;
        self.checks.mark(t, froze, super::invariants::THAWED);
        self.check_engine_thaws_before_watchdog(t, froze)?;
        let me = self.world.process(w);
        let window_us = worker::thaw_window_us(&plan, now, &me, m);
        if self.dies_during_thaw(w, t, &plan, ThawedBy::Watchdog, window_us)? {
            return Ok(());
        }
        self.mem(w, t)
            .record_thaw(froze, ThawedBy::Watchdog, window_us, &plan, now);
        self.thaw_world(t, froze, true)?;
        self.note(
            froze.0,
            format!(
                "watchdog of {} thawed {} (attempt {})",
                self.world.workers[w].id, self.world.target_ids[t], froze.1
            ),
        );
        let cmd = Command {
            schema_version: SCHEMA_VERSION,
            message_id: format!("watchdog/{}/{}/{}", froze.0, froze.1, self.world.target_ids[t]),
            job: froze.0,
            attempt: froze.1,
            stage: Stage::Thaw,
            targets: vec![self.world.target_ids[t].clone()],
            kind: SnapshotKind::Full,
            snapshot_name: None,
            thaw_deadline_ms: None,
            prune: Vec::new(),
            fingerprints: Vec::new(),
            recovery: None,
        };
        let detail = StepDetail::Thawed {
            freeze_window_us: window_us,
            by_watchdog: true,
        };
        self.report(w, &cmd, Outcome::Ok { detail });
        Ok(())
    }

    /// Process `w` takes over the holds of its host's dead processes (on
    /// start, and when it notices one died): it thaws at once those past
    /// their deadline and arms its own watchdog for the others.
    pub(super) fn adopt(&mut self, w: usize, inc: u32) -> Checked<()> {
        if !self.world.workers[w].alive || self.world.workers[w].incarnation != inc {
            return Ok(());
        }
        let pool = self.world.workers[w].pool;
        let me = self.world.process(w);
        let targets = self.world.pool_targets[pool].clone();
        for t in targets {
            let per_process = self.cfg.worker_mutation == Some(worker::Mutation::FreezeStatePerProcess);
            let hold = {
                let world = &self.world;
                let mem = if per_process {
                    match world.workers[w].own_memory.get(&t) {
                        Some(m) => m,
                        None => continue,
                    }
                } else {
                    &world.memory[t]
                };
                worker::adoptable(mem, |p| world.alive(p), self.cfg.worker_mutation)
            };
            let Some(hold) = hold else { continue };
            self.mem(w, t).record_adopt(hold.key(), me.clone());
            let at = hold.deadline_ms.max(self.sched.now);
            self.push(at, Ev::Watchdog(w, inc, t, hold.key()));
        }
        Ok(())
    }

    /// A writer or provider failure, now and then.
    pub(super) fn random_failure(&mut self, p_retry: f64, p_fatal: f64) -> Option<StepError> {
        if self.rng.chance(p_retry) {
            Some(StepError::new(
                "sim_retryable",
                "simulated retryable failure",
                true,
            ))
        } else if self.rng.chance(p_fatal) {
            Some(StepError::new(
                "sim_fatal",
                "simulated non-retryable failure",
                false,
            ))
        } else {
            None
        }
    }

    /// Under crash faults, now and then process `w` dies during the
    /// writer's thaw of the freeze it holds (`plan` is `Own`): the thaw may
    /// or may not have landed, and it recorded nothing, so the hold stays
    /// and another process of the host adopts it and thaws again
    /// (idempotent), recording the window up to that thaw, an upper bound.
    /// Unless `ReleaseBeforeThaw` released the hold before the thaw ran.
    /// Returns whether it died.
    fn dies_during_thaw(
        &mut self,
        w: usize,
        t: usize,
        plan: &ThawPlan,
        by: ThawedBy,
        window_us: u64,
    ) -> Checked<bool> {
        let ThawPlan::Own(h) = plan else {
            return Ok(false);
        };
        if !self.cfg.faults.crash() || !self.rng.chance(0.01) {
            return Ok(false);
        }
        let key = h.key();
        if self.cfg.worker_mutation == Some(worker::Mutation::ReleaseBeforeThaw) {
            let now = self.sched.now;
            self.mem(w, t).record_thaw(key, by, window_us, plan, now);
        }
        let landed = self.rng.chance(0.5);
        if landed {
            self.thaw_world(t, key, by == ThawedBy::Watchdog)?;
        }
        self.checks.mark(t, key, super::invariants::INTERRUPTED);
        self.note(
            key.0,
            format!(
                "{} died during its thaw of {} (attempt {}; the thaw {})",
                self.world.workers[w].id,
                self.world.target_ids[t],
                key.1,
                if landed { "landed" } else { "did not land" }
            ),
        );
        self.crash_worker(w);
        Ok(true)
    }

    /// The writer's thaw of target `t`, asked by attempt `by` (or its
    /// watchdog): whatever freeze holds it ends (as FITHAW would).
    fn thaw_world(&mut self, t: usize, by: Key, watchdog: bool) -> Checked<()> {
        let Some(f) = self.world.targets[t].frozen else {
            return Ok(());
        };
        self.check_thaw_own(t, by, f.key, watchdog)?;
        let window = self.sched.now - f.since;
        self.check_thawed_within_limit(t, f, self.sched.now)?;
        self.checks.set_window(t, f.key, window);
        let tw = &mut self.world.targets[t];
        tw.frozen = None;
        tw.generation += 1;
        Ok(())
    }

    pub fn info(name: &str, existed: bool) -> SnapshotInfo {
        SnapshotInfo {
            name: name.to_string(),
            provider: "sim".into(),
            location: format!("sim:{name}"),
            size_bytes: None,
            existed,
            array_expiry: None,
        }
    }
}

/// Snapshot names are the engine's, from job and attempt.
pub(super) fn expected_name(cmd: &Command) -> String {
    snapshot_name(cmd.job, cmd.attempt)
}
