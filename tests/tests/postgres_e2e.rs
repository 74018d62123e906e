//! (4) PostgreSQL end to end, as root: a private PostgreSQL 15 (data dir on a
//! btrfs loop filesystem, loopback port, socket dir and WAL archive under the
//! temp dir) under pgbench load plus a writer of committed sequence numbers;
//! a job with the `postgres` writer and the `btrfs` provider; a second
//! PostgreSQL on a writable copy of the snapshot, with its backup_label,
//! recovers and holds every number committed before the freeze. The same
//! with the combined writer (postgres + fsfreeze of ext4) and `copy`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use recman_config::Config;
use recman_events::{EventBody, Stage};
use recman_testkit::{free_port, sh, wait_until_async, DEADLINE};
use recman_tests::linux::{can_run, completed, freeze_step, Embedded, LoopFs, NumberedWriter};
use recman_tests::postgres::{append, as_postgres, chown_postgres, Load, Pg, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_snapshot_on_btrfs_recovers_with_every_committed_row() {
    if !can_run(&[
        "losetup",
        "mkfs.btrfs",
        "btrfs",
        "runuser",
        "initdb",
        "pg_ctl",
        "pgbench",
    ]) {
        return;
    }
    case(false).await;
}

/// The combined writer: backup mode plus `fsfreeze` of the cluster's ext4
/// filesystem (thawed first), with the `copy` provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_plus_fsfreeze_on_ext4_recovers_with_every_committed_row() {
    if !can_run(&["losetup", "mkfs.ext4", "runuser", "initdb", "pg_ctl", "pgbench"]) {
        return;
    }
    case(true).await;
}

