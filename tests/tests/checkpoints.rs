//! Checkpoints (issue 19): `recman audit` compares every checkpoint in the
//! data dir with a replay of the real log and names a damaged or wrong one
//! (exit 1); the `CheckpointStore` contract against a private PostgreSQL
//! (`tests/services/postgres.sh`), as the files pass it in the engine's
//! unit tests.

use std::path::Path;

use recman_core::sim::{self, SimConfig};
use recman_core::{checkpoint as codec, Core, CoreConfig};
use recman_engine::checkpoint::{self, CheckpointStore, FileStore, PgCheckpoints};
use recman_events::log::pg_store::PgPlace;
use recman_events::{log, Backend, Event};
use recman_testkit::{need_env, recman, temp_dir, text};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn sim_log() -> Vec<Event> {
    let cfg = SimConfig::full(11, 200, 8);
    sim::run_with_log(&cfg).expect("a clean run").1
}

fn fold(events: &[Event]) -> Core {
    let mut core = Core::new(CoreConfig::default());
    for e in events {
        core.apply(e);
    }
    core
}

/// A redb log of a simulated run in `dir`, and checkpoints at 1000 and 2000.
fn log_with_checkpoints(dir: &Path, events: &[Event]) -> FileStore {
    let store = FileStore::in_data_dir(dir);
    rt().block_on(async {
        let log = log::open(Backend::Redb, dir).unwrap();
        for chunk in events.chunks(500) {
            log.append(chunk.to_vec()).await.unwrap();
        }
        for seq in [1000u64, 2000] {
            let hash = checkpoint::record_hash(log.as_ref(), seq).unwrap().unwrap();
            let bytes = codec::encode(seq, &hash, fold(&events[..seq as usize]).state());
            store.save(seq, bytes, 3).await.unwrap();
        }
    });
    store
}

