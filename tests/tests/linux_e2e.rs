//! Linux end to end, as root on loop filesystems: fsfreeze under a numbered
//! writer, the watchdog after SIGKILL, btrfs consistency, qcow2 retention.
//! Skipped with a message when not root (fails under CI=true).

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use recman_config::Config;
use recman_events::EventBody;
use recman_testkit::{recman_bin, sh, wait_exit, wait_until, wait_until_async, which, DEADLINE};
use recman_tests::linux::{
    can_run, completed, freeze_step, gap_free_prefix, Embedded, LoopFs, NumberedWriter,
};

fn config(dir: &std::path::Path, text: &str) -> Config {
    let p = dir.join("recman.toml");
    fs::write(&p, text).unwrap();
    Config::load(&p).unwrap()
}

/// (1) Writes block during the freeze and resume after it; the recorded
/// freeze window matches the longest write the writer saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsfreeze_blocks_a_numbered_writer_for_the_recorded_window() {
    if !can_run(&["losetup", "mkfs.ext4", "mount"]) {
        return;
    }
    let fs1 = LoopFs::new("ext4", 64);
    let numbers = fs1.mnt.join("numbers");
    let snaps = fs1.outside("snaps");
    fs::create_dir_all(&snaps).unwrap();
    // The provider holds the freeze ~300 ms, then copies the file (reads work on a frozen fs).
    let cfg = config(
        fs1.dir.path(),
        &format!(
            "[[target]]\nid = \"fs1\"\nfreeze_limit = \"10s\"\n[target.writer]\ntype = \"fsfreeze\"\nmountpoint = \"{}\"\nstate_dir = \"{}\"\n\
             [target.provider]\ntype = \"exec\"\ncreate = [\"/bin/sh\", \"-c\", \"sleep 0.3 && cp -- \\\"$0\\\" \\\"$1\\\"\", \"{}\", \"{}/{{name}}\"]\n",
            fs1.mnt.display(),
            fs1.outside("state").display(),
            numbers.display(),
            snaps.display()
        ),
    );
    let writer = NumberedWriter::start(&numbers);
    wait_until_async("the writer's first 100 writes", DEADLINE, || {
        writer.count() >= 100
    })
    .await;
    let emb = Embedded::start(&cfg, &fs1.outside("log"), "w1").await;
    let job = emb.submit("r1", &["fs1"]).await;
    let events = emb.wait(job, Duration::from_secs(30)).await;
    emb.stop().await;
    let (snap, window_us) = completed(&events);
    let before_resume = writer.count();
    wait_until_async("writes to resume after the thaw", DEADLINE, || {
        writer.count() > before_resume + 20
    })
    .await;
    let writes = writer.stop();

    let longest = writes.iter().map(|w| w.took).max().unwrap();
    let window = Duration::from_micros(window_us);
    eprintln!(
        "recorded freeze window {window:?}, longest blocked write {longest:?}, {} writes",
        writes.len()
    );
    assert!(
        window >= Duration::from_millis(300),
        "window {window:?} shorter than the provider's 300 ms"
    );
    assert!(
        longest >= Duration::from_millis(250),
        "no write blocked during the freeze (longest {longest:?})"
    );
    // The blocked write covers the window (freeze return → thaw return); it may
    // start earlier, while FIFREEZE was still syncing (the freeze step's time).
    let freeze_step = freeze_step(&events);
    let slack = Duration::from_millis(100); // scheduling on a loaded 2-core CI machine
    assert!(
        longest <= window + freeze_step + slack,
        "a write blocked {longest:?}, longer than the window {window:?} + the freeze itself {freeze_step:?}"
    );
    assert!(
        longest + slack >= window,
        "window {window:?} but the writer only lost {longest:?}"
    );
    // Only one write blocked for long; every other was quick.
    let slow = writes
        .iter()
        .filter(|w| w.took > Duration::from_millis(200))
        .count();
    assert_eq!(slow, 1, "expected exactly one write held by the freeze");
    // The file on the filesystem and the copy taken while frozen are gap-free.
    let all = gap_free_prefix(&fs::read_to_string(&numbers).unwrap(), false);
    assert_eq!(all, writes.len() as u64);
    let copy = snaps.join(&snap.name);
    let copied = gap_free_prefix(&fs::read_to_string(&copy).unwrap(), false);
    assert!(copied > 100 && copied < all, "snapshot holds {copied} of {all}");
    // Nothing frozen, no marker left.
    assert!(!fs1.outside("state/fsfreeze/fs1.json").exists());
    assert!(events
        .iter()
        .any(|e| matches!(e, EventBody::StepSucceeded { .. })));
}

