//! The group-commit writer shared by every local backend: one thread batches
//! concurrent appends into one transaction and one sync, sequences them and
//! extends the hash chain; readers and live subscriptions read the `Store`.
//!
//! Callers send their events over a channel and wait on a oneshot. The writer
//! blocks for the first request, then drains everything pending (up to
//! `MAX_BATCH_EVENTS`), so under load each `fsync` carries many appends and
//! throughput comes from batching, never from skipping the sync.
//!
//! A failed commit poisons the writer: after an `fsync` error the state of the
//! file is unknown (the kernel may have dropped the dirty pages), so every later
//! append fails until the process reopens the log and re-reads its tail.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use rkyv::util::AlignedVec;
use tokio::sync::{mpsc, oneshot, watch};

use crate::codec::{self, DecodeError, Record};
use crate::ids::JobId;
use crate::log::store::{Batch, BatchItem, Store};
use crate::log::{Backend, BoxFuture, EventLog, LogError, Place, RawRecord, Subscription};
use crate::model::{Event, StoredEvent};

/// Most events in one transaction; more pending appends wait for the next one.
const MAX_BATCH_EVENTS: usize = 16_384;
/// Records read per chunk by subscriptions.
const SUBSCRIBE_CHUNK: usize = 1024;
/// Room in a subscription's channel before its reader task waits.
const SUBSCRIBE_BUFFER: usize = 1024;

struct Request {
    events: Vec<Event>,
    reply: oneshot::Sender<Result<Vec<u64>, LogError>>,
}

/// An `EventLog` over any `Store`, with one writer thread.
pub struct GroupCommitLog {
    store: Arc<dyn Store>,
    backend: Backend,
    /// `None` when opened for reading only.
    requests: Option<std_mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    /// The last committed sequence number.
    committed: watch::Receiver<u64>,
    /// Keeps the watch alive when there is no writer (read-only).
    _read_only_watch: Option<watch::Sender<u64>>,
}

/// Decodes a stored record and checks it is the one its key says.
pub(crate) fn decode_stored(key: u64, bytes: &[u8]) -> Result<StoredEvent, LogError> {
    let rec = codec::decode(bytes).map_err(|source| LogError::Corrupt { seq: key, source })?;
    if rec.seq != key {
        return Err(LogError::Corrupt {
            seq: key,
            source: DecodeError::Payload(format!(
                "record stored under seq {key} says it is seq {}",
                rec.seq
            )),
        });
    }
    Ok(StoredEvent {
        seq: rec.seq,
        event: rec.event,
    })
}

impl GroupCommitLog {
    /// Starts the log over `store`: reads the last record to continue the
    /// sequence and the hash chain. With `read_only`, no writer is started,
    /// appends fail, and a damaged last record is tolerated (so `audit` can
    /// report it); otherwise a damaged last record refuses the open.
    pub fn start(
        store: Arc<dyn Store>,
        backend: Backend,
        place: &Place,
        read_only: bool,
    ) -> Result<Self, LogError> {
        let last = match store.last() {
            Ok(last) => last,
            // Reading only (audit, events): the records are walked from the
            // start anyway, and each problem is reported where it shows.
            Err(_) if read_only => None,
            Err(e) => return Err(e),
        };
        let (next_seq, prev_hash) = match last {
            None => (1, codec::GENESIS_HASH),
            Some(raw) => {
                let mut scratch = AlignedVec::new();
                let checked = codec::verify(&raw.bytes, &mut scratch).and_then(|(seq, _)| {
                    if seq == raw.seq {
                        Ok(())
                    } else {
                        Err(DecodeError::Payload(format!(
                            "stored under seq {} but says seq {seq}",
                            raw.seq
                        )))
                    }
                });
                if let Err(e) = checked {
                    if !read_only {
                        return Err(LogError::Store(format!(
                            "the last record ({}) of the event log in {} is damaged ({e}); nothing was \
                             changed. Run `recman audit {}` to see what is wrong",
                            raw.seq, place.name, place.audit_args
                        )));
                    }
                }
                (raw.seq + 1, codec::hash(&raw.bytes))
            }
        };
        let (watch_tx, committed) = watch::channel(next_seq - 1);
        if read_only {
            return Ok(GroupCommitLog {
                store,
                backend,
                requests: None,
                writer: None,
                committed,
                _read_only_watch: Some(watch_tx),
            });
        }
        let (tx, rx) = std_mpsc::channel();
        let writer = Writer {
            store: store.clone(),
            rx,
            next_seq,
            prev_hash,
            committed: watch_tx,
            poisoned: None,
        };
        let handle = std::thread::Builder::new()
            .name(format!("recman-log-{}", backend.as_str()))
            .spawn(move || writer.run())?;
        Ok(GroupCommitLog {
            store,
            backend,
            requests: Some(tx),
            writer: Some(handle),
            committed,
            _read_only_watch: None,
        })
    }

