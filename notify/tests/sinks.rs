//! The notifier against real sockets: a webhook receiver (HTTP/1.1 on
//! loopback) that checks the signature and fails the first attempt, an SMTP
//! server speaking plain SMTP and STARTTLS (rustls, a CA made here), and a
//! sink that never answers (its queue fills: drops are counted).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use recman_config::{Config, NotifyConfig};
use recman_events::log::memory;
use recman_events::{Event, EventBody, EventLog, JobId, SnapshotKind, TargetId};
use recman_notify::sign::verify;
use recman_notify::sink::{BoxFuture, Deliver, DeliveryError};
use recman_notify::{Notification, Notifier};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const JOB: &str = "01930000-0000-7000-8000-00000000000a";

fn sinks(dir: &std::path::Path, toml: &str) -> Vec<NotifyConfig> {
    let path = dir.join("recman.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load(&path).unwrap_or_else(|e| panic!("{e}")).notify
}

/// A job on `pg-main` that fails (appended after the notifier started).
async fn a_failed_job(log: &Arc<dyn EventLog>) {
    let job: JobId = JOB.parse().unwrap();
    let at = recman_events::clock::now_ms();
    log.append(vec![
        Event {
            at_ms: at,
            job,
            body: EventBody::Requested {
                request_id: "r1".into(),
                targets: vec![TargetId::from("pg-main")],
                kind: SnapshotKind::Full,
                origin: "cli".into(),
            },
            by: String::new(),
        },
        Event {
            at_ms: at + 1,
            job,
            body: EventBody::Failed {
                attempt: 1,
                reason: "freeze: exec_failed: the hook exited with 3".into(),
            },
            by: String::new(),
        },
    ])
    .await
    .unwrap();
}

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(tokio::time::Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// An HTTP/1.1 receiver: answers 503 to the first request, 200 after.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/recman?token=not-for-logs",
        l.local_addr().unwrap()
    );
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let g = g.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                loop {
                    let mut headers = Vec::new();
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        r.read_line(&mut line).await.unwrap();
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        let (k, v) = l.split_once(':').unwrap();
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .map(|(_, v)| v.parse().unwrap())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).await.unwrap();
                    let first = {
                        let mut all = g.lock().unwrap();
                        all.push(Received { headers, body });
                        all.len() == 1
                    };
                    let status = if first {
                        "503 Service Unavailable"
                    } else {
                        "200 OK"
                    };
                    let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                    r.get_mut().write_all(reply.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_reaches_the_webhook_signed_after_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "s3cret-key\n").unwrap();
    let (url, got) = webhook_receiver().await;
    let cfg = sinks(
        dir.path(),
        &format!(
            "[[notify]]\nid = \"ops\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret_file = \"secret\"\nbackoff = \"50ms\"\n"
        ),
    );
    let log = memory::open().unwrap();
    let n = Notifier::start(&cfg, vec![(TargetId::from("pg-main"), None)], log.clone(), None).unwrap();
    a_failed_job(&log).await;
    let metrics = n.metrics();
    until("a delivered notification", || {
        metrics
            .sinks()
            .next()
            .filter(|(_, c)| c.sent.load(Ordering::Relaxed) == 1)
            .map(|_| ())
    })
    .await;
    let all = std::mem::take(&mut *got.lock().unwrap());
    assert_eq!(all.len(), 2, "one refused attempt, one delivered");
    for r in all.iter() {
        let h = |k: &str| {
            r.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert!(
            verify(b"s3cret-key", &r.body, &h("x-recman-signature")),
            "bad signature"
        );
        assert!(!verify(b"another-key", &r.body, &h("x-recman-signature")));
        assert_eq!(h("x-recman-event"), "failed");
        assert_eq!(h("content-type"), "application/json");
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(json["kind"], "failed");
        assert_eq!(json["targets"], serde_json::json!(["pg-main"]));
        assert_eq!(json["job"], JOB);
        assert_eq!(h("x-recman-delivery"), json["delivery"].as_str().unwrap());
        assert!(
            json["summary"]
                .as_str()
                .unwrap()
                .contains("the hook exited with 3"),
            "{json}"
        );
    }
    // The same delivery id on the retry: receivers can drop duplicates.
    assert_eq!(all[0].body, all[1].body);
    let c = metrics.sinks().next().unwrap().1;
    assert_eq!(c.attempts_failed.load(Ordering::Relaxed), 1);
    assert_eq!(c.failed.load(Ordering::Relaxed), 0);
    let mut text = String::new();
    metrics.render(&mut text);
    assert!(
        text.contains("recman_notify_sent_total{sink=\"ops\",kind=\"webhook\"} 1"),
        "{text}"
    );
    assert!(!text.contains("not-for-logs"));
    n.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_not_notified_again() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "k").unwrap();
    let (url, got) = webhook_receiver().await;
    let cfg = sinks(
        dir.path(),
        &format!("[[notify]]\nid = \"ops\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret_file = \"secret\"\n"),
    );
    let log = memory::open().unwrap();
    a_failed_job(&log).await;
    let n = Notifier::start(&cfg, vec![], log.clone(), None).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        got.lock().unwrap().len(),
        0,
        "a failure from before the start was sent"
    );
    n.stop(Duration::from_secs(1)).await;
}

