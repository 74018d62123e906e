//! `recman bench jobs --amqp URL`: whole jobs with the engine in this process
//! on RabbitMQ (the engine handle: lapin bus + events relay) and N workers as
//! separate processes; baseline: bare publish-confirm → consume → ack round
//! trips on the same broker (`super::baseline`). `--amqp` once per node runs
//! on a cluster (queues replicated as `--quorum-group-size` says; the
//! baseline through the first node, on a queue with as many replicas).

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use recman_events::bus::{Address, Bus};
use recman_events::{log, PoolName};
use tokio::sync::watch;

use super::baseline::{self, RawFigures};
use super::closed_loop::{self, drive, Load};
use super::measure::{disk_baseline, AbortOnDrop, Report, Stats};
use crate::broker::AmqpArgs;
use crate::handle::{Drain, Engine, Relay};
use crate::runtime::relay::{self, RelayOptions};

/// The flags of `bench jobs` that only matter with `--amqp`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Run on RabbitMQ at this URL, workers as separate processes (see below).
    #[command(flatten)]
    pub broker: AmqpArgs,
    /// With --amqp: worker processes.
    #[arg(long, default_value_t = 3)]
    pub workers: u32,
    /// With --amqp: unsettled commands per worker queue.
    #[arg(long, default_value_t = 256)]
    pub worker_prefetch: u16,
    /// With --amqp: events waiting above which the relay sends batches
    /// (as `recman engine --relay-batch-over`; a huge value = one message per event).
    #[arg(long, value_name = "N", default_value_t = RelayOptions::default().batch_over)]
    pub relay_batch_over: usize,
    /// With --amqp: no events subscriber (by default one consumes and acks
    /// every relayed event, as a deployment's audit or monitoring would).
    #[arg(long)]
    pub no_events_subscriber: bool,
}

/// Round trips measured one after the other for `raw_roundtrip_p50_us`.
const RAW_ROUNDTRIPS: usize = 1000;
/// Messages and confirms in flight for `raw_msgs_per_s`.
const RAW_MESSAGES: usize = 20_000;
const RAW_IN_FLIGHT: usize = 256;

/// Names this run uses on the broker (unique per process), deleted at the end.
struct Names {
    pool: String,
    workers: Vec<String>,
    raw_queue: String,
}

impl Names {
    fn new(workers: u32) -> Names {
        let pid = std::process::id();
        Names {
            pool: format!("bench-{pid}"),
            workers: (0..workers).map(|i| format!("bench-{pid}-w{i}")).collect(),
            raw_queue: format!("recman.bench-{pid}.raw"),
        }
    }

    fn queues(&self) -> Vec<String> {
        let mut q = vec![
            Address::Pool(PoolName::new(self.pool.clone())).queue_name(),
            self.raw_queue.clone(),
        ];
        q.extend(
            self.workers
                .iter()
                .map(|w| Address::Worker(recman_events::WorkerId::from(w.as_str())).queue_name()),
        );
        q
    }
}

pub async fn run(dir: &Path, load: Load, a: &Options) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.workers > 0, "--workers must be at least 1");
    let urls = a.broker.urls(None)?;
    let url = urls[0].clone();
    let names = Names::new(a.workers);
    let mut workers = Workers::default();
    let result = tokio::select! {
        r = bench(dir, load, a, &urls, &names, &mut workers) => r,
        _ = crate::signal::stop() => Err(anyhow::anyhow!("interrupted")),
    };
    eprintln!("  cleaning up: stopping the workers, deleting the bench's queues");
    let stopped = tokio::task::spawn_blocking(move || workers.stop()).await;
    if let Err(e) = baseline::delete_queues(&url, a.broker.amqp_ca_file.as_deref(), &names.queues()).await {
        eprintln!("warning: could not delete the bench's queues: {e:#}");
    }
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("warning: {e:#}"),
        Err(e) => eprintln!("warning: stopping the workers: {e}"),
    }
    result
}

