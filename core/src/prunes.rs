//! The deletes asked for and not answered (`State::prunes`), by target and
//! name, with an index by the job that asked.
//!
//! Every `SnapshotDeleted` and `PruneFailed` asks whether the job that
//! asked still waits for another delete, and its retry timer asks which:
//! with a scan of every pending delete, a fleet's retention (thousands
//! pending after a burst of scheduled jobs) made each of those decisions
//! as long as the whole map. The index answers both from the job's own
//! entries. Only the map is serialized (the index is rebuilt), and only it
//! is compared.

use std::collections::{btree_map, BTreeMap, BTreeSet};

use recman_events::{JobId, TargetId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::state::PendingPrune;

/// A pending delete: the point's target and name.
pub type PruneKey = (TargetId, String);

/// See the module comment.
#[derive(Clone, Debug, Default)]
pub struct PendingPrunes {
    by_key: BTreeMap<PruneKey, PendingPrune>,
    by_requester: BTreeMap<JobId, BTreeSet<PruneKey>>,
}

impl PendingPrunes {
    pub fn get(&self, k: &PruneKey) -> Option<&PendingPrune> {
        self.by_key.get(k)
    }

    pub fn contains_key(&self, k: &PruneKey) -> bool {
        self.by_key.contains_key(k)
    }

    /// Records `k` as asked for; the earlier entry of `k`, if any.
    pub fn insert(&mut self, k: PruneKey, p: PendingPrune) -> Option<PendingPrune> {
        self.by_requester
            .entry(p.requester)
            .or_default()
            .insert(k.clone());
        let old = self.by_key.insert(k.clone(), p)?;
        if old.requester != self.by_key[&k].requester {
            self.unindex(old.requester, &k);
        }
        Some(old)
    }

    pub fn remove(&mut self, k: &PruneKey) -> Option<PendingPrune> {
        let p = self.by_key.remove(k)?;
        self.unindex(p.requester, k);
        Some(p)
    }

    fn unindex(&mut self, requester: JobId, k: &PruneKey) {
        if let btree_map::Entry::Occupied(mut e) = self.by_requester.entry(requester) {
            e.get_mut().remove(k);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// Whether `requester` waits for any delete.
    pub fn asked_by(&self, requester: JobId) -> bool {
        self.by_requester.contains_key(&requester)
    }

    /// The deletes `requester` waits for, by target then name.
    pub fn of(&self, requester: JobId) -> impl Iterator<Item = &PruneKey> {
        self.by_requester.get(&requester).into_iter().flatten()
    }

    pub fn iter(&self) -> btree_map::Iter<'_, PruneKey, PendingPrune> {
        self.by_key.iter()
    }

    pub fn values(&self) -> btree_map::Values<'_, PruneKey, PendingPrune> {
        self.by_key.values()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

impl<'a> IntoIterator for &'a PendingPrunes {
    type Item = (&'a PruneKey, &'a PendingPrune);
    type IntoIter = btree_map::Iter<'a, PruneKey, PendingPrune>;
    fn into_iter(self) -> Self::IntoIter {
        self.by_key.iter()
    }
}

impl PartialEq for PendingPrunes {
    fn eq(&self, other: &Self) -> bool {
        self.by_key == other.by_key
    }
}

impl Eq for PendingPrunes {}

impl Serialize for PendingPrunes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.by_key.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PendingPrunes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = PendingPrunes::default();
        for (k, p) in BTreeMap::<PruneKey, PendingPrune>::deserialize(d)? {
            out.insert(k, p);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, n: &str) -> PruneKey {
        (TargetId::from(t), n.to_string())
    }

    fn pending(requester: JobId) -> PendingPrune {
        PendingPrune {
            owner: JobId::NONE,
            requester,
            tries: 1,
        }
    }

    #[test]
    fn the_index_follows_inserts_moves_and_removes() {
        let (a, b) = (JobId::from_parts(1, 1), JobId::from_parts(2, 2));
        let mut p = PendingPrunes::default();
        p.insert(key("t2", "x"), pending(a));
        p.insert(key("t1", "y"), pending(a));
        p.insert(key("t1", "z"), pending(b));
        assert_eq!(
            p.of(a).cloned().collect::<Vec<_>>(),
            [key("t1", "y"), key("t2", "x")]
        );
        // Asked again by b: it moves.
        assert_eq!(p.insert(key("t1", "y"), pending(b)).map(|o| o.requester), Some(a));
        assert_eq!(p.of(a).cloned().collect::<Vec<_>>(), [key("t2", "x")]);
        assert_eq!(p.of(b).count(), 2);
        p.remove(&key("t2", "x"));
        assert!(!p.asked_by(a) && p.asked_by(b));
        let bytes = postcard::to_allocvec(&p).unwrap();
        let back: PendingPrunes = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            back.of(b).cloned().collect::<Vec<_>>(),
            [key("t1", "y"), key("t1", "z")]
        );
        // The same bytes as the map alone (checkpoint layout unchanged).
        assert_eq!(bytes, postcard::to_allocvec(&p.by_key).unwrap());
    }
}
