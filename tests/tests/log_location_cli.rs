//! Where the log lives, and configs that cannot work (issue 12 items 6, 10,
//! 12), with the real binary:
//! - one precedence rule: `--data-dir`, then `RECMAN_DATA_DIR`, then
//!   `[engine] data_dir` of the config, then `./recman-data`; the resolved log
//!   is printed at start, from any working directory;
//! - a data dir named by the config without a log is an error (not a fresh
//!   start) unless `--init`; so is one whose marker says a log was there, and
//!   a zero-byte `events.redb`;
//! - absurd durations are refused before anything runs; `validate-config`
//!   refuses a non-loopback listen without a token and a missing hook, and
//!   names the data dir of the file it checks.

use std::path::Path;
use std::process::Output;

use recman_testkit::{recman_cmd_bare, text};

const TARGET: &str =
    "[[target]]\nid = \"t1\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"none\"\n";

/// `recman ARGS` run in `cwd`, with no recman environment but `env`.
fn run(cwd: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut c = recman_cmd_bare();
    c.current_dir(cwd).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run recman")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", text(out));
    text(out)
}

fn refused(out: &Output, what: &str) -> String {
    assert_eq!(out.status.code(), Some(2), "{what} must exit 2: {}", text(out));
    text(out)
}

#[test]
fn the_log_lives_where_the_config_says_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let data = root.join("var/lib/recman");
    let cfg = root.join("recman.toml");
    std::fs::write(
        &cfg,
        format!("[engine]\ndata_dir = \"{}\"\n{TARGET}", data.display()),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let elsewhere = root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();

    // validate-config names that data dir, the file given either way.
    for args in [
        &["validate-config", cfg_s][..],
        &["--config", cfg_s, "validate-config"],
    ] {
        let t = ok(&run(&elsewhere, &[], args), "validate-config");
        assert!(
            t.contains(&format!(
                "data dir {} (from [engine] data_dir at {cfg_s}:2:",
                data.display()
            )),
            "{args:?}: {t}"
        );
    }
    // First start: the config names a data dir with no log: refused, not a fresh start.
    let t = refused(
        &run(&elsewhere, &[], &["--config", cfg_s, "snapshot", "t1"]),
        "no log, no --init",
    );
    println!("{t}");
    assert!(
        t.contains("no event log in") && t.contains("[engine] data_dir at") && t.contains("--init"),
        "{t}"
    );
    assert!(!data.join("events.redb").exists());
    // With --init the log is created there, and the command says where.
    let t = ok(
        &run(&elsewhere, &[], &["--config", cfg_s, "--init", "snapshot", "t1"]),
        "--init",
    );
    println!("{t}");
    assert!(
        t.contains(&format!(
            "in {} (data dir from [engine] data_dir at {cfg_s}:2:",
            data.display()
        )),
        "{t}"
    );
    assert!(data.join("events.redb").is_file());
    assert!(
        !elsewhere.join("recman-data").exists(),
        "nothing in the working directory"
    );
    // From yet another directory, the same log: the second job is in it.
    let t = ok(
        &run(&root, &[], &["--config", cfg_s, "snapshot", "t1"]),
        "second run",
    );
    assert!(t.contains("log redb in"), "{t}");
    let jobs = ok(&run(&root, &[], &["--config", cfg_s, "jobs", "--json"]), "jobs");
    let v: serde_json::Value =
        serde_json::from_str(jobs.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2, "{v}");

    // The environment and the flag come before the config.
    let env_dir = root.join("from-env");
    let t = ok(
        &run(
            &root,
            &[("RECMAN_DATA_DIR", &env_dir)],
            &["--config", cfg_s, "snapshot", "t1"],
        ),
        "env",
    );
    assert!(t.contains("(data dir from RECMAN_DATA_DIR"), "{t}");
    assert!(env_dir.join("events.redb").is_file());
    let flag_dir = root.join("from-flag");
    let t = ok(
        &run(
            &root,
            &[("RECMAN_DATA_DIR", &env_dir)],
            &[
                "--config",
                cfg_s,
                "--data-dir",
                flag_dir.to_str().unwrap(),
                "snapshot",
                "t1",
            ],
        ),
        "flag",
    );
    assert!(t.contains("(data dir from --data-dir"), "{t}");
    assert!(flag_dir.join("events.redb").is_file());

    // The log removed: an error, not a new empty log (the config names the dir).
    std::fs::rename(data.join("events.redb"), root.join("moved.redb")).unwrap();
    let t = refused(
        &run(&root, &[], &["--config", cfg_s, "snapshot", "t1"]),
        "log moved",
    );
    assert!(t.contains("missing"), "{t}");
    // A flag-named dir whose marker says a log was there: an error too.
    std::fs::remove_file(flag_dir.join("events.redb")).unwrap();
    let t = refused(
        &run(
            &root,
            &[],
            &[
                "--config",
                cfg_s,
                "--data-dir",
                flag_dir.to_str().unwrap(),
                "snapshot",
                "t1",
            ],
        ),
        "marker without log",
    );
    assert!(t.contains("recman-log.created"), "{t}");
    // A zero-byte log file: an error, for writers and readers alike.
    std::fs::write(data.join("events.redb"), b"").unwrap();
    for args in [
        &["snapshot", "t1"][..],
        &["events"],
        &["audit"],
        &["--init", "snapshot", "t1"],
    ] {
        let mut all = vec!["--config", cfg_s];
        all.extend_from_slice(args);
        let out = run(&root, &[], &all);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("empty (0 bytes)"), "{args:?}: {}", text(&out));
    }
    assert_eq!(std::fs::metadata(data.join("events.redb")).unwrap().len(), 0);
}

