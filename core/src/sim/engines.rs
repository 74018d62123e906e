//! Two engines on one log (`SimConfig::engines = 2`), as the runtime runs
//! them on PostgreSQL: one leader holds the lock and an epoch, every append
//! is checked against the log's current epoch (fencing), and a cold standby
//! waits for the lock.
//!
//! - The leader dies: its lock session dies with it, and the standby's next
//!   poll (every `POLL_MS`) takes the lock and the next epoch, replays the log
//!   (`Core::apply`, the same cold start as a restart), decides what fell due
//!   (`Core::start`), then sends the commands in flight again.
//! - The leader stops (SIGSTOP), between inputs, after deciding a batch
//!   (its commit pending) or half way through its sends: past its lease
//!   (`LEASE_MS` from its last renewal) the standby takes over; a shorter
//!   stop, or one that ends before the standby's poll, resumes as leader.
//!   Inputs that come meanwhile wait in the queue, or in the stopped
//!   process's hand (prefetched, unacknowledged).
//! - A deposed leader resumes on its stale state believing it leads: its
//!   pending commit and every later append are refused (the epoch moved on);
//!   what it had made durable before it stopped may still go out (the
//!   runtime sends after the append returned, and nothing stops a process
//!   between the two); its first refused append stops it, or else its next
//!   lease renewal; what it took and did not acknowledge goes to the leader.
//!   It starts again later as the standby.
//!
//! The checks (`appends_by_leader`, `one_leader_per_epoch` in `invariants`)
//! read what this module records: who appended under which epoch, and who
//! acted (appended or sent) for each epoch.

use std::collections::{BTreeMap, VecDeque};

use recman_events::Event;

use super::scheduler::Ev;
use super::{network, Checked, CrashPoint, Engine, Sim, FREEZE_LIMIT};
use crate::{Core, CoreConfig, Input, Mutation, Outgoing, Reply};

/// The leader's lease: a standby may take over this long after the leader's
/// last renewal.
pub(super) const LEASE_MS: u64 = 5_000;

/// How often the leader renews its lease.
const RENEW_MS: u64 = 1_000;

/// How often a standby tries the lock.
const POLL_MS: u64 = 1_000;

/// An engine process's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    Running,
    /// Stopped; its lease ends at `lease_until` (virtual ms).
    Paused {
        lease_until: u64,
    },
    Dead,
}

/// A batch decided and folded in, its commit not done when the process stopped.
pub(super) struct Pending {
    pub events: Vec<Event>,
    pub commands: Vec<Outgoing>,
    pub input: Input,
}

/// What a stopped engine process has in hand.
#[derive(Default)]
pub(super) struct Stalled {
    pub pending: Option<Pending>,
    /// Commands of a committed batch, not sent yet.
    pub outbox: Vec<Outgoing>,
    /// The input of that batch, not acknowledged yet.
    pub unacked: Option<Input>,
    /// Inputs it took from its queue while stopped (prefetched).
    pub held: Vec<Input>,
}

/// The log's leadership row, and who appended and acted under which epoch.
pub(super) struct Leadership {
    /// The leader row: the current epoch and the process that took it.
    pub epoch: u64,
    pub holder: usize,
    /// Runs of the log: (first record, epoch, process that appended them).
    pub appends: Vec<(usize, u64, usize)>,
    /// The process that acted (appended or sent) for each epoch.
    pub acted: Vec<Option<usize>>,
}

impl Leadership {
    /// Process `holder` opened the log first: epoch 1.
    pub fn new(holder: usize) -> Leadership {
        Leadership {
            epoch: 1,
            holder,
            appends: Vec::new(),
            acted: Vec::new(),
        }
    }

    /// Process `pid` takes the lock: the next epoch (or, deliberately
    /// broken, the same one).
    pub fn take(&mut self, pid: usize, mutation: Option<Mutation>) -> u64 {
        if mutation != Some(Mutation::TakeoverKeepsEpoch) {
            self.epoch += 1;
        }
        self.holder = pid;
        self.epoch
    }
}

/// The core of a process that is not the leader: a cold standby keeps no
/// state (it replays the log when it takes over).
pub(super) fn idle_core(seed: u64) -> Core {
    Core::new(CoreConfig {
        targets: BTreeMap::new(),
        schedules: Vec::new(),
        seed,
        mutation: None,
        bounds: Default::default(),
    })
}

