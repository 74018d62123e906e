//! The real `recman` binary against a real log: `bench log` writes it,
//! the library tampers with the redb file, `recman audit` must notice and name
//! the sequence number; `recman events` prints it.

use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;

use recman_events::codec::{self, Record};
use recman_events::log::{open_store, redb_store};
use recman_events::{Backend, EventMessage};

fn recman(args: &[&str], data_dir: &Path) -> Output {
    recman_testkit::recman(data_dir, args)
}

use recman_testkit::text;

/// One small log written by `recman bench log`, copied for each test.
fn template() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = recman(
            &["bench", "log", "--events", "2000", "--appenders", "8"],
            dir.path(),
        );
        assert!(out.status.success(), "bench failed: {}", text(&out));
        let last = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        assert!(
            last.starts_with("backend=redb events=2000 appenders=8 "),
            "{last}"
        );
        assert!(
            last.contains("replay_events_per_s=") && last.contains("raw_fdatasync_per_s="),
            "{last}"
        );
        dir
    })
    .path()
}

fn fresh_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        template().join(redb_store::FILE_NAME),
        dir.path().join(redb_store::FILE_NAME),
    )
    .unwrap();
    dir
}

fn audit_fails_naming(dir: &Path, seqs: &[u64]) -> String {
    let out = recman(&["audit"], dir);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "audit must exit 1: {t}");
    for s in seqs {
        assert!(
            t.contains(&format!("seq {s}:")),
            "output does not name seq {s}: {t}"
        );
    }
    t
}

#[test]
fn a_clean_log_audits_clean() {
    let dir = fresh_copy();
    let out = recman(&["audit"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("audited 2000 records"), "{}", text(&out));
    let out = recman(&["audit", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clean"], true);
    assert_eq!(v["records"], 2000);
}

#[test]
fn a_changed_record_with_a_valid_crc_is_found() {
    let dir = fresh_copy();
    {
        let store = open_store(Backend::Redb, dir.path(), false).unwrap();
        let mut rec = codec::decode(&store.get(700).unwrap().unwrap()).unwrap();
        rec.event.at_ms += 1;
        store
            .put_raw(700, Some(&codec::encode_record(&Record { ..rec })))
            .unwrap();
    }
    let t = audit_fails_naming(dir.path(), &[701]);
    assert!(t.contains("record 700 was changed"), "{t}");
    let out = recman(&["audit", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"][0]["seq"], 701);
}

#[test]
fn a_removed_record_is_found() {
    let dir = fresh_copy();
    open_store(Backend::Redb, dir.path(), false)
        .unwrap()
        .put_raw(1234, None)
        .unwrap();
    let t = audit_fails_naming(dir.path(), &[1234]);
    assert!(t.contains("missing"), "{t}");
}

#[test]
fn swapped_records_are_found() {
    let dir = fresh_copy();
    {
        let store = open_store(Backend::Redb, dir.path(), false).unwrap();
        let a = store.get(100).unwrap().unwrap();
        let b = store.get(101).unwrap().unwrap();
        store.put_raw(100, Some(&b)).unwrap();
        store.put_raw(101, Some(&a)).unwrap();
    }
    audit_fails_naming(dir.path(), &[100, 101]);
}

#[test]
fn a_flipped_byte_is_found() {
    let dir = fresh_copy();
    {
        let store = open_store(Backend::Redb, dir.path(), false).unwrap();
        let mut b = store.get(42).unwrap().unwrap();
        b[30] ^= 0x10;
        store.put_raw(42, Some(&b)).unwrap();
    }
    let t = audit_fails_naming(dir.path(), &[42]);
    assert!(t.contains("checksum"), "{t}");
}

#[test]
fn auditing_a_missing_log_exits_2_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let out = recman(&["audit"], &missing);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
    assert!(!missing.exists());
    let out = recman(&["audit"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no event log"), "{}", text(&out));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn events_prints_readable_lines_and_json() {
    let dir = fresh_copy();
    let out = recman(&["events", "--from", "1995"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert!(lines[0].trim_start().starts_with("1995 "), "{}", lines[0]);
    assert!(lines
        .iter()
        .all(|l| l.contains("step_succeeded") && l.contains("target=bench-")));

    let out = recman(&["events", "--json", "--from", "1990"], dir.path());
    assert!(out.status.success());
    let msgs: Vec<EventMessage> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        msgs.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1990..=2000).collect::<Vec<_>>()
    );

    // --job: exactly that job's events (10 per job in the bench).
    let job = msgs[0].event.job;
    let out = recman(&["events", "--json", "--job", &job.to_string()], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let mine: Vec<EventMessage> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!mine.is_empty() && mine.len() <= 10, "{}", mine.len());
    assert!(mine.iter().all(|m| m.event.job == job));
    assert!(mine.iter().any(|m| m.seq == msgs[0].seq));
}
