//! `[[notify]]`: where recman tells people about events (a webhook or an
//! email sink), which event kinds, and an opt-in daily summary. Every bad
//! field is named by file, line and key; secrets stay in their files (only
//! the path is kept here, read by the notifier when it starts).

use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::{field, join, ConfigError, Cx};

/// The event kinds a filter may name: every `EventBody::kind` of the event
/// model (`schemas::every_event_kind_can_be_a_notification_filter` checks
/// it).
pub const NOTIFY_KINDS: &[&str] = &[
    "requested",
    "queued",
    "attempt_started",
    "stage_started",
    "step_succeeded",
    "step_failed",
    "stage_timed_out",
    "forced_thaw",
    "watchdog_thawed",
    "retry_scheduled",
    "completed",
    "failed",
    "cancel_requested",
    "cancelled",
    "snapshot_deleted",
    "late_snapshot",
    "prune_requested",
    "prune_failed",
    "schedule_changed",
    "schedule_fired",
    "schedule_skipped",
    "schedule_queued",
    "schedule_paused",
    "schedule_resumed",
    "rpo_changed",
    "rpo_breached",
    "rpo_restored",
    "verify_requested",
    "verify_started",
    "verified",
    "verify_failed",
    "reconcile_requested",
    "reconcile_started",
    "snapshot_vanished",
    "snapshot_unknown",
    "reconciled",
    "reconcile_failed",
    "snapshot_expiry",
    "recovery_requested",
    "recovery_step_started",
    "recovery_step_done",
    "recovery_step_failed",
    "recovery_completed",
    "recovery_failed",
    "recovery_step_noted",
    "approval_required",
    "approved",
];

/// Not an event: the log's head, published every `[audit]
/// publish_head_every` to the sinks whose `events` list it.
pub const LOG_HEAD_KIND: &str = "log_head";

/// The filter of a sink without `events`.
pub const DEFAULT_NOTIFY_EVENTS: &[&str] = &["failed", "rpo_breached", "prune_failed", "recovery_failed"];
/// Notifications a sink holds while it cannot deliver; one more is dropped (counted, logged).
pub const DEFAULT_NOTIFY_QUEUE: u32 = 1000;
/// Attempts after the first one before a notification is given up.
pub const DEFAULT_NOTIFY_RETRIES: u32 = 5;
/// First wait before a retry (doubled each retry, at most [`MAX_NOTIFY_BACKOFF`]).
pub const DEFAULT_NOTIFY_BACKOFF: Duration = Duration::from_secs(2);
pub const MAX_NOTIFY_BACKOFF: Duration = Duration::from_secs(300);
/// One delivery attempt's bound (connect, send, answer).
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// One `[[notify]]` sink.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifyConfig {
    /// `id`: names the sink in logs and in `/metrics`.
    pub id: String,
    /// Event kinds delivered (`events`, default [`DEFAULT_NOTIFY_EVENTS`]).
    pub events: Vec<String>,
    /// `summary = "08:00"`: a daily summary at this UTC time (minutes after
    /// midnight); none without it.
    pub summary_at_min: Option<u32>,
    pub queue: u32,
    pub retries: u32,
    pub backoff: Duration,
    pub timeout: Duration,
    pub kind: SinkConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SinkConfig {
    Webhook(WebhookConfig),
    Email(EmailConfig),
}

impl SinkConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Email(_) => "email",
        }
    }
}

/// A secret's file and where the config names it (`file:line:column: key`),
/// so an unreadable file is reported at its place in the config.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretFile {
    pub path: PathBuf,
    pub at: String,
}

impl SecretFile {
    /// The secret: the file's text without a trailing newline. The error
    /// names the config line and the file, never the content.
    pub fn read(&self) -> Result<String, String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: cannot read {}: {e}", self.at, self.path.display()))?;
        let s = text.trim_end_matches(['\r', '\n']).to_string();
        if s.is_empty() {
            return Err(format!("{}: {} is empty", self.at, self.path.display()));
        }
        Ok(s)
    }
}

