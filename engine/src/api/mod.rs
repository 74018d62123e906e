//! The HTTP API of `recman up` and `recman engine --listen` (started by
//! `server`): submit and cancel jobs, ask for recoveries (restore, mount,
//! clone), read jobs, targets, mounts, clones and the snapshot catalog (from the log projection in `view`), follow events live over
//! Server-Sent Events, Prometheus metrics, health and readiness.
//!
//! Writes go to the engine through the handle's `Caller`, so a request is
//! answered only once its event is durable; reads come from a `View` that a
//! follower task keeps up to date from `EventLog::subscribe`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use recman_events::EventLog;
use tokio::sync::watch;

use crate::handle::Caller;
use crate::view::View;

pub mod auth;
pub mod discovery;
pub mod error;
pub mod extract;
pub mod instrument;
mod routes;
pub mod serve;
pub mod server;
mod sse;
pub mod tls;

pub use auth::{authenticate, Access, User};
pub use error::{ApiError, ErrorBody};
use instrument::Stats;
use recman_config::Role;

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
    /// Who may call (all routes but `PUBLIC` want a bearer token of one of
    /// them); `None`: no token configured, anyone on loopback is admin.
    pub users: Option<auth::Users>,
    pub stats: Arc<Stats>,
    /// Turns true on shutdown; ends the event streams.
    pub stopping: watch::Receiver<bool>,
    /// The web console's sessions and settings (`crate::console`).
    pub console: crate::console::Console,
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

/// Routes anyone may call, also when the server has a token: health checks
/// and the OpenAPI document (the same text as in the source repository; a
/// client needs it to learn how to authenticate).
pub const PUBLIC: &[&str] = &["/healthz", "/readyz", "/v1/openapi.json"];

/// The `WWW-Authenticate` challenge of a 401 (RFC 6750).
pub const CHALLENGE: &str = "Bearer realm=\"recman\"";

