//! The `EventLog` trait: durable, ordered, hash-chained storage of events.
//!
//! Sequence numbers start at 1 and have no gaps. `append` returns only after
//! the events are on disk. Backends share one group-commit writer
//! (`group_commit`) over a small synchronous `Store` (`redb_store`, `sled_store`,
//! both storing each group commit as one framed value, see `framed`; and
//! `memory`, nothing durable, for tests) and pass one conformance suite
//! (`conformance`, feature `conformance-tests`, run by `tests/log_conformance.rs`
//! and by any store outside this crate).
//!
//! Entry points: `open` / `open_detected` (the engine), `open_for_reading`
//! (`recman events`, `recman audit`), `open_store` (tools and tamper tests),
//! `memory::open` (a log without a disk).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use crate::codec::DecodeError;
use crate::ids::JobId;
use crate::model::{Event, StoredEvent};

#[cfg(feature = "conformance-tests")]
pub mod conformance;
pub mod framed;
pub mod group_commit;
pub mod guard;
pub mod lease;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod pg_store;
pub mod redb_store;
pub mod segments;
pub mod sled_store;
pub mod store;

pub use group_commit::GroupCommitLog;
pub use store::{Batch, BatchItem, Store};

/// A boxed future, so the traits stay object-safe (`Arc<dyn EventLog>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which storage engine holds the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// redb: fsync per commit, stable file format. The default.
    #[default]
    Redb,
    /// sled 0.34, plus an explicit fsync of its data file per commit.
    Sled,
    /// In memory, nothing durable (`memory`): for tests. Not a choice of the
    /// CLI or the config, and it has no data directory.
    Memory,
    /// PostgreSQL (`pg_store`): a schema in a database, no data directory;
    /// opened with [`open_postgres`].
    Postgres,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "redb" => Ok(Backend::Redb),
            "sled" => Ok(Backend::Sled),
            other => Err(format!(
                "unknown log backend `{other}` (expected `redb` or `sled`)"
            )),
        }
    }
}

impl Backend {
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Redb => "redb",
            Backend::Sled => "sled",
            Backend::Memory => "memory",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("event log storage error: {0}")]
    Store(String),
    #[error("record {seq} is damaged: {source}")]
    Corrupt { seq: u64, source: DecodeError },
    #[error("the event log is closed")]
    Closed,
    #[error("{0}")]
    Locked(String),
}

/// Where a log is, for messages: its name, and the arguments of `recman
/// audit` that read it.
#[derive(Clone, Debug)]
pub struct Place {
    pub name: String,
    pub audit_args: String,
}

impl Place {
    /// A log in data directory `dir`.
    pub fn dir(dir: &Path) -> Place {
        Place {
            name: dir.display().to_string(),
            audit_args: format!("--data-dir {}", dir.display()),
        }
    }

    /// A log with no data directory (`memory`).
    pub fn named(name: &str) -> Place {
        Place {
            name: name.to_string(),
            audit_args: String::new(),
        }
    }
}

/// A record as stored, before decoding: for audit and raw replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    /// The key it is stored under.
    pub seq: u64,
    pub bytes: Vec<u8>,
}

/// A live tail of the log: yields every event from the requested sequence
/// number on, in order, without gaps, then waits for new appends.
pub type Subscription = tokio::sync::mpsc::Receiver<Result<StoredEvent, LogError>>;

