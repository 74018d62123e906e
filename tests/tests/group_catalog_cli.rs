//! The catalog agrees with the storage for consistency groups and failed
//! attempts (issue 23, item 5), with the real binary and real copies
//! (provider `copy`, one directory per member):
//! - a group's restore point is kept on every member while any member's
//!   rule keeps it, and pruned from every member (disk and catalog) once
//!   none does;
//! - a group job whose snapshot failed on one member leaves no copy on the
//!   other: the attempt's leftover is deleted, and the catalog lists nothing.

use std::path::Path;

use recman_testkit::{recman, temp_dir, text};
use recman_tests::cli::copies_in;
use serde_json::Value;

/// Targets `a` and `b`, each copying `src-<t>` into `snaps-<t>`.
fn config(dir: &Path, keep_a: u32, keep_b: u32) {
    let d = dir.display();
    let mut s = String::new();
    for (t, keep) in [("a", keep_a), ("b", keep_b)] {
        s.push_str(&format!(
            "[[target]]\nid = \"{t}\"\nkeep_last = {keep}\n[target.writer]\ntype = \"none\"\n\
             [target.provider]\ntype = \"copy\"\nsource = \"{d}/src-{t}\"\ndest = \"{d}/snaps-{t}\"\n"
        ));
    }
    std::fs::write(dir.join("recman.toml"), s).unwrap();
}

/// The restore points on the disk of `t`.
fn on_disk(dir: &Path, t: &str) -> Vec<String> {
    copies_in(&dir.join(format!("snaps-{t}")))
}

/// The restore points the catalog lists for `t`.
fn in_catalog(dir: &Path, t: &str) -> Vec<String> {
    let out = recman(dir, &["snapshots", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or("{}")
        .to_string();
    let v: Value = serde_json::from_str(&line).unwrap();
    let mut names: Vec<String> = v["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["targets"].as_array().is_some_and(|m| m.iter().any(|x| x == t)))
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn snapshot(dir: &Path, targets: &[&str]) -> (bool, String) {
    let mut args = vec!["snapshot", "--group"];
    args.extend_from_slice(targets);
    let out = recman(dir, &args);
    (out.status.success(), text(&out))
}

#[test]
fn a_group_point_lives_and_goes_on_every_member_at_once() {
    let tmp = temp_dir();
    let dir = tmp.path();
    for t in ["a", "b"] {
        std::fs::create_dir_all(dir.join(format!("src-{t}"))).unwrap();
        std::fs::write(dir.join(format!("src-{t}/file")), t).unwrap();
    }
    // a keeps 1, b keeps 3: b keeps every group point, so a keeps them too.
    config(dir, 1, 3);
    for _ in 0..3 {
        let (ok, out) = snapshot(dir, &["a", "b"]);
        assert!(ok, "{out}");
    }
    for t in ["a", "b"] {
        assert_eq!(on_disk(dir, t).len(), 3, "{t}: {:?}", on_disk(dir, t));
        assert_eq!(in_catalog(dir, t), on_disk(dir, t), "{t}");
    }
    assert_eq!(
        on_disk(dir, "a"),
        on_disk(dir, "b"),
        "one restore point, both members"
    );

    // Now b keeps 1 too: the next group job prunes the two oldest from both.
    config(dir, 1, 1);
    let (ok, out) = snapshot(dir, &["a", "b"]);
    assert!(ok, "{out}");
    for t in ["a", "b"] {
        assert_eq!(on_disk(dir, t).len(), 1, "{t}: {:?}\n{out}", on_disk(dir, t));
        assert_eq!(in_catalog(dir, t), on_disk(dir, t), "{t}");
    }
    assert_eq!(on_disk(dir, "a"), on_disk(dir, "b"));
}

#[test]
fn a_group_snapshot_that_failed_on_one_member_leaves_no_copy_on_the_other() {
    let tmp = temp_dir();
    let dir = tmp.path();
    // b's source is missing: its copy fails, a's succeeds in the same attempt.
    std::fs::create_dir_all(dir.join("src-a")).unwrap();
    std::fs::write(dir.join("src-a/file"), "a").unwrap();
    config(dir, 5, 5);
    let (ok, out) = snapshot(dir, &["a", "b"]);
    assert!(!ok, "the group job must fail: {out}");
    assert!(
        out.contains("source_missing") || out.contains("is not a directory"),
        "{out}"
    );
    // a's copy was made (its destination exists) and then deleted.
    assert!(dir.join("snaps-a").is_dir(), "a was not copied first: {out}");
    assert!(out.contains("deleted rm-") && out.contains(" of a"), "{out}");
    assert_eq!(
        on_disk(dir, "a"),
        Vec::<String>::new(),
        "a's copy of the failed attempt stayed: {out}"
    );
    assert_eq!(on_disk(dir, "b"), Vec::<String>::new());
    for t in ["a", "b"] {
        assert_eq!(in_catalog(dir, t), Vec::<String>::new(), "{t}");
    }
}
