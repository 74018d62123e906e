//! One conformance suite for every `EventLog` backend (redb and sled): each
//! test is a fn taking the backend, instantiated per backend by `suite!`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use recman_events::audit::{audit, replay};
use recman_events::codec::{self, Record};
use recman_events::log::{self, open, open_for_reading, open_store};
use recman_events::{
    Backend, Event, EventBody, EventLog, JobId, LogError, Stage, StepDetail, TargetId, WorkerId,
};

/// The env var that turns a re-executed test binary into the SIGKILL child.
const CHILD_ENV: &str = "RECMAN_CONFORMANCE_CHILD_DIR";

fn ev(job: JobId, n: u64) -> Event {
    Event {
        at_ms: 1_764_000_000_000 + n,
        job,
        body: EventBody::StepSucceeded {
            stage: Stage::Snapshot,
            attempt: 1,
            target: TargetId::from(format!("t-{n}")),
            worker: WorkerId::from("w1"),
            duration_us: n,
            detail: StepDetail::None,
        },
    }
}

fn job(n: u128) -> JobId {
    JobId::from_parts(1_764_000_000_000, n)
}

/// Appends `n` single-event batches for `job`, returns (seq, event) pairs.
async fn fill(log: &dyn EventLog, n: u64) -> Vec<(u64, Event)> {
    let mut out = Vec::new();
    for i in 0..n {
        let e = ev(job(1 + u128::from(i % 3)), i);
        let seqs = log.append(vec![e.clone()]).await.expect("append");
        out.push((seqs[0], e));
    }
    out
}

fn all(log: &dyn EventLog) -> Vec<recman_events::StoredEvent> {
    log.read(1, usize::MAX).expect("read")
}

/// `read_job` returns, for every job in `stored`, exactly its events in order.
fn assert_index_matches(log: &dyn EventLog, stored: &[recman_events::StoredEvent]) {
    let mut by_job: BTreeMap<JobId, Vec<recman_events::StoredEvent>> = BTreeMap::new();
    for s in stored {
        by_job.entry(s.event.job).or_default().push(s.clone());
    }
    for (j, want) in by_job {
        assert_eq!(log.read_job(j).unwrap(), want, "job {j}");
    }
}

pub async fn concurrent_appends_are_ordered_and_gap_free(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(backend, dir.path()).unwrap();
    assert_eq!(log.last_seq(), 0);
    assert_eq!(log.append(vec![]).await.unwrap(), Vec::<u64>::new());
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..40u64 {
                let k = 1 + (i % 3) as usize;
                let events: Vec<Event> = (0..k as u64)
                    .map(|j| ev(job(t.into()), t * 1000 + i * 10 + j))
                    .collect();
                let seqs = log.append(events.clone()).await.unwrap();
                assert_eq!(seqs.len(), k);
                assert!(
                    seqs.windows(2).all(|w| w[1] == w[0] + 1),
                    "one append's seqs are consecutive: {seqs:?}"
                );
                mine.extend(seqs.into_iter().zip(events));
            }
            mine
        }));
    }
    let mut expected = BTreeMap::new();
    for t in tasks {
        let mine = t.await.unwrap();
        assert!(
            mine.windows(2).all(|w| w[1].0 > w[0].0),
            "a task's appends are ordered"
        );
        for (s, e) in mine {
            assert!(expected.insert(s, e).is_none(), "seq {s} handed out twice");
        }
    }
    let n = expected.len() as u64;
    assert_eq!(
        expected.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    assert_eq!(log.last_seq(), n);
    let stored = all(&*log);
    assert_eq!(stored.len() as u64, n);
    for s in &stored {
        assert_eq!(&s.event, &expected[&s.seq], "event at seq {}", s.seq);
    }
    // Paged reads see the same thing.
    let page = log.read(10, 5).unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![10, 11, 12, 13, 14]
    );
    assert!(audit(&*log).is_clean());
}

