//! `recman bench jobs`: whole jobs through the engine handle (durable log,
//! in-process bus, one local worker with no-op writer and provider), closed
//! loop with one job in flight per target; baseline: raw `fdatasync` rate.
//! With `--amqp`, the same loop over RabbitMQ (`super::amqp`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use recman_events::{log, Backend, WorkerId};
use recman_workers::runtime::Worker;

use super::closed_loop::{self, drive, Load};
use super::measure::{disk_baseline, Report, Stats};
use crate::handle::{Drain, Engine};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs in a fresh directory DATA_DIR/bench-jobs-PID (removed afterwards unless --keep).\n\
Each target has one client that submits a job, waits until it is completed, and submits the\n\
next, so --targets is the number of jobs in flight. job latency = submit → `completed` event;\n\
freeze overhead = freeze window (measured by the worker, freeze return → thaw return) minus the\n\
provider's own snapshot time: what orchestration adds while the application is frozen.\n\
The last line of output is key=value pairs for scripts.\n\n\
With --amqp URL the engine runs here on RabbitMQ (lapin bus, events relay on a second\n\
connection) and --workers worker processes (`recman worker`, this executable) run the steps,\n\
all targets in a pool of this run's own (bench-PID); the baseline adds bare round trips\n\
(publish, confirm, consume, ack) and confirmed throughput on a quorum queue of the same\n\
broker. Give the password with --amqp-password-file (the workers get the URL through\n\
$RECMAN_AMQP_URL, not their command line). Ctrl-C stops the workers and deletes the queues.\n\
Use a vhost of its own: the engine's queues (recman.requests, recman.reports) are shared by name.\n\
Example: recman bench jobs --amqp amqp://recman@127.0.0.1:5672/recman --amqp-password-file pw --jobs 5000"
)]
pub struct Args {
    /// Jobs to run in total.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: u64,
    /// Targets (= jobs in flight).
    #[arg(long, default_value_t = 200)]
    pub targets: u64,
    /// Storage engine of the log: redb or sled.
    #[arg(long, default_value = "redb")]
    pub backend: Backend,
    /// Keep the bench directory (log included) for `recman events` / `recman audit`.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub amqp: super::amqp::Options,
}

pub async fn run(data_dir: &Path, a: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.targets > 0, "--targets must be at least 1");
    anyhow::ensure!(a.jobs > 0, "--jobs must be at least 1");
    let dir = data_dir.join(format!("bench-jobs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let load = Load {
        jobs: a.jobs,
        targets: a.targets,
        backend: a.backend,
    };
    let result = if !a.amqp.broker.url.is_empty() {
        super::amqp::run(&dir, load, &a.amqp).await
    } else {
        bench(&dir, load).await
    };
    if !a.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("kept {} (try `recman events --data-dir {0}`)", dir.display());
    }
    result
}

async fn bench(dir: &Path, load: Load) -> anyhow::Result<ExitCode> {
    let config = closed_loop::config(load.targets, dir, None)?;
    let log = log::open(load.backend, dir)
        .with_context(|| format!("opening the event log in {}", dir.display()))?;
    let engine = Engine::builder(&config)
        .log(log)
        .worker(Worker::from_config(WorkerId::from("bench-worker"), &config).with_prefetch(1024))
        .seed(1)
        .start()
        .await?;
    eprintln!(
        "bench jobs: {} jobs over {} targets ({} in flight), {} log in {}, no-op writer and provider",
        load.jobs,
        load.targets,
        load.targets,
        load.backend.as_str(),
        dir.display()
    );
    let (results, elapsed) = drive(&engine.caller(), load.jobs, load.targets).await?;
    let events = engine.shutdown(Drain::Skip).await?.last_seq;
    let stats = Stats::of(&results, elapsed, events);
    let raw = disk_baseline(dir, "baseline").await?;
    Report {
        title: format!(
            "recman bench jobs ({} backend, in-process bus, {} targets)",
            load.backend.as_str(),
            load.targets
        ),
        events_note: "",
        baselines: Vec::new(),
        raw_fdatasync_per_s: raw,
        bus: "memory",
        backend: load.backend,
        targets: load.targets,
        extra_kv: String::new(),
    }
    .print(&stats);
    Ok(if stats.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
