//! End to end, in one process: the engine handle (redb log, in-process bus),
//! a worker in `host.mbx01` with an `exec` writer and a worker in `array.a`
//! with the `3par` provider against the WSAPI fake (HTTP and HTTPS); the
//! catalog checked against the array (reconcile, the copies' expiry).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use recman_config::Config;
use recman_engine::handle::{Drain, Engine};
use recman_engine::view::{Until, View};
use recman_events::bus::{msg_type, Address, BoxFuture, Bus, BusError, Consumer, MemoryBus, Message};
use recman_events::wire::{self, Command};
use recman_events::{
    log, Backend, EventBody, EventLog, JobId, PoolName, SnapshotRequest, Stage, TargetId, WorkerId,
};
use recman_tests::threepar::{array, Array, Scheme, PASSWORD};
use recman_workers::runtime::Worker;

struct Harness {
    engine: Engine,
    log: Arc<dyn EventLog>,
    hooks: PathBuf,
}

/// The target: writer hooks on the mailbox host append to `hooks`, the
/// provider is volume `DB01-vv` on array `a`.
fn config(dir: &Path, a: &Array, extra: &str) -> Config {
    let hooks = dir.join("hooks.log");
    let hook = |stage: &str| {
        format!(
            "[\"/bin/sh\", \"-c\", \"echo {stage} $RECMAN_JOB >> '{}'\"]",
            hooks.display()
        )
    };
    let toml = format!(
        "{}\n[[target]]\nid = \"db01\"\npool = \"host.mbx01\"\n{extra}\n[target.writer]\ntype = \"exec\"\nfreeze = {}\nthaw = {}\nflush = {}\n[target.provider]\ntype = \"3par\"\narray = \"a\"\nvolume = \"DB01-vv\"\nexpiration_hours = 336\n",
        a.section,
        hook("freeze"),
        hook("thaw"),
        hook("flush")
    );
    Config::from_str(&toml, dir.join("recman.toml")).unwrap()
}

/// Sends every snapshot command to two workers of the array's pool, each by
/// its own queue: a redelivery that no worker's memory can answer (as after
/// a worker crashed between taking the snapshot and acknowledging).
struct DuplicatingBus(Arc<MemoryBus>);

impl Bus for DuplicatingBus {
    fn publish(&self, to: Address, msg: Message) -> BoxFuture<'_, Result<(), BusError>> {
        self.publish_batch(vec![(to, msg)])
    }
    fn publish_batch(&self, msgs: Vec<(Address, Message)>) -> BoxFuture<'_, Result<(), BusError>> {
        let mut out = Vec::new();
        for (to, m) in msgs {
            let dup = matches!(to, Address::Pool(_))
                && m.msg_type == msg_type::COMMAND
                && wire::decode::<Command>(&m.body).is_ok_and(|c| c.stage == Stage::Snapshot);
            if dup {
                out.push((Address::Worker(WorkerId::from("backup-0")), m.clone()));
                out.push((Address::Worker(WorkerId::from("backup-1")), m));
            } else {
                out.push((to, m));
            }
        }
        self.0.publish_batch(out)
    }
    fn consume(&self, from: Address, prefetch: u16) -> BoxFuture<'_, Result<Consumer, BusError>> {
        self.0.consume(from, prefetch)
    }
}

async fn start(dir: &Path, config: &Config, bus: Arc<dyn Bus>, array_workers: usize) -> Harness {
    let mut engine = Engine::builder(config)
        .log(log::open(Backend::Redb, &dir.join("log")).unwrap())
        .bus(bus)
        .seed(1)
        .worker(Worker::new(
            WorkerId::from("mbx01"),
            vec![PoolName::from("host.mbx01")],
            config,
        ));
    for i in 0..array_workers {
        engine = engine.worker(Worker::new(
            WorkerId::from(format!("backup-{i}").as_str()),
            vec![PoolName::from("array.a")],
            config,
        ));
    }
    let engine = engine.start().await.unwrap();
    Harness {
        log: engine.log().clone(),
        engine,
        hooks: dir.join("hooks.log"),
    }
}