/// `kind = "webhook"`: a POST of the notification as JSON, signed
/// (`X-Recman-Signature: sha256=<hex HMAC-SHA256 of the body>`).
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookConfig {
    /// `url`: `http://` or `https://`. Logs show only its scheme and host.
    pub url: String,
    /// `secret_file`: the HMAC key (required).
    pub secret: SecretFile,
    /// `ca_file`: PEM CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// How an email sink talks to its SMTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `tls = "starttls"` (default, port 587): plain, then STARTTLS, required.
    StartTls,
    /// `tls = "tls"` (port 465): TLS from the first byte.
    Tls,
    /// `tls = "none"` (port 25): no TLS at all, for a relay on the same host.
    /// Refused with a password (it would cross the wire in clear).
    None,
}

/// `kind = "email"`: SMTP with STARTTLS.
#[derive(Clone, Debug, PartialEq)]
pub struct EmailConfig {
    /// `smtp = "host:port"` (port default by `tls`: 587, 465, 25).
    pub host: String,
    pub port: u16,
    pub tls: SmtpSecurity,
    /// `username` and `password_file`: SMTP AUTH (both or neither).
    pub username: Option<String>,
    pub password: Option<SecretFile>,
    pub from: String,
    pub to: Vec<String>,
    pub ca_file: Option<PathBuf>,
}

const KEYS: &[&str] = &[
    "id",
    "kind",
    "events",
    "summary",
    "queue",
    "retries",
    "backoff",
    "timeout",
    "url",
    "secret_file",
    "ca_file",
    "smtp",
    "tls",
    "username",
    "password_file",
    "from",
    "to",
];

