//! The worker runtime: consumes its pools and its own queue, runs each step
//! for targets in its local config only, publishes the report before acking
//! the command, and thaws by itself when a thaw does not come in time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recman_config::{Config, TargetConfig};
use recman_events::bus::{msg_type, Address, Bus, BusError, Consumer, Delivery, Message};
use recman_events::clock;
use recman_events::wire::{self, check_id, Command, Outcome, Report};
use recman_events::{
    JobId, PoolName, SnapshotInfo, Stage, StepDetail, StepError, TargetId, WorkerId, SCHEMA_VERSION,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{field, info_span, Instrument, Span};

use crate::provider::{self, check_snapshot_name, Provider, SnapshotJob};
use crate::watchdog::{self, FreezeRecord, FrozenTargets};
use crate::writer::{self, StepCtx, Writer};

/// Default unsettled commands per consumed queue.
pub const DEFAULT_PREFETCH: u16 = 8;
/// How many completed commands a worker remembers to answer redeliveries.
pub const RECENT_CAPACITY: usize = 4096;
/// The W3C trace context header: a command's makes the step span a child of
/// the engine's send span; a report's makes the engine's receive span a child
/// of the step span.
pub const TRACEPARENT: &str = recman_trace::TRACEPARENT;
/// Attempts of a watchdog thaw before it reports failure.
const WATCHDOG_THAW_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker bus error: {0}")]
    Bus(#[from] BusError),
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
}

/// One worker process (or one worker hosted by the engine in embedded mode).
pub struct Worker {
    id: WorkerId,
    pools: Vec<PoolName>,
    targets: HashMap<TargetId, Local>,
    prefetch: u16,
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
                    },
                )
            })
            .collect();
        Worker {
            id,
            pools,
            targets,
            prefetch: DEFAULT_PREFETCH,
        }
    }

    /// Pools from `[worker] pools`, or else every pool a target names.
    pub fn from_config(id: WorkerId, config: &Config) -> Worker {
        let pools = match &config.worker {
            Some(w) if !w.pools.is_empty() => w.pools.clone(),
            _ => config.pools(),
        };
        Worker::new(id, pools, config)
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

    pub fn id(&self) -> &WorkerId {
        &self.id
    }

    pub fn pools(&self) -> &[PoolName] {
        &self.pools
    }

    /// Runs until `shutdown` completes or the bus closes. On the way out it
    /// finishes the steps in flight, then thaws every target still frozen.
    pub async fn run(
        self,
        bus: Arc<dyn Bus>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), WorkerError> {
        let shared = Arc::new(Shared {
            id: self.id.clone(),
            targets: self.targets,
            frozen: FrozenTargets::default(),
            recent: Mutex::new(Recent::default()),
            tombstones: Mutex::new(Tombstones::default()),
            bus: bus.clone(),
        });
        shared.startup_thaws().await;
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
        while tasks.join_next().await.is_some() {}
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

/// Completed commands, to answer a redelivery without running it again.
#[derive(Default)]
struct Recent {
    reports: HashMap<String, Report>,
    order: VecDeque<String>,
}

impl Recent {
    fn get(&self, id: &str) -> Option<Report> {
        self.reports.get(id).cloned()
    }

    fn insert(&mut self, id: String, report: Report) {
        if self.reports.insert(id.clone(), report).is_none() {
            self.order.push_back(id);
            while self.order.len() > RECENT_CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.reports.remove(&old);
                }
            }
        }
    }
}

/// What this worker must not undo when a command comes late or twice: attempts
/// it already thawed (a late freeze of one would stay frozen until the
/// watchdog) and snapshots retention deleted (a late snapshot command must not
/// bring one back). Bounded; the simulator's workers follow the same rules.
#[derive(Default)]
struct Tombstones {
    thawed: HashSet<(TargetId, JobId, u32)>,
    thawed_order: VecDeque<(TargetId, JobId, u32)>,
    pruned: HashSet<(TargetId, String)>,
    pruned_order: VecDeque<(TargetId, String)>,
}

