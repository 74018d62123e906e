//! Shows one job as it runs: a line per step (plain when not on a terminal; on
//! a terminal, plus a live status line with the running stage and how long the
//! application has been frozen), and the job's summary for `--json`.

use std::io::Write;
use std::time::{Duration, Instant};

use recman_events::{EventBody, JobId, SnapshotInfo, Stage, StepDetail, StoredEvent, TargetId};
use serde::Serialize;

use super::micros;

/// How a followed job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    Completed,
    Failed,
    Cancelled,
    /// Not an end: the recovery waits for a second admin's approval
    /// (`require_approval`); the follow stops there.
    AwaitingApproval,
}

/// One step as the log recorded it (for `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct StepLine {
    pub seq: u64,
    pub stage: Stage,
    pub attempt: u32,
    pub target: String,
    pub worker: Option<String>,
    pub ok: bool,
    pub duration_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What a recovery step found (a database: the LSN and time it recovered to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The job's summary: printed by `recman snapshot --json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub job_id: String,
    pub state: Option<End>,
    pub attempts: u32,
    pub snapshot: Option<SnapshotInfo>,
    pub freeze_window_us: Option<u64>,
    pub reason: Option<String>,
    /// A recovery's outcome: where the data is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// An in-place restore: the safety snapshot it took (a restore point).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_snapshot: Option<String>,
    /// A failed recovery: where it left the live data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<recman_events::LiveData>,
    /// Waiting for a second admin: the request expires then (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_expires_ms: Option<u64>,
    pub steps: Vec<StepLine>,
    pub first_seq: u64,
    pub last_seq: u64,
    pub duration_ms: u64,
}

