//! Extractors that read the parts of a request a handler needs (query string,
//! job id in the path, JSON body, `Last-Event-ID`) and turn anything malformed
//! into the documented JSON error, never the framework's plain-text rejection.

use std::collections::hash_map::{Entry, HashMap};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use recman_events::JobId;

use super::ApiError;

/// Largest request body accepted (a request naming `MAX_TARGETS` targets of
/// the longest id fits several times over); larger ones get a 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Longest request target (path and query) accepted; longer ones get a 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Largest sequence number a client may send as `from` or `Last-Event-ID`
/// (the documented maximum, `i64::MAX`, so every client language can hold it).
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// The query string as name/value pairs, each name at most once.
pub struct QueryParams(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        let mut pairs = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            match pairs.entry(k.into_owned()) {
                Entry::Occupied(e) => {
                    let k = e.key();
                    return Err(ApiError::field(
                        k,
                        format!("`{k}` is given more than once; give it once"),
                    ));
                }
                Entry::Vacant(e) => {
                    e.insert(v.into_owned());
                }
            }
        }
        Ok(QueryParams(pairs))
    }
}

impl QueryParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A whole number from `min` to `max` (inclusive), if given.
    pub fn number(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        parse_number(v, min, max)
            .map(Some)
            .map_err(|why| ApiError::field(name, format!("`{name}` {why}")))
    }
}

/// A decimal whole number from `min` to `max`, or why not.
fn parse_number(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let bad = || format!("must be a whole number from {min} to {max}, got \"{v}\"");
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

/// `Last-Event-ID`: the sequence number of the last event the client saw.
/// Absent is `None`; a value that is not a number from 0 to `MAX_SEQ` is a 400.
pub fn last_event_id(h: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = h.get("last-event-id") else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("\u{fffd}").trim();
    parse_number(text, 0, MAX_SEQ)
        .map(Some)
        .map_err(|why| ApiError::field("Last-Event-ID", format!("`Last-Event-ID` {why}")))
}

/// The `{id}` of a `/v1/jobs/{id}/…` path as a job id.
pub struct JobIdPath(pub JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::field("id", "the job id in the path is not valid UTF-8"))?;
        id.parse()
            .map(JobIdPath)
            .map_err(|_| ApiError::field("id", format!("\"{id}\" is not a job id (a UUID)")))
    }
}

/// A request body sent as `Content-Type: application/json`, at most
/// `MAX_BODY_BYTES`. An empty body needs no content type (the handler decides
/// whether a body is required).
pub struct JsonBody(pub Bytes);

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

fn unsupported(found: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("the body must be sent as `Content-Type: application/json` (got \"{found}\")"),
    )
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = match req.headers().get(header::CONTENT_TYPE) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| unsupported("?"))?.to_string()),
        };
        if let Some(ct) = &content_type {
            if !is_json(ct) {
                return Err(unsupported(ct));
            }
        }
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("the body could not be read: {e}"),
                )
            }
        })?;
        if content_type.is_none() && !body.is_empty() {
            return Err(unsupported(""));
        }
        Ok(JsonBody(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_plain_decimals_in_range() {
        assert_eq!(parse_number("0", 0, 5), Ok(0));
        assert_eq!(parse_number("5", 0, 5), Ok(5));
        for bad in ["", "6", "-1", "+1", "1.0", " 1", "18446744073709551616", "abc"] {
            assert!(parse_number(bad, 0, 5).is_err(), "{bad:?}");
        }
        assert!(parse_number("18446744073709551615", 0, MAX_SEQ).is_err());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonx"));
    }
}