pub trait EventLog: Send + Sync + 'static {
    /// Appends `events` in order and returns their sequence numbers, only
    /// once they are durable. Concurrent calls are batched (group commit).
    fn append(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Vec<u64>, LogError>>;
    /// Up to `max` events with sequence numbers `>= from`, decoded and checked.
    fn read(&self, from: u64, max: usize) -> Result<Vec<StoredEvent>, LogError>;
    /// Every event of one job, in log order.
    fn read_job(&self, job: JobId) -> Result<Vec<StoredEvent>, LogError>;
    /// Up to `max` stored records with keys `>= from`, not decoded.
    fn read_raw(&self, from: u64, max: usize) -> Result<Vec<RawRecord>, LogError>;
    /// Like `read_raw`, but lends each record to `f` instead of copying it
    /// (audit and replay walk millions of records). Returns how many it visited.
    fn scan_raw(&self, from: u64, max: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize, LogError> {
        let records = self.read_raw(from, max)?;
        for r in &records {
            f(r.seq, &r.bytes);
        }
        Ok(records.len())
    }
    /// A live tail from `from` (must be called inside a tokio runtime).
    fn subscribe(&self, from: u64) -> Subscription;
    /// The sequence number of the last durable event; 0 when empty.
    fn last_seq(&self) -> u64;
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// Parts of the job index found damaged on open (see `Store::index_damage`).
    fn index_damage(&self) -> Vec<(u64, String)> {
        Vec::new()
    }
    /// The writer's lease on a shared log (PostgreSQL): epoch, whether this
    /// process may still act. `None` for a log this process owns alone.
    fn lease(&self) -> Option<Arc<lease::Lease>> {
        None
    }
    /// Moves the records below `before` (never the last) out of the live
    /// store into closed segments of about `per_segment` records
    /// ([`segments`]; a data dir's redb log only). Blocking: files are
    /// written and synced.
    fn archive(&self, _before: u64, _per_segment: usize) -> Result<segments::ArchiveReport, LogError> {
        Err(store::no_segments())
    }
    /// The closed segments of this log, oldest first.
    fn segments(&self) -> Result<Vec<segments::SegmentInfo>, LogError> {
        Ok(Vec::new())
    }
}

/// Which backend's log `dir` holds, if any. Both at once is an error: the
/// user must say which one is the log.
pub fn detect(dir: &Path) -> Result<Option<Backend>, LogError> {
    let redb = dir.join(redb_store::FILE_NAME).exists();
    let sled = dir.join(sled_store::DIR_NAME).exists();
    match (redb, sled) {
        (true, true) => Err(LogError::Store(format!(
            "{} holds both a redb log ({}) and a sled log ({}); move one of them away",
            dir.display(),
            redb_store::FILE_NAME,
            sled_store::DIR_NAME
        ))),
        (true, false) => Ok(Some(Backend::Redb)),
        (false, true) => Ok(Some(Backend::Sled)),
        (false, false) => Ok(None),
    }
}

/// The file a new log leaves beside itself in its data dir: a data dir with
/// this marker and no log lost its log (`recman` refuses to start a new one
/// there without `--init`). It names the backend and when the log was created.
pub const MARKER_FILE: &str = "recman-log.created";

/// Refuses a zero-byte log file: a store would take it for a new, empty log
/// (redb initializes it) and the history would be silently gone.
fn refuse_empty_file(dir: &Path) -> Result<(), LogError> {
    let path = dir.join(redb_store::FILE_NAME);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.len() == 0 => Err(LogError::Store(format!(
            "{} is empty (0 bytes): that is not a log but a damaged or truncated one; \
             restore it from a backup, or move it away to begin a new log",
            path.display()
        ))),
        _ => Ok(()),
    }
}

fn write_marker(dir: &Path, backend: Backend) -> Result<(), LogError> {
    let path = dir.join(MARKER_FILE);
    if path.exists() {
        return Ok(());
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    std::fs::write(
        &path,
        format!(
            "recman event log ({}) created at unix time {secs}\n",
            backend.as_str()
        ),
    )?;
    Ok(())
}

/// Opens the store of a `backend` log in `dir` (creating it with `create`),
/// without the group-commit layer: for audit tools and tamper tests.
pub fn open_store(backend: Backend, dir: &Path, create: bool) -> Result<Arc<dyn Store>, LogError> {
    let file = store_path(backend, dir);
    let store: Arc<dyn Store> = match backend {
        Backend::Redb => Arc::new(guard::guard(&file, || redb_store::RedbStore::open(dir, create))?),
        Backend::Sled => Arc::new(guard::guard(&file, || sled_store::SledStore::open(dir, create))?),
        Backend::Memory | Backend::Postgres => return Err(no_dir_for(backend)),
    };
    let guarded: Arc<dyn Store> = Arc::new(guard::Guarded::new(store, file));
    Ok(Arc::new(segments::Segmented::open(guarded, dir)?))
}

/// The file (redb) or directory (sled) of a log in `dir`.
fn store_path(backend: Backend, dir: &Path) -> std::path::PathBuf {
    match backend {
        Backend::Sled => dir.join(sled_store::DIR_NAME),
        _ => dir.join(redb_store::FILE_NAME),
    }
}

fn no_dir_for(backend: Backend) -> LogError {
    match backend {
        Backend::Postgres => LogError::Store(
            "a PostgreSQL event log has no data directory; open it with log::open_postgres".into(),
        ),
        _ => LogError::Store(
            "the in-memory event log has no data directory; open it with log::memory::open".into(),
        ),
    }
}

/// Opens (creating `dir` and the log if needed) the `backend` log in `dir`
/// for appending and reading. Refuses when `dir` already holds the other
/// backend's log, when another process owns the log (`LogError::Locked`), or
/// when the last record is damaged (the message says to run `recman audit`).
pub fn open(backend: Backend, dir: &Path) -> Result<Arc<dyn EventLog>, LogError> {
    if matches!(backend, Backend::Memory | Backend::Postgres) {
        return Err(no_dir_for(backend));
    }
    std::fs::create_dir_all(dir)?;
    if let Some(found) = detect(dir)? {
        if found != backend {
            return Err(LogError::Store(format!(
                "{} already holds a {} event log; open it as {} (or use another data dir)",
                dir.display(),
                found.as_str(),
                found.as_str()
            )));
        }
    }
    refuse_empty_file(dir)?;
    let existed = detect(dir)?.is_some();
    let store = open_store(backend, dir, true)?;
    if !existed {
        write_marker(dir, backend)?;
    }
    Ok(Arc::new(GroupCommitLog::start(
        store,
        backend,
        &Place::dir(dir),
        false,
    )?))
}

/// Opens the log in `dir` with the backend found there, or a new `default`
/// log when there is none.
pub fn open_detected(dir: &Path, default: Backend) -> Result<Arc<dyn EventLog>, LogError> {
    let backend = if dir.exists() {
        detect(dir)?.unwrap_or(default)
    } else {
        default
    };
    open(backend, dir)
}

/// Opens an existing log for reading only (`recman events`, `recman audit`):
/// never creates anything, tolerates a damaged last record, refuses appends.
/// A redb log is not written to at all (unless it needs crash recovery).
pub fn open_for_reading(dir: &Path) -> Result<Arc<dyn EventLog>, LogError> {
    if !dir.is_dir() {
        return Err(LogError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("data directory {} does not exist", dir.display()),
        )));
    }
    let Some(backend) = detect(dir)? else {
        return Err(LogError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no event log in {} (expected {} or {}/)",
                dir.display(),
                redb_store::FILE_NAME,
                sled_store::DIR_NAME
            ),
        )));
    };
    refuse_empty_file(dir)?;
    let file = store_path(backend, dir);
    let store: Arc<dyn Store> = match backend {
        Backend::Redb => Arc::new(guard::guard(&file, || {
            redb_store::RedbStore::open_read_only(dir)
        })?),
        // sled has no read-only mode; opening it may replay its own log.
        Backend::Sled => Arc::new(guard::guard(&file, || sled_store::SledStore::open(dir, false))?),
        Backend::Memory | Backend::Postgres => return Err(no_dir_for(backend)),
    };
    let store: Arc<dyn Store> = Arc::new(guard::Guarded::new(store, file));
    let store: Arc<dyn Store> = Arc::new(segments::Segmented::open(store, dir)?);
    Ok(Arc::new(GroupCommitLog::start(
        store,
        backend,
        &Place::dir(dir),
        true,
    )?))
}

