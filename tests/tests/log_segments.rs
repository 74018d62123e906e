//! Closed log segments through the real binary: an engine with
//! `[log] archive_after` moves old records out of the live log at start-up
//! and goes on appending; the API still serves an archived job by id;
//! `recman log archive` and `recman log segments` on the stopped engine's
//! data dir; `recman events`, `recman job` and `recman audit` read across the
//! boundary as before.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::api_support::{client, get, run_job};
use recman_events::{log, Backend, Event};
use recman_tests::cli::{write_config, Server};
use reqwest::StatusCode;
use serde_json::Value;

const DAY_MS: u64 = 86_400_000;

fn recman(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(recman_testkit::recman_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("RECMAN_DATA_DIR")
        .env_remove("RECMAN_CONFIG")
        .env_remove("RECMAN_SERVER")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Copies the log of `from` into a new log in `to` with every event
/// recorded `days` earlier (a log as it would look that much later).
async fn aged_copy(from: &Path, to: &Path, days: u64) -> Vec<Event> {
    let old = log::open_for_reading(from).unwrap();
    let events: Vec<Event> = old
        .read(1, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|s| Event {
            at_ms: s.event.at_ms - days * DAY_MS,
            ..s.event
        })
        .collect();
    drop(old);
    let new = log::open(Backend::Redb, to).unwrap();
    for e in &events {
        new.append(vec![e.clone()]).await.unwrap();
    }
    events
}

#[tokio::test]
async fn old_records_move_to_segments_and_everything_still_reads_them() {
    // A day's work on a first engine.
    let first = tempfile::tempdir().unwrap();
    write_config(first.path(), 1, "");
    let s = Server::start(first.path(), &[]);
    let c = client();
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(run_job(&c, &s, &format!("seg-{i}")).await);
    }
    drop(s);

    // Ten days later, with `archive_after = "1d"`: the engine archives at
    // start-up, beside its loop.
    let data = tempfile::tempdir().unwrap();
    let events = aged_copy(first.path(), data.path(), 10).await;
    write_config(
        data.path(),
        1,
        "[log]\narchive_after = \"1d\"\nsegment_records = 1000\n",
    );
    let s = Server::start(data.path(), &[]);
    let segs = data.path().join("segments");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_dir(&segs)
        .is_ok_and(|mut d| d.any(|e| e.unwrap().path().extension().is_some_and(|x| x == "seg")))
    {
        assert!(Instant::now() < deadline, "no segment written in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The engine goes on: a new job, appended after the archived records.
    let fresh = run_job(&c, &s, "seg-after").await;
    // An archived job by id: read from its segment, as it was.
    let id = jobs[0]["id"].as_str().unwrap();
    let (st, again) = get(&c, &s, &format!("/v1/jobs/{id}")).await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again["state"], "completed");
    assert_eq!(
        again["timeline"].as_array().map(Vec::len),
        jobs[0]["timeline"].as_array().map(Vec::len),
        "{again}"
    );
    // One owner: the CLI's archive is refused while the engine runs.
    let busy = recman(data.path(), &["log", "archive", "--older-than", "1d"]);
    assert_eq!(busy.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    drop(s);

    // The stopped engine's data dir: the segments, then every record read
    // across them, in order, the hash chain intact.
    let listed: Value =
        serde_json::from_str(&ok(&recman(data.path(), &["log", "segments", "--json"]))).unwrap();
    let list = listed["segments"].as_array().unwrap();
    assert!(!list.is_empty(), "{listed}");
    assert_eq!(list[0]["first"], 1, "{listed}");
    let through = list.last().unwrap()["last"].as_u64().unwrap();
    // Every aged record but, when the engine had appended nothing yet at
    // the first turn, the last (which always stays live); none of the new
    // job's.
    assert!(
        (events.len() as u64 - 1..=events.len() as u64).contains(&through),
        "{} aged records: {listed}",
        events.len()
    );
    let last_seq = listed["last_seq"].as_u64().unwrap();
    assert!(last_seq > through, "{listed}");
    let all = ok(&recman(data.path(), &["events", "--json"]));
    assert_eq!(all.lines().count() as u64, last_seq, "every record once");
    ok(&recman(data.path(), &["audit"]));
    let job: Value = serde_json::from_str(&ok(&recman(data.path(), &["job", id, "--json"]))).unwrap();
    assert_eq!(job["timeline"], again["timeline"]);

    // By hand: everything but the last record; then a snapshot appends on.
    let out = ok(&recman(
        data.path(),
        &["log", "archive", "--before", "1000000000"],
    ));
    assert!(out.contains("archived"), "{out}");
    // And the live file gives the archived records' space back.
    let line = out
        .lines()
        .find(|l| l.starts_with("compacted the live log file"))
        .unwrap_or_else(|| panic!("no compaction: {out}"));
    let sizes: Vec<u64> = line
        .rsplit(": ")
        .next()
        .unwrap()
        .trim_end_matches(" bytes")
        .split(" -> ")
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(sizes[1] <= sizes[0], "{line}");
    assert_eq!(
        std::fs::metadata(data.path().join("events.redb")).unwrap().len(),
        sizes[1],
        "{line}"
    );
    let listed: Value =
        serde_json::from_str(&ok(&recman(data.path(), &["log", "segments", "--json"]))).unwrap();
    let through = listed["segments"].as_array().unwrap().last().unwrap()["last"]
        .as_u64()
        .unwrap();
    assert_eq!(through, last_seq - 1, "the last record stays live: {listed}");
    let out = ok(&recman(data.path(), &["log", "archive", "--older-than", "1d"]));
    assert!(out.contains("nothing to archive"), "{out}");
    ok(&recman(data.path(), &["audit"]));
    let job: Value = serde_json::from_str(&ok(&recman(
        data.path(),
        &["job", fresh["id"].as_str().unwrap(), "--json"],
    )))
    .unwrap();
    assert_eq!(job["state"], "completed");
    let again = ok(&recman(data.path(), &["events", "--json"]));
    assert_eq!(again, all, "the log reads the same after the second archive");

    // A missing segment is a hole in the log: refused, named.
    let segs = listed["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2, "one from the engine, one by hand: {listed}");
    std::fs::remove_file(segs[0]["path"].as_str().unwrap()).unwrap();
    let o = recman(data.path(), &["events"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("segment") && err.contains("missing"), "{err}");
}
