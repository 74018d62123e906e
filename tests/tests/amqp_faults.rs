//! Fault tests on the real broker with the real binary: the engine and three
//! workers in two pools as separate processes, 500 jobs over 20 targets, and
//! in the middle: kill -9 a worker, `rabbitmqctl stop_app` / `start_app`,
//! kill -9 the engine and start it again. Then, from the log: every request
//! became exactly one job, every job ended, every freeze was thawed, no
//! attempt started twice, at most one snapshot per attempt; and from a
//! durable events subscription: every event arrived, first seen in log order.
//! Also: malformed and unknown-version messages on each queue are
//! dead-lettered with a reason while processing goes on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use recman_events::bus::{msg_type, Address, Message, REASON_HEADER};
use recman_events::PoolName;
use recman_testkit::amqp::{rabbitmqctl, Vhost};
use recman_tests::amqp::{read_log, request, write_config, Proc, VhostBus};

const JOBS: usize = 500;
const TARGETS: usize = 20;

struct Progress {
    /// seq → (job, kind) of every event seen on the subscription.
    events: BTreeMap<u64, (String, String)>,
    first_seen: Vec<u64>,
    terminal: BTreeSet<String>,
}

impl Progress {
    /// One relayed message: a single event, or a batch (a JSON array) under load.
    fn take_message(&mut self, msg: &Message) {
        let v: serde_json::Value = serde_json::from_slice(&msg.body).expect("event JSON");
        match v {
            serde_json::Value::Array(events) => {
                assert_eq!(msg.msg_type, recman_engine::runtime::relay::BATCH_TYPE);
                events.into_iter().for_each(|e| self.take(e))
            }
            single => self.take(single),
        }
    }

