//! The worker runtime: consumes its pools and its own queue, decodes and
//! checks each command, answers redeliveries from memory, runs the step for
//! targets in its local config only (`steps`), publishes the report before
//! acking the command, and thaws by itself when a thaw does not come in time
//! (`thaw`). The rules of each step are the worker core's (`recman_core::worker`);
//! the host's freeze state they read and record is shared by every worker
//! process of the host (`hoststate`).

mod hoststate;
mod recovery;
mod steps;
mod thaw;

pub use hoststate::{HostState, StateError};

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recman_events::bus::{msg_type, Address, Bus, BusError, Consumer, Delivery, Message};
use recman_events::wire::{self, check_id, Command, Outcome, Report};
use recman_events::{JobId, PoolName, Stage, StepError, TargetId, WorkerId, SCHEMA_VERSION};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{field, info_span, Instrument, Span};

use recman_config::{Config, TargetConfig};
use recman_core::worker::{Process, Recent};

use crate::provider::{self, check_snapshot_name, Provider};
use crate::watchdog::Watchdogs;
use crate::writer::{self, StepCtx, Writer};

/// Default unsettled commands per consumed queue.
pub const DEFAULT_PREFETCH: u16 = 8;
/// Default longest wait at stop for the steps in flight (see [`Worker::run`]).
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(30);
/// How many completed commands a worker remembers to answer redeliveries.
pub const RECENT_CAPACITY: usize = 4096;
/// The W3C trace context header: a command's makes the step span a child of
/// the engine's send span; a report's makes the engine's receive span a child
/// of the step span.
pub const TRACEPARENT: &str = recman_trace::TRACEPARENT;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    // Not a `#[source]`: the message carries it (a chain would say it twice).
    #[error("worker bus error: {0}")]
    Bus(BusError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Refused(String),
}

impl From<BusError> for WorkerError {
    fn from(e: BusError) -> Self {
        WorkerError::Bus(e)
    }
}

/// A target this worker serves: config, writer, provider, and one lock per
/// side so steps on one target never overlap (a thaw still may run during a
/// snapshot: that is the forced thaw).
struct Local {
    cfg: TargetConfig,
    writer: Arc<dyn Writer>,
    provider: Arc<dyn Provider>,
    writer_lock: Arc<tokio::sync::Mutex<()>>,
    provider_lock: Arc<tokio::sync::Mutex<()>>,
    /// One verification of the target at a time in this process.
    verify_lock: Arc<tokio::sync::Mutex<()>>,
}

/// One worker process (or one worker hosted by the engine in embedded mode).
pub struct Worker {
    id: WorkerId,
    pools: Vec<PoolName>,
    targets: HashMap<TargetId, Local>,
    prefetch: u16,
    /// The host's freeze state directory (`None`: kept in this process only).
    state_dir: Option<PathBuf>,
    /// Filesystems the targets freeze: the state directory must not be on one.
    frozen_mounts: Vec<(TargetId, PathBuf)>,
    stop_grace: Duration,
}

