//! `recman check` on real filesystems (issue 25, "the same idea for every
//! writer and provider"), as root: an ext4 and a btrfs loop mount. Good
//! targets (a mount to freeze, a btrfs subvolume) pass; a freeze of the event log's filesystem, a freeze of a
//! directory that is not a mountpoint, a btrfs "subvolume" that is a plain
//! directory with its dest on another filesystem, and an exec hook that is
//! not executable each fail with a line that names the problem; nothing is
//! frozen or created by the check. Unknown targets are refused (exit 2).

use std::fs;
use std::process::Command;

use recman_testkit::{recman_bin, sh};
use recman_tests::linux::{can_run, LoopFs};

#[test]
fn check_names_each_unfit_target_on_real_filesystems_and_touches_nothing() {
    if !can_run(&["losetup", "mkfs.ext4", "mkfs.btrfs", "btrfs", "fsfreeze"]) {
        return;
    }
    let (a, b) = (LoopFs::new("ext4", 64), LoopFs::new("btrfs", 256));
    let data = a.mnt.join("data");
    let vol = b.mnt.join("vol");
    sh("btrfs", &["subvolume", "create", vol.to_str().unwrap()]);
    let plain = b.mnt.join("plain");
    fs::create_dir(&plain).unwrap();
    let hook = a.outside("freeze.sh");
    fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap(); // not executable (0644)
    let cfg = a.outside("recman.toml");
    fs::write(
        &cfg,
        format!(
            "[[target]]\nid = \"fz-ok\"\n[target.writer]\ntype = \"fsfreeze\"\nmountpoint = \"{bm}\"\n\
             [target.provider]\ntype = \"none\"\n\n\
             [[target]]\nid = \"bt-ok\"\n[target.writer]\ntype = \"none\"\n\
             [target.provider]\ntype = \"btrfs\"\nsubvolume = \"{vol}\"\ndest = \"{bm}/snaps\"\n\n\
             [[target]]\nid = \"fz-log\"\n[target.writer]\ntype = \"fsfreeze\"\nmountpoint = \"{am}\"\n\
             [target.provider]\ntype = \"none\"\n\n\
             [[target]]\nid = \"fz-dir\"\n[target.writer]\ntype = \"fsfreeze\"\nmountpoint = \"{plain}\"\n\
             [target.provider]\ntype = \"none\"\n\n\
             [[target]]\nid = \"bt-plain\"\n[target.writer]\ntype = \"none\"\n\
             [target.provider]\ntype = \"btrfs\"\nsubvolume = \"{plain}\"\ndest = \"{am}/snaps\"\n\n\
             [[target]]\nid = \"ex-hook\"\n[target.writer]\ntype = \"exec\"\nfreeze = [\"{hook}\"]\nthaw = [\"true\"]\n\
             [target.provider]\ntype = \"none\"\n",
            bm = b.mnt.display(),
            am = a.mnt.display(),
            vol = vol.display(),
            plain = plain.display(),
            hook = hook.display(),
        ),
    )
    .unwrap();
    let check = |args: &[&str]| {
        let out = Command::new(recman_bin())
            .args([
                "--config",
                cfg.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
                "check",
            ])
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("recman check {args:?}: {:?}\n{text}", out.status.code());
        (out.status.code(), text)
    };

    let (code, text) = check(&[]);
    assert_eq!(code, Some(1), "{text}");
    // `TARGET  LEVEL  SUBJECT  message`: the lines of one target.
    let lines = |id: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.split_whitespace().next() == Some(id))
            .map(str::to_string)
            .collect()
    };
    let fails = |id: &str| {
        lines(id)
            .into_iter()
            .filter(|l| l.contains(" FAIL "))
            .collect::<Vec<_>>()
    };
    for id in ["fz-ok", "bt-ok"] {
        assert!(fails(id).is_empty() && !lines(id).is_empty(), "{id}: {text}");
    }
    assert!(
        lines("fz-ok").iter().any(|l| l.contains("is a mountpoint")),
        "{text}"
    );
    assert!(
        lines("bt-ok").iter().any(|l| l.contains("is a btrfs subvolume")),
        "{text}"
    );
    let has = |id: &str, what: &[&str]| fails(id).iter().any(|l| what.iter().all(|w| l.contains(w)));
    assert!(has("fz-log", &["data_dir", "event log"]), "{text}");
    assert!(has("fz-dir", &["mountpoint"]), "{text}");
    assert!(has("bt-plain", &["not a subvolume"]), "{text}");
    assert!(has("bt-plain", &["dest"]), "{text}");
    assert!(has("ex-hook", &["freeze", "not an executable file"]), "{text}");

    // Good targets alone pass; an unknown one is refused.
    let (code, text) = check(&["fz-ok", "bt-ok"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = check(&["nosuch"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("unknown target nosuch"), "{text}");

    // Touched nothing: no snapshot dirs, no log, nothing frozen (a write to each mount works).
    assert!(!b.mnt.join("snaps").exists() && !a.mnt.join("snaps").exists());
    assert!(!data.exists(), "check must not create the data dir");
    for m in [&a.mnt, &b.mnt] {
        fs::write(m.join("probe"), b"x").unwrap();
    }
}