/// Never answers: every notification waits behind the first.
struct Stuck;

impl Deliver for Stuck {
    fn deliver<'a>(&'a self, _: &'a Notification) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(std::future::pending())
    }
    fn describe(&self) -> String {
        "stuck".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_stays_down_drops_beyond_its_queue_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sinks(
        dir.path(),
        "[[notify]]\nid = \"slow\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\nsecret_file = \"x\"\n\
         queue = 2\ntimeout = \"1h\"\nevents = [\"requested\", \"failed\"]\n",
    );
    let log = memory::open().unwrap();
    let n = Notifier::start_with(vec![(&cfg[0], Arc::new(Stuck))], vec![], log.clone());
    // Three jobs: six notifications; one is being delivered, two queued.
    for _ in 0..3 {
        a_failed_job(&log).await;
    }
    let metrics = n.metrics();
    // Six notifications: at most one being delivered and two queued; the
    // rest are dropped (when the delivery task has not taken the first one
    // yet, one more).
    let (dropped, pending) = until("six notifications queued or dropped", || {
        let c = metrics.sinks().next().unwrap().1;
        let (d, p) = (
            c.dropped.load(Ordering::Relaxed),
            c.pending.load(Ordering::Relaxed),
        );
        (d + p == 6).then_some((d, p))
    })
    .await;
    assert!(
        (3..=4).contains(&dropped) && pending <= 3,
        "dropped {dropped}, pending {pending}"
    );
    let mut text = String::new();
    metrics.render(&mut text);
    assert!(
        text.contains(&format!(
            "recman_notify_dropped_total{{sink=\"slow\",kind=\"webhook\"}} {dropped}"
        )),
        "{text}"
    );
    n.stop(Duration::from_millis(100)).await;
}

// --- SMTP --------------------------------------------------------------------

#[derive(Default)]
struct Mailbox {
    mails: Vec<String>,
    auth: Vec<String>,
    tls: bool,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn smtp_session(
    s: Box<dyn Io>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mb: Arc<Mutex<Mailbox>>,
) -> BoxFuture<'static, ()> {
    Box::pin(smtp_session_inner(s, tls, mb))
}

async fn smtp_session_inner(s: Box<dyn Io>, tls: Option<tokio_rustls::TlsAcceptor>, mb: Arc<Mutex<Mailbox>>) {
    let after_starttls = tls.is_none() && mb.lock().unwrap().tls;
    let mut r = BufReader::new(s);
    if !after_starttls {
        r.get_mut().write_all(b"220 test ESMTP\r\n").await.unwrap();
    }
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        let up = cmd.to_ascii_uppercase();
        let reply: &[u8] = if up.starts_with("EHLO") {
            if tls.is_some() {
                b"250-test\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n"
            } else {
                b"250-test\r\n250 AUTH PLAIN\r\n"
            }
        } else if up == "STARTTLS" {
            r.get_mut().write_all(b"220 go ahead\r\n").await.unwrap();
            let acceptor = tls.clone().unwrap();
            let stream = acceptor.accept(r.into_inner()).await.unwrap();
            mb.lock().unwrap().tls = true;
            return smtp_session(Box::new(stream), None, mb).await;
        } else if up.starts_with("AUTH PLAIN") {
            mb.lock().unwrap().auth.push(cmd[11..].to_string());
            b"235 ok\r\n"
        } else if up.starts_with("MAIL") || up.starts_with("RCPT") || up == "RSET" || up == "NOOP" {
            b"250 ok\r\n"
        } else if up == "DATA" {
            r.get_mut().write_all(b"354 go\r\n").await.unwrap();
            let mut data = String::new();
            loop {
                line.clear();
                r.read_line(&mut line).await.unwrap();
                if line == ".\r\n" {
                    break;
                }
                data.push_str(&line);
            }
            mb.lock().unwrap().mails.push(data);
            b"250 queued\r\n"
        } else if up == "QUIT" {
            let _ = r.get_mut().write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"502 no\r\n"
        };
        r.get_mut().write_all(reply).await.unwrap();
    }
}

