//! The simulated network and its faults: message delays, drops, duplicates
//! and late copies (with `--faults net`), routing to a worker or a pool, and
//! worker and engine crashes and restarts (with `--faults crash`).

use recman_events::{Command, Outcome, Report, Stage, SCHEMA_VERSION};

use super::scheduler::{Ev, T0};
use super::{Checked, Sim};
use crate::{Core, Destination, Input, Outgoing};

impl Sim {
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
        let d = if self.rng.chance(0.01) {
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

    /// A command the engine made durable goes onto the network.
    pub(super) fn send_command(&mut self, o: Outgoing) {
        let c = &o.command;
        let line = format!(
            "cmd  {} a{} {:?} -> {:?}{}",
            c.stage,
            c.attempt,
            c.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            o.to,
            c.thaw_deadline_ms
                .map(|d| format!(" watchdog@{}", d - T0))
                .unwrap_or_default()
        );
        self.note(c.job, line);
        for d in self.net_delays() {
            self.push(
                self.sched.now + d,
                Ev::ToWorker(usize::MAX, o.to.clone(), o.command.clone()),
            );
        }
    }

    /// A command reaches its queue: the named worker when it is alive, else
    /// its fallback pool; a pool with no live worker keeps it until one starts.
    pub(super) fn deliver(&mut self, _w: usize, to: Destination, cmd: Command) {
        let pool_name = match &to {
            Destination::Worker { worker, fallback } => {
                if let Some(&w) = self.world.worker_index.get(worker) {
                    if self.world.workers[w].alive {
                        self.start_work(w, cmd);
                        return;
                    }
                }
                fallback.clone()
            }
            Destination::Pool(p) => p.clone(),
        };
        let Some(&p) = self.world.pool_index.get(&pool_name) else {
            return;
        };
        let alive: Vec<usize> = self.world.pools[p]
            .1
            .iter()
            .copied()
            .filter(|w| self.world.workers[*w].alive)
            .collect();
        if alive.is_empty() {
            self.world.backlog[p].push(cmd);
            return;
        }
        let w = alive[self.rng.below(alive.len() as u64) as usize];
        self.start_work(w, cmd);
    }

    /// Worker `w` takes a command; it finishes after the step's latency.
    fn start_work(&mut self, w: usize, cmd: Command) {
        let lat = match cmd.stage {
            Stage::Freeze => self.rng.range(2, 40),
            Stage::Snapshot => {
                if self.rng.chance(0.005) {
                    self.rng.range(6_000, 14_000)
                } else {
                    self.rng.range(5, 200)
                }
            }
            _ => self.rng.range(2, 40),
        };
        let inc = self.world.workers[w].incarnation;
        self.push(self.sched.now + lat, Ev::Work(w, inc, cmd));
    }

    /// Worker `w` sends the report of `cmd` to the engine.
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
    }

    /// A random worker dies (its steps in flight are lost) and restarts later.
    pub(super) fn worker_crash(&mut self) {
        if !self.busy() {
            return;
        }
        let w = self.rng.below(self.world.workers.len() as u64) as usize;
        if self.world.workers[w].alive {
            self.world.workers[w].alive = false;
            self.world.workers[w].incarnation += 1;
            let d = self.rng.range(500, 5_000);
            self.push(self.sched.now + d, Ev::WorkerRestart(w));
        }
        let d = self.rng.range(500, 4_000);
        self.push(self.sched.now + d, Ev::WorkerCrash);
    }

    /// A worker is back and takes what waited in its pool.
    pub(super) fn worker_restart(&mut self, w: usize) {
        self.world.workers[w].alive = true;
        let p = self.world.workers[w].pool;
        let backlog = std::mem::take(&mut self.world.backlog[p]);
        for c in backlog {
            self.deliver(w, Destination::Pool(self.world.pools[p].0.clone()), c);
        }
    }

    /// The engine dies now, or (half the time) in the middle of its next input.
    pub(super) fn engine_crash(&mut self) -> Checked<()> {
        if !self.busy() || !self.engine.up {
            return Ok(());
        }
        if self.rng.chance(0.5) {
            self.engine.crash_mid_input = true;
            return Ok(());
        }
        self.check_replay()?;
        self.go_down();
        Ok(())
    }

    pub(super) fn go_down(&mut self) {
        self.summary.engine_crashes += 1;
        self.engine.up = false;
        self.engine.timers.clear();
        let d = self.rng.range(200, 3_000);
        self.push(self.sched.now + d, Ev::EngineRestart);
    }

    /// The engine starts again: replays its log, re-sends the commands of the
    /// stages in flight, takes the inputs parked meanwhile.
    pub(super) fn engine_restart(&mut self) -> Checked<()> {
        let mut core = Core::with_mutation(self.engine.cfg.clone(), self.cfg.mutation);
        for e in &self.engine.log {
            core.apply(e);
        }
        self.engine.core = core;
        self.engine.up = true;
        for o in self.engine.core.recover_commands() {
            self.send_command(o);
        }
        let parked = std::mem::take(&mut self.engine.parked);
        for p in parked {
            let d = self.rng.range(1, 50);
            self.push(self.sched.now + d, Ev::ToEngine(p));
        }
        self.arm_timer();
        // A timer may be due already.
        let now = self.sched.now;
        self.push(now, Ev::Timer);
        self.engine.timers.insert(now);
        let a = self.rng.range(20_000, 90_000);
        self.push(now + a, Ev::EngineCrash);
        Ok(())
    }
}