impl Tombstones {
    fn remember<T: Clone + Eq + std::hash::Hash>(set: &mut HashSet<T>, order: &mut VecDeque<T>, v: T) {
        if set.insert(v.clone()) {
            order.push_back(v);
            while order.len() > RECENT_CAPACITY {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    fn thawed(&mut self, t: &TargetId, job: JobId, attempt: u32) {
        Self::remember(
            &mut self.thawed,
            &mut self.thawed_order,
            (t.clone(), job, attempt),
        );
    }

    fn pruned(&mut self, t: &TargetId, name: &str) {
        Self::remember(
            &mut self.pruned,
            &mut self.pruned_order,
            (t.clone(), name.to_string()),
        );
    }
}

struct Shared {
    id: WorkerId,
    targets: HashMap<TargetId, Local>,
    frozen: FrozenTargets,
    recent: Mutex<Recent>,
    tombstones: Mutex<Tombstones>,
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
        let remembered = self.lock_recent().get(&cmd.message_id);
        let report = match remembered {
            Some(r) => {
                tracing::debug!(worker = %self.id, message_id = %cmd.message_id, "redelivered command answered from memory");
                r
            }
            None => self.execute(&cmd).await,
        };
        match &report.outcome {
            Outcome::Ok { .. } => span.record("outcome", "ok"),
            Outcome::Err { error } => span
                .record("outcome", error.code.as_str())
                .record("otel.status_code", "error"),
        };
        let msg = report_message(&report, &span, d.message.header(TRACEPARENT));
        match self.bus.publish(Address::Reports, msg).await {
            Ok(()) => {
                self.lock_recent().insert(cmd.message_id.clone(), report);
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

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_tombstones(&self) -> std::sync::MutexGuard<'_, Tombstones> {
        self.tombstones.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one command and builds its report (never fails: errors are reports).
    async fn execute(self: &Arc<Self>, cmd: &Command) -> Report {
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
        } else {
            match cmd.stage {
                Stage::Freeze => self.freeze(cmd).await,
                Stage::Thaw => self.thaw(cmd).await,
                Stage::FlushLogs => self.flush(cmd).await,
                Stage::Snapshot => self.snapshot(cmd).await,
                Stage::Prune => self.prune(cmd).await,
                Stage::Queue => Err(StepError::new(
                    "invalid_stage",
                    "queue is not a worker step",
                    false,
                )),
            }
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

    fn ctx(t: &TargetId, cmd: &Command) -> StepCtx {
        StepCtx {
            target: t.clone(),
            job: cmd.job,
            attempt: cmd.attempt,
            kind: cmd.kind,
        }
    }

    fn local(&self, t: &TargetId) -> Result<&Local, StepError> {
        self.targets
            .get(t)
            .ok_or_else(|| StepError::new("unknown_target", format!("no target {t}"), false))
    }

    async fn freeze(self: &Arc<Self>, cmd: &Command) -> Result<StepDetail, StepError> {
        let mut deadline_ms = u64::MAX;
        for (i, t) in cmd.targets.iter().enumerate() {
            match self.freeze_one(t, cmd).await {
                Ok(d) => deadline_ms = deadline_ms.min(d),
                Err(e) => {
                    // Do not leave part of a group frozen.
                    for done in &cmd.targets[..i] {
                        let _ = self.thaw_one(done, cmd).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(StepDetail::Frozen { deadline_ms })
    }

    async fn freeze_one(self: &Arc<Self>, t: &TargetId, cmd: &Command) -> Result<u64, StepError> {
        let local = self.local(t)?;
        let _g = local.writer_lock.lock().await;
        if let Some(rec) = self.frozen.get(t) {
            if rec.job == cmd.job && rec.attempt == cmd.attempt {
                return Ok(rec.deadline_ms); // already frozen for this attempt
            }
            tracing::warn!(worker = %self.id, target = %t, "freeze of a target still frozen for another job: the old freeze is superseded");
        }
        if let Some(d) = cmd.thaw_deadline_ms.filter(|d| clock::now_ms() >= *d) {
            return Err(StepError::new(
                "deadline_passed",
                format!(
                    "the freeze came after its thaw deadline ({} ms ago): not frozen",
                    clock::now_ms() - d
                ),
                true,
            ));
        }
        if self
            .lock_tombstones()
            .thawed
            .contains(&(t.clone(), cmd.job, cmd.attempt))
        {
            return Err(StepError::new(
                "already_thawed",
                "a thaw for this attempt came first: not frozen",
                true,
            ));
        }
        local.writer.freeze(&Self::ctx(t, cmd)).await?;
        let (now_ms, now) = (clock::now_ms(), Instant::now());
        let (deadline_ms, at) = watchdog::deadline(now_ms, now, cmd.thaw_deadline_ms, local.cfg.freeze_limit);
        let rec = FreezeRecord {
            job: cmd.job,
            attempt: cmd.attempt,
            kind: cmd.kind,
            frozen_at: now,
            deadline_ms,
        };
        self.arm(t, rec, at);
        Ok(deadline_ms)
    }

    /// Records the freeze and starts its watchdog timer.
    fn arm(self: &Arc<Self>, t: &TargetId, rec: FreezeRecord, at: Instant) {
        let generation = self.frozen.insert(t.clone(), rec);
        let me = self.clone();
        let target = t.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            me.watchdog_thaw(&target, Some(generation)).await;
        });
        self.frozen.set_timer(t, generation, timer.abort_handle());
    }

    /// Thaws `t` without being asked (deadline passed, or shutting down) and
    /// reports it with `by_watchdog: true`. `generation: None` = any freeze.
    async fn watchdog_thaw(&self, t: &TargetId, generation: Option<u64>) {
        let Ok(local) = self.local(t) else { return };
        let _g = local.writer_lock.lock().await;
        let rec = match generation {
            Some(g) => self.frozen.take_if(t, g),
            None => self.frozen.take(t),
        };
        let Some(rec) = rec else { return };
        self.lock_tombstones().thawed(t, rec.job, rec.attempt);
        tracing::warn!(worker = %self.id, target = %t, job = %rec.job, "no thaw arrived in time: the watchdog thaws");
        let ctx = StepCtx {
            target: t.clone(),
            job: rec.job,
            attempt: rec.attempt,
            kind: rec.kind,
        };
        let start = Instant::now();
        let mut result = Err(StepError::new("internal", "not run", true));
        for n in 1..=WATCHDOG_THAW_ATTEMPTS {
            result = local.writer.thaw(&ctx).await;
            if result.is_ok() || n == WATCHDOG_THAW_ATTEMPTS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500 * u64::from(n))).await;
        }
        let outcome = match result {
            Ok(()) => Outcome::Ok {
                detail: StepDetail::Thawed {
                    freeze_window_us: rec.window_us(),
                    by_watchdog: true,
                },
            },
            Err(error) => {
                tracing::error!(worker = %self.id, target = %t, code = %error.code, message = %error.message, "watchdog thaw FAILED: the target may still be frozen");
                Outcome::Err { error }
            }
        };
        let report = Report {
            schema_version: SCHEMA_VERSION,
            message_id: format!(
                "{}/watchdog",
                Report::message_id_for(rec.job, rec.attempt, Stage::Thaw, t, &self.id)
            ),
            job: rec.job,
            attempt: rec.attempt,
            stage: Stage::Thaw,
            targets: vec![t.clone()],
            worker: self.id.clone(),
            duration_us: micros(start.elapsed()),
            outcome,
        };
        let span = own_thaw_span(&self.id, rec.job, rec.attempt, t, "watchdog");
        let msg = report_message(&report, &span, None);
        for n in 1..=5u64 {
            match self
                .bus
                .publish(Address::Reports, msg.clone())
                .instrument(span.clone())
                .await
            {
                Ok(()) => return,
                Err(BusError::Closed) => {
                    tracing::warn!(worker = %self.id, target = %t, "bus closed: watchdog report not published");
                    return;
                }
                Err(e) => {
                    tracing::warn!(worker = %self.id, target = %t, error = %e, "watchdog report not published, retrying");
                    tokio::time::sleep(Duration::from_millis(200 * n)).await;
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

    /// On start, before any command: thaws what a crashed predecessor left
    /// frozen (design layer 3), logs it, and reports it under the job of the
    /// freeze when the writer kept a marker (the engine records
    /// `WatchdogThawed` with this worker's id).
    async fn startup_thaws(&self) {
        let mut ids: Vec<&TargetId> = self.targets.keys().collect();
        ids.sort();
        for t in ids {
            let local = &self.targets[t];
            let _g = local.writer_lock.lock().await;
            let found = match local.writer.startup_thaw().await {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(worker = %self.id, target = %t, code = %e.code, message = %e.message, "thaw on start FAILED: the target may still be frozen");
                    continue;
                }
            };
            let window_us = found
                .frozen_at_ms
                .map(|at| clock::now_ms().saturating_sub(at).saturating_mul(1000))
                .unwrap_or(0);
            match found.job {
                None => {
                    tracing::warn!(worker = %self.id, target = %t, what = %found.what, "found frozen on start (no record of the job that froze it): thawed by this worker");
                }
                Some((job, attempt, _kind)) => {
                    tracing::warn!(worker = %self.id, target = %t, what = %found.what, %job, attempt, freeze_window_ms = window_us / 1000, "found frozen on start: thawed by this worker");
                    let report = Report {
                        schema_version: SCHEMA_VERSION,
                        message_id: format!(
                            "{}/startup",
                            Report::message_id_for(job, attempt, Stage::Thaw, t, &self.id)
                        ),
                        job,
                        attempt,
                        stage: Stage::Thaw,
                        targets: vec![t.clone()],
                        worker: self.id.clone(),
                        duration_us: 0,
                        outcome: Outcome::Ok {
                            detail: StepDetail::Thawed {
                                freeze_window_us: window_us,
                                by_watchdog: true,
                            },
                        },
                    };
                    let span = own_thaw_span(&self.id, job, attempt, t, "found frozen on start");
                    let msg = report_message(&report, &span, None);
                    if let Err(e) = self.bus.publish(Address::Reports, msg).instrument(span).await {
                        tracing::warn!(worker = %self.id, target = %t, error = %e, "report of the thaw on start not published");
                    }
                }
            }
        }
    }

    /// On clean shutdown: nothing stays frozen behind us.
    async fn thaw_everything(&self) {
        for t in self.frozen.targets() {
            self.watchdog_thaw(&t, None).await;
        }
    }

    async fn thaw(self: &Arc<Self>, cmd: &Command) -> Result<StepDetail, StepError> {
        let mut window = 0;
        let mut first_err = None;
        for t in &cmd.targets {
            match self.thaw_one(t, cmd).await {
                Ok(w) => window = window.max(w),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(StepDetail::Thawed {
                freeze_window_us: window,
                by_watchdog: false,
            }),
        }
    }

    /// Thaws `t` (even when this worker does not remember freezing it: thaw
    /// is idempotent); returns the freeze window in µs (0 when unknown).
    async fn thaw_one(self: &Arc<Self>, t: &TargetId, cmd: &Command) -> Result<u64, StepError> {
        let local = self.local(t)?;
        let _g = local.writer_lock.lock().await;
        let rec = self.frozen.take(t);
        self.lock_tombstones().thawed(t, cmd.job, cmd.attempt);
        match local.writer.thaw(&Self::ctx(t, cmd)).await {
            Ok(()) => Ok(rec.map(|r| r.window_us()).unwrap_or(0)),
            Err(e) => {
                if let Some(rec) = rec {
                    // Still frozen as far as we know: keep the watchdog on it.
                    let at = Instant::now()
                        + Duration::from_millis(rec.deadline_ms.saturating_sub(clock::now_ms()));
                    self.arm(t, rec, at);
                }
                Err(e)
            }
        }
    }

    async fn flush(&self, cmd: &Command) -> Result<StepDetail, StepError> {
        for t in &cmd.targets {
            let local = self.local(t)?;
            let _g = local.writer_lock.lock().await;
            local.writer.flush_logs(&Self::ctx(t, cmd)).await?;
        }
        Ok(StepDetail::Flushed)
    }

    async fn snapshot(&self, cmd: &Command) -> Result<StepDetail, StepError> {
        let name = cmd
            .snapshot_name
            .as_deref()
            .ok_or_else(|| StepError::new("invalid_command", "no snapshot_name", false))?;
        let mut infos: Vec<SnapshotInfo> = Vec::new();
        for t in &cmd.targets {
            let local = self.local(t)?;
            let _g = local.provider_lock.lock().await;
            if self
                .lock_tombstones()
                .pruned
                .contains(&(t.clone(), name.to_string()))
            {
                return Err(StepError::new(
                    "deleted",
                    format!("snapshot {name} of {t} was deleted by retention: not taken again"),
                    false,
                ));
            }
            let req = SnapshotJob {
                name,
                target: t,
                kind: cmd.kind,
                job: Some((cmd.job, cmd.attempt)),
            };
            infos.push(local.provider.snapshot_job(req).await?);
        }
        Ok(StepDetail::Snapshot(merge(name, infos)))
    }

    async fn prune(&self, cmd: &Command) -> Result<StepDetail, StepError> {
        let mut deleted: Vec<String> = Vec::new();
        let mut first_err: Option<StepError> = None;
        for t in &cmd.targets {
            let local = self.local(t)?;
            let _g = local.provider_lock.lock().await;
            for name in &cmd.prune {
                // Missing counts as deleted: a redelivered prune must say the same.
                // A failure (e.g. a snapshot with a child) does not stop the
                // others: one stuck snapshot must not block retention.
                match local.provider.delete(name, t).await {
                    Ok(_) => {
                        self.lock_tombstones().pruned(t, name);
                        if !deleted.contains(name) {
                            deleted.push(name.clone());
                        }
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        match first_err {
            // Progress is reported (the engine records what is gone); the
            // stuck snapshot stays in the catalog and its error is reported
            // by the next prune that has nothing else to delete.
            Some(e) if deleted.is_empty() => Err(e),
            Some(e) => {
                tracing::warn!(worker = %self.id, job = %cmd.job, code = %e.code, message = %e.message, "a snapshot could not be pruned; the others were");
                Ok(StepDetail::Pruned { deleted })
            }
            None => Ok(StepDetail::Pruned { deleted }),
        }
    }
}

/// One snapshot info for a consistency group: locations joined, sizes added.
fn merge(name: &str, mut infos: Vec<SnapshotInfo>) -> SnapshotInfo {
    if infos.len() == 1 {
        return infos.remove(0);
    }
    SnapshotInfo {
        name: name.to_string(),
        provider: infos.first().map(|i| i.provider.clone()).unwrap_or_default(),
        location: infos
            .iter()
            .map(|i| i.location.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        size_bytes: infos.iter().map(|i| i.size_bytes).sum(),
        existed: !infos.is_empty() && infos.iter().all(|i| i.existed),
    }
}
