//! The redb backend (the default): one `events.redb` file, every commit with
//! `Durability::Immediate`, i.e. an `fsync` of the file before it returns.
//!
//! Two tables: `records` (`u64` seq → record bytes) and `jobs`
//! (`(u128 job, u64 seq)` → `()`), written in the same transaction.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::ids::JobId;
use crate::log::store::{Batch, Store};
use crate::log::{LogError, RawRecord};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
/// Key: job (u128 BE) ++ seq (u64 BE): byte order is (job, seq) order, and a
/// fixed byte array compares faster than a tuple.
const JOBS: TableDefinition<&[u8; 24], ()> = TableDefinition::new("jobs");

fn job_key(job: u128, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&job.to_be_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The log's file inside the data directory.
pub const FILE_NAME: &str = "events.redb";

pub struct RedbStore {
    db: Database,
}

fn store_err(e: impl Into<redb::Error>) -> LogError {
    LogError::Store(e.into().to_string())
}

impl RedbStore {
    /// Opens (or, with `create`, creates) `dir/events.redb`.
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
            txn.open_table(RECORDS).map_err(store_err)?;
            txn.open_table(JOBS).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)?;
        Ok(RedbStore { db })
    }

    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<(), LogError>) -> Result<(), LogError> {
        let mut txn = self.db.begin_write().map_err(store_err)?;
        txn.set_durability(Durability::Immediate).map_err(store_err)?;
        f(&txn)?;
        txn.commit().map_err(store_err)
    }
}

impl Store for RedbStore {
    fn commit(&self, batch: &Batch) -> Result<(), LogError> {
        self.write(|txn| {
            let mut records = txn.open_table(RECORDS).map_err(store_err)?;
            let mut jobs = txn.open_table(JOBS).map_err(store_err)?;
            for (seq, job, bytes) in batch.records() {
                records.insert(seq, bytes).map_err(store_err)?;
                jobs.insert(&job_key(job.as_u128(), seq), ()).map_err(store_err)?;
            }
            Ok(())
        })
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
        let table = txn.open_table(RECORDS).map_err(store_err)?;
        let mut n = 0;
        for item in table.range(from..).map_err(store_err)? {
            if n >= max {
                break;
            }
            let (k, v) = item.map_err(store_err)?;
            f(k.value(), v.value());
            n += 1;
        }
        Ok(n)
    }

    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(RECORDS).map_err(store_err)?;
        Ok(table.get(seq).map_err(store_err)?.map(|v| v.value().to_vec()))
    }

    fn job_seqs(&self, job: JobId) -> Result<Vec<u64>, LogError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(JOBS).map_err(store_err)?;
        let j = job.as_u128();
        let mut out = Vec::new();
        let (lo, hi) = (job_key(j, 0), job_key(j, u64::MAX));
        for item in table.range::<&[u8; 24]>(&lo..=&hi).map_err(store_err)? {
            let (k, _) = item.map_err(store_err)?;
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&k.value()[16..]);
            out.push(u64::from_be_bytes(seq));
        }
        Ok(out)
    }

    fn last(&self) -> Result<Option<RawRecord>, LogError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(RECORDS).map_err(store_err)?;
        let last = table.last().map_err(store_err)?.map(|(k, v)| RawRecord {
            seq: k.value(),
            bytes: v.value().to_vec(),
        });
        Ok(last)
    }

    fn put_raw(&self, seq: u64, bytes: Option<&[u8]>) -> Result<(), LogError> {
        self.write(|txn| {
            let mut records = txn.open_table(RECORDS).map_err(store_err)?;
            match bytes {
                Some(b) => {
                    records.insert(seq, b).map_err(store_err)?;
                }
                None => {
                    records.remove(seq).map_err(store_err)?;
                }
            }
            Ok(())
        })
    }
}
