//! The bus on a real three-node RabbitMQ cluster losing a node (issue 21):
//! the engine and two workers as separate processes, each given all three
//! nodes, and an external publisher sending 500 requests in three waves.
//! During each wave one fault:
//!
//! (a) kill -9 of the node that leads `recman.requests`, then started again;
//! (b) a partition of one node (the new leader), as SIGSTOP of its Erlang VM
//!     for 25 s and SIGCONT: the other two declare it down after
//!     `net_ticktime` and carry on as the majority, its clients miss its
//!     heartbeats and move to another node, and on SIGCONT it finds itself in
//!     the minority (`pause_minority`), pauses, and rejoins. (iptables is not
//!     installed here and the nodes share one loopback address, so a port rule
//!     could not cut node-to-node traffic cleanly; a stopped VM is a
//!     partition as every peer and client sees it);
//! (c) a rolling restart of all three nodes, each once nothing is
//!     quorum-critical on it.
//!
//! After each wave: every accepted (confirmed) request became one job that
//! ended, no attempt started twice, at most one snapshot per attempt, every
//! freeze thawed within its limit, the events relayed to a durable
//! subscription are gap-free by `seq` after dedupe, and `recman audit` finds
//! the log intact (the engine is stopped for the audit and started again).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use recman_amqp::AmqpBus;
use recman_events::bus::{Address, Message};
use recman_events::Consumer;
use recman_testkit::recman_cmd;
use recman_tests::amqp::{read_log, request, write_config, Proc};
use recman_tests::cluster::Cluster;

const JOBS: usize = 500;
const TARGETS: usize = 20;
/// The config's freeze limit (`write_config`).
const FREEZE_LIMIT_US: u64 = 10_000_000;
const REQUESTS_QUEUE: &str = "recman.requests";

#[derive(Default)]
struct Progress {
    /// seq → (job, kind) of every event seen on the subscription, deduped.
    events: BTreeMap<u64, (String, String)>,
    duplicates: usize,
    job_of_request: HashMap<String, String>,
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
        let seq = v["seq"].as_u64().expect("seq");
        let job = v["event"]["job"].as_str().expect("job").to_string();
        let body = &v["event"]["body"];
        let kind = body["type"].as_str().expect("type").to_string();
        if self.events.contains_key(&seq) {
            self.duplicates += 1;
            return;
        }
        match kind.as_str() {
            "requested" => {
                let id = body["request_id"].as_str().expect("request_id").to_string();
                self.job_of_request.insert(id, job.clone());
            }
            "completed" | "failed" | "cancelled" => {
                self.terminal.insert(job.clone());
            }
            _ => {}
        }
        self.events.insert(seq, (job, kind));
    }

    fn ended(&self, request: &str) -> bool {
        self.job_of_request
            .get(request)
            .is_some_and(|j| self.terminal.contains(j))
    }

    /// Gap-free: the seqs seen are exactly 1..=last.
    fn gap_free_to(&self, last: u64) -> bool {
        self.events.len() as u64 == last && self.events.keys().next_back().copied().unwrap_or(0) == last
    }
}

/// Reads the subscription until `done` holds (or panics after `within`).
async fn pump(
    tap: &mut Consumer,
    p: &mut Progress,
    within: Duration,
    what: &str,
    done: impl Fn(&Progress) -> bool,
    procs: &mut [&mut Proc],
) {
    let deadline = Instant::now() + within;
    while !done(p) {
        for proc in procs.iter_mut() {
            proc.assert_running();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: not within {within:?} ({} events, {} jobs ended)\n{}",
            p.events.len(),
            p.terminal.len(),
            procs
                .iter()
                .map(|pr| format!("{}:\n{}", pr.name, tail(&pr.output())))
                .collect::<Vec<_>>()
                .join("\n")
        );
        match tokio::time::timeout(left.min(Duration::from_secs(1)), tap.recv()).await {
            Ok(Some(d)) => {
                p.take_message(&d.message);
                // After the subscriber's node went away an old tag may be
                // refused: the message comes again and is deduped.
                let _ = d.ack().await;
            }
            Ok(None) => panic!("the events subscription closed"),
            Err(_) => {}
        }
    }
}

