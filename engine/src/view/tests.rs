//! The projection over a hand-written log of two jobs and a retention delete.

use super::*;
use recman_events::{Event, SnapshotKind, StepError};

fn ev(seq: u64, at: u64, job: JobId, body: EventBody) -> StoredEvent {
    StoredEvent {
        seq,
        event: Event {
            at_ms: at,
            job,
            body,
            by: String::new(),
        },
    }
}

fn job_events(job: JobId, seq0: u64, at0: u64, name: &str) -> Vec<StoredEvent> {
    let t = TargetId::from("db01");
    let w = WorkerId::from("w1");
    let ok = |stage, detail, d| EventBody::StepSucceeded {
        stage,
        attempt: 1,
        target: t.clone(),
        worker: w.clone(),
        duration_us: d,
        detail,
    };
    let started = |stage| EventBody::StageStarted {
        stage,
        attempt: 1,
        deadline_ms: at0 + 30_000,
    };
    let info = SnapshotInfo {
        name: name.into(),
        provider: "copy".into(),
        location: format!("/snaps/{name}"),
        size_bytes: None,
        existed: false,
        array_expiry: None,
    };
    let bodies = vec![
        EventBody::Requested {
            request_id: format!("r-{name}").into(),
            targets: vec![t.clone()],
            kind: SnapshotKind::Full,
            origin: "test".into(),
        },
        EventBody::AttemptStarted {
            attempt: 1,
            freeze_budget_ms: 8000,
            watchdog_at_ms: at0 + 9000,
        },
        started(Stage::Freeze),
        ok(
            Stage::Freeze,
            StepDetail::Frozen {
                deadline_ms: at0 + 9000,
            },
            1000,
        ),
        started(Stage::Snapshot),
        ok(Stage::Snapshot, StepDetail::Snapshot(info.clone()), 2000),
        started(Stage::Thaw),
        ok(
            Stage::Thaw,
            StepDetail::Thawed {
                freeze_window_us: 3500,
                by_watchdog: false,
            },
            300,
        ),
        started(Stage::FlushLogs),
        ok(Stage::FlushLogs, StepDetail::Flushed, 100),
        EventBody::Completed {
            attempt: 1,
            snapshot: info,
            freeze_window_us: 3500,
        },
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| ev(seq0 + i as u64, at0 + i as u64 * 10, job, b))
        .collect()
}

