//! A recovery request on `recman.requests` (issue 16), with `recman engine`
//! and `recman worker` on the private broker and a `copy` target: a body
//! with `action` is a recovery, accepted with origin `amqp` and carried out
//! (the restore point is restored beside production); a body that is two
//! kinds of request at once, a malformed action and a refused one (unknown
//! snapshot) are dead-lettered with their reason, and the engine goes on.

use std::path::Path;

use recman_events::bus::{msg_type, Address, Message};
use recman_testkit::amqp::Vhost;
use recman_tests::amqp::{dead_letter_reasons, next_event, read_log, request, Proc, VhostBus};
use serde_json::{json, Value};

fn config(dir: &Path) -> std::path::PathBuf {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/file"), "v1").unwrap();
    let p = dir.join("recman.toml");
    std::fs::write(
        &p,
        format!(
            "[[target]]\nid = \"docs\"\npool = \"host.a\"\n[target.writer]\ntype = \"none\"\n\
             [target.provider]\ntype = \"copy\"\nsource = \"{d}/src\"\ndest = \"{d}/snaps\"\n"
        ),
    )
    .unwrap();
    p
}

fn msg(id: &str, body: &Value) -> Message {
    Message::new(msg_type::REQUEST, id, serde_json::to_vec(body).unwrap())
}

/// Waits (up to 60 s) for a relayed event of one of `kinds` (`a|b`), of job `job` if given.
async fn event(
    events: &mut recman_events::bus::Consumer,
    kinds: &str,
    job: Option<&str>,
    context: impl Fn() -> String,
) -> Value {
    next_event(events, kinds, job, 60, &context).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_recovery_requests_are_accepted_or_dead_lettered() {
    let Some(vh) = Vhost::new("recovery") else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config(dir.path());
    let bus = vh.bus().await;
    let mut events = bus.consume(Address::Events, 256).await.unwrap();
    let mut engine = Proc::engine(dir.path(), &data, &config, &vh.url, &[]);
    let worker = Proc::spawn(
        "worker",
        dir.path(),
        &data.join("w1"),
        &config,
        &["worker", "--amqp", &vh.url, "--pool", "host.a", "--id", "w1"],
    );
    let (elog, wlog) = (engine.log.clone(), worker.log.clone());
    let context = move || {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("engine:\n{}\nworker:\n{}", read(&elog), read(&wlog))
    };

    bus.publish(Address::Requests, request("snap-1", &["docs"]))
        .await
        .unwrap();
    let done = event(&mut events, "completed", None, &context).await;
    let point = done["event"]["body"]["snapshot"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(dir.path().join("src/file"), "v2").unwrap();

    // Malformed and refused ones: dead-lettered with the reason.
    let bad = [
        (
            "two-kinds",
            json!({"request_id": "r-2", "targets": ["docs"], "snapshot": point, "action": {"type": "mount"}}),
            "not two of them",
        ),
        (
            "bad-action",
            json!({"request_id": "r-3", "snapshot": point, "action": {"type": "explode"}}),
            "unknown variant",
        ),
        (
            "unconfirmed",
            json!({"request_id": "r-4", "snapshot": point, "action": {"type": "in_place"}}),
            "confirm",
        ),
        (
            "unknown-point",
            json!({"request_id": "r-5", "snapshot": "rm-nosuch-a1", "action": {"type": "mount"}}),
            "unknown_snapshot",
        ),
    ];
    for (id, body, _) in &bad {
        bus.publish(Address::Requests, msg(id, body)).await.unwrap();
    }
    let reasons = dead_letter_reasons(bus.as_ref(), bad.len(), &context).await;
    for (id, _, want) in &bad {
        assert!(reasons[*id].contains(want), "{id}: reason {:?}", reasons[*id]);
    }
    engine.assert_running();

    // A good one: accepted from the bus, carried out by the worker.
    let to = dir.path().join("restored");
    let body = json!({"request_id": "r-1", "snapshot": point, "action": {"type": "to", "path": to}});
    bus.publish(Address::Requests, msg("r-1", &body)).await.unwrap();
    let asked = event(&mut events, "recovery_requested", None, &context).await;
    assert_eq!(asked["event"]["body"]["origin"], "amqp", "{asked}");
    let job = asked["event"]["job"].as_str().unwrap().to_string();
    let end = event(
        &mut events,
        "recovery_completed|recovery_failed",
        Some(&job),
        &context,
    )
    .await;
    assert_eq!(
        end["event"]["body"]["type"],
        "recovery_completed",
        "{end}; {}",
        context()
    );
    assert_eq!(end["event"]["body"]["location"], to.to_str().unwrap(), "{end}");
    assert_eq!(std::fs::read_to_string(to.join("file")).unwrap(), "v1");

    assert!(engine.stop().is_some_and(|s| s.success()), "{}", engine.output());
    let log = read_log(&data);
    let requested = log
        .iter()
        .filter(|e| e["event"]["body"]["type"] == "recovery_requested")
        .count();
    assert_eq!(requested, 1, "only the good request became a job");
}
