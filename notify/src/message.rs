//! What a sink delivers: one [`Notification`] per event that passes its
//! filter, or a daily summary. The JSON form is the webhook body; the email
//! sink renders the same fields as text.

use recman_events::export::{Head, HeadLine};
use recman_events::{EventBody, JobId, StoredEvent, TargetId};
use serde::Serialize;

use crate::time::rfc3339;

/// The `version` field of every notification body.
pub const NOTIFICATION_VERSION: u32 = 1;

/// One notification (webhook body: this, as JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notification {
    pub version: u32,
    /// The event kind (`failed`, `rpo_breached`, …) or `summary`.
    pub kind: String,
    /// Stable id of this notification (`event/<seq>`, `summary/<at_ms>`):
    /// the same on every retry, for receivers to drop duplicates.
    pub delivery: String,
    /// When the event happened (RFC 3339, UTC) and as Unix ms.
    pub at: String,
    pub at_ms: u64,
    /// The event's sequence number in the log (none for a summary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The job (none for facts about no job, and for a summary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    /// The targets concerned (a job's targets, or the event's own target).
    pub targets: Vec<TargetId>,
    /// One line for people.
    pub summary: String,
    /// The event itself, as in the event schema (`schemas/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
    /// A daily summary's per-target report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Vec<TargetReport>>,
    /// `log_head`: the log's head (`seq`, `hash`: BLAKE3 of record `seq`'s
    /// bytes, `at`), for `recman audit --check-head SEQ:HASH` later.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadLine>,
}

/// One target in a daily summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetReport {
    pub target: TargetId,
    /// The newest restore point taken (a completed snapshot), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_good_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_good_snapshot: Option<String>,
    /// `ok`, `breached`, or `none` (no RPO set).
    pub rpo: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpo_ms: Option<u64>,
    /// Jobs of the target that failed in the 24 hours before the summary.
    pub failures_24h: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

impl Notification {
    /// The notification of `e`, whose job concerns `targets`.
    pub fn of_event(e: &StoredEvent, targets: Vec<TargetId>) -> Notification {
        let ev = &e.event;
        let job = (ev.job != JobId::NONE).then_some(ev.job);
        Notification {
            version: NOTIFICATION_VERSION,
            kind: ev.body.kind().to_string(),
            delivery: format!("event/{}", e.seq),
            at: rfc3339(ev.at_ms),
            at_ms: ev.at_ms,
            seq: Some(e.seq),
            job,
            summary: human(&ev.body, &targets),
            targets,
            event: serde_json::to_value(ev).ok(),
            report: None,
            head: None,
        }
    }

    /// The log's `head`, read at `at_ms`.
    pub fn log_head(head: Head, at_ms: u64) -> Notification {
        Notification {
            version: NOTIFICATION_VERSION,
            kind: recman_config::LOG_HEAD_KIND.into(),
            delivery: format!("log_head/{}/{at_ms}", head.seq),
            at: rfc3339(at_ms),
            at_ms,
            seq: Some(head.seq),
            job: None,
            targets: Vec::new(),
            summary: format!(
                "event log head: seq {} hash {} (check later: recman audit --check-head {head})",
                head.seq,
                head.hash_hex()
            ),
            event: None,
            report: None,
            head: Some(head.line(at_ms)),
        }
    }

    /// A daily summary of `report`, at `at_ms`.
    pub fn summary(at_ms: u64, report: Vec<TargetReport>) -> Notification {
        let breached = report.iter().filter(|r| r.rpo == "breached").count();
        let failures: u32 = report.iter().map(|r| r.failures_24h).sum();
        Notification {
            version: NOTIFICATION_VERSION,
            kind: "summary".into(),
            delivery: format!("summary/{at_ms}"),
            at: rfc3339(at_ms),
            at_ms,
            seq: None,
            job: None,
            targets: report.iter().map(|r| r.target.clone()).collect(),
            summary: format!(
                "daily summary: {} target{}, {breached} outside their RPO, {failures} failed job{} in 24 h",
                report.len(),
                if report.len() == 1 { "" } else { "s" },
                if failures == 1 { "" } else { "s" },
            ),
            event: None,
            report: Some(report),
            head: None,
        }
    }

    /// An email subject: `[recman] failed: pg-main`.
    pub fn subject(&self) -> String {
        if self.kind == "summary" {
            return format!("[recman] {}", self.summary);
        }
        let targets: Vec<&str> = self.targets.iter().map(|t| t.as_str()).collect();
        match targets.as_slice() {
            [] => format!("[recman] {}", self.kind),
            t => format!("[recman] {}: {}", self.kind, t.join(", ")),
        }
    }

