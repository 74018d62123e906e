//! The events relay (an outbox): publishes every appended event to the events
//! exchange in log order with confirms, and records durably (an fsync'd cursor
//! file) how far it got, so after a crash it resumes where the broker's last
//! confirm left it: nothing lost, nothing reordered; a re-sent event keeps its
//! `message_id` (`event/<seq>`) so subscribers drop the duplicate.
//!
//! At full load one message per event would cost the broker more than the
//! jobs themselves, so when more than [`RelayOptions::batch_over`] events are
//! waiting the relay sends them as batches: one message of type
//! [`BATCH_TYPE`] holding a JSON array of `EventMessage`s (at most
//! `max_events` events or `max_bytes` of JSON), routing key [`BATCH_KEY`],
//! id `events/<first>-<last>`, headers `x-recman-first-seq` /
//! `x-recman-last-seq`. Every event carries its `seq`, so subscribers dedupe
//! on it whatever form it came in (see deploy/README.md, "Events").
//!
//! It runs in both modes, started by the engine handle (`crate::handle`):
//! over RabbitMQ with a durable cursor ([`Cursor::in_data_dir`]), and on the
//! in-process bus with [`Cursor::ephemeral`] (from the log's end, nothing
//! stored: in-process subscribers live no longer than the process). While
//! nobody subscribes to the in-process bus's `Events`, it does not read the
//! log at all: it notes the log's end every [`IDLE_POLL`] and relays from
//! there once someone subscribes.

use std::collections::HashMap;
use std::fs::{self, File};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use recman_events::bus::{msg_type, Address, Bus, BusError, Message, ALSO_ROUTE_HEADER, ROUTING_KEY_HEADER};
use recman_events::wire::{self, EventMessage};
use recman_events::{EventBody, EventLog, JobId, LogError, StoredEvent, TargetId, SCHEMA_VERSION};

/// The cursor file in the engine's data directory.
pub const CURSOR_FILE: &str = "events-relay.cursor";
/// Events read from the log per round (all confirmed before the cursor moves).
pub const ROUND: usize = 4096;
/// How often an idle relay (the in-process bus, nobody subscribed) looks
/// again whether someone subscribed: the most a new subscriber waits for its
/// first event.
pub const IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(20);
/// The message type (AMQP `type` property) of a batch of events.
pub const BATCH_TYPE: &str = "event-batch";
/// The routing key of a batch on the events exchange (`#` matches it too).
pub const BATCH_KEY: &str = "batch";

