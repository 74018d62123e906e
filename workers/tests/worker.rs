//! The worker runtime end to end on the in-process bus: real hook scripts
//! (argv `/bin/sh -c …` inside fixtures only), real directories, real timers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use recman_config::Config;
use recman_core::worker::Hold;
use recman_events::bus::{msg_type, Address, Bus, Consumer, Message, REASON_HEADER};
use recman_events::wire::{self, Command, Outcome, Report};
use recman_events::{
    snapshot_name, JobId, MemoryBus, PoolName, SnapshotKind, Stage, StepDetail, TargetId, WorkerId,
};
use recman_testkit::{wait_until_async, DEADLINE};
use recman_workers::runtime::HostState;
use recman_workers::{Worker, WorkerError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const POOL: &str = "host.local";

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), WorkerError>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("worker stops")
            .unwrap()
            .unwrap();
    }
}

fn sh(script: &str) -> String {
    format!("[\"/bin/sh\", \"-c\", {:?}]", script)
}

fn config(dir: &Path, targets: &str) -> Config {
    Config::from_str(targets, dir.join("recman.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// One exec-writer target `db01` whose hooks append to marker files in `dir`.
fn exec_target(dir: &Path, freeze: &str, freeze_limit: &str, timeout: &str) -> String {
    let d = dir.display();
    format!(
        "[[target]]\nid = \"db01\"\nfreeze_limit = \"{freeze_limit}\"\n[target.writer]\ntype = \"exec\"\nfreeze = {}\nthaw = {}\nflush = {}\ntimeout = \"{timeout}\"\n[target.provider]\ntype = \"none\"\n",
        sh(freeze),
        sh(&format!("echo thaw >> {d}/thawed")),
        sh(&format!("echo flush >> {d}/flushed")),
    )
}

fn start(bus: &MemoryBus, worker: Worker) -> Running {
    let (stop, rx) = oneshot::channel::<()>();
    let bus: Arc<dyn Bus> = Arc::new(bus.clone());
    let task = tokio::spawn(worker.run(bus, async {
        let _ = rx.await;
    }));
    Running { stop, task }
}

fn worker(cfg: &Config) -> Worker {
    Worker::new(WorkerId::from("w1"), vec![PoolName::from(POOL)], cfg)
}

fn command(job: JobId, stage: Stage, targets: &[&str]) -> Command {
    let targets: Vec<TargetId> = targets.iter().map(|t| TargetId::from(*t)).collect();
    Command {
        schema_version: 1,
        message_id: Command::message_id_for(job, 1, stage, &targets[0]),
        job,
        attempt: 1,
        stage,
        targets,
        kind: SnapshotKind::Full,
        snapshot_name: (stage == Stage::Snapshot).then(|| snapshot_name(job, 1)),
        thaw_deadline_ms: None,
        prune: Vec::new(),
        fingerprints: Vec::new(),
        recovery: None,
    }
}

/// `command` for attempt `attempt` of `job` (its message id too).
fn command_of_attempt(job: JobId, stage: Stage, attempt: u32) -> Command {
    let mut c = command(job, stage, &["db01"]);
    c.attempt = attempt;
    c.message_id = Command::message_id_for(job, attempt, stage, &c.targets[0]);
    c
}

async fn send(bus: &MemoryBus, to: Address, cmd: &Command) {
    let m = Message::new(msg_type::COMMAND, cmd.message_id.clone(), wire::encode(cmd));
    bus.publish(to, m).await.unwrap();
}

async fn send_pool(bus: &MemoryBus, cmd: &Command) {
    send(bus, Address::Pool(PoolName::from(POOL)), cmd).await
}

async fn reports(bus: &MemoryBus) -> Consumer {
    bus.consume(Address::Reports, 100).await.unwrap()
}

async fn next_report(c: &mut Consumer, within: Duration) -> Report {
    let d = tokio::time::timeout(within, c.recv())
        .await
        .expect("a report in time")
        .expect("bus open");
    let r: Report = wire::decode(&d.message.body).unwrap();
    assert_eq!(d.message.message_id, r.message_id);
    d.ack().await.unwrap();
    r
}

async fn no_report(c: &mut Consumer, within: Duration) {
    if let Ok(Some(d)) = tokio::time::timeout(within, c.recv()).await {
        panic!("unexpected report {}", String::from_utf8_lossy(&d.message.body));
    }
}

fn err_of(r: &Report) -> &recman_events::StepError {
    match &r.outcome {
        Outcome::Err { error } => error,
        Outcome::Ok { detail } => panic!("expected an error, got {detail:?}"),
    }
}

fn detail_of(r: &Report) -> &StepDetail {
    match &r.outcome {
        Outcome::Ok { detail } => detail,
        Outcome::Err { error } => panic!("expected success, got {error:?}"),
    }
}

fn lines(p: PathBuf) -> usize {
    std::fs::read_to_string(p).map(|s| s.lines().count()).unwrap_or(0)
}

const SEC5: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_freeze_reports_stderr_and_is_not_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &exec_target(
            dir.path(),
            "echo 'cannot quiesce: db locked' >&2; exit 2",
            "10s",
            "5s",
        ),
    );
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    let job = JobId::new_v7();
    send_pool(&bus, &command(job, Stage::Freeze, &["db01"])).await;
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!((r.job, r.stage, r.worker.as_str()), (job, Stage::Freeze, "w1"));
    let e = err_of(&r);
    assert_eq!(e.code, "exec_failed");
    assert!(!e.retryable);
    assert!(e.message.contains("cannot quiesce: db locked"), "{}", e.message);
    // The ack follows the report's publish.
    let pool = Address::Pool(PoolName::from(POOL));
    wait_until_async("the command's ack", DEADLINE, || bus.depth(&pool) == (0, 0)).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_75_is_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &exec_target(dir.path(), "exit 75", "10s", "5s"));
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    send_pool(&bus, &command(JobId::new_v7(), Stage::Freeze, &["db01"])).await;
    let e = err_of(&next_report(&mut rep, SEC5).await).clone();
    assert_eq!((e.code.as_str(), e.retryable), ("exec_failed", true));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_freeze_is_killed_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &exec_target(dir.path(), "sleep 30", "10s", "300ms"));
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    let t = std::time::Instant::now();
    send_pool(&bus, &command(JobId::new_v7(), Stage::Freeze, &["db01"])).await;
    let r = next_report(&mut rep, SEC5).await;
    let e = err_of(&r);
    assert_eq!((e.code.as_str(), e.retryable), ("timeout", true));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(r.duration_us >= 300_000, "{}", r.duration_us);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_targets_are_refused_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("froze");
    let cfg = config(
        dir.path(),
        &exec_target(
            dir.path(),
            &format!("echo f >> {}", marker.display()),
            "10s",
            "5s",
        ),
    );
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    // A group with one known and one unknown target: nothing may run at all.
    send_pool(&bus, &command(JobId::new_v7(), Stage::Freeze, &["db01", "ghost"])).await;
    let r = next_report(&mut rep, SEC5).await;
    let e = err_of(&r);
    assert_eq!((e.code.as_str(), e.retryable), ("unknown_target", false));
    assert!(e.message.contains("ghost"), "{}", e.message);
    assert!(!marker.exists(), "the freeze hook of db01 must not have run");
    // The worker's own queue is checked the same way.
    send(
        &bus,
        Address::Worker(WorkerId::from("w1")),
        &command(JobId::new_v7(), Stage::Thaw, &["ghost"]),
    )
    .await;
    assert_eq!(err_of(&next_report(&mut rep, SEC5).await).code, "unknown_target");
    assert_eq!(lines(dir.path().join("thawed")), 0);
    w.stop().await;
}

