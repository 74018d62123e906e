//! The verify stage driven through the core: a completed job's point is
//! verified on its target's verify pool once the target is idle; a job that
//! arrives meanwhile waits and starts when the verification ends; a failure
//! marks the point and keeps the snapshot; retention keeps the newest
//! verified point; a silent verifier times out; replay is exact.

mod support;

use std::collections::BTreeMap;

use support::{kinds, ok, rep, Run};

use recman_core::verify::{Status, VerifyPolicy, VerifySchedule};
use recman_core::{CoreConfig, Destination, Input, JobState, Reply, TargetPolicy};
use recman_events::{
    snapshot_name, EventBody, JobId, Outcome, PoolName, Stage, StepDetail, StepError, TargetId,
};

const T: u64 = 1_000_000;

fn config(keep_last: Option<u32>, schedule: VerifySchedule) -> CoreConfig {
    let mut p = TargetPolicy::new("host.a", "array.x");
    p.keep_last = keep_last;
    p.verify = Some(VerifyPolicy {
        pool: Some(PoolName::from("host.verify")),
        timeout_ms: 60_000,
        schedule,
        ..VerifyPolicy::new("checksum")
    });
    CoreConfig {
        targets: BTreeMap::from([(TargetId::from("a"), p)]),
        schedules: Vec::new(),
        seed: 1,
        mutation: None,
        bounds: Default::default(),
    }
}

impl Run {
    fn status(&self, j: JobId) -> Status {
        self.core
            .state()
            .verify
            .record(&TargetId::from("a"), &snapshot_name(j, 1))
            .map(|r| r.status)
            .unwrap_or_default()
    }
}

fn verified(checked: &str) -> Outcome {
    ok(StepDetail::Verified {
        checked: checked.into(),
    })
}

#[test]
fn a_completed_point_is_verified_off_the_freeze_window_and_a_new_job_waits() {
    let mut r = Run::new(config(None, VerifySchedule::Each));
    let j1 = r.request(1, T);
    let s = r.walk(j1, T);
    let k = kinds(&s.events);
    let done = k.iter().position(|k| *k == "completed").expect("completed");
    let started = k
        .iter()
        .position(|k| *k == "verify_started")
        .expect("verify started");
    assert!(
        done < started,
        "verification starts after the snapshot is recorded: {k:?}"
    );
    let cmd = s
        .commands
        .iter()
        .find(|o| o.command.stage == Stage::Verify)
        .expect("a verify command");
    assert_eq!(cmd.to, Destination::Pool(PoolName::from("host.verify")));
    assert_eq!(cmd.command.snapshot_name, Some(snapshot_name(j1, 1)));
    assert_eq!(cmd.command.job, j1);
    assert_eq!(
        cmd.command.thaw_deadline_ms,
        Some(T + 4 + 60_000),
        "the worker stops at its timeout"
    );
    assert_eq!(r.status(j1), Status::Running);

    // A job requested while the target is being verified waits: no freeze.
    let j2 = r.request(2, T + 10);
    assert_eq!(r.core.state().job(&j2).map(|j| j.state), Some(JobState::Queued));
    let s = r.handle(rep(j1, 1, Stage::Verify, verified("3 files, 12 bytes")), T + 20);
    assert_eq!(kinds(&s.events), ["verified", "attempt_started", "stage_started"]);
    assert!(s.commands.iter().any(|o| o.command.stage == Stage::Freeze));
    assert_eq!(r.status(j1), Status::Verified);
    let rec = r
        .core
        .state()
        .verify
        .record(&TargetId::from("a"), &snapshot_name(j1, 1));
    assert_eq!(
        rec.and_then(|r| r.detail.clone()).as_deref(),
        Some("3 files, 12 bytes")
    );
    // A stale report (an earlier run, a redelivery) changes nothing.
    let s = r.handle(rep(j1, 1, Stage::Verify, verified("again")), T + 21);
    assert!(s.events.is_empty());
    r.replay();
}

