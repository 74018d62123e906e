//! Tests of config parsing: every error names file:line:column and the key.

use super::*;

const GOOD: &str = r#"
[engine]
freeze_limit = "8s"
data_dir = "/var/lib/rm"

[[target]]
id = "db01"
provider_pool = "array.a"
retries = 5
keep_last = 7
[target.writer]
type = "exec"
freeze = ["/usr/bin/sync"]
thaw = ["/bin/true"]
flush = ["/bin/true", "--logs"]
timeout = "5s"
[target.provider]
type = "copy"
source = "/srv/data"

[[target]]
id = "fs02"
pool = "host.b"
freeze_limit = "1m30s"
[target.writer]
type = "none"
[target.provider]
type = "exec"
create = ["/usr/local/bin/snap", "--name={name}", "{target}"]
delete = ["rm-snap", "{name}"]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, "/etc/recman/recman.toml")
}

/// Asserts the error is `recman.toml:<line>:<col>: <key>: …<needle>…`.
fn assert_err(text: &str, line: usize, key: &str, needle: &str) {
    let e = parse(text).expect_err("config should be refused");
    let s = e.to_string();
    match &e {
        ConfigError::Invalid {
            line: l,
            key: k,
            file,
            ..
        } => {
            assert_eq!(file, "/etc/recman/recman.toml", "{s}");
            assert_eq!(*l, line, "{s}");
            assert_eq!(k, key, "{s}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(s.starts_with(&format!("/etc/recman/recman.toml:{line}:")), "{s}");
    assert!(s.contains(key), "{s}");
    assert!(s.contains(needle), "{s} should contain {needle}");
}

fn with_target(body: &str) -> String {
    format!("[[target]]\nid = \"db01\"\n{body}")
}

const W: &str = "[target.writer]\ntype = \"none\"\n";
const P: &str = "[target.provider]\ntype = \"none\"\n";

#[test]
fn retention_tiers_and_keep_within_load() {
    let c = parse(&with_target(&format!(
        "keep_last = 3\nkeep_within = \"14d\"\nkeep_hourly = 24\nkeep_daily = 7\nkeep_weekly = 4\nkeep_monthly = 12\n{W}{P}"
    )))
    .unwrap();
    let t = &c.targets[0];
    assert_eq!(t.keep_last, Some(3));
    assert_eq!(
        t.retention,
        crate::RetentionConfig {
            keep_within: Some(Duration::from_secs(14 * 86_400)),
            keep_hourly: Some(24),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(12),
        }
    );
}

#[test]
fn a_full_config_loads_with_defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.engine.freeze_limit, Duration::from_secs(8));
    assert_eq!(c.targets.len(), 2);
    let t = &c.targets[0];
    assert_eq!(t.id.as_str(), "db01");
    assert_eq!(t.pool.as_str(), DEFAULT_POOL);
    assert_eq!(t.provider_pool.as_str(), "array.a");
    assert_eq!(t.freeze_limit, Duration::from_secs(8), "inherits [engine]");
    assert_eq!((t.retries, t.keep_last), (5, Some(7)));
    let WriterConfig::Exec(w) = &t.writer else {
        panic!()
    };
    assert_eq!(w.freeze, vec!["/usr/bin/sync"]);
    assert_eq!(
        w.flush.as_deref(),
        Some(&["/bin/true".to_string(), "--logs".to_string()][..])
    );
    assert_eq!(w.timeout, Duration::from_secs(5));
    let ProviderConfig::Copy(p) = &t.provider else {
        panic!()
    };
    assert_eq!(p.source, PathBuf::from("/srv/data"));
    assert_eq!(p.dest, PathBuf::from("/var/lib/rm/snapshots/db01"));
    let t = &c.targets[1];
    assert_eq!(t.provider_pool.as_str(), "host.b", "defaults to pool");
    assert_eq!(t.freeze_limit, Duration::from_secs(90));
    assert_eq!(t.retries, DEFAULT_RETRIES);
    assert_eq!(t.writer, WriterConfig::None);
    assert!(matches!(&t.provider, ProviderConfig::Exec(e) if e.create[1] == "--name={name}"));
    assert_eq!(c.pools().len(), 3);
}

#[test]
fn set_data_dir_moves_only_default_destinations() {
    let mut c = parse(GOOD).unwrap();
    c.set_data_dir("/tmp/x");
    let ProviderConfig::Copy(p) = &c.targets[0].provider else {
        panic!()
    };
    assert_eq!(p.dest, PathBuf::from("/tmp/x/snapshots/db01"));
}

#[test]
fn relative_paths_are_relative_to_the_config_dir() {
    let c = parse(&with_target(&format!(
        "{W}[target.provider]\ntype = \"copy\"\nsource = \"data\"\ndest = \"../snaps\"\n"
    )))
    .unwrap();
    let ProviderConfig::Copy(p) = &c.targets[0].provider else {
        panic!()
    };
    assert_eq!(p.source, PathBuf::from("/etc/recman/data"));
    assert_eq!(p.dest, PathBuf::from("/etc/recman/../snaps"));
}

#[test]
fn syntax_errors_have_a_position() {
    let e = parse("[[target]]\nid = \n").unwrap_err().to_string();
    assert!(e.starts_with("/etc/recman/recman.toml:2:"), "{e}");
}

#[test]
fn unknown_keys_are_refused_everywhere() {
    assert_err("colour = 1\n", 1, "colour", "unknown key");
    assert_err(
        "[engine]\nfreeze_limt = \"1s\"\n",
        2,
        "engine.freeze_limt",
        "expected one of freeze_limit, data_dir, request_window, keep_finished, recent_finished",
    );
    assert_err(
        &with_target(&format!("retry = 3\n{W}{P}")),
        3,
        "target[0].retry",
        "unknown key",
    );
    assert_err(
        &with_target(&format!("{W}sudo = true\n{P}")),
        5,
        "target[0].writer.sudo",
        "unknown key",
    );
    assert_err(
        &with_target(&format!(
            "{W}[target.provider]\ntype = \"copy\"\nsource = \"/a\"\nsize = 3\n"
        )),
        8,
        "target[0].provider.size",
        "unknown key",
    );
}

#[test]
fn unknown_and_later_writer_and_provider_types() {
    let text = format!("{}\n{}", with_target(&format!("{W}{P}")), "[[target]]\nid = \"db02\"\n[target.writer]\ntype = \"fsfreez\"\n[target.provider]\ntype = \"none\"\n");
    assert_err(
        &text,
        11,
        "target[1].writer.type",
        "unknown writer \"fsfreez\" (expected one of none, exec, fsfreeze",
    );
    assert_err(
        &with_target(&format!("[target.writer]\ntype = \"vss-exchange\"\n{P}")),
        4,
        "target[0].writer.type",
        "not supported yet",
    );
    assert_err(
        &with_target(&format!("{W}[target.provider]\ntype = \"zfs\"\n")),
        6,
        "target[0].provider.type",
        "unknown provider \"zfs\"",
    );
    assert_err(
        &with_target(&format!("{W}[target.provider]\ntype = \"3par\"\n")),
        5,
        "target[0].provider.array",
        "missing",
    );
}

#[test]
fn missing_required_keys_are_named() {
    assert_err("[[target]]\npool = \"host.a\"\n", 1, "target[0].id", "missing");
    assert_err(&with_target(P), 1, "target[0].writer", "missing");
    assert_err(&with_target(W), 1, "target[0].provider", "missing");
    assert_err(
        &with_target(&format!(
            "[target.writer]\ntype = \"exec\"\nfreeze = [\"/bin/true\"]\n{P}"
        )),
        3,
        "target[0].writer.thaw",
        "missing",
    );
    assert_err(
        &with_target(&format!("{W}[target.provider]\ntype = \"copy\"\n")),
        5,
        "target[0].provider.source",
        "missing",
    );
}

#[test]
fn argv_must_be_a_non_empty_array() {
    let exec = |freeze: &str| {
        with_target(&format!(
            "[target.writer]\ntype = \"exec\"\nfreeze = {freeze}\nthaw = [\"/bin/true\"]\n{P}"
        ))
    };
    assert_err(&exec("[]"), 5, "target[0].writer.freeze", "empty");
    assert_err(
        &exec("\"sync; true\""),
        5,
        "target[0].writer.freeze",
        "never runs a shell",
    );
    assert_err(&exec("[\"\"]"), 5, "target[0].writer.freeze", "empty");
    assert_err(
        &exec("[\"/bin/x\", 3]"),
        5,
        "target[0].writer.freeze",
        "expected a string, found integer",
    );
}

#[test]
fn ids_must_be_valid_and_unique() {
    assert_err(
        &format!("[[target]]\nid = \"db 01\"\n{W}{P}"),
        2,
        "target[0].id",
        "not allowed",
    );
    let one = format!("[[target]]\nid = \"db01\"\n{W}{P}");
    assert_err(
        &format!("{one}{one}"),
        8,
        "target[1].id",
        "duplicate target id \"db01\"",
    );
    assert_err(
        &with_target(&format!("pool = \"host/a\"\n{W}{P}")),
        3,
        "target[0].pool",
        "not allowed",
    );
}

#[test]
fn bad_values_are_named() {
    assert_err(
        &with_target(&format!("freeze_limit = \"10\"\n{W}{P}")),
        3,
        "target[0].freeze_limit",
        "needs a unit",
    );
    assert_err(
        &with_target(&format!("freeze_limit = \"10 sec\"\n{W}{P}")),
        3,
        "target[0].freeze_limit",
        "unknown unit",
    );
    assert_err(
        &with_target(&format!("freeze_limit = 10\n{W}{P}")),
        3,
        "target[0].freeze_limit",
        "expected a string",
    );
    assert_err(
        &with_target(&format!("retries = -1\n{W}{P}")),
        3,
        "target[0].retries",
        "whole number",
    );
    assert_err(
        &with_target(&format!("keep_last = 0\n{W}{P}")),
        3,
        "target[0].keep_last",
        "at least 1",
    );
    assert_err(
        &with_target(&format!("keep_daily = 0\n{W}{P}")),
        3,
        "target[0].keep_daily",
        "at least 1",
    );
    assert_err(
        &with_target(&format!("keep_within = \"14x\"\n{W}{P}")),
        3,
        "target[0].keep_within",
        "unknown unit",
    );
    assert_err(
        &with_target(&format!("keep_within = \"0d\"\n{W}{P}")),
        3,
        "target[0].keep_within",
        "more than 0",
    );
    assert_err(
        &with_target(&format!("keep_yearly = 2\n{W}{P}")),
        3,
        "target[0].keep_yearly",
        "unknown key",
    );
    assert_err("target = 3\n", 1, "target", "[[target]]");
    assert_err(
        &with_target(&format!(
            "{W}[target.provider]\ntype = \"copy\"\nsource = \"/srv\"\ndest = \"/srv/snaps\"\n"
        )),
        8,
        "target[0].provider.dest",
        "inside the source",
    );
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h1m1s"), Ok(Duration::from_secs(3661)));
    assert!(parse_duration("").is_err());
    assert!(parse_duration("s").is_err());
    assert!(parse_duration("1.5s").is_err());
}

#[test]
fn load_names_a_missing_file() {
    let e = Config::load("/nonexistent/recman.toml").unwrap_err().to_string();
    assert!(e.contains("/nonexistent/recman.toml"), "{e}");
}

#[test]
fn the_shipped_example_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/recman.toml");
    let c = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.targets.len(), 2);
    assert_eq!(c.targets[0].freeze_limit, Duration::from_secs(5));
}

