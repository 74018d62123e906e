//! The engine runtime end to end in one process: redb log, in-process bus, one
//! worker with the `copy` provider; a request walks every stage and completes.

use std::sync::Arc;
use std::time::Duration;

use recman_config::Config;
use recman_engine::core::Reply;
use recman_engine::runtime::{self, Call};
use recman_events::bus::{Bus, MemoryBus};
use recman_events::{log, Backend, EventBody, SnapshotRequest, WorkerId};
use recman_workers::runtime::Worker;
use tokio::sync::{mpsc, oneshot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_walks_every_stage_and_the_copy_exists() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"hello").unwrap();
    let toml = format!(
        "[[target]]\nid = \"t1\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"copy\"\nsource = \"{}\"\ndest = \"{}\"\n",
        src.display(),
        dir.path().join("snaps").display()
    );
    let config = Config::from_str(&toml, dir.path().join("recman.toml")).unwrap();
    let log = log::open(Backend::Redb, &dir.path().join("log")).unwrap();
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let worker = Worker::from_config(WorkerId::from("w1"), &config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut rx1 = stop_rx.clone();
    let wbus = bus.clone();
    let w = tokio::spawn(async move {
        worker
            .run(wbus, async move {
                let _ = rx1.changed().await;
            })
            .await
    });
    let (calls_tx, calls_rx) = mpsc::channel(16);
    let mut rx2 = stop_rx.clone();
    let e = tokio::spawn(runtime::run(
        runtime::core_config(&config, 1),
        log.clone(),
        bus.clone(),
        calls_rx,
        async move {
            let _ = rx2.changed().await;
        },
    ));
    let req = SnapshotRequest::from_json(br#"{"request_id":"r1","targets":["t1"]}"#).unwrap();
    let (tx, rx) = oneshot::channel();
    calls_tx
        .send(Call::Submit {
            req,
            origin: "test".into(),
            reply: tx,
        })
        .await
        .unwrap();
    let Reply::Accepted { job, existing: false } = rx.await.unwrap() else {
        panic!("not accepted")
    };
    let mut done = None;
    for _ in 0..200 {
        let events = log.read_job(job).unwrap();
        if let Some(e) = events.iter().find(|e| e.event.body.is_terminal()) {
            done = Some(e.event.body.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = stop_tx.send(true);
    let _ = e.await;
    let _ = w.await;
    match done {
        Some(EventBody::Completed { snapshot, .. }) => {
            let copied = std::path::Path::new(&snapshot.location).join("a.txt");
            assert_eq!(std::fs::read(&copied).unwrap(), b"hello", "{}", snapshot.location);
        }
        other => panic!(
            "job did not complete: {other:?}\n{:#?}",
            log.read_job(job).unwrap()
        ),
    }
    let kinds: Vec<&str> = log
        .read_job(job)
        .unwrap()
        .iter()
        .map(|e| e.event.body.kind())
        .collect();
    assert!(
        kinds.contains(&"attempt_started") && kinds.contains(&"completed"),
        "{kinds:?}"
    );
}
