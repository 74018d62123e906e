//! The durable-before-send rule, shown with a log whose appends the test
//! holds open: while the append of a request's events has not returned, the
//! request is not acknowledged and no command leaves; once it returns, the
//! command that follows finds its cause in the log. A failed append stops
//! the engine, and nothing is sent for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use recman_config::{Config, DEFAULT_POOL};
use recman_engine::handle::Engine;
use recman_events::bus::Address;
use recman_events::log::{BoxFuture, RawRecord};
use recman_events::{
    log, Backend, Event, EventBody, EventLog, JobId, LogError, PoolName, SnapshotRequest, Stage, StoredEvent,
};
use tokio::sync::watch;

/// How long the test watches for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);

/// An in-memory log whose appends wait while the test holds the gate, and
/// fail when it says so.
struct HeldLog {
    inner: Arc<dyn EventLog>,
    open: watch::Sender<bool>,
    fail: AtomicBool,
}

impl HeldLog {
    fn new() -> Arc<HeldLog> {
        Arc::new(HeldLog {
            inner: log::memory::open().unwrap(),
            open: watch::Sender::new(true),
            fail: AtomicBool::new(false),
        })
    }

    fn hold(&self) {
        self.open.send_replace(false);
    }

    fn release(&self) {
        self.open.send_replace(true);
    }
}

impl EventLog for HeldLog {
    fn append(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        Box::pin(async move {
            let mut open = self.open.subscribe();
            open.wait_for(|o| *o).await.map_err(|_| LogError::Closed)?;
            if self.fail.load(Ordering::SeqCst) {
                return Err(LogError::Store("disk on fire (test)".into()));
            }
            self.inner.append(events).await
        })
    }
    fn read(&self, from: u64, max: usize) -> Result<Vec<StoredEvent>, LogError> {
        self.inner.read(from, max)
    }
    fn read_job(&self, job: JobId) -> Result<Vec<StoredEvent>, LogError> {
        self.inner.read_job(job)
    }
    fn read_raw(&self, from: u64, max: usize) -> Result<Vec<RawRecord>, LogError> {
        self.inner.read_raw(from, max)
    }
    fn subscribe(&self, from: u64) -> log::Subscription {
        self.inner.subscribe(from)
    }
    fn last_seq(&self) -> u64 {
        self.inner.last_seq()
    }
    fn backend(&self) -> Backend {
        Backend::Memory
    }
}

fn config(dir: &std::path::Path) -> Config {
    let toml =
        "[[target]]\nid = \"t1\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"none\"\n";
    Config::from_str(toml, dir.join("recman.toml")).unwrap()
}

fn request(id: &str) -> SnapshotRequest {
    SnapshotRequest::from_json(format!(r#"{{"request_id":"{id}","targets":["t1"]}}"#).as_bytes()).unwrap()
}

/// An engine on `log` with no workers and no relay: the pool's queue holds
/// whatever the engine sends, for the test to look at.
async fn engine(log: Arc<HeldLog>) -> Engine {
    let dir = recman_testkit::temp_dir();
    Engine::builder(&config(dir.path()))
        .log(log)
        .no_workers()
        .no_relay()
        .seed(1)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_and_no_command_before_the_append_returns() {
    let log = HeldLog::new();
    let engine = engine(log.clone()).await;
    let mut pool = engine
        .bus()
        .consume(Address::Pool(PoolName::new(DEFAULT_POOL)), 16)
        .await
        .unwrap();

    log.hold();
    let caller = engine.caller();
    let mut submit = tokio::spawn(async move { caller.submit(request("r1"), "test").await });
    // Held: the request is not acknowledged and nothing is sent.
    tokio::select! {
        r = &mut submit => panic!("acknowledged before its event was durable: {r:?}"),
        d = pool.recv() => panic!("a command left before its event was durable: {d:?}"),
        _ = tokio::time::sleep(QUIET) => {}
    }
    assert_eq!(
        log.last_seq(),
        0,
        "nothing is in the log while the append is held"
    );

    log.release();
    let accepted = tokio::time::timeout(recman_testkit::DEADLINE, submit)
        .await
        .expect("acknowledged once durable")
        .unwrap()
        .unwrap();
    let cmd = tokio::time::timeout(recman_testkit::DEADLINE, pool.recv())
        .await
        .expect("the freeze command follows")
        .expect("the pool queue is open");
    // When the command arrives, the event that caused it is already in the log.
    let events = log.read_job(accepted.job).unwrap();
    assert!(
        events.iter().any(|e| matches!(
            e.event.body,
            EventBody::StageStarted {
                stage: Stage::Freeze,
                ..
            }
        )),
        "the command {:?} arrived before its stage_started(freeze) was durable: {:?}",
        cmd.message,
        events.iter().map(|e| e.event.body.kind()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_append_stops_the_engine_and_sends_nothing() {
    let log = HeldLog::new();
    let mut engine = engine(log.clone()).await;
    let mut pool = engine
        .bus()
        .consume(Address::Pool(PoolName::new(DEFAULT_POOL)), 16)
        .await
        .unwrap();

    log.fail.store(true, Ordering::SeqCst);
    let submitted = tokio::time::timeout(recman_testkit::DEADLINE, engine.submit(request("r1"), "test"))
        .await
        .expect("the caller gets an answer");
    assert!(
        submitted.is_err(),
        "a request whose append failed was acknowledged: {submitted:?}"
    );
    let stopped = tokio::time::timeout(recman_testkit::DEADLINE, engine.stopped())
        .await
        .expect("the engine stops after a failed append");
    let err = stopped.expect_err("the engine's end reports the failed append");
    assert!(format!("{err:#}").contains("disk on fire"), "{err:#}");
    tokio::select! {
        d = pool.recv() => assert!(d.is_none(), "a command left for an event that never became durable: {d:?}"),
        _ = tokio::time::sleep(QUIET) => {}
    }
    assert_eq!(log.last_seq(), 0);
}
