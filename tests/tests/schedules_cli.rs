//! Schedules end to end with the real binary: `recman up` with `every =
//! "2s"` on two targets fires on its own; `recman schedules` shows the next
//! firing and the last outcome, pause and resume go through the server;
//! `recman targets` and `/metrics` show the RPO of a target whose hook
//! fails (breached) and of one that succeeds (kept); `validate-config`
//! names file, line and key of a bad schedule.

use std::path::Path;
use std::time::{Duration, Instant};

use recman_testkit::{recman, text};
use recman_tests::cli::{http, Server};

fn write(dir: &Path) {
    let d = dir.display();
    let text = format!(
        r#"[[target]]
id = "good"
rpo = "1h"
[target.writer]
type = "exec"
freeze = ["true"]
thaw = ["true"]
[target.provider]
type = "exec"
create = ["/bin/sh", "-c", "echo {d}/snaps/$RECMAN_SNAPSHOT"]

[[target]]
id = "bad"
rpo = "3s"
retries = 0
[target.writer]
type = "exec"
freeze = ["/bin/sh", "-c", "echo no >&2; exit 1"]
thaw = ["true"]
[target.provider]
type = "exec"
create = ["/bin/sh", "-c", "echo {d}/snaps/$RECMAN_SNAPSHOT"]

[[schedule]]
id = "good-2s"
targets = ["good"]
every = "2s"

[[schedule]]
id = "bad-2s"
targets = ["bad"]
every = "2s"
overlap = "queue_one"
"#
    );
    std::fs::write(dir.join("recman.toml"), text).unwrap();
}

fn json(data: &Path, args: &[&str]) -> serde_json::Value {
    let out = recman(data, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)))
}

fn schedule<'a>(v: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    v["schedules"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no schedule {id}: {v}"))
}

fn target<'a>(v: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    v["targets"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no target {id}: {v}"))
}

#[test]
fn up_fires_every_2s_and_shows_schedules_and_rpo() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    write(data);
    let server = Server::start(data, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let v = json(data, &["schedules", "--json"]);
        let t = json(data, &["targets", "--json"]);
        let fired = |id: &str| schedule(&v, id)["fired"].as_u64().unwrap_or(0);
        let settled = |id: &str| {
            schedule(&v, id)["last_outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with("completed") || o.starts_with("failed"))
        };
        if fired("good-2s") >= 2
            && fired("bad-2s") >= 2
            && settled("good-2s")
            && settled("bad-2s")
            && target(&t, "bad")["rpo"]["breached"] == true
        {
            break v;
        }
        assert!(Instant::now() < deadline, "schedules did not fire: {v}\n{t}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let good = schedule(&v, "good-2s");
    assert!(
        good["last_outcome"].as_str().unwrap().starts_with("completed"),
        "{good}"
    );
    assert!(good["next_ms"].as_u64().is_some(), "{good}");
    assert!(good["spec"].as_str().unwrap().contains("every=2s"), "{good}");
    let bad = schedule(&v, "bad-2s");
    assert!(
        bad["last_outcome"].as_str().unwrap().starts_with("failed"),
        "{bad}"
    );

    // The table: next firing and last outcome.
    let out = recman(data, &["schedules"]);
    let table = text(&out);
    assert!(
        table.contains("SCHEDULE") && table.contains("LAST OUTCOME"),
        "{table}"
    );
    assert!(
        table.contains("good-2s") && table.contains("completed"),
        "{table}"
    );

    // RPO: the failing target breached, the other kept.
    let t = json(data, &["targets", "--json"]);
    assert_eq!(target(&t, "bad")["rpo"]["breached"], true, "{t}");
    assert_eq!(target(&t, "good")["rpo"]["breached"], false, "{t}");
    let table = text(&recman(data, &["targets"]));
    assert!(
        table.contains("3s BREACHED") && table.contains("1h ok"),
        "{table}"
    );
    let (_, metrics) = http(server.port, "GET", "/metrics", "");
    assert!(
        metrics.contains("recman_rpo_breached{target=\"bad\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("recman_rpo_breached{target=\"good\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("recman_last_good_snapshot_timestamp_seconds{target=\"good\"}"),
        "{metrics}"
    );
    let events = text(&recman(data, &["events"]));
    assert!(
        events.contains("rpo_breached") && events.contains("schedule_fired"),
        "{events}"
    );

    // Pause and resume through the server, recorded.
    let out = recman(
        data,
        &["schedules", "pause", "good-2s", "--reason", "maintenance"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v = json(data, &["schedules", "--json"]);
    assert_eq!(schedule(&v, "good-2s")["paused"], "maintenance", "{v}");
    let fired = schedule(&v, "good-2s")["fired"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(4_500));
    let v = json(data, &["schedules", "--json"]);
    assert_eq!(
        schedule(&v, "good-2s")["fired"].as_u64().unwrap(),
        fired,
        "paused: no firing"
    );
    let out = recman(data, &["schedules", "resume", "good-2s"]);
    assert!(out.status.success(), "{}", text(&out));
    // Over HTTP, a body without a reason records the pause's own default
    // (not the cancel's).
    let (status, body) = http(server.port, "POST", "/v1/schedules/bad-2s/pause", "{}");
    assert_eq!(status, 202, "{body}");
    let v = json(data, &["schedules", "--json"]);
    assert_eq!(schedule(&v, "bad-2s")["paused"], "paused through the API", "{v}");
    let out = recman(data, &["schedules", "pause", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let events = text(&recman(data, &["events"]));
    assert!(
        events.contains("schedule_paused") && events.contains("schedule_resumed"),
        "{events}"
    );
    drop(server);
    assert_eq!(recman(data, &["audit"]).status.code(), Some(0));
}

#[test]
fn validate_config_names_file_line_and_key_of_bad_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[[target]]\nid = \"db\"\nwriter = { type = \"none\" }\nprovider = { type = \"none\" }\n";
    for (field, want) in [
        ("cron = \"0 2 * *\"", "recman.toml:8:8: schedule[0].cron"),
        (
            "cron = \"0 2 * * *\"\ntimezone = \"Mars/Olympus\"",
            "recman.toml:9:12: schedule[0].timezone: unknown time zone",
        ),
    ] {
        let text_ = format!("{base}[[schedule]]\nid = \"n\"\ntargets = [\"db\"]\n{field}\n");
        std::fs::write(dir.path().join("recman.toml"), text_).unwrap();
        let out = recman(dir.path(), &["validate-config"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "a bad config is a finding: {}",
            text(&out)
        );
        assert!(text(&out).contains(want), "{want}: {}", text(&out));
    }
    let text_ = format!("{base}[[schedule]]\nid = \"n\"\ntargets = [\"db\", \"dbx\"]\nevery = \"4h\"\n");
    std::fs::write(dir.path().join("recman.toml"), text_).unwrap();
    let out = recman(dir.path(), &["validate-config"]);
    assert!(
        text(&out).contains("schedule[0].targets: unknown target \"dbx\""),
        "{}",
        text(&out)
    );
}