    /// The notification as plain text (an email body).
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}\n\nkind:     {}\nat:       {}\n",
            self.summary, self.kind, self.at
        );
        if !self.targets.is_empty() {
            let t: Vec<&str> = self.targets.iter().map(|t| t.as_str()).collect();
            out.push_str(&format!("targets:  {}\n", t.join(", ")));
        }
        if let Some(j) = &self.job {
            out.push_str(&format!("job:      {j}\n"));
        }
        if let Some(h) = &self.head {
            out.push_str(&format!("head:     {}:{}\n", h.seq, h.hash));
        } else if let Some(s) = self.seq {
            out.push_str(&format!("event:    {s} (recman events --from {s})\n"));
        }
        for r in self.report.iter().flatten() {
            out.push_str(&format!(
                "\n{}: last good {} ({}), RPO {}, {} failed in 24 h{}\n",
                r.target,
                r.last_good_at.as_deref().unwrap_or("never"),
                r.last_good_snapshot.as_deref().unwrap_or("-"),
                r.rpo,
                r.failures_24h,
                r.last_failure
                    .as_deref()
                    .map(|f| format!(", last: {f}"))
                    .unwrap_or_default()
            ));
        }
        out
    }
}

fn list(targets: &[TargetId]) -> String {
    match targets {
        [] => "(no target)".into(),
        t => t.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "),
    }
}

fn hours(ms: u64) -> String {
    if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// One line for people about `body`.
fn human(body: &EventBody, targets: &[TargetId]) -> String {
    let t = list(targets);
    match body {
        EventBody::Failed { attempt, reason } => {
            format!("snapshot of {t} failed (attempt {attempt}): {reason}")
        }
        EventBody::Completed { snapshot, .. } => format!("snapshot of {t} completed: {}", snapshot.name),
        EventBody::Cancelled => format!("snapshot of {t} cancelled"),
        EventBody::StepFailed {
            stage,
            attempt,
            target,
            error,
            ..
        } => format!(
            "{target}: {} step failed (attempt {attempt}): {error}",
            stage.as_str()
        ),
        EventBody::PruneFailed { target, name, error } => {
            format!("{target}: could not delete snapshot {name}: {error}")
        }
        EventBody::SnapshotDeleted { target, name } => format!("{target}: snapshot {name} deleted"),
        EventBody::ApprovalRequired { .. } => format!(
            "an in-place restore of {t} waits for a second admin's approval (`recman approve JOB`, the job below)"
        ),
        EventBody::Approved { requester } => {
            format!("the in-place restore of {t} that {requester} asked for was approved by a second admin")
        }
        EventBody::SnapshotVanished { target, name } => format!(
            "{target}: restore point {name} is gone from the storage (expired or deleted by hand): it left the catalog"
        ),
        EventBody::SnapshotUnknown { target, names } => format!(
            "{target}: {} snapshot(s) named like recman's that no event records (not deleted): {}",
            names.len(),
            names.join(", ")
        ),
        EventBody::ReconcileFailed { target, error, .. } => {
            format!("{target}: the catalog could not be checked against the storage: {error}")
        }
        EventBody::RpoBreached {
            target,
            rpo_ms,
            last_good_ms,
        } => match last_good_ms {
            0 => format!("{target}: RPO {} breached: no good restore point", hours(*rpo_ms)),
            at => format!(
                "{target}: RPO {} breached: newest good restore point from {}",
                hours(*rpo_ms),
                rfc3339(*at)
            ),
        },
        EventBody::RpoRestored {
            target,
            rpo_ms,
            last_good_ms,
        } => format!(
            "{target}: within RPO {} again (restore point from {})",
            hours(*rpo_ms),
            rfc3339(*last_good_ms)
        ),
        EventBody::ForcedThaw { reason, .. } => format!("{t}: thawed by the engine: {reason}"),
        EventBody::WatchdogThawed { target, worker, .. } => {
            format!("{target}: thawed by the watchdog of worker {worker}")
        }
        EventBody::LateSnapshot { target, snapshot, .. } => format!(
            "{target}: snapshot {} came too late (not consistent) and is deleted",
            snapshot.name
        ),
        EventBody::ScheduleSkipped {
            schedule,
            missed,
            reason,
            ..
        } => format!("schedule {schedule}: {missed} slot(s) skipped: {reason}"),
        EventBody::SchedulePaused {
            schedule,
            paused,
            reason,
        } => format!(
            "schedule {schedule} {}{}",
            if *paused { "paused" } else { "resumed" },
            if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            }
        ),
        other => format!("{} ({t})", other.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recman_events::{Event, StoredEvent};

    #[test]
    fn a_failed_event_names_its_targets_and_reason() {
        let e = StoredEvent {
            seq: 42,
            event: Event {
                at_ms: 1_795_941_015_000,
                job: "01930000-0000-7000-8000-000000000001".parse().unwrap(),
                body: EventBody::Failed {
                    attempt: 2,
                    reason: "freeze: exec_failed: exit 3".into(),
                },
                by: String::new(),
            },
        };
        let n = Notification::of_event(&e, vec![TargetId::from("pg-main")]);
        assert_eq!(n.delivery, "event/42");
        assert_eq!(
            n.summary,
            "snapshot of pg-main failed (attempt 2): freeze: exec_failed: exit 3"
        );
        assert_eq!(n.subject(), "[recman] failed: pg-main");
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(json["kind"], "failed");
        assert_eq!(json["at"], "2026-11-29T08:30:15Z");
        assert_eq!(json["event"]["body"]["type"], "failed");
        assert_eq!(json["targets"][0], "pg-main");
        assert!(n.text().contains("job:      "), "{}", n.text());
    }
}
