//! Protection policies in the core: schedules (when a target's snapshot is
//! requested) and RPO (how old its newest good restore point may get).
//!
//! A schedule's firing is a timer of the core like every other:
//! `Core::next_deadline` includes the next slot, `Input::TimerFired` (or
//! `Input::Start`) fires it. One slot is one request, id
//! `schedule:<id>:<slot, RFC 3339 UTC>`, and one job whose id is derived
//! from the slot: a restart, a crash in the middle of a firing or a second
//! engine on the log finds the slot (`ScheduleFired`) or its request id
//! (`State::requests`) and never fires it twice.
//!
//! Calendar arithmetic lives here, in the pure core, because the crates
//! that do it are pure when built as we build them: `croner` finds the next
//! match of a 5-field pattern from a given instant (it never reads a
//! clock: the instant is the core's `now_ms` or a recorded slot), and
//! `jiff` converts between instants and civil time with its bundled time
//! zone database (`tzdb-bundle-always`, no `tz-system` / `tzdb-zoneinfo`:
//! it never opens `/usr/share/zoneinfo`). The simulator therefore covers
//! the slots themselves, DST gaps and repeats included. Slots are recorded
//! in events, so a tzdb that changes with a new build never changes what
//! replay rebuilds.
//!
//! Entry points: [`Schedule`] and [`Calendar`] (built by the config),
//! [`Book`] (the state, folded by [`evolve`]), [`next_due`] (the timer);
//! the decisions themselves are in `decide` (`Decider::policies`), which
//! calls [`plan`] and [`rpo_plan`].

use std::collections::{BTreeMap, BTreeSet};

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use recman_events::{Event, EventBody, JobId, RequestId, SnapshotKind, TargetId};

use crate::policy::CoreConfig;
use crate::state::State;

/// A slot that fires more than this late (after downtime), or more than
/// half its period, counts as missed.
pub const LATE_MS: u64 = 60_000;
/// After downtime, cron slots are counted over at most this window (older
/// missed slots are not enumerated one by one; the count says "at least").
const CATCH_UP_SCAN_MS: u64 = 2 * 86_400_000;

/// When a schedule's slots are.
#[derive(Clone, Debug)]
pub enum Calendar {
    /// Every `ms`, slots at whole multiples of it since the Unix epoch (so
    /// they do not move when the engine restarts).
    Every { ms: u64 },
    /// A 5-field cron pattern in a time zone.
    Cron {
        expr: String,
        tz: String,
        cron: Box<Cron>,
        zone: TimeZone,
    },
}

impl PartialEq for Calendar {
    fn eq(&self, other: &Self) -> bool {
        self.spec() == other.spec()
    }
}

impl Eq for Calendar {}

impl Calendar {
    /// `every`: at least one second, at most a year.
    pub fn every(ms: u64) -> Result<Calendar, String> {
        if !(1_000..=366 * 86_400_000).contains(&ms) {
            return Err("must be between 1s and 366d".into());
        }
        Ok(Calendar::Every { ms })
    }

