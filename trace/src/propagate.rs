//! Tracing spans ↔ `traceparent` headers: parent a span from a received
//! message, and the header to put on a message sent inside a span.
//!
//! Without an OpenTelemetry layer every function here is a no-op except
//! [`traceparent`], which then formats the job's root context (one short
//! string per message).

use std::cell::Cell;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use recman_events::JobId;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::w3c::TraceParent;

/// The W3C trace context header on every bus message recman publishes.
pub const TRACEPARENT: &str = "traceparent";

/// The OpenTelemetry form of a received trace context.
pub fn span_context(tp: TraceParent) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(tp.trace_id.to_be_bytes()),
        SpanId::from_bytes(tp.span_id.to_be_bytes()),
        TraceFlags::new(tp.flags),
        true,
        TraceState::default(),
    )
}

/// The W3C form of a span context, if it is valid.
pub fn trace_parent(sc: &SpanContext) -> Option<TraceParent> {
    sc.is_valid().then(|| TraceParent {
        trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        flags: sc.trace_flags().to_u8(),
    })
}

/// Makes `span` part of `job`'s trace: a child of the context in `header`
/// when that is in the job's trace (the span that sent the message), else of
/// the job's root. A header from another trace (a request from a traced
/// system) becomes a span link. Call it before the span is entered.
pub fn set_parent(span: &Span, job: JobId, header: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    let root = TraceParent::job_root(job);
    let received = header.and_then(TraceParent::parse);
    let parent = match received {
        Some(tp) if tp.trace_id == root.trace_id => tp,
        Some(other) => {
            span.add_link(span_context(other));
            root
        }
        None => root,
    };
    let _ = span.set_parent(Context::new().with_remote_span_context(span_context(parent)));
}

/// Adds a link from `span` to the context in `header` (e.g. the trace of the
/// system that sent a request), when there is one.
pub fn link(span: &Span, header: Option<&str>) {
    if let Some(tp) = header.and_then(TraceParent::parse) {
        if !span.is_disabled() {
            span.add_link(span_context(tp));
        }
    }
}

/// The `traceparent` for a message about `job` sent inside `span`: the span's
/// own context when it is exported (the receiver's spans become its
/// children), else the one `received` with the message being answered when
/// that is in the job's trace (passed through), else the job's root context.
pub fn traceparent(span: &Span, job: JobId, received: Option<&str>) -> String {
    if !span.is_disabled() {
        if let Some(tp) = trace_parent(span.context().span().span_context()) {
            return tp.to_string();
        }
    }
    let root = TraceParent::job_root(job);
    match received.and_then(TraceParent::parse) {
        Some(tp) if tp.trace_id == root.trace_id => tp.to_string(),
        _ => root.to_string(),
    }
}

/// Makes `span` (created without a parent) the root span of `job`'s trace,
/// with the ids of [`TraceParent::job_root`], so spans parented with
/// [`set_parent`] anywhere become its children. Call it once per job (the
/// engine does when it accepts the job), before the span is entered. Needs a
/// tracer provider built with [`JobIdGenerator`] ([`crate::provider_builder`]).
pub fn start_job_root(span: &Span, job: JobId) {
    if span.is_disabled() {
        return;
    }
    let _ = span.set_parent(Context::new());
    let root = TraceParent::job_root(job);
    NEXT_IDS.with(|n| n.set(Some((root.trace_id, root.span_id))));
    let _ = span.context(); // starts the OpenTelemetry span now, with these ids
    NEXT_IDS.with(|n| n.set(None));
}

thread_local! {
    static NEXT_IDS: Cell<Option<(u128, u64)>> = const { Cell::new(None) };
}

/// Random ids, except for the root span of a job ([`start_job_root`]), whose
/// trace and span ids are derived from the job id.
#[derive(Debug, Default)]
pub struct JobIdGenerator(RandomIdGenerator);

impl IdGenerator for JobIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        match NEXT_IDS.with(Cell::get) {
            Some((t, _)) => TraceId::from_bytes(t.to_be_bytes()),
            None => self.0.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match NEXT_IDS.with(Cell::get) {
            Some((_, s)) => SpanId::from_bytes(s.to_be_bytes()),
            None => self.0.new_span_id(),
        }
    }
}
