//! `kind = "webhook"`: POST the notification as JSON, signed with
//! HMAC-SHA256 (`X-Recman-Signature: sha256=<hex>`, see `sign.rs`), with
//! `X-Recman-Event` (the kind) and `X-Recman-Delivery` (stable across
//! retries). 2xx is delivered; 408, 429, 5xx and network errors are
//! retried; any other status is refused for good.

use recman_config::{redact_url, WebhookConfig};

use crate::message::Notification;
use crate::sign::{sign, SIGNATURE_HEADER};
use crate::sink::{BoxFuture, Deliver, DeliveryError};

pub struct Webhook {
    url: String,
    secret: Vec<u8>,
    http: reqwest::Client,
}

impl Webhook {
    /// Reads the secret and builds the client; the error names the config line.
    pub fn new(cfg: &WebhookConfig, timeout: std::time::Duration) -> Result<Webhook, String> {
        let secret = cfg.secret.read()?.into_bytes();
        let tls = crate::tls::client_config(cfg.ca_file.as_deref())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .connect_timeout(timeout.min(std::time::Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("recman/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Webhook {
            url: cfg.url.clone(),
            secret,
            http,
        })
    }
}

impl Deliver for Webhook {
    fn deliver<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let body =
                serde_json::to_vec(n).map_err(|e| DeliveryError::permanent(format!("cannot encode: {e}")))?;
            let r = self
                .http
                .post(&self.url)
                .header("Content-Type", "application/json")
                .header(SIGNATURE_HEADER, sign(&self.secret, &body))
                .header("X-Recman-Event", &n.kind)
                .header("X-Recman-Delivery", &n.delivery)
                .body(body)
                .send()
                .await
                // Without the URL: its path or query may carry a token.
                .map_err(|e| DeliveryError::transient(chain(&e.without_url())))?;
            let status = r.status();
            match status.as_u16() {
                200..=299 => Ok(()),
                408 | 429 | 500..=599 => Err(DeliveryError::transient(format!(
                    "the receiver answered {status}"
                ))),
                _ => Err(DeliveryError::permanent(format!(
                    "the receiver answered {status}"
                ))),
            }
        })
    }

    fn describe(&self) -> String {
        format!("webhook {}", redact_url(&self.url))
    }
}

/// An error and its causes, `: `-joined (reqwest hides the cause otherwise).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
