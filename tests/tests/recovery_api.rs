//! `POST /v1/recoveries` against a real `recman up` with a `copy` target:
//! 202 with the job (idempotent on `request_id`), the job read back with
//! `GET /v1/jobs/{id}` and followed to its end; 400 for a bad body (naming
//! the field), 404 / 409 / 422 for the engine's refusals; `GET /v1/mounts`
//! and `/v1/clones`; every answer checked against the OpenAPI document; and
//! the CLI's recovery commands through the server (`--server`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::api_support::{assert_matches, client};
use recman_testkit::{recman, text};
use recman_tests::cli::Server;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn config(dir: &Path) {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/file"), "v1").unwrap();
    let text = format!(
        "[[target]]\nid = \"docs\"\n[target.writer]\ntype = \"none\"\n\
         [target.provider]\ntype = \"copy\"\nsource = \"{d}/src\"\ndest = \"{d}/snaps\"\n"
    );
    std::fs::write(dir.join("recman.toml"), text).unwrap();
}

async fn post(c: &reqwest::Client, s: &Server, path: &str, body: &Value) -> (StatusCode, Value) {
    let r = c
        .post(format!("{}{path}", s.url))
        .json(body)
        .send()
        .await
        .unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn get(c: &reqwest::Client, s: &Server, path: &str) -> (StatusCode, Value) {
    let r = c.get(format!("{}{path}", s.url)).send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn ended(c: &reqwest::Client, s: &Server, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, j) = get(c, s, &format!("/v1/jobs/{job}")).await;
        assert_eq!(st, StatusCode::OK, "{j}");
        if j["state"] == "completed" || j["state"] == "failed" {
            assert_matches("JobDetail", &j);
            return j;
        }
        assert!(Instant::now() < deadline, "job {job} did not end: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn error(c: &reqwest::Client, s: &Server, body: Value, status: StatusCode, code: &str) -> Value {
    let (st, v) = post(c, s, "/v1/recoveries", &body).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (status, Some(code)),
        "{body}: {v}"
    );
    assert_matches("Error", &v);
    v
}

#[tokio::test]
async fn recoveries_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    config(d);
    let s = Server::start(d, &[]);
    let c = client();

    let (st, a) = post(
        &c,
        &s,
        "/v1/snapshots",
        &json!({"request_id": "snap-1", "targets": ["docs"]}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{a}");
    let snap = ended(&c, &s, a["job_id"].as_str().unwrap()).await;
    let point = snap["snapshot"].as_str().unwrap().to_string();
    std::fs::write(d.join("src/file"), "v2").unwrap();

    // 202, the same job for the same request.
    let to = d.join("restored");
    let body = json!({"request_id": "r-to", "snapshot": point, "action": {"type": "to", "path": to}});
    let (st, a) = post(&c, &s, "/v1/recoveries", &body).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{a}");
    assert_matches("Accepted", &a);
    assert_eq!(a["existing"], false, "{a}");
    let (st, again) = post(&c, &s, "/v1/recoveries", &body).await;
    assert_eq!(
        (st, &again["job_id"]),
        (StatusCode::ACCEPTED, &a["job_id"]),
        "{again}"
    );
    assert_eq!(again["existing"], true, "{again}");
    let job = ended(&c, &s, a["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["kind"], "restore_to", "{job}");
    assert_eq!(job["recovery"]["location"], to.to_str().unwrap(), "{job}");
    assert_eq!(std::fs::read_to_string(to.join("file")).unwrap(), "v1");
    // A recovery job is a job: listed, with its kind.
    let (_, list) = get(&c, &s, "/v1/jobs").await;
    assert_matches("JobList", &list);
    assert!(
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == a["job_id"] && j["kind"] == "restore_to"),
        "{list}"
    );

    // 400: bad bodies, naming the field.
    let v = error(
        &c,
        &s,
        json!({"request_id": "r-x", "snapshot": point}),
        StatusCode::BAD_REQUEST,
        "invalid_field",
    )
    .await;
    assert_eq!(v["error"]["field"], "action", "{v}");
    let v = error(
        &c,
        &s,
        json!({"request_id": "r-x", "snapshot": point, "action": {"type": "in_place"}}),
        StatusCode::BAD_REQUEST,
        "invalid_field",
    )
    .await;
    assert_eq!(v["error"]["field"], "confirm", "{v}");
    let v = error(
        &c,
        &s,
        json!({"request_id": "r-x", "snapshot": point, "action": {"type": "to", "path": "/a/../etc"}}),
        StatusCode::BAD_REQUEST,
        "invalid_field",
    )
    .await;
    assert_eq!(v["error"]["field"], "action.path", "{v}");
    error(
        &c,
        &s,
        json!({"request_id": "r-x", "snapshot": point, "action": {"type": "explode"}}),
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;
    error(&c, &s, json!([1]), StatusCode::BAD_REQUEST, "invalid_field").await;

    // The engine's refusals.
    error(
        &c,
        &s,
        json!({"request_id": "r-y", "snapshot": "rm-nosuch-a1", "action": {"type": "mount"}}),
        StatusCode::NOT_FOUND,
        "unknown_snapshot",
    )
    .await;
    error(
        &c,
        &s,
        json!({"request_id": "r-y", "target": "nope", "snapshot": point, "action": {"type": "mount"}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_target",
    )
    .await;
    error(&c, &s, json!({"request_id": "r-y", "action": {"type": "unmount", "mount": "0193a5b2-7c1e-7f00-8a3b-5d2e9c4f1a07"}}), StatusCode::NOT_FOUND, "unknown_mount").await;
    error(
        &c,
        &s,
        json!({"request_id": "r-to", "snapshot": point, "action": {"type": "mount"}}),
        StatusCode::CONFLICT,
        "request_id_in_use",
    )
    .await;

    // `on` a name that is no pool of the config and no worker connected
    // now: refused, not sent to the provider pool (another host than asked).
    let e = error(
        &c,
        &s,
        json!({"request_id": "r-on", "snapshot": point, "action": {"type": "mount", "on": "no-such-host"}}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_place",
    )
    .await;
    let m = e["error"]["message"].as_str().unwrap();
    assert!(m.contains("no-such-host") && m.contains("host.local"), "{m}");
    let (_, listed) = get(&c, &s, "/v1/mounts").await;
    assert_eq!(listed["mounts"], json!([]), "nothing was mounted: {listed}");

    // Mount and clone through the API; the lists.
    let (st, m) = post(
        &c,
        &s,
        "/v1/recoveries",
        &json!({"request_id": "m-1", "snapshot": point, "action": {"type": "mount", "writable": true}}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{m}");
    let mj = ended(&c, &s, m["job_id"].as_str().unwrap()).await;
    assert_eq!(mj["state"], "completed", "{mj}");
    let (st, mounts) = get(&c, &s, "/v1/mounts").await;
    assert_eq!(st, StatusCode::OK);
    assert_matches("MountList", &mounts);
    assert_eq!(mounts["mounts"][0]["job"], m["job_id"], "{mounts}");
    assert_eq!(mounts["mounts"][0]["writable"], true, "{mounts}");
    let (st, cl) = post(
        &c,
        &s,
        "/v1/recoveries",
        &json!({"request_id": "c-1", "snapshot": point, "action": {"type": "clone", "name": "docs-test"}}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{cl}");
    ended(&c, &s, cl["job_id"].as_str().unwrap()).await;
    let (_, clones) = get(&c, &s, "/v1/clones").await;
    assert_matches("CloneList", &clones);
    assert_eq!(clones["clones"][0]["name"], "docs-test", "{clones}");
    error(
        &c,
        &s,
        json!({"request_id": "c-2", "snapshot": point, "action": {"type": "clone", "name": "docs-test"}}),
        StatusCode::CONFLICT,
        "clone_exists",
    )
    .await;
    let (_, snaps) = get(&c, &s, "/v1/snapshots").await;
    assert_matches("SnapshotList", &snaps);
    assert!(
        snaps["snapshots"][0]["in_use"][0]
            .as_str()
            .unwrap_or("")
            .contains("mounted"),
        "{snaps}"
    );

    // The CLI goes through the server (its server.json): the same jobs.
    let mount_job = m["job_id"].as_str().unwrap();
    let mounted_at = mounts["mounts"][0]["location"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(Path::new(&mounted_at).join("file")).unwrap(),
        "v1"
    );
    std::fs::write(Path::new(&mounted_at).join("file"), "written in the mount").unwrap();
    let out = recman(d, &["unmount", mount_job]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("(via http://"), "{t}");
    let out = recman(d, &["mounts", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["mounts"],
        json!([]),
        "{}",
        text(&out)
    );
    assert!(
        !Path::new(&mounted_at).exists(),
        "the writable mount's copy is removed with it"
    );
    let out = recman(d, &["restore", &point, "--in-place", "--yes", "--server", &s.url]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("safety-snapshot"), "{t}");
    assert_eq!(std::fs::read_to_string(d.join("src/file")).unwrap(), "v1");
    let out = recman(d, &["clone", "rm", "docs-test", "--server", &s.url]);
    assert!(out.status.success(), "{}", text(&out));
}
