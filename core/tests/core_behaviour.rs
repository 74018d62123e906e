//! The core driven directly: the stage walk, groups, compensation, the freeze
//! limit, cancel, idempotency, stale reports, plus property tests and a check
//! that the core stays sans-IO.

use std::collections::BTreeMap;

use proptest::prelude::*;
use recman_core::{
    decide, evolve, Core, CoreConfig, Destination, Input, JobState, Reply, Rng, State, TargetPolicy,
};
use recman_events::{
    snapshot_name, EventBody, JobId, Outcome, Report, RequestId, SnapshotInfo, SnapshotKind, SnapshotRequest,
    Stage, StepDetail, StepError, TargetId, WorkerId, SCHEMA_VERSION,
};

const T: u64 = 1_000_000;

fn config() -> CoreConfig {
    let mut targets = BTreeMap::new();
    for t in ["a", "b", "c"] {
        targets.insert(
            TargetId::from(t),
            TargetPolicy::new(format!("host.{t}").as_str(), "array.x"),
        );
    }
    targets.insert(TargetId::from("z"), TargetPolicy::new("host.z", "array.other"));
    CoreConfig {
        targets,
        schedules: Vec::new(),
        seed: 5,
        mutation: None,
        bounds: Default::default(),
    }
}

fn request(core: &mut Core, rid: &str, targets: &[&str], n: u128, now: u64) -> (JobId, Reply) {
    let req = SnapshotRequest {
        schema_version: SCHEMA_VERSION,
        request_id: RequestId::from(rid),
        targets: targets.iter().map(|t| TargetId::from(*t)).collect(),
        kind: SnapshotKind::Full,
    };
    let new_job = JobId::from_parts(now, n);
    let step = core.handle(
        Input::Request {
            req,
            origin: "test".into(),
            new_job,
        },
        now,
    );
    (new_job, step.reply)
}

fn rep(job: JobId, attempt: u32, stage: Stage, targets: &[&str], worker: &str, outcome: Outcome) -> Input {
    Input::Report(Report {
        schema_version: SCHEMA_VERSION,
        message_id: "m".into(),
        job,
        attempt,
        stage,
        targets: targets.iter().map(|t| TargetId::from(*t)).collect(),
        worker: WorkerId::from(worker),
        duration_us: 10,
        outcome,
    })
}

fn ok(detail: StepDetail) -> Outcome {
    Outcome::Ok { detail }
}

fn frozen() -> Outcome {
    ok(StepDetail::Frozen { deadline_ms: 0 })
}

fn thawed() -> Outcome {
    ok(StepDetail::Thawed {
        freeze_window_us: 5,
        by_watchdog: false,
    })
}

fn snap(job: JobId, attempt: u32) -> Outcome {
    ok(StepDetail::Snapshot(SnapshotInfo {
        name: snapshot_name(job, attempt),
        provider: "test".into(),
        location: "x".into(),
        size_bytes: None,
        existed: false,
        array_expiry: None,
    }))
}

fn err(retryable: bool) -> Outcome {
    Outcome::Err {
        error: StepError::new("boom", "it broke", retryable),
    }
}

fn kinds(events: &[recman_events::Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.body.kind()).collect()
}

fn replay(core: &Core, log: &[recman_events::Event]) {
    let mut s = State::default();
    for e in log {
        evolve(&mut s, e);
    }
    assert_eq!(&s, core.state(), "replay differs from live state");
}

#[test]
fn single_target_walks_every_stage_and_thaws_the_worker_that_froze() {
    let mut log = Vec::new();
    let job = JobId::from_parts(T, 1);
    let mut c2 = Core::new(config());
    let s = c2.handle(
        Input::Request {
            req: SnapshotRequest {
                schema_version: 1,
                request_id: "r1".into(),
                targets: vec!["a".into()],
                kind: SnapshotKind::Full,
            },
            origin: "test".into(),
            new_job: job,
        },
        T,
    );
    assert_eq!(s.reply, Reply::Accepted { job, existing: false });
    assert_eq!(
        kinds(&s.events),
        ["requested", "attempt_started", "stage_started"]
    );
    assert_eq!(s.commands.len(), 1);
    assert_eq!(s.commands[0].command.stage, Stage::Freeze);
    assert_eq!(s.commands[0].command.thaw_deadline_ms, Some(T + 9_000));
    log.extend(s.events);
    let s = c2.handle(rep(job, 1, Stage::Freeze, &["a"], "w1", frozen()), T + 10);
    assert_eq!(kinds(&s.events), ["step_succeeded", "stage_started"]);
    assert_eq!(s.commands[0].command.snapshot_name, Some(snapshot_name(job, 1)));
    assert_eq!(
        c2.next_deadline(),
        Some(T + 10 + 8_000).min(Some(T + 10 + 30_000))
    );
    log.extend(s.events);
    let s = c2.handle(rep(job, 1, Stage::Snapshot, &["a"], "p1", snap(job, 1)), T + 20);
    assert_eq!(kinds(&s.events), ["step_succeeded", "stage_started"]);
    assert_eq!(
        s.commands[0].to,
        Destination::Worker {
            worker: "w1".into(),
            fallback: "host.a".into()
        }
    );
    log.extend(s.events);
    let s = c2.handle(rep(job, 1, Stage::Thaw, &["a"], "w1", thawed()), T + 30);
    assert_eq!(kinds(&s.events), ["step_succeeded", "stage_started"]);
    assert_eq!(s.commands[0].command.stage, Stage::FlushLogs);
    log.extend(s.events);
    let s = c2.handle(
        rep(job, 1, Stage::FlushLogs, &["a"], "w2", ok(StepDetail::Flushed)),
        T + 40,
    );
    assert_eq!(kinds(&s.events), ["step_succeeded", "completed"]);
    log.extend(s.events);
    assert_eq!(c2.state().job(&job).map(|j| j.state), Some(JobState::Completed));
    assert_eq!(c2.next_deadline(), None);
    replay(&c2, &log);
    // Duplicates after the end change nothing.
    let before = c2.state().clone();
    let s = c2.handle(rep(job, 1, Stage::Thaw, &["a"], "w1", thawed()), T + 50);
    assert!(s.events.is_empty() && s.commands.is_empty());
    assert_eq!(&before, c2.state());
}

