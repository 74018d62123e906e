//! The request-id window (`State::requests`): each id within
//! `Bounds::request_window_ms` with its entry, the id stored once.
//!
//! A fleet's day is a million ids. The window used to hold each id twice (a
//! map keyed by id, and a queue of ids in arrival order for expiry), some
//! 190 bytes per id. Here the entries sit once in arrival order, and an
//! index of their sequence numbers, hashed by id, finds them: about 110
//! bytes per id for a 36-character id, and expiry pops the front.
//!
//! An id requested again (after its window, see `decide`) gets a new entry;
//! the older one stays in the queue, stale (the index no longer points at
//! it), until it expires. Only live entries are compared, iterated and
//! serialized (in arrival order), so a window rebuilt from a checkpoint
//! equals the one folded from the log.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::fmt;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use recman_events::RequestId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::state::RequestEntry;

/// The ids in the window (see the module comment).
#[derive(Clone, Default)]
pub struct RequestWindow {
    /// Entries in arrival order; `order[0]` has sequence number `base`.
    order: VecDeque<(RequestId, RequestEntry)>,
    base: u64,
    /// Sequence numbers of the live entries, hashed by their id (keys
    /// random per process: a client cannot choose ids that collide).
    index: HashTable<u64>,
    keys: RandomState,
}

impl RequestWindow {
    fn hash(&self, id: &RequestId) -> u64 {
        self.keys.hash_one(id.as_str())
    }

    fn at(&self, seq: u64) -> &(RequestId, RequestEntry) {
        &self.order[(seq - self.base) as usize]
    }

    /// The live entry of `id`, whatever its age (`State::request` applies the window).
    pub fn get(&self, id: &RequestId) -> Option<&RequestEntry> {
        let seq = *self.index.find(self.hash(id), |&s| self.at(s).0 == *id)?;
        Some(&self.at(seq).1)
    }

    /// Records `id`'s entry, replacing a live one of the same id.
    pub fn insert(&mut self, id: RequestId, entry: RequestEntry) {
        let h = self.hash(&id);
        let seq = self.base + self.order.len() as u64;
        self.order.push_back((id, entry));
        let (order, base, keys) = (&self.order, self.base, &self.keys);
        let id = &order[(seq - base) as usize].0;
        match self.index.find_mut(h, |&s| order[(s - base) as usize].0 == *id) {
            Some(s) => *s = seq,
            None => {
                self.index
                    .insert_unique(h, seq, |&s| keys.hash_one(order[(s - base) as usize].0.as_str()));
            }
        }
    }

    /// Forgets the entries, oldest first, while `expired` says so of the
    /// oldest one's entry.
    pub fn expire(&mut self, mut expired: impl FnMut(&RequestEntry) -> bool) {
        while let Some((id, entry)) = self.order.front() {
            if !expired(entry) {
                break;
            }
            let (h, seq) = (self.hash(id), self.base);
            if let Ok(live) = self.index.find_entry(h, |&s| s == seq) {
                live.remove();
            }
            self.order.pop_front();
            self.base += 1;
        }
    }

    /// The live entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&RequestId, &RequestEntry)> {
        self.order
            .iter()
            .zip(self.base..)
            .filter_map(|((id, e), seq)| self.index.find(self.hash(id), |&s| s == seq).map(|_| (id, e)))
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn clear(&mut self) {
        self.base += self.order.len() as u64;
        self.order.clear();
        self.index.clear();
    }
}

impl PartialEq for RequestWindow {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for RequestWindow {}

impl fmt::Debug for RequestWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for RequestWindow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        // The length first: postcard writes it before the elements.
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for pair in self.iter() {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for RequestWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let live = Vec::<(RequestId, RequestEntry)>::deserialize(d)?;
        let mut w = RequestWindow::default();
        w.order.reserve_exact(live.len());
        for (id, e) in live {
            w.insert(id, e);
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recman_events::{JobId, SnapshotKind};

    fn entry(at_ms: u64) -> RequestEntry {
        RequestEntry {
            job: JobId::from_parts(at_ms, 7),
            at_ms,
            kind: SnapshotKind::Full,
            targets: at_ms,
        }
    }

    fn rid(s: &str) -> RequestId {
        RequestId(s.to_string())
    }

    #[test]
    fn finds_replaces_and_expires_in_order() {
        let mut w = RequestWindow::default();
        for i in 0..1000u64 {
            w.insert(rid(&format!("r{i}")), entry(i));
        }
        assert_eq!(w.len(), 1000);
        assert_eq!(w.get(&rid("r17")).map(|e| e.at_ms), Some(17));
        assert!(w.get(&rid("nope")).is_none());
        // r5 again: the new entry is the live one; the old stays, stale.
        w.insert(rid("r5"), entry(2000));
        assert_eq!(w.len(), 1000);
        assert_eq!(w.get(&rid("r5")).map(|e| e.at_ms), Some(2000));
        // Expiring past r5's first entry keeps its second.
        w.expire(|e| e.at_ms < 10);
        assert_eq!(w.len(), 991);
        assert!(w.get(&rid("r4")).is_none());
        assert_eq!(w.get(&rid("r5")).map(|e| e.at_ms), Some(2000));
        assert_eq!(w.get(&rid("r10")).map(|e| e.at_ms), Some(10));
        let ats: Vec<u64> = w.iter().map(|(_, e)| e.at_ms).collect();
        assert_eq!(ats.len(), 991);
        assert_eq!((ats[0], ats[989], ats[990]), (10, 999, 2000));
        w.expire(|e| e.at_ms < 3000);
        assert!(w.is_empty() && w.get(&rid("r5")).is_none());
        w.insert(rid("r5"), entry(1));
        assert_eq!(w.get(&rid("r5")).map(|e| e.at_ms), Some(1));
    }

    #[test]
    fn a_decoded_window_equals_the_folded_one() {
        let mut w = RequestWindow::default();
        for i in 0..300u64 {
            w.insert(rid(&format!("r{}", i % 200)), entry(i));
        }
        w.expire(|e| e.at_ms < 50);
        let bytes = postcard::to_allocvec(&w).unwrap();
        let back: RequestWindow = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, w);
        assert_eq!(back.len(), 200);
        assert_eq!(back.get(&rid("r150")).map(|e| e.at_ms), Some(150));
        assert_eq!(back.get(&rid("r20")).map(|e| e.at_ms), Some(220));
        let mut other = back.clone();
        other.insert(rid("r20"), entry(999));
        assert_ne!(other, w);
    }
}
