//! Wire messages (JSON): the request other systems send, the command the engine
//! sends a worker pool, the report a worker sends back, the event published to
//! subscribers. Every message carries `schema_version`; readers tolerate unknown
//! fields and refuse unknown versions with a clear error.

use std::collections::HashSet;

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};

use crate::ids::{JobId, RequestId, TargetId, WorkerId};
use crate::model::{Event, RecoveryAction, SnapshotKind, Stage, StepDetail, StepError};

/// The wire schema version this build writes and the only one it reads.
pub const SCHEMA_VERSION: u32 = 1;

fn current_version() -> u32 {
    SCHEMA_VERSION
}

/// Reads `schema_version` as JSON Schema reads an integer: `1` and `1.0` are
/// the same number (the schemas say `"type": "integer"`, which `1.0` satisfies).
fn version<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    integral(&n)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("schema_version must be a whole number, got {n}")))
}

/// The value of a JSON number that is a whole number from 0 to `u64::MAX`
/// (`7` or `7.0`), else `None`.
fn integral(n: &serde_json::Number) -> Option<u64> {
    if let Some(v) = n.as_u64() {
        return Some(v);
    }
    let f = n.as_f64()?;
    // 2^64 as f64 is exact; anything at or above it does not fit.
    (f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f)).then_some(f as u64)
}

/// "Take a snapshot of these targets." Anyone can write one by hand:
/// `{"request_id": "nightly-2026-11-25", "targets": ["db01"]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "SnapshotRequest")]
pub struct SnapshotRequest {
    /// Wire schema version; omitted means the current version (1).
    #[serde(default = "current_version", deserialize_with = "version")]
    #[schemars(range(min = 1, max = 1), with = "u32")]
    pub schema_version: u32,
    /// The sender's idempotency key: sending the same request again returns the same job;
    /// the same id with other targets or kind is refused (`request_id_in_use`).
    pub request_id: RequestId,
    /// Target ids from the engine's config. More than one = a consistency group,
    /// cut at one instant.
    /// At most `MAX_TARGETS` (1000).
    #[schemars(length(min = 1, max = MAX_TARGETS), extend("uniqueItems" = true))]
    pub targets: Vec<TargetId>,
    /// `full` (default) or `copy`.
    #[serde(default)]
    pub kind: SnapshotKind,
}

/// "Cancel this job." Sent to `recman.requests` like a snapshot request:
/// `{"cancel": "0193a5b2-…", "reason": "maintenance window closed"}`. Before
/// the freeze the job just ends; after it, the targets are thawed first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "CancelRequest")]
pub struct CancelRequest {
    /// Wire schema version; omitted means the current version (1).
    #[serde(default = "current_version", deserialize_with = "version")]
    #[schemars(range(min = 1, max = 1), with = "u32")]
    pub schema_version: u32,
    /// The id of the job to cancel (as `recman jobs` and the events show it).
    pub cancel: JobId,
    /// Why (recorded in the log). At most `MAX_REASON_LEN` (1024) bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REASON_LEN))]
    pub reason: Option<String>,
}

/// The reason recorded for a cancel request that gives none.
pub const BUS_CANCEL_REASON: &str = "cancelled by a request on recman.requests";

impl CancelRequest {
    pub fn validate(&self) -> Result<(), WireError> {
        match &self.reason {
            Some(r) if r.len() > MAX_REASON_LEN => Err(WireError::Invalid {
                field: "reason",
                reason: format!("{} bytes; at most {MAX_REASON_LEN} are kept", r.len()),
            }),
            _ => Ok(()),
        }
    }

    /// The reason to record.
    pub fn reason(&self) -> &str {
        self.reason.as_deref().unwrap_or(BUS_CANCEL_REASON)
    }
}

/// What the engine reads from `recman.requests`: a snapshot request, a
/// cancel (a body with the field `cancel`) or a recovery (a body with the
/// field `action`). A body with the fields of two of them (`cancel` with
/// `request_id` or `targets`, `action` with `targets` or `cancel`) is
/// refused rather than guessed at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Snapshot(SnapshotRequest),
    Cancel(CancelRequest),
    Recovery(RecoveryRequest),
}

/// Marks a field as present, whatever its value (`null` included).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// A field's value, `Some(Null)` for `null` (absent: `None`).
fn some<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// How much of a refused value a reason quotes.
const QUOTED: usize = 64;