    /// A 5-field pattern (minute hour day-of-month month day-of-week, or a
    /// nickname such as `@daily`) in an IANA time zone (`UTC` default).
    pub fn cron(expr: &str, tz: &str) -> Result<Calendar, CalendarError> {
        let zone = TimeZone::get(tz).map_err(|_| {
            CalendarError::Timezone(format!(
                "unknown time zone \"{tz}\": use an IANA name such as UTC or Europe/Berlin"
            ))
        })?;
        let fields = expr.split_whitespace().count();
        if !(fields == 5 || fields == 1 && expr.trim_start().starts_with('@')) {
            return Err(CalendarError::Cron(format!(
                "\"{expr}\" has {fields} fields; write 5: minute hour day-of-month month day-of-week"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| CalendarError::Cron(format!("\"{expr}\": {e}")))?;
        Ok(Calendar::Cron {
            expr: expr.trim().to_string(),
            tz: tz.to_string(),
            cron: Box::new(cron),
            zone,
        })
    }

    /// The first slot strictly after `after_ms` (Unix ms).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            Calendar::Every { ms } => (after_ms / ms).checked_add(1)?.checked_mul(*ms),
            Calendar::Cron { cron, zone, .. } => {
                let t = Timestamp::from_millisecond(i64::try_from(after_ms).ok()?).ok()?;
                let next = cron.find_next_occurrence(&t.to_zoned(zone.clone()), false).ok()?;
                u64::try_from(next.timestamp().as_millisecond()).ok()
            }
        }
    }

    /// Canonical text (what `ScheduleChanged` records).
    pub fn spec(&self) -> String {
        match self {
            Calendar::Every { ms } => format!("every={}", human_ms(*ms)),
            Calendar::Cron { expr, tz, .. } => format!("cron={expr} timezone={tz}"),
        }
    }
}

/// A bad `cron` or `timezone` (the config says which key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CalendarError {
    Cron(String),
    Timezone(String),
}

/// A firing while the schedule's previous job still runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overlap {
    /// Skipped (recorded).
    #[default]
    Skip,
    /// One slot waits and fires when the running job ends; more are skipped.
    QueueOne,
}

/// Slots that fell due while the engine was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CatchUp {
    /// Missed slots are skipped (recorded); a slot fires only on time.
    Skip,
    /// The latest missed slot fires once; older ones are skipped.
    #[default]
    Once,
}

/// One `[[schedule]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub id: String,
    /// More than one: one consistency group per firing.
    pub targets: Vec<TargetId>,
    pub when: Calendar,
    pub kind: SnapshotKind,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    /// Upper bound of the firing's delay after its slot, deterministic per
    /// schedule and targets ([`Schedule::jitter_ms`]).
    pub jitter_ms: u64,
}

impl Schedule {
    /// Canonical text of everything that decides its firings.
    pub fn spec(&self) -> String {
        let targets: Vec<&str> = self.targets.iter().map(|t| t.as_str()).collect();
        format!(
            "{} targets={} kind={} overlap={} catch_up={} jitter={}",
            self.when.spec(),
            targets.join(","),
            self.kind.as_str(),
            match self.overlap {
                Overlap::Skip => "skip",
                Overlap::QueueOne => "queue_one",
            },
            match self.catch_up {
                CatchUp::Skip => "skip",
                CatchUp::Once => "once",
            },
            human_ms(self.jitter_ms)
        )
    }

    /// This schedule's delay after each slot: a hash of its id and targets
    /// in `[0, jitter_ms]`, so a fleet's 02:00 spreads, always the same way.
    pub fn jitter_ms(&self) -> u64 {
        if self.jitter_ms == 0 {
            return 0;
        }
        let mut h = Fnv::default();
        h.write(self.id.as_bytes());
        for t in &self.targets {
            h.write(b"/");
            h.write(t.as_str().as_bytes());
        }
        h.0 % (self.jitter_ms + 1)
    }

    /// The request id of one slot.
    pub fn request_id(&self, slot_ms: u64) -> RequestId {
        RequestId::new(format!("schedule:{}:{}", self.id, rfc3339(slot_ms)))
    }

