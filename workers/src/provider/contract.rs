//! The provider contract, run against every provider that needs no root
//! or external tool here (`copy`, `none`, `exec`; `btrfs` shares `copy`'s
//! owner marker, `owner.rs`; `3par` checks its copies' base and comment in
//! `tests/tests/threepar_provider.rs`): names are checked, a snapshot is
//! idempotent, `lookup` tells absent from this attempt's from another job's
//! and from something recman did not take, a delete of a missing name is
//! `Ok(false)`.
//!
//! [`run_recovery`]: the recovery contract (`Provider::restore` and the
//! rest), run against `copy`, and against `btrfs` (a loop device) and
//! `qcow2` (`qemu-img`) when root and the tools are here (skipped saying
//! why otherwise; a failure under `CI=true`). `exec` delegates it to the
//! operator's hooks (`exec.rs` tests what it passes them).

use recman_core::worker::Existing;
use recman_events::{JobId, RecoveryAction, SnapshotKind, TargetId};

use super::{Provider, RecoveryJob, SnapshotJob};

/// `records_owner`: the provider keeps who each snapshot is for (else its
/// `lookup` says `Absent` and its `snapshot` must be idempotent by itself).
/// `plant_foreign(name)`: puts something not taken by recman under `name`
/// (`None` when the provider has no storage to plant in).
pub async fn run(p: &dyn Provider, records_owner: bool, plant_foreign: Option<&dyn Fn(&str)>) {
    let t = TargetId::from("db01");
    let a = (JobId::from_parts(7, 1), 1);
    let b = (JobId::from_parts(8, 2), 1);
    let req = |name, job| SnapshotJob {
        name,
        target: &t,
        kind: SnapshotKind::Full,
        job: Some(job),
    };
    // Bad names never reach the storage.
    assert!(p.snapshot_job(req("../x", a)).await.is_err(), "{}", p.kind());
    assert_eq!(
        p.lookup("rm-a-a1", &t).await.unwrap(),
        Existing::Absent,
        "{}",
        p.kind()
    );
    let first = p.snapshot_job(req("rm-a-a1", a)).await.unwrap();
    assert!(!first.existed, "{}", p.kind());
    let again = p.snapshot_job(req("rm-a-a1", a)).await.unwrap();
    assert_eq!(again.name, "rm-a-a1");
    let found = p.lookup("rm-a-a1", &t).await.unwrap();
    if records_owner {
        assert!(again.existed, "{}: a second snapshot was cut", p.kind());
        assert_eq!(found, Existing::Owned(a), "{}", p.kind());
    } else {
        assert_eq!(found, Existing::Absent, "{}", p.kind());
    }
    if let Some(plant) = plant_foreign {
        plant("rm-f-a1");
        assert!(
            matches!(p.lookup("rm-f-a1", &t).await.unwrap(), Existing::Foreign(_)),
            "{}: something recman did not take is not foreign",
            p.kind()
        );
    }
    if records_owner {
        assert!(p.delete("rm-a-a1", &t).await.unwrap(), "{}", p.kind());
        assert_eq!(
            p.lookup("rm-a-a1", &t).await.unwrap(),
            Existing::Absent,
            "{}",
            p.kind()
        );
        let renewed = p.snapshot_job(req("rm-a-a1", b)).await.unwrap();
        assert!(!renewed.existed);
        // The name taken again for another job: its owner says so.
        assert_eq!(
            p.lookup("rm-a-a1", &t).await.unwrap(),
            Existing::Owned(b),
            "{}",
            p.kind()
        );
        assert!(!p.delete("rm-none-a1", &t).await.unwrap(), "{}", p.kind());
    }
}

