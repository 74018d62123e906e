//! The export and its verifier on an in-memory log: a clean range verifies
//! against the head; a changed byte, a removed record, a reordered record,
//! an edited readable copy, a cut file and a head the range does not reach
//! are each reported, naming the seq; a log with a cut tail fails its head.

use std::sync::Arc;

use super::head::{check_head, head};
use super::verify::{verify, HeadVerdict, VerifyReport, MAX_FINDINGS};
use super::write::export;
use super::*;
use crate::codec;
use crate::ids::{JobId, TargetId, WorkerId};
use crate::log::memory::{self, MemoryStore};
use crate::log::store::Store;
use crate::model::{EventBody, Stage, StepDetail};

fn ev(n: u64) -> Event {
    Event {
        at_ms: 1_764_000_000_000 + n,
        job: JobId::from_parts(1_764_000_000_000, u128::from(n % 3)),
        body: EventBody::StepSucceeded {
            stage: Stage::Snapshot,
            attempt: 1,
            target: TargetId::from(format!("t-{n}")),
            worker: WorkerId::from("w1"),
            duration_us: n,
            detail: StepDetail::None,
        },
        by: String::new(),
    }
}

/// A store holding `n` events, appended in a few batches.
async fn store_with(n: u64) -> Arc<MemoryStore> {
    let store = MemoryStore::new();
    let log = memory::open_on(&store).unwrap();
    for chunk in (1..=n).collect::<Vec<_>>().chunks(7) {
        log.append(chunk.iter().map(|i| ev(*i)).collect()).await.unwrap();
    }
    drop(log);
    store
}

fn export_text(store: &Arc<MemoryStore>, from: u64, to: Option<u64>) -> String {
    let log = memory::open_for_reading_on(store).unwrap();
    let mut out = Vec::new();
    let done = export(&*log, from, to, 1_795_000_000_000, &mut out).unwrap();
    assert!(done.damaged.is_empty(), "{done:?}");
    String::from_utf8(out).unwrap()
}

fn head_of(store: &Arc<MemoryStore>) -> Head {
    head(&*memory::open_for_reading_on(store).unwrap()).unwrap()
}

fn check(text: &str, published: Option<Head>) -> VerifyReport {
    verify(text.as_bytes(), published).unwrap()
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(String::from).collect()
}

fn join(lines: &[String]) -> String {
    lines.join("\n") + "\n"
}

/// The messages of `r`, one per line, for assertions and failure output.
fn said(r: &VerifyReport) -> String {
    r.findings.iter().map(|f| format!("{f}\n")).collect()
}

