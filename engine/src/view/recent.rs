//! The last finished jobs (or recovery jobs) that left the core state, kept
//! for reads: the jobs list and job pages show them; older ones are read
//! from the log.

use std::collections::{BTreeMap, VecDeque};

use recman_core::recovery::Op;
use recman_core::Job;
use recman_events::JobId;

/// What the view keeps, by its job id.
pub(super) trait Identified {
    fn job_id(&self) -> JobId;
}

impl Identified for Job {
    fn job_id(&self) -> JobId {
        self.id
    }
}

impl Identified for Op {
    fn job_id(&self) -> JobId {
        self.id
    }
}

/// At most a cap of items, by id; the oldest to leave goes first.
#[derive(Clone, Debug)]
pub(super) struct Recent<T> {
    items: BTreeMap<JobId, T>,
    /// In the order they left the core state, oldest first.
    order: VecDeque<JobId>,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Recent {
            items: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T: Identified + Clone> Recent<T> {
    /// Keeps `item`, which just left the core state; calls `gone` with each
    /// id pushed out past `cap`.
    pub fn keep(&mut self, item: T, cap: usize, mut gone: impl FnMut(JobId)) {
        let id = item.job_id();
        self.order.push_back(id);
        self.items.insert(id, item);
        while self.order.len() > cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.items.remove(&old);
            gone(old);
        }
    }

    pub fn get(&self, id: &JobId) -> Option<&T> {
        self.items.get(id)
    }

    pub fn contains(&self, id: &JobId) -> bool {
        self.items.contains_key(id)
    }

    /// Every item in the order they left, oldest first (a checkpoint's
    /// view section).
    pub fn in_order(&self) -> Vec<T> {
        self.order
            .iter()
            .filter_map(|id| self.items.get(id).cloned())
            .collect()
    }

    /// The items of a view section (oldest first).
    pub fn from_list(list: Vec<T>) -> Self {
        Recent {
            order: list.iter().map(Identified::job_id).collect(),
            items: list.into_iter().map(|t| (t.job_id(), t)).collect(),
        }
    }

    /// `live` (ascending ids) and these, merged newest id first (an id is
    /// in one of them): job ids are UUIDv7, time-ordered.
    pub fn newest_first<'a>(
        &'a self,
        live: impl DoubleEndedIterator<Item = &'a T> + 'a,
    ) -> impl Iterator<Item = &'a T> + 'a {
        let mut live = live.rev().peekable();
        let mut recent = self.items.values().rev().peekable();
        std::iter::from_fn(move || match (live.peek(), recent.peek()) {
            (Some(a), Some(b)) if b.job_id() > a.job_id() => recent.next(),
            (Some(_), _) => live.next(),
            (None, _) => recent.next(),
        })
    }
}
