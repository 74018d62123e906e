//! `recman events`: prints the event log, one readable line (or one JSON
//! `EventMessage`) per event, optionally for one job, optionally following.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use recman_events::log::{open_for_reading, LogError};
use recman_events::model::{EventBody, StepDetail, StoredEvent};
use recman_events::{EventMessage, JobId, SCHEMA_VERSION};

use super::Global;

/// Events read per chunk.
const CHUNK: usize = 4096;
/// How often `--follow` looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  recman events --job 019ab3c4-…      one job's history\n  \
recman events --json --from 1000    machine-readable, one EventMessage per line\n\n\
The log belongs to one process at a time: while an engine (`recman up`) owns it, `--follow`\n\
waits and says so; between CLI runs it picks up new events every half second."
)]
pub struct Args {
    /// First sequence number to print.
    #[arg(long, default_value_t = 1, value_name = "SEQ")]
    pub from: u64,
    /// Only the events of this job (its full UUID).
    #[arg(long, value_name = "ID")]
    pub job: Option<JobId>,
    /// One JSON object per line (the `EventMessage` wire schema).
    #[arg(long)]
    pub json: bool,
    /// Keep running and print new events as they are appended.
    #[arg(long)]
    pub follow: bool,
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    if let Some(code) = super::events_remote::run(g, &a).await? {
        return Ok(code);
    }
    let dir = g.data_dir.clone();
    let mut next = a.from.max(1);
    let mut out = std::io::stdout().lock();
    next = print_from(&dir, next, &a, &mut out)
        .map_err(|e| anyhow::anyhow!("cannot read the event log in {}: {e}", dir.display()))?;
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut told_locked = false;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        match print_from(&dir, next, &a, &mut out) {
            Ok(n) => {
                next = n;
                told_locked = false;
            }
            Err(e) if matches!(e.downcast_ref::<LogError>(), Some(LogError::Locked(_))) => {
                if !told_locked {
                    eprintln!("note: the log is owned by a running recman process; waiting for it to let go");
                    told_locked = true;
                }
            }
            Err(e) => anyhow::bail!("cannot read the event log in {}: {e}", dir.display()),
        }
    }
}

/// Opens the log, prints events from `next` on, closes it, returns the next seq to print.
fn print_from(dir: &Path, mut next: u64, a: &Args, out: &mut impl Write) -> anyhow::Result<u64> {
    // Keep the LogError itself (for `Locked` below), formatted once: its
    // Display already includes its source.
    let log = open_for_reading(dir)?;
    if let Some(job) = a.job {
        let from = next;
        for e in log.read_job(job)?.into_iter().filter(|e| e.seq >= from) {
            print_event(&e, a.json, out)?;
            next = e.seq + 1;
        }
    } else {
        loop {
            let chunk = log.read(next, CHUNK)?;
            let Some(last) = chunk.last().map(|e| e.seq) else {
                break;
            };
            for e in &chunk {
                print_event(e, a.json, out)?;
            }
            next = last + 1;
            if chunk.len() < CHUNK {
                break;
            }
        }
    }
    out.flush()?;
    Ok(next)
}

fn print_event(e: &StoredEvent, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if json {
        let msg = EventMessage {
            schema_version: SCHEMA_VERSION,
            seq: e.seq,
            event: e.event.clone(),
        };
        serde_json::to_writer(&mut *out, &msg)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", line(e))?;
    }
    Ok(())
}

/// One readable line: `seq  time  job  kind  details`.
pub fn line(e: &StoredEvent) -> String {
    format!(
        "{:>8}  {}  {}  {:<16}  {}",
        e.seq,
        format_time_ms(e.event.at_ms),
        e.event.job.short(),
        e.event.body.kind(),
        details(&e.event.body)
    )
}

