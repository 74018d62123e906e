//! Recovery jobs with the real binary and real copies (provider `copy`,
//! issue 16): `restore --to` gives the old content beside production;
//! `restore --in-place --yes` makes the live directory equal the restore
//! point, records a safety snapshot that `recman snapshots` lists and that
//! holds the data as it was, and `recman job` shows stop, safety-snapshot,
//! restore, start; the refusals (no `--yes`, an unknown snapshot, another
//! target's); mount / unmount and clone / clone rm with `recman mounts` and
//! `recman clones`; retention keeps a mounted point.

use std::path::Path;

use recman_testkit::{recman, temp_dir, text};
use serde_json::Value;

/// Two `copy` targets: `docs` (live data in DIR/src, keep_last 1; its
/// application's stop and start hooks append to DIR/app.log) and `other`
/// (DIR/other-src).
fn config(dir: &Path) {
    let d = dir.display();
    let text = format!(
        "[[target]]\nid = \"docs\"\nkeep_last = 1\n[target.writer]\ntype = \"exec\"\n\
         freeze = [\"true\"]\nthaw = [\"true\"]\n\
         stop = [\"/bin/sh\", \"-c\", \"echo stopped >> {d}/app.log\"]\n\
         start = [\"/bin/sh\", \"-c\", \"echo started >> {d}/app.log\"]\n\
         [target.provider]\ntype = \"copy\"\nsource = \"{d}/src\"\ndest = \"{d}/snaps\"\n\n\
         [[target]]\nid = \"other\"\n[target.writer]\ntype = \"none\"\n\
         [target.provider]\ntype = \"copy\"\nsource = \"{d}/other-src\"\ndest = \"{d}/other-snaps\"\n"
    );
    std::fs::write(dir.join("recman.toml"), text).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("other-src")).unwrap();
    std::fs::write(dir.join("other-src/file"), "other").unwrap();
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let out = recman(dir, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)))
}

/// Takes a snapshot of `target` and returns its name.
fn snapshot(dir: &Path, target: &str) -> String {
    let v = json(dir, &["snapshot", target, "--json"]);
    assert_eq!(v["state"], "completed", "{v}");
    v["snapshot"]["name"].as_str().unwrap().to_string()
}

