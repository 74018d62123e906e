//! The events relay (an outbox): publishes every appended event to the events
//! exchange in log order with confirms, and records durably (an fsync'd cursor
//! file) how far it got, so after a crash it resumes where the broker's last
//! confirm left it: nothing lost, nothing reordered; a re-sent event keeps its
//! `message_id` (`event/<seq>`) so subscribers drop the duplicate.

use std::collections::HashMap;
use std::fs::{self, File};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use recman_events::bus::{msg_type, Address, Bus, BusError, Message};
use recman_events::wire::{self, EventMessage};
use recman_events::{EventBody, EventLog, JobId, LogError, StoredEvent, TargetId, SCHEMA_VERSION};

use crate::convert::ROUTING_KEY_HEADER;

/// The cursor file in the engine's data directory.
pub const CURSOR_FILE: &str = "events-relay.cursor";
/// Events published per batch (all confirmed before the cursor moves).
pub const BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("reading the event log: {0}")]
    Log(#[from] LogError),
    #[error("publishing events: {0}")]
    Bus(#[from] BusError),
    #[error("relay cursor {path}: {source}")]
    Cursor { path: PathBuf, source: std::io::Error },
}

/// The last sequence number the broker confirmed, kept in a small file.
pub struct Cursor {
    path: PathBuf,
}

impl Cursor {
    pub fn new(path: impl Into<PathBuf>) -> Cursor {
        Cursor { path: path.into() }
    }

    pub fn in_data_dir(dir: &Path) -> Cursor {
        Cursor::new(dir.join(CURSOR_FILE))
    }

    fn err(&self, source: std::io::Error) -> RelayError {
        RelayError::Cursor {
            path: self.path.clone(),
            source,
        }
    }

    /// 0 when the file does not exist yet (nothing published).
    pub fn load(&self) -> Result<u64, RelayError> {
        match fs::read_to_string(&self.path) {
            Ok(s) => s.trim().parse().map_err(|e| {
                self.err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not a sequence number ({e}); delete it to re-publish everything"),
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Writes `seq` durably: a temp file, fsync, rename over, fsync the directory.
    pub fn store(&self, seq: u64) -> Result<(), RelayError> {
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            writeln!(f, "{seq}")?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                File::open(if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                })?
                .sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| self.err(e))
    }
}

/// The first target of each job, for routing keys (`<kind>.<target>`).
#[derive(Default)]
struct Targets {
    by_job: HashMap<JobId, TargetId>,
}

impl Targets {
    fn of(&mut self, log: &dyn EventLog, e: &StoredEvent) -> String {
        if let EventBody::Requested { targets, .. } = &e.event.body {
            if let Some(t) = targets.first() {
                self.by_job.insert(e.event.job, t.clone());
            }
        }
        if let Some(t) = self.by_job.get(&e.event.job) {
            return t.to_string();
        }
        // Started after the job's request: look it up once.
        let first = log.read_job(e.event.job).ok().and_then(|evs| {
            evs.into_iter().find_map(|s| match s.event.body {
                EventBody::Requested { targets, .. } => targets.into_iter().next(),
                _ => None,
            })
        });
        match first {
            Some(t) => {
                self.by_job.insert(e.event.job, t.clone());
                t.to_string()
            }
            None => "unknown".into(),
        }
    }

    fn forget_finished(&mut self, e: &StoredEvent) {
        if e.event.body.is_terminal() {
            self.by_job.remove(&e.event.job);
        }
    }
}

/// The message for one stored event: `EventMessage` JSON, id `event/<seq>`,
/// routing key `<event kind>.<first target of the job>`.
pub fn event_message(e: &StoredEvent, target: &str) -> Message {
    let body = wire::encode(&EventMessage {
        schema_version: SCHEMA_VERSION,
        seq: e.seq,
        event: e.event.clone(),
    });
    Message::new(msg_type::EVENT, format!("event/{}", e.seq), body)
        .with_header(ROUTING_KEY_HEADER, format!("{}.{target}", e.event.body.kind()))
        .with_header("x-recman-seq", e.seq.to_string())
        .with_header("x-recman-job", e.event.job.to_string())
}

/// Relays from the cursor on until `shutdown`, then what the log held at that
/// moment (bound the wait from outside); returns an error when the log or the
/// broker fails for good (the caller decides whether to stop).
pub async fn run(
    log: Arc<dyn EventLog>,
    bus: Arc<dyn Bus>,
    cursor: Cursor,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RelayError> {
    let mut done = cursor.load()?;
    let mut targets = Targets::default();
    let mut tail = log.subscribe(done + 1);
    tracing::info!(from = done + 1, "events relay started");
    tokio::pin!(shutdown);
    let mut buf = Vec::with_capacity(BATCH);
    // Once asked to stop: relay what the log holds at that moment, then return.
    let mut stop_at: Option<u64> = None;
    loop {
        if stop_at.is_some_and(|s| done >= s) {
            return Ok(());
        }
        buf.clear();
        let n = tokio::select! {
            _ = &mut shutdown, if stop_at.is_none() => {
                stop_at = Some(log.last_seq());
                continue;
            }
            n = tail.recv_many(&mut buf, BATCH) => n,
        };
        if n == 0 {
            return Ok(()); // the log closed
        }
        let mut msgs = Vec::with_capacity(n);
        let mut last = done;
        for item in buf.drain(..) {
            let e = item?;
            if e.seq <= done {
                continue;
            }
            let t = targets.of(log.as_ref(), &e);
            msgs.push((Address::Events, event_message(&e, &t)));
            targets.forget_finished(&e);
            last = e.seq;
        }
        if msgs.is_empty() {
            continue;
        }
        bus.publish_batch(msgs).await?;
        cursor.store(last)?;
        done = last;
    }
}
