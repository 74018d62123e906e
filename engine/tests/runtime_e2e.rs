//! The engine runtime end to end in one process, started by the engine handle:
//! redb log, in-process bus, one worker with the `copy` provider; a request
//! walks every stage and completes; the handle follows it, the relay
//! publishes its events to in-process subscribers, and a cancel and a clean
//! shutdown behave.

use std::time::Duration;

use recman_config::Config;
use recman_engine::handle::{CallError, Drain, Engine};
use recman_events::bus::Address;
use recman_events::{EventBody, EventMessage, JobId, SnapshotRequest, WorkerId};
use recman_workers::runtime::Worker;

fn config(dir: &std::path::Path) -> Config {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"hello").unwrap();
    let toml = format!(
        "[[target]]\nid = \"t1\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"copy\"\nsource = \"{}\"\ndest = \"{}\"\n",
        src.display(),
        dir.join("snaps").display()
    );
    Config::from_str(&toml, dir.join("recman.toml")).unwrap()
}

fn request(id: &str) -> SnapshotRequest {
    SnapshotRequest::from_json(format!(r#"{{"request_id":"{id}","targets":["t1"]}}"#).as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_walks_every_stage_and_the_copy_exists() {
    let dir = recman_testkit::temp_dir();
    let config = config(dir.path());
    let engine = Engine::builder(&config)
        .data_dir(dir.path().join("log"))
        .worker(Worker::from_config(WorkerId::from("w1"), &config))
        .seed(1)
        .start()
        .await
        .unwrap();
    // An in-process subscriber of the events address: the relay runs here too.
    let mut sub = engine.bus().consume(Address::Events, 0).await.unwrap();

    let (accepted, mut events) = engine.submit_and_follow(request("r1"), "test").await.unwrap();
    assert!(!accepted.existing);
    let mut kinds = Vec::new();
    let mut last = None;
    while let Some(e) = tokio::time::timeout(recman_testkit::DEADLINE, events.next())
        .await
        .expect("the job goes on")
    {
        let e = e.unwrap();
        assert_eq!(e.event.job, accepted.job, "only the followed job");
        assert!(last.is_none_or(|l| e.seq > l), "in log order");
        last = Some(e.seq);
        kinds.push(e.event.body.kind());
        if let EventBody::Completed { snapshot, .. } = &e.event.body {
            let copied = std::path::Path::new(&snapshot.location).join("a.txt");
            assert_eq!(std::fs::read(&copied).unwrap(), b"hello", "{}", snapshot.location);
        }
    }
    assert_eq!(kinds.first(), Some(&"requested"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"completed"), "{kinds:?}");
    assert!(kinds.contains(&"attempt_started"), "{kinds:?}");

    // The same request id again: the same job, followed from its start in the log.
    let (again, mut events) = engine.submit_and_follow(request("r1"), "test").await.unwrap();
    assert_eq!((again.job, again.existing), (accepted.job, true));
    let mut replayed = Vec::new();
    while let Some(e) = events.next().await {
        replayed.push(e.unwrap().event.body.kind());
    }
    assert_eq!(replayed, kinds, "the whole job from the log, then the end");

    // Waiting for it gives the same events at once; so does a submit-and-wait
    // of a new request, from its first event.
    let waited = engine.wait(accepted.job).await.unwrap();
    assert_eq!(
        waited.iter().map(|e| e.event.body.kind()).collect::<Vec<_>>(),
        kinds
    );
    let (second, events) = engine.submit_and_wait(request("r2"), "test").await.unwrap();
    assert!(!second.existing);
    assert_eq!(events.first().map(|e| e.event.body.kind()), Some("requested"));
    assert_eq!(events.last().map(|e| e.event.body.kind()), Some("completed"));
    assert!(events.iter().all(|e| e.event.job == second.job));

    // The relay published the job's events, in order, to the events address.
    let mut relayed = Vec::new();
    while relayed.last() != Some(&"completed") {
        let d = tokio::time::timeout(recman_testkit::DEADLINE, sub.recv())
            .await
            .expect("the relay publishes")
            .unwrap();
        let m: EventMessage = serde_json::from_slice(&d.message.body).unwrap();
        d.ack().await.unwrap();
        if m.event.job == accepted.job {
            relayed.push(m.event.body.kind());
        }
    }
    assert_eq!(relayed, kinds);

    let stopped = engine.shutdown(Drain::Default).await.unwrap();
    assert!(stopped.thawed);
    assert!(stopped.last_seq >= kinds.len() as u64);
    assert!(matches!(stopped.relay, Some(Ok(()))), "{:?}", stopped.relay);
    assert!(
        !dir.path().join("log").join("events-relay.cursor").exists(),
        "the in-process relay keeps no cursor file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_shutdown_answer_as_documented() {
    let dir = recman_testkit::temp_dir();
    let config = config(dir.path());
    let engine = Engine::builder(&config)
        .data_dir(dir.path().join("log"))
        .no_workers() // nothing runs the steps: the job waits in its freeze
        .start()
        .await
        .unwrap();
    let caller = engine.caller();
    match engine.cancel(JobId::new_v7(), "test").await {
        Err(CallError::Rejected { code, .. }) => assert_eq!(code, "unknown_job"),
        other => panic!("cancel of an unknown job: {other:?}"),
    }
    let a = engine.submit(request("r9"), "test").await.unwrap();
    let c = engine.cancel(a.job, "changed my mind").await.unwrap();
    assert_eq!((c.job, c.existing), (a.job, false));
    let again = caller.cancel(a.job, "twice").await.unwrap();
    assert!(again.existing, "a second cancel is already requested");
    // The job waits for a thaw no worker gives: shutdown gives up after its drain.
    let stopped = engine
        .shutdown(Drain::Within(Duration::from_millis(200)))
        .await
        .unwrap();
    assert!(!stopped.thawed, "a freeze was sent and nobody thawed");
    match caller.submit(request("r3"), "test").await {
        Err(CallError::ShuttingDown) => {}
        other => panic!("submit after shutdown: {other:?}"),
    }
}
