//! recman's tracing glue: one trace per job across the engine and the
//! workers (the job's UUID is the trace id), a W3C `traceparent` header on
//! every bus message, and the subscriber setup with OTLP export only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Used by the engine runtime and the worker runtime; the sans-IO engine core
//! knows nothing of it.

mod init;
mod propagate;
pub mod w3c;

#[cfg(feature = "otlp")]
pub use init::{init, Guard};
pub use init::{otel_filter, otel_layer, provider_builder, DEFAULT_OTEL_FILTER};
pub use propagate::{
    link, set_parent, span_context, start_job_root, trace_parent, traceparent, JobIdGenerator, TRACEPARENT,
};
pub use w3c::TraceParent;