/// The token of an `Authorization: Bearer <token>` header; the scheme name
/// is case-insensitive (RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Resolves the bearer token to a [`User`] (401 without a known one), kept
/// in the request's extensions for [`require`] and the handlers.
async fn auth(State(s): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    if s.users.is_some() && PUBLIC.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .unwrap_or("");
    let Some(user) = authenticate(&s, given) else {
        let mut resp = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>` with the token of an API user (`[[api.user]]`, \
             `recman user add`) or of the server's api.token_file",
        )
        .into_response();
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
        return resp;
    };
    req.extensions_mut().insert(user);
    next.run(req).await
}

/// The role check of one operation (a route layer): 403 naming the role
/// needed when the caller's is lower.
async fn require(need: Role, req: Request, next: Next) -> Response {
    let what = format!("{} {}", req.method(), req.uri().path());
    match req.extensions().get::<User>() {
        Some(user) => match user.check_role(need, &what) {
            Ok(()) => next.run(req).await,
            Err(e) => e.into_response(),
        },
        None => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "no user").into_response(),
    }
}

/// A request target longer than `MAX_URI_BYTES` gets a JSON 414.
async fn uri_limit(req: Request, next: Next) -> Result<Response, ApiError> {
    let uri = req.uri();
    let len = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1);
    if len > extract::MAX_URI_BYTES {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request target is {len} bytes; at most {} are accepted",
                extract::MAX_URI_BYTES
            ),
        ));
    }
    Ok(next.run(req).await)
}

struct Endpoint {
    method: Method,
    path: &'static str,
    access: Access,
    handler: MethodRouter<Arc<Shared>>,
}

fn endpoint<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Endpoint
where
    H: Handler<T, Arc<Shared>>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    let mut handler = on(filter, handler);
    if let Access::Role(need) = access {
        handler = handler.route_layer(middleware::from_fn(move |req: Request, next: Next| {
            require(need, req, next)
        }));
    }
    Endpoint {
        method,
        path,
        access,
        handler,
    }
}

const VIEWER: Access = Access::Role(Role::Viewer);
const OPERATOR: Access = Access::Role(Role::Operator);
const ADMIN: Access = Access::Role(Role::Admin);

/// Every operation of the API with the least role it needs. The router is
/// built from this table, and tests check that the OpenAPI document
/// describes exactly these, with these roles, and that a real server
/// allows and refuses each role accordingly. `POST /v1/recoveries` needs
/// more than operator for some actions (`routes::recovery_role`).
fn endpoints() -> Vec<Endpoint> {
    use Access::Public;
    vec![
        endpoint(Method::POST, "/v1/snapshots", OPERATOR, routes::submit),
        endpoint(Method::GET, "/v1/snapshots", VIEWER, routes::snapshots),
        endpoint(
            Method::POST,
            "/v1/snapshots/{name}/verify",
            OPERATOR,
            routes::verify,
        ),
        endpoint(Method::POST, "/v1/recoveries", OPERATOR, routes::recover),
        endpoint(
            Method::POST,
            "/v1/recoveries/{id}/approve",
            ADMIN,
            routes::approve,
        ),
        endpoint(Method::GET, "/v1/mounts", VIEWER, routes::mounts),
        endpoint(Method::GET, "/v1/clones", VIEWER, routes::clones),
        endpoint(Method::GET, "/v1/jobs", VIEWER, routes::jobs),
        endpoint(Method::GET, "/v1/jobs/{id}", VIEWER, routes::job),
        endpoint(Method::POST, "/v1/jobs/{id}/cancel", OPERATOR, routes::cancel),
        endpoint(Method::GET, "/v1/jobs/{id}/events", VIEWER, sse::job_events),
        endpoint(Method::GET, "/v1/events", VIEWER, sse::events),
        endpoint(Method::GET, "/v1/targets", VIEWER, routes::targets),
        endpoint(
            Method::POST,
            "/v1/targets/{id}/reconcile",
            OPERATOR,
            routes::reconcile,
        ),
        endpoint(Method::GET, "/v1/schedules", VIEWER, routes::schedules),
        endpoint(
            Method::POST,
            "/v1/schedules/{id}/pause",
            ADMIN,
            routes::pause_schedule,
        ),
        endpoint(
            Method::POST,
            "/v1/schedules/{id}/resume",
            ADMIN,
            routes::resume_schedule,
        ),
        endpoint(Method::POST, "/v1/prune", ADMIN, routes::prune),
        endpoint(Method::GET, "/v1/state", VIEWER, routes::live_state),
        endpoint(Method::GET, "/v1/whoami", VIEWER, routes::whoami),
        endpoint(Method::GET, "/v1/openapi.json", Public, routes::openapi),
        endpoint(Method::GET, "/metrics", VIEWER, routes::metrics),
        endpoint(Method::GET, "/healthz", Public, routes::healthz),
        endpoint(Method::GET, "/readyz", Public, routes::readyz),
    ]
}

/// (method, path) of every operation the router serves.
pub fn operations() -> Vec<(Method, &'static str)> {
    endpoints().into_iter().map(|e| (e.method, e.path)).collect()
}

/// (method, path, access) of every operation: the route × role table.
pub fn access() -> Vec<(Method, &'static str, Access)> {
    endpoints()
        .into_iter()
        .map(|e| (e.method, e.path, e.access))
        .collect()
}

/// Every route of the API, and the console's pages beside them (its layer,
/// outside `auth`, turns a session cookie into the session's bearer token).
pub fn router(shared: Arc<Shared>) -> Router {
    endpoints()
        .into_iter()
        .fold(Router::new(), |r, e| r.route(e.path, e.handler))
        .merge(crate::console::routes())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            crate::console::layer,
        ))
        .layer(middleware::from_fn(uri_limit))
        .with_state(shared)
}

#[cfg(test)]
mod tests {
    use super::{access, bearer, Access, PUBLIC};

    #[test]
    fn the_public_routes_are_the_ones_the_table_calls_public() {
        let mut public: Vec<&str> = access()
            .into_iter()
            .filter(|(_, _, a)| *a == Access::Public)
            .map(|(_, p, _)| p)
            .collect();
        let mut want = PUBLIC.to_vec();
        public.sort();
        want.sort();
        assert_eq!(public, want);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER   abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
