//! Bounded state through the real engine and HTTP: a finished job that left
//! the engine's memory (`[engine] keep_finished`) and the read side's window
//! of recent jobs (`recent_finished`) is still served by id with its full
//! timeline, read from the log; the jobs list pages over what is in memory;
//! its request id still answers with it inside the request-id window; the
//! job gauge does not go down.

use std::time::Duration;

use crate::api_support::{client, get, run_job};
use recman_tests::cli::{write_config, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn a_job_out_of_memory_is_served_by_id_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        1,
        "[engine]\nkeep_finished = \"1s\"\nrecent_finished = 1\n",
    );
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let first = run_job(&c, &s, "bounded-a").await;
    let id = first["id"].as_str().unwrap().to_string();
    assert!(first["timeline"].as_array().unwrap().len() >= 4, "{first}");
    // Later jobs of the same target: the first job's point is replaced
    // (retention deletes it), it leaves the engine's state a stay later,
    // then the read side's window of one recent job.
    let mut last = Value::Null;
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        last = run_job(&c, &s, &format!("bounded-{i}")).await;
    }
    let (_, list) = get(&c, &s, "/v1/jobs?limit=100").await;
    let listed: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert!(
        !listed.contains(&id.as_str()),
        "the first job left memory: {list}"
    );
    assert!(listed.contains(&last["id"].as_str().unwrap()), "{list}");
    assert!(listed.len() < 4, "the list shows what is in memory: {list}");

    // By id: from the log, the same job with its full timeline and steps.
    let (st, again) = get(&c, &s, &format!("/v1/jobs/{id}")).await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(
        again, first,
        "the job read from the log is the job as it was in memory"
    );
    let stages: Vec<&str> = again["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["stage"].as_str().unwrap())
        .collect();
    for want in ["freeze", "snapshot", "thaw"] {
        assert!(stages.contains(&want), "{stages:?}");
    }
    assert!(
        again["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["stage"] != "queue")
            .all(|t| !t["steps"].as_array().unwrap().is_empty()),
        "{again}"
    );
    let (st, _) = get(&c, &s, "/v1/jobs/01977420-e907-7000-81e4-bea0a9666366").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "an unknown job is still a 404");

    // Listed by its request id (inside the window): from the log too, and
    // only when the filters say so.
    let (st, by_request) = get(&c, &s, "/v1/jobs?request_id=bounded-a").await;
    assert_eq!(st, StatusCode::OK, "{by_request}");
    let found = by_request["jobs"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{by_request}");
    assert_eq!(found[0]["id"], first["id"]);
    assert_eq!(found[0]["state"], "completed");
    assert_eq!(found[0]["request_id"], "bounded-a");
    let (_, none) = get(&c, &s, "/v1/jobs?request_id=bounded-a&state=failed").await;
    assert_eq!(none["jobs"], json!([]), "{none}");
    let (_, none) = get(&c, &s, "/v1/jobs?request_id=never-sent").await;
    assert_eq!(none["jobs"], json!([]), "{none}");

    // Its request id, inside the window: the same job, not a new one.
    let r = c
        .post(format!("{}/v1/snapshots", s.url))
        .json(&json!({"request_id": "bounded-a", "targets": ["fast"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["job_id"].as_str(), &body["existing"]),
        (Some(id.as_str()), &json!(true))
    );

    // The gauge counts every completed job, also those out of memory.
    let m = c
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("recman_jobs{state=\"completed\"} 4"), "{m}");

    // `recman job ID` on the data dir after the server stopped: from the log too.
    drop(s);
    let out = std::process::Command::new(recman_testkit::recman_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["job", &id, "--json"])
        .env_remove("RECMAN_DATA_DIR")
        .env_remove("RECMAN_CONFIG")
        .env_remove("RECMAN_SERVER")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let local: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(local["timeline"], first["timeline"]);
}