impl Sim {
    /// An append by process `pid` under `epoch`: refused when the log's
    /// epoch moved on (unless deliberately broken); else checked
    /// (`appends_by_leader`, `one_leader_per_epoch`) and made durable.
    pub(super) fn store_append(&mut self, pid: usize, epoch: u64, events: Vec<Event>) -> Checked<bool> {
        if events.is_empty() {
            return Ok(true);
        }
        if epoch != self.lead.epoch && self.cfg.mutation != Some(Mutation::NoFencing) {
            self.summary.fenced += 1;
            return Ok(false);
        }
        self.check_append_by_leader(pid, epoch)?;
        self.check_one_leader(pid, epoch)?;
        if self
            .lead
            .appends
            .last()
            .is_none_or(|r| (r.1, r.2) != (epoch, pid))
        {
            self.lead.appends.push((self.log_len, epoch, pid));
        }
        self.log_append(events)?;
        self.maybe_checkpoint(pid);
        Ok(true)
    }

    /// An input for a leader that does not take inputs now: a stopped
    /// process has taken some from its queue, the rest wait there.
    pub(super) fn stopped_input(&mut self, input: Input) {
        if matches!(self.engine.life, Life::Paused { .. }) && self.erng.chance(0.5) {
            self.engine.stalled.held.push(input);
        } else {
            self.engine.parked.push(input);
        }
    }

    /// The leader stops now, after deciding its next batch, or half way
    /// through the sends of its next batch.
    pub(super) fn engine_pause(&mut self) -> Checked<()> {
        if !self.busy() || !self.engine.up || self.other.is_none() {
            return Ok(());
        }
        match self.erng.below(3) {
            0 => self.engine.pause = Some(CrashPoint::BeforeAppend),
            1 => self.engine.pause = Some(CrashPoint::DuringSends),
            _ => self.stop_leader(),
        }
        Ok(())
    }

    /// The leader stops in the middle of `input`'s batch. The decision is
    /// checked as made (a snapshot asked in time); its sends leave later.
    pub(super) fn pause_in(&mut self, input: Input, point: CrashPoint) -> Checked<Reply> {
        let step =
            self.engine
                .core
                .handle_as(input.clone(), &super::recovery::sender(&input), self.sched.now);
        let mut commands = step.commands;
        if network::sends_first(self.cfg.mutation) {
            for o in commands.drain(..) {
                self.send_command(o)?;
            }
        }
        for o in &commands {
            self.check_snapshot_sent_in_time(&o.command)?;
        }
        match point {
            CrashPoint::BeforeAppend => {
                self.engine.stalled.pending = Some(Pending {
                    events: step.events,
                    commands,
                    input,
                });
            }
            CrashPoint::DuringSends => {
                self.append(step.events)?;
                let n = self.erng.below(commands.len() as u64 + 1) as usize;
                let later = commands.split_off(n);
                for o in commands {
                    self.send_command(o)?;
                }
                self.engine.stalled.outbox = later;
                self.engine.stalled.unacked = Some(input);
            }
        }
        self.stop_leader();
        Ok(Reply::None)
    }

    /// The leader's process stops: for less than its lease now and then,
    /// mostly for longer; the standby takes over once the lease ran out.
    fn stop_leader(&mut self) {
        let now = self.sched.now;
        self.summary.pauses += 1;
        self.engine.up = false;
        self.engine.timers.clear();
        // Its last renewal was up to a renewal period ago.
        let lease_until = now + LEASE_MS - self.erng.range(0, RENEW_MS);
        self.engine.life = Life::Paused { lease_until };
        let d = if self.erng.chance(0.75) {
            self.erng.range(LEASE_MS + 500, 3 * LEASE_MS)
        } else {
            self.erng.range(300, LEASE_MS - RENEW_MS)
        };
        self.push(now + d, Ev::EngineResume(self.engine.pid));
        if let Some(pid) = self.standby() {
            let at = lease_until + self.erng.range(1, POLL_MS);
            self.push(at, Ev::Takeover(pid));
        }
    }

    /// The running standby, if there is one.
    fn standby(&self) -> Option<usize> {
        self.other
            .as_ref()
            .filter(|o| o.life == Life::Running)
            .map(|o| o.pid)
    }

