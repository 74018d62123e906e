//! `recman up`: the engine, the local workers of the config and the HTTP API,
//! running until SIGINT/SIGTERM, then a clean shutdown (no new requests,
//! frozen targets thawed, log closed, discovery file removed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context};
use recman_config::DEFAULT_LISTEN;
use recman_events::bus::{Address, Bus, MemoryBus};
use recman_events::{log, Backend, EventLog, WorkerId};
use recman_workers::runtime::Worker;
use tokio::sync::watch;

use crate::api::instrument::{MeteredBus, Stats, TimedLog};
use crate::api::{self, discovery, Shared};
use crate::broker::AmqpArgs;
use crate::client::read_token;
use crate::handle::{Drain, Engine, Relay};
use crate::home::Home;
use crate::home::Missing;
use crate::view::{Until, View};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The API listens on 127.0.0.1:7080 unless --listen or `[api] listen` in the\n\
config says otherwise. A non-loopback address needs `[api] token_file = \"/path/to/token\"`;\n\
clients then send `Authorization: Bearer <token>`. While it runs, DATA_DIR/server.json tells\n\
the other commands (jobs, job, targets, snapshots, cancel, replay, snapshot) where it is.\n\
Without a config, `up` serves the demo target (see `recman snapshot demo`).\n\n\
Its own workers run the steps of every pool of the config when the bus is in-process. Over\n\
RabbitMQ (--amqp, `[amqp] url`) they serve only the pools named in `[worker] pools` (none\n\
without it): workers on the application hosts run the steps.\n\n\
Stop it with Ctrl-C or SIGTERM: it stops taking requests, waits until every frozen target is\n\
thawed (at most --drain-timeout), stops the workers (steps still running get 2 s more and are\n\
then abandoned; anything still frozen is thawed) and closes the log.\n\n\
Exit codes: 0 clean shutdown, 1 a target may have stayed frozen past the shutdown wait,\n\
2 could not start (bad config, address in use, log owned by another process)."
)]
pub struct Args {
    /// Run over RabbitMQ instead of the in-process bus (see `recman engine --help`).
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Address of the HTTP API, e.g. 127.0.0.1:7080.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Longest wait at shutdown for frozen targets to be thawed (default: the
    /// longest freeze limit of the config plus 5 s).
    #[arg(long, value_name = "DURATION", value_parser = recman_config::parse_bounded_duration)]
    pub drain_timeout: Option<Duration>,
}

/// The pools `up`'s own workers serve. In-process: `[worker] pools`, else
/// every pool of the config (nothing else could run the steps). Over a
/// broker, workers of other hosts serve the pools, so only the pools named in
/// `[worker] pools` (none without it): an engine host must never run
/// stand-in steps for a target whose writer lives on another host.
fn served_pools(config: &recman_config::Config, amqp: bool) -> Vec<recman_events::PoolName> {
    match crate::home::local_pools(config) {
        Some(named) => named,
        None if amqp => Vec::new(),
        None => config.pools(),
    }
}

async fn until_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config(Missing::ServeDemo)?;
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
    // The broker when one is named (flag, `[amqp] url` or RECMAN_AMQP_URL), else in-process.
    let amqp_named = a.amqp.named(&config);
    let served = served_pools(&config, amqp_named);
    crate::home::check_host(&config, Some(&served), Some(&g.data_dir))?;
    g.check_log("up")?;
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
    let policies = config
        .targets
        .iter()
        .map(|t| (t.id.clone(), crate::runtime::retention_policy(t)))
        .collect();
    let view = View::new(retention)
        .with_policies(policies)
        .with_schedules(config.schedules.clone())
        .build(log.as_ref(), Until::End)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (in use? try --listen 127.0.0.1:PORT)"))?;
    let local = listener.local_addr()?;

