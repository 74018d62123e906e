//! `recman snapshot`: take a snapshot in-process (engine + local workers over the
//! in-process bus), printing each step as it is recorded.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use recman_events::bus::{Bus, MemoryBus};
use recman_events::{log, Backend, EventBody, RequestId, SnapshotKind, SnapshotRequest, TargetId, WorkerId};
use recman_workers::config::Config;
use recman_workers::runtime::Worker;
use tokio::sync::{mpsc, oneshot, watch};

use super::Global;
use crate::core::Reply;
use crate::runtime::{self, Call};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  recman snapshot demo            # no config needed: snapshots DATA_DIR/demo/source\n  \
recman snapshot db01 --kind copy\n  recman snapshot db01 db02 --group   # one consistency group, one instant\n\n\
Exit codes: 0 completed, 1 the job failed or was cancelled, 2 could not run."
)]
pub struct Args {
    /// Target ids from the config, or `demo`.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Cut several targets at one instant (a consistency group).
    #[arg(long)]
    pub group: bool,
    /// Idempotency key (default: a fresh one). The same id returns the same job.
    #[arg(long)]
    pub request_id: Option<String>,
    /// `full` (default) or `copy`.
    #[arg(long, default_value = "full", value_parser = ["full", "copy"])]
    pub kind: String,
    /// Submit through this server (default: the running `recman up` of the data dir, if any).
    #[command(flatten)]
    pub server: super::read::ServerArg,
}

/// Creates the demo source directory and a config for it.
pub(crate) fn demo_config(data_dir: &Path) -> anyhow::Result<Config> {
    let src = data_dir.join("demo/source");
    std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    // Absolute paths: the config resolves relative ones against its own file's directory.
    let data_dir = &std::fs::canonicalize(data_dir)?;
    let src = data_dir.join("demo/source");
    for (name, text) in [
        ("README.txt", "Sample data of the recman demo target.\n"),
        ("orders.csv", "id,item\n1,disk\n2,tape\n"),
    ] {
        let p = src.join(name);
        if !p.exists() {
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
    }
    let dest = data_dir.join("snapshots/demo");
    let text = format!(
        "[[target]]\nid = \"demo\"\nkeep_last = 5\n[target.writer]\ntype = \"exec\"\nfreeze = [\"sync\"]\nthaw = [\"true\"]\n\
         [target.provider]\ntype = \"copy\"\nsource = \"{}\"\ndest = \"{}\"\n",
        src.display(),
        dest.display()
    );
    Ok(Config::from_str(&text, data_dir.join("demo.toml"))?)
}

fn load_config(g: &Global, targets: &[String]) -> anyhow::Result<Config> {
    if let Some(p) = &g.config {
        return Ok(Config::load(p)?);
    }
    let default = g.data_dir.join("recman.toml");
    if default.exists() {
        return Ok(Config::load(&default)?);
    }
    if targets == ["demo"] {
        return demo_config(&g.data_dir);
    }
    bail!(
        "no config: pass --config FILE or write {} (or try `recman snapshot demo`)",
        default.display()
    )
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    if let Some(code) = super::remote::run(g, &a, &a.server).await? {
        return Ok(code);
    }
    if a.targets.len() > 1 && !a.group {
        bail!("several targets need --group (they are then cut at one instant)");
    }
    let config = load_config(g, &a.targets)?;
    let log = log::open_detected(&g.data_dir, Backend::Redb)?;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    let worker = Worker::from_config(WorkerId::from(format!("local-{}", std::process::id())), &config);
    let w = tokio::spawn(worker.run(bus.clone(), stopped(stop_rx.clone())));
    let (calls, calls_rx) = mpsc::channel(4);
    let cfg = runtime::core_config(&config, runtime::now_ms());
    let e = tokio::spawn(runtime::run(
        cfg,
        log.clone(),
        bus.clone(),
        calls_rx,
        stopped(stop_rx.clone()),
    ));
    let req = SnapshotRequest {
        schema_version: recman_events::SCHEMA_VERSION,
        request_id: RequestId::from(
            a.request_id
                .unwrap_or_else(|| format!("cli-{}", recman_events::JobId::new_v7())),
        ),
        targets: a.targets.iter().map(|t| TargetId::from(t.as_str())).collect(),
        kind: if a.kind == "copy" {
            SnapshotKind::Copy
        } else {
            SnapshotKind::Full
        },
    };
    req.validate()?;
    let mut tail = log.subscribe(log.last_seq() + 1);
    let (tx, rx) = oneshot::channel();
    calls
        .send(Call::Submit {
            req,
            origin: "cli".into(),
            reply: tx,
        })
        .await?;
    let job = match rx.await? {
        Reply::Accepted { job, .. } => job,
        Reply::Rejected { code, message } => bail!("request refused ({code}): {message}"),
        Reply::None => bail!("the engine gave no answer"),
    };
    println!("job {job}");
    let mut code = ExitCode::from(1);
    if log.read_job(job)?.iter().any(|e| e.event.body.is_terminal()) {
        println!("already finished earlier (same request id): see `recman events --job {job}`");
        code = ExitCode::SUCCESS;
    } else {
        while let Some(item) = tail.recv().await {
            let ev = item?;
            if ev.event.job != job {
                continue;
            }
            println!("  #{:<6} {}", ev.seq, describe(&ev.event.body));
            match &ev.event.body {
                EventBody::Completed {
                    snapshot,
                    freeze_window_us,
                    ..
                } => {
                    println!(
                        "completed: snapshot {} at {} (freeze window {} µs)",
                        snapshot.name, snapshot.location, freeze_window_us
                    );
                    println!(
                        "next: `recman events`, `recman audit`, or write {} for your own data",
                        g.data_dir.join("recman.toml").display()
                    );
                    code = ExitCode::SUCCESS;
                    break;
                }
                EventBody::Failed { reason, .. } => {
                    eprintln!("failed: {reason}");
                    break;
                }
                EventBody::Cancelled => break,
                _ => {}
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = e.await;
    let _ = w.await;
    Ok(code)
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
        } => {
            format!("{stage} done on {target} by {worker} in {duration_us} µs")
        }
        EventBody::StepFailed {
            stage, target, error, ..
        } => format!("{stage} failed on {target}: {}", error.message),
        other => other.kind().replace('_', " "),
    }
}
