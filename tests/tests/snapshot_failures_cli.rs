//! `recman snapshot` with the real binary when things go wrong: a failing
//! freeze, a failing snapshot after the freeze, a snapshot that hangs past the
//! freeze limit, and the process killed in the middle of a job then restarted.
//! Writers and providers are `exec` shell scripts that log what they did.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use recman_testkit::{recman, recman_bin, text};

/// `["sh", "-c", script]` as a TOML array.
fn sh(script: &str) -> String {
    format!("[\"sh\", \"-c\", {}]", serde_json::to_string(script).unwrap())
}

struct Setup {
    _dir: tempfile::TempDir,
    data: PathBuf,
    /// Writer log: `freeze <ns>` / `thaw <ns>` lines.
    w: PathBuf,
    /// Provider log.
    p: PathBuf,
    /// Where the provider makes snapshot directories.
    snaps: PathBuf,
}

impl Setup {
    /// A data dir with `recman.toml` declaring target `t1` with `extra` keys
    /// and the given provider `create` script.
    fn new(extra: &str, freeze: &str, create: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let snaps = dir.path().join("snaps");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&snaps).unwrap();
        let (w, p) = (dir.path().join("writer.log"), dir.path().join("provider.log"));
        let vars = |s: &str| {
            s.replace("$W", &w.display().to_string())
                .replace("$P", &p.display().to_string())
                .replace("$S", &snaps.display().to_string())
                .replace("$D", &dir.path().display().to_string())
        };
        let toml = format!(
            "[[target]]\nid = \"t1\"\n{extra}\n[target.writer]\ntype = \"exec\"\nfreeze = {}\nthaw = {}\n\
             [target.provider]\ntype = \"exec\"\ncreate = {}\n",
            sh(&vars(freeze)),
            sh(&vars("rm -f $D/FROZEN; echo thaw $(date +%s%N) >> $W")),
            sh(&vars(create)),
        );
        std::fs::write(data.join("recman.toml"), toml).unwrap();
        Setup {
            _dir: dir,
            data,
            w,
            p,
            snaps,
        }
    }

    fn frozen_marker(&self) -> PathBuf {
        self.data.parent().unwrap().join("FROZEN")
    }

    fn writer_log(&self) -> Vec<(String, u128)> {
        read(&self.w)
            .lines()
            .map(|l| {
                let (what, ns) = l.split_once(' ').unwrap();
                (what.to_string(), ns.parse().unwrap())
            })
            .collect()
    }

    fn events(&self) -> Vec<serde_json::Value> {
        let out = recman(&self.data, &["events", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The usual freeze: marks the target frozen and logs it.
const FREEZE: &str = "touch $D/FROZEN; echo freeze $(date +%s%N) >> $W";

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn kinds(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"]["body"]["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Every freeze is followed by a thaw, and nothing stays frozen.
fn assert_thawed(s: &Setup) {
    let log = s.writer_log();
    let whats: Vec<&str> = log.iter().map(|(w, _)| w.as_str()).collect();
    assert!(!whats.is_empty(), "the target was never frozen");
    for pair in whats.chunks(2) {
        assert_eq!(pair, ["freeze", "thaw"], "writer log: {whats:?}");
    }
    assert!(!s.frozen_marker().exists(), "target left frozen: {whats:?}");
}

#[test]
fn a_failing_freeze_fails_the_job_and_nothing_is_snapshotted() {
    let s = Setup::new(
        "retries = 0",
        "echo 'cannot quiesce: disk full' >&2; exit 1",
        "echo create >> $P",
    );
    let out = recman(&s.data, &["snapshot", "t1", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints one document");
    assert_eq!(summary["state"], "failed", "{summary}");
    let reason = summary["reason"].as_str().unwrap();
    assert!(
        reason.contains("disk full"),
        "the writer's stderr is the reason: {reason}"
    );
    assert!(read(&s.p).is_empty(), "the provider ran: {}", read(&s.p));
    let k = kinds(&s.events());
    assert!(k.contains(&"failed".to_string()), "{k:?}");
    assert!(!k.contains(&"completed".to_string()), "{k:?}");
}

#[test]
fn a_failing_snapshot_after_the_freeze_still_thaws_every_attempt() {
    // Exit 75 = retryable: two attempts (retries = 1), both thawed, then the job fails.
    let s = Setup::new(
        "retries = 1",
        FREEZE,
        "echo create >> $P; echo 'array busy' >&2; exit 75",
    );
    let out = recman(&s.data, &["snapshot", "t1"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("array busy"), "{all}");
    assert!(all.contains("retrying as attempt 2"), "{all}");
    assert_eq!(read(&s.p).lines().count(), 2, "one snapshot try per attempt");
    assert_eq!(
        s.writer_log().len(),
        4,
        "freeze, thaw, freeze, thaw: {:?}",
        s.writer_log()
    );
    assert_thawed(&s);
}

#[test]
fn a_snapshot_hanging_past_the_freeze_limit_is_thawed_at_the_limit() {
    let s = Setup::new(
        "retries = 0\nfreeze_limit = \"2s\"",
        FREEZE,
        "echo create >> $P; sleep 4",
    );
    let t = Instant::now();
    let out = recman(&s.data, &["snapshot", "t1"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let log = s.writer_log();
    assert_eq!(log.len(), 2, "{log:?}");
    let frozen_ms = (log[1].1 - log[0].1) / 1_000_000;
    assert!(
        (1_000..=2_000).contains(&frozen_ms),
        "thawed {frozen_ms} ms after the freeze; the limit is 2 s:\n{all}"
    );
    assert_thawed(&s);
    let k = kinds(&s.events());
    assert!(k.contains(&"forced_thaw".to_string()), "{k:?}");
    assert!(!k.contains(&"completed".to_string()), "{k:?}");
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn killed_mid_job_then_restarted_finishes_once_and_thaws() {
    let s = Setup::new(
        "",
        FREEZE,
        "echo start $RECMAN_SNAPSHOT >> $P; if [ ! -d $S/$RECMAN_SNAPSHOT ]; then sleep 2; \
         mkdir $S/$RECMAN_SNAPSHOT; echo made $RECMAN_SNAPSHOT >> $P; fi; echo $S/$RECMAN_SNAPSHOT",
    );
    // Its own session, so the kill takes the hooks it started with it (a host
    // crash; a hook started by a worker lives on its own when only the worker dies).
    let mut child = std::process::Command::new("setsid")
        .arg(recman_bin())
        .arg("--data-dir")
        .arg(&s.data)
        .args(["snapshot", "t1", "--request-id", "r-kill"])
        .env_remove("RECMAN_DATA_DIR")
        .env_remove("RECMAN_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !read(&s.p).contains("start") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the snapshot never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = std::process::Command::new("pkill")
        .args(["-KILL", "-s", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let _ = child.wait();
    assert!(
        s.frozen_marker().exists(),
        "the kill should leave the target frozen"
    );
    assert!(
        !read(&s.p).contains("made"),
        "killed before the snapshot was made"
    );

    // The same request again: the restarted engine replays, re-sends the
    // snapshot, then thaws (the old worker is gone: the retry goes to the pool).
    let out = recman(&s.data, &["snapshot", "t1", "--request-id", "r-kill"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("completed: snapshot"), "{all}");
    assert_thawed(&s);
    assert_eq!(read(&s.p).matches("made").count(), 1, "{}", read(&s.p));
    assert_eq!(std::fs::read_dir(&s.snaps).unwrap().count(), 1);
    let ev = s.events();
    let snapshots = ev
        .iter()
        .filter(|e| {
            e["event"]["body"]["type"] == "step_succeeded" && e["event"]["body"]["stage"] == "snapshot"
        })
        .count();
    assert_eq!(snapshots, 1, "{:?}", kinds(&ev));
    assert_eq!(kinds(&ev).iter().filter(|k| *k == "completed").count(), 1);
    let audit = recman(&s.data, &["audit"]);
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));
}
