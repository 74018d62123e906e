//! The HTTP API is what `schemas/openapi.json` says (issue 24) and holds up
//! under hostile clients (issue 12, items 8, 9, 11), against a real `recman up`:
//! every error in the documented JSON form (query strings, path ids,
//! `Last-Event-ID`, content type, body and URI size, max targets, cancel
//! reason), the bearer challenge, header/idle timeouts and the connection cap;
//! and, without a server, the router's operations against the document.
//! schemathesis runs the same contract in depth (tests/contract/schemathesis.sh).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::api_support::{client, doc};
use recman_tests::cli::{http, write_config, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A validator for `#/components/schemas/{name}` of the document.
fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
    let schema =
        json!({"$ref": format!("#/components/schemas/{name}"), "components": doc["components"].clone()});
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_matches(doc: &Value, name: &str, v: &Value) {
    let errors: Vec<String> = validator(doc, name)
        .iter_errors(v)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{name} does not match the document: {errors:?}\n{v}"
    );
}

/// Asserts a JSON error response: status, `error.code`, `error.field` (if
/// given), the JSON content type, and the document's `Error` schema.
async fn assert_error(r: reqwest::Response, status: StatusCode, code: &str, field: Option<&str>) -> Value {
    let what = r.url().to_string();
    assert_eq!(r.status(), status, "{what}");
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    let text = r.text().await.unwrap();
    assert_eq!(ct, "application/json", "{what}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    if let Some(f) = field {
        assert_eq!(v["error"]["field"], f, "{what}: {v}");
    }
    assert_matches(&doc(), "Error", &v);
    v
}

async fn get_json(c: &reqwest::Client, url: String) -> reqwest::Response {
    c.get(url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn query_string_errors_are_documented_json_400s() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 1, "");
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let job = "00000000-0000-7000-8000-000000000000";
    for (path, field) in [
        ("/v1/jobs?limit=abc", "limit"),
        ("/v1/jobs?limit=-1", "limit"),
        ("/v1/jobs?limit=1&limit=2", "limit"),
        ("/v1/jobs?limit=18446744073709551616", "limit"),
        ("/v1/snapshots?target=a&target=b", "target"),
        ("/v1/events?from=x", "from"),
        ("/v1/events?from=-1", "from"),
        ("/v1/events?from=18446744073709551616", "from"),
        ("/v1/events?from=1&from=2", "from"),
        // The same limits as /v1/jobs: refused, not clamped.
        ("/v1/events?limit=0", "limit"),
        ("/v1/events?limit=10001", "limit"),
        (
            "/v1/jobs/00000000-0000-7000-8000-000000000000/events?from=x",
            "from",
        ),
    ] {
        let r = get_json(&c, format!("{}{path}", s.url)).await;
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_field", Some(field)).await;
    }
    // A path id that is not UTF-8 is the same JSON 400 as one that is not a UUID.
    for path in [
        "/v1/jobs/%FF",
        "/v1/jobs/%FF/events",
        "/v1/jobs/not-a-uuid/events",
    ] {
        let r = get_json(&c, format!("{}{path}", s.url)).await;
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_field", Some("id")).await;
    }
    let r = get_json(&c, format!("{}/v1/jobs/{job}/events", s.url)).await;
    assert_error(r, StatusCode::NOT_FOUND, "job_not_found", None).await;
}

#[tokio::test]
async fn a_last_event_id_that_overflows_or_is_not_a_number_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 1, "");
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let r = c
        .post(format!("{}/v1/snapshots", s.url))
        .json(&json!({"request_id": "r1", "targets": ["fast"]}))
        .send()
        .await
        .unwrap();
    let job = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in [
        "18446744073709551615",
        "9223372036854775808",
        "abc",
        "-1",
        "1.5",
        "",
    ] {
        for path in ["/v1/events".to_string(), format!("/v1/jobs/{job}/events")] {
            let r = c
                .get(format!("{}{path}", s.url))
                .header("last-event-id", id)
                .send()
                .await
                .unwrap();
            // Before: u64::MAX wrapped to 0 and replayed the whole log; garbage was ignored.
            assert_error(r, StatusCode::BAD_REQUEST, "invalid_field", Some("Last-Event-ID")).await;
        }
    }
    // A bad `from` is refused even when Last-Event-ID (which wins) is valid.
    let r = c
        .get(format!("{}/v1/events?from=9223372036854775808", s.url))
        .header("accept", "application/json")
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_field", Some("from")).await;
    // The largest documented value is fine: nothing after it.
    let r = c
        .get(format!("{}/v1/events", s.url))
        .header("accept", "application/json")
        .header("last-event-id", "9223372036854775806")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["events"], json!([]), "{page}");
}

