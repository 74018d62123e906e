//! The console's stylesheet and script, embedded in the binary (nothing is
//! fetched from anywhere at run time).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// The stylesheet.
pub const CSS: &str = include_str!("assets/console.css");
/// The script: confirmations, posting actions, live refresh over SSE, clocks.
pub const JS: &str = include_str!("assets/console.js");

/// `GET /assets/<file>`.
pub fn serve(path: &str) -> Response {
    let (ty, body) = match path {
        "/assets/console.css" => ("text/css; charset=utf-8", CSS),
        "/assets/console.js" => ("text/javascript; charset=utf-8", JS),
        _ => return super::html::error_page(StatusCode::NOT_FOUND, "no such asset"),
    };
    ([(header::CONTENT_TYPE, ty)], body).into_response()
}
