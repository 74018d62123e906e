//! The sled 0.34 backend, made durable: `flush()` and then an `fsync` of
//! sled's data file before a commit is acknowledged.
//!
//! What strace showed (`strace -f -e trace=fsync,fdatasync,sync_file_range,openat`
//! on `recman bench log --backend sled --events 20 --appenders 1`, 2026-11-25,
//! counting only calls before the bench's own fdatasync baseline starts):
//! 41 `sync_file_range(fd of events.sled/db, off, len,
//! SYNC_FILE_RANGE_WAIT_BEFORE|WRITE|WAIT_AFTER)`, i.e. two per commit (a
//! 24-byte segment header and the 306-byte batch), and no `fsync`/`fdatasync`
//! at all from sled for the commits (2 `fsync`s at creation only).
//! `sync_file_range` writes the dirty pages back but flushes neither the
//! drive's volatile cache nor the file's metadata (a grown file size), so it
//! is not a durable commit. With this store: 20 `fsync(events.sled/db)`, one
//! per commit, each right after sled's `sync_file_range`s (the two `fsync`s
//! sled issues itself come at creation, before the first commit). For comparison, the redb store's writer thread
//! showed 21 `fdatasync(events.redb)` for the 20 commits (one extra when the
//! file grew) and no `sync_file_range`. See BENCHMARKS.md.
//!
//! Layout: one tree; a record lives under `b'r' ++ seq (u64 BE)`, its job index
//! entry under `b'j' ++ job (u128 BE) ++ seq (u64 BE)` with an empty value, so
//! one `apply_batch` (atomic in sled) writes both.
//!
//! Locking: sled locks its own file, but with an unhelpful message, so we take
//! an exclusive `flock` on `events.sled/recman.lock` first.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::ids::JobId;
use crate::log::store::{Batch, Store};
use crate::log::{LogError, RawRecord};

/// The log's directory inside the data directory.
pub const DIR_NAME: &str = "events.sled";
const LOCK_NAME: &str = "recman.lock";

pub struct SledStore {
    tree: sled::Db,
    /// sled's data file, fsync'd after every flush.
    data_file: File,
    /// Held (flock'd) for as long as the store is open.
    _lock: File,
}

fn store_err(e: sled::Error) -> LogError {
    match e {
        sled::Error::Io(io) => LogError::Io(io),
        other => LogError::Store(other.to_string()),
    }
}

fn record_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'r';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn job_key(job: JobId, seq: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = b'j';
    k[1..17].copy_from_slice(&job.as_u128().to_be_bytes());
    k[17..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Takes an exclusive, non-blocking `flock` on `path`.
fn lock_file(path: &Path) -> Result<File, LogError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    // SAFETY: flock on a valid, owned file descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(LogError::Locked(format!(
                "the event log {} is in use by another recman process (one log has one owner); \
                 stop that process first",
                path.parent().unwrap_or(path).display()
            )));
        }
        return Err(LogError::Io(err));
    }
    Ok(file)
}

impl SledStore {
    /// Opens (or, with `create`, creates) `dir/events.sled/`.
    pub fn open(dir: &Path, create: bool) -> Result<SledStore, LogError> {
        let path = dir.join(DIR_NAME);
        if !create && !path.is_dir() {
            return Err(LogError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no sled event log at {}", path.display()),
            )));
        }
        std::fs::create_dir_all(&path)?;
        let lock = lock_file(&path.join(LOCK_NAME))?;
        let tree = sled::Config::new().path(&path).open().map_err(store_err)?;
        let data_file = File::open(path.join("db"))?;
        Ok(SledStore {
            tree,
            data_file,
            _lock: lock,
        })
    }

    /// sled's flush (sync_file_range) followed by the fsync that makes it durable.
    fn sync(&self) -> Result<(), LogError> {
        self.tree.flush().map_err(store_err)?;
        self.data_file.sync_all()?;
        Ok(())
    }
}

impl Store for SledStore {
    fn commit(&self, batch: &Batch) -> Result<(), LogError> {
        let mut b = sled::Batch::default();
        for (seq, job, bytes) in batch.records() {
            b.insert(&record_key(seq)[..], bytes);
            b.insert(&job_key(job, seq)[..], &[][..]);
        }
        self.tree.apply_batch(b).map_err(store_err)?;
        self.sync()
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
        let end = [b'r' + 1];
        let mut n = 0;
        for item in self.tree.range(&record_key(from)[..]..&end[..]) {
            if n >= max {
                break;
            }
            let (k, v) = item.map_err(store_err)?;
            let seq =
                seq_of(&k).ok_or_else(|| LogError::Store(format!("malformed record key {:02x?}", &k[..])))?;
            f(seq, &v);
            n += 1;
        }
        Ok(n)
    }

    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self
            .tree
            .get(record_key(seq))
            .map_err(store_err)?
            .map(|v| v.to_vec()))
    }

    fn job_seqs(&self, job: JobId) -> Result<Vec<u64>, LogError> {
        let mut prefix = [0u8; 17];
        prefix[0] = b'j';
        prefix[1..].copy_from_slice(&job.as_u128().to_be_bytes());
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix) {
            let (k, _) = item.map_err(store_err)?;
            let seq =
                seq_of(&k).ok_or_else(|| LogError::Store(format!("malformed index key {:02x?}", &k[..])))?;
            out.push(seq);
        }
        Ok(out)
    }

    fn last(&self) -> Result<Option<RawRecord>, LogError> {
        let end = [b'r' + 1];
        match self.tree.get_lt(end).map_err(store_err)? {
            Some((k, v)) if k.first() == Some(&b'r') => {
                let seq = seq_of(&k)
                    .ok_or_else(|| LogError::Store(format!("malformed record key {:02x?}", &k[..])))?;
                Ok(Some(RawRecord {
                    seq,
                    bytes: v.to_vec(),
                }))
            }
            _ => Ok(None),
        }
    }

    fn put_raw(&self, seq: u64, bytes: Option<&[u8]>) -> Result<(), LogError> {
        match bytes {
            Some(b) => self.tree.insert(record_key(seq), b).map(|_| ()),
            None => self.tree.remove(record_key(seq)).map(|_| ()),
        }
        .map_err(store_err)?;
        self.sync()
    }
}
