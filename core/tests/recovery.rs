//! Recovery driven through the core: an in-place restore stops the
//! application, records a safety snapshot (a restore point) before the
//! restore step is sent, and starts it again; a failed or silent restore
//! is rolled back; a failed rollback never starts the application; refusals
//! are clear; one recovery at a time holds an idle target and jobs queue
//! behind it; retention keeps a mounted point; `max_mount_age` unmounts;
//! after a restart the step in flight goes out again; replay is exact.

mod support;

use std::collections::BTreeMap;

use support::{a, kinds, ok, rep, Run};

use recman_core::recovery::{safety_name, Ask, OpState};
use recman_core::{CoreConfig, Destination, Input, JobState, Reply, RetentionPolicy, TargetPolicy};
use recman_events::{
    snapshot_name, EventBody, JobId, LiveData, Outcome, RecoveryAction, RequestId, SnapshotInfo, Stage,
    StepDetail, StepError, TargetId,
};

const T: u64 = 1_750_000_000_000;

fn config(p: impl FnOnce(&mut TargetPolicy)) -> CoreConfig {
    let mut tp = TargetPolicy::new("host.a", "array.x");
    tp.recovery_timeout_ms = 60_000;
    p(&mut tp);
    CoreConfig {
        targets: BTreeMap::from([(a(), tp)]),
        schedules: Vec::new(),
        seed: 1,
        mutation: None,
        bounds: Default::default(),
    }
}

fn recovered(location: &str) -> Outcome {
    ok(StepDetail::Recovered {
        location: location.into(),
        info: String::new(),
    })
}

fn failed(code: &str) -> Outcome {
    Outcome::Err {
        error: StepError::new(code, "it broke", false),
    }
}

impl Run {
    /// A completed job `n` at `now`: its snapshot's name.
    fn point(&mut self, n: u128, now: u64) -> String {
        let j = self.request(n, now);
        self.walk(j, now);
        assert_eq!(self.core.state().jobs[&j].state, JobState::Completed);
        snapshot_name(j, 1)
    }

    fn recover(&mut self, n: u128, point: &str, action: RecoveryAction, confirm: bool, now: u64) -> Reply {
        let ask = Ask {
            request_id: RequestId::new(format!("rec{n}")),
            target: None,
            snapshot: Some(point.to_string()),
            action,
            confirm,
        };
        self.ask(ask, JobId::from_parts(now, 1_000 + n), now)
    }

    /// The engine's answer to `ask`, as job `new_job` if accepted.
    fn ask(&mut self, ask: Ask, new_job: JobId, now: u64) -> Reply {
        self.handle(
            Input::Recover {
                ask,
                origin: "test".into(),
                new_job,
            },
            now,
        )
        .reply
    }

    fn accepted(&mut self, n: u128, point: &str, action: RecoveryAction, now: u64) -> JobId {
        match self.recover(n, point, action, true, now) {
            Reply::Accepted { job, existing: false } => job,
            other => panic!("not accepted: {other:?}"),
        }
    }

    fn stage(&self, op: JobId) -> Option<Stage> {
        self.core.state().recovery.ops[&op].stage
    }

    fn safety_report(&mut self, op: JobId, now: u64) -> recman_core::Step {
        let info = SnapshotInfo {
            name: safety_name(op),
            provider: "test".into(),
            location: "x".into(),
            size_bytes: None,
            existed: false,
            array_expiry: None,
        };
        self.handle(
            rep(op, 1, Stage::SafetySnapshot, ok(StepDetail::Snapshot(info))),
            now,
        )
    }

    fn catalog(&self) -> Vec<String> {
        self.core.state().catalog[&a()]
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }
}

fn rejected(r: Reply) -> &'static str {
    match r {
        Reply::Rejected { code, .. } => code,
        other => panic!("not rejected: {other:?}"),
    }
}

#[test]
fn an_in_place_restore_stops_takes_a_safety_snapshot_restores_and_starts() {
    let mut r = Run::new(config(|_| {}));
    let p = r.point(1, T);
    let op = r.accepted(1, &p, RecoveryAction::in_place(), T + 100);
    // Started at once on the idle target: the stop goes to the writer pool.
    assert_eq!(r.stage(op), Some(Stage::Stop));
    let s = r.handle(rep(op, 1, Stage::Stop, recovered("")), T + 200);
    assert_eq!(kinds(&s.events), ["recovery_step_done", "recovery_step_started"]);
    let [cmd] = s.commands.as_slice() else {
        panic!("{:?}", s.commands)
    };
    assert_eq!(cmd.command.stage, Stage::SafetySnapshot);
    assert_eq!(
        cmd.command.snapshot_name.as_deref(),
        Some(safety_name(op).as_str())
    );
    // The restore step is sent only after the safety snapshot is recorded
    // (in the same batch, before it) and catalogued.
    let s = r.safety_report(op, T + 300);
    assert_eq!(kinds(&s.events), ["recovery_step_done", "recovery_step_started"]);
    assert!(r.catalog().contains(&safety_name(op)));
    let [cmd] = s.commands.as_slice() else {
        panic!("{:?}", s.commands)
    };
    assert_eq!(cmd.command.stage, Stage::Restore);
    assert_eq!(cmd.command.snapshot_name.as_deref(), Some(p.as_str()));
    let args = cmd.command.recovery.as_ref().expect("args");
    assert_eq!(args.safety.as_deref(), Some(safety_name(op).as_str()));
    let s = r.handle(rep(op, 1, Stage::Restore, recovered("/data")), T + 400);
    let [cmd] = s.commands.as_slice() else {
        panic!("{:?}", s.commands)
    };
    assert_eq!(cmd.command.stage, Stage::Start);
    assert_eq!(cmd.to, Destination::Pool("host.a".into()));
    let s = r.handle(rep(op, 1, Stage::Start, recovered("")), T + 500);
    assert_eq!(kinds(&s.events), ["recovery_step_done", "recovery_completed"]);
    let o = &r.core.state().recovery.ops[&op];
    assert_eq!(o.state, OpState::Completed);
    assert_eq!(o.location.as_deref(), Some("/data"));
    assert_eq!(o.timeline.len(), 4);
    assert!(r.core.state().recovery.running.is_empty());
    r.replay();
}