#[test]
fn two_jobs_timeline_catalog_retention_metrics() {
    let a = JobId::from_parts(1_000_000, 1);
    let b = JobId::from_parts(2_000_000, 2);
    let mut evs = job_events(a, 1, 1_000_000, "snap-a");
    evs.extend(job_events(b, 12, 2_000_000, "snap-b"));
    let t = TargetId::from("db01");
    let mut v = View::new([(t.clone(), Some(2))].into());
    for e in &evs {
        v.apply(e);
    }
    assert_eq!(v.last_seq, 22);
    let d = v.job(&a).unwrap();
    assert_eq!(d.summary.state, "completed");
    let stages: Vec<Stage> = d.timeline.iter().map(|s| s.stage).collect();
    assert_eq!(
        stages,
        [
            Stage::Queue,
            Stage::Freeze,
            Stage::Snapshot,
            Stage::Thaw,
            Stage::FlushLogs
        ]
    );
    let freeze = &d.timeline[1];
    assert_eq!(freeze.duration_ms, Some(20));
    assert_eq!(freeze.steps[0].worker.as_ref().unwrap().as_str(), "w1");
    assert_eq!(d.freeze_window.window_us, Some(3500));

    let cat = v.snapshots(None);
    assert_eq!(
        cat.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["snap-b", "snap-a"]
    );
    assert_eq!(cat[0].retention.as_ref().unwrap().expires_after, 2);
    assert_eq!(cat[1].retention.as_ref().unwrap().expires_after, 1);
    assert_eq!(cat[1].cut_at_ms, 1_000_050, "the time of the snapshot report");

    let (page, next) = v.jobs(None, None, None, None, 1);
    assert_eq!(page[0].id, b, "newest first");
    let (page2, next2) = v.jobs(None, None, None, next, 1);
    assert_eq!(page2[0].id, a);
    assert_eq!(next2, None);
    assert!(v.jobs(Some("failed"), None, None, None, 10).0.is_empty());

    v.apply(&ev(
        23,
        3_000_000,
        a,
        EventBody::SnapshotDeleted {
            target: t.clone(),
            name: "snap-a".into(),
        },
    ));
    assert_eq!(v.snapshots(Some(&t)).len(), 1);
    // A duplicate fact after the end changes nothing.
    let dup = evs[21].clone();
    assert!(matches!(dup.event.body, EventBody::Completed { .. }));
    v.apply(&StoredEvent { seq: 24, ..dup });
    assert_eq!(v.snapshots(None).len(), 1);
    let tv = v.targets();
    assert_eq!(tv[0].state, "idle");
    assert_eq!(tv[0].last_snapshot.as_ref().unwrap().name, "snap-b");

    let mut m = String::new();
    v.render_metrics(&mut m);
    assert!(m.contains("recman_jobs{state=\"completed\"} 2"), "{m}");
    assert!(m.contains("recman_log_last_seq 24"), "{m}");
    assert!(
        m.contains("recman_freeze_window_seconds_count{target=\"db01\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("recman_stage_duration_seconds_bucket{target=\"db01\",stage=\"snapshot\",le=\"0.005\"} 2"),
        "{m}"
    );

    // Replay up to the end of the first job: one job, completed; the second unknown.
    let mut half = View::new(Default::default());
    for e in evs.iter().take(11) {
        half.apply(e);
    }
    assert!(half.job(&b).is_none());
    assert_eq!(digest(&half.state)["applied"], 11);
}

#[test]
fn until_parses_seq_and_time() {
    assert_eq!("12".parse::<Until>().unwrap(), Until::Seq(12));
    assert_eq!(
        "1970-01-01T00:00:01Z".parse::<Until>().unwrap(),
        Until::Time(1000)
    );
    assert!("soon".parse::<Until>().is_err());
}

/// Issue 12 item 5: a prune that failed is shown by `targets` and
/// `snapshots` (the snapshot is still listed: it still exists) until a
/// later prune of it succeeds.
#[test]
fn a_failed_prune_is_shown_until_the_snapshot_is_gone() {
    let a = JobId::from_parts(1_000_000, 1);
    let b = JobId::from_parts(2_000_000, 2);
    let mut evs = job_events(a, 1, 1_000_000, "snap-a");
    evs.extend(job_events(b, 12, 2_000_000, "snap-b"));
    let t = TargetId::from("db01");
    let mut v = View::new([(t.clone(), Some(1))].into());
    for e in &evs {
        v.apply(e);
    }
    v.apply(&ev(
        23,
        3_000_000,
        b,
        EventBody::PruneRequested {
            target: t.clone(),
            names: vec!["snap-a".into()],
            retry_at_ms: 3_030_000,
        },
    ));
    v.apply(&ev(
        24,
        3_000_100,
        a,
        EventBody::PruneFailed {
            target: t.clone(),
            name: "snap-a".into(),
            error: StepError::new("3par_has_child", "the copy has a child", false),
        },
    ));
    let cat = v.snapshots(Some(&t));
    assert_eq!(cat.len(), 2, "still there, still listed");
    assert_eq!(cat[1].name, "snap-a");
    assert_eq!(
        cat[1].prune_failure.as_deref(),
        Some("3par_has_child: the copy has a child")
    );
    assert_eq!(cat[0].prune_failure, None);
    let f = v.targets()[0]
        .last_prune_failure
        .clone()
        .expect("shown by targets");
    assert_eq!((f.name.as_str(), f.job, f.at_ms), ("snap-a", a, 3_000_100));
    v.apply(&ev(
        25,
        3_100_000,
        a,
        EventBody::SnapshotDeleted {
            target: t.clone(),
            name: "snap-a".into(),
        },
    ));
    assert_eq!(v.snapshots(Some(&t)).len(), 1);
    assert_eq!(v.targets()[0].last_prune_failure, None);
}

/// Issue 16: an in-place restore and a mount are jobs of the view (listed
/// newest first among the snapshot jobs, with their action as kind and
/// their steps as the timeline); the safety snapshot enters the catalog;
/// a mounted point is shown in use; `mounts` lists the mount.
#[test]
fn recovery_jobs_safety_snapshots_and_mounts() {
    use recman_events::RecoveryAction;
    let a = JobId::from_parts(1_000_000, 1);
    let r = JobId::from_parts(2_000_000, 2);
    let m = JobId::from_parts(3_000_000, 3);
    let t = TargetId::from("db01");
    let w = WorkerId::from("w1");
    let mut v = View::new([(t.clone(), Some(5))].into());
    for e in job_events(a, 1, 1_000_000, "snap-a") {
        v.apply(&e);
    }
    let mut seq = 11;
    let mut at = 2_000_000;
    let mut put = |v: &mut View, job: JobId, body: EventBody| {
        seq += 1;
        at += 10;
        v.apply(&ev(seq, at, job, body));
    };
    put(
        &mut v,
        r,
        EventBody::RecoveryRequested {
            request_id: "r-restore".into(),
            target: t.clone(),
            name: "snap-a".into(),
            action: RecoveryAction::in_place(),
            origin: "cli".into(),
        },
    );
    let safety = recman_core::recovery::safety_name(r);
    for (stage, location) in [
        (Stage::Stop, String::new()),
        (Stage::SafetySnapshot, safety.clone()),
        (Stage::Restore, "/srv/db01".to_string()),
        (Stage::Start, String::new()),
    ] {
        put(
            &mut v,
            r,
            EventBody::RecoveryStepStarted {
                stage,
                deadline_ms: 9_000_000,
            },
        );
        put(
            &mut v,
            r,
            EventBody::RecoveryStepDone {
                stage,
                worker: w.clone(),
                duration_us: 100,
                location,
            },
        );
    }
    put(
        &mut v,
        r,
        EventBody::RecoveryCompleted {
            location: "/srv/db01".into(),
        },
    );

    let d = v.job(&r).expect("a recovery job is a job");
    assert_eq!(
        (d.summary.state.as_str(), d.summary.kind.as_str()),
        ("completed", "restore")
    );
    let stages: Vec<Stage> = d.timeline.iter().map(|s| s.stage).collect();
    assert_eq!(
        stages,
        [Stage::Stop, Stage::SafetySnapshot, Stage::Restore, Stage::Start]
    );
    assert!(d.timeline.iter().all(|s| s.steps.len() == 1 && s.steps[0].ok));
    let rv = d.recovery.expect("its recovery facts");
    assert_eq!(rv.safety_snapshot.as_deref(), Some(safety.as_str()));
    assert_eq!(rv.location.as_deref(), Some("/srv/db01"));
    assert_eq!(rv.live, None, "completed: no live-data verdict");

    let cat = v.snapshots(Some(&t));
    assert_eq!(cat[0].name, safety, "the safety snapshot is the newest point");
    assert_eq!((cat[0].kind.as_str(), cat[0].job), (SAFETY_KIND, r));

    put(
        &mut v,
        m,
        EventBody::RecoveryRequested {
            request_id: "r-mount".into(),
            target: t.clone(),
            name: "snap-a".into(),
            action: RecoveryAction::mount(false),
            origin: "http".into(),
        },
    );
    put(
        &mut v,
        m,
        EventBody::RecoveryStepStarted {
            stage: Stage::Mount,
            deadline_ms: 9_000_000,
        },
    );
    // While it runs: listed as running, the point in use.
    let (page, _) = v.jobs(Some(RECOVERY_RUNNING), None, None, None, 10);
    assert_eq!(page.iter().map(|j| j.id).collect::<Vec<_>>(), [m]);
    put(
        &mut v,
        m,
        EventBody::RecoveryStepDone {
            stage: Stage::Mount,
            worker: w.clone(),
            duration_us: 100,
            location: "/mnt/snap-a".into(),
        },
    );
    put(
        &mut v,
        m,
        EventBody::RecoveryCompleted {
            location: "/mnt/snap-a".into(),
        },
    );
    let mounts = v.mounts();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        (mounts[0].job, mounts[0].location.as_str(), mounts[0].writable),
        (m, "/mnt/snap-a", false)
    );
    let point = v
        .snapshots(Some(&t))
        .into_iter()
        .find(|e| e.name == "snap-a")
        .unwrap();
    assert!(point.in_use[0].contains("mounted"), "{:?}", point.in_use);

    // Newest first, snapshot and recovery jobs merged; filters apply to both.
    let (page, _) = v.jobs(None, None, None, None, 10);
    assert_eq!(page.iter().map(|j| j.id).collect::<Vec<_>>(), [m, r, a]);
    let (page, next) = v.jobs(None, Some(&t), None, None, 2);
    assert_eq!((page.len(), next), (2, Some(r)));
    let (page, _) = v.jobs(None, None, None, next, 2);
    assert_eq!(page.iter().map(|j| j.id).collect::<Vec<_>>(), [a]);
    let (page, _) = v.jobs(None, None, Some(&"r-restore".into()), None, 10);
    assert_eq!(page.iter().map(|j| j.id).collect::<Vec<_>>(), [r]);
}

