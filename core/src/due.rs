//! Due-time index of the schedules' slots and the RPOs' crossings, kept by
//! `Core` as events fold in, so a timer looks only at what fell due.
//!
//! Without it the engine would look at every schedule and every RPO at each
//! step (`schedule::next_due`) and at each timer (`schedule::plan`): with a
//! fleet on schedules that is the whole run. The index holds, per schedule
//! and per target with an RPO, the instant `schedule::schedule_due` /
//! `schedule::rpo_due` give, recomputed only when an event can change it:
//!
//! - a schedule's own events (`ScheduleChanged`, `…Fired`, `…Skipped`,
//!   `…Queued`, `…Paused`), and any event of the job its last firing
//!   started (its end releases a queued slot);
//! - a target's RPO events, and any event of a job of that target or a
//!   `SnapshotDeleted` of it (the newest good restore point moves).
//!
//! - a target's periodic reconcile (`reconcile_every`): its reconcile
//!   events, and any event of a job of that target, a `SnapshotDeleted` or
//!   a `SnapshotVanished` of it (the oldest restore point moves).
//! - each mount's age limit (`max_mount_age`, see `mounts_due`): its own
//!   job's events and those of a recovery that unmounts it.
//!
//! A breached RPO has no due time (it is restored by a completed snapshot,
//! see `Decider::rpo_restored`); one whose RPO changed while breached is
//! kept aside and looked at by every timer until it is decided, as the full
//! scan did. `Core::due_index_agrees` checks the index against the full scan
//! (the tests replay simulated logs through it).

use std::collections::{BTreeSet, HashMap};

use recman_events::{Event, EventBody, JobId, TargetId};

use crate::policy::CoreConfig;
use crate::schedule::{self, Schedule};
use crate::state::State;

/// The most schedules, and the most RPOs, one timer decision looks at
/// (`DueIndex::due`): 128 firings take some 2-5 ms of the core's time here.
pub const MAX_DUE_PER_DECISION: usize = 128;

/// What a due time belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DueKey {
    /// `CoreConfig::schedules[i]`.
    Schedule(usize),
    /// The RPO of a target.
    Rpo(TargetId),
    /// The periodic reconcile of a target.
    Reconcile(TargetId),
}

/// The index (see the module comment).
#[derive(Clone, Debug, Default)]
pub struct DueIndex {
    by_time: BTreeSet<(u64, DueKey)>,
    at: HashMap<DueKey, u64>,
    /// Schedule id → its index in the config.
    by_id: HashMap<String, usize>,
    /// Each schedule's canonical spec (computed once, not per look).
    specs: Vec<String>,
    /// The job each schedule's last firing started, and the reverse.
    last_job: Vec<Option<JobId>>,
    watch: HashMap<JobId, Vec<usize>>,
    /// Breached RPOs whose RPO changed: looked at by every timer.
    recheck: BTreeSet<TargetId>,
    /// The mounts' age limits (`max_mount_age`).
    pub mounts: crate::mounts_due::MountsDue,
}

impl DueIndex {
    /// The index of `state` under `cfg` (every schedule and RPO computed).
    pub fn build(state: &State, cfg: &CoreConfig) -> DueIndex {
        let mut ix = DueIndex {
            specs: cfg.schedules.iter().map(Schedule::spec).collect(),
            last_job: vec![None; cfg.schedules.len()],
            mounts: crate::mounts_due::MountsDue::build(state, cfg),
            ..DueIndex::default()
        };
        for (i, s) in cfg.schedules.iter().enumerate() {
            ix.by_id.entry(s.id.clone()).or_insert(i);
            ix.schedule(state, cfg, i);
        }
        for t in cfg.targets.keys() {
            ix.rpo(state, cfg, t);
            ix.reconcile(state, cfg, t);
        }
        for (t, r) in &state.book.rpo {
            if r.breached && cfg.targets.contains_key(t) {
                ix.recheck.insert(t.clone());
            }
        }
        ix
    }

