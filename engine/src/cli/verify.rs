//! `recman verify SNAPSHOT [--target T]`: verify a restore point again
//! through the running server, and wait for the verifier's verdict.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use recman_events::TargetId;
use serde::Deserialize;
use serde_json::json;

use crate::client::Client;
use crate::home::Home;
use crate::source::ServerArg;
use crate::view::{SnapshotEntry, VerificationView};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs the target's [target.verify] verifier (checksum, qemu-img, postgres, exec) on a\n\
restore point again, as the engine does after each snapshot: recorded as verify_requested under\n\
the job that took it, run by the verify pool once the target is idle (never during a freeze),\n\
ended by verified or verify_failed. A failed verification keeps the snapshot and marks it failed\n\
in `recman snapshots`. Needs the running `recman up` (or --server URL).\n\n\
Examples:\n  recman snapshots db01                  # names and verification state\n  \
recman verify rm-06h2fvf1q3c2b0k5a8d4-a1\n  \
recman verify rm-06h2fvf1q3c2b0k5a8d4-a1 --target db01 --no-wait\n\n\
Exit codes: 0 verified, 1 a verification failed (or --timeout passed), 2 could not run\n\
(no server, no such snapshot, no [target.verify])."
)]
pub struct Args {
    /// The restore point's name, as `recman snapshots` lists it.
    pub snapshot: String,
    /// Only on this target (default: every target of the snapshot).
    #[arg(long)]
    pub target: Option<String>,
    /// Ask for the verification and return; follow it with `recman snapshots`.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the verdict (the verifier has its own timeout).
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = recman_config::parse_bounded_duration)]
    pub timeout: Duration,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Deserialize)]
struct Started {
    targets: Vec<TargetId>,
    #[serde(default)]
    refused: Vec<Refused>,
}

#[derive(Deserialize)]
struct Refused {
    target: TargetId,
    code: String,
    message: String,
}

#[derive(Deserialize)]
struct SnapshotsBody {
    snapshots: Vec<SnapshotEntry>,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let Some(c) = Client::discover(g, a.server.server.as_deref()).await? else {
        bail!(
            "no running server for {}: verification runs on the engine's verify workers; \
             start `recman up` or pass --server URL",
            g.data_dir.display()
        );
    };
    recman_events::wire::check_id("snapshot", &a.snapshot)
        .map_err(|e| anyhow::anyhow!("{e} (copy the name from `recman snapshots`)"))?;
    if let Some(t) = &a.target {
        recman_events::wire::check_id("target", t).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let before = runs(&c, &a.snapshot, a.target.as_deref()).await?;
    let body = match &a.target {
        Some(t) => json!({ "target": t }),
        None => json!({}),
    };
    let path = format!("/v1/snapshots/{}/verify", a.snapshot);
    let v = c
        .post(&path, &body)
        .await
        .context("asking for the verification")?;
    let started: Started = serde_json::from_value(v).context("the server's verify answer")?;
    for r in &started.refused {
        eprintln!("not verified on {}: {}: {}", r.target, r.code, r.message);
    }
    if a.no_wait {
        if a.json {
            println!(
                "{}",
                json!({"snapshot": a.snapshot, "requested": started.targets})
            );
        } else {
            let list: Vec<&str> = started.targets.iter().map(|t| t.as_str()).collect();
            println!(
                "verification of {} asked for on {}; follow it with `recman snapshots`",
                a.snapshot,
                list.join(", ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = Instant::now() + a.timeout;
    let mut shown: BTreeMap<TargetId, String> = BTreeMap::new();
    // One target (the usual case): only its part of the catalog is read.
    let only = match started.targets.as_slice() {
        [t] => Some(t.as_str()),
        _ => None,
    };
    loop {
        let now = runs(&c, &a.snapshot, only).await?;
        let mut done = Vec::new();
        for t in &started.targets {
            let Some(v) = now.get(t) else { continue };
            if !a.json && shown.get(t) != Some(&v.status) {
                if matches!(v.status.as_str(), "pending" | "running") {
                    eprintln!("{t}: {}", v.status);
                }
                shown.insert(t.clone(), v.status.clone());
            }
            let ran = v.runs > before.get(t).map_or(0, |b| b.runs);
            if ran && matches!(v.status.as_str(), "verified" | "failed") {
                done.push(v.clone());
            }
        }
        if done.len() == started.targets.len() {
            return Ok(report(&a, &done));
        }
        if Instant::now() >= deadline {
            eprintln!(
                "no verdict after {}s: the verification goes on; follow it with `recman snapshots`",
                a.timeout.as_secs()
            );
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The verification records of `name`, per target (of `target` only, if given).
async fn runs(
    c: &Client,
    name: &str,
    target: Option<&str>,
) -> anyhow::Result<BTreeMap<TargetId, VerificationView>> {
    let path = match target {
        Some(t) => format!("/v1/snapshots?target={t}"),
        None => "/v1/snapshots".into(),
    };
    let list = c.get::<SnapshotsBody>(&path).await?.snapshots;
    Ok(list
        .into_iter()
        .filter(|s| s.name == name)
        .flat_map(|s| s.verification)
        .map(|v| (v.target.clone(), v))
        .collect())
}

fn report(a: &Args, done: &[VerificationView]) -> ExitCode {
    let failed = done.iter().any(|v| v.status == "failed");
    if a.json {
        println!("{}", json!({"snapshot": a.snapshot, "verification": done}));
    } else {
        for v in done {
            let detail = v.detail.as_deref().unwrap_or("");
            let word = if v.status == "verified" {
                "verified"
            } else {
                "FAILED"
            };
            crate::say!("{word} {} on {} (run {}): {detail}", a.snapshot, v.target, v.runs);
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
