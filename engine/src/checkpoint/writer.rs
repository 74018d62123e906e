//! The checkpoint writer: a thread beside the engine's loop that folds the
//! durable log into a state of its own and writes a checkpoint of it every
//! `every_events` events or `every`. It folds the API's view (which holds
//! the core state, folded by the same `evolve`), so each checkpoint also
//! carries the view's section at the same record: the API starts from it. The loop never pauses for a
//! checkpoint (a copy of a fleet's state takes long: `recman bench
//! startup` prints it); the price is a second fold of each event, on the
//! other core, and a second copy of the state in memory. Only what the log
//! holds reaches it, so only durable state is ever written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use recman_core::{checkpoint as codec, Bounds};
use recman_events::EventLog;

use super::{record_hash, resume_view, Checkpoints};
use crate::view::View;

/// How often the writer looks for new records.
const POLL: Duration = Duration::from_millis(200);

/// The running writer; dropping it stops it (a checkpoint being written is
/// finished first, or cut short by the process's exit, which leaves only a
/// temporary file behind).
pub struct Writer {
    stop: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer (inside a tokio runtime: the store's calls run on it),
    /// folding under the engine's `bounds` (what leaves the state when
    /// depends on them), so that its checkpoints are the engine's state.
    pub fn start(ck: Checkpoints, log: Arc<dyn EventLog>, bounds: Bounds) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let rt = tokio::runtime::Handle::current();
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("recman-checkpoint".into())
            .spawn(move || {
                if let Err(e) = run(&ck, log.as_ref(), bounds, &rt, &flag) {
                    tracing::warn!(error = %format!("{e:#}"), place = %ck.store.place(), "the checkpoint writer stopped");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the checkpoint writer; no checkpoints are written");
        }
        Writer { stop }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Folds the log's records after `view.last_seq` into it.
fn fold_new(view: &mut View, log: &dyn EventLog, stop: &AtomicBool) -> anyhow::Result<()> {
    loop {
        let batch = log.read(view.last_seq + 1, 4096).context("reading the log")?;
        if batch.is_empty() || stop.load(Ordering::Acquire) {
            return Ok(());
        }
        for e in &batch {
            anyhow::ensure!(
                e.seq == view.last_seq + 1 && view.state.applied == view.last_seq,
                "record {} follows {} (state at {}): the writer's state is not the log's",
                e.seq,
                view.last_seq,
                view.state.applied
            );
            view.apply(e);
        }
    }
}

fn run(
    ck: &Checkpoints,
    log: &dyn EventLog,
    bounds: Bounds,
    rt: &tokio::runtime::Handle,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    // The same start as the API's (its own copy; config-only parts of the
    // view, such as the targets' retention, are not in a checkpoint).
    let empty = View::new(Default::default()).with_bounds(bounds, ck.policy.recent_finished);
    let (mut view, resumed) = rt.block_on(resume_view(empty, log, Some(ck.store.as_ref())))?;
    let mut last = resumed.from.unwrap_or(0);
    let mut last_at = Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(POLL);
        fold_new(&mut view, log, stop)?;
        let n = view.last_seq;
        let due = n > last && (n - last >= ck.policy.every_events || last_at.elapsed() >= ck.policy.every);
        if !due || stop.load(Ordering::Acquire) {
            continue;
        }
        let started = Instant::now();
        let written = record_hash(log, n)?
            .with_context(|| format!("the log has no record {n}"))
            .map(|hash| codec::encode_with_view(n, &hash, &view.state, &view.encode_section()))
            .and_then(|bytes| {
                let len = bytes.len();
                rt.block_on(ck.store.save(n, bytes, ck.policy.keep)).map(|()| len)
            });
        last_at = Instant::now();
        match written {
            Ok(bytes) => {
                last = n;
                tracing::info!(
                    seq = n,
                    bytes,
                    ms = super::took(started),
                    place = %ck.store.place(),
                    "checkpoint written"
                );
            }
            // Tried again at the next period: the log is intact meanwhile.
            Err(e) => {
                tracing::warn!(seq = n, error = %format!("{e:#}"), place = %ck.store.place(), "checkpoint not written")
            }
        }
    }
    Ok(())
}
