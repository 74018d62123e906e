//! An event log written by an older build still decodes and replays to the
//! same jobs and catalog (rkyv has no schema evolution; see `fixtures/README.md`).

use recman_core::Core;
use recman_events::codec;
use serde_json::{json, Value};

fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 4;
        out.push(bytes[at..at + len].to_vec());
        at += len;
    }
    out
}

#[test]
fn a_v1_log_still_decodes_and_replays_to_the_same_state() {
    let bytes = std::fs::read("tests/fixtures/v1-log.bin").expect("fixture");
    let expected: Value =
        serde_json::from_slice(&std::fs::read("tests/fixtures/v1-log.expected.json").expect("fixture"))
            .expect("json");
    let mut core = Core::new(recman_core::CoreConfig::default());
    let mut prev = codec::GENESIS_HASH;
    let recs = records(&bytes);
    assert_eq!(recs.len() as u64, expected["events"].as_u64().expect("events"));
    for (i, r) in recs.iter().enumerate() {
        let rec = codec::decode(r).unwrap_or_else(|e| panic!("record {} does not decode: {e}", i + 1));
        assert_eq!(rec.seq, i as u64 + 1);
        assert_eq!(rec.prev_hash, prev, "hash chain at {}", rec.seq);
        prev = codec::hash(r);
        core.apply(&rec.event);
    }
    let st = core.state();
    let jobs: Vec<Value> = st
        .jobs
        .values()
        .map(|j| {
            json!({
                "id": j.id, "state": j.state, "attempt": j.attempt,
                "snapshot": j.snapshot.as_ref().map(|s| s.name.clone()),
                "late_snapshot": j.late_snapshot,
                "outcome": j.outcome,
            })
        })
        .collect();
    assert_eq!(Value::from(jobs), expected["jobs"]);
    // The fixture predates the entries' `kind` (derived from the job) and
    // `safety` (a v1 log has no recoveries: false): compare the rest.
    let mut catalog = serde_json::to_value(&st.catalog).expect("json");
    for entries in catalog.as_object_mut().expect("map").values_mut() {
        for e in entries.as_array_mut().expect("entries") {
            let e = e.as_object_mut().expect("entry");
            e.remove("kind");
            assert_eq!(e.remove("safety"), Some(Value::Bool(false)));
        }
    }
    assert_eq!(catalog, expected["catalog"]);
}
