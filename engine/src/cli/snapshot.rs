//! `recman snapshot`: take a snapshot in-process (engine + local workers over the
//! in-process bus), printing each step as it is recorded.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use recman_config::Config;
use recman_events::bus::{Bus, MemoryBus};
use recman_events::{log, Backend, RequestId, SnapshotKind, SnapshotRequest, TargetId, WorkerId};
use recman_workers::runtime::Worker;
use tokio::sync::{mpsc, oneshot, watch};

use super::progress::{End, Progress};
use super::{demo, Global};
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
    /// Print only the job's summary as JSON (job id, state, steps, snapshot, freeze window).
    #[arg(long)]
    pub json: bool,
    /// Submit through this server (default: the running `recman up` of the data dir, if any).
    #[command(flatten)]
    pub server: super::read::ServerArg,
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
        return demo::config(&g.data_dir);
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
    let is_demo = a.targets == ["demo"] && config.path.ends_with("demo.toml");
    let log = log::open_detected(&g.data_dir, Backend::Redb)?;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    let mut worker = Worker::from_config(WorkerId::from(format!("local-{}", std::process::id())), &config);
    let live = if is_demo {
        let app = demo::LiveApp::start(&g.data_dir)?;
        worker = worker.with_writer(&TargetId::from("demo"), app.clone());
        // Let the application write a little before the snapshot is taken.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Some(app)
    } else {
        None
    };
    let w = tokio::spawn(worker.run(bus.clone(), stopped(stop_rx.clone())));
    let (calls, calls_rx) = mpsc::channel(4);
    let cfg = runtime::core_config(&config, recman_events::clock::now_ms());
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
    let (job, existing) = match rx.await? {
        Reply::Accepted { job, existing } => (job, existing),
        Reply::Rejected { code, message } => bail!("request refused ({code}): {message}"),
        Reply::None => bail!("the engine gave no answer"),
    };
    let human = !a.json;
    let mut progress = Progress::new(job, human, std::io::stdout().is_terminal());
    if human {
        println!(
            "job {job}{}",
            if existing {
                " (the same request id was seen before: following that job)"
            } else {
                ""
            }
        );
    }
    // A job of an earlier run with the same request id: show what the log has first.
    let mut end = None;
    for ev in log.read_job(job)? {
        if end.is_none() {
            end = progress.on_event(&ev);
        }
    }
    let mut tick = tokio::time::interval(progress.tick_every().unwrap_or(Duration::from_secs(3600)));
    while end.is_none() {
        tokio::select! {
            item = tail.recv() => match item {
                Some(item) => {
                    let ev = item?;
                    if ev.seq > progress.summary.last_seq {
                        end = progress.on_event(&ev);
                    }
                }
                None => break,
            },
            _ = tick.tick() => progress.tick(),
        }
    }
    let _ = stop_tx.send(true);
    let engine_result = e.await;
    let _ = w.await;
    if let Ok(Err(err)) = engine_result {
        return Err(err.context("the engine stopped"));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&progress.summary)?);
    }
    match end {
        Some(End::Completed) => {
            if human {
                if let (Some(app), Some(snap)) = (&live, &progress.summary.snapshot) {
                    let copy = Path::new(&snap.location);
                    match demo::check_live_copy(copy) {
                        Ok(n) => println!(
                            "the snapshot's {} holds lines 1..{n}, none cut, none missing: the freeze \
                             paused the application between two writes ({} keeps growing)",
                            demo::LIVE_FILE,
                            app.path().display()
                        ),
                        Err(why) => println!("the snapshot's {} is inconsistent: {why}", demo::LIVE_FILE),
                    }
                }
                let dd = g.data_dir.display();
                println!("next:");
                println!("  recman --data-dir {dd} events          # every step, as recorded");
                println!("  recman --data-dir {dd} audit           # check the hash chain of the log");
                println!(
                    "  write {} with your own targets (see config/examples/recman.toml), then\n  \
                     recman --data-dir {dd} validate-config",
                    g.data_dir.join("recman.toml").display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(_) => Ok(ExitCode::from(1)),
        None => bail!("the event log closed before the job ended"),
    }
}
