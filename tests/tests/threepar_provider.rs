//! The `3par` provider against the WSAPI fake (HTTP and HTTPS): snapshots of
//! volumes and volume sets, redelivery, sessions, retries, deletion, errors.

use std::sync::Arc;
use std::time::Duration;

use recman_events::{JobId, SnapshotKind, TargetId};
use recman_tests::threepar::{array, provider_config, Scheme, PASSWORD};
use recman_workers::provider::{Provider, SnapshotJob, ThreeParProvider};

fn t() -> TargetId {
    TargetId::from("db01")
}

async fn take(
    p: &ThreeParProvider,
    name: &str,
) -> Result<recman_events::SnapshotInfo, recman_events::StepError> {
    let target = t();
    p.snapshot_job(SnapshotJob {
        name,
        target: &target,
        kind: SnapshotKind::Full,
        job: Some((JobId::from_parts(1_700_000_000_000, 7), 2)),
    })
    .await
}

#[tokio::test]
async fn snapshot_of_a_volume_is_a_read_only_virtual_copy_with_job_comment_and_hours() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("DB01-vv");
    let cfg = provider_config(
        dir.path(),
        &a.section,
        "volume = \"DB01-vv\"",
        "expiration_hours = 336\nretention_hours = 24",
    );
    let p = ThreeParProvider::new(cfg);
    let info = take(&p, "rm-0123456789abcdef-a2").await.unwrap();
    assert!(!info.existed);
    assert_eq!(info.provider, "3par");
    assert_eq!(info.location, "3par:a/rm-0123456789abcdef-a2");
    let v = a
        .fake
        .volume("rm-0123456789abcdef-a2")
        .expect("copy on the array");
    assert_eq!(v.copy_of.as_deref(), Some("DB01-vv"));
    assert_eq!(v.copy_type, 3);
    assert!(v.read_only);
    assert_eq!(v.expiration_hours, Some(336));
    assert_eq!(v.retention_hours, Some(24));
    let comment = v.comment.unwrap();
    let job = JobId::from_parts(1_700_000_000_000, 7);
    assert!(
        comment.contains(&job.to_string()) && comment.contains("attempt 2"),
        "{comment}"
    );

    // Redelivery: EXISTENT_VOL, checked to be our copy, reported as existing.
    let again = take(&p, "rm-0123456789abcdef-a2").await.unwrap();
    assert!(again.existed);
    assert_eq!(a.fake.snapshots_of("DB01-vv").len(), 1);
    // One login for everything so far: the session key is reused.
    assert_eq!(a.fake.logins(), 1);
    let posts: Vec<_> = a
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.uri == "/api/v1/volumes/DB01-vv")
        .collect();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[1].status, 409);
    assert!(posts.iter().all(|r| r.session_key.is_some()));
}

#[tokio::test]
async fn a_same_named_volume_that_is_not_our_copy_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("DB01-vv");
    a.fake.add_volume("other");
    a.fake.add_child("other", "rm-1-a1");
    let p = ThreeParProvider::new(provider_config(
        dir.path(),
        &a.section,
        "volume = \"DB01-vv\"",
        "",
    ));
    let e = take(&p, "rm-1-a1").await.unwrap_err();
    assert_eq!(e.code, "3par_name_conflict", "{e:?}");
    assert!(!e.retryable);
    assert!(
        e.message.contains("not a virtual copy of DB01-vv"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn a_volume_set_is_cut_at_once_with_the_count_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume_set("DB-set", &["db-data", "db-logs"]);
    let p = ThreeParProvider::new(provider_config(
        dir.path(),
        &a.section,
        "volume_set = \"DB-set\"",
        "",
    ));
    let info = take(&p, "rm-abc-a1").await.unwrap();
    assert!(!info.existed);
    assert_eq!(info.location, "3par:a/rm-abc-a1-0,rm-abc-a1-1");
    assert_eq!(a.fake.snapshots_of("db-data"), vec!["rm-abc-a1-0"]);
    assert_eq!(a.fake.snapshots_of("db-logs"), vec!["rm-abc-a1-1"]);
    let post = a
        .fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.uri == "/api/v1/volumesets/DB-set")
        .unwrap();
    assert!(post.body.contains("rm-abc-a1-@count@"), "{}", post.body);
    // Redelivered: one copy per member still.
    assert!(take(&p, "rm-abc-a1").await.unwrap().existed);
    assert_eq!(a.fake.snapshots_of("db-logs").len(), 1);
    assert_eq!(p.list(&t()).await.unwrap(), vec!["rm-abc-a1"]);
    assert!(p.delete("rm-abc-a1", &t()).await.unwrap());
    assert!(a.fake.snapshots_of("db-data").is_empty() && a.fake.snapshots_of("db-logs").is_empty());
    assert!(!p.delete("rm-abc-a1", &t()).await.unwrap());
}

