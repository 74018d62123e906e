//! `recman up`: the engine, the local workers of the config and the HTTP API,
//! running until SIGINT/SIGTERM, then a clean shutdown (no new requests,
//! frozen targets thawed, log closed, discovery file removed).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use recman_config::DEFAULT_LISTEN;
use recman_events::bus::{Address, Bus, MemoryBus};
use recman_events::{EventLog, WorkerId};
use recman_workers::runtime::Worker;

use crate::api;
use crate::api::instrument::{MeteredBus, Stats, TimedLog};
use crate::broker::AmqpArgs;
use crate::handle::{Drain, Engine, Relay};
use crate::home::Home;
use crate::home::Missing;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The API listens on 127.0.0.1:7080 unless --listen or `[api] listen` in the\n\
config says otherwise. A non-loopback address needs `[api] token_file = \"/path/to/token\"`\n\
(clients then send `Authorization: Bearer <token>`) and TLS: `[api] tls_cert` and `tls_key`\n\
(PEM; read again on SIGHUP), or `insecure_http = true` knowingly. While it runs, DATA_DIR/server.json tells\n\
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

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config(Missing::ServeDemo)?;
    let listen = match a.listen.or(config.api.listen) {
        Some(l) => l,
        None => DEFAULT_LISTEN.parse().context("default listen address")?,
    };
    let plan = api::server::Plan::new(&config, listen)?;
    // The broker when one is named (flag, `[amqp] url` or RECMAN_AMQP_URL), else in-process.
    let amqp_named = a.amqp.named(&config);
    let served = served_pools(&config, amqp_named);
    crate::home::check_host(&config, Some(&served), Some(&g.data_dir))?;
    let stats = Arc::new(Stats::default());
    let log: Arc<dyn EventLog> = Arc::new(TimedLog {
        inner: g.open_log(&config, "up").await?,
        stats: stats.clone(),
    });
    let checkpoints = g.checkpoints(&config)?;
    let bound = plan
        .bind(&config, log.as_ref(), Some(checkpoints.store.as_ref()))
        .await?;

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
        Relay::durable_for(&config, &g.data_dir)?
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
        .checkpoints(Some(checkpoints))
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

    let mut api = bound.start(engine.caller(), log.clone(), stats, &g.data_dir)?;
    let url = api.url.clone();
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
        e = api.failed() => failure = Some(e),
        why = crate::home::leadership_lost(log.as_ref()) => {
            eprintln!("recman up: {why}");
            failure = Some(anyhow::anyhow!("lost the leadership of the event log: {why}"));
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
    let announced = api.stop().await;
    dl_task.abort();
    if let Some(n) = notifier {
        n.stop(crate::notify::STOP_GRACE).await;
    }
    if let Some(m) = &memory {
        m.close();
    }
    drop(log);
    announced.remove();
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
