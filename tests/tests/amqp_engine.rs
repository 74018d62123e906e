//! `recman engine --amqp` and `recman worker --amqp` as separate processes on
//! the private broker: invalid requests are dead-lettered with their reason
//! and the engine goes on; a valid request completes; every event reaches the
//! events exchange once, in log order (the relay); the password never shows.

use std::time::{Duration, Instant};

use recman_events::bus::{msg_type, Address, Message};
use recman_testkit::amqp::{self, Vhost};
use recman_testkit::recman_bin;
use recman_tests::amqp::{dead_letter_reasons, read_log, request, write_config, Proc, VhostBus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_engine_dead_letters_bad_requests_runs_good_ones_and_relays_events() {
    let Some(vh) = Vhost::new("engine") else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), 2, &["host.a"]);
    let bus = vh.bus().await;
    let mut events = bus.consume(Address::Events, 256).await.unwrap();

    let mut engine = Proc::engine(dir.path(), &data, &config, &vh.url, &[]);
    // Bad requests first: the engine must survive them.
    let bad = [
        ("bad-json", b"{not json".to_vec(), "not valid JSON"),
        (
            "bad-version",
            br#"{"schema_version":9,"request_id":"v9","targets":["t0"]}"#.to_vec(),
            "unknown schema_version 9",
        ),
        (
            "bad-field",
            br#"{"request_id":"has space","targets":["t0"]}"#.to_vec(),
            "invalid field `request_id`",
        ),
    ];
    for (id, body, _) in &bad {
        bus.publish(
            Address::Requests,
            Message::new(msg_type::REQUEST, *id, body.clone()),
        )
        .await
        .unwrap();
    }
    let reasons = dead_letter_reasons(bus.as_ref(), bad.len(), || {
        format!("engine said:\n{}", engine.output())
    })
    .await;
    for (id, _, want) in &bad {
        assert!(reasons[*id].contains(want), "{id}: reason {:?}", reasons[*id]);
    }
    engine.assert_running();

    let mut worker = Proc::spawn(
        "worker",
        dir.path(),
        &data.join("w1"),
        &config,
        &["worker", "--amqp", &vh.url, "--pool", "host.a", "--id", "w1"],
    );
    bus.publish(Address::Requests, request("good-1", &["t0"]))
        .await
        .unwrap();
    bus.publish(Address::Requests, request("good-2", &["t0", "t1"]))
        .await
        .unwrap();

    // The relay: every event once, seq 1, 2, 3, … until both jobs completed.
    let mut seqs = Vec::new();
    let mut completed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while completed < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "jobs did not complete; events {seqs:?}\nengine:\n{}\nworker:\n{}",
                    engine.output(),
                    worker.output()
                )
            })
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.message.body).unwrap();
        let seq = v["seq"].as_u64().unwrap();
        assert_eq!(d.message.message_id, format!("event/{seq}"));
        assert_eq!(d.message.msg_type, msg_type::EVENT);
        let kind = v["event"]["body"]["type"].as_str().unwrap().to_string();
        if kind == "completed" {
            completed += 1;
        }
        assert!(kind != "failed", "a job failed: {v}");
        seqs.push(seq);
        d.ack().await.unwrap();
    }
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, want, "events relayed once each, in log order");

    assert!(engine.stop().is_some_and(|s| s.success()), "{}", engine.output());
    assert!(worker.stop().is_some_and(|s| s.success()), "{}", worker.output());
    let log = read_log(&data);
    assert_eq!(log.len(), seqs.len(), "the relay published the whole log");
    let cursor = std::fs::read_to_string(data.join(recman_engine::runtime::relay::CURSOR_FILE)).unwrap();
    assert_eq!(
        cursor.trim(),
        seqs.len().to_string(),
        "the cursor names the last relayed event"
    );
    let password = amqp::password(&vh.url);
    assert!(!password.is_empty(), "{} has a password", vh.url);
    for p in [&engine, &worker] {
        assert!(
            !p.output().contains(password),
            "{} printed the broker password",
            p.name
        );
    }
}

#[test]
fn amqp_engine_without_a_url_says_how_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, &["host.a"]);
    let out = std::process::Command::new(recman_bin())
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .arg("engine")
        .env_remove("RECMAN_AMQP_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--amqp") && err.contains("RECMAN_AMQP_URL"), "{err}");
}

#[test]
fn amqp_connect_errors_never_show_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, &["host.a"]);
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, "Sup3rS3cret\n").unwrap();
    // Port 1 on loopback: nothing listens, the connection is refused.
    let out = std::process::Command::new(recman_bin())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .args([
            "worker",
            "--amqp",
            "amqp://recman:inline-pw@127.0.0.1:1/v",
            "--pool",
            "p",
            "--amqp-connect-timeout",
            "3",
            "--amqp-password-file",
        ])
        .arg(&pwfile)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("amqp://recman:***@127.0.0.1:1/v"), "{err}");
    assert!(
        !err.contains("Sup3rS3cret") && !err.contains("inline-pw"),
        "{err}"
    );
}
