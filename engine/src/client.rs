//! The HTTP client of the CLI's read commands, `recman cancel`, `recman
//! replay`, `recman events` and the remote `recman snapshot`: finds the
//! server (`--server` or the discovery file), sends the bearer token, turns
//! error bodies into messages, reads Server-Sent Events, follows a job.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use anyhow::{bail, Context};
use recman_events::{EventMessage, JobId, StoredEvent};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{discovery, ErrorBody};
use crate::home::Home;

/// A server to talk to.
#[derive(Clone, Debug)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
    token: Option<String>,
}

/// An answer that was not 2xx, with the API's error code.
#[derive(Debug, thiserror::Error)]
#[error("server answered {status}: {code}: {message}")]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiFailure {
    /// `e` is the server's 404.
    pub fn is_not_found(e: &anyhow::Error) -> bool {
        e.downcast_ref::<ApiFailure>()
            .is_some_and(|f| f.status.as_u16() == 404)
    }
}

impl Client {
    /// `base` like `http://127.0.0.1:7080` or `https://…`; for HTTPS the
    /// server's certificate must chain to `trust` (a PEM file: `[api]
    /// ca_file`, or the server's own certificate) or, without one, to the
    /// system's CA store.
    pub fn new(base: &str, token: Option<String>, trust: Option<&Path>) -> anyhow::Result<Client> {
        // One TLS stack everywhere: rustls with ring (reqwest is built without a provider).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(f) = trust.filter(|_| base.starts_with("https://")) {
            let pem =
                std::fs::read(f).with_context(|| format!("reading the API's CA file {}", f.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not a PEM certificate file", f.display()))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http,
            token,
        })
    }

    /// The server for this command: `--server URL`, else the running `recman up`
    /// of the data dir (its discovery file, if the server answers), else `None`
    /// (work on the data dir).
    pub async fn discover(home: &Home, server: Option<&str>) -> anyhow::Result<Option<Client>> {
        let (token, ca_file) = from_config(home)?;
        if let Some(u) = server {
            return Ok(Some(Client::new(u, token, ca_file.as_deref())?));
        }
        let Some(d) = discovery::find(&home.data_dir) else {
            return Ok(None);
        };
        let trust = ca_file.or(d.tls_cert.clone());
        let c = Client::new(&d.url, token, trust.as_deref())?;
        // A file left by a killed server whose pid was reused: nobody answers.
        match c
            .http
            .get(format!("{}/healthz", c.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(_) => Ok(Some(c)),
            Err(e) => {
                tracing::warn!(
                    "{} names {} but it does not answer ({e}); reading the data dir",
                    discovery::path(&home.data_dir).display(),
                    d.url
                );
                Ok(None)
            }
        }
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(m, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => ("http_error".to_string(), text),
        };
        Err(ApiFailure {
            status,
            code,
            message,
        }
        .into())
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .req(reqwest::Method::GET, path)
            .header("accept", "application/json")
            .send()
            .await
            .with_context(|| format!("cannot reach the recman server at {}", self.base))?;
        Ok(Client::check(resp).await?.json().await?)
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .req(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the recman server at {}", self.base))?;
        Ok(Client::check(resp).await?.json().await?)
    }

    /// Opens an event stream (`text/event-stream`) at `path`.
    pub async fn stream(&self, path: &str, last_event_id: Option<u64>) -> anyhow::Result<SseReader> {
        let mut r = self
            .req(reqwest::Method::GET, path)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            r = r.header("last-event-id", id.to_string());
        }
        let resp = r
            .send()
            .await
            .with_context(|| format!("cannot reach the recman server at {}", self.base))?;
        Ok(SseReader {
            resp: Client::check(resp).await?,
            buf: String::new(),
        })
    }
}

/// The bearer token (`RECMAN_TOKEN`, else the config's `api.token_file`)
/// and the CA file the config names for the server (`api.ca_file`).
fn from_config(home: &Home) -> anyhow::Result<(Option<String>, Option<PathBuf>)> {
    let env = match &home.token_file {
        Some(f) => Some(read_token(f)?),
        None => std::env::var("RECMAN_TOKEN").ok().map(|t| t.trim().to_string()),
    };
    let path = home.config_file();
    if !path.exists() {
        return Ok((env, None));
    }
    let cfg = recman_config::Config::load(&path)?;
    let token = match (env, &cfg.api.token_file) {
        (Some(t), _) => Some(t),
        (None, Some(f)) => Some(read_token(f)?),
        (None, None) => None,
    };
    Ok((token, cfg.api.ca_file))
}

/// Reads a token file (first line, trimmed); an empty file is an error.
pub fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let t = text.lines().next().unwrap_or("").trim().to_string();
    if t.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(t)
}

