//! Two `recman up` on one PostgreSQL event log (issue 19): the first holds
//! the log's writer lock and serves; the second waits as a standby (not
//! ready, says so). After a `kill -9` of the first, the standby takes the
//! lock, replays the log (the first one's jobs are there, completed) and
//! serves new jobs, whose events continue the same hash chain under a higher
//! epoch. Needs the private server of `tests/services/postgres.sh`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recman_testkit::{free_port, need_env, recman_bin, temp_dir};
use recman_tests::cli::{http, ready, Server};
use recman_tests::postgres::split_password;
use serde_json::Value;

const URL_VAR: &str = "RECMAN_TEST_PG_URL";

fn write_config(dir: &Path, shared: &Path, url: &str, pw_file: &Path, schema: &str) {
    let s = shared.display();
    let text = format!(
        "[log]\npostgres = \"{url}\"\npassword_file = \"{}\"\nschema = \"{schema}\"\n\n\
         [[target]]\nid = \"docs\"\n[target.writer]\ntype = \"none\"\n\
         [target.provider]\ntype = \"copy\"\nsource = \"{s}/src\"\ndest = \"{s}/snaps\"\n",
        pw_file.display()
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("recman.toml"), text).unwrap();
}

fn snapshot(port: u16, request_id: &str) -> String {
    let (st, body) = http(
        port,
        "POST",
        "/v1/snapshots",
        &format!("{{\"request_id\": \"{request_id}\", \"targets\": [\"docs\"]}}"),
    );
    assert!(st == 202 || st == 200, "{st} {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["job_id"].as_str().unwrap().to_string()
}

fn wait_completed(port: u16, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http(port, "GET", &format!("/v1/jobs/{job}"), "");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if v["state"] == "completed" {
            return v;
        }
        assert!(Instant::now() < deadline, "job {job} did not complete: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_standby_engine_takes_over_the_postgres_log_after_a_kill() {
    let Some(full_url) = need_env(
        URL_VAR,
        "start a private server: `source tests/services/postgres.sh && pg_start`; tests/run does",
    ) else {
        return;
    };
    let tmp = temp_dir();
    let root = tmp.path();
    let shared = root.join("shared");
    std::fs::create_dir_all(shared.join("src")).unwrap();
    std::fs::write(shared.join("src/file"), "data").unwrap();
    let (url, pw) = split_password(&full_url);
    let pw_file = root.join("pg-password");
    std::fs::write(&pw_file, format!("{pw}\n")).unwrap();
    let schema = format!("standby_{}", std::process::id());
    let (a_dir, b_dir) = (root.join("a"), root.join("b"));
    write_config(&a_dir, &shared, &url, &pw_file, &schema);
    write_config(&b_dir, &shared, &url, &pw_file, &schema);

    let mut a = Server::start(&a_dir, &[]);
    let first: Vec<String> = (0..3).map(|i| snapshot(a.port, &format!("a-{i}"))).collect();
    for j in &first {
        wait_completed(a.port, j);
    }

    // The standby: started, never ready while the first one lives.
    let b_port = free_port();
    let mut b = Command::new(recman_bin())
        .arg("--data-dir")
        .arg(&b_dir)
        .args(["up", "--listen", &format!("127.0.0.1:{b_port}")])
        .env_remove("RECMAN_DATA_DIR")
        .env_remove("RECMAN_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let said = Arc::new(Mutex::new(String::new()));
    let sink = said.clone();
    let stderr = b.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !said.lock().unwrap().contains("standby:") {
        assert!(
            Instant::now() < deadline,
            "the second engine did not say it waits: {}",
            said.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !ready(b_port),
        "a standby must not serve: {}",
        said.lock().unwrap()
    );
    let holder = format!("pid {}", a.pid());
    assert!(
        said.lock().unwrap().contains(&holder),
        "it names the holder: {}",
        said.lock().unwrap()
    );

    // kill -9 of the leader: the standby takes over and replays.
    let killed = Instant::now();
    let mut child = a.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready(b_port) {
        assert!(
            Instant::now() < deadline,
            "the standby did not take over within 60 s: {}",
            said.lock().unwrap()
        );
        assert!(
            b.try_wait().unwrap().is_none(),
            "the standby exited: {}",
            said.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("standby ready {:?} after the kill", killed.elapsed());
    assert!(
        said.lock().unwrap().contains("took over the event log"),
        "{}",
        said.lock().unwrap()
    );
    for j in &first {
        wait_completed(b_port, j);
    }
    let next = snapshot(b_port, "b-0");
    wait_completed(b_port, &next);
    // The same request id again is the same job: idempotency survived the takeover.
    assert_eq!(snapshot(b_port, "a-1"), first[1]);

    let _ = Command::new("kill").arg(b.id().to_string()).status();
    let _ = b.wait();

    // One chain, one writer at a time, a higher epoch.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&full_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let epoch: i64 = c
            .query_one(&format!("SELECT epoch FROM {schema}.leader"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(epoch, 2, "two writers, one after the other");
        let place = recman_events::log::pg_store::PgPlace::new(&full_url, &schema).unwrap();
        let log = tokio::task::spawn_blocking(move || {
            recman_events::log::open_postgres_for_reading(&place).unwrap()
        })
        .await
        .unwrap();
        let report = tokio::task::spawn_blocking(move || recman_events::audit::audit(&*log))
            .await
            .unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert!(report.records > 10, "{report:?}");
        let _ = c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await;
    });
}

/// The events relay's cursor of an engine on a PostgreSQL log is kept in
/// the log's database: an engine that takes over (on another machine, with
/// another data dir) resumes where the last one's broker confirmed.
#[test]
fn the_relay_cursor_of_a_postgres_log_is_kept_beside_the_log() {
    let Some(full_url) = need_env(
        URL_VAR,
        "start a private server: `source tests/services/postgres.sh && pg_start`; tests/run does",
    ) else {
        return;
    };
    use recman_engine::runtime::relay::Cursor;
    use recman_events::log::pg_store::PgPlace;
    let schema = format!("cursor_{}", std::process::id());
    let place = PgPlace::new(&full_url, &schema).unwrap();
    let log = recman_events::log::open_postgres(&place).unwrap();
    let a = Cursor::postgres(&place).unwrap();
    assert_eq!(a.load().unwrap(), 0, "nothing published yet");
    a.store(1234).unwrap();
    drop(a);
    let b = Cursor::postgres(&place).unwrap();
    assert_eq!(b.load().unwrap(), 1234);
    drop(b);
    drop(log);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&full_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let _ = c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await;
    });
}