/// The README's walk-through ("protect a PostgreSQL every night") is this
/// file, and it loads: schedule, RPO, retention tiers, a webhook.
#[test]
fn the_postgres_walk_through_parses_and_is_the_readme_s() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/postgres-nightly.toml");
    let c = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    let t = &c.targets[0];
    assert_eq!(t.rpo, Some(Duration::from_secs(26 * 3600)));
    assert_eq!(t.retention.keep_daily, Some(7));
    assert_eq!(c.schedules[0].targets, std::slice::from_ref(&t.id));
    assert_eq!(c.notify[0].summary_at_min, Some(7 * 60));
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    assert!(readme.contains(&text), "README's walk-through and {path} differ");
}

/// Issue 12 item 12: configs that cannot work are refused with file, line and key.
#[test]
fn configs_that_cannot_work_are_refused() {
    // A listen address beyond loopback without a token.
    assert_err("[api]\nlisten = \"0.0.0.0:7080\"\n", 2, "api.listen", "no token");
    // With a token, beyond loopback: TLS, or plain HTTP knowingly.
    assert_err(
        "[api]\nlisten = \"0.0.0.0:7080\"\ntoken_file = \"t\"\n",
        2,
        "api.listen",
        "no TLS",
    );
    assert!(parse("[api]\nlisten = \"0.0.0.0:7080\"\ntoken_file = \"t\"\ninsecure_http = true\n").is_ok());
    assert!(parse(
        "[api]\nlisten = \"0.0.0.0:7080\"\ntoken_file = \"t\"\ntls_cert = \"c\"\ntls_key = \"k\"\n"
    )
    .is_ok());
    assert!(parse("[api]\nlisten = \"[::1]:7080\"\n").is_ok());
    // Absurd freeze limits (too long overflows deadlines; too short leaves no window).
    assert_err(
        &with_target(&format!("freeze_limit = \"99999999999999h\"\n{W}{P}")),
        3,
        "target[0].freeze_limit",
        "too long",
    );
    assert_err(
        "[engine]\nfreeze_limit = \"25h\"\n",
        2,
        "engine.freeze_limit",
        "too long",
    );
    assert_err(
        &with_target(&format!("freeze_limit = \"5ms\"\n{W}{P}")),
        3,
        "target[0].freeze_limit",
        "too short",
    );
    assert_err(
        &with_target(&format!(
            "{W}[target.provider]\ntype = \"exec\"\ncreate = [\"/bin/true\"]\ntimeout = \"100000h\"\n"
        )),
        8,
        "target[0].provider.timeout",
        "too long",
    );
    // Target ids that are path components.
    for id in [".", ".."] {
        assert_err(
            &format!("[[target]]\nid = \"{id}\"\n{W}{P}"),
            2,
            "target[0].id",
            "path components",
        );
    }
    // A copy dest inside its source once `..` is applied.
    assert_err(
        &with_target(&format!(
            "{W}[target.provider]\ntype = \"copy\"\nsource = \"/srv/data\"\ndest = \"/srv/other/../data/snaps\"\n"
        )),
        8,
        "target[0].provider.dest",
        "inside the source",
    );
}