#[tokio::test]
async fn unknown_volume_and_set_and_long_names_are_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    let p = ThreeParProvider::new(provider_config(dir.path(), &a.section, "volume = \"nope\"", ""));
    let e = take(&p, "rm-1-a1").await.unwrap_err();
    assert_eq!(e.code, "3par_non_existent_vol");
    assert!(!e.retryable);
    assert!(
        e.message.contains("HTTP 404, WSAPI code 23 (NON_EXISTENT_VOL)"),
        "{}",
        e.message
    );

    let p = ThreeParProvider::new(provider_config(
        dir.path(),
        &a.section,
        "volume_set = \"noset\"",
        "",
    ));
    let e = take(&p, "rm-1-a1").await.unwrap_err();
    assert_eq!(e.code, "3par_non_existent_set");
    assert!(e.message.contains("HTTP 404, WSAPI code 77"), "{}", e.message);

    a.fake.add_volume("v");
    let p = ThreeParProvider::new(provider_config(dir.path(), &a.section, "volume = \"v\"", ""));
    let e = take(&p, "rm-0123456789abcdef0123456789-a1").await.unwrap_err();
    assert_eq!(e.code, "3par_name_too_long");
    assert!(a.fake.snapshots_of("v").is_empty());
}

#[tokio::test]
async fn busy_array_is_retried_with_backoff_then_reported_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("v");
    let p = ThreeParProvider::new(provider_config(dir.path(), &a.section, "volume = \"v\"", ""));
    // Two 503s (the login, then its retry) are absorbed.
    a.fake.inject_503(2);
    take(&p, "rm-1-a1").await.unwrap();
    assert_eq!(a.fake.snapshots_of("v"), vec!["rm-1-a1"]);
    // A longer outage is reported, retryable, with the status.
    a.fake.inject_503(10);
    let e = take(&p, "rm-2-a1").await.unwrap_err();
    assert!(e.retryable, "{e:?}");
    assert_eq!(e.code, "3par_http_503");
    assert!(e.message.contains("HTTP 503"), "{}", e.message);
}

#[tokio::test]
async fn an_expired_session_is_replaced_once_and_shutdown_logs_out() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("v");
    let p = ThreeParProvider::new(provider_config(dir.path(), &a.section, "volume = \"v\"", ""));
    take(&p, "rm-1-a1").await.unwrap();
    a.fake.expire_sessions();
    take(&p, "rm-2-a1").await.unwrap();
    assert_eq!(a.fake.logins(), 2);
    let refused = a.fake.requests().iter().filter(|r| r.status == 403).count();
    assert_eq!(refused, 1, "one refused call before the re-login");
    assert_eq!(a.fake.live_sessions(), 1);
    p.shutdown().await;
    assert_eq!(a.fake.live_sessions(), 0);
    assert_eq!(a.fake.logouts(), 1);
}

#[tokio::test]
async fn targets_of_one_array_share_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("v1");
    a.fake.add_volume("v2");
    let p1 = ThreeParProvider::new(provider_config(dir.path(), &a.section, "volume = \"v1\"", ""));
    let p2 = ThreeParProvider::new(provider_config(dir.path(), &a.section, "volume = \"v2\"", ""));
    take(&p1, "rm-1-a1").await.unwrap();
    take(&p2, "rm-2-a1").await.unwrap();
    assert_eq!(a.fake.logins(), 1);
}

