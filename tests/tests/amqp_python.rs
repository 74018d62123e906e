//! The Python examples in deploy/examples/ (pika) against the private broker
//! and the real engine and worker: the subscriber sees the publisher's
//! request through to `completed`, with events in seq order; the
//! publisher's `--cancel` reaches the engine (an unknown job is
//! dead-lettered with the engine's reason).

use std::process::Command;

use recman_events::bus::{Address, REASON_HEADER};
use recman_testkit::amqp::Vhost;
use recman_tests::amqp::{example, python, write_config, Proc, Subscriber, VhostBus};

#[test]
fn amqp_python_publisher_request_completes_and_subscriber_sees_it() {
    let Some(vh) = Vhost::new("python") else { return };
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), 1, &["host.a"]);
    // Every event in batches: the subscriber unpacks them.
    let mut engine = Proc::engine(dir.path(), &data, &config, &vh.url, &["--relay-batch-over", "0"]);
    engine.wait_for("broker connected");
    let mut worker = Proc::spawn(
        "worker",
        dir.path(),
        &data.join("w"),
        &config,
        &["worker", "--amqp", &vh.url, "--pool", "host.a", "--id", "py-w"],
    );
    worker.wait_for("worker started");

    let sub = Subscriber::start(
        &py,
        dir.path(),
        &["--url", &vh.url, "--until-request", "py-req-1"],
    );

    let out = Command::new(&py)
        .arg(example("publish_request.py"))
        .args(["--url", &vh.url, "--request-id", "py-req-1", "t0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let events = sub.finish(|| format!("engine:\n{}", engine.output()));
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"requested"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"completed"), "{kinds:?}");
    assert_eq!(events.last().unwrap()["routing_key"], "completed.t0");
    assert!(
        events.iter().all(|e| e["batch"] == true),
        "relayed as batches: {events:?}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in log order: {seqs:?}");

    // --cancel of a job the engine does not know: its refusal in recman.dlq.
    let unknown = "0193a5b2-7c1e-7f00-8a3b-5d2e9c4f1a07";
    let out = Command::new(&py)
        .arg(example("publish_request.py"))
        .args(["--url", &vh.url, "--cancel", unknown, "--reason", "from python"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (id, reason) = rt.block_on(async {
        let bus = vh.bus().await;
        let mut dlq = bus.consume(Address::DeadLetters, 0).await.unwrap();
        let d = tokio::time::timeout(std::time::Duration::from_secs(30), dlq.recv())
            .await
            .unwrap_or_else(|_| panic!("no dead letter; engine:\n{}", engine.output()))
            .unwrap();
        let reason = d.message.header(REASON_HEADER).unwrap_or_default().to_string();
        let id = d.message.message_id.clone();
        d.ack().await.unwrap();
        (id, reason)
    });
    assert_eq!(id, format!("cancel/{unknown}"));
    assert!(reason.contains("unknown_job"), "{reason}");
    for p in [&mut engine, &mut worker] {
        let status = p.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly ({status:?}):\n{}",
            p.name,
            p.output()
        );
    }
}