#[test]
fn requests_are_idempotent_and_validated() {
    let mut core = Core::new(config());
    let (job, _) = request(&mut core, "r1", &["a"], 1, T);
    let (_, again) = request(&mut core, "r1", &["a"], 2, T + 1);
    assert_eq!(again, Reply::Accepted { job, existing: true });
    let (_, r) = request(&mut core, "r2", &["nope"], 3, T);
    assert!(
        matches!(
            r,
            Reply::Rejected {
                code: "unknown_target",
                ..
            }
        ),
        "{r:?}"
    );
    let (_, r) = request(&mut core, "r3", &["a", "z"], 4, T);
    assert!(
        matches!(
            r,
            Reply::Rejected {
                code: "group_spans_provider_pools",
                ..
            }
        ),
        "{r:?}"
    );
    let r = core.handle(
        Input::Cancel {
            job: JobId::from_parts(1, 1),
            reason: "x".into(),
        },
        T,
    );
    assert!(matches!(
        r.reply,
        Reply::Rejected {
            code: "unknown_job",
            ..
        }
    ));
}

#[test]
fn a_request_id_reused_for_other_targets_or_kind_is_refused() {
    let mut core = Core::new(config());
    let (job, _) = request(&mut core, "g1", &["a", "b"], 1, T);
    // The same group in another order is the same request.
    let (_, again) = request(&mut core, "g1", &["b", "a"], 2, T + 1);
    assert_eq!(again, Reply::Accepted { job, existing: true });
    // Before: a 202 for job `job`, which does not include c.
    for other in [&["a", "c"][..], &["a"], &["a", "b", "c"], &["a", "a"], &["nope"]] {
        let (_, r) = request(&mut core, "g1", other, 3, T + 2);
        match r {
            Reply::Rejected {
                code: "request_id_in_use",
                message,
            } => assert!(message.contains(&job.to_string()), "{message}"),
            r => panic!("{other:?}: {r:?}"),
        }
    }
    let req = SnapshotRequest {
        schema_version: SCHEMA_VERSION,
        request_id: RequestId::from("g1"),
        targets: vec![TargetId::from("a"), TargetId::from("b")],
        kind: SnapshotKind::Copy,
    };
    let r = core.handle(
        Input::Request {
            req,
            origin: "test".into(),
            new_job: JobId::from_parts(T + 3, 4),
        },
        T + 3,
    );
    assert!(
        matches!(
            r.reply,
            Reply::Rejected {
                code: "request_id_in_use",
                ..
            }
        ),
        "{:?}",
        r.reply
    );
    assert!(r.events.is_empty(), "a refused request records nothing");
}

#[test]
fn a_cancel_reason_is_stored_bounded() {
    let mut core = Core::new(config());
    let (j1, _) = request(&mut core, "r1", &["a"], 1, T);
    let s = core.handle(
        Input::Cancel {
            job: j1,
            reason: "é".repeat(1 << 20),
        },
        T + 1,
    );
    let stored = s
        .events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::CancelRequested { reason } => Some(reason.clone()),
            _ => None,
        })
        .expect("a cancel_requested event");
    let max = recman_events::wire::MAX_REASON_LEN;
    assert!(
        stored.len() <= max && stored.len() >= max - 1,
        "2 MiB of reason kept as {} bytes",
        stored.len()
    );
    assert!(stored.chars().all(|c| c == 'é'), "cut on a character boundary");
}

