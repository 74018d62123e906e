//! `recman up` with the real binary: it serves, announces itself in
//! DATA_DIR/server.json, and on SIGTERM while a job is frozen it lets the
//! thaw happen, removes the discovery file and exits 0.

use std::time::{Duration, Instant};

use recman_testkit::{recman, text};
use recman_tests::cli::{freeze_log, http, write_config, Server};

fn job_state(port: u16, id: &str) -> String {
    let (_, body) = http(port, "GET", &format!("/v1/jobs/{id}"), "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["state"].as_str().unwrap_or("").to_string()
}

#[test]
fn sigterm_while_frozen_thaws_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 3, "");
    let data = dir.path();
    let mut server = Server::start(data, &[]);
    let disc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("server.json")).unwrap()).unwrap();
    assert_eq!(disc["url"], server.url.as_str());
    assert_eq!(disc["pid"], server.pid());

    let (status, body) = http(
        server.port,
        "POST",
        "/v1/snapshots",
        r#"{"request_id":"t1","targets":["slow"]}"#,
    );
    assert_eq!(status, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let job = v["job_id"].as_str().unwrap().to_string();

    let deadline = Instant::now() + Duration::from_secs(10);
    while job_state(server.port, &job) != "snapshotting" {
        assert!(Instant::now() < deadline, "job never reached the snapshot stage");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        freeze_log(data, "slow"),
        ["frozen"],
        "frozen while the snapshot runs"
    );

    let status = server.terminate(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "recman up must exit 0 after a clean shutdown"
    );
    assert_eq!(
        freeze_log(data, "slow"),
        ["frozen", "thawed"],
        "the target was thawed before exit"
    );
    assert!(
        !data.join("server.json").exists(),
        "the discovery file is removed on exit"
    );

    // The thaw is in the log (the engine recorded it, not only the worker's safety net),
    // and the log is closed: another process can open it.
    let out = recman(data, &["events", "--job", &job, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let thawed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|e| e["event"]["body"]["type"] == "step_succeeded" && e["event"]["body"]["stage"] == "thaw");
    assert!(thawed, "no recorded thaw: {}", text(&out));
    assert_eq!(recman(data, &["audit"]).status.code(), Some(0));

    // Started again, it rebuilds everything from the log and finishes the job.
    let again = Server::start(data, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while job_state(again.port, &job) != "completed" {
        assert!(
            Instant::now() < deadline,
            "the job did not finish after the restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        freeze_log(data, "slow"),
        ["frozen", "thawed"],
        "no second freeze after the restart"
    );
}

#[test]
fn a_non_loopback_listen_without_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 1, "");
    // 192.0.2.1 (TEST-NET-1): refused before any bind is attempted.
    let out = recman(dir.path(), &["up", "--listen", "192.0.2.1:7080"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not a loopback address"), "{}", text(&out));
    assert!(!dir.path().join("server.json").exists());
    assert!(
        !dir.path().join("events.redb").exists(),
        "refused before opening the log"
    );
}
