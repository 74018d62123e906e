//! `recman bench jobs`: whole jobs through the embedded runtime (durable log,
//! in-process bus, one local worker with no-op writer and provider), closed
//! loop with one job in flight per target; baseline: raw `fdatasync` rate.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use recman_config::Config;
use recman_events::bus::{Bus, MemoryBus};
use recman_events::{
    log, Backend, EventBody, EventLog, JobId, RequestId, SnapshotKind, SnapshotRequest, Stage, TargetId,
    WorkerId, SCHEMA_VERSION,
};
use recman_workers::runtime::Worker;
use tokio::sync::{mpsc, oneshot, watch};

use super::bench_log::{percentile, raw_fdatasync_rate};
use super::Global;
use crate::core::Reply;
use crate::runtime::{self, Call};

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
    /// Run on RabbitMQ at this URL, workers as separate processes (see below).
    #[command(flatten)]
    pub amqp: super::amqp_opts::AmqpArgs,
    /// With --amqp: worker processes.
    #[arg(long, default_value_t = 3)]
    pub workers: u32,
    /// With --amqp: unsettled commands per worker queue.
    #[arg(long, default_value_t = 256)]
    pub worker_prefetch: u16,
    /// With --amqp: events waiting above which the relay sends batches
    /// (as `recman engine --relay-batch-over`; a huge value = one message per event).
    #[arg(long, value_name = "N", default_value_t = recman_amqp::relay::RelayOptions::default().batch_over)]
    pub relay_batch_over: usize,
    /// With --amqp: no events subscriber (by default one consumes and acks
    /// every relayed event, as a deployment's audit or monitoring would).
    #[arg(long)]
    pub no_events_subscriber: bool,
}

/// What the log says about one finished job.
#[derive(Clone, Copy, Debug)]
pub(super) struct Finished {
    completed: bool,
    /// Freeze window minus the provider's time, µs (completed jobs only).
    overhead_us: Option<u64>,
}

/// Jobs whose end a client awaits, and ends that came before the client asked.
#[derive(Default)]
pub(super) struct Waiters {
    waiting: HashMap<JobId, oneshot::Sender<Finished>>,
    early: HashMap<JobId, Finished>,
}

/// `targets` targets `bench-<n>` with no-op writer and provider, in `pool`
/// (else the default pool).
pub(super) fn bench_config(
    targets: u64,
    dir: &std::path::Path,
    pool: Option<&str>,
) -> anyhow::Result<Config> {
    let text = bench_config_text(targets, pool);
    Ok(Config::from_str(&text, dir.join("bench.toml"))?)
}

/// The text of [`bench_config`] (worker processes read it from a file).
pub(super) fn bench_config_text(targets: u64, pool: Option<&str>) -> String {
    let mut text = String::new();
    for t in 0..targets {
        text.push_str(&format!("[[target]]\nid = \"bench-{t}\"\n"));
        if let Some(p) = pool {
            text.push_str(&format!("pool = \"{p}\"\n"));
        }
        text.push_str("[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"none\"\n");
    }
    text
}

