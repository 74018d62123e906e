//! Verified restore points: the `verify` stage that proves a snapshot
//! restores, off the freeze window. Pure, like the rest of the core.
//!
//! Entry points: [`evolve`] (the ledger folds the verify events), [`follow_up`]
//! and [`starts`] (after a step is folded: which points to verify, which
//! verification to start), [`report`] and [`timeouts`] (from `decide`),
//! [`effects`] and [`recover`] (the verify command), [`busy`] (a target
//! being verified takes no freeze) and [`is_verified`] (retention never
//! prunes the newest verified point).
//!
//! The rules:
//! - a completed job's point is asked for (`VerifyRequested`, `origin`
//!   `auto`) when its target has a `[target.verify]`; `schedule =
//!   "newest_daily"` replaces the requests of the same UTC day not started yet;
//! - a verification starts only on an idle target (no job holds it or waits
//!   for it), one at a time per target, oldest request first; while it runs,
//!   a new job of the target waits in the queue (`decide` asks [`busy`]), so
//!   a verification never overlaps a freeze of the same target. Jobs come
//!   first: a target with waiting jobs verifies once they are done;
//! - the worker stops a verification at the command's deadline (`timeout`)
//!   and reports; the engine gives up `STAGE_GRACE_MS` later (`VerifyFailed`
//!   `timeout`), so no verification still runs when the target is freed;
//! - a verify failure does not undo the snapshot: the point is marked
//!   `failed` (and stays a restore point for retention's other rules).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use recman_events::{
    Command, Event, EventBody, JobId, Outcome, PoolName, Report, Stage, StepDetail, StepError, TargetId,
    SCHEMA_VERSION,
};
use serde::Serialize;

use crate::effects::{Destination, Outgoing};
use crate::policy::{CoreConfig, STAGE_GRACE_MS};
use crate::state::State;

const DAY_MS: u64 = 86_400_000;

/// Which restore points are verified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifySchedule {
    /// Every snapshot.
    #[default]
    Each,
    /// The newest of each UTC day (a newer point replaces a request of the
    /// same day not started yet).
    NewestDaily,
}

/// A target's `[target.verify]`, as the core needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// `checksum`, `qemu-img`, `exec`, `postgres` (the worker's business;
    /// recorded for display).
    pub kind: String,
    /// The pool whose workers verify (default: the target's provider pool).
    pub pool: Option<PoolName>,
    /// The worker stops a verification after this long.
    pub timeout_ms: u64,
    pub schedule: VerifySchedule,
}

impl VerifyPolicy {
    pub fn new(kind: impl Into<String>) -> Self {
        VerifyPolicy {
            kind: kind.into(),
            pool: None,
            timeout_ms: 30 * 60_000,
            schedule: VerifySchedule::Each,
        }
    }
}

/// Where a restore point stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Never verified, nor asked for.
    #[default]
    Unverified,
    /// Asked for, waiting for the target to be idle.
    Pending,
    Running,
    Verified,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unverified => "unverified",
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Verified => "verified",
            Status::Failed => "failed",
        }
    }
}

/// One restore point's verification record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Record {
    pub status: Status,
    /// Runs started so far (the next one is `runs + 1`).
    pub runs: u32,
    /// When it was last verified (`Verified`).
    pub verified_at_ms: Option<u64>,
    /// When the last run ended, and how (what was checked, or the error).
    pub ended_at_ms: Option<u64>,
    pub detail: Option<String>,
}

/// The verification in flight on one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Running {
    pub owner: JobId,
    pub name: String,
    pub run: u32,
    pub started_ms: u64,
    pub deadline_ms: u64,
}

/// Every target's verification state, rebuilt from the log by [`evolve`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// Per target, per snapshot name.
    pub points: BTreeMap<TargetId, BTreeMap<String, Record>>,
    /// Requests not started yet, oldest first, with the job that took each.
    pub wanted: BTreeMap<TargetId, VecDeque<(String, JobId)>>,
    pub running: BTreeMap<TargetId, Running>,
    /// Index of `Running::deadline_ms`.
    pub deadlines: BTreeSet<(u64, TargetId)>,
}

impl Ledger {
    pub fn record(&self, t: &TargetId, name: &str) -> Option<&Record> {
        self.points.get(t)?.get(name)
    }

    fn end(&mut self, t: &TargetId, name: &str, run: u32) -> bool {
        let Some(r) = self.running.get(t) else {
            return false;
        };
        if r.name != name || r.run != run {
            return false;
        }
        self.deadlines.remove(&(r.deadline_ms, t.clone()));
        self.running.remove(t);
        true
    }
}