/// (3) A btrfs snapshot of a subvolume under a numbered writer holds a
/// gap-free prefix of the numbers; the snapshot is read-only and idempotent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btrfs_snapshot_holds_a_gap_free_prefix() {
    if !can_run(&["losetup", "mkfs.btrfs", "mount", "btrfs"]) {
        return;
    }
    let b = LoopFs::new("btrfs", 300);
    let sub = b.mnt.join("data");
    sh("btrfs", &["subvolume", "create", sub.to_str().unwrap()]);
    let dest = b.mnt.join("snapshots");
    let cfg = config(
        b.dir.path(),
        &format!(
            "[[target]]\nid = \"b1\"\nkeep_last = 2\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"btrfs\"\nsubvolume = \"{}\"\ndest = \"{}\"\n",
            sub.display(),
            dest.display()
        ),
    );
    let numbers = sub.join("numbers");
    let writer = NumberedWriter::start(&numbers);
    // Every snapshot must hold more than 100 numbers.
    wait_until_async("the writer's first 200 writes", DEADLINE, || {
        writer.count() >= 200
    })
    .await;
    let emb = Embedded::start(&cfg, &b.outside("log"), "w1").await;
    let mut names = Vec::new();
    for i in 0..3 {
        let job = emb.submit(&format!("r{i}"), &["b1"]).await;
        let events = emb.wait(job, Duration::from_secs(30)).await;
        let (snap, _) = completed(&events);
        assert_eq!(snap.provider, "btrfs");
        assert!(snap.location.contains("subvolid"), "{}", snap.location);
        assert!(snap.size_bytes.unwrap_or(0) > 0, "{snap:?}");
        let at = dest.join(&snap.name);
        let n = gap_free_prefix(&fs::read_to_string(at.join("numbers")).unwrap(), true);
        assert!(n > 100, "snapshot {i} holds only {n} numbers");
        // Read-only.
        assert!(fs::write(at.join("x"), b"x").is_err(), "snapshot is writable");
        names.push(snap.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    emb.stop().await;
    writer.stop();
    // keep_last = 2: the oldest was deleted by retention.
    // (`.NAME.owner` files beside them say which job took each one.)
    let mut left: Vec<String> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    left.sort();
    let mut want = names[1..].to_vec();
    want.sort();
    assert_eq!(left, want, "retention should keep the two newest of {names:?}");
    // The provider itself: idempotent create, delete of a missing one.
    let p = recman_workers::provider::BtrfsProvider::new(sub.clone(), dest.clone());
    let again = p.snapshot_blocking(&names[2]).unwrap();
    assert!(again.existed);
    assert!(!p.delete_blocking(&names[0]).unwrap());
}

/// (5) qcow2: snapshots show in `qemu-img snapshot -l`; retention deletes the oldest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_snapshots_are_listed_and_retention_deletes_the_oldest() {
    if !can_run(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.qcow2");
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "64M"],
    );
    let cfg = config(
        dir.path(),
        &format!(
            "[[target]]\nid = \"vm1\"\nkeep_last = 2\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"qcow2\"\nimage = \"{}\"\n",
            img.display()
        ),
    );
    let emb = Embedded::start(&cfg, &dir.path().join("log"), "w1").await;
    let mut names = Vec::new();
    for i in 0..3 {
        let job = emb.submit(&format!("q{i}"), &["vm1"]).await;
        let (snap, _) = completed(&emb.wait(job, Duration::from_secs(30)).await);
        assert_eq!(snap.provider, "qcow2");
        assert_eq!(snap.size_bytes, Some(64 << 20));
        assert!(
            snap.location.contains(&format!("@{}", snap.name)),
            "{}",
            snap.location
        );
        names.push(snap.name);
    }
    // Retention runs after completion: give the prune a moment.
    let end = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        // -U: the worker may be pruning (holding the write lock) right now.
        let out = sh("qemu-img", &["snapshot", "-l", "-U", img.to_str().unwrap()]);
        let tags: Vec<String> = recman_workers::provider::parse_qcow2_list(&out)
            .into_iter()
            .map(|s| s.tag)
            .collect();
        if tags.len() == 2 || Instant::now() > end {
            break tags;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    emb.stop().await;
    assert_eq!(
        listed,
        names[1..].to_vec(),
        "qemu-img snapshot -l after retention"
    );

    // An image held by another process (qemu-nbd serving it, as a running VM would) is a clear error.
    let sock = dir.path().join("nbd.sock");
    let mut holder = Command::new(which("qemu-nbd").expect("qemu-nbd (qemu-utils)"))
        .args(["-k", sock.to_str().unwrap(), "-f", "qcow2", img.to_str().unwrap()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_async("qemu-nbd's socket", DEADLINE, || sock.exists()).await;
    let p = recman_workers::provider::Qcow2Provider::new(match &cfg.targets[0].provider {
        recman_config::ProviderConfig::Qcow2(q) => q.clone(),
        _ => unreachable!(),
    });
    use recman_workers::Provider;
    let r = p
        .snapshot("rm-locked-a1", &"vm1".into(), recman_events::SnapshotKind::Full)
        .await;
    let _ = holder.kill();
    let _ = holder.wait();
    let e = r.unwrap_err();
    assert_eq!(e.code, "image_in_use", "{e:?}");
    assert!(e.message.contains("in use"), "{}", e.message);
}

/// (2) The process holding a freeze (engine + worker, `recman snapshot`) is
/// killed with SIGKILL while the filesystem is frozen; restarted with the same
/// request id, its worker takes the dead process's freeze over from the
/// host state and thaws it within freeze_limit plus restart time, and the
/// log names that worker as the one that thawed.
#[test]
fn sigkill_while_frozen_the_restarted_worker_thaws_and_the_log_says_so() {
    if !can_run(&["losetup", "mkfs.ext4", "mount"]) {
        return;
    }
    let fs1 = LoopFs::new("ext4", 64);
    let gate = fs1.outside("gate");
    fs::write(&gate, b"").unwrap();
    let provider_started = fs1.outside("provider-started");
    let state = fs1.outside("state");
    let data = fs1.outside("data");
    let cfg_path = fs1.outside("recman.toml");
    let freeze_limit = Duration::from_secs(3);
    // The provider says it started (so the Frozen report is in the log: the
    // engine records it before it sends the snapshot command), then waits
    // while the gate exists: the freeze is held until the kill.
    fs::write(
        &cfg_path,
        format!(
            "[[target]]\nid = \"fs1\"\nfreeze_limit = \"3s\"\nretries = 3\n[target.writer]\ntype = \"fsfreeze\"\nmountpoint = \"{}\"\nstate_dir = \"{}\"\n\
             [target.provider]\ntype = \"exec\"\ncreate = [\"/bin/sh\", \"-c\", \"touch \\\"$1\\\"; while [ -e \\\"$0\\\" ]; do sleep 0.05; done; echo done\", \"{}\", \"{}\"]\n",
            fs1.mnt.display(),
            state.display(),
            gate.display(),
            provider_started.display()
        ),
    )
    .unwrap();
    let run = |tag: &str| {
        Command::new(recman_bin())
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&cfg_path)
            .args(["snapshot", "fs1", "--request-id", "kill-me"])
            .stdout(fs::File::create(fs1.outside(&format!("{tag}.out"))).unwrap())
            .stderr(fs::File::create(fs1.outside(&format!("{tag}.err"))).unwrap())
            .spawn()
            .unwrap()
    };
    let mut first = run("first");
    // The host's freeze state of the target (the embedded worker's state dir):
    // written before the freeze, holding it until a thaw.
    let marker = data.join("worker-state/targets/fs1.json");
    wait_until("the freeze and the snapshot's start", DEADLINE, || {
        marker.exists() && provider_started.exists()
    });
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let killed_at = Instant::now();
    fs::remove_file(&gate).unwrap();

    // Still frozen: a write blocks until somebody thaws.
    let probe_path = fs1.mnt.join("probe");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = fs::write(&probe_path, b"x");
        let _ = tx.send((Instant::now(), r.is_ok()));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "the filesystem was writable after the kill: nothing was frozen"
    );

    let mut second = run("second");
    let second_pid = second.id();
    let (writable_at, ok) = rx
        .recv_timeout(freeze_limit + Duration::from_secs(10))
        .expect("the filesystem stayed frozen after the restart");
    assert!(ok);
    let took = writable_at - killed_at;
    eprintln!("writable again {took:?} after the SIGKILL");
    assert!(
        took < freeze_limit + Duration::from_secs(5),
        "writable only after {took:?} (freeze_limit {freeze_limit:?} + restart)"
    );
    let status = wait_exit(&mut second, Duration::from_secs(60));
    let err = fs::read_to_string(fs1.outside("second.err")).unwrap();
    let out = fs::read_to_string(fs1.outside("second.out")).unwrap();
    assert!(status.is_some(), "second run did not finish\n{out}\n{err}");
    // The worker's log line, and the event log: the restarted worker thawed it.
    let worker = format!("local-{second_pid}");
    assert!(
        err.contains("found frozen by a worker process that is gone") && err.contains(&worker),
        "no thaw-on-start log line from {worker}:\n{err}"
    );
    let events = Command::new(recman_bin())
        .arg("--data-dir")
        .arg(&data)
        .args(["events", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&events.stdout);
    // The restarted worker took the dead one's freeze over: it thawed it,
    // either when the engine's thaw reached it (a `thaw` step with the real
    // window) or at the deadline (`watchdog_thawed`).
    let thawed: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            let b = &v["event"]["body"];
            b["type"] == "watchdog_thawed" || (b["type"] == "step_succeeded" && b["stage"] == "thaw")
        })
        .collect();
    assert!(
        thawed.iter().any(|v| v.to_string().contains(&worker)),
        "no thaw by {worker} in the log:\n{text}"
    );
    assert!(
        thawed
            .iter()
            .filter_map(|v| v["event"]["body"]["detail"]["freeze_window_us"].as_u64())
            .all(|w| w >= 500_000),
        "a thaw recorded a window shorter than the freeze held across the kill:\n{text}"
    );
    let held: serde_json::Value = serde_json::from_slice(&fs::read(&marker).unwrap()).unwrap();
    assert!(
        held["hold"].is_null(),
        "the host state still holds a freeze: {held}"
    );
    eprintln!("second run:\n{out}\n{err}");
    assert!(
        status.unwrap().success(),
        "the retried job did not complete\n{out}\n{err}"
    );
}