    /// The job id of one slot: v7-shaped, its time the slot's, its random
    /// bits a hash of schedule and slot (the same on every engine).
    pub fn job_id(&self, slot_ms: u64) -> JobId {
        let mut a = Fnv::default();
        a.write(self.id.as_bytes());
        a.write(&slot_ms.to_be_bytes());
        let mut b = Fnv(a.0 ^ 0x9e37_79b9_7f4a_7c15);
        b.write(b"job");
        JobId::from_parts(slot_ms, (u128::from(a.0) << 64) | u128::from(b.0))
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// `2026-03-29T01:00:00Z` (seconds; slots are whole minutes or seconds).
pub fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// `4h`, `90s`, `1500ms`: the largest unit that divides.
pub fn human_ms(ms: u64) -> String {
    for (unit, n) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms > 0 && ms % n == 0 {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

/// One schedule as the log tells it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleState {
    /// The config recorded last (`ScheduleChanged`); empty: removed.
    pub spec: String,
    /// Slots count from here: the config change, or the resume.
    pub since_ms: u64,
    /// The newest slot handled (fired, skipped or queued).
    pub last_slot_ms: Option<u64>,
    /// The job of the newest firing.
    pub last_job: Option<JobId>,
    /// A slot waiting for `last_job` to end (`overlap = "queue_one"`).
    pub queued_slot_ms: Option<u64>,
    /// Why it is paused, when it is.
    pub paused: Option<String>,
    pub fired: u64,
    /// Slots skipped (missed, overlapping or refused).
    pub skipped: u64,
    /// The newest skip: (at, reason).
    pub last_skip: Option<(u64, String)>,
}

/// One target's RPO as the log tells it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RpoState {
    /// 0: none.
    pub rpo_ms: u64,
    /// When it was set: the clock of a target with no restore point.
    pub since_ms: u64,
    pub breached: bool,
    /// When the current breach began (`RpoBreached`).
    pub breached_at_ms: Option<u64>,
}

/// Schedules and RPOs, rebuilt from the log by [`evolve`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Book {
    pub schedules: BTreeMap<String, ScheduleState>,
    pub rpo: BTreeMap<TargetId, RpoState>,
}

/// Folds a policy event; false for every other event (left to `evolve`).
pub fn evolve(book: &mut Book, ev: &Event) -> bool {
    match &ev.body {
        EventBody::ScheduleChanged { schedule, spec } => {
            let s = book.schedules.entry(schedule.clone()).or_default();
            s.spec = spec.clone();
            s.since_ms = ev.at_ms;
        }
        EventBody::ScheduleFired { schedule, slot_ms } => {
            let s = book.schedules.entry(schedule.clone()).or_default();
            s.last_slot_ms = s.last_slot_ms.max(Some(*slot_ms));
            s.last_job = Some(ev.job);
            if s.queued_slot_ms.is_some_and(|q| q <= *slot_ms) {
                s.queued_slot_ms = None;
            }
            s.fired += 1;
        }
        EventBody::ScheduleSkipped {
            schedule,
            slot_ms,
            missed,
            reason,
        } => {
            let s = book.schedules.entry(schedule.clone()).or_default();
            s.last_slot_ms = s.last_slot_ms.max(Some(*slot_ms));
            if s.queued_slot_ms == Some(*slot_ms) {
                s.queued_slot_ms = None;
            }
            s.skipped += u64::from(*missed);
            s.last_skip = Some((ev.at_ms, reason.clone()));
        }
        EventBody::ScheduleQueued { schedule, slot_ms } => {
            let s = book.schedules.entry(schedule.clone()).or_default();
            s.last_slot_ms = s.last_slot_ms.max(Some(*slot_ms));
            s.queued_slot_ms = Some(*slot_ms);
        }
        EventBody::SchedulePaused {
            schedule,
            paused,
            reason,
        } => {
            let s = book.schedules.entry(schedule.clone()).or_default();
            if *paused {
                s.paused = Some(reason.clone());
            } else {
                // Slots of the pause are not caught up: they count from here.
                s.paused = None;
                s.since_ms = s.since_ms.max(ev.at_ms);
            }
        }
        EventBody::RpoChanged { target, rpo_ms } => {
            let r = book.rpo.entry(target.clone()).or_default();
            r.rpo_ms = *rpo_ms;
            r.since_ms = ev.at_ms;
        }
        EventBody::RpoBreached { target, .. } => {
            let r = book.rpo.entry(target.clone()).or_default();
            r.breached = true;
            r.breached_at_ms = Some(ev.at_ms);
        }
        EventBody::RpoRestored { target, .. } => {
            let r = book.rpo.entry(target.clone()).or_default();
            r.breached = false;
            r.breached_at_ms = None;
        }
        _ => return false,
    }
    true
}

/// The newest good restore point of `t` (its completion time), if any;
/// with `verified_only` (`rpo_counts = "verified"`), the newest verified one.
pub fn last_good_ms(state: &State, t: &TargetId, verified_only: bool) -> Option<u64> {
    let c = state.catalog.get(t)?;
    if verified_only {
        c.iter()
            .filter(|e| crate::verify::is_verified(state, t, &e.name))
            .map(|e| e.at_ms)
            .max()
    } else {
        c.iter().map(|e| e.at_ms).max()
    }
}

/// [`last_good_ms`] as the target's policy counts it.
pub fn last_good_for(state: &State, cfg: &CoreConfig, t: &TargetId) -> Option<u64> {
    last_good_ms(state, t, cfg.targets.get(t).is_some_and(|p| p.rpo_verified))
}

/// Whether the schedule's config is the one recorded (a changed one waits
/// for `Input::Start` to record it).
fn current<'a>(state: &'a State, s: &Schedule, spec: &str) -> Option<&'a ScheduleState> {
    state
        .book
        .schedules
        .get(&s.id)
        .filter(|st| st.spec == spec && st.paused.is_none())
}