#[test]
fn a_restore_that_fails_or_times_out_is_rolled_back_and_the_application_started() {
    for timeout in [false, true] {
        let mut r = Run::new(config(|_| {}));
        let p = r.point(1, T);
        let op = r.accepted(1, &p, RecoveryAction::in_place(), T + 100);
        r.handle(rep(op, 1, Stage::Stop, recovered("")), T + 200);
        r.safety_report(op, T + 300);
        let s = if timeout {
            let d = r.core.next_deadline().expect("the restore's deadline");
            assert!(d > T + 300 + 60_000, "deadline {d} follows the recovery timeout");
            r.handle(Input::TimerFired, d)
        } else {
            r.handle(rep(op, 1, Stage::Restore, failed("copy_failed")), T + 400)
        };
        assert_eq!(
            kinds(&s.events),
            ["recovery_step_failed", "recovery_step_started"]
        );
        let [cmd] = s.commands.as_slice() else {
            panic!("{:?}", s.commands)
        };
        assert_eq!(cmd.command.stage, Stage::Rollback);
        // To the pool (a restarted worker has a new id: its own queue
        // would hold the rollback until its deadline).
        assert_eq!(cmd.to, Destination::Pool("array.x".into()));
        let now = r.core.state().recovery.ops[&op]
            .deadline_ms
            .expect("rollback deadline")
            - 1;
        let s = r.handle(rep(op, 1, Stage::Rollback, recovered("/data")), now);
        assert_eq!(s.commands[0].command.stage, Stage::Start);
        let s = r.handle(rep(op, 1, Stage::Start, recovered("")), now + 1);
        assert_eq!(kinds(&s.events), ["recovery_step_done", "recovery_failed"]);
        let EventBody::RecoveryFailed { live, reason } = &s.events[1].body else {
            unreachable!()
        };
        assert_eq!(*live, LiveData::RolledBack, "{reason}");
        r.replay();
    }
}

#[test]
fn a_failed_rollback_leaves_the_application_stopped_and_says_so() {
    let mut r = Run::new(config(|_| {}));
    let p = r.point(1, T);
    let op = r.accepted(1, &p, RecoveryAction::in_place(), T + 100);
    r.handle(rep(op, 1, Stage::Stop, recovered("")), T + 200);
    r.safety_report(op, T + 300);
    r.handle(rep(op, 1, Stage::Restore, failed("copy_failed")), T + 400);
    let s = r.handle(rep(op, 1, Stage::Rollback, failed("rename_failed")), T + 500);
    assert_eq!(kinds(&s.events), ["recovery_step_failed", "recovery_failed"]);
    assert!(
        s.commands.is_empty(),
        "no start on half-restored data: {:?}",
        s.commands
    );
    let EventBody::RecoveryFailed { live, reason } = &s.events[1].body else {
        unreachable!()
    };
    assert_eq!(*live, LiveData::Unknown);
    assert!(reason.contains(&safety_name(op)), "{reason}");
}

#[test]
fn a_failed_stop_or_safety_snapshot_starts_the_application_and_leaves_the_data() {
    for at_safety in [false, true] {
        let mut r = Run::new(config(|_| {}));
        let p = r.point(1, T);
        let op = r.accepted(1, &p, RecoveryAction::in_place(), T + 100);
        let s = if at_safety {
            r.handle(rep(op, 1, Stage::Stop, recovered("")), T + 200);
            r.handle(rep(op, 1, Stage::SafetySnapshot, failed("no_space")), T + 300)
        } else {
            r.handle(rep(op, 1, Stage::Stop, failed("exec_failed")), T + 300)
        };
        assert_eq!(s.commands[0].command.stage, Stage::Start);
        assert!(!r.core.state().recovery.ops[&op].reverting, "no restore was sent");
        let s = r.handle(rep(op, 1, Stage::Start, recovered("")), T + 400);
        let EventBody::RecoveryFailed { live, .. } = &s.events[1].body else {
            panic!("{:?}", s.events)
        };
        assert_eq!(*live, LiveData::Untouched);
        if at_safety {
            // The failed safety snapshot may have landed all the same: a
            // reconcile that finds it knows whose it is (not "unknown").
            r.handle(
                Input::Reconcile {
                    target: a(),
                    origin: "cli".into(),
                },
                T + 500,
            );
            let names = [p.clone(), safety_name(op)].to_vec();
            let s = r.handle(
                rep(JobId::NONE, 1, Stage::Reconcile, ok(StepDetail::Listed { names })),
                T + 600,
            );
            assert_eq!(kinds(&s.events), ["reconciled"], "{:?}", s.events);
        }
    }
}

