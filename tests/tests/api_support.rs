//! What the HTTP API tests share (no tests here): a client, the OpenAPI
//! document of schemas/openapi.json, and a check that a value matches one
//! of the document's schemas.

use std::path::Path;
use std::time::{Duration, Instant};

use recman_tests::cli::Server;
use reqwest::StatusCode;

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

/// GET `path` of the server: status and JSON body (null when none).
pub async fn get(c: &reqwest::Client, s: &Server, path: &str) -> (StatusCode, Value) {
    let r = c.get(format!("{}{path}", s.url)).send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Submits request `rid` for `fast` and waits until its job completed: the job.
pub async fn run_job(c: &reqwest::Client, s: &Server, rid: &str) -> Value {
    let r = c
        .post(format!("{}/v1/snapshots", s.url))
        .json(&json!({"request_id": rid, "targets": ["fast"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, j) = get(c, s, &format!("/v1/jobs/{id}")).await;
        if j["state"] == "completed" {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} never completed: {j}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
