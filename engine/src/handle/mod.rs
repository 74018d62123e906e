//! The engine handle: one builder that starts the engine on an event log and a
//! bus, with the local workers and the events relay, and returns a typed
//! handle to submit, cancel, follow (or wait for) jobs and shut everything
//! down cleanly.
//! `recman up`, `snapshot` and `engine`, the benchmarks, the HTTP API (through
//! a [`Caller`]) and the test harnesses all start the engine this way.
//!
//! ```no_run
//! # async fn demo(config: recman_config::Config) -> anyhow::Result<()> {
//! use recman_engine::handle::{Drain, Engine};
//! use recman_events::SnapshotRequest;
//!
//! // The data dir's log, the in-process bus, one local worker for the
//! // config's targets, the relay to the in-process events address.
//! let engine = Engine::builder(&config).data_dir("./recman-data").start().await?;
//! let req = SnapshotRequest::from_json(br#"{"request_id":"r1","targets":["db01"]}"#)?;
//! let (accepted, mut events) = engine.submit_and_follow(req, "cli").await?;
//! while let Some(e) = events.next().await {
//!     println!("{} {}", e?.seq, accepted.job); // until the job's terminal event
//! }
//! // No new requests, wait until nothing is frozen, stop the engine, the
//! // workers and the relay, close the log.
//! let stopped = engine.shutdown(Drain::Default).await?;
//! println!("log closed at seq {}", stopped.last_seq);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use recman_config::Config;
use recman_events::bus::{Bus, MemoryBus};
use recman_events::{EventLog, JobId, LogError, SnapshotRequest, StoredEvent, WorkerId};
use recman_workers::runtime::{Worker, WorkerError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::runtime;
use crate::runtime::relay::{self, Cursor, RelayError, RelayOptions};

mod caller;
mod follow;

pub use caller::{Accepted, CallError, Caller, Pruned};
pub use follow::JobEvents;

/// Calls waiting for the engine loop.
const CALLS: usize = 1024;
/// How long local workers let their steps in flight finish once the drain
/// is over (it waited for frozen targets already); then they abandon them
/// and thaw what is still frozen, so `--drain-timeout` bounds a shutdown.
const LOCAL_STOP_GRACE: Duration = Duration::from_secs(2);
/// How often shutdown looks again whether something is still frozen.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Where the events relay publishes and where it keeps its cursor.
pub struct Relay {
    /// Its own connection (default: the engine's bus).
    pub bus: Option<Arc<dyn Bus>>,
    pub cursor: Cursor,
    pub options: RelayOptions,
    /// How long shutdown waits for it to publish what the log holds.
    pub stop_within: Duration,
}

impl Relay {
    /// To the in-process bus: from the log's end, no cursor file.
    pub fn in_process() -> Relay {
        Relay {
            bus: None,
            cursor: Cursor::ephemeral(),
            options: RelayOptions::default(),
            stop_within: Duration::from_secs(10),
        }
    }

    /// To a broker: resumes from the durable cursor in `data_dir`.
    pub fn durable(data_dir: &Path) -> Relay {
        Relay {
            cursor: Cursor::in_data_dir(data_dir),
            ..Relay::in_process()
        }
    }

    /// To a broker: resumes from the durable cursor beside the log: in the
    /// PostgreSQL log's database when `[log] postgres` names one (a standby
    /// that takes over goes on from there), else in `data_dir`.
    pub fn durable_for(config: &Config, data_dir: &Path) -> anyhow::Result<Relay> {
        match crate::home::pg_place(config)? {
            Some(place) => Ok(Relay {
                cursor: Cursor::postgres(&place)?,
                ..Relay::in_process()
            }),
            None => Ok(Relay::durable(data_dir)),
        }
    }
}

/// A local worker and its own bus (`None`: the engine's).
type LocalWorker = (Worker, Option<Arc<dyn Bus>>);

/// Where the log comes from.
enum LogFrom {
    Given(Arc<dyn EventLog>),
    DataDir(PathBuf),
}

/// Starts an [`Engine`]; see the module example.
pub struct Builder {
    config: Config,
    log: Option<LogFrom>,
    bus: Option<Arc<dyn Bus>>,
    workers: Option<Vec<LocalWorker>>,
    seed: Option<u64>,
    relay: Option<Relay>,
    checkpoints: Option<crate::checkpoint::Checkpoints>,
}

impl Builder {
    /// Where the engine's checkpoints go and when (default: none with
    /// `.log()`; with `.data_dir()`, files in it on the config's
    /// `[checkpoint]` policy).
    pub fn checkpoints(mut self, c: Option<crate::checkpoint::Checkpoints>) -> Self {
        self.checkpoints = c;
        self
    }

    /// The log to run on (the engine must be its only writer).
    pub fn log(mut self, log: Arc<dyn EventLog>) -> Self {
        self.log = Some(LogFrom::Given(log));
        self
    }

    /// Opens the log of `dir` (creating a redb log when there is none).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log = Some(LogFrom::DataDir(dir.into()));
        self
    }

    /// The bus (default: a new in-process bus, closed at shutdown).
    pub fn bus(mut self, bus: Arc<dyn Bus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Adds a local worker on the engine's bus. Without any `worker` call the
    /// engine hosts one: `local-<pid>` for every pool of the config.
    pub fn worker(mut self, w: Worker) -> Self {
        self.workers.get_or_insert_with(Vec::new).push((w, None));
        self
    }

    /// Adds a local worker on a bus (connection) of its own.
    pub fn worker_on(mut self, w: Worker, bus: Arc<dyn Bus>) -> Self {
        self.workers.get_or_insert_with(Vec::new).push((w, Some(bus)));
        self
    }

    /// No local workers (they run elsewhere, on the broker).
    pub fn no_workers(mut self) -> Self {
        self.workers = Some(Vec::new());
        self
    }

    /// Seed of the core's PRNG (retry jitter); default: the clock.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The events relay (default: [`Relay::in_process`]).
    pub fn relay(mut self, relay: Relay) -> Self {
        self.relay = Some(relay);
        self
    }

    /// No events relay (`recman engine --no-relay`).
    pub fn no_relay(mut self) -> Self {
        self.relay = None;
        self
    }

    /// Opens the log if asked to, starts the workers, the engine (which first
    /// replays the log) and the relay. Must run inside a tokio runtime.
    pub async fn start(self) -> anyhow::Result<Engine> {
        let mut checkpoints = self.checkpoints;
        let log = match self.log {
            Some(LogFrom::Given(l)) => l,
            Some(LogFrom::DataDir(dir)) => {
                let l = crate::home::open_detected_patiently(&dir)
                    .map_err(|e| crate::api::discovery::explain_locked(&dir, e))?;
                checkpoints.get_or_insert_with(|| crate::checkpoint::Checkpoints {
                    store: Arc::new(crate::checkpoint::FileStore::in_data_dir(&dir)),
                    policy: crate::checkpoint::Policy::from_config(&self.config),
                });
                l
            }
            None => anyhow::bail!("the engine needs a log: call .log() or .data_dir()"),
        };
        let memory = self.bus.is_none().then(MemoryBus::new);
        let bus: Arc<dyn Bus> = match (&self.bus, &memory) {
            (Some(b), _) => b.clone(),
            (None, Some(m)) => Arc::new(m.clone()),
            (None, None) => unreachable!("a bus is given or made"),
        };
        let workers = self.workers.unwrap_or_else(|| {
            let id = WorkerId::from(format!("local-{}", std::process::id()));
            vec![(Worker::from_config(id, &self.config), None)]
        });
        let (workers_stop, stop_rx) = watch::channel(false);
        let workers = workers
            .into_iter()
            .map(|(w, own)| {
                let id = w.id().clone();
                let bus = own.unwrap_or_else(|| bus.clone());
                // The drain has waited for frozen targets already.
                let w = w.with_stop_grace(LOCAL_STOP_GRACE);
                (id, tokio::spawn(w.run(bus, until_true(stop_rx.clone()))))
            })
            .collect();
        let (calls, calls_rx) = mpsc::channel(CALLS);
        let (engine_stop, stop_rx) = watch::channel(false);
        let seed = self.seed.unwrap_or_else(recman_events::clock::now_ms);
        let engine_task = tokio::spawn(runtime::run(
            runtime::core_config(&self.config, seed),
            log.clone(),
            bus.clone(),
            calls_rx,
            until_true(stop_rx),
            checkpoints,
        ));
        // `[log] archive_after`: old records move to closed segments, beside
        // the loop; it ends with the engine.
        if let Some(older_than) = self.config.log.archive_after {
            tokio::spawn(crate::archive::run(
                log.clone(),
                older_than,
                self.config.log.segment_records(),
                engine_stop.subscribe(),
            ));
        }
        // Stopped after the engine, so it relays everything the engine wrote.
        let relay = self.relay.map(|r| {
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(relay::run_with(
                log.clone(),
                r.bus.unwrap_or_else(|| bus.clone()),
                r.cursor,
                r.options,
                until_true(stop_rx),
            ));
            RelayTask {
                stop,
                task,
                within: r.stop_within,
            }
        });
        let drain_within = self
            .config
            .targets
            .iter()
            .map(|t| t.freeze_limit)
            .max()
            .unwrap_or_default()
            + Duration::from_secs(5);
        Ok(Engine {
            caller: Caller::new(calls, log.clone()),
            log,
            bus,
            memory,
            engine_stop,
            engine_task: Some(engine_task),
            workers_stop,
            workers,
            relay,
            drain_within,
        })
    }
}

async fn until_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

struct RelayTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), RelayError>>,
    within: Duration,
}

