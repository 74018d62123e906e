//! `recman verify SNAPSHOT` with the real binary and real copies (provider
//! `copy`, verifier `checksum`): the point is verified after its job, then
//! again on demand (a second run in the log); a byte changed in the copy
//! makes the next run fail and name the file, `recman snapshots` shows the
//! state and its age; what cannot run says why (no server, no such point,
//! no verifier). Needs no root.

use std::path::Path;

use recman_testkit::{recman, temp_dir, text, wait_until, DEADLINE};
use recman_tests::cli::Server;
use serde_json::Value;

fn config(dir: &Path) {
    let d = dir.display();
    let text = format!(
        "[[target]]\nid = \"docs\"\nrpo = \"1h\"\nrpo_counts = \"verified\"\n\
         [target.writer]\ntype = \"none\"\n\
         [target.provider]\ntype = \"copy\"\nsource = \"{d}/src\"\ndest = \"{d}/snaps\"\n\
         [target.verify]\ntype = \"checksum\"\ntimeout = \"1m\"\n\n\
         [[target]]\nid = \"plain\"\n[target.writer]\ntype = \"none\"\n\
         [target.provider]\ntype = \"copy\"\nsource = \"{d}/src\"\ndest = \"{d}/plain\"\n"
    );
    std::fs::write(dir.join("recman.toml"), text).unwrap();
}

fn snapshots(dir: &Path, target: &str) -> Vec<Value> {
    let out = recman(dir, &["snapshots", target, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    v["snapshots"].as_array().cloned().unwrap_or_default()
}

fn verification(dir: &Path) -> Value {
    snapshots(dir, "docs")
        .first()
        .map(|s| s["verification"][0].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn verify_on_demand_reruns_and_a_changed_byte_fails_by_name() {
    let tmp = temp_dir();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("src/base")).unwrap();
    std::fs::write(dir.join("src/base/table"), vec![7u8; 100_000]).unwrap();
    std::fs::write(dir.join("src/PG_VERSION"), "15\n").unwrap();
    config(dir);

    let out = recman(dir, &["verify", "rm-nothing-a1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("start `recman up`"), "{}", text(&out));

    let server = Server::start(dir, &[]);
    let out = recman(dir, &["snapshot", "docs"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until("the automatic verification", DEADLINE, || {
        verification(dir)["status"] == "verified"
    });
    let v = verification(dir);
    assert_eq!(v["runs"], 1, "{v}");
    assert!(v["verified_at_ms"].as_u64().is_some(), "{v}");
    let name = snapshots(dir, "docs")[0]["name"].as_str().unwrap().to_string();
    let out = recman(dir, &["snapshots", "docs"]);
    let s = text(&out);
    assert!(s.contains("verified on docs ") && s.contains(" ago: "), "{s}");

    // On demand: a second run, recorded under the job that took it.
    let out = recman(dir, &["verify", &name]);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains(&format!("verified {name} on docs (run 2)")), "{s}");
    let out = recman(dir, &["events", "--json"]);
    let ev = String::from_utf8_lossy(&out.stdout);
    let requested: Vec<&str> = ev
        .lines()
        .filter(|l| l.contains("\"verify_requested\""))
        .collect();
    assert_eq!(requested.len(), 2, "{ev}");
    assert!(requested[1].contains("\"origin\":\"http\""), "{}", requested[1]);

    // A byte changed in the copy: the next run fails and names the file;
    // the snapshot stays, marked failed.
    let f = dir.join("snaps").join(&name).join("base/table");
    let mut bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    bytes[50_000] ^= 1;
    std::fs::write(&f, bytes).unwrap();
    let out = recman(dir, &["verify", &name, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let run = &v["verification"][0];
    assert_eq!(run["status"], "failed", "{v}");
    assert_eq!(run["runs"], 3, "{v}");
    let why = run["detail"].as_str().unwrap_or_default();
    assert!(
        why.contains("checksum_mismatch") && why.contains("base/table"),
        "{why}"
    );
    assert_eq!(
        snapshots(dir, "docs").len(),
        1,
        "a failed verification keeps the snapshot"
    );
    let s = text(&recman(dir, &["snapshots", "docs"]));
    assert!(s.contains("failed on docs ") && s.contains("base/table"), "{s}");

    // What cannot run says why, with exit code 2.
    let out = recman(dir, &["verify", "rm-aaaaaaaaaaaaaaaaaaaa-a1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("snapshot_not_found"), "{}", text(&out));
    let out = recman(dir, &["snapshot", "plain"]);
    assert!(out.status.success(), "{}", text(&out));
    let plain = snapshots(dir, "plain")[0]["name"].as_str().unwrap().to_string();
    let out = recman(dir, &["verify", &plain]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("verify_not_configured"), "{}", text(&out));
    let out = recman(dir, &["verify", "../etc"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    drop(server);
}
