//! Single-byte damage anywhere in a real log file never crashes recman
//! (issue 12 item 10): `recman bench log` writes a log, then one byte at a
//! time is flipped in a copy of its file (the redb file, and sled's `db`),
//! and `recman audit` must end with 0 (the byte did not matter), 1 (findings,
//! each with its seq) or 2 (could not read: a clear error naming the log),
//! never with a panic. `recman events` is run on some of them too.

use std::path::{Path, PathBuf};
use std::process::Output;

use recman_events::log::{redb_store, sled_store};
use recman_testkit::{recman, text};

const EVENTS: u64 = 600;

fn bench_log(backend: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = recman(
        dir.path(),
        &[
            "bench",
            "log",
            "--events",
            &EVENTS.to_string(),
            "--appenders",
            "4",
            "--backend",
            backend,
        ],
    );
    assert!(out.status.success(), "bench failed: {}", text(&out));
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Offsets to damage: densely in the first pages (headers, roots), then
/// spread over the whole file, then pseudo-random ones (fixed seed).
fn offsets(len: usize, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..len.min(1024)).step_by(9).collect();
    let spread = n.saturating_sub(v.len()) / 2;
    v.extend((0..spread).map(|i| i * len / spread.max(1)));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push((x % len as u64) as usize);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Asserts what one run may show; returns its exit code.
fn check(out: &Output, what: &str) -> i32 {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("{what}: killed by a signal: {}", text(out)));
    assert!(
        !stderr.contains("panicked") && code != 101,
        "{what}: recman panicked: {}",
        text(out)
    );
    assert!(code <= 2, "{what}: exit {code}: {}", text(out));
    if code == 2 {
        assert!(
            stderr.contains("error:") && (stderr.contains("event log") || stderr.contains("events.")),
            "{what}: exit 2 without a clear error: {}",
            text(out)
        );
    }
    code
}

/// Flips `n` bytes one at a time; returns how many runs ended 0, 1 and 2.
fn flip_all(backend: &str, file: &str, n: usize) -> [usize; 3] {
    let template = bench_log(backend);
    let path: PathBuf = template.path().join(file);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    let mut counts = [0usize; 3];
    let mut shorter = 0;
    let offs = offsets(len, n);
    for (i, &off) in offs.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let target = dir.path().join(file);
        let mut bytes = std::fs::read(&target).unwrap();
        bytes[off] ^= 0x5a;
        std::fs::write(&target, &bytes).unwrap();
        let what = format!("{backend}: byte {off} of {file} ({len} bytes)");
        let out = recman(dir.path(), &["audit"]);
        let code = check(&out, &format!("audit, {what}"));
        let records = String::from_utf8_lossy(&out.stdout)
            .split("audited ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        if code == 0 && records != Some(EVENTS) {
            shorter += 1;
        }
        if code == 1 {
            let out = recman(dir.path(), &["audit"]);
            assert!(
                text(&out).contains("seq "),
                "{what}: findings name a seq: {}",
                text(&out)
            );
        }
        counts[code as usize] += 1;
        if i % 8 == 0 {
            check(&recman(dir.path(), &["events"]), &format!("events, {what}"));
        }
    }
    println!(
        "{backend}: {} single-byte flips of {file} ({len} bytes): intact {} (of which {shorter} read \
         fewer than {EVENTS} records), findings {}, unreadable (clear error) {}",
        offs.len(),
        counts[0],
        counts[1],
        counts[2]
    );
    counts
}

#[test]
fn single_byte_flips_of_a_redb_log_never_panic() {
    let counts = flip_all("redb", redb_store::FILE_NAME, 260);
    assert!(counts[1] + counts[2] > 0, "some flips must be noticed");
}

#[test]
fn single_byte_flips_of_a_sled_log_never_panic() {
    // sled checks its own segments and recovers up to a damaged one, so most
    // flips leave a readable log; what this asserts is that none panics.
    flip_all("sled", &format!("{}/db", sled_store::DIR_NAME), 200);
}