#[tokio::test]
async fn concurrent_steps_use_separate_sessions_up_to_max_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    let section = format!("{}max_sessions = 2\n", a.section);
    a.fake.set_latency(Duration::from_millis(150));
    let mut ps = Vec::new();
    for i in 0..4 {
        a.fake.add_volume(&format!("v{i}"));
        ps.push(Arc::new(ThreeParProvider::new(provider_config(
            dir.path(),
            &section,
            &format!("volume = \"v{i}\""),
            "",
        ))));
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, p) in ps.iter().enumerate() {
        let p = p.clone();
        set.spawn(async move { take(&p, &format!("rm-{i}-a1")).await.map(|_| ()) });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(a.fake.logins(), 2, "two sessions, reused by four steps");
}

#[tokio::test]
async fn wrong_password_is_a_clear_non_retryable_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("v");
    std::fs::write(dir.path().join("a.password"), "wrong-Pw-123\n").unwrap();
    let p = ThreeParProvider::new(provider_config(dir.path(), &a.section, "volume = \"v\"", ""));
    let e = take(&p, "rm-1-a1").await.unwrap_err();
    assert_eq!(e.code, "3par_inv_user_pass");
    assert!(!e.retryable);
    assert!(
        e.message.contains("HTTP 403, WSAPI code 5 (INV_USER_PASS)"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("login as user \"recman\" refused"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("wrong-Pw-123") && !e.message.contains(PASSWORD));
    // A missing password file names the file, not its content.
    std::fs::remove_file(dir.path().join("a.password")).unwrap();
    let e = take(&p, "rm-1-a1").await.unwrap_err();
    assert_eq!(e.code, "3par_config");
    assert!(e.message.contains("a.password"), "{}", e.message);
}

#[tokio::test]
async fn delete_checks_the_base_tolerates_missing_and_reports_has_child() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("v");
    a.fake.add_volume("rm-base-looking");
    let p = ThreeParProvider::new(provider_config(dir.path(), &a.section, "volume = \"v\"", ""));
    take(&p, "rm-1-a1").await.unwrap();
    take(&p, "rm-2-a1").await.unwrap();
    a.fake.add_child("rm-2-a1", "user-export-of-2");
    assert_eq!(p.list(&t()).await.unwrap(), vec!["rm-1-a1", "rm-2-a1"]);

    assert!(p.delete("rm-1-a1", &t()).await.unwrap());
    assert!(!p.delete("rm-1-a1", &t()).await.unwrap(), "404 = already gone");
    let e = p.delete("rm-2-a1", &t()).await.unwrap_err();
    assert_eq!(e.code, "3par_has_child");
    assert!(!e.retryable);
    assert!(e.message.contains("WSAPI code 32 (HAS_CHILD)"), "{}", e.message);
    // A base volume that merely looks like ours is never deleted.
    let e = p.delete("rm-base-looking", &t()).await.unwrap_err();
    assert_eq!(e.code, "3par_name_conflict");
    assert!(a.fake.volume("rm-base-looking").is_some());
    assert_eq!(p.list(&t()).await.unwrap(), vec!["rm-2-a1"]);
}

