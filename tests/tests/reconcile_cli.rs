//! `recman reconcile` with the real binary and the `copy` provider: a
//! snapshot deleted by hand is printed as vanished and leaves `recman
//! snapshots`; a stranger named like recman's is printed as unknown and left
//! on disk; a target whose provider cannot list fails with exit 1 and the
//! provider's error; without a server it says to start `recman up`. Needs
//! no root.

use std::path::Path;

use recman_events::{snapshot_name, JobId};
use recman_testkit::{recman, temp_dir, text};
use recman_tests::cli::Server;
use serde_json::Value;

fn config(dir: &Path) {
    let d = dir.display();
    let text = format!(
        "[[target]]\nid = \"c1\"\n[target.writer]\ntype = \"none\"\n\
         [target.provider]\ntype = \"copy\"\nsource = \"{d}/src\"\ndest = \"{d}/snaps\"\n\n\
         [[target]]\nid = \"x1\"\n[target.writer]\ntype = \"none\"\n\
         [target.provider]\ntype = \"exec\"\ncreate = [\"/bin/sh\", \"-c\", \"echo x/$RECMAN_SNAPSHOT\"]\n\
         delete = [\"true\"]\n"
    );
    std::fs::write(dir.join("recman.toml"), text).unwrap();
}

/// The names `recman snapshots c1` lists, newest first.
fn names(dir: &Path) -> Vec<String> {
    let out = recman(dir, &["snapshots", "c1", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    v["snapshots"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn reconcile_prints_what_vanished_and_what_is_unknown_and_a_provider_that_cannot_list() {
    let tmp = temp_dir();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/f"), b"hello").unwrap();
    config(dir);

    let out = recman(dir, &["reconcile", "c1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("start `recman up`"), "{}", text(&out));

    let _server = Server::start(dir, &[]);
    for _ in 0..2 {
        let out = recman(dir, &["snapshot", "c1"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let before = names(dir);
    assert_eq!(before.len(), 2, "{before:?}");
    let (newest, oldest) = (&before[0], &before[1]);
    std::fs::remove_dir_all(dir.join("snaps").join(oldest)).unwrap();
    let stranger = snapshot_name(JobId::from_parts(1_700_000_000_000, 7), 1);
    std::fs::create_dir_all(dir.join("snaps").join(&stranger)).unwrap();

    // No target named: every target with reconcile_every (c1; exec has none).
    let out = recman(dir, &["reconcile"]);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("c1: reconcile asked for"), "{s}");
    // By line prefix: a random snapshot name can contain "x1".
    assert!(!s.lines().any(|l| l.starts_with("x1:")), "{s}");
    assert!(s.contains(&format!("c1: vanished {oldest} ")), "{s}");
    assert!(s.contains(&format!("c1: unknown  {stranger} ")), "{s}");
    assert!(s.contains("1 vanished, 1 unknown"), "{s}");
    assert_eq!(names(dir), [newest.as_str()]);
    assert!(
        dir.join("snaps").join(&stranger).is_dir(),
        "an unknown snapshot is never deleted"
    );

    // Again: nothing more vanishes.
    let out = recman(dir, &["reconcile", "c1"]);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("0 vanished, 1 unknown"), "{s}");

    // The exec provider cannot list: the worker's refusal, exit 1.
    let out = recman(dir, &["reconcile", "x1"]);
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(
        s.contains("x1: reconcile failed") && s.contains("cannot list"),
        "{s}"
    );
}
