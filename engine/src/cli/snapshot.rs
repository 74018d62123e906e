//! `recman snapshot`: take a snapshot and print each step as it is recorded.
//! Through the running server of the data dir when there is one (submitted
//! over the API, followed over SSE), else in-process (the engine handle: log,
//! in-process bus, a local worker).

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use recman_events::{JobId, RequestId, SnapshotKind, SnapshotRequest, TargetId, WorkerId};
use recman_workers::runtime::Worker;
use serde_json::json;

use crate::client::{ApiFailure, Client};
use crate::demo;
use crate::handle::{Drain, Engine};
use crate::home::Home;
use crate::home::Missing;
use crate::render::progress::{End, Progress, PruneWait};
use crate::source::ServerArg;

/// How long the one-shot command waits for the deletes its job asked for
/// (retention) before it stops the engine anyway.
const PRUNE_WAIT: Duration = Duration::from_secs(30);

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
    pub server: ServerArg,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    if let Some(c) = Client::discover(g, a.server.server.as_deref()).await? {
        return remote(&c, &a).await;
    }
    if a.targets.len() > 1 && !a.group {
        bail!("several targets need --group (they are then cut at one instant)");
    }
    let config = g.load_config(Missing::DemoIfAsked(a.targets == ["demo"]))?;
    crate::home::check_host(
        &config,
        crate::home::local_pools(&config).as_deref(),
        Some(&g.data_dir),
    )?;
    g.check_log("snapshot")?;
    let is_demo = a.targets == ["demo"] && config.path.ends_with("demo.toml");
    let mut worker =
        Worker::from_config(WorkerId::from(format!("local-{}", std::process::id())), &config).with_state_dir(
            super::worker::state_dir(None, &config, g.data_dir.join("worker-state")),
        );
    let live = if is_demo {
        let app = demo::LiveApp::start(&g.data_dir)?;
        worker = worker.with_writer(&TargetId::from("demo"), app.clone());
        Some(app)
    } else {
        None
    };
    let engine = Engine::builder(&config)
        .data_dir(&g.data_dir)
        .worker(worker)
        .start()
        .await?;
    if live.is_some() {
        // Let the application write a little before the snapshot is taken.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let req = SnapshotRequest {
        schema_version: recman_events::SCHEMA_VERSION,
        request_id: RequestId::from(
            a.request_id
                .clone()
                .unwrap_or_else(|| format!("cli-{}", JobId::new_v7())),
        ),
        targets: a.targets.iter().map(|t| TargetId::from(t.as_str())).collect(),
        kind: if a.kind == "copy" {
            SnapshotKind::Copy
        } else {
            SnapshotKind::Full
        },
    };
    req.validate()?;
    let (accepted, mut events) = engine
        .caller()
        .acting_as(&super::identity())
        .submit_and_follow(req, "cli")
        .await?;
    let human = !a.json;
    let mut progress = Progress::new(accepted.job, human, std::io::stdout().is_terminal());
    if human {
        println!("job {}{}", accepted.job, seen_before(accepted.existing));
    }
    // A job of an earlier run with the same request id: what the log has comes first.
    let mut end = None;
    let mut tick = tokio::time::interval(progress.tick_every().unwrap_or(Duration::from_secs(3600)));
    while end.is_none() {
        tokio::select! {
            ev = events.next() => match ev {
                Some(ev) => end = progress.on_event(&ev?),
                None => break,
            },
            _ = tick.tick() => progress.tick(),
        }
    }
    // The deletes the job asked for (retention, decided with its end) are
    // run and recorded before the engine stops, within a bound (issue 12
    // item 5).
    if end.is_some() {
        wait_for_prunes(engine.log(), accepted.job, human).await?;
    }
    // Its job ended: stop at once (the worker thaws anything another job froze).
    engine.shutdown(Drain::Skip).await?;
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

fn seen_before(existing: bool) -> &'static str {
    if existing {
        " (the same request id was seen before: following that job)"
    } else {
        ""
    }
}

/// Through a server: submit over the API, then follow the job over SSE
/// (resumed after drops) with the same progress display.
async fn remote(c: &Client, a: &Args) -> anyhow::Result<ExitCode> {
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
        println!("job {job} (via {}){}", c.base, seen_before(existing));
    }
    let mut feed = c.follow(job);
    let mut tick = tokio::time::interval(progress.tick_every().unwrap_or(Duration::from_secs(3600)));
    let end = loop {
        tokio::select! {
            ev = feed.next() => match ev? {
                Some(ev) => if let Some(end) = progress.on_event(&ev) {
                    break end;
                },
                None => bail!("lost the event stream of job {job}; it goes on in the server: `recman job {job}`"),
            },
            _ = tick.tick() => progress.tick(),
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&progress.summary)?);
    }
    Ok(match end {
        End::Completed => ExitCode::SUCCESS,
        End::Failed | End::Cancelled | End::AwaitingApproval => ExitCode::from(1),
    })
}

/// Follows the log from the job's first delete request until every delete it
/// asked for has its outcome recorded, or `PRUNE_WAIT` passed (then says
/// which are left: they stay requested, and the next start asks again).
async fn wait_for_prunes(
    log: &std::sync::Arc<dyn recman_events::EventLog>,
    job: JobId,
    human: bool,
) -> anyhow::Result<()> {
    let first = log
        .read_job(job)?
        .into_iter()
        .find(|e| matches!(e.event.body, recman_events::EventBody::PruneRequested { .. }));
    let Some(first) = first else {
        return Ok(());
    };
    let mut prunes = PruneWait::default();
    let mut tail = log.subscribe(first.seq);
    let give_up = tokio::time::Instant::now() + PRUNE_WAIT;
    loop {
        tokio::select! {
            item = tail.recv() => match item {
                Some(item) => {
                    if let Some(line) = prunes.see(job, &item?.event) {
                        if human {
                            println!("{line}");
                        }
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(give_up) => break,
        }
        if prunes.waiting().is_empty() {
            return Ok(());
        }
    }
    let left = prunes.waiting();
    if !left.is_empty() {
        eprintln!(
            "warning: no answer within {}s to the delete of {}: still recorded as requested; \
             the next start of recman (any command that runs the engine) asks again",
            PRUNE_WAIT.as_secs(),
            left.join(", ")
        );
    }
    Ok(())
}