#[tokio::test]
async fn bodies_must_be_json_bounded_and_name_at_most_1000_targets() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 1, "");
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let url = format!("{}/v1/snapshots", s.url);
    let body = r#"{"request_id": "ct", "targets": ["fast"]}"#;
    // A JSON body sent as text/plain, or with no content type, is not read.
    let r = c
        .post(&url)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    )
    .await;
    let r = c.post(&url).body(body).send().await.unwrap();
    assert_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    )
    .await;
    // With a charset parameter it is JSON.
    let r = c
        .post(&url)
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let job = r.json::<Value>().await.unwrap()["job_id"].clone();

    // The same request id for other targets is a 409 naming the job (issue
    // 12 item 15; it used to be a 202 for a job that does not cover `slow`).
    for other in [json!(["fast", "slow"]), json!(["slow"]), json!(["nope"])] {
        let r = c
            .post(&url)
            .json(&json!({"request_id": "ct", "targets": other}))
            .send()
            .await
            .unwrap();
        let e = assert_error(r, StatusCode::CONFLICT, "request_id_in_use", None).await;
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains(job.as_str().unwrap()), "{e}");
    }
    let r = c
        .post(&url)
        .json(&json!({"request_id": "ct", "targets": ["fast"], "kind": "full"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let again: Value = r.json().await.unwrap();
    assert_eq!((&again["job_id"], &again["existing"]), (&job, &json!(true)));

    // Over 1 MiB: the documented JSON 413, not the framework's text.
    let big = json!({"request_id": "big", "targets": ["fast"], "pad": "x".repeat(1 << 20)});
    let r = c.post(&url).json(&big).send().await.unwrap();
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", None).await;

    // More than 1000 targets: a 400 naming `targets`, decided without the engine.
    let many: Vec<String> = (0..1001).map(|i| format!("t{i}")).collect();
    let t = Instant::now();
    let r = c
        .post(&url)
        .json(&json!({"request_id": "many", "targets": many}))
        .send()
        .await
        .unwrap();
    let e = assert_error(r, StatusCode::BAD_REQUEST, "invalid_field", Some("targets")).await;
    assert!(e["error"]["message"].as_str().unwrap().contains("1000"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());

    // `schema_version: 1.0` is an integer to JSON Schema, and to the server.
    let r = c
        .post(&url)
        .json(&json!({"schema_version": 1.0, "request_id": "v1.0", "targets": ["fast"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", r.text().await.unwrap());
    let r = c
        .post(&url)
        .json(&json!({"schema_version": 1.5, "request_id": "v1.5", "targets": ["fast"]}))
        .send()
        .await
        .unwrap();
    let e = assert_error(
        r,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("schema_version"),
    )
    .await;
    assert!(e["error"]["message"].as_str().unwrap().contains("1.5"), "{e}");
}

#[tokio::test]
async fn cancel_refuses_bad_ids_bodies_and_overlong_reasons() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 5, "");
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let r = c
        .post(format!("{}/v1/snapshots", s.url))
        .json(&json!({"request_id": "slow-1", "targets": ["slow"]}))
        .send()
        .await
        .unwrap();
    let job = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}/v1/jobs/{job}/cancel", s.url);

    let r = c
        .post(format!("{}/v1/jobs/nope/cancel", s.url))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_field", Some("id")).await;
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body("[")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_json", None).await;
    let r = c.post(&url).json(&json!(["a list"])).send().await.unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_field", Some("")).await;
    let r = c.post(&url).json(&json!({"reason": 5})).send().await.unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_field", Some("reason")).await;
    let r = c
        .post(&url)
        .header("content-type", "text/plain")
        .body(r#"{"reason": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    )
    .await;
    // Client text is bounded: 1025 bytes is refused, 2 MiB does not even get read.
    let r = c
        .post(&url)
        .json(&json!({"reason": "r".repeat(1025)}))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_field", Some("reason")).await;
    let r = c
        .post(&url)
        .json(&json!({"reason": "r".repeat(2 << 20)}))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", None).await;

    let reason = "é".repeat(512); // 1024 bytes: the longest kept
    let r = c
        .post(&url)
        .json(&json!({ "reason": reason }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let j: Value = get_json(&c, format!("{}/v1/jobs/{job}", s.url))
            .await
            .json()
            .await
            .unwrap();
        if j["state"] == "cancelled" {
            assert_eq!(j["cancel_reason"], reason.as_str(), "{j}");
            break;
        }
        assert!(Instant::now() < deadline, "never cancelled: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn token_mode_challenges_with_bearer_and_reads_the_scheme_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let extra = format!("[api]\ntoken_file = \"{}\"\n", dir.path().join("token").display());
    write_config(dir.path(), 1, &extra);
    let s = Server::start(dir.path(), &[]);
    let c = client();
    for auth in [None, Some("Bearer wrong"), Some("Basic czNjcmV0"), Some("s3cret")] {
        let mut r = c.get(format!("{}/v1/jobs", s.url));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        let r = r.send().await.unwrap();
        assert_eq!(
            r.headers().get("www-authenticate").map(|v| v.to_str().unwrap()),
            Some("Bearer realm=\"recman\""),
            "{auth:?}"
        );
        assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
    }
    for auth in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret"] {
        let r = c
            .get(format!("{}/v1/jobs", s.url))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{auth}");
    }
    // The document is public (documented `security: []`), like the health checks.
    for path in ["/v1/openapi.json", "/healthz", "/readyz"] {
        let r = c.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_request_target_over_8_kib_is_a_json_414() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 1, "");
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let r = get_json(&c, format!("{}/v1/jobs?target={}", s.url, "a".repeat(9000))).await;
    assert_error(r, StatusCode::URI_TOO_LONG, "uri_too_long", None).await;
    let r = get_json(&c, format!("{}/v1/jobs?target={}", s.url, "a".repeat(8000))).await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// Reads from `c` until the server closes it (or `within` passes: a panic).
fn wait_closed(c: &mut TcpStream, within: Duration) -> (Duration, Vec<u8>) {
    let t = Instant::now();
    c.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return (t.elapsed(), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (t.elapsed(), got),
            Err(e) => panic!("the server kept the connection open for {:?}: {e}", t.elapsed()),
        }
    }
}

fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).unwrap()
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn idle_slow_and_surplus_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        1,
        "[api]\nheader_timeout = \"1s\"\nmax_connections = 4\n",
    );
    let s = Server::start(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1500)); // the readiness probe's connection is gone

    // Silent, slow (half a request line) and idle keep-alive connections are
    // all closed after the header timeout.
    let mut silent = connect(s.port);
    let mut slow = connect(s.port);
    slow.write_all(b"GET /healthz HT").unwrap();
    let mut idle = connect(s.port);
    idle.write_all(HEALTHZ).unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let mut fourth = connect(s.port);

    // The cap (4) is reached: one more is answered 503 in JSON and closed.
    std::thread::sleep(Duration::from_millis(100));
    let mut over = connect(s.port);
    over.write_all(HEALTHZ).unwrap();
    let (_, answer) = wait_closed(&mut over, Duration::from_secs(5));
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "too_many_connections");
    assert_matches(&doc(), "Error", &v);

    for (name, c) in [
        ("silent", &mut silent),
        ("slow", &mut slow),
        ("idle", &mut idle),
        ("fourth", &mut fourth),
    ] {
        let (after, _) = wait_closed(c, Duration::from_secs(5));
        assert!(
            after < Duration::from_secs(3),
            "{name} closed only after {after:?}"
        );
    }
    // Their slots are free again.
    let (status, _) = http(s.port, "GET", "/healthz", "");
    assert_eq!(status, 200);
}

/// The HTTP methods an OpenAPI path item may hold.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace", "query",
];

