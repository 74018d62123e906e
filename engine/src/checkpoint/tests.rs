//! Start-up from checkpoints: the newest valid one is used, damaged and
//! foreign ones are skipped with a reason, the writer writes them as the
//! log grows, and the audit's check tells a wrong one.

use std::sync::Arc;
use std::time::Duration;

use recman_core::sim::{self, SimConfig};
use recman_core::{checkpoint as codec, Core, CoreConfig};
use recman_events::{log::memory, Event, EventLog};

use super::*;

fn sim_log(seed: u64) -> Vec<Event> {
    let cfg = SimConfig::full(seed, 200, 8);
    sim::run_with_log(&cfg).expect("a clean run").1
}

async fn log_of(events: &[Event]) -> Arc<dyn EventLog> {
    let log = memory::open().unwrap();
    for chunk in events.chunks(500) {
        log.append(chunk.to_vec()).await.unwrap();
    }
    log
}

fn fold(events: &[Event]) -> Core {
    let mut core = Core::new(CoreConfig::default());
    for e in events {
        core.apply(e);
    }
    core
}

/// A checkpoint of `log` at `seq`, as the writer makes it.
fn checkpoint_at(log: &dyn EventLog, events: &[Event], seq: u64) -> Vec<u8> {
    let hash = record_hash(log, seq).unwrap().unwrap();
    codec::encode(seq, &hash, fold(&events[..seq as usize]).state())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_uses_the_newest_valid_checkpoint_and_skips_bad_ones() {
    let events = sim_log(3);
    let n = events.len() as u64;
    assert!(n > 3000, "{n} events");
    let log = log_of(&events).await;
    let full = fold(&events);
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::in_data_dir(dir.path());

    // None: a full replay.
    let (core, r) = resume(CoreConfig::default(), log.as_ref(), Some(&store))
        .await
        .unwrap();
    assert_eq!((r.from, r.tail), (None, n));
    assert_eq!(core.state(), full.state());

    // Three good ones: the newest is used, only its tail replayed.
    for seq in [1000, 2000, 3000] {
        store
            .save(seq, checkpoint_at(log.as_ref(), &events, seq), 5)
            .await
            .unwrap();
    }
    let (core, r) = resume(CoreConfig::default(), log.as_ref(), Some(&store))
        .await
        .unwrap();
    assert_eq!((r.from, r.tail), (Some(3000), n - 3000));
    assert_eq!(core.state(), full.state());
    assert!(r.skipped.is_empty());

    // The newest damaged (one byte): the next older one, with the reason.
    let f = store.file(3000);
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&f, &bytes).unwrap();
    // The one before it belongs to another log (another run's history).
    let other = sim_log(4);
    let other_log = log_of(&other).await;
    store
        .save(2000, checkpoint_at(other_log.as_ref(), &other, 2000), 5)
        .await
        .unwrap();
    let (core, r) = resume(CoreConfig::default(), log.as_ref(), Some(&store))
        .await
        .unwrap();
    assert_eq!(r.from, Some(1000));
    assert_eq!(r.tail, n - 1000);
    assert_eq!(core.state(), full.state());
    assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
    assert!(r.skipped[0].1.contains("checksum"), "{:?}", r.skipped);
    assert!(
        r.skipped[1].1.contains("does not match the log's record 2000"),
        "{:?}",
        r.skipped
    );

    // One past the log's end (the log was cut): skipped too.
    let short = log_of(&events[..500]).await;
    let (core, r) = resume(CoreConfig::default(), short.as_ref(), Some(&store))
        .await
        .unwrap();
    assert_eq!(r.from, None);
    assert_eq!(core.state(), fold(&events[..500]).state());
    assert!(
        r.skipped
            .iter()
            .any(|(s, why)| *s == 1000 && why.contains("log ends at 500")),
        "{:?}",
        r.skipped
    );

    // The audit's check: the damaged and the foreign one are findings, the good one is not.
    let verdicts = verify_all(&store, log.as_ref()).await.unwrap();
    let bad: Vec<u64> = verdicts
        .iter()
        .filter(|v| v.problem.is_some())
        .map(|v| v.seq)
        .collect();
    assert_eq!(bad, vec![2000, 3000], "{verdicts:?}");
}

/// A checkpoint whose checksum and hash hold but whose state is not the
/// fold of the log (a bug in the writer): start-up cannot tell, the audit does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_check_finds_a_checkpoint_that_does_not_match_a_replay() {
    let events = sim_log(5);
    let log = log_of(&events).await;
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::in_data_dir(dir.path());
    let hash = record_hash(log.as_ref(), 1500).unwrap().unwrap();
    let mut state = fold(&events[..1500]).into_state();
    state.requests.clear();
    store
        .save(1500, codec::encode(1500, &hash, &state), 3)
        .await
        .unwrap();
    store
        .save(2500, checkpoint_at(log.as_ref(), &events, 2500), 3)
        .await
        .unwrap();
    let verdicts = verify_all(&store, log.as_ref()).await.unwrap();
    assert_eq!(verdicts.len(), 2);
    let p = verdicts[0].problem.as_deref().unwrap();
    assert!(
        p.contains("does not match a replay of the log to record 1500") && p.contains("requests"),
        "{p}"
    );
    assert_eq!(verdicts[1].problem, None);
}

