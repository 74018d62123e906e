//! The simulated world: targets that really freeze and thaw, writer and provider
//! workers with latencies, failures, crashes and watchdogs.

use std::collections::{HashMap, HashSet};

use recman_events::{
    snapshot_name, Command, JobId, Outcome, PoolName, SnapshotInfo, SnapshotKind, Stage, StepDetail,
    StepError, TargetId, WorkerId, SCHEMA_VERSION,
};

use super::scheduler::Ev;
use super::{Checked, Sim};

/// One attempt of one job.
pub type Key = (JobId, u32);

/// What the world knows about one target.
#[derive(Default)]
pub struct TargetWorld {
    /// Frozen by (job, attempt), worker index, deadline of the watchdog.
    pub frozen: Option<(Key, usize, u64)>,
    /// Attempts that got a thaw: a late freeze of theirs is refused.
    pub thawed: HashSet<Key>,
    /// Outcome of each attempt's freeze: a redelivered freeze is not run twice.
    pub freeze_results: HashMap<Key, Result<u64, StepError>>,
    pub watchdog_thawed: HashSet<Key>,
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
    /// Names deleted by retention: a late duplicate command must not bring one back.
    pub deleted: HashSet<String>,
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
    pub(super) fn work(&mut self, w: usize, inc: u32, cmd: Command) -> Checked<()> {
        if !self.world.workers[w].alive || self.world.workers[w].incarnation != inc {
            return Ok(());
        }
        let key = (cmd.job, cmd.attempt);
        let now = self.sched.now;
        match cmd.stage {
            Stage::Freeze => {
                let Some(&t) = cmd.targets.first().and_then(|t| self.world.target_index.get(t)) else {
                    return Ok(());
                };
                let deadline = cmd.thaw_deadline_ms.unwrap_or(0);
                let res = if let Some(r) = self.world.targets[t].freeze_results.get(&key) {
                    r.clone()
                } else {
                    let r = if self.world.targets[t].thawed.contains(&key) {
                        Err(StepError::new(
                            "already_thawed",
                            "a thaw for this attempt came first",
                            true,
                        ))
                    } else if now >= deadline {
                        Err(StepError::new(
                            "deadline_passed",
                            "freeze arrived after its thaw deadline",
                            true,
                        ))
                    } else if self.world.targets[t].frozen.is_some() {
                        Err(StepError::new("busy", "target frozen by another job", true))
                    } else if let Some(e) = self.random_failure(0.02, 0.003) {
                        Err(e)
                    } else {
                        self.world.targets[t].frozen = Some((key, w, deadline));
                        self.checks.first_freeze.entry(key).or_insert(now);
                        self.push(deadline, Ev::Watchdog(t, key));
                        Ok(deadline)
                    };
                    self.world.targets[t].freeze_results.insert(key, r.clone());
                    r
                };
                let outcome = match res {
                    Ok(deadline_ms) => Outcome::Ok {
                        detail: StepDetail::Frozen { deadline_ms },
                    },
                    Err(error) => Outcome::Err { error },
                };
                self.report(w, &cmd, outcome);
            }
            Stage::Thaw => {
                let Some(&t) = cmd.targets.first().and_then(|t| self.world.target_index.get(t)) else {
                    return Ok(());
                };
                if let Some(error) = self.random_failure(0.01, 0.0) {
                    self.report(w, &cmd, Outcome::Err { error });
                    return Ok(());
                }
                let by_wd = self.world.targets[t].watchdog_thawed.contains(&key);
                let window = self.thaw_world(t, key, false)?;
                let detail = StepDetail::Thawed {
                    freeze_window_us: window.unwrap_or(0) * 1_000,
                    by_watchdog: by_wd && window.is_none(),
                };
                self.report(w, &cmd, Outcome::Ok { detail });
            }
            Stage::Snapshot => {
                let name = cmd.snapshot_name.clone().unwrap_or_default();
                self.check_snapshot_name(&cmd, &name)?;
                if self.world.provider.deleted.contains(&name) {
                    let error = StepError::new("deleted", "this snapshot was deleted by retention", false);
                    self.report(w, &cmd, Outcome::Err { error });
                    return Ok(());
                }
                if self.world.provider.snapshots.contains(&name) {
                    let detail = StepDetail::Snapshot(Provider::info(&name, true));
                    self.report(w, &cmd, Outcome::Ok { detail });
                    return Ok(());
                }
                if let Some(error) = self.random_failure(0.02, 0.003) {
                    self.report(w, &cmd, Outcome::Err { error });
                    return Ok(());
                }
                let consistent = cmd.targets.iter().all(|t| {
                    self.world
                        .target_index
                        .get(t)
                        .is_some_and(|&i| matches!(self.world.targets[i].frozen, Some((k, _, _)) if k == key))
                });
                self.world.provider.snapshots.insert(name.clone());
                let n = {
                    let n = self.world.provider.created.entry(key).or_insert(0);
                    *n += 1;
                    *n
                };
                self.check_one_snapshot(&cmd, n)?;
                self.world.provider.consistent.insert(key, consistent);
                let detail = StepDetail::Snapshot(Provider::info(&name, false));
                self.report(w, &cmd, Outcome::Ok { detail });
            }
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
                    self.world.provider.deleted.insert(n.clone());
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

    /// The watchdog of an attempt's freeze is due: when that freeze still
    /// holds the target, the worker thaws it by itself and reports it.
    pub(super) fn watchdog(&mut self, t: usize, key: Key) -> Checked<()> {
        let Some((k, w, _)) = self.world.targets[t].frozen else {
            return Ok(());
        };
        if k != key {
            return Ok(());
        }
        self.check_engine_thaws_before_watchdog(t, key)?;
        let window = self.thaw_world(t, key, true)?.unwrap_or(0);
        self.note(
            key.0,
            format!("watchdog thawed {} (attempt {})", self.world.target_ids[t], key.1),
        );
        if self.world.workers[w].alive {
            let cmd = Command {
                schema_version: SCHEMA_VERSION,
                message_id: format!("watchdog/{}/{}/{}", key.0, key.1, self.world.target_ids[t]),
                job: key.0,
                attempt: key.1,
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

    /// Thaws target `t` if `key` froze it; returns the freeze window in ms.
    fn thaw_world(&mut self, t: usize, key: Key, by_watchdog: bool) -> Checked<Option<u64>> {
        let tw = &mut self.world.targets[t];
        tw.thawed.insert(key);
        if let Some((k, _, _)) = tw.frozen {
            if k == key {
                tw.frozen = None;
                if by_watchdog {
                    tw.watchdog_thawed.insert(key);
                }
                let first = self
                    .checks
                    .first_freeze
                    .get(&key)
                    .copied()
                    .unwrap_or(self.sched.now);
                let window = self.sched.now - first;
                self.check_freeze_window(key, window)?;
                return Ok(Some(window));
            }
        }
        Ok(None)
    }
}

/// Snapshot names are the engine's, from job and attempt.
pub(super) fn expected_name(cmd: &Command) -> String {
    snapshot_name(cmd.job, cmd.attempt)
}
