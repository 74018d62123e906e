//! The HTTP API of `recman up`: submit and cancel jobs, read jobs, targets and
//! the snapshot catalog (from the log projection in `view`), follow events
//! live over Server-Sent Events, Prometheus metrics, health and readiness.
//!
//! Writes go to the engine through the handle's `Caller`, so a request is
//! answered only once its event is durable; reads come from a `View` that a
//! follower task keeps up to date from `EventLog::subscribe`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use recman_events::EventLog;
use tokio::sync::watch;

use crate::handle::Caller;
use crate::view::View;

pub mod discovery;
pub mod error;
pub mod instrument;
mod routes;
mod sse;

pub use error::{ApiError, ErrorBody};
use instrument::Stats;

/// The OpenAPI document, checked in under `schemas/` and served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../schemas/openapi.json");

/// Everything the handlers share.
pub struct Shared {
    pub log: Arc<dyn EventLog>,
    pub view: RwLock<View>,
    /// The last sequence number folded into `view`.
    pub seen: watch::Sender<u64>,
    /// The engine's call side; `engine.accepting()` turns false once
    /// shutdown began: no new submissions.
    pub engine: Caller,
    /// The engine finished its replay and answers calls.
    pub ready: AtomicBool,
    /// Bearer token clients must send (all routes but /healthz and /readyz).
    pub token: Option<String>,
    pub stats: Arc<Stats>,
    /// Turns true on shutdown; ends the event streams.
    pub stopping: watch::Receiver<bool>,
}

impl Shared {
    /// Waits until the view has every event that was durable when called
    /// (read-your-writes after a submit), at most 5 s.
    pub async fn synced(&self) {
        let target = self.log.last_seq();
        let mut rx = self.seen.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| *s >= target)).await;
    }
}

/// Keeps `shared.view` up to date with the log until the log closes.
pub async fn follow(shared: Arc<Shared>) {
    let from = shared.view.read().map(|v| v.last_seq + 1).unwrap_or(1);
    let mut sub = shared.log.subscribe(from);
    while let Some(item) = sub.recv().await {
        let first = match item {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("the API's view stopped following the log: {e}");
                break;
            }
        };
        let mut last = first.seq;
        {
            let Ok(mut v) = shared.view.write() else { break };
            v.apply(&first);
            while let Ok(Ok(e)) = sub.try_recv() {
                last = e.seq;
                v.apply(&e);
            }
        }
        shared.seen.send_replace(last);
    }
}

/// Asks the engine a question until it answers: its replay has finished.
pub async fn wait_ready(shared: Arc<Shared>) {
    if shared.engine.query(|_| ()).await.is_ok() {
        shared.synced().await;
        shared.ready.store(true, Ordering::SeqCst);
    }
}

async fn auth(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Result<Response, ApiError> {
    if let Some(token) = &s.token {
        let path = req.uri().path();
        if path != "/healthz" && path != "/readyz" {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send `Authorization: Bearer <token>` with the token of the server's api.token_file",
                ));
            }
        }
    }
    Ok(next.run(req).await)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every route of the API.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/snapshots", post(routes::submit).get(routes::snapshots))
        .route("/v1/jobs", get(routes::jobs))
        .route("/v1/jobs/{id}", get(routes::job))
        .route("/v1/jobs/{id}/cancel", post(routes::cancel))
        .route("/v1/jobs/{id}/events", get(sse::job_events))
        .route("/v1/events", get(sse::events))
        .route("/v1/targets", get(routes::targets))
        .route("/v1/state", get(routes::live_state))
        .route("/v1/openapi.json", get(routes::openapi))
        .route("/metrics", get(routes::metrics))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .with_state(shared)
}
