//! Bounded state: a finished job leaves the core's state after its stay, events
//! that come for it later fold the same live and on replay and never bring it
//! back, and request ids answer with their job only within their window.

use std::collections::BTreeMap;

use recman_core::{evolve, Bounds, Core, CoreConfig, Input, JobState, Reply, State, TargetPolicy};
use recman_events::{
    snapshot_name, Event, EventBody, JobId, Outcome, Report, RequestId, SnapshotInfo, SnapshotKind,
    SnapshotRequest, Stage, StepDetail, TargetId, WorkerId, SCHEMA_VERSION,
};

const T: u64 = 1_750_000_000_000;
const KEEP: u64 = 1_000;
const WINDOW: u64 = 60_000;

fn config() -> CoreConfig {
    let mut targets = BTreeMap::new();
    for t in ["a", "b"] {
        let mut p = TargetPolicy::new(format!("host.{t}").as_str(), "array.x");
        p.keep_last = Some(1);
        targets.insert(TargetId::from(t), p);
    }
    CoreConfig {
        targets,
        schedules: Vec::new(),
        seed: 1,
        mutation: None,
        bounds: Bounds {
            request_window_ms: WINDOW,
            keep_finished_ms: KEEP,
        },
    }
}

/// The core and every event it made durable.
struct Rig {
    core: Core,
    log: Vec<Event>,
}

impl Rig {
    fn new() -> Self {
        Rig {
            core: Core::new(config()),
            log: Vec::new(),
        }
    }

    fn handle(&mut self, input: Input, now: u64) -> Vec<&'static str> {
        let s = self.core.handle(input, now);
        let kinds = s.events.iter().map(|e| e.body.kind()).collect();
        self.log.extend(s.events);
        kinds
    }

    fn request(&mut self, rid: &str, targets: &[&str], n: u128, now: u64) -> Reply {
        let req = SnapshotRequest {
            schema_version: SCHEMA_VERSION,
            request_id: RequestId::from(rid),
            targets: targets.iter().map(|t| TargetId::from(*t)).collect(),
            kind: SnapshotKind::Full,
        };
        let s = self.core.handle(
            Input::Request {
                req,
                origin: "test".into(),
                new_job: JobId::from_parts(now, n),
            },
            now,
        );
        self.log.extend(s.events);
        s.reply
    }

    fn report(&mut self, job: JobId, stage: Stage, outcome: Outcome, now: u64) -> Vec<&'static str> {
        let worker = if matches!(stage, Stage::Snapshot | Stage::Prune) {
            "p"
        } else {
            "w"
        };
        self.handle(
            Input::Report(Report {
                schema_version: SCHEMA_VERSION,
                message_id: "m".into(),
                job,
                attempt: 1,
                stage,
                targets: vec![TargetId::from("a")],
                worker: WorkerId::from(worker),
                duration_us: 10,
                outcome,
            }),
            now,
        )
    }

    /// A job of target `a` from request to its end, 10 ms a step.
    fn complete(&mut self, rid: &str, n: u128, at: u64) -> JobId {
        let Reply::Accepted { job, existing: false } = self.request(rid, &["a"], n, at) else {
            panic!("request {rid} not accepted as new");
        };
        self.report(
            job,
            Stage::Freeze,
            ok(StepDetail::Frozen { deadline_ms: 0 }),
            at + 10,
        );
        self.report(job, Stage::Snapshot, snap(job), at + 20);
        self.report(job, Stage::Thaw, thawed(), at + 30);
        let k = self.report(job, Stage::FlushLogs, ok(StepDetail::Flushed), at + 40);
        assert!(k.contains(&"completed"), "{k:?}");
        job
    }

    /// The log folded again into a fresh state with the same bounds.
    fn assert_replay_equal(&self) {
        let mut s = State {
            bounds: config().bounds,
            ..State::default()
        };
        for e in &self.log {
            evolve(&mut s, e);
        }
        assert_eq!(&s, self.core.state(), "replay differs from the live state");
        let mut again = Core::new(config());
        for e in &self.log {
            again.apply(e);
        }
        assert_eq!(
            again.state(),
            self.core.state(),
            "Core::apply differs from the live state"
        );
    }
}

fn ok(detail: StepDetail) -> Outcome {
    Outcome::Ok { detail }
}

fn thawed() -> Outcome {
    ok(StepDetail::Thawed {
        freeze_window_us: 5,
        by_watchdog: false,
    })
}

fn snap(job: JobId) -> Outcome {
    ok(StepDetail::Snapshot(SnapshotInfo {
        name: snapshot_name(job, 1),
        provider: "test".into(),
        location: "x".into(),
        size_bytes: None,
        existed: false,
        array_expiry: None,
    }))
}

fn pruned(names: Vec<String>) -> Outcome {
    ok(StepDetail::Pruned {
        deleted: names,
        failed: vec![],
    })
}

