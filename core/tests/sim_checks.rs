//! The simulator's runs: a violation comes with a readable trace, a seed
//! replays the same run, and every fault mode and a seeded sweep with every
//! fault and consistency groups find no violation. (Each invariant shown to
//! fire under a deliberate mutation: `sim_mutations.rs`.)

use recman_core::sim::{self, Faults, SimConfig};
use recman_core::Mutation;
use recman_events::{EventBody, RecoveryAction};

fn cfg(seed: u64, jobs: usize, targets: usize, mutation: Option<Mutation>) -> SimConfig {
    SimConfig {
        mutation,
        schedules: false,
        ..SimConfig::full(seed, jobs, targets)
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
    assert_eq!(v.invariant, "every_freeze_thawed", "{text}");
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
fn the_same_seed_gives_the_same_run() {
    let a = sim::run(&cfg(7, 500, 6, None)).expect("clean run");
    let b = sim::run(&cfg(7, 500, 6, None)).expect("clean run");
    assert_eq!(
        (a.steps, a.events, a.completed, a.failed),
        (b.steps, b.events, b.completed, b.failed)
    );
    // Event for event, with worker crashes that leave several commands in
    // flight (their redelivery once followed a HashMap's random order).
    for seed in [3, 11, 19] {
        let c = SimConfig {
            faults: Faults::Crash,
            ..cfg(seed, 2_000, 10, None)
        };
        let (_, x, _) = sim::run_with_config(&c).expect("clean run");
        let (_, y, _) = sim::run_with_config(&c).expect("clean run");
        assert!(x == y, "seed {seed}: two runs of one seed differ");
    }
}

#[test]
fn every_fault_mode_runs_clean() {
    for faults in [Faults::None, Faults::Net, Faults::Crash, Faults::All] {
        for groups in [false, true] {
            let c = SimConfig {
                groups,
                faults,
                schedules: false,
                ..SimConfig::full(11, 1_000, 9)
            };
            let s = sim::run(&c).unwrap_or_else(|v| panic!("{}", sim::render(&v)));
            assert_eq!(s.completed + s.failed + s.cancelled, 1_000);
        }
    }
}

/// About a minute in release mode on 2 free cores (`tests/run` builds with
/// `--release`); in the `heavy` nextest group.
#[test]
fn seeded_sweep_all_faults_with_groups() {
    let seeds: u64 = if cfg!(debug_assertions) { 6 } else { 160 };
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

/// A fleet-size run (many targets, few jobs each, every fault): what
/// `recman simulate --jobs 200000 --targets 100000` does, at a size CI
/// affords (about half a minute in release mode; `heavy` nextest group).
#[test]
fn fleet_size_run_all_faults_is_clean() {
    let (jobs, targets) = if cfg!(debug_assertions) {
        (2_000, 1_000)
    } else {
        (20_000, 10_000)
    };
    let c = cfg(7, jobs, targets, None);
    let s = sim::run(&c).unwrap_or_else(|v| panic!("{}", sim::render(&v)));
    assert_eq!(s.completed + s.failed + s.cancelled, jobs);
    assert!(s.completed > jobs * 9 / 10, "{s:?}");
}

/// `recman simulate --jobs 20000 --targets 200 --groups --seed 7` (every
/// fault, schedules, verification): a verify command that came again after
/// its verdict, while the target's next job froze it, once counted as a
/// verification during a freeze; the host answers it from its record
/// (`HostState::verify_answer`), and so does the simulated pool.
#[test]
fn fleet_size_with_groups_schedules_and_verification_is_clean() {
    let jobs = if cfg!(debug_assertions) { 2_000 } else { 20_000 };
    let c = SimConfig::full(7, jobs, 200);
    let s = sim::run(&c).unwrap_or_else(|v| panic!("{}", sim::render(&v)));
    assert!(s.completed > jobs * 9 / 10, "{s:?}");
}

#[test]
fn schedules_and_rpos_run_clean_under_every_fault_mode() {
    for faults in [Faults::None, Faults::Net, Faults::Crash, Faults::All] {
        for seed in 1..=4 {
            let c = SimConfig {
                schedules: true,
                faults,
                ..cfg(seed, 1_000, 10, None)
            };
            let s = sim::run(&c).unwrap_or_else(|v| panic!("{faults:?} seed {seed}:\n{}", sim::render(&v)));
            println!("{faults:?} seed {seed}: {}", s.line(1.0));
            assert!(s.fired > 3, "{faults:?} seed {seed}: only {} firings", s.fired);
            assert!(
                s.rpo_breaches > 0,
                "{faults:?} seed {seed}: no RPO breach after the schedules paused"
            );
            assert!(s.line(1.0).contains("violations=0"), "{}", s.line(1.0));
        }
    }
}

/// Two engines on one log (issue 19): with every fault the leader dies and
/// stops past its lease, the standby takes over, and a stopped leader that
/// resumes on its stale state is fenced; every run is clean, and over a few
/// seeds each of those happened (a mode that never deposed anybody would
/// prove nothing).
#[test]
fn two_engines_take_over_and_fence_a_deposed_leader() {
    let (mut takeovers, mut pauses, mut fenced, mut crashes) = (0, 0, 0, 0);
    for seed in 1..=8 {
        let c = SimConfig {
            engines: 2,
            ..cfg(seed, 2_000, 10, None)
        };
        let s = sim::run(&c).unwrap_or_else(|v| panic!("{}", sim::render(&v)));
        let line = s.line(1.0);
        println!("{line}");
        assert_eq!(s.completed + s.failed + s.cancelled, 2_000, "{line}");
        assert!(line.contains(" engines=2 takeovers="), "{line}");
        takeovers += s.takeovers;
        pauses += s.pauses;
        fenced += s.fenced;
        crashes += s.engine_crashes;
    }
    assert!(takeovers >= 8, "only {takeovers} takeovers");
    assert!(pauses >= 8, "only {pauses} stops of the leader");
    assert!(crashes >= 4, "only {crashes} leader crashes");
    assert!(fenced >= 2, "only {fenced} appends refused to a deposed leader");
    // One engine: the summary line stays as it was.
    let one = sim::run(&cfg(1, 200, 4, None)).expect("clean run");
    assert!(!one.line(1.0).contains("engines="), "{}", one.line(1.0));
}

/// Two engines replay the same run from the same seed, event for event.
#[test]
fn two_engines_the_same_seed_gives_the_same_run() {
    for seed in [2, 5] {
        let c = SimConfig {
            engines: 2,
            ..cfg(seed, 1_500, 8, None)
        };
        let (a, x, _) = sim::run_with_config(&c).expect("clean run");
        let (b, y, _) = sim::run_with_config(&c).expect("clean run");
        assert!(x == y, "seed {seed}: two runs of one seed differ");
        assert_eq!((a.takeovers, a.fenced), (b.takeovers, b.fenced));
    }
}

/// Two engines under every fault mode (without crash faults nobody takes
/// over: the standby only waits).
#[test]
fn two_engines_every_fault_mode_runs_clean() {
    for faults in [Faults::None, Faults::Net, Faults::Crash, Faults::All] {
        let c = SimConfig {
            faults,
            engines: 2,
            schedules: true,
            ..cfg(13, 1_000, 9, None)
        };
        let s = sim::run(&c).unwrap_or_else(|v| panic!("{faults:?}:\n{}", sim::render(&v)));
        // The requests' jobs and the schedules' firings.
        assert_eq!(
            s.completed + s.failed + s.cancelled,
            1_000 + s.fired,
            "{faults:?}"
        );
        if matches!(faults, Faults::None | Faults::Net) {
            assert_eq!((s.takeovers, s.pauses, s.engine_crashes), (0, 0, 0), "{faults:?}");
        }
    }
}

/// A sweep over seeds with two engines and every fault (leader crashes and
/// stops, takeovers, fenced appends, besides every other fault); `heavy`
/// nextest group.
#[test]
fn seeded_sweep_two_engines_all_faults() {
    let seeds: u64 = if cfg!(debug_assertions) { 4 } else { 48 };
    let threads = 2;
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            std::thread::spawn(move || {
                let (mut takeovers, mut fenced) = (0, 0);
                for seed in (1..=seeds).filter(|s| s % threads == k) {
                    let targets = 4 + (seed % 13) as usize;
                    let c = SimConfig {
                        engines: 2,
                        schedules: seed % 3 == 0,
                        ..cfg(2_000 + seed, 1_500, targets, None)
                    };
                    match sim::run(&c) {
                        Ok(s) => {
                            takeovers += s.takeovers;
                            fenced += s.fenced;
                        }
                        Err(v) => panic!("{}", sim::render(&v)),
                    }
                }
                (takeovers, fenced)
            })
        })
        .collect();
    let (mut takeovers, mut fenced) = (0, 0);
    for h in handles {
        let (t, f) = h.join().expect("sweep thread");
        takeovers += t;
        fenced += f;
    }
    println!("takeovers={takeovers} fenced={fenced}");
    assert!(
        takeovers > seeds as u32,
        "only {takeovers} takeovers over {seeds} seeds"
    );
    assert!(fenced > 0, "no deposed leader was fenced over {seeds} seeds");
}

/// Fleet size with two engines (`recman simulate --engines 2 --jobs 200000
/// --targets 100000` at a size CI affords; `heavy` nextest group).
#[test]
fn fleet_size_two_engines_all_faults_is_clean() {
    let (jobs, targets) = if cfg!(debug_assertions) {
        (2_000, 1_000)
    } else {
        (20_000, 10_000)
    };
    let c = SimConfig {
        engines: 2,
        ..cfg(7, jobs, targets, None)
    };
    let s = sim::run(&c).unwrap_or_else(|v| panic!("{}", sim::render(&v)));
    println!("{}", s.line(1.0));
    assert_eq!(s.completed + s.failed + s.cancelled, jobs);
    assert!(s.completed > jobs * 9 / 10, "{s:?}");
    assert!(s.takeovers > 0, "{s:?}");
}

/// Requests spread over virtual hours (`recman simulate --over`, a fleet's
/// day at a size CI affords): every request ends, the run lasts the span,
/// the schedules fire and the engine crashes recur, and the same seed gives
/// the same run.
#[test]
fn requests_spread_over_hours_run_clean() {
    let (jobs, targets) = if cfg!(debug_assertions) {
        (1_000, 300)
    } else {
        (6_000, 2_000)
    };
    let over = 3 * 3_600_000;
    let c = SimConfig {
        over_ms: Some(over),
        ..SimConfig::full(9, jobs, targets)
    };
    let s = sim::run(&c).unwrap_or_else(|v| panic!("{}", sim::render(&v)));
    println!("{}", s.line(1.0));
    assert_eq!(s.completed + s.failed + s.cancelled, jobs + s.fired, "{s:?}");
    assert!(s.completed > (jobs + s.fired) * 9 / 10, "{s:?}");
    assert!(
        s.virtual_ms >= over * 99 / 100,
        "the requests did not spread: {s:?}"
    );
    assert!(s.fired > 0, "no schedule fired: {s:?}");
    // Crashes recur in proportion to the span: some 65 in any span, not
    // one a minute (which would be some 200 in three hours).
    assert!((20..=130).contains(&s.engine_crashes), "{s:?}");
    let again = sim::run(&c).unwrap_or_else(|v| panic!("{}", sim::render(&v)));
    assert_eq!(format!("{s:?}"), format!("{again:?}"));
}

/// Operators prune targets with `require_approval`: the prune jobs wait,
/// some are approved by a second admin (and ask for their deletes), some
/// expire; `approved_before_restore` checks each one that ran.
#[test]
fn operators_prunes_of_guarded_targets_wait_for_approval() {
    let c = SimConfig {
        faults: Faults::None,
        ..cfg(1, 3_000, 40, None)
    };
    let (_, log, _) = sim::run_with_config(&c).expect("clean run");
    let prunes: std::collections::BTreeSet<_> = log
        .iter()
        .filter(|e| {
            matches!(
                &e.body,
                EventBody::RecoveryRequested {
                    action: RecoveryAction::Prune,
                    ..
                }
            )
        })
        .map(|e| e.job)
        .collect();
    let ended = |approved: bool| {
        log.iter()
            .filter(|e| prunes.contains(&e.job))
            .filter(|e| match &e.body {
                EventBody::RecoveryCompleted { .. } => approved,
                EventBody::RecoveryFailed { reason, .. } => !approved && reason.contains("approval expired"),
                _ => false,
            })
            .count()
    };
    assert!(
        prunes.len() >= 5 && ended(true) >= 1 && ended(false) >= 1,
        "{} prune jobs, {} approved, {} expired",
        prunes.len(),
        ended(true),
        ended(false)
    );
}
