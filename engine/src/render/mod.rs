//! How recman shows events and jobs to people, in one place: one line per
//! event (`recman events`), the live progress of a job (`recman snapshot`),
//! a job's timeline (`recman job`) and the tables of jobs, targets and
//! snapshots. The read model itself (what a timeline holds) is `view`.

use recman_events::model::{EventBody, RecoveryAction, StepDetail, StoredEvent};

use crate::view::time::rfc3339;

pub mod escape;
pub mod progress;
pub mod tables;

pub use escape::escape;

/// One readable line: `seq  time  job  kind  details`, with text from the
/// log escaped ([`escape`]): always one line, never terminal control.
pub fn line(e: &StoredEvent) -> String {
    format!(
        "{:>8}  {}  {}  {:<16}  {}",
        e.seq,
        rfc3339(e.event.at_ms),
        e.event.job.short(),
        e.event.body.kind(),
        escape(&with_by(details(&e.event.body), &e.event.by))
    )
}

/// The details, then `by=<who>` when someone caused the event.
fn with_by(details: String, by: &str) -> String {
    if by.is_empty() {
        details
    } else if details.is_empty() {
        format!("by={by}")
    } else {
        format!("{details} by={by}")
    }
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
        } => format!("{stage} attempt={attempt} deadline={}", rfc3339(*deadline_ms)),
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
            rfc3339(*not_before_ms)
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
            rfc3339(*retry_at_ms)
        ),
        EventBody::PruneFailed { target, name, error } => format!(
            "target={target} snapshot={name} code={} retryable={} message={}",
            error.code, error.retryable, error.message
        ),
        EventBody::ScheduleChanged { schedule, spec } if spec.is_empty() => {
            format!("schedule={schedule} removed")
        }
        EventBody::ScheduleChanged { schedule, spec } => format!("schedule={schedule} {spec}"),
        EventBody::ScheduleFired { schedule, slot_ms } => {
            format!("schedule={schedule} slot={}", rfc3339(*slot_ms))
        }
        EventBody::ScheduleSkipped {
            schedule,
            slot_ms,
            missed,
            reason,
        } => format!(
            "schedule={schedule} slot={} skipped={missed} reason={reason}",
            rfc3339(*slot_ms)
        ),
        EventBody::ScheduleQueued { schedule, slot_ms } => {
            format!(
                "schedule={schedule} slot={} (waits for this job)",
                rfc3339(*slot_ms)
            )
        }
        EventBody::SchedulePaused { schedule, reason, .. } => format!("schedule={schedule} reason={reason}"),
        EventBody::RpoChanged { target, rpo_ms } => {
            format!("target={target} rpo={}", recman_core::schedule::human_ms(*rpo_ms))
        }
        EventBody::RpoBreached {
            target,
            rpo_ms,
            last_good_ms,
        }
        | EventBody::RpoRestored {
            target,
            rpo_ms,
            last_good_ms,
        } => format!(
            "target={target} rpo={} last_good={}",
            recman_core::schedule::human_ms(*rpo_ms),
            if *last_good_ms == 0 {
                "none".to_string()
            } else {
                rfc3339(*last_good_ms)
            }
        ),
        EventBody::VerifyRequested {
            target,
            name,
            origin,
            replaces,
        } => format!(
            "target={target} snapshot={name} origin={origin}{}",
            if replaces.is_empty() {
                String::new()
            } else {
                format!(" replaces={}", replaces.join(","))
            }
        ),
        EventBody::VerifyStarted {
            target,
            name,
            run,
            deadline_ms,
        } => format!(
            "target={target} snapshot={name} run={run} deadline={}",
            rfc3339(*deadline_ms)
        ),
        EventBody::Verified {
            target,
            name,
            run,
            duration_us,
            checked,
        } => format!(
            "target={target} snapshot={name} run={run} took={} checked={checked}",
            micros(*duration_us)
        ),
        EventBody::VerifyFailed {
            target,
            name,
            run,
            error,
        } => format!(
            "target={target} snapshot={name} run={run} code={} message={}",
            error.code, error.message
        ),
        EventBody::ReconcileRequested { target, origin } => format!("target={target} origin={origin}"),
        EventBody::ReconcileStarted {
            target,
            run,
            deadline_ms,
        } => format!("target={target} run={run} deadline={}", rfc3339(*deadline_ms)),
        EventBody::SnapshotVanished { target, name } => {
            format!("target={target} snapshot={name} (gone from the storage: left the catalog)")
        }
        EventBody::SnapshotUnknown { target, names } => format!(
            "target={target} snapshots={} (look like recman's, in no event: not deleted)",
            join(names)
        ),
        EventBody::Reconciled {
            target,
            run,
            listed,
            vanished,
            unknown,
        } => format!("target={target} run={run} listed={listed} vanished={vanished} unknown={unknown}"),
        EventBody::ReconcileFailed { target, run, error } => format!(
            "target={target} run={run} code={} message={}",
            error.code, error.message
        ),
        EventBody::SnapshotExpiry { target, name, expiry } => {
            let hours = |h: Option<u32>| h.map_or("-".to_string(), |h| format!("{h}h"));
            format!(
                "target={target} snapshot={name} array_expiration={} array_retention={}",
                hours(expiry.expiration_hours),
                hours(expiry.retention_hours)
            )
        }
        EventBody::RecoveryRequested {
            request_id,
            target,
            name,
            action,
            origin,
        } => {
            let arg = match action {
                RecoveryAction::To { path, .. } => format!(" to={path}"),
                RecoveryAction::Mount { writable, on } => {
                    format!(" writable={writable}")
                        + &on.as_ref().map(|o| format!(" on={o}")).unwrap_or_default()
                }
                RecoveryAction::Unmount { mount } => format!(" mount={}", mount.short()),
                RecoveryAction::Clone { name } | RecoveryAction::RemoveClone { name } => {
                    format!(" clone={name}")
                }
                RecoveryAction::InPlace { .. } | RecoveryAction::Prune => String::new(),
            } + &action.until().map(|u| format!(" until={u}")).unwrap_or_default();
            let point = if name.is_empty() {
                String::new()
            } else {
                format!(" snapshot={name}")
            };
            format!(
                "request={request_id} {} target={target}{point}{arg} origin={origin}",
                action.as_str()
            )
        }
        EventBody::RecoveryStepStarted { stage, deadline_ms } => {
            format!("{stage} deadline={}", rfc3339(*deadline_ms))
        }
        EventBody::RecoveryStepDone {
            stage,
            worker,
            duration_us,
            location,
        } => format!(
            "{stage} worker={worker} took={} location={location}",
            micros(*duration_us)
        ),
        EventBody::RecoveryStepFailed { stage, worker, error } => format!(
            "{stage}{} error={}: {}",
            worker
                .as_ref()
                .map(|w| format!(" worker={w}"))
                .unwrap_or_default(),
            error.code,
            error.message
        ),
        EventBody::RecoveryCompleted { location } => format!("location={location}"),
        EventBody::RecoveryStepNoted { stage, note } => format!("{stage} {note}"),
        EventBody::ApprovalRequired { expires_ms } => format!("expires={}", rfc3339(*expires_ms)),
        EventBody::Approved { requester } => format!("requested_by={requester}"),
        EventBody::RecoveryFailed { reason, live } => {
            format!(
                "live={} reason={reason}",
                serde_json::to_value(live)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            )
        }
    }
}

fn step_detail(d: &StepDetail) -> String {
    match d {
        StepDetail::None => String::new(),
        StepDetail::Frozen { deadline_ms } => format!("watchdog_at={}", rfc3339(*deadline_ms)),
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
        StepDetail::Verified { checked } => format!("checked={checked}"),
        StepDetail::Listed { names } => format!("listed={}", names.len()),
        StepDetail::Recovered { location, info } => {
            let sep = if info.is_empty() { "" } else { " info=" };
            format!("location={location}{sep}{info}")
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(micros(999), "999µs");
        assert_eq!(micros(1_500), "1.5ms");
        assert_eq!(micros(2_340_000), "2.34s");
    }
}
