//! The simulated network and its faults: message delays, drops, duplicates,
//! late copies (some later than a whole freeze stage) and old reports delivered again (with `--faults net`);
//! routing as the runtime does it (a worker's own queue keeps its messages
//! while it is down; a pool's goes to any live worker); worker and engine
//! crashes and restarts, including the engine dying before its append or
//! between its append and its sends (with `--faults crash`); arrays slower
//! than the freeze limit now and then (every mode).

use recman_events::{Command, Outcome, Report, SCHEMA_VERSION};

use super::scheduler::{Ev, T0};
use super::world::ADOPT_POLL_MS;
use super::{Checked, Sim, FREEZE_LIMIT};
use crate::worker::Recent;
use crate::{Destination, Input, Mutation, Outgoing};

/// Reports kept for delivering old ones again.
const HISTORY: usize = 512;

impl Sim {
    pub(super) fn net_faults(&self) -> bool {
        self.cfg.faults.net()
    }

    /// The delays of the copies of one message: one normally; none when it
    /// is dropped; a late one or a duplicate now and then under net faults.
    fn net_delays(&mut self) -> Vec<u64> {
        let mut v = Vec::with_capacity(2);
        let base = self.rng.range(1, 8);
        if !self.cfg.faults.net() {
            v.push(base);
            return v;
        }
        if self.rng.chance(0.01) {
            return v;
        }
        let d = if self.rng.chance(0.002) {
            // Stuck in a queue behind a slow consumer: longer than a freeze
            // stage, so an old attempt's command or report comes after the
            // engine moved on.
            self.rng.range(FREEZE_LIMIT / 2, FREEZE_LIMIT * 3 / 2)
        } else if self.rng.chance(0.01) {
            self.rng.range(100, 2_500)
        } else {
            base
        };
        v.push(d);
        if self.rng.chance(0.01) {
            let d2 = self.rng.range(1, 500);
            v.push(d2);
        }
        v
    }

    /// A command goes onto the network (the engine made its cause durable,
    /// unless a mutation says otherwise: `durable_before_send` checks it).
    pub(super) fn send_command(&mut self, o: Outgoing) -> Checked<()> {
        self.note_command(&o, "");
        self.check_durable_before_send(&o.command)?;
        self.check_snapshot_sent_in_time(&o.command)?;
        self.put_out(o)
    }

    /// The command's line in its job's trace.
    fn note_command(&mut self, o: &Outgoing, how: &str) {
        let c = &o.command;
        let line = format!(
            "cmd  {} a{} {:?} -> {:?}{}{how}",
            c.stage,
            c.attempt,
            c.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            o.to,
            c.thaw_deadline_ms
                .map(|d| format!(" deadline@{}", d.saturating_sub(T0)))
                .unwrap_or_default()
        );
        self.note(c.job, line);
    }

    /// A command whose decision was checked in time goes onto the network
    /// late: held by a stopped engine process (its append done or pending),
    /// it leaves when the process resumes, as the runtime would send it
    /// (the worker refuses a snapshot past its deadline).
    pub(super) fn send_deferred(&mut self, o: Outgoing) -> Checked<()> {
        self.note_command(&o, " (held by a stopped engine)");
        self.check_durable_before_send(&o.command)?;
        self.put_out(o)
    }

    /// The engine acting now (`one_leader_per_epoch`) puts `o` on the network.
    fn put_out(&mut self, o: Outgoing) -> Checked<()> {
        let (pid, epoch) = self.stale.unwrap_or((self.engine.pid, self.engine.epoch));
        self.check_one_leader(pid, epoch)?;
        for d in self.net_delays() {
            self.push(self.sched.now + d, Ev::ToWorker(o.to.clone(), o.command.clone()));
        }
        Ok(())
    }

    /// A command reaches its queue. A worker's own queue: that worker takes
    /// it, or keeps it until it starts again (the runtime never sends it to
    /// the pool: the engine's next thaw try goes there). A pool's: any live
    /// worker of the pool, or the first to start.
    pub(super) fn deliver(&mut self, to: Destination, cmd: Command) -> Checked<()> {
        match &to {
            Destination::Worker { worker, .. } => {
                let Some(&w) = self.world.worker_index.get(worker) else {
                    return Ok(()); // no such queue: unroutable
                };
                if self.world.workers[w].alive {
                    self.take(w, to, cmd)?;
                } else {
                    self.world.own_queue[w].push(cmd);
                }
            }
            Destination::Pool(pool) => {
                let Some(&p) = self.world.pool_index.get(pool) else {
                    return Ok(());
                };
                let alive: Vec<usize> = self.world.pools[p]
                    .1
                    .iter()
                    .copied()
                    .filter(|w| self.world.workers[*w].alive)
                    .collect();
                if alive.is_empty() {
                    self.world.backlog[p].push(cmd);
                    return Ok(());
                }
                let w = alive[self.rng.below(alive.len() as u64) as usize];
                self.take(w, to, cmd)?;
            }
        }
        Ok(())
    }

