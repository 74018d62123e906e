//! (4) PostgreSQL protection a DBA would trust (issue 25), as root, on a
//! private PostgreSQL 15 whose data directory is a btrfs subvolume:
//!
//! - an idle cluster, a least-privileged role with exactly the documented
//!   GRANTs: `recman check` passes, every snapshot completes in seconds
//!   (the last archived file is the backup's `.backup` history file), and
//!   retention (`keep_last = 2`, `prune_wal`) removes the pruned snapshots'
//!   labels and the archived WAL the oldest kept restore point does not
//!   need; that restore point is then started and holds its rows;
//! - `archive_mode = off` with `wait_for_archive = true`, and a role without
//!   `pg_switch_wal`: refused by `recman check` (exit 1) and by the job
//!   before any freeze, with a reason that says what to do, idle and under
//!   pgbench load;
//! - archiving slower (35 s a file) than the engine's old fixed 30 s stage
//!   deadline, within the writer's 60 s `timeout`: the thaw and the flush
//!   wait for it and the job completes in one attempt, idle and under load;
//! - PostgreSQL down when the job starts and back a few seconds later: the
//!   job's retries ride the restart out and the snapshot completes.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use recman_config::Config;
use recman_events::{EventBody, Stage};
use recman_testkit::{recman_bin, wait_until_async, DEADLINE};
use recman_tests::linux::{can_run, completed, step_took, Embedded, LoopFs};
use recman_tests::postgres::{as_postgres, Cluster, Load, Pg, PASSWORD, TOOLS};
use recman_workers::check::{self, Level};
use recman_workers::writer::postgres::{rights, wal};

fn target(id: &str, c: &Cluster, user: &str, wait: bool, labels: &Path, dest: &Path, extra: &str) -> String {
    format!(
        "[[target]]\nid = \"{id}\"\nfreeze_limit = \"60s\"\n{extra}[target.writer]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\n\
         port = {}\nuser = \"{user}\"\npassword_file = \"{}\"\nlabel_dir = \"{}\"\nwait_for_archive = {wait}\ntimeout = \"60s\"\n\
         wal_archive = \"{}\"\n{}[target.provider]\ntype = \"btrfs\"\nsubvolume = \"{}\"\ndest = \"{}\"\n",
        c.pg.port,
        c.pw.display(),
        labels.display(),
        c.archive.display(),
        if extra.contains("keep_last") { "prune_wal = true\n" } else { "" },
        c.sub.display(),
        dest.display(),
    )
}

fn config(c: &Cluster, text: &str) -> Config {
    let p = c.top.join("recman.toml");
    fs::write(&p, text).unwrap();
    Config::load(&p).unwrap()
}

