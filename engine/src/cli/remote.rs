//! `recman snapshot` through a running server: submit over the API, then
//! follow the job live over SSE (resuming with Last-Event-ID if the stream
//! drops) with the embedded mode's progress display (`progress`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use recman_events::{EventMessage, JobId, StoredEvent};
use serde_json::json;

use super::progress::{End, Progress};
use super::read::ServerArg;
use super::snapshot::Args;
use super::Global;
use crate::api::client::{ApiFailure, Client};

/// Runs the snapshot through the server of the data dir (or `--server`);
/// `None` when there is none, so the caller runs it embedded.
pub async fn run(g: &Global, a: &Args, server: &ServerArg) -> anyhow::Result<Option<ExitCode>> {
    let Some(c) = Client::discover(g, server.server.as_deref()).await? else {
        return Ok(None);
    };
    if a.targets.len() > 1 && !a.group {
        bail!("several targets need --group (they are then cut at one instant)");
    }
    let request_id = a
        .request_id
        .clone()
        .unwrap_or_else(|| format!("cli-{}", JobId::new_v7()));
    let body = json!({"request_id": request_id, "targets": a.targets, "kind": a.kind});
    let accepted = match c.post("/v1/snapshots", &body).await {
        Ok(v) => v,
        Err(e) => match e.downcast_ref::<ApiFailure>() {
            Some(f) => bail!("request refused ({}): {}", f.code, f.message),
            None => return Err(e),
        },
    };
    let job: JobId = accepted["job_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("the server's answer has no job_id")?;
    let existing = accepted["existing"].as_bool().unwrap_or(false);
    let human = !a.json;
    let mut progress = Progress::new(job, human, std::io::stdout().is_terminal());
    if human {
        println!(
            "job {job} (via {}){}",
            c.base,
            if existing {
                " (the same request id was seen before: following that job)"
            } else {
                ""
            }
        );
    }
    let end = follow(&c, job, &mut progress).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&progress.summary)?);
    }
    Ok(Some(match end {
        End::Completed => ExitCode::SUCCESS,
        End::Failed | End::Cancelled => ExitCode::from(1),
    }))
}

/// Feeds the job's events (SSE, resumed after drops) to `progress` until it ends.
async fn follow(c: &Client, job: JobId, progress: &mut Progress) -> anyhow::Result<End> {
    let mut last: Option<u64> = None;
    let mut retries = 0;
    let mut tick = tokio::time::interval(progress.tick_every().unwrap_or(Duration::from_secs(3600)));
    loop {
        let mut stream = match c.stream(&format!("/v1/jobs/{job}/events"), last).await {
            Ok(s) => s,
            Err(e) if retries < 10 => {
                retries += 1;
                tracing::debug!("reconnecting: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => {
                return Err(e.context(format!(
                    "following job {job} (it goes on in the server: `recman job {job}`)"
                )))
            }
        };
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                _ = tick.tick() => { progress.tick(); continue; }
            };
            let ev = match ev {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("stream error: {e:#}");
                    break;
                }
            };
            retries = 0;
            last = ev.id.or(last);
            let Ok(m) = serde_json::from_str::<EventMessage>(&ev.data) else {
                continue;
            };
            if let Some(end) = progress.on_event(&StoredEvent {
                seq: m.seq,
                event: m.event,
            }) {
                return Ok(end);
            }
        }
        retries += 1;
        if retries > 10 {
            bail!("lost the event stream of job {job}; it goes on in the server: `recman job {job}`");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
