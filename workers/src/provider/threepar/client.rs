//! A small WSAPI client for one array: a pool of session keys (log in once,
//! reuse, re-login once on 401/403, log out on shutdown), bounded retries of
//! 503 and connection errors, and errors that carry the HTTP status and the
//! WSAPI `{code, desc}` but never a credential.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use recman_events::StepError;
use reqwest::Method;
use serde_json::{json, Value};

use super::tls;
use recman_config::ArrayConfig;

/// The header that carries the session key.
pub const SESSION_HEADER: &str = "X-HP3PAR-WSAPI-SessionKey";
/// Tries of one request when the array answers 503 or cannot be reached.
pub const TRIES: u32 = 3;
/// First pause before trying again (doubled each time).
pub const BACKOFF: Duration = Duration::from_millis(200);
/// The array forgets a key after 15 idle minutes; we drop ours a bit earlier.
const KEY_IDLE_LIMIT: Duration = Duration::from_secs(14 * 60);

/// Why a WSAPI call failed.
#[derive(Clone, Debug, PartialEq)]
pub enum WsapiError {
    /// The array answered with an error status (and usually `{code, desc}`).
    Http {
        status: u16,
        code: Option<i64>,
        desc: String,
    },
    /// No usable answer: connect, timeout, unreadable body.
    Transport(String),
    /// The TLS handshake failed on the certificate (or the protocol): a
    /// configuration problem (ca_file, the array's certificate), never retried.
    Tls(String),
    /// Nothing was sent: password file, CA file, TLS setup.
    Local(String),
}

/// Symbolic names of the WSAPI error codes recman meets.
pub fn code_name(code: i64) -> Option<&'static str> {
    Some(match code {
        5 => "INV_USER_PASS",
        6 => "INV_SESSION_KEY",
        12 => "INV_INPUT",
        15 => "NON_EXISTENT_CPG",
        22 => "EXISTENT_VOL",
        23 => "NON_EXISTENT_VOL",
        32 => "HAS_CHILD",
        57 => "INV_INPUT_EXCEEDS_LENGTH",
        77 => "NON_EXISTENT_SET",
        101 => "EXISTENT_SET",
        _ => return None,
    })
}

impl WsapiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            WsapiError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the array answered with WSAPI error `code`.
    pub fn is_code(&self, code: i64) -> bool {
        matches!(self, WsapiError::Http { code: Some(c), .. } if *c == code)
    }

    /// 503 (and the other gateway errors) and no answer at all may clear up;
    /// 400, 401, 403, 404, 409 need a human or a different request.
    pub fn retryable(&self) -> bool {
        match self {
            WsapiError::Http { status, .. } => matches!(status, 502..=504),
            WsapiError::Transport(_) => true,
            WsapiError::Tls(_) | WsapiError::Local(_) => false,
        }
    }

    /// Stable report code: `3par_<wsapi name>`, `3par_http_<status>`,
    /// `3par_unreachable`, `3par_tls` or `3par_config`.
    pub fn step_code(&self) -> String {
        match self {
            WsapiError::Http {
                code: Some(c),
                status,
                ..
            } => match code_name(*c) {
                Some(n) => format!("3par_{}", n.to_ascii_lowercase()),
                None => format!("3par_http_{status}"),
            },
            WsapiError::Http { status, .. } => format!("3par_http_{status}"),
            WsapiError::Transport(_) => "3par_unreachable".into(),
            WsapiError::Tls(_) => "3par_tls".into(),
            WsapiError::Local(_) => "3par_config".into(),
        }
    }

    /// The step report: `array <a>: <what> failed: HTTP 409, WSAPI code 22 (EXISTENT_VOL): <desc>`.
    pub fn to_step(&self, array: &str, what: &str) -> StepError {
        let why = match self {
            WsapiError::Http { status, code, desc } => {
                let code = match code {
                    Some(c) => match code_name(*c) {
                        Some(n) => format!(", WSAPI code {c} ({n})"),
                        None => format!(", WSAPI code {c}"),
                    },
                    None => String::new(),
                };
                format!("HTTP {status}{code}: {desc}")
            }
            WsapiError::Transport(m) => format!("no answer from the array: {m}"),
            WsapiError::Tls(m) => format!(
                "the TLS handshake was refused: {m} (check the array's ca_file, or the certificate the array presents)"
            ),
            WsapiError::Local(m) => m.clone(),
        };
        StepError::new(
            self.step_code(),
            format!("3PAR array {array}: {what} failed: {why}"),
            self.retryable(),
        )
    }
}

