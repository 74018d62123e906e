//! The small synchronous storage interface the group-commit writer sits on.
//!
//! A `Store` knows nothing of events, hashes or sequencing: it writes a batch of
//! already-encoded records (plus their per-job index entries) in one durable
//! transaction and reads them back by key. Everything else lives in
//! `group_commit`, so every backend gets the same semantics.

use crate::ids::JobId;
use crate::log::{LogError, RawRecord};

/// One encoded record, ready to be stored under `seq` and indexed under `job`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRecord {
    pub seq: u64,
    pub job: JobId,
    pub bytes: Vec<u8>,
}

/// Durable key-value storage of encoded records, keyed by sequence number.
pub trait Store: Send + Sync + 'static {
    /// Stores every record of `batch` and its `(job, seq)` index entry in ONE
    /// atomic transaction, and returns only once that transaction is durable
    /// (on disk, past the drive's volatile cache as far as `fsync` reaches).
    fn commit(&self, batch: &[PendingRecord]) -> Result<(), LogError>;
    /// Up to `max` records with keys `>= from`, in key order.
    fn read_raw(&self, from: u64, max: usize) -> Result<Vec<RawRecord>, LogError>;
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
}
