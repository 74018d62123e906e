//! The in-memory store: the records and the job index in a map, nothing on
//! disk, nothing durable. For tests and tools that need a log but no disk.
//!
//! It sits under the same group-commit writer as the disk stores, so it has
//! the same semantics: sequence numbers without gaps, the hash chain, the CRC
//! of every record, `read_job`, live subscriptions, one owner at a time, and
//! a damaged last record refused on open. It passes the log conformance suite
//! except the SIGKILL case (nothing survives its process).
//!
//! A [`MemoryStore`] plays the part of a data directory: [`open`] gives a log
//! on a fresh one; [`open_on`] opens (or reopens, once the last log on it is
//! dropped) the log over a store you keep.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::ids::JobId;
use crate::log::store::{Batch, Store};
use crate::log::{Backend, EventLog, GroupCommitLog, LogError, Place, RawRecord};

/// What error messages of the group-commit layer call the log's location.
const LOCATION: &str = "(in memory)";

/// Records and their per-job index, in memory.
#[derive(Default)]
pub struct MemoryStore {
    state: RwLock<State>,
    /// Set while a writable log is open on this store (the file lock of the
    /// disk stores).
    in_use: AtomicBool,
}

#[derive(Default)]
struct State {
    records: BTreeMap<u64, Vec<u8>>,
    jobs: BTreeMap<JobId, Vec<u64>>,
}

impl MemoryStore {
    pub fn new() -> Arc<MemoryStore> {
        Arc::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent (every
        // write below is a single insert or remove), so poisoning is ignored.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn commit(&self, batch: &Batch) -> Result<(), LogError> {
        let mut st = self.write();
        for (seq, job, bytes) in batch.records() {
            st.records.insert(seq, bytes.to_vec());
            st.jobs.entry(job).or_default().push(seq);
        }
        Ok(())
    }

    fn scan(&self, from: u64, max: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize, LogError> {
        let st = self.read();
        let mut n = 0;
        for (seq, bytes) in st.records.range(from..).take(max) {
            f(*seq, bytes);
            n += 1;
        }
        Ok(n)
    }

    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.read().records.get(&seq).cloned())
    }

    fn job_seqs(&self, job: JobId) -> Result<Vec<u64>, LogError> {
        Ok(self.read().jobs.get(&job).cloned().unwrap_or_default())
    }

    fn last(&self) -> Result<Option<RawRecord>, LogError> {
        Ok(self
            .read()
            .records
            .last_key_value()
            .map(|(seq, bytes)| RawRecord {
                seq: *seq,
                bytes: bytes.clone(),
            }))
    }

    fn put_raw(&self, seq: u64, bytes: Option<&[u8]>) -> Result<(), LogError> {
        let mut st = self.write();
        match bytes {
            Some(b) => st.records.insert(seq, b.to_vec()),
            None => st.records.remove(&seq),
        };
        Ok(())
    }
}

/// The store as seen by the one writable log open on it: releases the
/// store's `in_use` flag when the log (and its writer thread) let go of it.
struct Owned(Arc<MemoryStore>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.in_use.store(false, Ordering::Release);
    }
}

impl Store for Owned {
    fn commit(&self, batch: &Batch) -> Result<(), LogError> {
        self.0.commit(batch)
    }
    fn scan(&self, from: u64, max: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize, LogError> {
        self.0.scan(from, max, f)
    }
    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        self.0.get(seq)
    }
    fn job_seqs(&self, job: JobId) -> Result<Vec<u64>, LogError> {
        self.0.job_seqs(job)
    }
    fn last(&self) -> Result<Option<RawRecord>, LogError> {
        self.0.last()
    }
    fn put_raw(&self, seq: u64, bytes: Option<&[u8]>) -> Result<(), LogError> {
        self.0.put_raw(seq, bytes)
    }
}

/// A new, empty in-memory log.
pub fn open() -> Result<Arc<dyn EventLog>, LogError> {
    open_on(&MemoryStore::new())
}

/// Opens the log over `store` for appending and reading. Refused with
/// `LogError::Locked` while another log opened this way is alive, and when
/// the last record is damaged (as the disk stores refuse it).
pub fn open_on(store: &Arc<MemoryStore>) -> Result<Arc<dyn EventLog>, LogError> {
    if store.in_use.swap(true, Ordering::AcqRel) {
        return Err(LogError::Locked(
            "the in-memory event log is in use by another open log (one log has one owner); \
             drop that one first"
                .into(),
        ));
    }
    // From here on, dropping `owned` (also on the error path) releases the flag.
    let owned: Arc<dyn Store> = Arc::new(Owned(store.clone()));
    let log = GroupCommitLog::start(owned, Backend::Memory, &Place::named(LOCATION), false)?;
    Ok(Arc::new(log))
}

/// Opens the log over `store` for reading only: appends are refused and a
/// damaged last record is tolerated (for `audit`).
pub fn open_for_reading_on(store: &Arc<MemoryStore>) -> Result<Arc<dyn EventLog>, LogError> {
    let store: Arc<dyn Store> = store.clone();
    Ok(Arc::new(GroupCommitLog::start(
        store,
        Backend::Memory,
        &Place::named(LOCATION),
        true,
    )?))
}