/// The freeze window ends when the writer's thaw returned (README: freeze
/// return → thaw return): a thaw that takes 300 ms is inside it, for a
/// commanded thaw and for the watchdog's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_freeze_window_includes_the_thaw_itself() {
    let dir = tempfile::tempdir().unwrap();
    let slow_thaw = format!(
        "[[target]]\nid = \"db01\"\nfreeze_limit = \"1s\"\n[target.writer]\ntype = \"exec\"\nfreeze = {}\nthaw = {}\ntimeout = \"5s\"\n[target.provider]\ntype = \"none\"\n",
        sh("true"),
        sh("sleep 0.3"),
    );
    let cfg = config(dir.path(), &slow_thaw);
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let _w = start(&bus, worker(&cfg));
    let window_of = |r: &Report| match detail_of(r) {
        StepDetail::Thawed {
            freeze_window_us,
            by_watchdog,
        } => (*freeze_window_us, *by_watchdog),
        d => panic!("{d:?}"),
    };
    // Commanded: thawed at once, the window is the thaw's 300 ms.
    let job = JobId::new_v7();
    send_pool(&bus, &command(job, Stage::Freeze, &["db01"])).await;
    next_report(&mut rep, SEC5).await;
    send(
        &bus,
        Address::Worker(WorkerId::from("w1")),
        &command(job, Stage::Thaw, &["db01"]),
    )
    .await;
    let (window, by_watchdog) = window_of(&next_report(&mut rep, SEC5).await);
    assert!(!by_watchdog);
    assert!((300_000..900_000).contains(&window), "{window}");
    // The watchdog, at the 1 s freeze limit (timed from before the freeze
    // hook, the window from its return): about 1.3 s, less the hook's time.
    let job = JobId::new_v7();
    send_pool(&bus, &command(job, Stage::Freeze, &["db01"])).await;
    next_report(&mut rep, SEC5).await;
    let (window, by_watchdog) = window_of(&next_report(&mut rep, SEC5).await);
    assert!(by_watchdog);
    assert!((1_200_000..2_000_000).contains(&window), "{window}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_then_thaw_measures_the_window_and_cancels_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let froze = dir.path().join("froze");
    let cfg = config(
        dir.path(),
        &exec_target(
            dir.path(),
            &format!("echo f >> {}", froze.display()),
            "700ms",
            "5s",
        ),
    );
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    let job = JobId::new_v7();
    let freeze = command(job, Stage::Freeze, &["db01"]);
    send_pool(&bus, &freeze).await;
    let r = next_report(&mut rep, SEC5).await;
    let StepDetail::Frozen { deadline_ms } = detail_of(&r) else {
        panic!("{r:?}")
    };
    assert!(*deadline_ms > 0);
    // A redelivered freeze is answered from memory: the hook runs once and
    // the report is the first one (its duration is that of the answer: the
    // redelivery may beat the report cache and be answered by the worker
    // core's first outcome instead).
    send_pool(&bus, &freeze).await;
    let again = next_report(&mut rep, SEC5).await;
    assert_eq!(
        (&again.message_id, &again.outcome, again.attempt),
        (&r.message_id, &r.outcome, r.attempt)
    );
    assert_eq!(lines(froze.clone()), 1);

    tokio::time::sleep(Duration::from_millis(100)).await;
    // The thaw goes to the worker's own queue, as the engine routes it.
    send(
        &bus,
        Address::Worker(WorkerId::from("w1")),
        &command(job, Stage::Thaw, &["db01"]),
    )
    .await;
    let r = next_report(&mut rep, SEC5).await;
    let StepDetail::Thawed {
        freeze_window_us,
        by_watchdog,
    } = detail_of(&r)
    else {
        panic!("{r:?}")
    };
    assert!(!by_watchdog);
    assert!(
        (100_000..700_000).contains(freeze_window_us),
        "{freeze_window_us}"
    );
    assert_eq!(lines(dir.path().join("thawed")), 1);
    // Past the freeze limit: the cancelled watchdog stays quiet.
    no_report(&mut rep, Duration::from_millis(2200)).await;
    assert_eq!(lines(dir.path().join("thawed")), 1);

    send_pool(&bus, &command(job, Stage::FlushLogs, &["db01"])).await;
    assert_eq!(
        detail_of(&next_report(&mut rep, SEC5).await),
        &StepDetail::Flushed
    );
    assert_eq!(lines(dir.path().join("flushed")), 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_thaws_at_the_freeze_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &exec_target(dir.path(), "true", "300ms", "5s"));
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    let job = JobId::new_v7();
    let mut freeze = command(job, Stage::Freeze, &["db01"]);
    freeze.thaw_deadline_ms = Some(u64::MAX); // the engine's deadline is later: the limit wins
    let t = std::time::Instant::now();
    send_pool(&bus, &freeze).await;
    assert!(matches!(
        detail_of(&next_report(&mut rep, SEC5).await),
        StepDetail::Frozen { .. }
    ));
    let frozen_by = t.elapsed();
    assert_eq!(lines(dir.path().join("thawed")), 0);
    let r = next_report(&mut rep, SEC5).await;
    let elapsed = t.elapsed();
    assert_eq!((r.stage, r.job, r.worker.as_str()), (Stage::Thaw, job, "w1"));
    assert!(r.message_id.ends_with("/watchdog"), "{}", r.message_id);
    let StepDetail::Thawed {
        freeze_window_us,
        by_watchdog,
    } = detail_of(&r)
    else {
        panic!("{r:?}")
    };
    assert!(by_watchdog);
    // The timer runs from before the freeze hook (a failed freeze may have
    // landed), the window from when the hook returned: at least the limit
    // less the time the freeze took to be reported, at most the time that
    // passed since the command was sent.
    let watchdog_window = *freeze_window_us;
    let least = Duration::from_millis(300).saturating_sub(frozen_by);
    assert!(
        Duration::from_micros(watchdog_window) >= least,
        "{watchdog_window} us < {least:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(
        Duration::from_micros(watchdog_window) <= elapsed,
        "{watchdog_window} us > {elapsed:?}"
    );
    assert_eq!(lines(dir.path().join("thawed")), 1, "the thaw hook ran");
    // A late thaw still runs (idempotent), succeeds, and says the watchdog
    // ended this attempt's freeze (worker core: a thaw after the watchdog).
    send_pool(&bus, &command(job, Stage::Thaw, &["db01"])).await;
    let StepDetail::Thawed {
        freeze_window_us,
        by_watchdog,
    } = detail_of(&next_report(&mut rep, SEC5).await).clone()
    else {
        panic!()
    };
    // The window is the one the watchdog's thaw ended (the host's freeze
    // state), not 0 (issue 23 item 3).
    assert_eq!((freeze_window_us, by_watchdog), (watchdog_window, true));
    assert_eq!(lines(dir.path().join("thawed")), 2, "the thaw hook ran again");
    w.stop().await;
}