/// Opens (creating its tables if needed) the log in PostgreSQL at `place`
/// for appending and reading: takes the schema's writer lock and the next
/// epoch (`pg_store`), refuses when another process holds the lock
/// (`LogError::Locked`) or the last record is damaged.
#[cfg(feature = "postgres")]
pub fn open_postgres(place: &pg_store::PgPlace) -> Result<Arc<dyn EventLog>, LogError> {
    open_postgres_with(place, lease::LeaseOptions::default())
}

/// [`open_postgres`] with the writer's lease of `opts`.
#[cfg(feature = "postgres")]
pub fn open_postgres_with(
    place: &pg_store::PgPlace,
    opts: lease::LeaseOptions,
) -> Result<Arc<dyn EventLog>, LogError> {
    let store = pg_store::PgStore::open_with(place.clone(), pg_store::Mode::Write, opts)?;
    Ok(Arc::new(GroupCommitLog::start(
        Arc::new(store),
        Backend::Postgres,
        &pg_place(place),
        false,
    )?))
}

/// Opens an existing PostgreSQL log for reading only: no lock, no epoch,
/// creates nothing, tolerates a damaged last record, refuses appends.
#[cfg(feature = "postgres")]
pub fn open_postgres_for_reading(place: &pg_store::PgPlace) -> Result<Arc<dyn EventLog>, LogError> {
    let store = pg_store::PgStore::open(place.clone(), pg_store::Mode::Read)?;
    Ok(Arc::new(GroupCommitLog::start(
        Arc::new(store),
        Backend::Postgres,
        &pg_place(place),
        true,
    )?))
}

#[cfg(feature = "postgres")]
fn pg_place(place: &pg_store::PgPlace) -> Place {
    Place {
        name: place.display(),
        audit_args: format!("--log-postgres '<url>' --log-schema {}", place.schema),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12 item 6: a zero-byte `events.redb` is not a new log.
    #[test]
    fn a_zero_byte_log_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(redb_store::FILE_NAME), b"").unwrap();
        for e in [
            open(Backend::Redb, dir.path()).err().unwrap(),
            open_detected(dir.path(), Backend::Redb).err().unwrap(),
            open_for_reading(dir.path()).err().unwrap(),
        ] {
            let e = e.to_string();
            assert!(e.contains("events.redb is empty (0 bytes)"), "{e}");
        }
        let len = std::fs::metadata(dir.path().join(redb_store::FILE_NAME))
            .unwrap()
            .len();
        assert_eq!(len, 0, "nothing was written to it");
    }

    #[tokio::test]
    async fn a_new_log_leaves_its_marker() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!dir.path().join(MARKER_FILE).exists());
        drop(open(Backend::Redb, dir.path()).unwrap());
        let text = std::fs::read_to_string(dir.path().join(MARKER_FILE)).unwrap();
        assert!(text.contains("recman event log (redb) created"), "{text}");
    }
}
