//! The engine runtime: drives the sans-IO core with the event log, a bus and timers.
//!
//! Order of work for every input: decide (the core), append the events and
//! wait until they are durable, then publish the commands they cause, then
//! acknowledge the input (bus delivery or caller). A failed append stops the
//! engine: its in-memory state may be ahead of the log, and a restart replays.
//!
//! [`run`] is the loop; `relay` publishes the log to the events address. Both
//! are started, with the local workers, by the engine handle (`crate::handle`),
//! which is how everything else calls in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use recman_events::bus::{msg_type, Address, Bus, Consumer, Delivery, Message};
use recman_events::clock::now_ms;
use recman_events::wire::{self, Report};
use recman_events::{Event, EventLog, JobId, Request, SnapshotRequest};
use tokio::sync::{mpsc, oneshot};

use recman_core::{Core, CoreConfig, Destination, Input, Outgoing, Reply, State};

use crate::checkpoint::Checkpoints;

pub mod relay;
mod trace;

/// A question about the live core state: run on the state where the engine
/// is in its inputs; what it returns is run once everything decided before
/// it is durable (it typically sends the answer on a oneshot).
pub type Query = Box<dyn FnOnce(&State) -> Answer + Send>;
/// Delivers a [`Query`]'s answer.
pub type Answer = Box<dyn FnOnce() + Send>;

/// A call into a running engine from the same process (see `crate::handle`).
/// `by` is who it is for, recorded in the events it causes.
pub enum Call {
    Submit {
        req: SnapshotRequest,
        origin: String,
        /// The id the job gets if the request is new (chosen by the caller,
        /// so it can follow the job before it exists).
        new_job: JobId,
        by: String,
        reply: oneshot::Sender<Reply>,
    },
    Cancel {
        job: JobId,
        reason: String,
        by: String,
        reply: oneshot::Sender<Reply>,
    },
    /// Pause (`pause: Some(reason)`) or resume a schedule.
    Schedule {
        schedule: String,
        pause: Option<String>,
        by: String,
        reply: oneshot::Sender<Reply>,
    },
    /// An operator's prune: retention over these targets' catalog now.
    Prune {
        targets: Vec<recman_events::TargetId>,
        by: String,
        reply: oneshot::Sender<Reply>,
    },
    /// An operator's reconcile: the target's catalog against its provider's list.
    Reconcile {
        target: recman_events::TargetId,
        origin: String,
        by: String,
        reply: oneshot::Sender<Reply>,
    },
    /// An operator's verify of restore point `name` of `target`.
    Verify {
        target: recman_events::TargetId,
        name: String,
        origin: String,
        by: String,
        reply: oneshot::Sender<Reply>,
    },
    /// A recovery: restore, mount, unmount, clone, remove a clone.
    Recover {
        ask: recman_core::recovery::Ask,
        origin: String,
        /// As for `Submit`.
        new_job: JobId,
        by: String,
        reply: oneshot::Sender<Reply>,
    },
    /// A second admin approves recovery `job` (four-eyes); `by` is the approver.
    Approve {
        job: JobId,
        by: String,
        reply: oneshot::Sender<Reply>,
    },
    /// A look at the live core state (`recman replay` compares it with a
    /// rebuild from the log; shutdown waits until nothing is frozen). Also
    /// answers "has replay finished?".
    Inspect(Query),
}

/// What the core takes of a recovery request (validated on the wire).
pub fn ask(r: recman_events::RecoveryRequest) -> recman_core::recovery::Ask {
    recman_core::recovery::Ask {
        request_id: r.request_id,
        target: r.target,
        snapshot: r.snapshot,
        action: r.action,
        confirm: r.confirm,
    }
}

/// Rebuilds the core from the whole log.
pub fn replay(cfg: CoreConfig, log: &dyn EventLog) -> anyhow::Result<Core> {
    let mut core = Core::new(cfg);
    crate::checkpoint::replay_from(&mut core, log, 1)?;
    Ok(core)
}

/// The message of a command, with the `traceparent` of its `command.send`
/// span (or of the job's root when spans are off). A command for one
/// worker goes to its pool when the bus can tell that worker is gone (the
/// in-process bus: a local worker of an earlier process, e.g. the one that
/// made the mount a later `recman unmount` takes away); a broker cannot
/// tell, and the core's retries alternate with the pool where it matters.
fn to_message(bus: &dyn Bus, out: &Outgoing, span: Option<&tracing::Span>) -> (Address, Message) {
    let to = match &out.to {
        Destination::Pool(p) => Address::Pool(p.clone()),
        Destination::Worker { worker, fallback } => {
            let own = Address::Worker(worker.clone());
            if bus.consumed(&own) == Some(false) {
                Address::Pool(fallback.clone())
            } else {
                own
            }
        }
    };
    let msg = Message::new(
        msg_type::COMMAND,
        out.command.message_id.clone(),
        wire::encode(&out.command),
    );
    let tp = recman_trace::traceparent(span.unwrap_or(&tracing::Span::none()), out.command.job, None);
    (to, msg.with_header(recman_trace::TRACEPARENT, tp))
}

