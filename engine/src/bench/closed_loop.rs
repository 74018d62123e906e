//! The closed loop of `bench jobs`, in-process or over RabbitMQ: one client
//! per target submits a job, follows it to its end through the engine
//! handle, submits the next; and the bench's config (targets with no-op
//! writer and provider).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use recman_config::Config;
use recman_events::{
    Backend, EventBody, RequestId, SnapshotKind, SnapshotRequest, Stage, StoredEvent, TargetId,
    SCHEMA_VERSION,
};

use super::measure::{AbortOnDrop, Finished};
use crate::handle::Caller;

/// What a run of the loop is given.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub jobs: u64,
    /// Targets, = jobs in flight.
    pub targets: u64,
    /// The log's storage engine.
    pub backend: Backend,
}

/// `targets` targets `bench-<n>` with no-op writer and provider, in `pool`
/// (else the default pool).
pub fn config(targets: u64, dir: &Path, pool: Option<&str>) -> anyhow::Result<Config> {
    let text = config_text(targets, pool);
    Ok(Config::from_str(&text, dir.join("bench.toml"))?)
}

/// The text of [`config`] (worker processes read it from a file).
pub fn config_text(targets: u64, pool: Option<&str>) -> String {
    let mut text = String::new();
    for t in 0..targets {
        text.push_str(&format!("[[target]]\nid = \"bench-{t}\"\n"));
        if let Some(p) = pool {
            text.push_str(&format!("pool = \"{p}\"\n"));
        }
        text.push_str("[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"none\"\n");
    }
    text
}

/// How a job ended: completed or not, and its freeze overhead (freeze
/// window minus the provider's time).
fn finished(events: &[StoredEvent]) -> Finished {
    let mut provider_us = None;
    for e in events {
        match &e.event.body {
            EventBody::StepSucceeded {
                stage: Stage::Snapshot,
                duration_us,
                ..
            } => provider_us = Some(*duration_us),
            EventBody::Completed { freeze_window_us, .. } => {
                return Finished {
                    completed: true,
                    overhead_us: provider_us.map(|p| freeze_window_us.saturating_sub(p)),
                }
            }
            _ => {}
        }
    }
    Finished {
        completed: false,
        overhead_us: None,
    }
}

/// Runs the closed loop: one client per target submits a job through
/// `engine`, waits for its end, submits the next. Progress on stderr
/// every second. Returns each job's latency and end, and the seconds the
/// whole took.
pub async fn drive(
    engine: &Caller,
    jobs: u64,
    targets: u64,
) -> anyhow::Result<(Vec<(Duration, Finished)>, f64)> {
    let done = Arc::new(AtomicU64::new(0));
    let progress = {
        let done = done.clone();
        let total = jobs;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!("  finished {} / {total}", done.load(Ordering::Relaxed));
            }
        })
    };
    let progress = AbortOnDrop(progress);
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for t in 0..targets {
        let count = jobs / targets + u64::from(t < jobs % targets);
        let (engine, done) = (engine.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let target = TargetId::from(format!("bench-{t}"));
            let mut out = Vec::with_capacity(count as usize);
            for i in 0..count {
                let req = SnapshotRequest {
                    schema_version: SCHEMA_VERSION,
                    request_id: RequestId::from(format!("bench-{t}-{i}")),
                    targets: vec![target.clone()],
                    kind: SnapshotKind::Full,
                };
                let start = Instant::now();
                let (_, events) = engine.submit_and_wait(req, "bench").await?;
                out.push((start.elapsed(), finished(&events)));
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(out)
        }));
    }
    let mut results = Vec::with_capacity(jobs as usize);
    for c in clients {
        results.extend(c.await??);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    drop(progress);
    Ok((results, elapsed))
}
