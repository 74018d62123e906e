//! The simulator's virtual clock and event heap: every step of a run is an
//! `Ev` due at a virtual millisecond, taken in time order (ties in push order),
//! so a seed always replays the same run.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use recman_events::{Command, Outcome, TargetId};

use super::world::Key;
use crate::{Destination, Input};

/// Virtual time at the start of a run (Unix ms, so timestamps look real).
pub(super) const T0: u64 = 1_750_000_000_000;

/// What happens at one virtual instant.
pub(super) enum Ev {
    /// A client submits request `i` (first time, or again after no answer).
    Submit(usize),
    /// A spread run's next request (`SimConfig::over_ms`).
    Arrive(usize),
    Resubmit(usize),
    Cancel(usize),
    /// A message reaches the engine (a report, or an input parked while it was down).
    ToEngine(Input),
    /// A command reaches its queue: a worker's own, or a pool's.
    ToWorker(Destination, Command),
    /// Worker `w` (in incarnation `u32`) has the report of its step `u64`.
    Reported(usize, u32, u64, Outcome),
    /// The watchdog of process `w` (incarnation `u32`) for an attempt's
    /// freeze of target `usize` is due.
    Watchdog(usize, u32, usize, Key),
    /// Process `w` (incarnation `u32`) takes over its host's dead processes' holds.
    Adopt(usize, u32),
    /// The cut of an attempt's snapshot of these targets ends (with the
    /// members' freeze generations when it began).
    CutEnds(Key, Vec<TargetId>, Option<Vec<u64>>),
    Timer,
    EngineCrash,
    EngineRestart,
    /// The leader's process is stopped (SIGSTOP), now or in its next input
    /// (two engines).
    EnginePause,
    /// Engine process `usize` resumes (SIGCONT).
    EngineResume(usize),
    /// Dead engine process `usize` starts again: as a standby, or as the
    /// leader if the lock is free.
    EngineStart(usize),
    /// Standby process `usize` finds the lock free (the leader died, or its
    /// lease ran out) and takes over, if it still is.
    Takeover(usize),
    WorkerCrash,
    WorkerRestart(usize),
    /// An array becomes slower than the freeze limit for a while.
    SlowArray,
    /// The requests ended: every schedule is paused.
    PauseSchedules,
    /// An operator asks for a reconcile of target `usize`.
    Reconcile(usize),
    /// The storage loses a restore point behind recman's back (an array
    /// expiration, a delete by hand).
    LoseSnapshot,
    /// An operator asks for a recovery on target `usize` (the `u32`th time:
    /// one refused as busy is asked again later).
    Recover(usize, u32),
    /// An operator prunes target `usize` (`recman prune`).
    Prune(usize),
    /// Process `w` (incarnation `u32`) tries its recovery step `u64` again
    /// (it waited for the host's recovery lock).
    RecoveryTake(usize, u32, u64),
    /// The work of a restore or rollback by process `w` (incarnation `u32`)
    /// on target `usize` ends with the live data `Option<u64>` (`None`: it
    /// broke off half way).
    RecoveryEnds(usize, u32, usize, Option<u64>),
}

struct Item {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}

impl Eq for Item {}

impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// The virtual clock and the events still to come.
pub(super) struct Scheduler {
    /// Now, in virtual Unix ms.
    pub now: u64,
    seq: u64,
    heap: BinaryHeap<Item>,
}

impl Scheduler {
    pub fn new() -> Scheduler {
        Scheduler {
            now: T0,
            seq: 0,
            heap: BinaryHeap::new(),
        }
    }

    /// Schedules `ev` at virtual time `at`.
    pub fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Item {
            at,
            seq: self.seq,
            ev,
        });
    }

    /// The next event; the clock moves to its time.
    pub fn pop(&mut self) -> Option<Ev> {
        let item = self.heap.pop()?;
        self.now = item.at;
        Some(item.ev)
    }

    /// Milliseconds since the start of the run (for traces).
    pub fn elapsed(&self) -> u64 {
        self.now - T0
    }
}
