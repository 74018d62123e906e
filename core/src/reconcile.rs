//! The catalog checked against the storage: a reconcile lists a target's
//! snapshots through its provider pool and compares them with the catalog.
//! Pure, like the rest of the core.
//!
//! Entry points: [`evolve`] (the ledger folds the reconcile events),
//! [`starts`] (after a step is folded: which reconcile to start), [`report`]
//! and [`timeouts`] (from `decide`), [`effects`] and [`recover`] (the
//! reconcile command), [`busy`] (a target being reconciled takes no freeze),
//! [`due`] (the periodic `reconcile_every`, kept in `crate::due`) and
//! [`request`] (`recman reconcile`).
//!
//! The rules:
//! - a reconcile is asked for (`ReconcileRequested`) by the due-time index
//!   every `reconcile_every` after the last one started (or after the
//!   target's oldest restore point, before the first), or on demand; one
//!   request waits per target;
//! - it starts only on an idle target (no job holds it or waits for it),
//!   one at a time per target; while it runs a new job of the target waits
//!   in the queue (`decide` asks [`busy`]), so no snapshot is cut while the
//!   provider lists;
//! - the answer is compared with the catalog as it was when the command
//!   was sent (`Running::expected`, set when `ReconcileStarted` folds): a
//!   point recorded later is never declared vanished. A point whose delete
//!   is pending (a prune records its own outcome) or that is being verified
//!   is not declared vanished either: the next reconcile looks again;
//! - a point of that catalog the provider does not list is `SnapshotVanished`
//!   (it leaves the catalog like a deleted one, so retention and the RPO see
//!   it gone); a listed name that looks like recman's (`rm-…-aN`) and that no
//!   job of the target can have made is `SnapshotUnknown`: reported, never
//!   deleted;
//! - a failed list (the provider's error, no answer by the deadline) is
//!   `ReconcileFailed`: the catalog is unchanged.

use std::collections::{BTreeMap, BTreeSet};

use recman_events::{
    legacy_snapshot_name, snapshot_name, Command, Event, EventBody, JobId, Outcome, Report, SnapshotKind,
    Stage, StepDetail, StepError, TargetId, SCHEMA_VERSION,
};
use serde::Serialize;

use crate::effects::{Destination, Outgoing};
use crate::policy::{CoreConfig, STAGE_GRACE_MS};
use crate::state::State;

/// How long the provider may take to list (the worker's own stop).
pub const LIST_TIMEOUT_MS: u64 = 60_000;

/// The reconcile in flight on one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Running {
    pub run: u32,
    pub origin: String,
    pub started_ms: u64,
    pub deadline_ms: u64,
    /// The catalog's names when the command was sent: only these can vanish.
    pub expected: BTreeSet<String>,
}

/// How a target's last reconcile went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Last {
    pub run: u32,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    /// `ok`, or the error.
    pub outcome: Option<String>,
    pub listed: u32,
    pub vanished: Vec<String>,
    pub unknown: Vec<String>,
}

/// Every target's reconcile state, rebuilt from the log by [`evolve`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// Requests not started yet, by target (their origin).
    pub wanted: BTreeMap<TargetId, String>,
    pub running: BTreeMap<TargetId, Running>,
    /// Index of `Running::deadline_ms`.
    pub deadlines: BTreeSet<(u64, TargetId)>,
    pub last: BTreeMap<TargetId, Last>,
}

/// Folds a reconcile event (true). `SnapshotVanished` is also recorded here
/// but returns false: `evolve` removes the point from the catalog.
pub fn evolve(ledger: &mut Ledger, ev: &Event) -> bool {
    match &ev.body {
        EventBody::ReconcileRequested { target, origin } => {
            if !ledger.running.contains_key(target) {
                ledger
                    .wanted
                    .entry(target.clone())
                    .or_insert_with(|| origin.clone());
            }
        }
        EventBody::ReconcileStarted { .. } => {
            // Needs the catalog: see `started`.
            return false;
        }
        EventBody::SnapshotVanished { target, name } => {
            if let Some(l) = ledger.last.get_mut(target) {
                if l.ended_ms.is_none() && !l.vanished.contains(name) {
                    l.vanished.push(name.clone());
                }
            }
            return false;
        }
        EventBody::SnapshotUnknown { target, names } => {
            if let Some(l) = ledger.last.get_mut(target) {
                if l.ended_ms.is_none() {
                    l.unknown = names.clone();
                }
            }
        }
        EventBody::Reconciled {
            target, run, listed, ..
        } => {
            if ledger.end(target, *run) {
                if let Some(l) = ledger.last.get_mut(target) {
                    l.ended_ms = Some(ev.at_ms);
                    l.outcome = Some("ok".into());
                    l.listed = *listed;
                }
            }
        }
        EventBody::ReconcileFailed { target, run, error } => {
            if ledger.end(target, *run) {
                if let Some(l) = ledger.last.get_mut(target) {
                    l.ended_ms = Some(ev.at_ms);
                    l.outcome = Some(error.to_string());
                }
            }
        }
        _ => return false,
    }
    true
}