#[test]
fn refusals_are_clear() {
    let mut r = Run::new(config(|_| {}));
    let p = r.point(1, T);
    // A point the named target does not hold.
    let ask = Ask {
        request_id: RequestId::new("rec10"),
        target: Some(a()),
        snapshot: Some("rm-0123456789abcdefghij-a1".into()),
        action: RecoveryAction::mount(false),
        confirm: true,
    };
    assert_eq!(
        rejected(r.ask(ask, JobId::from_parts(T, 10), T + 10)),
        "unknown_snapshot"
    );
    assert_eq!(
        rejected(r.recover(1, &p, RecoveryAction::in_place(), false, T + 10)),
        "confirmation_required"
    );
    assert_eq!(
        rejected(r.recover(2, "rm-nothing-a1", RecoveryAction::mount(false), true, T + 10)),
        "unknown_snapshot"
    );
    let ask = Ask {
        request_id: RequestId::new("rec9"),
        target: Some(TargetId::from("b")),
        snapshot: Some(p.clone()),
        action: RecoveryAction::mount(false),
        confirm: false,
    };
    assert_eq!(
        rejected(r.ask(ask, JobId::from_parts(T, 9), T + 10)),
        "unknown_target"
    );
    assert_eq!(
        rejected(r.recover(
            3,
            &p,
            RecoveryAction::Unmount {
                mount: JobId::from_parts(T, 5)
            },
            true,
            T + 10
        )),
        "unknown_mount"
    );
    // A request id of a snapshot job is not a recovery's, and back.
    let ask = Ask {
        request_id: RequestId::new("r1"),
        target: None,
        snapshot: Some(p.clone()),
        action: RecoveryAction::mount(false),
        confirm: false,
    };
    assert_eq!(
        rejected(r.ask(ask, JobId::from_parts(T, 10), T + 10)),
        "request_id_in_use"
    );
    // Busy: a job holds the target; an in-place restore is refused, a
    // mount (which leaves the live data alone) runs alongside the job.
    let j = r.request(2, T + 20);
    assert_eq!(r.core.state().jobs[&j].state, JobState::Freezing);
    assert_eq!(
        rejected(r.recover(4, &p, RecoveryAction::in_place(), true, T + 30)),
        "target_busy"
    );
    let m = r.accepted(5, &p, RecoveryAction::mount(false), T + 40);
    assert_eq!(r.stage(m), Some(Stage::Mount));
    // The same request again is the same job.
    assert!(matches!(
        r.recover(5, &p, RecoveryAction::mount(false), true, T + 50),
        Reply::Accepted { job, existing: true } if job == m
    ));
    // A clone waits behind the mount (one recovery at a time per target),
    // and starts when the mount ends.
    let c = r.accepted(6, &p, RecoveryAction::Clone { name: "c".into() }, T + 55);
    assert_eq!(r.core.state().recovery.ops[&c].state, OpState::Pending);
    r.handle(rep(m, 1, Stage::Mount, recovered("/mnt/x")), T + 60);
    assert_eq!(r.stage(c), Some(Stage::Restore));
    r.walk(j, T + 70);
    assert_eq!(r.core.state().jobs[&j].state, JobState::Completed);
    r.replay();
}

#[test]
fn a_job_waits_behind_an_in_place_restore_and_starts_when_it_ends() {
    let mut r = Run::new(config(|_| {}));
    let p = r.point(1, T);
    let op = r.accepted(1, &p, RecoveryAction::in_place(), T + 100);
    assert_eq!(r.stage(op), Some(Stage::Stop));
    let j = r.request(2, T + 200);
    assert_eq!(r.core.state().jobs[&j].state, JobState::Queued);
    r.handle(rep(op, 1, Stage::Stop, recovered("")), T + 210);
    r.safety_report(op, T + 220);
    r.handle(rep(op, 1, Stage::Restore, recovered("/data")), T + 230);
    assert_eq!(r.core.state().jobs[&j].state, JobState::Queued);
    let s = r.handle(rep(op, 1, Stage::Start, recovered("")), T + 300);
    assert!(kinds(&s.events).contains(&"recovery_completed"));
    assert!(
        kinds(&s.events).contains(&"attempt_started"),
        "{:?}",
        kinds(&s.events)
    );
    assert_eq!(r.core.state().jobs[&j].state, JobState::Freezing);
    r.replay();
}

#[test]
fn retention_keeps_a_mounted_point_and_max_mount_age_unmounts_it() {
    let mut r = Run::new(config(|p| {
        p.retention = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
        p.max_mount_age_ms = Some(3_600_000);
    }));
    let p1 = r.point(1, T);
    let m = r.accepted(1, &p1, RecoveryAction::mount(false), T + 100);
    let s = r.handle(rep(m, 1, Stage::Mount, recovered("/mnt/p1")), T + 200);
    assert_eq!(kinds(&s.events), ["recovery_step_done", "recovery_completed"]);
    assert!(r.core.state().recovery.mounts.contains_key(&m));
    // A newer point: keep_last 1 would prune p1, but it is mounted.
    let p2 = r.point(2, T + 1_000);
    assert!(r.catalog().contains(&p1) && r.catalog().contains(&p2));
    assert!(r.core.state().prunes.is_empty(), "{:?}", r.core.state().prunes);
    // An hour later the engine takes the mount away, back where it was made.
    let due = r.core.next_deadline().expect("the mount's age limit");
    assert_eq!(due, T + 200 + 3_600_000);
    let s = r.handle(Input::TimerFired, due);
    assert_eq!(kinds(&s.events), ["recovery_requested", "recovery_step_started"]);
    let [cmd] = s.commands.as_slice() else {
        panic!("{:?}", s.commands)
    };
    assert_eq!(cmd.command.stage, Stage::Unmount);
    assert_eq!(
        cmd.command.recovery.as_ref().unwrap().location.as_deref(),
        Some("/mnt/p1")
    );
    assert_eq!(cmd.to, Destination::Pool("array.x".into()));
    let un = s.events[0].job;
    // A timer again asks for nothing more.
    let s = r.handle(Input::TimerFired, due + 1);
    assert!(s.events.is_empty(), "{:?}", kinds(&s.events));
    r.handle(rep(un, 1, Stage::Unmount, recovered("/mnt/p1")), due + 2);
    assert!(r.core.state().recovery.mounts.is_empty());
    // Unmounted: the next job's retention prunes p1.
    r.point(3, due + 10);
    assert!(!r.core.state().prunes.is_empty() || !r.catalog().contains(&p1));
    r.replay();
}

