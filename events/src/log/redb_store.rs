//! The redb backend (the default): one `events.redb` file, every commit with
//! `Durability::Immediate`, i.e. an `fdatasync` of the file before it returns.
//!
//! Layout, chosen for throughput (see BENCHMARKS.md): a group commit is stored
//! as ONE redb entry, not one entry per record. Two tables, written in the
//! same transaction:
//!
//! - `batches`: first seq of the batch (`u64`) → `[n: u32][end_i: u32 × n][records]`,
//!   record `i` (seq `first + i`) being `records[end_{i-1}..end_i]`. The framing
//!   does not depend on record contents, so a damaged record damages only itself;
//!   a damaged frame is served as one damaged record under the batch's first seq
//!   (the checks of `audit` then report it and the gap after it).
//! - `batch_jobs`: first seq of the batch → `[(job u128 BE, seq u64 BE) × n]`, the
//!   per-job index of that batch. It is loaded into memory on open (24 bytes
//!   per event) and kept up to date by `commit`, so `job_seqs` is a lookup.
//!
//! Why not one entry per record and one per index entry: each redb B-tree insert
//! copies and rewrites pages, and on this machine's disk the cost of a commit
//! grows with the bytes it writes. Measured with 256 appenders: ~135-160k
//! events/s with per-record entries + a `(job, seq)` index table, ~200k+ with
//! this layout (BENCHMARKS.md has the figures).

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::ids::JobId;
use crate::log::store::{Batch, Store};
use crate::log::{LogError, RawRecord};

const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");
const BATCH_JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("batch_jobs");

/// The log's file inside the data directory.
pub const FILE_NAME: &str = "events.redb";

pub struct RedbStore {
    db: Database,
    /// job → its seqs, ascending (seqs are handed out in order).
    jobs: RwLock<HashMap<u128, Vec<u64>>>,
}

fn store_err(e: impl Into<redb::Error>) -> LogError {
    LogError::Store(e.into().to_string())
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The records of one stored batch, or `None` when its frame is damaged.
fn split(chunk: &[u8]) -> Option<Vec<&[u8]>> {
    let n = u32_at(chunk, 0)? as usize;
    let data_start = 4usize.checked_add(n.checked_mul(4)?)?;
    let data = chunk.get(data_start..)?;
    let mut out = Vec::with_capacity(n);
    let mut start = 0usize;
    for i in 0..n {
        let end = u32_at(chunk, 4 + 4 * i)? as usize;
        out.push(data.get(start..end)?);
        start = end;
    }
    (start == data.len() && n > 0).then_some(out)
}

/// Frames records as one stored batch.
fn frame<'a>(records: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let n = records.len();
    let total: usize = records.clone().map(|r| r.len()).sum();
    let mut out = Vec::with_capacity(4 + 4 * n + total);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    let mut end = 0usize;
    for r in records.clone() {
        end += r.len();
        out.extend_from_slice(&(end as u32).to_le_bytes());
    }
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

/// Calls `f(seq, record)` for each record of the batch stored under `first`.
fn for_each_record(first: u64, chunk: &[u8], f: &mut dyn FnMut(u64, &[u8]) -> bool) {
    match split(chunk) {
        Some(recs) => {
            for (i, r) in recs.into_iter().enumerate() {
                if !f(first + i as u64, r) {
                    return;
                }
            }
        }
        // A damaged frame: hand out the whole value, which fails every check.
        None => {
            f(first, chunk);
        }
    }
}

impl RedbStore {
    /// Opens (or, with `create`, creates) `dir/events.redb` and loads the job index.
    pub fn open(dir: &Path, create: bool) -> Result<RedbStore, LogError> {
        let path = dir.join(FILE_NAME);
        let result = if create {
            Database::create(&path)
        } else {
            Database::open(&path)
        };
        let db = result.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => LogError::Locked(format!(
                "the event log {} is in use by another recman process (one log has one owner); \
                 stop that process first",
                path.display()
            )),
            redb::DatabaseError::Storage(redb::StorageError::Io(io)) => LogError::Io(io),
            other => store_err(other),
        })?;
        // Create both tables up front so readers never see "no such table".
        let txn = db.begin_write().map_err(store_err)?;
        {
            txn.open_table(BATCHES).map_err(store_err)?;
            txn.open_table(BATCH_JOBS).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)?;
        let store = RedbStore {
            db,
            jobs: RwLock::new(HashMap::new()),
        };
        store.load_job_index()?;
        Ok(store)
    }

    fn load_job_index(&self) -> Result<(), LogError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(BATCH_JOBS).map_err(store_err)?;
        let mut jobs = self
            .jobs
            .write()
            .map_err(|_| LogError::Store("job index lock poisoned".into()))?;
        for item in table.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let v = v.value();
            if v.len() % 24 != 0 {
                return Err(LogError::Store(format!(
                    "the job index of the batch at seq {} is damaged ({} bytes); run `recman audit`",
                    k.value(),
                    v.len()
                )));
            }
            for e in v.chunks_exact(24) {
                let job = u128::from_be_bytes(e[..16].try_into().expect("16 bytes"));
                let seq = u64::from_be_bytes(e[16..].try_into().expect("8 bytes"));
                jobs.entry(job).or_default().push(seq);
            }
        }
        Ok(())
    }

    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<(), LogError>) -> Result<(), LogError> {
        let mut txn = self.db.begin_write().map_err(store_err)?;
        txn.set_durability(Durability::Immediate).map_err(store_err)?;
        f(&txn)?;
        txn.commit().map_err(store_err)
    }

    /// The key and bytes of the stored batch that holds `seq`, if any.
    fn batch_of(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(BATCHES).map_err(store_err)?;
        let found = match table.range(..=seq).map_err(store_err)?.next_back() {
            Some(item) => {
                let (k, v) = item.map_err(store_err)?;
                Some((k.value(), v.value().to_vec()))
            }
            None => None,
        };
        Ok(found)
    }
}

