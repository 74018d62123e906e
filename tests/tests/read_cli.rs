//! The read commands with the real binary: `replay --until` between two jobs,
//! `jobs`/`job`/`targets`/`snapshots` on a data dir, then the same through a
//! running `recman up` (which owns the log), `cancel`, and `replay` compared
//! with the live engine state.

use std::path::Path;

use recman_testkit::{free_port, recman, text};
use recman_tests::cli::{http, write_config, Server};
use serde_json::Value;

fn json_of(data: &Path, args: &[&str]) -> Value {
    let out = recman(data, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)))
}

/// Sequence number and time of each `completed` event, in order.
fn completions(data: &Path) -> Vec<(u64, u64)> {
    let out = recman(data, &["events", "--json"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"]["body"]["type"] == "completed")
        .map(|e| (e["seq"].as_u64().unwrap(), e["event"]["at_ms"].as_u64().unwrap()))
        .collect()
}

#[test]
fn replay_until_shows_the_state_between_two_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    write_config(data, 0, "");
    for rid in ["first", "second"] {
        let out = recman(data, &["snapshot", "fast", "--request-id", rid]);
        assert!(out.status.success(), "{}", text(&out));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let done = completions(data);
    assert_eq!(done.len(), 2);

    let between = json_of(data, &["replay", "--until", &done[0].0.to_string(), "--json"]);
    assert_eq!(between["seq"], done[0].0);
    let jobs = between["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "only the first job existed: {between}");
    assert_eq!(jobs[0]["request_id"], "first");
    assert_eq!(jobs[0]["state"], "completed");

    // The same point given as a time (RFC 3339, UTC).
    let rfc = recman_engine::view::time::rfc3339(done[0].1);
    assert!(done[1].1 > done[0].1, "the jobs are apart in time");
    let by_time = json_of(data, &["replay", "--until", &rfc, "--json"]);
    assert_eq!(by_time["jobs"].as_array().unwrap().len(), 1, "{by_time}");

    let all = json_of(data, &["replay", "--json"]);
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2);
    let human = text(&recman(data, &["replay", "--until", &done[0].0.to_string()]));
    assert!(
        human.contains(&format!("state after event {}", done[0].0)),
        "{human}"
    );

    // A discovery file left behind (live pid, nobody listening) does not stop direct reads.
    let stale = serde_json::json!({"url": format!("http://127.0.0.1:{}", free_port()),
        "pid": std::process::id(), "token_required": false, "started_at_ms": 0});
    std::fs::write(data.join("server.json"), stale.to_string()).unwrap();

    // Direct reads on the data dir.
    let jobs = json_of(data, &["jobs", "--json"]);
    assert_eq!(jobs["jobs"][0]["request_id"], "second", "newest first");
    let id = jobs["jobs"][1]["id"].as_str().unwrap().to_string();
    let job = json_of(data, &["job", &id, "--json"]);
    let stages: Vec<&str> = job["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["queue", "freeze", "snapshot", "thaw", "flush_logs"]);
    assert!(job["freeze_window"]["window_us"].as_u64().is_some());
    let human = text(&recman(data, &["job", &id]));
    assert!(
        human.contains("freeze window:") && human.contains("thaw"),
        "{human}"
    );
    let targets = json_of(data, &["targets", "--json"]);
    let fast = targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "fast")
        .unwrap()
        .clone();
    assert_eq!(fast["state"], "idle");
    assert_eq!(fast["last_snapshot"]["job"], jobs["jobs"][0]["id"]);
    let snaps = json_of(data, &["snapshots", "fast", "--json"]);
    let list = snaps["snapshots"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["retention"]["expires_after"], 2, "keep_last = 2, newest");
    assert_eq!(list[1]["retention"]["expires_after"], 1);
    let missing = recman(data, &["job", "00000000-0000-7000-8000-000000000000"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn read_commands_cancel_and_replay_go_through_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    write_config(data, 3, "");
    let out = recman(data, &["snapshot", "fast", "--request-id", "before-up"]);
    assert!(out.status.success(), "{}", text(&out));
    let server = Server::start(data, &[]);

    // The server owns the log: these only work through it.
    let jobs = json_of(data, &["jobs", "--json"]);
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);

    // Start a slow job, then cancel it through the CLI while it is frozen.
    let (status, body) = http(
        server.port,
        "POST",
        "/v1/snapshots",
        r#"{"request_id":"slow1","targets":["slow"]}"#,
    );
    assert_eq!(status, 202, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let id = v["job_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let j = json_of(data, &["job", &id, "--json"]);
        if j["state"] == "snapshotting" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never frozen: {j}");
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    let out = recman(data, &["cancel", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let j = json_of(data, &["job", &id, "--json"]);
        if j["state"] == "cancelled" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never cancelled: {j}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(recman_tests::cli::freeze_log(data, "slow"), ["frozen", "thawed"]);
    let again = recman(data, &["cancel", &id]);
    assert_eq!(again.status.code(), Some(1), "a finished job: {}", text(&again));

    // `recman snapshot` submits through the server and follows the job over SSE.
    let out = recman(data, &["snapshot", "fast", "--request-id", "via-api"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains(&format!("via {}", server.url)), "{shown}");
    assert!(
        shown.contains("thaw done") && shown.contains("completed: snapshot"),
        "{shown}"
    );
    let jobs = json_of(data, &["jobs", "--json", "--target", "fast"]);
    assert_eq!(jobs["jobs"][0]["request_id"], "via-api");
    assert_eq!(jobs["jobs"][0]["origin"], "http", "went through the API");
    let unknown = recman(data, &["snapshot", "nope"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(text(&unknown).contains("unknown_target"), "{}", text(&unknown));

    let out = recman(data, &["replay"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("identical to the live engine state"),
        "{}",
        text(&out)
    );
    let r = json_of(data, &["replay", "--json", "--until", "3"]);
    assert_eq!(r["seq"], 3);
    assert_eq!(r["live"]["matches"], true);
    drop(server);
}
