//! The Python examples in deploy/examples/ (pika) against the private broker
//! and the real engine and worker: the subscriber sees the publisher's
//! request through to `completed`, with events in seq order.

use std::process::Command;

use recman_testkit::amqp::Vhost;
use recman_tests::amqp::{example, python, write_config, Proc, Subscriber};

#[test]
fn amqp_python_publisher_request_completes_and_subscriber_sees_it() {
    let Some(vh) = Vhost::new("python") else { return };
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), 1, &["host.a"]);
    let mut engine = Proc::spawn(
        "engine",
        dir.path(),
        &data,
        &config,
        // Every event in batches: the subscriber unpacks them.
        &["engine", "--amqp", &vh.url, "--relay-batch-over", "0"],
    );
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
