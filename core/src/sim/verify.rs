//! The verify stage in the simulated world: verify workers on the provider
//! pools that take a while (sometimes longer than their timeout), fail now
//! and then, and die with their crashing process, leaving a clone behind
//! that the next start of that process cleans up. And its invariants:
//! `verify_outside_freeze`, `newest_verified_kept`, `verify_cleanup`.

use std::collections::{HashMap, HashSet};

use recman_events::{Command, Outcome, StepDetail, StepError, TargetId};

use super::{Checked, Sim};
use crate::verify::{VerifyPolicy, VerifySchedule};

/// The simulated targets' verify timeout (virtual ms).
pub const VERIFY_TIMEOUT_MS: u64 = 3_000;

/// Verifications as they really run.
#[derive(Debug, Default)]
pub struct VerifyWorld {
    /// Per target: the (worker, step) of each verification running on it.
    pub running: HashMap<usize, Vec<(usize, u64)>>,
    /// Per worker: targets whose clone its dead process left behind.
    pub leftovers: HashMap<usize, HashSet<usize>>,
    pub cleaned: usize,
    /// Per pool (host), the outcome of each verification answered: a
    /// redelivery after the run ended is answered, not run again (the
    /// engine may have freed the target for a freeze meanwhile), by any
    /// process of the host (the runtime's `<state_dir>/verify/<target>.json`).
    pub answered: HashMap<(usize, String), Outcome>,
}

/// Target `i`'s `[target.verify]` in the simulation: two targets of three
/// verify, every snapshot or the newest of each day.
pub fn policy(i: usize) -> Option<VerifyPolicy> {
    let schedule = match i % 3 {
        0 => VerifySchedule::Each,
        1 => VerifySchedule::NewestDaily,
        _ => return None,
    };
    Some(VerifyPolicy {
        timeout_ms: VERIFY_TIMEOUT_MS,
        schedule,
        ..VerifyPolicy::new("checksum")
    })
}

impl Sim {
    /// Worker `w` runs verification step `step` (`cmd`): refused after its
    /// deadline; otherwise it runs over a latency, stopped at the deadline
    /// (`timeout`) when slow, and fails now and then naming a file.
    pub(super) fn verify(&mut self, w: usize, step: u64, cmd: &Command) -> Checked<(Option<Outcome>, u64)> {
        let now = self.sched.now;
        let Some(&t) = cmd.targets.first().and_then(|t| self.world.target_index.get(t)) else {
            return Ok((None, 0));
        };
        // Answered before: the host's record answers, as the runtime does
        // before it looks at anything else.
        let pool = self.world.workers[w].pool;
        if let Some(o) = self.world.verify.answered.get(&(pool, cmd.message_id.clone())) {
            return Ok((Some(o.clone()), self.rng.range(1, 5)));
        }
        let deadline = cmd.thaw_deadline_ms.unwrap_or(u64::MAX);
        if now >= deadline {
            let e = StepError::new(
                "deadline_passed",
                "the verification's deadline passed before it started",
                false,
            );
            return Ok((Some(Outcome::Err { error: e }), self.rng.range(1, 5)));
        }
        if let Some(f) = self.world.targets[t].frozen {
            if !self.frozen_by_loud_failure(f.key.0) {
                let d = format!(
                    "a verification of {} started while attempt {:?} froze it",
                    cmd.targets[0], f.key
                );
                return Err(self.violation("verify_outside_freeze", Some(cmd.job), d));
            }
        }
        // The same verification already runs in this pool (a redelivery):
        // acknowledged without running again; the running one reports (the
        // runtime holds a per-target lock in the state directory).
        let dup = self.world.verify.running.get(&t).is_some_and(|r| {
            r.iter().any(|&(o, s)| {
                self.world.workers[o].pool == pool
                    && self.world.workers[o]
                        .inflight
                        .get(&s)
                        .is_some_and(|(_, c)| c.message_id == cmd.message_id)
            })
        });
        if dup {
            self.world.workers[w].inflight.remove(&step);
            return Ok((None, 0));
        }
        self.world.verify.running.entry(t).or_default().push((w, step));
        self.world.verify.leftovers.entry(w).or_default().insert(t);
        let slow = self.rng.chance(0.03);
        let lat = if slow {
            self.rng.range(VERIFY_TIMEOUT_MS, 2 * VERIFY_TIMEOUT_MS)
        } else {
            self.rng.range(20, 1_500)
        };
        let outcome = if now.saturating_add(lat) >= deadline {
            let e = StepError::new(
                "timeout",
                "the verification did not end before its deadline: stopped",
                true,
            );
            return Ok((Some(Outcome::Err { error: e }), deadline - now));
        } else if self.rng.chance(0.03) {
            Outcome::Err {
                error: StepError::new(
                    "checksum_mismatch",
                    "data/base/16384/2619: 8192 bytes differ from the manifest (blake3)",
                    false,
                ),
            }
        } else {
            Outcome::Ok {
                detail: StepDetail::Verified {
                    checked: "17 files, 1.2 MB".into(),
                },
            }
        };
        Ok((Some(outcome), lat))
    }

