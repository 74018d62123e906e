//! Request handlers of the API (everything but the event streams).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use recman_events::wire::MAX_REASON_LEN;
use recman_events::{JobId, RecoveryRequest, RequestId, SnapshotRequest, TargetId, WireError};
use serde_json::{json, Value};

use recman_config::Role;

use super::extract::{JobIdPath, JsonBody, QueryParams};
use super::{ApiError, Shared, User};
use crate::handle::{Accepted, CallError, Caller};
use crate::view::{self, View};

type ApiResult = Result<Response, ApiError>;

/// The engine's call side acting for `user`: what it causes is recorded
/// with `by` = the user's name.
fn engine_for(s: &Shared, user: &User) -> Caller {
    s.engine.acting_as(&user.name)
}

/// A 403 for the first of `targets` beyond the user's scope.
fn check_targets<'a>(user: &User, targets: impl IntoIterator<Item = &'a TargetId>) -> Result<(), ApiError> {
    targets
        .into_iter()
        .try_for_each(|t| user.check_target(t.as_str()))
}

fn read_view<T>(s: &Shared, f: impl FnOnce(&View) -> T) -> Result<T, ApiError> {
    let v = s
        .view
        .read()
        .map_err(|_| ApiError::unavailable("engine_unavailable", "the view is poisoned"))?;
    Ok(f(&v))
}

/// The API error of a call that was not accepted; `rejected` maps the
/// engine's refusals.
fn call_error(e: CallError, rejected: impl FnOnce(&'static str, String) -> ApiError) -> ApiError {
    match e {
        CallError::Rejected { code, message } => rejected(code, message),
        CallError::ShuttingDown => ApiError::unavailable(
            "shutting_down",
            "the server is shutting down; submit again after it restarts",
        ),
        CallError::Stopped => {
            ApiError::unavailable("engine_unavailable", "the engine is not running (shutting down?)")
        }
        CallError::NoAnswer => ApiError::unavailable("engine_unavailable", "the engine gave no answer"),
        CallError::Log(e) => ApiError::unavailable("log_error", e.to_string()),
    }
}

/// Checks the shape of a request body field by field, so a 400 names the field.
pub fn parse_request(body: &[u8]) -> Result<SnapshotRequest, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let Value::Object(o) = &v else {
        return Err(ApiError::field(
            "",
            "the body must be a JSON object like {\"request_id\": \"…\", \"targets\": [\"db01\"]}",
        ));
    };
    match o.get("request_id") {
        Some(Value::String(_)) => {}
        Some(_) => return Err(ApiError::field("request_id", "`request_id` must be a string")),
        None => {
            return Err(ApiError::field(
                "request_id",
                "`request_id` is required (your idempotency key)",
            ))
        }
    }
    match o.get("targets") {
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(_) => {
            return Err(ApiError::field(
                "targets",
                "`targets` must be an array of target ids",
            ))
        }
        None => {
            return Err(ApiError::field(
                "targets",
                "`targets` is required (an array of target ids)",
            ))
        }
    }
    if let Some(k) = o.get("kind") {
        if !matches!(k.as_str(), Some("full" | "copy")) {
            return Err(ApiError::field("kind", "`kind` must be \"full\" or \"copy\""));
        }
    }
    let body = serde_json::to_vec(&v).unwrap_or_default();
    SnapshotRequest::from_json(&body).map_err(|e| match e {
        WireError::Invalid { field, reason } => ApiError::field(field, format!("`{field}`: {reason}")),
        WireError::UnknownSchemaVersion { .. } => ApiError::field("schema_version", e.to_string()),
        WireError::Json(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", m),
    })
}

pub async fn submit(
    State(s): State<Arc<Shared>>,
    Extension(user): Extension<User>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    if !s.engine.accepting() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the server is shutting down; submit again after it restarts",
        ));
    }
    let req = parse_request(&body)?;
    check_targets(&user, &req.targets)?;
    let request_id = req.request_id.clone();
    let Accepted { job, existing } = engine_for(&s, &user).submit(req, "http").await.map_err(|e| {
        call_error(e, |code, message| {
            let status = match code {
                "unknown_target" | "group_spans_provider_pools" => StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request" => StatusCode::BAD_REQUEST,
                _ => StatusCode::CONFLICT,
            };
            ApiError::new(status, code, message)
        })
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job_id": job, "request_id": request_id, "existing": existing})),
    )
        .into_response())
}

