//! `recman snapshot` through a running server: submit over the API, then
//! follow the job live over SSE (resuming with Last-Event-ID if the stream
//! drops) with the same lines as the embedded mode.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use recman_events::{EventBody, EventMessage, JobId};
use serde_json::json;

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
    println!("job {job} (via {})", c.base);
    let mut last: Option<u64> = None;
    let mut retries = 0;
    loop {
        let mut stream = match c.stream(&format!("/v1/jobs/{job}/events"), last).await {
            Ok(s) => s,
            Err(e) if retries < 10 => {
                retries += 1;
                tracing::debug!("reconnecting: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e.context("following the job (it goes on in the server: `recman job ID`)")),
        };
        loop {
            let ev = match stream.next().await {
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
            println!("  #{:<6} {}", m.seq, describe(&m.event.body));
            match &m.event.body {
                EventBody::Completed {
                    snapshot,
                    freeze_window_us,
                    ..
                } => {
                    println!(
                        "completed: snapshot {} at {} (freeze window {} µs)",
                        snapshot.name, snapshot.location, freeze_window_us
                    );
                    return Ok(Some(ExitCode::SUCCESS));
                }
                EventBody::Failed { reason, .. } => {
                    eprintln!("failed: {reason}");
                    return Ok(Some(ExitCode::from(1)));
                }
                EventBody::Cancelled => {
                    eprintln!("cancelled");
                    return Ok(Some(ExitCode::from(1)));
                }
                _ => {}
            }
        }
        retries += 1;
        if retries > 10 {
            bail!("lost the event stream of job {job}; it goes on in the server: `recman job {job}`");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn describe(b: &EventBody) -> String {
    match b {
        EventBody::StageStarted { stage, attempt, .. } => format!("{stage} started (attempt {attempt})"),
        EventBody::StepSucceeded {
            stage,
            target,
            worker,
            duration_us,
            ..
        } => format!("{stage} done on {target} by {worker} in {duration_us} µs"),
        EventBody::StepFailed {
            stage, target, error, ..
        } => format!("{stage} failed on {target}: {}", error.message),
        other => other.kind().replace('_', " "),
    }
}
