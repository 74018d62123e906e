//! The simulated world: targets that really freeze and thaw, an array, and
//! worker processes that follow the worker core's rules (`crate::worker`)
//! with latencies, failures, crashes and watchdogs.

use std::collections::{HashMap, HashSet};

use recman_events::{
    snapshot_name, Command, Outcome, PoolName, SnapshotInfo, SnapshotKind, Stage, StepDetail, StepError,
    TargetId, WorkerId, SCHEMA_VERSION,
};

use super::scheduler::Ev;
use super::{Checked, Sim, FREEZE_LIMIT};
use crate::worker::{self, AttemptKey, Hold, Plan, TargetMemory, ThawPlan, ThawedBy};

/// One attempt of one job.
pub type Key = AttemptKey;

/// One target as it really is: which attempt's freeze holds its writes now.
/// What the workers *remember* of it is the worker core's `TargetMemory`.
#[derive(Default)]
pub struct TargetWorld {
    pub frozen: Option<Key>,
}

/// One worker process.
pub struct Worker {
    pub id: WorkerId,
    pub pool: usize,
    pub alive: bool,
    pub incarnation: u32,
}

/// The array: snapshots by name, and how each attempt's snapshot was cut.
#[derive(Default)]
pub struct Provider {
    pub snapshots: HashSet<String>,
    pub created: HashMap<Key, u32>,
    /// Whether every member was frozen by that attempt when the snapshot was cut.
    pub consistent: HashMap<Key, bool>,
}

impl Provider {
    pub fn info(name: &str, existed: bool) -> SnapshotInfo {
        SnapshotInfo {
            name: name.to_string(),
            provider: "sim".into(),
            location: format!("sim:{name}"),
            size_bytes: None,
            existed,
        }
    }
}

/// Targets, the array, the worker processes and their pools.
pub struct World {
    pub target_ids: Vec<TargetId>,
    pub target_index: HashMap<TargetId, usize>,
    pub targets: Vec<TargetWorld>,
    /// What the workers remember of each target, by the worker core's rules.
    /// The simulated workers of a pool share one memory per target, and it
    /// outlives their crashes (a real worker keeps its own, in its process).
    pub memory: Vec<TargetMemory>,
    pub provider: Provider,
    pub workers: Vec<Worker>,
    pub worker_index: HashMap<WorkerId, usize>,
    /// Each pool's name and workers.
    pub pools: Vec<(PoolName, Vec<usize>)>,
    pub pool_index: HashMap<PoolName, usize>,
    /// Commands waiting for a live worker of each pool.
    pub backlog: Vec<Vec<Command>>,
}

impl World {
    pub fn new(target_ids: Vec<TargetId>, workers: Vec<Worker>, pools: Vec<(PoolName, Vec<usize>)>) -> World {
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
        World {
            targets: target_ids.iter().map(|_| TargetWorld::default()).collect(),
            memory: target_ids.iter().map(|_| TargetMemory::default()).collect(),
            target_ids,
            target_index,
            provider: Provider::default(),
            workers,
            worker_index,
            backlog: vec![Vec::new(); pools.len()],
            pools,
            pool_index,
        }
    }
}

impl Sim {
    /// Worker `w` runs `cmd` (unless it crashed since it took it) and reports.
    /// What it may do is the worker core's decision (`crate::worker`); the
    /// world only plays the writer and the provider.
    pub(super) fn work(&mut self, w: usize, inc: u32, cmd: Command) -> Checked<()> {
        if !self.world.workers[w].alive || self.world.workers[w].incarnation != inc {
            return Ok(());
        }
        match cmd.stage {
            Stage::Freeze => self.freeze(w, &cmd),
            Stage::Thaw => self.thaw(w, &cmd)?,
            Stage::Snapshot => self.snapshot(w, &cmd)?,
            Stage::FlushLogs => {
                let outcome = match self.random_failure(0.01, 0.001) {
                    Some(error) => Outcome::Err { error },
                    None => Outcome::Ok {
                        detail: StepDetail::Flushed,
                    },
                };
                self.report(w, &cmd, outcome);
            }
            Stage::Prune => {
                for n in &cmd.prune {
                    self.world.provider.snapshots.remove(n);
                    for t in &cmd.targets {
                        if let Some(&i) = self.world.target_index.get(t) {
                            self.world.memory[i].record_pruned(n);
                        }
                    }
                }
                let detail = StepDetail::Pruned {
                    deleted: cmd.prune.clone(),
                };
                self.report(w, &cmd, Outcome::Ok { detail });
            }
            Stage::Queue => {}
        }
        Ok(())
    }

    fn freeze(&mut self, w: usize, cmd: &Command) {
        let Some(&t) = cmd.targets.first().and_then(|t| self.world.target_index.get(t)) else {
            return;
        };
        let key = (cmd.job, cmd.attempt);
        let now = self.sched.now;
        let plan = worker::plan_freeze_with(
            &self.world.memory[t],
            key,
            cmd.thaw_deadline_ms,
            now,
            self.cfg.worker_mutation,
        );
        let res = match plan {
            Plan::Answer(first) => first,
            Plan::Refuse(e) => Err(e),
            Plan::Run => {
                let r = match self.random_failure(0.02, 0.003) {
                    Some(e) => Err(e),
                    None if self.world.targets[t].frozen.is_some() => {
                        Err(StepError::new("busy", "the writer is frozen already", true))
                    }
                    None => {
                        let deadline_ms = worker::freeze_deadline_ms(now, cmd.thaw_deadline_ms, FREEZE_LIMIT);
                        self.world.targets[t].frozen = Some(key);
                        self.checks.first_freeze.entry(key).or_insert(now);
                        self.push(deadline_ms.max(now), Ev::Watchdog(t, key));
                        Ok(Hold {
                            job: cmd.job,
                            attempt: cmd.attempt,
                            kind: cmd.kind,
                            worker: self.world.workers[w].id.clone(),
                            frozen_at_ms: now,
                            deadline_ms,
                        })
                    }
                };
                self.world.memory[t].record_freeze(key, r.clone());
                r.map(|h| h.deadline_ms)
            }
        };
        let outcome = match res {
            Ok(deadline_ms) => Outcome::Ok {
                detail: StepDetail::Frozen { deadline_ms },
            },
            Err(error) => Outcome::Err { error },
        };
        self.report(w, cmd, outcome);
    }

