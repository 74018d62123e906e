//! `recman up --amqp URL`: the engine, the local worker and the HTTP API in one
//! process over the private broker. A request published on the broker by
//! another system completes, its events reach the events exchange, and a
//! clean stop leaves the relay's cursor at the end of the log.

use std::time::{Duration, Instant};

use recman_events::bus::Address;
use recman_testkit::amqp::Vhost;
use recman_testkit::free_port;
use recman_tests::amqp::{read_log, request, write_config, Proc, VhostBus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_up_runs_jobs_from_the_broker_and_relays_their_events() {
    let Some(vh) = Vhost::new("up") else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), 1, &["host.local"]);
    let bus = vh.bus().await;
    let mut events = bus.consume(Address::Events, 256).await.unwrap();
    let port = free_port();
    let mut up = Proc::spawn(
        "up",
        dir.path(),
        &data,
        &config,
        &["up", "--amqp", &vh.url, "--listen", &format!("127.0.0.1:{port}")],
    );
    up.wait_for("API on http://127.0.0.1");
    bus.publish(Address::Requests, request("from-broker", &["t0"]))
        .await
        .unwrap();
    // The job's events arrive on the events exchange, ending with `completed`.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut kinds = Vec::new();
    while !kinds.iter().any(|k: &String| k == "completed") {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no `completed` event: {kinds:?}\n{}", up.output()))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.message.body).unwrap();
        kinds.push(v["event"]["body"]["type"].as_str().unwrap_or("?").to_string());
        d.ack().await.unwrap();
    }
    assert_eq!(kinds.first().map(String::as_str), Some("requested"), "{kinds:?}");
    let status = up.stop().expect("recman up stops on SIGTERM");
    assert!(status.success(), "{status}\n{}", up.output());
    let log = read_log(&data);
    assert!(log.len() >= kinds.len(), "{} events in the log", log.len());
    let cursor = std::fs::read_to_string(data.join("events-relay.cursor")).unwrap();
    assert_eq!(
        cursor.trim().parse::<usize>().unwrap(),
        log.len(),
        "the relay's cursor is at the end of the log"
    );
}
