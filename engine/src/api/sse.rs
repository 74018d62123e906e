//! Server-Sent Events: the global event feed and one job's events, live and
//! resumable (`id:` is the log sequence number; send it back as `Last-Event-ID`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use recman_events::log::Subscription;
use recman_events::{EventMessage, JobId, StoredEvent, SCHEMA_VERSION};
use serde_json::json;
use tokio::sync::watch;

use super::extract::{last_event_id, JobIdPath, QueryParams, MAX_SEQ};
use super::{ApiError, Shared};

/// Where a stream starts: right after `Last-Event-ID` (a reconnecting
/// EventSource sends it), else at `from`, else `None`. Both are checked
/// whichever wins.
fn start(headers: &HeaderMap, q: &QueryParams) -> Result<Option<u64>, ApiError> {
    let from = q.number("from", 0, MAX_SEQ)?;
    // MAX_SEQ + 1 cannot overflow: MAX_SEQ is i64::MAX.
    Ok(last_event_id(headers)?.map(|id| id + 1).or(from))
}

/// JSON instead of a stream when the client asks for `application/json` only.
fn wants_json(h: &HeaderMap) -> bool {
    let accept = h.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/event-stream")
}

pub fn message(e: &StoredEvent) -> EventMessage {
    EventMessage {
        schema_version: SCHEMA_VERSION,
        seq: e.seq,
        event: e.event.clone(),
    }
}

struct Tail {
    history: VecDeque<StoredEvent>,
    sub: Subscription,
    job: Option<JobId>,
    stop: watch::Receiver<bool>,
    done: bool,
}

fn to_sse(e: &StoredEvent) -> SseEvent {
    let data = serde_json::to_string(&message(e)).unwrap_or_default();
    SseEvent::default()
        .id(e.seq.to_string())
        .event(e.event.body.kind())
        .data(data)
}

fn tail_stream(t: Tail) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
    stream::unfold(t, |mut t| async move {
        loop {
            if t.done {
                return None;
            }
            let e = match t.history.pop_front() {
                Some(e) => e,
                None => {
                    tokio::select! {
                        _ = t.stop.wait_for(|s| *s) => return None,
                        item = t.sub.recv() => match item {
                            Some(Ok(e)) => e,
                            _ => return None,
                        },
                    }
                }
            };
            if t.job.is_some_and(|j| j != e.event.job) {
                continue;
            }
            if t.job.is_some() && e.event.body.is_terminal() {
                t.done = true;
            }
            return Some((Ok(to_sse(&e)), t));
        }
    })
}

fn sse(t: Tail) -> Response {
    Sse::new(tail_stream(t))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /v1/events?from=SEQ`: every event from `from` (default: only new
/// ones), live. With `Accept: application/json`: one page `{events, next}`.
pub async fn events(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    q: QueryParams,
) -> Result<Response, ApiError> {
    let from = start(&headers, &q)?
        .unwrap_or_else(|| s.log.last_seq() + 1)
        .max(1);
    let limit = q.number("limit", 1, 10_000)?.unwrap_or(1000) as usize;
    if wants_json(&headers) {
        let page = s
            .log
            .read(from, limit)
            .map_err(|e| ApiError::unavailable("log_error", e.to_string()))?;
        let next = page.last().map_or(from, |e| e.seq + 1);
        let events: Vec<EventMessage> = page.iter().map(message).collect();
        return Ok(
            Json(json!({"events": events, "next": next, "last_seq": s.log.last_seq()})).into_response(),
        );
    }
    Ok(sse(Tail {
        history: VecDeque::new(),
        sub: s.log.subscribe(from),
        job: None,
        stop: s.stopping.clone(),
        done: false,
    }))
}

/// `GET /v1/jobs/{id}/events`: the job's events from the start (or after
/// `Last-Event-ID`), live; the stream ends after the job's last event.
pub async fn job_events(
    State(s): State<Arc<Shared>>,
    JobIdPath(job): JobIdPath,
    headers: HeaderMap,
    q: QueryParams,
) -> Result<Response, ApiError> {
    let from = start(&headers, &q)?.unwrap_or(1);
    let tail_from = s.log.last_seq() + 1;
    let sub = s.log.subscribe(tail_from.max(from));
    let all = s
        .log
        .read_job(job)
        .map_err(|e| ApiError::unavailable("log_error", e.to_string()))?;
    if all.is_empty() {
        return Err(ApiError::not_found("job_not_found", format!("no job {job}")));
    }
    // Resuming after the job's last event: nothing more will come.
    let ended = all.iter().any(|e| e.event.body.is_terminal() && e.seq < from);
    let history: VecDeque<StoredEvent> = all
        .into_iter()
        .filter(|e| e.seq >= from && e.seq < tail_from)
        .collect();
    Ok(sse(Tail {
        history,
        sub,
        job: Some(job),
        stop: s.stopping.clone(),
        done: ended,
    }))
}