impl Harness {
    async fn submit(&self, request_id: &str) -> JobId {
        let req = SnapshotRequest::from_json(
            format!(r#"{{"request_id":"{request_id}","targets":["db01"]}}"#).as_bytes(),
        )
        .unwrap();
        match self.engine.submit(req, "test").await {
            Ok(a) => a.job,
            Err(e) => panic!("not accepted: {e}"),
        }
    }

    /// The terminal event of `job` (waits up to the testkit's deadline).
    async fn finished(&self, job: JobId) -> EventBody {
        match tokio::time::timeout(recman_testkit::DEADLINE, self.engine.wait(job)).await {
            Ok(events) => events.unwrap().pop().expect("the terminal event").event.body,
            Err(_) => panic!("job {job} did not finish: {:#?}", self.log.read_job(job).unwrap()),
        }
    }

    fn kinds(&self, job: JobId) -> Vec<String> {
        self.log
            .read_job(job)
            .unwrap()
            .iter()
            .map(|e| e.event.body.kind().to_string())
            .collect()
    }

    /// Every event of the log as JSON, one per line.
    fn all_events_json(&self) -> String {
        self.log
            .read(1, 100_000)
            .unwrap()
            .iter()
            .map(|e| serde_json::to_string(&e.event).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn hooks(&self) -> Vec<String> {
        std::fs::read_to_string(&self.hooks)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    }

    async fn stop(self) {
        self.engine.shutdown(Drain::Default).await.unwrap();
    }
}

async fn walk_all_stages(scheme: Scheme) {
    let dir = recman_testkit::temp_dir();
    let a = array(dir.path(), scheme).await;
    a.fake.add_volume("DB01-vv");
    let cfg = config(dir.path(), &a, "");
    let h = start(dir.path(), &cfg, Arc::new(MemoryBus::new()), 1).await;
    let job = h.submit("r1").await;
    let done = h.finished(job).await;
    let EventBody::Completed { snapshot, .. } = &done else {
        panic!("not completed: {done:?}\n{:#?}", h.log.read_job(job).unwrap())
    };
    assert_eq!(snapshot.provider, "3par");
    assert_eq!(snapshot.location, format!("3par:a/{}", snapshot.name));
    // The virtual copy is on the array, read-only, naming the job.
    let v = a
        .fake
        .volume(&snapshot.name)
        .expect("virtual copy on the fake array");
    assert_eq!(v.copy_of.as_deref(), Some("DB01-vv"));
    assert_eq!((v.copy_type, v.read_only), (3, true));
    assert!(v.comment.unwrap_or_default().contains(&job.to_string()));
    assert_eq!(v.expiration_hours, Some(336));
    // Freeze on the host, then thaw, then the log flush.
    assert_eq!(h.hooks(), vec!["freeze", "thaw", "flush"]);
    let kinds = h.kinds(job);
    assert!(
        kinds.iter().filter(|k| *k == "step_succeeded").count() >= 4,
        "{kinds:?}"
    );
    // The snapshot was taken by the array's worker.
    let by_array = h.log.read_job(job).unwrap().iter().any(|e| {
        matches!(&e.event.body, EventBody::StepSucceeded { stage: Stage::Snapshot, worker: w, .. } if w.as_str() == "backup-0")
    });
    assert!(by_array, "{:#?}", h.log.read_job(job).unwrap());
    assert!(!h.all_events_json().contains(PASSWORD));
    h.stop().await;
    // The worker logged its session out on the way down.
    assert_eq!(a.fake.logins(), 1);
    assert_eq!(a.fake.live_sessions(), 0, "session not logged out at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_writer_and_3par_provider_walk_all_stages_over_http() {
    walk_all_stages(Scheme::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_writer_and_3par_provider_walk_all_stages_over_https_with_a_ca_file() {
    walk_all_stages(Scheme::Https).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_the_job_clearly_and_the_target_is_thawed() {
    let dir = recman_testkit::temp_dir();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("DB01-vv");
    std::fs::write(dir.path().join("a.password"), "not-the-Pw-4711\n").unwrap();
    let cfg = config(dir.path(), &a, "");
    let h = start(dir.path(), &cfg, Arc::new(MemoryBus::new()), 1).await;
    let job = h.submit("r1").await;
    let done = h.finished(job).await;
    let EventBody::Failed { reason, .. } = &done else {
        panic!("expected failure: {done:?}")
    };
    assert!(reason.contains("3par_inv_user_pass"), "{reason}");
    assert!(reason.contains("login as user \"recman\" refused"), "{reason}");
    assert!(
        reason.contains("HTTP 403, WSAPI code 5 (INV_USER_PASS)"),
        "{reason}"
    );
    // Frozen once, thawed after the failed snapshot; no retry of a 403.
    let hooks = h.hooks();
    assert_eq!(&hooks[..2], ["freeze", "thaw"], "{hooks:?}");
    assert_eq!(hooks.iter().filter(|s| *s == "freeze").count(), 1, "{hooks:?}");
    assert!(a.fake.snapshots_of("DB01-vv").is_empty());
    let events = h.all_events_json();
    assert!(!events.contains("not-the-Pw-4711") && !events.contains(PASSWORD));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_snapshot_command_makes_one_virtual_copy() {
    let dir = recman_testkit::temp_dir();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("DB01-vv");
    let cfg = config(dir.path(), &a, "");
    let bus: Arc<dyn Bus> = Arc::new(DuplicatingBus(Arc::new(MemoryBus::new())));
    let h = start(dir.path(), &cfg, bus, 2).await;
    let job = h.submit("r1").await;
    let done = h.finished(job).await;
    assert!(matches!(done, EventBody::Completed { .. }), "{done:?}");
    // Both copies of the command reached the array; the second met
    // EXISTENT_VOL and was accepted as the same snapshot.
    recman_testkit::wait_until_async(
        "both copies of the command at the array",
        recman_testkit::DEADLINE,
        || {
            a.fake
                .requests()
                .iter()
                .filter(|r| r.method == "POST" && r.uri.ends_with("/volumes/DB01-vv"))
                .count()
                >= 2
        },
    )
    .await;
    let posts: Vec<u16> = a
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.uri.ends_with("/volumes/DB01-vv"))
        .map(|r| r.status)
        .collect();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert!(posts.contains(&201) && posts.contains(&409), "{posts:?}");
    assert_eq!(a.fake.snapshots_of("DB01-vv").len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_the_oldest_virtual_copy() {
    let dir = recman_testkit::temp_dir();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("DB01-vv");
    let cfg = config(dir.path(), &a, "keep_last = 2");
    let h = start(dir.path(), &cfg, Arc::new(MemoryBus::new()), 1).await;
    let mut names = Vec::new();
    let mut jobs = Vec::new();
    for i in 0..3 {
        let job = h.submit(&format!("r{i}")).await;
        match h.finished(job).await {
            EventBody::Completed { snapshot, .. } => names.push(snapshot.name),
            other => panic!("job {i} did not complete: {other:?}"),
        }
        jobs.push(job);
    }
    // The prune after the third job removes the first copy.
    recman_testkit::wait_until_async(
        "the prune to delete the first copy",
        recman_testkit::DEADLINE,
        || h.kinds(jobs[0]).iter().any(|k| k == "snapshot_deleted"),
    )
    .await;
    let mut left = a.fake.snapshots_of("DB01-vv");
    left.sort();
    let mut want = names[1..].to_vec();
    want.sort();
    assert_eq!(left, want);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_with_a_child_is_kept_without_blocking_retention_of_the_others() {
    let dir = recman_testkit::temp_dir();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("DB01-vv");
    let cfg = config(dir.path(), &a, "keep_last = 1");
    let h = start(dir.path(), &cfg, Arc::new(MemoryBus::new()), 1).await;
    let mut names = Vec::new();
    let mut jobs = Vec::new();
    for i in 0..3 {
        let job = h.submit(&format!("r{i}")).await;
        match h.finished(job).await {
            EventBody::Completed { snapshot, .. } => names.push(snapshot.name),
            other => panic!("job {i} did not complete: {other:?}"),
        }
        jobs.push(job);
        if i == 0 {
            // Someone mounted the first copy: it now has a child volume.
            a.fake.add_child(&names[0], "restore-test");
        }
    }
    // The third job's prune deletes the second copy despite the first one.
    recman_testkit::wait_until_async(
        "the prune to delete the second copy",
        recman_testkit::DEADLINE,
        || h.kinds(jobs[1]).iter().any(|k| k == "snapshot_deleted"),
    )
    .await;
    assert!(!h.kinds(jobs[0]).iter().any(|k| k == "snapshot_deleted"));
    let mut left = a.fake.snapshots_of("DB01-vv");
    left.sort();
    let mut want = vec![names[0].clone(), names[2].clone()];
    want.sort();
    assert_eq!(left, want);
    // The array refused the first copy each time with HAS_CHILD; nothing looped.
    let refused = a
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.uri.ends_with(&names[0]) && r.status == 409)
        .count();
    assert_eq!(refused, 2, "one try per prune");
    h.stop().await;
}

/// The catalog agrees with the array (issue 14): each copy's
/// `expiration_hours` is recorded (`snapshot_expiry`) and shown with its
/// restore point; a copy the array expires by itself leaves the catalog
/// with `snapshot_vanished` at the next reconcile, and the other stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_the_array_expired_leaves_the_catalog_at_the_next_reconcile() {
    let dir = recman_testkit::temp_dir();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("DB01-vv");
    let cfg = config(dir.path(), &a, "");
    let h = start(dir.path(), &cfg, Arc::new(MemoryBus::new()), 1).await;
    let mut names = Vec::new();
    for i in 0..2 {
        let job = h.submit(&format!("r{i}")).await;
        match h.finished(job).await {
            EventBody::Completed { snapshot, .. } => names.push(snapshot.name),
            other => panic!("job {i} did not complete: {other:?}"),
        }
        assert!(
            h.kinds(job).iter().any(|k| k == "snapshot_expiry"),
            "{:?}",
            h.kinds(job)
        );
    }
    let view = || View::default().build(h.log.as_ref(), Until::End).unwrap();
    let snaps = view().snapshots(None);
    assert_eq!(snaps.len(), 2);
    for s in &snaps {
        let e = s
            .array_expiry
            .as_ref()
            .expect("the array's expiry in the catalog");
        assert_eq!(e.expiration_hours, Some(336));
        assert_eq!(e.expires_at_ms, Some(s.cut_at_ms + 336 * 3_600_000));
        assert_eq!((e.retention_hours, e.retained_until_ms), (None, None));
    }

    assert!(a.fake.expire(&names[0]));
    let from = h.log.last_seq() + 1;
    h.engine
        .caller()
        .reconcile(TargetId::from("db01"), "test")
        .await
        .unwrap_or_else(|e| panic!("reconcile not accepted: {e}"));
    let ended = |e: &EventBody| {
        matches!(
            e,
            EventBody::Reconciled { .. } | EventBody::ReconcileFailed { .. }
        )
    };
    recman_testkit::wait_until_async("the reconcile to end", recman_testkit::DEADLINE, || {
        h.log
            .read(from, 1000)
            .unwrap()
            .iter()
            .any(|e| ended(&e.event.body))
    })
    .await;
    let events: Vec<EventBody> = h
        .log
        .read(from, 1000)
        .unwrap()
        .into_iter()
        .map(|e| e.event.body)
        .collect();
    let vanished: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            EventBody::SnapshotVanished { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(vanished, [names[0].as_str()], "{events:#?}");
    assert!(
        events.iter().any(|e| matches!(
            e,
            EventBody::Reconciled {
                listed: 1,
                vanished: 1,
                unknown: 0,
                ..
            }
        )),
        "{events:#?}"
    );
    let left: Vec<String> = view().snapshots(None).into_iter().map(|s| s.name).collect();
    assert_eq!(left, [names[1].clone()]);
    h.stop().await;
}
