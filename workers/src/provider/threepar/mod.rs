//! The `3par` provider: HPE 3PAR / Primera virtual copies (read-only
//! snapshots) of one volume or one volume set through the WSAPI.
//!
//! Names come from the engine (`rm-<job>-a<attempt>`, at most 31 characters);
//! a redelivered command meets EXISTENT_VOL (22) and succeeds once the
//! existing volume is checked to be a virtual copy of the right base. A
//! volume set is cut at one instant with the pattern `<name>-@count@`.
//! Recovery (promote, VLUN exports, copies of copies) is in `recovery`.

pub mod check;
mod client;
mod recovery;
mod tls;

use std::sync::Arc;

use recman_events::bus::BoxFuture;
use recman_events::{ArrayExpiry, SnapshotInfo, SnapshotKind, StepError, TargetId};
use reqwest::Method;
use serde_json::{json, Value};

pub use client::{ArrayClient, WsapiError};
pub use recovery::{job_key, MOUNT_PREFIX};

use super::{check_snapshot_name, Provider, RecoveryJob, SnapshotJob};
use recman_config::{ThreeParConfig, ThreeParObject};

/// `copyType` of a virtual copy.
pub const VIRTUAL_COPY: i64 = 3;
/// Longest 3PAR volume name.
pub const MAX_NAME: usize = 31;
/// Only snapshots whose name starts so are recman's (listing, deleting).
pub const PREFIX: &str = "rm-";
const EXISTENT_VOL: i64 = 22;
const HAS_CHILD: i64 = 32;

pub struct ThreeParProvider {
    cfg: ThreeParConfig,
    client: Arc<ArrayClient>,
}

impl ThreeParProvider {
    /// Shares the array's sessions with every other target of that array.
    pub fn new(cfg: ThreeParConfig) -> Self {
        let client = ArrayClient::shared(&cfg.array);
        ThreeParProvider { cfg, client }
    }

    fn array(&self) -> &str {
        &self.cfg.array.name
    }