/// Checks a recovery request's body, so a 400 names the field.
pub fn parse_recovery(body: &[u8]) -> Result<RecoveryRequest, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let Value::Object(o) = &v else {
        return Err(ApiError::field(
            "",
            "the body must be a JSON object like {\"request_id\": \"…\", \"snapshot\": \"rm-…\", \"action\": {\"type\": \"mount\"}}",
        ));
    };
    for (field, what) in [
        ("request_id", "your idempotency key"),
        ("action", "an object like {\"type\": \"in_place\"}"),
    ] {
        if !o.contains_key(field) {
            return Err(ApiError::field(field, format!("`{field}` is required ({what})")));
        }
    }
    match o.get("action") {
        Some(Value::Object(a)) if a.get("type").is_some_and(Value::is_string) => {}
        _ => {
            return Err(ApiError::field(
                "action",
                "`action` must be an object with a `type`: in_place, to (with `path`), mount \
                 (with `writable`), unmount (with `mount`), clone or remove_clone (with `name`)",
            ))
        }
    }
    RecoveryRequest::from_json(body).map_err(|e| match e {
        WireError::Invalid { field, reason } => ApiError::field(field, format!("`{field}`: {reason}")),
        WireError::UnknownSchemaVersion { .. } => ApiError::field("schema_version", e.to_string()),
        WireError::Json(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", m),
    })
}

/// The role a recovery action needs: mounting and unmounting a restore point
/// leave the live data alone (operator); a restore, a clone or a clone's
/// removal writes data, a prune deletes restore points (admin).
pub fn recovery_role(action: &recman_events::RecoveryAction) -> Role {
    use recman_events::RecoveryAction as A;
    match action {
        A::Mount { .. } | A::Unmount { .. } => Role::Operator,
        A::InPlace { .. } | A::To { .. } | A::Clone { .. } | A::RemoveClone { .. } | A::Prune => Role::Admin,
    }
}

/// The targets a recovery request acts on, as far as the view knows them
/// (the core refuses what it does not know).
fn recovery_targets(v: &View, req: &RecoveryRequest) -> Vec<TargetId> {
    use recman_events::RecoveryAction as A;
    if let Some(t) = &req.target {
        return vec![t.clone()];
    }
    match &req.action {
        A::Unmount { mount } => v
            .state
            .recovery
            .mounts
            .get(mount)
            .map(|m| m.target.clone())
            .into_iter()
            .collect(),
        A::RemoveClone { name } => v
            .state
            .recovery
            .clones
            .get(name)
            .map(|c| c.target.clone())
            .into_iter()
            .collect(),
        _ => {
            let Some(name) = &req.snapshot else {
                return Vec::new();
            };
            v.state
                .catalog
                .iter()
                .filter(|(_, c)| c.iter().any(|e| &e.name == name))
                .map(|(t, _)| t.clone())
                .collect()
        }
    }
}

/// `POST /v1/recoveries`: restore, mount, unmount, clone or remove a clone,
/// as a recovery job (202 once `recovery_requested` is durable; follow it
/// with `GET /v1/jobs/{id}` and `/v1/jobs/{id}/events`).
pub async fn recover(
    State(s): State<Arc<Shared>>,
    Extension(user): Extension<User>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    if !s.engine.accepting() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the server is shutting down; submit again after it restarts",
        ));
    }
    let req = parse_recovery(&body)?;
    user.check_role(
        recovery_role(&req.action),
        &format!("POST /v1/recoveries with action {}", req.action.as_str()),
    )?;
    if !user.targets.is_empty() {
        s.synced().await;
        let targets = read_view(&s, |v| recovery_targets(v, &req))?;
        check_targets(&user, &targets)?;
    }
    let request_id = req.request_id.clone();
    let Accepted { job, existing } = engine_for(&s, &user).recover(req, "http").await.map_err(|e| {
        call_error(e, |code, message| {
            let status = match code {
                "unknown_snapshot" | "unknown_mount" | "unknown_clone" => StatusCode::NOT_FOUND,
                "unknown_target" | "wrong_target" | "target_required" | "not_supported"
                | "until_before_point" | "until_in_future" | "unknown_place" => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                "invalid_request" | "confirmation_required" => StatusCode::BAD_REQUEST,
                _ => StatusCode::CONFLICT,
            };
            ApiError::new(status, code, message)
        })
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job_id": job, "request_id": request_id, "existing": existing})),
    )
        .into_response())
}