/// The catalog entries (`recman snapshots --json`) of `target`.
fn catalog(dir: &Path, target: &str) -> Vec<Value> {
    json(dir, &["snapshots", target, "--json"])["snapshots"]
        .as_array()
        .unwrap()
        .clone()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn restore_to_then_in_place_with_a_safety_snapshot() {
    let tmp = temp_dir();
    let dir = tmp.path();
    config(dir);
    std::fs::write(dir.join("src/file"), "v1").unwrap();
    let point = snapshot(dir, "docs");
    // The live data moves on.
    std::fs::write(dir.join("src/file"), "v2").unwrap();
    std::fs::write(dir.join("src/new"), "only in v2").unwrap();

    // Beside production: the old content, the live data untouched.
    let to = dir.join("restored");
    let out = recman(dir, &["restore", &point, "--to", to.to_str().unwrap()]);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("completed"), "{s}");
    assert_eq!(read(&to.join("file")), "v1");
    assert!(!to.join("new").exists());
    assert_eq!(read(&dir.join("src/file")), "v2");

    // In place without --yes: refused before anything is asked for.
    let out = recman(dir, &["restore", &point, "--in-place"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert_eq!(read(&dir.join("src/file")), "v2");

    // In place, confirmed: the live directory equals the point.
    let v = json(dir, &["restore", &point, "--in-place", "--yes", "--json"]);
    assert_eq!(v["state"], "completed", "{v}");
    let job = v["job_id"].as_str().unwrap().to_string();
    let safety = v["safety_snapshot"]
        .as_str()
        .expect("a safety snapshot")
        .to_string();
    assert_eq!(read(&dir.join("src/file")), "v1");
    assert!(
        !dir.join("src/new").exists(),
        "the live dir still has a file the point has not"
    );
    assert_eq!(
        read(&dir.join("app.log")),
        "stopped\nstarted\n",
        "stop before, start after"
    );

    // The safety snapshot is a restore point of docs, listed, and it holds
    // the live data as it was before the restore.
    let list = catalog(dir, "docs");
    let entry = list
        .iter()
        .find(|e| e["name"] == safety.as_str())
        .unwrap_or_else(|| panic!("{safety} not in {list:?}"));
    assert_eq!(entry["kind"], "safety", "{entry}");
    assert_eq!(entry["job"], job.as_str(), "{entry}");
    let before = dir.join("before");
    let out = recman(dir, &["restore", &safety, "--to", before.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read(&before.join("file")), "v2");
    assert_eq!(read(&before.join("new")), "only in v2");

    // `recman job` shows the four steps, each done by a worker.
    let d = json(dir, &["job", &job, "--json"]);
    let stages: Vec<&str> = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["stop", "safety_snapshot", "restore", "start"], "{d}");
    for t in d["timeline"].as_array().unwrap() {
        assert_eq!(t["outcome"], "ok", "{t}");
        assert!(t["steps"][0]["worker"].is_string(), "{t}");
    }
    assert_eq!(d["kind"], "restore", "{d}");
    assert_eq!(d["state"], "completed", "{d}");
    assert_eq!(d["recovery"]["safety_snapshot"], safety.as_str(), "{d}");
    assert_eq!(d["recovery"]["point"], point.as_str(), "{d}");
    let out = recman(dir, &["job", &job]);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    for word in ["stop", "safety-snapshot", "restore", "start", "safety snapshot:"] {
        assert!(s.contains(word), "{word} missing from:\n{s}");
    }
    // `recman jobs` lists it with its kind.
    let out = recman(dir, &["jobs"]);
    let s = text(&out);
    let line = s
        .lines()
        .find(|l| l.starts_with(&job))
        .unwrap_or_else(|| panic!("{job} not listed:\n{s}"));
    assert!(line.contains("restore") && line.contains("completed"), "{line}");
}

#[test]
fn refusals_name_the_reason_and_touch_nothing() {
    let tmp = temp_dir();
    let dir = tmp.path();
    config(dir);
    std::fs::write(dir.join("src/file"), "v1").unwrap();
    let _docs = snapshot(dir, "docs");
    let other = snapshot(dir, "other");
    let to = dir.join("restored");
    let to = to.to_str().unwrap();

    let out = recman(dir, &["restore", "rm-nosuchpoint-a1", "--to", to]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unknown_snapshot"), "{}", text(&out));

    let out = recman(dir, &["restore", &other, "--target", "docs", "--to", to]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("wrong_target"), "{}", text(&out));
    assert!(text(&out).contains("other"), "{}", text(&out));

    let out = recman(dir, &["restore", &other, "--to", "relative/path"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("absolute"), "{}", text(&out));

    let out = recman(dir, &["unmount", "0193a5b2-7c1e-7f00-8a3b-5d2e9c4f1a07"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unknown_mount"), "{}", text(&out));

    let out = recman(dir, &["clone", "rm", "nosuchclone"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unknown_clone"), "{}", text(&out));

    assert!(!Path::new(to).exists());
    assert_eq!(read(&dir.join("src/file")), "v1");
    // Nothing was recorded as a job for a refusal.
    let jobs = json(dir, &["jobs", "--json"]);
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 2, "{jobs}");
}

#[test]
fn mount_unmount_clone_and_retention_keeps_a_mounted_point() {
    let tmp = temp_dir();
    let dir = tmp.path();
    config(dir);
    std::fs::write(dir.join("src/file"), "v1").unwrap();
    let first = snapshot(dir, "docs");

    // Mount it read-only: listed with where, since when, by which job.
    let v = json(dir, &["mount", &first, "--json"]);
    assert_eq!(v["state"], "completed", "{v}");
    let mount_job = v["job_id"].as_str().unwrap().to_string();
    let at = v["location"].as_str().unwrap().to_string();
    assert_eq!(read(&Path::new(&at).join("file")), "v1");
    let mounts = json(dir, &["mounts", "--json"])["mounts"].clone();
    assert_eq!(mounts.as_array().unwrap().len(), 1, "{mounts}");
    assert_eq!(mounts[0]["job"], mount_job.as_str(), "{mounts}");
    assert_eq!(mounts[0]["snapshot"], first.as_str(), "{mounts}");
    assert_eq!(mounts[0]["location"], at.as_str(), "{mounts}");
    assert_eq!(mounts[0]["writable"], false, "{mounts}");
    let out = recman(dir, &["mounts"]);
    assert!(
        text(&out).contains(&mount_job) && text(&out).contains("ro"),
        "{}",
        text(&out)
    );

    // keep_last = 1: a second snapshot would prune the first, but it is
    // mounted: retention keeps it and says why.
    std::fs::write(dir.join("src/file"), "v2").unwrap();
    let second = snapshot(dir, "docs");
    let list = catalog(dir, "docs");
    let kept = list
        .iter()
        .find(|e| e["name"] == first.as_str())
        .unwrap_or_else(|| panic!("the mounted {first} was pruned: {list:?}"));
    assert!(
        kept["in_use"][0].as_str().unwrap_or("").contains("mounted"),
        "{kept}"
    );
    let out = recman(dir, &["snapshots", "docs"]);
    assert!(text(&out).contains("in use: mounted"), "{}", text(&out));

    // Unmount: the record goes (a read-only mount of a copy is the
    // snapshot itself: it stays, a restore point like the others).
    let out = recman(dir, &["unmount", &mount_job]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(dir, &["mounts", "--json"])["mounts"], serde_json::json!([]));

    // A clone of the second point, listed, then removed.
    let v = json(dir, &["clone", &second, "--as", "docs-test", "--json"]);
    assert_eq!(v["state"], "completed", "{v}");
    let clone_at = v["location"].as_str().unwrap().to_string();
    assert_eq!(read(&Path::new(&clone_at).join("file")), "v2");
    std::fs::write(Path::new(&clone_at).join("file"), "changed in the clone").unwrap();
    assert_eq!(read(&dir.join("src/file")), "v2", "a clone is independent");
    let clones = json(dir, &["clones", "--json"])["clones"].clone();
    assert_eq!(clones[0]["name"], "docs-test", "{clones}");
    assert_eq!(clones[0]["snapshot"], second.as_str(), "{clones}");
    let out = recman(dir, &["clone", &second, "--as", "docs-test"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("clone_exists"), "{}", text(&out));
    let out = recman(dir, &["clone", "rm", "docs-test"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(dir, &["clones", "--json"])["clones"], serde_json::json!([]));
    assert!(!Path::new(&clone_at).exists(), "{clone_at} still there");

    // Nothing uses the first point any more: the next job's retention prunes it.
    let _third = snapshot(dir, "docs");
    let names: Vec<String> = catalog(dir, "docs")
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!names.contains(&first), "{first} still in {names:?}");
}
