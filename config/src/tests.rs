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
        "expected one of freeze_limit, data_dir",
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