/// The writer folds the durable log beside the engine and writes a
/// checkpoint every `every_events`, keeping the newest `keep`, under the
/// engine's bounds (here not the default: finished jobs leave after 1 s),
/// and `recman audit` compares them with a fold under the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_writes_checkpoints_as_the_log_grows() {
    let events = sim_log(6);
    let log = memory::open().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::in_data_dir(dir.path()));
    let ck = Checkpoints {
        store: store.clone(),
        policy: Policy {
            every_events: 1000,
            every: Duration::from_secs(3600),
            keep: 2,
            recent_finished: 40,
        },
    };
    let bounds = recman_core::Bounds {
        keep_finished_ms: 1_000,
        ..recman_core::Bounds::default()
    };
    let cfg = CoreConfig {
        bounds,
        ..CoreConfig::default()
    };
    let writer = Writer::start(ck, log.clone(), bounds);
    for chunk in events.chunks(700) {
        log.append(chunk.to_vec()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    drop(writer);
    let seqs = store.list().await.unwrap();
    assert_eq!(seqs.len(), 2, "{seqs:?}");
    assert!(seqs[1] - seqs[0] >= 1000, "{seqs:?}");
    assert!(
        events.len() as u64 - seqs[1] < 1000 + 700,
        "{seqs:?} of {}",
        events.len()
    );
    let verdicts = verify_all(store.as_ref(), log.as_ref()).await.unwrap();
    assert!(verdicts.iter().all(|v| v.problem.is_none()), "{verdicts:?}");
    let (core, r) = resume(cfg.clone(), log.as_ref(), Some(store.as_ref()))
        .await
        .unwrap();
    assert_eq!(r.from, Some(seqs[1]));
    let mut full = Core::new(cfg);
    for e in &events {
        full.apply(e);
    }
    assert_eq!(core.state(), full.state());
    assert!(
        full.state().jobs.len() < fold(&events).state().jobs.len(),
        "the bounds change what stays"
    );
    // The writer's checkpoints carry the API's view: it starts from them.
    let empty = View::new(Default::default()).with_bounds(bounds, 40);
    let (view, r) = resume_view(empty, log.as_ref(), Some(store.as_ref()))
        .await
        .unwrap();
    assert_eq!(r.from, Some(seqs[1]));
    let full_view = view_fold(&events, bounds, 40);
    assert_eq!(crate::view::shown(&view), crate::view::shown(&full_view));
}

/// The API's view folded from `events`, as `recman up` configures it
/// (here with `recent` finished jobs kept after they left the state).
fn view_fold(events: &[Event], bounds: recman_core::Bounds, recent: usize) -> View {
    let mut v = View::new(Default::default()).with_bounds(bounds, recent);
    for (i, e) in events.iter().enumerate() {
        v.apply(&recman_events::StoredEvent {
            seq: i as u64 + 1,
            event: e.clone(),
        });
    }
    v
}

/// A checkpoint at `seq` with the view's section, as the writer makes it.
fn view_checkpoint_at(log: &dyn EventLog, view: &View, seq: u64) -> Vec<u8> {
    assert_eq!(view.last_seq, seq);
    let hash = record_hash(log, seq).unwrap().unwrap();
    codec::encode_with_view(seq, &hash, &view.state, &view.encode_section())
}

/// Issue 19: the API's view starts from a checkpoint's view section and the
/// log's tail, and shows what a fold of the whole log shows (jobs, their
/// timelines, targets, catalog, mounts, clones, metrics); finished jobs
/// leave the state and the recent window during the tail too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_view_from_a_checkpoint_shows_what_a_full_fold_shows() {
    let events = sim_log(11);
    let n = events.len() as u64;
    let log = log_of(&events).await;
    let bounds = recman_core::Bounds {
        keep_finished_ms: 1_000,
        ..recman_core::Bounds::default()
    };
    let recent = 25;
    let configured = || View::new(Default::default()).with_bounds(bounds, recent);
    let full = view_fold(&events, bounds, recent);
    let shown_full = crate::view::shown(&full);
    assert!(
        shown_full["snapshots"].as_array().unwrap().len() > 10
            && shown_full["jobs"].as_array().unwrap().len() > recent
            && full.state.jobs.len() < 200,
        "a log whose jobs leave memory and fill the catalog: {} jobs listed, {} in state",
        shown_full["jobs"].as_array().unwrap().len(),
        full.state.jobs.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::in_data_dir(dir.path());
    for at in [n / 3, n - 700] {
        let half = view_fold(&events[..at as usize], bounds, recent);
        store
            .save(at, view_checkpoint_at(log.as_ref(), &half, at), 3)
            .await
            .unwrap();
        let (started, r) = resume_view(configured(), log.as_ref(), Some(&store))
            .await
            .unwrap();
        assert_eq!(r.from, Some(at));
        assert_eq!(r.tail, n - at);
        assert_eq!(started.last_seq, n);
        assert_eq!(crate::view::shown(&started), shown_full, "from record {at}");
        assert_eq!(started.state, full.state);
        // The fold goes on alike: the section restored everything it needs.
        assert_eq!(started.section(), full.section());
    }
    // The audit checks the view section too.
    let verdicts = verify_all(&store, log.as_ref()).await.unwrap();
    assert!(
        verdicts.len() == 2 && verdicts.iter().all(|v| v.problem.is_none()),
        "{verdicts:?}"
    );
}

/// A checkpoint without a usable view section (none, another
/// `recent_finished`, other bounds) leaves the API's view folded from the
/// whole log, with the reason; a view section that is not the log's fold is
/// named by the audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_view_section_falls_back_to_the_whole_log_and_the_audit_tells_a_wrong_one() {
    let events = sim_log(12);
    let n = events.len() as u64;
    let log = log_of(&events).await;
    let bounds = recman_core::Bounds::default();
    let full = view_fold(&events, bounds, 30);
    let at = n - 500;
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::in_data_dir(dir.path());
    // No view section (a state-only checkpoint): the core uses it, the view does not.
    store
        .save(at, checkpoint_at(log.as_ref(), &events, at), 3)
        .await
        .unwrap();
    let configured = |recent| View::new(Default::default()).with_bounds(bounds, recent);
    let (v, r) = resume_view(configured(30), log.as_ref(), Some(&store))
        .await
        .unwrap();
    assert_eq!(r.from, None);
    assert!(r.skipped[0].1.contains("no view section"), "{r:?}");
    assert_eq!(crate::view::shown(&v), crate::view::shown(&full));
    // Another `recent_finished`: folded from the whole log.
    let with_40 = view_fold(&events[..at as usize], bounds, 40);
    store
        .save(at, view_checkpoint_at(log.as_ref(), &with_40, at), 3)
        .await
        .unwrap();
    let (v, r) = resume_view(configured(30), log.as_ref(), Some(&store))
        .await
        .unwrap();
    assert_eq!(r.from, None);
    assert!(r.skipped[0].1.contains("recent_finished"), "{r:?}");
    assert_eq!(crate::view::shown(&v), crate::view::shown(&full));
    // The audit folds with the section's own `recent_finished`: it holds.
    let verdicts = verify_all(&store, log.as_ref()).await.unwrap();
    assert_eq!(verdicts[0].problem, None, "{verdicts:?}");
    // A view section that is not the log's: who asked for a job differs.
    let mut forged = events.clone();
    let i = (0..at as usize)
        .rev()
        .find(|i| matches!(forged[*i].body, recman_events::EventBody::Requested { .. }))
        .unwrap();
    forged[i].by = "mallory".into();
    let lie = view_fold(&forged[..at as usize], bounds, 30);
    assert_eq!(lie.state, view_fold(&events[..at as usize], bounds, 30).state);
    store
        .save(at, view_checkpoint_at(log.as_ref(), &lie, at), 3)
        .await
        .unwrap();
    let verdicts = verify_all(&store, log.as_ref()).await.unwrap();
    let problem = verdicts[0].problem.clone().unwrap_or_default();
    assert!(problem.contains("view's job steps differ"), "{verdicts:?}");
    // A version-1 checkpoint is refused by its version, never mis-read.
    let mut v1 = checkpoint_at(log.as_ref(), &events, at);
    v1[8..10].copy_from_slice(&1u16.to_le_bytes());
    store.save(at, v1, 3).await.unwrap();
    let (v, r) = resume_view(configured(30), log.as_ref(), Some(&store))
        .await
        .unwrap();
    assert_eq!(r.from, None);
    assert!(r.skipped[0].1.contains("format version 1"), "{r:?}");
    assert_eq!(v.last_seq, n);
    // Its checksum was written with it: intact, of another format, which
    // the audit does not call wrong (an upgrade leaves such ones behind);
    // with its checksum broken, it is damaged.
    let mut old = checkpoint_at(log.as_ref(), &events, at);
    old[8..10].copy_from_slice(&1u16.to_le_bytes());
    let end = old.len() - 32;
    let sum = recman_events::codec::hash(&old[..end]);
    old[end..].copy_from_slice(&sum);
    store.save(at, old.clone(), 3).await.unwrap();
    let verdicts = verify_all(&store, log.as_ref()).await.unwrap();
    assert_eq!(
        (verdicts[0].problem.as_deref(), verdicts[0].other_format),
        (None, Some(1)),
        "{verdicts:?}"
    );
    old[end] ^= 1;
    store.save(at, old, 3).await.unwrap();
    let verdicts = verify_all(&store, log.as_ref()).await.unwrap();
    assert!(
        verdicts[0]
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("format version 1")),
        "{verdicts:?}"
    );
}
