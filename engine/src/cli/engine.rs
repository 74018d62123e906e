//! `recman engine --amqp URL`: the engine as its own process on RabbitMQ —
//! requests and reports from the broker, commands to the worker pools, every
//! event relayed to the events exchange (outbox with a durable cursor).

use std::process::ExitCode;

use anyhow::Context;
use recman_events::bus::Bus;

use crate::broker::AmqpArgs;
use crate::handle::{Drain, Engine, Relay};
use crate::home::Home;
use crate::home::Missing;
use crate::runtime::relay::RelayOptions;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
recman engine --amqp amqp://recman@mq1:5672/recman --amqp-password-file /etc/recman/amqp-password\n  \
RECMAN_AMQP_URL=amqp://recman@127.0.0.1/recman recman engine --config /etc/recman/recman.toml\n\n\
The engine declares the RabbitMQ topology (see deploy/README.md), consumes recman.requests and\n\
recman.reports, publishes commands to recman.commands and every event to recman.events.\n\
A request that does not parse or validate is dead-lettered to recman.dlq with the reason in\n\
the header x-recman-reason; the engine goes on. Stops on Ctrl-C or SIGTERM.")]
pub struct Args {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Do not relay events to the recman.events exchange.
    #[arg(long)]
    pub no_relay: bool,
    /// Events waiting at once above which the relay sends them as batches
    /// (one message of type `event-batch`, routing key `batch`, a JSON array);
    /// at or below it, one message per event. 0 = always batches.
    #[arg(long, value_name = "N", default_value_t = RelayOptions::default().batch_over)]
    pub relay_batch_over: usize,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let mut config = g.load_config(Missing::Fail)?;
    config.set_data_dir(&g.data_dir);
    // The engine alone runs no writer here: no program or freeze checks.
    g.check_log("engine")?;
    std::fs::create_dir_all(&g.data_dir).with_context(|| format!("creating {}", g.data_dir.display()))?;
    let bus = a
        .amqp
        .connect(
            Some(&config),
            format!("recman-engine-{}", std::process::id()),
            true,
        )
        .await?;
    let log = recman_events::log::open_detected(&g.data_dir, recman_events::Backend::Redb)?;
    // Before the engine: what it records from its start on is notified.
    let notifier = crate::notify::start(&config, log.clone())?;
    let builder = Engine::builder(&config)
        .log(log)
        .bus(bus as std::sync::Arc<dyn Bus>)
        .no_workers();
    let builder = if a.no_relay {
        builder.no_relay()
    } else {
        let mut relay = Relay::durable(&g.data_dir);
        relay.options.batch_over = a.relay_batch_over;
        relay.stop_within = std::time::Duration::from_secs(24 * 3600); // as long as it takes
        builder.relay(relay)
    };
    let mut engine = builder.start().await?;
    eprintln!(
        "recman engine: {} target(s), log {}, broker connected; Ctrl-C to stop",
        config.targets.len(),
        g.data_dir.display()
    );
    let result = tokio::select! {
        r = engine.stopped() => match r {
            Ok(()) => Err(anyhow::anyhow!("the broker connection closed")),
            Err(e) => Err(e),
        },
        _ = crate::signal::stop() => Ok(()),
    };
    let stopped = engine.shutdown(Drain::Skip).await;
    if let Some(n) = notifier {
        n.stop(crate::notify::STOP_GRACE).await;
    }
    if let Ok(s) = &stopped {
        if let Some(Err(e)) = &s.relay {
            eprintln!("error: {e}");
        }
    }
    result.and(stopped.map(|_| ExitCode::SUCCESS))
}
