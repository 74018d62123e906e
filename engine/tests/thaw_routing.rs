//! Thaw routing end to end through the engine runtime: the first thaw try
//! goes to the worker that froze, the next to its pool, alternating, each
//! with its own message id, one thaw try apart, until one answers; then the
//! job completes. The test plays the worker on the in-process bus.

use std::time::{Duration, Instant};

use recman_config::{Config, DEFAULT_POOL};
use recman_engine::handle::Engine;
use recman_events::bus::{msg_type, Address, Consumer};
use recman_events::{
    wire, Command, EventBody, Message, Outcome, PoolName, Report, SnapshotInfo, SnapshotRequest, Stage,
    StepDetail, WorkerId,
};

/// The default thaw margin (2 s) is one thaw try.
const THAW_TRY: Duration = Duration::from_secs(2);

fn config(dir: &std::path::Path) -> Config {
    let toml =
        "[[target]]\nid = \"t1\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"none\"\n";
    Config::from_str(toml, dir.join("recman.toml")).unwrap()
}

async fn next_command(from: &mut Consumer) -> Command {
    let d = tokio::time::timeout(recman_testkit::DEADLINE, from.recv())
        .await
        .expect("a command comes")
        .expect("the queue is open");
    let c: Command = wire::decode(&d.message.body).unwrap();
    d.ack().await.unwrap();
    c
}

async fn answer(engine: &Engine, c: &Command, worker: &WorkerId, detail: StepDetail) {
    let target = &c.targets[0];
    let r = Report {
        schema_version: recman_events::SCHEMA_VERSION,
        message_id: Report::message_id_for(c.job, c.attempt, c.stage, target, worker),
        job: c.job,
        attempt: c.attempt,
        stage: c.stage,
        targets: c.targets.clone(),
        worker: worker.clone(),
        duration_us: 100,
        outcome: Outcome::Ok { detail },
    };
    let msg = Message::new(msg_type::REPORT, r.message_id.clone(), wire::encode(&r));
    engine.bus().publish(Address::Reports, msg).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thaw_tries_alternate_between_the_freezer_and_its_pool_each_with_its_own_id() {
    let dir = recman_testkit::temp_dir();
    let engine = Engine::builder(&config(dir.path()))
        .log(recman_events::log::memory::open().unwrap())
        .no_workers()
        .no_relay()
        .seed(1)
        .start()
        .await
        .unwrap();
    let w1 = WorkerId::from("w1");
    let mut pool = engine
        .bus()
        .consume(Address::Pool(PoolName::new(DEFAULT_POOL)), 16)
        .await
        .unwrap();
    let mut own = engine
        .bus()
        .consume(Address::Worker(w1.clone()), 16)
        .await
        .unwrap();

    let req = SnapshotRequest::from_json(br#"{"request_id":"r1","targets":["t1"]}"#).unwrap();
    let accepted = engine.submit(req, "test").await.unwrap();

    let freeze = next_command(&mut pool).await;
    assert_eq!((freeze.job, freeze.stage), (accepted.job, Stage::Freeze));
    let deadline_ms = freeze
        .thaw_deadline_ms
        .expect("a freeze carries its watchdog deadline");
    answer(&engine, &freeze, &w1, StepDetail::Frozen { deadline_ms }).await;

    let snap = next_command(&mut pool).await;
    assert_eq!(snap.stage, Stage::Snapshot);
    let info = SnapshotInfo {
        name: snap.snapshot_name.clone().unwrap(),
        provider: "none".into(),
        location: "nowhere".into(),
        size_bytes: None,
        existed: false,
        array_expiry: None,
    };
    answer(&engine, &snap, &w1, StepDetail::Snapshot(info)).await;

    // Nobody answers the first two thaw tries.
    let t0 = Instant::now();
    let try0 = next_command(&mut own).await;
    let try1 = next_command(&mut pool).await;
    let t1 = t0.elapsed();
    let try2 = next_command(&mut own).await;
    let t2 = t0.elapsed();
    for (i, c) in [&try0, &try1, &try2].into_iter().enumerate() {
        assert_eq!(
            (c.job, c.stage, c.attempt),
            (accepted.job, Stage::Thaw, 1),
            "try {i}"
        );
    }
    let ids = [&try0.message_id, &try1.message_id, &try2.message_id];
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "each try has its own message id: {ids:?}"
    );
    // Each try waits one thaw try for an answer (a little less for the
    // first, which left before `t0`).
    let slack = Duration::from_millis(300);
    assert!(t1 + slack >= THAW_TRY, "the pool was asked after {t1:?}");
    assert!(
        t2 - t1 + slack >= THAW_TRY,
        "the freezer was asked again after {:?}",
        t2 - t1
    );

    // The third try is answered.
    answer(
        &engine,
        &try2,
        &w1,
        StepDetail::Thawed {
            freeze_window_us: 5_000_000,
            by_watchdog: false,
        },
    )
    .await;
    // Then the log flush; no thaw try after the answer.
    let flush = next_command(&mut pool).await;
    assert_eq!(flush.stage, Stage::FlushLogs, "{flush:?}");
    answer(&engine, &flush, &w1, StepDetail::Flushed).await;
    let events = tokio::time::timeout(recman_testkit::DEADLINE, engine.wait(accepted.job))
        .await
        .expect("the job ends")
        .unwrap();
    assert!(
        matches!(
            events.last().map(|e| &e.event.body),
            Some(EventBody::Completed { .. })
        ),
        "{:?}",
        events.iter().map(|e| e.event.body.kind()).collect::<Vec<_>>()
    );
    tokio::select! {
        d = own.recv() => panic!("a thaw try after the answer: {d:?}"),
        d = pool.recv() => panic!("a command after the job completed: {d:?}"),
        _ = tokio::time::sleep(THAW_TRY + Duration::from_millis(500)) => {}
    }
}
