//! `recman engine --amqp URL`: the engine as its own process on RabbitMQ —
//! requests and reports from the broker, commands to the worker pools, every
//! event relayed to the events exchange (outbox with a durable cursor).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use recman_events::bus::Bus;
use recman_events::{log, Backend, EventLog};
use tokio::sync::{mpsc, watch};

use super::amqp_opts::{self, AmqpArgs};
use super::Global;
use crate::runtime;

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
    #[arg(long, value_name = "N", default_value_t = recman_amqp::relay::RelayOptions::default().batch_over)]
    pub relay_batch_over: usize,
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let mut config = amqp_opts::load_config(g)?;
    config.set_data_dir(&g.data_dir);
    std::fs::create_dir_all(&g.data_dir).with_context(|| format!("creating {}", g.data_dir.display()))?;
    let log: Arc<dyn EventLog> = log::open_detected(&g.data_dir, Backend::Redb)?;
    let bus = a
        .amqp
        .connect(
            Some(&config),
            format!("recman-engine-{}", std::process::id()),
            true,
        )
        .await?;
    let bus: Arc<dyn Bus> = bus;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let relay = (!a.no_relay).then(|| {
        let opts = recman_amqp::relay::RelayOptions {
            batch_over: a.relay_batch_over,
            ..Default::default()
        };
        tokio::spawn(recman_amqp::relay::run_with(
            log.clone(),
            bus.clone(),
            recman_amqp::relay::Cursor::in_data_dir(&g.data_dir),
            opts,
            stopped(stop_rx.clone()),
        ))
    });
    // Nothing calls in from this process; the sender stays open until the end.
    let (_calls, calls_rx) = mpsc::channel(1);
    let cfg = runtime::core_config(&config, recman_events::clock::now_ms());
    eprintln!(
        "recman engine: {} target(s), log {}, broker connected; Ctrl-C to stop",
        config.targets.len(),
        g.data_dir.display()
    );
    let engine = runtime::run(cfg, log.clone(), bus.clone(), calls_rx, stopped(stop_rx.clone()));
    tokio::pin!(engine);
    let result = tokio::select! {
        r = &mut engine => match r {
            Ok(()) => Err(anyhow::anyhow!("the broker connection closed")),
            Err(e) => Err(e),
        },
        _ = amqp_opts::stop_signal() => {
            let _ = stop_tx.send(true);
            engine.await
        }
    };
    let _ = stop_tx.send(true);
    if let Some(r) = relay {
        match r.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("error: events relay: {e}"),
            Err(e) => eprintln!("error: events relay: {e}"),
        }
    }
    result.map(|()| ExitCode::SUCCESS)
}
