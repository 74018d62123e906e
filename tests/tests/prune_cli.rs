//! `recman prune` with the real binary and real copies (provider `copy`):
//! four restore points, rules tightened afterwards; `--dry-run` shows what
//! each rule keeps and why and deletes nothing; a real prune without a
//! server says what to do; through `recman up` the copies go from the disk
//! and the catalog.

use std::path::Path;

use recman_testkit::{recman, temp_dir, text, wait_until, DEADLINE};
use recman_tests::cli::{copies_in, Server};
use serde_json::Value;

fn config(dir: &Path, rules: &str) {
    let d = dir.display();
    let text = format!(
        "[[target]]\nid = \"docs\"\n{rules}\n[target.writer]\ntype = \"none\"\n\
         [target.provider]\ntype = \"copy\"\nsource = \"{d}/src\"\ndest = \"{d}/snaps\"\n"
    );
    std::fs::write(dir.join("recman.toml"), text).unwrap();
}

fn copies(dir: &Path) -> Vec<String> {
    copies_in(&dir.join("snaps"))
}

#[test]
fn prune_by_tiers_dry_run_then_for_real() {
    let tmp = temp_dir();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/file"), "data").unwrap();
    config(dir, "");
    for _ in 0..4 {
        let out = recman(dir, &["snapshot", "docs"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let all = copies(dir);
    assert_eq!(all.len(), 4, "{all:?}");

    // Tighter rules: two by count, and the newest of each of 3 days (all
    // four are from today, so the daily tier keeps only the newest).
    config(dir, "keep_last = 2\nkeep_daily = 3\n");
    let out = recman(dir, &["prune", "--dry-run"]);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(
        s.contains("docs (keep_last 2, keep_daily 3): 2 kept, 2 would be pruned"),
        "{s}"
    );
    let keep: Vec<&str> = s.lines().filter(|l| l.starts_with("  keep ")).collect();
    let prune: Vec<&str> = s.lines().filter(|l| l.starts_with("  prune ")).collect();
    assert_eq!((keep.len(), prune.len()), (2, 2), "{s}");
    assert!(
        keep[0].contains("newest (") && keep[0].contains("keep_last (1 of 2)"),
        "{s}"
    );
    assert!(keep[0].contains("keep_daily (day "), "{s}");
    assert!(
        keep[1].contains("keep_last (2 of 2)") && !keep[1].contains("keep_daily"),
        "{s}"
    );
    assert_eq!(copies(dir).len(), 4, "a dry run deletes nothing");

    // The JSON plan names the two oldest copies.
    let out = recman(dir, &["prune", "--dry-run", "--json", "docs"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let names: Vec<&str> = v["plan"]["prune"]["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    for n in &names {
        assert!(all.iter().any(|c| c.contains(n)), "{n} not among {all:?}");
    }

    // Without the engine a real prune refuses and says what to do.
    let out = recman(dir, &["prune"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("start `recman up`"), "{}", text(&out));
    let out = recman(dir, &["prune", "--dry-run", "nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Through the server: the engine's start already applies the changed
    // rules (retention catching up), so `recman prune` finds them asked for
    // or asks itself; either way recorded and carried out by the worker.
    let server = Server::start(dir, &[]);
    let out = recman(dir, &["prune"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 kept"), "{}", text(&out));
    assert!(text(&out).contains("deletes asked for"), "{}", text(&out));
    wait_until("the two oldest copies to go", DEADLINE, || copies(dir).len() == 2);
    for n in &names {
        assert!(!copies(dir).iter().any(|c| c.contains(n)), "{n} still on disk");
    }
    let out = recman(dir, &["snapshots", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    wait_until("the catalog to list two", DEADLINE, || {
        let out = recman(dir, &["snapshots", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .map(|v| v["snapshots"].as_array().map(Vec::len) == Some(2))
            .unwrap_or(false)
    });
    let _ = v;
    let out = recman(dir, &["events", "--json"]);
    let deleted = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"snapshot_deleted\""))
        .count();
    assert_eq!(deleted, 2, "{}", text(&out));
    // Nothing left to prune.
    let out = recman(dir, &["prune", "--dry-run"]);
    assert!(text(&out).contains("2 kept, 0 would be pruned"), "{}", text(&out));
    drop(server);
}
