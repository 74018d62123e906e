//! traceparent inject/extract round-trips with OpenTelemetry's own W3C
//! propagator, and spans parented from headers land in the job's trace.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use recman_events::JobId;
use recman_trace::{TraceParent, TRACEPARENT};
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn traceparent_round_trips_through_the_otel_propagator() {
    let prop = TraceContextPropagator::new();
    let sc = SpanContext::new(
        TraceId::from_bytes(0x0af7651916cd43dd8448eb211c80319c_u128.to_be_bytes()),
        SpanId::from_bytes(0xb7ad6b7169203331_u64.to_be_bytes()),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    // Ours reads what OpenTelemetry writes…
    let mut carrier: HashMap<String, String> = HashMap::new();
    prop.inject_context(&Context::new().with_remote_span_context(sc.clone()), &mut carrier);
    let header = carrier
        .get(TRACEPARENT)
        .expect("the propagator writes traceparent");
    let ours = TraceParent::parse(header).expect("parses");
    assert_eq!(recman_trace::span_context(ours), sc);
    assert_eq!(&ours.to_string(), header);
    // …and OpenTelemetry reads what ours writes.
    let job = JobId::new_v7();
    let root = TraceParent::job_root(job);
    let carrier = HashMap::from([(TRACEPARENT.to_string(), root.to_string())]);
    let cx = prop.extract(&carrier);
    let extracted = cx.span().span_context().clone();
    assert!(extracted.is_valid() && extracted.is_remote() && extracted.is_sampled());
    assert_eq!(extracted.trace_id().to_bytes(), *job.0.as_bytes());
    assert_eq!(recman_trace::trace_parent(&extracted), Some(root));
}

fn hex_trace(s: &SpanData) -> String {
    s.span_context.trace_id().to_string()
}

#[test]
fn spans_parented_from_headers_share_the_job_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = recman_trace::provider_builder("test")
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(recman_trace::otel_layer(&provider));
    let job = JobId::new_v7();
    let foreign = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (header_from_child, header_without_otel) = tracing::subscriber::with_default(subscriber, || {
        let root = tracing::info_span!(target: "recman_engine::t", parent: None, "job.accepted");
        recman_trace::start_job_root(&root, job);
        recman_trace::link(&root, Some(foreign));
        drop(root);
        let send = tracing::info_span!(target: "recman_engine::t", parent: None, "command.send");
        recman_trace::set_parent(&send, job, None);
        let header = recman_trace::traceparent(&send, job, None);
        drop(send);
        let step = tracing::info_span!(target: "recman_workers::t", parent: None, "worker.step");
        recman_trace::set_parent(&step, job, Some(&header));
        drop(step);
        // A span the OpenTelemetry filter drops: the header falls back to the job root.
        let quiet = tracing::trace_span!(target: "recman_engine::t", parent: None, "quiet");
        (header, recman_trace::traceparent(&quiet, job, None))
    });
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let by_name = |n: &str| {
        spans
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no span {n}: {spans:?}"))
    };
    let (root, send, step) = (
        by_name("job.accepted"),
        by_name("command.send"),
        by_name("worker.step"),
    );
    let job_hex = job.0.simple().to_string();
    for s in [root, send, step] {
        assert_eq!(hex_trace(s), job_hex, "{} is in the job's trace", s.name);
    }
    let root_tp = TraceParent::job_root(job);
    assert_eq!(
        root.span_context.span_id(),
        SpanId::from_bytes(root_tp.span_id.to_be_bytes())
    );
    assert_eq!(
        root.parent_span_id,
        SpanId::INVALID,
        "the accepted span is the root"
    );
    assert_eq!(send.parent_span_id, root.span_context.span_id());
    assert_eq!(
        step.parent_span_id,
        send.span_context.span_id(),
        "the worker's span is a child of the send"
    );
    assert_eq!(
        TraceParent::parse(&header_from_child).unwrap().span_id,
        u64::from_be_bytes(send.span_context.span_id().to_bytes())
    );
    assert_eq!(header_without_otel, root_tp.to_string());
    assert_eq!(root.links.links.len(), 1, "the request's own trace is linked");
    assert_eq!(
        root.links.links[0].span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}

#[test]
fn without_an_otel_layer_the_header_is_the_job_root() {
    let job = JobId::new_v7();
    let span = tracing::info_span!("anything");
    let root = TraceParent::job_root(job);
    assert_eq!(recman_trace::traceparent(&span, job, None), root.to_string());
    // A received context in the job's trace is passed through; another trace's is not.
    let sender = TraceParent {
        span_id: 0x1234,
        ..root
    };
    let passed = recman_trace::traceparent(&span, job, Some(&sender.to_string()));
    assert_eq!(passed, sender.to_string());
    let foreign = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(
        recman_trace::traceparent(&span, job, Some(foreign)),
        root.to_string()
    );
}
