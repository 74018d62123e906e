//! One job is one trace across the engine and the workers: the engine runtime
//! and a worker, each with its own bus connection, record spans to an
//! in-memory OpenTelemetry exporter; every span of a job has the job's UUID as
//! its trace id, the worker's step spans are children of the engine's send
//! spans, and two jobs are two traces. Over the in-process bus, and over the
//! private RabbitMQ node (lapin) when `tests/run` started one.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::SpanId;
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use recman_config::Config;
use recman_engine::handle::{Drain, Engine};
use recman_events::bus::{msg_type, Address, Bus, MemoryBus, Message};
use recman_events::{log, Backend, EventBody, EventLog, JobId, SnapshotRequest, WorkerId};
use recman_testkit::amqp::Vhost;
use recman_tests::amqp::VhostBus;
use recman_trace::{TraceParent, TRACEPARENT};
use recman_workers::runtime::Worker;
use tracing_subscriber::layer::SubscriberExt;

/// The trace context of "another system" that sends a request over the bus.
const FOREIGN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One global subscriber for this test binary (both tests share it; each
/// looks only at the traces of its own jobs).
fn exporter() -> &'static (InMemorySpanExporter, SdkTracerProvider) {
    static E: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    E.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = recman_trace::provider_builder("recman-test")
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(recman_trace::otel_layer(&provider));
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        (exporter, provider)
    })
}

fn config(dir: &std::path::Path) -> Config {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"hello").unwrap();
    let mut toml = String::new();
    for t in ["t1", "t2"] {
        toml += &format!(
            "[[target]]\nid = \"{t}\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"copy\"\nsource = \"{}\"\ndest = \"{}\"\n",
            src.display(),
            dir.join("snaps").join(t).display()
        );
    }
    Config::from_str(&toml, dir.join("recman.toml")).unwrap()
}

/// Runs the engine (on `engine_bus`) and a worker (on `worker_bus`), submits
/// one job through a call and one as a bus message carrying a foreign
/// `traceparent`, waits for both to complete and checks their spans.
async fn two_jobs_two_traces(engine_bus: Arc<dyn Bus>, worker_bus: Arc<dyn Bus>) {
    let (exporter, provider) = exporter();
    let dir = recman_testkit::temp_dir();
    let config = config(dir.path());
    let engine = Engine::builder(&config)
        .log(log::open(Backend::Redb, &dir.path().join("log")).unwrap())
        .bus(engine_bus.clone())
        .worker_on(Worker::from_config(WorkerId::from("w1"), &config), worker_bus)
        .seed(1)
        .start()
        .await
        .unwrap();
    let log = engine.log().clone();

    let req = SnapshotRequest::from_json(br#"{"request_id":"by-call","targets":["t1"]}"#).unwrap();
    let job1 = engine.submit(req, "test").await.expect("accepted").job;
    let body = br#"{"request_id":"by-bus","targets":["t2"]}"#.to_vec();
    engine_bus
        .publish(
            Address::Requests,
            Message::new(msg_type::REQUEST, "req/by-bus", body).with_header(TRACEPARENT, FOREIGN),
        )
        .await
        .unwrap();
    let job2 = wait_for_job(log.as_ref(), "by-bus").await;
    for job in [job1, job2] {
        wait_until_ended(&engine, job).await;
    }
    engine.shutdown(Drain::Default).await.unwrap();
    let _ = provider.force_flush();

    let spans = exporter.get_finished_spans().unwrap();
    let t1 = check_job_trace(&spans, job1);
    let t2 = check_job_trace(&spans, job2);
    assert_ne!(t1, t2, "two jobs, two traces");
    // The request from a traced system is linked from the job's root span.
    let root2 = spans
        .iter()
        .find(|s| s.name == "job.accepted" && trace_hex(s) == t2)
        .unwrap();
    assert!(
        root2
            .links
            .iter()
            .any(|l| l.span_context.trace_id().to_string() == "4bf92f3577b34da6a3ce929d0e0e4736"),
        "the bus request's traceparent is linked: {:?}",
        root2.links
    );
}

async fn wait_for_job(log: &dyn EventLog, request_id: &str) -> JobId {
    let what = format!("request {request_id} to become a job");
    recman_testkit::wait_for_async(what, recman_testkit::DEADLINE, || {
        let job = log
            .read(1, 10_000)
            .unwrap()
            .into_iter()
            .find_map(|e| match &e.event.body {
                EventBody::Requested { request_id: r, .. } if r.as_str() == request_id => Some(e.event.job),
                _ => None,
            });
        std::future::ready(job)
    })
    .await
}

async fn wait_until_ended(engine: &Engine, job: JobId) {
    let events = match tokio::time::timeout(recman_testkit::DEADLINE, engine.wait(job)).await {
        Ok(events) => events.unwrap(),
        Err(_) => panic!(
            "job {job} did not end: {:#?}",
            engine.log().read_job(job).unwrap()
        ),
    };
    assert!(
        matches!(
            events.last().map(|e| &e.event.body),
            Some(EventBody::Completed { .. })
        ),
        "{events:#?}"
    );
}

fn trace_hex(s: &SpanData) -> String {
    s.span_context.trace_id().to_string()
}

fn attr(s: &SpanData, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(v) => v.to_string(),
            other => other.to_string(),
        })
}

