//! `recman replay [--until SEQ|RFC3339]`: rebuilds the state from the log up to
//! a point and prints targets and jobs as they were; with a running server,
//! also rebuilds up to the engine's last event and compares with its live state.

use std::process::ExitCode;

use anyhow::bail;
use recman_events::{EventMessage, StoredEvent};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::Client;
use crate::home::Home;
use crate::render::tables;
use crate::source::ServerArg;
use crate::source::{local_view, retention};
use crate::view::time::rfc3339;
use crate::view::{self, Until, View};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  recman replay                      the state now, rebuilt from the log\n  \
recman replay --until 120           as it was after event 120\n  \
recman replay --until 2026-11-26T01:45:00Z\n\n\
With a running server (DATA_DIR/server.json or --server), the events come from it, and the state\n\
rebuilt up to the engine's last event is compared with the engine's live state.\n\n\
Exit codes: 0 done (and rebuilt = live), 1 the rebuilt state differs from the live one,\n\
2 could not run."
)]
pub struct Args {
    /// Stop after this sequence number, or after the last event at or before this time.
    #[arg(long, value_name = "SEQ|RFC3339")]
    pub until: Option<Until>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Deserialize)]
struct Page {
    events: Vec<EventMessage>,
    next: u64,
}

#[derive(Deserialize)]
struct Live {
    seq: u64,
    digest: Value,
}

/// Every event `1..=last` from the server, page by page.
async fn fetch(c: &Client, last: u64) -> anyhow::Result<Vec<StoredEvent>> {
    let mut out = Vec::new();
    let mut from = 1;
    while from <= last {
        let p: Page = c.get(&format!("/v1/events?from={from}&limit=10000")).await?;
        if p.events.is_empty() {
            break;
        }
        for m in p.events {
            if m.seq <= last {
                out.push(StoredEvent {
                    seq: m.seq,
                    event: m.event,
                });
            }
        }
        from = p.next;
    }
    Ok(out)
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let until = a.until.unwrap_or(Until::End);
    let Some(c) = Client::discover(g, a.server.server.as_deref()).await? else {
        let v = local_view(g, until)?;
        print_state(&v, &a, None);
        return Ok(ExitCode::SUCCESS);
    };
    let live: Live = c.get("/v1/state").await?;
    let events = fetch(&c, live.seq).await?;
    if events.len() as u64 != live.seq {
        bail!("the server sent {} events, expected {}", events.len(), live.seq);
    }
    let mut full = View::new(retention(g));
    let mut shown: Option<View> = None;
    for e in &events {
        let stop = match until {
            Until::End => false,
            Until::Seq(s) => e.seq > s,
            Until::Time(t) => e.event.at_ms > t,
        };
        if stop && shown.is_none() {
            shown = Some(full.clone());
        }
        full.apply(e);
    }
    let rebuilt = view::digest(&full.state);
    let diffs = differences(&rebuilt, &live.digest);
    print_state(shown.as_ref().unwrap_or(&full), &a, Some((live.seq, &diffs)));
    Ok(if diffs.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Top-level keys (and job ids) where the two digests disagree.
fn differences(rebuilt: &Value, live: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let (Some(r), Some(l)) = (rebuilt.as_object(), live.as_object()) else {
        return vec!["digest shape".into()];
    };
    for (k, rv) in r {
        let lv = l.get(k).unwrap_or(&Value::Null);
        if rv == lv {
            continue;
        }
        if k == "jobs" {
            let ids = |v: &Value| -> Vec<(String, Value)> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .map(|j| (j["id"].as_str().unwrap_or("?").to_string(), j.clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (ra, la) = (ids(rv), ids(lv));
            for (id, j) in &ra {
                match la.iter().find(|(i, _)| i == id) {
                    None => out.push(format!("job {id}: only in the rebuilt state")),
                    Some((_, lj)) if lj != j => out.push(format!("job {id}: differs")),
                    _ => {}
                }
            }
            for (id, _) in &la {
                if !ra.iter().any(|(i, _)| i == id) {
                    out.push(format!("job {id}: only in the live state"));
                }
            }
        } else {
            out.push(format!("{k}: differs"));
        }
    }
    out
}

fn print_state(v: &View, a: &Args, compared: Option<(u64, &Vec<String>)>) {
    let (jobs, _) = v.jobs(None, None, None, None, usize::MAX);
    if a.json {
        let mut out = json!({
            "seq": v.last_seq,
            "at_ms": v.last_at_ms,
            "targets": v.targets(),
            "jobs": jobs,
        });
        if let Some((seq, diffs)) = compared {
            out["live"] = json!({"seq": seq, "matches": diffs.is_empty(), "differences": diffs});
        }
        println!("{out}");
        return;
    }
    if v.last_seq == 0 {
        println!("state before the first event");
    } else {
        println!("state after event {} ({})", v.last_seq, rfc3339(v.last_at_ms));
    }
    println!();
    tables::targets(&v.targets());
    println!();
    if jobs.is_empty() {
        println!("no jobs");
    }
    for j in &jobs {
        let targets = j.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",");
        let what = j.snapshot.clone().or(j.outcome.clone()).unwrap_or_default();
        println!("{}  {:<13}  {targets}  {what}", j.id, j.state);
    }
    if let Some((seq, diffs)) = compared {
        println!();
        if diffs.is_empty() {
            println!("rebuilt from the log up to event {seq}: identical to the live engine state");
        } else {
            println!("rebuilt state DIFFERS from the live engine state at event {seq}:");
            for d in diffs {
                println!("  {d}");
            }
        }
    }
}