#[test]
fn audit_checks_every_checkpoint_and_names_a_damaged_or_wrong_one() {
    let events = sim_log();
    assert!(events.len() > 2500, "{} events", events.len());
    let tmp = temp_dir();
    let dir = tmp.path();
    let store = log_with_checkpoints(dir, &events);

    let out = recman(dir, &["audit"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = text(&out);
    assert!(
        s.contains("intact") && s.contains("checked 2 checkpoint(s)"),
        "{s}"
    );
    let out = recman(dir, &["audit", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["checkpoints_checked"], 2, "{v}");
    assert_eq!(v["clean"], true, "{v}");

    // One byte of the newest changed: a finding at its record, exit 1.
    let f = store.file(2000);
    let good = std::fs::read(&f).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    std::fs::write(&f, &bad).unwrap();
    let out = recman(dir, &["audit"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = text(&out);
    assert!(
        s.contains("seq 2000: the checkpoint at record 2000") && s.contains("checksum mismatch"),
        "{s}"
    );
    assert!(s.contains("1 finding(s)"), "{s}");

    // A checkpoint that checks out (checksum, hash of record 2000) but does
    // not hold the fold of the log: only the replay tells.
    let seq = 2000u64;
    let hash = rt().block_on(async {
        let log = log::open_for_reading(dir).unwrap();
        checkpoint::record_hash(log.as_ref(), seq).unwrap().unwrap()
    });
    let mut state = fold(&events[..seq as usize]).into_state();
    let first = *state.jobs.keys().next().unwrap();
    state.jobs.remove(&first);
    std::fs::write(&f, codec::encode(seq, &hash, &state)).unwrap();
    let out = recman(dir, &["audit", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = v["head_findings"].to_string();
    assert!(
        found.contains("does not match a replay of the log to record 2000") && found.contains("jobs"),
        "{v}"
    );

    // Put back: intact again, and the log itself was never touched.
    std::fs::write(&f, &good).unwrap();
    let out = recman(dir, &["audit"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn checkpoint_store_contract_on_postgres() {
    let Some(url) = need_env(
        "RECMAN_TEST_PG_URL",
        "start a private server: `source tests/services/postgres.sh && pg_start`; tests/run does",
    ) else {
        return;
    };
    let schema = format!("ckpt_{}", std::process::id());
    let place = PgPlace::new(&url, &schema).unwrap();
    rt().block_on(async {
        let store = PgCheckpoints::new(place.clone());
        // Reading creates nothing (`recman audit` reads).
        assert_eq!(store.list().await.unwrap(), Vec::<u64>::new());
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let n: i64 = c
            .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = $1", &[&schema])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "listing created the schema");
        checkpoint::contract::run(&store).await;
        c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    });
}

/// `recman bench startup` on a small log: start-up from its checkpoint
/// equals the full replay (the bench checks), and the last line has every figure.
#[test]
fn bench_startup_prints_its_figures() {
    let tmp = temp_dir();
    let out = recman(
        tmp.path(),
        &[
            "bench",
            "startup",
            "--jobs",
            "2000",
            "--targets",
            "400",
            "--template-jobs",
            "500",
            "--tail",
            "2000",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    for key in [
        "startup_ms=",
        "full_replay_ms=",
        "events=",
        "checkpoint_bytes=",
        "tail=2000 ",
    ] {
        assert!(last.contains(key), "{key} missing: {last}");
    }
    // Its log is gone afterwards.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// Issue 19, the read side: `recman up` writes checkpoints that carry the
/// API's view; restarted, it builds the view from the newest one and the
/// log after it, and the API shows what it showed before the restart (jobs
/// with their timelines, targets, catalog); `recman audit` checks the view
/// section against a replay of the log.
#[tokio::test]
async fn the_api_shows_the_same_after_a_restart_from_a_checkpoint() {
    use recman_tests::cli::{write_config, Server};
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 1, "[checkpoint]\nevery_events = 1000\n");
    let c = crate::api_support::client();
    let get = |s: &Server, path: &str| {
        let (c, url, path) = (c.clone(), format!("{}{path}", s.url), path.to_string());
        async move {
            let r = c.get(url).send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let s = Server::start(dir.path(), &[]);
    for i in 0..90 {
        let r = c
            .post(format!("{}/v1/snapshots", s.url))
            .json(&serde_json::json!({"request_id": format!("ck-{i}"), "targets": ["fast"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let ckpts = dir.path().join("checkpoints");
    loop {
        let jobs = get(&s, "/v1/jobs?limit=1000&state=completed").await;
        let done = jobs["jobs"].as_array().unwrap().len();
        let written = std::fs::read_dir(&ckpts).map_or(0, |d| d.count());
        if done == 90 && written > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{done} of 90 jobs completed, {written} checkpoint(s) in {}",
            ckpts.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let paths = [
        "/v1/jobs?limit=1000",
        "/v1/targets",
        "/v1/snapshots",
        "/v1/mounts",
        "/v1/clones",
    ];
    let mut before = Vec::new();
    for p in paths {
        before.push(get(&s, p).await);
    }
    let first = before[0]["jobs"][89]["id"].as_str().unwrap().to_string();
    let last = before[0]["jobs"][0]["id"].as_str().unwrap().to_string();
    let details = [
        get(&s, &format!("/v1/jobs/{first}")).await,
        get(&s, &format!("/v1/jobs/{last}")).await,
    ];
    assert!(
        details[1]["timeline"].as_array().unwrap().len() >= 4
            && before[2]["snapshots"].as_array().map_or(0, |a| a.len()) >= 2,
        "jobs with timelines and a catalog: {} {}",
        details[1],
        before[2]
    );
    drop(s);

    let s = Server::start(dir.path(), &[]);
    for (p, was) in paths.iter().zip(&before) {
        assert_eq!(&get(&s, p).await, was, "{p} after the restart");
    }
    assert_eq!(get(&s, &format!("/v1/jobs/{first}")).await, details[0]);
    assert_eq!(get(&s, &format!("/v1/jobs/{last}")).await, details[1]);
    drop(s);

    // With no server, the CLI reads the data dir itself, also from the
    // newest checkpoint and the log after it, and lists the same jobs.
    let out = recman_testkit::recman_cmd(dir.path())
        .env("RECMAN_LOG", "info")
        .args(["jobs", "--json", "--limit", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let local: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        local["jobs"], before[0]["jobs"],
        "recman jobs, read from the data dir"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.contains("read the event log from a checkpoint") && l.contains("Some(")),
        "{err}"
    );

    let out = recman(dir.path(), &["audit", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["checkpoints_checked"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["clean"], true, "{v}");
}
