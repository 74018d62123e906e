//! One target `a` driven through the core, its log kept: the harness of
//! the stage tests (`verify_stage`, `reconcile`). Each test file adds the
//! methods of its own stage in an `impl Run` block.
#![allow(dead_code)]

use recman_core::{evolve, Core, CoreConfig, Input, Reply, State};
use recman_events::{
    snapshot_name, ArrayExpiry, Event, JobId, Outcome, Report, RequestId, SnapshotInfo, SnapshotKind,
    SnapshotRequest, Stage, StepDetail, TargetId, WorkerId, SCHEMA_VERSION,
};

pub fn a() -> TargetId {
    TargetId::from("a")
}

/// A worker's report on target `a`.
pub fn rep(job: JobId, attempt: u32, stage: Stage, outcome: Outcome) -> Input {
    Input::Report(Report {
        schema_version: SCHEMA_VERSION,
        message_id: format!("m{attempt}{stage}"),
        job,
        attempt,
        stage,
        targets: vec![a()],
        worker: WorkerId::from("w"),
        duration_us: 10,
        outcome,
    })
}

pub fn ok(detail: StepDetail) -> Outcome {
    Outcome::Ok { detail }
}

pub fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.body.kind()).collect()
}

pub struct Run {
    pub core: Core,
    pub log: Vec<Event>,
    /// What the provider reports of the array's clock on its copies.
    pub array_expiry: Option<ArrayExpiry>,
}

impl Run {
    pub fn new(cfg: CoreConfig) -> Run {
        Run {
            core: Core::new(cfg),
            log: Vec::new(),
            array_expiry: None,
        }
    }

    pub fn handle(&mut self, input: Input, now: u64) -> recman_core::Step {
        let s = self.core.handle(input, now);
        self.log.extend(s.events.clone());
        s
    }

    /// Job `n` of target `a`, requested at `now` (accepted).
    pub fn request(&mut self, n: u128, now: u64) -> JobId {
        let job = JobId::from_parts(now, n);
        let req = SnapshotRequest {
            schema_version: SCHEMA_VERSION,
            request_id: RequestId::new(format!("r{n}")),
            targets: vec![a()],
            kind: SnapshotKind::Full,
        };
        let s = self.handle(
            Input::Request {
                req,
                origin: "test".into(),
                new_job: job,
            },
            now,
        );
        assert!(matches!(s.reply, Reply::Accepted { .. }));
        job
    }

    /// Walks a started job through every stage; returns the flush's step.
    pub fn walk(&mut self, j: JobId, now: u64) -> recman_core::Step {
        self.handle(
            rep(j, 1, Stage::Freeze, ok(StepDetail::Frozen { deadline_ms: 0 })),
            now + 1,
        );
        let info = SnapshotInfo {
            name: snapshot_name(j, 1),
            provider: "test".into(),
            location: "x".into(),
            size_bytes: None,
            existed: false,
            array_expiry: self.array_expiry,
        };
        self.handle(
            rep(j, 1, Stage::Snapshot, ok(StepDetail::Snapshot(info))),
            now + 2,
        );
        let thawed = StepDetail::Thawed {
            freeze_window_us: 5,
            by_watchdog: false,
        };
        self.handle(rep(j, 1, Stage::Thaw, ok(thawed)), now + 3);
        self.handle(rep(j, 1, Stage::FlushLogs, ok(StepDetail::Flushed)), now + 4)
    }

    /// The log folded from scratch gives the live state.
    pub fn replay(&self) {
        let mut s = State::default();
        for e in &self.log {
            evolve(&mut s, e);
        }
        assert_eq!(&s, self.core.state(), "replay differs from live state");
    }
}