#[tokio::test]
async fn a_range_to_the_head_verifies_against_the_published_head() {
    let store = store_with(30).await;
    let h = head_of(&store);
    assert_eq!(h.seq, 30);
    let text = export_text(&store, 11, None);
    let l = lines(&text);
    assert_eq!(l.len(), 1 + 20 + 1, "header, 20 records, head");
    let header: Line = serde_json::from_str(&l[0]).unwrap();
    let Line::Header(header) = header else {
        panic!("{}", l[0])
    };
    assert_eq!((header.from, header.to, header.anchor.seq), (11, 30, 10));
    let r = check(&text, Some(h));
    assert!(r.is_clean(), "{}", said(&r));
    assert_eq!(r.records, 20);
    assert!(
        matches!(r.published_head, Some(HeadVerdict::Matches { .. })),
        "{r:?}"
    );
    // The same head checks a range that passes it: records after it chain on.
    let r = check(&export_text(&store, 1, None), Some(head_of(&store)));
    assert!(r.is_clean(), "{}", said(&r));
    // An earlier head inside the range.
    let log = memory::open_for_reading_on(&store).unwrap();
    let h20 = Head {
        seq: 20,
        hash: codec::hash(&head::record(&*log, 20).unwrap().unwrap()),
    };
    let r = check(&text, Some(h20));
    let Some(HeadVerdict::Matches { message }) = &r.published_head else {
        panic!("{r:?}")
    };
    assert!(
        message.contains("records 11..=20") && message.contains("21..=30"),
        "{message}"
    );
    // The anchor is the published head: the range continues from it.
    let h10 = Head {
        seq: 10,
        hash: codec::hash(&head::record(&*log, 10).unwrap().unwrap()),
    };
    let r = check(&text, Some(h10));
    assert!(
        matches!(r.published_head, Some(HeadVerdict::Matches { .. })),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_range_that_does_not_reach_the_head_proves_only_itself() {
    let store = store_with(30).await;
    let text = export_text(&store, 5, Some(12));
    let r = check(&text, Some(head_of(&store)));
    assert!(r.is_clean(), "{}", said(&r));
    let Some(HeadVerdict::NotCovered { message }) = &r.published_head else {
        panic!("{r:?}")
    };
    assert!(
        message.contains("before the published head at seq 30") && message.contains("5..30"),
        "{message}"
    );
    assert!(
        r.not_checked.iter().any(|n| n.contains("13..=30")),
        "{:?}",
        r.not_checked
    );
    let r = check(&text, None);
    assert!(r.is_clean() && r.published_head.is_none());
    assert!(
        r.not_checked.iter().any(|n| n.contains("no published head")),
        "{:?}",
        r.not_checked
    );
}

#[tokio::test]
async fn a_changed_byte_is_named() {
    let store = store_with(20).await;
    let text = export_text(&store, 1, None);
    let mut l = lines(&text);
    let mut v: serde_json::Value = serde_json::from_str(&l[8]).unwrap();
    assert_eq!(v["seq"], 8);
    let mut bytes = from_hex(v["bytes"].as_str().unwrap()).unwrap();
    bytes[40] ^= 0x01;
    v["bytes"] = to_hex(&bytes).into();
    l[8] = v.to_string();
    let r = check(&join(&l), Some(head_of(&store)));
    assert!(!r.is_clean());
    assert!(r.findings.iter().all(|f| f.seq == 8), "{}", said(&r));
    assert!(
        said(&r).contains("record 8 is damaged: checksum mismatch"),
        "{}",
        said(&r)
    );

    // Changed with a new CRC and hash field: the next record's chain breaks.
    let rec = codec::decode(
        &from_hex(
            serde_json::from_str::<serde_json::Value>(&lines(&text)[8]).unwrap()["bytes"]
                .as_str()
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut forged = rec.clone();
    forged.event.at_ms += 1;
    let fb = codec::encode_record(&forged);
    let mut v: serde_json::Value = serde_json::from_str(&lines(&text)[8]).unwrap();
    v["bytes"] = to_hex(&fb).into();
    v["hash"] = to_hex(&codec::hash(&fb)).into();
    v["event"] = serde_json::to_value(&forged.event).unwrap();
    let mut l = lines(&text);
    l[8] = v.to_string();
    let r = check(&join(&l), None);
    assert_eq!(r.findings.len(), 1, "{}", said(&r));
    assert_eq!(r.findings[0].seq, 9);
    assert!(
        r.findings[0].message.contains("record 8 was changed"),
        "{}",
        said(&r)
    );
}

#[tokio::test]
async fn a_removed_record_is_named() {
    let store = store_with(20).await;
    let mut l = lines(&export_text(&store, 1, None));
    l.remove(12); // seq 12
    let r = check(&join(&l), Some(head_of(&store)));
    assert_eq!(r.findings.len(), 1, "{}", said(&r));
    assert_eq!(r.findings[0].seq, 12);
    assert!(
        r.findings[0]
            .message
            .contains("record 12 is missing from the export"),
        "{}",
        said(&r)
    );
    // The last record removed: the end is missing, and the head does not match.
    let mut l = lines(&export_text(&store, 1, None));
    l.remove(20);
    let r = check(&join(&l), Some(head_of(&store)));
    assert!(
        said(&r).contains("seq 20: record 20 is missing from the end"),
        "{}",
        said(&r)
    );
}

#[tokio::test]
async fn a_reordered_record_is_named() {
    let store = store_with(20).await;
    let mut l = lines(&export_text(&store, 1, None));
    l.swap(5, 6); // seqs 5 and 6
    let r = check(&join(&l), Some(head_of(&store)));
    let s = said(&r);
    assert!(s.contains("seq 5: record 5 is missing"), "{s}");
    assert!(
        s.contains("seq 5: record 5 comes after record 6: records were reordered"),
        "{s}"
    );
    assert!(r.findings.iter().all(|f| (5..=7).contains(&f.seq)), "{s}");
    // Reordered inside the bytes (the line's seq kept): seq and chain disagree.
    let mut l = lines(&export_text(&store, 1, None));
    let mut a: serde_json::Value = serde_json::from_str(&l[5]).unwrap();
    let b: serde_json::Value = serde_json::from_str(&l[6]).unwrap();
    a["bytes"] = b["bytes"].clone();
    a["hash"] = b["hash"].clone();
    a["event"] = b["event"].clone();
    l[5] = a.to_string();
    let s = said(&check(&join(&l), None));
    assert!(
        s.contains("seq 5: the line says seq 5, its bytes say seq 6"),
        "{s}"
    );
}

#[tokio::test]
async fn an_edited_readable_copy_a_cut_file_and_garbage_are_named() {
    let store = store_with(10).await;
    let text = export_text(&store, 1, None);
    let mut l = lines(&text);
    let mut v: serde_json::Value = serde_json::from_str(&l[3]).unwrap();
    v["event"]["body"]["target"] = "someone-else".into();
    l[3] = v.to_string();
    let s = said(&check(&join(&l), None));
    assert!(
        s.contains("seq 3: record 3: its readable event does not match its bytes"),
        "{s}"
    );

    let mut l = lines(&text);
    l.pop();
    let s = said(&check(&join(&l), None));
    assert!(s.contains("no head line at its end"), "{s}");

    let mut l = lines(&text);
    l[4] = "{not json".into();
    let s = said(&check(&join(&l), None));
    assert!(s.contains("seq 4: line 5 is unreadable"), "{s}");

    // A line longer than MAX_LINE is refused without being kept.
    let mut l = lines(&text);
    l.insert(2, "x".repeat(MAX_LINE + 10));
    let s = said(&check(&join(&l), None));
    assert!(
        s.contains(&format!("line 3 is unreadable: longer than {MAX_LINE} bytes")),
        "{s}"
    );

    assert!(matches!(
        verify(&b""[..], None),
        Err(verify::VerifyError::NotAnExport(_))
    ));
    // A hostile header: a range from 0, or ending before it starts.
    for (from, to) in [(0, 5), (9, 3)] {
        let mut l = lines(&text);
        let mut v: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
        v["from"] = from.into();
        v["to"] = to.into();
        l[0] = v.to_string();
        let e = verify(
            join(&l).as_bytes(),
            Some(Head {
                seq: u64::MAX,
                hash: [0; 32],
            }),
        )
        .unwrap_err();
        assert!(e.to_string().contains("empty or starts at 0"), "{e}");
    }
    // A published head at the very end of the seq space is simply not covered.
    let r = check(
        &text,
        Some(Head {
            seq: u64::MAX,
            hash: [0; 32],
        }),
    );
    assert!(
        matches!(r.published_head, Some(HeadVerdict::NotCovered { .. })),
        "{r:?}"
    );
    let e = verify(
        &b"{\"type\":\"header\",\"format\":\"recman-audit-export\",\"version\":2}\n"[..],
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("version 2"), "{e}");
}

#[tokio::test]
async fn findings_are_bounded() {
    let store = store_with(3).await;
    let l = lines(&export_text(&store, 1, None));
    let mut many = vec![l[0].clone()];
    many.extend(std::iter::repeat_n("[]".to_string(), MAX_FINDINGS + 500));
    let r = check(&join(&many), None);
    assert_eq!(r.findings.len(), MAX_FINDINGS);
    assert!(r.more_findings >= 500);
}

#[tokio::test]
async fn a_published_head_beyond_the_exported_log_is_a_cut_tail() {
    let store = store_with(30).await;
    let published = head_of(&store);
    for seq in 26..=30 {
        store.put_raw(seq, None).unwrap();
    }
    let log = memory::open_for_reading_on(&store).unwrap();
    assert_eq!(log.last_seq(), 25);
    // The chain alone cannot see it: an export of what is left is intact…
    let text = export_text(&store, 1, None);
    assert!(check(&text, None).is_clean());
    // …but not against the head published before the cut.
    let r = check(&text, Some(published));
    assert!(
        said(&r).contains("seq 30: the log ended at seq 25 when it was exported"),
        "{}",
        said(&r)
    );
    let f = check_head(&*log, &published).unwrap().expect("a finding");
    assert_eq!(f.seq, 30);
    assert!(
        f.message.contains("the log lost records: it ends at seq 25") && f.message.contains("26..=30"),
        "{f}"
    );
    drop(log);

    // Cut, then new events appended: seq 30 exists again, with another hash.
    let log = memory::open_on(&store).unwrap();
    log.append((100..110).map(ev).collect()).await.unwrap();
    let f = check_head(&*log, &published).unwrap().expect("a finding");
    assert_eq!(f.seq, 30);
    assert!(
        f.message
            .contains("record 30 is not the one the published head names"),
        "{f}"
    );
    assert_eq!(check_head(&*log, &head(&*log).unwrap()).unwrap(), None);
    assert_eq!(check_head(&*log, &Head::EMPTY).unwrap(), None);
}

#[tokio::test]
async fn ranges_beyond_the_log_are_refused() {
    let store = store_with(5).await;
    let log = memory::open_for_reading_on(&store).unwrap();
    let e = export(&*log, 3, Some(9), 0, &mut Vec::new()).unwrap_err();
    assert!(
        e.to_string()
            .contains("the log ends at seq 5: it has no records 6..=9"),
        "{e}"
    );
    let e = export(&*log, 7, None, 0, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}
