//! Over AMQP, what a client sends can neither stall the engine nor be
//! answered with the wrong job (issue 12 items 8 and 15): a request with more
//! than 1000 targets (and one with 160,000) and a request id reused for other
//! targets are dead-lettered with the reason, quickly, and a good request
//! sent right after them is still accepted at once.

use std::time::{Duration, Instant};

use recman_events::bus::{Address, REASON_HEADER};
use recman_testkit::amqp::Vhost;
use recman_tests::amqp::{request, write_config, Proc, VhostBus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_oversized_and_conflicting_requests_are_dead_lettered_with_the_reason() {
    let Some(vh) = Vhost::new("limits") else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), 2, &["host.a"]);
    let bus = vh.bus().await;
    let mut events = bus.consume(Address::Events, 256).await.unwrap();
    let mut engine = Proc::engine(dir.path(), &data, &config, &vh.url, &[]);

    // A request the engine accepts (no worker runs: it stays in its freeze).
    bus.publish(Address::Requests, request("first", &["t0"]))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no requested event; engine said:\n{}", engine.output()))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.message.body).unwrap();
        d.ack().await.unwrap();
        if v["event"]["body"]["type"] == "requested" {
            assert_eq!(v["event"]["body"]["request_id"], "first");
            break;
        }
    }

    let many = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
    let refs = |v: &[String]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let t1001 = many(1001);
    let t160k = many(160_000);
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("too-many", refs(&t1001), "at most 1000"),
        ("far-too-many", refs(&t160k), "at most 1000"),
        ("first", vec!["t0".into(), "t1".into()], "request_id_in_use"),
    ];
    let sent = Instant::now();
    for (id, targets, _) in &cases {
        let t: Vec<&str> = targets.iter().map(String::as_str).collect();
        bus.publish(Address::Requests, request(id, &t)).await.unwrap();
    }
    bus.publish(Address::Requests, request("after", &["t1"]))
        .await
        .unwrap();

    let mut dlq = bus.consume(Address::DeadLetters, 0).await.unwrap();
    let mut reasons = std::collections::BTreeMap::new();
    while reasons.len() < cases.len() {
        let d = tokio::time::timeout(Duration::from_secs(30), dlq.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "dead letters missing ({reasons:?}); engine said:\n{}",
                    engine.output()
                )
            })
            .unwrap();
        let reason = d.message.header(REASON_HEADER).unwrap_or_default().to_string();
        println!(
            "dead letter {} after {:?}: {reason}",
            d.message.message_id,
            sent.elapsed()
        );
        reasons.insert(d.message.message_id.clone(), reason);
        d.ack().await.unwrap();
    }
    for (id, _, want) in &cases {
        let r = &reasons[&format!("req/{id}")];
        assert!(r.contains(want), "{id}: reason {r:?}");
    }
    let conflict = &reasons["req/first"];
    assert!(conflict.contains("is job"), "names the existing job: {conflict}");

    // The good request behind them was accepted without a stall.
    loop {
        let d = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the request after them was not accepted; engine:\n{}",
                    engine.output()
                )
            })
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.message.body).unwrap();
        d.ack().await.unwrap();
        if v["event"]["body"]["type"] == "requested" {
            assert_eq!(v["event"]["body"]["request_id"], "after", "{v}");
            break;
        }
    }
    let took = sent.elapsed();
    println!("all answered, and the next request accepted, {took:?} after sending");
    assert!(took < Duration::from_secs(10), "the engine stalled: {took:?}");
    engine.assert_running();
    assert!(engine.stop().is_some_and(|s| s.success()), "{}", engine.output());
}
