//! The freeze windows page: per target, a histogram of the freeze windows
//! the workers measured over a chosen period (from the log's projection),
//! with p50, p99 and the limit, so an operator sees which application
//! suffers and when.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use recman_events::clock::now_ms;
use recman_events::TargetId;

use super::html::{self, esc, ms, us, when};
use super::{read_view, Viewer};
use crate::api::extract::QueryParams;
use crate::api::Shared;
use crate::view::View;

/// The periods offered: name, length in ms (`None`: everything).
const PERIODS: &[(&str, Option<u64>)] = &[
    ("1h", Some(3_600_000)),
    ("24h", Some(86_400_000)),
    ("7d", Some(7 * 86_400_000)),
    ("30d", Some(30 * 86_400_000)),
    ("all", None),
];

/// Bucket upper edges (µs); the last bucket is everything above.
const EDGES: &[u64] = &[
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    60_000_000,
    300_000_000,
];

/// One target's windows in the period.
#[derive(Default)]
struct Series {
    /// (freeze start ms, window µs, thawed by the watchdog)
    windows: Vec<(u64, u64, bool)>,
    limit_ms: u64,
}

/// The nearest-rank `p` percentile of sorted `v`.
fn percentile(v: &[u64], p: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// `GET /freeze-windows?period=7d`.
pub async fn page(
    State(s): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    q: QueryParams,
) -> Response {
    let period = q.get("period").unwrap_or("7d");
    let Some((pname, plen)) = PERIODS.iter().find(|(n, _)| *n == period).copied() else {
        return html::error_page(
            StatusCode::BAD_REQUEST,
            "period must be one of 1h, 24h, 7d, 30d, all",
        );
    };
    s.synced().await;
    let now = now_ms();
    let since = plen.map_or(0, |l| now.saturating_sub(l));
    let body = match read_view(&s, |v| render(v, since, now)) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let mut choose = String::from("<nav class=\"periods\">Period: ");
    for (n, _) in PERIODS {
        let cur = if *n == pname { " aria-current=\"page\"" } else { "" };
        let _ = write!(choose, "<a href=\"/freeze-windows?period={n}\"{cur}>{n}</a> ");
    }
    choose.push_str("</nav>");
    let page = format!("<h1>Freeze windows</h1>{choose}{body}");
    html::html(
        StatusCode::OK,
        html::page(&viewer.frame("Freeze windows", "/freeze-windows"), &page),
    )
}

fn series(v: &View, since: u64) -> BTreeMap<TargetId, Series> {
    let mut out: BTreeMap<TargetId, Series> = BTreeMap::new();
    for t in v.retention.keys() {
        out.entry(t.clone()).or_default();
    }
    for j in v.state.jobs.values() {
        for (t, p) in j.targets.iter().zip(&j.progress) {
            let (Some(at), Some(w)) = (p.frozen_at_ms.or(j.first_frozen_at_ms), p.freeze_window_us) else {
                continue;
            };
            if at < since {
                continue;
            }
            let s = out.entry(t.clone()).or_default();
            s.windows.push((at, w, p.thawed_by_watchdog));
            s.limit_ms = j.freeze_budget_ms;
        }
    }
    out
}

fn log_x(us_v: f64, lo: f64, hi: f64, x0: f64, w: f64) -> f64 {
    let l = |v: f64| v.max(1.0).log10();
    x0 + (l(us_v) - l(lo)) / (l(hi) - l(lo)) * w
}

fn histogram(target: &TargetId, values: &[u64], limit_us: u64, p50: u64, p99: u64) -> String {
    const W: f64 = 640.0;
    const H: f64 = 150.0;
    const X0: f64 = 40.0;
    const PW: f64 = 580.0;
    const TOP: f64 = 20.0;
    const PH: f64 = 100.0;
    let top = values.iter().copied().max().unwrap_or(0).max(limit_us);
    let n_edges = EDGES
        .iter()
        .position(|e| *e >= top)
        .map_or(EDGES.len(), |i| i + 1)
        .max(4);
    let edges = &EDGES[..n_edges.min(EDGES.len())];
    let mut counts = vec![0u64; edges.len() + 1];
    for v in values {
        let i = edges.iter().position(|e| v < e).unwrap_or(edges.len());
        counts[i] += 1;
    }
    let lo = 50.0;
    let hi = (*edges.last().unwrap_or(&1) as f64) * 2.0;
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let mut out = format!(
        "<svg class=\"histogram\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" \
         role=\"img\" aria-label=\"freeze windows of {t}\" data-target=\"{t}\" data-count=\"{n}\">",
        t = esc(target.as_str()),
        n = values.len()
    );
    for (i, c) in counts.iter().enumerate() {
        let b_lo = if i == 0 { lo } else { edges[i - 1] as f64 };
        let b_hi = if i < edges.len() { edges[i] as f64 } else { hi };
        let x1 = log_x(b_lo, lo, hi, X0, PW);
        let x2 = log_x(b_hi, lo, hi, X0, PW);
        let h = *c as f64 / max as f64 * PH;
        let label = if i < edges.len() {
            format!("< {}", us(edges[i]))
        } else {
            format!("≥ {}", us(*edges.last().unwrap_or(&0)))
        };
        let _ = write!(
            out,
            "<rect class=\"hbar\" data-count=\"{c}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"><title>{label}: {c}</title></rect>",
            x = x1 + 1.0,
            y = TOP + PH - h,
            w = (x2 - x1 - 2.0).max(1.0),
            label = esc(&label),
        );
        if i < edges.len() && i % 2 == 0 {
            let _ = write!(
                out,
                "<text class=\"tick-label\" x=\"{x2:.1}\" y=\"{y}\">{}</text>",
                esc(&us(edges[i])),
                y = TOP + PH + 16.0
            );
        }
    }
    for (cls, at, name) in [
        ("p50", p50, "p50"),
        ("p99", p99, "p99"),
        ("limit", limit_us, "limit"),
    ] {
        if at == 0 {
            continue;
        }
        let x = log_x(at as f64, lo, hi, X0, PW);
        let _ = write!(
            out,
            "<line class=\"mark {cls}\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{y2}\"/>\
             <text class=\"mark-label {cls}\" x=\"{x:.1}\" y=\"{ty}\">{name} {}</text>",
            esc(&us(at)),
            y2 = TOP + PH,
            ty = if cls == "p99" {
                TOP - 8.0
            } else {
                TOP - 2.0 + if cls == "limit" { 0.0 } else { 10.0 }
            },
        );
    }
    out.push_str("</svg>");
    out
}

fn render(v: &View, since: u64, now: u64) -> String {
    let all = series(v, since);
    let mut out = String::from(
        "<table class=\"freeze\" id=\"freeze-summary\"><thead><tr><th>Target</th><th>Windows</th><th>p50</th><th>p99</th>\
         <th>Longest</th><th>Limit</th><th>Thawed by watchdog</th><th>Latest</th></tr></thead><tbody>",
    );
    let mut charts = String::new();
    for (t, s) in &all {
        let mut vals: Vec<u64> = s.windows.iter().map(|w| w.1).collect();
        vals.sort_unstable();
        let p50 = percentile(&vals, 0.5);
        let p99 = percentile(&vals, 0.99);
        let limit_us = s.limit_ms * 1000;
        let watchdog = s.windows.iter().filter(|w| w.2).count();
        let latest = s.windows.iter().map(|w| w.0).max();
        let _ = write!(
            out,
            "<tr data-target=\"{t}\" data-count=\"{n}\" data-p50-us=\"{p50r}\" data-p99-us=\"{p99r}\"><td>{t}</td><td>{n}</td><td>{p50}</td>\
             <td>{p99}</td><td>{max}</td><td>{limit}</td><td>{wd}</td><td>{latest}</td></tr>",
            t = esc(t.as_str()),
            n = vals.len(),
            p50r = p50.map_or(String::new(), |v| v.to_string()),
            p99r = p99.map_or(String::new(), |v| v.to_string()),
            p50 = p50.map_or(String::new(), us),
            p99 = p99.map_or(String::new(), us),
            max = vals.last().copied().map_or(String::new(), us),
            limit = if s.limit_ms > 0 { ms(s.limit_ms) } else { String::new() },
            wd = if watchdog > 0 { format!("<span class=\"error\">{watchdog}</span>") } else { "0".into() },
            latest = latest.map_or(String::new(), |l| when(l, now)),
        );
        if !vals.is_empty() {
            let _ = write!(
                charts,
                "<section><h2>{}</h2>{}</section>",
                esc(t.as_str()),
                histogram(t, &vals, limit_us, p50.unwrap_or(0), p99.unwrap_or(0))
            );
        }
    }
    if all.is_empty() {
        out.push_str("<tr><td colspan=\"8\" class=\"muted\">No targets.</td></tr>");
    }
    out.push_str("</tbody></table>");
    out.push_str(&charts);
    out
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