/// `ReconcileStarted` folds with the catalog at hand (`evolve` calls it).
pub fn started(state: &mut State, ev: &Event) -> bool {
    let EventBody::ReconcileStarted {
        target,
        run,
        deadline_ms,
    } = &ev.body
    else {
        return false;
    };
    let expected = state
        .catalog
        .get(target)
        .map(|c| c.iter().map(|e| e.name.clone()).collect())
        .unwrap_or_default();
    let l = &mut state.reconcile;
    let origin = l.wanted.remove(target).unwrap_or_default();
    if let Some(old) = l.running.insert(
        target.clone(),
        Running {
            run: *run,
            origin,
            started_ms: ev.at_ms,
            deadline_ms: *deadline_ms,
            expected,
        },
    ) {
        l.deadlines.remove(&(old.deadline_ms, target.clone()));
    }
    l.deadlines.insert((*deadline_ms, target.clone()));
    l.last.insert(
        target.clone(),
        Last {
            run: *run,
            started_ms: ev.at_ms,
            ..Last::default()
        },
    );
    true
}

impl Ledger {
    fn end(&mut self, t: &TargetId, run: u32) -> bool {
        let Some(r) = self.running.get(t) else {
            return false;
        };
        if r.run != run {
            return false;
        }
        self.deadlines.remove(&(r.deadline_ms, t.clone()));
        self.running.remove(t);
        true
    }
}

/// Whether a reconcile runs on `t` (no freeze of `t` may start).
pub fn busy(state: &State, t: &TargetId) -> bool {
    state.reconcile.running.contains_key(t)
}

/// Targets whose reconcile ends with one of `events`.
pub fn ended(events: &[Event]) -> BTreeSet<TargetId> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Reconciled { target, .. } | EventBody::ReconcileFailed { target, .. } => {
                Some(target.clone())
            }
            _ => None,
        })
        .collect()
}

/// When the periodic reconcile of `t` falls due (`every_ms` after the last
/// one started, or after its oldest restore point before the first): none
/// while one waits or runs, nor for a target with neither.
pub fn due(state: &State, t: &TargetId, every_ms: u64) -> Option<u64> {
    let l = &state.reconcile;
    if l.wanted.contains_key(t) || l.running.contains_key(t) {
        return None;
    }
    let base = match l.last.get(t) {
        Some(last) => last.started_ms,
        None => state.catalog.get(t)?.first()?.at_ms,
    };
    Some(base.saturating_add(every_ms))
}

/// The periodic reconciles due at `now` (`targets`: those the due-time index
/// says fell due; `None`: every target with `reconcile_every`).
pub fn plan(state: &State, cfg: &CoreConfig, now: u64, targets: Option<&[TargetId]>) -> Vec<Event> {
    let mut out = Vec::new();
    let mut ask = |t: &TargetId| {
        let Some(every) = cfg.targets.get(t).and_then(|p| p.reconcile_every_ms) else {
            return;
        };
        if due(state, t, every).is_some_and(|d| d <= now) {
            out.push(Event {
                at_ms: now,
                job: JobId::NONE,
                body: EventBody::ReconcileRequested {
                    target: t.clone(),
                    origin: "schedule".into(),
                },
                by: String::new(),
            });
        }
    };
    match targets {
        Some(ts) => ts.iter().for_each(&mut ask),
        None => cfg.targets.keys().for_each(&mut ask),
    }
    out
}

/// An operator's request to reconcile `target` (`recman reconcile`).
pub fn request(
    state: &State,
    cfg: &CoreConfig,
    target: &TargetId,
    origin: &str,
    now: u64,
) -> Result<Option<Event>, StepError> {
    if !cfg.targets.contains_key(target) {
        return Err(StepError::new(
            "unknown_target",
            format!("{target} is not a target of this engine's config (see `recman targets`)"),
            false,
        ));
    }
    if state.reconcile.wanted.contains_key(target) || state.reconcile.running.contains_key(target) {
        return Ok(None);
    }
    Ok(Some(Event {
        at_ms: now,
        job: JobId::NONE,
        body: EventBody::ReconcileRequested {
            target: target.clone(),
            origin: origin.to_string(),
        },
        by: String::new(),
    }))
}