/// The variant's fields, short and readable.
pub fn details(body: &EventBody) -> String {
    let join = |v: &[String]| v.join(",");
    match body {
        EventBody::Requested {
            request_id,
            targets,
            kind,
            origin,
        } => format!(
            "request={request_id} targets={} kind={} origin={origin}",
            join(&targets.iter().map(|t| t.to_string()).collect::<Vec<_>>()),
            kind.as_str()
        ),
        EventBody::Queued { behind } => format!(
            "behind={}",
            join(&behind.iter().map(|j| j.short()).collect::<Vec<_>>())
        ),
        EventBody::AttemptStarted { attempt, .. } => format!("attempt={attempt}"),
        EventBody::StageStarted {
            stage,
            attempt,
            deadline_ms,
        } => format!(
            "{stage} attempt={attempt} deadline={}",
            format_time_ms(*deadline_ms)
        ),
        EventBody::StepSucceeded {
            stage,
            attempt,
            target,
            worker,
            duration_us,
            detail,
        } => {
            let d = step_detail(detail);
            let sep = if d.is_empty() { "" } else { " " };
            format!(
                "{stage} attempt={attempt} target={target} worker={worker} took={}{sep}{d}",
                micros(*duration_us)
            )
        }
        EventBody::StepFailed {
            stage,
            attempt,
            target,
            worker,
            error,
        } => format!(
            "{stage} attempt={attempt} target={target}{} error={}{}: {}",
            worker
                .as_ref()
                .map(|w| format!(" worker={w}"))
                .unwrap_or_default(),
            error.code,
            if error.retryable { " (retryable)" } else { "" },
            error.message
        ),
        EventBody::StageTimedOut { stage, attempt } => format!("{stage} attempt={attempt}"),
        EventBody::ForcedThaw { attempt, reason } => format!("attempt={attempt} reason={reason}"),
        EventBody::WatchdogThawed {
            attempt,
            target,
            worker,
            freeze_window_us,
        } => format!(
            "attempt={attempt} target={target} worker={worker} frozen_for={}",
            micros(*freeze_window_us)
        ),
        EventBody::RetryScheduled {
            next_attempt,
            not_before_ms,
            reason,
        } => format!(
            "next_attempt={next_attempt} not_before={} reason={reason}",
            format_time_ms(*not_before_ms)
        ),
        EventBody::Completed {
            attempt,
            snapshot,
            freeze_window_us,
        } => format!(
            "attempt={attempt} snapshot={} ({} at {}) freeze_window={}",
            snapshot.name,
            snapshot.provider,
            snapshot.location,
            micros(*freeze_window_us)
        ),
        EventBody::Failed { attempt, reason } => format!("attempt={attempt} reason={reason}"),
        EventBody::CancelRequested { reason } => format!("reason={reason}"),
        EventBody::Cancelled => String::new(),
        EventBody::SnapshotDeleted { target, name } => format!("target={target} snapshot={name}"),
        EventBody::LateSnapshot {
            attempt,
            target,
            worker,
            snapshot,
        } => format!(
            "attempt={attempt} target={target} worker={worker} snapshot={} (not a restore point: deleted)",
            snapshot.name
        ),
        EventBody::PruneRequested {
            target,
            names,
            retry_at_ms,
        } => format!(
            "target={target} snapshots={} retry_at={}",
            names.join(","),
            format_time_ms(*retry_at_ms)
        ),
        EventBody::PruneFailed { target, name, error } => format!(
            "target={target} snapshot={name} code={} retryable={} message={}",
            error.code, error.retryable, error.message
        ),
    }
}

fn step_detail(d: &StepDetail) -> String {
    match d {
        StepDetail::None => String::new(),
        StepDetail::Frozen { deadline_ms } => format!("watchdog_at={}", format_time_ms(*deadline_ms)),
        StepDetail::Snapshot(s) => format!(
            "snapshot={} location={}{}",
            s.name,
            s.location,
            if s.existed { " (already there)" } else { "" }
        ),
        StepDetail::Thawed {
            freeze_window_us,
            by_watchdog,
        } => format!(
            "frozen_for={}{}",
            micros(*freeze_window_us),
            if *by_watchdog { " by_watchdog" } else { "" }
        ),
        StepDetail::Flushed => "flushed".into(),
        StepDetail::Pruned { deleted, failed } => {
            let mut s = format!("deleted={}", deleted.join(","));
            for f in failed {
                s.push_str(&format!(" failed={}:{}", f.name, f.error.code));
            }
            s
        }
    }
}

pub fn micros(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{us}µs")
    }
}

/// Unix milliseconds as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ` (no clock, no tz database).
pub fn format_time_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_time_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time_ms(1_764_081_211_123), "2025-11-25T14:33:31.123Z");
        assert_eq!(format_time_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