/// Whether the schedule's previous job still runs (`ended`: jobs that
/// ended in the decision being made, not yet in `state`).
fn running(state: &State, st: &ScheduleState, ended: &BTreeSet<JobId>) -> Option<JobId> {
    let j = st.last_job?;
    state
        .jobs
        .get(&j)
        .filter(|j| !j.state.is_terminal() && !ended.contains(&j.id))
        .map(|j| j.id)
}

/// When the schedule must be looked at next: its queued slot once the
/// running job ended, or its next slot plus jitter.
pub fn schedule_due(state: &State, s: &Schedule) -> Option<u64> {
    schedule_due_spec(state, s, &s.spec())
}

/// [`schedule_due`] with the schedule's spec computed already.
pub fn schedule_due_spec(state: &State, s: &Schedule, spec: &str) -> Option<u64> {
    let st = current(state, s, spec)?;
    if st.queued_slot_ms.is_some() && running(state, st, &BTreeSet::new()).is_none() {
        // The running job ended: the queued slot fires at once.
        return Some(0);
    }
    let anchor = st.since_ms.max(st.last_slot_ms.unwrap_or(0));
    s.when.next_after(anchor).map(|n| n.saturating_add(s.jitter_ms()))
}

/// When the RPO of `t` is crossed next (None: breached already, or no RPO).
pub fn rpo_due(state: &State, cfg: &CoreConfig, t: &TargetId, rpo_ms: u64) -> Option<u64> {
    let r = state
        .book
        .rpo
        .get(t)
        .filter(|r| r.rpo_ms == rpo_ms && rpo_ms > 0)?;
    if r.breached {
        return None;
    }
    let anchor = last_good_for(state, cfg, t).unwrap_or(r.since_ms);
    Some(anchor.saturating_add(rpo_ms))
}

/// The earliest policy timer (schedules and RPOs), by looking at every one:
/// the reference `due::DueIndex` is checked against (`Core` uses the index).
pub fn next_due(state: &State, cfg: &CoreConfig) -> Option<u64> {
    let sched = cfg.schedules.iter().filter_map(|s| schedule_due(state, s));
    let rpo = cfg
        .targets
        .iter()
        .filter_map(|(t, p)| p.rpo_ms.and_then(|r| rpo_due(state, cfg, t, r)));
    sched.chain(rpo).min()
}

/// What a schedule does now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Record the config (new, changed, or removed: `spec` empty).
    Changed {
        schedule: String,
        spec: String,
    },
    Skip {
        schedule: String,
        slot_ms: u64,
        missed: u32,
        reason: String,
    },
    Queue {
        schedule: String,
        slot_ms: u64,
        behind: JobId,
    },
    Fire {
        schedule: usize,
        slot_ms: u64,
    },
}