    /// The store underneath (for audit tools and tests).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

impl Drop for GroupCommitLog {
    fn drop(&mut self) {
        // Closing the channel ends the writer once pending requests are done;
        // joining it means the store is released when the log is dropped.
        self.requests.take();
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

struct Writer {
    store: Arc<dyn Store>,
    rx: std_mpsc::Receiver<Request>,
    next_seq: u64,
    prev_hash: [u8; 32],
    committed: watch::Sender<u64>,
    poisoned: Option<String>,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Batch::default();
        let mut scratch = AlignedVec::new();
        let mut reqs: Vec<(Request, u64, u64)> = Vec::new();
        while let Ok(first) = self.rx.recv() {
            let mut n = first.events.len();
            reqs.push((first, 0, 0));
            while n < MAX_BATCH_EVENTS {
                match self.rx.try_recv() {
                    Ok(r) => {
                        n += r.events.len();
                        reqs.push((r, 0, 0));
                    }
                    Err(_) => break,
                }
            }
            if let Some(why) = &self.poisoned {
                for (r, _, _) in reqs.drain(..) {
                    let _ = r.reply.send(Err(LogError::Store(why.clone())));
                }
                continue;
            }
            batch.clear();
            batch.items.reserve(n);
            let mut seq = self.next_seq;
            let mut prev = self.prev_hash;
            for (r, start, end) in reqs.iter_mut() {
                *start = seq;
                for event in r.events.drain(..) {
                    let job = event.job;
                    let start = batch.buf.len();
                    let rec = Record {
                        seq,
                        prev_hash: prev,
                        event,
                    };
                    codec::encode_into(&rec, &mut scratch, &mut batch.buf);
                    prev = codec::hash(&batch.buf[start..]);
                    batch.items.push(BatchItem {
                        seq,
                        job,
                        range: start..batch.buf.len(),
                    });
                    seq += 1;
                }
                *end = seq;
            }
            match self.store.commit(&batch) {
                Ok(()) => {
                    self.next_seq = seq;
                    self.prev_hash = prev;
                    self.committed.send_replace(seq - 1);
                    for (r, start, end) in reqs.drain(..) {
                        let _ = r.reply.send(Ok((start..end).collect()));
                    }
                }
                Err(e) => {
                    let why = format!(
                        "an earlier commit of the event log failed ({e}); the log refuses appends \
                         until recman is restarted"
                    );
                    tracing::error!(error = %e, "event log commit failed; log poisoned");
                    for (r, _, _) in reqs.drain(..) {
                        let _ = r.reply.send(Err(LogError::Store(format!("commit failed: {e}"))));
                    }
                    self.poisoned = Some(why);
                }
            }
        }
    }
}

impl EventLog for GroupCommitLog {
    fn append(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(Vec::new());
            }
            let Some(requests) = &self.requests else {
                return Err(LogError::Store(
                    "the event log was opened for reading only; appends are refused".into(),
                ));
            };
            let (reply, rx) = oneshot::channel();
            requests
                .send(Request { events, reply })
                .map_err(|_| LogError::Closed)?;
            rx.await.map_err(|_| LogError::Closed)?
        })
    }

    fn read(&self, from: u64, max: usize) -> Result<Vec<StoredEvent>, LogError> {
        let mut out = Vec::with_capacity(max.min(4096));
        let mut err = None;
        self.store.scan(from, max, &mut |seq, bytes| {
            if err.is_none() {
                match decode_stored(seq, bytes) {
                    Ok(ev) => out.push(ev),
                    Err(e) => err = Some(e),
                }
            }
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn read_job(&self, job: JobId) -> Result<Vec<StoredEvent>, LogError> {
        let seqs = self.store.job_seqs(job)?;
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let bytes = self.store.get(seq)?.ok_or_else(|| {
                LogError::Store(format!(
                    "the job index names record {seq} for job {job}, but the log has no record {seq}"
                ))
            })?;
            let ev = decode_stored(seq, &bytes)?;
            if ev.event.job != job {
                return Err(LogError::Store(format!(
                    "the job index names record {seq} for job {job}, but it belongs to job {}",
                    ev.event.job
                )));
            }
            out.push(ev);
        }
        Ok(out)
    }

    fn read_raw(&self, from: u64, max: usize) -> Result<Vec<RawRecord>, LogError> {
        self.store.read_raw(from, max)
    }

    fn scan_raw(&self, from: u64, max: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize, LogError> {
        self.store.scan(from, max, f)
    }

    fn subscribe(&self, from: u64) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIBE_BUFFER);
        // Weak: a subscription must not keep the store (and its file lock)
        // alive after the log is dropped.
        let store = Arc::downgrade(&self.store);
        let mut committed = self.committed.clone();
        tokio::spawn(async move {
            let mut next = from.max(1);
            loop {
                let last = *committed.borrow_and_update();
                while next <= last {
                    let Some(s) = store.upgrade() else {
                        let _ = tx.send(Err(LogError::Closed)).await;
                        return;
                    };
                    let chunk =
                        match tokio::task::spawn_blocking(move || s.read_raw(next, SUBSCRIBE_CHUNK)).await {
                            Ok(Ok(c)) => c,
                            Ok(Err(e)) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                            Err(e) => {
                                let _ = tx
                                    .send(Err(LogError::Store(format!("log reader failed: {e}"))))
                                    .await;
                                return;
                            }
                        };
                    if chunk.first().map(|r| r.seq) != Some(next) {
                        let _ = tx
                            .send(Err(LogError::Store(format!(
                                "record {next} is missing from the event log"
                            ))))
                            .await;
                        return;
                    }
                    for raw in chunk {
                        if raw.seq != next {
                            let _ = tx
                                .send(Err(LogError::Store(format!(
                                    "record {next} is missing from the event log"
                                ))))
                                .await;
                            return;
                        }
                        let item = decode_stored(raw.seq, &raw.bytes);
                        let failed = item.is_err();
                        if tx.send(item).await.is_err() || failed {
                            return;
                        }
                        next += 1;
                    }
                }
                if committed.changed().await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    fn last_seq(&self) -> u64 {
        *self.committed.borrow()
    }

    fn backend(&self) -> Backend {
        self.backend
    }

    fn index_damage(&self) -> Vec<(u64, String)> {
        self.store.index_damage()
    }

    fn lease(&self) -> Option<Arc<crate::log::lease::Lease>> {
        self.store.lease()
    }

    fn archive(
        &self,
        before: u64,
        per_segment: usize,
    ) -> Result<crate::log::segments::ArchiveReport, LogError> {
        // Only records already durable and behind the writer's last one.
        self.store
            .archive(before.min(*self.committed.borrow()), per_segment)
    }

    fn segments(&self) -> Result<Vec<crate::log::segments::SegmentInfo>, LogError> {
        self.store.segments()
    }
}
