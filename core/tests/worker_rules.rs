//! The worker core's rules driven directly: one freeze per attempt, refusals
//! after the thaw, the deadline or while another attempt holds the target,
//! thaws that end only their own attempt's freeze, retention tombstones, and
//! the bounded memory.

use recman_core::worker::{
    freeze_deadline_ms, plan_freeze, plan_snapshot, plan_thaw, AttemptKey, Hold, Plan, TargetMemory,
    ThawPlan, ThawedBy,
};
use recman_events::{JobId, SnapshotKind, StepError, TargetId, WorkerId};

const NOW: u64 = 1_000_000;

fn key(n: u128, attempt: u32) -> AttemptKey {
    (JobId::from_parts(1, n), attempt)
}

fn hold(k: AttemptKey, deadline_ms: u64) -> Hold {
    Hold {
        job: k.0,
        attempt: k.1,
        kind: SnapshotKind::Full,
        worker: WorkerId::from("w1"),
        frozen_at_ms: NOW,
        deadline_ms,
    }
}

fn refused(p: Plan) -> String {
    match p {
        Plan::Refuse(e) => {
            assert!(e.retryable || e.code == "deleted", "{e:?}");
            e.code
        }
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn a_freeze_runs_once_per_attempt_and_a_redelivery_gets_the_first_outcome() {
    let mut m = TargetMemory::default();
    let a = key(1, 1);
    assert_eq!(plan_freeze(&m, a, Some(NOW + 5_000), NOW), Plan::Run);
    m.record_freeze(a, Ok(hold(a, NOW + 5_000)));
    assert_eq!(
        plan_freeze(&m, a, Some(NOW + 5_000), NOW + 10),
        Plan::Answer(Ok(NOW + 5_000))
    );
    // Still the first outcome after its thaw (not `already_thawed`).
    let t = plan_thaw(&m, a);
    m.record_thaw(a, ThawedBy::Command, &t);
    assert_eq!(
        plan_freeze(&m, a, Some(NOW + 5_000), NOW + 20),
        Plan::Answer(Ok(NOW + 5_000))
    );
    // A failed freeze is answered with its error, not run again.
    let b = key(2, 1);
    let err = StepError::new("exec_failed", "hook failed", true);
    m.record_freeze(b, Err(err.clone()));
    assert_eq!(plan_freeze(&m, b, Some(NOW + 5_000), NOW), Plan::Answer(Err(err)));
}

#[test]
fn a_freeze_after_its_thaw_its_deadline_or_during_another_freeze_is_refused() {
    let mut m = TargetMemory::default();
    let a = key(1, 1);
    let t = plan_thaw(&m, a);
    assert_eq!(
        t,
        ThawPlan::Unknown { by_watchdog: false },
        "nothing remembered: the thaw runs"
    );
    m.record_thaw(a, ThawedBy::Command, &t);
    assert_eq!(
        refused(plan_freeze(&m, a, Some(NOW + 5_000), NOW)),
        "already_thawed"
    );
    let b = key(1, 2);
    assert_eq!(refused(plan_freeze(&m, b, Some(NOW), NOW)), "deadline_passed");
    assert_eq!(
        plan_freeze(&m, b, None, NOW),
        Plan::Run,
        "no deadline given: none checked"
    );
    m.record_freeze(b, Ok(hold(b, NOW + 5_000)));
    assert_eq!(
        refused(plan_freeze(&m, key(2, 1), Some(NOW + 5_000), NOW)),
        "busy"
    );
}

#[test]
fn a_thaw_ends_only_its_own_attempts_freeze() {
    let mut m = TargetMemory::default();
    let (old, new) = (key(1, 1), key(1, 2));
    m.record_freeze(new, Ok(hold(new, NOW + 5_000)));
    // A late thaw of the old attempt: a recorded no-op.
    let p = plan_thaw(&m, old);
    assert_eq!(
        p,
        ThawPlan::Other {
            holder: new,
            by_watchdog: false
        }
    );
    assert!(!p.runs());
    m.record_thaw(old, ThawedBy::Command, &p);
    assert_eq!(m.hold().map(Hold::key), Some(new), "the newer freeze still holds");
    assert_eq!(
        refused(plan_freeze(&m, old, Some(NOW + 5_000), NOW)),
        "already_thawed"
    );
    // Its own thaw ends it; if the writer fails, it still holds.
    let p = plan_thaw(&m, new);
    assert_eq!(p, ThawPlan::Own(hold(new, NOW + 5_000)));
    m.record_thaw(new, ThawedBy::Command, &p);
    assert!(m.hold().is_none());
    m.record_thaw_failed(hold(new, NOW + 5_000));
    assert_eq!(m.hold().map(Hold::key), Some(new));
}

#[test]
fn after_the_watchdog_a_thaw_still_runs_and_says_so() {
    let mut m = TargetMemory::default();
    let a = key(1, 1);
    m.record_freeze(a, Ok(hold(a, NOW + 5_000)));
    let p = plan_thaw(&m, a);
    m.record_thaw(a, ThawedBy::Watchdog, &p);
    let late = plan_thaw(&m, a);
    assert_eq!(late, ThawPlan::Unknown { by_watchdog: true });
    assert!(late.runs() && late.by_watchdog());
    m.record_thaw(a, ThawedBy::Command, &late);
    assert_eq!(
        m.thawed(a),
        Some(ThawedBy::Watchdog),
        "the first thaw is remembered"
    );
}

#[test]
fn a_snapshot_deleted_by_retention_is_refused() {
    let mut m = TargetMemory::default();
    let t = TargetId::from("db01");
    assert_eq!(plan_snapshot(&m, &t, "rm-x-a1"), Plan::Run);
    m.record_pruned("rm-x-a1");
    let Plan::Refuse(e) = plan_snapshot(&m, &t, "rm-x-a1") else {
        panic!("not refused")
    };
    assert_eq!((e.code.as_str(), e.retryable), ("deleted", false));
    assert_eq!(plan_snapshot(&m, &t, "rm-x-a2"), Plan::Run);
}

#[test]
fn the_memory_is_bounded_oldest_first() {
    let mut m = TargetMemory::with_capacity(2);
    for n in 1..=3 {
        let p = plan_thaw(&m, key(n, 1));
        m.record_thaw(key(n, 1), ThawedBy::Command, &p);
        m.record_pruned(&format!("s{n}"));
    }
    assert_eq!(m.thawed(key(1, 1)), None, "the oldest is forgotten");
    assert_eq!(m.thawed(key(3, 1)), Some(ThawedBy::Command));
    assert!(!m.is_pruned("s1") && m.is_pruned("s2") && m.is_pruned("s3"));
}

#[test]
fn the_watchdog_deadline_is_the_earlier_of_engine_and_limit() {
    assert_eq!(freeze_deadline_ms(1_000, Some(1_500), 10_000), 1_500);
    assert_eq!(freeze_deadline_ms(1_000, Some(99_000), 10_000), 11_000);
    assert_eq!(freeze_deadline_ms(1_000, None, 2_000), 3_000);
}
