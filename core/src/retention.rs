//! Retention: which restore points each rule keeps (`keep_last`, `keep_within`,
//! `keep_hourly/daily/weekly/monthly`, restic's `forget --keep-*` semantics),
//! and the plan of what to prune, a consistency group as a whole. Pure.
//!
//! Entry points: [`evaluate`] (one target's points under one policy, each with
//! the rules that keep it) and [`plan`] (the catalog of the core's state: per
//! target the verdicts, and the names to delete). `decide` calls `plan` when a
//! job completes, on start and on `Input::Prune`; `recman prune --dry-run`
//! prints the same plan.
//!
//! Calendar buckets are UTC: an hour, a day (00:00–24:00 UTC), a week
//! (Monday 00:00 UTC to the next Monday, the ISO week) and a month of UTC.
//! Time zones for buckets are not configurable yet.

use std::collections::{BTreeMap, BTreeSet};

use recman_events::{JobId, TargetId};
use serde::{Deserialize, Serialize};

use crate::state::{CatalogEntry, State};

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// The retention rules of one target (or, once schedules carry their own
/// rules, of one schedule: a point taken by a schedule is then evaluated
/// under that schedule's policy; see [`plan`]'s `policy` argument). No rule
/// at all keeps every restore point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RetentionPolicy {
    /// The newest N restore points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Every point taken within this long before the newest point (not
    /// before now: a target that stops being snapshotted keeps its points).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_ms: Option<u64>,
    /// The newest point of each of the last N hours that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// The newest point of each of the last N days (UTC) that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// The newest point of each of the last N ISO weeks (UTC) that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// The newest point of each of the last N months (UTC) that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
}

impl RetentionPolicy {
    /// Only the newest `n` (today's `keep_last`).
    pub fn last(n: u32) -> Self {
        RetentionPolicy {
            keep_last: Some(n),
            ..RetentionPolicy::default()
        }
    }

    /// No rule: nothing is ever pruned.
    pub fn keeps_all(&self) -> bool {
        *self == RetentionPolicy::default()
    }
}

/// Why a restore point is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The target has no retention rule.
    NoPolicy,
    /// The newest restore point of a target is never pruned.
    Newest,
    /// The newest verified one is never pruned (`verify`: its last
    /// verification passed).
    NewestVerified,
    Last,
    Within,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    /// Kept because another member of its consistency group keeps it.
    Group,
    /// Mounted, or a recovery waits for it or reads it (`recovery::pinned`).
    InUse,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NoPolicy => "no_policy",
            Rule::Newest => "newest",
            Rule::NewestVerified => "newest_verified",
            Rule::Last => "keep_last",
            Rule::Within => "keep_within",
            Rule::Hourly => "keep_hourly",
            Rule::Daily => "keep_daily",
            Rule::Weekly => "keep_weekly",
            Rule::Monthly => "keep_monthly",
            Rule::Group => "group",
            Rule::InUse => "in_use",
        }
    }
}

/// One rule keeping one point, and the detail (`3 of 7`, the day, the week…).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub rule: Rule,
    pub detail: String,
}

/// A restore point of one target, as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    pub job: JobId,
    pub name: String,
    pub at_ms: u64,
    /// Its last verification passed (`verify::is_verified`): the newest such
    /// point is never pruned.
    pub verified: bool,
}

/// A point and the rules that keep it (none: it is pruned).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub job: JobId,
    pub name: String,
    pub at_ms: u64,
    pub kept_by: Vec<Reason>,
    /// Its delete is already asked for (not evaluated again until it has an outcome).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

impl Verdict {
    pub fn kept(&self) -> bool {
        !self.kept_by.is_empty()
    }
}

