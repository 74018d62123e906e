//! The multi-process AMQP tests' harness: buses on a test's own vhost
//! ([`VhostBus`] on `recman_testkit::amqp::Vhost`), the real `recman` binary
//! as engine and workers ([`Proc`]), a config, requests, and reading the log
//! back. Without a broker the tests skip (`recman_testkit::skip`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use recman_amqp::{AmqpBus, AmqpOptions};
use recman_events::bus::Bus;
use recman_testkit::amqp::Vhost;
use recman_testkit::{recman_bin, wait_exit, DEADLINE};

/// Buses connected to a test's vhost.
pub trait VhostBus {
    /// A new connection to the vhost, as a `Bus`.
    fn bus(&self) -> impl std::future::Future<Output = Arc<dyn Bus>> + Send;
    /// A new connection to the vhost, with the AMQP-only API.
    fn amqp(&self) -> impl std::future::Future<Output = Arc<AmqpBus>> + Send;
}

impl VhostBus for Vhost {
    async fn bus(&self) -> Arc<dyn Bus> {
        self.amqp().await
    }

    async fn amqp(&self) -> Arc<AmqpBus> {
        let opts = AmqpOptions {
            connection_name: "recman-test".into(),
            ..Default::default()
        };
        AmqpBus::connect(&self.url, opts)
            .await
            .expect("connect to the test vhost")
    }
}

/// A config with `n` targets `t0..` whose writers run in `pools` (round
/// robin) and whose provider is `none`; the writer's hooks are `true`.
pub fn write_config(dir: &Path, n: usize, pools: &[&str]) -> PathBuf {
    let mut s = String::from("[engine]\nfreeze_limit = \"10s\"\n");
    for i in 0..n {
        let pool = pools[i % pools.len()];
        s.push_str(&format!(
            "[[target]]\nid = \"t{i}\"\npool = \"{pool}\"\nretries = 5\n[target.writer]\ntype = \"exec\"\nfreeze = [\"true\"]\nthaw = [\"true\"]\n[target.provider]\ntype = \"none\"\n"
        ));
    }
    let p = dir.join("recman.toml");
    std::fs::write(&p, s).unwrap();
    p
}

/// Debian's python3 (where python3-pika installs), else the one on PATH;
/// `None` after a skip when neither imports pika.
#[track_caller]
pub fn python() -> Option<String> {
    for p in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(p)
            .args(["-c", "import pika"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(p.to_string());
        }
    }
    recman_testkit::skip("no python3 with pika (apt-get install python3-pika; tests/run installs it)");
    None
}

/// A script of `deploy/examples/`.
pub fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
}

/// `deploy/examples/subscribe_events.py`, its stdout in a file; killed on
/// drop if still running.
pub struct Subscriber {
    child: Child,
    out: PathBuf,
}

