//! The `3par` provider's recovery against the WSAPI fake: promote in place
//! and roll back with the safety copy, refusals, VLUN exports (read-only and
//! writable) and their removal with and without a location, clones.

use recman_events::{JobId, RecoveryAction, SnapshotKind, StepError, TargetId};
use recman_tests::threepar::{array, provider_config, Array, Scheme};
use recman_workers::provider::threepar::job_key;
use recman_workers::provider::{Provider, RecoveryJob, SnapshotJob, ThreeParProvider};
use serde_json::{json, Value};

fn t() -> TargetId {
    TargetId::from("db01")
}

fn job(n: u64) -> JobId {
    JobId::from_parts(1_700_000_000_000 + n, n.into())
}

async fn take(p: &ThreeParProvider, name: &str) {
    let target = t();
    p.snapshot_job(SnapshotJob {
        name,
        target: &target,
        kind: SnapshotKind::Full,
        job: Some((job(1), 1)),
    })
    .await
    .unwrap();
}

/// A recovery step of job `job(n)`.
struct Step {
    point: String,
    action: RecoveryAction,
    safety: Option<String>,
    location: Option<String>,
    job: JobId,
    target: TargetId,
}

impl Step {
    fn new(point: &str, action: RecoveryAction, n: u64) -> Step {
        Step {
            point: point.into(),
            action,
            safety: None,
            location: None,
            job: job(n),
            target: t(),
        }
    }

    fn req(&self) -> RecoveryJob<'_> {
        RecoveryJob {
            point: &self.point,
            target: &self.target,
            action: &self.action,
            safety: self.safety.as_deref(),
            location: self.location.as_deref(),
            job: self.job,
        }
    }
}

async fn volume_target(extra: &str) -> (tempfile::TempDir, Array, ThreeParProvider) {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume("DB01-vv");
    let p = ThreeParProvider::new(provider_config(
        dir.path(),
        &a.section,
        "volume = \"DB01-vv\"",
        extra,
    ));
    (dir, a, p)
}

/// The PUTs the fake received: path and JSON body.
fn puts(a: &Array) -> Vec<(String, Value)> {
    a.fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| (r.uri, serde_json::from_str(&r.body).unwrap_or(Value::Null)))
        .collect()
}

#[tokio::test]
async fn in_place_promotes_the_point_and_rollback_promotes_the_safety_copy() {
    let (_d, a, p) = volume_target("").await;
    // Production stays exported to its host: the promote is online.
    a.fake.add_vlun("DB01-vv", 3, "app01");
    a.fake.set_content("DB01-vv", "monday");
    take(&p, "rm-point-a1").await;
    a.fake.set_content("DB01-vv", "tuesday");
    take(&p, "rm-safety-a1").await;
    a.fake.set_content("DB01-vv", "tuesday, then more");
    a.fake.set_task_polls(2);

    let mut s = Step::new("rm-point-a1", RecoveryAction::in_place(), 5);
    s.safety = Some("rm-safety-a1".into());
    assert_eq!(p.restore(s.req()).await.unwrap(), "3par:a/DB01-vv");
    assert_eq!(a.fake.content("DB01-vv").as_deref(), Some("monday"));
    let puts = puts(&a);
    assert_eq!(puts.len(), 1, "{puts:?}");
    let (uri, body) = &puts[0];
    assert_eq!(uri, "/api/v1/volumes/rm-point-a1");
    assert_eq!(body, &json!({"action": 4, "online": true}));
    let task_reads = a
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.uri == "/api/v1/tasks/1")
        .count();
    assert_eq!(task_reads, 3, "active, active, done");
    // A redelivery promotes again: same data, same answer.
    assert_eq!(p.restore(s.req()).await.unwrap(), "3par:a/DB01-vv");
    assert_eq!(a.fake.content("DB01-vv").as_deref(), Some("monday"));

    assert_eq!(p.rollback(s.req()).await.unwrap(), "3par:a/DB01-vv");
    assert_eq!(a.fake.content("DB01-vv").as_deref(), Some("tuesday"));
    // Both copies are still there (the safety copy is a restore point).
    assert_eq!(
        a.fake.snapshots_of("DB01-vv"),
        vec!["rm-point-a1", "rm-safety-a1"]
    );

    // The rollback marked the safety copy: a late redelivery of the restore
    // does not promote over what it put back.
    let safety = a.fake.volume("rm-safety-a1").unwrap();
    assert!(
        safety
            .comment
            .as_deref()
            .is_some_and(|c| c.starts_with("recman job")
                && c.ends_with(&format!("restore of job {} rolled back", s.job))),
        "{safety:?}"
    );
    let e = p.restore(s.req()).await.unwrap_err();
    assert_eq!(e.code, "rolled_back", "{e:?}");
    assert_eq!(a.fake.content("DB01-vv").as_deref(), Some("tuesday"));
    // A rollback redelivered: marked once, promoted again.
    p.rollback(s.req()).await.unwrap();
    let again = a.fake.volume("rm-safety-a1").unwrap().comment.unwrap();
    assert_eq!(again.matches("rolled back").count(), 1, "{again}");

    s.safety = None;
    let e = p.rollback(s.req()).await.unwrap_err();
    assert_eq!(e.code, "no_safety_snapshot", "{e:?}");
}