impl Store for RedbStore {
    fn commit(&self, batch: &Batch) -> Result<(), LogError> {
        let Some(first) = batch.items.first().map(|i| i.seq) else {
            return Ok(());
        };
        let value = frame(batch.records().map(|(_, _, b)| b).collect::<Vec<_>>().into_iter());
        let mut index = Vec::with_capacity(24 * batch.len());
        for it in &batch.items {
            index.extend_from_slice(&it.job.as_u128().to_be_bytes());
            index.extend_from_slice(&it.seq.to_be_bytes());
        }
        self.write(|txn| {
            txn.open_table(BATCHES)
                .map_err(store_err)?
                .insert(first, value.as_slice())
                .map_err(store_err)?;
            txn.open_table(BATCH_JOBS)
                .map_err(store_err)?
                .insert(first, index.as_slice())
                .map_err(store_err)?;
            Ok(())
        })?;
        let mut jobs = self
            .jobs
            .write()
            .map_err(|_| LogError::Store("job index lock poisoned".into()))?;
        for it in &batch.items {
            jobs.entry(it.job.as_u128()).or_default().push(it.seq);
        }
        Ok(())
    }

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

    fn scan(&self, from: u64, max: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize, LogError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(BATCHES).map_err(store_err)?;
        // Start at the batch that holds `from`, if one does.
        let start = match table.range(..=from).map_err(store_err)?.next_back() {
            Some(item) => item.map_err(store_err)?.0.value(),
            None => from,
        };
        let mut n = 0;
        for item in table.range(start..).map_err(store_err)? {
            if n >= max {
                break;
            }
            let (k, v) = item.map_err(store_err)?;
            for_each_record(k.value(), v.value(), &mut |seq, rec| {
                if seq < from {
                    return true;
                }
                if n >= max {
                    return false;
                }
                f(seq, rec);
                n += 1;
                true
            });
        }
        Ok(n)
    }

    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(BATCHES).map_err(store_err)?;
        let Some(item) = table.range(..=seq).map_err(store_err)?.next_back() else {
            return Ok(None);
        };
        let (k, v) = item.map_err(store_err)?;
        let mut found = None;
        for_each_record(k.value(), v.value(), &mut |s, rec| {
            if s == seq {
                found = Some(rec.to_vec());
                return false;
            }
            true
        });
        Ok(found)
    }

    fn job_seqs(&self, job: JobId) -> Result<Vec<u64>, LogError> {
        let jobs = self
            .jobs
            .read()
            .map_err(|_| LogError::Store("job index lock poisoned".into()))?;
        Ok(jobs.get(&job.as_u128()).cloned().unwrap_or_default())
    }

    fn last(&self) -> Result<Option<RawRecord>, LogError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(BATCHES).map_err(store_err)?;
        let Some((k, v)) = table.last().map_err(store_err)? else {
            return Ok(None);
        };
        let mut last = None;
        for_each_record(k.value(), v.value(), &mut |seq, rec| {
            last = Some(RawRecord {
                seq,
                bytes: rec.to_vec(),
            });
            true
        });
        Ok(last)
    }

    fn put_raw(&self, seq: u64, bytes: Option<&[u8]>) -> Result<(), LogError> {
        let holder = self.batch_of(seq)?.and_then(|(first, chunk)| {
            let recs: Vec<Vec<u8>> = split(&chunk)?.into_iter().map(|r| r.to_vec()).collect();
            ((seq - first) < recs.len() as u64).then_some((first, recs))
        });
        self.write(|txn| {
            let mut t = txn.open_table(BATCHES).map_err(store_err)?;
            match (holder, bytes) {
                (None, Some(b)) => {
                    t.insert(seq, frame(std::iter::once(b)).as_slice())
                        .map_err(store_err)?;
                }
                (None, None) => {}
                (Some((first, mut recs)), Some(b)) => {
                    recs[(seq - first) as usize] = b.to_vec();
                    let v = frame(recs.iter().map(|r| r.as_slice()).collect::<Vec<_>>().into_iter());
                    t.insert(first, v.as_slice()).map_err(store_err)?;
                }
                (Some((first, recs)), None) => {
                    let idx = (seq - first) as usize;
                    t.remove(first).map_err(store_err)?;
                    let (before, after) = (&recs[..idx], &recs[idx + 1..]);
                    if !before.is_empty() {
                        let v = frame(
                            before
                                .iter()
                                .map(|r| r.as_slice())
                                .collect::<Vec<_>>()
                                .into_iter(),
                        );
                        t.insert(first, v.as_slice()).map_err(store_err)?;
                    }
                    if !after.is_empty() {
                        let v = frame(after.iter().map(|r| r.as_slice()).collect::<Vec<_>>().into_iter());
                        t.insert(seq + 1, v.as_slice()).map_err(store_err)?;
                    }
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_back_and_damaged_frames_are_refused() {
        let recs: Vec<&[u8]> = vec![b"abc", b"", b"defgh"];
        let f = frame(recs.clone().into_iter());
        assert_eq!(split(&f).unwrap(), recs);
        for cut in 0..f.len() {
            assert!(split(&f[..cut]).is_none(), "truncated at {cut}");
        }
        let mut bad = f.clone();
        bad[4] = 200; // first end beyond the data
        assert!(split(&bad).is_none());
        let mut bad = f;
        bad[0] = 9; // more records than frames
        assert!(split(&bad).is_none());
    }
}
