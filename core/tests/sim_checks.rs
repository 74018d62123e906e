//! The simulator catches a deliberately broken core or worker rule, and a seeded sweep with every
//! fault and consistency groups finds no violation.

use recman_core::sim::{self, Faults, SimConfig};
use recman_core::{worker, Mutation};

fn cfg(seed: u64, jobs: usize, targets: usize, mutation: Option<Mutation>) -> SimConfig {
    SimConfig {
        seed,
        jobs,
        targets,
        groups: true,
        faults: Faults::All,
        mutation,
        worker_mutation: None,
    }
}

#[test]
fn skipping_the_compensating_thaw_is_caught_with_a_readable_trace() {
    let mut caught = None;
    for seed in 1..=20 {
        if let Err(v) = sim::run(&cfg(seed, 2_000, 10, Some(Mutation::SkipCompensatingThaw))) {
            caught = Some(v);
            break;
        }
    }
    let v = caught.expect("the broken core went unnoticed on 20 seeds");
    let text = sim::render(&v);
    assert!(
        v.invariant == "every_freeze_thawed" || v.invariant == "freeze_window",
        "unexpected invariant: {text}"
    );
    assert!(text.contains("VIOLATION invariant="), "{text}");
    assert!(text.contains(&format!("seed={}", v.seed)), "{text}");
    assert!(
        text.contains("event AttemptStarted"),
        "the trace shows the job's events: {text}"
    );
    assert!(
        text.contains("cmd  freeze"),
        "the trace shows the messages: {text}"
    );
}

#[test]
fn a_core_that_never_forces_the_thaw_is_caught() {
    let c = SimConfig {
        faults: Faults::None,
        ..cfg(1, 3_000, 10, Some(Mutation::NoForcedThaw))
    };
    let v = sim::run(&c).expect_err("the broken core went unnoticed");
    let text = sim::render(&v);
    assert!(
        [
            "timer_progress",
            "engine_thaws_before_watchdog",
            "consistent_snapshot"
        ]
        .contains(&v.invariant),
        "{text}"
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = sim::run(&cfg(7, 500, 6, None)).expect("clean run");
    let b = sim::run(&cfg(7, 500, 6, None)).expect("clean run");
    assert_eq!(
        (a.steps, a.events, a.completed, a.failed),
        (b.steps, b.events, b.completed, b.failed)
    );
}

#[test]
fn every_fault_mode_runs_clean() {
    for faults in [Faults::None, Faults::Net, Faults::Crash, Faults::All] {
        for groups in [false, true] {
            let c = SimConfig {
                seed: 11,
                jobs: 1_000,
                targets: 9,
                groups,
                faults,
                mutation: None,
                worker_mutation: None,
            };
            let s = sim::run(&c).unwrap_or_else(|v| panic!("{}", sim::render(&v)));
            assert_eq!(s.completed + s.failed + s.cancelled, 1_000);
        }
    }
}

/// About a minute in release mode on 2 cores (`tests/run` builds with `--release`).
#[test]
fn seeded_sweep_all_faults_with_groups() {
    let seeds: u64 = if cfg!(debug_assertions) { 6 } else { 650 };
    let threads = 2;
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            std::thread::spawn(move || {
                let mut total = 0usize;
                for seed in (1..=seeds).filter(|s| s % threads == k) {
                    let targets = 4 + (seed % 13) as usize;
                    match sim::run(&cfg(1_000 + seed, 1_500, targets, None)) {
                        Ok(s) => total += s.completed,
                        Err(v) => panic!("{}", sim::render(&v)),
                    }
                }
                total
            })
        })
        .collect();
    let completed: usize = handles.into_iter().map(|h| h.join().expect("sweep thread")).sum();
    assert!(completed > 0);
}

/// The simulator runs the workers' real rules (`recman_core::worker`): breaking
/// one there must show as a violation, and the same runs are clean without it.
fn worker_mutation_run(
    seed: u64,
    faults: Faults,
    m: Option<worker::Mutation>,
) -> Result<sim::Summary, Box<sim::Violation>> {
    sim::run(&SimConfig {
        faults,
        worker_mutation: m,
        ..cfg(seed, 2_000, 10, None)
    })
}

#[test]
fn a_thaw_that_ends_another_attempts_freeze_is_caught() {
    for seed in 1..=3 {
        let v = worker_mutation_run(seed, Faults::All, Some(worker::Mutation::ThawIgnoresAttempt))
            .expect_err("a worker thawing another attempt's freeze went unnoticed");
        let text = sim::render(&v);
        assert!(
            [
                "consistent_snapshot",
                "engine_thaws_before_watchdog",
                "every_freeze_thawed"
            ]
            .contains(&v.invariant),
            "{text}"
        );
        worker_mutation_run(seed, Faults::All, None).unwrap_or_else(|v| panic!("{}", sim::render(&v)));
    }
}

#[test]
fn a_freeze_after_its_attempts_thaw_is_caught() {
    let mut caught = None;
    for seed in 1..=5 {
        worker_mutation_run(seed, Faults::None, None).unwrap_or_else(|v| panic!("{}", sim::render(&v)));
        if let Err(v) = worker_mutation_run(seed, Faults::None, Some(worker::Mutation::FreezeAfterThaw)) {
            caught = Some(v);
            break;
        }
    }
    let v = caught.expect("a worker freezing after its attempt's thaw went unnoticed on 5 seeds");
    let text = sim::render(&v);
    assert!(
        [
            "every_freeze_thawed",
            "engine_thaws_before_watchdog",
            "freeze_window"
        ]
        .contains(&v.invariant),
        "{text}"
    );
    assert!(text.contains("cmd  thaw"), "the trace shows the thaw: {text}");
}
