//! The job page: what was asked and how it ended, the timeline picture,
//! every step with its worker and error, and the job's events; live over
//! the job's event stream while it runs.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use recman_events::clock::now_ms;
use recman_events::{JobId, StoredEvent};

use super::html::{self, esc, ms, us, when};
use super::timeline::{self, Frozen};
use super::{read_view, Viewer};
use crate::api::extract::QueryParams;
use crate::api::Shared;
use crate::view::time::rfc3339;

/// Events of one job shown at most (the newest ones).
const MAX_EVENTS: usize = 500;
/// Longest event text shown (the rest is cut).
const MAX_EVENT_TEXT: usize = 400;

/// `GET /job/{id}` (`?partial=1`: the live part only).
pub async fn page(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    caller: Option<Extension<crate::api::auth::User>>,
    Path(id): Path<String>,
    q: QueryParams,
) -> Response {
    let Ok(id) = id.parse::<JobId>() else {
        return html::error_page(StatusCode::BAD_REQUEST, "that is not a job id");
    };
    s.synced().await;
    let events = match s.log.read_job(id) {
        Ok(e) => e,
        Err(e) => return html::error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let now = now_ms();
    let caller = caller.map(|Extension(u)| u);
    // Not in memory (finished long ago): folded from its events in the log.
    let old = match read_view(&s, |v| v.job(&id).is_none()) {
        Ok(true) => crate::view::job_from_log(s.log.as_ref(), id).ok().flatten(),
        Ok(false) => None,
        Err(r) => return *r,
    };
    let body = match read_view(&s, |v| {
        let d = v.job(&id).or(old)?;
        let may_approve = caller.as_ref().is_some_and(|u| {
            u.role >= recman_config::Role::Admin
                && u.name != d.summary.by
                && d.summary.targets.iter().all(|t| u.may_act_on(t.as_str()))
        });
        let frozen: Vec<Frozen> = match v.state.jobs.get(&id) {
            Some(j) => j
                .targets
                .iter()
                .zip(&j.progress)
                .map(|(t, p)| Frozen {
                    target: t.clone(),
                    at_ms: p.frozen_at_ms,
                })
                .collect(),
            None => Vec::new(),
        };
        Some(live(&d, &frozen, &events, now, may_approve))
    }) {
        Ok(Some(b)) => b,
        Ok(None) => return html::error_page(StatusCode::NOT_FOUND, &format!("no job {id}")),
        Err(r) => return *r,
    };
    if q.get("partial").is_some() {
        return html::html(StatusCode::OK, body);
    }
    let kinds = recman_config::NOTIFY_KINDS.join(" ");
    let from = events.first().map_or(1, |e| e.seq);
    let page = format!(
        "<h1>Job <code>{id}</code></h1><div id=\"live\" data-stream=\"/v1/jobs/{id}/events?from={from}\" \
         data-kinds=\"{}\" data-src=\"/job/{id}?partial=1\">{body}</div>",
        esc(&kinds)
    );
    let title = format!("job {}", &id.to_string()[..8]);
    html::html(StatusCode::OK, html::page(&viewer.frame(&title, ""), &page))
}

fn event_text(e: &StoredEvent) -> String {
    let mut v = serde_json::to_value(&e.event.body).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("type");
    }
    let mut t = v.to_string();
    if t.len() > MAX_EVENT_TEXT {
        let mut cut = MAX_EVENT_TEXT;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        t.truncate(cut);
        t.push('…');
    }
    t
}