/// `combined`: ext4 + postgres/fsfreeze + copy; else btrfs + postgres + btrfs.
async fn case(combined: bool) {
    let b = LoopFs::new(if combined { "ext4" } else { "btrfs" }, 1024);
    let top = b.dir.path().to_path_buf();
    for p in [&top, &b.mnt] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let sub = b.mnt.join("pg");
    if combined {
        fs::create_dir(&sub).unwrap();
    } else {
        sh("btrfs", &["subvolume", "create", sub.to_str().unwrap()]);
    }
    let (archive, sock, sock2) = (top.join("archive"), top.join("sock"), top.join("sock2"));
    let logs = top.join("pglogs");
    for d in [&archive, &sock, &sock2, &logs] {
        fs::create_dir(d).unwrap();
    }
    let pw = top.join("pw");
    fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    for p in [&sub, &archive, &sock, &sock2, &pw, &logs] {
        chown_postgres(p);
    }
    let data = sub.join("data");
    as_postgres(
        "initdb",
        &[
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            &format!("--pwfile={}", pw.display()),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-N",
        ],
    );
    let port = free_port();
    let conf = format!(
        "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = replica\n\
         archive_mode = on\narchive_command = 'cp %p {}/%f'\nmax_wal_size = 256MB\n",
        sock.display(),
        archive.display()
    );
    append(&data.join("postgresql.conf"), &conf);
    let pg1 = Pg::start(&data, port, &logs.join("pg1.log"));

    // Load: pgbench, and a writer of committed sequence numbers.
    let c = pg1.client().await;
    c.batch_execute("CREATE TABLE seq (n bigint PRIMARY KEY)")
        .await
        .unwrap();
    let _load = Load::start(port, 120);
    let committed = Arc::new(AtomicU64::new(0));
    // When each number's commit returned (Unix ms; number n at index n - 1).
    let commit_times = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (cm, ct, st) = (committed.clone(), commit_times.clone(), stop.clone());
    let loader = tokio::spawn(async move {
        let mut n = 0i64;
        while !st.load(Ordering::Relaxed) {
            n += 1;
            c.execute("INSERT INTO seq VALUES ($1)", &[&n]).await.unwrap();
            ct.lock().unwrap().push(recman_events::clock::now_ms());
            cm.store(n as u64, Ordering::SeqCst);
        }
    });
    // Rows before the job, so "every row committed before the freeze" is tested.
    wait_until_async("the first 200 committed rows", DEADLINE, || {
        committed.load(Ordering::SeqCst) >= 200
    })
    .await;

    let labels = top.join("labels");
    let dest = if combined {
        top.join("snapshots")
    } else {
        b.mnt.join("snapshots")
    };
    let (extra, provider) = if combined {
        (
            format!(
                "fsfreeze = \"{}\"\nstate_dir = \"{}\"\n",
                b.mnt.display(),
                top.join("state").display()
            ),
            format!(
                "type = \"copy\"\nsource = \"{}\"\ndest = \"{}\"\n",
                sub.display(),
                dest.display()
            ),
        )
    } else {
        (
            String::new(),
            format!(
                "type = \"btrfs\"\nsubvolume = \"{}\"\ndest = \"{}\"\n",
                sub.display(),
                dest.display()
            ),
        )
    };
    let cfg_path = top.join("recman.toml");
    fs::write(
        &cfg_path,
        format!(
            "[[target]]\nid = \"pg1\"\nfreeze_limit = \"60s\"\n[target.writer]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             user = \"postgres\"\npassword_file = \"{}\"\nlabel_dir = \"{}\"\nwait_for_archive = true\ntimeout = \"60s\"\n{extra}\
             [target.provider]\n{provider}",
            pw.display(),
            labels.display(),
        ),
    )
    .unwrap();
    let cfg = Config::load(&cfg_path).unwrap();
    // With fsfreeze, a plain writer on the same filesystem must block too.
    let probe = combined.then(|| NumberedWriter::start(&b.mnt.join("probe")));
    let emb = Embedded::start(&cfg, &top.join("log"), "w1").await;
    let before = committed.load(Ordering::SeqCst);
    let job = emb.submit("pg-r1", &["pg1"]).await;
    let events = emb.wait(job, Duration::from_secs(120)).await;
    let after = committed.load(Ordering::SeqCst);
    // The last time the engine asked for the snapshot (it was cut after
    // that) and how many numbers had been committed by then: all of them
    // must be in the copy, not only those committed before the submit.
    let asked_ms = emb
        .timed(job)
        .into_iter()
        .filter(|(_, e)| {
            matches!(
                e,
                EventBody::StageStarted {
                    stage: Stage::Snapshot,
                    ..
                }
            )
        })
        .map(|(at, _)| at)
        .next_back()
        .expect("a snapshot stage");
    let before_snapshot = commit_times
        .lock()
        .unwrap()
        .iter()
        .take_while(|t| **t < asked_ms)
        .count() as u64;
    emb.stop().await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();
    let (snap, _) = completed(&events);
    assert_eq!(snap.provider, if combined { "copy" } else { "btrfs" });
    if combined {
        // Frozen and thawed: a freeze window was measured, no marker left.
        let window = Duration::from_micros(completed(&events).1);
        let longest = probe
            .map(|p| p.stop())
            .unwrap_or_default()
            .iter()
            .map(|w| w.took)
            .max()
            .unwrap_or_default();
        // The window runs from the freeze's return (writes block from the
        // start of FIFREEZE, which first syncs: the freeze step's own time).
        let freeze_step = freeze_step(&events);
        eprintln!(
            "freeze window {window:?} (freeze step {freeze_step:?}), longest blocked probe write {longest:?}"
        );
        assert!(
            // The recorded window also spans pg_backup_stop (after the FITHAW).
            longest >= Duration::from_millis(50)
                && longest <= window + freeze_step + Duration::from_millis(100),
            "the filesystem was not frozen inside the window {window:?} + the freeze step {freeze_step:?} (longest write {longest:?})"
        );
        assert!(!top.join("state/fsfreeze/pg1.json").exists());
    }
    drop(pg1);

    // A writable copy of the snapshot, its backup_label, WAL from the archive.
    let label = labels.join(&snap.name).join("backup_label");
    let label_text = fs::read_to_string(&label).unwrap_or_else(|e| panic!("{}: {e}", label.display()));
    assert!(label_text.contains("START WAL LOCATION"), "{label_text}");
    assert!(
        label_text.contains(&snap.name),
        "label names the snapshot: {label_text}"
    );
    let restore = b.mnt.join("restore");
    if combined {
        sh(
            "cp",
            &[
                "-a",
                dest.join(&snap.name).to_str().unwrap(),
                restore.to_str().unwrap(),
            ],
        );
    } else {
        sh(
            "btrfs",
            &[
                "subvolume",
                "snapshot",
                dest.join(&snap.name).to_str().unwrap(),
                restore.to_str().unwrap(),
            ],
        );
    }
    let data2 = restore.join("data");
    for f in ["postmaster.pid", "postmaster.opts"] {
        let _ = fs::remove_file(data2.join(f));
    }
    fs::copy(&label, data2.join("backup_label")).unwrap();
    fs::write(data2.join("recovery.signal"), b"").unwrap();
    let port2 = free_port();
    append(
        &data2.join("postgresql.conf"),
        &format!(
            "\nport = {port2}\nunix_socket_directories = '{}'\narchive_mode = off\nrestore_command = 'cp {}/%f %p'\n\
             recovery_target = 'immediate'\nrecovery_target_action = 'promote'\n",
            sock2.display(),
            archive.display()
        ),
    );
    chown_postgres(&data2);
    let pg2 = Pg::start(&data2, port2, &logs.join("pg2.log"));
    let c2 = pg2.client().await;
    let row = c2
        .query_one("SELECT count(*), coalesce(max(n), 0) FROM seq", &[])
        .await
        .unwrap();
    let (count, max): (i64, i64) = (row.get(0), row.get(1));
    let accounts: i64 = c2
        .query_one("SELECT count(*) FROM pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    eprintln!(
        "restored copy: {count} rows, max {max}; committed before the job {before}, \
         before the snapshot was asked for {before_snapshot}, after the job {after}"
    );
    assert_eq!(count, max, "the sequence has gaps");
    assert!(
        max as u64 >= before_snapshot,
        "rows committed before the freeze and the snapshot are missing: {before_snapshot} committed, {max} restored"
    );
    assert!(max as u64 <= after, "rows from after the job?");
    assert_eq!(accounts, 100_000);
    let log = fs::read_to_string(logs.join("pg2.log")).unwrap_or_default();
    assert!(log.contains("consistent recovery state reached"), "{log}");
}
