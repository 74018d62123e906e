//! What the benchmarks measure and how they report it: percentiles, the raw
//! `fdatasync` baseline of the disk, and the figures and report of whole-job
//! runs (`bench jobs`, in-process or over RabbitMQ).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use recman_events::Backend;

/// Bytes written before each `fdatasync` of the baseline (about one record).
pub const RAW_WRITE: usize = 256;
/// How long the raw fdatasync baseline runs.
pub const RAW_FOR: Duration = Duration::from_secs(2);

/// The `p` percentile (0..=1) of sorted values; 0 when there are none.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Appends [`RAW_WRITE`] bytes and `fdatasync`s, in a loop, for [`RAW_FOR`];
/// returns syncs/s. Blocking.
pub fn raw_fdatasync_rate(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("bench-fdatasync.tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let buf = [0x5au8; RAW_WRITE];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < RAW_FOR {
        f.write_all(&buf)?;
        // SAFETY: fdatasync on a valid, owned file descriptor.
        if unsafe { libc::fdatasync(f.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        n += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// [`raw_fdatasync_rate`] off the async threads, saying what it does.
pub async fn disk_baseline(dir: &Path, what: &str) -> anyhow::Result<f64> {
    eprintln!(
        "  measuring the {what}: write {RAW_WRITE} bytes + fdatasync for {} s",
        RAW_FOR.as_secs()
    );
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || raw_fdatasync_rate(&dir)).await?
}

/// How one job of a run ended, as the log tells it.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    pub completed: bool,
    /// Freeze window minus the provider's time, µs (completed jobs only).
    pub overhead_us: Option<u64>,
}

/// The figures of one whole-job run.
pub struct Stats {
    pub jobs: u64,
    pub failed: usize,
    pub elapsed: f64,
    pub rate: f64,
    /// Job latency, ms.
    pub p50: f64,
    pub p99: f64,
    /// Freeze overhead, µs.
    pub o50: u32,
    pub o99: u32,
    /// Events in the log after the run.
    pub events: u64,
}

impl Stats {
    /// From each job's latency and end, and the seconds the whole took.
    pub fn of(results: &[(Duration, Finished)], elapsed: f64, events: u64) -> Stats {
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
        let ms = |us: u32| f64::from(us) / 1000.0;
        Stats {
            jobs: results.len() as u64,
            failed,
            elapsed,
            rate: results.len() as f64 / elapsed,
            p50: ms(percentile(&lat_us, 0.50)),
            p99: ms(percentile(&lat_us, 0.99)),
            o50: percentile(&overhead, 0.50),
            o99: percentile(&overhead, 0.99),
            events,
        }
    }
}

/// The report of a whole-job run: what differs between the in-process and
/// the RabbitMQ run is given, the rest is printed the same way.
pub struct Report<'a> {
    /// The first line, e.g. `recman bench jobs (redb backend, in-process bus, 200 targets)`.
    pub title: String,
    /// After the events rate on the `jobs:` line (e.g. what the relay did).
    pub events_note: &'a str,
    /// `baseline:` lines before the disk's.
    pub baselines: Vec<String>,
    pub raw_fdatasync_per_s: f64,
    /// `bus=` of the last line.
    pub bus: &'a str,
    pub backend: Backend,
    pub targets: u64,
    /// Appended to the last line (` key=value…`).
    pub extra_kv: String,
}

impl Report<'_> {
    /// Prints the report; the last line is key=value pairs for scripts.
    pub fn print(&self, s: &Stats) {
        let Stats {
            jobs,
            failed,
            elapsed,
            rate,
            p50,
            p99,
            o50,
            o99,
            events,
        } = s;
        let raw = self.raw_fdatasync_per_s;
        println!("{}", self.title);
        println!(
            "  jobs:      {jobs} in {elapsed:.2} s = {rate:.0} jobs/s ({failed} failed), {events} events = {:.0} \
             events/s{}",
            *events as f64 / elapsed,
            self.events_note
        );
        println!("  latency:   submit → completed p50 {p50:.2} ms, p99 {p99:.2} ms");
        println!("  freeze:    overhead (window − provider time) p50 {o50} µs, p99 {o99} µs");
        for b in &self.baselines {
            println!("  baseline:  {b}");
        }
        println!(
            "  baseline:  raw write 256 B + fdatasync = {raw:.0} syncs/s ({:.0} µs each)",
            1e6 / raw
        );
        println!(
            "bus={} backend={} jobs={jobs} targets={} failed={failed} jobs_per_s={rate:.0} job_p50_ms={p50:.2} \
             job_p99_ms={p99:.2} freeze_overhead_p50_us={o50} freeze_overhead_p99_us={o99} events={events} \
             raw_fdatasync_per_s={raw:.0}{}",
            self.bus,
            self.backend.as_str(),
            self.targets,
            self.extra_kv
        );
    }
}

/// Aborts a background task when dropped (also on an early return).
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