impl Subscriber {
    /// Starts it with `args` (URL and options) and waits until it printed
    /// that it subscribed.
    pub fn start(py: &str, dir: &Path, args: &[&str]) -> Subscriber {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = dir.join(format!("subscriber-{n}.out"));
        let child = Command::new(py)
            .arg(example("subscribe_events.py"))
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut sub = Subscriber { child, out };
        let t0 = Instant::now();
        while !sub.text().contains("subscribed") {
            assert!(t0.elapsed() < DEADLINE, "the subscriber did not subscribe");
            assert!(
                sub.child.try_wait().unwrap().is_none(),
                "the subscriber exited early:\n{}",
                sub.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        sub
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits (up to 60 s) for it to exit 0 (`--until-request`: the job
    /// completed); returns the events it printed. `context` is added to a
    /// failure's message (the processes' output).
    pub fn finish(mut self, context: impl Fn() -> String) -> Vec<serde_json::Value> {
        let status = wait_exit(&mut self.child, Duration::from_secs(60));
        let text = self.text();
        assert!(
            status.is_some_and(|s| s.success()),
            "the subscriber did not see the job complete ({status:?}):\n{text}\n{}",
            context()
        );
        text.lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `recman` process; killed (SIGKILL) on drop if still running.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, dir: &Path, data: &Path, config: &Path, args: &[&str]) -> Proc {
        Self::spawn_env(name, dir, data, config, args, &[])
    }

    /// `recman engine --amqp URL` (and `extra` flags) on `data` with `config`.
    pub fn engine(dir: &Path, data: &Path, config: &Path, url: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["engine", "--amqp", url];
        args.extend_from_slice(extra);
        Self::spawn("engine", dir, data, config, &args)
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_env(
        name: &str,
        dir: &Path,
        data: &Path,
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(recman_bin())
            .arg("--data-dir")
            .arg(data)
            .arg("--config")
            .arg(config)
            .args(args)
            .env(
                "RECMAN_LOG",
                "recman=info,recman_engine=info,recman_workers=info,recman_amqp=info,warn",
            )
            // The test's processes are one host's: one freeze state, never
            // the machine's /run/recman (other tests use the same target ids).
            .env("RECMAN_STATE_DIR", dir.join("host-state"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawning recman");
        Proc {
            child,
            name: name.into(),
            log,
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to 20 s (then SIGKILL and `None`).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_exit(&mut self.child, Duration::from_secs(20))
    }

    /// Waits (up to `DEADLINE`) until the process printed `text`; panics
    /// with its output if it exits first or never prints it.
    pub fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !self.output().contains(text) {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "{} did not print {text:?} within {DEADLINE:?}:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn assert_running(&mut self) {
        if let Ok(Some(s)) = self.child.try_wait() {
            panic!("{} exited ({s}):\n{}", self.name, self.output());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// Every event of the log, through `recman events --json` (engine stopped).
pub fn read_log(data: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(recman_bin())
        .arg("--data-dir")
        .arg(data)
        .args(["events", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one EventMessage per line"))
        .collect()
}

pub fn request(id: &str, targets: &[&str]) -> recman_events::bus::Message {
    let body = serde_json::json!({"schema_version": 1, "request_id": id, "targets": targets});
    recman_events::bus::Message::new(
        recman_events::bus::msg_type::REQUEST,
        format!("req/{id}"),
        serde_json::to_vec(&body).unwrap(),
    )
}

/// What [`check_log`] found in a log that keeps the engine's promises.
#[derive(Debug, Default)]
pub struct LogFacts {
    /// Jobs that ended `completed`, and jobs that ended at all.
    pub completed: usize,
    pub ended: usize,
    /// Every `freeze_window_us` recorded, in log order.
    pub windows: Vec<u64>,
}

/// Checks the promises every multi-process run must keep, whatever it
/// killed: seqs 1, 2, …; each accepted request became exactly one job and it
/// ended, once; no job from nowhere; no attempt started twice; at most one
/// snapshot recorded per attempt (and some at all); every freeze thawed (by a
/// thaw or the watchdog). Returns what the caller bounds further.
pub fn check_log(log: &[serde_json::Value], accepted: &[String]) -> LogFacts {
    use std::collections::{BTreeSet, HashMap};
    let mut job_of_request: HashMap<String, Vec<String>> = HashMap::new();
    let mut terminal: HashMap<String, String> = HashMap::new();
    let mut attempts: HashMap<String, Vec<u64>> = HashMap::new();
    // Recorded snapshots per attempt: counted, not collected by name (a
    // snapshot's name is derived from its job and attempt, so a set of names
    // could never hold two).
    let mut snapshots: HashMap<(String, u64), usize> = HashMap::new();
    let mut frozen: BTreeSet<(String, u64, String)> = BTreeSet::new();
    let mut thawed: BTreeSet<(String, u64, String)> = BTreeSet::new();
    let mut facts = LogFacts::default();
    for (i, e) in log.iter().enumerate() {
        assert_eq!(
            e["seq"].as_u64(),
            Some(i as u64 + 1),
            "the log's seqs are 1, 2, …"
        );
        freeze_windows(e, &mut facts.windows);
        let job = e["event"]["job"].as_str().unwrap().to_string();
        let b = &e["event"]["body"];
        let attempt = b["attempt"].as_u64().unwrap_or(0);
        let target = b["target"].as_str().unwrap_or_default().to_string();
        match b["type"].as_str().unwrap() {
            "requested" => job_of_request
                .entry(b["request_id"].as_str().unwrap().to_string())
                .or_default()
                .push(job),
            "attempt_started" => attempts.entry(job).or_default().push(attempt),
            "step_succeeded" => match b["stage"].as_str().unwrap() {
                "snapshot" => *snapshots.entry((job, attempt)).or_default() += 1,
                "freeze" => {
                    frozen.insert((job, attempt, target));
                }
                "thaw" => {
                    thawed.insert((job, attempt, target));
                }
                _ => {}
            },
            "watchdog_thawed" => {
                thawed.insert((job, attempt, target));
            }
            k @ ("completed" | "failed" | "cancelled") => {
                assert!(
                    terminal.insert(job.clone(), k.to_string()).is_none(),
                    "job {job} ended twice"
                );
            }
            _ => {}
        }
    }
    for id in accepted {
        let jobs = job_of_request.get(id).map(Vec::len).unwrap_or(0);
        assert_eq!(
            jobs, 1,
            "request {id} became {jobs} job(s): accepted requests are neither lost nor started twice"
        );
        let job = &job_of_request[id][0];
        assert!(terminal.contains_key(job), "request {id}: job {job} never ended");
    }
    assert_eq!(job_of_request.len(), accepted.len(), "no job from nowhere");
    for (job, a) in &attempts {
        let distinct: BTreeSet<_> = a.iter().collect();
        assert_eq!(
            distinct.len(),
            a.len(),
            "job {job}: an attempt started twice: {a:?}"
        );
    }
    assert!(!snapshots.is_empty(), "no snapshot was recorded at all");
    for ((job, attempt), n) in &snapshots {
        assert_eq!(*n, 1, "job {job} attempt {attempt}: {n} snapshots recorded");
    }
    let stuck: Vec<_> = frozen.difference(&thawed).collect();
    assert!(stuck.is_empty(), "frozen and never thawed: {stuck:?}");
    facts.completed = terminal.values().filter(|k| *k == "completed").count();
    facts.ended = terminal.len();
    facts
}

/// Every `freeze_window_us` anywhere in `v`.
fn freeze_windows(v: &serde_json::Value, out: &mut Vec<u64>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "freeze_window_us" {
                    out.extend(x.as_u64());
                } else {
                    freeze_windows(x, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| freeze_windows(x, out)),
        _ => {}
    }
}

/// Takes `n` dead letters off `bus`'s dead-letter queue (acking them) and
/// returns each one's reason by message id; panics after 30 s without one,
/// with `context()` (the processes' output).
pub async fn dead_letter_reasons(
    bus: &dyn recman_events::bus::Bus,
    n: usize,
    context: impl Fn() -> String,
) -> std::collections::BTreeMap<String, String> {
    use recman_events::bus::{Address, REASON_HEADER};
    let mut dlq = bus.consume(Address::DeadLetters, 0).await.unwrap();
    let mut reasons = std::collections::BTreeMap::new();
    while reasons.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(30), dlq.recv())
            .await
            .unwrap_or_else(|_| panic!("dead letters missing ({reasons:?}); {}", context()))
            .unwrap();
        reasons.insert(
            d.message.message_id.clone(),
            d.message.header(REASON_HEADER).unwrap_or_default().to_string(),
        );
        d.ack().await.unwrap();
    }
    reasons
}

/// Waits (up to `secs`) for a relayed event of one of `kinds` (`a|b`) of `job`.
pub async fn next_event(
    events: &mut recman_events::bus::Consumer,
    kinds: &str,
    job: Option<&str>,
    secs: u64,
    context: &dyn Fn() -> String,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kinds} event; {}", context()))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.message.body).unwrap();
        d.ack().await.unwrap();
        let kind = v["event"]["body"]["type"].as_str().unwrap_or("");
        if kinds.split('|').any(|k| k == kind) && job.is_none_or(|j| v["event"]["job"] == j) {
            return v;
        }
    }
}