#[test]
fn fifo_per_target_and_a_group_waits_for_all_its_targets() {
    let mut core = Core::new(config());
    let (j1, _) = request(&mut core, "r1", &["a"], 1, T);
    let (j2, _) = request(&mut core, "r2", &["a", "b"], 2, T);
    let (j3, _) = request(&mut core, "r3", &["b"], 3, T);
    let st = |c: &Core, j| c.state().job(&j).map(|j| j.state);
    assert_eq!(st(&core, j1), Some(JobState::Freezing));
    assert_eq!(st(&core, j2), Some(JobState::Queued));
    // j3 is behind j2 on b: FIFO, even though b is idle.
    assert_eq!(st(&core, j3), Some(JobState::Queued));
    let s = core.handle(
        Input::Cancel {
            job: j1,
            reason: "stop".into(),
        },
        T + 1,
    );
    // j1 was freezing: thaw first, then cancelled.
    assert_eq!(kinds(&s.events), ["cancel_requested", "stage_started"]);
    let s = core.handle(rep(j1, 1, Stage::Thaw, &["a"], "w", thawed()), T + 2);
    assert_eq!(
        kinds(&s.events),
        ["step_succeeded", "cancelled", "attempt_started", "stage_started"]
    );
    assert_eq!(s.events[2].job, j2);
    assert_eq!(s.commands.len(), 2, "the group freezes both targets in parallel");
}

#[test]
fn a_failed_group_freeze_thaws_the_frozen_member_then_retries() {
    let mut core = Core::new(config());
    let (j, _) = request(&mut core, "r1", &["a", "b"], 1, T);
    core.handle(rep(j, 1, Stage::Freeze, &["a"], "wa", frozen()), T + 1);
    let s = core.handle(rep(j, 1, Stage::Freeze, &["b"], "wb", err(true)), T + 2);
    assert_eq!(kinds(&s.events), ["step_failed", "stage_started"]);
    assert!(s.commands.iter().all(|c| c.command.stage == Stage::Thaw));
    assert!(s
        .commands
        .iter()
        .any(|c| c.command.targets == vec![TargetId::from("a")]));
    // b's freeze failed but may have landed: both are thawed; then the retry.
    assert_eq!(s.commands.len(), 2);
    let s = core.handle(rep(j, 1, Stage::Thaw, &["a"], "wa", thawed()), T + 3);
    assert_eq!(kinds(&s.events), ["step_succeeded"]);
    let s = core.handle(rep(j, 1, Stage::Thaw, &["b"], "wb", thawed()), T + 3);
    assert_eq!(kinds(&s.events), ["step_succeeded", "retry_scheduled"]);
    assert!(
        matches!(&s.events[1].body, EventBody::RetryScheduled { next_attempt: 2, reason, .. }
            if reason == "freeze boom: b: it broke"),
        "{:?}",
        s.events[1].body
    );
    let due = core.next_deadline().expect("retry timer");
    let s = core.handle(Input::TimerFired, due);
    assert_eq!(kinds(&s.events), ["attempt_started", "stage_started"]);
    assert_eq!(core.state().job(&j).map(|j| j.attempt), Some(2));
    // A report of attempt 1 is stale now.
    let before = core.state().clone();
    let s = core.handle(rep(j, 1, Stage::Freeze, &["a"], "wa", frozen()), due + 1);
    assert!(s.events.is_empty());
    assert_eq!(&before, core.state());
}

/// A retry never runs under an attempt number already used (its snapshot
/// name would be the earlier attempt's), even when the record of the retry
/// says otherwise (an old or damaged log): the attempt after `n` is `n + 1`.
#[test]
fn a_retry_never_reuses_an_attempt_number() {
    let mut core = Core::new(config());
    let (j, _) = request(&mut core, "r1", &["a"], 1, T);
    let failed = core.handle(rep(j, 1, Stage::Freeze, &["a"], "wa", err(true)), T + 1);
    let thawed = core.handle(rep(j, 1, Stage::Thaw, &["a"], "wa", thawed()), T + 2);
    assert_eq!(kinds(&thawed.events), ["step_succeeded", "retry_scheduled"]);
    let due = core.next_deadline().expect("retry timer");
    // The same history in another core, its retry recorded as "attempt 1".
    let mut again = Core::new(config());
    request(&mut again, "r1", &["a"], 1, T);
    for e in failed.events.iter().chain(&thawed.events) {
        let mut e = e.clone();
        if let EventBody::RetryScheduled { next_attempt, .. } = &mut e.body {
            *next_attempt = 1;
        }
        again.apply(&e);
    }
    let s = again.handle(Input::TimerFired, due);
    assert_eq!(kinds(&s.events), ["attempt_started", "stage_started"]);
    assert_eq!(again.state().job(&j).map(|j| j.attempt), Some(2));
}

/// Issue 12 item 1: a freeze that failed may have landed (a hook that froze
/// the application, then exited non-zero): the engine thaws it, back at the
/// worker that tried, before the job fails.
#[test]
fn a_failed_freeze_is_thawed_before_the_job_fails() {
    let mut core = Core::new(config());
    let (j, _) = request(&mut core, "r1", &["a"], 1, T);
    let s = core.handle(rep(j, 1, Stage::Freeze, &["a"], "wa", err(false)), T + 1);
    assert_eq!(kinds(&s.events), ["step_failed", "stage_started"]);
    assert_eq!(s.commands.len(), 1);
    assert_eq!(s.commands[0].command.stage, Stage::Thaw);
    assert!(
        matches!(&s.commands[0].to, Destination::Worker { worker, .. } if worker.as_str() == "wa"),
        "{:?}",
        s.commands[0].to
    );
    let s = core.handle(rep(j, 1, Stage::Thaw, &["a"], "wa", thawed()), T + 2);
    assert_eq!(kinds(&s.events), ["step_succeeded", "failed"]);
    // The job's timeline is closed: every stage has its end.
    let timeline = &core.state().job(&j).unwrap().timeline;
    assert!(
        !timeline.is_empty() && timeline.iter().all(|e| e.ended_ms.is_some()),
        "{timeline:?}"
    );
}

