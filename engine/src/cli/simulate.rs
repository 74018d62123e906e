//! `recman simulate`: runs the deterministic simulator and prints its figures.

use std::process::ExitCode;
use std::time::Instant;

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
    };
    let start = Instant::now();
    let result = tokio::task::spawn_blocking(move || sim::run(&cfg)).await?;
    let wall = start.elapsed().as_secs_f64();
    match result {
        Ok(s) => {
            println!(
                "engine_crashes={} events={} virtual_s={:.1} wall_s={wall:.2}",
                s.engine_crashes,
                s.events,
                s.virtual_ms as f64 / 1000.0
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
