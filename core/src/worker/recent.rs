//! What one worker process remembers and loses when it ends: the reports of
//! the commands it answered (a redelivery is answered from here without
//! running anything), and the snapshot names its prunes deleted. Bounded,
//! oldest first.

use std::collections::{HashMap, VecDeque};

/// Entries a `Recent` keeps by default.
pub const RECENT_CAPACITY: usize = 4096;

/// A bounded map by string key that keeps the first value of each key and
/// forgets the oldest keys beyond its capacity.
#[derive(Clone, Debug)]
pub struct Recent<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
    capacity: usize,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent::with_capacity(RECENT_CAPACITY)
    }
}

impl<V> Recent<V> {
    pub fn with_capacity(capacity: usize) -> Self {
        Recent {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, k: &str) -> Option<&V> {
        self.map.get(k)
    }

    pub fn contains(&self, k: &str) -> bool {
        self.map.contains_key(k)
    }

    /// Inserts `v` unless `k` is known already (the first value stays).
    pub fn insert_first(&mut self, k: String, v: V) {
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

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