/// Finished jobs leave the core state a second after their end.
const SHORT_STAY: recman_core::Bounds = recman_core::Bounds {
    request_window_ms: 7 * 86_400_000,
    keep_finished_ms: 1_000,
};

/// `evs` appended to an in-memory log and folded twice under
/// [`SHORT_STAY`]: keeping every finished job (the reference), and keeping
/// the last two after they left the core state.
async fn logged_and_folded(evs: &[StoredEvent]) -> (std::sync::Arc<dyn EventLog>, View, View) {
    let log = recman_events::log::memory::open().unwrap();
    log.append(evs.iter().map(|e| e.event.clone()).collect())
        .await
        .unwrap();
    let stored = log.read(1, 1000).unwrap();
    assert_eq!(stored.len(), evs.len());
    let mut full = View::new(Default::default()).with_bounds(SHORT_STAY, 100);
    let mut v = View::new(Default::default()).with_bounds(SHORT_STAY, 2);
    for e in &stored {
        full.apply(e);
        v.apply(e);
    }
    (log, full, v)
}

/// The view bounded: finished jobs leave the core state after its stay, the
/// last `recent` stay in memory, older ones are read from the log with the
/// same timeline; the list pages over what is in memory; the job gauges
/// never go down.
#[tokio::test]
async fn finished_jobs_leave_memory_and_are_read_from_the_log() {
    let ids: Vec<JobId> = (1..=5u128)
        .map(|i| JobId::from_parts(i as u64 * 1_000_000, i))
        .collect();
    let mut evs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let at0 = (i as u64 + 1) * 1_000_000;
        evs.extend(job_events(*id, evs.len() as u64 + 1, at0, &format!("snap-{i}")));
    }
    let (log, full, v) = logged_and_folded(&evs).await;
    // ids[4] is the newest restore point (held), ids[3] was until ids[4]
    // completed (no event since); ids[0..3] left the core state, one stay
    // after the next job's point replaced theirs; ids[0] was then pushed
    // out of the recent window.
    assert!(v.state.jobs.contains_key(&ids[4]));
    assert!(v.state.jobs.contains_key(&ids[3]));
    assert!(!v.state.jobs.contains_key(&ids[2]));
    assert_eq!(v.state.retired, 3);
    assert!(v.job(&ids[0]).is_none(), "the oldest left memory");
    assert_eq!(v.job(&ids[1]), full.job(&ids[1]), "recent: in memory, whole");
    assert_eq!(v.job(&ids[2]), full.job(&ids[2]));
    let old = job_from_log(log.as_ref(), ids[0])
        .unwrap()
        .expect("read from the log");
    assert_eq!(
        Some(old.clone()),
        full.job(&ids[0]),
        "the same detail as in memory"
    );
    assert_eq!(old.timeline.len(), 5);
    assert!(
        old.timeline
            .iter()
            .filter(|t| t.stage != Stage::Queue)
            .all(|t| t.steps.len() == 1),
        "{:?}",
        old.timeline
    );
    assert_eq!(old.summary.state, "completed");
    assert!(job_from_log(log.as_ref(), JobId::from_parts(9, 9))
        .unwrap()
        .is_none());

    // The list: the in-memory jobs newest first, paged without gaps or repeats.
    let (page, next) = v.jobs(None, None, None, None, 2);
    assert_eq!(page.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[4], ids[3]]);
    assert_eq!(next, Some(ids[3]));
    let (page, next) = v.jobs(None, None, None, next, 2);
    assert_eq!(page.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[2], ids[1]]);
    assert_eq!(next, None);
    let (page, _) = v.jobs(None, None, None, None, 10);
    assert_eq!(page.len(), 4, "what is in memory");
    // By request id: found while the job is in memory.
    let r = RequestId::from("r-snap-3");
    assert_eq!(v.jobs(None, None, Some(&r), None, 10).0.len(), 1);

    // Gauges count every job, also those that left memory.
    let mut m = String::new();
    v.render_metrics(&mut m);
    assert!(m.contains("recman_jobs{state=\"completed\"} 5"), "{m}");
}

