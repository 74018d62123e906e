//! Reconcile in the simulated world: the storage loses restore points behind
//! recman's back (an array expiration, a delete by hand: `LoseSnapshot`),
//! operators ask for reconciles now and then and after each loss, and the
//! provider workers list the storage over a latency. And its invariants:
//! `reconcile_catalog_agrees`, `reconcile_vanished_held`.
//!
//! A reconcile that failed, or that left a lost point in the catalog (one
//! being deleted or verified), is asked for again later, as the periodic
//! reconcile would: so at the end the catalog matches the storage
//! (`catalog_matches_storage`).

use recman_events::{Command, EventBody, JobId, Outcome, StepDetail, StepError, TargetId};

use super::scheduler::{Ev, T0};
use super::{Checked, Sim};
use crate::Input;

impl Sim {
    /// Operator reconciles spread over the requests, and (with faults)
    /// losses of restore points, each followed by a reconcile of its target.
    pub(super) fn plan_reconciles(&mut self, last_request: u64) {
        let span = last_request.saturating_sub(T0).max(10_000);
        let n = self.cfg.targets.max(1);
        for _ in 0..(self.cfg.jobs / 20).max(1) {
            let at = T0 + self.rrng.range(0, span);
            let t = self.rrng.below(n as u64) as usize;
            self.push(at, Ev::Reconcile(t));
        }
        if self.cfg.faults != super::Faults::None {
            for _ in 0..(self.cfg.jobs / 40).max(1) {
                let at = T0 + self.rrng.range(0, span);
                self.push(at, Ev::LoseSnapshot);
            }
        }
    }

    /// An operator's `recman reconcile` of target `t`.
    pub(super) fn reconcile(&mut self, t: usize) -> Checked<()> {
        let input = Input::Reconcile {
            target: self.world.target_ids[t].clone(),
            origin: "sim".into(),
        };
        if self.engine.up {
            self.engine(input)?;
        } else {
            self.engine.parked.push(input);
        }
        Ok(())
    }

    /// The storage loses one restore point of a random target (one the
    /// catalog lists), and an operator reconciles that target a while later.
    pub(super) fn lose_snapshot(&mut self) {
        let n = self.world.target_ids.len();
        let t = self.rrng.below(n as u64) as usize;
        let id = self.world.target_ids[t].clone();
        let Some(c) = self
            .engine
            .core
            .state()
            .catalog
            .get(&id)
            .filter(|c| !c.is_empty())
        else {
            return;
        };
        let name = c[self.rrng.below(c.len() as u64) as usize].name.clone();
        if self.world.storage.snapshots.remove(&(t, name.clone())).is_some() {
            self.world.lost.insert((t, name.clone()), self.sched.now);
            self.summary.lost += 1;
            self.note(JobId::NONE, format!("storage lost {name} of {id}"));
            let d = self.rrng.range(1_000, 30_000);
            self.push(self.sched.now + d, Ev::Reconcile(t));
        }
    }

    /// A provider worker lists target `cmd.targets[0]`'s snapshots now; the
    /// answer goes back after a latency (an array with thousands of copies
    /// takes a while), so much can happen meanwhile.
    pub(super) fn list(&mut self, cmd: &Command) -> (Option<Outcome>, u64) {
        let Some(&t) = cmd.targets.first().and_then(|t| self.world.target_index.get(t)) else {
            return (None, 0);
        };
        let lat = self.rrng.range(50, 3_000);
        if cmd.thaw_deadline_ms.is_some_and(|d| self.sched.now >= d) {
            let e = StepError::new(
                "deadline_passed",
                "the reconcile's deadline passed before it started",
                false,
            );
            return (Some(Outcome::Err { error: e }), self.rrng.range(1, 5));
        }
        if self.rrng.chance(0.02) {
            let error = StepError::new("sim_list_failed", "the array did not answer the list", true);
            return (Some(Outcome::Err { error }), lat);
        }
        let mut names: Vec<String> = self
            .world
            .storage
            .snapshots
            .keys()
            .filter(|(i, _)| *i == t)
            .map(|(_, n)| n.clone())
            .collect();
        names.sort();
        (
            Some(Outcome::Ok {
                detail: StepDetail::Listed { names },
            }),
            lat,
        )
    }

    /// The checks of a reconcile's events, once durable and folded.
    pub(super) fn check_reconcile_event(&mut self, job: JobId, body: &EventBody) -> Checked<()> {
        match body {
            EventBody::SnapshotVanished { target, name } => {
                self.summary.vanished += 1;
                let i = self.world.target_index[target];
                if self.world.storage.snapshots.contains_key(&(i, name.clone())) {
                    let d = format!("{name} of {target} declared vanished while the storage holds it");
                    return Err(self.violation("reconcile_vanished_held", Some(job), d));
                }
            }
            EventBody::Reconciled { target, .. } => {
                self.summary.reconciled += 1;
                self.check_reconciled(target)?;
            }
            EventBody::ReconcileFailed { target, .. } if self.lost_in_catalog(target) => {
                self.reconcile_again(target);
            }
            _ => {}
        }
        Ok(())
    }

    /// `reconcile_catalog_agrees`: after `target`'s reconcile, no catalog
    /// entry the storage had lost before the reconcile started, but one
    /// being deleted or verified (asked again later).
    fn check_reconciled(&mut self, target: &TargetId) -> Checked<()> {
        let i = self.world.target_index[target];
        let state = self.engine.core.state();
        let Some(started) = state.reconcile.last.get(target).map(|l| l.started_ms) else {
            return Ok(());
        };
        let verifying = state.verify.running.get(target).map(|v| v.name.clone());
        let mut again = false;
        let mut bad = None;
        for e in state.catalog.get(target).into_iter().flatten() {
            let Some(&lost_at) = self.world.lost.get(&(i, e.name.clone())) else {
                continue;
            };
            if self.world.storage.snapshots.contains_key(&(i, e.name.clone())) {
                continue;
            }
            let protected = state.prunes.contains_key(&(target.clone(), e.name.clone()))
                || verifying.as_deref() == Some(e.name.as_str());
            if protected || lost_at >= started {
                again = true;
            } else {
                bad = Some((e.job, e.name.clone(), lost_at));
                break;
            }
        }
        if let Some((job, name, lost_at)) = bad {
            let d = format!(
                "the reconcile of {target} started at +{} ms ended with {name} in the catalog, lost at +{} ms",
                started.saturating_sub(T0),
                lost_at.saturating_sub(T0)
            );
            return Err(self.violation("reconcile_catalog_agrees", Some(job), d));
        }
        if again {
            self.reconcile_again(target);
        }
        Ok(())
    }

    /// Whether the catalog of `target` lists a point the storage lost.
    fn lost_in_catalog(&self, target: &TargetId) -> bool {
        let i = self.world.target_index[target];
        self.engine
            .core
            .state()
            .catalog
            .get(target)
            .into_iter()
            .flatten()
            .any(|e| {
                self.world.lost.contains_key(&(i, e.name.clone()))
                    && !self.world.storage.snapshots.contains_key(&(i, e.name.clone()))
            })
    }

    /// Asks for another reconcile of `target` a while later.
    fn reconcile_again(&mut self, target: &TargetId) {
        if let Some(&i) = self.world.target_index.get(target) {
            let d = self.rrng.range(1_000, 10_000);
            self.push(self.sched.now + d, Ev::Reconcile(i));
        }
    }
}