/// A watchdog thaw whose writer thaw fails every try keeps the target held
/// (the host state says frozen, as it is): a freeze of another job is
/// refused `busy`, and the watchdog tries again until the thaw works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchdog_thaw_that_failed_keeps_the_hold_and_tries_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // The first three thaws fail (one watchdog round), the fourth works.
    let thaw =
        format!("echo try >> {d}/tries; [ $(wc -l < {d}/tries) -ge 4 ] || exit 3; echo thaw >> {d}/thawed");
    let text = format!(
        "[[target]]\nid = \"db01\"\nfreeze_limit = \"300ms\"\n[target.writer]\ntype = \"exec\"\nfreeze = {}\nthaw = {}\ntimeout = \"5s\"\n[target.provider]\ntype = \"none\"\n",
        sh("true"),
        sh(&thaw),
    );
    let cfg = config(dir.path(), &text);
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    let job = JobId::new_v7();
    send_pool(&bus, &command(job, Stage::Freeze, &["db01"])).await;
    assert!(matches!(
        detail_of(&next_report(&mut rep, SEC5).await),
        StepDetail::Frozen { .. }
    ));
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!((r.stage, r.job), (Stage::Thaw, job));
    assert!(r.message_id.ends_with("/watchdog"), "{}", r.message_id);
    assert_eq!(err_of(&r).code, "exec_failed", "{r:?}");
    assert_eq!(lines(dir.path().join("tries")), 3);
    assert_eq!(lines(dir.path().join("thawed")), 0);

    // Still frozen as far as the host knows: another job may not freeze.
    let other = JobId::new_v7();
    send_pool(&bus, &command(other, Stage::Freeze, &["db01"])).await;
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!((r.stage, r.job), (Stage::Freeze, other));
    assert_eq!(err_of(&r).code, "busy", "{r:?}");

    // The watchdog tries again and thaws.
    let r = next_report(&mut rep, Duration::from_secs(10)).await;
    assert_eq!((r.stage, r.job), (Stage::Thaw, job));
    assert!(
        matches!(
            detail_of(&r),
            StepDetail::Thawed {
                by_watchdog: true,
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(lines(dir.path().join("thawed")), 1);
    // Released now: the other job freezes.
    let other = JobId::new_v7();
    send_pool(&bus, &command(other, Stage::Freeze, &["db01"])).await;
    let r = next_report(&mut rep, SEC5).await;
    assert!(matches!(detail_of(&r), StepDetail::Frozen { .. }), "{r:?}");
    w.stop().await;
}

/// A watchdog thaw keeps the target held in the host state until the
/// writer's thaw returned: a process killed during it leaves the hold, so
/// another process of the host adopts it and thaws again (a thaw released
/// before it ran could be lost with its process, the target left frozen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchdog_thaw_releases_the_hold_only_when_its_thaw_returned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let state = dir.path().join("state");
    let text = format!(
        "[[target]]\nid = \"db01\"\nfreeze_limit = \"300ms\"\n[target.writer]\ntype = \"exec\"\nfreeze = {}\nthaw = {}\ntimeout = \"5s\"\n[target.provider]\ntype = \"none\"\n",
        sh("true"),
        sh(&format!("touch {d}/thawing; sleep 1; echo thaw >> {d}/thawed")),
    );
    let cfg = config(dir.path(), &text);
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg).with_state_dir(&state));
    let job = JobId::new_v7();
    send_pool(&bus, &command(job, Stage::Freeze, &["db01"])).await;
    assert!(matches!(
        detail_of(&next_report(&mut rep, SEC5).await),
        StepDetail::Frozen { .. }
    ));
    let held = || -> Option<String> {
        let f = std::fs::read_dir(state.join("targets"))
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.path().extension().is_some_and(|x| x == "json"))?;
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f.path()).ok()?).ok()?;
        v["hold"]["job"].as_str().map(str::to_string)
    };
    let until = std::time::Instant::now() + SEC5;
    while !dir.path().join("thawing").exists() {
        assert!(
            std::time::Instant::now() < until,
            "the watchdog's thaw never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        held(),
        Some(job.to_string()),
        "released while the watchdog's thaw still runs"
    );
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!((r.stage, r.job), (Stage::Thaw, job));
    assert!(r.message_id.ends_with("/watchdog"), "{}", r.message_id);
    assert_eq!(lines(dir.path().join("thawed")), 1);
    assert_eq!(held(), None, "still held after the thaw returned");
    w.stop().await;
}