/// How the recovery contract sees one provider's storage.
pub struct Fixture<'a> {
    /// Makes the live data state `v` (each `v` different content).
    pub write_live: &'a dyn Fn(u8),
    /// A digest of the live data.
    pub read_live: &'a dyn Fn() -> String,
    /// A digest of the data at a location a step returned.
    pub read_at: &'a dyn Fn(&str) -> String,
    /// Writes into the data at a location; `Err` when it is read-only.
    pub write_at: &'a dyn Fn(&str) -> Result<(), String>,
    /// An absent path for a restore `--to`, on the provider's filesystem.
    pub fresh_path: &'a dyn Fn(&str) -> String,
    /// Leaves what a crash of the in-place restore of `job` leaves between
    /// "live moved aside" and "restore point in place" (`None`: the
    /// provider keeps nothing aside).
    pub crash_aside: Option<&'a dyn Fn(JobId)>,
}

fn rq<'a>(t: &'a TargetId, point: &'a str, action: &'a RecoveryAction, job: JobId) -> RecoveryJob<'a> {
    RecoveryJob {
        point,
        target: t,
        action,
        safety: None,
        location: None,
        job,
    }
}

/// The recovery contract: see `Provider::restore` and the module comment.
pub async fn run_recovery(p: &dyn Provider, f: &Fixture<'_>) {
    let k = p.kind();
    let t = TargetId::from("db01");
    let job = |n: u128| JobId::from_parts(16_000, n);
    let snap = |name: &'static str, j: JobId| {
        let t = t.clone();
        async move {
            p.snapshot_job(SnapshotJob {
                name,
                target: &t,
                kind: SnapshotKind::Copy,
                job: Some((j, 1)),
            })
            .await
            .unwrap()
        }
    };
    (f.write_live)(1);
    let one = (f.read_live)();
    snap("rm-p1-a1", job(1)).await;
    (f.write_live)(2);
    let two = (f.read_live)();
    assert_ne!(one, two, "{k}: the fixture's states must differ");

    // To a path: a byte-identical copy, complete, never over an existing path.
    let to = |path: String| RecoveryAction::To { path, until: None };
    let path = (f.fresh_path)("restored");
    let a = &to(path.clone());
    let loc = p.restore(rq(&t, "rm-p1-a1", a, job(2))).await.unwrap();
    assert_eq!(loc, path, "{k}");
    assert_eq!((f.read_at)(&loc), one, "{k}: restore --to is not the point");
    assert_eq!((f.read_live)(), two, "{k}: restore --to touched the live data");
    let again = p.restore(rq(&t, "rm-p1-a1", a, job(2))).await.unwrap();
    assert_eq!(again, loc, "{k}: a redelivered restore --to");
    let e = p.restore(rq(&t, "rm-p1-a1", a, job(3))).await.unwrap_err();
    assert_eq!(e.code, "path_exists", "{k}: {e:?}");
    let e = p
        .restore(rq(&t, "rm-nope-a1", &to((f.fresh_path)("x")), job(3)))
        .await
        .unwrap_err();
    assert_eq!(e.code, "snapshot_missing", "{k}: {e:?}");
    for bad in ["relative/x", "/tmp/../etc/x", "/"] {
        let e = p
            .restore(rq(&t, "rm-p1-a1", &to(bad.into()), job(3)))
            .await
            .unwrap_err();
        assert_eq!(e.code, "invalid_path", "{k} {bad}: {e:?}");
    }
    assert!(p
        .restore(rq(&t, "../x", &to((f.fresh_path)("y")), job(3)))
        .await
        .is_err());

    // Clone: writable and independent of the point.
    let clone = &RecoveryAction::Clone { name: "c1".into() };
    let c = p.restore(rq(&t, "rm-p1-a1", clone, job(4))).await.unwrap();
    assert_eq!((f.read_at)(&c), one, "{k}");
    (f.write_at)(&c).unwrap_or_else(|e| panic!("{k}: the clone is not writable: {e}"));
    assert_ne!((f.read_at)(&c), one, "{k}: the write did not reach the clone");
    assert_eq!(
        p.restore(rq(&t, "rm-p1-a1", clone, job(4))).await.unwrap(),
        c,
        "{k}"
    );

    // Mount: read-only is not writable; writable works on a copy.
    let ro = &RecoveryAction::mount(false);
    let m = p.mount(rq(&t, "rm-p1-a1", ro, job(5))).await.unwrap();
    assert_eq!((f.read_at)(&m), one, "{k}: the clone's write reached the point");
    assert!((f.write_at)(&m).is_err(), "{k}: a read-only mount was written to");
    assert_eq!(p.mount(rq(&t, "rm-p1-a1", ro, job(5))).await.unwrap(), m, "{k}");
    let rw = &RecoveryAction::mount(true);
    let w = p.mount(rq(&t, "rm-p1-a1", rw, job(6))).await.unwrap();
    (f.write_at)(&w).unwrap_or_else(|e| panic!("{k}: a writable mount is not writable: {e}"));
    assert_eq!(
        (f.read_at)(&m),
        one,
        "{k}: the writable mount's write reached the point"
    );
    // Unmount: idempotent; never something the provider did not make.
    let unmount = |loc: &str, j| {
        let loc = loc.to_string();
        let t = t.clone();
        async move {
            let a = RecoveryAction::Unmount { mount: j };
            p.unmount(RecoveryJob {
                point: "rm-p1-a1",
                target: &t,
                action: &a,
                safety: None,
                location: Some(&loc),
                job: job(99),
            })
            .await
        }
    };
    for loc in [&w, &m, &c] {
        unmount(loc, job(6)).await.unwrap();
        unmount(loc, job(6)).await.unwrap();
    }
    // A mount whose step never answered: taken away by its job, without a
    // location (the engine's compensation, or `recman unmount` of it).
    let w7 = p.mount(rq(&t, "rm-p1-a1", rw, job(7))).await.unwrap();
    let a = RecoveryAction::Unmount { mount: job(7) };
    for _ in 0..2 {
        p.unmount(RecoveryJob {
            point: "rm-p1-a1",
            target: &t,
            action: &a,
            safety: None,
            location: None,
            job: job(98),
        })
        .await
        .unwrap_or_else(|e| panic!("{k}: unmount by job: {e}"));
    }
    assert!(
        !std::path::Path::new(&w7).exists(),
        "{k}: {w7} left after unmount by job"
    );
    assert!(
        !std::path::Path::new(&w).exists() && !std::path::Path::new(&c).exists(),
        "{k}"
    );
    let m2 = p.mount(rq(&t, "rm-p1-a1", ro, job(11))).await.unwrap();
    assert_eq!((f.read_at)(&m2), one, "{k}: unmounting changed the point");
    unmount(&m2, job(11)).await.unwrap();
    for foreign in [loc.as_str(), "/etc", "/etc/passwd"] {
        let e = unmount(foreign, job(6)).await.unwrap_err();
        assert_eq!(e.code, "invalid_location", "{k} {foreign}: {e:?}");
    }
    assert!(std::path::Path::new(&loc).exists(), "{k}");

    // In place: the safety snapshot first (the runtime's step), then the
    // restore; a redelivery finds it done.
    let in_place = &RecoveryAction::in_place();
    let with_safety = |j: JobId, safety: &'static str| RecoveryJob {
        safety: Some(safety),
        ..rq(&t, "rm-p1-a1", in_place, j)
    };
    snap("rm-safety-r1", job(7)).await;
    let live = p.restore(with_safety(job(7), "rm-safety-r1")).await.unwrap();
    assert_eq!((f.read_live)(), one, "{k}: in-place restore");
    assert_eq!(
        p.restore(with_safety(job(7), "rm-safety-r1")).await.unwrap(),
        live
    );
    assert_eq!((f.read_live)(), one, "{k}");
    // The engine gave up on it: nothing aside any more, so the rollback
    // takes the safety snapshot; then the restore is never redone.
    assert_eq!(
        p.rollback(with_safety(job(7), "rm-safety-r1")).await.unwrap(),
        live
    );
    assert_eq!((f.read_live)(), two, "{k}: rollback from the safety snapshot");
    assert_eq!(
        p.rollback(with_safety(job(7), "rm-safety-r1")).await.unwrap(),
        live
    );
    let e = p.restore(with_safety(job(7), "rm-safety-r1")).await.unwrap_err();
    assert_eq!(e.code, "rolled_back", "{k}: {e:?}");
    assert_eq!((f.read_live)(), two, "{k}");
    // A rollback without the safety snapshot it names fails loudly.
    let e = p.rollback(with_safety(job(8), "rm-gone-a1")).await.unwrap_err();
    assert!(e.code.contains("safety"), "{k}: {e:?}");

    if let Some(crash) = f.crash_aside {
        // Crashed between aside and in place: the rollback puts the aside back…
        snap("rm-safety-r2", job(9)).await;
        (f.write_live)(3);
        let three = (f.read_live)();
        crash(job(9));
        assert_eq!(
            p.rollback(with_safety(job(9), "rm-safety-r2")).await.unwrap(),
            live
        );
        assert_eq!((f.read_live)(), three, "{k}: rollback did not put the aside back");
        // …and a redelivered restore finishes the work.
        crash(job(10));
        p.restore(with_safety(job(10), "rm-safety-r2")).await.unwrap();
        assert_eq!((f.read_live)(), one, "{k}: a redelivered restore after a crash");
        assert_eq!(
            p.restore(with_safety(job(10), "rm-safety-r2")).await.unwrap(),
            live
        );
        assert_eq!((f.read_live)(), one, "{k}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::provider::{CopyProvider, ExecProvider, NoneProvider};

    #[tokio::test]
    async fn copy_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/f"), b"x").unwrap();
        let dest = dir.path().join("snaps");
        let p = CopyProvider::new(dir.path().join("src"), dest.clone());
        let plant = |name: &str| std::fs::create_dir_all(dest.join(name)).unwrap();
        run(&p, true, Some(&plant)).await;
    }

    #[tokio::test]
    async fn none_keeps_the_contract() {
        run(&NoneProvider, false, None).await;
    }

    #[tokio::test]
    async fn exec_keeps_the_contract() {
        let p = ExecProvider::new(recman_config::ExecProviderConfig {
            create: vec!["true".into()],
            delete: None,
            restore: None,
            rollback: None,
            mount: None,
            unmount: None,
            timeout: Duration::from_secs(5),
        });
        run(&p, false, None).await;
    }
}

