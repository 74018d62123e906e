//! The Python examples in deploy/examples/ (pika) against the private broker
//! and the real engine and worker: the subscriber sees the publisher's
//! request through to `completed`, with events in seq order.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use recman_testkit::amqp::Vhost;
use recman_tests::amqp::{example, python, write_config, Proc};

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

    let sub_out = dir.path().join("subscriber.out");
    let mut sub = Command::new(&py)
        .arg(example("subscribe_events.py"))
        .args(["--url", &vh.url, "--until-request", "py-req-1"])
        .stdout(std::fs::File::create(&sub_out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !std::fs::read_to_string(&sub_out)
        .unwrap_or_default()
        .contains("subscribed")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the subscriber did not subscribe"
        );
        assert!(sub.try_wait().unwrap().is_none(), "the subscriber exited early");
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = Command::new(&py)
        .arg(example("publish_request.py"))
        .args(["--url", &vh.url, "--request-id", "py-req-1", "t0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let status = loop {
        if let Some(s) = sub.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = sub.kill();
            panic!(
                "the subscriber did not see the job complete:\n{}\nengine:\n{}",
                std::fs::read_to_string(&sub_out).unwrap_or_default(),
                engine.output()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&sub_out).unwrap();
    assert!(status.success(), "subscriber exit {status}:\n{text}");
    let events: Vec<serde_json::Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