impl Worker {
    /// A worker `id` consuming `pools` (and its own queue), serving every
    /// target of `config` with the writer and provider the config names.
    pub fn new(id: WorkerId, pools: Vec<PoolName>, config: &Config) -> Worker {
        let targets = config
            .targets
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    Local {
                        cfg: t.clone(),
                        writer: writer::from_config(&t.id, &t.writer),
                        provider: provider::from_config(&t.provider),
                        writer_lock: Default::default(),
                        provider_lock: Default::default(),
                        verify_lock: Default::default(),
                    },
                )
            })
            .collect();
        let frozen_mounts = config
            .targets
            .iter()
            .filter_map(|t| {
                let mp = match &t.writer {
                    recman_config::WriterConfig::FsFreeze(f) => Some(&f.mountpoint),
                    recman_config::WriterConfig::Postgres(p) => p.fsfreeze.as_ref().map(|f| &f.mountpoint),
                    _ => None,
                };
                mp.map(|m| (t.id.clone(), m.clone()))
            })
            .collect();
        Worker {
            id,
            pools,
            targets,
            prefetch: DEFAULT_PREFETCH,
            state_dir: config.worker.as_ref().and_then(|w| w.state_dir.clone()),
            frozen_mounts,
            stop_grace: DEFAULT_STOP_GRACE,
        }
    }

    /// Pools from `[worker] pools`, or else every pool a target names.
    pub fn from_config(id: WorkerId, config: &Config) -> Worker {
        let pools = match config.worker.as_ref().and_then(|w| w.pools.clone()) {
            Some(named) => named,
            None => config.pools(),
        };
        Worker::new(id, pools, config)
    }

    /// Keeps the host's freeze state in `dir`, shared with every other
    /// worker process of the host that uses the same directory (default:
    /// `[worker] state_dir`; without either, this process alone keeps it).
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// The host state directory it will use, if any.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// Replaces the writer of a configured target (tests, simulations).
    pub fn with_writer(mut self, target: &TargetId, w: Arc<dyn Writer>) -> Self {
        if let Some(l) = self.targets.get_mut(target) {
            l.writer = w;
        }
        self
    }

    /// Replaces the provider of a configured target (tests, simulations).
    pub fn with_provider(mut self, target: &TargetId, p: Arc<dyn Provider>) -> Self {
        if let Some(l) = self.targets.get_mut(target) {
            l.provider = p;
        }
        self
    }

    /// Unsettled commands per consumed queue (default 8).
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Longest wait at stop for the steps in flight (default
    /// [`DEFAULT_STOP_GRACE`]); after it they are abandoned (see [`Worker::run`]).
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    pub fn id(&self) -> &WorkerId {
        &self.id
    }

    pub fn pools(&self) -> &[PoolName] {
        &self.pools
    }

    /// Runs until `shutdown` completes or the bus closes. On the way out it
    /// lets the steps in flight finish for at most the stop grace; steps
    /// still running then are abandoned (their hooks killed, their commands
    /// unanswered: the engine asks again after a restart). Then it thaws
    /// every target still frozen: a stop never leaves an application frozen
    /// behind a slow snapshot.
    pub async fn run(
        self,
        bus: Arc<dyn Bus>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), WorkerError> {
        let state = match &self.state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|error| StateError::Io {
                    path: dir.clone(),
                    what: "creating",
                    error,
                })?;
                hoststate::check_off_frozen(dir, &self.frozen_mounts).map_err(WorkerError::Refused)?;
                HostState::open(dir, &self.id)?
            }
            None => HostState::in_memory(&self.id),
        };
        match state.dir() {
            Some(d) => tracing::info!(worker = %self.id, state_dir = %d.display(), "host freeze state"),
            None => tracing::debug!(worker = %self.id, "host freeze state kept in this process only"),
        }
        let grace = self.stop_grace;
        let shared = Arc::new(Shared {
            id: self.id.clone(),
            targets: self.targets,
            watchdogs: Watchdogs::default(),
            recent: Mutex::new(Recent::with_capacity(RECENT_CAPACITY)),
            pruned: Mutex::new(Recent::with_capacity(RECENT_CAPACITY)),
            state,
            bus: bus.clone(),
        });
        shared.startup_thaws().await;
        shared.cleanup_providers().await;
        let sentinel = tokio::spawn(shared.clone().sentinel());
        let mut addrs: Vec<Address> = self.pools.iter().cloned().map(Address::Pool).collect();
        addrs.push(Address::Worker(self.id.clone()));
        let mut consumers = Vec::new();
        for a in &addrs {
            consumers.push(bus.consume(a.clone(), self.prefetch).await?);
        }
        tracing::info!(worker = %self.id, queues = ?addrs.iter().map(Address::queue_name).collect::<Vec<_>>(), "worker started");

        // One forwarder per queue feeds one channel; on stop each hands its
        // consumer back, so deliveries in flight stay ours until settled.
        let (tx, mut rx) = mpsc::channel::<Delivery>(usize::from(self.prefetch) * addrs.len());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut forwarders = JoinSet::new();
        for c in consumers {
            forwarders.spawn(forward(c, tx.clone(), stop_rx.clone()));
        }
        drop(tx);

        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                d = rx.recv() => match d {
                    Some(d) => {
                        let s = shared.clone();
                        tasks.spawn(async move { s.handle(d).await });
                    }
                    None => break,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        let _ = stop_tx.send(true);
        let mut kept: Vec<Consumer> = Vec::new();
        while let Some(r) = forwarders.join_next().await {
            if let Ok(Some(c)) = r {
                kept.push(c);
            }
        }
        drop(rx); // undelivered buffered commands go back to their queues
        let finished =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            tracing::warn!(worker = %shared.id, steps = tasks.len(), ?grace,
                "steps still running at stop: abandoned; thawing what is frozen");
            // Ended before the thaw, so no abandoned freeze lands after it.
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        sentinel.abort();
        shared.thaw_everything().await;
        shared.shutdown_providers().await;
        drop(kept);
        tracing::info!(worker = %shared.id, "worker stopped");
        Ok(())
    }
}

