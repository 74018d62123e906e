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

/// Like `http`, but `None` when the server no longer accepts connections.
fn try_post(port: u16, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).ok()?;
    let mut buf = String::new();
    c.read_to_string(&mut buf).ok()?;
    let status = buf.get(9..12)?.parse().ok()?;
    Some((
        status,
        buf.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    ))
}

#[test]
fn shutdown_answers_503_and_drain_timeout_bounds_the_wait() {
    let dir = recman_testkit::temp_dir();
    let data = dir.path();
    // The snapshot takes 20 s; the drain may wait 2 s.
    write_config(data, 20, "");
    let mut server = Server::start(data, &["--drain-timeout", "2s"]);
    let (status, body) = http(
        server.port,
        "POST",
        "/v1/snapshots",
        r#"{"request_id":"long","targets":["slow"]}"#,
    );
    assert_eq!(status, 202, "{body}");
    let job = serde_json::from_str::<serde_json::Value>(&body).unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + recman_testkit::DEADLINE;
    while job_state(server.port, &job) != "snapshotting" {
        assert!(Instant::now() < deadline, "job never reached the snapshot stage");
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut child = server.child.take().unwrap();
    let t0 = Instant::now();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // While it drains, a new request is refused with 503 shutting_down.
    let mut refused = None;
    while refused.is_none() && t0.elapsed() < Duration::from_secs(10) {
        match try_post(
            server.port,
            "/v1/snapshots",
            r#"{"request_id":"late","targets":["fast"]}"#,
        ) {
            Some((503, body)) => refused = Some(body),
            Some((202, body)) if t0.elapsed() > Duration::from_secs(1) => {
                panic!("accepted a request a second after SIGTERM: {body}")
            }
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
            None => break,
        }
    }
    let body = refused.expect("a request during the drain is answered 503");
    assert!(body.contains("shutting_down"), "{body}");

    // It stops after the 2 s drain timeout, long before the snapshot's 20 s,
    // says a target may have stayed frozen (exit 1), and the worker thaws it.
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "recman up still running {:?} after SIGTERM with --drain-timeout 2s",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "it waited the drain timeout"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "exit 1: a target may have stayed frozen past the wait"
    );
    assert_eq!(
        freeze_log(data, "slow"),
        ["frozen", "thawed"],
        "thawed as the worker stopped"
    );
}