pub async fn reopen_preserves_everything_and_continues_the_chain(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(backend, dir.path()).unwrap();
    let written = fill(&*log, 25).await;
    let before = all(&*log);
    drop(log);
    let log = open(backend, dir.path()).unwrap();
    assert_eq!(log.backend(), backend);
    assert_eq!(log.last_seq(), 25);
    assert_eq!(all(&*log), before);
    for (s, e) in &written {
        assert_eq!(&before[(*s - 1) as usize].event, e);
    }
    // The job index survives the reopen too.
    assert_index_matches(&*log, &before);
    let more = log.append(vec![ev(job(9), 100), ev(job(9), 101)]).await.unwrap();
    assert_eq!(more, vec![26, 27]);
    let report = audit(&*log);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, 27);
    drop(log);
    // The log found in the directory opens with its own backend, and refuses the other.
    assert_eq!(log::detect(dir.path()).unwrap(), Some(backend));
    let other = if backend == Backend::Redb {
        Backend::Sled
    } else {
        Backend::Redb
    };
    assert!(open(other, dir.path()).is_err());
    let log = log::open_detected(dir.path(), other).unwrap();
    assert_eq!(log.backend(), backend);
    assert_eq!(log.last_seq(), 27);
}

pub async fn a_second_open_is_refused_as_locked(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(backend, dir.path()).unwrap();
    match open(backend, dir.path()) {
        Err(LogError::Locked(msg)) => assert!(msg.contains("in use"), "{msg}"),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("second open succeeded"),
    }
    drop(log);
    assert!(open(backend, dir.path()).is_ok(), "lock released on drop");
}

pub async fn read_job_returns_exactly_that_jobs_events(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(backend, dir.path()).unwrap();
    let written = fill(&*log, 30).await;
    for j in 1..=3u128 {
        let want: Vec<(u64, Event)> = written.iter().filter(|(_, e)| e.job == job(j)).cloned().collect();
        let got: Vec<(u64, Event)> = log
            .read_job(job(j))
            .unwrap()
            .into_iter()
            .map(|s| (s.seq, s.event))
            .collect();
        assert_eq!(got.len(), 10);
        assert_eq!(got, want);
    }
    assert!(log.read_job(job(77)).unwrap().is_empty());
}