/// A freeze that never answers is of no use after the freeze budget (the
/// snapshot must come before the forced thaw) and may have landed: its stage
/// times out then, before the writers' watchdog, and the engine thaws.
#[test]
fn a_freeze_that_never_answers_times_out_within_the_freeze_budget() {
    let mut core = Core::new(config());
    let (j, _) = request(&mut core, "r1", &["a"], 1, T);
    let job = core.state().job(&j).expect("job");
    assert_eq!(job.stage_deadline_ms, Some(T + 8_000));
    assert!(T + 8_000 < job.watchdog_at_ms);
    let s = core.handle(Input::TimerFired, T + 8_000);
    assert_eq!(kinds(&s.events), ["stage_timed_out", "stage_started"]);
    assert_eq!(s.commands[0].command.stage, Stage::Thaw);
}

/// Issue 25 item 3: a writer with a 60 s timeout (a PostgreSQL flush that
/// waits for the WAL archive) is not abandoned by a shorter engine deadline.
#[test]
fn stage_deadlines_follow_the_steps_configured_timeout() {
    let mut cfg = config();
    let mut pg = TargetPolicy::new("host.pg", "host.pg");
    pg.writer_timeout_ms = 60_000;
    pg.provider_timeout_ms = 100_000;
    pg.freeze_limit_ms = 120_000;
    pg.thaw_margin_ms = 24_000;
    cfg.targets.insert(TargetId::from("pg"), pg);
    // A group waits for its slowest member's own timeout, plus the grace.
    let p = cfg.job_policy(&[TargetId::from("a"), TargetId::from("pg")]);
    assert_eq!(p.stage_timeout_ms, 60_000 + recman_core::policy::STAGE_GRACE_MS);
    assert_eq!(
        p.snapshot_timeout_ms,
        100_000 + recman_core::policy::STAGE_GRACE_MS
    );
    assert_eq!(
        cfg.job_policy(&[TargetId::from("a")]).stage_timeout_ms,
        30_000,
        "the default"
    );

    let mut core = Core::new(cfg);
    let (j, _) = request(&mut core, "r1", &["pg"], 1, T);
    assert_eq!(
        core.state().job(&j).expect("job").stage_deadline_ms,
        Some(T + 65_000)
    );
    core.handle(rep(j, 1, Stage::Freeze, &["pg"], "w1", frozen()), T + 10);
    let snapshot_deadline = core.state().job(&j).expect("job").stage_deadline_ms;
    assert_eq!(snapshot_deadline, Some(T + 10 + 105_000));
    core.handle(rep(j, 1, Stage::Snapshot, &["pg"], "w1", snap(j, 1)), T + 20);
    core.handle(rep(j, 1, Stage::Thaw, &["pg"], "w1", thawed()), T + 30);
    let job = core.state().job(&j).expect("job");
    assert_eq!(job.stage, Some(Stage::FlushLogs));
    assert_eq!(job.stage_deadline_ms, Some(T + 30 + 65_000));
    // 45 s into the flush (past the old fixed 30 s): no timeout, and the
    // worker's late answer completes the job.
    let s = core.handle(Input::TimerFired, T + 30 + 45_000);
    assert!(
        !kinds(&s.events).contains(&"stage_timed_out"),
        "{:?}",
        kinds(&s.events)
    );
    let s = core.handle(
        rep(j, 1, Stage::FlushLogs, &["pg"], "w1", ok(StepDetail::Flushed)),
        T + 30 + 45_000,
    );
    assert_eq!(kinds(&s.events), ["step_succeeded", "completed"]);
    // Past the writer's timeout and the grace, the stage does time out.
    let mut core2 = Core::new(core_cfg_with_pg());
    let (j2, _) = request(&mut core2, "r2", &["pg"], 2, T);
    core2.handle(rep(j2, 1, Stage::Freeze, &["pg"], "w1", frozen()), T + 10);
    core2.handle(rep(j2, 1, Stage::Snapshot, &["pg"], "w1", snap(j2, 1)), T + 20);
    core2.handle(rep(j2, 1, Stage::Thaw, &["pg"], "w1", thawed()), T + 30);
    let s = core2.handle(Input::TimerFired, T + 30 + 65_000);
    assert!(
        kinds(&s.events).contains(&"stage_timed_out"),
        "{:?}",
        kinds(&s.events)
    );
}

fn core_cfg_with_pg() -> CoreConfig {
    let mut cfg = config();
    let mut pg = TargetPolicy::new("host.pg", "host.pg");
    pg.writer_timeout_ms = 60_000;
    pg.freeze_limit_ms = 120_000;
    pg.thaw_margin_ms = 24_000;
    cfg.targets.insert(TargetId::from("pg"), pg);
    cfg
}