/// Issue 12 item 1: a freeze hook that froze the application and then failed
/// may have landed; the worker held the target and armed its watchdog before
/// calling it, so the watchdog thaws it at the limit even if no thaw comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_that_failed_is_still_thawed_by_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &exec_target(dir.path(), "echo froze >&2; exit 2", "300ms", "5s"),
    );
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    let job = JobId::new_v7();
    send_pool(&bus, &command(job, Stage::Freeze, &["db01"])).await;
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!(
        (r.stage, err_of(&r).code.as_str()),
        (Stage::Freeze, "exec_failed")
    );
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!((r.stage, r.job), (Stage::Thaw, job));
    assert!(r.message_id.ends_with("/watchdog"), "{}", r.message_id);
    assert!(matches!(
        detail_of(&r),
        StepDetail::Thawed {
            by_watchdog: true,
            ..
        }
    ));
    assert_eq!(lines(dir.path().join("thawed")), 1, "the thaw hook ran");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_deadline_wins_when_it_is_earlier() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &exec_target(dir.path(), "true", "10s", "5s"));
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    let mut freeze = command(JobId::new_v7(), Stage::Freeze, &["db01"]);
    freeze.thaw_deadline_ms = Some(recman_events::clock::now_ms() + 300);
    send_pool(&bus, &freeze).await;
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!(
        detail_of(&r),
        &StepDetail::Frozen {
            deadline_ms: freeze.thaw_deadline_ms.unwrap()
        }
    );
    let r = next_report(&mut rep, Duration::from_secs(3)).await;
    assert!(matches!(
        detail_of(&r),
        StepDetail::Thawed {
            by_watchdog: true,
            ..
        }
    ));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_thaws_what_is_still_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &exec_target(dir.path(), "true", "1m", "5s"));
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    send_pool(&bus, &command(JobId::new_v7(), Stage::Freeze, &["db01"])).await;
    next_report(&mut rep, SEC5).await;
    w.stop().await;
    assert_eq!(lines(dir.path().join("thawed")), 1);
    let r = next_report(&mut rep, SEC5).await;
    assert!(matches!(
        detail_of(&r),
        StepDetail::Thawed {
            by_watchdog: true,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_commands_are_dead_lettered_and_the_worker_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &exec_target(dir.path(), "true", "10s", "5s"));
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let mut dlq = bus.consume(Address::DeadLetters, 10).await.unwrap();
    let w = start(&bus, worker(&cfg));
    let pool = Address::Pool(PoolName::from(POOL));
    bus.publish(
        pool.clone(),
        Message::new(msg_type::COMMAND, "junk-1", b"{not json".to_vec()),
    )
    .await
    .unwrap();
    let mut future = serde_json::to_value(command(JobId::new_v7(), Stage::Freeze, &["db01"])).unwrap();
    future["schema_version"] = 9.into();
    bus.publish(
        pool.clone(),
        Message::new(
            msg_type::COMMAND,
            "future-1",
            serde_json::to_vec(&future).unwrap(),
        ),
    )
    .await
    .unwrap();
    let mut evil = command(JobId::new_v7(), Stage::Snapshot, &["db01"]);
    evil.snapshot_name = Some("../../etc".into());
    send(&bus, pool.clone(), &evil).await;
    let good = command(JobId::new_v7(), Stage::FlushLogs, &["db01"]);
    send(&bus, pool, &good).await;

    let r = next_report(&mut rep, SEC5).await;
    assert_eq!(
        r.job, good.job,
        "the good command after the bad ones is processed"
    );
    let mut reasons = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let d = tokio::time::timeout(SEC5, dlq.recv()).await.unwrap().unwrap();
        reasons.insert(
            d.message.message_id.clone(),
            d.message.header(REASON_HEADER).unwrap_or_default().to_string(),
        );
        d.ack().await.unwrap();
    }
    assert!(reasons["junk-1"].contains("not valid JSON"), "{reasons:?}");
    assert!(
        reasons["future-1"].contains("unknown schema_version 9"),
        "{reasons:?}"
    );
    assert!(reasons[&evil.message_id].contains("snapshot name"), "{reasons:?}");
    no_report(&mut rep, Duration::from_millis(200)).await;
    w.stop().await;
}