impl Request {
    /// Decodes and validates a message of `recman.requests`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, WireError> {
        #[derive(Deserialize)]
        struct Fields {
            #[serde(default, deserialize_with = "some")]
            cancel: Option<serde_json::Value>,
            #[serde(default, deserialize_with = "some")]
            reason: Option<serde_json::Value>,
            #[serde(default, deserialize_with = "present")]
            request_id: bool,
            #[serde(default, deserialize_with = "present")]
            targets: bool,
            #[serde(default, deserialize_with = "present")]
            action: bool,
        }
        let f: Fields = decode(bytes)?;
        let invalid = |field, reason: String| WireError::Invalid { field, reason };
        if f.action {
            if f.targets || f.cancel.is_some() {
                return Err(invalid(
                    "action",
                    "a request is either a snapshot (request_id, targets), a cancel (cancel, reason) \
                     or a recovery (request_id, snapshot, action), not two of them"
                        .into(),
                ));
            }
            return RecoveryRequest::from_json(bytes).map(Request::Recovery);
        }
        let Some(cancel) = f.cancel else {
            return SnapshotRequest::from_json(bytes).map(Request::Snapshot);
        };
        if f.request_id || f.targets {
            return Err(invalid(
                "cancel",
                "a request is either a snapshot (request_id, targets) or a cancel (cancel, reason), not both"
                    .into(),
            ));
        }
        let job = match &cancel {
            serde_json::Value::String(s) => s.parse::<JobId>().map_err(|_| {
                invalid(
                    "cancel",
                    format!(
                        "{:?} is not a job id (a UUID such as 0193a5b2-7c1e-7f00-8a3b-5d2e9c4f1a07)",
                        bounded(s, QUOTED)
                    ),
                )
            })?,
            _ => return Err(invalid("cancel", "must be a job id (a UUID string)".into())),
        };
        let reason = match f.reason {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(r)) => Some(r),
            Some(_) => return Err(invalid("reason", "must be a string".into())),
        };
        let c = CancelRequest {
            schema_version: SCHEMA_VERSION,
            cancel: job,
            reason,
        };
        c.validate()?;
        Ok(Request::Cancel(c))
    }
}

impl JsonSchema for Request {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Request".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "title": "Request",
            "description": "A message of `recman.requests`: a snapshot request, a cancel of a job\n(a body with the field `cancel`) or a recovery: restore, mount, clone (a body\nwith the field `action`). Exactly one of the three.",
            "oneOf": [
                g.subschema_for::<SnapshotRequest>(),
                g.subschema_for::<CancelRequest>(),
                g.subschema_for::<RecoveryRequest>(),
            ],
        })
    }
}

/// One step for one worker pool (or one worker's own queue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Command")]
pub struct Command {
    #[serde(default = "current_version", deserialize_with = "version")]
    #[schemars(with = "u32")]
    pub schema_version: u32,
    /// Deterministic (`job/attempt/stage/target`), so receivers can dedupe.
    pub message_id: String,
    pub job: JobId,
    pub attempt: u32,
    pub stage: Stage,
    /// One target for freeze/thaw/flush-logs; every member of the group for snapshot.
    pub targets: Vec<TargetId>,
    pub kind: SnapshotKind,
    /// For snapshot: the deterministic snapshot name; for verify: the snapshot to verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    /// For freeze: Unix ms at which the worker thaws by itself if no thaw
    /// came. For snapshot: Unix ms at which the engine thaws the writers
    /// whatever happens; a worker does not start the snapshot after it.
    /// For verify: Unix ms at which the worker stops the verification
    /// (reports `timeout`); it does not start one after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thaw_deadline_ms: Option<u64>,
    /// For prune: snapshot names to delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prune: Vec<String>,
    /// How the engine's config sets up each of `targets` (same order),
    /// `WRITER/PROVIDER` (e.g. `postgres/btrfs`). A worker whose own config
    /// sets up the part the stage uses differently (the writer for a freeze
    /// or a log flush, the provider for the others; a thaw is never refused)
    /// refuses the command (`config_mismatch`) and runs nothing. Empty: not
    /// checked (older engines).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fingerprints: Vec<String>,
    /// For the recovery stages (stop, safety-snapshot, restore, rollback,
    /// start, mount, unmount): what the recovery job does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryArgs>,
}