    /// The leader's process died (two engines): it starts again a while
    /// later; the standby, if one runs, takes the lock at its next poll.
    pub(super) fn leader_died(&mut self) {
        let now = self.sched.now;
        self.engine.life = Life::Dead;
        self.engine.pause = None;
        self.engine.stalled = Stalled::default();
        let d = if self.erng.chance(0.25) {
            self.erng.range(FREEZE_LIMIT / 2, FREEZE_LIMIT * 3 / 2)
        } else {
            self.erng.range(200, 3_000)
        };
        self.push(now + d, Ev::EngineStart(self.engine.pid));
        if let Some(pid) = self.standby() {
            let d = self.erng.range(1, POLL_MS);
            self.push(now + d, Ev::Takeover(pid));
        }
    }

    /// Whether a standby can take the lock: the leader's process died, or
    /// it is stopped past its lease (the standby ends its lock session).
    fn lock_free(&self) -> bool {
        match self.engine.life {
            Life::Running => false,
            Life::Dead => true,
            Life::Paused { lease_until } => self.sched.now >= lease_until,
        }
    }

    /// Dead process `pid` starts again: the leader's, if nobody took over
    /// meanwhile (the lock is free: it leads again); the other's as the
    /// standby, which takes over at its next poll if the lock is free by
    /// then.
    pub(super) fn engine_start(&mut self, pid: usize) -> Checked<()> {
        if self.engine.pid == pid && self.engine.life == Life::Dead {
            return self.lead_start();
        }
        let now = self.sched.now;
        let Some(o) = self
            .other
            .as_mut()
            .filter(|o| o.pid == pid && o.life == Life::Dead)
        else {
            return Ok(());
        };
        o.life = Life::Running;
        let at = match self.engine.life {
            Life::Running => return Ok(()),
            Life::Dead => now,
            Life::Paused { lease_until } => lease_until.max(now),
        };
        let d = self.erng.range(1, POLL_MS);
        self.push(at + d, Ev::Takeover(pid));
        Ok(())
    }

    /// Standby `pid` takes over, if it still runs and the lock is still free.
    pub(super) fn takeover(&mut self, pid: usize) -> Checked<()> {
        if self.standby() != Some(pid) || !self.lock_free() {
            return Ok(());
        }
        let Some(old) = self.other.as_mut() else {
            return Ok(());
        };
        std::mem::swap(&mut self.engine, old);
        // What waited in the queue for the old leader now waits for this one.
        self.engine.parked = std::mem::take(&mut old.parked);
        if old.life == Life::Dead {
            old.core = idle_core(self.cfg.seed);
            old.timers.clear();
        }
        self.summary.takeovers += 1;
        self.lead_start()
    }

    /// The engine process in `self.engine` takes the lock and the next
    /// epoch, resumes from the newest checkpoint and the log after it
    /// (`checkpoints`), decides what fell due, makes it
    /// durable, sends the commands in flight again and takes what waited.
    fn lead_start(&mut self) -> Checked<()> {
        let now = self.sched.now;
        self.engine.epoch = self.lead.take(self.engine.pid, self.cfg.mutation);
        self.engine.core = self.resume_core()?;
        self.engine.up = true;
        self.engine.life = Life::Running;
        self.engine.crash = None;
        self.engine.pause = None;
        self.engine.timers.clear();
        let step = self.engine.core.start(now);
        self.append(step.events)?;
        for o in step.commands {
            self.send_command(o)?;
        }
        for p in std::mem::take(&mut self.engine.parked) {
            let d = self.erng.range(1, 50);
            self.push(now + d, Ev::ToEngine(p));
        }
        self.arm_timer();
        self.next_engine_fault();
        Ok(())
    }

    /// The next crash or stop of the leader, while requests are unfinished.
    fn next_engine_fault(&mut self) {
        if !self.cfg.faults.crash() || !self.busy() {
            return;
        }
        let a = self.erng.range(20_000, 90_000);
        let ev = if self.erng.chance(0.5) {
            Ev::EngineCrash
        } else {
            Ev::EnginePause
        };
        self.push(self.sched.now + a, ev);
    }