#[tokio::test]
async fn a_point_that_is_not_a_copy_of_the_base_is_refused() {
    let (_d, a, p) = volume_target("").await;
    a.fake.add_volume("other");
    a.fake.set_content("other", "not ours");
    a.fake.add_child("other", "rm-x-a1");
    let s = Step::new("rm-x-a1", RecoveryAction::in_place(), 5);
    let e: StepError = p.restore(s.req()).await.unwrap_err();
    assert_eq!(e.code, "not_a_copy_of_base", "{e:?}");
    assert!(
        e.message.contains("not a virtual copy of DB01-vv"),
        "{}",
        e.message
    );
    assert!(!e.retryable);
    let mut rb = Step::new("rm-x-a1", RecoveryAction::in_place(), 5);
    rb.safety = Some("rm-x-a1".into());
    assert_eq!(p.rollback(rb.req()).await.unwrap_err().code, "not_a_copy_of_base");
    let mount = Step::new("rm-x-a1", RecoveryAction::mount(false), 6);
    assert_eq!(p.mount(mount.req()).await.unwrap_err().code, "invalid_config");
    assert!(puts(&a).is_empty(), "nothing promoted");
    assert_eq!(a.fake.content("DB01-vv"), None);

    let gone = Step::new("rm-gone-a1", RecoveryAction::in_place(), 5);
    assert_eq!(
        p.restore(gone.req()).await.unwrap_err().code,
        "3par_point_missing"
    );
    let mut rb = Step::new("rm-gone-a1", RecoveryAction::in_place(), 5);
    rb.safety = Some("rm-gone-a1".into());
    assert_eq!(
        p.rollback(rb.req()).await.unwrap_err().code,
        "safety_snapshot_missing"
    );

    let to = Step::new(
        "rm-x-a1",
        RecoveryAction::To {
            path: "/srv/restore".into(),
            until: None,
        },
        7,
    );
    let e = p.restore(to.req()).await.unwrap_err();
    assert_eq!(e.code, "not_supported");
    assert!(
        e.message.contains("clone") && e.message.contains("mount"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn a_mount_without_mount_host_names_the_config_key() {
    let (_d, a, p) = volume_target("").await;
    take(&p, "rm-p-a1").await;
    let s = Step::new("rm-p-a1", RecoveryAction::mount(false), 5);
    let e = p.mount(s.req()).await.unwrap_err();
    assert_eq!(e.code, "invalid_config");
    assert!(
        e.message.contains("recman.toml:") && e.message.contains("target[0].provider.mount_host: missing"),
        "{}",
        e.message
    );
    assert!(a.fake.vluns().is_empty());
}

/// `recman mount --on HOST`: the copy is exported to that array host, not
/// to `mount_host` (and without `mount_host` at all).
#[tokio::test]
async fn a_mount_on_a_named_host_exports_it_there() {
    let (_d, a, p) = volume_target("").await;
    a.fake.add_host("app02");
    take(&p, "rm-p-a1").await;
    let action = RecoveryAction::Mount {
        writable: false,
        on: Some("app02".into()),
    };
    let s = Step::new("rm-p-a1", action, 5);
    let loc = p.mount(s.req()).await.unwrap();
    assert_eq!(loc, "vlun:rm-p-a1,0,app02");
    let v = a.fake.vluns();
    assert!(
        v.iter()
            .any(|v| v.volume_name == "rm-p-a1" && v.hostname == "app02"),
        "{v:?}"
    );
}

#[tokio::test]
async fn a_read_only_mount_exports_the_copy_once_and_unmount_takes_it_away() {
    let (_d, a, p) = volume_target("mount_host = \"backup01\"").await;
    a.fake.add_host("backup01");
    a.fake.add_vlun("other-vv", 0, "backup01");
    take(&p, "rm-p-a1").await;
    let s = Step::new("rm-p-a1", RecoveryAction::mount(false), 5);
    let loc = p.mount(s.req()).await.unwrap();
    assert_eq!(loc, "vlun:rm-p-a1,1,backup01", "LUN 0 is taken on that host");
    // Redelivered: the export is found, not made twice.
    assert_eq!(p.mount(s.req()).await.unwrap(), loc);
    let ours: Vec<_> = a
        .fake
        .vluns()
        .into_iter()
        .filter(|v| v.volume_name == "rm-p-a1")
        .collect();
    assert_eq!(ours.len(), 1);
    let post = a
        .fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.uri == "/api/v1/vluns")
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&post.body).unwrap(),
        json!({"volumeName": "rm-p-a1", "hostname": "backup01", "lun": 0, "autoLun": true, "maxAutoLun": 0})
    );

    let mut u = Step::new("rm-p-a1", RecoveryAction::Unmount { mount: s.job }, 6);
    u.location = Some(loc.clone());
    p.unmount(u.req()).await.unwrap();
    p.unmount(u.req()).await.unwrap(); // already gone: fine
    assert!(a.fake.vluns().iter().all(|v| v.volume_name != "rm-p-a1"));
    assert!(a.fake.volume("rm-p-a1").is_some(), "the point stays");
    assert_eq!(a.fake.vluns().len(), 1, "another volume's export is left alone");

    // Locations come from messages: only recman's exports are removed.
    for bad in [
        "vlun:other-vv,0,backup01",
        "vlun:rm-p-a1,x,backup01",
        "3par:b/rm-p-a1",
        "/mnt/x",
    ] {
        u.location = Some(bad.into());
        assert_eq!(
            p.unmount(u.req()).await.unwrap_err().code,
            "invalid_location",
            "{bad}"
        );
    }
    assert_eq!(a.fake.vluns().len(), 1);
}

