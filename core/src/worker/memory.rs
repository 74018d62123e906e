//! The host's freeze state of one target, as plain data: which attempt's
//! freeze holds it (by which worker process, since when, until when), the
//! first outcome of each attempt's freeze, and the attempts already thawed
//! (by whom, with what freeze window). Every worker process of the host
//! shares it, and it survives their restarts: the runtime keeps it in the
//! state directory under a lock (`recman-workers`' `hoststate`), the
//! simulator per simulated host. Serializable; bounded in size and in time
//! (an entry is forgotten some time after its attempt's thaw deadline).

use std::collections::VecDeque;

use recman_events::{JobId, SnapshotKind, StepError, WorkerId};
use serde::{Deserialize, Serialize};

/// Entries a `TargetMemory` keeps of each kind (freeze outcomes, thawed attempts).
pub const MEMORY_CAPACITY: usize = 256;

/// An entry is forgotten this long after its attempt's thaw deadline: by
/// then a freeze of that attempt is refused by its deadline anyway, and the
/// engine has stopped asking for its thaw.
pub const MEMORY_EXPIRY_MS: u64 = 10 * 60 * 1000;

/// One attempt of one job: `(job, attempt)`.
pub type AttemptKey = (JobId, u32);

/// One worker process of a host: its worker id and a token that is new at
/// every start (the runtime: random; the simulator: worker and incarnation).
/// A hold whose process is gone is taken over by a live one (`adoptable`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Process {
    pub worker: WorkerId,
    pub token: u64,
}

/// The freeze that holds a target: which attempt, by which process, since
/// when and until when its watchdog waits. Recorded before the writer's
/// freeze is called (it may land even if it fails), ended by a thaw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub job: JobId,
    pub attempt: u32,
    pub kind: SnapshotKind,
    /// The process that froze (or took the hold over).
    pub process: Process,
    /// Unix ms at which the writer's freeze returned (its call, until it returns).
    pub frozen_at_ms: u64,
    /// Unix ms at which the watchdog thaws by itself (`freeze_deadline_ms`).
    pub deadline_ms: u64,
}

impl Hold {
    pub fn key(&self) -> AttemptKey {
        (self.job, self.attempt)
    }

    /// The worker that holds it.
    pub fn worker(&self) -> &WorkerId {
        &self.process.worker
    }
}

/// Who ended an attempt's freeze (or was asked to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ThawedBy {
    /// A thaw command of the engine.
    Command,
    /// A worker by itself: a watchdog (its own or one taken over), its
    /// shutdown, or its start finding the target still frozen.
    Watchdog,
}

/// How an attempt's freeze ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thawed {
    pub by: ThawedBy,
    /// The freeze window that thaw ended, in µs (0 when it ended none):
    /// every later thaw of the attempt reports the same.
    pub window_us: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry<V> {
    key: AttemptKey,
    value: V,
    /// Forgotten after this (Unix ms).
    until_ms: u64,
}

/// Entries by attempt, oldest first: the first value of a key stays; the
/// oldest go beyond the capacity or past their time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
struct Bounded<V> {
    entries: VecDeque<Entry<V>>,
}

impl<V> Default for Bounded<V> {
    fn default() -> Self {
        Bounded {
            entries: VecDeque::new(),
        }
    }
}

impl<V> Bounded<V> {
    fn get(&self, k: AttemptKey) -> Option<&V> {
        self.entries.iter().rev().find(|e| e.key == k).map(|e| &e.value)
    }

    fn insert_first(&mut self, key: AttemptKey, value: V, until_ms: u64, capacity: usize) {
        if self.get(key).is_some() {
            return;
        }
        self.entries.push_back(Entry { key, value, until_ms });
        while self.entries.len() > capacity.max(1) {
            self.entries.pop_front();
        }
    }

    fn remove(&mut self, k: AttemptKey) {
        self.entries.retain(|e| e.key != k);
    }

    fn expire(&mut self, now_ms: u64) {
        self.entries
            .retain(|e| e.until_ms.saturating_add(MEMORY_EXPIRY_MS) >= now_ms);
    }
}

/// The host's freeze state of one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetMemory {
    #[serde(default)]
    hold: Option<Hold>,
    #[serde(default)]
    freezes: Bounded<Result<u64, StepError>>,
    #[serde(default)]
    thawed: Bounded<Thawed>,
    #[serde(skip, default = "default_capacity")]
    capacity: usize,
}

fn default_capacity() -> usize {
    MEMORY_CAPACITY
}

