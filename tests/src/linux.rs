//! The Linux end-to-end tests' harness: the root and tool check (the skip
//! rule of `recman-testkit`), loop filesystems that clean up after themselves
//! (thaw, unmount, detach, remove) even when a test fails, the embedded
//! engine + worker, and the numbered writer.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recman_config::Config;
use recman_engine::handle::{Drain, Engine};
use recman_events::{log, Backend, EventBody, JobId, SnapshotRequest, WorkerId};
use recman_testkit::{is_root, sh, skip, which};
use recman_workers::runtime::Worker;

/// True when a Linux test can run: root, and every tool in `tools`.
/// Otherwise it skips (`recman_testkit::skip`) naming everything missing:
/// by hand it prints why and the test returns; under `CI=true` it fails.
#[track_caller]
pub fn can_run(tools: &[&str]) -> bool {
    let mut why = Vec::new();
    if !is_root() {
        why.push("needs root (loop devices, mount, FIFREEZE)".to_string());
    }
    for t in tools {
        if which(t).is_none() {
            why.push(format!("needs `{t}` (tests/run installs it)"));
        }
    }
    if why.is_empty() {
        return true;
    }
    skip(why.join("; "));
    false
}

/// A filesystem on a loop device over an image in a temp dir.
pub struct LoopFs {
    pub dir: tempfile::TempDir,
    pub dev: String,
    pub mnt: PathBuf,
}

impl LoopFs {
    /// `fstype` is `ext4` or `btrfs`.
    pub fn new(fstype: &str, size_mb: u64) -> LoopFs {
        let dir = tempfile::Builder::new().prefix("recman-loop").tempdir().unwrap();
        let img = dir.path().join("fs.img");
        fs::File::create(&img).unwrap().set_len(size_mb << 20).unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let dev = sh("losetup", &["-f", "--show", img.to_str().unwrap()])
            .trim()
            .to_string();
        let mut me = LoopFs { dir, dev, mnt };
        match fstype {
            "ext4" => sh("mkfs.ext4", &["-q", "-F", &me.dev]),
            "btrfs" => sh("mkfs.btrfs", &["-q", "-f", &me.dev]),
            other => panic!("unknown fstype {other}"),
        };
        sh("mount", &[&me.dev, me.mnt.to_str().unwrap()]);
        me.mnt = fs::canonicalize(&me.mnt).unwrap();
        me
    }

    /// A path beside the mount (not on the loop filesystem).
    pub fn outside(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// FITHAW, ignoring "not frozen".
pub fn thaw(mnt: &Path) {
    if let Ok(f) = fs::File::open(mnt) {
        // SAFETY: valid fd; FITHAW = _IOWR('X', 120, int).
        unsafe { libc::ioctl(f.as_raw_fd(), 0xC004_5878u32 as _, 0) };
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        thaw(&self.mnt);
        let m = self.mnt.to_str().unwrap_or_default().to_string();
        let ok = Command::new("umount")
            .arg(&m)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// One line a numbered writer wrote: its number and how long the write took.
#[derive(Clone, Copy, Debug)]
pub struct Write1 {
    pub n: u64,
    /// Since the writer started.
    pub start: Duration,
    pub took: Duration,
}

/// A thread appending `n\n` to a file every millisecond (the numbered writer).
pub struct NumberedWriter {
    stop: Arc<AtomicBool>,
    pub writes: Arc<Mutex<Vec<Write1>>>,
    handle: Option<std::thread::JoinHandle<()>>,
    pub t0: Instant,
}

impl NumberedWriter {
    pub fn start(path: &Path) -> NumberedWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
        let t0 = Instant::now();
        let (s, w) = (stop.clone(), writes.clone());
        let handle = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let start = t0.elapsed();
                f.write_all(format!("{n}\n").as_bytes()).unwrap();
                let took = t0.elapsed() - start;
                w.lock().unwrap().push(Write1 { n, start, took });
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        NumberedWriter {
            stop,
            writes,
            handle: Some(handle),
            t0,
        }
    }

    pub fn count(&self) -> usize {
        self.writes.lock().unwrap().len()
    }

    pub fn stop(mut self) -> Vec<Write1> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.writes.lock().unwrap().clone()
    }
}

/// Asserts `text` is `1\n2\n…k\n` (a gap-free prefix; a torn last line is
/// allowed only when `allow_torn`). Returns k.
pub fn gap_free_prefix(text: &str, allow_torn: bool) -> u64 {
    let mut expect = 1u64;
    let complete = text.ends_with('\n') || text.is_empty();
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    for (i, l) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        if last && !complete {
            assert!(allow_torn, "torn last line {l:?}");
            break;
        }
        assert_eq!(
            l.parse::<u64>().ok(),
            Some(expect),
            "line {} is {l:?}, expected {expect}",
            i + 1
        );
        expect += 1;
    }
    expect - 1
}

/// The engine and one worker in-process (redb log, in-process bus), started
/// by the engine handle.
pub struct Embedded {
    engine: Engine,
}

impl Embedded {
    pub async fn start(config: &Config, data: &Path, worker: &str) -> Embedded {
        let engine = Engine::builder(config)
            .log(log::open(Backend::Redb, data).unwrap())
            .worker(Worker::from_config(WorkerId::from(worker), config))
            .start()
            .await
            .unwrap();
        Embedded { engine }
    }

