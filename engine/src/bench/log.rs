//! `recman bench log`: durable appends from many concurrent appenders (each
//! awaits its append before the next), then a full checked replay; baseline:
//! a raw `write 256 bytes + fdatasync` loop on a file in the same directory.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use recman_events::audit::replay;
use recman_events::codec;
use recman_events::log::open;
use recman_events::model::{ArchivedEventBody, Event, EventBody, SnapshotInfo, Stage, StepDetail};
use recman_events::{snapshot_name, Backend, EventLog, JobId, TargetId, WorkerId};

use super::measure::{percentile, raw_fdatasync_rate, RAW_FOR, RAW_WRITE};

/// Target size of one stored record (the same as the baseline's writes).
const RECORD_BYTES: usize = RAW_WRITE;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Writes into --data-dir (a fresh directory is best; an existing log of the same\n\
backend is appended to). The last line of output is key=value pairs for scripts."
)]
pub struct Args {
    /// Events to append in total.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Concurrent appenders (tokio tasks), each awaiting its append before the next.
    #[arg(long, default_value_t = 256)]
    pub appenders: u64,
    /// Events per job: each appender starts a new job (a fresh time-ordered id)
    /// after this many events, as the engine does (a job records ~10 events).
    #[arg(long, default_value_t = 10)]
    pub events_per_job: u64,
    /// Storage engine of the log: redb or sled.
    #[arg(long, default_value = "redb")]
    pub backend: Backend,
}

/// A ~256-byte event of appender `n`.
fn bench_event(job: JobId, n: u64, i: u64, pad: &str) -> Event {
    Event {
        at_ms: recman_events::clock::now_ms(),
        job,
        body: EventBody::StepSucceeded {
            stage: Stage::Snapshot,
            attempt: 1,
            target: TargetId::from(format!("bench-{n}")),
            worker: WorkerId::from("bench"),
            duration_us: i,
            detail: StepDetail::Snapshot(SnapshotInfo {
                name: snapshot_name(job, 1),
                provider: "bench".into(),
                location: pad.to_string(),
                size_bytes: Some(i),
                existed: false,
                array_expiry: None,
            }),
        },
        by: String::new(),
    }
}

/// Padding that brings a bench record to about `RECORD_BYTES`.
fn padding() -> String {
    let probe = bench_event(JobId::new_v7(), 999, 999_999, "");
    let len = codec::encode(999_999, &codec::GENESIS_HASH, &probe).len();
    // Strings are archived with 8-byte granularity or so; aim just under.
    "p".repeat(RECORD_BYTES.saturating_sub(len + 4))
}

pub async fn run(data_dir: &Path, a: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.appenders > 0, "--appenders must be at least 1");
    anyhow::ensure!(a.events_per_job > 0, "--events-per-job must be at least 1");
    let per_job = a.events_per_job;
    let dir = data_dir.to_path_buf();
    let log =
        open(a.backend, &dir).with_context(|| format!("cannot open the event log in {}", dir.display()))?;
    let start_seq = log.last_seq();
    let pad: Arc<str> = padding().into();
    let record_len = codec::encode(1, &codec::GENESIS_HASH, &bench_event(JobId::new_v7(), 1, 1, &pad)).len();
    eprintln!(
        "bench log: {} events of ~{record_len} bytes from {} appenders ({} events per job) into the {} log in {}",
        a.events,
        a.appenders,
        a.events_per_job,
        a.backend.as_str(),
        dir.display()
    );

    // Appends.
    let done = Arc::new(AtomicU64::new(0));
    let progress = {
        let done = done.clone();
        let total = a.events;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!("  appended {} / {total}", done.load(Ordering::Relaxed));
            }
        })
    };
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..a.appenders {
        let count = a.events / a.appenders + u64::from(n < a.events % a.appenders);
        let log = log.clone();
        let done = done.clone();
        let pad = pad.clone();
        tasks.push(tokio::spawn(async move {
            let mut job = JobId::new_v7();
            let mut lat = Vec::with_capacity(count as usize);
            for i in 0..count {
                if i > 0 && i % per_job == 0 {
                    job = JobId::new_v7();
                }
                let ev = bench_event(job, n, i, &pad);
                let t = Instant::now();
                log.append(vec![ev]).await?;
                lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::with_capacity(a.events as usize);
    for t in tasks {
        lat.extend(t.await??);
    }
    let append_s = t0.elapsed().as_secs_f64();
    progress.abort();
    lat.sort_unstable();
    let append_rate = a.events as f64 / append_s;
    let (p50, p99) = (percentile(&lat, 0.50), percentile(&lat, 0.99));
    eprintln!("  appends done in {append_s:.2} s; replaying the whole log with every check");

    // Replay: CRC + rkyv validation + seq + hash chain over every record.
    let replay_log: Arc<dyn EventLog> = log.clone();
    let (stats, replay_s, bench_events) = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let mut bench_events = 0u64;
        let stats = replay(&*replay_log, |_, ev| {
            if matches!(ev, ArchivedEventBody::StepSucceeded { .. }) {
                bench_events += 1;
            }
        });
        (stats, t.elapsed().as_secs_f64(), bench_events)
    })
    .await?;
    let stats = stats.context("replay found a damaged log")?;
    anyhow::ensure!(
        stats.last_seq == start_seq + a.events && stats.records == stats.last_seq,
        "replay saw {} records up to seq {}, expected {}",
        stats.records,
        stats.last_seq,
        start_seq + a.events
    );
    let replay_rate = stats.records as f64 / replay_s;
    drop(log);

    eprintln!("  measuring the baseline: write {RECORD_BYTES} bytes + fdatasync for {RAW_FOR:?}");
    let raw_rate = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || raw_fdatasync_rate(&dir)
    })
    .await??;

    println!(
        "recman bench log ({} backend, {} appenders)",
        a.backend.as_str(),
        a.appenders
    );
    println!(
        "  durable appends: {} events in {append_s:.2} s = {append_rate:.0} events/s \
         (latency p50 {p50} µs, p99 {p99} µs)",
        a.events
    );
    println!(
        "  checked replay:  {} records ({bench_events} bench events) in {replay_s:.3} s = {replay_rate:.0} events/s",
        stats.records
    );
    println!(
        "  baseline:        raw write {RECORD_BYTES} B + fdatasync = {raw_rate:.0} syncs/s \
         (group commit puts ~{:.0} events in each sync)",
        (append_rate / raw_rate).max(1.0)
    );
    println!(
        "backend={} events={} appenders={} append_events_per_s={append_rate:.0} append_p50_us={p50} \
         append_p99_us={p99} replay_events_per_s={replay_rate:.0} raw_fdatasync_per_s={raw_rate:.0}",
        a.backend.as_str(),
        a.events,
        a.appenders
    );
    Ok(ExitCode::SUCCESS)
}