fn archived(c: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(&c.archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cluster_snapshots_in_seconds_as_a_least_privileged_role_and_retention_prunes_wal() {
    if !can_run(TOOLS) {
        return;
    }
    let b = LoopFs::new("btrfs", 1024);
    let c = Cluster::start(&b, true);
    let su = c.pg.client().await;
    // Exactly the GRANTs the README documents (rights::RIGHTS), nothing more.
    let grants = rights::grants("recman_backup", rights::needed(true));
    su.batch_execute(&format!(
        "CREATE ROLE recman_backup LOGIN PASSWORD '{PASSWORD}'; {grants}\n\
         CREATE TABLE t (n int PRIMARY KEY);"
    ))
    .await
    .unwrap();
    // Archived WAL from before any restore point (what retention may remove).
    for i in 0..3 {
        su.batch_execute(&format!(
            "INSERT INTO t VALUES ({}); SELECT pg_switch_wal();",
            100 + i
        ))
        .await
        .unwrap();
    }
    wait_until_async("the first segments archived", DEADLINE, || {
        archived(&c).len() >= 3
    })
    .await;

    let (labels, dest) = (c.top.join("labels"), b.mnt.join("snapshots"));
    let cfg = config(
        &c,
        &target(
            "pg1",
            &c,
            "recman_backup",
            true,
            &labels,
            &dest,
            "keep_last = 2\n",
        ),
    );
    let log_dir = c.top.join("log");
    let findings = check::target(&log_dir, &cfg.targets[0]).await;
    for f in &findings {
        eprintln!("check: {} {} {}", f.level, f.subject, f.message);
    }
    assert!(check::worst(&findings) < Level::Fail, "{findings:#?}");
    assert!(
        findings
            .iter()
            .any(|f| f.message.contains("may execute pg_backup_start")),
        "{findings:#?}"
    );

    let emb = Embedded::start(&cfg, &log_dir, "w1").await;
    let mut names = Vec::new();
    for i in 1..=4 {
        // Quiet during the job: the rows come before it.
        su.execute("INSERT INTO t VALUES ($1)", &[&i]).await.unwrap();
        let t0 = Instant::now();
        let job = emb.submit(&format!("idle-{i}"), &["pg1"]).await;
        let events = emb.wait(job, Duration::from_secs(120)).await;
        let took = t0.elapsed();
        let (snap, window) = completed(&events);
        // The case: the last archived file is the `.backup` history file.
        let last: Option<String> = su
            .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .await
            .unwrap()
            .get(0);
        eprintln!(
            "snapshot {i} {}: job {took:?}, freeze window {window} us, last archived {last:?}",
            snap.name
        );
        assert!(took < Duration::from_secs(15), "an idle snapshot took {took:?}");
        names.push(snap.name);
    }
    // Retention: the two oldest snapshots go, and their labels with them.
    let (old, kept) = names.split_at(2);
    wait_until_async("the pruned snapshots' labels removed", DEADLINE, || {
        old.iter()
            .all(|n| !labels.join(n).exists() && !dest.join(n).exists())
    })
    .await;
    emb.stop().await;
    for n in kept {
        assert!(labels.join(n).join("backup_label").is_file(), "{n}: label kept");
        assert!(dest.join(n).is_dir(), "{n}: snapshot kept");
    }
    let oldest_text = fs::read_to_string(labels.join(&kept[0]).join("backup_label")).unwrap();
    let need = wal::label_start_segment(&oldest_text).unwrap();
    let left = archived(&c);
    eprintln!("oldest kept {} starts in {need}; archive: {left:?}", kept[0]);
    assert!(
        left.iter().all(|n| !wal::prunable(n, &need)),
        "WAL older than {need} left: {left:?}"
    );
    assert!(
        left.contains(&need),
        "the segment the oldest kept point needs: {left:?}"
    );
    assert!(
        left.iter()
            .any(|n| n.ends_with(".backup") && !wal::prunable(n, &need)),
        "{left:?}"
    );
    // And `check` agrees the archive still holds what each kept point needs.
    let findings = check::target(&log_dir, &cfg.targets[0]).await;
    assert!(
        findings
            .iter()
            .any(|f| f.level == Level::Ok && f.message.contains("2 labelled restore point(s)")),
        "{findings:#?}"
    );

    // The oldest kept restore point restores from the pruned archive.
    let (pg2, log) = c.restore(&b, &dest.join(&kept[0]), &labels, &kept[0]);
    let c2 = pg2.client().await;
    let rows: i64 = c2
        .query_one("SELECT count(*) FROM t WHERE n < 100", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3, "the rows inserted before the third snapshot");
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("consistent recovery state reached"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_mode_off_and_missing_rights_are_refused_before_any_freeze() {
    if can_run(TOOLS) {
        refused_before_any_freeze(false).await;
    }
}

/// The same under pgbench load: what refuses does not depend on a quiet server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_mode_off_and_missing_rights_are_refused_under_load_too() {
    if can_run(TOOLS) {
        refused_before_any_freeze(true).await;
    }
}

async fn refused_before_any_freeze(load: bool) {
    let b = LoopFs::new("btrfs", 1024);
    let c = Cluster::start(&b, false);
    let _load = load.then(|| Load::start(c.pg.port, 300));
    let su = c.pg.client().await;
    let all_but_switch: Vec<&rights::Right> = rights::needed(false)
        .filter(|r| r.function != "pg_switch_wal()")
        .collect();
    su.batch_execute(&format!(
        "CREATE ROLE recman_weak LOGIN PASSWORD '{PASSWORD}'; {}",
        rights::grants("recman_weak", all_but_switch)
    ))
    .await
    .unwrap();
    let labels = c.top.join("labels");
    let (d1, d2) = (b.mnt.join("snaps-noarch"), b.mnt.join("snaps-weak"));
    let text = format!(
        "{}{}",
        target("noarch", &c, "postgres", true, &labels, &d1, ""),
        target("weak", &c, "recman_weak", false, &labels, &d2, ""),
    );
    let cfg = config(&c, &text);
    let log_dir = c.top.join("log");

    let f = check::target(&log_dir, &cfg.targets[0]).await;
    let fail = f
        .iter()
        .find(|f| f.level == Level::Fail)
        .unwrap_or_else(|| panic!("{f:#?}"));
    assert!(
        fail.message.contains("archive_mode is off") && fail.message.contains("archive_mode = on"),
        "{fail:?}"
    );
    let f = check::target(&log_dir, &cfg.targets[1]).await;
    let fail = f
        .iter()
        .find(|f| f.level == Level::Fail)
        .unwrap_or_else(|| panic!("{f:#?}"));
    assert!(
        fail.message
            .contains("GRANT EXECUTE ON FUNCTION pg_switch_wal() TO \"recman_weak\";"),
        "{fail:?}"
    );
    // The command line: exit 1, the failure printed; `validate-config --check` too.
    let cfg_path = c.top.join("recman.toml");
    let data = c.top.join("cli-data");
    for args in [vec!["check", "weak"], vec!["validate-config", "--check"]] {
        let out = std::process::Command::new(recman_bin())
            .args([
                "--config",
                cfg_path.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("FAIL") && stdout.contains("pg_switch_wal()"),
            "{args:?}: {stdout}"
        );
    }

    // The jobs fail at the freeze, before pg_backup_start: nothing frozen, no snapshot.
    let emb = Embedded::start(&cfg, &log_dir, "w1").await;
    for (id, why) in [("noarch", "archive_mode is off"), ("weak", "pg_switch_wal()")] {
        let t0 = Instant::now();
        let job = emb.submit(&format!("refused-{id}"), &[id]).await;
        let events = emb.wait(job, Duration::from_secs(60)).await;
        let reason = events
            .iter()
            .find_map(|e| match e {
                EventBody::Failed { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{id}: the job did not fail: {events:#?}"));
        eprintln!("{id}: failed in {:?}: {reason}", t0.elapsed());
        assert!(reason.contains(why), "{id}: {reason}");
        assert!(
            !events.iter().any(|e| matches!(
                e,
                EventBody::StepSucceeded {
                    stage: Stage::Freeze | Stage::Snapshot,
                    ..
                }
            )),
            "{id}: nothing may be frozen or snapshotted: {events:#?}"
        );
    }
    emb.stop().await;
    for d in [&d1, &d2] {
        let n = fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
        assert_eq!(n, 0, "{}: no snapshot", d.display());
    }
    assert!(!labels.exists() || fs::read_dir(&labels).unwrap().count() == 0);
}

/// Issue 25 item 3: the engine's stage deadlines follow the writer's
/// `timeout` (60 s here), so a step slower than the engine's old fixed 30 s
/// deadline is waited for, not abandoned and retried while the worker still
/// waits. Archiving is made slow (35 s a file): the backup history file,
/// which `pg_backup_stop` waits for at the thaw; and, once a `backup_label`
/// is stored, the next file, which the flush's switched segment queues
/// behind. Under load the flush always has a segment to wait for; on an
/// idle cluster only if something wrote WAL since the thaw's own switch
/// (it did here: the bgwriter's standby snapshot, every 15 s), so only the
/// thaw is asserted slow there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_archive_within_the_writers_timeout_is_waited_for_on_an_idle_cluster() {
    if can_run(TOOLS) {
        slow_archive(false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_archive_within_the_writers_timeout_is_waited_for_under_load() {
    if can_run(TOOLS) {
        slow_archive(true).await;
    }
}

/// Longer than the engine's old fixed stage deadline (30 s).
const SLOW: Duration = Duration::from_secs(35);

async fn slow_archive(load: bool) {
    let b = LoopFs::new("btrfs", 2048);
    let c = Cluster::start(&b, true);
    let (labels, dest) = (c.top.join("labels"), b.mnt.join("snapshots"));
    let flags = c.top.join("flags");
    fs::create_dir(&flags).unwrap();
    recman_tests::postgres::chown_postgres(&flags);
    fs::write(flags.join("armed"), b"").unwrap();
    recman_tests::postgres::chown_postgres(&flags);
    c.set_archive_script(&format!(
        "case \"$2\" in\n  *.backup) sleep {s} ;;\n  *) if [ -f {f}/armed ] && [ -n \"$(ls -A {l} 2>/dev/null)\" ]; then \
         rm -f {f}/armed; sleep {s}; fi ;;\nesac\nexec cp \"$1\" {a}/\"$2\"\n",
        s = SLOW.as_secs(),
        f = flags.display(),
        l = labels.display(),
        a = c.archive.display(),
    ));
    let _load = load.then(|| Load::start(c.pg.port, 600));
    let cfg = config(&c, &target("pg1", &c, "postgres", true, &labels, &dest, ""));
    let policy = recman_engine::runtime::core_config(&cfg, 0).job_policy(&[cfg.targets[0].id.clone()]);
    assert!(policy.stage_timeout_ms > 60_000, "{policy:?}");
    let emb = Embedded::start(&cfg, &c.top.join("log"), "w1").await;
    let t0 = Instant::now();
    let job = emb.submit("slow-archive", &["pg1"]).await;
    let events = emb.wait(job, Duration::from_secs(240)).await;
    let took = t0.elapsed();
    let (snap, window) = completed(&events);
    let (thaw, flush) = (
        step_took(&events, Stage::Thaw),
        step_took(&events, Stage::FlushLogs),
    );
    eprintln!("load={load}: job {took:?}, thaw {thaw:?}, flush {flush:?}, window {window} us");
    let attempts = events
        .iter()
        .filter(|e| matches!(e, EventBody::AttemptStarted { .. }))
        .count();
    assert_eq!(attempts, 1, "one attempt, nothing abandoned: {events:#?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, EventBody::StepFailed { .. } | EventBody::RetryScheduled { .. })),
        "{events:#?}"
    );
    assert!(
        thaw >= SLOW,
        "pg_backup_stop waited for the slow archive: {thaw:?}"
    );
    if load {
        assert!(
            flush >= SLOW - Duration::from_secs(2),
            "the flush waited for the slow archive: {flush:?}"
        );
    }
    assert!(labels.join(&snap.name).join("backup_label").is_file());
    assert!(dest.join(&snap.name).is_dir());
    emb.stop().await;
}

/// Issue 25, "retries with backoff that span a realistic restart window":
/// PostgreSQL is stopped when the job starts and started again after the
/// first attempt failed; a later attempt of the same job completes, and
/// the retry's reason says what was wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_during_a_job_is_ridden_out_by_its_retries() {
    if !can_run(TOOLS) {
        return;
    }
    let b = LoopFs::new("btrfs", 1024);
    let c = Cluster::start(&b, true);
    let (labels, dest) = (c.top.join("labels"), b.mnt.join("snapshots"));
    let cfg = config(
        &c,
        &target(
            "pg1",
            &c,
            "postgres",
            true,
            &labels,
            &dest,
            "retry_backoff = \"1s\"\n",
        ),
    );
    assert!(
        cfg.targets[0].retries >= 3,
        "a postgres target retries by default"
    );
    let data = c.pg.data.to_str().unwrap().to_string();
    as_postgres("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    let emb = Embedded::start(&cfg, &c.top.join("log"), "w1").await;
    let job = emb.submit("restart-1", &["pg1"]).await;
    let events = emb
        .wait_for(job, Duration::from_secs(120), |ev| {
            ev.iter().any(|e| matches!(e, EventBody::RetryScheduled { .. }))
        })
        .await;
    let reason = events
        .iter()
        .find_map(|e| match e {
            EventBody::RetryScheduled { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(reason.contains("is PostgreSQL running"), "{reason}");
    // Stopped when dropped, like the first start.
    let _restarted = Pg::start(&c.pg.data, c.pg.port, &c.logs.join("restarted.log"));
    let events = emb.wait(job, Duration::from_secs(180)).await;
    let (snap, _) = completed(&events);
    let attempts = events
        .iter()
        .filter(|e| matches!(e, EventBody::AttemptStarted { .. }))
        .count();
    assert!(attempts >= 2, "completed by a retry: {attempts} attempt(s)");
    assert!(dest.join(&snap.name).is_dir(), "{} on disk", snap.name);
    emb.stop().await;
}

/// Issue 25 item 6: a server that does not answer (restarting) is reported
/// with what to check, as retryable (the job is retried with backoff), and
/// a postgres target's retries span a restart window by default. Needs no
/// root and no PostgreSQL: nothing listens on the port.
#[tokio::test]
async fn a_server_that_does_not_answer_is_retryable_and_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let port = recman_testkit::free_port();
    let p = dir.path().join("recman.toml");
    fs::write(
        &p,
        format!(
            "[[target]]\nid = \"pg\"\n[target.writer]\ntype = \"postgres\"\nport = {port}\ntimeout = \"5s\"\n\
             label_dir = \"{}\"\n[target.provider]\ntype = \"none\"\n",
            dir.path().join("labels").display()
        ),
    )
    .unwrap();
    let cfg = Config::load(&p).unwrap();
    let t = &cfg.targets[0];
    // 5 retries from 4 s, doubled, at least half of each: at least 1 minute in all.
    let nominal: u64 = (0..t.retries)
        .map(|i| (t.retry_backoff.as_millis() as u64 * (1 << i)).min(t.retry_backoff_max.as_millis() as u64))
        .sum();
    assert!(nominal / 2 >= 60_000, "retries span {nominal} ms nominal");
    let findings = check::target(dir.path(), t).await;
    let f = findings
        .iter()
        .find(|f| f.level == Level::Fail && f.subject == "postgres")
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert!(
        f.message.contains("is PostgreSQL running") && f.message.contains("pg_hba.conf"),
        "{f:?}"
    );
    // The writer's own step: retryable, same hint.
    let w = recman_workers::writer::from_config(&t.id, &t.writer);
    let ctx = recman_workers::StepCtx {
        target: t.id.clone(),
        job: recman_events::JobId::from_parts(1_700_000_000_000, 1),
        attempt: 1,
        kind: recman_events::SnapshotKind::Full,
    };
    let e = w.flush_logs(&ctx).await.unwrap_err();
    assert!(e.retryable && e.message.contains("listen_addresses"), "{e:?}");
}

/// Issue 25: the preflight runs on `recman up`'s start as warnings. A
/// postgres target whose server does not answer is named in a `preflight:`
/// warning with what to check, and the engine still starts and serves.
/// Needs no root and no PostgreSQL: nothing listens on the port.
#[test]
fn up_warns_at_start_up_when_the_preflight_fails_and_still_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (pg_port, port) = (recman_testkit::free_port(), recman_testkit::free_port());
    fs::write(
        dir.path().join("recman.toml"),
        format!(
            "[[target]]\nid = \"pg\"\n[target.writer]\ntype = \"postgres\"\nport = {pg_port}\ntimeout = \"5s\"\n\
             label_dir = \"{}\"\n[target.provider]\ntype = \"none\"\n",
            dir.path().join("labels").display()
        ),
    )
    .unwrap();
    let err = dir.path().join("up.stderr");
    let mut child = std::process::Command::new(recman_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("RECMAN_DATA_DIR")
        .env_remove("RECMAN_CONFIG")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let stderr = || fs::read_to_string(&err).unwrap_or_default();
    let until = Instant::now() + DEADLINE;
    let found = loop {
        let s = stderr();
        if s.contains("preflight:") && s.contains("is PostgreSQL running") {
            break true;
        }
        if Instant::now() > until {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Ready: the preflight runs beside the start-up, it does not hold it.
    let served = loop {
        if recman_tests::cli::ready(port) {
            break true;
        }
        if Instant::now() > until {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no preflight warning naming the server: {}", stderr());
    assert!(
        served,
        "the engine must start despite a failed preflight: {}",
        stderr()
    );
}