/// Every `[[notify]]`.
pub(crate) fn sinks(cx: &Cx<'_>, root: &DeTable<'_>) -> Result<Vec<NotifyConfig>, ConfigError> {
    let Some(v) = field(root, "notify") else {
        return Ok(Vec::new());
    };
    let DeValue::Array(items) = v.get_ref() else {
        return Err(cx.err(v.span(), "notify", "must be an array of tables: write [[notify]]"));
    };
    let mut out: Vec<NotifyConfig> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("notify[{i}]");
        let t = cx.table(item, &key)?;
        cx.check_keys(t, &key, KEYS)?;
        let (id, id_span) = cx.required(cx.string(t, &key, "id")?, item.span(), &key, "id")?;
        let id = cx.id(&id, id_span.clone(), &join(&key, "id"))?;
        if let Some(prev) = out.iter().position(|s| s.id == id) {
            return Err(cx.err(
                id_span,
                &join(&key, "id"),
                format!("duplicate notify id \"{id}\" (already used by notify[{prev}])"),
            ));
        }
        let events = match field(t, "events") {
            None => DEFAULT_NOTIFY_EVENTS.iter().map(|s| s.to_string()).collect(),
            Some(ev) => {
                let ekey = join(&key, "events");
                let names = cx.strings(ev, &ekey)?;
                if names.is_empty() {
                    return Err(cx.err(
                        ev.span(),
                        &ekey,
                        "names no event kind: leave it out for the default (failed, rpo_breached, prune_failed, recovery_failed)",
                    ));
                }
                for n in &names {
                    if !NOTIFY_KINDS.contains(&n.as_str()) && n != LOG_HEAD_KIND {
                        return Err(cx.err(
                            ev.span(),
                            &ekey,
                            format!(
                                "unknown event kind \"{n}\" (known: {}, and {LOG_HEAD_KIND}: the log's head)",
                                NOTIFY_KINDS.join(", ")
                            ),
                        ));
                    }
                }
                names
            }
        };
        let summary_at_min = match cx.string(t, &key, "summary")? {
            None => None,
            Some((s, span)) => Some(time_of_day(&s).ok_or_else(|| {
                cx.err(
                    span,
                    &join(&key, "summary"),
                    format!("\"{s}\" is not a time of day: write HH:MM in UTC, e.g. \"08:00\""),
                )
            })?),
        };
        let queue = cx.u32(t, &key, "queue")?.unwrap_or(DEFAULT_NOTIFY_QUEUE);
        if !(1..=1_000_000).contains(&queue) {
            let span = field(t, "queue").map(|v| v.span()).unwrap_or_default();
            return Err(cx.err(span, &join(&key, "queue"), "must be from 1 to 1000000"));
        }
        let retries = cx.u32(t, &key, "retries")?.unwrap_or(DEFAULT_NOTIFY_RETRIES);
        if retries > 100 {
            let span = field(t, "retries").map(|v| v.span()).unwrap_or_default();
            return Err(cx.err(span, &join(&key, "retries"), "at most 100"));
        }
        let backoff = cx.duration(t, &key, "backoff")?.unwrap_or(DEFAULT_NOTIFY_BACKOFF);
        if backoff > MAX_NOTIFY_BACKOFF {
            let span = field(t, "backoff").map(|v| v.span()).unwrap_or_default();
            return Err(cx.err(span, &join(&key, "backoff"), "at most 300s"));
        }
        let timeout = cx.duration(t, &key, "timeout")?.unwrap_or(DEFAULT_NOTIFY_TIMEOUT);
        let (kind, kind_span) = cx.required(cx.string(t, &key, "kind")?, item.span(), &key, "kind")?;
        let webhook_only = ["url", "secret_file"];
        let email_only = ["smtp", "tls", "username", "password_file", "from", "to"];
        let stray = |keys: &[&str]| -> Result<(), ConfigError> {
            for k in keys {
                if let Some(v) = field(t, k) {
                    return Err(cx.err(v.span(), &join(&key, k), format!("not a key of a {kind} sink")));
                }
            }
            Ok(())
        };
        let ca_file = cx.path(t, &key, "ca_file")?;
        let sink = match kind.as_str() {
            "webhook" => {
                stray(&email_only)?;
                let (url, url_span) = cx.required(cx.string(t, &key, "url")?, item.span(), &key, "url")?;
                check_url(&url).map_err(|m| cx.err(url_span, &join(&key, "url"), m))?;
                let secret = secret(cx, t, item.span(), &key, "secret_file")?.ok_or_else(|| {
                    cx.err(
                        item.span(),
                        &join(&key, "secret_file"),
                        "missing (required): a file holding the HMAC key of the signature header",
                    )
                })?;
                SinkConfig::Webhook(WebhookConfig { url, secret, ca_file })
            }
            "email" => {
                stray(&webhook_only)?;
                let tls = match cx.string(t, &key, "tls")? {
                    None => SmtpSecurity::StartTls,
                    Some((s, _)) if s == "starttls" => SmtpSecurity::StartTls,
                    Some((s, _)) if s == "tls" => SmtpSecurity::Tls,
                    Some((s, _)) if s == "none" => SmtpSecurity::None,
                    Some((s, span)) => {
                        return Err(cx.err(
                            span,
                            &join(&key, "tls"),
                            format!("\"{s}\": use starttls, tls or none"),
                        ))
                    }
                };
                let (smtp, smtp_span) =
                    cx.required(cx.string(t, &key, "smtp")?, item.span(), &key, "smtp")?;
                let default_port = match tls {
                    SmtpSecurity::StartTls => 587,
                    SmtpSecurity::Tls => 465,
                    SmtpSecurity::None => 25,
                };
                let (host, port) =
                    host_port(&smtp, default_port).map_err(|m| cx.err(smtp_span, &join(&key, "smtp"), m))?;
                let username = cx.string(t, &key, "username")?;
                let password = secret(cx, t, item.span(), &key, "password_file")?;
                match (&username, &password) {
                    (Some(_), None) | (None, Some(_)) => {
                        return Err(cx.err(
                            item.span(),
                            &key,
                            "write both username and password_file (SMTP AUTH), or neither",
                        ))
                    }
                    _ => {}
                }
                if tls == SmtpSecurity::None && password.is_some() {
                    let span = field(t, "tls").map(|v| v.span()).unwrap_or(item.span());
                    return Err(cx.err(
                        span,
                        &join(&key, "tls"),
                        "a password is never sent without TLS: use starttls or tls",
                    ));
                }
                let (from, from_span) =
                    cx.required(cx.string(t, &key, "from")?, item.span(), &key, "from")?;
                check_address(&from).map_err(|m| cx.err(from_span, &join(&key, "from"), m))?;
                let tkey = join(&key, "to");
                let Some(tv) = field(t, "to") else {
                    return Err(cx.err(item.span(), &tkey, "missing (required): the recipients"));
                };
                let to = cx.strings(tv, &tkey)?;
                if to.is_empty() {
                    return Err(cx.err(tv.span(), &tkey, "must name at least one recipient"));
                }
                for a in &to {
                    check_address(a).map_err(|m| cx.err(tv.span(), &tkey, m))?;
                }
                SinkConfig::Email(EmailConfig {
                    host,
                    port,
                    tls,
                    username: username.map(|(u, _)| u),
                    password,
                    from,
                    to,
                    ca_file,
                })
            }
            other => {
                return Err(cx.err(
                    kind_span,
                    &join(&key, "kind"),
                    format!("unknown sink kind \"{other}\": use webhook or email"),
                ))
            }
        };
        out.push(NotifyConfig {
            id,
            events,
            summary_at_min,
            queue,
            retries,
            backoff,
            timeout,
            kind: sink,
        });
    }
    Ok(out)
}

