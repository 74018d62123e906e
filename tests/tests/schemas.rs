//! The checked-in JSON Schemas match the Rust types, every example in
//! `schemas/examples/` validates against its schema and decodes with the Rust
//! types, and every example under `schemas/examples/invalid/` is rejected.
//!
//! Regenerate after changing a wire type: `RECMAN_UPDATE_SCHEMAS=1 cargo nextest run --release -p recman-tests schemas::`.

use std::path::{Path, PathBuf};

use recman_events::schema;
use recman_events::wire::{self, Command, EventMessage, Report, Request};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("schemas")
}

#[test]
fn checked_in_schemas_match_the_types() {
    let update = std::env::var_os("RECMAN_UPDATE_SCHEMAS").is_some();
    let mut drift = Vec::new();
    for (name, value) in schema::all() {
        let path = root().join(name);
        let want = schema::render(&value);
        if update {
            std::fs::write(&path, &want).unwrap();
            continue;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            drift.push(name);
        }
    }
    assert!(
        drift.is_empty(),
        "schemas drifted from the Rust types: {drift:?}; run RECMAN_UPDATE_SCHEMAS=1 cargo nextest run --release -p recman-tests schemas:: and commit schemas/"
    );
}

fn validator(kind: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join(format!("{kind}.schema.json"))).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&value).unwrap()
}

/// Decodes with the Rust reader for that kind of message (the engine's and workers' view).
fn decode_as(kind: &str, bytes: &[u8]) -> Result<(), String> {
    match kind {
        "request" => Request::from_json(bytes).map(|_| ()),
        "command" => wire::decode::<Command>(bytes).map(|_| ()),
        "report" => wire::decode::<Report>(bytes).map(|_| ()),
        "event" => wire::decode::<EventMessage>(bytes).map(|_| ()),
        other => panic!("unknown example kind {other}"),
    }
    .map_err(|e| e.to_string())
}

fn examples(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let kind = stem.split(['-', '.']).next().unwrap().to_string();
        out.push((kind, path));
    }
    out.sort();
    out
}

#[test]
fn every_valid_example_passes_schema_and_decoder() {
    let all = examples(&root().join("examples"));
    for kind in ["request", "command", "report", "event"] {
        assert!(all.iter().any(|(k, _)| k == kind), "no example of a {kind}");
    }
    for (kind, path) in all {
        let bytes = std::fs::read(&path).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let v = validator(&kind);
        let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{} fails its schema: {errors:?}",
            path.display()
        );
        decode_as(&kind, &bytes).unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
    }
}

#[test]
fn every_invalid_example_is_rejected() {
    let all = examples(&root().join("examples/invalid"));
    assert!(all.len() >= 3, "expected a few invalid examples");
    for (kind, path) in all {
        let bytes = std::fs::read(&path).unwrap();
        let by_schema = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(value) => !validator(&kind).is_valid(&value),
            Err(_) => true,
        };
        let by_decoder = decode_as(&kind, &bytes).is_err();
        assert!(by_decoder, "{} was accepted by the decoder", path.display());
        // Semantic rules (id characters, duplicates) live in the decoder only;
        // structural errors must also be caught by the schema.
        if path.file_name().unwrap().to_str().unwrap().contains("structural") {
            assert!(by_schema, "{} was accepted by the schema", path.display());
        }
    }
}

/// A `[[notify]]` filter may name every kind of event the engine records
/// (the config refuses an unknown kind, so a kind missing from its list
/// could never be subscribed to).
#[test]
fn every_event_kind_can_be_a_notification_filter() {
    let (_, event) = schema::all()
        .into_iter()
        .find(|(name, _)| *name == "event.schema.json")
        .unwrap();
    let kinds: Vec<String> = event["$defs"]["EventBody"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["properties"]["type"]["const"].as_str().map(String::from))
        .collect();
    assert!(kinds.len() >= 30, "the event kinds were not found: {kinds:?}");
    assert!(kinds.iter().any(|k| k == "verified"), "{kinds:?}");
    let missing: Vec<&String> = kinds
        .iter()
        .filter(|k| !recman_config::NOTIFY_KINDS.contains(&k.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "event kinds a [[notify]] filter refuses: {missing:?} (add them to config/src/notify.rs NOTIFY_KINDS)"
    );
}
