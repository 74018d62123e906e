//! The overview page: every target with its state (frozen now stands out,
//! with a running clock), RPO, newest good and verified restore points and
//! next firing; jobs counted by state; a live strip of jobs in progress and
//! the latest jobs. Live over the API's event stream.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use recman_events::TargetId;
use serde_json::json;

use super::html::{self, clock, due, esc, url_seg, when};
use super::{live_page, Viewer};
use crate::api::extract::QueryParams;
use crate::api::Shared;
use crate::view::{self, JobSummary, View};

/// How many of the latest jobs the overview lists.
const RECENT: usize = 15;

/// `GET /` (`?partial=1`: the live part only, for the script).
pub async fn page(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    q: QueryParams,
) -> Response {
    live_page(&s, &viewer, &q, ("Overview", "/"), live).await
}

/// A target's frozen-now clock start: its holding job froze it and has not
/// thawed it yet.
fn frozen_since(v: &View, target: &TargetId, job: Option<recman_events::JobId>) -> Option<u64> {
    let j = v.state.jobs.get(&job?)?;
    if j.state.is_terminal() {
        return None;
    }
    let i = j.targets.iter().position(|t| t == target)?;
    let p = j.progress.get(i)?;
    match (p.frozen_at_ms, p.freeze_window_us) {
        (Some(at), None) => Some(at),
        _ => None,
    }
}

fn job_chip(out: &mut String, j: &JobSummary, now: u64) {
    let targets: Vec<&str> = j.targets.iter().map(|t| t.as_str()).collect();
    let _ = write!(
        out,
        "<a class=\"chip state-{st}\" href=\"/job/{id}\" data-job=\"{id}\"><b>{targets}</b> {kind} · <span class=\"state\">{st}</span>{stage} · {}</a>",
        clock(j.requested_at_ms, now),
        id = j.id,
        targets = esc(&targets.join(", ")),
        kind = esc(&j.kind),
        st = esc(&j.state),
        stage = j.stage.map_or(String::new(), |s| format!(" ({s})")),
    );
}

