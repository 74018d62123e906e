//! Checkpoints of the core state (`recman_core::checkpoint` encodes them):
//! where they are kept (`CheckpointStore`: files in the data dir, or a table
//! beside the PostgreSQL log), how start-up resumes from the newest valid
//! one, how the engine writes them (`writer`), and how `recman audit`
//! checks them.
//!
//! A checkpoint is used only when its checksum and format version hold and
//! its hash is the log's record N; otherwise a warning says why and the next
//! older one (or, with none left, a full replay) is used: the log is the
//! truth, a checkpoint only saves time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use recman_core::checkpoint::{self, Header};
use recman_core::{Core, CoreConfig, State};
use recman_events::codec;
use recman_events::EventLog;

use crate::view::{Until, View};

pub mod contract;
pub mod files;
pub mod pg;
pub mod writer;

pub use files::FileStore;
pub use pg::PgCheckpoints;
pub use writer::Writer;

#[cfg(test)]
mod tests;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where checkpoints are kept. Each is stored whole under its sequence
/// number; `save` keeps only the newest `keep` (and is atomic: a reader sees
/// the old set or the new one, never a part of a checkpoint).
pub trait CheckpointStore: Send + Sync + 'static {
    /// Stores `bytes` as the checkpoint at `seq` (replacing one there), then
    /// removes all but the newest `keep`.
    fn save(&self, seq: u64, bytes: Vec<u8>, keep: usize) -> BoxFuture<'_, anyhow::Result<()>>;
    /// The sequence numbers held, oldest first.
    fn list(&self) -> BoxFuture<'_, anyhow::Result<Vec<u64>>>;
    /// The bytes of the checkpoint at `seq` (`None`: not there).
    fn load(&self, seq: u64) -> BoxFuture<'_, anyhow::Result<Option<Vec<u8>>>>;
    /// Where it is, for messages.
    fn place(&self) -> String;
}

/// When the engine writes one (`[checkpoint]` of the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub every_events: u64,
    pub every: Duration,
    pub keep: usize,
    /// `[engine] recent_finished`: the view section of each checkpoint is
    /// folded with it (the API's view starts from it).
    pub recent_finished: usize,
}

impl Policy {
    pub fn from_config(c: &recman_config::Config) -> Policy {
        Policy {
            every_events: c.checkpoint.every_events,
            every: c.checkpoint.every,
            keep: c.checkpoint.keep as usize,
            recent_finished: c.engine.recent_finished as usize,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        let c = recman_config::CheckpointConfig::default();
        Policy {
            every_events: c.every_events,
            every: c.every,
            keep: c.keep as usize,
            recent_finished: recman_config::DEFAULT_RECENT_FINISHED as usize,
        }
    }
}

/// The engine's checkpoints: a store and when to write.
#[derive(Clone)]
pub struct Checkpoints {
    pub store: Arc<dyn CheckpointStore>,
    pub policy: Policy,
}

/// The hash of record `seq` of `log` as the audit computes it (the genesis
/// hash for 0); `None` when the log has no such record.
pub fn record_hash(log: &dyn EventLog, seq: u64) -> anyhow::Result<Option<[u8; 32]>> {
    if seq == 0 {
        return Ok(Some(codec::GENESIS_HASH));
    }
    let raw = log
        .read_raw(seq, 1)
        .context("reading the log for a checkpoint's record")?;
    Ok(raw
        .first()
        .filter(|r| r.seq == seq)
        .map(|r| codec::hash(&r.bytes)))
}

/// How start-up went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resumed {
    /// The checkpoint used (`None`: a full replay).
    pub from: Option<u64>,
    /// Records folded after it.
    pub tail: u64,
    /// Checkpoints skipped, with why (also logged as warnings).
    pub skipped: Vec<(u64, String)>,
    pub checkpoint_bytes: usize,
}

/// Why checkpoint `h` cannot stand for `log`'s first `h.seq` records.
fn mismatch(log: &dyn EventLog, h: &Header) -> anyhow::Result<Option<String>> {
    let last = log.last_seq();
    if h.seq > last {
        return Ok(Some(format!(
            "it is at record {} but the log ends at {last}",
            h.seq
        )));
    }
    match record_hash(log, h.seq)? {
        Some(hash) if hash == h.head_hash => Ok(None),
        Some(_) => Ok(Some(format!(
            "its hash does not match the log's record {}: it belongs to another log or history",
            h.seq
        ))),
        None => Ok(Some(format!("the log has no record {}", h.seq))),
    }
}