/// Recovery jobs are bounded as snapshot jobs are: an ended one leaves the
/// core state after its stay, the last `recent` stay in memory (and in a
/// checkpoint's view section), older ones are read from the log; a request
/// id in the window still finds its job.
#[tokio::test]
async fn finished_recovery_jobs_leave_memory_and_are_read_from_the_log() {
    use recman_events::RecoveryAction;
    let t = TargetId::from("db01");
    let point = JobId::from_parts(500_000, 9);
    let mut evs = job_events(point, 1, 500_000, "snap-a");
    let ops: Vec<JobId> = (1..=3u128)
        .map(|i| JobId::from_parts(i as u64 * 1_000_000, i))
        .collect();
    for (i, op) in ops.iter().enumerate() {
        let at = (i as u64 + 1) * 1_000_000;
        let loc = format!("/mnt/{i}");
        for (k, body) in [
            EventBody::RecoveryRequested {
                request_id: format!("req-{i}").as_str().into(),
                target: t.clone(),
                name: "snap-a".into(),
                action: RecoveryAction::To {
                    path: loc.clone(),
                    until: None,
                },
                origin: "cli".into(),
            },
            EventBody::RecoveryStepStarted {
                stage: Stage::Restore,
                deadline_ms: at + 60_000,
            },
            EventBody::RecoveryStepDone {
                stage: Stage::Restore,
                worker: WorkerId::from("w1"),
                duration_us: 100,
                location: loc.clone(),
            },
            EventBody::RecoveryCompleted {
                location: loc.clone(),
            },
        ]
        .into_iter()
        .enumerate()
        {
            evs.push(ev(evs.len() as u64 + 1, at + k as u64, *op, body));
        }
    }
    // A later job: every recovery's stay is over.
    let late = JobId::from_parts(9_000_000, 10);
    let n = evs.len() as u64;
    evs.extend(job_events(late, n + 1, 9_000_000, "snap-b"));
    let (log, full, v) = logged_and_folded(&evs).await;
    assert!(
        v.state.recovery.ops.is_empty(),
        "{:?}",
        v.state.recovery.ops.keys()
    );
    assert_eq!(v.state.recovery.retired, 3);
    assert!(v.job(&ops[0]).is_none(), "the oldest left memory");
    assert_eq!(v.job(&ops[1]), full.job(&ops[1]), "recent: in memory, whole");
    assert_eq!(v.job(&ops[2]), full.job(&ops[2]));
    assert_eq!(v.job(&ops[2]).unwrap().summary.kind, "restore_to");
    let old = job_from_log(log.as_ref(), ops[0])
        .unwrap()
        .expect("read from the log");
    assert_eq!(Some(old), full.job(&ops[0]), "the same detail as in memory");
    // Listed while in memory, newest first with the snapshot jobs.
    let (page, _) = v.jobs(None, None, None, None, 10);
    let ids: Vec<JobId> = page.iter().map(|j| j.id).collect();
    assert_eq!(ids[..3], [late, ops[2], ops[1]], "{ids:?}");
    // By request id: in memory, or named for a read from the log.
    assert_eq!(v.jobs(None, None, Some(&"req-1".into()), None, 10).0.len(), 1);
    assert_eq!(v.request_left_memory(&"req-0".into()), Some(ops[0]));
    assert_eq!(v.request_left_memory(&"req-1".into()), None);
    // A view started from its checkpoint shows the same.
    let seq = v.last_seq;
    let section = v.encode_section();
    let resumed = View::new(Default::default())
        .with_bounds(SHORT_STAY, 2)
        .from_checkpoint(seq, v.state.clone(), &section)
        .unwrap();
    assert_eq!(shown(&resumed), shown(&v));
    assert_eq!(super::section::difference(&section, &v), None);
}