#[tokio::test]
async fn a_writable_mount_exports_a_copy_named_from_the_job_and_unmount_by_job_removes_it() {
    let (_d, a, p) = volume_target("mount_host = \"backup01\"").await;
    a.fake.add_host("backup01");
    a.fake.set_content("DB01-vv", "monday");
    take(&p, "rm-p-a1").await;
    let s = Step::new("rm-p-a1", RecoveryAction::mount(true), 5);
    let copy = format!("rmw-{}", job_key(s.job));
    let loc = p.mount(s.req()).await.unwrap();
    assert_eq!(loc, format!("vlun:{copy},0,backup01"));
    assert_eq!(p.mount(s.req()).await.unwrap(), loc, "redelivered");
    let v = a.fake.volume(&copy).expect("writable copy");
    assert_eq!(v.copy_of.as_deref(), Some("rm-p-a1"));
    assert_eq!(v.copy_type, 3);
    assert!(!v.read_only);
    assert_eq!(v.content.as_deref(), Some("monday"));
    assert_eq!(a.fake.vluns().len(), 1);
    // Not a restore point: never listed.
    assert_eq!(p.list(&t()).await.unwrap(), vec!["rm-p-a1"]);

    // The mount's step never answered: unmount by the mount's job.
    let u = Step::new("rm-p-a1", RecoveryAction::Unmount { mount: s.job }, 6);
    p.unmount(u.req()).await.unwrap();
    assert!(a.fake.vluns().is_empty());
    assert!(a.fake.volume(&copy).is_none());
    assert!(a.fake.volume("rm-p-a1").is_some());
    p.unmount(u.req()).await.unwrap();

    // The engine's compensation of a mount that timed out: the mount job itself.
    p.mount(s.req()).await.unwrap();
    p.unmount(s.req()).await.unwrap();
    assert!(a.fake.vluns().is_empty() && a.fake.volume(&copy).is_none());

    // With its location, the copy goes too.
    let loc = p.mount(s.req()).await.unwrap();
    let mut u = Step::new("rm-p-a1", RecoveryAction::Unmount { mount: s.job }, 6);
    u.location = Some(loc);
    p.unmount(u.req()).await.unwrap();
    assert!(a.fake.vluns().is_empty() && a.fake.volume(&copy).is_none());
}

