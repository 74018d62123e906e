//! Failover over RabbitMQ (issue 19): two `recman engine` processes on one
//! PostgreSQL event log, two workers on targets whose hooks write what they
//! did to files, a stream of requests, `kill -9` of the leader at random
//! moments five times (restarted each time as the new standby), and one
//! `SIGSTOP` of the leader past its lease, then `SIGCONT`. Then: every
//! accepted request reached a terminal state, no attempt snapshotted twice
//! (the provider's own record of what it created), every freeze thawed within
//! the limit, the paused engine stepped down saying it was fenced (exit 2),
//! and the log's audit is clean. Needs RabbitMQ (`tests/services/rabbitmq.sh`)
//! and the private PostgreSQL of `tests/services/postgres.sh`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use recman_events::bus::Address;
use recman_events::wire::EventMessage;
use recman_testkit::amqp::Vhost;
use recman_testkit::{free_port, need_env};
use recman_tests::amqp::{request, Proc, VhostBus};
use recman_tests::cli::http;

const URL_VAR: &str = "RECMAN_TEST_PG_URL";
const TARGETS: usize = 6;
const KILLS: usize = 5;
const FREEZE_LIMIT: Duration = Duration::from_secs(10);
const LEASE: &str = "2s";

/// `postgresql://user:pw@host:port/db` → (`postgresql://user@host:port/db`, `pw`).
fn split_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let (user, pw) = userinfo.split_once(':').unwrap();
    (format!("{scheme}://{user}@{host}"), pw.to_string())
}

/// Targets `t0..` in pools `host.a` / `host.b`; the writer's hooks and the
/// provider's create append one line per call to files under `out`.
fn write_config(dir: &Path, out: &Path, url: &str, pw_file: &Path, schema: &str) -> PathBuf {
    let o = out.display();
    let mut s = format!(
        "[log]\npostgres = \"{url}\"\npassword_file = \"{}\"\nschema = \"{schema}\"\nlease = \"{LEASE}\"\n\n\
         [engine]\nfreeze_limit = \"{}s\"\n",
        pw_file.display(),
        FREEZE_LIMIT.as_secs()
    );
    for i in 0..TARGETS {
        let pool = ["host.a", "host.b"][i % 2];
        let hook = |stage: &str| {
            format!(
                "[\"/bin/sh\", \"-c\", \"echo \\\"$RECMAN_TARGET $RECMAN_JOB $RECMAN_ATTEMPT {stage} $(date +%s%N)\\\" >> {o}/hooks\"]"
            )
        };
        s.push_str(&format!(
            "[[target]]\nid = \"t{i}\"\npool = \"{pool}\"\nretries = 5\n\
             [target.writer]\ntype = \"exec\"\nfreeze = {}\nthaw = {}\n\
             [target.provider]\ntype = \"exec\"\ncreate = [\"/bin/sh\", \"-c\", \"echo {{name}} >> {o}/created\"]\n",
            hook("freeze"),
            hook("thaw")
        ));
    }
    let p = dir.join("recman.toml");
    std::fs::write(&p, s).unwrap();
    p
}

/// A tiny xorshift, seeded from the clock (the seed is printed).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The engine's `/readyz` body when it answers 200.
fn readyz(port: u16) -> Option<serde_json::Value> {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        return None;
    }
    let (st, body) = http(port, "GET", "/readyz", "");
    (st == 200).then(|| serde_json::from_str(&body).unwrap())
}

struct Engines {
    dir: PathBuf,
    config: PathBuf,
    url: String,
    ports: [u16; 2],
    procs: [Option<Proc>; 2],
    starts: [usize; 2],
}

impl Engines {
    fn start(&mut self, i: usize) {
        let data = self.dir.join(format!("engine{i}-data"));
        let listen = format!("127.0.0.1:{}", self.ports[i]);
        self.starts[i] += 1;
        let name = format!("engine{i}-{}", self.starts[i]);
        let args = [
            "engine",
            "--amqp",
            self.url.as_str(),
            "--amqp-reconnect-timeout",
            "5",
            "--listen",
            listen.as_str(),
        ];
        self.procs[i] = Some(Proc::spawn(&name, &self.dir, &data, &self.config, &args));
    }

