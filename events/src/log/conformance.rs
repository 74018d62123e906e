//! The conformance suite every `EventLog` store must pass: one generic test
//! per behaviour, instantiated per store with
//! [`log_conformance_tests!`](crate::log_conformance_tests).
//!
//! A store comes to the suite as a [`LogPlace`] (where its log lives: a data
//! directory, an in-memory store, a database schema), made fresh and empty by
//! a factory for each test. A store whose log outlives its process is a
//! [`DurablePlace`] as well and also runs the SIGKILL case: a child process
//! (the test binary run again, see [`acknowledged_appends_survive_sigkill`])
//! appends until it is killed, and every append it was told is durable must
//! be there. A store that is not durable says so, with its reason, in the
//! macro call (the `not_durable = "…"` form), and that case is not generated.
//!
//! Built with the `conformance-tests` feature; `events/tests/log_conformance.rs`
//! runs it on redb, sled and the in-memory store.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{audit, replay};
use crate::codec::{self, Record};
use crate::log::{EventLog, LogError, Store};
use crate::model::{Event, EventBody, Stage, StepDetail, StoredEvent};
use crate::{JobId, TargetId, WorkerId};

/// The environment variable that turns a re-executed test binary into the
/// SIGKILL child; its value is [`DurablePlace::location`].
pub const CHILD_ENV: &str = "RECMAN_CONFORMANCE_CHILD";

/// Where one log lives, fresh and empty when the suite's factory makes it.
pub trait LogPlace: Send + Sync + 'static {
    /// Opens the log for appending and reading, creating it when there is
    /// none. While a log opened this way is alive, another `open` must fail
    /// with `LogError::Locked` (the message says "in use"); once it is dropped
    /// the next `open` sees everything appended before. A damaged last record
    /// refuses the open with a message that names `recman audit`.
    fn open(&self) -> Result<Arc<dyn EventLog>, LogError>;
    /// Opens an existing log for reading only: appends are refused, a damaged
    /// last record is tolerated (so `audit` can report it).
    fn open_for_reading(&self) -> Result<Arc<dyn EventLog>, LogError>;
    /// The stored records, with no log open, for the tamper tests.
    fn store(&self) -> Result<Arc<dyn Store>, LogError>;
}

/// A place whose log outlives its process: the SIGKILL case opens it again in
/// a child process and, after the kill, in the test.
pub trait DurablePlace: LogPlace + Sized {
    /// A string that names this place for the child process.
    fn location(&self) -> String;
    /// The place `location` names, in the child process. Dropping it must not
    /// remove the log (the test that made the place owns it).
    fn at(location: &str) -> Self;
}

/// Runs an async case on a multi-threaded runtime (so callers of the macro
/// need no tokio of their own).
pub fn block_on<F: Future>(worker_threads: usize, f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance suite")
        .block_on(f)
}

/// The libtest name of `case` in the module the macro generated
/// (`module_path!()` there, without the crate's name).
pub fn test_name(module_path: &str, case: &str) -> String {
    let module = module_path.split_once("::").map_or("", |(_, m)| m);
    if module.is_empty() {
        case.to_string()
    } else {
        format!("{module}::{case}")
    }
}

/// The suite's event number `n` of `job` (also used by the stores' own tests).
pub fn ev(job: JobId, n: u64) -> Event {
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
        by: String::new(),
    }
}

/// The suite's job number `n`.
pub fn job(n: u128) -> JobId {
    JobId::from_parts(1_764_000_000_000, n)
}

fn open(place: &impl LogPlace) -> Arc<dyn EventLog> {
    place.open().unwrap_or_else(|e| panic!("open: {e}"))
}

/// Appends `n` single-event batches over three jobs, returns (seq, event) pairs.
async fn fill(log: &dyn EventLog, n: u64) -> Vec<(u64, Event)> {
    let mut out = Vec::new();
    for i in 0..n {
        let e = ev(job(1 + u128::from(i % 3)), i);
        let seqs = log.append(vec![e.clone()]).await.expect("append");
        out.push((seqs[0], e));
    }
    out
}

fn all(log: &dyn EventLog) -> Vec<StoredEvent> {
    log.read(1, usize::MAX).expect("read")
}

/// `read_job` returns, for every job in `stored`, exactly its events in order.
fn assert_index_matches(log: &dyn EventLog, stored: &[StoredEvent]) {
    let mut by_job: BTreeMap<JobId, Vec<StoredEvent>> = BTreeMap::new();
    for s in stored {
        by_job.entry(s.event.job).or_default().push(s.clone());
    }
    for (j, want) in by_job {
        assert_eq!(log.read_job(j).unwrap(), want, "job {j}");
    }
}