    /// Worker `w` sends the report of `cmd` to the engine; under net faults
    /// an old report is now and then delivered again, much later.
    pub(super) fn report(&mut self, w: usize, cmd: &Command, outcome: Outcome) {
        let line = format!(
            "rep  {} a{} {:?} from {} {}",
            cmd.stage,
            cmd.attempt,
            cmd.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            self.world.workers[w].id,
            match &outcome {
                Outcome::Ok { detail } => format!("ok {detail:?}"),
                Outcome::Err { error } => format!("err {}", error.code),
            }
        );
        self.note(cmd.job, line);
        let r = Report {
            schema_version: SCHEMA_VERSION,
            message_id: format!("rep/{}", cmd.message_id),
            job: cmd.job,
            attempt: cmd.attempt,
            stage: cmd.stage,
            targets: cmd.targets.clone(),
            worker: self.world.workers[w].id.clone(),
            duration_us: 1_000,
            outcome,
        };
        for d in self.net_delays() {
            self.push(self.sched.now + d, Ev::ToEngine(Input::Report(r.clone())));
        }
        if self.net_faults() {
            if self.rng.chance(0.01) && !self.history.is_empty() {
                let old = self.history[self.rng.below(self.history.len() as u64) as usize].clone();
                let d = self.rng.range(100, 20_000);
                self.push(self.sched.now + d, Ev::ToEngine(Input::Report(old)));
            }
            if self.history.len() < HISTORY {
                self.history.push(r);
            } else {
                let i = self.rng.below(HISTORY as u64) as usize;
                self.history[i] = r;
            }
        }
    }

    /// A random worker process dies: its memory and watchdogs with it; the
    /// commands it took and did not acknowledge go back to their queues; the
    /// other live processes of its host notice and take over its holds.
    pub(super) fn worker_crash(&mut self) -> Checked<()> {
        if !self.busy() {
            return Ok(());
        }
        let w = self.rng.below(self.world.workers.len() as u64) as usize;
        self.crash_worker(w);
        let d = self.rng.range(500, 4_000);
        self.push(self.sched.now + d, Ev::WorkerCrash);
        Ok(())
    }

    /// Worker process `w` dies now (if it lives): what it had not answered
    /// goes back to its queue, its host's other processes notice within
    /// `ADOPT_POLL_MS`, and it starts again a while later.
    pub(super) fn crash_worker(&mut self, w: usize) {
        if self.world.workers[w].alive {
            let now = self.sched.now;
            let worker = &mut self.world.workers[w];
            worker.alive = false;
            worker.incarnation += 1;
            worker.recent = Recent::default();
            worker.pruned = Recent::default();
            worker.own_memory.clear();
            self.verify_crash(w);
            let worker = &mut self.world.workers[w];
            // In step order: a HashMap drains in a per-process random
            // order, which made a seed's run differ between processes.
            let mut unacked: Vec<(u64, (Destination, Command))> = worker.inflight.drain().collect();
            unacked.sort_unstable_by_key(|(step, _)| *step);
            let unacked = unacked.into_iter().map(|(_, v)| v);
            let pool = worker.pool;
            for (to, cmd) in unacked {
                let d = self.rng.range(1, 50);
                self.push(now + d, Ev::ToWorker(to, cmd));
            }
            if !self.world.any_alive(pool) {
                self.world.outages[pool].push((now, None));
            }
            for &o in &self.world.pools[pool].1.clone() {
                if self.world.workers[o].alive {
                    let inc = self.world.workers[o].incarnation;
                    self.push(now + ADOPT_POLL_MS, Ev::Adopt(o, inc));
                }
            }
            let d = self.rng.range(500, 5_000);
            self.push(now + d, Ev::WorkerRestart(w));
        }
    }