async fn smtp_server(tls: Option<tokio_rustls::TlsAcceptor>) -> (u16, Arc<Mutex<Mailbox>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let mb: Arc<Mutex<Mailbox>> = Arc::default();
    let m = mb.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(smtp_session(Box::new(s), tls.clone(), m.clone()));
        }
    });
    (port, mb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_reaches_the_mailbox_over_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
    std::fs::write(dir.path().join("smtp-password"), "pw-never-logged\n").unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ca.signing_key.serialize_der().into());
    let server =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ca.cert.der().clone()], key)
            .unwrap();
    let (port, mb) = smtp_server(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))).await;
    let cfg = sinks(
        dir.path(),
        &format!(
            "[[notify]]\nid = \"mail\"\nkind = \"email\"\nsmtp = \"localhost:{port}\"\nca_file = \"ca.pem\"\n\
             username = \"recman\"\npassword_file = \"smtp-password\"\nfrom = \"recman <recman@example.com>\"\n\
             to = [\"ops@example.com\"]\nbackoff = \"50ms\"\n"
        ),
    );
    let log = memory::open().unwrap();
    let n = Notifier::start(&cfg, vec![], log.clone(), None).unwrap();
    a_failed_job(&log).await;
    let mail = until("an email", || mb.lock().unwrap().mails.first().cloned()).await;
    let (tls, auth) = {
        let m = mb.lock().unwrap();
        (m.tls, m.auth.clone())
    };
    assert!(tls, "the mail went out before STARTTLS");
    assert!(mail.contains("Subject: [recman] failed: pg-main"), "{mail}");
    assert!(mail.contains("snapshot of pg-main failed (attempt 1)"), "{mail}");
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    // AUTH PLAIN: base64("\0recman\0pw-never-logged"), sent only inside TLS.
    assert_eq!(auth, ["AHJlY21hbgBwdy1uZXZlci1sb2dnZWQ="]);
    n.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_starttls_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mb) = smtp_server(None).await;
    let cfg = sinks(
        dir.path(),
        &format!(
            "[[notify]]\nid = \"mail\"\nkind = \"email\"\nsmtp = \"127.0.0.1:{port}\"\n\
             from = \"recman@example.com\"\nto = [\"ops@example.com\"]\nretries = 1\nbackoff = \"50ms\"\n"
        ),
    );
    let log = memory::open().unwrap();
    let n = Notifier::start(&cfg, vec![], log.clone(), None).unwrap();
    a_failed_job(&log).await;
    let metrics = n.metrics();
    until("the notification given up", || {
        (metrics.sinks().next().unwrap().1.failed.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    assert!(mb.lock().unwrap().mails.is_empty(), "sent in clear text");
    n.stop(Duration::from_secs(1)).await;
}

/// Keeps every notification it is given.
struct Keep(Arc<Mutex<Vec<Notification>>>);

impl Deliver for Keep {
    fn deliver<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), DeliveryError>> {
        self.0.lock().unwrap().push(n.clone());
        Box::pin(async { Ok(()) })
    }
    fn describe(&self) -> String {
        "keep".into()
    }
}

/// The daily summary goes out at its time of day (the notifier's clock is
/// set 300 ms before the next 08:00 UTC) with each target's report, the
/// failures of the last 24 h counted, and once: the next is a day later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_summary_goes_out_at_its_time_with_each_targets_report() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sinks(
        dir.path(),
        "[[notify]]\nid = \"daily\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\nsecret_file = \"x\"\n\
         events = [\"rpo_breached\"]\nsummary = \"08:00\"\n",
    );
    let log = memory::open().unwrap();
    a_failed_job(&log).await; // history: counted in the summary, not notified
    let real = recman_events::clock::now_ms();
    let day = 86_400_000;
    let eight = real / day * day + 8 * 3_600_000;
    let next_eight = if eight > real + 300 { eight } else { eight + day };
    let offset = next_eight - 300 - real;
    let clock: recman_notify::Clock = Arc::new(move || recman_events::clock::now_ms() + offset);
    let got: Arc<Mutex<Vec<Notification>>> = Arc::default();
    let targets = vec![
        (TargetId::from("pg-main"), Some(26 * 3_600_000)),
        (TargetId::from("docs"), None),
    ];
    let n = Notifier::start_clocked(
        vec![(&cfg[0], Arc::new(Keep(got.clone())))],
        targets,
        log.clone(),
        clock,
        None,
    );
    assert!(got.lock().unwrap().is_empty(), "nothing before its time");
    let s = until("the summary", || got.lock().unwrap().first().cloned()).await;
    assert_eq!(s.kind, "summary");
    assert!(
        s.at_ms >= next_eight && s.at_ms < next_eight + 5_000,
        "{} vs {next_eight}",
        s.at_ms
    );
    let report = s.report.clone().expect("a report");
    let pg = report
        .iter()
        .find(|r| r.target.as_str() == "pg-main")
        .expect("pg-main");
    assert_eq!(pg.failures_24h, 1, "{pg:?}");
    assert!(
        pg.last_failure
            .as_deref()
            .unwrap_or("")
            .contains("the hook exited with 3"),
        "{pg:?}"
    );
    assert_eq!(pg.rpo_ms, Some(26 * 3_600_000));
    let docs = report.iter().find(|r| r.target.as_str() == "docs").expect("docs");
    assert_eq!((docs.failures_24h, docs.rpo.as_str()), (0, "none"));
    assert!(s.summary.contains("daily summary: 2 targets"), "{}", s.summary);
    // Once a day: nothing more a second later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(got.lock().unwrap().len(), 1, "one summary per day");
    n.stop(Duration::from_secs(1)).await;
}