#[test]
fn a_clone_is_recorded_until_removed_and_names_are_unique() {
    let mut r = Run::new(config(|_| {}));
    let p = r.point(1, T);
    let c = r.accepted(
        1,
        &p,
        RecoveryAction::Clone {
            name: "test-db".into(),
        },
        T + 100,
    );
    // The name is taken while the first clone is still being made.
    let same = RecoveryAction::Clone {
        name: "test-db".into(),
    };
    assert_eq!(rejected(r.recover(7, &p, same, true, T + 150)), "clone_exists");
    r.handle(rep(c, 1, Stage::Restore, recovered("/clones/test-db")), T + 200);
    assert_eq!(
        r.core.state().recovery.clones["test-db"].location,
        "/clones/test-db"
    );
    assert_eq!(
        rejected(r.recover(
            2,
            &p,
            RecoveryAction::Clone {
                name: "test-db".into()
            },
            true,
            T + 300
        )),
        "clone_exists"
    );
    let rm = r.accepted(
        3,
        &p,
        RecoveryAction::RemoveClone {
            name: "test-db".into(),
        },
        T + 400,
    );
    let again = RecoveryAction::RemoveClone {
        name: "test-db".into(),
    };
    assert_eq!(rejected(r.recover(8, &p, again, true, T + 450)), "remove_pending");
    let s = r.handle(rep(rm, 1, Stage::Unmount, recovered("/clones/test-db")), T + 500);
    assert!(kinds(&s.events).contains(&"recovery_completed"));
    assert!(r.core.state().recovery.clones.is_empty());
    r.replay();
}

#[test]
fn after_a_restart_the_step_in_flight_goes_out_again_and_stale_reports_change_nothing() {
    let mut r = Run::new(config(|_| {}));
    let p = r.point(1, T);
    let op = r.accepted(1, &p, RecoveryAction::in_place(), T + 100);
    r.handle(rep(op, 1, Stage::Stop, recovered("")), T + 200);
    r.safety_report(op, T + 300);
    // A late duplicate of the stop's report: nothing.
    let s = r.handle(rep(op, 1, Stage::Stop, recovered("")), T + 310);
    assert!(s.events.is_empty());
    // A restarted engine (replayed log) sends the restore again.
    let mut again = recman_core::Core::new(r.core.config().clone());
    for e in &r.log {
        again.apply(e);
    }
    let s = again.start(T + 400);
    let stages: Vec<Stage> = s.commands.iter().map(|o| o.command.stage).collect();
    assert_eq!(stages, [Stage::Restore]);
}

/// A PostgreSQL point-in-time restore: `until` only where the writer is
/// `postgres`, and only between the restore point and now; the start after
/// a restore says so (`restored`, and a longer deadline: the database
/// replays its log first), the start after a rollback does not; what the
/// start reports (the LSN it recovered to) is recorded.
#[test]
fn until_is_checked_and_the_start_after_a_restore_recovers_and_says_to_what() {
    use recman_events::Until;
    let mut r = Run::new(config(|p| p.fingerprint = Some("exec/copy".into())));
    let p = r.point(1, T);
    let to = |until| RecoveryAction::To {
        path: "/r/x".into(),
        until: Some(until),
    };
    assert_eq!(
        rejected(r.recover(1, &p, to(Until::Latest), true, T + 10)),
        "not_supported"
    );

    let mut r = Run::new(config(|p| p.fingerprint = Some("postgres/btrfs".into())));
    let p = r.point(1, T);
    let taken = r.core.state().catalog[&a()][0].at_ms;
    assert_eq!(
        rejected(r.recover(1, &p, to(Until::Time(taken - 1)), true, taken + 10)),
        "until_before_point"
    );
    assert_eq!(
        rejected(r.recover(2, &p, to(Until::Time(taken + 5_000)), true, taken + 10)),
        "until_in_future"
    );
    // The instant the point completed is the earliest time it can stop at.
    // It may also be now: both bounds are inclusive.
    let mut first = Run::new(config(|p| p.fingerprint = Some("postgres/btrfs".into())));
    let fp = first.point(1, T);
    assert!(matches!(
        first.recover(4, &fp, to(Until::Time(taken)), true, taken),
        Reply::Accepted { .. }
    ));
    let op = r.accepted(3, &p, to(Until::Time(taken + 5)), taken + 10);
    let s = r.handle(
        rep(
            op,
            1,
            Stage::Restore,
            ok(StepDetail::Recovered {
                location: "/r/x".into(),
                info: "recovered to LSN 0/5000060".into(),
            }),
        ),
        taken + 20,
    );
    assert_eq!(
        kinds(&s.events),
        ["recovery_step_done", "recovery_step_noted", "recovery_completed"]
    );
    let o = &r.core.state().recovery.ops[&op];
    assert_eq!(
        o.timeline[0].outcome.as_deref(),
        Some("ok: recovered to LSN 0/5000060")
    );

    // In place: the start after a good restore recovers, with the restore's time too.
    let now = taken + 100;
    let op = r.accepted(
        4,
        &p,
        RecoveryAction::InPlace {
            until: Some(Until::Latest),
        },
        now,
    );
    r.handle(rep(op, 1, Stage::Stop, recovered("")), now + 1);
    r.safety_report(op, now + 2);
    let s = r.handle(rep(op, 1, Stage::Restore, recovered("")), now + 3);
    let [cmd] = s.commands.as_slice() else {
        panic!("{:?}", s.commands)
    };
    assert_eq!(cmd.command.stage, Stage::Start);
    assert!(cmd.command.recovery.as_ref().unwrap().restored);
    assert_eq!(
        cmd.command.recovery.as_ref().unwrap().action.until(),
        Some(Until::Latest)
    );
    let deadline = r.core.state().recovery.ops[&op].deadline_ms.unwrap();
    assert!(
        deadline >= now + 3 + 60_000,
        "start deadline includes the recovery timeout: {deadline}"
    );
    r.handle(rep(op, 1, Stage::Start, recovered("")), now + 4);

    // A failed restore is rolled back; the start after it is a plain start.
    let now = now + 1_000;
    let op = r.accepted(5, &p, RecoveryAction::in_place(), now);
    r.handle(rep(op, 1, Stage::Stop, recovered("")), now + 1);
    r.safety_report(op, now + 2);
    r.handle(rep(op, 1, Stage::Restore, failed("io_error")), now + 3);
    let s = r.handle(rep(op, 1, Stage::Rollback, recovered("")), now + 4);
    let [cmd] = s.commands.as_slice() else {
        panic!("{:?}", s.commands)
    };
    assert_eq!(cmd.command.stage, Stage::Start);
    assert!(!cmd.command.recovery.as_ref().unwrap().restored);
}

