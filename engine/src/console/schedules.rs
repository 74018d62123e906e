//! The schedules and notifications page, read-only: each schedule's rule,
//! next and last firing with its outcome, skips and pause; each
//! notification sink with what it sends where.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use recman_events::clock::now_ms;

use super::html::{self, due, esc, when};
use super::{read_view, Viewer};
use crate::api::Shared;

/// `GET /schedules`.
pub async fn page(State(s): State<Arc<Shared>>, Extension(viewer): Extension<Viewer>) -> Response {
    s.synced().await;
    let now = now_ms();
    let schedules = match read_view(&s, |v| v.schedules()) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut out = String::from(
        "<h1>Schedules</h1><table class=\"schedules\" id=\"schedules\"><thead><tr><th>Schedule</th><th>Targets</th>\
         <th>Rule</th><th>Next</th><th>Last firing</th><th>Outcome</th><th>Fired</th><th>Skipped</th></tr></thead><tbody>",
    );
    for sc in &schedules {
        let targets: Vec<&str> = sc.targets.iter().map(|t| t.as_str()).collect();
        let next = match (&sc.paused, sc.next_ms) {
            (Some(why), _) => format!("<span class=\"badge failed\">paused</span> {}", esc(why)),
            (None, Some(n)) => due(n, now),
            (None, None) => "<span class=\"muted\">after the next start</span>".into(),
        };
        let last = sc.last_slot_ms.map_or(String::new(), |l| when(l, now));
        let outcome = match (sc.last_job, &sc.last_outcome) {
            (Some(j), Some(o)) => format!("<a href=\"/job/{j}\">{}</a>", esc(o)),
            _ => String::new(),
        };
        let skipped = match &sc.last_skip {
            Some(why) => format!("{} <span class=\"muted\">({})</span>", sc.skipped, esc(why)),
            None => sc.skipped.to_string(),
        };
        let _ = write!(
            out,
            "<tr data-schedule=\"{id}\"><td>{id}{pending}</td><td>{targets}</td><td><code>{spec}</code></td><td>{next}</td>\
             <td>{last}</td><td>{outcome}</td><td>{fired}</td><td>{skipped}</td></tr>",
            id = esc(&sc.id),
            pending = if sc.pending_restart { " <span class=\"muted\">(changed: applies at the next start)</span>" } else { "" },
            targets = esc(&targets.join(", ")),
            spec = esc(&sc.spec),
            fired = sc.fired,
        );
    }
    if schedules.is_empty() {
        out.push_str("<tr><td colspan=\"8\" class=\"muted\">No schedule in the config.</td></tr>");
    }
    out.push_str("</tbody></table>");
    out.push_str(
        "<h1>Notifications</h1><table class=\"notify\" id=\"notify\"><thead><tr><th>Sink</th><th>Kind</th>\
         <th>Destination</th><th>Events</th><th>Daily summary</th></tr></thead><tbody>",
    );
    for n in &s.console.notify {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&n.id),
            n.kind,
            esc(&n.destination),
            esc(&n.events.join(", ")),
            esc(n.summary.as_deref().unwrap_or(""))
        );
    }
    if s.console.notify.is_empty() {
        out.push_str("<tr><td colspan=\"5\" class=\"muted\">No notification sink in the config.</td></tr>");
    }
    out.push_str("</tbody></table><p class=\"muted\">Pause or resume a schedule with <code>recman schedules pause|resume</code>.</p>");
    html::html(
        StatusCode::OK,
        html::page(&viewer.frame("Schedules & notifications", "/schedules"), &out),
    )
}