/// `POST /v1/recoveries/{id}/approve`: a second admin approves an in-place
/// restore awaiting approval (four-eyes). 202 once `approved` is durable;
/// its requester's own approval is a 403 (`self_approval`), one after the
/// expiry a 409 (`approval_expired`).
pub async fn approve(
    State(s): State<Arc<Shared>>,
    Extension(user): Extension<User>,
    JobIdPath(id): JobIdPath,
) -> ApiResult {
    if !s.engine.accepting() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the server is shutting down; approve again after it restarts",
        ));
    }
    if !user.targets.is_empty() {
        s.synced().await;
        check_targets(&user, &read_view(&s, |v| v.job_targets(&id))?)?;
    }
    let Accepted { job, existing } = engine_for(&s, &user).approve(id).await.map_err(|e| {
        call_error(e, |code, message| match code {
            "unknown_job" => ApiError::not_found("job_not_found", message),
            "self_approval" | "approver_unknown" => ApiError::new(StatusCode::FORBIDDEN, code, message),
            _ => ApiError::new(StatusCode::CONFLICT, code, message),
        })
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job_id": job, "approved_by": user.name, "already_approved": existing})),
    )
        .into_response())
}

/// `GET /v1/mounts`: the restore points exposed on hosts.
pub async fn mounts(State(s): State<Arc<Shared>>) -> ApiResult {
    s.synced().await;
    Ok(Json(json!({"mounts": read_view(&s, |v| v.mounts())?})).into_response())
}

/// `GET /v1/clones`: the clones kept until removed.
pub async fn clones(State(s): State<Arc<Shared>>) -> ApiResult {
    s.synced().await;
    Ok(Json(json!({"clones": read_view(&s, |v| v.clones())?})).into_response())
}

pub async fn jobs(State(s): State<Arc<Shared>>, q: QueryParams) -> ApiResult {
    let state = q.get("state");
    if let Some(st) = state {
        if !view::state_names().contains(&st) {
            return Err(ApiError::field(
                "state",
                format!(
                    "unknown state \"{st}\" (one of {})",
                    view::state_names().join(", ")
                ),
            ));
        }
    }
    let after = q.get("after").map(str::parse::<JobId>).transpose().map_err(|_| {
        ApiError::field(
            "after",
            "`after` must be a job id (the `next` of the previous page)",
        )
    })?;
    let limit = q.number("limit", 1, 1000)?.unwrap_or(100) as usize;
    let target = q.get("target").map(TargetId::from);
    let request = q
        .get("request_id")
        .map(|r| {
            recman_events::wire::check_id("request_id", r)
                .map(|()| RequestId::from(r))
                .map_err(|e| ApiError::field("request_id", format!("bad request id: {e}")))
        })
        .transpose()?;
    s.synced().await;
    let (mut page, next) = read_view(&s, |v| {
        v.jobs(state, target.as_ref(), request.as_ref(), after, limit)
    })?;
    // A request id still in the window whose job left memory: from the log.
    if let (Some(r), true, None) = (&request, page.is_empty(), after) {
        if let Some(id) = read_view(&s, |v| v.request_left_memory(r))? {
            let old = view::job_from_log(s.log.as_ref(), id)
                .map_err(|e| ApiError::unavailable("log_error", e.to_string()))?;
            page.extend(old.map(|d| d.summary).filter(|j| {
                state.is_none_or(|st| j.state == st) && target.as_ref().is_none_or(|t| j.targets.contains(t))
            }));
        }
    }
    Ok(Json(json!({"jobs": page, "next": next})).into_response())
}