#[test]
fn absurd_durations_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let t = refused(
        &run(
            dir.path(),
            &[],
            &["--data-dir", d, "up", "--drain-timeout", "99999999999999h"],
        ),
        "drain timeout",
    );
    assert!(t.contains("too long") || t.contains("too large"), "{t}");
    let t = refused(
        &run(
            dir.path(),
            &[],
            &[
                "--data-dir",
                d,
                "engine",
                "--amqp-reconnect-timeout",
                "18446744073709551615",
            ],
        ),
        "reconnect timeout",
    );
    assert!(t.contains("18446744073709551615"), "{t}");
    std::fs::write(
        dir.path().join("recman.toml"),
        format!("[engine]\nfreeze_limit = \"9999999999h\"\n{TARGET}"),
    )
    .unwrap();
    let out = run(dir.path(), &[], &["--data-dir", d, "validate-config"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("recman.toml:2:16: engine.freeze_limit"),
        "{}",
        text(&out)
    );
    let t = refused(
        &run(dir.path(), &[], &["--data-dir", d, "up"]),
        "up with that config",
    );
    assert!(
        t.contains("engine.freeze_limit") && !t.contains("panicked"),
        "{t}"
    );
    assert!(
        !dir.path().join("events.redb").exists(),
        "refused before the log was opened"
    );
}

#[test]
fn validate_config_refuses_what_up_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cfg = dir.path().join("recman.toml");
    std::fs::write(&cfg, format!("[api]\nlisten = \"0.0.0.0:7080\"\n{TARGET}")).unwrap();
    let out = run(dir.path(), &[], &["--data-dir", d, "validate-config"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("recman.toml:2:10: api.listen") && text(&out).contains("no token"),
        "{}",
        text(&out)
    );

    std::fs::write(
        &cfg,
        "[[target]]\nid = \"t1\"\n[target.writer]\ntype = \"exec\"\nfreeze = [\"/nonexistent/hook\"]\nthaw = [\"true\"]\n\
         [target.provider]\ntype = \"none\"\n",
    )
    .unwrap();
    let out = run(dir.path(), &[], &["--data-dir", d, "validate-config"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("recman.toml:5:11: target[0].writer.freeze")
            && text(&out).contains("does not exist"),
        "{}",
        text(&out)
    );
    // On an engine-only host the hooks are not there, and need not be.
    let out = run(dir.path(), &[], &["--data-dir", d, "validate-config", "--engine"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = refused(
        &run(dir.path(), &[], &["--data-dir", d, "snapshot", "t1"]),
        "snapshot with a missing hook",
    );
    assert!(t.contains("does not exist"), "{t}");
}
