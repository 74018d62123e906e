//! `recman prune`: the retention plan of the core's rules over a state (what
//! each rule keeps and why, what goes), for the dry run, the API and its text.

use std::collections::BTreeMap;
use std::fmt::Write;

use recman_core::retention::{self, Plan};
use recman_core::{RetentionPolicy, State};
use recman_events::TargetId;

use crate::view::time::rfc3339;

/// The plan for `targets` (empty: every target with a retention rule or a
/// catalog), under the config's `policies`.
pub fn plan(state: &State, policies: &BTreeMap<TargetId, RetentionPolicy>, targets: &[TargetId]) -> Plan {
    let seed: Vec<TargetId> = if targets.is_empty() {
        let mut all: Vec<TargetId> = policies
            .iter()
            .filter(|(_, p)| !p.keeps_all())
            .map(|(t, _)| t.clone())
            .collect();
        all.extend(
            state
                .catalog
                .keys()
                .filter(|t| !policies.contains_key(*t))
                .cloned(),
        );
        all
    } else {
        targets.to_vec()
    };
    retention::plan(
        state,
        |t| policies.get(t).cloned().unwrap_or_default(),
        &seed,
        &[],
    )
}

/// The rules of a policy, as in the config.
pub fn describe(p: &RetentionPolicy) -> String {
    let mut parts = Vec::new();
    if let Some(n) = p.keep_last {
        parts.push(format!("keep_last {n}"));
    }
    if let Some(w) = p.keep_within_ms {
        parts.push(format!("keep_within {}", retention::span(w)));
    }
    for (name, n) in [
        ("keep_hourly", p.keep_hourly),
        ("keep_daily", p.keep_daily),
        ("keep_weekly", p.keep_weekly),
        ("keep_monthly", p.keep_monthly),
    ] {
        if let Some(n) = n {
            parts.push(format!("{name} {n}"));
        }
    }
    if parts.is_empty() {
        "no rule: every restore point is kept".into()
    } else {
        parts.join(", ")
    }
}

/// The plan as text: per target its rules, then each restore point newest
/// first with `keep` and every rule that keeps it, `prune`, or `deleting`
/// (a delete already asked for).
pub fn render(plan: &Plan, policies: &BTreeMap<TargetId, RetentionPolicy>, dry_run: bool) -> String {
    let mut out = String::new();
    let none = RetentionPolicy::default();
    for (t, verdicts) in &plan.targets {
        let kept = verdicts.iter().filter(|v| v.kept()).count();
        let pruned = plan.prune.get(t).map_or(0, Vec::len);
        let _ = writeln!(
            out,
            "{t} ({}): {kept} kept, {pruned} {}",
            describe(policies.get(t).unwrap_or(&none)),
            if dry_run { "would be pruned" } else { "to prune" }
        );
        // Names vary in length (`recman-<target>-<job>-<attempt>`): pad to the longest.
        let width = verdicts.iter().map(|v| v.name.chars().count()).max().unwrap_or(0);
        for v in verdicts {
            let what = if v.deleting {
                "deleting"
            } else if v.kept() {
                "keep"
            } else {
                "prune"
            };
            let why: Vec<String> = v
                .kept_by
                .iter()
                .map(|r| format!("{} ({})", r.rule.as_str(), r.detail))
                .collect();
            let _ = writeln!(
                out,
                "  {what:<8} {:<width$}  {}  {}",
                v.name,
                rfc3339(v.at_ms),
                why.join("; ")
            );
        }
    }
    if plan.targets.is_empty() {
        out.push_str("no target has restore points or retention rules\n");
    }
    out
}