fn copy_config(dir: &Path) -> Config {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("data.db"), vec![1u8; 4096]).unwrap();
    std::fs::write(src.join("sub/log"), b"abc").unwrap();
    config(
        dir,
        "[[target]]\nid = \"fs01\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"copy\"\nsource = \"src\"\ndest = \"snaps\"\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_snapshots_are_idempotent_across_redelivery_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = copy_config(dir.path());
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let job = JobId::new_v7();
    let snap = command(job, Stage::Snapshot, &["fs01"]);
    let name = snap.snapshot_name.clone().unwrap();

    let w = start(&bus, worker(&cfg));
    send_pool(&bus, &snap).await;
    let r = next_report(&mut rep, SEC5).await;
    let StepDetail::Snapshot(info) = detail_of(&r).clone() else {
        panic!("{r:?}")
    };
    assert_eq!(info.name, name);
    assert_eq!(info.provider, "copy");
    assert_eq!(info.size_bytes, Some(4099));
    assert!(!info.existed);
    assert_eq!(
        PathBuf::from(&info.location),
        dir.path().join("snaps").join(&name)
    );
    w.stop().await;

    // A new worker process (no memory of the first) gets the command again.
    let w = start(&bus, worker(&cfg));
    send_pool(&bus, &snap).await;
    let r = next_report(&mut rep, SEC5).await;
    let StepDetail::Snapshot(again) = detail_of(&r).clone() else {
        panic!("{r:?}")
    };
    assert!(again.existed);
    assert_eq!(again.size_bytes, Some(4099));
    let entries: Vec<String> = std::fs::read_dir(dir.path().join("snaps"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        entries
            .iter()
            .filter(|e| !e.ends_with(".owner"))
            .collect::<Vec<_>>(),
        vec![&name],
        "one snapshot, no partial directory left"
    );
    assert!(entries.contains(&format!(".{name}.owner")), "{entries:?}");

    // Prune deletes it, and a redelivered prune (missing = ok) says the same.
    let mut prune = command(job, Stage::Prune, &["fs01"]);
    prune.prune = vec![name.clone()];
    send_pool(&bus, &prune).await;
    assert_eq!(
        detail_of(&next_report(&mut rep, SEC5).await),
        &StepDetail::Pruned {
            deleted: vec![name.clone()],
            failed: vec![]
        }
    );
    assert!(!dir.path().join("snaps").join(&name).exists());
    prune.message_id.push_str("-again");
    send_pool(&bus, &prune).await;
    assert_eq!(
        detail_of(&next_report(&mut rep, SEC5).await),
        &StepDetail::Pruned {
            deleted: vec![name],
            failed: vec![]
        }
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_copies_are_never_visible_while_copying() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = copy_config(dir.path());
    // Enough data that the copy takes a moment.
    for i in 0..200 {
        std::fs::write(dir.path().join(format!("src/f{i}")), vec![i as u8; 64 * 1024]).unwrap();
    }
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    let snap = command(JobId::new_v7(), Stage::Snapshot, &["fs01"]);
    let name = snap.snapshot_name.clone().unwrap();
    send_pool(&bus, &snap).await;
    let fin = dir.path().join("snaps").join(&name);
    // Whenever the final directory exists, it is complete.
    let watcher = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if fin.exists() {
                let n = std::fs::read_dir(&fin).unwrap().count();
                assert_eq!(n, 202, "a visible snapshot must be complete");
                return;
            }
        }
        panic!("snapshot never appeared");
    });
    let r = next_report(&mut rep, Duration::from_secs(10)).await;
    assert!(matches!(detail_of(&r), StepDetail::Snapshot(_)));
    watcher.await.unwrap();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_from_config_serves_its_pools_and_its_own_queue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[[target]]\nid = \"a\"\npool = \"host.x\"\nprovider_pool = \"array.y\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"none\"\n",
    );
    let w = Worker::from_config(WorkerId::from("wx"), &cfg);
    assert_eq!(w.pools(), &[PoolName::from("host.x"), PoolName::from("array.y")]);
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let run = start(&bus, w);
    let job = JobId::new_v7();
    send(
        &bus,
        Address::Pool(PoolName::from("array.y")),
        &command(job, Stage::Snapshot, &["a"]),
    )
    .await;
    let r = next_report(&mut rep, SEC5).await;
    assert!(matches!(detail_of(&r), StepDetail::Snapshot(i) if i.provider == "none"));
    send(
        &bus,
        Address::Pool(PoolName::from("host.x")),
        &command(job, Stage::Freeze, &["a"]),
    )
    .await;
    assert!(matches!(
        detail_of(&next_report(&mut rep, SEC5).await),
        StepDetail::Frozen { .. }
    ));
    send(
        &bus,
        Address::Worker(WorkerId::from("wx")),
        &command(job, Stage::Thaw, &["a"]),
    )
    .await;
    assert!(matches!(
        detail_of(&next_report(&mut rep, SEC5).await),
        StepDetail::Thawed {
            by_watchdog: false,
            ..
        }
    ));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_context_goes_from_command_to_report() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &exec_target(dir.path(), "true", "10s", "5s"));
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    // No OpenTelemetry layer here: the worker passes the command's context on
    // when it is in the job's trace (the job's UUID is the trace id)…
    let job = JobId::new_v7();
    let cmd = command(job, Stage::FlushLogs, &["db01"]);
    let tp = format!("00-{}-b7ad6b7169203331-01", job.0.simple());
    let m = Message::new(msg_type::COMMAND, cmd.message_id.clone(), wire::encode(&cmd))
        .with_header("traceparent", tp.as_str());
    bus.publish(Address::Pool(PoolName::from(POOL)), m).await.unwrap();
    let d = tokio::time::timeout(SEC5, rep.recv()).await.unwrap().unwrap();
    assert_eq!(d.message.msg_type, msg_type::REPORT);
    assert_eq!(d.message.header("traceparent"), Some(tp.as_str()));
    d.ack().await.unwrap();
    // …and a report of a command without one (or from another trace) is in
    // the job's trace all the same: its root context.
    for header in [
        None,
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ] {
        let job = JobId::new_v7();
        let cmd = command(job, Stage::FlushLogs, &["db01"]);
        let mut m = Message::new(msg_type::COMMAND, cmd.message_id.clone(), wire::encode(&cmd));
        if let Some(h) = header {
            m = m.with_header("traceparent", h);
        }
        bus.publish(Address::Pool(PoolName::from(POOL)), m).await.unwrap();
        let d = tokio::time::timeout(SEC5, rep.recv()).await.unwrap().unwrap();
        let root = recman_trace::TraceParent::job_root(job).to_string();
        assert_eq!(d.message.header("traceparent"), Some(root.as_str()), "{header:?}");
        assert!(root.starts_with(&format!("00-{}-", job.0.simple())));
        d.ack().await.unwrap();
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_after_its_thaw_deadline_is_refused_and_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = config(
        dir.path(),
        &exec_target(dir.path(), &format!("echo f >> {d}/frozen"), "10s", "5s"),
    );
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    let mut freeze = command(JobId::new_v7(), Stage::Freeze, &["db01"]);
    freeze.thaw_deadline_ms = Some(recman_events::clock::now_ms() - 1);
    send_pool(&bus, &freeze).await;
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!(err_of(&r).code, "deadline_passed");
    assert!(err_of(&r).retryable);
    assert_eq!(lines(dir.path().join("frozen")), 0, "the freeze hook ran");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_that_comes_after_the_thaw_of_its_attempt_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = config(
        dir.path(),
        &exec_target(dir.path(), &format!("echo f >> {d}/frozen"), "10s", "5s"),
    );
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    let job = JobId::new_v7();
    send_pool(&bus, &command(job, Stage::Thaw, &["db01"])).await;
    assert!(matches!(
        detail_of(&next_report(&mut rep, SEC5).await),
        StepDetail::Thawed { .. }
    ));
    send_pool(&bus, &command(job, Stage::Freeze, &["db01"])).await;
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!(err_of(&r).code, "already_thawed");
    assert_eq!(lines(dir.path().join("frozen")), 0, "frozen after its own thaw");
    // Another attempt of the same job may freeze.
    let mut next = command(job, Stage::Freeze, &["db01"]);
    next.attempt = 2;
    next.message_id = Command::message_id_for(job, 2, Stage::Freeze, &next.targets[0]);
    send_pool(&bus, &next).await;
    assert!(matches!(
        detail_of(&next_report(&mut rep, SEC5).await),
        StepDetail::Frozen { .. }
    ));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_deleted_by_retention_is_not_taken_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = copy_config(dir.path());
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    let job = JobId::new_v7();
    let snap = command(job, Stage::Snapshot, &["fs01"]);
    let name = snap.snapshot_name.clone().unwrap();
    send_pool(&bus, &snap).await;
    detail_of(&next_report(&mut rep, SEC5).await);
    let mut prune = command(job, Stage::Prune, &["fs01"]);
    prune.prune = vec![name.clone()];
    send_pool(&bus, &prune).await;
    detail_of(&next_report(&mut rep, SEC5).await);
    // The snapshot command again, late (a new message id: not answered from memory).
    let mut late = snap.clone();
    late.message_id.push_str("-late");
    send_pool(&bus, &late).await;
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!(err_of(&r).code, "deleted");
    assert!(!err_of(&r).retryable);
    assert!(
        !dir.path().join("snaps").join(&name).exists(),
        "re-created after retention"
    );
    w.stop().await;
}

/// A writer that was left frozen by a crashed predecessor (what the
/// `fsfreeze` writer finds through its marker); counts its thaws.
/// A writer that finds its target frozen on start (as fsfreeze does when a
/// filesystem is frozen with no record of who froze it).
struct LeftFrozen {
    thawed: Arc<std::sync::atomic::AtomicU32>,
}

impl recman_workers::Writer for LeftFrozen {
    fn kind(&self) -> &'static str {
        "left-frozen"
    }
    fn freeze<'a>(
        &'a self,
        _: &'a recman_workers::StepCtx,
    ) -> recman_events::bus::BoxFuture<'a, Result<(), recman_events::StepError>> {
        Box::pin(async { Ok(()) })
    }
    fn thaw<'a>(
        &'a self,
        _: &'a recman_workers::StepCtx,
    ) -> recman_events::bus::BoxFuture<'a, Result<(), recman_events::StepError>> {
        Box::pin(async { Ok(()) })
    }
    fn flush_logs<'a>(
        &'a self,
        _: &'a recman_workers::StepCtx,
    ) -> recman_events::bus::BoxFuture<'a, Result<(), recman_events::StepError>> {
        Box::pin(async { Ok(()) })
    }
    fn startup_thaw(
        &self,
    ) -> recman_events::bus::BoxFuture<
        '_,
        Result<Option<recman_workers::writer::StartupThaw>, recman_events::StepError>,
    > {
        let n = self.thawed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            Ok((n == 0).then(|| recman_workers::writer::StartupThaw {
                what: "/srv/data".into(),
            }))
        })
    }
}

/// Records in `state` a freeze of `db01` by a worker process that then died
/// (its process lock is gone): frozen `ago_ms` ago, thawed by its watchdog
/// `deadline_in_ms` from now (negative: past).
async fn leave_frozen_by_a_dead_process(state: &Path, job: JobId, ago_ms: u64, deadline_in_ms: i64) {
    let dead = HostState::open(state, &WorkerId::from("w0")).unwrap();
    let t = TargetId::from("db01");
    let mut l = dead.lock(&t).await.unwrap();
    let now = recman_events::clock::now_ms();
    l.memory.record_freeze_start(Hold {
        job,
        attempt: 2,
        kind: SnapshotKind::Full,
        process: dead.process().clone(),
        frozen_at_ms: now - ago_ms,
        deadline_ms: now.saturating_add_signed(deadline_in_ms),
    });
    l.memory.record_freeze((job, 2), Ok(now), now - ago_ms);
    dead.save(&l).await.unwrap();
    drop(l);
    drop(dead);
}

