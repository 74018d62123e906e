//! `recman engine --amqp … --listen ADDR` with a worker process on the
//! private broker: the read commands and `recman cancel` work against it
//! through `DATA_DIR/server.json` (and `--server URL`), a second engine on
//! the same data dir is refused naming the first one's API, and the discovery
//! file goes at shutdown. And a cancel published on `recman.requests` cancels
//! a job; malformed, conflicting or unknown-job cancels are dead-lettered
//! with their reason.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use recman_events::bus::{msg_type, Address, Consumer, Message};
use recman_testkit::amqp::Vhost;
use recman_testkit::{free_port, recman, recman_bin, text, wait_until, DEADLINE};
use recman_tests::amqp::{dead_letter_reasons, request, Proc, VhostBus};
use recman_tests::cli::{http, ready, write_config};

/// The state of job `id` as the API at `port` shows it.
fn job_state(port: u16, id: &str) -> String {
    let (_, body) = http(port, "GET", &format!("/v1/jobs/{id}"), "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["state"].as_str().unwrap_or("").to_string()
}

/// A snapshot request through the API; returns the job id.
fn submit(port: u16, request_id: &str, target: &str) -> String {
    let (status, body) = http(
        port,
        "POST",
        "/v1/snapshots",
        &format!(r#"{{"request_id":"{request_id}","targets":["{target}"]}}"#),
    );
    assert_eq!(status, 202, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The worker of the config's pool (`host.local`), data under `dir/w1`.
/// A second `recman engine` on `data`, run to its exit (it must be refused).
fn second_engine(data: &Path, config: &Path, url: &str) -> std::process::Output {
    std::process::Command::new(recman_bin())
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(config)
        .args(["engine", "--amqp", url])
        .output()
        .unwrap()
}

fn worker(dir: &Path, config: &Path, url: &str) -> Proc {
    Proc::spawn(
        "worker",
        dir,
        &dir.join("w1"),
        config,
        &["worker", "--amqp", url, "--pool", "host.local", "--id", "w1"],
    )
}

#[test]
fn engine_listen_serves_the_read_commands_and_cancel() {
    let Some(vh) = Vhost::new("listen") else { return };
    let dir = recman_testkit::temp_dir();
    // `slow`'s snapshot takes 8 s: a second job on it waits in its queue.
    let config = write_config(dir.path(), 8, "");
    let data = dir.path().join("data");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let mut engine = Proc::engine(dir.path(), &data, &config, &vh.url, &["--listen", &listen]);
    let mut worker = worker(dir.path(), &config, &vh.url);
    wait_until(format!("the engine's API at {url}"), DEADLINE, || {
        engine.assert_running();
        ready(port)
    });
    let disc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("server.json")).unwrap()).unwrap();
    assert_eq!(disc["url"], url.as_str());
    assert_eq!(disc["pid"], engine.child.id());

    let long = submit(port, "long", "slow");
    let queued = submit(port, "queued", "slow");
    let t0 = Instant::now();
    while job_state(port, &long) != "snapshotting" {
        assert!(
            t0.elapsed() < DEADLINE,
            "the first job never reached the snapshot stage ({})\nengine:\n{}\nworker:\n{}",
            job_state(port, &long),
            engine.output(),
            worker.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(job_state(port, &queued), "queued");

    // The read commands find the engine through server.json (the log is
    // the engine's: they could not read it themselves).
    let out = recman(&data, &["jobs", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let jobs = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(jobs.contains(&long) && jobs.contains(&queued), "{jobs}");
    let out = recman(&data, &["job", &long]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).to_lowercase().contains("snapshotting"),
        "{}",
        text(&out)
    );
    let out = recman(&data, &["targets"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("slow") && text(&out).contains("fast"),
        "{}",
        text(&out)
    );
    let out = recman(&data, &["snapshots"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = recman(&data, &["events", "--job", &long, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(r#""request_id":"long""#), "{}", text(&out));

    // A second engine on the data dir: refused at once, naming the first's API.
    let out = second_engine(&data, &config, &vh.url);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    assert!(
        err.contains(&url),
        "the refusal names the running engine's API: {err}"
    );
    assert!(err.contains(&format!("pid {}", engine.child.id())), "{err}");
    engine.assert_running();

    // Cancel through server.json: the queued job ends, the running one goes on.
    let out = recman(&data, &["cancel", &queued, "--reason", "test"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("recorded"), "{}", text(&out));
    wait_until("the queued job to be cancelled", DEADLINE, || {
        job_state(port, &queued) == "cancelled"
    });
    assert_eq!(job_state(port, &long), "snapshotting");
    // An unknown job: exit 1, as against `recman up`.
    let unknown = "0193a5b2-7c1e-7f00-8a3b-5d2e9c4f1a07";
    let out = recman(&data, &["cancel", unknown]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // --server URL, from a data dir that is not the engine's.
    let elsewhere = dir.path().join("elsewhere");
    let out = recman(&elsewhere, &["job", &queued, "--json", "--server", &url]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "cancelled", "{v}");
    // The log from another host too: the cancelled job's events.
    let out = recman(
        &elsewhere,
        &["events", "--job", &queued, "--json", "--server", &url],
    );
    assert!(out.status.success(), "{}", text(&out));
    let kinds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["body"]["type"].to_string())
        .collect();
    assert_eq!(
        (
            kinds.first().map(String::as_str),
            kinds.last().map(String::as_str)
        ),
        (Some("\"requested\""), Some("\"cancelled\"")),
        "{kinds:?}"
    );

    assert!(engine.stop().is_some_and(|s| s.success()), "{}", engine.output());
    assert!(
        !data.join("server.json").exists(),
        "the discovery file is removed at shutdown"
    );
    let _ = worker.stop(); // after the running snapshot
}

#[test]
fn engine_without_listen_serves_no_api_and_says_so_when_in_use() {
    let Some(vh) = Vhost::new("nolisten") else { return };
    let dir = recman_testkit::temp_dir();
    let config = write_config(dir.path(), 1, "");
    let data = dir.path().join("data");
    let mut engine = Proc::engine(dir.path(), &data, &config, &vh.url, &[]);
    engine.wait_for("broker connected");
    assert!(!data.join("server.json").exists(), "no API, no discovery file");
    let out = second_engine(&data, &config, &vh.url);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use") && err.contains("--listen"), "{err}");
    assert!(engine.stop().is_some_and(|s| s.success()), "{}", engine.output());
}

/// Events of the events exchange (single or batched) until `done` says so.
async fn events_until(
    events: &mut Consumer,
    what: &str,
    context: impl Fn() -> String,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: not seen\n{}", context()))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.message.body).unwrap();
        d.ack().await.unwrap();
        let all = match v {
            serde_json::Value::Array(a) => a,
            one => vec![one],
        };
        if all.iter().any(&mut done) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_the_requests_queue_cancels_the_job_and_bad_ones_are_dead_lettered() {
    let Some(vh) = Vhost::new("buscancel") else { return };
    let dir = recman_testkit::temp_dir();
    let config = write_config(dir.path(), 15, "");
    let data = dir.path().join("data");
    let bus = vh.bus().await;
    let mut events = bus.consume(Address::Events, 256).await.unwrap();
    let mut engine = Proc::engine(dir.path(), &data, &config, &vh.url, &[]);
    let mut worker = worker(dir.path(), &config, &vh.url);
    let output = || {
        format!(
            "engine:\n{}",
            std::fs::read_to_string(dir.path().join("engine.log")).unwrap_or_default()
        )
    };

    bus.publish(Address::Requests, request("long", &["slow"]))
        .await
        .unwrap();
    bus.publish(Address::Requests, request("queued", &["slow"]))
        .await
        .unwrap();
    let mut jobs = BTreeMap::new();
    events_until(&mut events, "both requests accepted", output, |e| {
        let b = &e["event"]["body"];
        if b["type"] == "requested" {
            jobs.insert(
                b["request_id"].as_str().unwrap().to_string(),
                e["event"]["job"].as_str().unwrap().to_string(),
            );
        }
        jobs.len() == 2
    })
    .await;
    let (long, queued) = (jobs["long"].clone(), jobs["queued"].clone());

    let cancel = |id: &str, body: String| Message::new(msg_type::REQUEST, id, body.into_bytes());
    let bad = [
        (
            "not-a-job-id",
            r#"{"cancel":"nope"}"#.to_string(),
            "invalid field `cancel`",
        ),
        (
            "unknown-job",
            r#"{"cancel":"0193a5b2-7c1e-7f00-8a3b-5d2e9c4f1a07"}"#.to_string(),
            "unknown_job",
        ),
        (
            "cancel-and-targets",
            format!(r#"{{"cancel":"{queued}","request_id":"x","targets":["slow"]}}"#),
            "not both",
        ),
        (
            "reason-too-long",
            format!(r#"{{"cancel":"{queued}","reason":"{}"}}"#, "x".repeat(2000)),
            "invalid field `reason`",
        ),
    ];
    for (id, body, _) in &bad {
        bus.publish(Address::Requests, cancel(id, body.clone()))
            .await
            .unwrap();
    }
    let reasons = dead_letter_reasons(bus.as_ref(), bad.len(), output).await;
    for (id, _, want) in &bad {
        assert!(reasons[*id].contains(want), "{id}: reason {:?}", reasons[*id]);
    }
    engine.assert_running();

    // The valid cancel: the queued job ends cancelled, with its reason.
    bus.publish(
        Address::Requests,
        cancel(
            "good-cancel",
            format!(r#"{{"schema_version":1,"cancel":"{queued}","reason":"window closed"}}"#),
        ),
    )
    .await
    .unwrap();
    let mut requested_reason = None;
    events_until(&mut events, "the queued job cancelled", output, |e| {
        if e["event"]["job"] != queued.as_str() {
            return false;
        }
        let b = &e["event"]["body"];
        if b["type"] == "cancel_requested" {
            requested_reason = b["reason"].as_str().map(str::to_string);
        }
        b["type"] == "cancelled"
    })
    .await;
    assert_eq!(requested_reason.as_deref(), Some("window closed"));
    assert_ne!(long, queued);
    engine.assert_running();
    assert!(engine.stop().is_some_and(|s| s.success()), "{}", engine.output());
    let _ = worker.stop();
}