/// `points` under `policy`, newest first, each with the rules that keep it.
///
/// restic's `forget` semantics: walking from the newest point to the
/// oldest, each tier keeps a point when its bucket (hour, day, week, month)
/// differs from the bucket of the last point the tier kept, until it has kept
/// N; `keep_last` keeps the first N; `keep_within` keeps every point newer
/// than the newest point minus the duration. A point is kept if any rule
/// keeps it; the newest point is always kept.
pub fn evaluate(policy: &RetentionPolicy, points: &[Point]) -> Vec<Verdict> {
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by_key(|b| std::cmp::Reverse((b.at_ms, b.job)));
    let newest = sorted.first().map(|p| p.at_ms).unwrap_or(0);
    let newest_verified = sorted.iter().find(|p| p.verified).map(|p| p.job);
    let mut tiers: Vec<Tier> = [
        (Rule::Hourly, policy.keep_hourly),
        (Rule::Daily, policy.keep_daily),
        (Rule::Weekly, policy.keep_weekly),
        (Rule::Monthly, policy.keep_monthly),
    ]
    .into_iter()
    .filter_map(|(rule, n)| {
        n.map(|n| Tier {
            rule,
            left: n,
            last: None,
        })
    })
    .collect();
    let mut out = Vec::with_capacity(sorted.len());
    for (i, p) in sorted.iter().enumerate() {
        let mut kept_by = Vec::new();
        if policy.keeps_all() {
            kept_by.push(reason(Rule::NoPolicy, "no retention rule".into()));
        }
        if i == 0 {
            kept_by.push(reason(Rule::Newest, "the newest restore point".into()));
        }
        if newest_verified == Some(p.job) {
            kept_by.push(reason(
                Rule::NewestVerified,
                "the newest verified restore point".into(),
            ));
        }
        if let Some(n) = policy.keep_last {
            if (i as u64) < u64::from(n) {
                kept_by.push(reason(Rule::Last, format!("{} of {n}", i + 1)));
            }
        }
        if let Some(w) = policy.keep_within_ms {
            if p.at_ms > newest.saturating_sub(w) {
                kept_by.push(reason(
                    Rule::Within,
                    format!("within {} of the newest", crate::retention::span(w)),
                ));
            }
        }
        for tier in &mut tiers {
            if tier.left == 0 {
                continue;
            }
            let b = bucket(tier.rule, p.at_ms);
            if tier.last != Some(b) {
                tier.last = Some(b);
                tier.left -= 1;
                kept_by.push(reason(tier.rule, bucket_label(tier.rule, p.at_ms)));
            }
        }
        out.push(Verdict {
            job: p.job,
            name: p.name.clone(),
            at_ms: p.at_ms,
            kept_by,
            deleting: false,
        });
    }
    out
}

struct Tier {
    rule: Rule,
    left: u32,
    last: Option<i64>,
}

fn reason(rule: Rule, detail: String) -> Reason {
    Reason { rule, detail }
}

/// The bucket of `at_ms` for a tier: hours, days, Monday-based weeks or
/// months since the epoch (UTC).
fn bucket(rule: Rule, at_ms: u64) -> i64 {
    let days = (at_ms / DAY_MS) as i64;
    match rule {
        Rule::Hourly => (at_ms / HOUR_MS) as i64,
        Rule::Daily => days,
        // 1970-01-01 was a Thursday: +3 makes weeks start on Monday.
        Rule::Weekly => (days + 3).div_euclid(7),
        Rule::Monthly => {
            let (y, m, _) = civil(days);
            y * 12 + i64::from(m)
        }
        _ => 0,
    }
}

fn bucket_label(rule: Rule, at_ms: u64) -> String {
    let days = (at_ms / DAY_MS) as i64;
    let (y, m, d) = civil(days);
    match rule {
        Rule::Hourly => format!("hour {y:04}-{m:02}-{d:02}T{:02}Z", (at_ms % DAY_MS) / HOUR_MS),
        Rule::Daily => format!("day {y:04}-{m:02}-{d:02}"),
        Rule::Weekly => {
            let monday = days - (days + 3).rem_euclid(7);
            let (y, m, d) = civil(monday);
            format!("week of {y:04}-{m:02}-{d:02}")
        }
        Rule::Monthly => format!("month {y:04}-{m:02}"),
        _ => String::new(),
    }
}

