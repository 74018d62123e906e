//! `recman reconcile [TARGET...]`: the catalog checked against the storage
//! now. Asks the running engine (`POST /v1/targets/{id}/reconcile`), then
//! follows the event log until each target's reconcile ended and prints
//! what vanished and what is unknown.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use recman_events::{EventBody, EventMessage, TargetId};
use serde_json::{json, Value};

use crate::client::Client;
use crate::home::Home;
use crate::source::ServerArg;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Asks each target's provider (through its workers) which snapshots it still holds and\n\
compares the answer with the catalog, as the engine does every `reconcile_every` (default 24h;\n\
\"off\" for on demand only):\n\
  vanished  a restore point of the catalog the storage no longer holds (an array expiration,\n\
            a delete by hand): recorded as snapshot_vanished, it leaves the catalog; retention\n\
            and the RPO see it gone (the RPO may breach because of it).\n\
  unknown   a snapshot named like recman's (rm-…-aN) that no event records: reported as\n\
            snapshot_unknown, never deleted. Look at it, and delete it by hand if it is stray.\n\
A reconcile waits until no job runs on the target and holds it while the provider lists.\n\
Points being deleted or verified are looked at by the next reconcile.\n\n\
Examples:\n  recman reconcile              every target whose provider can list\n  \
recman reconcile pg-main      one target\n\n\
This needs the running `recman up` (or --server URL).\n\
Exit codes: 0 done, 1 a reconcile failed (the provider's error is printed), 2 could not run."
)]
pub struct Args {
    /// Only these targets (default: every target with `reconcile_every`).
    pub targets: Vec<String>,
    /// Ask and return at once; the outcome is in `recman events`.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this long (the reconciles go on in the engine).
    #[arg(long, default_value = "10m", value_parser = parse_wait)]
    pub timeout: Duration,
    #[command(flatten)]
    pub server: ServerArg,
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    recman_config::parse_duration(s)
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let Some(c) = Client::discover(g, a.server.server.as_deref()).await? else {
        bail!(
            "no running server for {}: a reconcile needs the engine and the provider's workers; \
             start `recman up`, or pass --server URL",
            g.data_dir.display()
        );
    };
    let targets: Vec<TargetId> = if a.targets.is_empty() {
        let cfg = recman_config::Config::load(g.config_file())
            .with_context(|| format!("reading {} for its targets", g.config_file().display()))?;
        cfg.targets
            .iter()
            .filter(|t| t.reconcile_every.is_some())
            .map(|t| t.id.clone())
            .collect()
    } else {
        a.targets.iter().map(|t| TargetId::from(t.as_str())).collect()
    };
    if targets.is_empty() {
        bail!("no target to reconcile: none has reconcile_every (name targets on the command line)");
    }
    let mut from = u64::MAX;
    for t in &targets {
        let v: Value = c
            .post(&format!("/v1/targets/{t}/reconcile"), &json!({}))
            .await
            .with_context(|| format!("asking for a reconcile of {t}"))?;
        from = from.min(v.get("from").and_then(Value::as_u64).unwrap_or(1));
        let already = v.get("already").and_then(Value::as_bool).unwrap_or(false);
        println!(
            "{t}: reconcile asked for{}",
            if already {
                " (one already waits or runs)"
            } else {
                ""
            }
        );
    }
    if a.no_wait {
        println!("follow the outcome with `recman events`");
        return Ok(ExitCode::SUCCESS);
    }
    match tokio::time::timeout(a.timeout, follow(&c, from, targets.into_iter().collect())).await {
        Ok(r) => r,
        Err(_) => {
            println!(
                "no outcome within {}s: the reconciles go on in the engine (`recman events`)",
                a.timeout.as_secs()
            );
            Ok(ExitCode::from(2))
        }
    }
}

/// Prints the reconcile events of `pending` from `from` on until each ended.
async fn follow(c: &Client, from: u64, mut pending: BTreeSet<TargetId>) -> anyhow::Result<ExitCode> {
    let mut sse = c.stream(&format!("/v1/events?from={from}"), None).await?;
    let mut failed = false;
    while !pending.is_empty() {
        let Some(ev) = sse.next().await? else {
            bail!("the server ended the event stream; see `recman events`");
        };
        let Ok(m) = serde_json::from_str::<EventMessage>(&ev.data) else {
            continue;
        };
        match &m.event.body {
            EventBody::SnapshotVanished { target, name } if pending.contains(target) => {
                println!("{target}: vanished {name} (gone from the storage: it left the catalog)");
            }
            EventBody::SnapshotUnknown { target, names } if pending.contains(target) => {
                for n in names {
                    println!("{target}: unknown  {n} (named like recman's, in no event: not deleted)");
                }
            }
            EventBody::Reconciled {
                target,
                listed,
                vanished,
                unknown,
                ..
            } if pending.contains(target) => {
                println!("{target}: reconciled: {listed} listed, {vanished} vanished, {unknown} unknown");
                pending.remove(target);
            }
            EventBody::ReconcileFailed { target, error, .. } if pending.contains(target) => {
                println!("{target}: reconcile failed: {error}");
                failed = true;
                pending.remove(target);
            }
            _ => {}
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