/// A new mount `--on` a name that is neither a pool of the config nor a
/// worker the bus sees connected now: refused (`unknown_place`), so the
/// mount does not go to the provider pool, on another host than asked. A
/// broker cannot tell (the mount then waits for that worker until its
/// step's deadline).
fn unknown_mount_worker(bus: &dyn Bus, core: &Core, input: &Input) -> Option<Reply> {
    let Input::Recover { ask, .. } = input else {
        return None;
    };
    let worker = recman_core::recovery::mount_worker(core.state(), core.config(), ask)?;
    if bus.consumed(&Address::Worker(worker.clone())) != Some(false) {
        return None;
    }
    let mut pools: Vec<&str> = core
        .config()
        .targets
        .values()
        .flat_map(|t| [t.provider_pool.as_str(), t.writer_pool.as_str()])
        .collect();
    pools.sort_unstable();
    pools.dedup();
    Some(Reply::Rejected {
        code: "unknown_place",
        message: format!(
            "--on {worker}: no worker pool of the config has this name ({}) and no worker with this id is \
             connected now (a worker's id is in its reports: `recman job ID` shows who ran each step)",
            pools.join(", ")
        ),
    })
}

async fn publish(bus: &dyn Bus, cmds: &[Outgoing]) -> anyhow::Result<()> {
    if cmds.is_empty() {
        return Ok(());
    }
    let spans = trace::send_spans(cmds);
    let msgs = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| to_message(bus, c, spans.get(i)))
        .collect();
    let sent = bus.publish_batch(msgs).await.context("publishing commands");
    drop(spans); // a send span lasts until the broker confirmed the batch
    sent
}

/// Inputs decided together and made durable with one append.
pub const MAX_BATCH: usize = 1024;
/// Decided batches waiting for (or in) their append. Bounds how far the core's
/// state may run ahead of the log.
const PIPELINE_DEPTH: usize = 4;

/// One input with what settles it once its events are durable, or a request
/// for the state (answered once everything decided before it is durable).
struct Inbound {
    input: Option<Input>,
    /// Who sent it (`Call`'s `by`, `amqp:<user_id>`); empty: the engine.
    by: String,
    delivery: Option<Delivery>,
    reply: Option<oneshot::Sender<Reply>>,
    inspect: Option<Query>,
}

/// A decided batch: events to append, then commands to publish, then settles.
struct Decided {
    events: Vec<Event>,
    commands: Vec<Outgoing>,
    settles: Vec<(Option<Delivery>, Option<oneshot::Sender<Reply>>, Reply)>,
    inspects: Vec<Answer>,
    /// What the commit task records as spans once the events are durable.
    notes: trace::Notes,
}

/// Decodes one bus queue into inputs; undecodable messages are dead-lettered
/// here with the reason, so the core never sees them.
async fn forward_bus<F>(mut c: Consumer, tx: mpsc::Sender<Inbound>, decode: F) -> anyhow::Result<()>
where
    F: Fn(&[u8]) -> Result<Input, String> + Send,
{
    while let Some(d) = c.recv().await {
        match decode(&d.message.body) {
            Ok(v) => {
                let inbound = Inbound {
                    input: Some(v),
                    by: amqp_user(&d.message),
                    delivery: Some(d),
                    reply: None,
                    inspect: None,
                };
                if tx.send(inbound).await.is_err() {
                    return Ok(()); // the engine stopped; the delivery is requeued
                }
            }
            Err(e) => {
                tracing::warn!(message_id = %d.message.message_id, reason = %e, "message dead-lettered");
                if let Err(err) = d.reject(&e).await {
                    // The delivery comes back (new channel) and is refused again.
                    tracing::warn!(error = %err, "could not dead-letter; it will be redelivered");
                }
            }
        }
    }
    Ok(())
}