#[test]
fn a_copy_dest_reached_through_a_symlink_is_inside_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir(root.join("src")).unwrap();
    std::os::unix::fs::symlink(root.join("src"), root.join("alias")).unwrap();
    let text = with_target(&format!(
        "{W}[target.provider]\ntype = \"copy\"\nsource = \"{}\"\ndest = \"{}\"\n",
        root.join("src").display(),
        root.join("alias/snaps").display()
    ));
    let e = parse(&text).expect_err("dest is inside source").to_string();
    assert!(e.contains(":8:") && e.contains("inside the source"), "{e}");
}

#[test]
fn exec_programs_are_checked_on_the_host_that_runs_them() {
    let dir = tempfile::tempdir().unwrap();
    let not_exec = dir.path().join("hook.sh");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let text = format!(
        "[[target]]\nid = \"a\"\npool = \"host.a\"\n[target.writer]\ntype = \"exec\"\n\
         freeze = [\"/bin/true\"]\nthaw = [\"true\"]\n{P}\
         [[target]]\nid = \"b\"\npool = \"host.b\"\n[target.writer]\ntype = \"exec\"\n\
         freeze = [\"/nonexistent/freeze\"]\nthaw = [\"{}\"]\n{P}\
         [[target]]\nid = \"c\"\npool = \"host.c\"\n{W}[target.provider]\ntype = \"exec\"\n\
         create = [\"no-such-program-anywhere\", \"{{name}}\"]\n",
        not_exec.display()
    );
    let c = parse(&text).expect("the text itself is fine");
    assert_eq!(c.hooks.len(), 5, "{:?}", c.hooks);
    let pools = |p: &[&str]| p.iter().map(|s| PoolName::new(*s)).collect::<Vec<_>>();
    c.check_programs(Some(&pools(&["host.a"])))
        .expect("host.a's hooks exist");
    let e = c
        .check_programs(Some(&pools(&["host.b"])))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/etc/recman/recman.toml:15:")
            && e.contains("target[1].writer.freeze")
            && e.contains("/nonexistent/freeze does not exist"),
        "{e}"
    );
    std::fs::set_permissions(&not_exec, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let text_b = text.replace("/nonexistent/freeze", "/bin/true");
    let e = parse(&text_b)
        .unwrap()
        .check_programs(Some(&pools(&["host.b"])))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(":16:") && e.contains("target[1].writer.thaw") && e.contains("not executable"),
        "{e}"
    );
    let e = c
        .check_programs(Some(&pools(&["host.c"])))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("target[2].provider.create") && e.contains("not on PATH"),
        "{e}"
    );
    assert!(c.check_programs(None).is_err(), "every pool: all checked");
}