    fn fail(&self, what: &str) -> impl Fn(WsapiError) -> StepError + '_ {
        let what = what.to_string();
        move |e| e.to_step(self.array(), &what)
    }

    fn location(&self, names: &[String]) -> String {
        format!("3par:{}/{}", self.array(), names.join(","))
    }

    /// What the array was told to do with the copy (`body`), for the catalog.
    fn expiry(&self) -> Option<ArrayExpiry> {
        let e = ArrayExpiry {
            expiration_hours: self.cfg.expiration_hours,
            retention_hours: self.cfg.retention_hours,
        };
        (e != ArrayExpiry::default()).then_some(e)
    }

    fn body(&self, name: &str, comment: String) -> Value {
        let mut p = json!({ "name": name, "readOnly": true, "comment": comment });
        if let Some(h) = self.cfg.expiration_hours {
            p["expirationHours"] = json!(h);
        }
        if let Some(h) = self.cfg.retention_hours {
            p["retentionHours"] = json!(h);
        }
        json!({ "action": "createSnapshot", "parameters": p })
    }

    async fn take(&self, req: SnapshotJob<'_>) -> Result<SnapshotInfo, StepError> {
        check_snapshot_name(req.name)?;
        let comment = match req.job {
            Some((job, attempt)) => format!(
                "recman job {job} attempt {attempt} target {} ({})",
                req.target,
                req.kind.as_str()
            ),
            None => format!("recman snapshot {} of target {}", req.name, req.target),
        };
        match &self.cfg.object {
            ThreeParObject::Volume(vol) => self.take_volume(vol, req.name, comment).await,
            ThreeParObject::VolumeSet(set) => self.take_set(set, req.name, comment).await,
        }
    }

    async fn take_volume(&self, vol: &str, name: &str, comment: String) -> Result<SnapshotInfo, StepError> {
        too_long(name, self.array())?;
        let what = format!("createSnapshot of volume {vol} as {name}");
        let r = self
            .client
            .call(
                Method::POST,
                &format!("volumes/{vol}"),
                Some(&self.body(name, comment)),
            )
            .await;
        let existed = match r {
            Ok(_) => false,
            Err(e) if e.is_code(EXISTENT_VOL) => {
                // A redelivery: fine if it is our copy of this very volume.
                self.check_copy(name, vol).await?;
                true
            }
            Err(e) => return Err(self.fail(&what)(e)),
        };
        Ok(SnapshotInfo {
            name: name.to_string(),
            provider: "3par".into(),
            location: self.location(&[name.to_string()]),
            size_bytes: None,
            existed,
            array_expiry: self.expiry(),
        })
    }

    async fn take_set(&self, set: &str, name: &str, comment: String) -> Result<SnapshotInfo, StepError> {
        let members = self.members(set).await?;
        let names = member_names(name, members.len());
        if let Some(long) = names.iter().find(|n| n.len() > MAX_NAME) {
            return Err(StepError::new(
                "3par_name_too_long",
                format!(
                    "3PAR array {}: member copy name {long} of volume set {set} exceeds {MAX_NAME} characters",
                    self.array()
                ),
                false,
            ));
        }
        let pattern = format!("{name}-@count@");
        let what = format!("createSnapshot of volume set {set} as {pattern}");
        let r = self
            .client
            .call(
                Method::POST,
                &format!("volumesets/{set}"),
                Some(&self.body(&pattern, comment)),
            )
            .await;
        let existed = match r {
            Ok(_) => false,
            Err(e) if e.is_code(EXISTENT_VOL) => {
                for (n, base) in names.iter().zip(&members) {
                    self.check_copy(n, base).await?;
                }
                true
            }
            Err(e) => return Err(self.fail(&what)(e)),
        };
        Ok(SnapshotInfo {
            name: name.to_string(),
            provider: "3par".into(),
            location: self.location(&names),
            size_bytes: None,
            existed,
            array_expiry: self.expiry(),
        })
    }

    /// Members of a volume set, in the array's order (the `@count@` order).
    async fn members(&self, set: &str) -> Result<Vec<String>, StepError> {
        let b = self
            .client
            .call(Method::GET, &format!("volumesets/{set}"), None)
            .await
            .map_err(self.fail(&format!("reading volume set {set}")))?;
        let members: Vec<String> = b
            .get("setmembers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        if members.is_empty() {
            return Err(StepError::new(
                "3par_empty_set",
                format!("3PAR array {}: volume set {set} has no members", self.array()),
                false,
            ));
        }
        Ok(members)
    }

    /// `Ok(true)` when `name` is a virtual copy of `base`, `Ok(false)` when
    /// there is no such volume, an error when it is something else.
    async fn check_copy(&self, name: &str, base: &str) -> Result<bool, StepError> {
        let v = match self
            .client
            .call(Method::GET, &format!("volumes/{name}"), None)
            .await
        {
            Ok(v) => v,
            Err(e) if e.status() == Some(404) => return Ok(false),
            Err(e) => return Err(self.fail(&format!("reading volume {name}"))(e)),
        };
        let copy_of = v.get("copyOf").and_then(Value::as_str);
        let copy_type = v.get("copyType").and_then(Value::as_i64);
        if copy_of == Some(base) && copy_type == Some(VIRTUAL_COPY) {
            return Ok(true);
        }
        Err(StepError::new(
            "3par_name_conflict",
            format!(
                "3PAR array {}: volume {name} exists but is not a virtual copy of {base} (copyOf {}, copyType {}); recman leaves it alone",
                self.array(),
                copy_of.unwrap_or("none"),
                copy_type.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
            ),
            false,
        ))
    }

    /// Deletes `name` after checking it is a virtual copy of `base`.
    async fn delete_copy(&self, name: &str, base: &str) -> Result<bool, StepError> {
        if !self.check_copy(name, base).await? {
            return Ok(false);
        }
        match self.client.call(Method::DELETE, &format!("volumes/{name}"), None).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) if e.is_code(HAS_CHILD) => Err(StepError::new(
                "3par_has_child",
                format!(
                    "3PAR array {}: snapshot {name} was not deleted: it has a child volume (a copy or export made from it); remove that first. {}",
                    self.array(),
                    e.to_step(self.array(), "delete").message
                ),
                false,
            )),
            Err(e) => Err(self.fail(&format!("deleting snapshot {name}"))(e)),
        }
    }

    /// recman's virtual copies of `base`, oldest first.
    async fn copies_of(&self, base: &str) -> Result<Vec<String>, StepError> {
        // query="copyOf EQ <base>", percent-encoded (names are [A-Za-z0-9._-]).
        let path = format!("volumes?query=%22copyOf%20EQ%20{base}%22");
        let b = self
            .client
            .call(Method::GET, &path, None)
            .await
            .map_err(self.fail(&format!("listing the copies of {base}")))?;
        let mut found: Vec<(i64, String)> = b
            .get("members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v.get("copyType").and_then(Value::as_i64) == Some(VIRTUAL_COPY))
            .filter(|v| v.get("copyOf").and_then(Value::as_str) == Some(base))
            .filter_map(|v| {
                let name = v.get("name")?.as_str()?;
                let t = v.get("creationTimeSec").and_then(Value::as_i64).unwrap_or(0);
                name.starts_with(PREFIX).then(|| (t, name.to_string()))
            })
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, n)| n).collect())
    }
}

