//! What the HTTP API tests share (no tests here): a client, the OpenAPI
//! document of schemas/openapi.json, and a check that a value matches one
//! of the document's schemas.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// A client with a 30 s timeout (rustls with ring, as the server).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// schemas/openapi.json.
pub fn doc() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/openapi.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Fails unless `v` matches the document's schema `name`.
pub fn assert_matches(name: &str, v: &Value) {
    let schema =
        json!({"$ref": format!("#/components/schemas/{name}"), "components": doc()["components"].clone()});
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{v}");
}