    /// The earliest due time, if any.
    pub fn first(&self) -> Option<u64> {
        self.by_time.first().map(|(d, _)| *d)
    }

    /// The schedules (config order) and the RPO targets (sorted) due at
    /// `now`, the earliest `limit` of each, and the breached ones to look at
    /// again. A fleet's `0 2 * * *` makes thousands due at one instant: the
    /// engine fires them [`MAX_DUE_PER_DECISION`] at a time, so one decision
    /// stays short and the inputs waiting behind it (a frozen job's report)
    /// go between; the next timer is due at once.
    pub fn due(&self, now: u64, limit: usize) -> (Vec<usize>, Vec<TargetId>) {
        let (mut sched, mut rpo) = (Vec::new(), Vec::new());
        for (d, k) in &self.by_time {
            if *d > now || (sched.len() >= limit && rpo.len() >= limit) {
                break;
            }
            match k {
                DueKey::Schedule(i) if sched.len() < limit => sched.push(*i),
                DueKey::Rpo(t) if rpo.len() < limit => rpo.push(t.clone()),
                _ => {}
            }
        }
        rpo.extend(self.recheck.iter().cloned());
        sched.sort_unstable();
        sched.dedup();
        rpo.sort();
        rpo.dedup();
        (sched, rpo)
    }

    /// Breached RPOs over their RPO at `now` leave `recheck`: nothing is
    /// left for a timer to decide about them (only a newer restore point
    /// restores them, and the decision that records it says so, see
    /// `Decider::rpo_restored`). `build` puts every breached RPO there, so
    /// without this, after a restart, every timer looked at all of a
    /// fleet's breached RPOs (25 000 in the simulator) until each was
    /// restored. Kept: an RPO whose change is not recorded yet, and one
    /// that a change left under its RPO (a timer restores it).
    pub fn settle_recheck(&mut self, state: &State, cfg: &CoreConfig, now: u64) {
        self.recheck.retain(|t| {
            let Some(p) = cfg.targets.get(t) else {
                return false;
            };
            let Some(rpo_ms) = p.rpo_ms else {
                return false;
            };
            let Some(r) = state.book.rpo.get(t).filter(|r| r.rpo_ms == rpo_ms) else {
                return true;
            };
            let anchor = schedule::last_good_ms(state, t, p.rpo_verified).unwrap_or(r.since_ms);
            r.breached && now < anchor.saturating_add(rpo_ms)
        });
    }

    /// How many schedules and RPOs `due` has at `now` with no limit (the
    /// simulator checks that a timer that leaves some due took some).
    pub fn due_count(&self, now: u64) -> usize {
        let due = self.by_time.iter().take_while(|(d, _)| *d <= now);
        due.filter(|(_, k)| !matches!(k, DueKey::Reconcile(_))).count() + self.recheck.len()
    }