#[test]
fn bounded_durations_for_flags() {
    assert_eq!(parse_bounded_duration("24h"), Ok(MAX_DURATION));
    assert!(parse_bounded_duration("24h1s").unwrap_err().contains("too long"));
    assert!(parse_bounded_duration("18446744073709551615s").is_err());
    assert!(parse_bounded_duration("0s").is_err());
}

/// Issue 12 item 7: no log or freeze-marker directory on a frozen filesystem,
/// by device (a symlink or another path to the same filesystem is seen).
#[test]
fn a_log_or_state_dir_on_a_frozen_filesystem_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let mp = root.join("mnt");
    std::fs::create_dir(&mp).unwrap();
    std::os::unix::fs::symlink(&root, root.join("elsewhere")).unwrap();
    let cfg = |state_dir: &str| {
        parse(&format!(
            "[[target]]\nid = \"fs1\"\n[target.writer]\ntype = \"fsfreeze\"\nmountpoint = \"{}\"\nstate_dir = \"{state_dir}\"\n{P}",
            mp.display()
        ))
        .unwrap()
    };
    // The state dir on another filesystem (/proc is never the temp dir's).
    let c = cfg("/proc/recman-state");
    let log_dir = root.join("elsewhere/data/not-yet-created");
    let e = c
        .check_not_frozen(&[("the event log's directory", &log_dir)], None)
        .unwrap_err();
    println!("{e}");
    assert!(e.contains("target fs1 freezes") && e.contains("event log"), "{e}");
    assert!(c
        .check_not_frozen(&[("the event log's directory", Path::new("/proc/x"))], None)
        .is_ok());
    // Only the pools this process serves.
    assert!(c
        .check_not_frozen(&[("log", &log_dir)], Some(&[PoolName::new("host.other")]))
        .is_ok());
    // The freeze markers of the target itself on the frozen filesystem.
    let c = cfg(&root.join("elsewhere/state").display().to_string());
    let e = c.check_not_frozen(&[], None).unwrap_err();
    assert!(e.contains("freeze markers of target fs1"), "{e}");
}

#[test]
fn the_data_dir_alone_is_read_from_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("recman.toml");
    assert!(data_dir_in(&f).unwrap().is_none(), "no file");
    std::fs::write(
        &f,
        "[engine]\n\ndata_dir = \"log-here\"\n[[target]]\nbroken = 1\n",
    )
    .unwrap();
    let (d, at) = data_dir_in(&f).unwrap().unwrap();
    assert_eq!(d, dir.path().join("log-here"));
    assert!(at.ends_with("recman.toml:3:12"), "{at}");
    assert!(
        Config::load(&f).is_err(),
        "the rest of the file is still checked by load"
    );
    let c = parse("[engine]\ndata_dir = \"/srv/rm\"\n").unwrap();
    assert!(c
        .engine
        .data_dir_at
        .as_deref()
        .unwrap()
        .ends_with("recman.toml:2:12"));
    assert!(parse("").unwrap().engine.data_dir_at.is_none());
}

#[test]
fn worker_pools_absent_means_all_and_empty_means_none() {
    let absent = parse(&format!("{GOOD}\n[worker]\nid = \"w1\"\n")).unwrap();
    assert_eq!(absent.worker.unwrap().pools, None);
    let none = parse(&format!("{GOOD}\n[worker]\npools = []\n")).unwrap();
    assert_eq!(none.worker.unwrap().pools, Some(Vec::new()));
    let one = parse(&format!("{GOOD}\n[worker]\npools = [\"host.b\"]\n")).unwrap();
    assert_eq!(one.worker.unwrap().pools, Some(vec![PoolName::new("host.b")]));
    let c = parse(GOOD).unwrap();
    assert_eq!(c.targets[0].fingerprint(), "exec/copy");
    assert_eq!(c.targets[1].fingerprint(), "none/exec");
}