/// `recman mount --on`: a pool of the config, else a worker's own queue
/// (the provider pool when it is gone); the unmount goes to the same place;
/// a 3PAR mount stays the array pool's work (`on` is the host it exports to).
#[test]
fn a_mount_on_a_pool_or_worker_goes_there_and_so_does_its_unmount() {
    use recman_core::Destination;
    use recman_events::{PoolName, WorkerId};
    let mut r = Run::new(config(|_| {}));
    let p = r.point(1, T);
    let on = |o: &str| RecoveryAction::Mount {
        writable: false,
        on: Some(o.into()),
    };
    // Asks for `action` at `now`: the job and where its first command goes.
    let dest = |r: &mut Run, n: u128, action: RecoveryAction, now: u64| -> (JobId, Destination) {
        let ask = Ask {
            request_id: RequestId::new(format!("m{n}")),
            target: None,
            snapshot: Some(p.clone()),
            action,
            confirm: false,
        };
        let s = r.handle(
            Input::Recover {
                ask,
                origin: "test".into(),
                new_job: JobId::from_parts(now, 5_000 + n),
            },
            now,
        );
        let [c] = s.commands.as_slice() else {
            panic!("{:?}", s.commands)
        };
        (c.command.job, c.to.clone())
    };
    let (m1, d) = dest(&mut r, 1, on("host.a"), T + 10);
    assert_eq!(d, Destination::Pool(PoolName::from("host.a")));
    r.handle(rep(m1, 1, Stage::Mount, recovered("/m/1")), T + 11);
    let (m2, d) = dest(&mut r, 2, on("w9"), T + 20);
    assert_eq!(
        d,
        Destination::Worker {
            worker: WorkerId::from("w9"),
            fallback: PoolName::from("array.x")
        }
    );
    r.handle(rep(m2, 1, Stage::Mount, recovered("/m/2")), T + 21);
    assert_eq!(r.core.state().recovery.mounts[&m2].on.as_deref(), Some("w9"));
    let (_, d) = dest(&mut r, 3, RecoveryAction::Unmount { mount: m2 }, T + 30);
    assert!(
        matches!(d, Destination::Worker { ref worker, .. } if worker.as_str() == "w9"),
        "{d:?}"
    );

    let mut r = Run::new(config(|p| p.fingerprint = Some("exec/3par".into())));
    let p = r.point(1, T);
    let ask = Ask {
        request_id: RequestId::new("m-3par"),
        target: None,
        snapshot: Some(p),
        action: on("app01"),
        confirm: false,
    };
    let s = r.handle(
        Input::Recover {
            ask,
            origin: "test".into(),
            new_job: JobId::from_parts(T + 40, 9_000),
        },
        T + 40,
    );
    assert_eq!(s.commands[0].to, Destination::Pool(PoolName::from("array.x")));
}

/// A worker's report is bounded like a request: a location longer than a
/// path may be fails the step (`bad_report`), and nothing of it is logged.
#[test]
fn a_report_with_an_unbounded_location_fails_its_step() {
    let mut r = Run::new(config(|_| {}));
    let p = r.point(1, T);
    let to = RecoveryAction::To {
        path: "/r/x".into(),
        until: None,
    };
    let op = r.accepted(1, &p, to, T + 10);
    let huge = "/x".repeat(recman_events::wire::MAX_PATH_LEN);
    let s = r.handle(rep(op, 1, Stage::Restore, recovered(&huge)), T + 20);
    assert_eq!(kinds(&s.events), ["recovery_step_failed", "recovery_failed"]);
    let logged = format!("{:?}", s.events);
    assert!(
        logged.contains("bad_report") && !logged.contains(&huge[..200]),
        "{}",
        &logged[..300]
    );
    assert_eq!(r.core.state().recovery.ops[&op].state, OpState::Failed);
}

/// Each step's deadline is its own part's timeout (plus the same grace):
/// the writer's for stop and start, the provider's for the safety snapshot,
/// the recovery's for the restore, and a start of restored data gets the
/// recovery's time on top (a database replays its log first).
#[test]
fn each_steps_deadline_follows_the_timeout_of_the_part_that_runs_it() {
    let mut r = Run::new(config(|p| {
        p.writer_timeout_ms = 11_000;
        p.provider_timeout_ms = 22_000;
        p.recovery_timeout_ms = 60_000;
    }));
    let pt = r.point(1, T);
    let deadline = |s: &recman_core::Step| {
        s.events
            .iter()
            .find_map(|e| match &e.body {
                EventBody::RecoveryStepStarted { stage, deadline_ms } => {
                    Some((*stage, *deadline_ms - e.at_ms))
                }
                _ => None,
            })
            .expect("a step started")
    };
    let op = JobId::from_parts(T + 100, 1_001);
    r.recover(1, &pt, RecoveryAction::in_place(), true, T + 100);
    let started = r
        .log
        .iter()
        .rev()
        .find(|e| e.job == op)
        .expect("the stop")
        .clone();
    let EventBody::RecoveryStepStarted { stage, deadline_ms } = started.body else {
        panic!("{started:?}")
    };
    assert_eq!(stage, Stage::Stop);
    let grace = deadline_ms - started.at_ms - 11_000;
    let s = r.handle(rep(op, 1, Stage::Stop, recovered("")), T + 200);
    assert_eq!(deadline(&s), (Stage::SafetySnapshot, 22_000 + grace));
    let s = r.safety_report(op, T + 300);
    assert_eq!(deadline(&s), (Stage::Restore, 60_000 + grace));
    let s = r.handle(rep(op, 1, Stage::Restore, recovered("/data")), T + 400);
    assert_eq!(deadline(&s), (Stage::Start, 11_000 + 60_000 + grace));
}