/// Issue 12 item 3: an `exec` writer's freeze whose worker died is thawed by
/// the next worker of the host at the freeze's deadline (at once when that
/// is past), reported under its job with the real window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_left_by_a_dead_worker_is_thawed_at_its_deadline_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = config(dir.path(), &exec_target(dir.path(), "true", "10s", "5s"));
    let job = JobId::new_v7();
    leave_frozen_by_a_dead_process(&state, job, 1500, 800).await;
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let started = std::time::Instant::now();
    let running = start(&bus, worker(&cfg).with_state_dir(&state));
    // Not before its deadline.
    no_report(&mut rep, Duration::from_millis(500)).await;
    assert_eq!(lines(dir.path().join("thawed")), 0);
    let r = next_report(&mut rep, SEC5).await;
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((r.job, r.attempt, r.stage), (job, 2, Stage::Thaw));
    assert_eq!(r.worker, WorkerId::from("w1"));
    assert!(r.message_id.ends_with("/watchdog"), "{}", r.message_id);
    let StepDetail::Thawed {
        freeze_window_us,
        by_watchdog,
    } = detail_of(&r)
    else {
        panic!("{r:?}")
    };
    assert!(*by_watchdog);
    assert!(
        (2_200_000..3_500_000).contains(freeze_window_us),
        "frozen 1.5 s before the start, thawed 0.8 s after: {freeze_window_us}"
    );
    assert_eq!(lines(dir.path().join("thawed")), 1);
    // A late thaw command of that attempt reports the same window (nothing
    // holds the target: the hook runs again, thaw is idempotent).
    let mut thaw = command(job, Stage::Thaw, &["db01"]);
    thaw.attempt = 2;
    thaw.message_id = Command::message_id_for(job, 2, Stage::Thaw, &thaw.targets[0]);
    send_pool(&bus, &thaw).await;
    let late = next_report(&mut rep, SEC5).await;
    assert_eq!(
        detail_of(&late),
        &StepDetail::Thawed {
            freeze_window_us: *freeze_window_us,
            by_watchdog: true
        }
    );
    running.stop().await;

    // Past its deadline already: thawed at once on start.
    let job = JobId::new_v7();
    leave_frozen_by_a_dead_process(&state, job, 5000, -1000).await;
    let running = start(&bus, worker(&cfg).with_state_dir(&state));
    let r = next_report(&mut rep, Duration::from_secs(2)).await;
    assert_eq!((r.job, r.attempt), (job, 2));
    assert_eq!(lines(dir.path().join("thawed")), 3);
    running.stop().await;
}

/// A target that no process holds but that the writer finds frozen on
/// start is thawed and logged (no job to report it under).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_frozen_with_no_record_is_thawed_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[[target]]\nid = \"db01\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"none\"\n",
    );
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let thawed = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let w = worker(&cfg).with_state_dir(dir.path().join("state")).with_writer(
        &TargetId::from("db01"),
        Arc::new(LeftFrozen {
            thawed: thawed.clone(),
        }),
    );
    let running = start(&bus, w);
    no_report(&mut rep, Duration::from_millis(300)).await;
    assert_eq!(
        thawed.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "startup thaw runs once"
    );
    running.stop().await;
}

/// Issue 23 items 1-3: two worker processes of one host (one state
/// directory). A late thaw of another attempt that reaches the other worker
/// thaws nothing; a freeze of the same attempt sent again (after an engine
/// restart) to the other worker returns the first outcome and freezes
/// nothing; the thaw by the other worker reports the real window; the
/// freezer's watchdog then stays quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_of_a_host_share_its_freeze_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let state = dir.path().join("state");
    let cfg = config(
        dir.path(),
        &exec_target(dir.path(), &format!("echo f >> {d}/frozen"), "2s", "5s"),
    );
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w1 = start(
        &bus,
        Worker::new(WorkerId::from("w1"), vec![PoolName::from(POOL)], &cfg).with_state_dir(&state),
    );
    let w2 = start(
        &bus,
        Worker::new(WorkerId::from("w2"), vec![PoolName::from(POOL)], &cfg).with_state_dir(&state),
    );
    let to = |w: &str| Address::Worker(WorkerId::from(w));
    let job = JobId::new_v7();
    let attempt = |stage, n: u32| command_of_attempt(job, stage, n);
    send(&bus, to("w1"), &attempt(Stage::Freeze, 2)).await;
    let first = next_report(&mut rep, SEC5).await;
    assert_eq!(first.worker, WorkerId::from("w1"));
    let StepDetail::Frozen { deadline_ms } = detail_of(&first) else {
        panic!("{first:?}")
    };
    // Item 1: attempt 1's thaw, late, at the other worker: nothing thawed.
    send(&bus, to("w2"), &attempt(Stage::Thaw, 1)).await;
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!(r.worker, WorkerId::from("w2"));
    assert_eq!(
        detail_of(&r),
        &StepDetail::Thawed {
            freeze_window_us: 0,
            by_watchdog: false
        }
    );
    assert_eq!(
        lines(dir.path().join("thawed")),
        0,
        "attempt 2's freeze was ended by attempt 1's thaw"
    );
    // Item 2: attempt 2's freeze again, at the other worker: the first outcome.
    send(&bus, to("w2"), &attempt(Stage::Freeze, 2)).await;
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!(r.worker, WorkerId::from("w2"));
    assert_eq!(
        detail_of(&r),
        &StepDetail::Frozen {
            deadline_ms: *deadline_ms
        }
    );
    assert_eq!(
        lines(dir.path().join("frozen")),
        1,
        "a second freeze of one attempt"
    );
    // Item 3: the thaw at the other worker reports the real window.
    tokio::time::sleep(Duration::from_millis(400)).await;
    send(&bus, to("w2"), &attempt(Stage::Thaw, 2)).await;
    let r = next_report(&mut rep, SEC5).await;
    let StepDetail::Thawed {
        freeze_window_us,
        by_watchdog: false,
    } = detail_of(&r)
    else {
        panic!("{r:?}")
    };
    assert!(
        (400_000..1_500_000).contains(freeze_window_us),
        "{freeze_window_us}"
    );
    assert_eq!(lines(dir.path().join("thawed")), 1);
    // Past the 2 s limit: w1's watchdog finds the freeze thawed.
    no_report(&mut rep, Duration::from_millis(2200)).await;
    assert_eq!(lines(dir.path().join("thawed")), 1);
    // w2 stopping thaws nothing of w1's; a new freeze by w1 stays frozen.
    send(&bus, to("w1"), &attempt(Stage::Freeze, 3)).await;
    assert!(matches!(
        detail_of(&next_report(&mut rep, SEC5).await),
        StepDetail::Frozen { .. }
    ));
    w2.stop().await;
    assert_eq!(
        lines(dir.path().join("thawed")),
        1,
        "w2's shutdown thawed w1's freeze"
    );
    w1.stop().await;
    assert_eq!(lines(dir.path().join("thawed")), 2, "w1's shutdown thaws its own");
    let _ = rep;
}

