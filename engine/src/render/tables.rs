//! The read commands' tables (jobs, targets, snapshots) and a job's timeline;
//! every line goes out through `say!` (text from the log escaped).

use crate::render::progress::live_str;
use crate::view::time::{age, rfc3339};
use crate::view::{CloneView, JobDetail, JobSummary, MountView, SnapshotEntry, TargetView, SAFETY_KIND};

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// `recman jobs`: newest first; `more` = the page was cut.
pub fn jobs(jobs: &[JobSummary], more: bool) {
    if jobs.is_empty() {
        crate::say!("no jobs");
    } else {
        crate::say!(
            "{:<36}  {:<13}  {:<12}  {:<24}  {:<20}  SNAPSHOT / OUTCOME",
            "JOB",
            "STATE",
            "KIND",
            "REQUESTED",
            "TARGETS"
        );
    }
    for j in jobs {
        let targets = j.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",");
        let what = j.snapshot.clone().or(j.outcome.clone()).unwrap_or_default();
        crate::say!(
            "{:<36}  {:<13}  {:<12}  {:<24}  {:<20}  {what}",
            j.id.to_string(),
            j.state,
            j.kind,
            rfc3339(j.requested_at_ms),
            targets
        );
    }
    if more {
        crate::say!("(more: raise --limit)");
    }
}

/// The timeline, readable at a glance.
pub fn timeline(d: &JobDetail) {
    let s = &d.summary;
    let targets = s
        .targets
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    crate::say!("job {}  {}", s.id, s.state.to_uppercase());
    crate::say!(
        "  request {} · {} · from {} · targets {targets}",
        s.request_id,
        s.kind,
        s.origin
    );
    if s.by.is_empty() {
        crate::say!("  requested {}", rfc3339(s.requested_at_ms));
    } else {
        crate::say!("  requested {} by {}", rfc3339(s.requested_at_ms), s.by);
    }
    if let Some(f) = s.finished_at_ms {
        crate::say!(
            "  finished  {}  ({} ms)",
            rfc3339(f),
            f.saturating_sub(s.requested_at_ms)
        );
    }
    crate::say!("  timeline:");
    for t in &d.timeline {
        let offset = t.started_ms.saturating_sub(s.requested_at_ms);
        let dur = t.duration_ms.map_or("running".to_string(), |d| format!("{d} ms"));
        crate::say!(
            "    +{offset:>6} ms  {:<10} attempt {}  {:>9}  {}",
            t.stage.as_str(),
            t.attempt,
            dur,
            t.outcome.as_deref().unwrap_or("")
        );
        for st in &t.steps {
            let who = st.worker.as_ref().map_or("?".to_string(), |w| w.to_string());
            let took = st.duration_us.map(ms).unwrap_or_default();
            let mark = if st.ok { "ok" } else { "FAILED" };
            let note = st.note.as_deref().map(|n| format!(" — {n}")).unwrap_or_default();
            crate::say!("        {} {} on {who} {took}{note}", st.target, mark);
        }
    }
    let fw = &d.freeze_window;
    match fw.window_us {
        Some(w) => crate::say!("  freeze window: {} (limit {} ms)", ms(w), fw.budget_ms),
        None if fw.first_frozen_at_ms.is_some() => crate::say!(
            "  freeze window: open since {}",
            rfc3339(fw.first_frozen_at_ms.unwrap_or(0))
        ),
        None => {}
    }
    if let Some(sn) = &d.snapshot_info {
        crate::say!("  snapshot: {} at {} ({})", sn.name, sn.location, sn.provider);
    }
    if let Some(r) = &d.recovery {
        crate::say!("  restore point: {}", r.point);
        if let Some(safety) = &r.safety_snapshot {
            crate::say!("  safety snapshot: {safety} (the live data before the revert; a restore point)");
        }
        if let Some(l) = &r.location {
            crate::say!("  location: {l}");
        }
        if let Some(live) = r.live {
            crate::say!("  live data: {}", live_str(live));
        }
        if let Some(a) = &r.approval {
            let requester = if s.by.is_empty() { "?" } else { s.by.as_str() };
            match (&a.approved_by, a.approved_at_ms) {
                (Some(by), at) => crate::say!(
                    "  four-eyes: requested by {requester}, approved by {by} at {}",
                    rfc3339(at.unwrap_or(0))
                ),
                (None, _) if s.state == crate::view::AWAITING_APPROVAL => crate::say!(
                    "  four-eyes: requested by {requester}, awaiting approval by a second admin until {}: `recman approve {}`",
                    rfc3339(a.expires_at_ms),
                    s.id
                ),
                (None, _) => crate::say!(
                    "  four-eyes: requested by {requester}, not approved by {}",
                    rfc3339(a.expires_at_ms)
                ),
            }
        }
    }
    if let Some(o) = &s.outcome {
        crate::say!("  outcome: {o}");
    }
    if let Some(e) = &d.last_error {
        crate::say!("  last error: {e}");
    }
}