async fn bench(
    dir: &Path,
    load: Load,
    a: &Options,
    urls: &[String],
    names: &Names,
    workers: &mut Workers,
) -> anyhow::Result<ExitCode> {
    let url = urls[0].as_str();
    let group_size = a.broker.quorum_group_size(None, urls.len());
    // The config: every target in the run's own pool, no-op writer and provider.
    let mut config = closed_loop::config(load.targets, dir, Some(&names.pool))?;
    config.set_data_dir(dir);
    let config_path = dir.join("bench.toml");
    std::fs::write(
        &config_path,
        closed_loop::config_text(load.targets, Some(&names.pool)),
    )
    .with_context(|| format!("writing {}", config_path.display()))?;

    eprintln!(
        "  measuring the baseline: {RAW_ROUNDTRIPS} sequential round trips, then {RAW_MESSAGES} messages \
         with {RAW_IN_FLIGHT} confirms in flight (quorum queue {}{})",
        names.raw_queue,
        group_size.map(|n| format!(", {n} replicas")).unwrap_or_default()
    );
    let RawFigures {
        roundtrip_p50_us: raw_rt_p50_us,
        msgs_per_s: raw_msgs_per_s,
    } = baseline::raw(
        url,
        a.broker.amqp_ca_file.as_deref(),
        &names.raw_queue,
        group_size,
        RAW_ROUNDTRIPS,
        RAW_MESSAGES,
        RAW_IN_FLIGHT,
    )
    .await?;
    eprintln!("  raw round trip p50 {raw_rt_p50_us} µs, raw throughput {raw_msgs_per_s:.0} msgs/s");

    let log = log::open(load.backend, dir)
        .with_context(|| format!("opening the event log in {}", dir.display()))?;
    let pid = std::process::id();
    let bus = a
        .broker
        .connect(None, format!("recman-bench-engine-{pid}"), true)
        .await?;
    // The pool queue, declared once before the workers start (RabbitMQ 3.10
    // may refuse two connections declaring the same new quorum queue at once).
    drop(
        bus.consume(Address::Pool(PoolName::new(names.pool.clone())), 1)
            .await?,
    );
    let relay_bus = a
        .broker
        .connect(None, format!("recman-bench-relay-{pid}"), false)
        .await?;

    let exe = std::env::current_exe().context("finding the recman executable for the workers")?;
    for id in &names.workers {
        workers.spawn(&exe, dir, &config_path, &urls.join(" "), &names.pool, id, a)?;
    }
    workers.wait_started(Duration::from_secs(60)).await?;

    // An events subscriber on its own connection: acks everything, counts events.
    let subscriber = if a.no_events_subscriber {
        None
    } else {
        let sub_bus = a
            .broker
            .connect(None, format!("recman-bench-subscriber-{pid}"), false)
            .await?;
        let mut consumer = sub_bus.consume(Address::Events, 1000).await?;
        let (seen_tx, seen_rx) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            let _keep = sub_bus;
            while let Some(d) = consumer.recv().await {
                if let Ok(evs) = relay::events_of(&d.message) {
                    if let Some(last) = evs.last() {
                        seen_tx.send_if_modified(|s| {
                            let newer = last.seq > *s;
                            *s = (*s).max(last.seq);
                            newer
                        });
                    }
                }
                let _ = d.ack().await;
            }
        });
        Some((AbortOnDrop(task), seen_rx))
    };
    let mut relay = Relay::durable(dir);
    relay.bus = Some(relay_bus as Arc<dyn Bus>);
    relay.options.batch_over = a.relay_batch_over;
    relay.stop_within = Duration::from_secs(30);
    let engine = Engine::builder(&config)
        .log(log)
        .bus(bus)
        .no_workers()
        .relay(relay)
        .seed(1)
        .start()
        .await?;
    eprintln!(
        "bench jobs: {} jobs over {} targets ({} in flight), {} log in {}, engine here, {} worker \
         processes (pool {}), broker {}{}",
        load.jobs,
        load.targets,
        load.targets,
        load.backend.as_str(),
        dir.display(),
        a.workers,
        names.pool,
        urls.iter()
            .map(|u| recman_amqp::url::redact(u))
            .collect::<Vec<_>>()
            .join(" "),
        group_size
            .map(|n| format!(" (quorum queues of {n} replicas)"))
            .unwrap_or_default(),
    );

    let driven = drive(&engine.caller(), load.jobs, load.targets).await;
    let stopped = engine.shutdown(Drain::Skip).await;
    let (results, elapsed) = driven?;
    let stopped = stopped?;
    if let Some(Err(e)) = &stopped.relay {
        eprintln!("warning: {e}");
    }
    let events = stopped.last_seq;
    let relayed = relay::Cursor::in_data_dir(dir).load().unwrap_or(0);
    let subscribed = match subscriber {
        None => "no subscriber".to_string(),
        Some((_task, mut seen)) => {
            let all = tokio::time::timeout(Duration::from_secs(30), seen.wait_for(|s| *s >= relayed))
                .await
                .is_ok_and(|r| r.is_ok());
            let last = *seen.borrow();
            if all {
                format!("the subscriber got all {last}")
            } else {
                format!("the subscriber got up to seq {last} only")
            }
        }
    };

    let stats = Stats::of(&results, elapsed, events);
    let raw = disk_baseline(dir, "disk baseline").await?;
    Report {
        title: format!(
            "recman bench jobs ({} backend, RabbitMQ{}, {} targets, {} worker processes)",
            load.backend.as_str(),
            if urls.len() > 1 {
                format!(" cluster of {}", urls.len())
            } else {
                String::new()
            },
            load.targets,
            a.workers
        ),
        events_note: &format!(" ({relayed} relayed, {subscribed})"),
        baselines: vec![format!(
            "broker round trip (publish, confirm, consume, ack; quorum queue) p50 \
             {raw_rt_p50_us} µs; {raw_msgs_per_s:.0} msgs/s with {RAW_IN_FLIGHT} confirms in flight"
        )],
        raw_fdatasync_per_s: raw,
        bus: "amqp",
        backend: load.backend,
        targets: load.targets,
        extra_kv: format!(
            " raw_roundtrip_p50_us={raw_rt_p50_us} raw_msgs_per_s={raw_msgs_per_s:.0} workers={} brokers={}",
            a.workers,
            urls.len()
        ),
    }
    .print(&stats);
    Ok(if stats.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One worker process and the tail of its output.
struct WorkerProc {
    id: String,
    child: Child,
    started: Arc<AtomicBool>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

/// The worker processes; killed when dropped if [`Workers::stop`] did not run.
#[derive(Default)]
struct Workers {
    procs: Vec<WorkerProc>,
}

fn signal(child: &Child, sig: i32) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

impl Workers {
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &mut self,
        exe: &Path,
        dir: &Path,
        config: &Path,
        urls: &str,
        pool: &str,
        id: &str,
        a: &Options,
    ) -> anyhow::Result<()> {
        let data: PathBuf = dir.join(id);
        let mut cmd = Command::new(exe);
        cmd.arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(config)
            // The run's workers are one host's: one freeze state.
            .args(["worker", "--pool", pool, "--id", id, "--state-dir"])
            .arg(dir.join("host-state"))
            .arg("--prefetch")
            .arg(a.worker_prefetch.to_string())
            .arg("--delivery-limit")
            .arg(a.broker.delivery_limit.to_string())
            // The URLs (with their password) through the environment, not argv.
            .env(recman_amqp::url::URL_ENV, urls);
        if let Some(ca) = &a.broker.amqp_ca_file {
            cmd.arg("--amqp-ca-file").arg(ca);
        }
        let mut child = cmd
            .env("RECMAN_LOG", "warn,recman_workers=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting worker {id} ({})", exe.display()))?;
        let started = Arc::new(AtomicBool::new(false));
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(err) = child.stderr.take() {
            let (started, tail) = (started.clone(), tail.clone());
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                    if line.contains("worker started") {
                        started.store(true, Ordering::SeqCst);
                    }
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() >= 40 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            });
        }
        self.procs.push(WorkerProc {
            id: id.to_string(),
            child,
            started,
            tail,
        });
        Ok(())
    }

    fn output(p: &WorkerProc) -> String {
        let t = p.tail.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Waits until every worker consumes its queues.
    async fn wait_started(&mut self, within: Duration) -> anyhow::Result<()> {
        let t0 = Instant::now();
        loop {
            let mut all = true;
            for p in &mut self.procs {
                if let Some(status) = p.child.try_wait()? {
                    anyhow::bail!(
                        "worker {} exited ({status}) before it started:\n{}",
                        p.id,
                        Self::output(p)
                    );
                }
                all &= p.started.load(Ordering::SeqCst);
            }
            if all {
                return Ok(());
            }
            if t0.elapsed() > within {
                anyhow::bail!("the workers did not start within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM to every worker, up to 15 s to finish, then SIGKILL. Blocking.
    fn stop(mut self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for p in &self.procs {
            signal(&p.child, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for p in &mut self.procs {
            let status = loop {
                match p.child.try_wait()? {
                    Some(s) => break Some(s),
                    None if Instant::now() >= deadline => break None,
                    None => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            match status {
                Some(s) if s.success() => {}
                Some(s) => failed.push(format!("worker {} exited {s}:\n{}", p.id, Self::output(p))),
                None => {
                    signal(&p.child, libc::SIGKILL);
                    let _ = p.child.wait();
                    failed.push(format!("worker {} did not stop within 15 s: killed", p.id));
                }
            }
        }
        self.procs.clear();
        anyhow::ensure!(failed.is_empty(), "{}", failed.join("\n"));
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Ok(None) = p.child.try_wait() {
                signal(&p.child, libc::SIGKILL);
                let _ = p.child.wait();
            }
        }
    }
}