pub async fn subscribe_sees_history_then_live_appends_in_order(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(backend, dir.path()).unwrap();
    fill(&*log, 5).await;
    let mut sub = log.subscribe(3);
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            for i in 0..4u64 {
                let l = log.clone();
                // Concurrent appenders, so batches interleave.
                let hs: Vec<_> = (0..5u64)
                    .map(|k| {
                        let l = l.clone();
                        tokio::spawn(async move { l.append(vec![ev(job(5), i * 10 + k)]).await.unwrap() })
                    })
                    .collect();
                for h in hs {
                    h.await.unwrap();
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let mut seen = Vec::new();
    while seen.len() < 23 {
        let item = tokio::time::timeout(std::time::Duration::from_secs(10), sub.recv())
            .await
            .expect("subscription stalled")
            .expect("subscription ended")
            .expect("subscription error");
        seen.push(item);
    }
    writer.await.unwrap();
    assert_eq!(
        seen.iter().map(|s| s.seq).collect::<Vec<_>>(),
        (3..=25).collect::<Vec<_>>()
    );
    let stored = log.read(3, 100).unwrap();
    assert_eq!(seen, stored);
}

/// Writes a log of `n` events (3 single appends, then one append of the
/// rest, so records 4.. share one batch), closes it and tampers with its store.
async fn tampered(backend: Backend, dir: &Path, n: u64, tamper: impl FnOnce(&dyn log::Store)) {
    let log = open(backend, dir).unwrap();
    fill(&*log, 3).await;
    let rest: Vec<Event> = (3..n).map(|i| ev(job(1 + u128::from(i % 3)), i)).collect();
    assert_eq!(log.append(rest).await.unwrap(), (4..=n).collect::<Vec<_>>());
    assert!(audit(&*log).is_clean());
    drop(log);
    let store = open_store(backend, dir, false).unwrap();
    tamper(&*store);
}

fn findings_at(log: &dyn EventLog) -> Vec<u64> {
    let report = audit(log);
    assert!(report.unreadable.is_none());
    report.findings.iter().map(|f| f.seq).collect()
}

pub async fn a_flipped_byte_is_detected_by_read_and_audit(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    tampered(backend, dir.path(), 10, |s| {
        let mut b = s.get(5).unwrap().unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x01;
        s.put_raw(5, Some(&b)).unwrap();
    })
    .await;
    let log = open(backend, dir.path()).unwrap();
    match log.read(1, 100) {
        Err(LogError::Corrupt { seq: 5, .. }) => {}
        other => panic!("expected Corrupt at 5, got {other:?}"),
    }
    assert!(log.read(6, 100).is_ok(), "records after it still read");
    let report = audit(&*log);
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.findings[0].seq, 5);
    assert!(
        report.findings[0].message.contains("checksum"),
        "{}",
        report.findings[0].message
    );
    assert!(replay(&*log, |_, _| {}).is_err());
}

pub async fn a_changed_record_with_a_valid_crc_breaks_the_chain(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    tampered(backend, dir.path(), 10, |s| {
        let rec = codec::decode(&s.get(5).unwrap().unwrap()).unwrap();
        let forged = codec::encode_record(&Record {
            event: ev(job(42), 999),
            ..rec
        });
        s.put_raw(5, Some(&forged)).unwrap();
    })
    .await;
    let log = open(backend, dir.path()).unwrap();
    // The record itself is well-formed; only the chain tells.
    assert_eq!(log.read(5, 1).unwrap()[0].event, ev(job(42), 999));
    assert_eq!(findings_at(&*log), vec![6]);
    assert!(audit(&*log).findings[0].message.contains("record 5"));
    let err = replay(&*log, |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("seq 6"), "{err}");
}

pub async fn a_removed_record_is_detected(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    tampered(backend, dir.path(), 10, |s| s.put_raw(5, None).unwrap()).await;
    let log = open(backend, dir.path()).unwrap();
    assert_eq!(findings_at(&*log), vec![5]);
    assert!(audit(&*log).findings[0].message.contains("missing"));
    // A subscription reports the gap instead of skipping it.
    let mut sub = log.subscribe(4);
    assert_eq!(sub.recv().await.unwrap().unwrap().seq, 4);
    assert!(sub.recv().await.unwrap().is_err());
    // Removing the first record is caught too.
    drop(sub);
    drop(log);
    open_store(backend, dir.path(), false)
        .unwrap()
        .put_raw(1, None)
        .unwrap();
    let log = open(backend, dir.path()).unwrap();
    assert_eq!(findings_at(&*log), vec![1, 5]);
}

pub async fn reordered_records_are_detected(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    tampered(backend, dir.path(), 10, |s| {
        let a = s.get(4).unwrap().unwrap();
        let b = s.get(5).unwrap().unwrap();
        s.put_raw(4, Some(&b)).unwrap();
        s.put_raw(5, Some(&a)).unwrap();
    })
    .await;
    let log = open(backend, dir.path()).unwrap();
    let at = findings_at(&*log);
    assert!(at.contains(&4) && at.contains(&5), "{at:?}");
    assert!(at.iter().all(|s| (4..=6).contains(s)), "{at:?}");
    assert!(matches!(log.read(4, 1), Err(LogError::Corrupt { seq: 4, .. })));
}

pub async fn a_damaged_tail_refuses_open_but_can_be_audited(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    tampered(backend, dir.path(), 10, |s| {
        let mut b = s.get(10).unwrap().unwrap();
        b[20] ^= 0xff;
        s.put_raw(10, Some(&b)).unwrap();
    })
    .await;
    let err = open(backend, dir.path())
        .err()
        .expect("open must refuse")
        .to_string();
    assert!(err.contains("recman audit"), "{err}");
    let log = open_for_reading(dir.path()).unwrap();
    assert_eq!(findings_at(&*log), vec![10]);
    assert!(
        log.append(vec![ev(job(1), 1)]).await.is_err(),
        "read-only log refuses appends"
    );
}

pub fn open_for_reading_never_creates_a_log(_backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    assert!(open_for_reading(&missing).is_err());
    assert!(!missing.exists());
    assert!(open_for_reading(dir.path()).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// The child side: appends from several tasks until killed, printing each
/// acknowledged seq. Runs only when re-executed by `sigkill_*`.
pub fn sigkill_child(backend: Backend) {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let log = open(backend, Path::new(&dir)).unwrap();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let seqs = log
                        .append(vec![ev(job(t.into()), i), ev(job(t.into()), i + 1)])
                        .await
                        .unwrap();
                    let mut out = std::io::stdout().lock();
                    for s in seqs {
                        writeln!(out, "ACK {s}").unwrap();
                    }
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

pub async fn acknowledged_appends_survive_sigkill(backend: Backend, child_test: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = BTreeSet::new();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([child_test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let target = 200 + round * 150;
        let mut this_round = 0;
        while this_round < target {
            let line = lines.next().expect("child ended early").unwrap();
            if let Some(s) = line.strip_prefix("ACK ") {
                acked.insert(s.parse::<u64>().unwrap());
                this_round += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
                               // Whatever it printed before dying was acknowledged too.
        for line in lines {
            if let Some(s) = line.unwrap().strip_prefix("ACK ") {
                acked.insert(s.parse::<u64>().unwrap());
            }
        }
        let status = child.wait().unwrap();
        assert!(!status.success(), "child must have been killed");

        let log = open(backend, dir.path()).unwrap();
        let last = log.last_seq();
        let max_acked = *acked.last().unwrap();
        assert!(last >= max_acked, "acked up to {max_acked}, log ends at {last}");
        let stored = all(&*log);
        assert_eq!(
            stored.iter().map(|s| s.seq).collect::<Vec<_>>(),
            (1..=last).collect::<Vec<_>>()
        );
        for s in &acked {
            assert_eq!(stored[(*s - 1) as usize].seq, *s);
        }
        // The job index was committed with the records: nothing more, nothing less.
        assert_index_matches(&*log, &stored);
        let report = audit(&*log);
        assert!(report.is_clean(), "round {round}: {report:?}");
    }
}

macro_rules! suite {
    ($name:ident, $backend:expr) => {
        mod $name {
            use super::*;

            const B: Backend = $backend;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_appends_are_ordered_and_gap_free() {
                super::concurrent_appends_are_ordered_and_gap_free(B).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn reopen_preserves_everything_and_continues_the_chain() {
                super::reopen_preserves_everything_and_continues_the_chain(B).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn a_second_open_is_refused_as_locked() {
                super::a_second_open_is_refused_as_locked(B).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn read_job_returns_exactly_that_jobs_events() {
                super::read_job_returns_exactly_that_jobs_events(B).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn subscribe_sees_history_then_live_appends_in_order() {
                super::subscribe_sees_history_then_live_appends_in_order(B).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn a_flipped_byte_is_detected_by_read_and_audit() {
                super::a_flipped_byte_is_detected_by_read_and_audit(B).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn a_changed_record_with_a_valid_crc_breaks_the_chain() {
                super::a_changed_record_with_a_valid_crc_breaks_the_chain(B).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn a_removed_record_is_detected() {
                super::a_removed_record_is_detected(B).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn reordered_records_are_detected() {
                super::reordered_records_are_detected(B).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn a_damaged_tail_refuses_open_but_can_be_audited() {
                super::a_damaged_tail_refuses_open_but_can_be_audited(B).await
            }
            #[test]
            fn open_for_reading_never_creates_a_log() {
                super::open_for_reading_never_creates_a_log(B)
            }
            #[test]
            fn sigkill_child() {
                super::sigkill_child(B)
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn acknowledged_appends_survive_sigkill() {
                super::acknowledged_appends_survive_sigkill(B, concat!(stringify!($name), "::sigkill_child"))
                    .await
            }
        }
    };
}

suite!(redb, Backend::Redb);
suite!(sled, Backend::Sled);

#[allow(dead_code)]
fn _assert_object_safe(_: Arc<dyn EventLog>) {}

/// Reading a redb log for audit must not change a byte of its file (evidence).
#[tokio::test(flavor = "multi_thread")]
async fn reading_a_redb_log_leaves_its_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(Backend::Redb, dir.path()).unwrap();
    fill(&*log, 20).await;
    drop(log);
    let file = dir.path().join(log::redb_store::FILE_NAME);
    let before = std::fs::read(&file).unwrap();
    let log = open_for_reading(dir.path()).unwrap();
    assert!(audit(&*log).is_clean());
    assert_eq!(all(&*log).len(), 20);
    assert_eq!(log.read_job(job(1)).unwrap().len(), 7);
    drop(log);
    assert!(
        std::fs::read(&file).unwrap() == before,
        "the audit changed the file"
    );
}