/// How long shutdown waits for frozen targets to be thawed before it stops
/// the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// The longest freeze limit of the config plus 5 s.
    Default,
    Within(Duration),
    /// Stop at once (the workers still thaw what they froze as they stop).
    Skip,
}

/// What a shutdown found.
#[derive(Debug)]
pub struct Stopped {
    /// Nothing was frozen when the engine stopped (false: the drain timed out
    /// or was skipped with something frozen; the workers thawed as they stopped).
    pub thawed: bool,
    /// The log's last sequence number.
    pub last_seq: u64,
    /// The relay's end: `None` without a relay, else `Err(message)` when it
    /// failed or did not finish in time.
    pub relay: Option<Result<(), String>>,
}

/// A running engine with its workers and relay. Dropping it without
/// [`Engine::shutdown`] aborts nothing: call shutdown.
pub struct Engine {
    caller: Caller,
    log: Arc<dyn EventLog>,
    bus: Arc<dyn Bus>,
    /// The in-process bus the builder made (closed at shutdown).
    memory: Option<MemoryBus>,
    engine_stop: watch::Sender<bool>,
    /// `None` once it ended (see [`Engine::stopped`]).
    engine_task: Option<JoinHandle<anyhow::Result<()>>>,
    workers_stop: watch::Sender<bool>,
    workers: Vec<(WorkerId, JoinHandle<Result<(), WorkerError>>)>,
    relay: Option<RelayTask>,
    drain_within: Duration,
}

