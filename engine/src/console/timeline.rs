//! A job's timeline as an SVG picture: one lane per target, each stage of
//! each attempt a bar on a shared time axis (its worker, duration and error
//! in the tooltip), and the freeze window as a band of its measured length,
//! labelled with that length and the limit.

use std::fmt::Write;

use recman_events::TargetId;

use super::html::{esc, ms, us};
use crate::view::JobDetail;

const WIDTH: f64 = 1000.0;
const LABELS: f64 = 120.0;
const RIGHT: f64 = 24.0;
const AXIS: f64 = 30.0;
const LANE: f64 = 46.0;
const BAR: f64 = 18.0;

/// Where one target's freeze window starts (its freeze returned), from the
/// core's progress of the job's last attempt.
pub struct Frozen {
    pub target: TargetId,
    pub at_ms: Option<u64>,
}

/// A step of 1, 2 or 5 × 10^k ms giving at most 8 ticks over `span`.
fn tick_step(span: u64) -> u64 {
    let mut p = 1u64;
    loop {
        for m in [1, 2, 5] {
            let step = p.saturating_mul(m);
            if span / step <= 8 {
                return step;
            }
        }
        p = p.saturating_mul(10);
    }
}

/// The picture of `d` at `now_ms`.
pub fn svg(d: &JobDetail, frozen: &[Frozen], now_ms: u64) -> String {
    let running = d.summary.finished_at_ms.is_none();
    let lanes: &[TargetId] = &d.summary.targets;
    let t0 = d
        .timeline
        .iter()
        .map(|t| t.started_ms)
        .chain([d.summary.requested_at_ms])
        .min()
        .unwrap_or(now_ms);
    let mut t1 = d.summary.finished_at_ms.unwrap_or(t0);
    for t in &d.timeline {
        t1 = t1.max(t.ended_ms.unwrap_or(if running { now_ms } else { t.started_ms }));
        for s in &t.steps {
            t1 = t1.max(s.at_ms);
        }
    }
    let budget = d.freeze_window.budget_ms;
    for f in frozen {
        if let Some(at) = f.at_ms {
            let w = window_us(d, &f.target);
            let end = match w {
                Some(w) => at + w.div_ceil(1000),
                None if running => now_ms,
                None => at,
            };
            t1 = t1.max(end);
        }
    }
    if running {
        t1 = t1.max(now_ms);
    }
    let span = t1.saturating_sub(t0).max(1);
    let plot = WIDTH - LABELS - RIGHT;
    let px_per_ms = plot / span as f64;
    let x = |t: u64| LABELS + t.saturating_sub(t0) as f64 * px_per_ms;
    let height = AXIS + LANE * lanes.len().max(1) as f64 + 8.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"timeline\" id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" \
         width=\"{WIDTH}\" height=\"{height}\" role=\"img\" aria-label=\"timeline of job {id}\" \
         data-t0=\"{t0}\" data-px-per-ms=\"{px_per_ms}\" data-span-ms=\"{span}\">",
        id = d.summary.id
    );
    // Time axis.
    let step = tick_step(span);
    let mut t = 0;
    while t <= span {
        let tx = x(t0 + t);
        let _ = write!(
            out,
            "<line class=\"tick\" x1=\"{tx:.1}\" x2=\"{tx:.1}\" y1=\"{AXIS}\" y2=\"{height}\"/>\
             <text class=\"tick-label\" x=\"{tx:.1}\" y=\"{y}\">+{}</text>",
            ms(t),
            y = AXIS - 10.0
        );
        t += step;
    }
    for (i, target) in lanes.iter().enumerate() {
        let y0 = AXIS + LANE * i as f64;
        let _ = write!(
            out,
            "<g class=\"lane\" data-target=\"{tid}\"><rect class=\"lane-bg\" x=\"0\" y=\"{y0}\" width=\"{WIDTH}\" height=\"{LANE}\"/>\
             <text class=\"lane-label\" x=\"8\" y=\"{ly}\">{tid}</text>",
            tid = esc(target.as_str()),
            ly = y0 + LANE / 2.0 + 4.0
        );
        // The freeze window behind the bars.
        if let Some(at) = frozen.iter().find(|f| &f.target == target).and_then(|f| f.at_ms) {
            let w = window_us(d, target);
            let (len_ms, open) = match w {
                Some(w) => (w as f64 / 1000.0, false),
                None if running => (now_ms.saturating_sub(at) as f64, true),
                None => (0.0, false),
            };
            let bx = x(at);
            let bw = (len_ms * px_per_ms).max(1.0);
            let label = match w {
                Some(w) => format!("frozen {} · limit {}", us(w), ms(budget)),
                None if open => format!("frozen now · limit {}", ms(budget)),
                None => format!("freeze not measured · limit {}", ms(budget)),
            };
            let _ = write!(
                out,
                "<rect class=\"freeze-band{cls}\" data-target=\"{tid}\" data-window-us=\"{wus}\" data-budget-ms=\"{budget}\" \
                 data-start-ms=\"{at}\" x=\"{bx:.2}\" y=\"{y0}\" width=\"{bw:.2}\" height=\"{LANE}\"><title>{label}</title></rect>\
                 <text class=\"freeze-label\" x=\"{lx:.1}\" y=\"{ty}\" text-anchor=\"{anchor}\">{label}</text>",
                cls = if open { " open" } else { "" },
                // Near the right edge the label ends at the band's end instead.
                lx = if bx > WIDTH - 240.0 { bx + bw } else { bx },
                anchor = if bx > WIDTH - 240.0 { "end" } else { "start" },
                tid = esc(target.as_str()),
                wus = w.map_or(String::new(), |w| w.to_string()),
                ty = y0 + LANE - 4.0,
                label = esc(&label),
            );
            let limit = at + budget;
            if budget > 0 && limit <= t1 {
                let lx = x(limit);
                let _ = write!(
                    out,
                    "<line class=\"freeze-limit\" x1=\"{lx:.1}\" x2=\"{lx:.1}\" y1=\"{y0}\" y2=\"{y1}\"><title>freeze limit {}</title></line>",
                    ms(budget),
                    y1 = y0 + LANE
                );
            }
        }
        // The stages.
        for st in &d.timeline {
            let step = st.steps.iter().rev().find(|s| &s.target == target);
            // A stage whose steps are other targets' (the group's snapshot is everyone's).
            if step.is_none() && !st.steps.is_empty() && st.stage != recman_events::Stage::Snapshot {
                continue;
            }
            let end =
                step.map(|s| s.at_ms)
                    .or(st.ended_ms)
                    .unwrap_or(if running { now_ms } else { st.started_ms });
            let cls = match step {
                Some(s) if !s.ok => "failed",
                Some(_) => "ok",
                None if st.ended_ms.is_some() => match st.outcome.as_deref() {
                    None | Some("started" | "done" | "completed") => "ok",
                    Some(o) if o.starts_with("ok") => "ok",
                    Some("cancelled") => "cancelled",
                    Some(_) => "failed",
                },
                None => "running",
            };
            let bx = x(st.started_ms);
            let bw = ((end.saturating_sub(st.started_ms)) as f64 * px_per_ms).max(2.0);
            let mut tip = format!(
                "{} · attempt {} · {}",
                st.stage,
                st.attempt,
                ms(end.saturating_sub(st.started_ms))
            );
            if let Some(s) = step {
                if let Some(w) = &s.worker {
                    let _ = write!(tip, " · worker {w}");
                }
                if let Some(d) = s.duration_us {
                    let _ = write!(tip, " · measured {}", us(d));
                }
                if let Some(n) = &s.note {
                    let _ = write!(tip, " · {n}");
                }
            } else if let Some(o) = &st.outcome {
                let _ = write!(tip, " · {o}");
            }
            let label = if st.attempt > 1 {
                format!("{} #{}", st.stage, st.attempt)
            } else {
                st.stage.to_string()
            };
            let by = y0 + 6.0;
            let _ = write!(
                out,
                "<g class=\"bar {cls} stage-{stage}\" data-stage=\"{stage}\" data-attempt=\"{att}\" data-state=\"{cls}\">\
                 <rect x=\"{bx:.2}\" y=\"{by}\" width=\"{bw:.2}\" height=\"{BAR}\" rx=\"3\"/><title>{tip}</title>",
                stage = st.stage,
                att = st.attempt,
                tip = esc(&tip),
            );
            if bw > 46.0 {
                let _ = write!(
                    out,
                    "<text class=\"bar-label\" x=\"{tx:.1}\" y=\"{ty}\">{}</text>",
                    esc(&label),
                    tx = bx + 4.0,
                    ty = by + 13.0
                );
            }
            out.push_str("</g>");
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

fn window_us(d: &JobDetail, target: &TargetId) -> Option<u64> {
    d.freeze_window
        .targets
        .iter()
        .find(|w| &w.target == target)
        .and_then(|w| w.window_us)
}

#[cfg(test)]
mod tests {
    use super::tick_step;

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(tick_step(7), 1);
        assert_eq!(tick_step(150), 20);
        assert_eq!(tick_step(3_000), 500);
        assert_eq!(tick_step(u64::MAX), 5_000_000_000_000_000_000);
    }
}