/// The newest checkpoint of `store` that is valid for `log`, decoded: each
/// damaged or mismatching one is logged as a warning and skipped.
pub async fn newest_valid(
    store: &dyn CheckpointStore,
    log: &dyn EventLog,
    resumed: &mut Resumed,
) -> anyhow::Result<Option<checkpoint::Checkpoint>> {
    let seqs = match store.list().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(place = %store.place(), error = %format!("{e:#}"), "cannot list the checkpoints; replaying the whole log");
            resumed.skipped.push((0, format!("cannot list: {e:#}")));
            return Ok(None);
        }
    };
    for seq in seqs.into_iter().rev() {
        let why = match store.load(seq).await {
            Ok(None) => continue, // removed meanwhile
            Err(e) => format!("cannot be read: {e:#}"),
            Ok(Some(bytes)) => match checkpoint::decode(&bytes) {
                Err(e) => e.to_string(),
                Ok(ck) if ck.header.seq != seq => {
                    format!("it says it is at record {}", ck.header.seq)
                }
                Ok(ck) => match mismatch(log, &ck.header)? {
                    None => {
                        resumed.checkpoint_bytes = bytes.len();
                        return Ok(Some(ck));
                    }
                    Some(why) => why,
                },
            },
        };
        tracing::warn!(seq, place = %store.place(), reason = %why, "checkpoint skipped; trying an older one");
        resumed.skipped.push((seq, why));
    }
    Ok(None)
}

/// Folds `log`'s records from `from` on into `core`.
pub fn replay_from(core: &mut Core, log: &dyn EventLog, from: u64) -> anyhow::Result<u64> {
    let mut from = from;
    let mut n = 0;
    loop {
        let batch = log.read(from, 4096).context("replaying the event log")?;
        let Some(last) = batch.last() else { break };
        from = last.seq + 1;
        for e in &batch {
            core.apply(&e.event);
        }
        n += batch.len() as u64;
    }
    Ok(n)
}

/// Rebuilds the core: from the newest valid checkpoint of `store` and the
/// log after it, or from the whole log.
pub async fn resume(
    cfg: CoreConfig,
    log: &dyn EventLog,
    store: Option<&dyn CheckpointStore>,
) -> anyhow::Result<(Core, Resumed)> {
    let mut resumed = Resumed::default();
    let ck = match store {
        Some(s) => newest_valid(s, log, &mut resumed).await?,
        None => None,
    };
    let (mut core, from) = match ck {
        Some(ck) => {
            resumed.from = Some(ck.header.seq);
            (Core::from_state(cfg, ck.state), ck.header.seq + 1)
        }
        None => (Core::new(cfg), 1),
    };
    resumed.tail = replay_from(&mut core, log, from)?;
    Ok((core, resumed))
}

/// The API's view: from the view section of the newest valid checkpoint of
/// `store` and the log after it, or (no checkpoint, or none with a usable
/// view section: a warning says why) folded from the whole log. `view` is
/// the empty view as configured (targets, bounds, `recent_finished`).
pub async fn resume_view(
    view: View,
    log: &dyn EventLog,
    store: Option<&dyn CheckpointStore>,
) -> anyhow::Result<(View, Resumed)> {
    let mut resumed = Resumed::default();
    let ck = match store {
        Some(s) => newest_valid(s, log, &mut resumed).await?,
        None => None,
    };
    let start = match ck {
        Some(ck) => {
            let seq = ck.header.seq;
            match view.clone().from_checkpoint(seq, ck.state, &ck.view) {
                Ok(v) => {
                    resumed.from = Some(seq);
                    v
                }
                Err(why) => {
                    tracing::warn!(seq, reason = %why, "the API's view is folded from the whole log: the checkpoint's view section is not used");
                    resumed.skipped.push((seq, why));
                    view
                }
            }
        }
        None => view,
    };
    let from = start.last_seq;
    // On this thread, as the engine's own replay.
    let view = start
        .build(log, Until::End)
        .context("folding the event log into the API's view")?;
    resumed.tail = view.last_seq - from;
    Ok((view, resumed))
}

