//! The `EventLog` trait: durable, ordered, hash-chained storage of events.
//!
//! Sequence numbers start at 1 and have no gaps. `append` returns only after
//! the events are on disk. Backends share one group-commit writer
//! (`group_commit`) over a small synchronous `Store` (`redb_store`, `sled_store`)
//! and pass one conformance suite (`tests/log_conformance.rs`).

use std::future::Future;
use std::pin::Pin;

use crate::codec::DecodeError;
use crate::ids::JobId;
use crate::model::{Event, StoredEvent};

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
    /// A live tail from `from` (must be called inside a tokio runtime).
    fn subscribe(&self, from: u64) -> Subscription;
    /// The sequence number of the last durable event; 0 when empty.
    fn last_seq(&self) -> u64;
    /// Which backend this is.
    fn backend(&self) -> Backend;
}
