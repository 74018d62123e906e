//! Keeps the live log small: records older than `[log] archive_after` move
//! into closed segment files (`recman_events::log::segments`), once at
//! start-up and then daily, beside the engine's loop.

use std::sync::Arc;
use std::time::Duration;

use recman_events::log::segments::ArchiveReport;
use recman_events::{EventLog, LogError};
use tokio::sync::watch;

/// How often the engine looks for records to archive: `archive_after` is
/// at least a day, and each run writes what it found as one or more
/// segments, so a daily run keeps the files few (one a day, or one per
/// `segment_records`).
pub const EVERY: Duration = Duration::from_secs(86_400);
/// Events decoded per read while looking for the cut.
const CHUNK: usize = 10_000;

/// The first seq after the archived ones whose event was recorded after
/// `cutoff_ms` (Unix ms): every record before it is old enough. The seq
/// after the last when all are.
pub fn cut(log: &dyn EventLog, cutoff_ms: u64) -> Result<u64, LogError> {
    let mut from = log.segments()?.last().map_or(1, |s| s.last + 1);
    loop {
        let events = log.read(from, CHUNK)?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(from);
        };
        if let Some(young) = events.iter().find(|e| e.event.at_ms > cutoff_ms) {
            return Ok(young.seq);
        }
        from = last + 1;
    }
}

/// Archives what is older than `older_than` at `now_ms`, in segments of
/// about `per_segment` records. Blocking (reads, writes and syncs files).
pub fn run_once(
    log: &dyn EventLog,
    older_than: Duration,
    per_segment: usize,
    now_ms: u64,
) -> Result<ArchiveReport, LogError> {
    let cutoff = now_ms.saturating_sub(older_than.as_millis() as u64);
    log.archive(cut(log, cutoff)?, per_segment)
}

/// Runs [`run_once`] now and every [`EVERY`] until `stop` turns true. A
/// failed run is logged and tried again at the next turn: the records stay
/// in the live store meanwhile, nothing is lost.
pub async fn run(
    log: Arc<dyn EventLog>,
    older_than: Duration,
    per_segment: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            _ = tick.tick() => {}
        }
        let l = log.clone();
        let now = recman_events::clock::now_ms();
        let done =
            tokio::task::spawn_blocking(move || run_once(l.as_ref(), older_than, per_segment, now)).await;
        match done {
            Ok(Ok(r)) if r.records > 0 => tracing::info!(
                records = r.records,
                segments = r.segments,
                bytes = r.bytes,
                through = r.archived_through,
                "archived old log records into closed segments"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "archiving old log records failed; trying again in a day (or at the next start)")
            }
            Err(e) => {
                tracing::warn!(error = %e, "the archiving task failed; trying again in a day (or at the next start)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recman_events::{log, Backend, Event, EventBody, JobId};

    #[tokio::test]
    async fn old_records_leave_the_live_store_and_young_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let log = log::open(Backend::Redb, dir.path()).unwrap();
        let job = JobId::new_v7();
        let day = 86_400_000u64;
        let now = 100 * day;
        // 30 events a day old or older, 10 from the last hour.
        for i in 0..40u64 {
            let at_ms = if i < 30 {
                now - 40 * day + i
            } else {
                now - 1_000 + i
            };
            log.append(vec![Event {
                at_ms,
                job,
                body: EventBody::Cancelled,
                by: String::new(),
            }])
            .await
            .unwrap();
        }
        assert_eq!(cut(&*log, now - day).unwrap(), 31);
        assert_eq!(cut(&*log, 0).unwrap(), 1, "nothing that old");
        assert_eq!(cut(&*log, now).unwrap(), 41, "everything");
        let r = run_once(&*log, Duration::from_secs(86_400), 1_000, now).unwrap();
        assert_eq!((r.records, r.archived_through), (30, 30), "{r:?}");
        let again = run_once(&*log, Duration::from_secs(86_400), 1_000, now).unwrap();
        assert_eq!((again.records, again.archived_through), (0, 30), "{again:?}");
        assert_eq!(log.read(1, 100).unwrap().len(), 40, "all still readable");
        assert_eq!(log.read_job(job).unwrap().len(), 40);
        // Everything old: the last record still stays live.
        let r = run_once(&*log, Duration::from_secs(86_400), 1_000, now + 2 * day).unwrap();
        assert_eq!(r.archived_through, 39, "{r:?}");
        assert!(recman_events::audit::audit(&*log).is_clean());
    }
}