/// Folds a verify event (true), and forgets a deleted snapshot's record
/// (false: `evolve` goes on with it).
pub fn evolve(ledger: &mut Ledger, ev: &Event) -> bool {
    match &ev.body {
        EventBody::VerifyRequested {
            target,
            name,
            replaces,
            ..
        } => {
            let q = ledger.wanted.entry(target.clone()).or_default();
            q.retain(|(n, _)| n != name && !replaces.contains(n));
            q.push_back((name.clone(), ev.job));
            let points = ledger.points.entry(target.clone()).or_default();
            for n in replaces {
                if let Some(r) = points.get_mut(n) {
                    if r.status == Status::Pending {
                        r.status = if r.verified_at_ms.is_some() {
                            Status::Verified
                        } else {
                            Status::Unverified
                        };
                    }
                }
            }
            let r = points.entry(name.clone()).or_default();
            if r.status != Status::Running {
                r.status = Status::Pending;
            }
        }
        EventBody::VerifyStarted {
            target,
            name,
            run,
            deadline_ms,
        } => {
            if let Some(q) = ledger.wanted.get_mut(target) {
                q.retain(|(n, _)| n != name);
                if q.is_empty() {
                    ledger.wanted.remove(target);
                }
            }
            if let Some(old) = ledger.running.insert(
                target.clone(),
                Running {
                    owner: ev.job,
                    name: name.clone(),
                    run: *run,
                    started_ms: ev.at_ms,
                    deadline_ms: *deadline_ms,
                },
            ) {
                ledger.deadlines.remove(&(old.deadline_ms, target.clone()));
            }
            ledger.deadlines.insert((*deadline_ms, target.clone()));
            let r = ledger
                .points
                .entry(target.clone())
                .or_default()
                .entry(name.clone())
                .or_default();
            r.status = Status::Running;
            r.runs = r.runs.max(*run);
        }
        EventBody::Verified {
            target,
            name,
            run,
            checked,
            ..
        } => {
            if ledger.end(target, name, *run) {
                if let Some(r) = ledger.points.get_mut(target).and_then(|p| p.get_mut(name)) {
                    r.status = Status::Verified;
                    r.verified_at_ms = Some(ev.at_ms);
                    r.ended_at_ms = Some(ev.at_ms);
                    r.detail = Some(checked.clone());
                }
            }
        }
        EventBody::VerifyFailed {
            target,
            name,
            run,
            error,
        } => {
            if ledger.end(target, name, *run) {
                if let Some(r) = ledger.points.get_mut(target).and_then(|p| p.get_mut(name)) {
                    r.status = Status::Failed;
                    r.ended_at_ms = Some(ev.at_ms);
                    r.detail = Some(error.to_string());
                }
            }
        }
        EventBody::SnapshotDeleted { target, name } => {
            if let Some(p) = ledger.points.get_mut(target) {
                p.remove(name);
                if p.is_empty() {
                    ledger.points.remove(target);
                }
            }
            if let Some(q) = ledger.wanted.get_mut(target) {
                q.retain(|(n, _)| n != name);
                if q.is_empty() {
                    ledger.wanted.remove(target);
                }
            }
            return false;
        }
        _ => return false,
    }
    true
}

/// Whether a verification runs on `t` (no freeze of `t` may start).
pub fn busy(state: &State, t: &TargetId) -> bool {
    state.verify.running.contains_key(t)
}

/// Whether `name` of `t` is verified (its last run passed).
pub fn is_verified(state: &State, t: &TargetId, name: &str) -> bool {
    state
        .verify
        .record(t, name)
        .is_some_and(|r| r.verified_at_ms.is_some() && r.status != Status::Failed)
}

/// Targets whose verification ends with one of `events`.
pub fn ended(events: &[Event]) -> BTreeSet<TargetId> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Verified { target, .. } | EventBody::VerifyFailed { target, .. } => {
                Some(target.clone())
            }
            _ => None,
        })
        .collect()
}