#[test]
fn the_freeze_limit_forces_the_thaw_and_a_late_snapshot_is_recorded_and_deleted() {
    let mut core = Core::new(config());
    let (j, _) = request(&mut core, "r1", &["a"], 1, T);
    let s = core.handle(rep(j, 1, Stage::Freeze, &["a"], "wa", frozen()), T + 100);
    let snap_cmd = s
        .commands
        .iter()
        .find(|c| c.command.stage == Stage::Snapshot)
        .expect("snapshot command");
    let due = core.next_deadline().expect("deadline");
    assert_eq!(due, T + 100 + 8_000);
    assert_eq!(
        snap_cmd.command.thaw_deadline_ms,
        Some(due),
        "the provider's worker is told when the writers are thawed"
    );
    let s = core.handle(Input::TimerFired, due);
    assert_eq!(kinds(&s.events), ["forced_thaw", "stage_started"]);
    let s = core.handle(rep(j, 1, Stage::Snapshot, &["a"], "p", snap(j, 1)), due + 5);
    assert_eq!(kinds(&s.events), ["late_snapshot", "prune_requested"]);
    assert_eq!(s.commands.len(), 1);
    assert_eq!(s.commands[0].command.stage, Stage::Prune);
    assert_eq!(s.commands[0].command.prune, vec![snapshot_name(j, 1)]);
    assert!(core
        .state()
        .job(&j)
        .is_some_and(|j| j.snapshot.is_none() && j.late_names == vec![snapshot_name(j.id, 1)]));
    // The same report again: nothing new.
    let s = core.handle(rep(j, 1, Stage::Snapshot, &["a"], "p", snap(j, 1)), due + 6);
    assert!(s.events.is_empty(), "{:?}", kinds(&s.events));
    let s = core.handle(rep(j, 1, Stage::Thaw, &["a"], "wa", thawed()), due + 7);
    assert_eq!(kinds(&s.events), ["step_succeeded", "retry_scheduled"]);
    let s = core.handle(
        rep(
            j,
            1,
            Stage::Prune,
            &["a"],
            "p",
            ok(StepDetail::Pruned {
                deleted: vec![snapshot_name(j, 1)],
                failed: vec![],
            }),
        ),
        due + 8,
    );
    assert_eq!(kinds(&s.events), ["snapshot_deleted"]);
    assert!(core.state().prunes.is_empty());
}

/// Issue 12 item 2: an earlier attempt's snapshot reporting during the next
/// attempt was dropped and stayed on the storage, in no event.
#[test]
fn an_earlier_attempts_snapshot_is_recorded_late_and_deleted() {
    let mut core = Core::new(config());
    let (j, _) = request(&mut core, "r1", &["a"], 1, T);
    core.handle(rep(j, 1, Stage::Freeze, &["a"], "wa", frozen()), T + 1);
    let s = core.handle(rep(j, 1, Stage::Snapshot, &["a"], "p", err(true)), T + 2);
    assert_eq!(kinds(&s.events), ["step_failed", "stage_started"]);
    let s = core.handle(rep(j, 1, Stage::Thaw, &["a"], "wa", thawed()), T + 3);
    // The attempt may have left its snapshot: deleted by name.
    assert_eq!(
        kinds(&s.events),
        ["step_succeeded", "prune_requested", "retry_scheduled"]
    );
    let due = core.next_deadline().expect("retry");
    core.handle(Input::TimerFired, due);
    assert_eq!(core.state().job(&j).map(|j| j.attempt), Some(2));
    let s = core.handle(rep(j, 1, Stage::Snapshot, &["a"], "p", snap(j, 1)), due + 1);
    assert_eq!(kinds(&s.events), ["late_snapshot"], "already asked to delete");
    assert_eq!(s.events[0].job, j);
}