#[test]
fn bad_schedule_fields_name_file_line_and_key() {
    let base = "[[target]]\nid = \"db\"\nwriter = { type = \"none\" }\nprovider = { type = \"none\" }\nrpo = \"26h\"\n";
    let ok = format!("{base}[[schedule]]\nid = \"nightly\"\ntargets = [\"db\"]\ncron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\n");
    let c = Config::from_str(&ok, "/etc/recman.toml").expect("valid");
    assert_eq!(c.schedules.len(), 1);
    assert_eq!(c.targets[0].rpo, Some(std::time::Duration::from_secs(26 * 3600)));
    for (text, want) in [
        ("cron = \"0 2 * *\"\n", "/etc/recman.toml:9:8: schedule[0].cron"),
        (
            "cron = \"0 2 * * *\"\ntimezone = \"Europe/Berlim\"\n",
            "/etc/recman.toml:10:12: schedule[0].timezone",
        ),
        ("every = \"4h\"\n", ""),
    ] {
        let t = format!("{base}[[schedule]]\nid = \"n\"\ntargets = [\"db\"]\n{text}");
        let r = Config::from_str(&t, "/etc/recman.toml");
        if want.is_empty() {
            assert!(r.is_ok(), "{r:?}");
        } else {
            let e = r.expect_err("refused").to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }
    let t = format!("{base}[[schedule]]\nid = \"n\"\ntargets = [\"dbx\"]\nevery = \"4h\"\n");
    let e = Config::from_str(&t, "/etc/recman.toml")
        .expect_err("unknown target")
        .to_string();
    assert!(
        e.starts_with("/etc/recman.toml:8:11: schedule[0].targets: unknown target \"dbx\""),
        "{e}"
    );
}

#[test]
fn amqp_urls_name_every_node_of_a_cluster() {
    let c = parse(
        "[amqp]\nurls = [\"amqp://r@n1:5672/v\", \"amqp://r@n2:5672/v\", \"amqps://r@n3/v\"]\nquorum_group_size = 3\n",
    )
    .unwrap();
    assert_eq!(c.amqp.urls.len(), 3);
    assert_eq!(c.amqp.url.as_deref(), Some("amqp://r@n1:5672/v"));
    assert_eq!(c.amqp.quorum_group_size, Some(3));
    let one = parse("[amqp]\nurl = \"amqp://r@n1/v\"\n").unwrap();
    assert_eq!(one.amqp.urls, vec!["amqp://r@n1/v".to_string()]);
    assert_eq!(one.amqp.quorum_group_size, None);
    let both = parse("[amqp]\nurl = \"amqp://r@n1/v\"\nurls = [\"amqp://r@n2/v\"]\n").unwrap_err();
    assert!(both.to_string().contains("either url or urls"), "{both}");
    let scheme = parse("[amqp]\nurls = [\"amqp://r@n1/v\", \"http://n2\"]\n").unwrap_err();
    assert!(scheme.to_string().contains("amqp.urls"), "{scheme}");
    let zero = parse("[amqp]\nurl = \"amqp://r@n1/v\"\nquorum_group_size = 0\n").unwrap_err();
    assert!(zero.to_string().contains("at least 1"), "{zero}");
}

#[test]
fn target_verify_loads_and_is_checked() {
    let c = parse(&with_target(&format!(
        "{W}{P}[target.verify]\ntype = \"exec\"\npool = \"host.verify\"\ntimeout = \"10m\"\nschedule = \"newest_daily\"\ncommand = [\"/usr/local/bin/check\", \"--quick\"]\n"
    )))
    .unwrap();
    let v = c.targets[0].verify.clone().expect("verify");
    assert_eq!(
        v,
        crate::VerifyConfig {
            kind: crate::VerifyKind::Exec {
                command: vec!["/usr/local/bin/check".into(), "--quick".into()]
            },
            pool: Some(PoolName::new("host.verify")),
            timeout: Duration::from_secs(600),
            schedule: recman_core::verify::VerifySchedule::NewestDaily,
        }
    );
    let c = parse(&with_target(&format!(
        "{W}{P}[target.verify]\ntype = \"checksum\"\n"
    )))
    .unwrap();
    let v = c.targets[0].verify.clone().expect("verify");
    assert_eq!(
        (v.kind, v.pool, v.timeout),
        (crate::VerifyKind::Checksum, None, crate::DEFAULT_VERIFY_TIMEOUT)
    );
    assert!(parse(&with_target(&format!("{W}{P}"))).unwrap().targets[0]
        .verify
        .is_none());
    assert_err(
        &with_target(&format!("{W}{P}[target.verify]\ntype = \"fsck\"\n")),
        8,
        "target[0].verify.type",
        "unknown verifier",
    );
    let c = parse(&with_target(&format!(
        "{W}{P}[target.verify]\ntype = \"postgres\"\ndata_dir = \"data\"\nqueries = [\"select count(*) from t\"]\n"
    )))
    .unwrap();
    match c.targets[0].verify.clone().expect("verify").kind {
        crate::VerifyKind::Postgres(p) => {
            assert_eq!(p.data_dir, std::path::PathBuf::from("data"));
            assert_eq!(p.bin_dir, std::path::PathBuf::from(crate::DEFAULT_PG_BIN_DIR));
            assert_eq!((p.user, p.dbname.as_str()), (None, "postgres"));
            assert_eq!(p.queries, ["select count(*) from t"]);
        }
        other => panic!("{other:?}"),
    }
    assert_err(
        &with_target(&format!(
            "{W}{P}[target.verify]\ntype = \"postgres\"\ndata_dir = \"../etc\"\n"
        )),
        9,
        "target[0].verify.data_dir",
        "inside the snapshot",
    );
    assert_err(
        &with_target(&format!(
            "{W}{P}[target.verify]\ntype = \"postgres\"\ncommand = [\"x\"]\n"
        )),
        9,
        "target[0].verify.command",
        "",
    );
    assert_err(
        &with_target(&format!(
            "{W}{P}[target.verify]\ntype = \"checksum\"\nschedule = \"hourly\"\n"
        )),
        9,
        "target[0].verify.schedule",
        "newest_daily",
    );
    assert_err(
        &with_target(&format!("{W}{P}[target.verify]\ntype = \"exec\"\n")),
        7,
        "target[0].verify.command",
        "missing",
    );
}

#[test]
fn reconcile_every_defaults_to_a_day_for_listing_providers_and_names_its_errors() {
    use std::time::Duration;
    let copy = |extra: &str| {
        format!(
            "[[target]]\nid = \"db\"\nwriter = {{ type = \"none\" }}\n{extra}\n[target.provider]\ntype = \"copy\"\nsource = \"/srv/a\"\ndest = \"/srv/b\"\n"
        )
    };
    let c = Config::from_str(&copy(""), "/etc/recman.toml").expect("valid");
    assert_eq!(c.targets[0].reconcile_every, Some(Duration::from_secs(86_400)));
    let c = Config::from_str(&copy("reconcile_every = \"6h\""), "/etc/recman.toml").expect("valid");
    assert_eq!(c.targets[0].reconcile_every, Some(Duration::from_secs(6 * 3600)));
    for off in ["\"0\"", "\"off\""] {
        let c =
            Config::from_str(&copy(&format!("reconcile_every = {off}")), "/etc/recman.toml").expect("valid");
        assert_eq!(c.targets[0].reconcile_every, None, "{off}");
    }
    for (extra, want) in [
        (
            "reconcile_every = \"soon\"",
            "/etc/recman.toml:4:19: target[0].reconcile_every",
        ),
        (
            "reconcile_every = \"10s\"",
            "/etc/recman.toml:4:19: target[0].reconcile_every: \"10s\" is out of range",
        ),
    ] {
        let e = Config::from_str(&copy(extra), "/etc/recman.toml")
            .expect_err("refused")
            .to_string();
        assert!(e.starts_with(want), "{e}");
    }
    // `none` keeps nothing to list: off by default, refused when asked for.
    let none = "[[target]]\nid = \"db\"\nwriter = { type = \"none\" }\nprovider = { type = \"none\" }\n";
    let c = Config::from_str(none, "/etc/recman.toml").expect("valid");
    assert_eq!(c.targets[0].reconcile_every, None);
    let e = Config::from_str(&format!("{none}reconcile_every = \"24h\"\n"), "/etc/recman.toml")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("the none provider cannot list its snapshots"), "{e}");
}