/// Two mounts whose age limit passes at the same instant are each taken
/// away by a job of its own: the unmount job's id follows from its mount's
/// and is different for every mount.
#[test]
fn mounts_that_expire_together_get_an_unmount_job_each() {
    let mut r = Run::new(config(|p| p.max_mount_age_ms = Some(3_600_000)));
    let p = r.point(1, T);
    // Two mounts requested at one instant (ids differing in one low bit).
    let m1 = r.accepted(1, &p, RecoveryAction::mount(false), T + 100);
    let m3 = r.accepted(3, &p, RecoveryAction::mount(false), T + 100);
    r.handle(rep(m1, 1, Stage::Mount, recovered("/mnt/1")), T + 200);
    r.handle(rep(m3, 1, Stage::Mount, recovered("/mnt/3")), T + 200);
    assert_eq!(r.core.state().recovery.mounts.len(), 2);
    // Before the limit a timer takes nothing away; after it, both.
    let s = r.handle(Input::TimerFired, T + 1_000);
    assert!(s.events.is_empty(), "{:?}", kinds(&s.events));
    let s = r.handle(Input::TimerFired, T + 200 + 3_600_000 + 500);
    let asked: std::collections::BTreeSet<JobId> = s
        .events
        .iter()
        .filter(|e| matches!(e.body, EventBody::RecoveryRequested { .. }))
        .map(|e| e.job)
        .collect();
    assert_eq!(asked.len(), 2, "{:?}", kinds(&s.events));
    assert!(!asked.contains(&m1) && !asked.contains(&m3));
    r.replay();
}

impl Run {
    /// `input` sent by `by` (the runtime's `Core::handle_as`).
    fn handle_as(&mut self, input: Input, by: &str, now: u64) -> recman_core::Step {
        let s = self.core.handle_as(input, by, now);
        self.log.extend(s.events.clone());
        s
    }

    fn approve(&mut self, op: JobId, by: &str, now: u64) -> recman_core::Step {
        self.handle_as(
            Input::Approve {
                job: op,
                by: by.into(),
            },
            by,
            now,
        )
    }

    fn op_state(&self, op: JobId) -> OpState {
        self.core.state().recovery.ops[&op].state
    }
}

/// An in-place restore of a guarded target (`require_approval`).
fn guarded(r: &mut Run, n: u128, point: &str, by: &str, now: u64) -> recman_core::Step {
    let ask = Ask {
        request_id: RequestId::new(format!("rec{n}")),
        target: None,
        snapshot: Some(point.to_string()),
        action: RecoveryAction::in_place(),
        confirm: true,
    };
    r.handle_as(
        Input::Recover {
            ask,
            origin: "test".into(),
            new_job: JobId::from_parts(now, 1_000 + n),
        },
        by,
        now,
    )
}

#[test]
fn an_in_place_restore_of_a_guarded_target_waits_for_a_second_admin() {
    let mut r = Run::new(config(|p| {
        p.approval_ms = Some(10_000);
        p.retention = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
    }));
    let p1 = r.point(1, T);
    let s = guarded(&mut r, 1, &p1, "alice", T + 100);
    assert_eq!(kinds(&s.events), ["recovery_requested", "approval_required"]);
    assert!(
        s.commands.is_empty(),
        "nothing is sent before the approval: {:?}",
        s.commands
    );
    assert!(s.events.iter().all(|e| e.by == "alice"));
    assert_eq!(
        s.events[1].body,
        EventBody::ApprovalRequired {
            expires_ms: T + 100 + 10_000
        }
    );
    let op = s.events[0].job;
    assert_eq!(r.op_state(op), OpState::AwaitingApproval);
    assert_eq!(OpState::AwaitingApproval.as_str(), "awaiting_approval");
    // While it waits, its point is kept, a second in-place restore is
    // refused, a mount of the same target runs, and jobs are not held up.
    let p2 = r.point(2, T + 200);
    assert!(r.catalog().contains(&p1), "{:?}", r.catalog());
    assert_eq!(
        rejected(r.recover(2, &p2, RecoveryAction::in_place(), true, T + 300)),
        "target_busy"
    );
    let m = r.accepted(3, &p2, RecoveryAction::mount(false), T + 300);
    assert_eq!(r.stage(m), Some(Stage::Mount));
    r.handle(rep(m, 1, Stage::Mount, recovered("/mnt/p2")), T + 310);
    // Its requester, or an anonymous caller, cannot approve it.
    for (by, code) in [("alice", "self_approval"), ("", "approver_unknown")] {
        let s = r.approve(op, by, T + 400);
        assert!(
            s.events.is_empty() && s.commands.is_empty(),
            "{:?}",
            kinds(&s.events)
        );
        assert_eq!(rejected(s.reply), code);
    }
    assert_eq!(r.op_state(op), OpState::AwaitingApproval);
    // A second admin does: it starts at once (the target is idle).
    let s = r.approve(op, "bob", T + 500);
    assert_eq!(
        s.reply,
        Reply::Accepted {
            job: op,
            existing: false
        }
    );
    assert_eq!(kinds(&s.events), ["approved", "recovery_step_started"]);
    assert_eq!(
        s.events[0].body,
        EventBody::Approved {
            requester: "alice".into()
        }
    );
    assert!(s.events.iter().all(|e| e.by == "bob"), "{:?}", s.events);
    let [cmd] = s.commands.as_slice() else {
        panic!("{:?}", s.commands)
    };
    assert_eq!(cmd.command.stage, Stage::Stop);
    let a = r.core.state().recovery.ops[&op].approval.clone().unwrap();
    assert_eq!((a.by.as_deref(), a.at_ms), (Some("bob"), Some(T + 500)));
    // Again: the same approval; another admin's is refused.
    assert_eq!(
        r.approve(op, "bob", T + 510).reply,
        Reply::Accepted {
            job: op,
            existing: true
        }
    );
    assert_eq!(
        rejected(r.approve(op, "carol", T + 510).reply),
        "already_approved"
    );
    // Its expiry no longer counts once approved.
    let s = r.handle(Input::TimerFired, T + 100 + 10_000);
    assert!(
        kinds(&s.events).iter().all(|k| *k != "recovery_failed"),
        "{:?}",
        kinds(&s.events)
    );
    r.replay();
}