/// After a step's `events` are folded: the points its completed jobs made
/// that their targets' `[target.verify]` asks for.
pub fn follow_up(state: &State, cfg: &CoreConfig, events: &[Event]) -> Vec<Event> {
    let mut out = Vec::new();
    for e in events {
        let EventBody::Completed { snapshot, .. } = &e.body else {
            continue;
        };
        let Some(job) = state.jobs.get(&e.job) else {
            continue;
        };
        for t in &job.targets {
            let Some(v) = cfg.targets.get(t).and_then(|p| p.verify.as_ref()) else {
                continue;
            };
            let replaces = match v.schedule {
                VerifySchedule::Each => Vec::new(),
                VerifySchedule::NewestDaily => same_day_wanted(state, t, e.at_ms),
            };
            out.push(Event {
                at_ms: e.at_ms,
                job: e.job,
                body: EventBody::VerifyRequested {
                    target: t.clone(),
                    name: snapshot.name.clone(),
                    origin: "auto".into(),
                    replaces,
                },
                by: String::new(),
            });
        }
    }
    out
}

/// Requests of `t` not started yet for points completed on the UTC day of `at_ms`.
fn same_day_wanted(state: &State, t: &TargetId, at_ms: u64) -> Vec<String> {
    let Some(q) = state.verify.wanted.get(t) else {
        return Vec::new();
    };
    let day = at_ms / DAY_MS;
    let at_of = |name: &str| {
        state
            .catalog
            .get(t)
            .and_then(|c| c.iter().find(|e| e.name == name))
            .map(|e| e.at_ms)
    };
    q.iter()
        .filter(|(n, _)| at_of(n).is_some_and(|a| a / DAY_MS == day))
        .map(|(n, _)| n.clone())
        .collect()
}

/// Targets a step's `events` touched (their verification may start now).
pub fn touched(state: &State, events: &[Event]) -> BTreeSet<TargetId> {
    let mut out = BTreeSet::new();
    for e in events {
        match &e.body {
            EventBody::VerifyRequested { target, .. }
            | EventBody::Verified { target, .. }
            | EventBody::VerifyFailed { target, .. } => {
                out.insert(target.clone());
            }
            b if b.is_terminal() => {
                if let Some(j) = state.jobs.get(&e.job) {
                    out.extend(j.targets.iter().cloned());
                }
                if let Some(op) = state.recovery.ops.get(&e.job) {
                    out.insert(op.target.clone());
                }
            }
            _ => {}
        }
    }
    out
}

/// The verifications to start on `targets` now: each idle one (no job holds
/// or waits for it, none verifying) with a request starts its oldest.
/// `mutation` `FreezeDuringVerify` does not wait for jobs.
pub fn starts(state: &State, cfg: &CoreConfig, now: u64, targets: &BTreeSet<TargetId>) -> Vec<Event> {
    let mut out = Vec::new();
    let ignore_queue = cfg.mutation == Some(crate::Mutation::FreezeDuringVerify);
    for t in targets {
        if busy(state, t)
            || crate::recovery::busy(state, t)
            || (!ignore_queue && state.queues.get(t).is_some_and(|q| !q.is_empty()))
        {
            continue;
        }
        // A point whose delete is asked for is not worth verifying.
        let Some((name, owner)) = state
            .verify
            .wanted
            .get(t)
            .and_then(|q| {
                q.iter()
                    .find(|(n, _)| !state.prunes.contains_key(&(t.clone(), n.clone())))
            })
            .cloned()
        else {
            continue;
        };
        let timeout = cfg
            .targets
            .get(t)
            .and_then(|p| p.verify.as_ref())
            .map_or(VerifyPolicy::new("").timeout_ms, |v| v.timeout_ms);
        let run = state.verify.record(t, &name).map_or(0, |r| r.runs) + 1;
        out.push(Event {
            at_ms: now,
            job: owner,
            body: EventBody::VerifyStarted {
                target: t.clone(),
                name,
                run,
                deadline_ms: now.saturating_add(timeout).saturating_add(STAGE_GRACE_MS),
            },
            by: String::new(),
        });
    }
    out
}

/// A verify worker's report: the outcome of the run in flight (a stale or
/// duplicate report changes nothing).
pub fn report(state: &State, r: &Report, now: u64) -> Vec<Event> {
    let Some(t) = r.targets.first() else {
        return Vec::new();
    };
    let Some(run) = state.verify.running.get(t) else {
        return Vec::new();
    };
    if run.owner != r.job || run.run != r.attempt {
        return Vec::new();
    }
    let body = match &r.outcome {
        Outcome::Ok {
            detail: StepDetail::Verified { checked },
        } => EventBody::Verified {
            target: t.clone(),
            name: run.name.clone(),
            run: run.run,
            duration_us: r.duration_us,
            checked: checked.clone(),
        },
        Outcome::Ok { .. } => EventBody::VerifyFailed {
            target: t.clone(),
            name: run.name.clone(),
            run: run.run,
            error: StepError::new(
                "bad_report",
                format!("{} answered verify with another step's report", r.worker),
                false,
            ),
        },
        Outcome::Err { error } => EventBody::VerifyFailed {
            target: t.clone(),
            name: run.name.clone(),
            run: run.run,
            error: error.clone(),
        },
    };
    vec![Event {
        at_ms: now,
        job: run.owner,
        body,
        by: String::new(),
    }]
}