/// Publishes `ids` one by one, paced, each confirmed before the next; returns
/// those the cluster accepted (confirmed).
async fn publish(bus: Arc<AmqpBus>, ids: Vec<(String, usize)>) -> Vec<String> {
    let mut accepted = Vec::new();
    for (id, target) in ids {
        let msg = request(&id, &[&format!("t{target}")]);
        match recman_events::Bus::publish(&*bus, Address::Requests, msg).await {
            Ok(()) => accepted.push(id),
            Err(e) => eprintln!("request {id} not accepted: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    accepted
}

/// The last 200 lines of a process's log: enough to see what each process
/// did during the wave that failed (this test failed once in five runs with
/// a worker whose last 30 lines said nothing about it).
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(200)..].join("\n")
}

/// The fault of wave `wave`, blocking: what it did, for the test's output.
fn inject(c: &Cluster, wave: usize) -> String {
    match wave {
        0 => {
            let n = wait_leader(c);
            c.ctl_ok(&["kill", &n.to_string()]);
            let after = wait_leader(c);
            c.ctl_ok(&["start", &n.to_string()]);
            c.wait_healthy();
            format!("kill -9 of node {n} (leader of {REQUESTS_QUEUE}; then node {after}), started again")
        }
        1 => {
            let n = wait_leader(c);
            c.ctl_ok(&["pause", &n.to_string()]);
            std::thread::sleep(Duration::from_secs(25));
            let during = c.leader(REQUESTS_QUEUE);
            c.ctl_ok(&["resume", &n.to_string()]);
            // pause_minority usually heals by itself; under load the majority
            // may keep the partition recorded: then the operator's remedy,
            // restarting the app of the node that was cut off.
            if let Err(seen) = c.healthy_within(Duration::from_secs(30)) {
                eprintln!("still partitioned 30 s after SIGCONT ({seen}): stop_app/start_app on node {n}");
                c.ctl_ok(&[&n.to_string(), "stop_app"]);
                c.ctl_ok(&[&n.to_string(), "start_app"]);
            }
            c.wait_healthy();
            format!("node {n} (leader of {REQUESTS_QUEUE}) partitioned (SIGSTOP) for 25 s; leader meanwhile {during:?}")
        }
        _ => {
            eprintln!(
                "offline replicas before the rolling restart: {:?}",
                c.offline_replicas()
            );
            for n in 1..=3 {
                let node = n.to_string();
                // Not while this node holds the only up-to-date copy of a quorum.
                wait_not_quorum_critical(c, n);
                c.ctl_ok(&["stop", &node]);
                c.ctl_ok(&["start", &node]);
                c.wait_healthy();
            }
            "rolling restart of nodes 1, 2, 3".to_string()
        }
    }
}

/// Waits until stopping node `n` would leave every quorum queue a majority.
/// A replica that stays offline, or whose member is neither leader nor
/// follower though its node is up, after the earlier faults (seen twice in
/// CI after the SIGSTOP wave: node 1 stayed quorum-critical for 60 s for
/// `recman.worker.w1`, with every member listed online) gets the operator's
/// remedy, a restart of the app of the node that holds it, once.
fn wait_not_quorum_critical(c: &Cluster, n: usize) {
    let node = n.to_string();
    let mut remedied = false;
    let mut deadline = Instant::now() + Duration::from_secs(60);
    while let Err(why) = c.ctl(&["queues", &node, "check_if_node_is_quorum_critical"]) {
        if Instant::now() >= deadline {
            let offline = c.offline_replicas();
            // The queues the check names: "queue 'NAME' in vhost ...".
            let critical: Vec<&str> = why
                .split("queue '")
                .skip(1)
                .filter_map(|rest| rest.split('\'').next())
                .collect();
            let stuck: Vec<(String, usize, String)> = critical
                .iter()
                .flat_map(|q| {
                    c.stuck_members(q)
                        .into_iter()
                        .map(move |(m, state)| (q.to_string(), m, state))
                })
                .collect();
            let status: String = critical
                .iter()
                .map(|q| {
                    c.ctl(&["queues", &node, "quorum_status", q, "--vhost", &c.vhost])
                        .unwrap_or_else(|e| e)
                })
                .collect();
            let evidence = format!(
                "node {n} quorum-critical for 60 s: {why}\noffline replicas (queue, node): {offline:?}\n\
                 members neither leader nor follower (queue, node, state): {stuck:?}\nmembers: {}\n\
                 quorum status: {status}",
                c.ctl(&[&node, "list_queues", "-p", &c.vhost, "name", "members", "online"])
                    .unwrap_or_else(|e| e)
            );
            assert!(
                !remedied && (!offline.is_empty() || !stuck.is_empty()),
                "{evidence}"
            );
            eprintln!("{evidence}\nrestarting the app of the nodes holding them");
            let mut nodes: Vec<usize> = offline
                .iter()
                .map(|(_, m)| *m)
                .chain(stuck.iter().map(|(_, m, _)| *m))
                .collect();
            nodes.sort_unstable();
            nodes.dedup();
            for m in nodes {
                c.ctl_ok(&[&m.to_string(), "stop_app"]);
                c.ctl_ok(&[&m.to_string(), "start_app"]);
            }
            c.wait_healthy();
            remedied = true;
            deadline = Instant::now() + Duration::from_secs(60);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn wait_leader(c: &Cluster) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(n) = c.leader(REQUESTS_QUEUE) {
            return n;
        }
        assert!(Instant::now() < deadline, "{REQUESTS_QUEUE} has no leader");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_cluster_node_kill_partition_rolling_restart() {
    let Some(c) = Cluster::new("cluster") else { return };
    let c = Arc::new(c);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    eprintln!("processes' logs in {}", dir.path().display());
    let data = dir.path().join("data");
    let config = write_config(dir.path(), TARGETS, &["host.a", "host.b"]);

    let tap_bus = c.bus("recman-test-subscriber").await;
    let mut tap = tap_bus
        .subscribe_events("test.events-tap", "#", 1000)
        .await
        .unwrap();
    let publisher = c.bus("recman-test-publisher").await;

    // Every process knows all three nodes, each starting at another one.
    let args = |first: usize, head: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = head.iter().map(|s| s.to_string()).collect();
        for k in 0..3 {
            a.push("--amqp".into());
            a.push(c.urls[(first + k) % 3].clone());
        }
        a.extend(["--amqp-reconnect-timeout", "90"].map(String::from));
        a
    };
    let engine_args = args(0, &["engine"]);
    let engine_args: Vec<&str> = engine_args.iter().map(String::as_str).collect();
    let spawn_engine = || Proc::spawn("engine", dir.path(), &data, &config, &engine_args);
    let mut engine = spawn_engine();
    engine.wait_for("broker connected");
    let mut workers = Vec::new();
    for (i, (id, pool)) in [("w1", "host.a"), ("w2", "host.b")].into_iter().enumerate() {
        let a = args(i + 1, &["worker", "--pool", pool, "--id", id]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut w = Proc::spawn(id, dir.path(), &data.join(id), &config, &a);
        w.wait_for("worker started");
        workers.push(w);
    }
    let (mut w1, mut w2) = (workers.remove(0), workers.remove(0));

    let mut p = Progress::default();
    let mut accepted: Vec<String> = Vec::new();
    let waves = 3;
    for wave in 0..waves {
        let from = wave * JOBS / waves;
        let to = (wave + 1) * JOBS / waves;
        let ids: Vec<(String, usize)> = (from..to).map(|i| (format!("job-{i}"), i % TARGETS)).collect();
        let sending = tokio::spawn(publish(publisher.clone(), ids));
        let ended_before = p.terminal.len();
        let third = (to - from) / 3;
        pump(
            &mut tap,
            &mut p,
            Duration::from_secs(60),
            "a third of the wave",
            |p| p.terminal.len() >= ended_before + third,
            &mut [&mut engine, &mut w1, &mut w2],
        )
        .await;
        let cc = c.clone();
        let t = Instant::now();
        let mut fault = tokio::task::spawn_blocking(move || inject(&cc, wave));
        // The subscription is read on while the fault goes on.
        let did = loop {
            tokio::select! {
                r = &mut fault => break r.unwrap(),
                d = tap.recv() => {
                    let d = d.expect("the events subscription closed");
                    p.take_message(&d.message);
                    let _ = d.ack().await;
                }
            }
        };
        eprintln!(
            "[{:?}] wave {wave}: {did} ({:?}; {} jobs had ended)",
            started.elapsed(),
            t.elapsed(),
            p.terminal.len()
        );
        let sent = sending.await.unwrap();
        assert_eq!(
            sent.len(),
            to - from,
            "the cluster refused requests of wave {wave}"
        );
        accepted.extend(sent);
        pump(
            &mut tap,
            &mut p,
            Duration::from_secs(120),
            "every accepted request ended",
            |p| accepted.iter().all(|r| p.ended(r)),
            &mut [&mut engine, &mut w1, &mut w2],
        )
        .await;

        // The log, with the engine stopped: audit, then the invariants.
        assert!(
            engine.stop().is_some_and(|s| s.success()),
            "the engine did not stop cleanly:\n{}",
            tail(&engine.output())
        );
        audit(&data);
        let log = read_log(&data);
        let last = log.len() as u64;
        pump(
            &mut tap,
            &mut p,
            Duration::from_secs(30),
            "every event relayed",
            |p| p.gap_free_to(last),
            &mut [&mut w1, &mut w2],
        )
        .await;
        check_log(&log, &accepted);
        eprintln!(
            "[{:?}] wave {wave} checked: {} requests accepted and ended, {last} events gap-free ({} duplicates deduped), audit intact",
            started.elapsed(),
            accepted.len(),
            p.duplicates
        );
        if wave + 1 < waves {
            engine = spawn_engine();
            engine.wait_for("broker connected");
        }
    }
    for w in [&mut w1, &mut w2] {
        let status = w.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly ({status:?}):\n{}",
            w.name,
            tail(&w.output())
        );
    }
    assert_eq!(accepted.len(), JOBS);
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "took {:?}",
        started.elapsed()
    );
}

/// `recman audit` on the stopped engine's log: exit 0, "intact".
fn audit(data: &Path) {
    let out = recman_cmd(data)
        .arg("audit")
        .output()
        .expect("running recman audit");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("intact"),
        "recman audit: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_log(log: &[serde_json::Value], accepted: &[String]) {
    let facts = recman_tests::amqp::check_log(log, accepted);
    assert!(!facts.windows.is_empty(), "no freeze window was recorded");
    let longest = facts.windows.iter().max().copied().unwrap_or(0);
    assert!(
        longest <= FREEZE_LIMIT_US,
        "a target stayed frozen {longest} µs, past its limit of {FREEZE_LIMIT_US} µs"
    );
    let completed = facts.completed;
    eprintln!(
        "{completed} of {} jobs completed, {} events, longest freeze window {longest} µs",
        facts.ended,
        log.len()
    );
    assert!(
        completed >= accepted.len() * 9 / 10,
        "only {completed} of {} jobs completed",
        accepted.len()
    );
}