/// The schedules' decisions at `now` (`start`: also record config changes).
/// With `refire` (the `RefireSlots` mutation) the recorded slots are ignored.
/// `only`: the schedules to look at (indices in config order, the due ones
/// from `due::DueIndex`); `None` looks at every one. `ended`: jobs that
/// ended earlier in this decision (a slot queued behind one fires now, not
/// at an extra timer right after).
pub fn plan(
    state: &State,
    cfg: &CoreConfig,
    now: u64,
    start: bool,
    refire: bool,
    only: Option<&[usize]>,
    ended: &BTreeSet<JobId>,
) -> Vec<Plan> {
    let mut out = Vec::new();
    if start {
        for s in &cfg.schedules {
            let spec = s.spec();
            if state.book.schedules.get(&s.id).is_none_or(|st| st.spec != spec) {
                out.push(Plan::Changed {
                    schedule: s.id.clone(),
                    spec,
                });
            }
        }
        // A set, not a look through the config per recorded schedule: a
        // fleet's 33 334 schedules made that some 5·10^8 string compares
        // at every start.
        let configured: std::collections::HashSet<&str> =
            cfg.schedules.iter().map(|s| s.id.as_str()).collect();
        for (id, st) in &state.book.schedules {
            if !st.spec.is_empty() && !configured.contains(id.as_str()) {
                out.push(Plan::Changed {
                    schedule: id.clone(),
                    spec: String::new(),
                });
            }
        }
    }
    let all: Vec<usize>;
    let look = match only {
        Some(o) => o,
        None => {
            all = (0..cfg.schedules.len()).collect();
            &all
        }
    };
    for &i in look {
        let Some(s) = cfg.schedules.get(i) else { continue };
        let Some(st) = current(state, s, &s.spec()) else {
            continue;
        };
        if let (Some(q), None) = (st.queued_slot_ms, running(state, st, ended)) {
            out.push(Plan::Fire {
                schedule: i,
                slot_ms: q,
            });
            continue;
        }
        let jitter = s.jitter_ms();
        let Some(threshold) = now.checked_sub(jitter) else {
            continue;
        };
        let last = if refire { None } else { st.last_slot_ms };
        let mut anchor = st.since_ms.max(last.unwrap_or(0));
        let mut more_before = false;
        if matches!(s.when, Calendar::Cron { .. }) && threshold.saturating_sub(anchor) > CATCH_UP_SCAN_MS {
            anchor = threshold - CATCH_UP_SCAN_MS;
            more_before = true;
        }
        let Some(first) = s.when.next_after(anchor).filter(|n| *n <= threshold) else {
            continue;
        };
        // The newest due slot and how many due slots there are.
        let (newest, count) = match s.when {
            Calendar::Every { ms } => {
                let newest = threshold / ms * ms;
                (newest, (newest - first) / ms + 1)
            }
            Calendar::Cron { .. } => {
                let (mut newest, mut count) = (first, 1u64);
                while let Some(n) = s.when.next_after(newest).filter(|n| *n <= threshold) {
                    newest = n;
                    count += 1;
                }
                (newest, count)
            }
        };
        let missed = u32::try_from(count - 1).unwrap_or(u32::MAX);
        // Late: more than LATE_MS, or half a period, after the slot.
        let period = s.when.next_after(newest).map_or(LATE_MS, |n| n - newest);
        let late = threshold - newest > LATE_MS.min(period / 2);
        let at_least = if more_before { "at least " } else { "" };
        if missed > 0 || late && s.catch_up == CatchUp::Skip {
            let (slot_ms, n) = if late && s.catch_up == CatchUp::Skip {
                (newest, missed.saturating_add(1))
            } else {
                (previous(s, newest, first), missed)
            };
            let rule = match s.catch_up {
                CatchUp::Skip => "catch_up = \"skip\"",
                CatchUp::Once => "catch_up = \"once\" fires only the latest",
            };
            out.push(Plan::Skip {
                schedule: s.id.clone(),
                slot_ms,
                missed: n,
                reason: format!("missed: {at_least}{n} slot(s) fell due while the engine was down ({rule})"),
            });
            if late && s.catch_up == CatchUp::Skip {
                continue;
            }
        }
        match (running(state, st, ended), s.overlap) {
            (Some(job), Overlap::Skip) => out.push(Plan::Skip {
                schedule: s.id.clone(),
                slot_ms: newest,
                missed: 1,
                reason: format!("overlap: job {job} of the previous firing still runs (overlap = \"skip\")"),
            }),
            (Some(job), Overlap::QueueOne) if st.queued_slot_ms.is_some() => out.push(Plan::Skip {
                schedule: s.id.clone(),
                slot_ms: newest,
                missed: 1,
                reason: format!(
                    "overlap: job {job} still runs and a slot is queued behind it already (overlap = \"queue_one\")"
                ),
            }),
            (Some(job), Overlap::QueueOne) => out.push(Plan::Queue {
                schedule: s.id.clone(),
                slot_ms: newest,
                behind: job,
            }),
            (None, _) => out.push(Plan::Fire {
                schedule: i,
                slot_ms: newest,
            }),
        }
    }
    out
}

