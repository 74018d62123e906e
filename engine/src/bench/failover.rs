//! `recman bench failover`: two `recman engine` processes on one PostgreSQL
//! event log, a worker over RabbitMQ, a stream of requests, and N `kill -9`
//! of the leader (restarted each time as the standby): how long until the
//! standby serves (`/readyz` 200), and whether any accepted request was lost
//! or done twice. Baseline: the raw PostgreSQL round trip and the time to
//! connect and take an advisory lock, measured in the same run.
//!
//! It starts no server: it needs a PostgreSQL (`--pg`, a role that may
//! create a schema) and a RabbitMQ vhost of its own (`--amqp`), both best on
//! loopback (`tests/services/postgres.sh`, `tests/services/rabbitmq.sh`).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use recman_events::bus::{msg_type, Address, Bus, Message};
use recman_events::log::pg_store::PgPlace;

use super::measure::percentile;

#[derive(Debug, clap::Args)]
#[command(after_help = "Needs, on loopback preferably (it starts neither):\n  \
--pg URL     a PostgreSQL the bench may create and drop a schema in, e.g.\n               \
postgresql://postgres:PW@127.0.0.1:5432/postgres (or $RECMAN_BENCH_PG_URL)\n  \
--amqp URL   a RabbitMQ vhost of its own, e.g. amqp://guest:guest@127.0.0.1:5672/bench\n               \
(or $RECMAN_BENCH_AMQP_URL): the engines declare recman.* there\n\
Writes the engines' and the worker's config, data dirs and output under --data-dir.\n\
The last line of output is key=value pairs for scripts.")]
pub struct Args {
    /// PostgreSQL URL, with its password (the bench's own database; never printed).
    #[arg(long, env = "RECMAN_BENCH_PG_URL", hide_env_values = true)]
    pub pg: String,
    /// RabbitMQ URL of a vhost for this bench alone.
    #[arg(long, env = "RECMAN_BENCH_AMQP_URL", hide_env_values = true)]
    pub amqp: String,
    /// Takeovers: kill -9 of the leader, each at a random moment.
    #[arg(long, default_value_t = 10)]
    pub takeovers: u32,
    /// Requests published per second during the run.
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    /// Targets the requests go to (round robin).
    #[arg(long, default_value_t = 4)]
    pub targets: u32,
}

/// `postgresql://user:pw@host…` → (`postgresql://user@host…`, `pw`).
fn split_password(url: &str) -> anyhow::Result<(String, String)> {
    let cfg: tokio_postgres::Config = url.parse().context("--pg does not parse")?;
    let pw = cfg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("--pg must be a URL like postgresql://user:password@127.0.0.1:5432/postgres");
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return Ok((url.to_string(), pw));
    };
    let user = userinfo.split(':').next().unwrap_or("");
    Ok((format!("{scheme}://{user}@{host}"), pw))
}

/// A child `recman` whose output goes to a file; SIGKILLed on drop.
struct Proc {
    child: Child,
    out: PathBuf,
}

impl Proc {
    fn spawn(
        exe: &Path,
        dir: &Path,
        name: &str,
        data: &Path,
        config: &Path,
        args: &[&str],
    ) -> anyhow::Result<Proc> {
        let out = dir.join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&out)?;
        let child = Command::new(exe)
            .arg("--data-dir")
            .arg(data)
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RECMAN_STATE_DIR", dir.join("host-state"))
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        Ok(Proc { child, out })
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn running(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.child.try_wait()? {
            bail!("{} exited ({s}):\n{}", self.out.display(), tail(&self.output()));
        }
        Ok(())
    }