#[test]
fn rpo_counts_verified_needs_a_verifier_and_names_bad_values() {
    let base = "[[target]]\nid = \"db\"\nwriter = { type = \"none\" }\nprovider = { type = \"none\" }\nrpo = \"26h\"\n";
    let c = Config::from_str(base, "/etc/recman.toml").expect("valid");
    assert!(
        !c.targets[0].rpo_verified,
        "every completed snapshot counts by default"
    );
    let with_verify = format!(
        "{base}rpo_counts = \"verified\"\n[target.verify]\ntype = \"exec\"\ncommand = [\"/bin/true\"]\n"
    );
    let c = Config::from_str(&with_verify, "/etc/recman.toml").expect("valid");
    assert!(c.targets[0].rpo_verified);
    let e = Config::from_str(&format!("{base}rpo_counts = \"verified\"\n"), "/etc/recman.toml")
        .expect_err("no verifier")
        .to_string();
    assert!(e.contains("/etc/recman.toml:6:14: target[0].rpo_counts"), "{e}");
    assert!(e.contains("[target.verify]"), "{e}");
    let e = Config::from_str(&format!("{base}rpo_counts = \"all\"\n"), "/etc/recman.toml")
        .expect_err("bad value")
        .to_string();
    assert!(e.contains("target[0].rpo_counts") && e.contains("\"any\""), "{e}");
}

#[test]
fn target_recovery_loads_and_is_checked() {
    let c = parse(&with_target(&format!("{W}{P}"))).unwrap();
    assert_eq!(c.targets[0].recovery, crate::RecoveryConfig::default());
    assert_eq!(c.targets[0].recovery.timeout, crate::DEFAULT_RECOVERY_TIMEOUT);
    let c = parse(&with_target(&format!(
        "{W}{P}[target.recovery]\ntimeout = \"20m\"\nmax_mount_age = \"8h\"\n"
    )))
    .unwrap();
    assert_eq!(
        c.targets[0].recovery,
        crate::RecoveryConfig {
            timeout: Duration::from_secs(1200),
            max_mount_age: Some(Duration::from_secs(8 * 3600)),
        }
    );
    // Mounts may be kept longer than the 24 h bound of the other durations.
    let c = parse(&with_target(&format!(
        "{W}{P}[target.recovery]\nmax_mount_age = \"7d\"\n"
    )))
    .unwrap();
    assert_eq!(
        c.targets[0].recovery.max_mount_age,
        Some(Duration::from_secs(7 * 86_400))
    );
    assert_err(
        &with_target(&format!("{W}{P}[target.recovery]\ntimeout = \"soon\"\n")),
        8,
        "target[0].recovery.timeout",
        "soon",
    );
    assert_err(
        &with_target(&format!("{W}{P}[target.recovery]\nmax_mount_age = \"10s\"\n")),
        8,
        "target[0].recovery.max_mount_age",
        "out of range",
    );
    assert_err(
        &with_target(&format!("{W}{P}[target.recovery]\nmax_age = \"1h\"\n")),
        8,
        "target[0].recovery.max_age",
        "unknown",
    );
}

