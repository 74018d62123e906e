//! `recman dlq` on the private broker, as the "operator" user of
//! deploy/README.md's permission table (nothing more): requests the engine
//! refused are listed with their reason and origin, listing twice loses
//! nothing and keeps the order, one is shown whole, one dropped; a request
//! dead-lettered whole is published again and the engine accepts it; a dead
//! command is refused a re-publish (only dropped).

use std::process::Command;
use std::time::{Duration, Instant};

use recman_events::bus::{msg_type, Address, Message, ORIGIN_HEADER, REASON_HEADER};
use recman_testkit::amqp::Vhost;
use recman_testkit::recman_bin;
use recman_tests::amqp::{read_log, request, write_config, Proc, VhostBus};

fn dlq(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(recman_bin())
        .args(["dlq", "--amqp", url])
        .args(args)
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("recman dlq {args:?}: {:?}\n{o}{e}", out.status.code());
    (out.status.code(), o, e)
}

/// The message ids of a listing, in its order.
fn ids(listing: &str) -> Vec<String> {
    listing
        .lines()
        .skip(1)
        .filter(|l| !l.contains("message(s)"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_dlq_lists_shows_drops_and_republishes_as_the_operator() {
    let Some(vh) = Vhost::new("dlq") else { return };
    let operator = vh.user(
        "operator",
        "^$",
        r"^(recman\.requests|recman\.reports)$",
        r"^recman\.dlq$",
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), 1, &["host.a"]);
    let mut engine = Proc::engine(dir.path(), &data, &config, &vh.url, &[]);
    engine.wait_for("broker connected");
    let (code, out, _) = dlq(&operator, &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("recman.dlq is empty"), "{out}");

    let bus = vh.bus().await;
    let bad = ["bad-1", "bad-2", "bad-3"];
    for id in bad {
        bus.publish(
            Address::Requests,
            Message::new(msg_type::REQUEST, id, b"{not json".to_vec()),
        )
        .await
        .unwrap();
    }
    let t0 = Instant::now();
    let listing = loop {
        let (code, out, _) = dlq(&operator, &[]);
        assert_eq!(code, Some(0), "{out}");
        if ids(&out).len() == bad.len() {
            break out;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", engine.output());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(ids(&listing), bad, "{listing}");
    for l in listing.lines().filter(|l| l.starts_with("bad-")) {
        assert!(
            l.contains("recman.requests") && l.contains("not valid JSON"),
            "reason and origin: {l}"
        );
    }
    // Listing gave everything back, in order.
    let (_, again, _) = dlq(&operator, &[]);
    assert_eq!(ids(&again), bad, "{again}");

    let (code, out, _) = dlq(&operator, &["--show", "bad-2"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("message id: bad-2") && out.contains("x-recman-reason:") && out.contains("{not json"),
        "{out}"
    );
    let (code, _, err) = dlq(&operator, &["--show", "nosuch"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no dead letter with message id nosuch"), "{err}");
    let (code, out, _) = dlq(&operator, &["--drop", "bad-2"]);
    assert_eq!(code, Some(0), "{out}");
    let (_, out, _) = dlq(&operator, &[]);
    assert_eq!(ids(&out), ["bad-1", "bad-3"], "{out}");

    // A whole request that was dead-lettered (as after the delivery limit),
    // and a dead command.
    for (m, origin) in [
        (request("again-1", &["t0"]), "recman.requests"),
        (
            Message::new(msg_type::COMMAND, "cmd/stale", b"{}".to_vec()),
            "recman.pool.host.a",
        ),
    ] {
        bus.publish(
            Address::DeadLetters,
            m.with_header(ORIGIN_HEADER, origin)
                .with_header(REASON_HEADER, "delivery limit"),
        )
        .await
        .unwrap();
    }
    let (code, _, err) = dlq(&operator, &["--republish", "cmd/stale"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("only requests and reports"), "{err}");
    let (code, out, err) = dlq(&operator, &["--republish", "req/again-1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("published req/again-1 again to recman.requests"),
        "{out}"
    );
    let (_, out, _) = dlq(&operator, &[]);
    assert_eq!(ids(&out), ["bad-1", "bad-3", "cmd/stale"], "{out}");

    // The engine took the re-published request.
    let t0 = Instant::now();
    while !engine.output().contains("again-1") && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = engine.stop();
    assert!(status.is_some_and(|s| s.success()), "{}", engine.output());
    let log = read_log(&data);
    assert!(
        log.iter()
            .any(|e| e["event"]["body"]["type"] == "requested"
                && e["event"]["body"]["request_id"] == "again-1"),
        "the re-published request was accepted: {log:#?}"
    );
}
