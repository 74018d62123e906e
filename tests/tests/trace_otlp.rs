//! OTLP export from real processes: `recman engine --amqp` and `recman worker
//! --amqp` on the private broker with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at
//! a small OTLP/HTTP receiver in this test. The spans arrive only when the
//! processes stop (the export interval is set longer than the test), so this
//! also proves both flush on exit; one job's spans from both processes share
//! the job's trace id, and the worker's step spans are children of the
//! engine's send spans.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message as _;
use recman_events::bus::Address;
use recman_testkit::amqp::Vhost;
use recman_tests::amqp::{request, write_config, Proc, VhostBus};

/// One exported span, flattened.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    name: String,
    trace: String,
    span: String,
    parent: String,
    attrs: HashMap<String, String>,
}

fn text(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => s.clone(),
                any_value::Value::IntValue(i) => i.to_string(),
                any_value::Value::BoolValue(b) => b.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), v))
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

type Received = Arc<Mutex<Vec<Got>>>;

async fn receive(State(got): State<Received>, body: Bytes) -> &'static str {
    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut got = got.lock().unwrap();
    for rs in req.resource_spans {
        let res = text(rs.resource.map(|r| r.attributes).as_deref().unwrap_or_default());
        let service = res.get("service.name").cloned().unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.push(Got {
                    service: service.clone(),
                    name: s.name,
                    trace: hex(&s.trace_id),
                    span: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    attrs: text(&s.attributes),
                });
            }
        }
    }
    "" // an empty ExportTraceServiceResponse
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_and_worker_processes_export_one_trace_per_job_over_otlp() {
    let Some(vh) = Vhost::new("otlp") else { return };
    let got: Received = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), 2, &["host.a"]);
    let bus = vh.bus().await;
    let mut events = bus.consume(Address::Events, 256).await.unwrap();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"), // only the flush on exit sends
    ];
    let mut engine = Proc::spawn_env(
        "engine",
        dir.path(),
        &data,
        &config,
        &["engine", "--amqp", &vh.url],
        &env,
    );
    let mut worker = Proc::spawn_env(
        "worker",
        dir.path(),
        &data.join("w1"),
        &config,
        &["worker", "--amqp", &vh.url, "--pool", "host.a", "--id", "w1"],
        &env,
    );
    bus.publish(Address::Requests, request("otlp-1", &["t0"]))
        .await
        .unwrap();
    bus.publish(Address::Requests, request("otlp-2", &["t1"]))
        .await
        .unwrap();

    let mut jobs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while jobs.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "jobs did not complete\nengine:\n{}\nworker:\n{}",
                    engine.output(),
                    worker.output()
                )
            })
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.message.body).unwrap();
        let kind = v["event"]["body"]["type"].as_str().unwrap().to_string();
        assert!(kind != "failed", "a job failed: {v}");
        if kind == "completed" {
            jobs.push(v["event"]["job"].as_str().unwrap().to_string());
        }
        d.ack().await.unwrap();
    }
    assert!(
        got.lock().unwrap().is_empty(),
        "spans came before the processes stopped"
    );
    for p in [&mut worker, &mut engine] {
        let status = p.stop().expect("stops on SIGTERM");
        assert!(status.success(), "{} exited {status}:\n{}", p.name, p.output());
    }
    let spans = got.lock().unwrap().clone();
    let mut traces = Vec::new();
    for job in &jobs {
        let trace = job.replace('-', "");
        let mine: Vec<&Got> = spans.iter().filter(|s| s.trace == trace).collect();
        for s in &spans {
            if s.attrs.get("job") == Some(job) {
                assert_eq!(s.trace, trace, "{} of job {job} in another trace", s.name);
            }
        }
        let from = |svc: &str| mine.iter().filter(|s| s.service == svc).count();
        assert!(
            from("recman-engine") >= 5 && from("recman-worker") >= 3,
            "job {job}: engine {} and worker {} spans; all: {spans:#?}",
            from("recman-engine"),
            from("recman-worker")
        );
        let sends: HashMap<&str, &Got> = mine
            .iter()
            .filter(|s| s.name == "command.send")
            .map(|s| (s.span.as_str(), *s))
            .collect();
        let steps: Vec<&&Got> = mine.iter().filter(|s| s.service == "recman-worker").collect();
        for n in ["worker.freeze", "worker.snapshot", "worker.thaw"] {
            assert!(steps.iter().any(|s| s.name == n), "job {job}: no {n}");
        }
        for s in steps {
            let send = sends
                .get(s.parent.as_str())
                .unwrap_or_else(|| panic!("{} is not a child of a command.send: {s:?}", s.name));
            assert_eq!(send.service, "recman-engine");
            assert_eq!(send.attrs.get("stage"), s.attrs.get("stage"));
        }
        assert!(mine
            .iter()
            .any(|s| s.name == "job.accepted" && s.parent.is_empty()));
        assert!(mine.iter().any(|s| s.name == "job.ended"));
        traces.push(trace);
    }
    assert_ne!(traces[0], traces[1], "two jobs, two traces");
}