/// The member copies the set pattern `<name>-@count@` makes.
pub fn member_names(name: &str, members: usize) -> Vec<String> {
    (0..members).map(|i| format!("{name}-{i}")).collect()
}

fn too_long(name: &str, array: &str) -> Result<(), StepError> {
    if name.len() > MAX_NAME {
        return Err(StepError::new(
            "3par_name_too_long",
            format!("3PAR array {array}: snapshot name {name} exceeds {MAX_NAME} characters"),
            false,
        ));
    }
    Ok(())
}

impl Provider for ThreeParProvider {
    fn kind(&self) -> &'static str {
        "3par"
    }

    fn snapshot<'a>(
        &'a self,
        name: &'a str,
        target: &'a TargetId,
        kind: SnapshotKind,
    ) -> BoxFuture<'a, Result<SnapshotInfo, StepError>> {
        Box::pin(self.take(SnapshotJob {
            name,
            target,
            kind,
            job: None,
        }))
    }

    fn snapshot_job<'a>(&'a self, req: SnapshotJob<'a>) -> BoxFuture<'a, Result<SnapshotInfo, StepError>> {
        Box::pin(self.take(req))
    }

    fn delete<'a>(&'a self, name: &'a str, _target: &'a TargetId) -> BoxFuture<'a, Result<bool, StepError>> {
        Box::pin(async move {
            check_snapshot_name(name)?;
            match &self.cfg.object {
                ThreeParObject::Volume(vol) => self.delete_copy(name, vol).await,
                ThreeParObject::VolumeSet(set) => {
                    let members = self.members(set).await?;
                    let mut any = false;
                    for (n, base) in member_names(name, members.len()).iter().zip(&members) {
                        any |= self.delete_copy(n, base).await?;
                    }
                    Ok(any)
                }
            }
        })
    }

    fn list<'a>(&'a self, _target: &'a TargetId) -> BoxFuture<'a, Result<Vec<String>, StepError>> {
        Box::pin(async move {
            match &self.cfg.object {
                ThreeParObject::Volume(vol) => self.copies_of(vol).await,
                ThreeParObject::VolumeSet(set) => {
                    let members = self.members(set).await?;
                    Ok(self
                        .copies_of(&members[0])
                        .await?
                        .into_iter()
                        .filter_map(|n| n.strip_suffix("-0").map(str::to_string))
                        .collect())
                }
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.client.logout_all())
    }

    fn restore<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<String, StepError>> {
        Box::pin(self.restore_step(req))
    }

    fn rollback<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<String, StepError>> {
        Box::pin(self.rollback_step(req))
    }

    fn mount<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<String, StepError>> {
        Box::pin(self.mount_step(req))
    }

    fn unmount<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(self.unmount_step(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_status_and_wsapi_code_and_say_if_retrying_helps() {
        let e = WsapiError::Http {
            status: 409,
            code: Some(32),
            desc: "volume has a child".into(),
        };
        let s = e.to_step("a", "deleting snapshot rm-1");
        assert_eq!(s.code, "3par_has_child");
        assert!(
            s.message
                .contains("HTTP 409, WSAPI code 32 (HAS_CHILD): volume has a child"),
            "{}",
            s.message
        );
        assert!(!s.retryable);
        let busy = WsapiError::Http {
            status: 503,
            code: None,
            desc: "busy".into(),
        };
        assert!(busy.retryable());
        assert_eq!(busy.step_code(), "3par_http_503");
        assert!(WsapiError::Transport("refused".into()).retryable());
        for status in [400, 401, 403, 404] {
            let e = WsapiError::Http {
                status,
                code: None,
                desc: String::new(),
            };
            assert!(!e.retryable(), "{status}");
        }
    }

    #[test]
    fn set_members_are_numbered_from_zero() {
        assert_eq!(member_names("rm-x-a1", 2), vec!["rm-x-a1-0", "rm-x-a1-1"]);
    }
}