/// The slot before `newest` (at least `first`): the newest of the missed ones.
fn previous(s: &Schedule, newest: u64, first: u64) -> u64 {
    match s.when {
        Calendar::Every { ms } => newest.saturating_sub(ms).max(first),
        Calendar::Cron { .. } => {
            let mut prev = first;
            while let Some(n) = s.when.next_after(prev).filter(|n| *n < newest) {
                prev = n;
            }
            prev
        }
    }
}

/// What an RPO does now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpoPlan {
    Changed {
        target: TargetId,
        rpo_ms: u64,
    },
    Breached {
        target: TargetId,
        rpo_ms: u64,
        last_good_ms: u64,
    },
    Restored {
        target: TargetId,
        rpo_ms: u64,
        last_good_ms: u64,
    },
}

/// The RPO decisions at `now` (`start`: also record config changes).
/// `only`: the targets to look at (sorted, from `due::DueIndex`); `None`
/// looks at every target.
pub fn rpo_plan(
    state: &State,
    cfg: &CoreConfig,
    now: u64,
    start: bool,
    only: Option<&[TargetId]>,
) -> Vec<RpoPlan> {
    let mut out = Vec::new();
    if start {
        for (t, p) in &cfg.targets {
            let rpo_ms = p.rpo_ms.unwrap_or(0);
            if state.book.rpo.get(t).map_or(0, |r| r.rpo_ms) != rpo_ms {
                out.push(RpoPlan::Changed {
                    target: t.clone(),
                    rpo_ms,
                });
            }
        }
        for (t, r) in &state.book.rpo {
            if r.rpo_ms > 0 && !cfg.targets.contains_key(t) {
                out.push(RpoPlan::Changed {
                    target: t.clone(),
                    rpo_ms: 0,
                });
            }
        }
        return out;
    }
    let look: Box<dyn Iterator<Item = (&TargetId, &crate::policy::TargetPolicy)>> = match only {
        Some(o) => Box::new(o.iter().filter_map(|t| cfg.targets.get_key_value(t))),
        None => Box::new(cfg.targets.iter()),
    };
    for (t, p) in look {
        let Some(rpo_ms) = p.rpo_ms else { continue };
        let Some(r) = state.book.rpo.get(t).filter(|r| r.rpo_ms == rpo_ms) else {
            continue;
        };
        let last = last_good_ms(state, t, p.rpo_verified);
        let anchor = last.unwrap_or(r.since_ms);
        let over = now >= anchor.saturating_add(rpo_ms);
        if over && !r.breached {
            out.push(RpoPlan::Breached {
                target: t.clone(),
                rpo_ms,
                last_good_ms: last.unwrap_or(0),
            });
        } else if !over && r.breached {
            out.push(RpoPlan::Restored {
                target: t.clone(),
                rpo_ms,
                last_good_ms: last.unwrap_or(0),
            });
        }
    }
    out
}