    /// A worker process starts: it takes over its host's orphaned holds
    /// first, then takes what waited in its own queue and its pool's.
    pub(super) fn worker_restart(&mut self, w: usize) -> Checked<()> {
        let now = self.sched.now;
        let p = self.world.workers[w].pool;
        if !self.world.any_alive(p) {
            if let Some(last) = self.world.outages[p].last_mut() {
                if last.1.is_none() {
                    last.1 = Some(now);
                }
            }
        }
        self.world.workers[w].alive = true;
        self.verify_cleanup(w)?;
        let inc = self.world.workers[w].incarnation;
        self.adopt(w, inc)?;
        let own = std::mem::take(&mut self.world.own_queue[w]);
        let id = self.world.workers[w].id.clone();
        for c in own {
            let to = Destination::Worker {
                worker: id.clone(),
                fallback: self.world.pools[p].0.clone(),
            };
            self.deliver(to, c)?;
        }
        let backlog = std::mem::take(&mut self.world.backlog[p]);
        for c in backlog {
            self.deliver(Destination::Pool(self.world.pools[p].0.clone()), c)?;
        }
        Ok(())
    }

    /// An array becomes slower than the freeze limit for a while.
    pub(super) fn slow_array(&mut self) {
        if !self.busy() {
            return;
        }
        let arrays: Vec<usize> = (0..self.world.pools.len())
            .filter(|p| self.world.pools[*p].0.as_str().starts_with("array."))
            .collect();
        if !arrays.is_empty() {
            let a = arrays[self.rng.below(arrays.len() as u64) as usize];
            let d = self.rng.range(FREEZE_LIMIT / 2, 2 * FREEZE_LIMIT);
            self.world.slow_until[a] = self.sched.now + d;
        }
        let next = self.rng.range(20_000, 60_000);
        self.push(self.sched.now + next, Ev::SlowArray);
    }

    /// The engine dies now, before its next append, or between its next
    /// append and its sends.
    pub(super) fn engine_crash(&mut self) -> Checked<()> {
        if !self.busy() || !self.engine.up {
            return Ok(());
        }
        match self.rng.below(3) {
            0 => self.engine.crash = Some(super::CrashPoint::BeforeAppend),
            1 => self.engine.crash = Some(super::CrashPoint::DuringSends),
            _ => {
                self.check_replay()?;
                self.go_down();
            }
        }
        Ok(())
    }

    /// Down for a moment, or (now and then) longer than the freeze limit.
    pub(super) fn go_down(&mut self) {
        self.summary.engine_crashes += 1;
        self.engine.up = false;
        self.engine.timers.clear();
        if self.other.is_some() {
            self.leader_died();
            return;
        }
        let d = if self.rng.chance(0.25) {
            self.rng.range(FREEZE_LIMIT / 2, FREEZE_LIMIT * 3 / 2)
        } else {
            self.rng.range(200, 3_000)
        };
        self.push(self.sched.now + d, Ev::EngineRestart);
    }

    /// The engine starts again: opens the log (the next epoch), resumes from
    /// its newest checkpoint and folds the log after it (`checkpoints`),
    /// decides what fell due while it was down (`Core::start`), makes that
    /// durable, then sends the commands of the stages in flight again and
    /// takes the inputs parked meanwhile.
    pub(super) fn engine_restart(&mut self) -> Checked<()> {
        self.engine.epoch = self.lead.take(self.engine.pid, self.cfg.mutation);
        self.engine.core = self.resume_core()?;
        self.engine.up = true;
        let now = self.sched.now;
        let step = self.engine.core.start(now);
        self.append(step.events)?;
        for o in step.commands {
            self.send_command(o)?;
        }
        let parked = std::mem::take(&mut self.engine.parked);
        for p in parked {
            let d = self.rng.range(1, 50);
            self.push(now + d, Ev::ToEngine(p));
        }
        self.arm_timer();
        let a = self.rng.range(20_000, 90_000) * self.cfg.crash_scale();
        self.push(now + a, Ev::EngineCrash);
        Ok(())
    }

    /// Inputs answered in the batch the engine died in: an unacknowledged
    /// report comes back; a request gets no reply (its client retries).
    pub(super) fn requeue(&mut self, input: Input) {
        // A pause, a reconcile and a recovery are asked again by their
        // operator (a recovery sent again is the same job, by its request id).
        if matches!(
            input,
            Input::Report(_) | Input::PauseSchedule { .. } | Input::Reconcile { .. } | Input::Recover { .. }
        ) {
            self.engine.parked.push(input);
        }
    }
}

/// Whether a mutation makes the simulator's engine send before it appends.
pub(super) fn sends_first(m: Option<Mutation>) -> bool {
    m == Some(Mutation::SendBeforeAppend)
}