#[cfg(test)]
mod recovery {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Duration;

    use super::*;
    use crate::provider::{BtrfsProvider, CopyProvider, Qcow2Provider};

    /// A digest of a tree: paths, kinds, modes, contents, link targets.
    fn tree_digest(root: &Path) -> String {
        fn walk(dir: &Path, rel: &str, h: &mut blake3::Hasher) {
            let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = format!("{rel}/{}", e.file_name().to_string_lossy());
                let m = fs::symlink_metadata(e.path()).unwrap();
                h.update(format!("{name} {:o}\n", m.permissions().mode()).as_bytes());
                if m.is_symlink() {
                    h.update(fs::read_link(e.path()).unwrap().as_os_str().as_encoded_bytes());
                } else if m.is_dir() {
                    walk(&e.path(), &name, h);
                } else {
                    h.update(&fs::read(e.path()).unwrap());
                }
            }
        }
        let mut h = blake3::Hasher::new();
        walk(root, "", &mut h);
        h.finalize().to_hex().to_string()
    }

    /// State `v` of a live tree (its contents, not the directory itself).
    fn fill_tree(root: &Path, v: u8) {
        for e in fs::read_dir(root).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(&p).unwrap();
            } else {
                fs::remove_file(&p).unwrap();
            }
        }
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("a.txt"), format!("state {v}")).unwrap();
        fs::write(root.join("sub/b.bin"), vec![v; 1000 + usize::from(v)]).unwrap();
        fs::set_permissions(
            root.join("a.txt"),
            fs::Permissions::from_mode(0o600 + u32::from(v)),
        )
        .unwrap();
        symlink(format!("target-{v}"), root.join("link")).unwrap();
    }

    fn write_tree(loc: &str) -> Result<(), String> {
        fs::write(Path::new(loc).join("a.txt"), b"written").map_err(|e| e.to_string())
    }

    fn counter() -> impl Fn(&str) -> String {
        let n = std::sync::atomic::AtomicU32::new(0);
        move |base: &str| format!("{base}{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// The crash state of `trees.rs`: the live tree aside, a part of the
    /// point where it was.
    fn crash_trees(live: &Path, job: JobId) {
        let name = live.file_name().unwrap().to_string_lossy().into_owned();
        let aside = live.parent().unwrap().join(format!(".{name}.recman-aside-{job}"));
        fs::rename(live, &aside).unwrap();
        fs::create_dir(live).unwrap();
        fs::write(live.join("a.txt"), b"half").unwrap();
    }

    #[tokio::test]
    async fn copy_keeps_the_recovery_contract() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("src");
        fs::create_dir_all(&live).unwrap();
        let out = dir.path().join("out");
        fs::create_dir_all(&out).unwrap();
        let p = CopyProvider::new(live.clone(), dir.path().join("snaps"));
        let next = counter();
        let fresh = |name: &str| next(&out.join(name).display().to_string());
        let crash = |job| crash_trees(&live, job);
        run_recovery(
            &p,
            &Fixture {
                write_live: &|v| fill_tree(&live, v),
                read_live: &|| tree_digest(&live),
                read_at: &|loc| tree_digest(Path::new(loc)),
                // A read-only "mount" of a copy is its snapshot directory
                // (trees.rs): only recman's discipline keeps it unwritten,
                // which the contract checks by refusing here when asked to
                // write to a path under `snaps/` that is a snapshot.
                write_at: &|loc| {
                    let l = Path::new(loc);
                    if l.parent() == Some(&dir.path().join("snaps")) {
                        return Err("a snapshot directory (read-only by contract)".into());
                    }
                    write_tree(loc)
                },
                fresh_path: &fresh,
                crash_aside: Some(&crash),
            },
        )
        .await;
        // Nothing of the recoveries is left beside the live data.
        let left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("recman"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            p.list_blocking().unwrap(),
            vec!["rm-p1-a1", "rm-safety-r1", "rm-safety-r2"],
            "clones, mounts and marks are never listed as snapshots"
        );
    }

    /// Root and the tools, or a skip saying why (a failure under `CI=true`).
    fn can_run(what: &str, tools: &[&str]) -> bool {
        let mut why = Vec::new();
        if !recman_testkit::is_root() {
            why.push(format!("needs root ({what})"));
        }
        for t in tools {
            if recman_testkit::which(t).is_none() {
                why.push(format!("needs `{t}`"));
            }
        }
        if why.is_empty() {
            return true;
        }
        recman_testkit::skip(why.join("; "));
        false
    }

    /// A btrfs on a loop device, unmounted and detached on drop.
    struct LoopBtrfs {
        _dir: tempfile::TempDir,
        dev: String,
        mnt: PathBuf,
    }

    impl LoopBtrfs {
        fn new() -> LoopBtrfs {
            let dir = tempfile::tempdir().unwrap();
            let img = dir.path().join("fs.img");
            fs::File::create(&img).unwrap().set_len(256 << 20).unwrap();
            let mnt = dir.path().join("mnt");
            fs::create_dir(&mnt).unwrap();
            let dev = recman_testkit::sh("losetup", &["-f", "--show", img.to_str().unwrap()])
                .trim()
                .to_string();
            let me = LoopBtrfs { _dir: dir, dev, mnt };
            recman_testkit::sh("mkfs.btrfs", &["-q", "-f", &me.dev]);
            recman_testkit::sh("mount", &[&me.dev, me.mnt.to_str().unwrap()]);
            me
        }
    }

    impl Drop for LoopBtrfs {
        fn drop(&mut self) {
            let m = self.mnt.display().to_string();
            let ok = Command::new("umount").arg(&m).status().is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").args(["-l", &m]).status();
            }
            let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        }
    }

    #[tokio::test]
    async fn btrfs_keeps_the_recovery_contract() {
        if !can_run(
            "a loop device with btrfs",
            &["losetup", "mkfs.btrfs", "btrfs", "mount"],
        ) {
            return;
        }
        let fs_ = LoopBtrfs::new();
        let live = fs_.mnt.join("live");
        recman_testkit::sh("btrfs", &["-q", "subvolume", "create", live.to_str().unwrap()]);
        let snaps = fs_.mnt.join("snaps");
        let out = fs_.mnt.join("out");
        fs::create_dir_all(&out).unwrap();
        let p = BtrfsProvider::new(live.clone(), snaps.clone());
        let next = counter();
        let fresh = |name: &str| next(&out.join(name).display().to_string());
        let crash = |job| crash_trees(&live, job);
        run_recovery(
            &p,
            &Fixture {
                write_live: &|v| fill_tree(&live, v),
                read_live: &|| tree_digest(&live),
                read_at: &|loc| tree_digest(Path::new(loc)),
                // A btrfs read-only snapshot refuses root too (EROFS).
                write_at: &write_tree,
                fresh_path: &fresh,
                crash_aside: Some(&crash),
            },
        )
        .await;
        // The live data is a subvolume again, and nothing else was left.
        assert_eq!(
            fs::metadata(&live)
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap(),
            256
        );
        let left: Vec<String> = fs::read_dir(&fs_.mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("recman"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            p.list_blocking().unwrap(),
            vec!["rm-p1-a1", "rm-safety-r1", "rm-safety-r2"]
        );
    }

    fn qemu(prog: &str, args: &[&str]) {
        recman_testkit::sh(prog, args);
    }

    /// The guest's bytes: the image converted to raw, hashed.
    fn image_digest(img: &str, scratch: &Path) -> String {
        let raw = scratch.join("digest.raw");
        let _ = fs::remove_file(&raw);
        qemu(
            "qemu-img",
            &["convert", "-U", "-O", "raw", img, raw.to_str().unwrap()],
        );
        let d = blake3::hash(&fs::read(&raw).unwrap()).to_hex().to_string();
        fs::remove_file(&raw).unwrap();
        d
    }

    #[tokio::test]
    async fn qcow2_keeps_the_recovery_contract() {
        if recman_testkit::which("qemu-img").is_none() || recman_testkit::which("qemu-io").is_none() {
            recman_testkit::skip("needs qemu-img and qemu-io (qemu-utils)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.qcow2");
        let img_s = img.display().to_string();
        qemu("qemu-img", &["create", "-q", "-f", "qcow2", &img_s, "1M"]);
        let out = dir.path().join("out");
        fs::create_dir_all(&out).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let p = Qcow2Provider::new(recman_config::Qcow2Config {
            image: img.clone(),
            qemu_img: "qemu-img".into(),
            timeout: Duration::from_secs(30),
        });
        let write = |image: &str, v: u8| {
            qemu(
                "qemu-io",
                &["-f", "qcow2", "-c", &format!("write -P {v} 0 64k"), image],
            );
        };
        let next = counter();
        let fresh = |name: &str| next(&out.join(name).display().to_string()) + ".qcow2";
        run_recovery(
            &p,
            &Fixture {
                write_live: &|v| write(&img_s, v),
                read_live: &|| image_digest(&img_s, scratch.path()),
                read_at: &|loc| image_digest(loc, scratch.path()),
                // Root writes to a 0444 file all the same: read-only here is
                // the file's mode (what qemu and libvirt honour for users).
                write_at: &|loc| {
                    if fs::metadata(loc)
                        .map_err(|e| e.to_string())?
                        .permissions()
                        .readonly()
                    {
                        return Err("mode 0444".into());
                    }
                    write(loc, 0x77);
                    Ok(())
                },
                fresh_path: &fresh,
                crash_aside: None,
            },
        )
        .await;
        let left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("recman-tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