fn secret(
    cx: &Cx<'_>,
    t: &DeTable<'_>,
    item_span: std::ops::Range<usize>,
    key: &str,
    name: &str,
) -> Result<Option<SecretFile>, ConfigError> {
    let Some(path) = cx.path(t, key, name)? else {
        return Ok(None);
    };
    let span = field(t, name).map(|v| v.span()).unwrap_or(item_span);
    Ok(Some(SecretFile {
        path,
        at: format!("{}: {}", cx.at(span), join(key, name)),
    }))
}

/// `HH:MM` → minutes after midnight.
fn time_of_day(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// `http(s)://host[:port]/…`, nothing the HTTP client would refuse later.
fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("\"{}\" must start with https:// or http://", redact_url(url)))?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("must not carry credentials (user:password@): sign with secret_file instead".into());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, rest)) => (h, rest.strip_prefix(':')),
            None => return Err("an IPv6 address needs its closing ]".into()),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return Err(format!("\"{p}\" is not a port"));
        }
    }
    if host.is_empty() {
        return Err("names no host".into());
    }
    Ok(())
}

/// `scheme://host[:port]` of a URL: what logs may show of it (a path or
/// query may carry a token).
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let authority = authority.rsplit('@').next().unwrap_or("");
            format!("{scheme}://{authority}")
        }
        None => "(not a URL)".into(),
    }
}

fn host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("\"{p}\" is not a port"))?,
        ),
        None => (s, default_port),
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
        return Err(format!("\"{s}\" is not HOST or HOST:PORT"));
    }
    Ok((host.to_string(), port))
}