async fn forward(
    mut c: Consumer,
    tx: mpsc::Sender<Delivery>,
    mut stop: watch::Receiver<bool>,
) -> Option<Consumer> {
    loop {
        tokio::select! {
            _ = stop.changed() => return Some(c),
            d = c.recv() => match d {
                Some(d) => {
                    if tx.send(d).await.is_err() {
                        return Some(c);
                    }
                }
                None => return None,
            },
        }
    }
}

/// What the tasks of one running worker share.
struct Shared {
    id: WorkerId,
    targets: HashMap<TargetId, Local>,
    watchdogs: Watchdogs,
    /// Reports of the commands this process answered (redeliveries).
    recent: Mutex<Recent<Report>>,
    /// Snapshot names this process's prunes deleted: not taken again.
    pruned: Mutex<Recent<()>>,
    /// The host's freeze state of every target (shared with the host's
    /// other worker processes), and this process as its holds name it.
    state: HostState,
    bus: Arc<dyn Bus>,
}

/// Why a command is refused outright (dead-lettered), before any target check.
fn validate(cmd: &Command) -> Result<(), String> {
    if cmd.stage == Stage::Queue {
        return Err("stage `queue` is not a worker step".into());
    }
    if cmd.targets.is_empty() {
        return Err("command names no target".into());
    }
    for t in &cmd.targets {
        check_id("targets", t.as_str()).map_err(|e| e.to_string())?;
    }
    if cmd.stage == Stage::Snapshot {
        let name = cmd
            .snapshot_name
            .as_deref()
            .ok_or("snapshot command without snapshot_name")?;
        check_snapshot_name(name).map_err(|e| e.message)?;
    }
    for name in &cmd.prune {
        check_snapshot_name(name).map_err(|e| e.message)?;
    }
    Ok(())
}

/// The message of a report, with the `traceparent` of `span` (the step that
/// made it); when spans are off, the command's own (`received`) if it is in
/// the job's trace, else the job's root.
fn report_message(r: &Report, span: &Span, received: Option<&str>) -> Message {
    Message::new(msg_type::REPORT, r.message_id.clone(), wire::encode(r))
        .with_header(TRACEPARENT, recman_trace::traceparent(span, r.job, received))
}

/// The span of one command executed by this worker, in the job's trace.
fn step_span(worker: &WorkerId, cmd: &Command, d: &Delivery) -> Span {
    let name = match cmd.stage {
        Stage::Freeze => "worker.freeze",
        Stage::Snapshot => "worker.snapshot",
        Stage::Thaw => "worker.thaw",
        Stage::FlushLogs => "worker.flush_logs",
        Stage::Prune => "worker.prune",
        Stage::Verify => "worker.verify",
        Stage::Reconcile => "worker.reconcile",
        Stage::Stop => "worker.stop",
        Stage::SafetySnapshot => "worker.safety_snapshot",
        Stage::Restore => "worker.restore",
        Stage::Rollback => "worker.rollback",
        Stage::Start => "worker.start",
        Stage::Mount => "worker.mount",
        Stage::Unmount => "worker.unmount",
        Stage::Queue => "worker.queue",
    };
    let span = info_span!(
        parent: None,
        "worker.step",
        otel.name = name,
        job = %cmd.job,
        attempt = cmd.attempt,
        stage = cmd.stage.as_str(),
        target = cmd.targets.first().map(TargetId::as_str).unwrap_or(""),
        worker = %worker,
        delivery = d.delivery_count,
        outcome = field::Empty,
        otel.status_code = field::Empty,
    );
    recman_trace::set_parent(&span, cmd.job, d.message.header(TRACEPARENT));
    span
}