pub async fn job(State(s): State<Arc<Shared>>, JobIdPath(id): JobIdPath) -> ApiResult {
    s.synced().await;
    let detail = match read_view(&s, |v| v.job(&id))? {
        Some(d) => Some(d),
        // Not in memory (finished long ago): from the log.
        None => view::job_from_log(s.log.as_ref(), id)
            .map_err(|e| ApiError::unavailable("log_error", e.to_string()))?,
    };
    match detail {
        Some(d) => Ok(Json(d).into_response()),
        None => Err(ApiError::not_found("job_not_found", format!("no job {id}"))),
    }
}

/// An optional JSON object body: `None` when empty; a 400 naming `example`
/// when it is not JSON or not an object.
fn optional_object(body: &[u8], example: &str) -> Result<Option<serde_json::Map<String, Value>>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not JSON: {e}"),
        )
    })?;
    match v {
        Value::Object(o) => Ok(Some(o)),
        _ => Err(ApiError::field(
            "",
            format!("the body must be a JSON object like {example}"),
        )),
    }
}

/// The reason of an optional `{"reason": "…"}` body (`default` without one).
fn body_reason(body: &[u8], default: &str) -> Result<String, ApiError> {
    let default = default.to_string();
    let Some(o) = optional_object(body, "{\"reason\": \"…\"}")? else {
        return Ok(default);
    };
    match o.get("reason") {
        None => Ok(default),
        Some(Value::String(r)) if r.len() > MAX_REASON_LEN => Err(ApiError::field(
            "reason",
            format!("`reason` is {} bytes; at most {MAX_REASON_LEN} are kept", r.len()),
        )),
        Some(Value::String(r)) => Ok(r.clone()),
        Some(_) => Err(ApiError::field("reason", "`reason` must be a string")),
    }
}

pub async fn cancel(
    State(s): State<Arc<Shared>>,
    Extension(user): Extension<User>,
    JobIdPath(id): JobIdPath,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let reason = body_reason(&body, "cancelled through the API")?;
    if !user.targets.is_empty() {
        s.synced().await;
        check_targets(&user, &read_view(&s, |v| v.job_targets(&id))?)?;
    }
    let Accepted { job, existing } = engine_for(&s, &user).cancel(id, reason).await.map_err(|e| {
        call_error(e, |code, message| match code {
            "unknown_job" => ApiError::not_found("job_not_found", message),
            "already_finished" => ApiError::new(StatusCode::CONFLICT, "job_finished", message),
            _ => ApiError::new(StatusCode::CONFLICT, code, message),
        })
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job_id": job, "already_requested": existing})),
    )
        .into_response())
}

pub async fn schedules(State(s): State<Arc<Shared>>) -> ApiResult {
    s.synced().await;
    Ok(Json(json!({"schedules": read_view(&s, |v| v.schedules())?})).into_response())
}

/// `POST /v1/schedules/{id}/pause` (optional `{"reason": "…"}`).
pub async fn pause_schedule(
    State(s): State<Arc<Shared>>,
    Extension(user): Extension<User>,
    axum::extract::Path(id): axum::extract::Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let reason = body_reason(&body, "paused through the API")?;
    schedule_call(&s, &user, id, Some(reason)).await
}

/// `POST /v1/schedules/{id}/resume`.
pub async fn resume_schedule(
    State(s): State<Arc<Shared>>,
    Extension(user): Extension<User>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult {
    schedule_call(&s, &user, id, None).await
}

async fn schedule_call(s: &Shared, user: &User, id: String, pause: Option<String>) -> ApiResult {
    if !user.targets.is_empty() {
        let targets = read_view(s, |v| v.schedule_targets(&id))?.unwrap_or_default();
        check_targets(user, &targets)?;
    }
    let Accepted { existing, .. } = engine_for(s, user)
        .pause_schedule(&id, pause)
        .await
        .map_err(|e| {
            call_error(e, |code, message| match code {
                "unknown_schedule" => ApiError::not_found("schedule_not_found", message),
                _ => ApiError::new(StatusCode::CONFLICT, code, message),
            })
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"schedule": id, "already": existing})),
    )
        .into_response())
}