/// The part of the page the script refreshes.
fn live(v: &View, now: u64) -> String {
    let mut out = format!("<div class=\"now\" data-now=\"{now}\"></div>");
    // Jobs by state.
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for j in v.state.jobs.values() {
        *counts.entry(view::state_name(j.state)).or_default() += 1;
    }
    for op in v.state.recovery.ops.values() {
        *counts.entry(view::op_state_name(op.state)).or_default() += 1;
    }
    out.push_str("<section class=\"counts\" id=\"counts\"><h2>Jobs</h2>");
    if counts.is_empty() {
        out.push_str("<p class=\"muted\">No jobs yet.</p>");
    }
    for (st, n) in &counts {
        let _ = write!(
            out,
            "<span class=\"count state-{st}\" data-state=\"{st}\"><b>{n}</b> {st}</span>"
        );
    }
    out.push_str("</section>");

    // The live strip.
    let mut running: Vec<recman_events::JobId> = v.state.active.iter().copied().collect();
    running.extend(v.state.recovery.running.values().copied());
    running.extend(v.state.recovery.wanted.values().flatten().copied());
    running.sort();
    running.dedup();
    out.push_str("<section class=\"strip\" id=\"running\"><h2>In progress</h2>");
    let mut any = false;
    for id in running.iter().rev().take(50) {
        if let Some(d) = v.job(id) {
            if !matches!(d.summary.state.as_str(), "completed" | "failed" | "cancelled") {
                job_chip(&mut out, &d.summary, now);
                any = true;
            }
        }
    }
    if !any {
        out.push_str("<p class=\"muted\">Nothing is running.</p>");
    }
    out.push_str("</section>");

    // Targets.
    let snapshots = v.snapshots(None);
    let schedules = v.schedules();
    out.push_str(
        "<section><h2>Targets</h2><table class=\"targets\" id=\"targets\"><thead><tr><th>Target</th><th>State</th>\
         <th>RPO</th><th>Newest good</th><th>Newest verified</th><th>Next firing</th><th></th></tr></thead><tbody>",
    );
    for t in v.targets() {
        let frozen = frozen_since(v, &t.id, t.job);
        let failed = t
            .last_failure
            .as_ref()
            .is_some_and(|f| t.last_snapshot.as_ref().is_none_or(|s| f.at_ms > s.at_ms));
        let state = match (frozen, t.state.as_str()) {
            (Some(at), _) => format!(
                "<span class=\"badge frozen\">frozen now</span> {}",
                clock(at, now)
            ),
            (None, "idle") if failed => {
                let f = t
                    .last_failure
                    .as_ref()
                    .map_or(String::new(), |f| f.reason.clone());
                format!("<span class=\"badge failed\" title=\"{}\">failed</span>", esc(&f))
            }
            (None, st) => {
                let queued = if t.queue_depth > 0 {
                    format!(" <span class=\"muted\">+{} queued</span>", t.queue_depth)
                } else {
                    String::new()
                };
                format!("<span class=\"badge state-{0}\">{0}</span>{queued}", esc(st))
            }
        };
        let state = match t.job {
            Some(j) => format!("<a href=\"/job/{j}\">{state}</a>"),
            None => state,
        };
        let rpo = match &t.rpo {
            None => "<span class=\"muted\">none</span>".to_string(),
            Some(r) if r.breached => format!(
                "<span class=\"badge failed\">breached</span> {} (rpo {})",
                r.breached_at_ms
                    .map_or(String::new(), |a| format!("since {}", when(a, now))),
                html::ms(r.rpo_ms)
            ),
            Some(r) => format!("<span class=\"badge ok\">ok</span> rpo {}", html::ms(r.rpo_ms)),
        };
        let good = t
            .last_snapshot
            .as_ref()
            .map_or("<span class=\"muted\">none</span>".to_string(), |s| {
                format!(
                    "{} <span class=\"muted\">{}</span>",
                    when(s.at_ms, now),
                    esc(&s.name)
                )
            });
        let verified = snapshots
            .iter()
            .filter(|e| {
                e.verification
                    .iter()
                    .any(|r| r.target == t.id && r.status == "verified")
            })
            .map(|e| e.cut_at_ms)
            .max()
            .map_or("<span class=\"muted\">none</span>".to_string(), |at| {
                when(at, now)
            });
        let next = schedules
            .iter()
            .filter(|s| s.targets.contains(&t.id) && s.paused.is_none())
            .filter_map(|s| s.next_ms.map(|n| (n, s.id.clone())))
            .min()
            .map_or("<span class=\"muted\">none</span>".to_string(), |(n, id)| {
                format!("{} <span class=\"muted\">{}</span>", due(n, now), esc(&id))
            });
        let body = json!({"targets": [t.id.as_str()]}).to_string();
        let _ = write!(
            out,
            "<tr data-target=\"{id}\" class=\"{cls}\"><td><a href=\"/restore-points#t-{idu}\">{id}</a></td><td class=\"tstate\">{state}</td>\
             <td>{rpo}</td><td>{good}</td><td>{verified}</td><td>{next}</td>\
             <td><button type=\"button\" class=\"act\" data-url=\"/v1/snapshots\" data-body=\"{body}\" data-request-id=\"1\" \
             data-confirm=\"Take a snapshot of {id} now?\" data-follow=\"1\">Take a snapshot</button></td></tr>",
            id = esc(t.id.as_str()),
            idu = url_seg(t.id.as_str()),
            cls = if frozen.is_some() { "frozen" } else { "" },
            body = esc(&body),
        );
    }
    out.push_str("</tbody></table></section>");

    // The latest jobs.
    let (recent, _) = v.jobs(None, None, None, None, RECENT);
    out.push_str(
        "<section><h2>Latest jobs</h2><table class=\"jobs\" id=\"jobs\"><thead><tr><th>Job</th><th>Kind</th>\
         <th>Targets</th><th>State</th><th>Requested</th><th>Took</th><th>Outcome</th></tr></thead><tbody>",
    );
    for j in &recent {
        let targets: Vec<&str> = j.targets.iter().map(|t| t.as_str()).collect();
        let took = j
            .finished_at_ms
            .map_or(String::new(), |f| html::ms(f.saturating_sub(j.requested_at_ms)));
        let _ = write!(
            out,
            "<tr data-job=\"{id}\"><td><a href=\"/job/{id}\"><code>{short}</code></a></td><td>{kind}</td><td>{targets}</td>\
             <td><span class=\"badge state-{st}\">{st}</span></td><td>{at}</td><td>{took}</td><td>{outcome}</td></tr>",
            id = j.id,
            short = &j.id.to_string()[..8],
            kind = esc(&j.kind),
            targets = esc(&targets.join(", ")),
            st = esc(&j.state),
            at = when(j.requested_at_ms, now),
            outcome = esc(j.outcome.as_deref().or(j.snapshot.as_deref()).unwrap_or("")),
        );
    }
    if recent.is_empty() {
        out.push_str("<tr><td colspan=\"7\" class=\"muted\">No jobs yet.</td></tr>");
    }
    out.push_str("</tbody></table></section>");
    out
}
