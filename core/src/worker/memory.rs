//! What a worker remembers of one target, as plain data: the freeze that holds
//! it, the outcome of each attempt's freeze, the attempts already thawed and
//! the snapshot names retention deleted. Bounded: the oldest entries go first.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use recman_events::{JobId, SnapshotKind, StepError, WorkerId};

use super::ThawPlan;

/// Entries a `TargetMemory` keeps of each kind (freeze outcomes, thawed
/// attempts, pruned names), like the runtime's redelivery memory.
pub const MEMORY_CAPACITY: usize = 4096;

/// One attempt of one job: `(job, attempt)`.
pub type AttemptKey = (JobId, u32);

/// The freeze that holds a target: which attempt, by which worker, since when
/// and until when its watchdog waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub job: JobId,
    pub attempt: u32,
    pub kind: SnapshotKind,
    pub worker: WorkerId,
    /// Unix ms at which the writer's freeze returned.
    pub frozen_at_ms: u64,
    /// Unix ms at which the watchdog thaws by itself (`freeze_deadline_ms`).
    pub deadline_ms: u64,
}

impl Hold {
    pub fn key(&self) -> AttemptKey {
        (self.job, self.attempt)
    }
}

/// Who ended an attempt's freeze (or was asked to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThawedBy {
    /// A thaw command of the engine.
    Command,
    /// The worker by itself: its watchdog, its shutdown, or its start finding
    /// the target still frozen.
    Watchdog,
}

/// A map that keeps the first value of each key and forgets the oldest keys
/// beyond its capacity.
#[derive(Clone, Debug)]
struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Clone + Eq + Hash, V> Bounded<K, V> {
    fn new(capacity: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn get<Q: ?Sized + Hash + Eq>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.map.get(k)
    }

    /// Inserts `v` unless `k` is known already (the first value stays).
    fn insert_first(&mut self, k: K, v: V) {
        if self.map.contains_key(&k) {
            return;
        }
        self.map.insert(k.clone(), v);
        self.order.push_back(k);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// What a worker remembers of one target. The worker runtime keeps one per
/// configured target (lost when the process ends); the simulator keeps one
/// per simulated target.
#[derive(Clone, Debug)]
pub struct TargetMemory {
    hold: Option<Hold>,
    freezes: Bounded<AttemptKey, Result<u64, StepError>>,
    thawed: Bounded<AttemptKey, ThawedBy>,
    pruned: Bounded<String, ()>,
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
            freezes: Bounded::new(capacity),
            thawed: Bounded::new(capacity),
            pruned: Bounded::new(capacity),
        }
    }

    /// The freeze that holds the target, if any.
    pub fn hold(&self) -> Option<&Hold> {
        self.hold.as_ref()
    }

    /// The outcome of an attempt's freeze: its deadline, or its error.
    pub fn freeze_outcome(&self, key: AttemptKey) -> Option<&Result<u64, StepError>> {
        self.freezes.get(&key)
    }

    /// Whether (and by whom) an attempt was thawed.
    pub fn thawed(&self, key: AttemptKey) -> Option<ThawedBy> {
        self.thawed.get(&key).copied()
    }

    /// Whether retention deleted the snapshot `name`.
    pub fn is_pruned(&self, name: &str) -> bool {
        self.pruned.get(name).is_some()
    }

    /// The writer's freeze ran for `key`: its outcome is what a redelivery
    /// gets; when it froze, the target is held.
    pub fn record_freeze(&mut self, key: AttemptKey, outcome: Result<Hold, StepError>) {
        let first = match outcome {
            Ok(hold) => {
                let deadline = hold.deadline_ms;
                self.hold = Some(hold);
                Ok(deadline)
            }
            Err(e) => Err(e),
        };
        self.freezes.insert_first(key, first);
    }

    /// A thaw of `key` (`plan` from `plan_thaw`) is carried out: the attempt
    /// counts as thawed from now on (a late freeze of it is refused), and the
    /// freeze the plan ends no longer holds the target. Recorded before the
    /// writer's thaw runs; `record_thaw_failed` undoes the release.
    pub fn record_thaw(&mut self, key: AttemptKey, by: ThawedBy, plan: &ThawPlan) {
        self.thawed.insert_first(key, by);
        if let ThawPlan::Own(h) = plan {
            if self.hold.as_ref() == Some(h) {
                self.hold = None;
            }
        }
    }

    /// The writer's thaw of `hold` failed: as far as the worker knows the
    /// target is still frozen by it (and its watchdog must stay armed).
    pub fn record_thaw_failed(&mut self, hold: Hold) {
        if self.hold.is_none() {
            self.hold = Some(hold);
        }
    }

    /// Retention deleted `name`: a late snapshot command for it is refused.
    pub fn record_pruned(&mut self, name: &str) {
        self.pruned.insert_first(name.to_string(), ());
    }
}