/// One Server-Sent Event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: String,
    pub data: String,
}

/// Reads events from an SSE response, chunk by chunk.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<SseEvent>> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent::default();
                let mut data: Vec<&str> = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        ev.id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() && ev.id.is_none() {
                    continue; // a keep-alive comment
                }
                ev.data = data.join("\n");
                return Ok(Some(ev));
            }
            match self.resp.chunk().await? {
                Some(c) => self
                    .buf
                    .push_str(&String::from_utf8_lossy(&c).replace("\r\n", "\n")),
                None => return Ok(None),
            }
        }
    }
}

/// Where a [`JobFeed`] is.
enum Feed {
    Connect,
    Streaming(SseReader),
    Backoff(Pin<Box<tokio::time::Sleep>>),
}

/// One job's events from the server (`GET /v1/jobs/{id}/events`), resumed
/// with `Last-Event-ID` when the stream drops, until the job's terminal event.
pub struct JobFeed<'a> {
    client: &'a Client,
    job: JobId,
    last: Option<u64>,
    retries: u32,
    feed: Feed,
    ended: bool,
}

impl Client {
    /// Follows `job` over SSE (see [`JobFeed`]).
    pub fn follow(&self, job: JobId) -> JobFeed<'_> {
        JobFeed {
            client: self,
            job,
            last: None,
            retries: 0,
            feed: Feed::Connect,
            ended: false,
        }
    }
}

impl JobFeed<'_> {
    /// The next event of the job; `None` after its terminal event. Gives up
    /// after 10 failed reconnections. Cancel-safe (use it in `select!`).
    pub async fn next(&mut self) -> anyhow::Result<Option<StoredEvent>> {
        let job = self.job;
        loop {
            if self.ended {
                return Ok(None);
            }
            match &mut self.feed {
                Feed::Backoff(sleep) => {
                    sleep.as_mut().await;
                    self.feed = Feed::Connect;
                }
                Feed::Connect => match self
                    .client
                    .stream(&format!("/v1/jobs/{job}/events"), self.last)
                    .await
                {
                    Ok(s) => self.feed = Feed::Streaming(s),
                    Err(e) if self.retries < 10 => {
                        self.retries += 1;
                        tracing::debug!("reconnecting: {e:#}");
                        self.feed = Feed::Backoff(Box::pin(tokio::time::sleep(Duration::from_millis(500))));
                    }
                    Err(e) => {
                        return Err(e.context(format!(
                            "following job {job} (it goes on in the server: `recman job {job}`)"
                        )))
                    }
                },
                Feed::Streaming(stream) => {
                    let ev = match stream.next().await {
                        Ok(Some(ev)) => ev,
                        end => {
                            if let Err(e) = end {
                                tracing::debug!("stream error: {e:#}");
                            }
                            self.retries += 1;
                            if self.retries > 10 {
                                bail!(
                                    "lost the event stream of job {job}; it goes on in the server: `recman job {job}`"
                                );
                            }
                            self.feed =
                                Feed::Backoff(Box::pin(tokio::time::sleep(Duration::from_millis(300))));
                            continue;
                        }
                    };
                    self.retries = 0;
                    self.last = ev.id.or(self.last);
                    let Ok(m) = serde_json::from_str::<EventMessage>(&ev.data) else {
                        continue;
                    };
                    if m.event.job != job {
                        continue;
                    }
                    self.ended = m.event.body.is_terminal();
                    return Ok(Some(StoredEvent {
                        seq: m.seq,
                        event: m.event,
                    }));
                }
            }
        }
    }
}
