//! The small synchronous storage interface the group-commit writer sits on.
//!
//! A `Store` knows nothing of events, hashes or sequencing: it writes a batch of
//! already-encoded records (plus their per-job index entries) in one durable
//! transaction and reads them back by key. Everything else lives in
//! `group_commit`, so every backend gets the same semantics.

use crate::ids::JobId;
use crate::log::{LogError, RawRecord};

use std::ops::Range;

/// Encoded records ready to be stored, in one buffer (one allocation per
/// batch, not per record): record `i` is `buf[items[i].range]`, stored under
/// `items[i].seq` and indexed under `items[i].job`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub buf: Vec<u8>,
    pub items: Vec<BatchItem>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchItem {
    pub seq: u64,
    pub job: JobId,
    pub range: Range<usize>,
}

impl Batch {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `(seq, job, bytes)` of every record, in order.
    pub fn records(&self) -> impl Iterator<Item = (u64, JobId, &[u8])> + '_ {
        self.items
            .iter()
            .map(|it| (it.seq, it.job, &self.buf[it.range.clone()]))
    }
}

/// Durable key-value storage of encoded records, keyed by sequence number.
pub trait Store: Send + Sync + 'static {
    /// Stores every record of `batch` and its `(job, seq)` index entry in ONE
    /// atomic transaction, and returns only once that transaction is durable
    /// (on disk, past the drive's volatile cache as far as `fsync` reaches).
    fn commit(&self, batch: &Batch) -> Result<(), LogError>;
    /// Up to `max` records with keys `>= from`, in key order.
    fn read_raw(&self, from: u64, max: usize) -> Result<Vec<RawRecord>, LogError> {
        let mut out = Vec::with_capacity(max.min(4096));
        self.scan(from, max, &mut |seq, bytes| {
            out.push(RawRecord {
                seq,
                bytes: bytes.to_vec(),
            })
        })?;
        Ok(out)
    }
    /// Calls `f` with up to `max` records with keys `>= from`, in key order,
    /// without copying them into owned buffers when the backend can avoid it.
    /// Returns how many records were visited.
    fn scan(&self, from: u64, max: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize, LogError>;
    /// One record's bytes, if stored.
    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError>;
    /// The sequence numbers indexed under `job`, ascending.
    fn job_seqs(&self, job: JobId) -> Result<Vec<u64>, LogError>;
    /// The record with the highest key, if any.
    fn last(&self) -> Result<Option<RawRecord>, LogError>;
    /// Overwrites (`Some`) or deletes (`None`) one stored record, durably,
    /// without touching the index and without any check. Only for tests that
    /// tamper with a log on purpose, and for future repair tools.
    fn put_raw(&self, seq: u64, bytes: Option<&[u8]>) -> Result<(), LogError>;
    /// Parts of the job index that could not be loaded when the store was
    /// opened for reading (first seq of the batch, why): the records are
    /// still read, `job_seqs` refuses, `audit` reports them.
    fn index_damage(&self) -> Vec<(u64, String)> {
        Vec::new()
    }
    /// The writer's lease on a shared store (PostgreSQL); `None` for a
    /// store this process owns alone.
    fn lease(&self) -> Option<std::sync::Arc<crate::log::lease::Lease>> {
        None
    }
}