/// `recman targets` (and the targets part of `recman replay`).
pub fn targets(list: &[TargetView]) {
    if list.is_empty() {
        crate::say!("no targets");
        return;
    }
    crate::say!(
        "{:<20}  {:<13}  {:>5}  {:<40}  {:<16}  LAST FAILURE",
        "TARGET",
        "STATE",
        "QUEUE",
        "LAST SNAPSHOT",
        "RPO"
    );
    for t in list {
        let snap = t
            .last_snapshot
            .as_ref()
            .map(|s| format!("{} ({})", s.name, rfc3339(s.at_ms)))
            .unwrap_or_else(|| "-".into());
        let mut fail = t
            .last_failure
            .as_ref()
            .map(|f| format!("{}: {}", rfc3339(f.at_ms), f.reason))
            .unwrap_or_else(|| "-".into());
        if let Some(p) = &t.last_prune_failure {
            fail.push_str(&format!(
                "; prune of {} failed {}: {}",
                p.name,
                rfc3339(p.at_ms),
                p.error
            ));
        }
        let rpo = t.rpo.as_ref().map_or("-".to_string(), |r| {
            let h = recman_core::schedule::human_ms(r.rpo_ms);
            if r.breached {
                format!("{h} BREACHED")
            } else {
                format!("{h} ok")
            }
        });
        crate::say!(
            "{:<20}  {:<13}  {:>5}  {:<40}  {:<16}  {fail}",
            t.id.as_str(),
            t.state,
            t.queue_depth,
            snap,
            rpo
        );
    }
}

/// `recman snapshots`: the catalog with each restore point's expiry.
pub fn snapshots(list: &[SnapshotEntry]) {
    if list.is_empty() {
        crate::say!("no snapshots");
    }
    for s in list {
        let targets = s.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",");
        let expiry = match &s.retention {
            Some(r) => format!(
                "pruned after {} more (keep_last {})",
                r.expires_after, r.keep_last
            ),
            None => "kept".into(),
        };
        let expiry = match &s.prune_failure {
            Some(why) => format!("{expiry}; PRUNE FAILED: {why}"),
            None => expiry,
        };
        crate::say!(
            "{}  {}  {targets}  {} {}  freeze {}  {expiry}",
            rfc3339(s.cut_at_ms),
            s.name,
            s.kind,
            s.provider,
            ms(s.freeze_window_us),
        );
        if s.kind == SAFETY_KIND {
            crate::say!(
                "    safety snapshot taken by restore {} before it reverted the live data",
                s.job
            );
        } else {
            crate::say!("    {}", s.location);
        }
        for why in &s.in_use {
            crate::say!("    in use: {why} (retention keeps it)");
        }
        if let Some(a) = &s.array_expiry {
            let mut parts = Vec::new();
            if let (Some(h), Some(at)) = (a.expiration_hours, a.expires_at_ms) {
                parts.push(format!(
                    "the array removes it at {} (expiration_hours {h})",
                    rfc3339(at)
                ));
            }
            if let (Some(h), Some(at)) = (a.retention_hours, a.retained_until_ms) {
                parts.push(format!("no delete before {} (retention_hours {h})", rfc3339(at)));
            }
            crate::say!("    {}", parts.join("; "));
        }
        let now = recman_events::clock::now_ms();
        if s.verification.is_empty() {
            crate::say!("    unverified");
        }
        for v in &s.verification {
            let when = match (v.status.as_str(), v.verified_at_ms, v.ended_at_ms) {
                ("verified", Some(at), _) => format!(" {} ago", age(at, now)),
                ("failed", _, Some(at)) => format!(" {} ago", age(at, now)),
                _ => String::new(),
            };
            let detail = v.detail.as_deref().map_or(String::new(), |d| format!(": {d}"));
            crate::say!("    {} on {}{when}{detail}", v.status, v.target);
        }
    }
}

/// `recman mounts`: restore points exposed on hosts.
pub fn mounts(list: &[MountView]) {
    if list.is_empty() {
        crate::say!("no mounts");
        return;
    }
    crate::say!(
        "{:<36}  {:<20}  {:<30}  {:<8}  {:<24}  {:<16}  LOCATION",
        "MOUNT (JOB)",
        "TARGET",
        "SNAPSHOT",
        "MODE",
        "SINCE",
        "WORKER"
    );
    for m in list {
        crate::say!(
            "{:<36}  {:<20}  {:<30}  {:<8}  {:<24}  {:<16}  {}",
            m.job.to_string(),
            m.target.as_str(),
            m.snapshot,
            if m.writable { "writable" } else { "ro" },
            rfc3339(m.since_ms),
            m.worker.as_str(),
            m.location
        );
    }
}

/// `recman clones`: clones kept until removed.
pub fn clones(list: &[CloneView]) {
    if list.is_empty() {
        crate::say!("no clones");
        return;
    }
    crate::say!(
        "{:<20}  {:<20}  {:<30}  {:<24}  {:<36}  LOCATION",
        "CLONE",
        "TARGET",
        "SNAPSHOT",
        "SINCE",
        "JOB"
    );
    for c in list {
        crate::say!(
            "{:<20}  {:<20}  {:<30}  {:<24}  {:<36}  {}",
            c.name,
            c.target.as_str(),
            c.snapshot,
            rfc3339(c.since_ms),
            c.job.to_string(),
            c.location
        );
    }
}
