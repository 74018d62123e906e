//! The small synchronous storage interface the group-commit writer sits on.
//!
//! A `Store` knows nothing of events, hashes or sequencing: it writes a batch of
//! already-encoded records (plus their per-job index entries) in one durable
//! transaction and reads them back by key. Everything else lives in
//! `group_commit`, so every backend gets the same semantics.

use crate::ids::JobId;
use crate::log::segments::{ArchiveReport, SegmentInfo};
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

/// Called with `(first seq, framed records, job index)` of each stored
/// group commit by [`Store::batches`]; returns false to stop.
pub type BatchVisitor<'a> = dyn FnMut(u64, &[u8], &[u8]) -> bool + 'a;

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
    /// Calls `f(first seq, framed records, job index)` for each stored group
    /// commit whose first seq is `>= from`, in order, until `f` returns
    /// false (for archiving into segments).
    fn batches(&self, _from: u64, _f: &mut BatchVisitor<'_>) -> Result<(), LogError> {
        Err(no_segments())
    }
    /// Deletes, durably and with their index entries, the stored group
    /// commits whose records all lie below `before`; returns how many
    /// records went. Only after they are safe in a segment.
    fn drop_before(&self, _before: u64) -> Result<u64, LogError> {
        Err(no_segments())
    }
    /// Moves the records below `before` into closed segments
    /// ([`crate::log::segments`]).
    fn archive(&self, _before: u64, _per_segment: usize) -> Result<ArchiveReport, LogError> {
        Err(no_segments())
    }
    /// The closed segments in front of this store, oldest first.
    fn segments(&self) -> Result<Vec<SegmentInfo>, LogError> {
        Ok(Vec::new())
    }
}

/// The error of the segment operations on a store that has none.
pub fn no_segments() -> LogError {
    LogError::Store(
        "this event log cannot be archived into segments (only a data dir's redb log can; \
         a PostgreSQL log is archived with PostgreSQL's own tools)"
            .into(),
    )
}
