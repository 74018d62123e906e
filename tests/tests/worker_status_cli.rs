//! `recman worker --status` (issue 23): a `recman up` whose own worker keeps
//! the host freeze state in `DATA/worker-state` runs a job whose snapshot
//! takes 3 s; during it `--status` on that state dir names the target as
//! frozen by that job, attempt 1, by the live worker; after the job it says
//! "not frozen" with the job's thaw as the last one. Reads only: no broker,
//! no lock taken (the job is not held up).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use recman_testkit::recman_bin;
use recman_tests::cli::{http, Server};

fn status(data: &Path) -> String {
    let out = Command::new(recman_bin())
        .arg("--data-dir")
        .arg(data)
        .args(["worker", "--status", "--state-dir"])
        .arg(data.join("worker-state"))
        .env_remove("RECMAN_STATE_DIR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("recman worker --status:\n{text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn job_state(port: u16, job: &str) -> String {
    let (_, body) = http(port, "GET", &format!("/v1/jobs/{job}"), "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["state"].as_str().unwrap_or_default().to_string()
}

#[test]
fn worker_status_shows_who_froze_each_target_and_the_last_thaw() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("recman.toml"),
        "[[target]]\nid = \"app\"\npool = \"host.a\"\nfreeze_limit = \"30s\"\n\
         [target.writer]\ntype = \"exec\"\nfreeze = [\"true\"]\nthaw = [\"true\"]\n\
         [target.provider]\ntype = \"exec\"\ncreate = [\"sleep\", \"3\"]\ntimeout = \"20s\"\n\n\
         [[target]]\nid = \"other\"\npool = \"host.a\"\n[target.writer]\ntype = \"none\"\n\
         [target.provider]\ntype = \"none\"\n",
    )
    .unwrap();
    let mut s = Server::start(&data, &[]);
    let before = status(&data);
    assert!(
        before.contains("app") && before.contains("not frozen") && before.contains("0 frozen now"),
        "{before}"
    );

    let (code, body) = http(
        s.port,
        "POST",
        "/v1/snapshots",
        r#"{"request_id":"status-1","targets":["app"]}"#,
    );
    assert!(code == 201 || code == 202, "{code} {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let job = v["job_id"].as_str().unwrap().to_string();

    // While the snapshot runs: frozen by this job, attempt 1, a live worker.
    let t0 = Instant::now();
    let during = loop {
        let text = status(&data);
        if text.contains("FROZEN") {
            break text;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "never seen frozen (job {}): {text}",
            job_state(s.port, &job)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let line = during.lines().find(|l| l.starts_with("app")).unwrap_or_default();
    assert!(
        line.contains(&format!("FROZEN by job {job} attempt 1"))
            && line.contains("process alive")
            && line.contains("watchdog thaws in"),
        "{during}"
    );
    assert!(during.contains("1 frozen now"), "{during}");
    let other = during
        .lines()
        .find(|l| l.starts_with("other"))
        .unwrap_or_default();
    assert!(other.contains("not frozen"), "{during}");

    // Reading the state held nothing up: the job completes.
    let t0 = Instant::now();
    while job_state(s.port, &job) != "completed" {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{}",
            job_state(s.port, &job)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = status(&data);
    let line = after.lines().find(|l| l.starts_with("app")).unwrap_or_default();
    assert!(
        line.contains("not frozen")
            && line.contains(&format!("last thaw: job {job} attempt 1 by the engine's command")),
        "{after}"
    );
    assert!(after.contains("0 frozen now"), "{after}");
    let st = s.terminate(Duration::from_secs(30));
    assert!(st.success(), "{st}");
}