/// A recovery command's arguments. `Command::snapshot_name` is the restore
/// point (the safety snapshot's name for `safety-snapshot`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecoveryArgs {
    pub action: RecoveryAction,
    /// In place: the safety snapshot's name (taken before the revert, the
    /// state `rollback` goes back to when nothing was kept aside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<String>,
    /// For `unmount`: where the mount or the clone is, as its step reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// For `start`: the restore step succeeded, so the application starts
    /// on the restored data (a database first replays its log to the
    /// action's `until`, or to the restore point); false after a rollback
    /// or a refused stop, when it starts on what is there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restored: bool,
}

/// "Restore, mount or clone a restore point", as the HTTP API
/// (`POST /v1/recoveries`) and `recman.requests` take it:
/// `{"request_id": "r-1", "target": "db01", "snapshot": "rm-…-a1",
///   "action": {"type": "in_place"}, "confirm": true}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "RecoveryRequest")]
pub struct RecoveryRequest {
    /// Wire schema version; omitted means the current version (1).
    #[serde(default = "current_version", deserialize_with = "version")]
    #[schemars(range(min = 1, max = 1), with = "u32")]
    pub schema_version: u32,
    /// The sender's idempotency key, as for a snapshot request.
    pub request_id: RequestId,
    /// The target whose restore point this is: optional, the catalog knows
    /// (needed for a consistency group's point, which every member lists;
    /// for `unmount` and `remove_clone` taken from the mount or the clone;
    /// required for `prune`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetId>,
    /// The restore point's name (`recman snapshots`); not for `unmount`,
    /// `remove_clone` and `prune`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_ID_LEN))]
    pub snapshot: Option<String>,
    pub action: RecoveryAction,
    /// An in-place restore overwrites the live data: it must be confirmed.
    #[serde(default)]
    pub confirm: bool,
}

/// Longest accepted path in a recovery request.
pub const MAX_PATH_LEN: usize = 4096;

impl RecoveryRequest {
    /// Decodes and validates a request.
    pub fn from_json(bytes: &[u8]) -> Result<Self, WireError> {
        let req: RecoveryRequest = decode(bytes)?;
        req.validate()?;
        Ok(req)
    }

    pub fn validate(&self) -> Result<(), WireError> {
        let invalid = |field, reason: String| WireError::Invalid { field, reason };
        check_id("request_id", self.request_id.as_str())?;
        if let Some(t) = &self.target {
            check_id("target", t.as_str())?;
        }
        if let Some(s) = &self.snapshot {
            check_id("snapshot", s)?;
        }
        let needs_point = !matches!(
            self.action,
            RecoveryAction::Unmount { .. } | RecoveryAction::RemoveClone { .. } | RecoveryAction::Prune
        );
        if needs_point && self.snapshot.is_none() {
            return Err(invalid(
                "snapshot",
                format!("{} needs a snapshot", self.action.as_str()),
            ));
        }
        match &self.action {
            RecoveryAction::To { path, .. } => check_path("action.path", path)?,
            RecoveryAction::Clone { name } | RecoveryAction::RemoveClone { name } => {
                check_id("action.name", name)?
            }
            RecoveryAction::Mount { on: Some(on), .. } => check_id("action.on", on)?,
            RecoveryAction::Prune if self.target.is_none() => {
                return Err(invalid(
                    "target",
                    "prune needs the target whose retention rules apply".into(),
                ))
            }
            RecoveryAction::Prune if self.snapshot.is_some() => {
                return Err(invalid(
                    "snapshot",
                    "prune names no snapshot: the target's retention rules choose what goes".into(),
                ))
            }
            RecoveryAction::InPlace { .. } if !self.confirm => {
                return Err(invalid(
                    "confirm",
                    "an in-place restore overwrites the live data: send \"confirm\": true (CLI: --yes)"
                        .into(),
                ))
            }
            _ => {}
        }
        Ok(())
    }
}