/// `POST /v1/targets/{id}/reconcile`: the catalog checked against the
/// provider's list once the target is idle; `from` is where to follow the
/// outcome in the event log.
pub async fn reconcile(
    State(s): State<Arc<Shared>>,
    Extension(user): Extension<User>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult {
    user.check_target(&id)?;
    let from = s.log.last_seq() + 1;
    let target = TargetId::from(id.as_str());
    let Accepted { existing, .. } = engine_for(&s, &user)
        .reconcile(target, "http")
        .await
        .map_err(|e| {
            call_error(e, |code, message| match code {
                "unknown_target" => ApiError::not_found("target_not_found", message),
                _ => ApiError::new(StatusCode::CONFLICT, code, message),
            })
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"target": id, "already": existing, "from": from})),
    )
        .into_response())
}

pub async fn targets(State(s): State<Arc<Shared>>) -> ApiResult {
    s.synced().await;
    Ok(Json(json!({"targets": read_view(&s, |v| v.targets())?})).into_response())
}

pub async fn snapshots(State(s): State<Arc<Shared>>, q: QueryParams) -> ApiResult {
    s.synced().await;
    let t = q.get("target").map(TargetId::from);
    Ok(Json(json!({"snapshots": read_view(&s, |v| v.snapshots(t.as_ref()))?})).into_response())
}

/// The engine's live state (for `recman replay`): its digest and how many events it folded.
pub async fn live_state(State(s): State<Arc<Shared>>) -> ApiResult {
    let state = s
        .engine
        .inspect()
        .await
        .map_err(|_| ApiError::unavailable("engine_unavailable", "the engine is not running"))?;
    let mut body = json!({"seq": state.applied, "digest": view::digest(&state)});
    body["log"] = role(&s);
    Ok(Json(body).into_response())
}

/// This engine's role on its log: `single` (a log of its own), or `leader`
/// of a shared (PostgreSQL) log with its epoch, lease and takeover; `lag`
/// is how many durable events the engine has not yet folded into its view.
fn role(s: &Shared) -> Value {
    let last = s.log.last_seq();
    let lag = last.saturating_sub(*s.seen.borrow());
    match s.log.lease() {
        None => json!({"role": "single", "backend": s.log.backend().as_str(), "seq": last, "lag": lag}),
        Some(l) => json!({
            "role": if l.lost().is_some() { "stepping_down" } else { "leader" },
            "backend": s.log.backend().as_str(),
            "seq": last,
            "lag": lag,
            "epoch": l.epoch,
            "lease_ms": l.options.lease.as_millis() as u64,
            "lease_renewed_ms_ago": l.renew_age().as_millis() as u64,
            "standby_wait_ms": l.waited().as_millis() as u64,
        }),
    }
}

/// `GET /v1/whoami`: the caller's user name, role and target scope.
pub async fn whoami(Extension(user): Extension<User>) -> Response {
    Json(json!({"user": user.name, "role": user.role.as_str(), "targets": user.targets})).into_response()
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::OPENAPI).into_response()
}

