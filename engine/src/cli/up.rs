//! `recman up`: the engine, the local workers of the config and the HTTP API,
//! running until SIGINT/SIGTERM, then a clean shutdown (no new requests,
//! frozen targets thawed, log closed, discovery file removed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use recman_events::bus::{Address, Bus, MemoryBus};
use recman_events::{log, Backend, EventLog, WorkerId};
use recman_workers::config::{Config, DEFAULT_LISTEN};
use recman_workers::runtime::Worker;
use tokio::sync::{mpsc, watch};

use super::Global;
use crate::api::instrument::{MeteredBus, Stats, TimedLog};
use crate::api::{self, client::read_token, discovery, Shared};
use crate::runtime;
use crate::view::{Until, View};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The API listens on 127.0.0.1:7080 unless --listen or `[api] listen` in the\n\
config says otherwise. A non-loopback address needs `[api] token_file = \"/path/to/token\"`;\n\
clients then send `Authorization: Bearer <token>`. While it runs, DATA_DIR/server.json tells\n\
the other commands (jobs, job, targets, snapshots, cancel, replay, snapshot) where it is.\n\
Without a config, `up` serves the demo target (see `recman snapshot demo`).\n\n\
Stop it with Ctrl-C or SIGTERM: it stops taking requests, waits until every frozen target is\n\
thawed, stops the workers (which thaw anything still frozen) and closes the log.\n\n\
Exit codes: 0 clean shutdown, 1 a target may have stayed frozen past the shutdown wait,\n\
2 could not start (bad config, address in use, log owned by another process)."
)]
pub struct Args {
    /// Run over RabbitMQ instead of the in-process bus (see `recman engine --help`).
    #[command(flatten)]
    pub amqp: super::amqp_opts::AmqpArgs,
    /// Address of the HTTP API, e.g. 127.0.0.1:7080.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Longest wait at shutdown for frozen targets to be thawed (default: the
    /// longest freeze limit of the config plus 5 s).
    #[arg(long, value_name = "DURATION", value_parser = recman_workers::config::parse_duration)]
    pub drain_timeout: Option<Duration>,
}

fn load_config(g: &Global) -> anyhow::Result<Config> {
    if let Some(p) = &g.config {
        return Ok(Config::load(p)?);
    }
    let default = g.data_dir.join("recman.toml");
    if default.exists() {
        return Ok(Config::load(&default)?);
    }
    eprintln!(
        "no config ({} does not exist): serving the demo target",
        default.display()
    );
    super::demo::config(&g.data_dir)
}