#[test]
fn a_finished_job_leaves_the_state_and_later_reports_for_it_fold_identically() {
    let mut r = Rig::new();
    let j1 = r.complete("r1", 1, T);
    // Still there for its stay, and held while it is `a`'s newest restore point.
    r.request("other-b", &["b"], 9, T + 5 * KEEP);
    assert!(
        r.core.state().job(&j1).is_some(),
        "the newest restore point of a target stays"
    );

    // A newer job completes: retention asks to delete j1's point, under j2.
    let j2 = r.complete("r2", 2, T + 6 * KEEP);
    assert!(r.log.iter().any(|e| e.job == j2
        && matches!(&e.body, EventBody::PruneRequested { names, .. } if names == &vec![snapshot_name(j1, 1)])));
    // j1 is no longer held: it leaves at the next event past its stay.
    r.request("other-b2", &["b"], 10, T + 8 * KEEP);
    assert!(r.core.state().job(&j1).is_none(), "j1 left the state");
    assert!(
        r.core.state().job(&j2).is_some(),
        "j2 waits for its delete's outcome"
    );
    assert_eq!(r.core.state().retired, 1);
    assert!(!r.core.state().requests.is_empty());

    // The delete's outcome for j1's point: j2's hold ends; the catalog drops it.
    let k = r.report(j2, Stage::Prune, pruned(vec![snapshot_name(j1, 1)]), T + 9 * KEEP);
    assert_eq!(k, ["snapshot_deleted"]);
    assert!(r.core.state().prunes.is_empty());
    assert!(!r.core.state().catalog[&TargetId::from("a")]
        .iter()
        .any(|e| e.job == j1));

    // Late and duplicate reports for j1, and the same delete again: nothing
    // moves, j1 does not come back.
    let applied = r.core.state().applied;
    assert!(r.report(j1, Stage::Thaw, thawed(), T + 10 * KEEP).is_empty());
    assert!(r
        .report(j1, Stage::Snapshot, snap(j1), T + 10 * KEEP + 1)
        .is_empty());
    assert!(r
        .report(j1, Stage::FlushLogs, ok(StepDetail::Flushed), T + 10 * KEEP + 2)
        .is_empty());
    assert!(r
        .report(
            j2,
            Stage::Prune,
            pruned(vec![snapshot_name(j1, 1)]),
            T + 10 * KEEP + 3
        )
        .is_empty());
    assert_eq!(r.core.state().applied, applied);
    assert!(r.core.state().job(&j1).is_none());
    // A cancel of a job that left is refused like any unknown job.
    let s = r.core.handle(
        Input::Cancel {
            job: j1,
            reason: "late".into(),
        },
        T + 10 * KEEP + 4,
    );
    assert!(
        matches!(
            s.reply,
            Reply::Rejected {
                code: "unknown_job",
                ..
            }
        ),
        "{:?}",
        s.reply
    );

    // A stray SnapshotDeleted for the old owner folded from a log (as a
    // duplicate record would be): it changes nothing but `applied`, also on replay.
    let stray = Event {
        at_ms: T + 10 * KEEP + 5,
        job: j1,
        body: EventBody::SnapshotDeleted {
            target: TargetId::from("a"),
            name: snapshot_name(j1, 1),
        },
        by: String::new(),
    };
    r.core.apply(&stray);
    r.log.push(stray);
    assert!(r.core.state().job(&j1).is_none());

    // j2 leaves once its delete is answered and a newer point exists.
    let j3 = r.complete("r3", 3, T + 20 * KEEP);
    r.report(
        j3,
        Stage::Prune,
        pruned(vec![snapshot_name(j2, 1)]),
        T + 20 * KEEP + 100,
    );
    r.request("other-b3", &["b"], 11, T + 30 * KEEP);
    assert!(
        r.core.state().job(&j2).is_none(),
        "j2 left after its delete's outcome"
    );
    assert!(
        r.core.state().job(&j3).is_some(),
        "the newest restore point stays"
    );
    // Unfinished jobs never leave.
    assert!(r
        .core
        .state()
        .jobs
        .values()
        .filter(|j| !j.state.is_terminal())
        .all(|j| j.targets == vec![TargetId::from("b")]));
    assert_eq!(
        r.core
            .state()
            .jobs
            .values()
            .filter(|j| j.state == JobState::Completed)
            .count(),
        1
    );
    r.assert_replay_equal();
}

#[test]
fn a_request_id_is_the_same_job_inside_its_window_and_a_new_request_after() {
    let mut r = Rig::new();
    let j1 = r.complete("r1", 1, T);
    // Long after j1 left the state, inside the window: the same job.
    r.request("other", &["b"], 5, T + 10 * KEEP);
    assert!(r.core.state().job(&j1).is_some(), "j1 is a's newest point");
    let j2 = r.complete("r2", 2, T + 11 * KEEP);
    r.report(
        j2,
        Stage::Prune,
        pruned(vec![snapshot_name(j1, 1)]),
        T + 11 * KEEP + 100,
    );
    r.request("other2", &["b"], 6, T + 20 * KEEP);
    assert!(r.core.state().job(&j1).is_none(), "j1 left the state");
    assert_eq!(
        r.request("r1", &["a"], 7, T + 21 * KEEP),
        Reply::Accepted {
            job: j1,
            existing: true
        }
    );
    // The same id for other targets is refused, also after the job left.
    assert!(matches!(
        r.request("r1", &["b"], 8, T + 21 * KEEP),
        Reply::Rejected {
            code: "request_id_in_use",
            ..
        }
    ));
    // Just before the window ends: still the same job.
    assert_eq!(
        r.request("r1", &["a"], 9, T + WINDOW - 1),
        Reply::Accepted {
            job: j1,
            existing: true
        }
    );
    // At the window's end: a new request, a new job.
    let at = T + WINDOW;
    match r.request("r1", &["a"], 10, at) {
        Reply::Accepted { job, existing: false } => assert_eq!(job, JobId::from_parts(at, 10)),
        other => panic!("expected a new job, got {other:?}"),
    }
    // And that new job answers the id from now on.
    assert_eq!(
        r.request("r1", &["a"], 11, at + 1),
        Reply::Accepted {
            job: JobId::from_parts(at, 10),
            existing: true
        }
    );
    r.assert_replay_equal();
}