/// When and how the relay batches events.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// Events waiting at once above which they go out as batches (below or
    /// at it, one message per event with its `<kind>.<target>` routing key).
    /// `usize::MAX` never batches; 0 always does.
    pub batch_over: usize,
    /// Most events in one batch message.
    pub max_events: usize,
    /// Most bytes of JSON in one batch message (a single larger event still
    /// goes, alone).
    pub max_bytes: usize,
    /// Least time between two cursor writes (each is two fsyncs). A cursor
    /// that lags only means more duplicates after a crash, never a loss; it
    /// is always written when the relay stops. Zero = after every round.
    pub cursor_interval: std::time::Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            batch_over: 32,
            max_events: 256,
            max_bytes: 256 * 1024,
            cursor_interval: std::time::Duration::from_millis(100),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("reading the event log: {0}")]
    Log(#[from] LogError),
    #[error("publishing events: {0}")]
    Bus(#[from] BusError),
    #[error("relay cursor {path}: {source}")]
    Cursor { path: PathBuf, source: std::io::Error },
}

/// The last sequence number the broker confirmed, kept in a small file or
/// in the `meta` table of a PostgreSQL log; or, for the in-process bus,
/// nothing kept at all.
pub struct Cursor {
    /// `None`: ephemeral (see [`Cursor::ephemeral`]) or in PostgreSQL.
    path: Option<PathBuf>,
    /// The log's PostgreSQL database, whose `meta` table holds the cursor
    /// (so an engine that takes over as a standby goes on where the last
    /// one stopped, not where its own data dir's file says).
    pg: Option<Arc<recman_events::log::pg_store::PgStore>>,
}

/// The key of the relay's cursor in a PostgreSQL log's `meta` table.
pub const PG_CURSOR_KEY: &str = "events_relay_cursor";

impl Cursor {
    pub fn new(path: impl Into<PathBuf>) -> Cursor {
        Cursor {
            path: Some(path.into()),
            pg: None,
        }
    }

    /// The cursor in the `meta` table of the PostgreSQL log at `place`.
    pub fn postgres(place: &recman_events::log::pg_store::PgPlace) -> Result<Cursor, RelayError> {
        let store = recman_events::log::pg_store::PgStore::open(
            place.clone(),
            recman_events::log::pg_store::Mode::Read,
        )?;
        Ok(Cursor {
            path: None,
            pg: Some(Arc::new(store)),
        })
    }

    pub fn in_data_dir(dir: &Path) -> Cursor {
        Cursor::new(dir.join(CURSOR_FILE))
    }

    /// A cursor that starts at the log's end and stores nothing: for the
    /// in-process bus, whose subscribers cannot have missed anything from
    /// before this process started.
    pub fn ephemeral() -> Cursor {
        Cursor { path: None, pg: None }
    }

    fn err(&self, path: &Path, source: std::io::Error) -> RelayError {
        RelayError::Cursor {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Where to start after: the stored seq (0 when the file does not exist
    /// yet), or the log's end for an ephemeral cursor.
    fn start(&self, log: &dyn EventLog) -> Result<u64, RelayError> {
        match (&self.path, &self.pg) {
            (None, None) => Ok(log.last_seq()),
            _ => self.load(),
        }
    }

    /// 0 when the file does not exist yet (nothing published) or the cursor
    /// is ephemeral.
    pub fn load(&self) -> Result<u64, RelayError> {
        if let Some(pg) = &self.pg {
            return Ok(pg.get_meta(PG_CURSOR_KEY)?.unwrap_or(0).max(0) as u64);
        }
        let Some(path) = &self.path else { return Ok(0) };
        match fs::read_to_string(path) {
            Ok(s) => s.trim().parse().map_err(|e| {
                self.err(
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("not a sequence number ({e}); delete it to re-publish everything"),
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(self.err(path, e)),
        }
    }

    /// Writes `seq` durably: a temp file, fsync, rename over, fsync the
    /// directory. Nothing for an ephemeral cursor.
    pub fn store(&self, seq: u64) -> Result<(), RelayError> {
        if let Some(pg) = &self.pg {
            return Ok(pg.set_meta(PG_CURSOR_KEY, i64::try_from(seq).unwrap_or(i64::MAX))?);
        }
        let Some(path) = &self.path else { return Ok(()) };
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            writeln!(f, "{seq}")?;
            f.sync_all()?;
            fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent() {
                File::open(if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                })?
                .sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| self.err(path, e))
    }
}

/// The targets of each job, for routing keys (`<kind>.<target>`).
#[derive(Default)]
struct Targets {
    by_job: HashMap<JobId, Vec<TargetId>>,
}

impl Targets {
    /// Remembers the targets of a job's request (no look-up).
    fn note(&mut self, e: &StoredEvent) {
        if let EventBody::Requested { targets, .. } = &e.event.body {
            if !targets.is_empty() {
                self.by_job.insert(e.event.job, targets.clone());
            }
        }
    }

    fn of(&mut self, log: &dyn EventLog, e: &StoredEvent) -> Vec<TargetId> {
        // Facts of no job (schedules, RPO) name their own subject.
        match &e.event.body {
            EventBody::RpoChanged { target, .. }
            | EventBody::RpoBreached { target, .. }
            | EventBody::RpoRestored { target, .. } => return vec![target.clone()],
            EventBody::ScheduleChanged { schedule, .. }
            | EventBody::ScheduleSkipped { schedule, .. }
            | EventBody::SchedulePaused { schedule, .. }
                if e.event.job == JobId::NONE =>
            {
                return vec![TargetId::from(format!("schedule:{schedule}"))]
            }
            _ => {}
        }
        self.note(e);
        if let Some(t) = self.by_job.get(&e.event.job) {
            return t.clone();
        }
        // Started after the job's request: look it up once.
        let all = log.read_job(e.event.job).ok().and_then(|evs| {
            evs.into_iter().find_map(|s| match s.event.body {
                EventBody::Requested { targets, .. } if !targets.is_empty() => Some(targets),
                _ => None,
            })
        });
        match all {
            Some(t) => {
                self.by_job.insert(e.event.job, t.clone());
                t
            }
            None => vec![TargetId::from("unknown")],
        }
    }

    fn forget_finished(&mut self, e: &StoredEvent) {
        if e.event.body.is_terminal() {
            self.by_job.remove(&e.event.job);
        }
    }
}

/// The message for one stored event: `EventMessage` JSON, id `event/<seq>`,
/// routing key `<event kind>.<first target of the job>`; a group's other
/// members in [`ALSO_ROUTE_HEADER`], so that a subscriber of any member's
/// events gets the group's (once per queue: RabbitMQ's `CC`).
pub fn event_message(e: &StoredEvent, targets: &[TargetId]) -> Message {
    let kind = e.event.body.kind();
    let first = targets.first().map_or("unknown", TargetId::as_str);
    let body = wire::encode(&EventMessage {
        schema_version: SCHEMA_VERSION,
        seq: e.seq,
        event: e.event.clone(),
    });
    let mut m = Message::new(msg_type::EVENT, format!("event/{}", e.seq), body)
        .with_header(ROUTING_KEY_HEADER, format!("{kind}.{first}"))
        .with_header("x-recman-seq", e.seq.to_string())
        .with_header("x-recman-job", e.event.job.to_string())
        // In the job's trace (a batch spans many jobs and carries none).
        .with_header(
            recman_trace::TRACEPARENT,
            recman_trace::TraceParent::job_root(e.event.job).to_string(),
        );
    if targets.len() > 1 {
        let also: Vec<String> = targets[1..].iter().map(|t| format!("{kind}.{t}")).collect();
        m = m.with_header(ALSO_ROUTE_HEADER, also.join(","));
    }
    m
}

/// One message holding `events` (in log order, not empty): a JSON array of
/// `EventMessage`s, id `events/<first>-<last>`.
pub fn batch_message(events: &[EventMessage]) -> Message {
    let encoded: Vec<(u64, Vec<u8>)> = events.iter().map(|e| (e.seq, wire::encode(e))).collect();
    batch_of(&encoded)
}

/// [`batch_message`] of events already encoded, as `(seq, JSON)`.
fn batch_of(events: &[(u64, Vec<u8>)]) -> Message {
    let first = events.first().map_or(0, |e| e.0);
    let last = events.last().map_or(0, |e| e.0);
    // The brackets, and a comma after each event but the last.
    let mut body = Vec::with_capacity(events.iter().map(|e| e.1.len() + 1).sum::<usize>() + 1);
    body.push(b'[');
    for (i, (_, json)) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(json);
    }
    body.push(b']');
    Message::new(BATCH_TYPE, format!("events/{first}-{last}"), body)
        .with_header(ROUTING_KEY_HEADER, BATCH_KEY)
        .with_header("x-recman-first-seq", first.to_string())
        .with_header("x-recman-last-seq", last.to_string())
        .with_header("x-recman-count", events.len().to_string())
}

/// The events a relayed message holds, whichever form it has (one event or
/// a batch), for subscribers written in Rust.
pub fn events_of(msg: &Message) -> Result<Vec<EventMessage>, wire::WireError> {
    if msg.msg_type == BATCH_TYPE {
        serde_json::from_slice::<Vec<EventMessage>>(&msg.body)
            .map_err(|e| wire::WireError::Json(e.to_string()))
    } else {
        Ok(vec![wire::decode::<EventMessage>(&msg.body)?])
    }
}

/// Splits `events` into batch messages of at most `max_events` events and
/// `max_bytes` bytes of body (a single larger event goes alone). Each event
/// is encoded once; its exact size decides.
fn batches(events: Vec<EventMessage>, opts: &RelayOptions) -> Vec<(Address, Message)> {
    let mut out = Vec::new();
    let mut chunk: Vec<(u64, Vec<u8>)> = Vec::new();
    // The body `chunk` would make.
    let mut bytes = 0;
    for e in events {
        let json = wire::encode(&e);
        let full = chunk.len() >= opts.max_events.max(1) || bytes + json.len() + 1 > opts.max_bytes;
        if !chunk.is_empty() && full {
            out.push((Address::Events, batch_of(&chunk)));
            chunk.clear();
        }
        bytes = if chunk.is_empty() {
            json.len() + 2
        } else {
            bytes + json.len() + 1
        };
        chunk.push((e.seq, json));
    }
    if !chunk.is_empty() {
        out.push((Address::Events, batch_of(&chunk)));
    }
    out
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
    run_with(log, bus, cursor, RelayOptions::default(), shutdown).await
}

/// [`run`] with explicit batching options.
pub async fn run_with(
    log: Arc<dyn EventLog>,
    bus: Arc<dyn Bus>,
    cursor: Cursor,
    opts: RelayOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RelayError> {
    let mut done = cursor.start(log.as_ref())?;
    let mut targets = Targets::default();
    // `None` while idle: nobody subscribes to the in-process bus, so the
    // log is not read at all (it was read and decoded for nothing, beside
    // the engine handle's own reader); `done` follows the log's end instead.
    let mut tail = Some(log.subscribe(done + 1));
    tracing::info!(from = done + 1, "events relay started");
    tokio::pin!(shutdown);
    let mut buf = Vec::with_capacity(ROUND);
    // Once asked to stop: relay what the log holds at that moment, then return.
    let mut stop_at: Option<u64> = None;
    // What the cursor file says, and when it was written.
    let mut stored = done;
    let mut last_store = std::time::Instant::now() - opts.cursor_interval;
    loop {
        if stop_at.is_some_and(|s| done >= s) {
            if stored < done {
                cursor.store(done)?;
            }
            return Ok(());
        }
        if bus.events_subscribed() == Some(false) {
            // Idle. The end is read *before* asking again, so whoever
            // subscribes after that question gets every event after `done`.
            tail = None;
            targets = Targets::default();
            let end = log.last_seq();
            if bus.events_subscribed() == Some(false) {
                done = done.max(end);
                tokio::select! {
                    _ = &mut shutdown, if stop_at.is_none() => stop_at = Some(log.last_seq()),
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
        }
        let tail = tail.get_or_insert_with(|| log.subscribe(done + 1));
        buf.clear();
        let n = tokio::select! {
            _ = &mut shutdown, if stop_at.is_none() => {
                stop_at = Some(log.last_seq());
                continue;
            }
            n = tail.recv_many(&mut buf, ROUND) => n,
            // Quiet after a burst: write the cursor that lags behind.
            _ = tokio::time::sleep_until((last_store + opts.cursor_interval).into()), if stored < done => {
                cursor.store(done)?;
                stored = done;
                last_store = std::time::Instant::now();
                continue;
            }
        };
        if n == 0 {
            if stored < done {
                cursor.store(done)?;
            }
            return Ok(()); // the log closed
        }
        let mut fresh = Vec::with_capacity(n);
        for item in buf.drain(..) {
            let e = item?;
            if e.seq > done {
                fresh.push(e);
            }
        }
        let Some(last) = fresh.last().map(|e| e.seq) else {
            continue;
        };
        if bus.events_subscribed() == Some(false) {
            // The last subscriber left during the round: nobody to send to.
            done = last;
            continue;
        }
        // Every message of the round is sent before any confirm is awaited
        // (`publish_batch` pipelines them), and the cursor moves once all are in.
        let msgs = if fresh.len() > opts.batch_over {
            let events = fresh
                .into_iter()
                .map(|e| {
                    targets.note(&e);
                    targets.forget_finished(&e);
                    EventMessage {
                        schema_version: SCHEMA_VERSION,
                        seq: e.seq,
                        event: e.event,
                    }
                })
                .collect();
            batches(events, &opts)
        } else {
            fresh
                .iter()
                .map(|e| {
                    let t = targets.of(log.as_ref(), e);
                    targets.forget_finished(e);
                    (Address::Events, event_message(e, &t))
                })
                .collect()
        };
        bus.publish_batch(msgs).await?;
        done = last;
        if last_store.elapsed() >= opts.cursor_interval {
            cursor.store(done)?;
            stored = done;
            last_store = std::time::Instant::now();
        }
    }
}