/// Checks the spans of `job` and returns its trace id (hex).
fn check_job_trace(all: &[SpanData], job: JobId) -> String {
    let want = job.0.simple().to_string();
    // Every span that names the job is in the job's trace…
    let named: Vec<&SpanData> = all
        .iter()
        .filter(|s| attr(s, "job").as_deref() == Some(&job.to_string()))
        .collect();
    for s in &named {
        assert_eq!(
            trace_hex(s),
            want,
            "span {} of job {job} is in another trace",
            s.name
        );
    }
    // …and every span in the job's trace names the job.
    let spans: Vec<&SpanData> = all.iter().filter(|s| trace_hex(s) == want).collect();
    assert_eq!(
        spans.len(),
        named.len(),
        "spans in trace {want} that name another job"
    );
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    for n in [
        "job.accepted",
        "command.send",
        "report.received",
        "job.ended",
        "worker.freeze",
        "worker.snapshot",
        "worker.thaw",
    ] {
        assert!(names.contains(&n), "job {job}: no {n} span among {names:?}");
    }
    let by_id: HashMap<SpanId, &SpanData> = spans.iter().map(|s| (s.span_context.span_id(), *s)).collect();
    let root = TraceParent::job_root(job);
    let accepted = spans.iter().find(|s| s.name == "job.accepted").unwrap();
    assert_eq!(
        accepted.parent_span_id,
        SpanId::INVALID,
        "the accepted span is the root"
    );
    assert_eq!(
        accepted.span_context.span_id(),
        SpanId::from_bytes(root.span_id.to_be_bytes())
    );
    for s in &spans {
        let parent = by_id.get(&s.parent_span_id);
        match s.name.as_ref() {
            "command.send" | "job.ended" => assert_eq!(s.parent_span_id, accepted.span_context.span_id()),
            n if n.starts_with("worker.") => {
                let p = parent.unwrap_or_else(|| panic!("{n} has no parent in the trace"));
                assert_eq!(p.name, "command.send", "{n} is a child of the engine's send span");
                assert_eq!(
                    attr(p, "stage"),
                    attr(s, "stage"),
                    "of the send of its own command"
                );
                assert_eq!(s.instrumentation_scope.name(), "recman");
            }
            "report.received" => {
                let p = parent.expect("report.received has a parent in the trace");
                assert!(p.name.starts_with("worker."), "received ← {}", p.name);
                assert_eq!(attr(p, "stage"), attr(s, "stage"));
            }
            _ => {}
        }
    }
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_is_one_trace_over_the_memory_bus() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    two_jobs_two_traces(bus.clone(), bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_is_one_trace_over_rabbitmq() {
    let Some(vh) = Vhost::new("trace") else {
        return;
    };
    // Two connections: the engine's and the worker's.
    let engine_bus = vh.bus().await;
    let worker_bus = vh.bus().await;
    two_jobs_two_traces(engine_bus, worker_bus).await;
}
