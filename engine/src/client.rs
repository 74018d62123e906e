//! The API client of the CLI read commands, `recman cancel`, `recman replay`
//! and the remote `recman snapshot`: finds the server (`--server` or the
//! discovery file), sends the bearer token, turns error bodies into messages.

use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::discovery;
use super::ErrorBody;
use crate::cli::Global;

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

impl Client {
    /// `base` like `http://127.0.0.1:7080`.
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Client> {
        // One TLS stack everywhere: rustls with ring (reqwest is built without a provider).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http,
            token,
        })
    }

    /// The server for this command: `--server URL`, else the running `recman up`
    /// of the data dir (its discovery file, if the server answers), else `None`
    /// (work on the data dir).
    pub async fn discover(g: &Global, server: Option<&str>) -> anyhow::Result<Option<Client>> {
        if let Some(u) = server {
            return Ok(Some(Client::new(u, token(g)?)?));
        }
        let Some(d) = discovery::find(&g.data_dir) else {
            return Ok(None);
        };
        let c = Client::new(&d.url, token(g)?)?;
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
                    discovery::path(&g.data_dir).display(),
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

/// The bearer token: `RECMAN_TOKEN`, else the config's `api.token_file`.
fn token(g: &Global) -> anyhow::Result<Option<String>> {
    if let Ok(t) = std::env::var("RECMAN_TOKEN") {
        return Ok(Some(t.trim().to_string()));
    }
    let path = g.config.clone().unwrap_or_else(|| g.data_dir.join("recman.toml"));
    if !path.exists() {
        return Ok(None);
    }
    let cfg = recman_config::Config::load(&path)?;
    match cfg.api.token_file {
        Some(f) => Ok(Some(read_token(&f)?)),
        None => Ok(None),
    }
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