impl Default for TargetMemory {
    fn default() -> Self {
        TargetMemory::with_capacity(MEMORY_CAPACITY)
    }
}

impl TargetMemory {
    /// A memory that keeps `capacity` entries of each kind.
    pub fn with_capacity(capacity: usize) -> Self {
        TargetMemory {
            hold: None,
            freezes: Bounded::default(),
            thawed: Bounded::default(),
            capacity,
        }
    }

    /// The freeze that holds the target, if any.
    pub fn hold(&self) -> Option<&Hold> {
        self.hold.as_ref()
    }

    /// The first outcome of an attempt's freeze: its deadline, or its error.
    pub fn freeze_outcome(&self, key: AttemptKey) -> Option<&Result<u64, StepError>> {
        self.freezes.get(key)
    }

    /// Whether (by whom, with what window) an attempt was thawed.
    pub fn thawed(&self, key: AttemptKey) -> Option<Thawed> {
        self.thawed.get(key).copied()
    }

    /// The newest thaw this memory holds, with its attempt (`recman worker --status`).
    pub fn last_thawed(&self) -> Option<(AttemptKey, Thawed)> {
        self.thawed.entries.back().map(|e| (e.key, e.value))
    }

    /// Forgets entries long past their attempt's deadline (call before planning).
    pub fn expire(&mut self, now_ms: u64) {
        self.freezes.expire(now_ms);
        self.thawed.expire(now_ms);
    }

    /// The writer's freeze of `hold` is about to be called: the target is
    /// held from now on (the freeze may land even if it then fails), and the
    /// caller arms its watchdog for `hold.deadline_ms` before calling it.
    pub fn record_freeze_start(&mut self, hold: Hold) {
        self.hold = Some(hold);
    }

    /// The writer's freeze of `key` returned at `now_ms`: `Ok` with its
    /// deadline (the freeze window starts now), or the error. Its first
    /// outcome is what a redelivery gets. A failed freeze still holds the
    /// target (it may have landed) until a thaw or the watchdog ends it,
    /// unless the writer says it did not land (`NOT_LANDED`).
    pub fn record_freeze(&mut self, key: AttemptKey, outcome: Result<u64, StepError>, now_ms: u64) {
        if let Err(e) = &outcome {
            if e.code == super::NOT_LANDED {
                self.forget_failed_hold(key);
            }
        }
        let until = self
            .hold
            .as_ref()
            .filter(|h| h.key() == key)
            .map_or(now_ms, |h| h.deadline_ms);
        if let (Ok(_), Some(h)) = (&outcome, self.hold.as_mut()) {
            if h.key() == key {
                h.frozen_at_ms = now_ms;
            }
        }
        self.freezes.insert_first(key, outcome, until, self.capacity);
    }

    /// The failed-freeze rule of earlier builds (the `WatchdogAfterFreeze`
    /// mutation): a failed freeze counts as not landed and holds nothing.
    pub fn forget_failed_hold(&mut self, key: AttemptKey) {
        if self.hold.as_ref().is_some_and(|h| h.key() == key) {
            self.hold = None;
        }
    }

    /// A thaw of `key` (`plan` from `plan_thaw`) is carried out: the attempt
    /// counts as thawed from now on (a late freeze or snapshot of it is
    /// refused), with the window it ended, and the freeze the plan ends no
    /// longer holds the target. Recorded before the writer's thaw runs;
    /// `record_thaw_failed` undoes the release.
    pub fn record_thaw(
        &mut self,
        key: AttemptKey,
        by: ThawedBy,
        window_us: u64,
        plan: &super::ThawPlan,
        now_ms: u64,
    ) {
        let until = match plan {
            super::ThawPlan::Own(h) => h.deadline_ms,
            _ => now_ms,
        };
        self.thawed
            .insert_first(key, Thawed { by, window_us }, until, self.capacity);
        if let super::ThawPlan::Own(h) = plan {
            if self.hold.as_ref() == Some(h) {
                self.hold = None;
            }
        }
    }

    /// The writer's thaw of `hold` failed: as far as the host knows the
    /// target is still frozen by it (and a watchdog must stay armed).
    pub fn record_thaw_failed(&mut self, hold: Hold) {
        self.thawed.remove(hold.key());
        if self.hold.is_none() {
            self.hold = Some(hold);
        }
    }

    /// `process` takes over the hold of `key` (its process is gone): its
    /// watchdog thaws it from now on.
    pub fn record_adopt(&mut self, key: AttemptKey, process: Process) {
        if let Some(h) = self.hold.as_mut().filter(|h| h.key() == key) {
            h.process = process;
        }
    }
}
