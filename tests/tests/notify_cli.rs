//! Notifications end to end with the real binary: `recman up` with `every =
//! "2s"` on two targets fires on its own, prunes the good target by its
//! rules (`keep_last = 2`) and shows the RPO state; a webhook receiver in
//! this process gets a `failed` notification for the target whose hook
//! fails, signed with HMAC-SHA256 (checked here with ring, independently of
//! recman's own code); an SMTP listener in this process gets the email;
//! `/metrics` counts what was sent; `validate-config` names the line of a
//! missing secret file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recman_testkit::{recman, text};
use recman_tests::cli::{http, Server};

const SECRET: &str = "webhook-secret-never-logged";

/// `(headers lowercased, body)` of every POST; answers 200.
pub(crate) type Posts = Arc<Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>>;

pub(crate) fn webhook_receiver() -> (u16, Posts) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got: Posts = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let g = g.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut headers = Vec::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                        }
                    }
                    let len = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    g.lock().unwrap().push((headers, body));
                    let _ = r
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    (port, got)
}

/// A plain SMTP listener (for `tls = "none"`): keeps every DATA.
fn smtp_listener() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mails: Arc<Mutex<Vec<String>>> = Arc::default();
    let m = mails.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let m = m.clone();
            std::thread::spawn(move || {
                let _ = s.write_all(b"220 test ESMTP\r\n");
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let up = line.trim_end().to_ascii_uppercase();
                    let reply: &[u8] = if up.starts_with("EHLO") {
                        b"250 test\r\n"
                    } else if up == "DATA" {
                        let _ = s.write_all(b"354 go\r\n");
                        let mut data = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                            data.push_str(&line);
                        }
                        m.lock().unwrap().push(data);
                        b"250 queued\r\n"
                    } else if up == "QUIT" {
                        let _ = s.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = s.write_all(reply);
                }
            });
        }
    });
    (port, mails)
}

fn write(dir: &Path, hook_port: u16, smtp_port: u16) {
    let d = dir.display();
    std::fs::write(dir.join("hook-secret"), format!("{SECRET}\n")).unwrap();
    let text = format!(
        r#"[[target]]
id = "good"
rpo = "1h"
keep_last = 2
[target.writer]
type = "exec"
freeze = ["true"]
thaw = ["true"]
[target.provider]
type = "copy"
source = "{d}/src"
dest = "{d}/snaps"

[[target]]
id = "bad"
rpo = "3s"
retries = 0
[target.writer]
type = "exec"
freeze = ["/bin/sh", "-c", "echo the hook says no >&2; exit 1"]
thaw = ["true"]
[target.provider]
type = "none"

[[schedule]]
id = "good-2s"
targets = ["good"]
every = "2s"

[[schedule]]
id = "bad-2s"
targets = ["bad"]
every = "2s"

[[notify]]
id = "ops-hook"
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/recman?token=not-for-logs"
secret_file = "hook-secret"
events = ["failed", "rpo_breached"]
backoff = "100ms"

[[notify]]
id = "ops-mail"
kind = "email"
smtp = "127.0.0.1:{smtp_port}"
tls = "none"
from = "recman <recman@example.com>"
to = ["ops@example.com"]
events = ["failed"]
backoff = "100ms"
"#
    );
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/data"), "x").unwrap();
    std::fs::write(dir.join("recman.toml"), text).unwrap();
}

pub(crate) fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&k, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn json(data: &Path, args: &[&str]) -> serde_json::Value {
    let out = recman(data, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)))
}