#[test]
fn every_route_is_documented_with_every_error_it_can_answer() {
    let doc = doc();
    let served: BTreeSet<(String, String)> = recman_engine::api::operations()
        .into_iter()
        .map(|(m, p)| (m.as_str().to_lowercase(), p.to_string()))
        .collect();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(*m).is_some() {
                documented.insert((m.to_string(), path.clone()));
            }
        }
    }
    assert_eq!(
        served, documented,
        "the router and schemas/openapi.json disagree: a new route needs its operation (and responses) in the document"
    );

    // The error codes the server can answer are exactly the documented enum.
    let codes: BTreeSet<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
        ["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let ours: BTreeSet<&str> = recman_engine::api::error::CODES.iter().copied().collect();
    assert_eq!(codes, ours);

    let public: BTreeSet<&str> = recman_engine::api::PUBLIC.iter().copied().collect();
    let resolve = |r: &Value| -> Value {
        match r["$ref"].as_str() {
            Some(p) => doc
                .pointer(p.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling {p}"))
                .clone(),
            None => r.clone(),
        }
    };
    for (method, path) in &documented {
        let op = &doc["paths"][path][method];
        let responses = op["responses"].as_object().unwrap();
        let is_public = op.get("security") == Some(&json!([]));
        assert_eq!(
            is_public,
            public.contains(path.as_str()),
            "{method} {path}: security"
        );
        let mut need = vec!["414", "503"];
        if !is_public {
            need.extend(["401", "403"]);
        }
        // The role in the document is the router's (`x-recman-role`).
        let role = recman_engine::api::access()
            .into_iter()
            .find(|(m, p, _)| m.as_str().eq_ignore_ascii_case(method) && p == path)
            .map(|(_, _, a)| a.as_str())
            .unwrap();
        assert_eq!(op["x-recman-role"], role, "{method} {path}: x-recman-role");
        if op.get("requestBody").is_some() {
            need.extend(["400", "413", "415"]);
        }
        let has_params = op["parameters"].as_array().is_some_and(|p| !p.is_empty());
        if has_params {
            need.push("400");
        }
        for code in need {
            assert!(
                responses.contains_key(code),
                "{method} {path} does not document {code}"
            );
        }
        for (code, r) in responses {
            if code.starts_with('4') || code.starts_with('5') {
                let r = resolve(r);
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                    "{method} {path} {code} must be the JSON Error"
                );
            }
        }
    }
}

