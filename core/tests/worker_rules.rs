//! The worker core's rules driven directly: one freeze per attempt whichever
//! process of the host gets it, the hold recorded before the writer runs (a
//! failed freeze may have landed), refusals after the thaw, the deadline or
//! while another attempt holds the target, thaws that end only their own
//! attempt's freeze and report the real window, holds of dead processes
//! taken over, the snapshot rules, and the bounded, serializable state.

use recman_core::worker::{
    adoptable, freeze_deadline_ms, plan_freeze, plan_snapshot, plan_thaw, thaw_window_us, AttemptKey,
    Existing, Hold, Plan, Process, Recent, SnapshotPlan, TargetMemory, ThawPlan, Thawed, ThawedBy,
    MEMORY_EXPIRY_MS, NOT_LANDED,
};
use recman_events::{JobId, SnapshotKind, StepError, TargetId, WorkerId};

const NOW: u64 = 1_000_000;

fn key(n: u128, attempt: u32) -> AttemptKey {
    (JobId::from_parts(1, n), attempt)
}

fn process(worker: &str, token: u64) -> Process {
    Process {
        worker: WorkerId::from(worker),
        token,
    }
}

fn hold(k: AttemptKey, deadline_ms: u64) -> Hold {
    Hold {
        job: k.0,
        attempt: k.1,
        kind: SnapshotKind::Full,
        process: process("w1", 1),
        frozen_at_ms: NOW,
        deadline_ms,
    }
}

/// Runs a freeze as a worker does: hold first, then the writer's outcome.
fn froze(m: &mut TargetMemory, k: AttemptKey, deadline_ms: u64, at: u64) {
    m.record_freeze_start(Hold {
        frozen_at_ms: at,
        ..hold(k, deadline_ms)
    });
    m.record_freeze(k, Ok(deadline_ms), at);
}

fn thaw(m: &mut TargetMemory, k: AttemptKey, by: ThawedBy, now: u64) -> (ThawPlan, u64) {
    let p = plan_thaw(m, k);
    let w = thaw_window_us(&p, now, &process("w2", 2), None);
    m.record_thaw(k, by, w, &p, now);
    (p, w)
}