/// The part the script refreshes: summary, picture, steps, events; the
/// Approve button only for a caller who may approve (an admin of the
/// job's targets who did not request it: the API refuses anyone else).
fn live(
    d: &crate::view::JobDetail,
    frozen: &[Frozen],
    events: &[StoredEvent],
    now: u64,
    may_approve: bool,
) -> String {
    let j = &d.summary;
    let terminal = matches!(j.state.as_str(), "completed" | "failed" | "cancelled");
    let mut out = format!(
        "<div class=\"now\" data-now=\"{now}\" data-terminal=\"{}\" data-state=\"{}\" id=\"job-state\"></div>",
        u8::from(terminal),
        esc(&j.state)
    );
    let targets: Vec<&str> = j.targets.iter().map(|t| t.as_str()).collect();
    let took = match j.finished_at_ms {
        Some(f) => ms(f.saturating_sub(j.requested_at_ms)),
        None => format!("running for {}", html::clock(j.requested_at_ms, now)),
    };
    let _ = write!(
        out,
        "<dl class=\"facts\"><dt>State</dt><dd><span class=\"badge state-{st}\" id=\"state\">{st}</span>{stage}</dd>\
         <dt>Kind</dt><dd>{kind}</dd><dt>Targets</dt><dd>{targets}</dd><dt>Request</dt><dd><code>{req}</code> ({origin})</dd>\
         <dt>Requested</dt><dd>{at}</dd><dt>Took</dt><dd>{took}</dd><dt>Attempt</dt><dd>{att}</dd>",
        st = esc(&j.state),
        stage = j.stage.map_or(String::new(), |s| format!(" at {s}")),
        kind = esc(&j.kind),
        targets = esc(&targets.join(", ")),
        req = esc(&j.request_id),
        origin = esc(&j.origin),
        at = when(j.requested_at_ms, now),
        att = j.attempt,
    );
    if let Some(s) = &j.snapshot {
        let _ = write!(out, "<dt>Restore point</dt><dd><code>{}</code></dd>", esc(s));
    }
    let fw = &d.freeze_window;
    if fw.budget_ms > 0 {
        let _ = write!(
            out,
            "<dt>Freeze window</dt><dd id=\"freeze-window\" data-window-us=\"{}\">{} (limit {})</dd>",
            fw.window_us.map_or(String::new(), |w| w.to_string()),
            fw.window_us.map_or("not measured yet".to_string(), us),
            ms(fw.budget_ms)
        );
    }
    if let Some(o) = &j.outcome {
        let _ = write!(out, "<dt>Outcome</dt><dd>{}</dd>", esc(o));
    }
    if let Some(e) = &d.last_error {
        let _ = write!(out, "<dt>Last error</dt><dd class=\"error\">{}</dd>", esc(e));
    }
    if let Some(r) = &d.recovery {
        let _ = write!(
            out,
            "<dt>Restore point</dt><dd><code>{}</code></dd>",
            esc(&r.point)
        );
        if let Some(l) = &r.location {
            let _ = write!(out, "<dt>Location</dt><dd><code>{}</code></dd>", esc(l));
        }
        if let Some(a) = &r.approval {
            let requester = if j.by.is_empty() { "?" } else { j.by.as_str() };
            let status = match &a.approved_by {
                Some(by) => format!("requested by {}, approved by {}", esc(requester), esc(by)),
                None if j.state == crate::view::AWAITING_APPROVAL => format!(
                    "requested by {}, <strong id=\"awaiting-approval\">awaiting approval by a second admin</strong> \
                     until {}",
                    esc(requester),
                    esc(&rfc3339(a.expires_at_ms))
                ),
                None => format!("requested by {}, not approved in time", esc(requester)),
            };
            let _ = write!(out, "<dt>Four-eyes</dt><dd>{status}</dd>");
        }
    }
    out.push_str("</dl>");
    if j.state == crate::view::AWAITING_APPROVAL && may_approve {
        let what = if j.kind == "prune" {
            "Approve this prune? Restore points of {} beyond its retention rules are deleted"
        } else {
            "Approve this in-place restore? The live data of {} is overwritten"
        };
        let _ = write!(
            out,
            "<p><button type=\"button\" class=\"act danger\" id=\"approve\" data-url=\"/v1/recoveries/{}/approve\" \
             data-body=\"{{}}\" data-confirm=\"{} (an admin other than its requester approves).\">Approve</button></p>",
            j.id,
            what.replace("{}", &esc(&targets.join(", ")))
        );
    }
    if !terminal && d.recovery.is_none() {
        let _ = write!(
            out,
            "<p><button type=\"button\" class=\"act danger\" data-url=\"/v1/jobs/{}/cancel\" data-body=\"{{}}\" \
             data-confirm=\"Cancel this job? A frozen target is thawed first.\">Cancel job</button></p>",
            j.id
        );
    }

    out.push_str("<h2>Timeline</h2><div class=\"timeline-wrap\">");
    out.push_str(&timeline::svg(d, frozen, now));
    out.push_str("</div>");

    out.push_str(
        "<h2>Steps</h2><table class=\"steps\" id=\"steps\"><thead><tr><th>Stage</th><th>Attempt</th><th>Target</th>\
         <th>Worker</th><th>At</th><th>Measured</th><th>Result</th></tr></thead><tbody>",
    );
    let mut any = false;
    for st in &d.timeline {
        for s in &st.steps {
            any = true;
            let _ = write!(
                out,
                "<tr class=\"{cls}\"><td>{stage}</td><td>{att}</td><td>{t}</td><td>{w}</td><td>+{at}</td><td>{dur}</td><td>{res}</td></tr>",
                cls = if s.ok { "ok" } else { "failed" },
                stage = s.stage,
                att = s.attempt,
                t = esc(s.target.as_str()),
                w = esc(s.worker.as_ref().map_or("", |w| w.as_str())),
                at = ms(s.at_ms.saturating_sub(j.requested_at_ms)),
                dur = s.duration_us.map_or(String::new(), us),
                res = match (&s.note, s.ok) {
                    (Some(n), false) => format!("<span class=\"error\">{}</span>", esc(n)),
                    (Some(n), true) => esc(n),
                    (None, true) => "ok".into(),
                    (None, false) => "failed".into(),
                },
            );
        }
    }
    if !any {
        out.push_str("<tr><td colspan=\"7\" class=\"muted\">No step reported yet.</td></tr>");
    }
    out.push_str("</tbody></table>");

    out.push_str(
        "<h2>Events</h2><table class=\"events\" id=\"events\"><thead><tr><th>Seq</th><th>At</th><th>Event</th>\
         <th>Detail</th></tr></thead><tbody>",
    );
    let skip = events.len().saturating_sub(MAX_EVENTS);
    for e in &events[skip..] {
        let _ = write!(
            out,
            "<tr data-seq=\"{seq}\" data-kind=\"{kind}\"><td>{seq}</td><td><time>{at}</time></td><td>{kind}</td><td><code>{text}</code></td></tr>",
            seq = e.seq,
            kind = e.event.body.kind(),
            at = esc(&rfc3339(e.event.at_ms)),
            text = esc(&event_text(e)),
        );
    }
    out.push_str("</tbody></table>");
    if skip > 0 {
        let _ = write!(
            out,
            "<p class=\"muted\">{skip} older events not shown (see GET /v1/jobs/{}/events).</p>",
            j.id
        );
    }
    out
}
