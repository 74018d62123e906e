//! The web console, served at `/` by the API's own server: server-rendered
//! pages (overview, job with its timeline, restore points, freeze windows,
//! schedules and notifications), a small script that keeps them live over
//! the API's Server-Sent Events, and the login that turns the server's token
//! into a session. Every asset is embedded; the Content-Security-Policy lets
//! the browser talk to this server only.
//!
//! The hook into the API is one layer ([`layer`]), outside the API's `auth`:
//! a valid session cookie becomes the `Authorization: Bearer` header of the
//! token the session was opened with, so `auth` alone decides what a
//! request may do. Writes are the API's own routes, posted by the script
//! with the session's CSRF token; every cookie-carrying write must also come
//! from this origin.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use recman_config::{Config, SinkConfig};

use crate::api::{ApiError, Shared};

mod assets;
mod freeze;
pub mod html;
mod job;
mod login;
mod overview;
mod restore_points;
mod schedules;
pub mod session;
mod timeline;

pub use session::{Session, Sessions};

/// The console's own state beside the API's.
#[derive(Default)]
pub struct Console {
    pub sessions: Sessions,
    /// The server speaks TLS: the session cookie is `Secure`.
    pub secure: bool,
    /// The config's notification sinks, as the schedules page lists them.
    pub notify: Vec<SinkView>,
}

/// A notification sink as the console shows it (no secrets, the webhook's
/// scheme and host only).
#[derive(Clone, Debug)]
pub struct SinkView {
    pub id: String,
    pub kind: &'static str,
    pub destination: String,
    pub events: Vec<String>,
    /// `HH:MM` UTC of the daily summary.
    pub summary: Option<String>,
}

impl Console {
    /// The console of a server with `config`; `secure` when it speaks TLS.
    pub fn new(config: &Config, secure: bool) -> Console {
        let notify = config
            .notify
            .iter()
            .map(|n| SinkView {
                id: n.id.clone(),
                kind: n.kind.kind(),
                destination: match &n.kind {
                    SinkConfig::Webhook(w) => webhook_host(&w.url),
                    SinkConfig::Email(e) => format!("{} via {}:{}", e.to.join(", "), e.host, e.port),
                },
                events: n.events.clone(),
                summary: n
                    .summary_at_min
                    .map(|m| format!("{:02}:{:02} UTC", m / 60, m % 60)),
            })
            .collect();
        Console {
            sessions: Sessions::default(),
            secure,
            notify,
        }
    }
}

/// `scheme://host[:port]` of a URL (a webhook's path may hold a secret).
fn webhook_host(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}")
}

/// Who is looking at a page (put in the request by [`layer`]).
#[derive(Clone, Debug, Default)]
pub struct Viewer {
    pub session: Option<Session>,
}

impl Viewer {
    fn frame<'a>(&'a self, title: &'a str, nav: &'a str) -> html::Frame<'a> {
        html::Frame {
            title,
            nav,
            csrf: self.session.as_ref().map_or("", |s| s.csrf.as_str()),
            user: self.session.as_ref().and_then(|s| s.user.as_deref()),
            session: self.session.is_some(),
        }
    }
}

/// The pages that need what the API's `auth` checks.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(overview::page))
        .route("/job/{id}", get(job::page))
        .route("/restore-points", get(restore_points::page))
        .route("/freeze-windows", get(freeze::page))
        .route("/schedules", get(schedules::page))
}

/// Paths the console answers (its pages, login, assets).
fn is_console(path: &str) -> bool {
    matches!(
        path,
        "/" | "/restore-points" | "/freeze-windows" | "/schedules" | "/login" | "/logout" | "/favicon.ico"
    ) || path.starts_with("/job/")
        || path.starts_with("/assets/")
}

/// Console paths anyone may open: the login form and the assets.
fn is_public(path: &str) -> bool {
    matches!(path, "/login" | "/logout" | "/favicon.ico") || path.starts_with("/assets/")
}

/// The header's value as text.
fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The session id of the request's cookie.
fn session_id(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| session::cookie(c, session::COOKIE))
        .map(str::to_string)
}

/// True when the request's `Origin` is this server (`Host`, with the
/// server's scheme).
fn same_origin(h: &HeaderMap, secure: bool) -> bool {
    let (Some(origin), Some(host)) = (header_str(h, header::ORIGIN), header_str(h, header::HOST)) else {
        return false;
    };
    let scheme = if secure { "https" } else { "http" };
    origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
}

fn csrf_refused(message: &str) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, "csrf_failed", message).into_response()
}