/// The worker core's rules in the runtime: a freeze while another attempt
/// holds the target is refused (`busy`), and a late thaw of another attempt
/// is a no-op that leaves the holding freeze alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thaw_ends_only_its_own_attempts_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = config(
        dir.path(),
        &exec_target(dir.path(), &format!("echo f >> {d}/frozen"), "10s", "5s"),
    );
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    let job = JobId::new_v7();
    let mut second = command(job, Stage::Freeze, &["db01"]);
    second.attempt = 2;
    second.message_id = Command::message_id_for(job, 2, Stage::Freeze, &second.targets[0]);
    send_pool(&bus, &second).await;
    assert!(matches!(
        detail_of(&next_report(&mut rep, SEC5).await),
        StepDetail::Frozen { .. }
    ));
    // Attempt 1's freeze, late: the target is held by attempt 2.
    send_pool(&bus, &command(job, Stage::Freeze, &["db01"])).await;
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!((err_of(&r).code.as_str(), err_of(&r).retryable), ("busy", true));
    // Attempt 1's thaw, late: a no-op, the hook does not run.
    send_pool(&bus, &command(job, Stage::Thaw, &["db01"])).await;
    assert!(matches!(
        detail_of(&next_report(&mut rep, SEC5).await),
        StepDetail::Thawed {
            freeze_window_us: 0,
            by_watchdog: false
        }
    ));
    assert_eq!(
        lines(dir.path().join("thawed")),
        0,
        "attempt 2's freeze was ended"
    );
    // Attempt 2's own thaw ends it.
    let mut thaw2 = command(job, Stage::Thaw, &["db01"]);
    thaw2.attempt = 2;
    thaw2.message_id = Command::message_id_for(job, 2, Stage::Thaw, &thaw2.targets[0]);
    send_pool(&bus, &thaw2).await;
    let r = next_report(&mut rep, SEC5).await;
    let StepDetail::Thawed { freeze_window_us, .. } = detail_of(&r) else {
        panic!("{r:?}")
    };
    assert!(*freeze_window_us > 0);
    assert_eq!(lines(dir.path().join("thawed")), 1);
    assert_eq!(lines(dir.path().join("frozen")), 1);
    w.stop().await;
}

/// Issue 12 item 13: a copy interrupted by a crash leaves a `.partial`
/// directory; the next worker removes it when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_copies_of_a_dead_worker_are_removed_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = copy_config(dir.path());
    // Above the kernel's pid limit: the process that copied is gone.
    let leftover = dir.path().join("snaps/.rm-x-a1.partial.4194305.1");
    std::fs::create_dir_all(leftover.join("sub")).unwrap();
    std::fs::write(leftover.join("data.db"), b"half").unwrap();
    let bus = MemoryBus::new();
    let w = start(&bus, worker(&cfg));
    wait_until_async("the leftover removed", DEADLINE, || !leftover.exists()).await;
    w.stop().await;
}

