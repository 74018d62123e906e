//! The simulated engine's checkpoints: the leader takes one every few
//! hundred appended events (only when its state is exactly the durable log),
//! a starting engine resumes from the newest one and folds only the tail,
//! and `checkpoint_exact` compares that with a fold of the whole log.
//!
//! The simulated log has no stored bytes, so no hash chain: the checkpoints
//! carry the genesis hash, and the log never loses records, so record N is
//! always the one a checkpoint was taken at. Everything else (the encoding,
//! its checksum, `Core::from_state`) is what the runtime uses.

use std::collections::VecDeque;

use recman_events::codec::GENESIS_HASH;

use super::{Checked, Sim};
use crate::{checkpoint, Core, Mutation};

/// A checkpoint after at least this many new events (more as the log grows:
/// a quarter of its length, so a long run encodes its state a bounded number
/// of times per doubling).
const EVERY: usize = 400;
/// Checkpoints kept (newest last).
const KEEP: usize = 3;

/// The simulated engines' checkpoint store (they share it, as they share
/// the log).
#[derive(Default)]
pub(super) struct Store {
    pub taken: VecDeque<(u64, Vec<u8>)>,
    /// The log length at the last one.
    pub last: usize,
    /// Restarts that resumed from a checkpoint.
    pub resumed: u32,
}

impl Sim {
    /// After an append by process `pid`: the leader takes a checkpoint when
    /// enough events came since the last one and its state is the log's.
    pub(super) fn maybe_checkpoint(&mut self, pid: usize) {
        let n = self.log.len();
        let last = self.ckpts.last;
        if pid != self.engine.pid || n < last + EVERY.max(last / 4) {
            return;
        }
        let state = self.engine.core.state();
        if state.applied != n as u64 {
            return; // decided ahead of the log (a batch not durable yet)
        }
        let bytes = if self.cfg.mutation == Some(Mutation::CheckpointLosesField) {
            let mut lossy = state.clone();
            lossy.requests.clear();
            checkpoint::encode(n as u64, &GENESIS_HASH, &lossy)
        } else {
            checkpoint::encode(n as u64, &GENESIS_HASH, state)
        };
        self.ckpts.taken.push_back((n as u64, bytes));
        if self.ckpts.taken.len() > KEEP {
            self.ckpts.taken.pop_front();
        }
        self.ckpts.last = n;
    }

    /// The core a starting engine (restart or takeover) runs: the newest
    /// checkpoint and the log after it, or the whole log when there is
    /// none. `checkpoint_exact`: that equals the fold of the whole log.
    pub(super) fn resume_core(&mut self) -> Checked<Core> {
        let mut full = Core::with_mutation(self.core_cfg.clone(), self.cfg.mutation);
        for e in &self.log {
            full.apply(e);
        }
        let Some((seq, bytes)) = self.ckpts.taken.back() else {
            return Ok(full);
        };
        let seq = *seq;
        let ck = checkpoint::decode(bytes).map_err(|e| {
            self.violation(
                "checkpoint_exact",
                None,
                format!("the checkpoint at record {seq} does not decode: {e}"),
            )
        })?;
        let mut cfg = self.core_cfg.clone();
        cfg.mutation = self.cfg.mutation;
        let mut core = Core::from_state(cfg, ck.state);
        for e in &self.log[seq as usize..] {
            core.apply(e);
        }
        if let Some(d) = checkpoint::difference(core.state(), full.state()) {
            let d = format!(
                "the checkpoint at record {seq} and the {} records after it: {d}",
                self.log.len() as u64 - seq
            );
            return Err(self.violation("checkpoint_exact", None, d));
        }
        if core.next_deadline() != full.next_deadline() {
            let d = format!(
                "resumed from the checkpoint at record {seq}, the next timer is {:?}, after a full fold {:?}",
                core.next_deadline(),
                full.next_deadline()
            );
            return Err(self.violation("checkpoint_exact", None, d));
        }
        self.ckpts.resumed += 1;
        Ok(core)
    }
}
