//! The sled 0.34 backend, made durable: `flush()` and then an `fsync` of
//! sled's data file before a commit is acknowledged.
//!
//! What strace showed (`strace -f -e trace=fsync,fdatasync,sync_file_range,openat`
//! on `recman bench log --backend sled --events 20 --appenders 1`, 2026-11-25,
//! counting only calls before the bench's own fdatasync baseline starts):
//! 41 `sync_file_range(fd of events.sled/db, off, len,
//! SYNC_FILE_RANGE_WAIT_BEFORE|WRITE|WAIT_AFTER)`, i.e. two per commit (a
//! 24-byte segment header and the batch), and no `fsync`/`fdatasync`
//! at all from sled for the commits (2 `fsync`s at creation only).
//! `sync_file_range` writes the dirty pages back but flushes neither the
//! drive's volatile cache nor the file's metadata (a grown file size), so it
//! is not a durable commit. With this store: 20 `fsync(events.sled/db)`, one
//! per commit, each right after sled's `sync_file_range`s (the two `fsync`s
//! sled issues itself come at creation, before the first commit). For comparison, the redb store's writer thread
//! showed 21 `fdatasync(events.redb)` for the 20 commits (one extra when the
//! file grew) and no `sync_file_range`. See BENCHMARKS.md.
//!
//! Layout (see `framed`): one tree; a group commit's framed records live under
//! `b'b' ++ first seq (u64 BE)`, its job index under `b'x' ++ first seq (u64 BE)`,
//! so one `apply_batch` (atomic in sled) writes both. The job index is loaded
//! into memory on open.
//!
//! Locking: sled locks its own file, but with an unhelpful message, so we take
//! an exclusive `flock` on `events.sled/recman.lock` first.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::ids::JobId;
use crate::log::framed::{self, JobIndex, KeyOp};
use crate::log::store::{Batch, Store};
use crate::log::{LogError, RawRecord};

/// The log's directory inside the data directory.
pub const DIR_NAME: &str = "events.sled";
const LOCK_NAME: &str = "recman.lock";
const BATCH: u8 = b'b';
const INDEX: u8 = b'x';

pub struct SledStore {
    tree: sled::Db,
    /// sled's data file, fsync'd after every flush.
    data_file: File,
    jobs: JobIndex,
    /// Held (flock'd) for as long as the store is open.
    _lock: File,
}

fn store_err(e: sled::Error) -> LogError {
    match e {
        sled::Error::Io(io) => LogError::Io(io),
        other => LogError::Store(other.to_string()),
    }
}

fn key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(k: &[u8]) -> Result<u64, LogError> {
    let tail: [u8; 8] = k
        .get(1..9)
        .and_then(|t| t.try_into().ok())
        .filter(|_| k.len() == 9)
        .ok_or_else(|| LogError::Store(format!("malformed key {k:02x?} in the sled log")))?;
    Ok(u64::from_be_bytes(tail))
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

/// Opens sled, waiting out a previous instance of this process that is still
/// shutting down: our `flock` already proved no one else owns the log, but a
/// dropped sled keeps its own file lock until its background writer threads
/// finish.
fn open_sled(path: &Path) -> Result<sled::Db, LogError> {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new().path(path).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < give_up =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(store_err(e)),
        }
    }
}

impl SledStore {
    /// Opens (or, with `create`, creates) `dir/events.sled/` and loads the job index.
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
        let tree = open_sled(&path)?;
        let data_file = File::open(path.join("db"))?;
        let jobs = JobIndex::default();
        for item in tree.scan_prefix([INDEX]) {
            if create {
                let (k, v) = item.map_err(store_err)?;
                jobs.load(seq_of(&k)?, &v)?;
            } else {
                // Reading only: a damaged index is noted, the records stay readable.
                match item.map_err(store_err).and_then(|(k, v)| Ok((seq_of(&k)?, v))) {
                    Ok((seq, v)) => jobs.load_lenient(seq, Ok(&v)),
                    Err(e) => jobs.load_lenient(0, Err(e)),
                }
            }
        }
        Ok(SledStore {
            tree,
            data_file,
            jobs,
            _lock: lock,
        })
    }

    /// sled's flush (sync_file_range) followed by the fsync that makes it durable.
    fn sync(&self) -> Result<(), LogError> {
        self.tree.flush().map_err(store_err)?;
        self.data_file.sync_all()?;
        Ok(())
    }

    /// The stored batch with the highest first seq `<= seq`.
    fn batch_of(&self, seq: u64) -> Result<Option<(u64, sled::IVec)>, LogError> {
        let upto = key(BATCH, seq);
        match self.tree.range(..=&upto[..]).next_back() {
            Some(item) => {
                let (k, v) = item.map_err(store_err)?;
                if k.first() == Some(&BATCH) {
                    Ok(Some((seq_of(&k)?, v)))
                } else {
                    Ok(None)
                }
            }
            None => Ok(None),
        }
    }
}

impl Store for SledStore {
    fn commit(&self, batch: &Batch) -> Result<(), LogError> {
        let Some(first) = batch.items.first().map(|i| i.seq) else {
            return Ok(());
        };
        let mut b = sled::Batch::default();
        b.insert(&key(BATCH, first)[..], framed::frame_batch(batch));
        b.insert(&key(INDEX, first)[..], framed::index_value(batch));
        self.tree.apply_batch(b).map_err(store_err)?;
        self.sync()?;
        self.jobs.add(batch)
    }

    fn scan(&self, from: u64, max: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize, LogError> {
        let start = self.batch_of(from)?.map(|(k, _)| k).unwrap_or(from);
        let end = [BATCH + 1];
        let mut n = 0;
        for item in self.tree.range(&key(BATCH, start)[..]..&end[..]) {
            if n >= max {
                break;
            }
            let (k, v) = item.map_err(store_err)?;
            framed::for_each_record(seq_of(&k)?, &v, &mut |seq, rec| {
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
        Ok(self
            .batch_of(seq)?
            .and_then(|(first, v)| framed::record_in(first, &v, seq)))
    }

    fn job_seqs(&self, job: JobId) -> Result<Vec<u64>, LogError> {
        self.jobs.seqs(job)
    }

    fn index_damage(&self) -> Vec<(u64, String)> {
        self.jobs.damage()
    }

    fn last(&self) -> Result<Option<RawRecord>, LogError> {
        match self.tree.get_lt([BATCH + 1]).map_err(store_err)? {
            Some((k, v)) if k.first() == Some(&BATCH) => {
                let (seq, bytes) = framed::last_record(seq_of(&k)?, &v);
                Ok(Some(RawRecord { seq, bytes }))
            }
            _ => Ok(None),
        }
    }

    fn put_raw(&self, seq: u64, bytes: Option<&[u8]>) -> Result<(), LogError> {
        let holder = self.batch_of(seq)?;
        let ops = framed::rewrite(holder.as_ref().map(|(k, v)| (*k, &v[..])), seq, bytes);
        let mut b = sled::Batch::default();
        for op in ops {
            match op {
                KeyOp::Put(k, v) => b.insert(&key(BATCH, k)[..], v),
                KeyOp::Remove(k) => b.remove(&key(BATCH, k)[..]),
            }
        }
        self.tree.apply_batch(b).map_err(store_err)?;
        self.sync()
    }
}