/// Renders events of one job as they arrive.
pub struct Progress {
    job: JobId,
    /// Human output on stdout (false with `--json`).
    human: bool,
    /// A terminal: draw the live status line.
    tty: bool,
    started: Instant,
    running: Option<(Stage, Instant)>,
    frozen_since: Option<Instant>,
    status_drawn: bool,
    frame: usize,
    /// A recovery's target (its step events name none).
    recovering: String,
    pub summary: Summary,
}

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl Progress {
    pub fn new(job: JobId, human: bool, tty: bool) -> Self {
        Progress {
            job,
            human,
            tty: human && tty,
            started: Instant::now(),
            running: None,
            frozen_since: None,
            status_drawn: false,
            frame: 0,
            recovering: String::new(),
            summary: Summary {
                job_id: job.to_string(),
                ..Summary::default()
            },
        }
    }

    /// How often `tick` should be called on a terminal.
    pub fn tick_every(&self) -> Option<Duration> {
        self.tty.then_some(Duration::from_millis(100))
    }

    fn clear_status(&mut self, out: &mut impl Write) {
        if self.status_drawn {
            let _ = write!(out, "\r\x1b[2K");
            self.status_drawn = false;
        }
    }

    /// Redraws the status line (terminal only).
    pub fn tick(&mut self) {
        if !self.tty {
            return;
        }
        let mut out = std::io::stdout().lock();
        self.clear_status(&mut out);
        self.frame = (self.frame + 1) % SPINNER.len();
        let mut line = format!("{} ", SPINNER[self.frame]);
        match &self.running {
            Some((stage, since)) => line.push_str(&format!("{stage} running {}", secs(since.elapsed()))),
            None => line.push_str(&format!("waiting {}", secs(self.started.elapsed()))),
        }
        if let Some(f) = self.frozen_since {
            line.push_str(&format!(
                "  \x1b[33mapplication frozen {}\x1b[0m",
                secs(f.elapsed())
            ));
        }
        let _ = write!(out, "{line}");
        let _ = out.flush();
        self.status_drawn = true;
    }

    fn say(&mut self, mark: &str, text: String) {
        if !self.human {
            return;
        }
        let mut out = std::io::stdout().lock();
        self.clear_status(&mut out);
        let mark = match (self.tty, mark) {
            (true, "ok") => "\x1b[32m✓\x1b[0m",
            (true, "err") => "\x1b[31m✗\x1b[0m",
            (true, _) => "·",
            (false, "ok") => "ok ",
            (false, "err") => "ERR",
            (false, _) => "   ",
        };
        let _ = writeln!(out, "  {mark} {}", super::escape(&text));
        let _ = out.flush();
    }

    /// Takes one event of the log; returns how the job ended once it did.
    pub fn on_event(&mut self, ev: &StoredEvent) -> Option<End> {
        if ev.event.job != self.job {
            return None;
        }
        let s = &mut self.summary;
        if s.first_seq == 0 {
            s.first_seq = ev.seq;
        }
        s.last_seq = ev.seq;
        s.duration_ms = self.started.elapsed().as_millis() as u64;
        let seq = ev.seq;
        match &ev.event.body {
            EventBody::Requested {
                targets,
                kind,
                origin,
                ..
            } => {
                let t: Vec<&str> = targets.iter().map(|t| t.as_str()).collect();
                self.say(
                    "",
                    format!(
                        "#{seq:<6} requested: {} ({}, from {origin})",
                        t.join(", "),
                        kind.as_str()
                    ),
                );
            }
            EventBody::Queued { behind } => {
                self.say(
                    "",
                    format!(
                        "#{seq:<6} queued behind {} job(s) on the same target(s)",
                        behind.len()
                    ),
                );
            }
            EventBody::AttemptStarted {
                attempt,
                freeze_budget_ms,
                ..
            } => {
                self.summary.attempts = *attempt;
                self.say(
                    "",
                    format!(
                        "#{seq:<6} attempt {attempt} (the application may stay frozen at most {})",
                        micros(freeze_budget_ms * 1000)
                    ),
                );
            }
            EventBody::StageStarted { stage, .. } => {
                self.running = Some((*stage, Instant::now()));
            }
            EventBody::StepSucceeded {
                stage,
                attempt,
                target,
                worker,
                duration_us,
                detail,
            } => {
                let extra = match detail {
                    StepDetail::Snapshot(i) => format!(
                        ": {} at {}{}",
                        i.name,
                        i.location,
                        if i.existed { " (already there)" } else { "" }
                    ),
                    StepDetail::Thawed {
                        freeze_window_us,
                        by_watchdog,
                    } => format!(
                        " (freeze window {}{})",
                        micros(*freeze_window_us),
                        if *by_watchdog {
                            ", thawed by the watchdog"
                        } else {
                            ""
                        }
                    ),
                    StepDetail::Pruned { deleted, .. } if !deleted.is_empty() => {
                        format!(": deleted {}", deleted.join(", "))
                    }
                    _ => String::new(),
                };
                match stage {
                    Stage::Freeze => self.frozen_since = Some(Instant::now()),
                    Stage::Thaw => self.frozen_since = None,
                    _ => {}
                }
                self.summary.steps.push(StepLine {
                    seq,
                    stage: *stage,
                    attempt: *attempt,
                    target: target.to_string(),
                    worker: Some(worker.to_string()),
                    ok: true,
                    duration_us: Some(*duration_us),
                    error: None,
                    note: None,
                });
                self.say(
                    "ok",
                    format!(
                        "#{seq:<6} {stage} done on {target} by {worker} in {}{extra}",
                        micros(*duration_us)
                    ),
                );
            }
            EventBody::StepFailed {
                stage,
                attempt,
                target,
                worker,
                error,
            } => {
                self.summary.steps.push(StepLine {
                    seq,
                    stage: *stage,
                    attempt: *attempt,
                    target: target.to_string(),
                    worker: worker.as_ref().map(|w| w.to_string()),
                    ok: false,
                    duration_us: None,
                    error: Some(error.to_string()),
                    note: None,
                });
                self.say(
                    "err",
                    format!(
                        "#{seq:<6} {stage} failed on {target}{}: {}{}",
                        worker.as_ref().map(|w| format!(" ({w})")).unwrap_or_default(),
                        error.message,
                        if error.retryable { " (retryable)" } else { "" }
                    ),
                );
            }
            EventBody::StageTimedOut { stage, .. } => {
                self.say("err", format!("#{seq:<6} {stage} timed out"));
            }
            EventBody::ForcedThaw { reason, .. } => {
                self.say("err", format!("#{seq:<6} forced thaw: {reason}"));
            }
            EventBody::WatchdogThawed {
                target,
                worker,
                freeze_window_us,
                ..
            } => {
                self.frozen_since = None;
                self.say(
                    "err",
                    format!(
                        "#{seq:<6} the watchdog of {worker} thawed {target} after {}",
                        micros(*freeze_window_us)
                    ),
                );
            }
            EventBody::RetryScheduled {
                next_attempt, reason, ..
            } => {
                self.say(
                    "",
                    format!("#{seq:<6} retrying as attempt {next_attempt}: {reason}"),
                );
            }
            EventBody::CancelRequested { reason } => {
                self.say("", format!("#{seq:<6} cancel requested: {reason}"));
            }
            EventBody::SnapshotDeleted { target, name } => {
                self.say("", format!("#{seq:<6} deleted {name} of {target}"));
            }
            EventBody::LateSnapshot {
                attempt, snapshot, ..
            } => {
                self.say(
                    "",
                    format!(
                        "#{seq:<6} attempt {attempt}'s snapshot {} came after the thaw: not a restore point, deleting it",
                        snapshot.name
                    ),
                );
            }
            EventBody::PruneRequested { target, names, .. } => {
                self.say("", format!("#{seq:<6} deleting {} of {target}", names.join(", ")));
            }
            EventBody::PruneFailed { target, name, error } => {
                self.say(
                    "",
                    format!(
                        "#{seq:<6} could not delete {name} of {target}: {}: {}",
                        error.code, error.message
                    ),
                );
            }
            EventBody::Completed {
                snapshot,
                freeze_window_us,
                ..
            } => {
                self.summary.state = Some(End::Completed);
                self.summary.snapshot = Some(snapshot.clone());
                self.summary.freeze_window_us = Some(*freeze_window_us);
                self.finish_line();
                return Some(End::Completed);
            }
            EventBody::Failed { reason, .. } => {
                self.summary.state = Some(End::Failed);
                self.summary.reason = Some(reason.clone());
                self.finish_line();
                return Some(End::Failed);
            }
            EventBody::Cancelled => {
                self.summary.state = Some(End::Cancelled);
                self.finish_line();
                return Some(End::Cancelled);
            }
            // Policy facts: not part of a job's walk.
            EventBody::ScheduleChanged { .. }
            | EventBody::ScheduleFired { .. }
            | EventBody::ScheduleSkipped { .. }
            | EventBody::ScheduleQueued { .. }
            | EventBody::SchedulePaused { .. }
            | EventBody::RpoChanged { .. }
            | EventBody::RpoBreached { .. }
            | EventBody::RpoRestored { .. }
            | EventBody::VerifyRequested { .. }
            | EventBody::VerifyStarted { .. }
            | EventBody::Verified { .. }
            | EventBody::VerifyFailed { .. }
            | EventBody::ReconcileRequested { .. }
            | EventBody::ReconcileStarted { .. }
            | EventBody::SnapshotUnknown { .. }
            | EventBody::Reconciled { .. }
            | EventBody::ReconcileFailed { .. }
            | EventBody::SnapshotExpiry { .. } => {}
            EventBody::SnapshotVanished { target, name } => {
                self.say(
                    "err",
                    format!("#{seq:<6} {name} of {target} is gone from the storage: it left the catalog"),
                );
            }
            EventBody::RecoveryRequested {
                target,
                name,
                action,
                origin,
                ..
            } => {
                self.recovering = target.to_string();
                self.say(
                    "",
                    format!(
                        "#{seq:<6} requested: {} of {name} of {target} (from {origin})",
                        action.as_str()
                    ),
                );
            }
            EventBody::RecoveryStepStarted { stage, .. } => {
                self.running = Some((*stage, Instant::now()));
            }
            EventBody::RecoveryStepDone {
                stage,
                worker,
                duration_us,
                location,
            } => {
                self.summary.steps.push(StepLine {
                    seq,
                    stage: *stage,
                    attempt: 1,
                    target: self.recovering.clone(),
                    worker: Some(worker.to_string()),
                    ok: true,
                    duration_us: Some(*duration_us),
                    error: None,
                    note: None,
                });
                if *stage == Stage::SafetySnapshot {
                    self.summary.safety_snapshot = Some(location.clone());
                }
                let at = if location.is_empty() {
                    String::new()
                } else {
                    format!(": {location}")
                };
                self.say(
                    "ok",
                    format!(
                        "#{seq:<6} {stage} done by {worker} in {}{at}",
                        micros(*duration_us)
                    ),
                );
            }
            EventBody::RecoveryStepFailed { stage, worker, error } => {
                self.summary.steps.push(StepLine {
                    seq,
                    stage: *stage,
                    attempt: 1,
                    target: self.recovering.clone(),
                    worker: worker.as_ref().map(|w| w.to_string()),
                    ok: false,
                    duration_us: None,
                    error: Some(error.to_string()),
                    note: None,
                });
                self.say(
                    "err",
                    format!(
                        "#{seq:<6} {stage} failed{}: {}: {}",
                        worker.as_ref().map(|w| format!(" ({w})")).unwrap_or_default(),
                        error.code,
                        error.message
                    ),
                );
            }
            EventBody::RecoveryStepNoted { stage, note } => {
                if let Some(l) = self.summary.steps.iter_mut().rev().find(|l| l.stage == *stage) {
                    l.note = Some(note.clone());
                }
                self.say("", format!("#{seq:<6} {stage}: {note}"));
            }
            EventBody::ApprovalRequired { expires_ms } => {
                self.summary.state = Some(End::AwaitingApproval);
                self.summary.approval_expires_ms = Some(*expires_ms);
                let by = if ev.event.by.is_empty() {
                    String::new()
                } else {
                    format!(" (requested by {})", ev.event.by)
                };
                self.say(
                    "",
                    format!(
                        "#{seq:<6} awaiting approval by a second admin{by}, until {}: `recman approve {}`",
                        crate::view::time::rfc3339(*expires_ms),
                        self.job
                    ),
                );
                self.finish_line();
                return Some(End::AwaitingApproval);
            }
            EventBody::Approved { requester } => {
                self.summary.state = None;
                self.say(
                    "",
                    format!("#{seq:<6} approved by {} (requested by {requester})", ev.event.by),
                );
            }
            EventBody::RecoveryCompleted { location } => {
                self.summary.state = Some(End::Completed);
                self.summary.location = Some(location.clone());
                self.finish_line();
                return Some(End::Completed);
            }
            EventBody::RecoveryFailed { reason, live } => {
                self.summary.state = Some(End::Failed);
                self.summary.reason = Some(format!("{reason} (live data: {})", live_str(*live)));
                self.summary.live = Some(*live);
                self.finish_line();
                return Some(End::Failed);
            }
        }
        None
    }

    fn finish_line(&mut self) {
        self.running = None;
        self.frozen_since = None;
        if !self.human {
            return;
        }
        let mut out = std::io::stdout().lock();
        self.clear_status(&mut out);
        let s = &self.summary;
        if s.state == Some(End::Failed) {
            // The reason goes to stderr, where scripts look for errors.
            let _ = out.flush();
            eprintln!(
                "failed: {}",
                super::escape(s.reason.as_deref().unwrap_or("(no reason recorded)"))
            );
            return;
        }
        let _ = match (s.state, &s.snapshot) {
            (Some(End::Completed), Some(snap)) => writeln!(
                out,
                "completed: snapshot {} at {} (freeze window {}, {} in all)",
                super::escape(&snap.name),
                super::escape(&snap.location),
                micros(s.freeze_window_us.unwrap_or(0)),
                micros(s.duration_ms * 1000)
            ),
            (Some(End::Completed), None) => writeln!(
                out,
                "completed: {} ({} in all)",
                super::escape(s.location.as_deref().filter(|l| !l.is_empty()).unwrap_or("done")),
                micros(s.duration_ms * 1000)
            ),
            (Some(End::Cancelled), _) => writeln!(out, "cancelled"),
            (Some(End::AwaitingApproval), _) => writeln!(
                out,
                "awaiting approval by a second admin: another admin runs `recman approve {}`",
                s.job_id
            ),
            _ => writeln!(out, "ended without a snapshot"),
        };
        let _ = out.flush();
    }
}