async fn forward_calls(mut calls: mpsc::Receiver<Call>, tx: mpsc::Sender<Inbound>) -> anyhow::Result<()> {
    while let Some(call) = calls.recv().await {
        let (input, by, reply) = match call {
            Call::Submit {
                req,
                origin,
                new_job,
                by,
                reply,
            } => (Input::Request { req, origin, new_job }, by, reply),
            Call::Cancel {
                job,
                reason,
                by,
                reply,
            } => (Input::Cancel { job, reason }, by, reply),
            Call::Schedule {
                schedule,
                pause,
                by,
                reply,
            } => {
                let input = match pause {
                    Some(reason) => Input::PauseSchedule { schedule, reason },
                    None => Input::ResumeSchedule { schedule },
                };
                (input, by, reply)
            }
            Call::Prune { targets, by, reply } => (
                Input::Prune {
                    targets,
                    new_job: JobId::new_v7(),
                },
                by,
                reply,
            ),
            Call::Reconcile {
                target,
                origin,
                by,
                reply,
            } => (Input::Reconcile { target, origin }, by, reply),
            Call::Verify {
                target,
                name,
                origin,
                by,
                reply,
            } => (Input::Verify { target, name, origin }, by, reply),
            Call::Recover {
                ask,
                origin,
                new_job,
                by,
                reply,
            } => (Input::Recover { ask, origin, new_job }, by, reply),
            Call::Approve { job, by, reply } => (Input::Approve { job, by: by.clone() }, by, reply),
            Call::Inspect(query) => {
                let inbound = Inbound {
                    input: None,
                    by: String::new(),
                    delivery: None,
                    reply: None,
                    inspect: Some(query),
                };
                if tx.send(inbound).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let inbound = Inbound {
            input: Some(input),
            by,
            delivery: None,
            reply: Some(reply),
            inspect: None,
        };
        if tx.send(inbound).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// `amqp:<user>` of a message the broker delivered with a validated
/// `user_id` (see `bus::USER_ID_HEADER`); empty for every other message.
fn amqp_user(m: &Message) -> String {
    match m.header(recman_events::bus::USER_ID_HEADER) {
        Some(u) if !u.is_empty() => format!("amqp:{u}"),
        _ => String::new(),
    }
}

/// Makes each decided batch durable, then publishes its commands, then settles
/// its inputs, strictly in the order the batches were decided. Batches that
/// queue up while an append is in flight share the next append.
async fn commit(
    log: Arc<dyn EventLog>,
    bus: Arc<dyn Bus>,
    mut rx: mpsc::Receiver<Decided>,
) -> anyhow::Result<()> {
    let mut batches = Vec::with_capacity(PIPELINE_DEPTH);
    while rx.recv_many(&mut batches, PIPELINE_DEPTH).await > 0 {
        let events: Vec<Event> = batches.iter_mut().flat_map(|b| b.events.drain(..)).collect();
        if !events.is_empty() {
            log.append(events).await.context("appending to the event log")?;
        }
        // A leader whose lease ran out while it waited for the append (it
        // was paused) sends nothing more: its successor re-sends from the log.
        if let Some(lease) = log.lease() {
            lease.check().context("before sending commands")?;
        }
        let mut notes = trace::Notes::default();
        for b in batches.iter_mut() {
            notes.append(std::mem::take(&mut b.notes));
        }
        notes.record();
        let commands: Vec<Outgoing> = batches.iter_mut().flat_map(|b| b.commands.drain(..)).collect();
        publish(bus.as_ref(), &commands).await?;
        // Settles go out together (one at a time, each waiting for its frame
        // to be written, cost ~30 µs each: most of a commit at full load).
        let mut settles = Vec::new();
        for b in batches.drain(..) {
            for answer in b.inspects {
                answer();
            }
            for (delivery, reply, r) in b.settles {
                if let Some(d) = delivery {
                    let rejected = match &r {
                        Reply::Rejected { code, message } => Some(format!("{code}: {message}")),
                        _ => None,
                    };
                    settles.push(async move {
                        let id = d.message.message_id.clone();
                        let settled = match rejected {
                            Some(reason) => d.reject(&reason).await,
                            None => d.ack().await,
                        };
                        if let Err(e) = settled {
                            // Redelivered later and answered from the state: inputs are idempotent.
                            tracing::warn!(message_id = %id, error = %e, "could not settle a delivery");
                        }
                    });
                }
                if let Some(tx) = reply {
                    let _ = tx.send(r);
                }
            }
        }
        futures_util::future::join_all(settles).await;
    }
    Ok(())
}

/// Runs the engine until `calls` is closed or `shutdown` resolves.
///
/// Inputs that arrive together are decided together (up to [`MAX_BATCH`]) and
/// made durable with one append; while one append is on its way to disk the
/// core already decides the next batch (up to `PIPELINE_DEPTH` batches ahead).
/// Nothing leaves the engine before its cause is durable: commands are sent
/// and inputs acknowledged by the commit task, after the append returned.
///
/// With `checkpoints` it starts from the newest valid checkpoint and the
/// log after it (`crate::checkpoint::resume`), and a writer beside the loop
/// (`crate::checkpoint::Writer`, which folds the durable log on its own
/// thread) writes one every `every_events` events or `every`: the loop
/// never pauses for a checkpoint.
pub async fn run(
    cfg: CoreConfig,
    log: Arc<dyn EventLog>,
    bus: Arc<dyn Bus>,
    calls: mpsc::Receiver<Call>,
    shutdown: impl std::future::Future<Output = ()> + Send,
    checkpoints: Option<Checkpoints>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = checkpoints.as_ref().map(|c| c.store.as_ref());
    let bounds = cfg.bounds;
    let (mut core, resumed) = crate::checkpoint::resume(cfg, log.as_ref(), store).await?;
    if checkpoints.is_some() {
        tracing::info!(
            checkpoint = ?resumed.from,
            tail = resumed.tail,
            skipped = resumed.skipped.len(),
            ms = crate::checkpoint::took(started),
            "engine state rebuilt"
        );
    }
    // What fell due while the engine was down is decided (and durable)
    // before anything is sent again: a snapshot past its thaw deadline is
    // never asked for again (issue 12 item 2).
    let start = core.start(now_ms());
    if !start.events.is_empty() {
        log.append(start.events)
            .await
            .context("appending the start-up decisions to the event log")?;
    }
    publish(bus.as_ref(), &start.commands).await?;
    let requests = bus.consume(Address::Requests, 256).await?;
    let reports = bus.consume(Address::Reports, 4096).await?;

    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(2 * MAX_BATCH);
    let mut tasks = tokio::task::JoinSet::new();
    // A snapshot request, a cancel or a recovery; a refused cancel (unknown
    // job, job ended) or recovery is dead-lettered with the core's reason,
    // like a refused request.
    tasks.spawn(forward_bus(requests, in_tx.clone(), |b| {
        Request::from_json(b)
            .map(|r| match r {
                Request::Snapshot(req) => Input::Request {
                    req,
                    origin: "bus".into(),
                    new_job: JobId::new_v7(),
                },
                Request::Cancel(c) => Input::Cancel {
                    job: c.cancel,
                    reason: c.reason().to_string(),
                },
                Request::Recovery(r) => Input::Recover {
                    ask: ask(r),
                    origin: "amqp".into(),
                    new_job: JobId::new_v7(),
                },
            })
            .map_err(|e| e.to_string())
    }));
    tasks.spawn(forward_bus(reports, in_tx.clone(), |b| {
        wire::decode::<Report>(b)
            .map(Input::Report)
            .map_err(|e| e.to_string())
    }));
    tasks.spawn(forward_calls(calls, in_tx));
    let (commit_tx, commit_rx) = mpsc::channel::<Decided>(PIPELINE_DEPTH);
    let committer = tokio::spawn(commit(log.clone(), bus.clone(), commit_rx));
    // Stopped when the engine stops (dropped at the end of `run`).
    let _writer = checkpoints.map(|c| crate::checkpoint::Writer::start(c, log.clone(), bounds));

    tokio::pin!(shutdown);
    let mut inbox: Vec<Inbound> = Vec::with_capacity(MAX_BATCH);
    let result: anyhow::Result<()> = loop {
        let wait = core
            .next_deadline()
            .map(|d| Duration::from_millis(d.saturating_sub(now_ms())))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            // An input ended: every caller hung up, or the bus closed, or failed.
            Some(done) = tasks.join_next() => match done {
                Ok(Ok(())) => break Ok(()),
                Ok(Err(e)) => break Err(e),
                Err(e) => break Err(anyhow::anyhow!("engine input task failed: {e}")),
            },
            n = in_rx.recv_many(&mut inbox, MAX_BATCH) => if n == 0 { break Ok(()) },
            _ = commit_tx.closed() => break Ok(()), // the committer failed: its error is reported below
            _ = tokio::time::sleep(wait) => {}
        }
        let now = now_ms();
        let mut batch = Decided {
            events: Vec::new(),
            commands: Vec::new(),
            settles: Vec::with_capacity(inbox.len()),
            inspects: Vec::new(),
            notes: trace::Notes::default(),
        };
        let tracing_on = trace::on();
        if core.next_deadline().is_some_and(|d| d <= now) {
            let step = core.handle(Input::TimerFired, now);
            if tracing_on {
                batch.notes.events(&step.events);
            }
            batch.events.extend(step.events);
            batch.commands.extend(step.commands);
        }
        for i in inbox.drain(..) {
            if let Some(query) = i.inspect {
                batch.inspects.push(query(core.state()));
            }
            let Some(input) = i.input else { continue };
            let msg = i.delivery.as_ref().map(|d| &d.message);
            if tracing_on {
                if let Input::Report(r) = &input {
                    batch.notes.report(r, msg);
                }
            }
            let is_request = matches!(input, Input::Request { .. } | Input::Recover { .. });
            if let Some(refused) = unknown_mount_worker(bus.as_ref(), &core, &input) {
                batch.settles.push((i.delivery, i.reply, refused));
                continue;
            }
            let step = core.handle_as(input, &i.by, now);
            if tracing_on {
                match &step.reply {
                    Reply::Accepted { job, existing: false } if is_request => batch.notes.request(*job, msg),
                    _ => {}
                }
                batch.notes.events(&step.events);
            }
            batch.events.extend(step.events);
            batch.commands.extend(step.commands);
            batch.settles.push((i.delivery, i.reply, step.reply));
        }
        if batch.events.is_empty()
            && batch.commands.is_empty()
            && batch.settles.is_empty()
            && batch.inspects.is_empty()
            && batch.notes.is_empty()
        {
            continue;
        }
        if commit_tx.send(batch).await.is_err() {
            break Ok(()); // the committer stopped: its error is reported below
        }
    };
    // Finish what was decided (append, publish, settle) before the consumers go.
    drop(commit_tx);
    let committed = committer.await;
    tasks.abort_all();
    let committed = committed.map_err(|e| anyhow::anyhow!("commit task failed: {e}"))?;
    result.and(committed)
}

/// The core's view of a config: pools, freeze limits, retries, retention.
/// A target's retention rules for the core, `keep_last` included.
pub fn retention_policy(t: &recman_config::TargetConfig) -> recman_core::RetentionPolicy {
    let r = &t.retention;
    recman_core::RetentionPolicy {
        keep_last: t.keep_last,
        keep_within_ms: r.keep_within.map(|d| d.as_millis() as u64),
        keep_hourly: r.keep_hourly,
        keep_daily: r.keep_daily,
        keep_weekly: r.keep_weekly,
        keep_monthly: r.keep_monthly,
    }
}

/// `[engine] request_window` and `keep_finished` as the core's bounds.
pub fn bounds(config: &recman_config::Config) -> recman_core::Bounds {
    recman_core::Bounds {
        request_window_ms: config.engine.request_window.as_millis() as u64,
        keep_finished_ms: config.engine.keep_finished.as_millis() as u64,
    }
}

pub fn core_config(config: &recman_config::Config, seed: u64) -> CoreConfig {
    let mut cfg = CoreConfig {
        seed,
        bounds: bounds(config),
        ..CoreConfig::default()
    };
    for t in &config.targets {
        let mut p = recman_core::TargetPolicy::new(t.pool.clone(), t.provider_pool.clone());
        p.freeze_limit_ms = t.freeze_limit.as_millis() as u64;
        p.thaw_margin_ms = p.freeze_limit_ms / 5;
        p.max_retries = t.retries;
        p.backoff_base_ms = t.retry_backoff.as_millis() as u64;
        p.backoff_max_ms = t.retry_backoff_max.as_millis() as u64;
        p.keep_last = t.keep_last;
        p.rpo_ms = t.rpo.map(|d| d.as_millis() as u64);
        p.reconcile_every_ms = t.reconcile_every.map(|d| d.as_millis() as u64);
        p.rpo_verified = t.rpo_verified;
        p.retention = retention_policy(t);
        p.writer_timeout_ms = t.writer.timeout().as_millis() as u64;
        p.provider_timeout_ms = t.provider.timeout().as_millis() as u64;
        p.recovery_timeout_ms = t.recovery.timeout.as_millis() as u64;
        p.max_mount_age_ms = t.recovery.max_mount_age.map(|d| d.as_millis() as u64);
        p.approval_ms = t.approval.map(|d| d.as_millis() as u64);
        p.fingerprint = Some(t.fingerprint());
        p.verify = t.verify.as_ref().map(|v| recman_core::verify::VerifyPolicy {
            kind: v.kind.as_str().to_string(),
            pool: v.pool.clone(),
            timeout_ms: v.timeout.as_millis() as u64,
            schedule: v.schedule,
        });
        cfg.targets.insert(t.id.clone(), p);
    }
    cfg.schedules = config.schedules.clone();
    cfg
}
