//! The read commands on a PostgreSQL event log (issue 19): `recman audit`,
//! `recman audit --head` and `recman events` read the log `[log] postgres`
//! names, while the engine that owns it runs (reading needs no writer lock),
//! and a config that does not load is named, never replaced by the data
//! dir's log. Needs the private server of `tests/services/postgres.sh`.

use std::path::Path;
use std::process::{Command, Output};

use recman_testkit::{need_env, recman_bin, temp_dir};
use recman_tests::cli::{http, Server};
use recman_tests::postgres::split_password;
use serde_json::Value;

const URL_VAR: &str = "RECMAN_TEST_PG_URL";

fn recman(dir: &Path, args: &[&str]) -> Output {
    Command::new(recman_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("RECMAN_DATA_DIR")
        .env_remove("RECMAN_CONFIG")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn audit_and_events_read_the_postgres_log_while_its_engine_runs() {
    let Some(url) = need_env(
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
    let schema = format!("cli_{}", std::process::id());
    let dir = root.join("engine");
    std::fs::create_dir_all(&dir).unwrap();
    let (bare, pw) = split_password(&url);
    let pw_file = root.join("pg-password");
    std::fs::write(&pw_file, format!("{pw}\n")).unwrap();
    let s = shared.display();
    std::fs::write(
        dir.join("recman.toml"),
        format!(
            "[log]\npostgres = \"{bare}\"\npassword_file = \"{}\"\nschema = \"{schema}\"\n\n\
             [[target]]\nid = \"docs\"\n[target.writer]\ntype = \"none\"\n\
             [target.provider]\ntype = \"copy\"\nsource = \"{s}/src\"\ndest = \"{s}/snaps\"\n",
            pw_file.display()
        ),
    )
    .unwrap();

    let server = Server::start(&dir, &[]);
    let (st, body) = http(
        server.port,
        "POST",
        "/v1/snapshots",
        r#"{"request_id": "cli-1", "targets": ["docs"]}"#,
    );
    assert!(st == 202 || st == 200, "{st} {body}");
    let job = serde_json::from_str::<Value>(&body).unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, body) = http(server.port, "GET", &format!("/v1/jobs/{job}"), "");
        if serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["state"] == "completed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job did not complete: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // The data dir holds no log of its own: whatever these print came from PostgreSQL.
    let audit = recman(&dir, &["audit", "--json"]);
    assert!(audit.status.success(), "{}", text(&audit));
    let report: Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(report["backend"], "postgres", "{report}");
    assert_eq!(report["clean"], true, "{report}");
    assert!(report["records"].as_u64().unwrap() >= 5, "{report}");
    assert!(
        report["log"].as_str().unwrap().contains(&schema),
        "it says which log it audited: {report}"
    );

    let head = recman(&dir, &["audit", "--head"]);
    assert!(head.status.success(), "{}", text(&head));
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let (seq, _) = head.split_once(':').expect("SEQ:HASH");
    assert_eq!(seq.parse::<u64>().unwrap(), report["last_seq"].as_u64().unwrap());
    let checked = recman(&dir, &["audit", "--check-head", &head]);
    assert!(checked.status.success(), "{}", text(&checked));

    // `recman events` asks a running server first; with the engine gone,
    // it reads the log itself: PostgreSQL's, as the config says.
    drop(server);
    let events = recman(&dir, &["events", "--job", &job, "--json"]);
    assert!(events.status.success(), "{}", text(&events));
    let kinds: Vec<String> = String::from_utf8_lossy(&events.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event"]["body"]["type"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(kinds.iter().any(|k| k == "completed"), "{kinds:?}");

    // A config that does not load is named, not silently replaced by the data dir's log.
    std::fs::write(dir.join("recman.toml"), "[log]\npostgres = 7\n").unwrap();
    let broken = recman(&dir, &["audit"]);
    assert_eq!(broken.status.code(), Some(2), "{}", text(&broken));
    let err = String::from_utf8_lossy(&broken.stderr);
    assert!(
        err.contains("recman.toml") && err.contains("postgres"),
        "{}",
        text(&broken)
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let _ = c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await;
    });
}