/// Issue 16: the recovery hooks of the `exec` writer and provider and the
/// `postgres` writer's stop/start are optional argvs, checked like the others.
#[test]
fn recovery_hooks_parse_and_are_checked() {
    let c = parse(&with_target(
        "[target.writer]\ntype = \"exec\"\nfreeze = [\"/bin/true\"]\nthaw = [\"/bin/true\"]\n\
         stop = [\"/usr/bin/systemctl\", \"stop\", \"app\"]\nstart = [\"/usr/bin/systemctl\", \"start\", \"app\"]\n\
         [target.provider]\ntype = \"exec\"\ncreate = [\"/bin/true\"]\n\
         restore = [\"/usr/local/bin/rs\", \"{name}\"]\nrollback = [\"/usr/local/bin/rb\"]\n\
         mount = [\"/usr/local/bin/mnt\"]\nunmount = [\"/usr/local/bin/umnt\"]\n",
    ))
    .unwrap();
    match &c.targets[0].writer {
        WriterConfig::Exec(e) => {
            assert_eq!(e.stop.as_deref().unwrap()[1], "stop");
            assert_eq!(e.start.as_deref().unwrap()[2], "app");
        }
        other => panic!("{other:?}"),
    }
    match &c.targets[0].provider {
        ProviderConfig::Exec(e) => {
            assert_eq!(e.restore.as_deref().unwrap()[1], "{name}");
            assert_eq!(e.rollback.as_deref().unwrap()[0], "/usr/local/bin/rb");
            assert_eq!(e.mount.as_deref().unwrap()[0], "/usr/local/bin/mnt");
            assert_eq!(e.unmount.as_deref().unwrap()[0], "/usr/local/bin/umnt");
        }
        other => panic!("{other:?}"),
    }
    // Every program is known to `recman check`.
    let keys: Vec<&str> = c.hooks.iter().map(|h| h.key.as_str()).collect();
    for k in [
        "target[0].writer.stop",
        "target[0].writer.start",
        "target[0].provider.restore",
        "target[0].provider.rollback",
        "target[0].provider.mount",
        "target[0].provider.unmount",
    ] {
        assert!(keys.contains(&k), "{k} not in {keys:?}");
    }
    // Left out: none (the step is refused by the worker, not the config).
    let c = parse(&with_target(&format!(
        "[target.writer]\ntype = \"exec\"\nfreeze = [\"/bin/true\"]\nthaw = [\"/bin/true\"]\n\
         [target.provider]\ntype = \"exec\"\ncreate = [\"/bin/true\"]\n\
         [[target]]\nid = \"pg\"\n[target.writer]\ntype = \"postgres\"\n\
         stop = [\"/usr/bin/pg_ctlcluster\", \"15\", \"main\", \"stop\", \"-m\", \"fast\"]\n{P}",
    )))
    .unwrap();
    match (&c.targets[0].writer, &c.targets[0].provider) {
        (WriterConfig::Exec(w), ProviderConfig::Exec(p)) => {
            assert_eq!((&w.stop, &w.start), (&None, &None));
            assert!(p.restore.is_none() && p.rollback.is_none() && p.mount.is_none() && p.unmount.is_none());
        }
        other => panic!("{other:?}"),
    }
    match &c.targets[1].writer {
        WriterConfig::Postgres(p) => {
            assert_eq!(p.stop.as_deref().unwrap()[3], "stop");
            assert_eq!(p.start, None);
        }
        other => panic!("{other:?}"),
    }
    // Same errors as every argv: file, line and key named.
    assert_err(
        &with_target(&format!(
            "[target.writer]\ntype = \"exec\"\nfreeze = [\"/bin/true\"]\nthaw = [\"/bin/true\"]\nstop = \"systemctl stop app\"\n{P}"
        )),
        7,
        "target[0].writer.stop",
        "never runs a shell",
    );
    assert_err(
        &with_target(&format!(
            "{W}[target.provider]\ntype = \"exec\"\ncreate = [\"/bin/true\"]\nunmount = []\n"
        )),
        8,
        "target[0].provider.unmount",
        "empty",
    );
    assert_err(
        &with_target(&format!("[target.writer]\ntype = \"postgres\"\nstart = [1]\n{P}")),
        5,
        "target[0].writer.start",
        "expected a string, found integer",
    );
    assert_err(
        &with_target(&format!(
            "[target.writer]\ntype = \"none\"\nstop = [\"/bin/true\"]\n{P}"
        )),
        5,
        "target[0].writer.stop",
        "",
    );
}