/// Follows the log and hands each job's end (with its freeze overhead) to its client.
pub(super) async fn watch_log(
    log: Arc<dyn EventLog>,
    from: u64,
    waiters: Arc<Mutex<Waiters>>,
) -> anyhow::Result<()> {
    let mut tail = log.subscribe(from);
    let mut provider_us: HashMap<JobId, u64> = HashMap::new();
    while let Some(item) = tail.recv().await {
        let ev = item?;
        let job = ev.event.job;
        let finished = match &ev.event.body {
            EventBody::StepSucceeded {
                stage: Stage::Snapshot,
                duration_us,
                ..
            } => {
                provider_us.insert(job, *duration_us);
                continue;
            }
            EventBody::Completed { freeze_window_us, .. } => {
                let p = provider_us.remove(&job);
                Finished {
                    completed: true,
                    overhead_us: p.map(|p| freeze_window_us.saturating_sub(p)),
                }
            }
            EventBody::Failed { .. } | EventBody::Cancelled => {
                provider_us.remove(&job);
                Finished {
                    completed: false,
                    overhead_us: None,
                }
            }
            _ => continue,
        };
        let mut w = waiters.lock().unwrap_or_else(|e| e.into_inner());
        match w.waiting.remove(&job) {
            Some(tx) => {
                let _ = tx.send(finished);
            }
            None => {
                w.early.insert(job, finished);
            }
        }
    }
    Ok(())
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.targets > 0, "--targets must be at least 1");
    anyhow::ensure!(a.jobs > 0, "--jobs must be at least 1");
    let dir = g.data_dir.join(format!("bench-jobs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = if a.amqp.url.is_some() {
        super::bench_amqp::run(&dir, &a).await
    } else {
        bench(&dir, &a).await
    };
    if !a.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("kept {} (try `recman events --data-dir {0}`)", dir.display());
    }
    result
}