    pub async fn submit(&self, request_id: &str, targets: &[&str]) -> JobId {
        let body = serde_json::json!({ "request_id": request_id, "targets": targets });
        let req = SnapshotRequest::from_json(body.to_string().as_bytes()).unwrap();
        match self.engine.submit(req, "test").await {
            Ok(a) => a.job,
            Err(e) => panic!("not accepted: {e}"),
        }
    }

    /// Verifies restore point `name` of `target` again (`recman verify`);
    /// returns the job that took it.
    pub async fn verify(&self, target: &str, name: &str) -> JobId {
        match self
            .engine
            .caller()
            .verify(target.into(), name.into(), "test")
            .await
        {
            Ok(a) => a.job,
            Err(e) => panic!("verify not accepted: {e}"),
        }
    }

    /// Waits for the job's terminal event; returns all its events.
    pub async fn wait(&self, job: JobId, within: Duration) -> Vec<EventBody> {
        match tokio::time::timeout(within, self.engine.wait(job)).await {
            Ok(events) => events.unwrap().into_iter().map(|e| e.event.body).collect(),
            Err(_) => panic!(
                "job {job} not finished within {within:?}: {:#?}",
                self.engine.log().read_job(job).unwrap()
            ),
        }
    }

    /// The job's events as the log holds them now, each with the time the
    /// engine recorded it (Unix ms).
    pub fn timed(&self, job: JobId) -> Vec<(u64, EventBody)> {
        self.engine
            .log()
            .read_job(job)
            .unwrap()
            .into_iter()
            .map(|e| (e.event.at_ms, e.event.body))
            .collect()
    }

    /// Waits until `until` holds for the job's events (they go on after its
    /// end: verification); returns them.
    pub async fn wait_for(
        &self,
        job: JobId,
        within: Duration,
        until: impl Fn(&[EventBody]) -> bool,
    ) -> Vec<EventBody> {
        let end = std::time::Instant::now() + within;
        loop {
            let events: Vec<EventBody> = self
                .engine
                .log()
                .read_job(job)
                .unwrap()
                .into_iter()
                .map(|e| e.event.body)
                .collect();
            if until(&events) {
                return events;
            }
            assert!(
                std::time::Instant::now() < end,
                "job {job}: condition not met within {within:?}: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks for a reconcile of `target` and waits for its end; returns the
    /// events of the log from the ask on.
    pub async fn reconcile(&self, target: &str, within: Duration) -> Vec<EventBody> {
        let from = self.engine.log().last_seq() + 1;
        self.engine
            .caller()
            .reconcile(recman_events::TargetId::from(target), "test")
            .await
            .unwrap_or_else(|e| panic!("reconcile of {target} not accepted: {e}"));
        let end = std::time::Instant::now() + within;
        loop {
            let events: Vec<EventBody> = self
                .engine
                .log()
                .read(from, 10_000)
                .unwrap()
                .into_iter()
                .map(|e| e.event.body)
                .collect();
            let ended = events.iter().any(|e| {
                matches!(e, EventBody::Reconciled { target: t, .. } | EventBody::ReconcileFailed { target: t, .. } if t.as_str() == target)
            });
            if ended {
                return events;
            }
            assert!(
                std::time::Instant::now() < end,
                "reconcile of {target} not ended within {within:?}: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.engine.shutdown(Drain::Default).await.unwrap();
    }
}

/// How long the (first) freeze step took, as its report recorded it.
pub fn freeze_step(events: &[EventBody]) -> Duration {
    step_took(events, recman_events::Stage::Freeze)
}

/// How long the (first) successful step of `stage` took, as the worker reported it.
pub fn step_took(events: &[EventBody], stage: recman_events::Stage) -> Duration {
    events
        .iter()
        .find_map(|e| match e {
            EventBody::StepSucceeded {
                stage: s,
                duration_us,
                ..
            } if *s == stage => Some(Duration::from_micros(*duration_us)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no successful {stage:?} step: {events:#?}"))
}

/// The Completed event of a job's events (panics with the events otherwise).
pub fn completed(events: &[EventBody]) -> (recman_events::SnapshotInfo, u64) {
    events
        .iter()
        .find_map(|e| match e {
            EventBody::Completed {
                snapshot,
                freeze_window_us,
                ..
            } => Some((snapshot.clone(), *freeze_window_us)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("job did not complete: {events:#?}"))
}
