//! `recman events --follow` with the real binary, both ways it reads: through
//! a running `recman up` (its SSE feed) and straight from the data dir between
//! CLI runs. In each, the followed output is every event once, in order, with
//! no gap by `seq`, and new jobs show up without restarting the follower.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use recman_testkit::{recman, recman_cmd, text};
use recman_tests::cli::{write_config, Server};
use serde_json::Value;

/// A running `recman events --follow --json`; its lines arrive on a channel.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Follower {
    fn start(data: &Path) -> Follower {
        let mut child = recman_cmd(data)
            .args(["events", "--follow", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start recman events --follow");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// Events until the `n`-th `completed` (at most 30 s).
    fn until_completed(&self, n: usize) -> Vec<Value> {
        let mut got = Vec::new();
        while got
            .iter()
            .filter(|e: &&Value| e["event"]["body"]["type"] == "completed")
            .count()
            < n
        {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(v) => got.push(v),
                Err(e) => panic!("follower gave {} events, then {e:?}: {got:?}", got.len()),
            }
        }
        got
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_gap_free(events: &[Value], from: u64) {
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (from..from + seqs.len() as u64).collect();
    assert_eq!(seqs, want, "every event once, in order, no gap");
}

fn snapshot(data: &Path, rid: &str) {
    let out = recman(data, &["snapshot", "fast", "--request-id", rid]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn follow_through_a_running_server_sees_new_jobs_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    write_config(data, 0, "");
    let _server = Server::start(data, &[]);
    snapshot(data, "before");
    let f = Follower::start(data);
    let first = f.until_completed(1);
    assert_eq!(first[0]["event"]["body"]["type"], "requested");
    // Jobs submitted while it follows arrive live (the SSE feed).
    snapshot(data, "during-1");
    snapshot(data, "during-2");
    let rest = f.until_completed(2);
    let all: Vec<Value> = first.iter().chain(&rest).cloned().collect();
    assert_gap_free(&all, 1);
    let requests: Vec<&str> = all
        .iter()
        .filter(|e| e["event"]["body"]["type"] == "requested")
        .map(|e| e["event"]["body"]["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(requests, ["before", "during-1", "during-2"]);
}

#[test]
fn follow_on_the_data_dir_picks_up_jobs_of_later_cli_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    write_config(data, 0, "");
    snapshot(data, "one");
    let f = Follower::start(data);
    let first = f.until_completed(1);
    // Each `recman snapshot` owns the log while it runs; the follower waits
    // and then prints what it appended.
    snapshot(data, "two");
    snapshot(data, "three");
    let rest = f.until_completed(2);
    let all: Vec<Value> = first.iter().chain(&rest).cloned().collect();
    assert_gap_free(&all, 1);
    let last = all.last().unwrap();
    assert_eq!(last["event"]["body"]["type"], "completed");
}
