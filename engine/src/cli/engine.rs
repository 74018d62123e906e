//! `recman engine --amqp URL`: the engine as its own process on RabbitMQ —
//! requests and reports from the broker, commands to the worker pools, every
//! event relayed to the events exchange (outbox with a durable cursor) — and,
//! with `--listen` (or `[api] listen`), the same HTTP API as `recman up`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use recman_events::bus::Bus;
use recman_events::EventLog;

use crate::api::instrument::{MeteredBus, Stats, TimedLog};
use crate::api::server::{Plan, Running};
use crate::broker::AmqpArgs;
use crate::handle::{Drain, Engine, Relay};
use crate::home::Home;
use crate::home::Missing;
use crate::runtime::relay::RelayOptions;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
recman engine --amqp amqp://recman@mq1:5672/recman --amqp-password-file /etc/recman/amqp-password\n  \
RECMAN_AMQP_URL=amqp://recman@127.0.0.1/recman recman engine --config /etc/recman/recman.toml\n  \
recman engine --amqp amqp://recman@mq1/recman --listen 127.0.0.1:7080   and the HTTP API\n\n\
The engine declares the RabbitMQ topology (see deploy/README.md), consumes recman.requests and\n\
recman.reports, publishes commands to recman.commands and every event to recman.events.\n\
recman.requests takes snapshot requests and cancels ({\"cancel\": \"JOB-ID\", \"reason\": \"…\"}).\n\
A request that does not parse or validate, or that the engine refuses (unknown target or job,\n\
job already ended), is dead-lettered to recman.dlq with the reason in the header\n\
x-recman-reason; the engine goes on.\n\n\
HTTP API: with --listen ADDR:PORT, or `[api] listen` in the config, the engine serves the same\n\
API as `recman up` (no API without either). A non-loopback address needs `[api] token_file`\n\
and TLS (`[api] tls_cert`, `tls_key`) or `insecure_http = true`.\n\
While it runs, DATA_DIR/server.json tells `recman jobs`, `job`, `targets`, `snapshots`, `events`\n\
and `cancel` on this host where it is (elsewhere: --server URL); it is removed at shutdown.\n\n\
With `[log] postgres`, a second engine waits as a standby and takes over when the leader dies\n\
or its lease expires; a leader that can no longer renew its lease, or finds itself fenced,\n\
steps down: it stops and exits 2 (its supervisor restarts it, as a standby).\n\n\
Stops on Ctrl-C or SIGTERM. Exit codes: 0 clean shutdown, 2 could not start or lost the\n\
broker (bad config, address in use, log owned by another process: the error names its API)\n\
or lost the leadership of the event log.")]
pub struct Args {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Serve the HTTP API on this address, e.g. 127.0.0.1:7080 (default:
    /// `[api] listen` of the config, else no API).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Do not relay events to the recman.events exchange.
    #[arg(long)]
    pub no_relay: bool,
    /// Events waiting at once above which the relay sends them as batches
    /// (one message of type `event-batch`, routing key `batch`, a JSON array);
    /// at or below it, one message per event. 0 = always batches.
    #[arg(long, value_name = "N", default_value_t = RelayOptions::default().batch_over)]
    pub relay_batch_over: usize,
}

/// Completes when the API's server fails; never without one.
async fn api_failed(api: &mut Option<Running>) -> anyhow::Error {
    match api {
        Some(a) => a.failed().await,
        None => std::future::pending().await,
    }
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config(Missing::Fail)?;
    // Checked before anything is opened: a refused address leaves no trace.
    let plan = a
        .listen
        .or(config.api.listen)
        .map(|l| Plan::new(&config, l))
        .transpose()?;
    // The engine alone runs no writer here: no program or freeze checks.
    // The log before the broker: a second engine on this data dir is refused
    // at once, with where the first one's API is; a second engine on a
    // PostgreSQL log waits here as a standby.
    let stats = Arc::new(Stats::default());
    let log: Arc<dyn EventLog> = Arc::new(TimedLog {
        inner: g.open_log(&config, "engine").await?,
        stats: stats.clone(),
    });
    std::fs::create_dir_all(&g.data_dir).with_context(|| format!("creating {}", g.data_dir.display()))?;
    let checkpoints = g.checkpoints(&config)?;
    let bound = match plan {
        Some(p) => Some(
            p.bind(&config, log.as_ref(), Some(checkpoints.store.as_ref()))
                .await?,
        ),
        None => None,
    };
    let bus = a
        .amqp
        .connect(
            Some(&config),
            format!("recman-engine-{}", std::process::id()),
            true,
        )
        .await?;
    let bus: Arc<dyn Bus> = Arc::new(MeteredBus {
        inner: bus,
        stats: stats.clone(),
    });
    // Before the engine: what it records from its start on is notified.
    let notifier = crate::notify::start(&config, log.clone())?;
    if let Some(n) = &notifier {
        let _ = stats.notify.set(n.metrics());
    }
    let builder = Engine::builder(&config)
        .log(log.clone())
        .checkpoints(Some(checkpoints))
        .bus(bus)
        .no_workers();
    let builder = if a.no_relay {
        builder.no_relay()
    } else {
        let mut relay = Relay::durable_for(&config, &g.data_dir)?;
        relay.options.batch_over = a.relay_batch_over;
        relay.stop_within = std::time::Duration::from_secs(24 * 3600); // as long as it takes
        builder.relay(relay)
    };
    let mut engine = builder.start().await?;
    let mut api = match bound {
        Some(b) => Some(b.start(engine.caller(), log.clone(), stats, &g.data_dir)?),
        None => None,
    };
    eprintln!(
        "recman engine: {} target(s), log {}, broker connected{}; Ctrl-C to stop",
        config.targets.len(),
        g.data_dir.display(),
        api.as_ref()
            .map(|a| format!(", API on {}", a.url))
            .unwrap_or_default()
    );
    let result = tokio::select! {
        r = engine.stopped() => match r {
            Ok(()) => Err(anyhow::anyhow!("the broker connection closed")),
            Err(e) => Err(e),
        },
        e = api_failed(&mut api) => Err(e),
        why = crate::home::leadership_lost(log.as_ref()) => {
            eprintln!("recman engine: {why}");
            Err(anyhow::anyhow!("lost the leadership of the event log: {why}"))
        }
        _ = crate::signal::stop() => Ok(()),
    };
    let stopped = engine.shutdown(Drain::Skip).await;
    let announced = match api {
        Some(a) => Some(a.stop().await),
        None => None,
    };
    if let Some(n) = notifier {
        n.stop(crate::notify::STOP_GRACE).await;
    }
    drop(log);
    if let Some(a) = announced {
        a.remove();
    }
    if let Ok(s) = &stopped {
        if let Some(Err(e)) = &s.relay {
            eprintln!("error: {e}");
        }
    }
    result.and(stopped.map(|_| ExitCode::SUCCESS))
}