/// Issue 12 item 5: every prune outcome is an event; a retryable failure or
/// no answer is asked again, at most `MAX_PRUNE_TRIES` times.
#[test]
fn prune_failures_and_silence_are_recorded_and_retried() {
    let mut cfg = config();
    if let Some(p) = cfg.targets.get_mut(&TargetId::from("a")) {
        p.keep_last = Some(1);
    }
    let mut core = Core::new(cfg);
    let mut jobs = Vec::new();
    for n in 0..2u64 {
        let now = T + n * 1000;
        let (j, _) = request(&mut core, &format!("r{n}"), &["a"], n as u128 + 1, now);
        jobs.push(j);
        core.handle(rep(j, 1, Stage::Freeze, &["a"], "wa", frozen()), now + 1);
        core.handle(rep(j, 1, Stage::Snapshot, &["a"], "p", snap(j, 1)), now + 2);
        core.handle(rep(j, 1, Stage::Thaw, &["a"], "wa", thawed()), now + 3);
        core.handle(
            rep(j, 1, Stage::FlushLogs, &["a"], "wa", ok(StepDetail::Flushed)),
            now + 4,
        );
    }
    let old = snapshot_name(jobs[0], 1);
    let failed = |retryable| {
        ok(StepDetail::Pruned {
            deleted: vec![],
            failed: vec![recman_events::PruneFailure {
                name: old.clone(),
                error: StepError::new("3par_has_child", "has a child", retryable),
            }],
        })
    };
    let s = core.handle(
        rep(jobs[1], 1, Stage::Prune, &["a"], "p", failed(true)),
        T + 2_000,
    );
    assert_eq!(kinds(&s.events), ["prune_failed"]);
    assert_eq!(s.events[0].job, jobs[0], "recorded under the job that took it");
    assert_eq!(core.state().prunes.len(), 1, "retryable: still asked for");
    // No answer to the next tries: asked again each time, then given up.
    let mut asked = 1;
    loop {
        let due = core.next_deadline().expect("prune retry");
        let s = core.handle(Input::TimerFired, due);
        match kinds(&s.events).as_slice() {
            ["prune_requested"] => {
                asked += 1;
                assert_eq!(s.commands.len(), 1);
                assert_ne!(s.commands[0].command.message_id, "", "{:?}", s.commands[0]);
            }
            ["prune_failed"] => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(asked, recman_core::MAX_PRUNE_TRIES);
    assert!(core.state().prunes.is_empty());
    assert_eq!(core.next_deadline(), None, "nothing left to retry");
    assert_eq!(
        core.state().catalog.get(&TargetId::from("a")).map(|c| c.len()),
        Some(2),
        "not deleted: still listed"
    );
    // The next start asks for it again (retention catches up).
    let s = core.start(T + 100_000);
    assert_eq!(kinds(&s.events), ["prune_requested"]);
    assert_eq!(s.commands.len(), 1);
    // A non-retryable failure ends the asking at once.
    let s = core.handle(
        rep(jobs[1], 1, Stage::Prune, &["a"], "p", failed(false)),
        T + 100_001,
    );
    assert_eq!(kinds(&s.events), ["prune_failed"]);
    assert!(core.state().prunes.is_empty());
}

/// Issue 12 item 2: after a restart, what fell due while the engine was
/// down is decided before anything is sent again: a snapshot whose thaw
/// deadline passed is never asked for again; the thaw is.
#[test]
fn on_start_timers_are_decided_before_commands_are_sent_again() {
    let mut core = Core::new(config());
    let (j, _) = request(&mut core, "r1", &["a"], 1, T);
    core.handle(rep(j, 1, Stage::Freeze, &["a"], "wa", frozen()), T + 1);
    let before = core.recover_commands();
    assert!(before.iter().any(|c| c.command.stage == Stage::Snapshot));
    let s = core.start(T + 60_000);
    let k = kinds(&s.events);
    assert_eq!(k.first(), Some(&"forced_thaw"), "{k:?}");
    assert_eq!(k.last(), Some(&"stage_started"), "{k:?}");
    assert!(
        s.commands.iter().all(|c| c.command.stage == Stage::Thaw),
        "{:?}",
        s.commands
    );
    assert_eq!(s.commands.len(), 1);
}

#[test]
fn thaw_failures_are_retried_then_fail_loudly() {
    let mut core = Core::new(config());
    let (j, _) = request(&mut core, "r1", &["a"], 1, T);
    core.handle(rep(j, 1, Stage::Freeze, &["a"], "wa", frozen()), T + 1);
    core.handle(rep(j, 1, Stage::Snapshot, &["a"], "p", snap(j, 1)), T + 2);
    let mut ids = std::collections::BTreeSet::new();
    let mut last = Vec::new();
    for i in 0..20 {
        let s = core.handle(rep(j, 1, Stage::Thaw, &["a"], "wa", err(true)), T + 3 + i);
        for c in &s.commands {
            assert!(
                ids.insert(c.command.message_id.clone()),
                "each thaw try has its own id"
            );
        }
        last = kinds(&s.events);
        if core.state().job(&j).is_some_and(|j| j.state.is_terminal()) {
            break;
        }
    }
    assert_eq!(
        last,
        ["step_failed", "prune_requested", "failed"],
        "the attempt's snapshot is deleted (it is no restore point), then the job fails"
    );
    let reason = core
        .state()
        .job(&j)
        .and_then(|j| j.outcome.clone())
        .unwrap_or_default();
    assert!(reason.starts_with("thaw_failed"), "{reason}");
}

#[test]
fn retention_prunes_beyond_keep_last() {
    let mut cfg = config();
    if let Some(p) = cfg.targets.get_mut(&TargetId::from("a")) {
        p.keep_last = Some(1);
    }
    let mut core = Core::new(cfg);
    let mut prune = Vec::new();
    let mut jobs = Vec::new();
    for n in 0..2u64 {
        let now = T + n * 1000;
        let (j, _) = request(&mut core, &format!("r{n}"), &["a"], n as u128 + 1, now);
        jobs.push(j);
        core.handle(rep(j, 1, Stage::Freeze, &["a"], "wa", frozen()), now + 1);
        core.handle(rep(j, 1, Stage::Snapshot, &["a"], "p", snap(j, 1)), now + 2);
        core.handle(rep(j, 1, Stage::Thaw, &["a"], "wa", thawed()), now + 3);
        let s = core.handle(
            rep(j, 1, Stage::FlushLogs, &["a"], "wa", ok(StepDetail::Flushed)),
            now + 4,
        );
        prune.extend(s.commands);
    }
    assert_eq!(prune.len(), 1);
    assert_eq!(prune[0].command.prune, vec![snapshot_name(jobs[0], 1)]);
    let s = core.handle(
        rep(
            jobs[1],
            1,
            Stage::Prune,
            &["a"],
            "p",
            ok(StepDetail::Pruned {
                deleted: prune[0].command.prune.clone(),
                failed: vec![],
            }),
        ),
        T + 5000,
    );
    assert_eq!(kinds(&s.events), ["snapshot_deleted"]);
    assert_eq!(s.events[0].job, jobs[0]);
    assert_eq!(
        core.state().catalog.get(&TargetId::from("a")).map(|c| c.len()),
        Some(1)
    );
}

/// The core must stay sans-IO: no runtime, no disk, no clock, in any of its
/// files (the job state machine, the worker core, the simulator). The crate
/// boundary enforces the dependencies (`tests/run` checks `cargo tree`); this
/// catches the standard library's clock and file system too.
#[test]
fn the_core_never_touches_io_or_clocks() {
    fn walk(dir: &std::path::Path, n: &mut usize) {
        for entry in std::fs::read_dir(dir).expect("core/src is readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, n);
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable source");
            *n += 1;
            for bad in [
                "tokio",
                "std::fs",
                "Instant::now",
                "SystemTime::now",
                "Timestamp::now",
                "Zoned::now",
                "TimeZone::system",
            ] {
                assert!(!text.contains(bad), "{} mentions {bad}", path.display());
            }
        }
    }
    let mut n = 0;
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut n,
    );
    assert!(n >= 8, "only {n} files under core/src");
}

// ---------- property tests ----------

#[derive(Clone, Debug)]
enum Op {
    Request(u8, u8),
    Report {
        pick: u8,
        stale: bool,
        stage: u8,
        target: u8,
        outcome: u8,
    },
    Timer(u16),
    Cancel(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..12, 1u8..8).prop_map(|(r, m)| Op::Request(r, m)),
        8 => (any::<u8>(), prop::bool::weighted(0.15), 0u8..8, 0u8..3, 0u8..10)
            .prop_map(|(pick, stale, stage, target, outcome)| Op::Report { pick, stale, stage, target, outcome }),
        2 => (0u16..12_000).prop_map(Op::Timer),
        1 => any::<u8>().prop_map(Op::Cancel),
    ]
}