    /// The report of a verification is out: it ran to its end, its clone is gone.
    pub(super) fn verify_done(&mut self, w: usize, step: u64, cmd: &Command, outcome: &Outcome) {
        let pool = self.world.workers[w].pool;
        self.world
            .verify
            .answered
            .insert((pool, cmd.message_id.clone()), outcome.clone());
        let Some(&t) = cmd.targets.first().and_then(|t| self.world.target_index.get(t)) else {
            return;
        };
        if let Some(r) = self.world.verify.running.get_mut(&t) {
            r.retain(|x| *x != (w, step));
        }
        if let Some(l) = self.world.verify.leftovers.get_mut(&w) {
            l.remove(&t);
        }
    }

    /// Process `w` died: its verifications stop with it (the runtime runs
    /// them in its process group), their clones stay.
    pub(super) fn verify_crash(&mut self, w: usize) {
        for r in self.world.verify.running.values_mut() {
            r.retain(|(x, _)| *x != w);
        }
    }

    /// Process `w` starts: it cleans up what its dead process left
    /// (`verify_cleanup`: nothing is left once it is up).
    pub(super) fn verify_cleanup(&mut self, w: usize) -> Checked<()> {
        if self.cfg.worker_mutation != Some(crate::worker::Mutation::NoVerifyCleanup) {
            if let Some(l) = self.world.verify.leftovers.remove(&w) {
                self.world.verify.cleaned += l.len();
            }
        }
        if let Some(l) = self.world.verify.leftovers.get(&w).filter(|l| !l.is_empty()) {
            let d = format!(
                "{} started with {} verify clones of its dead process left behind",
                self.world.workers[w].id,
                l.len()
            );
            return Err(self.violation("verify_cleanup", None, d));
        }
        Ok(())
    }

    /// `verify_outside_freeze`: no freeze lands on a target being verified.
    pub(super) fn check_no_verify_during_freeze(&self, t: usize, job: recman_events::JobId) -> Checked<()> {
        if let Some(&(w, step)) = self.world.verify.running.get(&t).and_then(|r| r.first()) {
            let cmd = self.world.workers[w].inflight.get(&step).map(|(_, c)| c);
            let run = cmd
                .map(|c| format!("job {} run {}", c.job, c.attempt))
                .unwrap_or_default();
            let job = cmd.map_or(job, |c| c.job);
            let d = format!(
                "a freeze of {} landed while {} verified it ({run})",
                self.world.target_ids[t], self.world.workers[w].id
            );
            return Err(self.violation("verify_outside_freeze", Some(job), d));
        }
        Ok(())
    }

    /// A job that failed loudly (`thaw_failed`) may leave its freeze for the
    /// watchdog: the engine cannot know when it ends.
    fn frozen_by_loud_failure(&self, job: recman_events::JobId) -> bool {
        match self.engine.core.state().jobs.get(&job) {
            Some(j) => j.outcome.as_deref().is_some_and(|o| o.starts_with("thaw_failed")),
            None => {
                self.checks.ended.get(&job).is_some_and(|e| e.loud) || self.checks.loud_gone.contains(&job)
            }
        }
    }

    /// `newest_verified_kept`: retention never asks to delete the newest
    /// verified restore point of a target.
    pub(super) fn check_newest_verified_kept(
        &self,
        job: recman_events::JobId,
        target: &TargetId,
        names: &[String],
    ) -> Checked<()> {
        let state = self.engine.core.state();
        // Deletes asked before this event (asked again now, or by another
        // job) were decided then: those points are going already.
        let first_ask = |n: &String| {
            state
                .prunes
                .get(&(target.clone(), n.clone()))
                .is_some_and(|p| p.tries == 1 && p.requester == job)
                && names.contains(n)
        };
        let going = |n: &String| state.prunes.contains_key(&(target.clone(), n.clone())) && !first_ask(n);
        let newest = state.catalog.get(target).and_then(|c| {
            c.iter()
                .rev()
                .find(|e| !going(&e.name) && crate::verify::is_verified(state, target, &e.name))
        });
        if let Some(e) = newest.filter(|e| first_ask(&e.name)) {
            let d = format!(
                "{target}'s newest verified restore point {} was asked to be deleted",
                e.name
            );
            return Err(self.violation("newest_verified_kept", Some(job), d));
        }
        Ok(())
    }
}