/// A path from a request: absolute, at most `MAX_PATH_LEN` bytes, no `..`
/// component, no control character.
pub fn check_path(field: &'static str, p: &str) -> Result<(), WireError> {
    let invalid = |reason: String| WireError::Invalid { field, reason };
    if !p.starts_with('/') {
        return Err(invalid(format!(
            "{:?} is not an absolute path",
            bounded(p, QUOTED)
        )));
    }
    if p.len() > MAX_PATH_LEN {
        return Err(invalid(format!("{} bytes; at most {MAX_PATH_LEN}", p.len())));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(invalid("must not contain a \"..\" component".into()));
    }
    if p.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters".into()));
    }
    if p == "/" {
        return Err(invalid("must not be the root directory".into()));
    }
    Ok(())
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
    #[serde(default = "current_version", deserialize_with = "version")]
    #[schemars(with = "u32")]
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
    #[serde(default = "current_version", deserialize_with = "version")]
    #[schemars(with = "u32")]
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
        Some(serde_json::Value::Number(n)) => match integral(&n) {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(found) => {
                return Err(WireError::UnknownSchemaVersion {
                    found,
                    supported: SCHEMA_VERSION,
                })
            }
            None => {
                return Err(WireError::Invalid {
                    field: "schema_version",
                    reason: format!("must be a whole number like {SCHEMA_VERSION}, got {n}"),
                })
            }
        },
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

/// Most targets one request may name (a consistency group larger than this is
/// split by the sender). Keeps the work a request causes bounded.
pub const MAX_TARGETS: usize = 1000;

