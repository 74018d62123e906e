//! Login and logout: the form asks for the server's API token; a right one
//! opens a server-side session (cookie HttpOnly, SameSite=Strict, Secure
//! with TLS); logout ends it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::html::{self, esc, Frame};
use super::{constant_time_eq, session, Viewer};
use crate::api::Shared;

/// Largest login or logout form read.
const MAX_FORM_BYTES: usize = 4096;
/// A wrong token waits this long before its answer (slows guessing).
const WRONG_TOKEN_DELAY: Duration = Duration::from_millis(300);

/// A 303 to `to`.
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Where to go after login: a path of this server only (no `//host`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

fn query_next(req: &Request) -> Option<String> {
    let q = req.uri().query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
}

fn login_page(status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let f = Frame {
        title: "Log in",
        nav: "",
        csrf: "",
        user: None,
        session: false,
    };
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" id=\"login-error\">{}</p>", esc(e))
    });
    html::html(
        status,
        html::page(
            &f,
            &format!(
                "<section class=\"login\"><h1>Log in</h1>\
                 <p>This server wants an API token: yours (<code>recman user add</code>) or the one of its <code>[api] token_file</code>.</p>{error}\
                 <form method=\"post\" action=\"/login\" id=\"login-form\">\
                 <input type=\"hidden\" name=\"next\" value=\"{}\">\
                 <label>Token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required></label> \
                 <button type=\"submit\" id=\"login-submit\">Log in</button></form></section>",
                esc(next)
            ),
        ),
    )
}

/// `GET /login`: the form (straight on when no login is needed).
pub fn form(s: &Arc<Shared>, req: &Request, viewer: &Viewer) -> Response {
    let next = safe_next(query_next(req).as_deref());
    if !crate::api::auth::required(s) || viewer.session.is_some() {
        return redirect(&next);
    }
    login_page(StatusCode::OK, &next, None)
}

async fn form_fields(req: Request) -> Result<Vec<(String, String)>, Response> {
    let body = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES)
        .await
        .map_err(|_| html::error_page(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"))?;
    Ok(form_urlencoded::parse(&body).into_owned().collect())
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `POST /login`: a right token opens a session.
pub async fn submit(s: &Arc<Shared>, req: Request) -> Response {
    if !crate::api::auth::required(s) {
        return redirect("/");
    }
    let fields = match form_fields(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let next = safe_next(field(&fields, "next"));
    let given = field(&fields, "token").unwrap_or("").trim();
    let Some(user) = crate::api::authenticate(s, given) else {
        tokio::time::sleep(WRONG_TOKEN_DELAY).await;
        return login_page(
            StatusCode::UNAUTHORIZED,
            &next,
            Some("That is not the token of a user of this server."),
        );
    };
    let Some((id, _)) = s.console.sessions.open(given.to_string(), Some(user.name)) else {
        return html::error_page(StatusCode::SERVICE_UNAVAILABLE, "could not open a session");
    };
    let mut r = redirect(&next);
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id, s.console.secure)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /logout`: ends the session (its CSRF token in the form).
pub async fn logout(s: &Arc<Shared>, req: Request, sid: Option<String>) -> Response {
    let Some(sid) = sid else {
        return redirect("/login");
    };
    let Some(sess) = s.console.sessions.get(&sid) else {
        return redirect("/login");
    };
    let fields = match form_fields(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let given = field(&fields, "csrf").unwrap_or("");
    if !constant_time_eq(given.as_bytes(), sess.csrf.as_bytes()) {
        return html::error_page(
            StatusCode::FORBIDDEN,
            "the session's CSRF token is missing or wrong",
        );
    }
    s.console.sessions.close(&sid);
    let mut r = redirect("/login");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(s.console.secure)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(safe_next(Some("/job/x")), "/job/x");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
