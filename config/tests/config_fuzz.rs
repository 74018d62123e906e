//! Property tests of the config loader (issue 12, "done when"): arbitrary
//! text, and TOML built from the config's own sections, keys and plausible
//! values, must load or be refused with `file:line:column`, never panic. A
//! few thousand cases, a few seconds; `RECMAN_FUZZ_CASES=N` runs more.

use proptest::prelude::*;
use recman_config::{Config, ConfigError};

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("RECMAN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn load(text: &str) {
    match Config::from_str(text, "/etc/recman/recman.toml") {
        Ok(c) => {
            // What loads keeps the documented bounds.
            for t in &c.targets {
                assert!(t.freeze_limit >= recman_config::MIN_FREEZE_LIMIT);
                assert!(t.freeze_limit <= recman_config::MAX_DURATION);
                assert!(t.id.as_str() != "." && t.id.as_str() != "..");
            }
        }
        Err(ConfigError::Invalid {
            file, line, column, ..
        }) => {
            assert_eq!(file, "/etc/recman/recman.toml");
            assert!(line >= 1 && column >= 1);
            assert!(line <= text.lines().count().max(1) + 1, "line {line} of {text:?}");
        }
        Err(e) => panic!("from_str reads nothing from disk: {e}"),
    }
}

const SECTIONS: &[&str] = &[
    "[engine]",
    "[worker]",
    "[api]",
    "[amqp]",
    "[array.a]",
    "[[target]]",
    "[target.writer]",
    "[target.provider]",
    "[target.writer.fsfreeze]",
];
const KEYS: &[&str] = &[
    "id",
    "pool",
    "provider_pool",
    "freeze_limit",
    "retries",
    "keep_last",
    "type",
    "freeze",
    "thaw",
    "flush",
    "timeout",
    "create",
    "delete",
    "source",
    "dest",
    "mountpoint",
    "state_dir",
    "listen",
    "token_file",
    "max_connections",
    "header_timeout",
    "url",
    "password_file",
    "data_dir",
    "pools",
    "array",
    "volume",
    "volume_set",
    "subvolume",
    "image",
    "host",
    "port",
    "user",
    "label_dir",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "\"10s\"",
            "\"0s\"",
            "\"99999999999999999999h\"",
            "\"5ms\"",
            "\"1h1m\"",
            "\"none\"",
            "\"exec\"",
            "\"copy\"",
            "\"fsfreeze\"",
            "\"3par\"",
            "\"btrfs\"",
            "\"qcow2\"",
            "\"postgres\"",
            "\".\"",
            "\"..\"",
            "\"/srv/data\"",
            "\"/srv/data/../data/x\"",
            "\"0.0.0.0:1\"",
            "\"127.0.0.1:7080\"",
            "[\"/bin/true\"]",
            "[]",
            "[\"\"]",
            "\"true\"",
            "{}",
            "-1",
            "4294967296",
            "0",
            "7",
            "\"amqp://u@h/v\"",
            "\"https://a:8080\"",
            "true",
            "1.5",
        ])
        .prop_map(str::to_string),
        "\"[a-z0-9./:_ -]{0,16}\"",
        "-?[0-9]{1,22}",
    ]
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => prop::sample::select(SECTIONS).prop_map(str::to_string),
        1 => "\\PC{0,12}",
    ]
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn arbitrary_text_never_panics_the_loader(text in "\\PC{0,200}") {
        load(&text);
    }

    #[test]
    fn arbitrary_bytes_as_text_never_panic_the_loader(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        load(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn config_shaped_toml_never_panics_the_loader(lines in prop::collection::vec(line(), 0..24)) {
        load(&lines.join("\n"));
    }
}
