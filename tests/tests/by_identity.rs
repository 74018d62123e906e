//! `by` in the event log beyond the HTTP API (api_roles.rs has that): a
//! command that submits directly records `cli:<unix user>`, a schedule's
//! firing `schedule:<id>`; and a log of record version 1 (written before
//! `by` existed: the fixture of core/tests/fixtures) still reads, audits
//! and replays, and takes version 2 records after it with the chain intact.

use std::path::Path;
use std::time::{Duration, Instant};

use recman_events::log::{open_store, Batch, BatchItem};
use recman_events::{codec, Backend};
use recman_testkit::{recman, text};
use recman_tests::cli::{write_config, Server};
use serde_json::Value;

fn events(dir: &Path) -> Vec<Value> {
    let out = recman(dir, &["events", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn unix_user() -> String {
    let out = std::process::Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes the v1 fixture's records, byte for byte, as the old code's log.
fn old_log(dir: &Path) -> usize {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/v1-log.bin");
    let bytes = std::fs::read(fixture).unwrap();
    let mut batch = Batch::default();
    let mut at = 0;
    let mut seq = 0;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 4;
        let rec = &bytes[at..at + len];
        assert_eq!(u16::from_le_bytes([rec[4], rec[5]]), codec::RECORD_VERSION_1);
        seq += 1;
        let job = codec::decode(rec).unwrap().event.job;
        let start = batch.buf.len();
        batch.buf.extend_from_slice(rec);
        batch.items.push(BatchItem {
            seq,
            job,
            range: start..batch.buf.len(),
        });
        at += len;
    }
    let store = open_store(Backend::Redb, dir, true).unwrap();
    store.commit(&batch).unwrap();
    seq as usize
}

#[test]
fn an_old_v1_log_still_reads_audits_replays_and_takes_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n = old_log(d);
    let out = recman(d, &["audit"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("audited {n} records")),
        "{}",
        text(&out)
    );
    let old = events(d);
    assert_eq!(old.len(), n);
    assert!(
        old.iter().all(|m| m["event"].get("by").is_none()),
        "old events have no by"
    );
    let out = recman(d, &["replay", "--json"]);
    assert!(out.status.success(), "{}", text(&out));

    // A command on it: the engine replays the old records, then appends
    // version 2 ones, chained to them, recording who ran it.
    write_config(d, 1, "");
    let out = recman(d, &["snapshot", "fast", "--request-id", "after-v1"]);
    assert!(out.status.success(), "{}", text(&out));
    let all = events(d);
    assert!(all.len() > n);
    let me = format!("cli:{}", unix_user());
    let requested: Vec<&Value> = all[n..]
        .iter()
        .filter(|m| m["event"]["body"]["type"] == "requested")
        .collect();
    assert_eq!(requested.len(), 1, "{requested:?}");
    assert_eq!(requested[0]["event"]["by"], me.as_str());
    let job = requested[0]["event"]["job"].clone();
    let of_job: Vec<&Value> = all.iter().filter(|m| m["event"]["job"] == job).collect();
    assert!(of_job.iter().any(|m| m["event"]["body"]["type"] == "completed"));
    let out = recman(d, &["audit"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "mixed versions audit clean: {}",
        text(&out)
    );
    // `recman events` and `recman job` print it.
    let out = recman(d, &["events"]);
    assert!(text(&out).contains(&format!("by={me}")), "{}", text(&out));
    let out = recman(d, &["job", job.as_str().unwrap()]);
    assert!(text(&out).contains(&me), "{}", text(&out));
}

#[test]
fn a_scheduled_firing_is_recorded_by_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(
        d,
        1,
        "[[schedule]]\nid = \"often\"\ntargets = [\"fast\"]\nevery = \"1s\"\n",
    );
    let mut s = Server::start(d, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let out = recman(d, &["jobs", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let first = v["jobs"].as_array().and_then(|a| a.last()).cloned();
        if let Some(j) = first.filter(|j| j["state"] == "completed") {
            break j;
        }
        assert!(Instant::now() < deadline, "no scheduled job completed: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(job["by"], "schedule:often", "{job}");
    s.terminate(Duration::from_secs(30));
    let all = events(d);
    let fired: Vec<&Value> = all
        .iter()
        .filter(|m| m["event"]["body"]["type"] == "schedule_fired")
        .collect();
    assert!(!fired.is_empty());
    for f in &fired {
        assert_eq!(f["event"]["by"], "schedule:often", "{f}");
        let requested = all
            .iter()
            .find(|m| m["event"]["job"] == f["event"]["job"] && m["event"]["body"]["type"] == "requested")
            .unwrap();
        assert_eq!(requested["event"]["by"], "schedule:often", "{requested}");
    }
    // What the workers reported is the engine's own: no `by`.
    assert!(all
        .iter()
        .filter(|m| m["event"]["body"]["type"] == "step_succeeded")
        .all(|m| m["event"].get("by").is_none()));
}
