//! Property tests of every decoder that takes bytes from outside (issue 12,
//! "done when"): the wire's JSON (requests, reports, commands, event
//! messages) and the log's records. Arbitrary bytes, arbitrary JSON shaped
//! like the messages, and real messages and records with bytes changed
//! (the record's checksum fixed up, so the payload decoder itself is hit)
//! must give a value or an error, never a panic. A few thousand cases each,
//! a few seconds in CI; `RECMAN_FUZZ_CASES=N` runs more.

use proptest::prelude::*;
use recman_events::codec;
use recman_events::model::{SnapshotInfo, StepDetail, StepError};
use recman_events::wire::{self, Command, EventMessage, Report, SnapshotRequest};
use recman_events::{Event, EventBody, JobId, RequestId, SnapshotKind, Stage, TargetId, WorkerId};
use serde_json::{json, Value};

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("RECMAN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every JSON decoder of the wire; each must return, whatever the bytes.
fn decode_all(bytes: &[u8]) {
    if let Ok(r) = SnapshotRequest::from_json(bytes) {
        // What passes must be what the rules say.
        assert!(!r.targets.is_empty() && r.targets.len() <= wire::MAX_TARGETS);
    }
    let _ = wire::decode::<Report>(bytes);
    let _ = wire::decode::<Command>(bytes);
    let _ = wire::decode::<EventMessage>(bytes);
}

/// Both record decoders (full decode and validated access).
fn decode_record(bytes: &[u8]) {
    let _ = codec::decode(bytes);
    let mut scratch = rkyv::util::AlignedVec::<16>::new();
    let _ = codec::verify(bytes, &mut scratch);
}

const KEYS: &[&str] = &[
    "schema_version",
    "request_id",
    "targets",
    "kind",
    "message_id",
    "job",
    "attempt",
    "stage",
    "worker",
    "duration_us",
    "outcome",
    "ok",
    "err",
    "detail",
    "error",
    "code",
    "message",
    "retryable",
    "type",
    "seq",
    "event",
    "at_ms",
    "body",
    "snapshot_name",
    "thaw_deadline_ms",
];

/// JSON values whose object keys are mostly the messages' own field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z0-9._:@ -]{0,12}".prop_map(Value::String),
        "\\PC{0,8}".prop_map(Value::String),
        Just(json!("0190d0a4-7e2b-7c3e-8f5a-1b2c3d4e5f60")),
        prop::sample::select(vec!["full", "copy", "freeze", "snapshot", "thaw", "ok", "err"])
            .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8)
                .prop_map(|kv| { Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()) }),
        ]
    })
}

fn sample_request() -> Value {
    json!({"schema_version": 1, "request_id": "r-1", "targets": ["db01", "db02"], "kind": "full"})
}

fn sample_event() -> Event {
    Event {
        at_ms: 1_700_000_000_000,
        job: JobId::from_parts(1_700_000_000_000, 7),
        body: EventBody::StepSucceeded {
            stage: Stage::Snapshot,
            attempt: 2,
            target: TargetId::from("db01"),
            worker: WorkerId::from("w1"),
            duration_us: 1234,
            detail: StepDetail::Snapshot(SnapshotInfo {
                name: "rm-x-a2".into(),
                provider: "copy".into(),
                location: "/srv/snaps/rm-x-a2".into(),
                size_bytes: Some(42),
                existed: false,
                array_expiry: None,
            }),
        },
        by: String::new(),
    }
}

fn other_events() -> Vec<Event> {
    let job = JobId::from_parts(1_700_000_000_000, 9);
    let ev = |body| Event {
        at_ms: 5,
        job,
        body,
        by: String::new(),
    };
    vec![
        sample_event(),
        ev(EventBody::Requested {
            request_id: RequestId::from("r"),
            targets: vec![TargetId::from("a"), TargetId::from("b")],
            kind: SnapshotKind::Copy,
            origin: "http".into(),
        }),
        ev(EventBody::StepFailed {
            stage: Stage::Freeze,
            attempt: 1,
            target: TargetId::from("a"),
            worker: None,
            error: StepError::new("hook_failed", "exit 3", true),
        }),
        ev(EventBody::Cancelled),
    ]
}

/// A record whose payload is `payload`, with a valid envelope (magic,
/// version, codec, length and checksum), so only the payload decoder decides.
fn enveloped(template: &[u8], payload: &[u8]) -> Vec<u8> {
    const HEADER: usize = 12;
    let mut out = template[..HEADER].to_vec();
    out[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

proptest! {
    #![proptest_config(cases(4000))]

    #[test]
    fn arbitrary_bytes_never_panic_a_wire_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
        decode_record(&bytes);
    }

    #[test]
    fn message_shaped_json_never_panics_a_wire_decoder(v in json_value()) {
        decode_all(&serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn a_request_with_one_field_replaced_never_panics(
        key in prop::sample::select(vec!["schema_version", "request_id", "targets", "kind", "extra"]),
        v in json_value(),
        many in 0usize..1100,
    ) {
        let mut r = sample_request();
        r[key] = v;
        decode_all(&serde_json::to_vec(&r).unwrap());
        // Many targets: at most MAX_TARGETS are accepted, duplicates never.
        let mut r = sample_request();
        r["targets"] = json!((0..many).map(|i| format!("t{}", i % 1000)).collect::<Vec<_>>());
        let res = SnapshotRequest::from_json(&serde_json::to_vec(&r).unwrap());
        prop_assert_eq!(res.is_ok(), (1..=1000).contains(&many), "{} targets: {:?}", many, res.err());
    }

    #[test]
    fn a_record_with_changed_payload_bytes_never_panics(
        which in 0usize..4,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let events = other_events();
        let good = codec::encode(3, &[7u8; 32], &events[which]);
        let payload = codec::check_envelope(&good).unwrap().to_vec();
        let mut changed = payload.clone();
        for (at, b) in &edits {
            let i = at.index(changed.len());
            changed[i] = *b;
        }
        decode_record(&enveloped(&good, &changed));
        // Truncated payloads too.
        decode_record(&enveloped(&good, &payload[..cut.index(payload.len())]));
        // And the envelope damaged without a fixed-up checksum.
        let mut raw = good.clone();
        let i = cut.index(raw.len());
        raw[i] ^= 0xa5;
        prop_assert!(codec::decode(&raw).is_err(), "a flipped byte is always noticed");
    }

    #[test]
    fn arbitrary_payloads_in_a_valid_envelope_never_panic(payload in prop::collection::vec(any::<u8>(), 0..400)) {
        let good = codec::encode(1, &[0u8; 32], &sample_event());
        decode_record(&enveloped(&good, &payload));
    }
}

#[test]
fn the_samples_decode() {
    let r = SnapshotRequest::from_json(&serde_json::to_vec(&sample_request()).unwrap()).unwrap();
    assert_eq!(r.targets.len(), 2);
    for e in other_events() {
        let bytes = codec::encode(3, &[7u8; 32], &e);
        assert_eq!(codec::decode(&bytes).unwrap().event, e);
        let payload = codec::check_envelope(&bytes).unwrap().to_vec();
        assert_eq!(
            enveloped(&bytes, &payload),
            bytes,
            "enveloped() rebuilds a record"
        );
    }
}