/// FIFREEZE twice: EBUSY (`already_frozen`); the thaw on start finds the
/// filesystem frozen and thaws it (which job froze it is the host state's
/// to say, not the writer's); a second thaw is a no-op (EINVAL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_freeze_is_refused_and_the_thaw_on_start_finds_the_first() {
    if !can_run(&["losetup", "mkfs.ext4", "mount"]) {
        return;
    }
    use recman_workers::writer::{FsFreezeWriter, StepCtx, Writer};
    let fs1 = LoopFs::new("ext4", 32);
    let w = FsFreezeWriter::new(
        "fs1",
        recman_config::FsFreezeConfig {
            mountpoint: fs1.mnt.clone(),
            state_dir: fs1.outside("state"),
        },
    );
    let ctx = |attempt| StepCtx {
        target: "fs1".into(),
        job: recman_events::JobId::new_v7(),
        attempt,
        kind: recman_events::SnapshotKind::Full,
    };
    let first = ctx(1);
    w.freeze_blocking(&first).unwrap();
    let e = w.freeze_blocking(&ctx(2)).unwrap_err();
    assert_eq!(e.code, "already_frozen", "{e:?}");
    let found = w.startup_thaw().await.unwrap().expect("it was frozen");
    assert_eq!(found.what, fs1.mnt.display().to_string());
    assert!(!w.thaw_blocking().unwrap(), "thawing a thawed fs is a no-op");
    assert!(w.startup_thaw().await.unwrap().is_none());
    fs::write(fs1.mnt.join("after"), b"ok").unwrap();
}

