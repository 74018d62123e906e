//! `recman snapshot demo` on a fresh data dir, twice, with the real binary:
//! two completed jobs, two snapshot directories, an intact log.

use std::path::Path;

fn recman(data: &Path, args: &[&str]) -> std::process::Output {
    recman_testkit::recman(data, args)
}

#[test]
fn demo_twice_gives_two_snapshots_and_an_intact_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for _ in 0..2 {
        let out = recman(&data, &["snapshot", "demo"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("completed: snapshot"), "{stdout}");
        for stage in ["freeze done", "snapshot done", "thaw done", "flush-logs done"] {
            assert!(stdout.contains(stage), "missing {stage}: {stdout}");
        }
    }
    // Snapshots, not the hidden `.NAME.owner` files beside them.
    let snaps: Vec<_> = std::fs::read_dir(data.join("snapshots/demo"))
        .unwrap()
        .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(snaps.len(), 2);
    let copy = snaps[0].as_ref().unwrap().path().join("orders.csv");
    assert!(std::fs::read_to_string(copy).unwrap().contains("tape"));
    let audit = recman(&data, &["audit"]);
    assert_eq!(
        audit.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );
}

#[test]
fn demo_works_with_the_default_relative_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = recman_testkit::recman_cmd_bare()
        .current_dir(dir.path())
        .args(["snapshot", "demo"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("recman-data/snapshots/demo"))
            .unwrap()
            .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
            .count(),
        1
    );
}

#[test]
fn an_unknown_target_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("recman.toml");
    std::fs::write(
        &cfg,
        "[[target]]\nid = \"t1\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"none\"\n",
    )
    .unwrap();
    let out = recman(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "snapshot", "nope"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[target]]\nid = \"t1\"\n[target.writer]\ntype = \"fsfreez\"\n",
    )
    .unwrap();
    let out = recman(dir.path(), &["validate-config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.toml:4") && err.contains("writer.type"), "{err}");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[target]]\nid = \"t1\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"none\"\n",
    )
    .unwrap();
    let out = recman(dir.path(), &["validate-config", good.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("t1"));
}