/// Verifications whose deadline passed with no report.
pub fn timeouts(state: &State, now: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for (d, t) in state.verify.deadlines.iter().take_while(|(d, _)| *d <= now) {
        let Some(run) = state.verify.running.get(t) else {
            continue;
        };
        out.push(Event {
            at_ms: now,
            job: run.owner,
            body: EventBody::VerifyFailed {
                target: t.clone(),
                name: run.name.clone(),
                run: run.run,
                error: StepError::new(
                    "timeout",
                    format!("no verify report by {d} ms (the worker's deadline and the grace passed)"),
                    true,
                ),
            },
            by: String::new(),
        });
    }
    out
}

/// When the runtime must call back for a verification's deadline.
pub fn next_due(state: &State) -> Option<u64> {
    state.verify.deadlines.first().map(|(d, _)| *d)
}

/// An operator's request to verify `name` of `target` again (`recman verify`).
pub fn request(
    state: &State,
    cfg: &CoreConfig,
    target: &TargetId,
    name: &str,
    origin: &str,
    now: u64,
) -> Result<Event, (&'static str, String)> {
    if cfg.targets.get(target).and_then(|p| p.verify.as_ref()).is_none() {
        return Err((
            "verify_not_configured",
            format!(
                "{target} has no [target.verify] in the engine's config: add one (type = \"checksum\", \
                 \"qemu-img\", \"postgres\" or \"exec\") and restart the engine"
            ),
        ));
    }
    let Some(e) = state
        .catalog
        .get(target)
        .and_then(|c| c.iter().find(|e| e.name == name))
    else {
        return Err((
            "snapshot_not_found",
            format!("{target} has no restore point {name} in the catalog (see `recman snapshots`)"),
        ));
    };
    Ok(Event {
        at_ms: now,
        job: e.job,
        body: EventBody::VerifyRequested {
            target: target.clone(),
            name: name.to_string(),
            origin: origin.to_string(),
            replaces: Vec::new(),
        },
        by: String::new(),
    })
}

/// The verify command of `event` (a `VerifyStarted`), if it is one.
pub fn effects(state: &State, cfg: &CoreConfig, event: &Event) -> Option<Outgoing> {
    let EventBody::VerifyStarted { target, .. } = &event.body else {
        return None;
    };
    command(state, cfg, target)
}

/// The commands of every verification in flight (after a restart).
pub fn recover(state: &State, cfg: &CoreConfig) -> Vec<Outgoing> {
    state
        .verify
        .running
        .keys()
        .filter_map(|t| command(state, cfg, t))
        .collect()
}

fn command(state: &State, cfg: &CoreConfig, t: &TargetId) -> Option<Outgoing> {
    let run = state.verify.running.get(t)?;
    let p = cfg.targets.get(t)?;
    let v = p.verify.as_ref();
    let pool = v
        .and_then(|v| v.pool.clone())
        .unwrap_or_else(|| p.provider_pool.clone());
    let timeout = v.map_or(VerifyPolicy::new("").timeout_ms, |v| v.timeout_ms);
    // The point's job may have left the state: the catalog keeps its kind.
    let kind = state
        .jobs
        .get(&run.owner)
        .map(|j| j.kind)
        .or_else(|| {
            state
                .catalog
                .get(t)
                .and_then(|c| c.iter().find(|e| e.job == run.owner && e.name == run.name))
                .map(|e| e.kind)
        })
        .unwrap_or_default();
    Some(Outgoing {
        to: Destination::Pool(pool),
        command: Command {
            schema_version: SCHEMA_VERSION,
            message_id: Command::message_id_for(run.owner, run.run, Stage::Verify, t),
            job: run.owner,
            attempt: run.run,
            stage: Stage::Verify,
            targets: vec![t.clone()],
            kind,
            snapshot_name: Some(run.name.clone()),
            // The worker's own stop: the engine's deadline less the grace.
            thaw_deadline_ms: Some(
                run.deadline_ms
                    .saturating_sub(STAGE_GRACE_MS)
                    .min(run.started_ms.saturating_add(timeout)),
            ),
            prune: Vec::new(),
            fingerprints: p.fingerprint.clone().into_iter().collect(),
            recovery: None,
        },
    })
}