#[test]
fn up_fires_prunes_and_notifies_a_failure_by_webhook_and_email() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (hook_port, posts) = webhook_receiver();
    let (smtp_port, mails) = smtp_listener();
    write(data, hook_port, smtp_port);
    let server = Server::start(data, &[]);

    // A failed job of "bad" reaches the webhook, signed.
    let deadline = Instant::now() + Duration::from_secs(40);
    let failed = loop {
        let found = posts.lock().unwrap().iter().find_map(|(h, b)| {
            let v: serde_json::Value = serde_json::from_slice(b).ok()?;
            (v["kind"] == "failed").then(|| (h.clone(), b.clone(), v))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "no failed notification reached the webhook"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (headers, body, v) = failed;
    let h = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(
        h("x-recman-signature"),
        Some(format!("sha256={}", hmac_hex(SECRET.as_bytes(), &body))),
        "the signature is HMAC-SHA256 of the body with the secret"
    );
    assert_ne!(
        h("x-recman-signature"),
        Some(format!("sha256={}", hmac_hex(b"other", &body)))
    );
    assert_eq!(h("x-recman-event").as_deref(), Some("failed"));
    assert_eq!(v["targets"], serde_json::json!(["bad"]), "{v}");
    assert!(v["summary"].as_str().unwrap().contains("the hook says no"), "{v}");
    assert_eq!(v["event"]["body"]["type"], "failed", "{v}");
    assert!(
        !String::from_utf8_lossy(&body).contains(SECRET),
        "the secret is in the body"
    );

    // ... and the mailbox.
    let mail = recman_testkit::wait_for("the email", Duration::from_secs(20), || {
        mails.lock().unwrap().first().cloned()
    });
    assert!(mail.contains("Subject: [recman] failed: bad"), "{mail}");
    assert!(mail.contains("To: ops@example.com"), "{mail}");

    // The RPO breach of "bad" (3s) is a notification too.
    recman_testkit::wait_until("an rpo_breached notification", Duration::from_secs(20), || {
        posts.lock().unwrap().iter().any(|(_, b)| {
            serde_json::from_slice::<serde_json::Value>(b).is_ok_and(|v| v["kind"] == "rpo_breached")
        })
    });

    // "good" fires on its own and is pruned to its keep_last = 2.
    recman_testkit::wait_until(
        "good pruned to 2 after 3 snapshots",
        Duration::from_secs(30),
        || {
            let ev = text(&recman(data, &["events", "--json"]));
            let completed = ev.lines().filter(|l| l.contains("\"completed\"")).count();
            let snaps = json(data, &["snapshots", "good", "--json"]);
            completed >= 3 && snaps["snapshots"].as_array().map(Vec::len) == Some(2)
        },
    );
    let t = json(data, &["targets", "--json"]);
    let rpo = |id: &str| {
        t["targets"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == id))
            .map(|x| x["rpo"]["breached"].clone())
    };
    assert_eq!(rpo("bad"), Some(serde_json::json!(true)), "{t}");
    assert_eq!(rpo("good"), Some(serde_json::json!(false)), "{t}");

    let (_, metrics) = http(server.port, "GET", "/metrics", "");
    let sent = |sink: &str, kind: &str| {
        let prefix = format!("recman_notify_sent_total{{sink=\"{sink}\",kind=\"{kind}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {prefix}: {metrics}"))
    };
    assert!(sent("ops-hook", "webhook") >= 2, "{metrics}");
    assert!(sent("ops-mail", "email") >= 1, "{metrics}");
    assert!(metrics.contains("recman_notify_dropped_total{sink=\"ops-hook\",kind=\"webhook\"} 0"));
    assert!(!metrics.contains("not-for-logs") && !metrics.contains(SECRET));
    drop(server);
}

#[test]
fn validate_config_names_the_line_of_a_missing_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("recman.toml"),
        "[[target]]\nid = \"db\"\nwriter = { type = \"none\" }\nprovider = { type = \"none\" }\n\n\
         [[notify]]\nid = \"ops\"\nkind = \"webhook\"\nurl = \"https://hooks.example.com/x\"\n\
         secret_file = \"no-such-secret\"\n",
    )
    .unwrap();
    let out = recman(dir.path(), &["validate-config"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("recman.toml:10:15: notify[0].secret_file: cannot read") && t.contains("no-such-secret"),
        "{t}"
    );
    std::fs::write(
        dir.path().join("recman.toml"),
        "[[notify]]\nid = \"ops\"\nkind = \"webhook\"\nurl = \"https://hooks.example.com/x\"\n\
         secret_file = \"s\"\nevents = [\"failed\", \"on_fire\"]\n",
    )
    .unwrap();
    let out = recman(dir.path(), &["validate-config"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("recman.toml:6:10: notify[0].events: unknown event kind \"on_fire\""),
        "{t}"
    );
}