#[test]
fn a_postgres_log_loads_and_keeps_its_password_out_of_the_config() {
    let none = parse("").unwrap();
    assert_eq!(
        (none.log.postgres.as_deref(), none.log.schema.as_str()),
        (None, "recman")
    );
    let c = parse(
        "[log]\npostgres = \"postgresql://recman@db1:5432/recman\"\npassword_file = \"/etc/recman/pg\"\nschema = \"site_a\"\n",
    )
    .unwrap();
    assert_eq!(
        c.log.postgres.as_deref(),
        Some("postgresql://recman@db1:5432/recman")
    );
    assert_eq!(c.log.password_file, Some(PathBuf::from("/etc/recman/pg")));
    assert_eq!(c.log.schema, "site_a");
    assert_err(
        "[log]\npostgres = \"postgresql://recman:secret@db1/recman\"\n",
        2,
        "log.postgres",
        "password_file",
    );
    assert_err(
        "[log]\npostgres = \"host=db1 password=x\"\n",
        2,
        "log.postgres",
        "URL",
    );
    assert_err(
        "[log]\npostgres = \"postgresql://recman@db1/recman\"\nschema = \"Site-A\"\n",
        3,
        "log.schema",
        "lower-case",
    );
    assert_err(
        "[log]\npassword_file = \"/etc/recman/pg\"\n",
        1,
        "log.password_file",
        "no `postgres`",
    );
    assert_err(
        "[log]\nurl = \"postgresql://x@y/z\"\n",
        2,
        "log.url",
        "unknown key",
    );
    assert_eq!(
        c.log.lease(),
        std::time::Duration::from_secs(5),
        "the default lease"
    );
    let l = parse("[log]\npostgres = \"postgresql://recman@db1/recman\"\nlease = \"3s\"\n").unwrap();
    assert_eq!(l.log.lease(), std::time::Duration::from_secs(3));
    assert_err(
        "[log]\npostgres = \"postgresql://recman@db1/recman\"\nlease = \"100ms\"\n",
        3,
        "log.lease",
        "out of range",
    );
    assert_err("[log]\nlease = \"5s\"\n", 2, "log.lease", "no `postgres`");
}

#[test]
fn log_archiving_loads_and_is_checked() {
    let none = parse("").unwrap();
    assert_eq!(none.log.archive_after, None, "off by default");
    assert_eq!(none.log.segment_records(), 250_000);
    let c = parse("[log]\narchive_after = \"30d\"\nsegment_records = 5000\n").unwrap();
    assert_eq!(c.log.archive_after, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(c.log.segment_records(), 5_000);
    assert_err(
        "[log]\narchive_after = \"1h\"\n",
        2,
        "log.archive_after",
        "too short",
    );
    assert_err(
        "[log]\nsegment_records = 10\n",
        2,
        "log.segment_records",
        "out of range",
    );
    assert_err(
        "[log]\npostgres = \"postgresql://recman@db1/recman\"\narchive_after = \"30d\"\n",
        3,
        "log.archive_after",
        "PostgreSQL's own tools",
    );
}

#[test]
fn require_approval_loads_with_its_expiry_and_is_checked() {
    let c = parse(&with_target(&format!("{W}{P}"))).unwrap();
    assert_eq!(c.targets[0].approval, None, "off by default");
    let c = parse(&with_target(&format!("require_approval = true\n{W}{P}"))).unwrap();
    assert_eq!(c.targets[0].approval, Some(crate::DEFAULT_APPROVAL_EXPIRY));
    let c = parse(&with_target(&format!(
        "require_approval = true\napproval_expiry = \"2s\"\n{W}{P}"
    )))
    .unwrap();
    assert_eq!(c.targets[0].approval, Some(Duration::from_secs(2)));
    assert_err(
        &with_target(&format!("require_approval = \"yes\"\n{W}{P}")),
        3,
        "target[0].require_approval",
        "true or false",
    );
    assert_err(
        &with_target(&format!("approval_expiry = \"1h\"\n{W}{P}")),
        3,
        "target[0].approval_expiry",
        "without require_approval",
    );
    assert_err(
        &with_target(&format!(
            "require_approval = true\napproval_expiry = \"2d\"\n{W}{P}"
        )),
        4,
        "target[0].approval_expiry",
        "2d",
    );
}

#[test]
fn request_window_and_keep_finished_load_and_are_bounded() {
    let c = parse("[engine]\nrequest_window = \"30d\"\nkeep_finished = \"10m\"\n").expect("config");
    assert_eq!(c.engine.request_window, Duration::from_secs(30 * 86_400));
    assert_eq!(c.engine.keep_finished, Duration::from_secs(600));
    let d = parse("").expect("config");
    assert_eq!(d.engine.request_window, DEFAULT_REQUEST_WINDOW);
    assert_eq!(d.engine.keep_finished, DEFAULT_KEEP_FINISHED);
    assert_err(
        "[engine]\nfreeze_limit = \"8s\"\nrequest_window = \"5s\"\n",
        3,
        "engine.request_window",
        "too short",
    );
    assert_err(
        "[engine]\nkeep_finished = \"30d\"\n",
        2,
        "engine.keep_finished",
        "too long",
    );
    assert_err(
        "[engine]\nkeep_finished = \"soon\"\n",
        2,
        "engine.keep_finished",
        "invalid duration",
    );
    assert_eq!(d.engine.recent_finished, DEFAULT_RECENT_FINISHED);
    let r = parse("[engine]\nrecent_finished = 3\n").expect("config");
    assert_eq!(r.engine.recent_finished, 3);
    assert_err(
        "[engine]\nrecent_finished = 2000000\n",
        2,
        "engine.recent_finished",
        "at most",
    );
}