pub async fn concurrent_appends_are_ordered_and_gap_free(place: impl LogPlace) {
    let log = open(&place);
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
    assert_eq!(n, 32 * (14 + 13 * 2 + 13 * 3), "every event was appended");
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

pub async fn reopen_preserves_everything_and_continues_the_chain(place: impl LogPlace) {
    let log = open(&place);
    let backend = log.backend();
    let written = fill(&*log, 25).await;
    let before = all(&*log);
    drop(log);
    let log = open(&place);
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
}

pub async fn a_second_open_is_refused_as_locked(place: impl LogPlace) {
    let log = open(&place);
    match place.open() {
        Err(LogError::Locked(msg)) => assert!(msg.contains("in use"), "{msg}"),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("second open succeeded"),
    }
    drop(log);
    assert!(place.open().is_ok(), "lock released on drop");
}

pub async fn read_job_returns_exactly_that_jobs_events(place: impl LogPlace) {
    let log = open(&place);
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

pub async fn subscribe_sees_history_then_live_appends_in_order(place: impl LogPlace) {
    let log = open(&place);
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
                // Lets the subscription catch up between rounds, so it also
                // waits for appends (not only reads history).
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut seen = Vec::new();
    while seen.len() < 23 {
        let item = tokio::time::timeout(Duration::from_secs(10), sub.recv())
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
async fn tampered(place: &impl LogPlace, n: u64, tamper: impl FnOnce(&dyn Store)) {
    let log = open(place);
    fill(&*log, 3).await;
    let rest: Vec<Event> = (3..n).map(|i| ev(job(1 + u128::from(i % 3)), i)).collect();
    assert_eq!(log.append(rest).await.unwrap(), (4..=n).collect::<Vec<_>>());
    assert!(audit(&*log).is_clean());
    drop(log);
    let store = place.store().unwrap_or_else(|e| panic!("store: {e}"));
    tamper(&*store);
}

fn findings_at(log: &dyn EventLog) -> Vec<u64> {
    let report = audit(log);
    assert!(report.unreadable.is_none());
    report.findings.iter().map(|f| f.seq).collect()
}

pub async fn a_flipped_byte_is_detected_by_read_and_audit(place: impl LogPlace) {
    tampered(&place, 10, |s| {
        let mut b = s.get(5).unwrap().unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x01;
        s.put_raw(5, Some(&b)).unwrap();
    })
    .await;
    let log = open(&place);
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

pub async fn a_changed_record_with_a_valid_crc_breaks_the_chain(place: impl LogPlace) {
    tampered(&place, 10, |s| {
        let rec = codec::decode(&s.get(5).unwrap().unwrap()).unwrap();
        let forged = codec::encode_record(&Record {
            event: ev(job(42), 999),
            ..rec
        });
        s.put_raw(5, Some(&forged)).unwrap();
    })
    .await;
    let log = open(&place);
    // The record itself is well-formed; only the chain tells.
    assert_eq!(log.read(5, 1).unwrap()[0].event, ev(job(42), 999));
    assert_eq!(findings_at(&*log), vec![6]);
    assert!(audit(&*log).findings[0].message.contains("record 5"));
    let err = replay(&*log, |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("seq 6"), "{err}");
}

pub async fn a_removed_record_is_detected(place: impl LogPlace) {
    tampered(&place, 10, |s| s.put_raw(5, None).unwrap()).await;
    let log = open(&place);
    assert_eq!(findings_at(&*log), vec![5]);
    assert!(audit(&*log).findings[0].message.contains("missing"));
    // A subscription reports the gap instead of skipping it.
    let mut sub = log.subscribe(4);
    assert_eq!(sub.recv().await.unwrap().unwrap().seq, 4);
    assert!(sub.recv().await.unwrap().is_err());
    // Removing the first record is caught too.
    drop(sub);
    drop(log);
    place.store().unwrap().put_raw(1, None).unwrap();
    let log = open(&place);
    assert_eq!(findings_at(&*log), vec![1, 5]);
}

pub async fn reordered_records_are_detected(place: impl LogPlace) {
    tampered(&place, 10, |s| {
        let a = s.get(4).unwrap().unwrap();
        let b = s.get(5).unwrap().unwrap();
        s.put_raw(4, Some(&b)).unwrap();
        s.put_raw(5, Some(&a)).unwrap();
    })
    .await;
    let log = open(&place);
    let at = findings_at(&*log);
    assert!(at.contains(&4) && at.contains(&5), "{at:?}");
    assert!(at.iter().all(|s| (4..=6).contains(s)), "{at:?}");
    assert!(matches!(log.read(4, 1), Err(LogError::Corrupt { seq: 4, .. })));
}

pub async fn a_damaged_tail_refuses_open_but_can_be_audited(place: impl LogPlace) {
    tampered(&place, 10, |s| {
        let mut b = s.get(10).unwrap().unwrap();
        b[20] ^= 0xff;
        s.put_raw(10, Some(&b)).unwrap();
    })
    .await;
    let err = place.open().err().expect("open must refuse").to_string();
    assert!(err.contains("recman audit"), "{err}");
    let log = place
        .open_for_reading()
        .unwrap_or_else(|e| panic!("open_for_reading: {e}"));
    assert_eq!(findings_at(&*log), vec![10]);
    assert!(
        log.append(vec![ev(job(1), 1)]).await.is_err(),
        "read-only log refuses appends"
    );
}

/// The child side of the SIGKILL case: opens the log at `place` and appends
/// from several tasks until it is killed, printing `ACK <seq>` for each
/// acknowledged event. Never returns.
pub fn sigkill_child(place: impl DurablePlace) -> ! {
    block_on(4, async move {
        let log = open(&place);
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
    unreachable!("the SIGKILL child appends until it is killed")
}

/// The SIGKILL case, both sides. In the test (no [`CHILD_ENV`]): three
/// rounds of running `this_test` again as a child on the same place, killing
/// it with SIGKILL after a few hundred acknowledged appends, then checking
/// that every acknowledged seq is there, the log has no gap, the job index
/// matches the records and the audit is clean. In the child (`CHILD_ENV` set):
/// [`sigkill_child`].
pub fn acknowledged_appends_survive_sigkill<P: DurablePlace>(factory: impl FnOnce() -> P, this_test: &str) {
    if let Ok(location) = std::env::var(CHILD_ENV) {
        sigkill_child(P::at(&location));
    }
    let place = factory();
    let mut acked = BTreeSet::new();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([this_test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, place.location())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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

        let log = open(&place);
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

/// Instantiates the suite for one store:
///
/// - `log_conformance_tests!(module, factory)`: every case, the SIGKILL one
///   included; `factory` is a `fn() -> P` with `P: DurablePlace`, called once
///   per test for a fresh, empty place.
/// - `log_conformance_tests!(module, factory, not_durable = "why")`: every case
///   but the SIGKILL one, for a store whose log does not outlive its process
///   (`P: LogPlace`). The reason is required and kept in the module as
///   `NOT_DURABLE`.
///
/// - `log_conformance_tests!(module, factory, needs = available)`: every case,
///   each first asking `available()` (a `fn() -> bool`) whether the store's
///   service is there; `false` skips the case (after saying why, and failing
///   under `CI=true`: see `recman_testkit::skip`).
///
/// Needs no tokio in the calling crate: each case runs on its own runtime.
#[macro_export]
macro_rules! log_conformance_tests {
    ($name:ident, $factory:expr, needs = $needs:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $crate::__log_conformance_cases!(@guarded $needs; $factory);

            #[test]
            fn acknowledged_appends_survive_sigkill() {
                if !($needs)() {
                    return;
                }
                $crate::log::conformance::acknowledged_appends_survive_sigkill(
                    $factory,
                    &$crate::log::conformance::test_name(
                        module_path!(),
                        "acknowledged_appends_survive_sigkill",
                    ),
                )
            }
        }
    };
    ($name:ident, $factory:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $crate::__log_conformance_cases!($factory);

            #[test]
            fn acknowledged_appends_survive_sigkill() {
                $crate::log::conformance::acknowledged_appends_survive_sigkill(
                    $factory,
                    &$crate::log::conformance::test_name(
                        module_path!(),
                        "acknowledged_appends_survive_sigkill",
                    ),
                )
            }
        }
    };
    ($name:ident, $factory:expr, not_durable = $why:literal) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            /// Why the SIGKILL case (`acknowledged_appends_survive_sigkill`)
            /// does not apply to this store and is not generated.
            #[allow(dead_code)]
            pub const NOT_DURABLE: &str = $why;

            $crate::__log_conformance_cases!($factory);
        }
    };
}

/// The cases every store runs (used by [`log_conformance_tests!`](crate::log_conformance_tests)).
#[doc(hidden)]
#[macro_export]
macro_rules! __log_conformance_cases {
    ($factory:expr) => {
        $crate::__log_conformance_cases!(@guarded (|| true); $factory);
    };
    (@guarded $needs:expr; $factory:expr) => {
        $crate::__log_conformance_cases!(@cases $needs; $factory;
            concurrent_appends_are_ordered_and_gap_free 4,
            reopen_preserves_everything_and_continues_the_chain 2,
            a_second_open_is_refused_as_locked 2,
            read_job_returns_exactly_that_jobs_events 2,
            subscribe_sees_history_then_live_appends_in_order 2,
            a_flipped_byte_is_detected_by_read_and_audit 2,
            a_changed_record_with_a_valid_crc_breaks_the_chain 2,
            a_removed_record_is_detected 2,
            reordered_records_are_detected 2,
            a_damaged_tail_refuses_open_but_can_be_audited 2,
        );
    };
    (@cases $needs:expr; $factory:expr; $($case:ident $threads:literal,)*) => {
        $(
            #[test]
            fn $case() {
                if !($needs)() {
                    return;
                }
                $crate::log::conformance::block_on(
                    $threads,
                    $crate::log::conformance::$case(($factory)()),
                )
            }
        )*
    };
}