impl Engine {
    /// A builder for an engine serving `config`'s targets.
    pub fn builder(config: &Config) -> Builder {
        Builder {
            config: config.clone(),
            log: None,
            bus: None,
            workers: None,
            seed: None,
            relay: Some(Relay::in_process()),
            checkpoints: None,
        }
    }

    /// The call side, to hand to the HTTP API or other tasks.
    pub fn caller(&self) -> Caller {
        self.caller.clone()
    }

    pub async fn submit(&self, req: SnapshotRequest, origin: &str) -> Result<Accepted, CallError> {
        self.caller.submit(req, origin).await
    }

    pub async fn cancel(&self, job: JobId, reason: impl Into<String>) -> Result<Accepted, CallError> {
        self.caller.cancel(job, reason).await
    }

    /// See [`Caller::submit_and_follow`].
    pub async fn submit_and_follow(
        &self,
        req: SnapshotRequest,
        origin: &str,
    ) -> Result<(Accepted, JobEvents), CallError> {
        self.caller.submit_and_follow(req, origin).await
    }

    /// See [`Caller::recover_and_follow`].
    pub async fn recover_and_follow(
        &self,
        req: recman_events::RecoveryRequest,
        origin: &str,
    ) -> Result<(Accepted, JobEvents), CallError> {
        self.caller.recover_and_follow(req, origin).await
    }

