//! `recman simulate`: runs the deterministic simulator and prints its figures.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::home::Home;
use recman_core::sim::{self, Faults, SimConfig};
use recman_core::{worker, Mutation};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seed of every random choice: the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Snapshot requests to submit.
    #[arg(long, default_value_t = 1_000)]
    pub jobs: usize,
    /// Simulated targets (two per host, spread over up to three arrays).
    #[arg(long, default_value_t = 10)]
    pub targets: usize,
    /// Also submit consistency groups of 2-3 targets.
    #[arg(long)]
    pub groups: bool,
    /// Faults to inject: none, net (drop, duplicate, delay, reorder), crash
    /// (worker and engine crashes), all.
    #[arg(long, default_value = "all")]
    pub faults: String,
    /// Self-test: run a deliberately broken engine-core rule (e.g.
    /// `skip-compensating-thaw`, `no-thaw-after-failed-freeze`) or
    /// worker-core rule (e.g. `thaw-ignores-attempt`,
    /// `freeze-state-per-process`); the run is expected to find a violation
    /// (`core/tests/sim_mutations.rs` lists which).
    #[arg(long, hide = true)]
    pub mutation: Option<String>,
    /// Leave out schedules and RPOs (by default every third target is on a
    /// schedule of a few virtual seconds, stretched in proportion beyond 300
    /// schedules, with a group and a minutely cron in Europe/Berlin; every
    /// fourth has an RPO; all are paused after the last request so the run
    /// comes to rest).
    #[arg(long)]
    pub no_schedules: bool,
    /// Engine processes on the one log: 1, or 2 (a leader and a cold
    /// standby; with crash faults the leader also dies or stops past its
    /// lease, the standby takes over and the stopped one is fenced when it
    /// resumes).
    #[arg(long, default_value_t = 1)]
    pub engines: usize,
    /// Spread the requests over this much virtual time (e.g. 24h for a
    /// day's requests) instead of sending them as fast as the fleet takes
    /// them; schedules then fire about three times in the span and engine
    /// crashes recur in proportion (some 65 in any span). Example, a fleet's
    /// day: `--jobs 1000000 --targets 100000 --over 24h`.
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    pub over: Option<std::time::Duration>,
}

fn parse_span(s: &str) -> Result<std::time::Duration, String> {
    let d = recman_config::parse_duration(s)?;
    if d.as_millis() < 1_000 || d.as_millis() > 366 * 86_400_000 {
        return Err(format!("{s:?} is not between 1s and 366d"));
    }
    Ok(d)
}

pub async fn run(_g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let Some(faults) = Faults::parse(&a.faults) else {
        anyhow::bail!(
            "--faults must be one of none, net, crash, all (got {:?})",
            a.faults
        );
    };
    if !(1..=2).contains(&a.engines) {
        anyhow::bail!("--engines must be 1 or 2 (got {})", a.engines);
    }
    let (mutation, worker_mutation) = match a.mutation.as_deref() {
        None => (None, None),
        Some(name) => match (Mutation::parse(name), worker::Mutation::parse(name)) {
            (Some(m), _) => (Some(m), None),
            (None, Some(w)) => (None, Some(w)),
            (None, None) => {
                let all: Vec<String> = Mutation::ALL
                    .iter()
                    .map(|m| m.name())
                    .chain(worker::Mutation::ALL.iter().map(|m| m.name()))
                    .collect();
                anyhow::bail!("unknown --mutation {name:?}; one of: {}", all.join(", "))
            }
        },
    };
    let cfg = SimConfig {
        seed: a.seed,
        jobs: a.jobs,
        targets: a.targets.max(1),
        groups: a.groups,
        faults,
        mutation,
        worker_mutation,
        schedules: !a.no_schedules,
        engines: a.engines,
        over_ms: a.over.map(|d| d.as_millis() as u64),
    };
    let start = Instant::now();
    let decisions = Arc::new(Mutex::new(Times::default()));
    let watch = Box::new(Watch {
        began: None,
        said: Instant::now(),
        jobs: a.jobs,
        times: Times {
            counts: vec![0; BUCKETS],
            ..Times::default()
        },
        out: decisions.clone(),
    });
    let result = tokio::task::spawn_blocking(move || sim::run_timed(&cfg, watch)).await?;
    let wall = start.elapsed().as_secs_f64();
    match result {
        Ok(s) => {
            let d = std::mem::take(&mut *decisions.lock().unwrap_or_else(|e| e.into_inner()));
            println!(
                "engine_crashes={} events={} virtual_s={:.1} wall_s={wall:.2} decisions={} decide_p50_us={:.1} decide_p99_us={:.1} decide_max_us={:.1} decide_max_input={} decide_max_events={}",
                s.engine_crashes,
                s.events,
                s.virtual_ms as f64 / 1000.0,
                d.n,
                d.quantile_us(0.5),
                d.quantile_us(0.99),
                d.max_ns as f64 / 1000.0,
                if d.n == 0 { "none" } else { d.max_input },
                d.max_events,
            );
            println!("{}", s.line(wall));
            Ok(ExitCode::SUCCESS)
        }
        Err(v) => {
            println!("{}", sim::render(&v));
            Ok(ExitCode::from(1))
        }
    }
}

/// The histogram's resolution (ns) and range: 100 ns buckets up to 10 ms,
/// longer decisions in the last one (their maximum is kept exactly).
const BUCKET_NS: u64 = 100;
const BUCKETS: usize = 100_000;

/// Decision times (a fixed histogram, so timing a long run costs no memory
/// that grows with it).
#[derive(Default)]
struct Times {
    counts: Vec<u64>,
    n: u64,
    max_ns: u64,
    /// The slowest decision's input kind and the events it made.
    max_input: &'static str,
    max_events: usize,
}

impl Times {
    /// The `q` quantile in µs (a bucket's upper edge).
    fn quantile_us(&self, q: f64) -> f64 {
        let want = ((self.n as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                let edge = (i as u64 + 1) * BUCKET_NS;
                return edge.min(self.max_ns) as f64 / 1000.0;
            }
        }
        self.max_ns as f64 / 1000.0
    }
}

/// How often a long run says how far it got (stderr).
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// The simulator's stopwatch and progress line; hands its histogram over
/// when the run drops it.
struct Watch {
    began: Option<(Instant, &'static str)>,
    said: Instant,
    jobs: usize,
    times: Times,
    out: Arc<Mutex<Times>>,
}

impl sim::Observer for Watch {
    fn begin(&mut self, input: &sim::Input) {
        self.began = Some((Instant::now(), input.kind()));
    }

    fn end(&mut self, events: usize) {
        if let Some((b, kind)) = self.began.take() {
            let ns = b.elapsed().as_nanos().min(u64::MAX as u128) as u64;
            let i = ((ns / BUCKET_NS) as usize).min(BUCKETS - 1);
            self.times.counts[i] += 1;
            self.times.n += 1;
            if ns >= self.times.max_ns {
                self.times.max_ns = ns;
                self.times.max_input = kind;
                self.times.max_events = events;
            }
        }
    }

    fn progress(&mut self, virtual_ms: u64, accepted: usize) {
        if self.said.elapsed() >= PROGRESS_EVERY {
            self.said = Instant::now();
            eprintln!(
                "simulated {:.1} virtual min: {accepted} of {} requests accepted",
                virtual_ms as f64 / 60_000.0,
                self.jobs
            );
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = std::mem::take(&mut self.times);
    }
}