fn check_address(a: &str) -> Result<(), String> {
    let addr = match (a.rfind('<'), a.ends_with('>')) {
        (Some(i), true) => &a[i + 1..a.len() - 1],
        _ => a,
    };
    match addr.split_once('@') {
        Some((l, d)) if !l.is_empty() && !d.is_empty() && !addr.chars().any(char::is_whitespace) => Ok(()),
        _ => Err(format!("\"{a}\" is not an email address (name@example.com)")),
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError, SinkConfig, SmtpSecurity};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_str(text, "/etc/recman/recman.toml")
    }

    const WEBHOOK: &str = "[[notify]]\nid = \"ops\"\nkind = \"webhook\"\nurl = \"https://hooks.example.com/x?token=abc\"\nsecret_file = \"hook-secret\"\n";

    #[test]
    fn a_webhook_sink_with_defaults() {
        let c = parse(WEBHOOK).unwrap();
        let n = &c.notify[0];
        assert_eq!(n.id, "ops");
        assert_eq!(
            n.events,
            ["failed", "rpo_breached", "prune_failed", "recovery_failed"]
        );
        assert_eq!(n.summary_at_min, None);
        let SinkConfig::Webhook(w) = &n.kind else {
            panic!("{n:?}")
        };
        assert_eq!(w.secret.path, std::path::Path::new("/etc/recman/hook-secret"));
        assert!(
            w.secret.at.starts_with("/etc/recman/recman.toml:5:"),
            "{}",
            w.secret.at
        );
        assert!(w.secret.at.ends_with("notify[0].secret_file"), "{}", w.secret.at);
    }

    #[test]
    fn an_email_sink_and_a_summary() {
        let c = parse(
            "[[notify]]\nid = \"mail\"\nkind = \"email\"\nsmtp = \"smtp.example.com\"\nusername = \"recman\"\n\
             password_file = \"/etc/recman/smtp\"\nfrom = \"recman <recman@example.com>\"\nto = [\"ops@example.com\"]\n\
             events = [\"failed\", \"verify_failed\"]\nsummary = \"08:30\"\n",
        )
        .unwrap();
        let n = &c.notify[0];
        assert_eq!(n.summary_at_min, Some(8 * 60 + 30));
        assert_eq!(n.events, ["failed", "verify_failed"]);
        let SinkConfig::Email(e) = &n.kind else {
            panic!("{n:?}")
        };
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("smtp.example.com", 587, SmtpSecurity::StartTls)
        );
    }

    #[test]
    fn bad_fields_name_line_and_key() {
        for (text, line, key) in [
            (WEBHOOK.replace("https://hooks", "ftp://hooks"), 4, "notify[0].url"),
            (WEBHOOK.replace("hooks.example.com", "u:p@hooks.example.com"), 4, "notify[0].url"),
            (WEBHOOK.replace("secret_file = \"hook-secret\"\n", ""), 1, "notify[0].secret_file"),
            (format!("{WEBHOOK}events = [\"failed\", \"exploded\"]\n"), 6, "notify[0].events"),
            (format!("{WEBHOOK}summary = \"8am\"\n"), 6, "notify[0].summary"),
            (format!("{WEBHOOK}smtp = \"x\"\n"), 6, "notify[0].smtp"),
            (WEBHOOK.replace("webhook", "pager"), 3, "notify[0].kind"),
            (format!("{WEBHOOK}{WEBHOOK}"), 7, "notify[1].id"),
            (
                "[[notify]]\nid = \"m\"\nkind = \"email\"\nsmtp = \"h:25\"\ntls = \"none\"\nusername = \"u\"\n\
                 password_file = \"p\"\nfrom = \"a@b\"\nto = [\"c@d\"]\n"
                    .to_string(),
                5,
                "notify[0].tls",
            ),
            (
                "[[notify]]\nid = \"m\"\nkind = \"email\"\nsmtp = \"h:25\"\nfrom = \"a@b\"\nto = [\"nobody\"]\n"
                    .to_string(),
                6,
                "notify[0].to",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            let ConfigError::Invalid { line: l, key: k, .. } = &e else { panic!("{e}") };
            assert_eq!((*l, k.as_str()), (line, key), "{text}\n{e}");
        }
    }

    #[test]
    fn errors_and_logs_never_show_the_url_path_or_the_secret() {
        let e = parse(&WEBHOOK.replace("https://hooks", "ftp://hooks"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("token=abc"), "{e}");
        assert_eq!(
            super::redact_url("https://user:pw@hooks.example.com:8443/p?token=abc"),
            "https://hooks.example.com:8443"
        );
    }

    #[test]
    fn a_missing_secret_file_is_named_with_its_config_line() {
        let c = parse(WEBHOOK).unwrap();
        let SinkConfig::Webhook(w) = &c.notify[0].kind else {
            panic!()
        };
        let e = w.secret.read().unwrap_err();
        assert!(e.starts_with("/etc/recman/recman.toml:5:"), "{e}");
        assert!(
            e.contains("notify[0].secret_file") && e.contains("/etc/recman/hook-secret"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "s3cret\n").unwrap();
        let mut s = w.secret.clone();
        s.path = f;
        assert_eq!(s.read().unwrap(), "s3cret");
    }
}