async fn bench(dir: &std::path::Path, a: &Args) -> anyhow::Result<ExitCode> {
    let config = bench_config(a.targets, dir, None)?;
    let log =
        log::open(a.backend, dir).with_context(|| format!("opening the event log in {}", dir.display()))?;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    let worker = Worker::from_config(WorkerId::from("bench-worker"), &config).with_prefetch(1024);
    let w = tokio::spawn(worker.run(bus.clone(), stopped(stop_rx.clone())));
    let (calls, calls_rx) = mpsc::channel(1024);
    let e = tokio::spawn(runtime::run(
        runtime::core_config(&config, 1),
        log.clone(),
        bus.clone(),
        calls_rx,
        stopped(stop_rx.clone()),
    ));
    let waiters = Arc::new(Mutex::new(Waiters::default()));
    let watcher = tokio::spawn(watch_log(log.clone(), log.last_seq() + 1, waiters.clone()));
    eprintln!(
        "bench jobs: {} jobs over {} targets ({} in flight), {} log in {}, no-op writer and provider",
        a.jobs,
        a.targets,
        a.targets,
        a.backend.as_str(),
        dir.display()
    );

    let (results, elapsed) = drive(calls, waiters, a.jobs, a.targets).await?;
    let _ = stop_tx.send(true);
    e.await??;
    w.await??;
    watcher.abort();
    let events = log.last_seq();
    drop(log);

    let Stats {
        failed,
        rate,
        p50,
        p99,
        o50,
        o99,
    } = Stats::of(&results, elapsed);
    eprintln!("  measuring the baseline: write 256 bytes + fdatasync for 2 s");
    let raw = tokio::task::spawn_blocking({
        let dir = dir.to_path_buf();
        move || raw_fdatasync_rate(&dir)
    })
    .await??;

    println!(
        "recman bench jobs ({} backend, in-process bus, {} targets)",
        a.backend.as_str(),
        a.targets
    );
    println!(
        "  jobs:      {} in {elapsed:.2} s = {rate:.0} jobs/s ({failed} failed), {events} events = {:.0} events/s",
        a.jobs,
        events as f64 / elapsed
    );
    println!("  latency:   submit → completed p50 {p50:.2} ms, p99 {p99:.2} ms");
    println!("  freeze:    overhead (window − provider time) p50 {o50} µs, p99 {o99} µs");
    println!(
        "  baseline:  raw write 256 B + fdatasync = {raw:.0} syncs/s ({:.0} µs each)",
        1e6 / raw
    );
    println!(
        "bus=memory backend={} jobs={} targets={} failed={failed} jobs_per_s={rate:.0} job_p50_ms={p50:.2} \
         job_p99_ms={p99:.2} freeze_overhead_p50_us={o50} freeze_overhead_p99_us={o99} events={events} \
         raw_fdatasync_per_s={raw:.0}",
        a.backend.as_str(),
        a.jobs,
        a.targets
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The figures of one run.
pub(super) struct Stats {
    pub failed: usize,
    pub rate: f64,
    /// Job latency, ms.
    pub p50: f64,
    pub p99: f64,
    /// Freeze overhead, µs.
    pub o50: u32,
    pub o99: u32,
}

impl Stats {
    pub(super) fn of(results: &[(Duration, Finished)], elapsed: f64) -> Stats {
        let failed = results.iter().filter(|(_, f)| !f.completed).count();
        let mut lat_us: Vec<u32> = results
            .iter()
            .map(|(d, _)| d.as_micros().min(u128::from(u32::MAX)) as u32)
            .collect();
        lat_us.sort_unstable();
        let mut overhead: Vec<u32> = results
            .iter()
            .filter_map(|(_, f)| f.overhead_us)
            .map(|o| o.min(u64::from(u32::MAX)) as u32)
            .collect();
        overhead.sort_unstable();
        let rate = results.len() as f64 / elapsed;
        let ms = |us: u32| f64::from(us) / 1000.0;
        let (p50, p99) = (ms(percentile(&lat_us, 0.50)), ms(percentile(&lat_us, 0.99)));
        let (o50, o99) = (percentile(&overhead, 0.50), percentile(&overhead, 0.99));

        Stats {
            failed,
            rate,
            p50,
            p99,
            o50,
            o99,
        }
    }
}

/// Runs the closed loop: one client per target submits a job through
/// `calls`, waits for its end in the log, submits the next. Progress on
/// stderr every second. Returns each job's latency and end, and the seconds
/// the whole took.
pub(super) async fn drive(
    calls: mpsc::Sender<Call>,
    waiters: Arc<Mutex<Waiters>>,
    jobs: u64,
    targets: u64,
) -> anyhow::Result<(Vec<(Duration, Finished)>, f64)> {
    let done = Arc::new(AtomicU64::new(0));
    let progress = {
        let done = done.clone();
        let total = jobs;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!("  finished {} / {total}", done.load(Ordering::Relaxed));
            }
        })
    };
    let progress = AbortOnDrop(progress);
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for t in 0..targets {
        let count = jobs / targets + u64::from(t < jobs % targets);
        let (calls, waiters, done) = (calls.clone(), waiters.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let target = TargetId::from(format!("bench-{t}"));
            let mut out = Vec::with_capacity(count as usize);
            for i in 0..count {
                let req = SnapshotRequest {
                    schema_version: SCHEMA_VERSION,
                    request_id: RequestId::from(format!("bench-{t}-{i}")),
                    targets: vec![target.clone()],
                    kind: SnapshotKind::Full,
                };
                let start = Instant::now();
                let (tx, rx) = oneshot::channel();
                calls
                    .send(Call::Submit {
                        req,
                        origin: "bench".into(),
                        reply: tx,
                    })
                    .await
                    .map_err(|_| anyhow::anyhow!("the engine stopped"))?;
                let job = match rx.await.context("the engine stopped")? {
                    Reply::Accepted { job, .. } => job,
                    other => anyhow::bail!("request refused: {other:?}"),
                };
                let (ftx, frx) = oneshot::channel();
                {
                    let mut w = waiters.lock().unwrap_or_else(|e| e.into_inner());
                    match w.early.remove(&job) {
                        Some(f) => {
                            let _ = ftx.send(f);
                        }
                        None => {
                            w.waiting.insert(job, ftx);
                        }
                    }
                }
                let f = frx.await.context("the log watcher stopped")?;
                out.push((start.elapsed(), f));
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(out)
        }));
    }
    drop(calls);
    let mut results = Vec::with_capacity(jobs as usize);
    for c in clients {
        results.extend(c.await??);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    drop(progress);
    Ok((results, elapsed))
}

/// Aborts a background task when dropped (also on an early return).
pub(super) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
