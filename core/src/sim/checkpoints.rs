//! The simulated engine's checkpoints: the leader takes one every few
//! hundred appended events (only when its state is exactly the durable log),
//! a starting engine resumes from the newest one and folds only the tail,
//! and `checkpoint_exact` compares that with a fold of the whole log.
//!
//! The simulated log has no stored bytes, so no hash chain: the checkpoints
//! carry the genesis hash, and the log never loses records, so record N is
//! always the one a checkpoint was taken at. Everything else (the encoding,
//! its checksum, `Core::from_state`) is what the runtime uses. The sim keeps
//! only the log after the newest checkpoint or the last point where
//! `replay_exact` held, whichever is older (`Sim::tail`): the fold of the
//! whole log is that point's fold (checked equal to the live state then)
//! and the tail after it (`Sim::fold_log`).

use std::collections::VecDeque;

use recman_events::codec::GENESIS_HASH;

use recman_events::Event;

use super::{Checked, Sim};
use crate::{checkpoint, Core, Mutation};

/// A checkpoint after at least this many new events (more as the log grows:
/// a quarter of its length, so a long run encodes its state a bounded number
/// of times per doubling, up to `EVERY_MAX`, which bounds the tail a
/// restart folds and the sim keeps).
const EVERY: usize = 400;
const EVERY_MAX: usize = 100_000;
/// Checkpoints kept (newest last): a start only ever reads the newest, and
/// at fleet size each is the whole state encoded, so one.
const KEEP: usize = 1;

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
        let n = self.log_len;
        let last = self.ckpts.last;
        if pid != self.engine.pid || n < last + EVERY.max(last / 4).min(EVERY_MAX) {
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
        self.trim_tail();
    }

    /// The log's records from `seq` on (`seq` within the tail).
    pub(super) fn tail_from(&self, seq: usize) -> impl Iterator<Item = &Event> {
        self.tail.range(seq - self.tail_start..)
    }

    /// Drops the records before both the newest checkpoint and the replay point.
    pub(super) fn trim_tail(&mut self) {
        let ck = self.ckpts.taken.back().map_or(0, |(s, _)| *s as usize);
        let replay = self.replay.as_ref().map_or(0, |(s, _)| *s);
        let keep = ck.min(replay);
        while self.tail_start < keep && self.tail.pop_front().is_some() {
            self.tail_start += 1;
        }
    }

    /// The fold of the whole log: the replay point's state (the fold to
    /// it, checked equal to the live state then) and the records after it,
    /// with the config every engine runs with.
    pub(super) fn fold_log(&self) -> Result<Core, String> {
        let (seq, mut core) = match &self.replay {
            None => (0, Core::new(self.core_cfg.clone())),
            Some((seq, bytes)) => {
                let ck = checkpoint::decode(bytes)
                    .map_err(|e| format!("the replay point at record {seq} does not decode: {e}"))?;
                (*seq, Core::from_state(self.core_cfg.clone(), ck.state))
            }
        };
        for e in self.tail_from(seq) {
            core.apply(e);
        }
        Ok(core)
    }

    /// `replay_exact` held at the log's end: the next check folds from here.
    pub(super) fn set_replay_point(&mut self, fold: &Core) {
        let n = self.log_len;
        self.replay = Some((n, checkpoint::encode(n as u64, &GENESIS_HASH, fold.state())));
        self.trim_tail();
    }

    /// The core a starting engine (restart or takeover) runs: the newest
    /// checkpoint and the log after it, or the whole log when there is
    /// none. `checkpoint_exact`: that equals the fold of the whole log.
    /// The starting process's old core (what a dead process held) is gone
    /// first, so a start holds two states at most: the one resumed and the
    /// full fold it is checked against.
    pub(super) fn resume_core(&mut self) -> Checked<Core> {
        debug_assert_eq!(self.core_cfg.mutation, self.cfg.mutation);
        self.engine.core = super::engines::idle_core(self.cfg.seed);
        let full = self
            .fold_log()
            .map_err(|d| self.violation("replay_exact", None, d))?;
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
        let mut core = Core::from_state(self.core_cfg.clone(), ck.state);
        for e in self.tail_from(seq as usize) {
            core.apply(e);
        }
        if let Some(d) = checkpoint::difference(core.state(), full.state()) {
            let d = format!(
                "the checkpoint at record {seq} and the {} records after it: {d}",
                self.log_len as u64 - seq
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