#[tokio::test]
async fn a_clone_is_a_writable_copy_of_the_copy_until_removed() {
    let (_d, a, p) = volume_target("").await;
    a.fake.set_content("DB01-vv", "monday");
    take(&p, "rm-p-a1").await;
    let s = Step::new(
        "rm-p-a1",
        RecoveryAction::Clone {
            name: "db01-monday".into(),
        },
        5,
    );
    let loc = p.restore(s.req()).await.unwrap();
    assert_eq!(loc, "3par:a/db01-monday");
    assert_eq!(p.restore(s.req()).await.unwrap(), loc, "redelivered");
    let v = a.fake.volume("db01-monday").unwrap();
    assert_eq!(v.copy_of.as_deref(), Some("rm-p-a1"));
    assert!(!v.read_only);
    assert_eq!(v.content.as_deref(), Some("monday"));
    // The point cannot be pruned while the clone lives (HAS_CHILD).
    assert_eq!(
        p.delete("rm-p-a1", &t()).await.unwrap_err().code,
        "3par_has_child"
    );

    let mut rm = Step::new(
        "rm-p-a1",
        RecoveryAction::RemoveClone {
            name: "db01-monday".into(),
        },
        6,
    );
    rm.location = Some(loc);
    p.unmount(rm.req()).await.unwrap();
    p.unmount(rm.req()).await.unwrap();
    assert!(a.fake.volume("db01-monday").is_none());
    assert!(p.delete("rm-p-a1", &t()).await.unwrap());

    // A same-named volume that is not a copy of the point is not adopted.
    take(&p, "rm-q-a1").await;
    a.fake.add_volume("db01-monday");
    let s = Step::new(
        "rm-q-a1",
        RecoveryAction::Clone {
            name: "db01-monday".into(),
        },
        8,
    );
    let e = p.restore(s.req()).await.unwrap_err();
    assert_eq!(e.code, "3par_name_conflict", "{e:?}");
}

#[tokio::test]
async fn a_volume_set_is_restored_member_by_member() {
    let dir = tempfile::tempdir().unwrap();
    let a = array(dir.path(), Scheme::Http).await;
    a.fake.add_volume_set("DB-set", &["db-data", "db-logs"]);
    a.fake.set_content("db-data", "data-1");
    a.fake.set_content("db-logs", "logs-1");
    let p = ThreeParProvider::new(provider_config(
        dir.path(),
        &a.section,
        "volume_set = \"DB-set\"",
        "mount_host = \"backup01\"",
    ));
    a.fake.add_host("backup01");
    take(&p, "rm-g-a1").await;
    a.fake.set_content("db-data", "data-2");
    a.fake.set_content("db-logs", "logs-2");
    let s = Step::new("rm-g-a1", RecoveryAction::in_place(), 5);
    assert_eq!(p.restore(s.req()).await.unwrap(), "3par:a/db-data,db-logs");
    assert_eq!(a.fake.content("db-data").as_deref(), Some("data-1"));
    assert_eq!(a.fake.content("db-logs").as_deref(), Some("logs-1"));

    let m = Step::new("rm-g-a1", RecoveryAction::mount(true), 6);
    let key = job_key(m.job);
    let loc = p.mount(m.req()).await.unwrap();
    assert_eq!(
        loc,
        format!("vlun:rmw-{key}-0,0,backup01;vlun:rmw-{key}-1,1,backup01")
    );
    let mut u = Step::new("rm-g-a1", RecoveryAction::Unmount { mount: m.job }, 7);
    u.location = Some(loc);
    p.unmount(u.req()).await.unwrap();
    assert!(a.fake.vluns().is_empty());
    assert!(a.fake.volume(&format!("rmw-{key}-1")).is_none());
}
