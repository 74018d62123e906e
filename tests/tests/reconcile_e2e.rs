//! The catalog agrees with the storage, end to end (issue 14): the engine
//! with its worker takes snapshots, one is deleted behind recman's back, a
//! reconcile records `snapshot_vanished` and the point leaves the catalog;
//! a snapshot named like recman's that no event records is reported
//! (`snapshot_unknown`) and left on the storage. With the `copy` provider
//! (no privileges) and on a loop-mounted btrfs as root (skipped with a
//! message when not root; fails under CI=true).

use std::fs;
use std::path::Path;
use std::time::Duration;

use recman_config::Config;
use recman_events::{snapshot_name, EventBody, JobId};
use recman_testkit::sh;
use recman_tests::linux::{can_run, completed, Embedded, LoopFs};

const WITHIN: Duration = Duration::from_secs(30);

/// Two snapshots of `t`, the first deleted by hand (`remove`), a stranger
/// named like recman's put beside them; then a reconcile.
async fn lose_one_and_reconcile(
    cfg: &Config,
    data: &Path,
    t: &str,
    dest: &Path,
    remove: impl Fn(&Path),
    make: impl Fn(&Path),
) {
    let emb = Embedded::start(cfg, data, "w1").await;
    let j1 = emb.submit("r1", &[t]).await;
    let (s1, _) = completed(&emb.wait(j1, WITHIN).await);
    let j2 = emb.submit("r2", &[t]).await;
    let (s2, _) = completed(&emb.wait(j2, WITHIN).await);
    remove(&dest.join(&s1.name));
    let stranger = snapshot_name(JobId::from_parts(1_700_000_000_000, 7), 1);
    make(&dest.join(&stranger));

    let events = emb.reconcile(t, WITHIN).await;
    let vanished: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            EventBody::SnapshotVanished { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(vanished, [s1.name.as_str()], "{events:#?}");
    let unknown = events
        .iter()
        .find_map(|e| match e {
            EventBody::SnapshotUnknown { names, .. } => Some(names.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no snapshot_unknown: {events:#?}"));
    assert_eq!(unknown, [stranger.as_str()]);
    assert!(
        events.iter().any(|e| matches!(
            e,
            EventBody::Reconciled {
                vanished: 1,
                unknown: 1,
                ..
            }
        )),
        "{events:#?}"
    );
    assert!(
        dest.join(&stranger).exists(),
        "an unknown snapshot is never deleted"
    );
    assert!(dest.join(&s2.name).exists());
    // The catalog holds the second point only: a second reconcile finds
    // nothing more to remove.
    let again = emb.reconcile(t, WITHIN).await;
    assert!(
        !again
            .iter()
            .any(|e| matches!(e, EventBody::SnapshotVanished { .. })),
        "{again:#?}"
    );
    emb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_a_snapshot_deleted_by_hand_leaves_the_catalog_and_a_stranger_is_only_reported() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("data");
    let dest = d.path().join("snapshots");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"hello").unwrap();
    let p = d.path().join("recman.toml");
    fs::write(
        &p,
        format!(
            "[[target]]\nid = \"c1\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"copy\"\nsource = \"{}\"\ndest = \"{}\"\n",
            src.display(),
            dest.display()
        ),
    )
    .unwrap();
    let cfg = Config::load(&p).unwrap();
    lose_one_and_reconcile(
        &cfg,
        &d.path().join("log"),
        "c1",
        &dest,
        |s| fs::remove_dir_all(s).unwrap(),
        |s| fs::create_dir_all(s.join("x")).unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btrfs_a_subvolume_deleted_by_hand_leaves_the_catalog() {
    if !can_run(&["losetup", "mkfs.btrfs", "mount", "btrfs"]) {
        return;
    }
    let b = LoopFs::new("btrfs", 300);
    let sub = b.mnt.join("data");
    sh("btrfs", &["subvolume", "create", sub.to_str().unwrap()]);
    fs::write(sub.join("f"), b"hello").unwrap();
    let dest = b.mnt.join("snapshots");
    let p = b.dir.path().join("recman.toml");
    fs::write(
        &p,
        format!(
            "[[target]]\nid = \"b1\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"btrfs\"\nsubvolume = \"{}\"\ndest = \"{}\"\n",
            sub.display(),
            dest.display()
        ),
    )
    .unwrap();
    let cfg = Config::load(&p).unwrap();
    // btrfs lists subvolumes: the stranger is one, made by hand.
    lose_one_and_reconcile(
        &cfg,
        &b.outside("log"),
        "b1",
        &dest,
        |s| {
            sh("btrfs", &["subvolume", "delete", s.to_str().unwrap()]);
        },
        |s| {
            sh("btrfs", &["subvolume", "create", s.to_str().unwrap()]);
        },
    )
    .await;
}