/// Item 5 of the brief (issue 12 item 4): a snapshot redelivered after a
/// crash reports the one its attempt took (above); one under that name that
/// recman did not take for this attempt is never adopted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_not_taken_for_this_attempt_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = copy_config(dir.path());
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let job = JobId::new_v7();
    let snap = command(job, Stage::Snapshot, &["fs01"]);
    let name = snap.snapshot_name.clone().unwrap();
    // Someone else's directory under this attempt's name.
    std::fs::create_dir_all(dir.path().join("snaps").join(&name)).unwrap();
    let w = start(&bus, worker(&cfg));
    send_pool(&bus, &snap).await;
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!(err_of(&r).code, "name_conflict", "{r:?}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_for_a_target_set_up_differently_is_refused_but_a_thaw_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("froze");
    let cfg = config(
        dir.path(),
        &exec_target(
            dir.path(),
            &format!("echo f >> {}", marker.display()),
            "10s",
            "5s",
        ),
    );
    assert_eq!(cfg.targets[0].fingerprint(), "exec/none");
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w = start(&bus, worker(&cfg));
    // The engine believes db01 is a PostgreSQL on btrfs: nothing may run.
    let job = JobId::new_v7();
    let mut freeze = command(job, Stage::Freeze, &["db01"]);
    freeze.fingerprints = vec!["postgres/btrfs".into()];
    send_pool(&bus, &freeze).await;
    let e = err_of(&next_report(&mut rep, SEC5).await).clone();
    assert_eq!((e.code.as_str(), e.retryable), ("config_mismatch", false));
    assert!(
        e.message
            .contains("db01's writer is postgres on the engine but exec here"),
        "{}",
        e.message
    );
    assert!(!marker.exists(), "the freeze hook must not have run");
    // The same writer runs, whatever the engine's provider: a freeze is the
    // application host's part, the snapshot may be another host's (an array).
    let mut ok = command(job, Stage::Freeze, &["db01"]);
    ok.message_id.push_str("#ok");
    ok.fingerprints = vec!["exec/3par".into()];
    send_pool(&bus, &ok).await;
    assert!(matches!(
        next_report(&mut rep, SEC5).await.outcome,
        Outcome::Ok { .. }
    ));
    assert_eq!(lines(marker.clone()), 1);
    // A snapshot compares the provider: the engine's btrfs is not this none.
    let mut snap = command(job, Stage::Snapshot, &["db01"]);
    snap.fingerprints = vec!["exec/btrfs".into()];
    send_pool(&bus, &snap).await;
    let e = err_of(&next_report(&mut rep, SEC5).await).clone();
    assert_eq!(e.code, "config_mismatch");
    assert!(
        e.message
            .contains("db01's provider is btrfs on the engine but none here"),
        "{}",
        e.message
    );
    // A thaw is never refused for a mismatch: it ends the freeze this host holds.
    let mut thaw = command(job, Stage::Thaw, &["db01"]);
    thaw.fingerprints = vec!["postgres/btrfs".into()];
    send_pool(&bus, &thaw).await;
    assert!(matches!(
        next_report(&mut rep, SEC5).await.outcome,
        Outcome::Ok { .. }
    ));
    assert_eq!(lines(dir.path().join("thawed")), 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_redelivered_to_another_process_of_the_host_is_answered_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let state = dir.path().join("state");
    let cfg = config(
        dir.path(),
        &format!(
            "[[target]]\nid = \"db01\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"none\"\n[target.verify]\ntype = \"exec\"\ncommand = {}\n",
            sh(&format!("echo v >> {d}/verified; echo checked"))
        ),
    );
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let on =
        |id: &str| Worker::new(WorkerId::from(id), vec![PoolName::from(POOL)], &cfg).with_state_dir(&state);
    let (w1, w2) = (start(&bus, on("w1")), start(&bus, on("w2")));
    let to = |w: &str| Address::Worker(WorkerId::from(w));
    let mut v = command(JobId::new_v7(), Stage::Verify, &["db01"]);
    v.snapshot_name = Some("rm-x-a1".into());
    send(&bus, to("w1"), &v).await;
    let first = next_report(&mut rep, SEC5).await;
    assert!(matches!(first.outcome, Outcome::Ok { .. }), "{first:?}");
    assert_eq!(lines(dir.path().join("verified")), 1);
    // w1 died before its ack: the broker gives the command to w2. The engine
    // has the verdict and may have let a freeze of db01 begin: w2 answers
    // from the host's record and runs nothing.
    send(&bus, to("w2"), &v).await;
    let again = next_report(&mut rep, SEC5).await;
    assert_eq!(again.outcome, first.outcome);
    assert_eq!(
        lines(dir.path().join("verified")),
        1,
        "the verification ran again"
    );
    // Another verify command (the next run) does run.
    let mut next = v.clone();
    next.attempt = 2;
    next.message_id.push_str("#2");
    send(&bus, to("w2"), &next).await;
    assert!(matches!(
        next_report(&mut rep, SEC5).await.outcome,
        Outcome::Ok { .. }
    ));
    assert_eq!(lines(dir.path().join("verified")), 2);
    w1.stop().await;
    w2.stop().await;
}

/// Issue 18: a freeze's outcome is written to the host's freeze state after
/// its report is out (not inside the freeze window), and written all the
/// same; until then, or for good when that write is lost, the hold (written
/// before the writer ran) answers a redelivery with the same deadline, and
/// the freeze does not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_outcome_is_written_after_its_report_and_the_hold_answers_until_then() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let state = dir.path().join("state");
    let cfg = config(
        dir.path(),
        &exec_target(dir.path(), &format!("echo f >> {d}/frozen"), "20s", "5s"),
    );
    let bus = MemoryBus::new();
    let mut rep = reports(&bus).await;
    let w1 = start(
        &bus,
        Worker::new(WorkerId::from("w1"), vec![PoolName::from(POOL)], &cfg).with_state_dir(&state),
    );
    let t = TargetId::from("db01");
    let freeze = |job: JobId| command_of_attempt(job, Stage::Freeze, 2);
    // The outcome lands in the host state once the report is out.
    let job = JobId::new_v7();
    send_pool(&bus, &freeze(job)).await;
    let StepDetail::Frozen { deadline_ms } = *detail_of(&next_report(&mut rep, SEC5).await) else {
        panic!("not frozen")
    };
    let reader = HostState::open(&state, &WorkerId::from("reader")).unwrap();
    let outcome = reader
        .lock(&t)
        .await
        .unwrap()
        .memory
        .freeze_outcome((job, 2))
        .cloned();
    assert_eq!(outcome, Some(Ok(deadline_ms)), "the outcome was not written");
    send_pool(&bus, &command_of_attempt(job, Stage::Thaw, 2)).await;
    next_report(&mut rep, SEC5).await;
    // A freeze whose outcome was lost after its report (its process, alive
    // here, holds it; only the hold was written): a redelivery is answered
    // from the hold, and nothing is frozen again.
    let job = JobId::new_v7();
    let holder = HostState::open(&state, &WorkerId::from("w0")).unwrap();
    let hold_deadline = recman_events::clock::now_ms() + 15_000;
    {
        let mut l = holder.lock(&t).await.unwrap();
        l.memory.record_freeze_start(Hold {
            job,
            attempt: 2,
            kind: SnapshotKind::Full,
            process: holder.process().clone(),
            frozen_at_ms: recman_events::clock::now_ms(),
            deadline_ms: hold_deadline,
        });
        holder.save(&l).await.unwrap();
    }
    send_pool(&bus, &freeze(job)).await;
    let r = next_report(&mut rep, SEC5).await;
    assert_eq!(
        detail_of(&r),
        &StepDetail::Frozen {
            deadline_ms: hold_deadline
        }
    );
    assert_eq!(lines(dir.path().join("frozen")), 1, "the freeze ran again");
    drop(holder);
    w1.stop().await;
}

/// A bus whose reports never go out while `stuck` is set (a broker that
/// takes the message and never confirms it).
struct StuckReports {
    bus: MemoryBus,
    stuck: std::sync::atomic::AtomicBool,
}

impl Bus for StuckReports {
    fn publish(
        &self,
        to: Address,
        msg: Message,
    ) -> recman_events::bus::BoxFuture<'_, Result<(), recman_events::BusError>> {
        if to == Address::Reports && self.stuck.load(std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(std::future::pending());
        }
        self.bus.publish(to, msg)
    }

    fn publish_batch(
        &self,
        msgs: Vec<(Address, Message)>,
    ) -> recman_events::bus::BoxFuture<'_, Result<(), recman_events::BusError>> {
        self.bus.publish_batch(msgs)
    }

    fn consume(
        &self,
        from: Address,
        prefetch: u16,
    ) -> recman_events::bus::BoxFuture<'_, Result<Consumer, recman_events::BusError>> {
        self.bus.consume(from, prefetch)
    }
}

/// Issue 18: the outcome a freeze writes after its report does not wait for
/// a report that never goes out: the target's lock is let go, and the
/// watchdog thaws at the freeze limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_never_goes_out_does_not_keep_the_target_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &exec_target(dir.path(), "true", "500ms", "5s"));
    let memory = MemoryBus::new();
    let bus = Arc::new(StuckReports {
        bus: memory.clone(),
        stuck: std::sync::atomic::AtomicBool::new(true),
    });
    let (stop, rx) = oneshot::channel::<()>();
    let w = worker(&cfg)
        .with_state_dir(dir.path().join("state"))
        .with_stop_grace(Duration::from_millis(200));
    let task = tokio::spawn(w.run(bus.clone() as Arc<dyn Bus>, async {
        let _ = rx.await;
    }));
    let job = JobId::new_v7();
    let mut freeze = command(job, Stage::Freeze, &["db01"]);
    freeze.thaw_deadline_ms = Some(u64::MAX);
    send_pool(&memory, &freeze).await;
    let thawed = dir.path().join("thawed");
    let t = std::time::Instant::now();
    wait_until_async("the watchdog's thaw", Duration::from_secs(5), || {
        lines(thawed.clone()) == 1
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "thawed only after {:?}",
        t.elapsed()
    );
    // The outcome was written all the same.
    let reader = HostState::open(&dir.path().join("state"), &WorkerId::from("reader")).unwrap();
    let l = reader.lock(&TargetId::from("db01")).await.unwrap();
    assert!(matches!(l.memory.freeze_outcome((job, 1)), Some(Ok(_))));
    drop(l);
    // The step still waits for its report: abandoned at stop.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("worker stops")
        .unwrap()
        .unwrap();
}