/// The span of a thaw the worker did by itself (watchdog, or on start).
fn own_thaw_span(worker: &WorkerId, job: JobId, attempt: u32, t: &TargetId, why: &'static str) -> Span {
    let span = info_span!(parent: None, "worker.watchdog_thaw", %job, attempt, target = t.as_str(), worker = %worker, why);
    recman_trace::set_parent(&span, job, None);
    span
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Shared {
    async fn handle(self: Arc<Self>, d: Delivery) {
        let cmd: Command = match wire::decode(&d.message.body) {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("undecodable command: {e}");
                tracing::warn!(worker = %self.id, message_id = %d.message.message_id, %reason, "command dead-lettered");
                if let Err(e) = d.reject(&reason).await {
                    tracing::warn!(worker = %self.id, error = %e, "could not dead-letter");
                }
                return;
            }
        };
        if let Err(why) = validate(&cmd) {
            let reason = format!("invalid command: {why}");
            tracing::warn!(worker = %self.id, message_id = %cmd.message_id, %reason, "command dead-lettered");
            if let Err(e) = d.reject(&reason).await {
                tracing::warn!(worker = %self.id, error = %e, "could not dead-letter");
            }
            return;
        }
        let span = step_span(&self.id, &cmd, &d);
        self.respond(d, cmd, span.clone()).instrument(span).await
    }

    /// Runs a valid command (or answers it from memory), publishes the
    /// report, then acks the command.
    async fn respond(self: Arc<Self>, d: Delivery, cmd: Command, span: Span) {
        let mut after = steps::AfterReport::default();
        let remembered = self.lock_recent().get(&cmd.message_id).cloned();
        // A verification or recovery step another process of this host
        // already ran (running either again could undo what followed it).
        let verify_target = (cmd.stage == Stage::Verify
            || recman_core::recovery::is_recovery_stage(cmd.stage))
        .then(|| cmd.targets.first())
        .flatten();
        let remembered =
            remembered.or_else(|| verify_target.and_then(|t| self.state.verify_answer(t, &cmd.message_id)));
        let report = match remembered {
            Some(r) => {
                tracing::debug!(worker = %self.id, message_id = %cmd.message_id, "redelivered command answered from memory");
                r
            }
            None => {
                let r = self.execute(&cmd, &mut after).await;
                if let Some(t) = verify_target {
                    if let Err(e) = self.state.record_verify(t, &cmd.message_id, &r).await {
                        tracing::warn!(worker = %self.id, message_id = %cmd.message_id, error = %e, "answer not recorded: a redelivery would run it again");
                    }
                }
                r
            }
        };
        match &report.outcome {
            Outcome::Ok { .. } => span.record("outcome", "ok"),
            Outcome::Err { error } => span
                .record("outcome", error.code.as_str())
                .record("otel.status_code", "error"),
        };
        let msg = report_message(&report, &span, d.message.header(TRACEPARENT));
        let published = if after.is_empty() {
            self.bus.publish(Address::Reports, msg).await
        } else {
            // The outcome a freeze left is written once the report is out,
            // or once the report took longer than the lock may be held.
            let wait = after.wait(recman_events::clock::now_ms());
            let mut publish = self.bus.publish(Address::Reports, msg);
            let first = tokio::time::timeout(wait, &mut publish).await;
            self.record_after_report(after).await;
            match first {
                Ok(r) => r,
                Err(_) => publish.await,
            }
        };
        match published {
            Ok(()) => {
                self.lock_recent().insert_first(cmd.message_id.clone(), report);
                if let Err(e) = d.ack().await {
                    tracing::warn!(worker = %self.id, message_id = %cmd.message_id, error = %e, "ack failed: the command will come back and be answered from memory");
                }
            }
            Err(e) => {
                tracing::warn!(worker = %self.id, message_id = %cmd.message_id, error = %e, "report not published: command requeued");
                let _ = d.nack().await;
            }
        }
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, Recent<Report>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one command and builds its report (never fails: errors are reports).
    async fn execute(self: &Arc<Self>, cmd: &Command, after: &mut steps::AfterReport) -> Report {
        let start = Instant::now();
        let unknown: Vec<&str> = cmd
            .targets
            .iter()
            .filter(|t| !self.targets.contains_key(*t))
            .map(TargetId::as_str)
            .collect();
        let outcome = if !unknown.is_empty() {
            tracing::warn!(worker = %self.id, targets = ?unknown, stage = %cmd.stage, "refused: target not in local config");
            Err(StepError::new(
                "unknown_target",
                format!(
                    "worker {} has no target {} in its config; nothing was run",
                    self.id,
                    unknown.join(", ")
                ),
                false,
            ))
        } else if let Some(e) = self.mismatch(cmd) {
            tracing::warn!(worker = %self.id, job = %cmd.job, stage = %cmd.stage, "refused: {}", e.message);
            Err(e)
        } else {
            self.run_step(cmd, after).await
        };
        let outcome = match outcome {
            Ok(detail) => Outcome::Ok { detail },
            Err(error) => {
                tracing::warn!(worker = %self.id, job = %cmd.job, stage = %cmd.stage, code = %error.code, message = %error.message, "step failed");
                Outcome::Err { error }
            }
        };
        Report {
            schema_version: SCHEMA_VERSION,
            message_id: Report::message_id_for(cmd.job, cmd.attempt, cmd.stage, &cmd.targets[0], &self.id),
            job: cmd.job,
            attempt: cmd.attempt,
            stage: cmd.stage,
            targets: cmd.targets.clone(),
            worker: self.id.clone(),
            duration_us: micros(start.elapsed()),
            outcome,
        }
    }

    /// The refusal of a command whose targets the engine's config sets up
    /// differently from this worker's (`fingerprints`), e.g. an engine that
    /// expects a PostgreSQL writer where this host has none: running it would
    /// record a snapshot that froze nothing. Only the part the stage uses is
    /// compared: the writer for a freeze or a log flush, the provider for a
    /// snapshot, prune, verify or reconcile, so an application host need not
    /// hold the array's provider (nor its credentials) and a storage host not
    /// the application's hooks. A thaw still runs (it only ever ends a freeze
    /// this host holds, and must never be refused).
    fn mismatch(&self, cmd: &Command) -> Option<StepError> {
        let part = match cmd.stage {
            Stage::Freeze | Stage::FlushLogs | Stage::Stop | Stage::Start => "writer",
            Stage::Snapshot
            | Stage::Prune
            | Stage::Verify
            | Stage::Reconcile
            | Stage::SafetySnapshot
            | Stage::Restore
            | Stage::Rollback
            | Stage::Mount
            | Stage::Unmount => "provider",
            Stage::Thaw | Stage::Queue => return None,
        };
        if cmd.fingerprints.len() != cmd.targets.len() {
            return None;
        }
        let kind = |fingerprint: &str| -> String {
            let (writer, provider) = fingerprint.split_once('/').unwrap_or((fingerprint, ""));
            if part == "writer" { writer } else { provider }.to_string()
        };
        let differ: Vec<String> = cmd
            .targets
            .iter()
            .zip(&cmd.fingerprints)
            .filter_map(|(t, theirs)| {
                let ours = kind(&self.targets.get(t)?.cfg.fingerprint());
                let theirs = kind(theirs);
                (ours != theirs).then(|| format!("{t}'s {part} is {theirs} on the engine but {ours} here"))
            })
            .collect();
        (!differ.is_empty()).then(|| {
            StepError::new(
                "config_mismatch",
                format!(
                    "worker {} refused {} ({}): the engine and this worker must load the same target definitions; nothing was run",
                    self.id,
                    cmd.stage,
                    differ.join("; ")
                ),
                false,
            )
        })
    }

    fn ctx(t: &TargetId, cmd: &Command) -> StepCtx {
        StepCtx {
            target: t.clone(),
            job: cmd.job,
            attempt: cmd.attempt,
            kind: cmd.kind,
        }
    }

    fn process(&self) -> &Process {
        self.state.process()
    }

    fn local(&self, t: &TargetId) -> Result<&Local, StepError> {
        self.targets
            .get(t)
            .ok_or_else(|| StepError::new("unknown_target", format!("no target {t}"), false))
    }

    /// On start: each provider removes what interrupted snapshots left
    /// (the `copy` provider's `.partial` directories of dead processes).
    async fn cleanup_providers(&self) {
        let pg = self
            .targets
            .values()
            .any(|l| matches!(l.cfg.writer, recman_config::WriterConfig::Postgres(_)));
        if pg {
            for what in crate::writer::postgres::restore::cleanup() {
                tracing::warn!(worker = %self.id, removed = %what, "removed the leftover of a database recovery interrupted by a crash");
            }
        }
        let mut ids: Vec<&TargetId> = self.targets.keys().collect();
        ids.sort();
        for t in ids {
            let l = &self.targets[t];
            let _g = l.provider_lock.lock().await;
            for what in crate::verify::cleanup(&l.cfg) {
                tracing::warn!(worker = %self.id, target = %t, removed = %what, "removed the leftover of a verification interrupted by a crash");
            }
            match l.provider.cleanup().await {
                Ok(removed) => {
                    for what in removed {
                        tracing::warn!(worker = %self.id, target = %t, removed = %what, "removed the leftover of a snapshot interrupted by a crash");
                    }
                }
                Err(e) => {
                    tracing::warn!(worker = %self.id, target = %t, code = %e.code, message = %e.message, "could not remove the leftovers of interrupted snapshots");
                }
            }
        }
    }

    /// Lets each provider log out (once per provider instance).
    async fn shutdown_providers(&self) {
        let mut unique: Vec<Arc<dyn Provider>> = Vec::new();
        for l in self.targets.values() {
            if !unique.iter().any(|p| Arc::ptr_eq(p, &l.provider)) {
                unique.push(l.provider.clone());
            }
        }
        for p in unique {
            p.shutdown().await;
        }
    }
}
