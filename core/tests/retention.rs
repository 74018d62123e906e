//! Retention decided by the core: tiers after a completed job, a consistency
//! group kept or pruned as a whole, and an operator's `Input::Prune`.

use std::collections::BTreeMap;

use recman_core::{Core, CoreConfig, Input, Outgoing, Reply, RetentionPolicy, TargetPolicy};
use recman_events::{
    snapshot_name, EventBody, JobId, Outcome, Report, RequestId, SnapshotInfo, SnapshotKind, SnapshotRequest,
    Stage, StepDetail, TargetId, WorkerId, SCHEMA_VERSION,
};

const HOUR: u64 = 3_600_000;
/// 2026-11-02 00:00 UTC, a Monday.
const MONDAY: u64 = 1_793_577_600_000;

fn config(policies: &[(&str, RetentionPolicy)]) -> CoreConfig {
    let mut targets = BTreeMap::new();
    for (t, r) in policies {
        let mut p = TargetPolicy::new(format!("host.{t}").as_str(), "array.x");
        p.retention = r.clone();
        targets.insert(TargetId::from(*t), p);
    }
    CoreConfig {
        targets,
        seed: 1,
        mutation: None,
        bounds: Default::default(),
        schedules: Vec::new(),
    }
}

fn rep(job: JobId, stage: Stage, targets: &[&str], detail: StepDetail) -> Input {
    Input::Report(Report {
        schema_version: SCHEMA_VERSION,
        message_id: "m".into(),
        job,
        attempt: 1,
        stage,
        targets: targets.iter().map(|t| TargetId::from(*t)).collect(),
        worker: WorkerId::from("w"),
        duration_us: 10,
        outcome: Outcome::Ok { detail },
    })
}