#[test]
fn an_unapproved_request_expires_never_runs_and_cannot_be_approved_after() {
    let mut r = Run::new(config(|p| p.approval_ms = Some(10_000)));
    let p1 = r.point(1, T);
    let op = guarded(&mut r, 1, &p1, "alice", T + 100).events[0].job;
    assert_eq!(r.core.next_deadline(), Some(T + 100 + 10_000));
    let s = r.handle(Input::TimerFired, T + 100 + 9_999);
    assert!(s.events.is_empty(), "{:?}", kinds(&s.events));
    // At the expiry it fails, the live data untouched, nothing sent.
    let s = r.handle(Input::TimerFired, T + 100 + 10_000);
    assert_eq!(kinds(&s.events), ["recovery_failed"]);
    assert!(s.commands.is_empty());
    let EventBody::RecoveryFailed { reason, live } = &s.events[0].body else {
        unreachable!()
    };
    assert_eq!(*live, LiveData::Untouched);
    assert!(
        reason.contains("approval expired") && reason.contains("alice"),
        "{reason}"
    );
    assert_eq!(r.op_state(op), OpState::Failed);
    assert!(
        r.core.state().recovery.ops[&op].timeline.is_empty(),
        "no step ran"
    );
    let s = r.approve(op, "bob", T + 100 + 10_001);
    assert_eq!(rejected(s.reply), "approval_expired");
    assert!(s.events.is_empty());
    // An approval that arrives at the expiry, before the timer, is refused too.
    let p2 = r.point(2, T + 20_000);
    let op2 = guarded(&mut r, 2, &p2, "alice", T + 30_000).events[0].job;
    assert_eq!(
        rejected(r.approve(op2, "bob", T + 40_000).reply),
        "approval_expired"
    );
    assert_eq!(r.op_state(op2), OpState::AwaitingApproval);
    // The target is free again for the next request once it failed.
    r.handle(Input::TimerFired, T + 40_000);
    assert_eq!(r.op_state(op2), OpState::Failed);
    r.replay();
}

/// A guarded target whose first point a mount kept past the second job's
/// retention: unmounted, that point is beyond `keep_last` (1) until an
/// operator's prune or the next job.
fn prunable() -> (Run, String, String) {
    let mut r = Run::new(config(|p| {
        p.approval_ms = Some(10_000);
        p.retention = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
    }));
    let p1 = r.point(1, T);
    let m = r.accepted(1, &p1, RecoveryAction::mount(false), T + 10);
    r.handle(rep(m, 1, Stage::Mount, recovered("/mnt/p1")), T + 20);
    let p2 = r.point(2, T + 30);
    let ask = Ask {
        request_id: RequestId::new("unmount".to_string()),
        target: None,
        snapshot: None,
        action: RecoveryAction::Unmount { mount: m },
        confirm: false,
    };
    let Reply::Accepted { job: un, .. } = r.ask(ask, JobId::from_parts(T + 40, 9), T + 40) else {
        panic!("unmount refused")
    };
    r.handle(rep(un, 1, Stage::Unmount, recovered("/mnt/p1")), T + 50);
    assert_eq!(r.catalog(), [p1.clone(), p2.clone()]);
    (r, p1, p2)
}

fn prune(r: &mut Run, by: &str, n: u128, now: u64) -> recman_core::Step {
    r.handle_as(
        Input::Prune {
            targets: vec![a()],
            new_job: JobId::from_parts(now, n),
        },
        by,
        now,
    )
}

#[test]
fn only_in_place_restores_and_prunes_wait_and_an_approved_prune_deletes() {
    let (mut r, p1, p2) = prunable();
    // A restore beside production leaves the live data alone: no approval.
    let to = r.accepted(
        2,
        &p2,
        RecoveryAction::To {
            path: "/srv/x".into(),
            until: None,
        },
        T + 100,
    );
    assert_eq!(r.stage(to), Some(Stage::Restore));
    assert_eq!(
        rejected(r.approve(to, "bob", T + 110).reply),
        "approval_not_required"
    );
    r.handle(rep(to, 1, Stage::Restore, recovered("/srv/x")), T + 120);
    // An operator's prune would delete p1: it waits for a second admin,
    // nothing asked, nothing sent.
    let s = prune(&mut r, "alice", 1, T + 200);
    assert_eq!(kinds(&s.events), ["recovery_requested", "approval_required"]);
    assert!(s.commands.is_empty(), "{:?}", s.commands);
    let job = JobId::from_parts(T + 200, 1);
    assert_eq!(
        s.reply,
        Reply::Pruning {
            asked: 0,
            awaiting: vec![(a(), job)]
        }
    );
    assert_eq!(r.op_state(job), OpState::AwaitingApproval);
    assert!(r.core.state().prunes.is_empty());
    // Asked again, by anyone: the same waiting job, nothing new.
    let s = prune(&mut r, "carol", 2, T + 210);
    assert!(s.events.is_empty(), "{:?}", kinds(&s.events));
    assert_eq!(
        s.reply,
        Reply::Pruning {
            asked: 0,
            awaiting: vec![(a(), job)]
        }
    );
    // Through the recovery route, a second prune of the target is refused.
    let ask = Ask {
        request_id: RequestId::new("p-again".to_string()),
        target: Some(a()),
        snapshot: None,
        action: RecoveryAction::Prune,
        confirm: false,
    };
    assert_eq!(
        rejected(r.ask(ask, JobId::from_parts(T + 220, 3), T + 220)),
        "prune_pending"
    );
    // Its requester cannot approve it; a second admin does, and the deletes
    // are asked for at once, by the rules as they stand.
    assert_eq!(rejected(r.approve(job, "alice", T + 300).reply), "self_approval");
    assert_eq!(r.catalog(), [p1.clone(), p2.clone()]);
    let s = r.approve(job, "bob", T + 400);
    assert_eq!(
        kinds(&s.events),
        ["approved", "prune_requested", "recovery_completed"]
    );
    assert!(s.events.iter().all(|e| e.by == "bob"), "{:?}", s.events);
    let EventBody::PruneRequested { names, .. } = &s.events[1].body else {
        unreachable!()
    };
    assert_eq!(names, std::slice::from_ref(&p1));
    assert!(
        s.commands.iter().any(|c| c.command.stage == Stage::Prune),
        "{:?}",
        s.commands
    );
    assert_eq!(r.op_state(job), OpState::Completed);
    assert!(r.core.state().prunes.contains_key(&(a(), p1.clone())));
    r.replay();
}

