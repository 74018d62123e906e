//! (c) of issue 16: `kill -9` of the worker in the middle of an in-place
//! PostgreSQL restore. `recman engine` and `recman worker` on the private
//! broker, the cluster of `postgres_restore` (btrfs, WAL archive, pgbench
//! load while the snapshot is taken); rows 1..=100, a snapshot, rows
//! 101..=200; then an in-place restore, and the worker is killed while its
//! start step recovers the database in a private server (the data
//! directory's mark says `recovering`). A new worker takes the redelivered
//! step. The target ends restored (rows 1..=100, cluster running) or back
//! on its safety state (rows 1..=200), never half-restored and believed
//! healthy, and the log says which.

use std::path::Path;
use std::time::{Duration, Instant};

use recman_events::bus::{msg_type, Address, Message};
use recman_testkit::amqp::Vhost;
use recman_tests::amqp::{next_event as event, read_log, request, Proc, VhostBus};
use recman_tests::linux::{can_run, LoopFs};
use recman_tests::postgres::{connect, create_seq, insert_seq, seq_rows, Cluster, Load, TOOLS};
use serde_json::{json, Value};

fn worker(dir: &Path, data: &Path, config: &Path, url: &str) -> Proc {
    Proc::spawn(
        "worker",
        dir,
        &data.join("w1"),
        config,
        &["worker", "--amqp", url, "--pool", "host.a", "--id", "w1"],
    )
}

fn mark(c: &Cluster) -> String {
    std::fs::read_to_string(c.data().join("recman_recovery")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_postgres_in_place_restore_survives_kill9_of_the_worker() {
    if !can_run(TOOLS) {
        return;
    }
    let Some(vh) = Vhost::new("pgrestore") else { return };
    let b = LoopFs::new("btrfs", 1024);
    let c = Cluster::start(&b, true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("recman.toml");
    std::fs::write(
        &config,
        c.restore_config(&b, &c.top.join("labels"), "host.a", true),
    )
    .unwrap();
    let bus = vh.bus().await;
    let mut events = bus.consume(Address::Events, 256).await.unwrap();
    let mut engine = Proc::engine(dir.path(), &data, &config, &vh.url, &[]);
    let mut w = worker(dir.path(), &data, &config, &vh.url);
    let (elog, wlog) = (engine.log.clone(), w.log.clone());
    let context = move || {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("engine:\n{}\nworker:\n{}", read(&elog), read(&wlog))
    };

    let client = c.pg.client().await;
    create_seq(&client).await;
    let load = Load::start(c.pg.port, 120);
    insert_seq(&client, 1..=100).await;
    bus.publish(Address::Requests, request("snap-1", &["pg1"]))
        .await
        .unwrap();
    let done = event(&mut events, "completed|failed", None, 120, &context).await;
    assert_eq!(done["event"]["body"]["type"], "completed", "{done}");
    let point = done["event"]["body"]["snapshot"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    insert_seq(&client, 101..=200).await;
    drop(load);
    drop(client);

    let body = json!({"request_id": "r-in-place", "snapshot": point, "action": {"type": "in_place"}, "confirm": true});
    let msg = Message::new(
        msg_type::REQUEST,
        "r-in-place",
        serde_json::to_vec(&body).unwrap(),
    );
    bus.publish(Address::Requests, msg).await.unwrap();
    let asked = event(&mut events, "recovery_requested", None, 60, &context).await;
    let job = asked["event"]["job"].as_str().unwrap().to_string();
    loop {
        let s = event(&mut events, "recovery_step_started", Some(&job), 120, &context).await;
        if s["event"]["body"]["stage"] == "start" {
            break;
        }
    }
    // Killed while the private server recovers the restored data.
    let deadline = Instant::now() + Duration::from_secs(30);
    while mark(&c).trim() != format!("{job} recovering") {
        assert!(
            Instant::now() < deadline,
            "no recovery began: mark {:?}; {}",
            mark(&c),
            context()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    w.kill9();
    eprintln!("worker killed with the mark at {:?}", mark(&c).trim());
    let _w2 = worker(dir.path(), &data, &config, &vh.url);

    let end = event(
        &mut events,
        "recovery_completed|recovery_failed",
        Some(&job),
        300,
        &context,
    )
    .await;
    eprintln!("the recovery ended: {end}");
    // What the log says is what the cluster holds.
    let rows = match (
        end["event"]["body"]["type"].as_str(),
        end["event"]["body"]["live"].as_str(),
    ) {
        (Some("recovery_completed"), _) => (1..=100).collect::<Vec<i64>>(),
        (Some("recovery_failed"), Some("rolled_back" | "untouched")) => (1..=200).collect(),
        other => panic!("the target was left {other:?}: {end}; {}", context()),
    };
    assert_eq!(seq_rows(&connect(c.pg.port).await).await, rows, "{end}");
    if end["event"]["body"]["type"] == "recovery_completed" {
        assert_eq!(mark(&c).trim(), format!("{job} done"));
    }
    assert!(engine.stop().is_some_and(|s| s.success()), "{}", engine.output());
    let log = read_log(&data);
    let ends: Vec<&Value> = log
        .iter()
        .filter(|e| e["event"]["job"] == job.as_str())
        .filter(|e| {
            let k = e["event"]["body"]["type"].as_str().unwrap_or("");
            k == "recovery_completed" || k == "recovery_failed"
        })
        .collect();
    assert_eq!(ends.len(), 1, "one end of the recovery in the log: {ends:?}");
    assert_eq!(ends[0]["event"]["body"], end["event"]["body"]);
    let noted: Vec<&str> = log
        .iter()
        .filter(|e| e["event"]["job"] == job.as_str() && e["event"]["body"]["type"] == "recovery_step_noted")
        .filter_map(|e| e["event"]["body"]["note"].as_str())
        .collect();
    eprintln!("notes: {noted:?}");
    if end["event"]["body"]["type"] == "recovery_completed" {
        // The new worker resumed the recovery the killed one began.
        assert!(noted.iter().any(|n| n.contains("resumed")), "{noted:?}");
    }
}