thread_local! {
    /// Every event of this test thread's cores, in order (the replay source).
    static LOG: std::cell::RefCell<Vec<recman_events::Event>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn handle(core: &mut Core, input: Input, now: u64) -> recman_core::Step {
    let s = core.handle(input, now);
    LOG.with(|l| l.borrow_mut().extend(s.events.iter().cloned()));
    s
}

/// One job through every stage at `now`; returns it and the prune commands.
fn complete(core: &mut Core, n: u128, targets: &[&str], now: u64) -> (JobId, Vec<Outgoing>) {
    let job = JobId::from_parts(now, n);
    let req = SnapshotRequest {
        schema_version: SCHEMA_VERSION,
        request_id: RequestId::new(format!("r{n}")),
        targets: targets.iter().map(|t| TargetId::from(*t)).collect(),
        kind: SnapshotKind::Full,
    };
    handle(
        core,
        Input::Request {
            req,
            origin: "test".into(),
            new_job: job,
        },
        now,
    );
    for t in targets {
        handle(
            core,
            rep(job, Stage::Freeze, &[t], StepDetail::Frozen { deadline_ms: 0 }),
            now,
        );
    }
    let info = SnapshotInfo {
        name: snapshot_name(job, 1),
        provider: "test".into(),
        location: "x".into(),
        size_bytes: None,
        existed: false,
        array_expiry: None,
    };
    handle(
        core,
        rep(job, Stage::Snapshot, targets, StepDetail::Snapshot(info)),
        now,
    );
    for t in targets {
        let thawed = StepDetail::Thawed {
            freeze_window_us: 1,
            by_watchdog: false,
        };
        handle(core, rep(job, Stage::Thaw, &[t], thawed), now);
    }
    let mut prunes = Vec::new();
    for t in targets {
        let s = handle(core, rep(job, Stage::FlushLogs, &[t], StepDetail::Flushed), now);
        prunes.extend(s.commands.into_iter().filter(|o| o.command.stage == Stage::Prune));
    }
    (job, prunes)
}

fn pruned(cmds: &[Outgoing]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = cmds
        .iter()
        .flat_map(|o| {
            let t = o.command.targets[0].to_string();
            o.command.prune.iter().map(move |n| (t.clone(), n.clone()))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn daily_tier_keeps_the_newest_of_each_day_and_prunes_the_rest() {
    let policy = RetentionPolicy {
        keep_daily: Some(2),
        ..RetentionPolicy::default()
    };
    let mut core = Core::new(config(&[("a", policy)]));
    let mut jobs = Vec::new();
    let mut all = Vec::new();
    // Three points a day (02:00, 10:00, 18:00) for three days.
    for d in 0..3u64 {
        for h in [2, 10, 18] {
            let (j, p) = complete(
                &mut core,
                jobs.len() as u128 + 1,
                &["a"],
                MONDAY + d * 24 * HOUR + h * HOUR,
            );
            jobs.push(j);
            all.extend(p);
        }
    }
    let kept: Vec<JobId> = core.state().catalog[&TargetId::from("a")]
        .iter()
        .filter(|e| {
            !core
                .state()
                .prunes
                .contains_key(&(TargetId::from("a"), e.name.clone()))
        })
        .map(|e| e.job)
        .collect();
    // Day 3 18:00 (newest, daily) and day 2 18:00 (daily).
    assert_eq!(kept, [jobs[5], jobs[8]]);
    let asked: Vec<String> = pruned(&all).into_iter().map(|(_, n)| n).collect();
    for (i, j) in jobs.iter().enumerate() {
        let name = snapshot_name(*j, 1);
        assert_eq!(asked.contains(&name), ![5, 8].contains(&i), "job {i}");
    }
}

#[test]
fn a_group_point_is_kept_while_any_member_keeps_it() {
    // a keeps the newest one only; b keeps everything.
    let mut core = Core::new(config(&[
        ("a", RetentionPolicy::last(1)),
        ("b", RetentionPolicy::default()),
    ]));
    let (g, _) = complete(&mut core, 1, &["a", "b"], MONDAY);
    let (_, p) = complete(&mut core, 2, &["a"], MONDAY + HOUR);
    // The group point stays on both members (b keeps it), nothing is pruned.
    assert_eq!(pruned(&p), []);
    let a = &core.state().catalog[&TargetId::from("a")];
    assert!(
        a.iter().any(|e| e.job == g),
        "the group point is still listed on a"
    );
}

/// A member keeps a group point only while it lists it: one whose copy
/// vanished keeps nothing, even while a new point of its own is being
/// recorded in the same decision.
#[test]
fn a_member_that_lost_its_copy_of_a_group_point_does_not_keep_it() {
    let mut core = Core::new(config(&[
        ("a", RetentionPolicy::last(1)),
        ("b", RetentionPolicy::default()),
    ]));
    let (g, _) = complete(&mut core, 1, &["a", "b"], MONDAY);
    let b = TargetId::from("b");
    handle(
        &mut core,
        Input::Reconcile {
            target: b.clone(),
            origin: "cli".into(),
        },
        MONDAY + 10,
    );
    let listed = StepDetail::Listed { names: Vec::new() };
    handle(
        &mut core,
        rep(JobId::NONE, Stage::Reconcile, &["b"], listed),
        MONDAY + 20,
    );
    assert!(
        !core.state().catalog[&b].iter().any(|e| e.job == g),
        "b lost its copy"
    );
    let (_, p) = complete(&mut core, 2, &["a", "b"], MONDAY + HOUR);
    assert_eq!(pruned(&p), [("a".to_string(), snapshot_name(g, 1))]);
}

#[test]
fn a_group_point_nobody_keeps_is_pruned_from_every_member() {
    let mut core = Core::new(config(&[
        ("a", RetentionPolicy::last(1)),
        ("b", RetentionPolicy::last(1)),
    ]));
    let (g, _) = complete(&mut core, 1, &["a", "b"], MONDAY);
    // Only a gets a newer point: b's newest is still the group point, so
    // the group is kept as a whole (b's newest is never pruned).
    let (_, p) = complete(&mut core, 2, &["a"], MONDAY + HOUR);
    assert_eq!(pruned(&p), []);
    // Now b has a newer one too: the group is pruned from a and from b.
    let (_, p) = complete(&mut core, 3, &["b"], MONDAY + 2 * HOUR);
    let name = snapshot_name(g, 1);
    assert_eq!(
        pruned(&p),
        [("a".to_string(), name.clone()), ("b".to_string(), name)]
    );
}

#[test]
fn prune_input_applies_changed_rules_to_the_catalog() {
    let mut core = Core::new(config(&[("a", RetentionPolicy::default())]));
    let mut jobs = Vec::new();
    for n in 0..4u64 {
        jobs.push(complete(&mut core, n as u128 + 1, &["a"], MONDAY + n * HOUR).0);
    }
    // Rules tightened (a reload): the operator's prune applies them.
    let mut cfg = core.config().clone();
    if let Some(p) = cfg.targets.get_mut(&TargetId::from("a")) {
        p.retention = RetentionPolicy {
            keep_within_ms: Some(90 * 60_000),
            ..RetentionPolicy::default()
        };
    }
    let mut core2 = Core::new(cfg);
    for e in LOG.with(|l| l.borrow().clone()) {
        core2.apply(&e);
    }
    let s = core2.handle(
        Input::Prune {
            targets: vec![TargetId::from("a")],
            new_job: JobId::from_parts(MONDAY, 1),
        },
        MONDAY + 5 * HOUR,
    );
    assert_eq!(
        s.reply,
        Reply::Pruning {
            asked: 2,
            awaiting: vec![]
        }
    );
    let names: Vec<String> = s
        .events
        .iter()
        .flat_map(|e| match &e.body {
            EventBody::PruneRequested { names, .. } => names.clone(),
            _ => vec![],
        })
        .collect();
    assert_eq!(names, [snapshot_name(jobs[0], 1), snapshot_name(jobs[1], 1)]);
    // Asked again: nothing new (the deletes are in flight).
    let s = core2.handle(
        Input::Prune {
            targets: vec![TargetId::from("a")],
            new_job: JobId::from_parts(MONDAY, 1),
        },
        MONDAY + 5 * HOUR,
    );
    assert_eq!(
        s.reply,
        Reply::Pruning {
            asked: 0,
            awaiting: vec![]
        }
    );
}

#[test]
fn spans_print_in_the_largest_unit_that_divides() {
    use recman_core::retention::span;
    let cases = [
        (0, "0ms"),
        (1_500, "1500ms"),
        (20_000, "20s"),
        (5_400_000, "90m"),
        (90_000_000, "25h"),
        (14 * 24 * HOUR, "14d"),
    ];
    for (ms, want) in cases {
        assert_eq!(span(ms), want, "{ms} ms");
    }
}
