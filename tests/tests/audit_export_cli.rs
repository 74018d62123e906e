//! Audit export and published heads with the real binary (issue 20): a range
//! exported by `recman audit --export` verifies against the head `--head`
//! printed, and every line matches `schemas/audit-export.schema.json`; a
//! changed byte, a removed record and a reordered record in the export are
//! each named by seq; a range that ends before the head says it proves only
//! itself. Then `recman up` publishes the head to a webhook served by this
//! test, the test cuts the tail off the redb file, and `--check-head` (and
//! the verifier) detect what the hash chain alone cannot.

use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use recman_events::export::Head;
use recman_events::log::{open_store, redb_store};
use recman_events::Backend;
use recman_testkit::{recman, text};
use recman_tests::cli::Server;

use crate::notify_cli::{hmac_hex, webhook_receiver};

/// A log of 500 events written by `recman bench log`, copied for each test.
fn template() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = recman(
            dir.path(),
            &["bench", "log", "--events", "500", "--appenders", "4"],
        );
        assert!(out.status.success(), "bench failed: {}", text(&out));
        dir
    })
    .path()
}

fn fresh_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        template().join(redb_store::FILE_NAME),
        dir.path().join(redb_store::FILE_NAME),
    )
    .unwrap();
    dir
}

fn head_of(data: &Path) -> Head {
    let out = recman(data, &["audit", "--head"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn verify(data: &Path, file: &Path, head: Option<&Head>) -> (Option<i32>, String) {
    let f = file.to_str().unwrap();
    let h = head.map(Head::to_string);
    let mut args = vec!["audit", "--verify-export", f];
    if let Some(h) = &h {
        args.extend(["--head", h]);
    }
    let out: Output = recman(data, &args);
    (out.status.code(), text(&out))
}

/// Rewrites the record lines of an export (`lines[0]` is the header).
fn tamper(src: &Path, dst: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(src)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    f(&mut lines);
    std::fs::write(dst, lines.join("\n") + "\n").unwrap();
}

#[test]
fn an_exported_range_verifies_against_the_head_and_tampering_is_named() {
    let dir = fresh_copy();
    let data = dir.path();
    let head = head_of(data);
    assert_eq!(head.seq, 500);
    let file = data.join("range.jsonl");
    let out = recman(
        data,
        &["audit", "--export", "200..", "--out", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "exported records 200..=500 (301 records) anchored at seq 199; the log's head is {head}"
        )),
        "{}",
        text(&out)
    );

    // Every line is what the checked-in schema describes.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/audit-export.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let body = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1 + 301 + 1);
    for l in &lines {
        let errors: Vec<String> = validator.iter_errors(l).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{l}: {errors:?}");
    }
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(lines[0]["anchor"]["seq"], 199);
    assert_eq!(lines[1]["seq"], 200);
    assert_eq!(
        lines[1]["event"]["body"]["type"], "step_succeeded",
        "the readable copy"
    );
    assert_eq!(lines[302]["type"], "head");
    assert_eq!(lines[302]["hash"], head.hash_hex());

    let (code, t) = verify(data, &file, Some(&head));
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("verified against the published head"), "{t}");
    assert!(
        t.contains("records 200..=500 are the ones the published head (seq 500) covers"),
        "{t}"
    );

    // A range that ends before the head: intact, but not checked against it.
    let short = data.join("short.jsonl");
    let out = recman(data, &["audit", "--export", "200..300"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::write(&short, &out.stdout).unwrap();
    let (code, t) = verify(data, &short, Some(&head));
    assert_eq!(code, Some(3), "{t}");
    assert!(
        t.contains("proves only itself") && t.contains("export 200..500"),
        "{t}"
    );
    let (code, t) = verify(data, &short, None);
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("no published head given"), "{t}");

    // A changed byte: the CRC of record 250 (line 51) fails.
    let bad = data.join("bad.jsonl");
    tamper(&file, &bad, |l| {
        let mut v: serde_json::Value = serde_json::from_str(&l[51]).unwrap();
        assert_eq!(v["seq"], 250);
        let mut hex = v["bytes"].as_str().unwrap().to_string();
        let c = if &hex[60..61] == "0" { "1" } else { "0" };
        hex.replace_range(60..61, c);
        v["bytes"] = hex.into();
        l[51] = v.to_string();
    });
    let (code, t) = verify(data, &bad, Some(&head));
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains("seq 250: record 250 is damaged: checksum mismatch"),
        "{t}"
    );
    assert!(t.contains("NOT verified"), "{t}");

    // A removed record.
    tamper(&file, &bad, |l| {
        l.remove(51);
    });
    let (code, t) = verify(data, &bad, Some(&head));
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains("seq 250: record 250 is missing from the export"),
        "{t}"
    );

    // A reordered record.
    tamper(&file, &bad, |l| l.swap(51, 52));
    let (code, t) = verify(data, &bad, Some(&head));
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains("seq 250: record 250 comes after record 251: records were reordered"),
        "{t}"
    );

    // The export never overwrites a file.
    let before = std::fs::read(&file).unwrap();
    let out = recman(
        data,
        &["audit", "--export", "1..5", "--out", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("never overwrites"), "{}", text(&out));
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // A range beyond the log, and a head given to the local audit instead of an export.
    let out = recman(data, &["audit", "--export", "400..900"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("the log ends at seq 500"), "{}", text(&out));
    let out = recman(data, &["audit", "--head", &head.to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--check-head"), "{}", text(&out));
    let (code, t) = verify(data, &data.join(redb_store::FILE_NAME), None);
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("not a recman audit export"), "{t}");
}

const SECRET: &str = "head-secret";

/// A `log_head` notification: its body as JSON, its headers, its bytes.
type Posted = (serde_json::Value, Vec<(String, String)>, Vec<u8>);

#[test]
fn a_truncated_log_is_detected_against_the_head_published_to_a_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (port, posts) = webhook_receiver();
    std::fs::write(data.join("hook-secret"), format!("{SECRET}\n")).unwrap();
    std::fs::write(
        data.join("recman.toml"),
        format!(
            r#"[[target]]
id = "db"
writer = {{ type = "none" }}
provider = {{ type = "none" }}

[[schedule]]
id = "db-often"
targets = ["db"]
every = "1s"

[audit]
publish_head_every = "1s"

[[notify]]
id = "heads"
kind = "webhook"
url = "http://127.0.0.1:{port}/heads"
secret_file = "hook-secret"
events = ["log_head"]
backoff = "100ms"
"#
        ),
    )
    .unwrap();
    let mut server = Server::start(data, &[]);

    // Heads arrive every second, signed; wait for one that covers some jobs.
    let heads = || -> Vec<Posted> {
        posts
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(h, b)| {
                let v: serde_json::Value = serde_json::from_slice(b).ok()?;
                (v["kind"] == "log_head").then(|| (v, h.clone(), b.clone()))
            })
            .collect()
    };
    let (published, headers, body) =
        recman_testkit::wait_for("a head with seq >= 20", Duration::from_secs(40), || {
            heads()
                .into_iter()
                .find(|(v, _, _)| v["head"]["seq"].as_u64() >= Some(20))
        });
    let sig = headers
        .iter()
        .find(|(k, _)| k == "x-recman-signature")
        .map(|(_, v)| v.clone());
    assert_eq!(
        sig,
        Some(format!("sha256={}", hmac_hex(SECRET.as_bytes(), &body)))
    );
    let h: Head = format!(
        "{}:{}",
        published["head"]["seq"],
        published["head"]["hash"].as_str().unwrap()
    )
    .parse()
    .unwrap();
    assert_eq!(published["seq"], h.seq);
    assert!(
        published["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("--check-head {h}")),
        "{published}"
    );
    // Periodically: another one follows about a second later.
    recman_testkit::wait_until("a second head, a period later", Duration::from_secs(20), || {
        heads()
            .iter()
            .any(|(v, _, _)| v["at_ms"].as_u64() >= published["at_ms"].as_u64().map(|a| a + 900))
    });
    server.terminate(Duration::from_secs(30));

    // The log (which may have gone on since) still holds the published head.
    let now = head_of(data);
    assert!(now.seq >= h.seq, "{now} vs {h}");
    let out = recman(data, &["audit", "--check-head", &h.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("the log still holds record {} as published", h.seq)),
        "{}",
        text(&out)
    );

    // Cut the tail off the redb file: records h.seq-4 .. the end.
    let cut_from = h.seq - 4;
    {
        let store = open_store(Backend::Redb, data, false).unwrap();
        for seq in cut_from..=now.seq {
            store.put_raw(seq, None).unwrap();
        }
    }
    // The chain alone cannot see it…
    let out = recman(data, &["audit"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("intact"), "{}", text(&out));
    // …the published head does.
    let out = recman(data, &["audit", "--check-head", &h.to_string()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "seq {}: the log lost records: it ends at seq {}",
            h.seq,
            cut_from - 1
        )),
        "{t}"
    );
    let out = recman(data, &["audit", "--check-head", &h.to_string(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["clean"].as_bool(), v["head_findings"][0]["seq"].as_u64()),
        (Some(false), Some(h.seq)),
        "{v}"
    );
    // So does an export of what is left, verified against it.
    let file = data.join("left.jsonl");
    let out = recman(
        data,
        &["audit", "--export", "1..", "--out", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (code, t) = verify(data, &file, Some(&h));
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "the log ended at seq {} when it was exported",
            cut_from - 1
        )),
        "{t}"
    );
}