#[tokio::test]
async fn event_streams_match_the_documented_item_schema() {
    let doc = doc();
    // Both streams are described item by item: an SSE event whose `data` is
    // an EventMessage in JSON (not `{"type": "string"}` for the whole stream).
    for path in ["/v1/events", "/v1/jobs/{id}/events"] {
        let content = &doc["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"];
        assert_eq!(
            content["itemSchema"]["$ref"], "#/components/schemas/ServerSentEvent",
            "{path}"
        );
        assert!(content.get("schema").is_none(), "{path}");
    }
    let sse = &doc["components"]["schemas"]["ServerSentEvent"]["properties"]["data"];
    assert_eq!(sse["contentMediaType"], "application/json");
    assert_eq!(sse["contentSchema"]["$ref"], "#/components/schemas/EventMessage");

    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 1, "");
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let r = c
        .post(format!("{}/v1/snapshots", s.url))
        .json(&json!({"request_id": "sse", "targets": ["fast"]}))
        .send()
        .await
        .unwrap();
    let job = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c
        .get(format!("{}/v1/jobs/{job}/events", s.url))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = tokio::time::timeout(Duration::from_secs(20), r.text())
        .await
        .expect("the job's stream ends after its last event")
        .unwrap();
    let mut n = 0;
    for block in text
        .split("\n\n")
        .filter(|b| b.lines().any(|l| !l.starts_with(':')))
    {
        let mut item = serde_json::Map::new();
        for line in block.lines() {
            let (k, v) = line.split_once(':').unwrap_or((line, ""));
            item.insert(k.to_string(), json!(v.strip_prefix(' ').unwrap_or(v)));
        }
        let item = Value::Object(item);
        assert_matches(&doc, "ServerSentEvent", &item);
        let data: Value = serde_json::from_str(item["data"].as_str().unwrap()).unwrap();
        assert_matches(&doc, "EventMessage", &data);
        assert_eq!(item["id"], data["seq"].to_string());
        assert_eq!(item["event"], data["event"]["body"]["type"]);
        n += 1;
    }
    assert!(n >= 5, "the job's events: {text}");
}