    /// The targets whose periodic reconcile is due at `now` (sorted).
    pub fn due_reconciles(&self, now: u64) -> Vec<TargetId> {
        let mut out: Vec<TargetId> = self
            .by_time
            .iter()
            .take_while(|(d, _)| *d <= now)
            .filter_map(|(_, k)| match k {
                DueKey::Reconcile(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// The schedules whose last firing started `job`.
    pub fn watching(&self, job: &JobId) -> impl Iterator<Item = usize> + '_ {
        self.watch.get(job).into_iter().flatten().copied()
    }

    /// The due time the index holds for `key`.
    pub fn get(&self, key: &DueKey) -> Option<u64> {
        self.at.get(key).copied()
    }

    /// `ev` was folded into `state`: recomputes what it can have moved.
    pub fn observe(&mut self, state: &State, cfg: &CoreConfig, ev: &Event) {
        self.mounts.observe(state, cfg, ev);
        match &ev.body {
            EventBody::ScheduleChanged { schedule, .. }
            | EventBody::ScheduleFired { schedule, .. }
            | EventBody::ScheduleSkipped { schedule, .. }
            | EventBody::ScheduleQueued { schedule, .. }
            | EventBody::SchedulePaused { schedule, .. } => {
                if let Some(&i) = self.by_id.get(schedule) {
                    self.schedule(state, cfg, i);
                }
            }
            EventBody::RpoChanged { target, .. } => {
                self.recheck.remove(target);
                if state.book.rpo.get(target).is_some_and(|r| r.breached) && cfg.targets.contains_key(target)
                {
                    self.recheck.insert(target.clone());
                }
                self.rpo(state, cfg, target);
            }
            EventBody::RpoBreached { target, .. } | EventBody::RpoRestored { target, .. } => {
                self.recheck.remove(target);
                self.rpo(state, cfg, target);
            }
            EventBody::SnapshotDeleted { target, .. }
            | EventBody::SnapshotVanished { target, .. }
            | EventBody::Verified { target, .. }
            | EventBody::VerifyFailed { target, .. } => {
                self.rpo(state, cfg, target);
                self.reconcile(state, cfg, target);
            }
            EventBody::ReconcileRequested { target, .. }
            | EventBody::ReconcileStarted { target, .. }
            | EventBody::Reconciled { target, .. }
            | EventBody::ReconcileFailed { target, .. } => self.reconcile(state, cfg, target),
            _ => {}
        }
        if let Some(list) = self.watch.get(&ev.job).cloned() {
            for i in list {
                self.schedule(state, cfg, i);
            }
        }
        if let Some(job) = state.jobs.get(&ev.job) {
            for t in &job.targets {
                self.rpo(state, cfg, t);
                self.reconcile(state, cfg, t);
            }
        }
        // A recovery's safety snapshot is a restore point of its target.
        if let EventBody::RecoveryStepDone { .. } = &ev.body {
            if let Some(op) = state.recovery.ops.get(&ev.job) {
                let t = op.target.clone();
                self.rpo(state, cfg, &t);
                self.reconcile(state, cfg, &t);
            }
        }
    }

    /// Recomputes schedule `i`.
    fn schedule(&mut self, state: &State, cfg: &CoreConfig, i: usize) {
        let Some(s) = cfg.schedules.get(i) else { return };
        let due = schedule::schedule_due_spec(state, s, &self.specs[i]);
        self.set(DueKey::Schedule(i), due);
        let last = state.book.schedules.get(&s.id).and_then(|st| st.last_job);
        if self.last_job[i] != last {
            if let Some(old) = self.last_job[i] {
                if let Some(v) = self.watch.get_mut(&old) {
                    v.retain(|x| *x != i);
                    if v.is_empty() {
                        self.watch.remove(&old);
                    }
                }
            }
            if let Some(new) = last {
                self.watch.entry(new).or_default().push(i);
            }
            self.last_job[i] = last;
        }
    }

    /// Recomputes the RPO of `t` (nothing if it has none).
    fn rpo(&mut self, state: &State, cfg: &CoreConfig, t: &TargetId) {
        // The config does not change under the index: a target without an
        // RPO never has an entry.
        let Some(rpo_ms) = cfg.targets.get(t).and_then(|p| p.rpo_ms) else {
            return;
        };
        let due = schedule::rpo_due(state, cfg, t, rpo_ms);
        self.set(DueKey::Rpo(t.clone()), due);
    }

    /// Recomputes the periodic reconcile of `t` (nothing if it has none).
    fn reconcile(&mut self, state: &State, cfg: &CoreConfig, t: &TargetId) {
        let Some(every) = cfg.targets.get(t).and_then(|p| p.reconcile_every_ms) else {
            return;
        };
        self.set(
            DueKey::Reconcile(t.clone()),
            crate::reconcile::due(state, t, every),
        );
    }

    fn set(&mut self, key: DueKey, due: Option<u64>) {
        match due {
            Some(d) => {
                if let Some(old) = self.at.insert(key.clone(), d) {
                    if old == d {
                        return;
                    }
                    self.by_time.remove(&(old, key.clone()));
                }
                self.by_time.insert((d, key));
            }
            None => {
                if let Some(old) = self.at.remove(&key) {
                    self.by_time.remove(&(old, key));
                }
            }
        }
    }
}