/// The UTC civil date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`, proleptic Gregorian). UTC has no DST, so this is all
/// the calendar the buckets need.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A duration for people: `14d`, `36h`, `90m`, `20s`, `1500ms`.
pub fn span(ms: u64) -> String {
    for (unit, n) in [("d", DAY_MS), ("h", HOUR_MS), ("m", 60_000), ("s", 1_000)] {
        if ms >= n && ms % n == 0 {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

/// What retention decides over the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Per target evaluated, newest first; a group point another member
    /// keeps carries [`Rule::Group`].
    pub targets: BTreeMap<TargetId, Vec<Verdict>>,
    /// Per target, the names to delete (not already being deleted), oldest first.
    pub prune: BTreeMap<TargetId, Vec<String>>,
}

/// The plan for `seed` targets (and every target sharing a consistency group
/// point with one of them that would otherwise be pruned): the state's
/// catalog plus `extra` (a point completing in this decision, not folded in
/// yet). `policy` gives a target's rules (the default keeps everything).
///
/// A consistency group is one restore point: it is kept when any member's
/// rules keep it, and otherwise pruned from every member, so no member is
/// ever listed as kept while another is deleted.
pub fn plan(
    state: &State,
    policy: impl Fn(&TargetId) -> RetentionPolicy,
    seed: &[TargetId],
    extra: &[(TargetId, CatalogEntry)],
) -> Plan {
    let entries = |t: &TargetId| -> Vec<CatalogEntry> {
        let mut v: Vec<CatalogEntry> = state.catalog.get(t).cloned().unwrap_or_default();
        v.extend(extra.iter().filter(|(x, _)| x == t).map(|(_, e)| e.clone()));
        v
    };
    let verdicts = |t: &TargetId| -> Vec<Verdict> {
        let all = entries(t);
        let deleting = |e: &CatalogEntry| state.prunes.contains_key(&(t.clone(), e.name.clone()));
        let points: Vec<Point> = all
            .iter()
            .filter(|e| !deleting(e))
            .map(|e| Point {
                job: e.job,
                name: e.name.clone(),
                at_ms: e.at_ms,
                verified: crate::verify::is_verified(state, t, &e.name),
            })
            .collect();
        let mut v = evaluate(&policy(t), &points);
        for verdict in &mut v {
            if let Some(why) = crate::recovery::pinned(state, t, &verdict.name) {
                verdict.kept_by.push(Reason {
                    rule: Rule::InUse,
                    detail: why,
                });
            }
        }
        for e in all.iter().filter(|e| deleting(e)) {
            v.push(Verdict {
                job: e.job,
                name: e.name.clone(),
                at_ms: e.at_ms,
                kept_by: Vec::new(),
                deleting: true,
            });
        }
        v.sort_by_key(|b| std::cmp::Reverse((b.at_ms, b.job)));
        v
    };
    let members = |job: &JobId, t: &TargetId| -> Vec<TargetId> { state.members(job, t) };

    let lists = |m: &TargetId, job: JobId| {
        state
            .catalog
            .get(m)
            .is_some_and(|c| c.iter().any(|e| e.job == job))
            || extra.iter().any(|(x, e)| x == m && e.job == job)
    };
    let mut out = Plan::default();
    let mut todo: Vec<TargetId> = seed.to_vec();
    let mut done: BTreeSet<TargetId> = BTreeSet::new();
    // A group point is kept by any member that still lists it.
    let mut keepers: BTreeMap<JobId, Vec<TargetId>> = BTreeMap::new();
    while let Some(t) = todo.pop() {
        if !done.insert(t.clone()) {
            continue;
        }
        let v = verdicts(&t);
        // Group points this target would prune: their other members count
        // (a member without rules keeps it without being evaluated: the
        // engine decides this after every job, catalogs can be long).
        for x in v.iter().filter(|x| !x.kept() && !x.deleting) {
            for m in members(&x.job, &t) {
                if m == t || done.contains(&m) || !lists(&m, x.job) {
                    continue;
                }
                if policy(&m).keeps_all() {
                    keepers.entry(x.job).or_default().push(m);
                } else {
                    todo.push(m);
                }
            }
        }
        out.targets.insert(t, v);
    }
    for (t, v) in &out.targets {
        for x in v
            .iter()
            .filter(|x| x.kept() && !x.kept_by.iter().all(|r| r.rule == Rule::Group))
        {
            keepers.entry(x.job).or_default().push(t.clone());
        }
    }
    for (t, v) in out.targets.iter_mut() {
        for x in v.iter_mut().filter(|x| !x.kept() && !x.deleting) {
            if let Some(k) = keepers.get(&x.job) {
                let by: BTreeSet<&str> = k.iter().map(|t| t.as_str()).collect();
                let by: Vec<&str> = by.into_iter().collect();
                x.kept_by.push(reason(
                    Rule::Group,
                    format!("its consistency group is kept by {}", by.join(", ")),
                ));
            }
        }
        let mut names: Vec<(u64, String)> = v
            .iter()
            .filter(|x| !x.kept() && !x.deleting)
            .map(|x| (x.at_ms, x.name.clone()))
            .collect();
        if !names.is_empty() {
            names.sort();
            out.prune
                .insert(t.clone(), names.into_iter().map(|(_, n)| n).collect());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, mo: u32, d: u32, h: u64) -> u64 {
        // days_from_civil, to build fixtures independently of `civil`.
        let y = if mo <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = i64::from((mo + 9) % 12);
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days as u64 * DAY_MS + h * HOUR_MS
    }

    fn points(times: &[u64]) -> Vec<Point> {
        times
            .iter()
            .enumerate()
            .map(|(i, &t)| Point {
                job: JobId::from_parts(0, i as u128 + 1),
                name: format!("p{i}"),
                at_ms: t,
                verified: false,
            })
            .collect()
    }

    fn kept(v: &[Verdict]) -> Vec<&str> {
        v.iter().filter(|x| x.kept()).map(|x| x.name.as_str()).collect()
    }

    #[test]
    fn civil_dates_are_right_around_leap_years_and_the_epoch() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(-1), (1969, 12, 31));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(20_786), (2026, 11, 29));
        assert_eq!(at(2026, 11, 29, 0) / DAY_MS, 20_786);
        assert_eq!(at(2024, 3, 1, 0) / DAY_MS - at(2024, 2, 28, 0) / DAY_MS, 2);
    }

    #[test]
    fn weeks_start_on_monday_utc() {
        // 2026-11-29 is a Sunday, 2026-11-30 a Monday.
        let sun = at(2026, 11, 29, 23);
        let mon = at(2026, 11, 30, 0);
        assert_ne!(bucket(Rule::Weekly, sun), bucket(Rule::Weekly, mon));
        assert_eq!(
            bucket(Rule::Weekly, sun),
            bucket(Rule::Weekly, at(2026, 11, 23, 0))
        );
        assert_eq!(bucket_label(Rule::Weekly, sun), "week of 2026-11-23");
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let p = points(&[1, 2, 3, 4, 5].map(|h| h * HOUR_MS));
        let v = evaluate(&RetentionPolicy::last(2), &p);
        assert_eq!(kept(&v), ["p4", "p3"]);
        assert_eq!(v[1].kept_by[0].detail, "2 of 2");
    }

    #[test]
    fn no_rule_keeps_everything_and_the_newest_is_always_kept() {
        let p = points(&[1, 2, 3]);
        assert_eq!(kept(&evaluate(&RetentionPolicy::default(), &p)).len(), 3);
        let pol = RetentionPolicy {
            keep_daily: Some(0),
            ..RetentionPolicy::default()
        };
        let v = evaluate(&pol, &p);
        assert_eq!(kept(&v), ["p2"]);
        assert_eq!(v[0].kept_by[0].rule, Rule::Newest);
    }

    #[test]
    fn keep_within_counts_from_the_newest_point_not_from_now() {
        let p = points(&[0, 10 * DAY_MS, 20 * DAY_MS, 24 * DAY_MS]);
        let pol = RetentionPolicy {
            keep_within_ms: Some(14 * DAY_MS),
            ..RetentionPolicy::default()
        };
        // 24d - 14d = 10d: strictly newer is kept, so 10d is not.
        assert_eq!(kept(&evaluate(&pol, &p)), ["p3", "p2"]);
    }

    /// The README's worked example: snapshots every 6 hours for 40 days
    /// from 2026-10-01 00:00 UTC; keep_last 3, daily 7, weekly 4, monthly 2.
    #[test]
    fn the_readme_example() {
        let start = at(2026, 10, 1, 0);
        let times: Vec<u64> = (0..160).map(|i| start + i * 6 * HOUR_MS).collect();
        let pol = RetentionPolicy {
            keep_last: Some(3),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(2),
            ..RetentionPolicy::default()
        };
        let v = evaluate(&pol, &points(&times));
        let labels: Vec<String> = v
            .iter()
            .filter(|x| x.kept())
            .map(|x| {
                let (y, m, d) = civil((x.at_ms / DAY_MS) as i64);
                format!("{y}-{m:02}-{d:02}T{:02}", (x.at_ms % DAY_MS) / HOUR_MS)
            })
            .collect();
        assert_eq!(
            labels,
            [
                "2026-11-09T18", // newest, last 1, daily 11-09, weekly (week of 11-09), monthly 11
                "2026-11-09T12", // last 2
                "2026-11-09T06", // last 3
                "2026-11-08T18", // daily 11-08, weekly (week of 11-02)
                "2026-11-07T18",
                "2026-11-06T18",
                "2026-11-05T18",
                "2026-11-04T18",
                "2026-11-03T18", // daily 7
                "2026-11-01T18", // weekly (week of 10-26)
                "2026-10-31T18", // monthly 10
                "2026-10-25T18", // weekly 4 (week of 10-19)
            ]
        );
        let newest = &v[0];
        let rules: Vec<Rule> = newest.kept_by.iter().map(|r| r.rule).collect();
        assert_eq!(
            rules,
            [Rule::Newest, Rule::Last, Rule::Daily, Rule::Weekly, Rule::Monthly]
        );
        assert_eq!(v.iter().filter(|x| !x.kept()).count(), 160 - 12);
    }

    #[test]
    fn hourly_keeps_the_newest_of_each_hour() {
        let p = points(&[0, 10 * 60_000, HOUR_MS + 1, HOUR_MS + 2, 3 * HOUR_MS]);
        let pol = RetentionPolicy {
            keep_hourly: Some(2),
            ..RetentionPolicy::default()
        };
        assert_eq!(kept(&evaluate(&pol, &p)), ["p4", "p3"]);
    }
}
