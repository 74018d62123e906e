//! PostgreSQL recovery end to end (issue 16), as root, with the real binary:
//! a private PostgreSQL 15 on a btrfs subvolume with a WAL archive, under
//! pgbench load; rows 1..=100 committed, a snapshot (`postgres` writer,
//! `btrfs` provider), rows 101..=150, a time T, rows 151..=200.
//!
//! (a) `recman restore SNAP --to PATH --until T`: the worker recovers the
//!     copy to T in a private server and stops it; started by the test on
//!     its own port, it holds exactly rows 1..=150, row by row, and will not
//!     archive into production's archive.
//! (b) `recman restore SNAP --in-place --yes`: stop (the writer's own
//!     `pg_ctl` default: no hooks are configured), safety
//!     snapshot, restore, start (recovery to the restore point, then the
//!     start hook): the cluster runs again with exactly rows 1..=100; the
//!     start step reports the LSN it recovered to; the safety snapshot,
//!     restored beside, holds rows 1..=200.

use std::fs;
use std::path::Path;

use recman_testkit::{recman, text};
use recman_tests::linux::{can_run, LoopFs};
use recman_tests::postgres::{
    append, archive_now, chown_postgres, connect, create_seq, insert_seq, seq_rows, Cluster, Load, Pg, TOOLS,
};
use serde_json::Value;

fn json(dir: &Path, args: &[&str]) -> Value {
    let out = recman(dir, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)))
}

/// The note of step `stage` in a recovery summary.
fn note(v: &Value, stage: &str) -> String {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == stage && s["ok"] == true)
        .and_then(|s| s["note"].as_str())
        .unwrap_or_else(|| panic!("no note on {stage}: {v}"))
        .to_string()
}

/// Starts the restored copy in `data` on a port of its own (as an operator
/// would) and returns its rows of `seq`.
async fn rows_of_copy(c: &Cluster, data: &Path, name: &str) -> Vec<i64> {
    let port = recman_testkit::free_port();
    append(&data.join("postgresql.conf"), &format!("\nport = {port}\n"));
    chown_postgres(data);
    let _pg = Pg::start(data, port, &c.logs.join(format!("{name}.log")));
    seq_rows(&connect(port).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_point_in_time_beside_and_in_place_with_its_safety_snapshot() {
    if !can_run(TOOLS) {
        return;
    }
    let b = LoopFs::new("btrfs", 1024);
    let c = Cluster::start(&b, true);
    let dir = tempfile::tempdir().unwrap();
    let labels = c.top.join("labels");
    fs::write(
        dir.path().join("recman.toml"),
        c.restore_config(&b, &labels, "host.a", false),
    )
    .unwrap();
    let client = c.pg.client().await;
    create_seq(&client).await;
    let load = Load::start(c.pg.port, 120);
    insert_seq(&client, 1..=100).await;
    let snap = json(dir.path(), &["snapshot", "pg1", "--json"]);
    assert_eq!(snap["state"], "completed", "{snap}");
    let point = snap["snapshot"]["name"].as_str().unwrap().to_string();
    insert_seq(&client, 101..=150).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let t: String = client
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    insert_seq(&client, 151..=200).await;
    archive_now(&client).await;

    // (a) To a new directory, to time T.
    let to = b.mnt.join("restore-a");
    let a = json(
        dir.path(),
        &[
            "restore",
            &point,
            "--to",
            to.to_str().unwrap(),
            "--until",
            &t,
            "--json",
        ],
    );
    assert_eq!(a["state"], "completed", "{a}");
    assert_eq!(a["location"], to.to_str().unwrap(), "{a}");
    let n = note(&a, "restore");
    assert!(n.contains("recovered to") && n.contains("LSN"), "{n}");
    let auto = fs::read_to_string(to.join("data/postgresql.auto.conf")).unwrap();
    assert!(auto.contains("archive_mode = 'off'"), "{auto}");
    assert_eq!(
        rows_of_copy(&c, &to.join("data"), "restore-a").await,
        (1..=150).collect::<Vec<i64>>(),
        "the copy recovered to {t} holds rows 1..=150 exactly"
    );
    // A time before the restore point, and a target with no log, are refused.
    let early = recman(
        dir.path(),
        &[
            "restore",
            &point,
            "--to",
            "/tmp/never",
            "--until",
            "2000-01-01T00:00:00Z",
        ],
    );
    assert_eq!(early.status.code(), Some(2), "{}", text(&early));
    assert!(text(&early).contains("until_before_point"), "{}", text(&early));

    // (b) In place: the load and the writer stop first.
    drop(load);
    drop(client);
    let v = json(dir.path(), &["restore", &point, "--in-place", "--yes", "--json"]);
    assert_eq!(v["state"], "completed", "{v}");
    let stages: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["stop", "safety_snapshot", "restore", "start"], "{v}");
    let n = note(&v, "start");
    assert!(
        n.contains("recovered to the restore point") && n.contains("LSN"),
        "{n}"
    );
    let live = connect(c.pg.port).await;
    assert_eq!(
        seq_rows(&live).await,
        (1..=100).collect::<Vec<i64>>(),
        "the cluster is back at the restore point"
    );
    let job = v["job_id"].as_str().unwrap();
    let mark = fs::read_to_string(c.data().join("recman_recovery")).unwrap();
    assert_eq!(mark.trim(), format!("{job} done"));
    // `recman job` tells the same, with the note.
    let shown = recman(dir.path(), &["job", job]);
    assert!(
        text(&shown).contains("recovered to the restore point"),
        "{}",
        text(&shown)
    );

    // The safety snapshot held the cluster as it was: rows 1..=200.
    let safety = v["safety_snapshot"].as_str().unwrap().to_string();
    let to_s = b.mnt.join("restore-safety");
    let s = json(
        dir.path(),
        &["restore", &safety, "--to", to_s.to_str().unwrap(), "--json"],
    );
    assert_eq!(s["state"], "completed", "{s}");
    assert!(note(&s, "restore").contains("crash recovery"), "{s}");
    assert_eq!(
        rows_of_copy(&c, &to_s.join("data"), "restore-safety").await,
        (1..=200).collect::<Vec<i64>>()
    );
}
