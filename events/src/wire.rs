//! Wire messages (JSON): the request other systems send, the command the engine
//! sends a worker pool, the report a worker sends back, the event published to
//! subscribers. Every message carries `schema_version`; readers tolerate unknown
//! fields and refuse unknown versions with a clear error.

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::ids::{JobId, RequestId, TargetId, WorkerId};
use crate::model::{Event, SnapshotKind, Stage, StepDetail, StepError};

/// The wire schema version this build writes and the only one it reads.
pub const SCHEMA_VERSION: u32 = 1;

fn current_version() -> u32 {
    SCHEMA_VERSION
}

/// "Take a snapshot of these targets." Anyone can write one by hand:
/// `{"request_id": "nightly-2026-11-25", "targets": ["db01"]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "SnapshotRequest")]
pub struct SnapshotRequest {
    /// Wire schema version; omitted means the current version (1).
    #[serde(default = "current_version")]
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u32,
    /// The sender's idempotency key: sending the same id again returns the same job.
    pub request_id: RequestId,
    /// Target ids from the engine's config. More than one = a consistency group,
    /// cut at one instant.
    #[schemars(length(min = 1), extend("uniqueItems" = true))]
    pub targets: Vec<TargetId>,
    /// `full` (default) or `copy`.
    #[serde(default)]
    pub kind: SnapshotKind,
}

/// One step for one worker pool (or one worker's own queue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Command")]
pub struct Command {
    #[serde(default = "current_version")]
    pub schema_version: u32,
    /// Deterministic (`job/attempt/stage/target`), so receivers can dedupe.
    pub message_id: String,
    pub job: JobId,
    pub attempt: u32,
    pub stage: Stage,
    /// One target for freeze/thaw/flush-logs; every member of the group for snapshot.
    pub targets: Vec<TargetId>,
    pub kind: SnapshotKind,
    /// For snapshot: the deterministic snapshot name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    /// For freeze: Unix ms at which the worker thaws by itself if no thaw
    /// came. For snapshot: Unix ms at which the engine thaws the writers
    /// whatever happens; a worker does not start the snapshot after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thaw_deadline_ms: Option<u64>,
    /// For prune: snapshot names to delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prune: Vec<String>,
}

impl Command {
    pub fn message_id_for(job: JobId, attempt: u32, stage: Stage, target: &TargetId) -> String {
        format!("cmd/{job}/{attempt}/{}/{target}", stage.as_str())
    }
}

/// How a step ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Ok { detail: StepDetail },
    Err { error: StepError },
}

/// A worker's answer to a command (or a watchdog's unsolicited thaw).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Report")]
pub struct Report {
    #[serde(default = "current_version")]
    pub schema_version: u32,
    pub message_id: String,
    pub job: JobId,
    pub attempt: u32,
    pub stage: Stage,
    pub targets: Vec<TargetId>,
    pub worker: WorkerId,
    /// Time the step took on the worker, in microseconds.
    pub duration_us: u64,
    pub outcome: Outcome,
}

impl Report {
    pub fn message_id_for(
        job: JobId,
        attempt: u32,
        stage: Stage,
        target: &TargetId,
        worker: &WorkerId,
    ) -> String {
        format!("rep/{job}/{attempt}/{}/{target}/{worker}", stage.as_str())
    }
}

/// An event as published to subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "EventMessage")]
pub struct EventMessage {
    #[serde(default = "current_version")]
    pub schema_version: u32,
    /// Global log sequence number; subscribers use it to dedupe and order.
    pub seq: u64,
    pub event: Event,
}

/// Why a wire message was refused. The text goes into the dead-letter reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("unknown schema_version {found}: this build reads version {supported}")]
    UnknownSchemaVersion { found: u64, supported: u32 },
    #[error("invalid field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Decodes any wire message: checks the version first (so a future message