    async fn wait_for(&mut self, text: &str, within: Duration) -> anyhow::Result<()> {
        let t0 = Instant::now();
        while !self.output().contains(text) {
            self.running()?;
            if t0.elapsed() > within {
                bail!("{} did not say {text:?} within {within:?}", self.out.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Whether `/readyz` on `port` answers 200.
fn ready(port: u16) -> bool {
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = c.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = String::new();
    let _ = c.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The raw figures of the database: `SELECT 1` round trip p50 (µs) and
/// connect + `pg_try_advisory_lock` + unlock p50 (ms).
async fn pg_baseline(url: &str) -> anyhow::Result<(u64, f64)> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to --pg")?;
    tokio::spawn(conn);
    let mut rt = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        c.query_one("SELECT 1", &[]).await?;
        rt.push(t.elapsed().as_micros() as u64);
    }
    rt.sort_unstable();
    let mut lock = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let (l, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let h = tokio::spawn(conn);
        let key = 0x7265_636d_616e_0000_i64 + i;
        let got: bool = l
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await?
            .get(0);
        anyhow::ensure!(got, "the baseline's advisory lock is taken");
        lock.push(t.elapsed().as_micros() as u64);
        l.execute("SELECT pg_advisory_unlock($1)", &[&key]).await?;
        drop(l);
        let _ = h.await;
    }
    lock.sort_unstable();
    Ok((percentile(&rt, 0.5), percentile(&lock, 0.5) as f64 / 1000.0))
}

/// What the log says about the requests: per request id its jobs, the jobs
/// that ended, snapshots recorded per (job, attempt).
struct Outcome {
    jobs_of: HashMap<String, Vec<String>>,
    ended: std::collections::HashSet<String>,
    snapshots: HashMap<(String, u32), usize>,
}

fn read_outcome(place: &PgPlace) -> anyhow::Result<Outcome> {
    use recman_events::model::{EventBody, Stage};
    let log = recman_events::log::open_postgres_for_reading(place)?;
    let mut o = Outcome {
        jobs_of: HashMap::new(),
        ended: Default::default(),
        snapshots: HashMap::new(),
    };
    let mut from = 1;
    loop {
        let batch = log.read(from, 4096)?;
        let Some(last) = batch.last() else { break };
        from = last.seq + 1;
        for e in batch {
            let job = e.event.job.to_string();
            match &e.event.body {
                EventBody::Requested { request_id, .. } => {
                    o.jobs_of.entry(request_id.to_string()).or_default().push(job)
                }
                EventBody::StepSucceeded {
                    stage: Stage::Snapshot,
                    attempt,
                    ..
                } => *o.snapshots.entry((job, *attempt)).or_default() += 1,
                EventBody::Completed { .. } | EventBody::Failed { .. } | EventBody::Cancelled => {
                    o.ended.insert(job);
                }
                _ => {}
            }
        }
    }
    Ok(o)
}

pub async fn run(data_dir: &Path, a: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.takeovers > 0, "--takeovers must be at least 1");
    anyhow::ensure!(
        a.rate > 0 && a.targets > 0,
        "--rate and --targets must be at least 1"
    );
    let dir = data_dir.to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(&dir)?;
    let schema = format!("bench_failover_{}", std::process::id());
    let place = PgPlace::new(&a.pg, &schema)?;
    eprintln!(
        "bench failover: {} takeovers, {} requests/s over {} targets; files in {}",
        a.takeovers,
        a.rate,
        a.targets,
        dir.display()
    );
    eprintln!("  measuring the baseline: PostgreSQL round trip and advisory-lock acquire");
    let (pg_rt_us, pg_lock_ms) = pg_baseline(&a.pg).await?;
    eprintln!("  SELECT 1 p50 {pg_rt_us} µs; connect + lock p50 {pg_lock_ms:.2} ms");

    let (url, pw) = split_password(&a.pg)?;
    let pw_file = dir.join("pg-password");
    std::fs::write(&pw_file, format!("{pw}\n"))?;
    let pool = format!("bench-{}", std::process::id());
    let created = dir.join("created");
    let mut cfg = format!(
        "[log]\npostgres = \"{url}\"\npassword_file = \"{}\"\nschema = \"{schema}\"\n\n[engine]\nfreeze_limit = \"10s\"\n",
        pw_file.display()
    );
    for i in 0..a.targets {
        cfg.push_str(&format!(
            "[[target]]\nid = \"t{i}\"\npool = \"{pool}\"\nretries = 5\n[target.writer]\ntype = \"exec\"\n\
             freeze = [\"/bin/true\"]\nthaw = [\"/bin/true\"]\n[target.provider]\ntype = \"exec\"\n\
             create = [\"/bin/sh\", \"-c\", \"echo {{name}} >> {}\"]\n",
            created.display()
        ));
    }
    let config = dir.join("recman.toml");
    std::fs::write(&config, cfg)?;

    let exe = std::env::current_exe().context("finding the recman executable")?;
    let ports = [free_port()?, free_port()?];
    let engine_args = |i: usize| -> Vec<String> {
        vec![
            "engine".into(),
            "--amqp".into(),
            a.amqp.clone(),
            "--amqp-reconnect-timeout".into(),
            "5".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", ports[i]),
        ]
    };
    let mut starts = [0u32; 2];
    let start_engine = |i: usize, starts: &mut [u32; 2]| -> anyhow::Result<Proc> {
        starts[i] += 1;
        let args = engine_args(i);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::spawn(
            &exe,
            &dir,
            &format!("engine{i}-{}", starts[i]),
            &dir.join(format!("engine{i}")),
            &config,
            &args,
        )
    };
    let mut engines = [start_engine(0, &mut starts)?, start_engine(1, &mut starts)?];
    // The first to say it leads is the leader.
    let t0 = Instant::now();
    let mut leader = loop {
        if let Some(i) = (0..2).find(|&i| ready(ports[i])) {
            break i;
        }
        engines[0].running()?;
        engines[1].running()?;
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "no engine became ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    engines[1 - leader]
        .wait_for("standby:", Duration::from_secs(30))
        .await?;
    let mut worker = Proc::spawn(
        &exe,
        &dir,
        "worker",
        &dir.join("worker"),
        &config,
        &[
            "worker",
            "--amqp",
            &a.amqp,
            "--pool",
            &pool,
            "--id",
            &format!("{pool}-w"),
            "--amqp-reconnect-timeout",
            "5",
        ],
    )?;
    worker.wait_for("Ctrl-C to stop", Duration::from_secs(30)).await?;

    // The stream of requests, each confirmed by the broker (accepted).
    let bus = recman_amqp::AmqpBus::connect(
        &a.amqp,
        recman_amqp::AmqpOptions {
            connection_name: format!("recman-bench-failover-{}", std::process::id()),
            ..Default::default()
        },
    )
    .await
    .context("connecting to --amqp")?;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let every = Duration::from_secs(1) / a.rate;
    let targets = a.targets;
    let publisher = tokio::spawn(async move {
        let mut sent = Vec::new();
        let mut tick = tokio::time::interval(every);
        for i in 0u64.. {
            tokio::select! {
                _ = &mut stop_rx => break,
                _ = tick.tick() => {}
            }
            let id = format!("bench-{i}");
            let body = serde_json::json!({"schema_version": 1, "request_id": id, "targets": [format!("t{}", i % u64::from(targets))]});
            let m = Message::new(msg_type::REQUEST, format!("req/{id}"), serde_json::to_vec(&body)?);
            bus.publish(Address::Requests, m).await?;
            sent.push(id);
        }
        anyhow::Ok(sent)
    });

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    let mut takeover_ms = Vec::new();
    for k in 0..a.takeovers {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(1000 + seed % 2000)).await;
        engines[leader].running()?;
        let _ = engines[leader].child.kill();
        let _ = engines[leader].child.wait();
        let killed = Instant::now();
        let next = 1 - leader;
        while !ready(ports[next]) {
            engines[next].running()?;
            anyhow::ensure!(
                killed.elapsed() < Duration::from_secs(60),
                "the standby did not take over within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ms = killed.elapsed().as_secs_f64() * 1000.0;
        eprintln!("  takeover {}: {ms:.0} ms", k + 1);
        takeover_ms.push((ms * 1000.0) as u64);
        engines[leader] = start_engine(leader, &mut starts)?;
        engines[leader]
            .wait_for("standby:", Duration::from_secs(30))
            .await?;
        leader = next;
    }
    let _ = stop_tx.send(());
    let sent = publisher.await??;
    eprintln!(
        "  {} requests accepted; waiting until every one ended",
        sent.len()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let outcome = loop {
        let p = place.clone();
        let o = tokio::task::spawn_blocking(move || read_outcome(&p)).await??;
        let all = sent.iter().all(|id| {
            o.jobs_of
                .get(id)
                .is_some_and(|j| j.iter().any(|j| o.ended.contains(j)))
        });
        if all || Instant::now() > deadline {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    worker.stop();
    for e in engines.iter_mut() {
        e.stop();
    }

    let lost = sent
        .iter()
        .filter(|id| {
            !outcome
                .jobs_of
                .get(*id)
                .is_some_and(|j| j.iter().any(|j| outcome.ended.contains(j)))
        })
        .count();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for n in std::fs::read_to_string(&created).unwrap_or_default().lines() {
        *names.entry(n.to_string()).or_default() += 1;
    }
    let duplicated = outcome.jobs_of.values().filter(|j| j.len() > 1).count()
        + outcome.snapshots.values().filter(|n| **n > 1).count()
        + names.values().filter(|n| **n > 1).count();

    // Drop the bench's schema.
    if let Ok((c, conn)) = tokio_postgres::connect(&a.pg, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await;
    }

    takeover_ms.sort_unstable();
    let (p50, p99) = (
        percentile(&takeover_ms, 0.5) as f64 / 1000.0,
        percentile(&takeover_ms, 0.99) as f64 / 1000.0,
    );
    println!(
        "recman bench failover ({} takeovers by kill -9, {} requests)",
        a.takeovers,
        sent.len()
    );
    println!(
        "  takeover (kill -9 of the leader → the standby's /readyz 200): p50 {p50:.0} ms, p99 {p99:.0} ms"
    );
    println!(
        "  requests: {} accepted, {lost} lost, {duplicated} done twice; {} snapshots taken",
        sent.len(),
        names.len()
    );
    println!(
        "  baseline: PostgreSQL SELECT 1 p50 {pg_rt_us} µs; connect + advisory lock p50 {pg_lock_ms:.2} ms; \
         the standby asks every {:?}",
        crate::home::STANDBY_POLL
    );
    println!(
        "takeovers={} requests={} takeover_ms_p50={p50:.0} takeover_ms_p99={p99:.0} \
         pg_roundtrip_us_p50={pg_rt_us} pg_lock_ms_p50={pg_lock_ms:.2} lost={lost} duplicated={duplicated}",
        a.takeovers,
        sent.len()
    );
    Ok(if lost == 0 && duplicated == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