    let memory = (!amqp_named).then(MemoryBus::new);
    let inner: Arc<dyn Bus> = match &memory {
        Some(m) => Arc::new(m.clone()),
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
    // Over a broker, the relay's cursor is durable (outbox); in-process, it
    // starts at the log's end.
    let relay = if amqp_named {
        Relay::durable(&g.data_dir)
    } else {
        Relay::in_process()
    };
    // Over a broker, other worker processes may serve the same host pools:
    // the host's freeze state is where theirs is (/run/recman by default).
    let state_default = if amqp_named {
        std::path::PathBuf::from(recman_config::DEFAULT_STATE_DIR)
    } else {
        g.data_dir.join("worker-state")
    };
    if amqp_named {
        match served.as_slice() {
            [] => eprintln!(
                "recman up: running no steps here (over a broker, local workers serve only the pools named in `[worker] pools`)"
            ),
            p => eprintln!(
                "recman up: local workers serve {}",
                p.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    let worker = Worker::new(
        WorkerId::from(format!("local-{}", std::process::id())),
        served,
        &config,
    )
    .with_state_dir(super::worker::state_dir(None, &config, state_default));
    // The preflight, as warnings, beside the start-up (a server that does
    // not answer must not delay it): `up` starts whatever it finds;
    // `recman check` fails on the same findings.
    let (pre_cfg, pre_dir) = (config.clone(), g.data_dir.clone());
    tokio::spawn(async move {
        match crate::preflight::run(&pre_cfg, &pre_dir, &[]).await {
            Ok(reports) => crate::preflight::log(&reports),
            Err(e) => tracing::warn!("preflight: {e:#}"),
        }
    });
    // Before the engine: what it records from its start on is notified.
    let notifier = crate::notify::start(&config, log.clone())?;
    if let Some(n) = &notifier {
        let _ = stats.notify.set(n.metrics());
    }
    let mut engine = Engine::builder(&config)
        .log(log.clone())
        .bus(bus.clone())
        .relay(relay)
        .worker(worker)
        .start()
        .await?;
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

    let (stopping_tx, stopping) = watch::channel(false);
    let seq0 = view.last_seq;
    let shared = Arc::new(Shared {
        log: log.clone(),
        view: RwLock::new(view),
        seen: watch::channel(seq0).0,
        engine: engine.caller(),
        ready: AtomicBool::new(false),
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
            started_at_ms: recman_events::clock::now_ms(),
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
        _ = crate::signal::stop() => {}
        r = engine.stopped() => {
            failure = Some(match r {
                Ok(()) => anyhow::anyhow!("the engine stopped unexpectedly"),
                Err(e) => e.context("the engine stopped"),
            });
        }
        r = &mut http => {
            failure = Some(anyhow::anyhow!("the HTTP server stopped: {:?}", r));
        }
    }

    // No new requests; let in-flight freezes be thawed; stop everything.
    let mut code = ExitCode::SUCCESS;
    let limit = a.drain_timeout.unwrap_or_else(|| engine.drain_within());
    let drain = if failure.is_none() {
        println!(
            "shutting down: no new requests; waiting for frozen targets to be thawed (at most {limit:?})"
        );
        Drain::Within(limit)
    } else {
        Drain::Skip
    };
    let stopped = engine.shutdown(drain).await;
    let _ = stopping_tx.send(true);
    if !http.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    }
    follower.abort();
    readiness.abort();
    dl_task.abort();
    if let Some(n) = notifier {
        n.stop(crate::notify::STOP_GRACE).await;
    }
    if let Some(m) = &memory {
        m.close();
    }
    drop(shared);
    drop(log);
    discovery::remove(&g.data_dir, pid);
    if let Some(e) = failure {
        return Err(e);
    }
    let stopped = stopped?;
    if !stopped.thawed {
        eprintln!("warning: targets still frozen after {limit:?}; the worker thaws them as it stops");
        code = ExitCode::from(1);
    }
    if let Some(Err(e)) = &stopped.relay {
        eprintln!("error: {e}");
    }
    println!("stopped: event log closed at seq {}", stopped.last_seq);
    Ok(code)
}
