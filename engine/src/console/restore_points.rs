//! The restore points page: the catalog per target with age, size, freeze
//! window, expiry under each rule, verification and mounts; verify, mount,
//! unmount and restore in place behind a confirmation, posted to the API's
//! own routes.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use recman_events::TargetId;
use serde_json::json;

use super::html::{self, bytes, esc, url_seg, us, when};
use super::{live_page, Viewer};
use crate::api::extract::QueryParams;
use crate::api::Shared;
use crate::view::{SnapshotEntry, View};

/// `GET /restore-points` (`?partial=1`: the live part only).
pub async fn page(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    q: QueryParams,
) -> Response {
    live_page(&s, &viewer, &q, ("Restore points", "/restore-points"), render).await
}

fn action(
    label: &str,
    url: &str,
    body: serde_json::Value,
    confirm: &str,
    request_id: bool,
    cls: &str,
) -> String {
    format!(
        "<button type=\"button\" class=\"act {cls}\" data-url=\"{}\" data-body=\"{}\" data-confirm=\"{}\"{}>{}</button>",
        esc(url),
        esc(&body.to_string()),
        esc(confirm),
        if request_id { " data-request-id=\"1\"" } else { "" },
        esc(label)
    )
}

fn expiry(e: &SnapshotEntry, now: u64) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &e.retention {
        parts.push(if r.expires_after == 0 {
            format!("due for pruning (keep_last {})", r.keep_last)
        } else {
            format!(
                "after {} more snapshot{} (keep_last {})",
                r.expires_after,
                if r.expires_after == 1 { "" } else { "s" },
                r.keep_last
            )
        });
    }
    if let Some(a) = &e.array_expiry {
        if let Some(at) = a.expires_at_ms {
            parts.push(format!("array removes it {}", html::due(at, now)));
        }
        if let Some(at) = a.retained_until_ms {
            parts.push(format!("array keeps it until {}", html::due(at, now)));
        }
    }
    if !e.in_use.is_empty() {
        parts.push(format!("kept while in use: {}", esc(&e.in_use.join("; "))));
    }
    if let Some(f) = &e.prune_failure {
        parts.push(format!("<span class=\"error\">prune failed: {}</span>", esc(f)));
    }
    if parts.is_empty() {
        "<span class=\"muted\">kept (no rule)</span>".to_string()
    } else {
        parts.join("<br>")
    }
}

fn render(v: &View, now: u64) -> String {
    let all = v.snapshots(None);
    let mounts = v.mounts();
    let mut targets: BTreeSet<TargetId> = v.retention.keys().cloned().collect();
    for e in &all {
        targets.extend(e.targets.iter().cloned());
    }
    let mut out = format!("<div class=\"now\" data-now=\"{now}\"></div>");
    if targets.is_empty() {
        out.push_str("<p class=\"muted\">No targets.</p>");
    }
    for t in &targets {
        let _ = write!(
            out,
            "<section id=\"t-{}\"><h2>{}</h2><table class=\"points\" data-target=\"{}\"><thead><tr><th>Restore point</th>\
             <th>Taken</th><th>Kind</th><th>Size</th><th>Freeze</th><th>Expiry</th><th>Verification</th><th>Mounts</th>\
             <th>Actions</th></tr></thead><tbody>",
            url_seg(t.as_str()),
            esc(t.as_str()),
            esc(t.as_str())
        );
        let mut n = 0;
        for e in all.iter().filter(|e| e.targets.contains(t)) {
            n += 1;
            let ver = e.verification.iter().find(|r| &r.target == t).map_or(
                "<span class=\"muted\">never</span>".to_string(),
                |r| {
                    let at = r
                        .verified_at_ms
                        .or(r.ended_at_ms)
                        .map_or(String::new(), |a| format!(" {}", when(a, now)));
                    format!(
                        "<span class=\"badge verify-{0}\" title=\"{2}\">{0}</span>{1}",
                        esc(&r.status),
                        at,
                        esc(r.detail.as_deref().unwrap_or(""))
                    )
                },
            );
            let mut m = String::new();
            for mt in mounts.iter().filter(|m| &m.target == t && m.snapshot == e.name) {
                let _ = write!(
                    m,
                    "<div><code>{}</code> on {} {}{} {}</div>",
                    esc(&mt.location),
                    esc(mt.worker.as_str()),
                    when(mt.since_ms, now),
                    if mt.writable { " (writable)" } else { "" },
                    action(
                        "Unmount",
                        "/v1/recoveries",
                        json!({"action": {"type": "unmount", "mount": mt.job}}),
                        &format!("Unmount {} from {}?", e.name, mt.location),
                        true,
                        ""
                    )
                );
            }
            let safety = e.kind == crate::view::SAFETY_KIND;
            let acts = format!(
                "{} {}",
                action(
                    "Verify",
                    &format!("/v1/snapshots/{}/verify", url_seg(&e.name)),
                    json!({"target": t}),
                    &format!("Verify {} of {} again?", e.name, t),
                    false,
                    ""
                ),
                if safety {
                    String::new()
                } else {
                    format!(
                        "{} {}",
                        action(
                            "Mount",
                            "/v1/recoveries",
                            json!({"snapshot": e.name, "target": t, "action": {"type": "mount", "writable": false}}),
                            &format!("Mount {} of {} read-only?", e.name, t),
                            true,
                            "",
                        ),
                        action(
                            "Restore in place",
                            "/v1/recoveries",
                            json!({"snapshot": e.name, "target": t, "action": {"type": "in_place"}, "confirm": true}),
                            &format!(
                                "Restore {} over the live data of {}? Its application is stopped, a safety \
                                 snapshot of the live data is taken, the data is reverted to this restore point, \
                                 and the application is started again.",
                                e.name, t
                            ),
                            true,
                            "danger",
                        )
                    )
                }
            );
            let _ = write!(
                out,
                "<tr data-point=\"{name}\"><td><code>{name}</code><div class=\"muted\">{loc}</div></td><td>{taken}</td>\
                 <td>{kind}</td><td>{size}</td><td>{freeze}</td><td>{exp}</td><td>{ver}</td><td>{m}</td><td>{acts}</td></tr>",
                name = esc(&e.name),
                loc = esc(&e.location),
                taken = when(e.cut_at_ms, now),
                kind = esc(&e.kind),
                size = e.size_bytes.map_or(String::new(), bytes),
                freeze = if e.freeze_window_us > 0 { us(e.freeze_window_us) } else { String::new() },
                exp = expiry(e, now),
            );
        }
        if n == 0 {
            out.push_str("<tr><td colspan=\"9\" class=\"muted\">No restore point.</td></tr>");
        }
        out.push_str("</tbody></table></section>");
    }
    out.push_str(
        "<p class=\"muted\">Restore points are deleted by their retention rules (<code>recman prune</code>); \
         a restore beside production, a clone or a restore to a point in time is asked for with \
         <code>recman restore</code> and <code>recman clone</code>.</p>",
    );
    out
}