    /// Process `pid` resumes: as the leader if nobody took over, else
    /// deposed.
    pub(super) fn engine_resume(&mut self, pid: usize) -> Checked<()> {
        if self.engine.pid == pid && matches!(self.engine.life, Life::Paused { .. }) {
            return self.resume_leader();
        }
        let deposed = self
            .other
            .as_ref()
            .is_some_and(|o| o.pid == pid && matches!(o.life, Life::Paused { .. }));
        if deposed {
            return self.resume_deposed();
        }
        Ok(())
    }

    /// The leader resumes (it still holds the lock and the epoch): it
    /// commits its pending batch, sends what it held, takes what waited.
    fn resume_leader(&mut self) -> Checked<()> {
        let now = self.sched.now;
        self.engine.life = Life::Running;
        self.engine.up = true;
        let st = std::mem::take(&mut self.engine.stalled);
        if let Some(p) = st.pending {
            self.append(p.events)?;
            for o in p.commands {
                self.send_deferred(o)?;
            }
        }
        for o in st.outbox {
            self.send_deferred(o)?;
        }
        let parked = std::mem::take(&mut self.engine.parked);
        for i in st.held.into_iter().chain(parked) {
            let d = self.erng.range(1, 50);
            self.push(now + d, Ev::ToEngine(i));
        }
        self.arm_timer();
        self.next_engine_fault();
        Ok(())
    }

    /// A deposed leader resumes (`act_deposed`), then stops: its process
    /// exits on the refused append (or its failed lease renewal), what it
    /// had not acknowledged goes to the leader's queue, and it starts again
    /// later as the standby.
    fn resume_deposed(&mut self) -> Checked<()> {
        let Some(mut st) = self.other.take() else {
            return Ok(());
        };
        st.life = Life::Running;
        self.stale = Some((st.pid, st.epoch));
        let acted = self.act_deposed(&mut st);
        self.stale = None;
        let pid = st.pid;
        st.life = Life::Dead;
        st.up = false;
        st.timers.clear();
        st.core = idle_core(self.cfg.seed);
        self.other = Some(st);
        let now = self.sched.now;
        for i in acted? {
            if matches!(
                i,
                Input::Report(_)
                    | Input::PauseSchedule { .. }
                    | Input::Reconcile { .. }
                    | Input::Recover { .. }
            ) {
                let d = self.erng.range(1, 50);
                self.push(now + d, Ev::ToEngine(i));
            }
        }
        let d = self.erng.range(500, 5_000);
        self.push(now + d, Ev::EngineStart(pid));
        Ok(())
    }

    /// A deposed leader acts on its stale state: it commits the batch it
    /// was in, sends what it had committed, then handles what it had taken
    /// and the timers that fell due, in either order. Its appends are
    /// refused; the first refusal stops it (deliberately broken: it sends
    /// anyway and goes on). Returns the inputs it did not acknowledge.
    fn act_deposed(&mut self, st: &mut Engine) -> Checked<Vec<Input>> {
        let now = self.sched.now;
        let ignore = self.cfg.mutation == Some(Mutation::IgnoreFenced);
        let stalled = std::mem::take(&mut st.stalled);
        let mut unacked: Vec<Input> = stalled.unacked.into_iter().collect();
        let mut queue: VecDeque<Input> = stalled.held.into();
        if st.core.next_deadline().is_some_and(|d| d <= now) {
            if self.erng.chance(0.5) {
                queue.push_front(Input::TimerFired);
            } else {
                queue.push_back(Input::TimerFired);
            }
        }
        if let Some(p) = stalled.pending {
            if !self.store_append(st.pid, st.epoch, p.events)? && !ignore {
                unacked.push(p.input);
                unacked.extend(queue);
                return Ok(unacked);
            }
            for o in p.commands {
                self.send_deferred(o)?;
            }
        }
        for o in stalled.outbox {
            self.send_deferred(o)?;
        }
        while let Some(input) = queue.pop_front() {
            let step = st
                .core
                .handle_as(input.clone(), &super::recovery::sender(&input), now);
            if !self.store_append(st.pid, st.epoch, step.events)? && !ignore {
                unacked.push(input);
                unacked.extend(queue);
                return Ok(unacked);
            }
            for o in step.commands {
                self.send_command(o)?;
            }
        }
        Ok(unacked)
    }
}
