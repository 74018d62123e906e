//! The events relay resumes after a crash without loss or reordering: a bus
//! that "crashes" after the broker took a batch but before the relay saw the
//! confirm (so the cursor did not move), then a fresh relay on the same log
//! and cursor. Subscribers see every seq, first appearances in log order, and
//! a duplicate carries the same `message_id`. Runs on the in-process bus (the
//! relay is transport-agnostic) and needs no broker. And on the in-process
//! bus in earnest: an ephemeral cursor starts at the log's end and stores
//! nothing.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use recman_engine::runtime::relay::{self, Cursor, RelayOptions};
use recman_events::bus::{Address, Bus, BusError, Consumer, Message};
use recman_events::log::BoxFuture;
use recman_events::{
    log, Backend, Event, EventBody, EventLog, JobId, MemoryBus, RequestId, SnapshotKind, TargetId,
};

/// Passes publishes on until `budget` messages went through; the batch that
/// crosses it is delivered but reported as failed (a crash before the confirm).
struct CrashingBus {
    inner: MemoryBus,
    budget: AtomicUsize,
}

impl Bus for CrashingBus {
    fn publish(&self, to: Address, msg: Message) -> BoxFuture<'_, Result<(), BusError>> {
        self.publish_batch(vec![(to, msg)])
    }

    fn publish_batch(&self, msgs: Vec<(Address, Message)>) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let n = msgs.len();
            self.inner.publish_batch(msgs).await?;
            let left = self.budget.load(Ordering::SeqCst);
            if n >= left {
                self.budget.store(0, Ordering::SeqCst);
                return Err(BusError::Broker("connection lost before the confirm".into()));
            }
            self.budget.store(left - n, Ordering::SeqCst);
            Ok(())
        })
    }

    fn consume(&self, from: Address, prefetch: u16) -> BoxFuture<'_, Result<Consumer, BusError>> {
        self.inner.consume(from, prefetch)
    }
}

fn requested(i: usize) -> Event {
    Event {
        at_ms: 1,
        job: JobId::new_v7(),
        body: EventBody::Requested {
            request_id: RequestId::from(format!("r{i}").as_str()),
            targets: vec![TargetId::from(format!("t{}", i % 3).as_str())],
            kind: SnapshotKind::Full,
            origin: "test".into(),
        },
        by: String::new(),
    }
}