/// The log's head goes to a sink that lists `log_head`, at once and then
/// every period: its seq is the log's last, its hash the BLAKE3 of that
/// record's bytes, and a later one follows new appends. A sink that does not
/// list it gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_head_goes_out_periodically_to_the_sinks_that_list_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sinks(
        dir.path(),
        "[[notify]]\nid = \"heads\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\nsecret_file = \"x\"\n\
         events = [\"log_head\"]\n\
         [[notify]]\nid = \"failures\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\nsecret_file = \"x\"\n",
    );
    let log = memory::open().unwrap();
    a_failed_job(&log).await;
    let heads: Arc<Mutex<Vec<Notification>>> = Arc::default();
    let others: Arc<Mutex<Vec<Notification>>> = Arc::default();
    let n = Notifier::start_clocked(
        vec![
            (&cfg[0], Arc::new(Keep(heads.clone()))),
            (&cfg[1], Arc::new(Keep(others.clone()))),
        ],
        vec![],
        log.clone(),
        Arc::new(recman_events::clock::now_ms),
        Some(Duration::from_millis(200)),
    );
    let first = until("the first head", || heads.lock().unwrap().first().cloned()).await;
    assert_eq!(first.kind, "log_head");
    let h = first.head.clone().expect("a head");
    assert_eq!((h.seq, first.seq), (2, Some(2)));
    let bytes = &log.read_raw(2, 1).unwrap()[0].bytes;
    assert_eq!(
        h.hash,
        recman_events::export::to_hex(&recman_events::codec::hash(bytes))
    );
    assert!(
        first.summary.contains(&format!("--check-head 2:{}", h.hash)),
        "{}",
        first.summary
    );
    let json = serde_json::to_value(&first).unwrap();
    assert_eq!(json["head"]["seq"], 2, "{json}");
    assert!(
        first.text().contains(&format!("head:     2:{}", h.hash)),
        "{}",
        first.text()
    );
    a_failed_job(&log).await;
    let later = until("a head after the new events", || {
        heads.lock().unwrap().iter().find(|n| n.seq == Some(4)).cloned()
    })
    .await;
    assert!(
        later.at_ms >= first.at_ms + 150,
        "{} vs {}",
        later.at_ms,
        first.at_ms
    );
    n.stop(Duration::from_secs(1)).await;
    let others = others.lock().unwrap();
    assert!(others.iter().all(|n| n.kind != "log_head"), "{others:?}");
    assert!(
        others.iter().any(|n| n.kind == "failed"),
        "the other sink still works: {others:?}"
    );
}