#[test]
fn a_failed_verification_keeps_the_snapshot_and_retention_keeps_the_newest_verified() {
    let mut r = Run::new(config(Some(1), VerifySchedule::Each));
    let j1 = r.request(1, T);
    r.walk(j1, T);
    r.handle(rep(j1, 1, Stage::Verify, verified("ok")), T + 10);
    let j2 = r.request(2, T + 100);
    let s = r.walk(j2, T + 100);
    // keep_last = 1 would prune j1's point; it is the newest verified one.
    assert!(
        !s.events
            .iter()
            .any(|e| matches!(&e.body, EventBody::PruneRequested { .. })),
        "{:?}",
        kinds(&s.events)
    );
    let error = StepError::new(
        "checksum_mismatch",
        "data/f2: bytes differ from the manifest",
        false,
    );
    let s = r.handle(rep(j2, 1, Stage::Verify, Outcome::Err { error }), T + 200);
    assert_eq!(kinds(&s.events), ["verify_failed"]);
    match &s.events[0].body {
        EventBody::VerifyFailed { error, .. } => assert!(error.message.contains("data/f2"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.status(j2), Status::Failed);
    assert_eq!(r.status(j1), Status::Verified);
    let names: Vec<&str> = r.core.state().catalog[&TargetId::from("a")]
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names.len(), 2, "a failed verification deletes nothing: {names:?}");
    r.replay();
}

#[test]
fn a_silent_verifier_times_out_and_an_operator_verifies_again() {
    let mut r = Run::new(config(None, VerifySchedule::Each));
    let j1 = r.request(1, T);
    r.walk(j1, T);
    let due = r.core.next_deadline().expect("the verification's deadline");
    assert_eq!(due, T + 4 + 60_000 + recman_core::policy::STAGE_GRACE_MS);
    let s = r.handle(Input::TimerFired, due);
    assert_eq!(kinds(&s.events), ["verify_failed"]);
    assert_eq!(r.status(j1), Status::Failed);
    let s = r.handle(
        Input::Verify {
            target: TargetId::from("a"),
            name: snapshot_name(j1, 1),
            origin: "cli".into(),
        },
        due + 10,
    );
    assert_eq!(
        s.reply,
        Reply::Accepted {
            job: j1,
            existing: false
        }
    );
    assert_eq!(kinds(&s.events), ["verify_requested", "verify_started"]);
    let cmd = s
        .commands
        .iter()
        .find(|o| o.command.stage == Stage::Verify)
        .expect("command");
    assert_eq!(cmd.command.attempt, 2, "the second run");
    r.handle(rep(j1, 2, Stage::Verify, verified("ok")), due + 20);
    assert_eq!(r.status(j1), Status::Verified);
    let s = r.handle(
        Input::Verify {
            target: TargetId::from("a"),
            name: "nope".into(),
            origin: "cli".into(),
        },
        due + 30,
    );
    assert!(matches!(
        s.reply,
        Reply::Rejected {
            code: "snapshot_not_found",
            ..
        }
    ));
    r.replay();
}

#[test]
fn newest_daily_verifies_the_newest_point_of_a_busy_day() {
    // a completes while b waits: a's verification cannot start; b's
    // point, of the same day, replaces it.
    let mut r2 = Run::new(config(None, VerifySchedule::NewestDaily));
    let a = r2.request(1, T);
    let b = r2.request(2, T + 1);
    let s = r2.walk(a, T + 10);
    assert!(
        !kinds(&s.events).contains(&"verify_started"),
        "b waits: no verification yet"
    );
    assert_eq!(r2.status(a), Status::Pending);
    let s = r2.walk(b, T + 20);
    assert!(kinds(&s.events).contains(&"verify_started"));
    assert_eq!(
        r2.status(a),
        Status::Unverified,
        "replaced by the newer point of the day"
    );
    assert_eq!(r2.status(b), Status::Running);
    r2.replay();
}

#[test]
fn rpo_counts_verified_points_only_when_configured() {
    // RPO 10 min; only verified points count.
    let mut cfg = config(None, VerifySchedule::Each);
    let p = cfg.targets.get_mut(&TargetId::from("a")).expect("a");
    p.rpo_ms = Some(600_000);
    p.rpo_verified = true;
    let mut r = Run::new(cfg);
    let s = r.handle(Input::Start, T);
    assert_eq!(kinds(&s.events), ["rpo_changed"]);
    assert_eq!(
        r.core.next_deadline(),
        Some(T + 600_000),
        "no point yet: due from the start"
    );

    // A completed but unverified point does not move the RPO.
    let j1 = r.request(1, T + 1_000);
    r.walk(j1, T + 1_000);
    assert_eq!(r.status(j1), Status::Running);
    // It fails verification: the RPO is breached at its time.
    let s = r.handle(
        rep(
            j1,
            1,
            Stage::Verify,
            Outcome::Err {
                error: StepError::new("checksum_mismatch", "x", false),
            },
        ),
        T + 2_000,
    );
    assert_eq!(kinds(&s.events), ["verify_failed"]);
    let s = r.handle(Input::TimerFired, T + 600_000);
    assert_eq!(
        kinds(&s.events),
        ["rpo_breached"],
        "an unverified point does not count"
    );

    // A second point completes: still breached (not verified yet) ...
    let j2 = r.request(2, T + 700_000);
    let s = r.walk(j2, T + 700_000);
    assert!(
        !kinds(&s.events).contains(&"rpo_restored"),
        "{:?}",
        kinds(&s.events)
    );
    // ... until its verification passes.
    let s = r.handle(rep(j2, 1, Stage::Verify, verified("ok")), T + 700_100);
    assert_eq!(kinds(&s.events), ["verified", "rpo_restored"]);
    let last_good = s.events.iter().find_map(|e| match &e.body {
        EventBody::RpoRestored { last_good_ms, .. } => Some(*last_good_ms),
        _ => None,
    });
    assert_eq!(
        last_good,
        Some(T + 700_004),
        "the point's time, not the verification's"
    );
    // The next breach is due the RPO after the verified point was cut.
    assert_eq!(r.core.next_deadline(), Some(T + 700_004 + 600_000));
    r.replay();
}

#[test]
fn rpo_counts_every_point_by_default() {
    let mut cfg = config(None, VerifySchedule::Each);
    cfg.targets.get_mut(&TargetId::from("a")).expect("a").rpo_ms = Some(600_000);
    let mut r = Run::new(cfg);
    r.handle(Input::Start, T);
    let s = r.handle(Input::TimerFired, T + 600_000);
    assert_eq!(kinds(&s.events), ["rpo_breached"]);
    let j1 = r.request(1, T + 700_000);
    let s = r.walk(j1, T + 700_000);
    let k = kinds(&s.events);
    assert!(
        k.contains(&"rpo_restored"),
        "a completed point restores it: {k:?}"
    );
    r.replay();
}

#[test]
fn an_operator_cannot_verify_a_target_without_a_verifier() {
    let mut cfg = config(None, VerifySchedule::Each);
    cfg.targets
        .insert(TargetId::from("b"), TargetPolicy::new("host.a", "array.x"));
    let mut r = Run::new(cfg);
    let s = r.handle(
        Input::Verify {
            target: TargetId::from("b"),
            name: "nope".into(),
            origin: "cli".into(),
        },
        T,
    );
    assert!(
        matches!(
            s.reply,
            Reply::Rejected {
                code: "verify_not_configured",
                ..
            }
        ),
        "{:?}",
        s.reply
    );
    assert!(s.events.is_empty());
}
