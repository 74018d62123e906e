//! `recman up --amqp URL`: the engine, the local worker and the HTTP API in one
//! process over the private broker. A request published on the broker by
//! another system completes, its events reach the events exchange, and a
//! clean stop leaves the relay's cursor at the end of the log. Its own
//! workers serve only the pools `[worker] pools` names (issue 23, item 4).

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
    // Over a broker, `up` runs the steps of named pools only.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}[worker]\npools = [\"host.local\"]\n")).unwrap();
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

/// Without `[worker] pools`, `up --amqp` runs no step itself: the job waits
/// for a worker of the host pool and is then done by that worker alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_up_runs_no_steps_of_pools_it_was_not_given() {
    let Some(vh) = Vhost::new("up-pools") else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), 1, &["host.app"]);
    let bus = vh.bus().await;
    let port = free_port();
    let mut up = Proc::spawn(
        "up",
        dir.path(),
        &data,
        &config,
        &[
            "up",
            "--amqp",
            &vh.url,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--drain-timeout",
            "1s",
        ],
    );
    up.wait_for("API on http://127.0.0.1");
    assert!(up.output().contains("running no steps here"), "{}", up.output());
    bus.publish(Address::Requests, request("no-local", &["t0"]))
        .await
        .unwrap();
    // Nothing serves host.app yet: no step may be reported for 3 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let steps = |log: &[serde_json::Value]| {
        log.iter()
            .filter(|e| {
                matches!(
                    e["event"]["body"]["type"].as_str(),
                    Some("step_succeeded" | "step_failed")
                )
            })
            .count()
    };
    // Its freeze was sent and never answered: `up` cannot know it did not
    // land, so it may exit 1 ("may have stayed frozen") after the drain.
    let status = up.stop().expect("recman up stops on SIGTERM");
    assert!(matches!(status.code(), Some(0 | 1)), "{status}\n{}", up.output());
    let log = read_log(&data);
    assert!(
        log.iter().any(|e| e["event"]["body"]["type"] == "requested"),
        "{log:?}"
    );
    assert_eq!(
        steps(&log),
        0,
        "up ran a step of a pool it does not serve: {log:?}"
    );
}