pub async fn metrics(State(s): State<Arc<Shared>>) -> ApiResult {
    let mut out = String::new();
    read_view(&s, |v| v.render_metrics(&mut out))?;
    s.stats.render(&mut out);
    if let Some(l) = s.log.lease() {
        render_lease(&mut out, &l);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

pub async fn readyz(State(s): State<Arc<Shared>>) -> ApiResult {
    let lost = s.log.lease().and_then(|l| l.lost());
    if let Some(why) = lost {
        Err(ApiError::unavailable("not_leader", why))
    } else if s.ready.load(Ordering::SeqCst) && s.engine.accepting() {
        let mut body = json!({"status": "ready", "seq": s.log.last_seq()});
        let r = role(&s);
        body["role"] = r["role"].clone();
        if let Some(e) = r.get("epoch") {
            body["epoch"] = e.clone();
        }
        body["lag"] = r["lag"].clone();
        Ok(Json(body).into_response())
    } else if !s.engine.accepting() {
        Err(ApiError::unavailable(
            "shutting_down",
            "the server is shutting down",
        ))
    } else {
        Err(ApiError::unavailable(
            "not_ready",
            "the engine is still replaying the event log",
        ))
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint; see /v1/openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed here; see /v1/openapi.json",
    )
}

/// The targets and `dry_run` of a `{"targets": [...], "dry_run": bool}` body
/// (both optional: every target, for real).
fn prune_body(body: &[u8]) -> Result<(Vec<TargetId>, bool), ApiError> {
    let Some(o) = optional_object(body, "{\"targets\": [\"db01\"], \"dry_run\": true}")? else {
        return Ok((Vec::new(), false));
    };
    let dry_run = match o.get("dry_run") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::field("dry_run", "`dry_run` must be true or false")),
    };
    let targets = match o.get("targets") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| match t {
                Value::String(s) => recman_events::wire::check_id("targets", s)
                    .map(|()| TargetId::from(s.as_str()))
                    .map_err(|e| ApiError::field("targets", format!("bad target id: {e}"))),
                _ => Err(ApiError::field("targets", "each target must be a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::field(
                "targets",
                "`targets` must be an array of target ids",
            ))
        }
    };
    Ok((targets, dry_run))
}

/// `recman prune`: the retention plan (what each rule keeps and why, what
/// goes); unless `dry_run`, the engine asks for the deletes now (recorded as
/// `prune_requested` and carried out like the automatic prunes). A target
/// with `require_approval` gets a prune job that waits for a second admin
/// instead (`awaiting_approval`: its target and job).
pub async fn prune(
    State(s): State<Arc<Shared>>,
    Extension(user): Extension<User>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let (targets, dry_run) = prune_body(&body)?;
    if !user.targets.is_empty() && targets.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "target_forbidden",
            format!(
                "user {} may act only on targets matching {}: name them in `targets`",
                user.name,
                user.targets.join(", ")
            ),
        ));
    }
    check_targets(&user, &targets)?;
    s.synced().await;
    let plan = read_view(&s, |v| {
        if let Some(t) = targets
            .iter()
            .find(|t| !v.policies.contains_key(*t) && !v.state.catalog.contains_key(*t))
        {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_target",
                format!("no target {t} in the config or the catalog"),
            ));
        }
        Ok(crate::prune::plan(&v.state, &v.policies, &targets))
    })??;
    if dry_run {
        return Ok(Json(json!({"dry_run": true, "plan": plan, "asked": 0})).into_response());
    }
    let seed: Vec<TargetId> = plan.targets.keys().cloned().collect();
    let pruned = engine_for(&s, &user).prune(seed).await.map_err(|e| {
        call_error(e, |code, message| {
            ApiError::new(StatusCode::CONFLICT, code, message)
        })
    })?;
    let awaiting: Vec<Value> = pruned
        .awaiting
        .iter()
        .map(|(t, job)| json!({"target": t, "job": job}))
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "dry_run": false,
            "plan": plan,
            "asked": pruned.asked,
            "awaiting_approval": awaiting,
        })),
    )
        .into_response())
}

/// The `target` of an optional `{"target": "db01"}` body.
fn verify_body(body: &[u8]) -> Result<Option<TargetId>, ApiError> {
    let Some(o) = optional_object(body, "{\"target\": \"db01\"}")? else {
        return Ok(None);
    };
    match o.get("target") {
        None => Ok(None),
        Some(Value::String(t)) => recman_events::wire::check_id("target", t)
            .map(|()| Some(TargetId::from(t.as_str())))
            .map_err(|e| ApiError::field("target", format!("bad target id: {e}"))),
        Some(_) => Err(ApiError::field(
            "target",
            "`target` must be a target id (a string)",
        )),
    }
}