fn refused(p: Plan) -> String {
    match p {
        Plan::Refuse(e) => {
            assert!(e.retryable, "{e:?}");
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
    // Held before the writer returns: a second process asking meanwhile
    // gets the deadline, not a second freeze.
    m.record_freeze_start(hold(a, NOW + 5_000));
    assert_eq!(
        plan_freeze(&m, a, Some(NOW + 5_000), NOW + 1),
        Plan::Answer(Ok(NOW + 5_000))
    );
    m.record_freeze(a, Ok(NOW + 5_000), NOW + 2);
    assert_eq!(
        plan_freeze(&m, a, Some(NOW + 5_000), NOW + 10),
        Plan::Answer(Ok(NOW + 5_000))
    );
    // Still the first outcome after its thaw (not `already_thawed`).
    thaw(&mut m, a, ThawedBy::Command, NOW + 20);
    assert_eq!(
        plan_freeze(&m, a, Some(NOW + 5_000), NOW + 20),
        Plan::Answer(Ok(NOW + 5_000))
    );
    // A failed freeze is answered with its error, not run again.
    let b = key(2, 1);
    let err = StepError::new("exec_failed", "hook failed", true);
    m.record_freeze_start(hold(b, NOW + 5_000));
    m.record_freeze(b, Err(err.clone()), NOW);
    assert_eq!(plan_freeze(&m, b, Some(NOW + 5_000), NOW), Plan::Answer(Err(err)));
}

/// Issue 12 item 1: a freeze that failed may have landed; it holds the
/// target (so its thaw, or the watchdog armed before the writer ran, ends
/// it) unless the writer knows it did not land.
#[test]
fn a_failed_freeze_holds_the_target_until_its_thaw_unless_it_did_not_land() {
    let mut m = TargetMemory::default();
    let a = key(1, 1);
    m.record_freeze_start(hold(a, NOW + 5_000));
    m.record_freeze(
        a,
        Err(StepError::new("timeout", "killed at its timeout", true)),
        NOW + 3,
    );
    assert_eq!(m.hold().map(Hold::key), Some(a));
    assert_eq!(
        refused(plan_freeze(&m, key(2, 1), Some(NOW + 9_000), NOW + 4)),
        "busy"
    );
    let (p, _) = thaw(&mut m, a, ThawedBy::Command, NOW + 5);
    assert!(matches!(p, ThawPlan::Own(_)), "{p:?}");
    assert!(m.hold().is_none());
    let b = key(3, 1);
    m.record_freeze_start(hold(b, NOW + 5_000));
    m.record_freeze(b, Err(StepError::new(NOT_LANDED, "EBUSY", true)), NOW + 6);
    assert!(
        m.hold().is_none(),
        "someone else's freeze: nothing of ours holds it"
    );
}

#[test]
fn a_freeze_after_its_thaw_its_deadline_or_during_another_freeze_is_refused() {
    let mut m = TargetMemory::default();
    let a = key(1, 1);
    let (t, _) = thaw(&mut m, a, ThawedBy::Command, NOW);
    assert_eq!(
        t,
        ThawPlan::Unknown { first: None },
        "nothing held: the thaw runs"
    );
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
    froze(&mut m, b, NOW + 5_000, NOW);
    assert_eq!(
        refused(plan_freeze(&m, key(2, 1), Some(NOW + 5_000), NOW)),
        "busy"
    );
}

/// Issue 23 items 1 and 3: a thaw ends only its own attempt's freeze, and
/// every thaw of an attempt reports the window its freeze really had, from
/// the host state, whichever process froze and whichever thaws.
#[test]
fn a_thaw_ends_only_its_own_attempts_freeze_and_reports_the_real_window() {
    let mut m = TargetMemory::default();
    let (old, new) = (key(1, 1), key(1, 2));
    froze(&mut m, new, NOW + 9_000, NOW);
    // A late thaw of the old attempt (say, on a restarted process): a recorded no-op.
    let (p, w) = thaw(&mut m, old, ThawedBy::Command, NOW + 100);
    assert_eq!(
        p,
        ThawPlan::Other {
            holder: new,
            first: None
        }
    );
    assert!(!p.runs());
    assert!(!p.by_watchdog(), "no thaw of it yet");
    assert_eq!(w, 0, "it ended no freeze");
    assert_eq!(m.hold().map(Hold::key), Some(new), "the newer freeze still holds");
    assert_eq!(
        refused(plan_freeze(&m, old, Some(NOW + 5_000), NOW)),
        "already_thawed"
    );
    // Its own thaw, by another process than the freezer, ends it: 7.9 s.
    let (p, w) = thaw(&mut m, new, ThawedBy::Command, NOW + 7_900);
    assert!(matches!(p, ThawPlan::Own(_)), "{p:?}");
    assert!(!p.by_watchdog(), "the command ends its own freeze");
    assert_eq!(w, 7_900_000);
    assert!(m.hold().is_none());
    // A redelivered thaw reports the same window.
    let (p, w) = thaw(&mut m, new, ThawedBy::Command, NOW + 9_000);
    assert_eq!(
        p,
        ThawPlan::Unknown {
            first: Some(Thawed {
                by: ThawedBy::Command,
                window_us: 7_900_000
            })
        }
    );
    assert_eq!(w, 7_900_000);
    assert!(!p.by_watchdog(), "the first thaw was the command's");
    // If the writer's thaw fails, the freeze still holds, and is not "thawed".
    let c = key(2, 1);
    froze(&mut m, c, NOW + 20_000, NOW + 10_000);
    let p = plan_thaw(&m, c);
    let ThawPlan::Own(h) = p.clone() else {
        panic!("{p:?}")
    };
    m.record_thaw(c, ThawedBy::Command, 1, &p, NOW + 10_001);
    m.record_thaw_failed(h);
    assert_eq!(m.hold().map(Hold::key), Some(c));
    assert_eq!(m.thawed(c), None);
}

#[test]
fn after_the_watchdog_a_thaw_still_runs_and_says_so() {
    let mut m = TargetMemory::default();
    let a = key(1, 1);
    froze(&mut m, a, NOW + 5_000, NOW);
    thaw(&mut m, a, ThawedBy::Watchdog, NOW + 5_000);
    let late = plan_thaw(&m, a);
    assert!(late.runs() && late.by_watchdog(), "{late:?}");
    assert_eq!(
        thaw_window_us(&late, NOW + 6_000, &process("w", 9), None),
        5_000_000
    );
    thaw(&mut m, a, ThawedBy::Command, NOW + 6_000);
    assert_eq!(
        m.thawed(a).map(|t| t.by),
        Some(ThawedBy::Watchdog),
        "the first thaw is remembered"
    );
}

/// Issue 22: a crashed worker's watchdog dies with it; a live process of the
/// host takes its hold over (and only a hold whose process is gone).
#[test]
fn a_hold_of_a_dead_process_is_taken_over() {
    let mut m = TargetMemory::default();
    let a = key(1, 1);
    froze(&mut m, a, NOW + 5_000, NOW);
    let alive = |p: &Process| p.token != 1;
    assert_eq!(adoptable(&m, |_| true, None), None, "its process lives");
    let h = adoptable(&m, alive, None).expect("its process is gone");
    assert_eq!(h.key(), a);
    m.record_adopt(a, process("w2", 2));
    assert_eq!(adoptable(&m, alive, None), None, "taken over");
    assert_eq!(m.hold().map(|h| h.process.token), Some(2));
    assert_eq!(
        adoptable(&m, alive, Some(recman_core::worker::Mutation::NoAdoption)),
        None
    );
}

/// Issue 12 items 2 and 4: a snapshot already there for this attempt is
/// reported (even late: the engine records and deletes it); one of another
/// job is never adopted; none is started after the attempt's thaw or deadline.
#[test]
fn the_snapshot_rules() {
    let mut host = TargetMemory::default();
    let t = TargetId::from("db01");
    let a = key(1, 1);
    let plan = |host: &TargetMemory, pruned, existing: Existing, deadline, now| {
        plan_snapshot(host, pruned, &t, "rm-x-a1", a, &existing, deadline, now, None)
    };
    let code = |p: SnapshotPlan| match p {
        SnapshotPlan::Refuse(e) => e.code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        plan(&host, false, Existing::Absent, Some(NOW + 1), NOW),
        SnapshotPlan::Run
    );
    assert_eq!(
        plan(&host, false, Existing::Owned(a), Some(NOW), NOW + 5),
        SnapshotPlan::Report,
        "ours: reported, even past the deadline"
    );
    assert_eq!(
        code(plan(&host, false, Existing::Owned(key(2, 1)), Some(NOW + 1), NOW)),
        "name_conflict"
    );
    assert_eq!(
        code(plan(
            &host,
            false,
            Existing::Foreign("volume x".into()),
            Some(NOW + 1),
            NOW
        )),
        "name_conflict"
    );
    assert_eq!(
        code(plan(&host, false, Existing::Absent, Some(NOW), NOW)),
        "deadline_passed"
    );
    assert_eq!(
        code(plan(&host, true, Existing::Absent, Some(NOW + 1), NOW)),
        "deleted"
    );
    thaw(&mut host, a, ThawedBy::Command, NOW);
    assert_eq!(
        code(plan(&host, false, Existing::Absent, Some(NOW + 1), NOW)),
        "already_thawed"
    );
}

#[test]
fn the_state_is_bounded_expires_and_survives_a_round_trip() {
    let mut m = TargetMemory::with_capacity(2);
    for n in 1..=3 {
        thaw(&mut m, key(n, 1), ThawedBy::Command, NOW);
    }
    assert_eq!(m.thawed(key(1, 1)), None, "the oldest is forgotten");
    assert!(m.thawed(key(3, 1)).is_some());
    let mut m = TargetMemory::default();
    froze(&mut m, key(9, 1), NOW + 5_000, NOW);
    thaw(&mut m, key(9, 1), ThawedBy::Command, NOW + 10);
    froze(&mut m, key(10, 1), NOW + 9_000, NOW + 20);
    let json = serde_json::to_string(&m).expect("json");
    let back: TargetMemory = serde_json::from_str(&json).expect("json");
    assert_eq!(back, m);
    m.expire(NOW + 5_000 + MEMORY_EXPIRY_MS + 1);
    assert_eq!(m.thawed(key(9, 1)), None, "long past its deadline: forgotten");
    assert!(m.freeze_outcome(key(10, 1)).is_some());
    assert_eq!(
        m.hold().map(Hold::key),
        Some(key(10, 1)),
        "a hold is never forgotten"
    );
}

#[test]
fn a_process_remembers_answers_boundedly() {
    let mut r: Recent<u32> = Recent::with_capacity(2);
    r.insert_first("a".into(), 1);
    r.insert_first("a".into(), 2);
    r.insert_first("b".into(), 3);
    r.insert_first("c".into(), 4);
    assert_eq!(r.get("a"), None);
    assert_eq!((r.get("b"), r.get("c")), (Some(&3), Some(&4)));
}

#[test]
fn the_watchdog_deadline_is_the_earlier_of_engine_and_limit() {
    assert_eq!(freeze_deadline_ms(1_000, Some(1_500), 10_000), 1_500);
    assert_eq!(freeze_deadline_ms(1_000, Some(99_000), 10_000), 11_000);
    assert_eq!(freeze_deadline_ms(1_000, None, 2_000), 3_000);
}

/// `recman simulate --mutation NAME`: every mutation (engine core and
/// worker core) has a distinct kebab-case name that parses back to it, and
/// an unknown name is none.
#[test]
fn every_mutation_name_parses_back() {
    use std::collections::HashSet;
    let mut names = HashSet::new();
    for m in recman_core::Mutation::ALL {
        let n = m.name();
        assert!(
            !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
            "{n:?}"
        );
        assert_eq!(recman_core::Mutation::parse(&n), Some(*m), "{n}");
        assert!(names.insert(n));
    }
    for m in recman_core::worker::Mutation::ALL {
        let n = m.name();
        assert!(
            !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
            "{n:?}"
        );
        assert_eq!(recman_core::worker::Mutation::parse(&n), Some(*m), "{n}");
        assert!(names.insert(n));
    }
    assert_eq!(
        recman_core::worker::Mutation::name(recman_core::worker::Mutation::NoAdoption),
        "no-adoption"
    );
    assert_eq!(recman_core::Mutation::parse("no-such-mutation"), None);
    assert_eq!(recman_core::worker::Mutation::parse("no-such-mutation"), None);
}