/// Targets a step's `events` touched (their reconcile may start now).
pub fn touched(state: &State, events: &[Event]) -> BTreeSet<TargetId> {
    let mut out = BTreeSet::new();
    for e in events {
        match &e.body {
            EventBody::ReconcileRequested { target, .. } => {
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
    out.retain(|t| state.reconcile.wanted.contains_key(t));
    out
}

/// The reconciles to start on `targets` now: each idle one (no job holds or
/// waits for it, none reconciling) with a request. `ReconcileUnguarded`
/// does not wait for jobs.
pub fn starts(state: &State, cfg: &CoreConfig, now: u64, targets: &BTreeSet<TargetId>) -> Vec<Event> {
    let unguarded = cfg.mutation == Some(crate::Mutation::ReconcileUnguarded);
    let mut out = Vec::new();
    for t in targets {
        if !state.reconcile.wanted.contains_key(t)
            || busy(state, t)
            || crate::recovery::busy(state, t)
            || (!unguarded && state.queues.get(t).is_some_and(|q| !q.is_empty()))
        {
            continue;
        }
        let run = state.reconcile.last.get(t).map_or(0, |l| l.run) + 1;
        out.push(Event {
            at_ms: now,
            job: JobId::NONE,
            body: EventBody::ReconcileStarted {
                target: t.clone(),
                run,
                deadline_ms: now
                    .saturating_add(list_timeout(cfg, t))
                    .saturating_add(STAGE_GRACE_MS),
            },
            by: String::new(),
        });
    }
    out
}

fn list_timeout(cfg: &CoreConfig, t: &TargetId) -> u64 {
    cfg.targets
        .get(t)
        .map_or(LIST_TIMEOUT_MS, |p| p.provider_timeout_ms.max(LIST_TIMEOUT_MS))
}

/// Whether `name` has the shape of a recman snapshot name (`rm-` and 20
/// base32 characters, or 16 hex of earlier builds, then `-a<attempt>`).
pub fn looks_ours(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("rm-") else {
        return false;
    };
    let Some((id, attempt)) = rest.rsplit_once("-a") else {
        return false;
    };
    !attempt.is_empty()
        && attempt.bytes().all(|b| b.is_ascii_digit())
        && (id.len() == 20 || id.len() == 16)
        && id.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// The provider's answer to the reconcile in flight (a stale or duplicate
/// report changes nothing).
pub fn report(state: &State, cfg: &CoreConfig, r: &Report, now: u64) -> Vec<Event> {
    let Some(t) = r.targets.first() else {
        return Vec::new();
    };
    let Some(run) = state.reconcile.running.get(t) else {
        return Vec::new();
    };
    if r.job != JobId::NONE || run.run != r.attempt {
        return Vec::new();
    }
    let failed = |error: StepError| {
        vec![Event {
            at_ms: now,
            job: JobId::NONE,
            body: EventBody::ReconcileFailed {
                target: t.clone(),
                run: run.run,
                error,
            },
            by: String::new(),
        }]
    };
    let names = match &r.outcome {
        Outcome::Ok {
            detail: StepDetail::Listed { names },
        } => names,
        Outcome::Ok { .. } => {
            return failed(StepError::new(
                "bad_report",
                format!("{} answered reconcile with another step's report", r.worker),
                false,
            ))
        }
        Outcome::Err { error } => return failed(error.clone()),
    };
    let listed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let unguarded = cfg.mutation == Some(crate::Mutation::ReconcileUnguarded);
    let catalog = state.catalog.get(t).map(Vec::as_slice).unwrap_or_default();
    let verifying = state.verify.running.get(t).map(|v| v.name.as_str());
    let mut out = Vec::new();
    let mut vanished = 0u32;
    for e in catalog {
        let gone = (unguarded || run.expected.contains(&e.name))
            && !listed.contains(e.name.as_str())
            && !state.prunes.contains_key(&(t.clone(), e.name.clone()))
            && verifying != Some(e.name.as_str());
        if gone {
            vanished += 1;
            if cfg.mutation != Some(crate::Mutation::ReconcileKeepsVanished) {
                out.push(Event {
                    at_ms: now,
                    job: e.job,
                    body: EventBody::SnapshotVanished {
                        target: t.clone(),
                        name: e.name.clone(),
                    },
                    by: String::new(),
                });
            }
        }
    }
    let unknown = unknown(state, t, names);
    if !unknown.is_empty() {
        out.push(Event {
            at_ms: now,
            job: JobId::NONE,
            body: EventBody::SnapshotUnknown {
                target: t.clone(),
                names: unknown.clone(),
            },
            by: String::new(),
        });
    }
    out.push(Event {
        at_ms: now,
        job: JobId::NONE,
        body: EventBody::Reconciled {
            target: t.clone(),
            run: run.run,
            listed: u32::try_from(names.len()).unwrap_or(u32::MAX),
            vanished,
            unknown: u32::try_from(unknown.len()).unwrap_or(u32::MAX),
        },
        by: String::new(),
    });
    out
}

/// Listed names of `t` that look like recman's and that no event records:
/// not in the catalog, not a pending delete, not the name of any attempt of
/// a job of `t` (a late or discarded snapshot is such a name).
fn unknown(state: &State, t: &TargetId, names: &[String]) -> Vec<String> {
    let in_catalog: BTreeSet<&str> = state
        .catalog
        .get(t)
        .map(|c| c.iter().map(|e| e.name.as_str()).collect())
        .unwrap_or_default();
    let candidates: Vec<&String> = names
        .iter()
        .filter(|n| {
            looks_ours(n)
                && !in_catalog.contains(n.as_str())
                && !state.prunes.contains_key(&(t.clone(), (*n).clone()))
        })
        .collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    // Only now look at every job of the target: the usual answer has no candidate.
    let mut known = BTreeSet::new();
    for j in state.jobs.values().filter(|j| j.targets.contains(t)) {
        for a in 1..=j.attempt.max(j.retry_attempt) {
            known.insert(snapshot_name(j.id, a));
            known.insert(legacy_snapshot_name(j.id, a));
        }
        known.extend(j.late_names.iter().cloned());
        if let Some(s) = &j.snapshot {
            known.insert(s.name.clone());
        }
    }
    known.extend(crate::recovery::names_of(state, t));
    let mut out: Vec<String> = candidates
        .into_iter()
        .filter(|n| !known.contains(*n))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Reconciles whose deadline passed with no answer.
pub fn timeouts(state: &State, now: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for (d, t) in state.reconcile.deadlines.iter().take_while(|(d, _)| *d <= now) {
        let Some(run) = state.reconcile.running.get(t) else {
            continue;
        };
        out.push(Event {
            at_ms: now,
            job: JobId::NONE,
            body: EventBody::ReconcileFailed {
                target: t.clone(),
                run: run.run,
                error: StepError::new(
                    "timeout",
                    format!("no list from the provider pool by {d} ms (the worker's deadline and the grace passed)"),
                    true,
                ),
            },
            by: String::new(),
        });
    }
    out
}

/// When the runtime must call back for a reconcile's deadline.
pub fn next_due(state: &State) -> Option<u64> {
    state.reconcile.deadlines.first().map(|(d, _)| *d)
}

/// The reconcile command of `event` (a `ReconcileStarted`), if it is one.
pub fn effects(state: &State, cfg: &CoreConfig, event: &Event) -> Option<Outgoing> {
    let EventBody::ReconcileStarted { target, .. } = &event.body else {
        return None;
    };
    command(state, cfg, target)
}

/// The commands of every reconcile in flight (after a restart).
pub fn recover(state: &State, cfg: &CoreConfig) -> Vec<Outgoing> {
    state
        .reconcile
        .running
        .keys()
        .filter_map(|t| command(state, cfg, t))
        .collect()
}

fn command(state: &State, cfg: &CoreConfig, t: &TargetId) -> Option<Outgoing> {
    let run = state.reconcile.running.get(t)?;
    let p = cfg.targets.get(t)?;
    Some(Outgoing {
        to: Destination::Pool(p.provider_pool.clone()),
        command: Command {
            schema_version: SCHEMA_VERSION,
            message_id: Command::message_id_for(JobId::NONE, run.run, Stage::Reconcile, t),
            job: JobId::NONE,
            attempt: run.run,
            stage: Stage::Reconcile,
            targets: vec![t.clone()],
            kind: SnapshotKind::Full,
            snapshot_name: None,
            // The worker's own stop: the engine's deadline less the grace.
            thaw_deadline_ms: Some(run.deadline_ms.saturating_sub(STAGE_GRACE_MS)),
            prune: Vec::new(),
            fingerprints: p.fingerprint.clone().into_iter().collect(),
            recovery: None,
        },
    })
}