    /// Waits until engine `i` is ready as the leader; returns its epoch and how long it took.
    fn wait_leader(&mut self, i: usize, within: Duration) -> (i64, Duration) {
        let t0 = Instant::now();
        loop {
            if let Some(v) = readyz(self.ports[i]) {
                assert_eq!(v["role"], "leader", "{v}");
                return (v["epoch"].as_i64().unwrap(), t0.elapsed());
            }
            let p = self.procs[i].as_mut().unwrap();
            p.assert_running();
            assert!(
                t0.elapsed() < within,
                "{} did not lead within {within:?}:\n{}",
                p.name,
                tail(&p.output())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn outputs(&self) -> String {
        let mut s = String::new();
        for p in self.procs.iter().flatten() {
            s.push_str(&format!("--- {}:\n{}\n", p.name, tail(&p.output())));
        }
        s
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Every event of the PostgreSQL log, as `recman events --json` prints them.
fn read_pg_log(full_url: &str, schema: &str) -> Vec<serde_json::Value> {
    let place = recman_events::log::pg_store::PgPlace::new(full_url, schema).unwrap();
    let log = recman_events::log::open_postgres_for_reading(&place).unwrap();
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let batch = log.read(from, 4096).unwrap();
        let Some(last) = batch.last() else { break };
        from = last.seq + 1;
        for e in batch {
            let m = EventMessage {
                schema_version: recman_events::wire::SCHEMA_VERSION,
                seq: e.seq,
                event: e.event,
            };
            out.push(serde_json::to_value(&m).unwrap());
        }
    }
    out
}

fn terminal_jobs(log: &[serde_json::Value]) -> usize {
    log.iter()
        .filter(|e| {
            matches!(
                e["event"]["body"]["type"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_kill9_five_times_and_a_paused_leader_loses_nothing() {
    let Some(full_url) = need_env(
        URL_VAR,
        "start a private server: `source tests/services/postgres.sh && pg_start`; tests/run does",
    ) else {
        return;
    };
    let Some(vh) = Vhost::new("failover") else { return };
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    eprintln!("processes' logs in {}", root.display());
    let out = root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (url, pw) = split_password(&full_url);
    let pw_file = root.join("pg-password");
    std::fs::write(&pw_file, format!("{pw}\n")).unwrap();
    let schema = format!("failover_{}", std::process::id());
    let config = write_config(&root, &out, &url, &pw_file, &schema);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);

    let mut e = Engines {
        dir: root.clone(),
        config: config.clone(),
        url: vh.url.clone(),
        ports: [free_port(), free_port()],
        procs: [None, None],
        starts: [0, 0],
    };
    e.start(0);
    let (epoch0, _) = e.wait_leader(0, Duration::from_secs(30));
    e.start(1);
    e.procs[1].as_mut().unwrap().wait_for("standby:");
    let mut workers = Vec::new();
    for (id, pool) in [("w1", "host.a"), ("w2", "host.b")] {
        let mut w = Proc::spawn(
            id,
            &root,
            &root.join(id),
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
        workers.push(w);
    }

    // The stream: a request every 50 ms until told to stop; each publish is
    // confirmed by the broker, so each is accepted.
    let bus = vh.bus().await;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let publisher = tokio::spawn(async move {
        let mut sent = Vec::new();
        let mut i = 0;
        loop {
            let id = format!("req-{i}");
            bus.publish(Address::Requests, request(&id, &[&format!("t{}", i % TARGETS)]))
                .await
                .expect("publish confirmed");
            sent.push(id);
            i += 1;
            tokio::select! {
                _ = &mut stop_rx => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        sent
    });

    // Five kill -9 of the leader at random moments; the killed one comes back as the standby.
    let mut leader = 0;
    let mut epochs = vec![epoch0];
    let mut takeovers = Vec::new();
    for k in 0..KILLS {
        let wait = Duration::from_millis(1000 + rng.below(3000));
        tokio::time::sleep(wait).await;
        e.procs[leader].as_mut().unwrap().assert_running();
        e.procs[leader].as_mut().unwrap().kill9();
        let next = 1 - leader;
        let (epoch, took) = tokio::task::block_in_place(|| e.wait_leader(next, Duration::from_secs(30)));
        eprintln!(
            "[{:?}] kill {k} of engine{leader} after {wait:?}: engine{next} leads epoch {epoch} after {took:?}",
            started.elapsed()
        );
        assert!(epoch > *epochs.last().unwrap(), "a takeover takes a higher epoch");
        epochs.push(epoch);
        takeovers.push(took);
        e.start(leader);
        let standby = e.procs[leader].as_mut().unwrap();
        tokio::task::block_in_place(|| standby.wait_for("standby:"));
        leader = next;
    }

    // SIGSTOP of the leader past its lease: the standby takes over; on
    // SIGCONT the paused one finds itself fenced and steps down.
    tokio::time::sleep(Duration::from_millis(500 + rng.below(1500))).await;
    let paused = leader;
    let pid = e.procs[paused].as_ref().unwrap().child.id() as i32;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let stopped_at = Instant::now();
    let next = 1 - paused;
    let (epoch, took) = tokio::task::block_in_place(|| e.wait_leader(next, Duration::from_secs(30)));
    eprintln!(
        "[{:?}] SIGSTOP of engine{paused}: engine{next} leads epoch {epoch} after {took:?}",
        started.elapsed()
    );
    assert!(epoch > *epochs.last().unwrap());
    epochs.push(epoch);
    assert!(
        e.procs[next]
            .as_ref()
            .unwrap()
            .output()
            .contains("lease had expired"),
        "the takeover says it ended an expired holder:\n{}",
        e.outputs()
    );
    // Keep it paused a little longer: jobs go on under the new leader.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    eprintln!("SIGCONT after {:?}", stopped_at.elapsed());
    let p = e.procs[paused].as_mut().unwrap();
    let status = recman_testkit::wait_exit(&mut p.child, Duration::from_secs(20));
    let said = p.output();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "the paused engine steps down with exit 2 ({status:?}):\n{}",
        tail(&said)
    );
    assert!(said.contains("fenced"), "it says it was fenced:\n{}", tail(&said));
    e.start(paused);
    let standby = e.procs[paused].as_mut().unwrap();
    tokio::task::block_in_place(|| standby.wait_for("standby:"));
    leader = next;

    // Stop the stream; every accepted request must end.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(());
    let sent = publisher.await.unwrap();
    eprintln!(
        "[{:?}] {} requests accepted; draining",
        started.elapsed(),
        sent.len()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = read_pg_log(&full_url, &schema);
        let ended = terminal_jobs(&log);
        if ended >= sent.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {ended} of {} jobs ended:\n{}",
            sent.len(),
            e.outputs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The leader's role on /v1/state, then everyone stops.
    let (st, body) = http(e.ports[leader], "GET", "/v1/state", "");
    assert_eq!(st, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["log"]["role"], "leader", "{body}");
    assert_eq!(state["log"]["epoch"].as_i64(), epochs.last().copied(), "{body}");
    let (_, metrics) = http(e.ports[leader], "GET", "/metrics", "");
    assert!(metrics.contains("recman_log_takeovers_total 1"), "{metrics}");
    for w in workers.iter_mut() {
        let s = w.stop();
        assert!(
            s.is_some_and(|s| s.success()),
            "{}:\n{}",
            w.name,
            tail(&w.output())
        );
    }
    for p in e.procs.iter_mut().flatten() {
        let s = p.stop();
        assert!(
            s.is_some_and(|s| s.success()),
            "{}:\n{}",
            p.name,
            tail(&p.output())
        );
    }

    // The log: every accepted request one job, ended; no attempt twice; at
    // most one snapshot per attempt; every freeze thawed.
    let log = read_pg_log(&full_url, &schema);
    let facts = recman_tests::amqp::check_log(&log, &sent);
    eprintln!(
        "{} of {} jobs completed, {} events, epochs {epochs:?}",
        facts.completed,
        facts.ended,
        log.len()
    );
    assert!(facts.completed * 10 >= sent.len() * 9, "{facts:?}");
    for w in &facts.windows {
        assert!(
            Duration::from_micros(*w) <= FREEZE_LIMIT,
            "a target stayed frozen {w} µs, past its limit {FREEZE_LIMIT:?}"
        );
    }

    // The storage's own record: the provider created each snapshot name once.
    let created = std::fs::read_to_string(out.join("created")).unwrap_or_default();
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for n in created.lines() {
        *names.entry(n).or_default() += 1;
    }
    let twice: Vec<_> = names.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "snapshots taken twice: {twice:?}");
    let recorded = log
        .iter()
        .filter(|e| {
            let b = &e["event"]["body"];
            (b["type"] == "step_succeeded" && b["stage"] == "snapshot") || b["type"] == "late_snapshot"
        })
        .count();
    assert_eq!(
        names.len(),
        recorded,
        "every snapshot the provider took is recorded, and no other"
    );
    // The writer's record: each (job, attempt) froze at most once and thawed
    // after it froze.
    let hooks = std::fs::read_to_string(out.join("hooks")).unwrap_or_default();
    let mut freezes: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut thawed: BTreeSet<(String, String)> = BTreeSet::new();
    for l in hooks.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let key = (f[1].to_string(), f[2].to_string());
        match f[3] {
            "freeze" => *freezes.entry(key).or_default() += 1,
            _ => {
                thawed.insert(key);
            }
        }
    }
    for (k, n) in &freezes {
        assert_eq!(*n, 1, "{k:?} froze {n} times");
        assert!(thawed.contains(k), "{k:?} froze and was never thawed by its hook");
    }

    // One clean hash chain across every epoch.
    let place = recman_events::log::pg_store::PgPlace::new(&full_url, &schema).unwrap();
    let rlog = recman_events::log::open_postgres_for_reading(&place).unwrap();
    let report = recman_events::audit::audit(&*rlog);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, log.len() as u64);
    drop(rlog);
    let (c, conn) = tokio_postgres::connect(&full_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let _ = c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await;
    eprintln!(
        "[{:?}] done; takeovers after kill -9: {takeovers:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(180),
        "took {:?}",
        started.elapsed()
    );
}