/// Equal without telling how much of it matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The console's layer, outside the API's `auth`: checks the origin and
/// CSRF token of writes, turns a session cookie into the bearer token it
/// was opened with, serves the public console paths, sends a browser
/// without a session to the login form, and puts the console's security
/// headers on its pages.
pub async fn layer(State(s): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let sid = session_id(req.headers());
    let session = sid.as_deref().and_then(|id| s.console.sessions.get(id));
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if write {
        // A browser sends Origin with every POST: one from elsewhere is a
        // cross-site request, whatever it carries; a cookie without one is
        // not the console's script.
        let has_origin = req.headers().contains_key(header::ORIGIN);
        if has_origin && !same_origin(req.headers(), s.console.secure) {
            return csrf_refused("the request comes from another origin than this server");
        }
        if let Some(sess) = &session {
            if !has_origin {
                return csrf_refused("a request with the session cookie must send its Origin");
            }
            // Login and logout check their own form fields.
            if !matches!(path.as_str(), "/login" | "/logout") {
                let given = header_str(req.headers(), header::HeaderName::from_static("x-csrf-token"));
                if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), sess.csrf.as_bytes())) {
                    return csrf_refused("the session's CSRF token is missing or wrong (reload the page)");
                }
            }
        }
    }
    if let Some(sess) = &session {
        if !req.headers().contains_key(header::AUTHORIZATION) {
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", sess.token)) {
                req.headers_mut().insert(header::AUTHORIZATION, v);
            }
        }
    }
    if !is_console(&path) {
        return next.run(req).await;
    }
    let viewer = Viewer { session };
    let mut resp = if is_public(&path) {
        public(&s, req, viewer, sid).await
    } else if crate::api::auth::required(&s)
        && viewer.session.is_none()
        && !req.headers().contains_key(header::AUTHORIZATION)
    {
        let next = req
            .uri()
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        login::redirect(&format!("/login?next={}", html::url_seg(&next)))
    } else {
        req.extensions_mut().insert(viewer);
        next.run(req).await
    };
    html::secure_headers(&mut resp);
    resp
}

/// The console paths that need no login.
async fn public(s: &Arc<Shared>, req: Request, viewer: Viewer, sid: Option<String>) -> Response {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/login") => login::form(s, &req, &viewer),
        (Method::POST, "/login") => login::submit(s, req).await,
        (Method::POST, "/logout") => login::logout(s, req, sid).await,
        (Method::GET | Method::HEAD, "/favicon.ico") => StatusCode::NO_CONTENT.into_response(),
        (Method::GET | Method::HEAD, p) => assets::serve(p),
        _ => html::error_page(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
    }
}

/// Reads the view after it caught up with the log (read-your-writes), or a
/// 503 page.
/// A page whose live part follows the event stream: with `?partial=1` the
/// live part alone (what the script swaps in when an event of `NOTIFY_KINDS`
/// arrives), else the whole page around it, titled `title`, at `path`.
async fn live_page(
    s: &Shared,
    viewer: &Viewer,
    q: &crate::api::extract::QueryParams,
    (title, path): (&str, &str),
    render: impl FnOnce(&crate::view::View, u64) -> String,
) -> Response {
    s.synced().await;
    let now = recman_events::clock::now_ms();
    let body = match read_view(s, |v| render(v, now)) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if q.get("partial").is_some() {
        return html::html(StatusCode::OK, body);
    }
    let kinds = recman_config::NOTIFY_KINDS.join(" ");
    let sep = if path.contains('?') { '&' } else { '?' };
    let page = format!(
        "<h1>{}</h1><div id=\"live\" data-stream=\"/v1/events\" data-kinds=\"{}\" data-src=\"{}{sep}partial=1\">{body}</div>",
        html::esc(title),
        html::esc(&kinds),
        html::esc(path)
    );
    html::html(StatusCode::OK, html::page(&viewer.frame(title, path), &page))
}

fn read_view<T>(s: &Shared, f: impl FnOnce(&crate::view::View) -> T) -> Result<T, Box<Response>> {
    s.view.read().map(|v| f(&v)).map_err(|_| {
        Box::new(html::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "the view is poisoned",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_origin_passes() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7080"));
        assert!(!same_origin(&h, false), "no Origin");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:7080"));
        assert!(same_origin(&h, false));
        assert!(!same_origin(&h, true), "the scheme counts");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h, false));
    }

    #[test]
    fn a_webhook_shows_its_host_only() {
        assert_eq!(
            webhook_host("https://u:p@hooks.example:8443/t/SECRET?x=1"),
            "https://hooks.example:8443"
        );
        assert_eq!(webhook_host("http://h/x"), "http://h");
    }

    #[test]
    fn console_paths_are_not_api_paths() {
        for p in ["/", "/job/x", "/restore-points", "/assets/console.js", "/login"] {
            assert!(is_console(p), "{p}");
        }
        for p in ["/v1/jobs", "/metrics", "/healthz", "/jobs"] {
            assert!(!is_console(p), "{p}");
        }
        assert!(is_public("/assets/console.css") && !is_public("/"));
    }
}
