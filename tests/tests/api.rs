//! The HTTP API against a real `recman up` on a free loopback port, with
//! reqwest: idempotent submit, bad bodies, cancel before and after the freeze,
//! SSE resume with Last-Event-ID, the bearer token, metrics, and every
//! response checked against the OpenAPI document served at /v1/openapi.json.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::api_support::client;
use recman_tests::cli::{freeze_log, write_config, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn start(dir: &Path, slow_secs: u32) -> Server {
    write_config(dir, slow_secs, "");
    Server::start(dir, &[])
}

async fn submit(c: &reqwest::Client, s: &Server, body: Value) -> (StatusCode, Value) {
    let r = c
        .post(format!("{}/v1/snapshots", s.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn get(c: &reqwest::Client, s: &Server, path: &str) -> (StatusCode, Value) {
    let r = c
        .get(format!("{}{path}", s.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn wait_state(c: &reqwest::Client, s: &Server, job: &str, want: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, j) = get(c, s, &format!("/v1/jobs/{job}")).await;
        if j["state"] == want {
            return j;
        }
        assert!(Instant::now() < deadline, "job {job} never reached {want}: {j}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn stages(job: &Value) -> Vec<String> {
    job["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["stage"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn submit_is_idempotent_on_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), 1);
    let c = client();
    let body = json!({"request_id": "nightly-1", "targets": ["fast"]});
    let (st1, a) = submit(&c, &s, body.clone()).await;
    let (st2, b) = submit(&c, &s, body).await;
    assert_eq!((st1, st2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(a["job_id"], b["job_id"], "same request, same job");
    assert_eq!(
        (a["existing"].clone(), b["existing"].clone()),
        (json!(false), json!(true))
    );
    let (_, other) = submit(&c, &s, json!({"request_id": "nightly-2", "targets": ["fast"]})).await;
    assert_ne!(other["job_id"], a["job_id"]);
    wait_state(
        &c,
        &s,
        a["job_id"].as_str().unwrap(),
        "completed",
        Duration::from_secs(10),
    )
    .await;
    let (_, jobs) = get(&c, &s, "/v1/jobs?target=fast").await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 2, "{jobs}");
    let (_, page) = get(&c, &s, "/v1/jobs?limit=1").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().expect("a next cursor").to_string();
    let (_, page2) = get(&c, &s, &format!("/v1/jobs?limit=1&after={next}")).await;
    assert_ne!(page2["jobs"][0]["id"], page["jobs"][0]["id"]);
    // The job of a request id, for a sender that sent it again or a
    // subscriber that came late; none for an unknown id; 400 for a bad one.
    let (_, mine) = get(&c, &s, "/v1/jobs?request_id=nightly-1").await;
    let mine = mine["jobs"].as_array().unwrap().clone();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["id"], a["job_id"]);
    assert_eq!(
        (mine[0]["request_id"].as_str(), mine[0]["state"].as_str()),
        (Some("nightly-1"), Some("completed"))
    );
    let (_, none) = get(&c, &s, "/v1/jobs?request_id=nightly-9").await;
    assert_eq!(none["jobs"], json!([]));
    let (_, filtered) = get(&c, &s, "/v1/jobs?request_id=nightly-1&state=failed").await;
    assert_eq!(filtered["jobs"], json!([]), "the other filters still apply");
    let (st, e) = get(&c, &s, "/v1/jobs?request_id=a%20b").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["field"], "request_id", "{e}");
}

#[tokio::test]
async fn bad_bodies_get_400_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), 1);
    let c = client();
    let r = c
        .post(format!("{}/v1/snapshots", s.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_json");
    for (body, field) in [
        (json!({"targets": ["fast"]}), "request_id"),
        (json!({"request_id": 5, "targets": ["fast"]}), "request_id"),
        (json!({"request_id": "a b", "targets": ["fast"]}), "request_id"),
        (json!({"request_id": "r", "targets": "fast"}), "targets"),
        (json!({"request_id": "r", "targets": []}), "targets"),
        (json!({"request_id": "r", "targets": ["fast", "fast"]}), "targets"),
        (
            json!({"request_id": "r", "targets": ["fast"], "kind": "weird"}),
            "kind",
        ),
        (
            json!({"request_id": "r", "targets": ["fast"], "schema_version": 9}),
            "schema_version",
        ),
    ] {
        let (st, e) = submit(&c, &s, body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert_eq!(e["error"]["code"], "invalid_field", "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }
    let (st, e) = submit(&c, &s, json!({"request_id": "r", "targets": ["nope"]})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e["error"]["code"], "unknown_target");
    let (st, e) = get(&c, &s, "/v1/jobs?state=sleeping").await;
    assert_eq!(
        (st, e["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("state"))
    );
    let (st, e) = get(&c, &s, "/v1/jobs/not-a-uuid").await;
    assert_eq!(
        (st, e["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("id"))
    );
    let (st, e) = get(&c, &s, "/v1/jobs/00000000-0000-7000-8000-000000000000").await;
    assert_eq!(
        (st, e["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("job_not_found"))
    );
    let (_, jobs) = get(&c, &s, "/v1/jobs").await;
    assert!(
        jobs["jobs"].as_array().unwrap().is_empty(),
        "nothing was accepted: {jobs}"
    );
}

#[tokio::test]
async fn cancel_before_and_after_the_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), 4);
    let c = client();
    let (_, a) = submit(&c, &s, json!({"request_id": "a", "targets": ["slow"]})).await;
    let a = a["job_id"].as_str().unwrap().to_string();
    wait_state(&c, &s, &a, "snapshotting", Duration::from_secs(10)).await;
    let (_, b) = submit(&c, &s, json!({"request_id": "b", "targets": ["slow"]})).await;
    let b = b["job_id"].as_str().unwrap().to_string();
    let (_, bj) = get(&c, &s, &format!("/v1/jobs/{b}")).await;
    assert_eq!(bj["state"], "queued", "b waits behind a");
    let (_, t) = get(&c, &s, "/v1/targets").await;
    let slow = t["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "slow")
        .unwrap()
        .clone();
    assert_eq!(
        (slow["state"].clone(), slow["queue_depth"].clone()),
        (json!("snapshotting"), json!(1))
    );

    // Before its freeze: b just ends, nothing of it was frozen.
    let r = c
        .post(format!("{}/v1/jobs/{b}/cancel", s.url))
        .json(&json!({"reason": "not needed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let bj = wait_state(&c, &s, &b, "cancelled", Duration::from_secs(5)).await;
    assert!(!stages(&bj).contains(&"freeze".to_string()), "{bj}");
    assert_eq!(bj["outcome"], "not needed");

    // After its freeze: a is thawed, then cancelled.
    let r = c
        .post(format!("{}/v1/jobs/{a}/cancel", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let aj = wait_state(&c, &s, &a, "cancelled", Duration::from_secs(20)).await;
    assert!(stages(&aj).contains(&"thaw".to_string()), "{aj}");
    assert_eq!(
        freeze_log(dir.path(), "slow"),
        ["frozen", "thawed"],
        "only a froze, and it was thawed"
    );
    let r = c
        .post(format!("{}/v1/jobs/{a}/cancel", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "job_finished");
    let r = c
        .post(format!(
            "{}/v1/jobs/00000000-0000-7000-8000-000000000000/cancel",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Reads SSE events (id, event) until the stream ends or `max` arrive.
async fn read_sse(resp: reqwest::Response, max: usize) -> Vec<(u64, String)> {
    let mut resp = resp;
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < max {
        let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("SSE stalled")
            .unwrap()
        else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let id = block
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .map(|v| v.trim().parse::<u64>().unwrap());
            let ev = block
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map(|v| v.trim().to_string());
            if let (Some(id), Some(ev)) = (id, ev) {
                let data = block.lines().find_map(|l| l.strip_prefix("data:")).unwrap();
                let msg: Value = serde_json::from_str(data.trim()).unwrap();
                assert_eq!(msg["seq"], id, "data is the EventMessage of that seq");
                out.push((id, ev));
            }
        }
    }
    out
}

#[tokio::test]
async fn sse_resumes_from_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), 1);
    let c = client();
    let (_, j) = submit(&c, &s, json!({"request_id": "sse", "targets": ["fast"]})).await;
    let job = j["job_id"].as_str().unwrap().to_string();
    let url = format!("{}/v1/jobs/{job}/events", s.url);
    let all = read_sse(c.get(&url).send().await.unwrap(), 1000).await;
    assert_eq!(all.first().unwrap().1, "requested");
    assert_eq!(
        all.last().unwrap().1,
        "completed",
        "live until the job ends: {all:?}"
    );
    let k = all[2].0;
    let rest = read_sse(
        c.get(&url)
            .header("last-event-id", k.to_string())
            .send()
            .await
            .unwrap(),
        1000,
    )
    .await;
    assert_eq!(rest, all[3..].to_vec(), "resumed right after {k}");
    let none = read_sse(
        c.get(&url)
            .header("last-event-id", all.last().unwrap().0.to_string())
            .send()
            .await
            .unwrap(),
        10,
    )
    .await;
    assert!(
        none.is_empty(),
        "nothing after the last event, and the stream ends"
    );

    // The global feed: resume from a sequence number, then see a new job live.
    let feed = c
        .get(format!("{}/v1/events", s.url))
        .header("last-event-id", k.to_string())
        .send()
        .await
        .unwrap();
    let first = read_sse(feed, 2).await;
    assert_eq!(first.iter().map(|e| e.0).collect::<Vec<_>>(), [k + 1, k + 2]);
    let last = all.last().unwrap().0;
    let live = c.get(format!("{}/v1/events", s.url)).send().await.unwrap();
    let (_, j2) = submit(&c, &s, json!({"request_id": "sse-2", "targets": ["fast"]})).await;
    assert!(j2["job_id"].is_string());
    let got = read_sse(live, 1).await;
    assert_eq!(
        got[0],
        (last + 1, "requested".to_string()),
        "only new events without from"
    );
}

#[tokio::test]
async fn a_token_protects_everything_but_health() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
    write_config(
        dir.path(),
        1,
        &format!("[api]\ntoken_file = \"{}\"\n", dir.path().join("token").display()),
    );
    let s = Server::start(dir.path(), &[]);
    let disc: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("server.json")).unwrap()).unwrap();
    assert_eq!(disc["token_required"], true);
    let c = client();
    let r = c.get(format!("{}/v1/jobs", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "unauthorized");
    let r = c
        .get(format!("{}/metrics", s.url))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(format!("{}/v1/jobs", s.url))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(format!("{}/healthz", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The CLI finds the server and the token through the config.
    let out = recman_testkit::recman(dir.path(), &["jobs", "--json"]);
    assert!(out.status.success(), "{}", recman_testkit::text(&out));
}

#[tokio::test]
async fn metrics_show_the_freeze_window_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), 1);
    let c = client();
    let (_, j) = submit(&c, &s, json!({"request_id": "m", "targets": ["fast"]})).await;
    wait_state(
        &c,
        &s,
        j["job_id"].as_str().unwrap(),
        "completed",
        Duration::from_secs(10),
    )
    .await;
    let text = c
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "recman_jobs{state=\"completed\"} 1\n",
        "recman_freeze_window_seconds_count{target=\"fast\"} 1\n",
        "recman_freeze_window_seconds_bucket{target=\"fast\",le=\"+Inf\"} 1\n",
        "recman_stage_duration_seconds_count{target=\"fast\",stage=\"freeze\"} 1\n",
        "recman_queue_depth{target=\"slow\"} 0\n",
        "# TYPE recman_log_append_seconds histogram\n",
        "recman_bus_dead_letters_total 0\n",
        "recman_bus_redeliveries_total 0\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let appends: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("recman_log_append_seconds_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(appends >= 3, "the job's events were appended: {appends}");
}

fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
    let schema =
        json!({"$ref": format!("#/components/schemas/{name}"), "components": doc["components"].clone()});
    jsonschema::validator_for(&schema).unwrap()
}

fn check(doc: &Value, name: &str, v: &Value) {
    let val = validator(doc, name);
    let errors: Vec<String> = val
        .iter_errors(v)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{name} does not match the OpenAPI document: {errors:?}\n{v}"
    );
}

#[tokio::test]
async fn responses_match_the_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), 1);
    let c = client();
    let (_, served) = get(&c, &s, "/v1/openapi.json").await;
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(served, file, "the served document is the checked-in one");
    let doc = file;
    assert!(
        !validator(&doc, "JobList").is_valid(&json!({"jobs": [{"id": 1}], "next": null})),
        "the validator resolves the document's references"
    );

    let (st, acc) = submit(
        &c,
        &s,
        json!({"request_id": "doc", "targets": ["fast"], "kind": "copy"}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    check(&doc, "Accepted", &acc);
    let job = acc["job_id"].as_str().unwrap().to_string();
    wait_state(&c, &s, &job, "completed", Duration::from_secs(10)).await;
    for (path, schema) in [
        ("/v1/jobs".to_string(), "JobList"),
        (format!("/v1/jobs/{job}"), "JobDetail"),
        ("/v1/targets".to_string(), "TargetList"),
        ("/v1/snapshots".to_string(), "SnapshotList"),
        ("/v1/snapshots?target=fast".to_string(), "SnapshotList"),
        ("/v1/events?from=1".to_string(), "EventPage"),
        ("/v1/state".to_string(), "LiveState"),
        ("/healthz".to_string(), "Status"),
        ("/readyz".to_string(), "Status"),
    ] {
        let (st, v) = get(&c, &s, &path).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
        check(&doc, schema, &v);
    }
    let (_, snaps) = get(&c, &s, "/v1/snapshots").await;
    assert_eq!(snaps["snapshots"][0]["kind"], "copy");
    assert_eq!(snaps["snapshots"][0]["retention"]["keep_last"], 2);
    for (path, status) in [
        (
            "/v1/jobs/00000000-0000-7000-8000-000000000000",
            StatusCode::NOT_FOUND,
        ),
        ("/v1/nothing-here", StatusCode::NOT_FOUND),
        ("/v1/jobs?limit=0", StatusCode::BAD_REQUEST),
    ] {
        let (st, v) = get(&c, &s, path).await;
        assert_eq!(st, status, "{path}");
        check(&doc, "Error", &v);
    }
    let (_, e) = submit(&c, &s, json!({})).await;
    check(&doc, "Error", &e);

    // Every documented GET answers with a documented status.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let Some(op) = ops.get("get") else { continue };
        let p = path.replace("{id}", &job);
        let r = c
            .get(format!("{}{p}", s.url))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16().to_string();
        assert!(
            op["responses"].get(&code).is_some(),
            "GET {p} answered {code}, not documented"
        );
    }
    let metrics = c.get(format!("{}/metrics", s.url)).send().await.unwrap();
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
}

#[tokio::test]
async fn up_without_config_serves_the_demo_target_with_its_freeze_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let (st, j) = submit(&c, &s, json!({"request_id": "demo-1", "targets": ["demo"]})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{j}");
    let job = wait_state(
        &c,
        &s,
        j["job_id"].as_str().unwrap(),
        "completed",
        Duration::from_secs(10),
    )
    .await;
    let loc = job["snapshot_info"]["location"].as_str().unwrap();
    assert!(Path::new(loc).join("orders.csv").exists(), "a real copy at {loc}");
    let text = c
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("recman_freeze_window_seconds_count{target=\"demo\"} 1\n"),
        "{text}"
    );
}

#[tokio::test]
async fn pruned_snapshots_drop_out_of_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), 1);
    let c = client();
    let mut jobs = Vec::new();
    for i in 0..3 {
        let (_, j) = submit(
            &c,
            &s,
            json!({"request_id": format!("keep-{i}"), "targets": ["fast"]}),
        )
        .await;
        let id = j["job_id"].as_str().unwrap().to_string();
        wait_state(&c, &s, &id, "completed", Duration::from_secs(10)).await;
        jobs.push(id);
    }
    // keep_last = 2: the first snapshot is pruned once the third completes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, snaps) = get(&c, &s, "/v1/snapshots?target=fast").await;
        let listed: Vec<String> = snaps["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["job"].as_str().unwrap().to_string())
            .collect();
        if listed == [jobs[2].clone(), jobs[1].clone()] {
            assert_eq!(snaps["snapshots"][1]["retention"]["expires_after"], 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "catalog never dropped the first snapshot: {snaps}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, page) = get(&c, &s, "/v1/events?from=1").await;
    let deleted =
        page["events"].as_array().unwrap().iter().any(|e| {
            e["event"]["body"]["type"] == "snapshot_deleted" && e["event"]["job"] == jobs[0].as_str()
        });
    assert!(deleted, "the deletion stays in the log");
}