/// How a failed recovery left the live data, in words.
pub fn live_str(l: recman_events::LiveData) -> &'static str {
    match l {
        recman_events::LiveData::Untouched => "untouched",
        recman_events::LiveData::RolledBack => "rolled back to its state before the restore",
        recman_events::LiveData::Restored => "restored",
        recman_events::LiveData::Unknown => "unknown, see the safety snapshot",
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The deletes one job asked for (`prune_requested`: retention, a late
/// snapshot, a failed attempt's leftovers) and whether each has its outcome
/// recorded (`snapshot_deleted` or `prune_failed`, under the job that took
/// the snapshot). The one-shot `recman snapshot` waits for them before it
/// stops the engine, so retention is finished and recorded (issue 12 item 5).
#[derive(Debug, Default)]
pub struct PruneWait {
    requested: std::collections::BTreeSet<(TargetId, String)>,
    answered: std::collections::BTreeSet<(TargetId, String)>,
}

impl PruneWait {
    /// Folds one event of the log (any job's); returns a line to print for
    /// an outcome of one of this job's deletes.
    pub fn see(&mut self, job: JobId, ev: &recman_events::Event) -> Option<String> {
        match &ev.body {
            EventBody::PruneRequested { target, names, .. } if ev.job == job => {
                for n in names {
                    self.requested.insert((target.clone(), n.clone()));
                }
                None
            }
            EventBody::SnapshotDeleted { target, name } => {
                let k = (target.clone(), name.clone());
                (self.requested.contains(&k) && self.answered.insert(k))
                    .then(|| super::escape(&format!("deleted {name} of {target}")).into_owned())
            }
            EventBody::PruneFailed { target, name, error } => {
                let k = (target.clone(), name.clone());
                (self.requested.contains(&k) && self.answered.insert(k)).then(|| {
                    super::escape(&format!(
                        "could not delete {name} of {target}: {}: {} (recorded; retried by the next run)",
                        error.code, error.message
                    ))
                    .into_owned()
                })
            }
            _ => None,
        }
    }

    /// The deletes still without an outcome.
    pub fn waiting(&self) -> Vec<String> {
        self.requested
            .difference(&self.answered)
            .map(|(t, n)| super::escape(&format!("{n} of {t}")).into_owned())
            .collect()
    }
}