/// `recman bench freeze` runs real jobs through fsfreeze and btrfs and
/// prints its figures with the bare sequence beside them, with the host
/// freeze state on disk (as `recman up` and `recman snapshot` keep it, the
/// default) and in memory.
#[test]
fn bench_freeze_prints_its_figures_for_both_host_states() {
    if !can_run(&["losetup", "mkfs.ext4", "mkfs.btrfs", "btrfs", "mount"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (flag, shown) in [(None, "disk"), (Some("memory"), "memory")] {
        let mut args = vec!["bench", "freeze", "--jobs", "5"];
        if let Some(f) = flag {
            args.extend(["--host-state", f]);
        }
        let out = recman_testkit::recman(dir.path(), &args);
        let text = recman_testkit::text(&out);
        assert!(out.status.success(), "{text}");
        let last = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        let kv: std::collections::BTreeMap<&str, &str> = last
            .split_whitespace()
            .filter_map(|p| p.split_once('='))
            .collect();
        assert_eq!(kv.get("host_state"), Some(&shown), "{text}");
        assert_eq!(
            (kv.get("jobs"), kv.get("failed")),
            (Some(&"5"), Some(&"0")),
            "{text}"
        );
        for key in ["added_p99_us", "bare_p99_us", "freeze_window_p99_us"] {
            let v: u64 = kv.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
            assert!(v > 0, "{key} in {text}");
        }
    }
}
