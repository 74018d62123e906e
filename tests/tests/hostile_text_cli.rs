//! Text from clients and from the log never drives the terminal (issue 12
//! item 11): a log whose request id, target, origin, reasons and error
//! messages carry escape sequences, carriage returns and newlines is printed
//! by `recman events`, `job`, `jobs`, `targets` and `snapshots`; no control
//! byte reaches stdout or stderr and no line is forged.

use std::path::Path;

use recman_events::log::open;
use recman_events::model::{SnapshotInfo, StepDetail, StepError};
use recman_events::{Backend, Event, EventBody, JobId, RequestId, SnapshotKind, Stage, TargetId, WorkerId};
use recman_testkit::{recman, text};

const EVIL: &str = "x\x1b]0;owned\x07\x1b[2J\r\n     99  forged line\u{9b}31m\u{202e}";

fn write_log(dir: &Path) -> JobId {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let job = JobId::new_v7();
    let target = TargetId::from(format!("t{EVIL}"));
    let worker = WorkerId::from(format!("w{EVIL}"));
    let at = 1_700_000_000_000;
    let ev = |body| Event {
        at_ms: at,
        job,
        body,
        by: String::new(),
    };
    let events = vec![
        ev(EventBody::Requested {
            request_id: RequestId::from(format!("r{EVIL}")),
            targets: vec![target.clone()],
            kind: SnapshotKind::Full,
            origin: format!("o{EVIL}"),
        }),
        ev(EventBody::AttemptStarted {
            attempt: 1,
            freeze_budget_ms: 1000,
            watchdog_at_ms: at + 1000,
        }),
        ev(EventBody::StepFailed {
            stage: Stage::Freeze,
            attempt: 1,
            target: target.clone(),
            worker: Some(worker.clone()),
            error: StepError::new(format!("c{EVIL}"), format!("hook stderr{EVIL}"), true),
        }),
        ev(EventBody::StepSucceeded {
            stage: Stage::Snapshot,
            attempt: 1,
            target: target.clone(),
            worker,
            duration_us: 5,
            detail: StepDetail::Snapshot(SnapshotInfo {
                name: format!("n{EVIL}"),
                provider: format!("p{EVIL}"),
                location: format!("l{EVIL}"),
                size_bytes: None,
                existed: false,
                array_expiry: None,
            }),
        }),
        ev(EventBody::CancelRequested {
            reason: format!("because{EVIL}"),
        }),
        ev(EventBody::Failed {
            attempt: 1,
            reason: format!("failed{EVIL}"),
        }),
    ];
    rt.block_on(async {
        let log = open(Backend::Redb, dir).unwrap();
        log.append(events).await.unwrap();
    });
    job
}

/// Every byte a terminal would obey: C0 but newline, DEL, and C1 / bidi
/// overrides as UTF-8.
fn control_bytes(s: &str) -> Vec<char> {
    s.chars()
        .filter(|&c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c))
        .collect()
}

#[test]
fn log_text_is_escaped_by_every_read_command() {
    let dir = tempfile::tempdir().unwrap();
    let job = write_log(dir.path()).to_string();
    for args in [
        vec!["events"],
        vec!["events", "--job", &job],
        vec!["job", &job],
        vec!["jobs"],
        vec!["targets"],
        vec!["snapshots"],
    ] {
        let out = recman(dir.path(), &args);
        let all = text(&out);
        println!("recman {args:?}:\n{all}");
        assert!(out.status.code().is_some_and(|c| c <= 1), "{args:?}: {all}");
        let bad = control_bytes(&all);
        assert!(
            bad.is_empty(),
            "{args:?} printed control characters {bad:?}:\n{all}"
        );
        assert!(
            !all.lines().any(|l| l.trim_start().starts_with("99  forged")),
            "{args:?}: a forged line:\n{all}"
        );
    }
    let events = text(&recman(dir.path(), &["events"]));
    assert!(
        events.contains("\\x1b]0;owned\\x07"),
        "escapes are shown: {events}"
    );
    assert_eq!(events.lines().count(), 6, "one line per event: {events}");
}
