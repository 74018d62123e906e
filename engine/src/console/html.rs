//! HTML building blocks of the console: escaping, the page frame (header,
//! navigation, the CSRF token for the script), and how times, durations and
//! sizes read.

use std::fmt::Write;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::view::time::{age, rfc3339};

/// Text made safe for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A path segment made safe for a URL (ids here are `[A-Za-z0-9._-]`, but
/// anything else is percent-encoded anyway).
pub fn url_seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A duration in milliseconds as people read it: `850 ms`, `12.4 s`, `3 min 5 s`.
pub fn ms(d: u64) -> String {
    match d {
        0..=999 => format!("{d} ms"),
        1_000..=59_999 => format!("{:.1} s", d as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min {} s", d / 60_000, (d % 60_000) / 1000),
        _ => format!("{} h {} min", d / 3_600_000, (d % 3_600_000) / 60_000),
    }
}

/// A duration in microseconds: `340 µs`, `12.3 ms`, then as [`ms`].
pub fn us(d: u64) -> String {
    match d {
        0..=999 => format!("{d} µs"),
        1_000..=99_999 => format!("{:.1} ms", d as f64 / 1000.0),
        _ => ms(d / 1000),
    }
}

/// Bytes: `512 B`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// An instant as `<time>` with its age; the full time in the tooltip.
pub fn when(at_ms: u64, now_ms: u64) -> String {
    format!(
        "<time datetime=\"{t}\" title=\"{t}\">{} ago</time>",
        age(at_ms, now_ms),
        t = esc(&rfc3339(at_ms))
    )
}

/// A future instant: `in 12m` (or `due` once past).
pub fn due(at_ms: u64, now_ms: u64) -> String {
    let t = esc(&rfc3339(at_ms));
    if at_ms <= now_ms {
        return format!("<time datetime=\"{t}\" title=\"{t}\">due</time>");
    }
    format!(
        "<time datetime=\"{t}\" title=\"{t}\">in {}</time>",
        age(now_ms, at_ms)
    )
}

/// A clock the script keeps running: seconds since `since_ms`.
pub fn clock(since_ms: u64, now_ms: u64) -> String {
    format!(
        "<span class=\"clock\" data-since=\"{since_ms}\">{}</span>",
        ms(now_ms.saturating_sub(since_ms))
    )
}

/// Who is looking, for the page header.
pub struct Frame<'a> {
    /// The page's title and the navigation entry that is current.
    pub title: &'a str,
    pub nav: &'a str,
    /// The session's CSRF token (empty without a session).
    pub csrf: &'a str,
    /// The name shown beside "log out" (with a session).
    pub user: Option<&'a str>,
    /// A session is open (show "log out").
    pub session: bool,
}

const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/restore-points", "Restore points"),
    ("/freeze-windows", "Freeze windows"),
    ("/schedules", "Schedules & notifications"),
];

/// A whole page: the frame around `body` (whose live part the script
/// refreshes from `?partial=1`).
pub fn page(f: &Frame<'_>, body: &str) -> String {
    let mut nav = String::new();
    for (href, label) in NAV {
        let cur = if *href == f.nav {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{cur}>{label}</a>");
    }
    let who = if f.session {
        format!(
            "<form method=\"post\" action=\"/logout\" class=\"logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <span class=\"user\">{}</span> <button type=\"submit\">Log out</button></form>",
            esc(f.csrf),
            esc(f.user.unwrap_or("signed in"))
        )
    } else {
        String::new()
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"csrf-token\" content=\"{csrf}\">\
         <title>{title} · recman</title>\
         <link rel=\"stylesheet\" href=\"/assets/console.css\">\
         <script src=\"/assets/console.js\" defer></script></head>\
         <body><header><span class=\"brand\">recman</span><nav>{nav}</nav>{who}</header>\
         <main>{body}</main><div id=\"toast\" role=\"status\"></div>\
         <div id=\"confirm\" hidden><div class=\"box\"><p id=\"confirm-text\"></p>\
         <button id=\"confirm-yes\" type=\"button\">Confirm</button> \
         <button id=\"confirm-no\" type=\"button\">Cancel</button></div></div></body></html>\n",
        csrf = esc(f.csrf),
        title = esc(f.title),
    )
}

/// The headers every console response carries: the browser may load
/// scripts, styles, images and connections only from this server, nothing
/// may frame it, and forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds [`CSP`] and its companions to `resp`.
pub fn secure_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// An HTML response.
pub fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// A short page saying what went wrong (404s, refused actions).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let f = Frame {
        title: "error",
        nav: "",
        csrf: "",
        user: None,
        session: false,
    };
    html(
        status,
        page(
            &f,
            &format!(
                "<h1>{}</h1><p class=\"error\">{}</p><p><a href=\"/\">Overview</a></p>",
                status.as_u16(),
                esc(message)
            ),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url_seg("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn durations_and_sizes_read_naturally() {
        assert_eq!(ms(850), "850 ms");
        assert_eq!(ms(12_400), "12.4 s");
        assert_eq!(ms(185_000), "3 min 5 s");
        assert_eq!(us(340), "340 µs");
        assert_eq!(us(12_300), "12.3 ms");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 200 * 1024), "3.2 MiB");
    }
}