#[test]
fn an_unapproved_prune_expires_and_deletes_nothing() {
    let (mut r, p1, p2) = prunable();
    let s = prune(&mut r, "alice", 1, T + 200);
    let job = s.events[0].job;
    let s = r.handle(Input::TimerFired, T + 200 + 10_000);
    assert_eq!(kinds(&s.events), ["recovery_failed"]);
    assert!(s.commands.is_empty());
    assert_eq!(r.op_state(job), OpState::Failed);
    assert_eq!(
        rejected(r.approve(job, "bob", T + 200 + 10_001).reply),
        "approval_expired"
    );
    assert!(r.core.state().prunes.is_empty());
    assert_eq!(r.catalog(), [p1, p2]);
    // A target without require_approval is pruned directly; its prune job
    // through the recovery route is refused.
    let mut r = Run::new(config(|p| {
        p.retention = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
    }));
    let ask = Ask {
        request_id: RequestId::new("p".to_string()),
        target: Some(a()),
        snapshot: None,
        action: RecoveryAction::Prune,
        confirm: false,
    };
    assert_eq!(
        rejected(r.ask(ask, JobId::from_parts(T, 3), T)),
        "approval_not_required"
    );
    r.replay();
}

const HOUR: u64 = 3_600_000;

#[test]
fn an_ended_recovery_leaves_the_state_and_its_request_id_is_still_answered() {
    let mut r = Run::new(config(|p| p.max_mount_age_ms = Some(3 * HOUR)));
    let p = r.point(1, T);
    let m = r.accepted(1, &p, RecoveryAction::mount(false), T + 100);
    r.handle(rep(m, 1, Stage::Mount, recovered("/mnt/p")), T + 200);
    // An event more than `keep_finished` (1 h) after its end: the job
    // leaves, the mount it made stays.
    r.point(2, T + 2 * HOUR);
    let l = &r.core.state().recovery;
    assert!(!l.ops.contains_key(&m), "an ended recovery stays forever");
    assert_eq!(l.retired, 1);
    assert!(l.mounts.contains_key(&m));
    // Its request id is still in the window: the same request is the same
    // job, another one with the id is refused.
    match r.recover(1, &p, RecoveryAction::mount(false), true, T + 2 * HOUR + 1) {
        Reply::Accepted { job, existing: true } => assert_eq!(job, m),
        other => panic!("{other:?}"),
    }
    let other = r.recover(1, &p, RecoveryAction::mount(true), true, T + 2 * HOUR + 2);
    assert_eq!(rejected(other), "request_id_in_use");
    // `max_mount_age` asks for the unmount; it fails, so the mount stays
    // (the operator's to retry) and the engine does not ask again, also
    // after the unmount job and its request id left.
    let due = r.core.next_deadline().expect("the mount's age limit");
    assert_eq!(due, T + 200 + 3 * HOUR);
    let s = r.handle(Input::TimerFired, due);
    assert_eq!(kinds(&s.events), ["recovery_requested", "recovery_step_started"]);
    let un = s.events[0].job;
    let s = r.handle(rep(un, 1, Stage::Unmount, failed("busy")), due + 1);
    assert_eq!(kinds(&s.events), ["recovery_step_failed", "recovery_failed"]);
    let week = 8 * 24 * HOUR;
    r.point(3, due + week);
    let l = &r.core.state().recovery;
    assert!(
        l.ops.is_empty() && l.requests.is_empty(),
        "{:?}",
        l.requests.keys()
    );
    assert!(l.mounts.contains_key(&m));
    assert!(r.core.next_deadline().is_none_or(|d| d > due + week));
    let s = r.handle(Input::TimerFired, due + week + 1);
    assert!(s.events.is_empty(), "{:?}", kinds(&s.events));
    // Past the window the request id is a new request.
    assert!(matches!(
        r.recover(1, &p, RecoveryAction::mount(false), true, due + week + 2),
        Reply::Accepted { existing: false, .. }
    ));
    r.replay();
}

#[test]
fn a_safety_snapshot_stays_known_as_one_after_its_recovery_left() {
    let mut r = Run::new(config(|_| {}));
    let p = r.point(1, T);
    let j1 = JobId::from_parts(T, 1);
    let op = r.accepted(1, &p, RecoveryAction::in_place(), T + 100);
    r.handle(rep(op, 1, Stage::Stop, recovered("")), T + 200);
    r.safety_report(op, T + 300);
    r.handle(rep(op, 1, Stage::Restore, recovered("/data")), T + 400);
    r.handle(rep(op, 1, Stage::Start, recovered("")), T + 500);
    // Hours later the recovery has left; its safety snapshot is still the
    // newest restore point, and known to be no snapshot job's: the job
    // that made the newest one a snapshot job made stays (retention files
    // its deletes under it).
    let j2 = r.request(2, T + 2 * HOUR);
    let s = r.core.state();
    assert!(!s.recovery.ops.contains_key(&op));
    assert_eq!(s.recovery.retired, 1);
    assert_eq!(r.catalog(), [p.clone(), safety_name(op)]);
    assert_eq!(s.newest_snapshot_job(&a()), Some(j1));
    assert!(s.jobs.contains_key(&j1), "the newest snapshot job's job left");
    // A newer point: that one's job is the newest, and the first may leave.
    r.walk(j2, T + 2 * HOUR);
    r.point(3, T + 4 * HOUR);
    let s = r.core.state();
    assert_eq!(
        s.newest_snapshot_job(&a()),
        Some(JobId::from_parts(T + 4 * HOUR, 3))
    );
    assert!(!s.jobs.contains_key(&j1));
    r.replay();
}