#[tokio::test]
async fn https_with_ca_file_works_and_an_untrusted_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Https).await;
    a.fake.add_volume("v");
    let p = ThreeParProvider::new(provider_config(dir.path(), &a.section, "volume = \"v\"", ""));
    take(&p, "rm-1-a1").await.unwrap();
    assert_eq!(a.fake.snapshots_of("v"), vec!["rm-1-a1"]);

    // A CA file with some other certificate: the handshake fails, clearly.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(a.ca_file.as_ref().unwrap(), other.cert.pem()).unwrap();
    let section = a.section.replace("timeout = \"5s\"", "timeout = \"4s\"");
    let p = ThreeParProvider::new(provider_config(dir.path(), &section, "volume = \"v\"", ""));
    let started = std::time::Instant::now();
    let e = take(&p, "rm-2-a1").await.unwrap_err();
    assert_eq!(e.code, "3par_tls", "{e:?}");
    assert!(
        !e.retryable,
        "a certificate the CA file does not trust needs a human: {e:?}"
    );
    assert!(e.message.to_lowercase().contains("certificate"), "{}", e.message);
    assert!(
        e.message.contains("ca_file"),
        "the message says what to check: {}",
        e.message
    );
    // Not tried again with backoff (two more tries would add at least 600 ms).
    assert!(
        started.elapsed() < std::time::Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.fake.snapshots_of("v").len(), 1);
}

#[tokio::test]
async fn https_with_explicit_insecure_skip_verify_works() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::HttpsInsecure).await;
    a.fake.add_volume("v");
    let p = ThreeParProvider::new(provider_config(dir.path(), &a.section, "volume = \"v\"", ""));
    take(&p, "rm-1-a1").await.unwrap();
    assert_eq!(a.fake.snapshots_of("v"), vec!["rm-1-a1"]);
}

#[tokio::test]
async fn an_unreachable_array_is_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    let port = a.fake.addr().port();
    drop(a); // nothing listens on the port any more
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pw = dir.path().join("a.password");
    let section = format!(
        "[array.a]\nurl = \"http://127.0.0.1:{port}\"\nuser = \"u\"\npassword_file = \"{}\"\n",
        pw.display()
    );
    let p = ThreeParProvider::new(provider_config(dir.path(), &section, "volume = \"v\"", ""));
    let e = take(&p, "rm-1-a1").await.unwrap_err();
    assert_eq!(e.code, "3par_unreachable", "{e:?}");
    assert!(e.retryable);
    assert!(!e.message.contains(PASSWORD));
}

#[tokio::test]
async fn a_slow_array_times_out_retryably() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("v");
    let section = a.section.replace("timeout = \"5s\"", "timeout = \"300ms\"");
    let p = ThreeParProvider::new(provider_config(dir.path(), &section, "volume = \"v\"", ""));
    a.fake.set_latency(Duration::from_millis(600));
    let e = take(&p, "rm-1-a1").await.unwrap_err();
    assert_eq!(e.code, "3par_unreachable", "{e:?}");
    assert!(e.retryable);
    assert!(e.message.contains("timed out"), "{}", e.message);
    a.fake.set_latency(Duration::ZERO);
    take(&p, "rm-1-a1").await.unwrap();
}

/// Collects everything every crate logs, down to TRACE.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_password_never_reaches_the_logs() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    for scheme in [Scheme::Http, Scheme::HttpsInsecure] {
        let a = array(dir.path(), scheme).await;
        a.fake.add_volume("v");
        let p = ThreeParProvider::new(provider_config(dir.path(), &a.section, "volume = \"v\"", ""));
        take(&p, "rm-1-a1").await.unwrap();
        a.fake.expire_sessions();
        take(&p, "rm-2-a1").await.unwrap();
        p.delete("rm-1-a1", &t()).await.unwrap();
        p.shutdown().await;
        std::fs::write(dir.path().join("a.password"), "wrong-Pw-xyz\n").unwrap();
        let p = ThreeParProvider::new(provider_config(dir.path(), &a.section, "volume = \"v\"", ""));
        take(&p, "rm-3-a1").await.unwrap_err();
    }
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(text.contains("logged in"), "the capture works: {text}");
    assert!(!text.contains(PASSWORD) && !text.contains("wrong-Pw-xyz"));
}