/// Encodes and stores a checkpoint of `state` (the fold of the log to
/// `state.applied`, which must be durable), off the engine's loop. It has
/// no view section (the writer's checkpoints have one): the API's view
/// started from it is folded from the whole log.
pub async fn write(
    store: &dyn CheckpointStore,
    log: &dyn EventLog,
    state: State,
    keep: usize,
) -> anyhow::Result<(u64, usize)> {
    let seq = state.applied;
    if seq == 0 {
        return Ok((0, 0));
    }
    anyhow::ensure!(
        seq <= log.last_seq(),
        "the state is at record {seq}, past the log's durable head {}",
        log.last_seq()
    );
    let hash = record_hash(log, seq)?.with_context(|| format!("the log has no record {seq}"))?;
    let bytes = tokio::task::spawn_blocking(move || checkpoint::encode(seq, &hash, &state))
        .await
        .context("encoding a checkpoint")?;
    let len = bytes.len();
    store.save(seq, bytes, keep).await?;
    Ok((seq, len))
}

/// What `recman audit` found about one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub seq: u64,
    /// `None`: it matches a full replay to its record (or is `other_format`).
    pub problem: Option<String>,
    /// An intact checkpoint of another build's format version: not
    /// checked, as the engine does not use it (it goes as newer ones come).
    pub other_format: Option<u16>,
}

/// Checks every checkpoint of `store` against a fold of `log` (one pass:
/// the fold stops at each checkpoint's record and compares): the core
/// state, and the view section when it has one (the API's view is folded
/// with the same `recent_finished`).
pub async fn verify_all(store: &dyn CheckpointStore, log: &dyn EventLog) -> anyhow::Result<Vec<Verdict>> {
    let seqs = store.list().await?;
    let mut out = Vec::new();
    // Of the config only the bounds change the fold (`evolve`: when
    // finished jobs and request ids leave): each checkpoint is compared with
    // a fold under its own, started again when they differ; likewise the
    // view's `recent_finished`.
    let fresh = |bounds, recent| View::new(Default::default()).with_bounds(bounds, recent);
    let mut view = fresh(recman_core::Bounds::default(), crate::view::RECENT_FINISHED);
    let mut at = 0u64;
    for seq in seqs {
        let problem = match store.load(seq).await? {
            None => continue,
            Some(bytes) => match checkpoint::decode(&bytes) {
                Err(checkpoint::CheckpointError::Version(v)) if checkpoint::intact(&bytes) => {
                    out.push(Verdict {
                        seq,
                        problem: None,
                        other_format: Some(v),
                    });
                    continue;
                }
                Err(e) => Some(e.to_string()),
                Ok(ck) if ck.header.seq != seq => {
                    Some(format!("stored as record {seq}, it says {}", ck.header.seq))
                }
                Ok(ck) => match mismatch(log, &ck.header)? {
                    Some(why) => Some(why),
                    None => {
                        let recent = crate::view::section::recent_cap(&ck.view)
                            .unwrap_or(crate::view::RECENT_FINISHED);
                        if view.state.bounds != ck.state.bounds || view.recent_cap() != recent || at > seq {
                            view = fresh(ck.state.bounds, recent);
                            at = 0;
                        }
                        while at < seq {
                            let batch = log.read(at + 1, (seq - at).min(4096) as usize)?;
                            anyhow::ensure!(!batch.is_empty(), "the log ended at record {at}");
                            for e in &batch {
                                view.apply(e);
                            }
                            at = batch.last().map(|e| e.seq).unwrap_or(at);
                        }
                        checkpoint::difference(&ck.state, &view.state)
                            .or_else(|| {
                                // Without a view section (`recman bench`, older
                                // writers) the API folds the whole log: nothing to check.
                                (!ck.view.is_empty())
                                    .then(|| crate::view::section::difference(&ck.view, &view))
                                    .flatten()
                            })
                            .map(|d| format!("it does not match a replay of the log to record {seq}: {d}"))
                    }
                },
            },
        };
        out.push(Verdict {
            seq,
            problem,
            other_format: None,
        });
    }
    Ok(out)
}

/// A pause of the engine's loop, for the log line of each checkpoint.
pub fn took(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