/// `POST /v1/snapshots/{name}/verify` (optional `{"target": "db01"}`):
/// verify a restore point again, on each of its targets (or the one
/// named). Each is recorded as `verify_requested` under the job that took
/// the snapshot and runs on the target's verify pool once it is idle.
pub async fn verify(
    State(s): State<Arc<Shared>>,
    Extension(user): Extension<User>,
    axum::extract::Path(name): axum::extract::Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    recman_events::wire::check_id("name", &name)
        .map_err(|e| ApiError::field("name", format!("bad snapshot name: {e}")))?;
    let only = verify_body(&body)?;
    if let Some(t) = &only {
        user.check_target(t.as_str())?;
    }
    s.synced().await;
    let holders: Vec<TargetId> = read_view(&s, |v| {
        v.state
            .catalog
            .iter()
            .filter(|(t, c)| only.as_ref().is_none_or(|o| o == *t) && c.iter().any(|e| e.name == name))
            .map(|(t, _)| t.clone())
            .collect()
    })?;
    if holders.is_empty() {
        let whose = only.map_or(String::from("any target"), |t| t.to_string());
        return Err(ApiError::not_found(
            "snapshot_not_found",
            format!("{whose} has no restore point {name} in the catalog (see GET /v1/snapshots)"),
        ));
    }
    // Without a target named, a scoped user verifies the holders in scope.
    if let Some(out) = holders.iter().find(|t| !user.may_act_on(t.as_str())) {
        if holders.iter().all(|t| !user.may_act_on(t.as_str())) {
            user.check_target(out.as_str())?;
        }
    }
    let holders: Vec<TargetId> = holders
        .into_iter()
        .filter(|t| user.may_act_on(t.as_str()))
        .collect();
    let engine = engine_for(&s, &user);
    let mut started = Vec::new();
    let mut refused = Vec::new();
    let mut job = None;
    let mut first_error = None;
    for t in holders {
        match engine.verify(t.clone(), name.clone(), "http").await {
            Ok(a) => {
                job = Some(a.job);
                started.push(t);
            }
            Err(CallError::Rejected { code, message }) => {
                refused.push(json!({"target": t, "code": code, "message": message}));
                first_error.get_or_insert((code, message));
            }
            Err(e) => {
                return Err(call_error(e, |code, message| {
                    ApiError::new(StatusCode::CONFLICT, code, message)
                }))
            }
        }
    }
    if started.is_empty() {
        let (code, message) = first_error.unwrap_or(("snapshot_not_found", String::new()));
        return Err(match code {
            "snapshot_not_found" => ApiError::not_found(code, message),
            _ => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message),
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"snapshot": name, "job_id": job, "targets": started, "refused": refused})),
    )
        .into_response())
}

/// The leader's metrics of a shared log: epoch, takeovers, standby wait,
/// age of the lease's last renewal.
fn render_lease(out: &mut String, l: &recman_events::log::lease::Lease) {
    use std::fmt::Write as _;
    let lines = [
        (
            "recman_log_epoch",
            "gauge",
            "The leadership epoch this engine holds on its PostgreSQL log.",
            l.epoch as f64,
        ),
        (
            "recman_log_takeovers_total",
            "counter",
            "Times this process took the log over from another engine after waiting as a standby.",
            if l.waited().is_zero() && !l.took_from_expired {
                0.0
            } else {
                1.0
            },
        ),
        (
            "recman_log_standby_wait_seconds",
            "gauge",
            "How long this process waited as a standby before it led.",
            l.waited().as_secs_f64(),
        ),
        (
            "recman_log_lease_renew_age_seconds",
            "gauge",
            "Time since the leader's lease was last renewed.",
            l.renew_age().as_secs_f64(),
        ),
        (
            "recman_log_lease_seconds",
            "gauge",
            "The leader's lease.",
            l.options.lease.as_secs_f64(),
        ),
    ];
    for (name, kind, help, v) in lines {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
}
