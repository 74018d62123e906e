//! The engine's spans, one trace per job (its UUID is the trace id, see
//! `recman-trace`): `job.accepted` (the root), `command.send` for every command
//! (its context goes out in the command's `traceparent`), `report.received`
//! (a child of the worker's step span) and `job.ended`. All are recorded by
//! the commit task once their cause is durable.

use recman_events::bus::Message;
use recman_events::wire::Report;
use recman_events::{Event, EventBody, JobId, Stage, TargetId, WorkerId};
use recman_trace::TRACEPARENT;
use tracing::{info_span, Span};

use recman_core::Outgoing;

/// True when someone records the engine's spans (an OpenTelemetry layer, or
/// `RECMAN_LOG` at info): otherwise nothing here does any work.
pub(super) fn on() -> bool {
    tracing::span_enabled!(tracing::Level::INFO)
}

/// What a decided batch leaves for the commit task to trace.
#[derive(Default)]
pub(super) struct Notes {
    /// Jobs accepted from a request that carried its own `traceparent`: linked.
    links: Vec<(JobId, String)>,
    reports: Vec<Received>,
    /// Accepted and ended jobs, taken from the events before they are appended.
    lifecycle: Vec<Lifecycle>,
}

struct Received {
    job: JobId,
    attempt: u32,
    stage: Stage,
    target: Option<TargetId>,
    worker: WorkerId,
    ok: bool,
    header: Option<String>,
}

enum Lifecycle {
    Accepted {
        job: JobId,
        request_id: String,
        targets: String,
        origin: String,
    },
    Ended {
        job: JobId,
        outcome: &'static str,
    },
}

impl Notes {
    pub(super) fn is_empty(&self) -> bool {
        self.links.is_empty() && self.reports.is_empty() && self.lifecycle.is_empty()
    }

    /// A request whose job was accepted, with the message it came in.
    pub(super) fn request(&mut self, job: JobId, msg: Option<&Message>) {
        if let Some(tp) = msg.and_then(|m| m.header(TRACEPARENT)) {
            self.links.push((job, tp.to_string()));
        }
    }

    /// A report about to be decided, with the message it came in.
    pub(super) fn report(&mut self, r: &Report, msg: Option<&Message>) {
        self.reports.push(Received {
            job: r.job,
            attempt: r.attempt,
            stage: r.stage,
            target: r.targets.first().cloned(),
            worker: r.worker.clone(),
            ok: matches!(r.outcome, recman_events::wire::Outcome::Ok { .. }),
            header: msg.and_then(|m| m.header(TRACEPARENT)).map(str::to_string),
        });
    }

    /// Jobs that start or end with `events`.
    pub(super) fn events(&mut self, events: &[Event]) {
        for e in events {
            match &e.body {
                EventBody::Requested {
                    request_id,
                    targets,
                    origin,
                    ..
                } => self.lifecycle.push(Lifecycle::Accepted {
                    job: e.job,
                    request_id: request_id.to_string(),
                    targets: targets.iter().map(TargetId::as_str).collect::<Vec<_>>().join(","),
                    origin: origin.clone(),
                }),
                b if b.is_terminal() => self.lifecycle.push(Lifecycle::Ended {
                    job: e.job,
                    outcome: b.kind(),
                }),
                _ => {}
            }
        }
    }

    pub(super) fn append(&mut self, other: Notes) {
        self.links.extend(other.links);
        self.reports.extend(other.reports);
        self.lifecycle.extend(other.lifecycle);
    }

    /// Records the spans of a batch whose events are durable (before its
    /// commands go out, so the root exists before its children).
    pub(super) fn record(self) {
        for l in &self.lifecycle {
            match l {
                Lifecycle::Accepted {
                    job,
                    request_id,
                    targets,
                    origin,
                } => {
                    let span = info_span!(parent: None, "job.accepted", %job, request_id, targets, origin);
                    recman_trace::start_job_root(&span, *job);
                    for (_, tp) in self.links.iter().filter(|(j, _)| j == job) {
                        recman_trace::link(&span, Some(tp));
                    }
                }
                Lifecycle::Ended { job, outcome } => {
                    let span = info_span!(parent: None, "job.ended", %job, outcome);
                    recman_trace::set_parent(&span, *job, None);
                }
            }
        }
        for r in &self.reports {
            let span = info_span!(
                parent: None,
                "report.received",
                job = %r.job,
                attempt = r.attempt,
                stage = %r.stage.as_str(),
                target = r.target.as_ref().map(TargetId::as_str).unwrap_or(""),
                worker = %r.worker,
                ok = r.ok,
            );
            recman_trace::set_parent(&span, r.job, r.header.as_deref());
        }
    }
}

/// One `command.send` span per command, open while the batch is published.
pub(super) fn send_spans(cmds: &[Outgoing]) -> Vec<Span> {
    if !on() {
        return Vec::new();
    }
    cmds.iter()
        .map(|o| {
            let c = &o.command;
            let span = info_span!(
                parent: None,
                "command.send",
                job = %c.job,
                attempt = c.attempt,
                stage = %c.stage.as_str(),
                target = c.targets.first().map(TargetId::as_str).unwrap_or(""),
                message_id = %c.message_id,
            );
            recman_trace::set_parent(&span, c.job, None);
            span
        })
        .collect()
}