async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn until_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let config = load_config(g)?;
    let listen = match a.listen.or(config.api.listen) {
        Some(l) => l,
        None => DEFAULT_LISTEN.parse().context("default listen address")?,
    };
    let token = config.api.token_file.as_deref().map(read_token).transpose()?;
    if !listen.ip().is_loopback() && token.is_none() {
        bail!(
            "refusing to listen on {listen}: it is not a loopback address and no bearer token is set; \
             write a token to a file and name it in the config (`[api] token_file = \"/etc/recman/token\"`), \
             or listen on 127.0.0.1"
        );
    }
    let stats = Arc::new(Stats::default());
    let log: Arc<dyn EventLog> = Arc::new(TimedLog {
        inner: log::open_detected(&g.data_dir, Backend::Redb)?,
        stats: stats.clone(),
    });
    let retention: BTreeMap<_, _> = config
        .targets
        .iter()
        .map(|t| (t.id.clone(), t.keep_last))
        .collect();
    let view = View::new(retention).build(log.as_ref(), Until::End)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (in use? try --listen 127.0.0.1:PORT)"))?;
    let local = listener.local_addr()?;

    // The broker when one is named (flag, `[amqp] url` or RECMAN_AMQP_URL), else in-process.
    let amqp_named = a.amqp.url.is_some()
        || config.amqp.url.is_some()
        || std::env::var_os("RECMAN_AMQP_URL").is_some_and(|v| !v.is_empty());
    let memory = (!amqp_named).then(|| Arc::new(MemoryBus::new()));
    let inner: Arc<dyn Bus> = match &memory {
        Some(m) => m.clone(),
        None => {
            a.amqp
                .connect(Some(&config), format!("recman-up-{}", std::process::id()), true)
                .await?
        }
    };
    let bus: Arc<dyn Bus> = Arc::new(MeteredBus {
        inner,
        stats: stats.clone(),
    });
    let (engine_stop, engine_stop_rx) = watch::channel(false);
    let (worker_stop, worker_stop_rx) = watch::channel(false);
    let (stopping_tx, stopping) = watch::channel(false);
    let worker = Worker::from_config(WorkerId::from(format!("local-{}", std::process::id())), &config);
    let worker_task = tokio::spawn(worker.run(bus.clone(), until_true(worker_stop_rx)));
    let (calls, calls_rx) = mpsc::channel(256);
    let mut engine_task = tokio::spawn(runtime::run(
        runtime::core_config(&config, runtime::now_ms()),
        log.clone(),
        bus.clone(),
        calls_rx,
        until_true(engine_stop_rx),
    ));
    // In-process dead letters are counted, logged and dropped; a broker's
    // dead-letter queue is left for operators (recman.dlq).
    let dl_task = if amqp_named {
        tokio::spawn(async {})
    } else {
        let mut dead = bus.consume(Address::DeadLetters, 0).await?;
        let dl_stats = stats.clone();
        tokio::spawn(async move {
            while let Some(d) = dead.recv().await {
                dl_stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(reason = d.message.header(recman_events::bus::REASON_HEADER).unwrap_or("?"), id = %d.message.message_id, "dead letter");
                let _ = d.ack().await;
            }
        })
    };
    // Over a broker, every event also goes out to the events exchange (outbox);
    // it is stopped after the engine, so it relays everything the engine wrote.
    let (relay_stop, relay_stop_rx) = watch::channel(false);
    let relay = amqp_named.then(|| {
        tokio::spawn(recman_amqp::relay::run(
            log.clone(),
            bus.clone(),
            recman_amqp::relay::Cursor::in_data_dir(&g.data_dir),
            until_true(relay_stop_rx),
        ))
    });

    let seq0 = view.last_seq;
    let shared = Arc::new(Shared {
        log: log.clone(),
        view: RwLock::new(view),
        seen: watch::channel(seq0).0,
        calls,
        ready: AtomicBool::new(false),
        accepting: AtomicBool::new(true),
        token,
        stats,
        stopping,
    });
    let follower = tokio::spawn(api::follow(shared.clone()));
    let readiness = tokio::spawn(api::wait_ready(shared.clone()));
    let http_stop = until_true(stopping_tx.subscribe());
    let app = api::router(shared.clone());
    let limits = api::serve::Limits {
        header_timeout: config
            .api
            .header_timeout
            .unwrap_or(api::serve::DEFAULT_HEADER_TIMEOUT),
        max_connections: config
            .api
            .max_connections
            .map_or(api::serve::DEFAULT_MAX_CONNECTIONS, |n| n as usize),
    };
    let mut http = tokio::spawn(api::serve::serve(listener, app, limits, http_stop));

    let url = format!("http://{local}");
    let pid = std::process::id();
    discovery::write(
        &g.data_dir,
        &discovery::Discovery {
            url: url.clone(),
            pid,
            token_required: shared.token.is_some(),
            started_at_ms: runtime::now_ms(),
        },
    )
    .with_context(|| format!("writing {}", discovery::path(&g.data_dir).display()))?;
    println!(
        "recman up: API on {url} ({} target{}, data dir {}); Ctrl-C to stop",
        config.targets.len(),
        if config.targets.len() == 1 { "" } else { "s" },
        g.data_dir.display()
    );

    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        _ = signalled() => {}
        r = &mut engine_task => {
            failure = Some(match r {
                Ok(Ok(())) => anyhow::anyhow!("the engine stopped unexpectedly"),
                Ok(Err(e)) => e.context("the engine stopped"),
                Err(e) => anyhow::anyhow!("the engine task failed: {e}"),
            });
        }
        r = &mut http => {
            failure = Some(anyhow::anyhow!("the HTTP server stopped: {:?}", r));
        }
    }

    // 1. No new requests; 2. let in-flight freezes be thawed; 3. stop everything.
    shared.accepting.store(false, Ordering::SeqCst);
    let mut code = ExitCode::SUCCESS;
    if failure.is_none() {
        let limit = a.drain_timeout.unwrap_or_else(|| {
            config
                .targets
                .iter()
                .map(|t| t.freeze_limit)
                .max()
                .unwrap_or_default()
                + Duration::from_secs(5)
        });
        println!(
            "shutting down: no new requests; waiting for frozen targets to be thawed (at most {limit:?})"
        );
        if !drain(&shared, limit).await {
            eprintln!("warning: targets still frozen after {limit:?}; the worker thaws them as it stops");
            code = ExitCode::from(1);
        }
    }
    let _ = engine_stop.send(true);
    let _ = stopping_tx.send(true);
    if !engine_task.is_finished() {
        let _ = engine_task.await;
    }
    let _ = worker_stop.send(true);
    let _ = worker_task.await;
    if !http.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    }
    follower.abort();
    readiness.abort();
    dl_task.abort();
    let _ = relay_stop.send(true);
    if let Some(r) = relay {
        match tokio::time::timeout(Duration::from_secs(10), r).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("error: events relay: {e}"),
            Ok(Err(e)) => eprintln!("error: events relay: {e}"),
            Err(_) => eprintln!("warning: the events relay did not stop in 10 s"),
        }
    }
    if let Some(m) = &memory {
        m.close();
    }
    let last = log.last_seq();
    drop(shared);
    drop(log);
    discovery::remove(&g.data_dir, pid);
    if let Some(e) = failure {
        return Err(e);
    }
    println!("stopped: event log closed at seq {last}");
    Ok(code)
}

/// Waits until no job may hold a frozen target; false after `limit`.
async fn drain(shared: &Shared, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut seen = shared.seen.subscribe();
    loop {
        shared.synced().await;
        let frozen = shared.view.read().map(|v| v.any_frozen()).unwrap_or(false);
        if !frozen {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), seen.changed()).await;
    }
}
