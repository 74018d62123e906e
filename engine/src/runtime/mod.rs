//! The engine runtime: drives the sans-IO core with the event log, a bus and timers.
//!
//! Order of work for every input: decide (the core), append the events and
//! wait until they are durable, then publish the commands they cause, then
//! acknowledge the input (bus delivery or caller). A failed append stops the
//! engine: its in-memory state may be ahead of the log, and a restart replays.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use recman_events::bus::{msg_type, Address, Bus, Delivery, Message};
use recman_events::wire::{self, Report};
use recman_events::{EventLog, JobId, SnapshotRequest};
use tokio::sync::{mpsc, oneshot};

use crate::core::{Core, CoreConfig, Destination, Input, Outgoing, Reply};

/// A call into a running engine from the same process (CLI, HTTP API).
pub enum Call {
    Submit {
        req: SnapshotRequest,
        origin: String,
        reply: oneshot::Sender<Reply>,
    },
    Cancel {
        job: JobId,
        reason: String,
        reply: oneshot::Sender<Reply>,
    },
}

/// Unix time in milliseconds: the only clock the engine reads.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Rebuilds the core from the whole log.
pub fn replay(cfg: CoreConfig, log: &dyn EventLog) -> anyhow::Result<Core> {
    let mut core = Core::new(cfg);
    let mut from = 1;
    loop {
        let batch = log.read(from, 4096).context("replaying the event log")?;
        let Some(last) = batch.last() else { break };
        from = last.seq + 1;
        for e in &batch {
            core.apply(&e.event);
        }
    }
    Ok(core)
}

fn to_message(out: &Outgoing) -> (Address, Message) {
    let to = match &out.to {
        Destination::Pool(p) => Address::Pool(p.clone()),
        Destination::Worker { worker, .. } => Address::Worker(worker.clone()),
    };
    let msg = Message::new(
        msg_type::COMMAND,
        out.command.message_id.clone(),
        wire::encode(&out.command),
    );
    (to, msg)
}

async fn publish(bus: &dyn Bus, cmds: &[Outgoing]) -> anyhow::Result<()> {
    if cmds.is_empty() {
        return Ok(());
    }
    bus.publish_batch(cmds.iter().map(to_message).collect())
        .await
        .context("publishing commands")
}

/// A settle that failed (the broker connection dropped and came back, so the
/// delivery tag is gone) is not fatal: the message comes again and the core
/// treats it as the duplicate it is.
fn settled(r: Result<(), recman_events::BusError>) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not settle a delivery; it will be redelivered and deduplicated");
    }
}

/// Runs the engine until `calls` is closed and `shutdown` resolves.
pub async fn run(
    cfg: CoreConfig,
    log: Arc<dyn EventLog>,
    bus: Arc<dyn Bus>,
    mut calls: mpsc::Receiver<Call>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut core = replay(cfg, log.as_ref())?;
    publish(bus.as_ref(), &core.recover_commands()).await?;
    let mut requests = bus.consume(Address::Requests, 256).await?;
    let mut reports = bus.consume(Address::Reports, 1024).await?;
    tokio::pin!(shutdown);
    loop {
        let wait = core
            .next_deadline()
            .map(|d| Duration::from_millis(d.saturating_sub(now_ms())))
            .unwrap_or(Duration::from_secs(3600));
        let (input, delivery, reply): (Input, Option<Delivery>, Option<oneshot::Sender<Reply>>) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(wait) => (Input::TimerFired, None, None),
            call = calls.recv() => match call {
                Some(Call::Submit { req, origin, reply }) => {
                    (Input::Request { req, origin, new_job: JobId::new_v7() }, None, Some(reply))
                }
                Some(Call::Cancel { job, reason, reply }) => (Input::Cancel { job, reason }, None, Some(reply)),
                None => return Ok(()),
            },
            d = requests.recv() => {
                let Some(d) = d else { return Ok(()) };
                match SnapshotRequest::from_json(&d.message.body) {
                    Ok(req) => (Input::Request { req, origin: "bus".into(), new_job: JobId::new_v7() }, Some(d), None),
                    Err(e) => { settled(d.reject(&e.to_string()).await); continue; }
                }
            }
            d = reports.recv() => {
                let Some(d) = d else { return Ok(()) };
                match wire::decode::<Report>(&d.message.body) {
                    Ok(r) => (Input::Report(r), Some(d), None),
                    Err(e) => { settled(d.reject(&e.to_string()).await); continue; }
                }
            }
        };
        let step = core.handle(input, now_ms());
        if !step.events.is_empty() {
            log.append(step.events)
                .await
                .context("appending to the event log")?;
        }
        publish(bus.as_ref(), &step.commands).await?;
        if let Some(d) = delivery {
            if let Reply::Rejected { code, message } = &step.reply {
                settled(d.reject(&format!("{code}: {message}")).await);
            } else {
                settled(d.ack().await);
            }
        }
        if let Some(r) = reply {
            let _ = r.send(step.reply);
        }
    }
}

/// The core's view of a worker config: pools, freeze limits, retries, retention.
pub fn core_config(config: &recman_workers::config::Config, seed: u64) -> CoreConfig {
    let mut cfg = CoreConfig {
        seed,
        ..CoreConfig::default()
    };
    for t in &config.targets {
        let mut p = crate::core::TargetPolicy::new(t.pool.clone(), t.provider_pool.clone());
        p.freeze_limit_ms = t.freeze_limit.as_millis() as u64;
        p.thaw_margin_ms = p.freeze_limit_ms / 5;
        p.max_retries = t.retries;
        p.keep_last = t.keep_last;
        cfg.targets.insert(t.id.clone(), p);
    }
    cfg
}