fn to_input(core: &Core, op: &Op, now: u64, n: u128) -> Input {
    let names = ["a", "b", "c"];
    let jobs: Vec<JobId> = core.state().jobs.keys().copied().collect();
    match op {
        Op::Request(r, mask) => Input::Request {
            req: SnapshotRequest {
                schema_version: 1,
                request_id: RequestId::new(format!("r{r}")),
                targets: (0..3)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| TargetId::from(names[i]))
                    .collect(),
                kind: SnapshotKind::Full,
            },
            origin: "prop".into(),
            new_job: JobId::from_parts(now, n),
        },
        Op::Report {
            pick,
            stale,
            stage,
            target,
            outcome,
        } => {
            let job = jobs
                .get(*pick as usize % jobs.len().max(1))
                .copied()
                .unwrap_or(JobId::from_parts(1, 1));
            let j = core.state().job(&job);
            let attempt = j.map(|j| j.attempt).unwrap_or(1) + u32::from(*stale);
            let current = j.and_then(|j| j.stage).unwrap_or(Stage::Freeze);
            let stage = match stage {
                0 => Stage::Freeze,
                1 => Stage::Snapshot,
                2 => Stage::Thaw,
                3 => Stage::FlushLogs,
                _ => current,
            };
            let targets: Vec<TargetId> = match (stage, j) {
                (Stage::Snapshot, Some(j)) => j.targets.clone(),
                (_, Some(j)) => vec![j.targets[*target as usize % j.targets.len()].clone()],
                _ => vec!["a".into()],
            };
            let out = match (outcome, stage) {
                (0, _) => err(true),
                (1, _) => err(false),
                (2, Stage::Thaw) => ok(StepDetail::Thawed {
                    freeze_window_us: 1,
                    by_watchdog: true,
                }),
                (_, Stage::Freeze) => frozen(),
                (_, Stage::Snapshot) => snap(job, attempt),
                (_, Stage::Thaw) => thawed(),
                _ => ok(StepDetail::Flushed),
            };
            Input::Report(Report {
                schema_version: 1,
                message_id: "p".into(),
                job,
                attempt,
                stage,
                targets,
                worker: "w".into(),
                duration_us: 1,
                outcome: out,
            })
        }
        Op::Timer(_) => Input::TimerFired,
        Op::Cancel(pick) => Input::Cancel {
            job: jobs
                .get(*pick as usize % jobs.len().max(1))
                .copied()
                .unwrap_or(JobId::from_parts(1, 1)),
            reason: "prop".into(),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Replay equals live state; stale reports change nothing; one active job per
    /// target; every active job has a deadline; decide is deterministic.
    #[test]
    fn random_inputs_keep_the_core_sound(ops in prop::collection::vec(op(), 1..120)) {
        let cfg = config();
        let mut core = Core::new(cfg.clone());
        let mut log = Vec::new();
        let mut now = T;
        for (n, op) in ops.iter().enumerate() {
            now += match op { Op::Timer(d) => *d as u64, _ => 7 };
            if let Op::Timer(_) = op {
                if let Some(d) = core.next_deadline() { now = now.max(d); }
            }
            let input = to_input(&core, op, now, n as u128 + 1);
            let stale = matches!(op, Op::Report { stale: true, .. });
            let before = core.state().clone();
            // decide is a pure function of its arguments.
            let (e1, r1) = decide(core.state(), &cfg, &mut Rng::new(9), &input, now);
            let (e2, r2) = decide(core.state(), &cfg, &mut Rng::new(9), &input, now);
            prop_assert_eq!(&e1, &e2);
            prop_assert_eq!(r1, r2);
            let step = core.handle(input, now);
            if stale {
                // A stale report changes nothing, but a snapshot it names is
                // recorded as late (once) and deleted.
                let late = step.events.iter().all(|e| matches!(
                    e.body,
                    EventBody::LateSnapshot { .. } | EventBody::PruneRequested { .. }
                ));
                prop_assert!(late, "stale report produced {:?}", step.events);
                if step.events.is_empty() {
                    prop_assert_eq!(&before, core.state());
                }
            }
            log.extend(step.events);
            for t in ["a", "b", "c"] {
                let active = core.state().active.iter()
                    .filter(|j| core.state().job(j).is_some_and(|j| j.targets.contains(&TargetId::from(t))))
                    .count();
                prop_assert!(active <= 1, "{} jobs active on {}", active, t);
            }
            for id in &core.state().active {
                let j = core.state().job(id).expect("active job exists");
                prop_assert!(j.deadline().is_some(), "active job {:?} has no deadline", j.state);
            }
        }
        let mut s = State::default();
        for e in &log { evolve(&mut s, e); }
        prop_assert_eq!(&s, core.state());
    }
}

#[test]
fn unused_helpers_compile() {
    let _ = EventBody::Cancelled;
}

/// The delay before a retry is exponential with equal jitter: for the
/// attempt's bound `d` (base × 2^(attempt-1), at most the maximum) it lies
/// in `[d/2, d]`, whatever the draw.
#[test]
fn retry_backoff_stays_within_half_to_all_of_its_bound() {
    let p = recman_core::JobPolicy {
        freeze_limit_ms: 10_000,
        thaw_margin_ms: 1_000,
        stage_timeout_ms: 30_000,
        snapshot_timeout_ms: 30_000,
        max_retries: 5,
        backoff_base_ms: 1_000,
        backoff_max_ms: 60_000,
    };
    for seed in 0..50 {
        let mut rng = Rng::new(seed);
        for attempt in 1..=10u32 {
            let d = (1_000u64 << (attempt - 1)).min(60_000);
            let b = p.backoff_ms(attempt, &mut rng);
            assert!(
                d / 2 <= b && b <= d,
                "attempt {attempt}, seed {seed}: {b} not in [{}, {d}]",
                d / 2
            );
        }
    }
}

/// An old log (before `late_snapshot` existed) records a snapshot that came
/// after its job ended as a `step_succeeded`: the fold takes it as the
/// job's late snapshot only for the job's own attempt and only when the
/// job has none; another attempt's, or a second one, moves nothing.
#[test]
fn an_old_logs_snapshot_after_the_end_counts_only_for_its_own_attempt() {
    let mut core = Core::new(config());
    let (j, _) = request(&mut core, "r1", &["a"], 1, T);
    core.handle(rep(j, 1, Stage::Freeze, &["a"], "wa", err(false)), T + 1);
    core.handle(rep(j, 1, Stage::Thaw, &["a"], "wa", thawed()), T + 2);
    assert_eq!(core.state().job(&j).map(|j| j.state), Some(JobState::Failed));
    let late = |attempt: u32, name: &str| recman_events::Event {
        at_ms: T + 3,
        job: j,
        body: EventBody::StepSucceeded {
            stage: Stage::Snapshot,
            attempt,
            target: TargetId::from("a"),
            worker: WorkerId::from("wa"),
            duration_us: 1,
            detail: StepDetail::Snapshot(SnapshotInfo {
                name: name.into(),
                provider: "copy".into(),
                location: "/x".into(),
                size_bytes: None,
                existed: false,
                array_expiry: None,
            }),
        },
        by: String::new(),
    };
    core.apply(&late(2, "other-attempt"));
    assert!(
        core.state().job(&j).unwrap().snapshot.is_none(),
        "another attempt's"
    );
    core.apply(&late(1, "first"));
    core.apply(&late(1, "second"));
    let job = core.state().job(&j).unwrap();
    assert!(job.late_snapshot);
    assert_eq!(job.snapshot.as_ref().map(|s| s.name.as_str()), Some("first"));
}