    fn take(&mut self, v: serde_json::Value) {
        let seq = v["seq"].as_u64().unwrap();
        let job = v["event"]["job"].as_str().unwrap().to_string();
        let kind = v["event"]["body"]["type"].as_str().unwrap().to_string();
        if self.events.contains_key(&seq) {
            return; // a duplicate after a crash: same seq, same message id
        }
        if matches!(kind.as_str(), "completed" | "failed" | "cancelled") {
            self.terminal.insert(job.clone());
        }
        self.events.insert(seq, (job, kind));
        self.first_seen.push(seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_faults_worker_kill_broker_restart_engine_kill() {
    let Some(vh) = Vhost::new("faults") else { return };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    eprintln!("processes' logs in {}", dir.path().display());
    let data = dir.path().join("data");
    let config = write_config(dir.path(), TARGETS, &["host.a", "host.b"]);
    let bus = vh.amqp().await;
    let mut tap = bus.subscribe_events("test.events-tap", "#", 1000).await.unwrap();

    let engine_args = [
        "engine",
        "--amqp",
        vh.url.as_str(),
        "--amqp-reconnect-timeout",
        "5",
    ];
    let mut engine = Proc::spawn("engine", dir.path(), &data, &config, &engine_args);

    // One at a time: RabbitMQ 3.10 answers two connections declaring the same
    // new quorum queue at once with INTERNAL_ERROR (see the report).
    engine.wait_for("broker connected");
    let worker = |id: &str, pool: &str| {
        let mut w = Proc::spawn(
            id,
            dir.path(),
            &data.join(id),
            &config,
            &[
                "worker",
                "--amqp",
                &vh.url,
                "--pool",
                pool,
                "--id",
                id,
                "--amqp-reconnect-timeout",
                "5",
            ],
        );
        w.wait_for("worker started");
        w
    };
    let worker_args = |id: &str, pool: &str| -> Vec<String> {
        [
            "worker",
            "--amqp",
            &vh.url,
            "--pool",
            pool,
            "--id",
            id,
            "--amqp-reconnect-timeout",
            "5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (w2_owned, w3_owned) = (worker_args("w2", "host.a"), worker_args("w3", "host.b"));
    let w2_args: Vec<&str> = w2_owned.iter().map(String::as_str).collect();
    let w3_args: Vec<&str> = w3_owned.iter().map(String::as_str).collect();
    let mut restarts = 0;
    let mut w1 = worker("w1", "host.a");
    let mut w2 = worker("w2", "host.a");
    let mut w3 = worker("w3", "host.b");

    // Bad messages on every queue: dead-lettered, the consumers go on.
    let bad: Vec<(Address, &str, &[u8], &str)> = vec![
        (Address::Requests, "bad-req-json", b"{", "not valid JSON"),
        (
            Address::Requests,
            "bad-req-v",
            br#"{"schema_version":2,"request_id":"x","targets":["t0"]}"#,
            "unknown schema_version 2",
        ),
        (Address::Reports, "bad-rep-json", b"[1,", "not valid JSON"),
        (
            Address::Reports,
            "bad-rep-v",
            br#"{"schema_version":3}"#,
            "unknown schema_version 3",
        ),
        (
            Address::Pool(PoolName::new("host.a")),
            "bad-cmd-json",
            b"nope",
            "not valid JSON",
        ),
        (
            Address::Pool(PoolName::new("host.b")),
            "bad-cmd-v",
            br#"{"schema_version":4}"#,
            "unknown schema_version 4",
        ),
    ];
    for (to, id, body, _) in &bad {
        let t = match to {
            Address::Requests => msg_type::REQUEST,
            Address::Reports => msg_type::REPORT,
            _ => msg_type::COMMAND,
        };
        bus_publish(&bus, to.clone(), Message::new(t, *id, body.to_vec())).await;
    }

    // 500 requests; each publish is confirmed, so each is "accepted" by the broker.
    let mut sent = Vec::new();
    for i in 0..JOBS {
        let id = format!("job-{i}");
        bus_publish(
            &bus,
            Address::Requests,
            request(&id, &[&format!("t{}", i % TARGETS)]),
        )
        .await;
        sent.push(id);
    }

    let mut p = Progress {
        events: BTreeMap::new(),
        first_seen: Vec::new(),
        terminal: BTreeSet::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut phase = 0;
    while p.terminal.len() < JOBS {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {JOBS} jobs ended after phase {phase}\nengine:\n{}\nw2:\n{}\nw3:\n{}",
            p.terminal.len(),
            tail(&engine.output()),
            tail(&w2.output()),
            tail(&w3.output())
        );
        match tokio::time::timeout(left.min(Duration::from_secs(2)), tap.recv()).await {
            Ok(Some(d)) => {
                p.take_message(&d.message);
                let _ = d.ack().await; // after a broker restart an old tag may be refused: redelivered, deduped
            }
            Ok(None) => panic!("the events subscription closed"),
            Err(_) => {}
        }
        let done = p.terminal.len();
        // A process whose connection did not come back exits (status 2); a
        // supervisor starts it again. Before the broker restart none may exit.
        for (p, args) in [
            (&mut engine, &engine_args[..]),
            (&mut w2, &w2_args[..]),
            (&mut w3, &w3_args[..]),
        ] {
            if phase < 2 {
                p.assert_running();
            } else if let Ok(Some(status)) = p.child.try_wait() {
                assert_eq!(status.code(), Some(2), "{}", tail(&p.output()));
                eprintln!(
                    "[{:?}] {} exited after the broker restart: started again",
                    started.elapsed(),
                    p.name
                );
                let data_dir = if p.name == "engine" {
                    data.clone()
                } else {
                    data.join(&p.name)
                };
                *p = Proc::spawn(&p.name.clone(), dir.path(), &data_dir, &config, args);
                restarts += 1;
            }
        }
        if phase == 0 && done >= JOBS / 5 {
            eprintln!("[{:?}] {done} jobs ended: kill -9 worker w1", started.elapsed());
            w1.kill9();
            phase = 1;
        } else if phase == 1 && done >= 2 * JOBS / 5 {
            eprintln!(
                "[{:?}] {done} jobs ended: rabbitmqctl stop_app / start_app",
                started.elapsed()
            );
            tokio::task::spawn_blocking(|| {
                rabbitmqctl(&["stop_app"]);
                std::thread::sleep(Duration::from_secs(1));
                rabbitmqctl(&["start_app"]);
            })
            .await
            .unwrap();
            phase = 2;
        } else if phase == 2 && done >= 3 * JOBS / 5 {
            eprintln!(
                "[{:?}] {done} jobs ended: kill -9 the engine, start it again",
                started.elapsed()
            );
            engine.kill9();
            engine = Proc::spawn("engine", dir.path(), &data, &config, &engine_args);
            phase = 3;
        }
    }
    assert_eq!(phase, 3, "every fault was injected");
    eprintln!(
        "[{:?}] all {JOBS} jobs ended ({restarts} process restart(s) after the broker restart)",
        started.elapsed()
    );

    // Dead letters: each bad message with its reason.
    let mut dlq = bus_consume(&bus, Address::DeadLetters).await;
    let mut reasons: HashMap<String, String> = HashMap::new();
    while reasons.len() < bad.len() {
        let d = tokio::time::timeout(Duration::from_secs(20), dlq.recv())
            .await
            .unwrap_or_else(|_| panic!("dead letters so far: {reasons:?}"))
            .unwrap();
        reasons.insert(
            d.message.message_id.clone(),
            d.message.header(REASON_HEADER).unwrap_or_default().to_string(),
        );
        let _ = d.ack().await;
    }
    for (_, id, _, want) in &bad {
        assert!(reasons[*id].contains(want), "{id}: reason {:?}", reasons[*id]);
    }

    for w in [&mut w2, &mut w3] {
        let status = w.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly ({status:?}):\n{}",
            w.name,
            tail(&w.output())
        );
    }
    assert!(
        engine.stop().is_some_and(|s| s.success()),
        "{}",
        tail(&engine.output())
    );
    check_log(&read_log(&data), &sent, &p);
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "took {:?}",
        started.elapsed()
    );
}

async fn bus_publish(bus: &recman_amqp::AmqpBus, to: Address, m: Message) {
    recman_events::Bus::publish(bus, to, m)
        .await
        .expect("publish confirmed");
}

async fn bus_consume(bus: &recman_amqp::AmqpBus, from: Address) -> recman_events::Consumer {
    recman_events::Bus::consume(bus, from, 0).await.unwrap()
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn check_log(log: &[serde_json::Value], sent: &[String], p: &Progress) {
    // Every event reached the subscriber, first seen in log order.
    assert_eq!(
        p.first_seen,
        (1..=log.len() as u64).collect::<Vec<u64>>(),
        "events relayed in order, none lost"
    );

    let facts = recman_tests::amqp::check_log(log, sent);
    let completed = facts.completed;
    eprintln!(
        "{completed} of {} jobs completed, {} events",
        facts.ended,
        log.len()
    );
    assert!(
        completed >= JOBS * 9 / 10,
        "only {completed} of {JOBS} jobs completed"
    );
}