async fn drain(c: &mut Consumer, until_seq: u64) -> Vec<(u64, String, String)> {
    let mut got = Vec::new();
    loop {
        let d = tokio::time::timeout(recman_testkit::DEADLINE, c.recv())
            .await
            .expect("events keep coming")
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.message.body).unwrap();
        let seq = v["seq"].as_u64().unwrap();
        let key = d
            .message
            .header(recman_events::bus::ROUTING_KEY_HEADER)
            .unwrap()
            .to_string();
        // Each event is in its job's trace: trace id = the job's UUID.
        let job = v["event"]["job"].as_str().expect("the event names its job");
        let tp = d.message.header("traceparent").expect("a traceparent header");
        assert_eq!(
            tp.split('-').nth(1),
            Some(job.replace('-', "").as_str()),
            "{tp} vs {job}"
        );
        got.push((seq, d.message.message_id.clone(), key));
        d.ack().await.unwrap();
        if seq == until_seq {
            return got;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_resumes_after_a_crash_without_loss_or_reordering() {
    let dir = recman_testkit::temp_dir();
    let log: Arc<dyn EventLog> = log::open_detected(dir.path(), Backend::Redb).unwrap();
    let mem = MemoryBus::new();
    let mut sub = mem.consume(Address::Events, 0).await.unwrap();
    for chunk in 0..10 {
        log.append((0..50).map(|i| requested(chunk * 50 + i)).collect())
            .await
            .unwrap();
    }
    let total = log.last_seq();
    assert_eq!(total, 500);

    // First run: crashes after ~200 events went out.
    let crashing = Arc::new(CrashingBus {
        inner: mem.clone(),
        budget: AtomicUsize::new(200),
    });
    let r = relay::run_with(
        log.clone(),
        crashing,
        Cursor::in_data_dir(dir.path()),
        per_event(),
        std::future::pending(),
    )
    .await;
    assert!(r.is_err(), "the relay reports the failed publish");
    let saved = Cursor::in_data_dir(dir.path()).load().unwrap();
    // What reached subscribers before the crash: a prefix of the log.
    let mut before = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
        let v: serde_json::Value = serde_json::from_slice(&d.message.body).unwrap();
        before.push(v["seq"].as_u64().unwrap());
        d.ack().await.unwrap();
    }
    assert!(
        before.len() >= 200,
        "the crash came after the broker took the batch"
    );
    assert_eq!(before, (1..=before.len() as u64).collect::<Vec<u64>>());
    assert!(
        saved < before.len() as u64,
        "the cursor never passes an unconfirmed event (at {saved})"
    );

    // Second run, more events appended meanwhile.
    log.append((500..520).map(requested).collect()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(relay::run_with(
        log.clone(),
        Arc::new(mem.clone()),
        Cursor::in_data_dir(dir.path()),
        per_event(),
        async move {
            let _ = stopped.await;
        },
    ));
    let after = drain(&mut sub, 520).await;
    let _ = stop.send(());
    second.await.unwrap().unwrap();
    assert_eq!(Cursor::in_data_dir(dir.path()).load().unwrap(), 520);

    // It resumes right after the cursor: the unconfirmed tail again (same
    // ids), then the rest, in log order, nothing skipped.
    let seqs: Vec<u64> = after.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(seqs, (saved + 1..=520).collect::<Vec<u64>>());
    for (seq, id, key) in &after {
        assert_eq!(id, &format!("event/{seq}"), "a duplicate keeps its message_id");
        assert!(key.starts_with("requested.t"), "routing key {key}");
    }
}

/// One message per event whatever the load (the format of low rates).
fn per_event() -> RelayOptions {
    RelayOptions {
        batch_over: usize::MAX,
        ..RelayOptions::default()
    }
}

/// Reads relayed messages (either form) until `until_seq` was seen:
/// (seqs inside, message id, routing key) per message.
async fn drain_any(c: &mut Consumer, until_seq: u64) -> Vec<(Vec<u64>, String, String)> {
    let mut got = Vec::new();
    loop {
        let d = tokio::time::timeout(recman_testkit::DEADLINE, c.recv())
            .await
            .expect("events keep coming")
            .unwrap();
        let seqs: Vec<u64> = relay::events_of(&d.message)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        let key = d
            .message
            .header(recman_events::bus::ROUTING_KEY_HEADER)
            .unwrap()
            .to_string();
        let done = seqs.contains(&until_seq);
        got.push((seqs, d.message.message_id.clone(), key));
        d.ack().await.unwrap();
        if done {
            return got;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_batches_under_load_and_resumes_with_the_same_ids() {
    let dir = recman_testkit::temp_dir();
    let log: Arc<dyn EventLog> = log::open_detected(dir.path(), Backend::Redb).unwrap();
    let mem = MemoryBus::new();
    let mut sub = mem.consume(Address::Events, 0).await.unwrap();
    log.append((0..500).map(requested).collect()).await.unwrap();
    let opts = RelayOptions {
        batch_over: 32,
        max_events: 64,
        ..RelayOptions::default()
    };

    // First run: the broker takes every message of the round, the confirm never comes.
    let crashing = Arc::new(CrashingBus {
        inner: mem.clone(),
        budget: AtomicUsize::new(3),
    });
    let r = relay::run_with(
        log.clone(),
        crashing,
        Cursor::in_data_dir(dir.path()),
        opts.clone(),
        std::future::pending(),
    )
    .await;
    assert!(r.is_err(), "the relay reports the failed publish");
    let saved = Cursor::in_data_dir(dir.path()).load().unwrap();
    let mut before = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
        let seqs: Vec<u64> = relay::events_of(&d.message)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        before.push((seqs, d.message.message_id.clone()));
        d.ack().await.unwrap();
    }
    assert!(
        saved < 500,
        "the cursor never passes an unconfirmed event (at {saved})"
    );

    // Second run, 20 more events meanwhile.
    log.append((500..520).map(requested).collect()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(relay::run_with(
        log.clone(),
        Arc::new(mem.clone()),
        Cursor::in_data_dir(dir.path()),
        opts,
        async move {
            let _ = stopped.await;
        },
    ));
    let after = drain_any(&mut sub, 520).await;
    let _ = stop.send(());
    second.await.unwrap().unwrap();
    assert_eq!(Cursor::in_data_dir(dir.path()).load().unwrap(), 520);

    // Batches: at most 64 events, contiguous, id = the seq range, routing key `batch`.
    assert!(
        after.iter().any(|(s, _, _)| s.len() > 1),
        "events went out batched"
    );
    for (seqs, id, key) in &after {
        assert!(seqs.len() <= 64);
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "contiguous: {seqs:?}");
        if seqs.len() > 1 {
            assert_eq!(id, &format!("events/{}-{}", seqs[0], seqs[seqs.len() - 1]));
            assert_eq!(key, relay::BATCH_KEY);
        }
    }
    // The range sent again after the crash (from the same cursor, as many
    // events waiting) carries the same id: subscribers can drop it by id, and
    // in any case by seq.
    let resent = before
        .iter()
        .find(|(s, _)| s[0] == saved + 1)
        .expect("the broker took the round the confirm of which never came");
    assert_eq!(after[0].0[0], saved + 1);
    if resent.0.len() == 64 && after[0].0.len() == 64 {
        assert_eq!(after[0].1, resent.1, "the same batch again, with its id");
    }
    // Nothing lost or reordered: resumes right after the cursor.
    let seqs: Vec<u64> = after.iter().flat_map(|(s, _, _)| s.iter().copied()).collect();
    assert_eq!(seqs, (saved + 1..=520).collect::<Vec<u64>>());
}

#[test]
fn cursor_is_written_durably_and_read_back() {
    let dir = recman_testkit::temp_dir();
    let c = Cursor::in_data_dir(dir.path());
    assert_eq!(c.load().unwrap(), 0);
    c.store(42).unwrap();
    assert_eq!(Cursor::in_data_dir(dir.path()).load().unwrap(), 42);
    assert!(!dir.path().join(relay::CURSOR_FILE).with_extension("tmp").exists());
    std::fs::write(dir.path().join(relay::CURSOR_FILE), "garbage").unwrap();
    let e = c.load().unwrap_err().to_string();
    assert!(e.contains("delete it to re-publish"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_cursor_starts_at_the_log_end_and_stores_nothing() {
    let dir = recman_testkit::temp_dir();
    let log: Arc<dyn EventLog> = log::open_detected(dir.path(), Backend::Redb).unwrap();
    log.append((0..10).map(requested).collect()).await.unwrap();
    let mem = MemoryBus::new();
    let mut sub = mem.consume(Address::Events, 0).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut run = Box::pin(relay::run_with(
        log.clone(),
        Arc::new(mem.clone()),
        Cursor::ephemeral(),
        per_event(),
        async move {
            let _ = stopped.await;
        },
    ));
    // Its first poll fixes where it starts (seq 10); then append: only the new ones go out.
    std::future::poll_fn(|cx| {
        assert!(run.as_mut().poll(cx).is_pending(), "the relay runs until stopped");
        std::task::Poll::Ready(())
    })
    .await;
    let relay = tokio::spawn(run);
    log.append((10..15).map(requested).collect()).await.unwrap();
    let got = drain(&mut sub, 15).await;
    let _ = stop.send(());
    relay.await.unwrap().unwrap();
    let seqs: Vec<u64> = got.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(
        seqs,
        (11..=15).collect::<Vec<u64>>(),
        "history is not re-published"
    );
    assert!(
        !dir.path().join(relay::CURSOR_FILE).exists(),
        "an ephemeral cursor writes no file"
    );
}

/// A request for `n` targets with long names: a big event.
fn wide(i: usize, n: usize) -> Event {
    Event {
        at_ms: 1,
        job: JobId::new_v7(),
        body: EventBody::Requested {
            request_id: RequestId::from(format!("w{i}").as_str()),
            targets: (0..n)
                .map(|t| TargetId::from(format!("a-rather-long-target-name-{t:04}").as_str()))
                .collect(),
            kind: SnapshotKind::Full,
            origin: "test".into(),
        },
        by: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_carry_their_seq_range_in_headers_and_respect_the_size_limit() {
    let dir = recman_testkit::temp_dir();
    let log: Arc<dyn EventLog> = log::open_detected(dir.path(), Backend::Redb).unwrap();
    let mem = MemoryBus::new();
    let mut sub = mem.consume(Address::Events, 0).await.unwrap();
    // 30 requests of ~1.5 kB JSON, 30 failures with 2 kB of stderr each,
    // then one request of ~40 kB: bigger than the limit.
    let mut events: Vec<Event> = (0..30).map(|i| wide(i, 40)).collect();
    events.extend((0..30).map(|_| Event {
        at_ms: 1,
        job: JobId::new_v7(),
        body: EventBody::StepFailed {
            stage: recman_events::Stage::Freeze,
            attempt: 1,
            target: TargetId::from("t0"),
            worker: None,
            error: recman_events::StepError {
                code: "exec_failed".into(),
                message: "x".repeat(2048),
                retryable: true,
            },
        },
        by: String::new(),
    }));
    events.push(wide(60, 1000));
    log.append(events).await.unwrap();
    let opts = RelayOptions {
        batch_over: 0,
        max_events: 1000,
        max_bytes: 8 * 1024,
        ..RelayOptions::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(relay::run_with(
        log.clone(),
        Arc::new(mem.clone()),
        Cursor::in_data_dir(dir.path()),
        opts.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut seen = Vec::new();
    while seen.last() != Some(&61) {
        let d = tokio::time::timeout(recman_testkit::DEADLINE, sub.recv())
            .await
            .expect("events keep coming")
            .unwrap();
        let seqs: Vec<u64> = relay::events_of(&d.message)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        let (first, last) = (seqs[0], seqs[seqs.len() - 1]);
        assert_eq!(d.message.msg_type, relay::BATCH_TYPE);
        assert_eq!(
            d.message.header("x-recman-first-seq"),
            Some(first.to_string().as_str())
        );
        assert_eq!(
            d.message.header("x-recman-last-seq"),
            Some(last.to_string().as_str())
        );
        assert_eq!(d.message.message_id, format!("events/{first}-{last}"));
        if seqs.len() > 1 {
            assert!(
                d.message.body.len() <= opts.max_bytes,
                "a batch of {} events is {} bytes, over the {} limit",
                seqs.len(),
                d.message.body.len(),
                opts.max_bytes
            );
        } else if first == 61 {
            assert!(d.message.body.len() > opts.max_bytes, "the big event goes alone");
        }
        seen.extend(seqs);
        d.ack().await.unwrap();
    }
    assert_eq!(seen, (1..=61).collect::<Vec<u64>>(), "every event once, in order");
    let _ = stop.send(());
    run.await.unwrap().unwrap();
}