/// gets a version error, not a confusing field error), then the fields.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    // First only the version (the rest is skipped without building a tree), so
    // a message of another version gets that error rather than a field error.
    #[derive(serde::Deserialize)]
    struct Probe {
        schema_version: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| WireError::Json(e.to_string()))?;
    match probe.schema_version {
        None => {}
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(SCHEMA_VERSION as u64) => {}
        Some(serde_json::Value::Number(n)) => {
            return Err(WireError::UnknownSchemaVersion {
                found: n.as_u64().unwrap_or(u64::MAX),
                supported: SCHEMA_VERSION,
            })
        }
        Some(_) => {
            return Err(WireError::Invalid {
                field: "schema_version",
                reason: "must be an integer".into(),
            })
        }
    }
    serde_json::from_slice(bytes).map_err(|e| WireError::Json(e.to_string()))
}

/// Encodes a wire message as compact JSON.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(msg).expect("wire types always serialize")
}

/// Longest accepted request id or target id.
pub const MAX_ID_LEN: usize = 128;

/// Checks an id is non-empty, short and made of `[A-Za-z0-9._:@-]`.
pub fn check_id(field: &'static str, s: &str) -> Result<(), WireError> {
    if s.is_empty() {
        return Err(WireError::Invalid {
            field,
            reason: "must not be empty".into(),
        });
    }
    if s.len() > MAX_ID_LEN {
        return Err(WireError::Invalid {
            field,
            reason: format!("longer than {MAX_ID_LEN} characters"),
        });
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:@-".contains(*c)))
    {
        return Err(WireError::Invalid {
            field,
            reason: format!("character {c:?} not allowed (use letters, digits and . _ : @ -)"),
        });
    }
    Ok(())
}

impl SnapshotRequest {
    /// Decodes and validates a request.
    pub fn from_json(bytes: &[u8]) -> Result<Self, WireError> {
        let req: SnapshotRequest = decode(bytes)?;
        req.validate()?;
        Ok(req)
    }

    pub fn validate(&self) -> Result<(), WireError> {
        check_id("request_id", self.request_id.as_str())?;
        if self.targets.is_empty() {
            return Err(WireError::Invalid {
                field: "targets",
                reason: "needs at least one target id".into(),
            });
        }
        for (i, t) in self.targets.iter().enumerate() {
            check_id("targets", t.as_str())?;
            if self.targets[..i].contains(t) {
                return Err(WireError::Invalid {
                    field: "targets",
                    reason: format!("target {t} appears twice"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_written_request_without_version_reads_as_current() {
        let r = SnapshotRequest::from_json(br#"{"request_id":"r1","targets":["db01"],"extra":1}"#).unwrap();
        assert_eq!(r.schema_version, SCHEMA_VERSION);
        assert_eq!(r.kind, SnapshotKind::Full);
        assert_eq!(r.targets, vec![TargetId::from("db01")]);
    }

    #[test]
    fn unknown_version_is_refused_clearly() {
        let e = SnapshotRequest::from_json(br#"{"schema_version":7,"request_id":"r1","targets":["a"]}"#)
            .unwrap_err();
        assert_eq!(
            e,
            WireError::UnknownSchemaVersion {
                found: 7,
                supported: 1
            }
        );
        assert!(e.to_string().contains("unknown schema_version 7"));
    }

    #[test]
    fn bad_fields_are_named() {
        let e = SnapshotRequest::from_json(br#"{"request_id":"r1","targets":[]}"#).unwrap_err();
        assert!(matches!(e, WireError::Invalid { field: "targets", .. }), "{e}");
        let e = SnapshotRequest::from_json(br#"{"request_id":"r 1","targets":["a"]}"#).unwrap_err();
        assert!(
            matches!(
                e,
                WireError::Invalid {
                    field: "request_id",
                    ..
                }
            ),
            "{e}"
        );
        let e = SnapshotRequest::from_json(br#"{"request_id":"r1","targets":["a"],"kind":"weekly"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("weekly"), "{e}");
        let e = SnapshotRequest::from_json(b"{").unwrap_err();
        assert!(matches!(e, WireError::Json(_)));
    }
}