    fn thaw(&mut self, w: usize, cmd: &Command) -> Checked<()> {
        let Some(&t) = cmd.targets.first().and_then(|t| self.world.target_index.get(t)) else {
            return Ok(());
        };
        let key = (cmd.job, cmd.attempt);
        let plan = worker::plan_thaw_with(&self.world.memory[t], key, self.cfg.worker_mutation);
        self.world.memory[t].record_thaw(key, ThawedBy::Command, &plan);
        let mut window_ms = None;
        if plan.runs() {
            if let Some(error) = self.random_failure(0.01, 0.0) {
                if let ThawPlan::Own(h) = plan {
                    self.world.memory[t].record_thaw_failed(h);
                }
                self.report(w, cmd, Outcome::Err { error });
                return Ok(());
            }
            window_ms = self.thaw_world(t)?;
        }
        let detail = StepDetail::Thawed {
            freeze_window_us: window_ms.unwrap_or(0) * 1_000,
            by_watchdog: plan.by_watchdog(),
        };
        self.report(w, cmd, Outcome::Ok { detail });
        Ok(())
    }

    fn snapshot(&mut self, w: usize, cmd: &Command) -> Checked<()> {
        let key = (cmd.job, cmd.attempt);
        let name = cmd.snapshot_name.clone().unwrap_or_default();
        self.check_snapshot_name(cmd, &name)?;
        for t in &cmd.targets {
            let Some(&i) = self.world.target_index.get(t) else {
                continue;
            };
            if let Plan::Refuse(error) = worker::plan_snapshot(&self.world.memory[i], t, &name) {
                self.report(w, cmd, Outcome::Err { error });
                return Ok(());
            }
        }
        if self.world.provider.snapshots.contains(&name) {
            let detail = StepDetail::Snapshot(Provider::info(&name, true));
            self.report(w, cmd, Outcome::Ok { detail });
            return Ok(());
        }
        if let Some(error) = self.random_failure(0.02, 0.003) {
            self.report(w, cmd, Outcome::Err { error });
            return Ok(());
        }
        let consistent = cmd.targets.iter().all(|t| {
            self.world
                .target_index
                .get(t)
                .is_some_and(|&i| self.world.targets[i].frozen == Some(key))
        });
        self.world.provider.snapshots.insert(name.clone());
        let n = {
            let n = self.world.provider.created.entry(key).or_insert(0);
            *n += 1;
            *n
        };
        self.check_one_snapshot(cmd, n)?;
        self.world.provider.consistent.insert(key, consistent);
        let detail = StepDetail::Snapshot(Provider::info(&name, false));
        self.report(w, cmd, Outcome::Ok { detail });
        Ok(())
    }

    /// The watchdog armed for an attempt's freeze is due: by the worker
    /// core's rules it thaws only that freeze, and reports it.
    pub(super) fn watchdog(&mut self, t: usize, key: Key) -> Checked<()> {
        let plan = worker::plan_thaw_with(&self.world.memory[t], key, self.cfg.worker_mutation);
        let ThawPlan::Own(hold) = &plan else {
            return Ok(());
        };
        let froze = hold.key();
        let by = self.world.worker_index.get(&hold.worker).copied();
        self.check_engine_thaws_before_watchdog(t, froze)?;
        self.world.memory[t].record_thaw(froze, ThawedBy::Watchdog, &plan);
        let window = self.thaw_world(t)?.unwrap_or(0);
        self.note(
            froze.0,
            format!(
                "watchdog thawed {} (attempt {})",
                self.world.target_ids[t], froze.1
            ),
        );
        if let Some(w) = by.filter(|w| self.world.workers[*w].alive) {
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
            };
            let detail = StepDetail::Thawed {
                freeze_window_us: window * 1_000,
                by_watchdog: true,
            };
            self.report(w, &cmd, Outcome::Ok { detail });
        }
        Ok(())
    }

    /// A writer or provider failure, now and then.
    fn random_failure(&mut self, p_retry: f64, p_fatal: f64) -> Option<StepError> {
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

    /// The writer's thaw of target `t`: whatever freeze holds it ends (as
    /// FITHAW would). Returns that freeze's window in ms; the
    /// `freeze_window` check sees it.
    fn thaw_world(&mut self, t: usize) -> Checked<Option<u64>> {
        let Some(key) = self.world.targets[t].frozen.take() else {
            return Ok(None);
        };
        let first = self
            .checks
            .first_freeze
            .get(&key)
            .copied()
            .unwrap_or(self.sched.now);
        let window = self.sched.now - first;
        self.check_freeze_window(key, window)?;
        Ok(Some(window))
    }
}

/// Snapshot names are the engine's, from job and attempt.
pub(super) fn expected_name(cmd: &Command) -> String {
    snapshot_name(cmd.job, cmd.attempt)
}
