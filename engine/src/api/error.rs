//! API errors: a JSON body `{"error": {"code", "message", "field"?}}` with a
//! stable machine-readable code, and the HTTP status that goes with it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Every `error.code` the API answers with; the OpenAPI document's `Error`
/// schema lists exactly these (checked by a test).
pub const CODES: &[&str] = &[
    // 400
    "invalid_json",
    "invalid_field",
    "invalid_body",
    "invalid_request",
    // 401, 403, 404, 405, 409, 413, 414, 415, 422
    "unauthorized",
    "forbidden",
    "target_forbidden",
    // the console's CSRF checks: a write from another origin, or with the
    // session cookie but without its CSRF token
    "csrf_failed",
    "not_found",
    "job_not_found",
    "schedule_not_found",
    "target_not_found",
    "snapshot_not_found",
    "method_not_allowed",
    "job_finished",
    "job_id_in_use",
    "request_id_in_use",
    "body_too_large",
    "uri_too_long",
    "unsupported_media_type",
    "unknown_target",
    "verify_not_configured",
    "group_spans_provider_pools",
    // recovery refusals (`POST /v1/recoveries`)
    "unknown_snapshot",
    "unknown_mount",
    "unknown_clone",
    "wrong_target",
    "target_required",
    "confirmation_required",
    "snapshot_deleting",
    "target_busy",
    "clone_exists",
    "unmount_pending",
    "remove_pending",
    "prune_pending",
    "not_supported",
    "until_before_point",
    "until_in_future",
    "unknown_place",
    // four-eyes (`POST /v1/recoveries/{id}/approve`, `POST /v1/prune`)
    "self_approval",
    "approver_unknown",
    "approval_expired",
    "already_approved",
    "approval_not_required",
    "approval_required",
    // 503
    "not_ready",
    "shutting_down",
    "engine_unavailable",
    "log_error",
    "too_many_connections",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code, one of `CODES`.
    pub code: String,
    pub message: String,
    /// The request field at fault, for `invalid_field`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: ErrorDetail,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: ErrorDetail {
                code: code.into(),
                message: message.into(),
                field: None,
            },
        }
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message);
        e.detail.field = Some(field.into());
        e
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unavailable(code: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let too_large = self.status == StatusCode::PAYLOAD_TOO_LARGE;
        let mut resp = (self.status, Json(ErrorBody { error: self.detail })).into_response();
        if too_large {
            // The rest of the body was not read: the connection cannot carry
            // another request, and the client must know before it tries.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