/// Longest cancel reason, in bytes, that is kept (a longer one is refused by
/// the API and cut to this length by the engine).
pub const MAX_REASON_LEN: usize = 1024;

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn bounded(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

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
    if s == "." || s == ".." {
        // Ids name files and directories (snapshots/<target>, freeze markers).
        return Err(WireError::Invalid {
            field,
            reason: "\".\" and \"..\" are path components, not names".into(),
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
        if self.targets.len() > MAX_TARGETS {
            return Err(WireError::Invalid {
                field: "targets",
                reason: format!(
                    "{} targets; at most {MAX_TARGETS} per request (send several requests)",
                    self.targets.len()
                ),
            });
        }
        // Linear: one pass with a set (this runs inside the engine loop too).
        let mut seen = HashSet::with_capacity(self.targets.len());
        for t in &self.targets {
            check_id("targets", t.as_str())?;
            if !seen.insert(t.as_str()) {
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

    fn request_with(targets: usize) -> Vec<u8> {
        let t: Vec<String> = (0..targets).map(|i| format!("t{i}")).collect();
        serde_json::to_vec(&serde_json::json!({"request_id": "r", "targets": t})).unwrap()
    }

    #[test]
    fn at_most_max_targets_per_request() {
        assert!(SnapshotRequest::from_json(&request_with(MAX_TARGETS)).is_ok());
        let e = SnapshotRequest::from_json(&request_with(MAX_TARGETS + 1)).unwrap_err();
        assert!(matches!(e, WireError::Invalid { field: "targets", .. }), "{e}");
        assert!(e.to_string().contains("at most 1000"), "{e}");
    }

    #[test]
    fn a_whole_number_version_is_read_as_that_number() {
        // JSON Schema's "integer" includes 1.0: the decoder agrees with the schema.
        for v in ["1", "1.0", "1e0"] {
            let body = format!(r#"{{"schema_version":{v},"request_id":"r1","targets":["a"]}}"#);
            let r = SnapshotRequest::from_json(body.as_bytes()).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(r.schema_version, 1);
        }
        let e = SnapshotRequest::from_json(br#"{"schema_version":7.0,"request_id":"r1","targets":["a"]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown schema_version 7:"), "{e}");
        for (v, shown) in [("1.5", "1.5"), ("-1", "-1"), ("1e30", "1e+30")] {
            let body = format!(r#"{{"schema_version":{v},"request_id":"r1","targets":["a"]}}"#);
            let e = SnapshotRequest::from_json(body.as_bytes()).unwrap_err();
            assert!(
                matches!(
                    e,
                    WireError::Invalid {
                        field: "schema_version",
                        ..
                    }
                ),
                "{v}: {e}"
            );
            assert!(e.to_string().contains(&format!("got {shown}")), "{v}: {e}");
        }
    }

    #[test]
    fn a_cancel_is_read_from_the_requests_queue() {
        let job = JobId::new_v7();
        let r = Request::from_json(format!(r#"{{"cancel":"{job}","reason":"window closed"}}"#).as_bytes())
            .unwrap();
        let Request::Cancel(c) = r else { panic!("{r:?}") };
        assert_eq!((c.cancel, c.reason()), (job, "window closed"));
        let r = Request::from_json(format!(r#"{{"schema_version":1,"cancel":"{job}"}}"#).as_bytes()).unwrap();
        assert!(
            matches!(&r, Request::Cancel(c) if c.reason() == BUS_CANCEL_REASON),
            "{r:?}"
        );
        let r = Request::from_json(br#"{"request_id":"r1","targets":["a"]}"#).unwrap();
        assert!(matches!(r, Request::Snapshot(_)));
    }

    #[test]
    fn a_bad_cancel_is_refused_with_its_field() {
        for body in [
            &br#"{"cancel":"not-a-uuid"}"#[..],
            br#"{"cancel":null}"#,
            br#"{"cancel":42}"#,
        ] {
            let e = Request::from_json(body).unwrap_err();
            assert!(matches!(e, WireError::Invalid { field: "cancel", .. }), "{e}");
            assert!(e.to_string().contains("job id"), "{e}");
        }
        let e = Request::from_json(br#"{"cancel":"0193a5b2-7c1e-7f00-8a3b-5d2e9c4f1a07","reason":7}"#)
            .unwrap_err();
        assert!(matches!(e, WireError::Invalid { field: "reason", .. }), "{e}");
        let job = JobId::new_v7();
        let long = "x".repeat(MAX_REASON_LEN + 1);
        let e =
            Request::from_json(format!(r#"{{"cancel":"{job}","reason":"{long}"}}"#).as_bytes()).unwrap_err();
        assert!(matches!(e, WireError::Invalid { field: "reason", .. }), "{e}");
        let e = Request::from_json(
            format!(r#"{{"cancel":"{job}","request_id":"r","targets":["a"]}}"#).as_bytes(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let e =
            Request::from_json(format!(r#"{{"schema_version":2,"cancel":"{job}"}}"#).as_bytes()).unwrap_err();
        assert!(
            matches!(e, WireError::UnknownSchemaVersion { found: 2, .. }),
            "{e}"
        );
    }

    #[test]
    fn a_recovery_is_read_from_the_requests_queue() {
        let r = Request::from_json(
            br#"{"request_id":"r1","snapshot":"rm-x-a1","action":{"type":"to","path":"/srv/r"}}"#,
        )
        .unwrap();
        let Request::Recovery(rq) = r else { panic!("{r:?}") };
        assert_eq!(
            rq.action,
            RecoveryAction::To {
                path: "/srv/r".into(),
                until: None
            }
        );
        // A point in time, or a garbled one refused with what is wanted.
        let r = Request::from_json(
            br#"{"request_id":"r1","snapshot":"s","action":{"type":"in_place","until":"latest"},"confirm":true}"#,
        )
        .unwrap();
        let Request::Recovery(rq) = r else { panic!("{r:?}") };
        assert_eq!(rq.action.until(), Some(crate::Until::Latest));
        let e = Request::from_json(
            br#"{"request_id":"r1","snapshot":"s","action":{"type":"to","path":"/r","until":"soon"}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("2026-11-26T01:45:00Z"), "{e}");
        // Its own validation: an in-place restore must be confirmed.
        let e = Request::from_json(br#"{"request_id":"r1","snapshot":"s","action":{"type":"in_place"}}"#)
            .unwrap_err();
        assert!(matches!(e, WireError::Invalid { field: "confirm", .. }), "{e}");
        let e = Request::from_json(br#"{"request_id":"r1","snapshot":"s","action":{"type":"explode"}}"#)
            .unwrap_err();
        assert!(matches!(e, WireError::Json(_)), "{e}");
        // Two kinds of request in one body are refused, not guessed at.
        for body in [
            &br#"{"request_id":"r1","targets":["a"],"snapshot":"s","action":{"type":"mount"}}"#[..],
            br#"{"cancel":"0193a5b2-7c1e-7f00-8a3b-5d2e9c4f1a07","action":{"type":"mount"}}"#,
        ] {
            let e = Request::from_json(body).unwrap_err();
            assert!(matches!(e, WireError::Invalid { field: "action", .. }), "{e}");
            assert!(e.to_string().contains("not two of them"), "{e}");
        }
    }

    #[test]
    fn bounded_cuts_on_a_character_boundary() {
        assert_eq!(bounded("abc", 5), "abc");
        assert_eq!(bounded("abcdef", 3), "abc");
        assert_eq!(bounded("aé", 2), "a", "é is two bytes");
    }
}