/// One array's client, shared by every target of that array in the process.
pub struct ArrayClient {
    cfg: ArrayConfig,
    http: Result<reqwest::Client, String>,
    idle: Mutex<Vec<(String, Instant)>>,
    permits: tokio::sync::Semaphore,
}

/// Clients by array config; weak, so the last provider to go frees it.
static REGISTRY: Mutex<Vec<(ArrayConfig, Weak<ArrayClient>)>> = Mutex::new(Vec::new());

impl ArrayClient {
    /// The process-wide client of array `cfg` (sessions are shared by every
    /// target of the array, up to `max_sessions` at once).
    pub fn shared(cfg: &ArrayConfig) -> Arc<ArrayClient> {
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        reg.retain(|(_, w)| w.strong_count() > 0);
        if let Some(c) = reg.iter().find(|(c, _)| c == cfg).and_then(|(_, w)| w.upgrade()) {
            return c;
        }
        let c = Arc::new(ArrayClient::new(cfg.clone()));
        reg.push((cfg.clone(), Arc::downgrade(&c)));
        c
    }

    /// A client of its own (tests). TLS problems surface at the first call.
    pub fn new(cfg: ArrayConfig) -> ArrayClient {
        let http = tls::client_config(&cfg).and_then(|tls| {
            reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
                .no_proxy()
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e)))
        });
        let permits = tokio::sync::Semaphore::new(cfg.max_sessions as usize);
        ArrayClient {
            cfg,
            http,
            idle: Mutex::new(Vec::new()),
            permits,
        }
    }

    pub fn array(&self) -> &str {
        &self.cfg.name
    }

    /// Calls `method path` (relative to `/api/v1`) with a session; `Ok` for
    /// any 2xx, with the JSON body (`Null` when empty).
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, WsapiError> {
        let http = self.http.as_ref().map_err(|e| WsapiError::Local(e.clone()))?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| WsapiError::Local("client closed".into()))?;
        let (mut key, mut fresh) = match self.take_idle() {
            Some(k) => (k, false),
            None => (self.login(http).await?, true),
        };
        loop {
            match self.send(http, method.clone(), path, Some(&key), body).await {
                Ok((status, b)) if (200..300).contains(&status) => {
                    self.put_idle(key);
                    return Ok(b);
                }
                Ok((status @ (401 | 403), _)) if !fresh => {
                    // Expired or forgotten key: log in again, once.
                    tracing::debug!(array = %self.cfg.name, status, "session key refused: logging in again");
                    key = self.login(http).await?;
                    fresh = true;
                }
                Ok((status, b)) => {
                    if status != 401 && status != 403 {
                        self.put_idle(key);
                    }
                    return Err(http_error(status, &b));
                }
                Err(e) => {
                    self.put_idle(key);
                    return Err(e);
                }
            }
        }
    }

    /// Logs every idle session out (on shutdown). Keys in use are not
    /// touched; the array expires them.
    pub async fn logout_all(&self) {
        let Ok(http) = &self.http else { return };
        let keys: Vec<String> = std::mem::take(&mut *self.lock_idle())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            let path = format!("credentials/{key}");
            match self.send(http, Method::DELETE, &path, Some(&key), None).await {
                Ok((s, _)) if (200..300).contains(&s) => {
                    tracing::debug!(array = %self.cfg.name, "logged out")
                }
                Ok((s, _)) => {
                    tracing::debug!(array = %self.cfg.name, status = s, "logout refused (key already expired)")
                }
                Err(e) => tracing::warn!(array = %self.cfg.name, error = ?e, "logout failed"),
            }
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(String, Instant)>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_idle(&self) -> Option<String> {
        let mut idle = self.lock_idle();
        idle.retain(|(_, at)| at.elapsed() < KEY_IDLE_LIMIT);
        idle.pop().map(|(k, _)| k)
    }

    fn put_idle(&self, key: String) {
        self.lock_idle().push((key, Instant::now()));
    }

    async fn login(&self, http: &reqwest::Client) -> Result<String, WsapiError> {
        let pw_file = &self.cfg.password_file;
        let password = std::fs::read_to_string(pw_file).map_err(|e| {
            WsapiError::Local(format!("cannot read password_file {}: {e}", pw_file.display()))
        })?;
        let password = password.lines().next().unwrap_or("").trim_end_matches('\r');
        if password.is_empty() {
            return Err(WsapiError::Local(format!(
                "password_file {} is empty",
                pw_file.display()
            )));
        }
        let body = json!({ "user": self.cfg.user, "password": password });
        let (status, b) = self
            .send(http, Method::POST, "credentials", None, Some(&body))
            .await?;
        if !(200..300).contains(&status) {
            let mut e = http_error(status, &b);
            if let WsapiError::Http { desc, .. } = &mut e {
                *desc = format!("login as user {:?} refused: {desc}", self.cfg.user);
            }
            return Err(e);
        }
        match b.get("key").and_then(Value::as_str) {
            Some(k) if !k.is_empty() => {
                tracing::debug!(array = %self.cfg.name, user = %self.cfg.user, "logged in");
                Ok(k.to_string())
            }
            _ => Err(WsapiError::Transport(
                "login answered without a session key".into(),
            )),
        }
    }

    /// One request, tried again on 503/502/504 and connection errors with
    /// backoff. Returns the status and the JSON body (`Null` when none).
    async fn send(
        &self,
        http: &reqwest::Client,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), WsapiError> {
        let url = format!("{}/{path}", self.cfg.api_url);
        // The path of a logout holds the key: never put it in a message.
        let shown = if path.starts_with("credentials/") {
            "credentials/…"
        } else {
            path
        };
        let mut pause = BACKOFF;
        for n in 1..=TRIES {
            let mut req = http
                .request(method.clone(), &url)
                .header("Accept", "application/json");
            if let Some(k) = key {
                req = req.header(SESSION_HEADER, k);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let result = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.bytes().await {
                        Ok(bytes) => Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))),
                        Err(e) => Err(WsapiError::Transport(format!(
                            "{method} {shown}: reading the answer: {}",
                            chain(&e.without_url())
                        ))),
                    }
                }
                Err(e) => {
                    let e = e.without_url();
                    let m = format!("{method} {shown}: {}", chain(&e));
                    if tls_rejection(&e) {
                        Err(WsapiError::Tls(m))
                    } else {
                        Err(WsapiError::Transport(m))
                    }
                }
            };
            let again = match &result {
                Ok((s, _)) => matches!(s, 502..=504),
                Err(e) => e.retryable(),
            };
            if !again || n == TRIES {
                return result;
            }
            tracing::debug!(array = %self.cfg.name, try_ = n, "WSAPI busy or unreachable: trying again");
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        unreachable!("the loop returns on its last try")
    }
}

fn http_error(status: u16, body: &Value) -> WsapiError {
    WsapiError::Http {
        status,
        code: body.get("code").and_then(Value::as_i64),
        desc: body
            .get("desc")
            .and_then(Value::as_str)
            .unwrap_or("(no description)")
            .to_string(),
    }
}

/// An error and its sources, `a: b: c` (reqwest's own text is terse).
/// True when a rustls error about the peer's certificate or protocol is in
/// `e`'s chain (inside nested `io::Error`s too, whose `source` skips them).
fn tls_rejection(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        return matches!(
            t,
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::PeerIncompatible(_)
                | rustls::Error::UnsupportedNameType
        );
    }
    let wrapped = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
    if let Some(inner) = wrapped {
        if tls_rejection(inner) {
            return true;
        }
    }
    e.source().is_some_and(tls_rejection)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