/// `recman check` of a `3par` target (issue 25): a login, the base volume
/// (every member of a set), room in its snapshot CPG; only reads, then logs out.
#[tokio::test]
async fn the_preflight_logs_in_finds_the_base_volume_and_measures_the_cpg() {
    use recman_tests::wsapi_fake::Cpg;
    use recman_workers::check::Level;
    use recman_workers::provider::threepar::check;
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("DB01-vv");
    a.fake.set_snap_cpg("DB01-vv", "SNAP_r6");
    a.fake.add_cpg(
        "SNAP_r6",
        Cpg {
            used_mib: 1000,
            limit_mib: 100_000,
            warning_mib: 0,
        },
    );
    let cfg = provider_config(dir.path(), &a.section, "volume = \"DB01-vv\"", "");
    let f = check::run(&cfg).await;
    assert!(f.iter().all(|f| f.level == Level::Ok), "{f:#?}");
    assert!(f.iter().any(|f| f.message.contains("99000 MiB left")), "{f:#?}");
    assert_eq!(a.fake.live_sessions(), 0, "logged out");
    assert!(
        a.fake
            .requests()
            .iter()
            .all(|r| r.method != "POST" || r.uri.ends_with("/credentials")),
        "only reads"
    );

    // Nearly full: fails, saying what to do.
    a.fake.add_cpg(
        "SNAP_r6",
        Cpg {
            used_mib: 99_500,
            limit_mib: 100_000,
            warning_mib: 90_000,
        },
    );
    let f = check::run(&cfg).await;
    let fail = f
        .iter()
        .find(|f| f.level == Level::Fail)
        .unwrap_or_else(|| panic!("{f:#?}"));
    assert!(fail.message.contains("raise the limit"), "{fail:?}");

    // A missing base volume, a copy instead of a base, a missing CPG.
    let missing = provider_config(dir.path(), &a.section, "volume = \"NOPE\"", "");
    let f = check::run(&missing).await;
    assert!(
        f.iter()
            .any(|f| f.level == Level::Fail && f.message.contains("NON_EXISTENT_VOL")),
        "{f:#?}"
    );
    a.fake.add_volume("DB02-vv");
    a.fake.set_snap_cpg("DB02-vv", "GONE");
    let f = check::run(&provider_config(
        dir.path(),
        &a.section,
        "volume = \"DB02-vv\"",
        "",
    ))
    .await;
    assert!(
        f.iter()
            .any(|f| f.level == Level::Fail && f.message.contains("NON_EXISTENT_CPG")),
        "{f:#?}"
    );
    a.fake.add_volume_set("DBSET", &["DB01-vv", "DB02-vv"]);
    let f = check::run(&provider_config(
        dir.path(),
        &a.section,
        "volume_set = \"DBSET\"",
        "",
    ))
    .await;
    assert!(
        f.iter()
            .any(|f| f.message.contains("volume set DBSET: DB01-vv, DB02-vv")),
        "{f:#?}"
    );

    // A wrong password: the login fails, and nothing else is tried.
    std::fs::write(dir.path().join("a.password"), "wrong\n").unwrap();
    let f = check::run(&cfg).await;
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(
        f[0].level == Level::Fail && f[0].message.contains("INV_USER_PASS"),
        "{f:#?}"
    );
}

/// Reconcile's view of the array: `list` names this target's virtual
/// copies only (not those of another volume), and a copy the array expired
/// by itself is no longer listed.
#[tokio::test]
async fn list_shows_only_this_volumes_copies_and_drops_an_expired_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("DB01-vv");
    a.fake.add_volume("DB02-vv");
    a.fake.add_child("DB02-vv", "rm-other-a1");
    let cfg = provider_config(
        dir.path(),
        &a.section,
        "volume = \"DB01-vv\"",
        "expiration_hours = 1",
    );
    let p = ThreeParProvider::new(cfg);
    take(&p, "rm-1-a1").await.unwrap();
    take(&p, "rm-2-a1").await.unwrap();
    assert_eq!(p.list(&t()).await.unwrap(), vec!["rm-1-a1", "rm-2-a1"]);
    assert!(a.fake.expire("rm-1-a1"));
    assert_eq!(p.list(&t()).await.unwrap(), vec!["rm-2-a1"]);
    assert!(a.fake.volume("rm-other-a1").is_some());
}