    /// See [`Caller::follow`].
    pub fn follow(&self, job: JobId) -> Result<JobEvents, LogError> {
        self.caller.follow(job)
    }

    /// See [`Caller::submit_and_wait`].
    pub async fn submit_and_wait(
        &self,
        req: SnapshotRequest,
        origin: &str,
    ) -> Result<(Accepted, Vec<StoredEvent>), CallError> {
        self.caller.submit_and_wait(req, origin).await
    }

    /// See [`Caller::wait`].
    pub async fn wait(&self, job: JobId) -> Result<Vec<StoredEvent>, LogError> {
        self.caller.wait(job).await
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// The engine's bus (the local workers' too, unless given their own).
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// The default drain of [`Drain::Default`].
    pub fn drain_within(&self) -> Duration {
        self.drain_within
    }

    /// Resolves when the engine loop ends by itself: `Ok` when its inputs
    /// closed (the bus went away), `Err` when it failed. Cancel-safe; pending
    /// forever after it returned once. Call [`Engine::shutdown`] afterwards.
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        let Some(task) = self.engine_task.as_mut() else {
            return std::future::pending().await;
        };
        let r = task.await;
        self.engine_task = None;
        r.map_err(|e| anyhow::anyhow!("the engine task failed: {e}"))?
    }

    /// Stops cleanly: no new requests; wait (see [`Drain`]) until no target
    /// is frozen; stop the engine, then the workers (which give their steps
    /// in flight 2 s more, then thaw anything still frozen), then the relay (after it published what the log
    /// holds); close the bus it made and the log (once other holders of
    /// [`Engine::log`] let go). An error of the engine or a worker is returned.
    pub async fn shutdown(mut self, drain: Drain) -> anyhow::Result<Stopped> {
        self.caller.stop_accepting();
        let within = match drain {
            Drain::Default => Some(self.drain_within),
            Drain::Within(d) => Some(d),
            Drain::Skip => None,
        };
        let thawed = match (within, self.engine_task.is_some()) {
            (Some(d), true) => self.wait_thawed(d).await,
            _ => self.caller.query(crate::view::any_frozen).await.is_ok_and(|f| !f),
        };
        let _ = self.engine_stop.send(true);
        let engine = match self.engine_task.take() {
            Some(t) => t
                .await
                .map_err(|e| anyhow::anyhow!("the engine task failed: {e}"))
                .and_then(|r| r.context("the engine stopped")),
            None => Ok(()),
        };
        let _ = self.workers_stop.send(true);
        let mut worker = Ok(());
        for (id, t) in self.workers.drain(..) {
            let r = match t.await {
                Ok(r) => r.with_context(|| format!("worker {id}")),
                Err(e) => Err(anyhow::anyhow!("worker {id} task failed: {e}")),
            };
            worker = worker.and(r);
        }
        let relay = match self.relay.take() {
            None => None,
            Some(r) => {
                let _ = r.stop.send(true);
                Some(match tokio::time::timeout(r.within, r.task).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(e))) => Err(format!("events relay: {e}")),
                    Ok(Err(e)) => Err(format!("events relay: {e}")),
                    Err(_) => Err(format!("the events relay did not stop within {:?}", r.within)),
                })
            }
        };
        if let Some(m) = &self.memory {
            m.close();
        }
        let last_seq = self.log.last_seq();
        engine?;
        worker?;
        Ok(Stopped {
            thawed,
            last_seq,
            relay,
        })
    }

    /// Polls the core until no job may hold a frozen target; false after `within`.
    async fn wait_thawed(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            match self.caller.query(crate::view::any_frozen).await {
                Ok(false) => return true,
                Ok(true) => {}
                Err(_) => return false, // the engine is gone: the workers thaw as they stop
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(DRAIN_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }
}
