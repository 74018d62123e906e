//! Recovery on a 3PAR array through the WSAPI: restore in place, roll back,
//! mount, unmount, clone. Followed: HP 3PAR Web Service API 1.3.1
//! Developer's Guide ("Promoting a Virtual Copy", "Creating Snapshots",
//! "Creating a VLUN", "Removing a VLUN", "Querying VLUNs", task status) and
//! the requests python-3parclient sends (`promoteVirtualCopy`, `createVLUN`
//! with `auto`, `deleteVLUN`, `getTask`).
//!
//! ```text
//! in place   PUT /volumes/<point> {"action":4,"online":true} (PROMOTE_VIRTUAL_COPY)
//!            → {"taskid"}; GET /tasks/<id> until status 1 (done)
//!            location 3par:<array>/<base>[,<base>…]
//! rollback   the same with the safety snapshot (a virtual copy of the same base)
//! clone NAME POST /volumes/<point> createSnapshot {"name":NAME,"readOnly":false}
//!            (a writable copy of the copy) location 3par:<array>/NAME[,NAME-1…]
//! mount ro   POST /vluns {"volumeName":<point>,"hostname":<mount_host>,"lun":0,
//!            "autoLun":true,"maxAutoLun":0}; location vlun:<vol>,<lun>,<host>[;…]
//! mount rw   first a writable copy of the point named rmw-<job key>[-<i>],
//!            exported as above
//! unmount    DELETE /vluns/<vol>,<lun>,<host> (gone: fine), then the rmw-
//!            copy or the clone; without a location, found by the job id
//! ```
//!
//! A volume set is handled member by member (`<point>-<i>` onto member i,
//! as the set snapshot's `@count@` numbered them): the checks all come
//! first, but the promotes are one task per member, not one instant. A
//! promote is online: the base stays exported to the (stopped) application
//! host; "priority does not apply to online promote", so none is sent.
//!
//! A redelivered step finds its work: a promote is done again (the base
//! becomes the point again), an existing copy is checked to be a copy of
//! the point, an existing export of the volume to the host is reused (the
//! array would make a second VLUN on another LUN). A rollback first appends
//! `restore of job <job> rolled back` to the safety copy's comment
//! (`PUT /volumes/<safety> {"comment"}`, "Modifying a Volume"); a restore
//! of that job redelivered later finds it and is refused (`rolled_back`)
//! instead of promoting over the data put back. A restore redelivered after
//! it finished and the application started is not detected: it promotes
//! the point again.

use std::time::{Duration, Instant};

use recman_events::{snapshot_name, JobId, RecoveryAction, StepError, TargetId};
use reqwest::Method;
use serde_json::{json, Value};

use super::{member_names, ThreeParProvider, EXISTENT_VOL, HAS_CHILD, MAX_NAME, PREFIX, VIRTUAL_COPY};
use crate::provider::trees::wrong_action;
use crate::provider::{check_snapshot_name, RecoveryJob};

/// Writable copies made for mounts start so (never `rm-`: they are not
/// restore points and are never listed as snapshots).
pub const MOUNT_PREFIX: &str = "rmw-";
/// `action` of PUT /volumes: PROMOTE_VIRTUAL_COPY (Guide, Table 39).
const PROMOTE_VIRTUAL_COPY: i64 = 4;
/// Task status (Guide; python-3parclient TASK_DONE … TASK_FAILED).
const TASK_DONE: i64 = 1;
const TASK_CANCELLED: i64 = 3;
const TASK_FAILED: i64 = 4;
const NON_EXISTENT_HOST: i64 = 17;
const EXPORTED_VLUN: i64 = 26;
/// Polling of a promote task: first pause, longest pause, give up after.
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(5);
const PROMOTE_WAIT: Duration = Duration::from_secs(4 * 3600);
/// Longest volume comment (Guide, "Creating Snapshots").
const MAX_COMMENT: usize = 511;

/// The 20 characters of the job in its snapshot names: mount copies are
/// named from them, so an unmount without a location finds them.
pub fn job_key(job: JobId) -> String {
    snapshot_name(job, 1)[3..23].to_string()
}

impl ThreeParProvider {
    /// The restore point's virtual copies with their base volumes.
    async fn pairs(&self, point: &str) -> Result<Vec<(String, String)>, StepError> {
        match &self.cfg.object {
            recman_config::ThreeParObject::Volume(v) => Ok(vec![(point.to_string(), v.clone())]),
            recman_config::ThreeParObject::VolumeSet(s) => {
                let members = self.members(s).await?;
                Ok(member_names(point, members.len())
                    .into_iter()
                    .zip(members)
                    .collect())
            }
        }
    }

    /// New volumes named `name` (a volume) or `name-<i>` (a set's members).
    fn names(&self, name: &str, n: usize) -> Vec<String> {
        match &self.cfg.object {
            recman_config::ThreeParObject::Volume(_) => vec![name.to_string()],
            recman_config::ThreeParObject::VolumeSet(_) => member_names(name, n),
        }
    }

    /// `copy` must be a virtual copy of `base` (the check prune uses).
    async fn check_point(
        &self,
        copy: &str,
        base: &str,
        role: &str,
        target: &TargetId,
    ) -> Result<(), StepError> {
        match self.check_copy(copy, base).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StepError::new(
                if role == "safety snapshot" {
                    "safety_snapshot_missing"
                } else {
                    "3par_point_missing"
                },
                format!(
                    "target {target}: 3PAR array {}: {role} {copy} (a virtual copy of {base}) is not on the array",
                    self.array()
                ),
                false,
            )),
            Err(e) if e.code == "3par_name_conflict" => Err(StepError::new(
                "not_a_copy_of_base",
                format!("target {target}: {}: refusing to use it as the {role}", e.message),
                false,
            )),
            Err(e) => Err(e),
        }
    }

    /// Promotes every copy of `point` onto its base; where the data is.
    async fn promote_all(&self, point: &str, role: &str, target: &TargetId) -> Result<String, StepError> {
        let pairs = self.pairs(point).await?;
        for (copy, base) in &pairs {
            self.check_point(copy, base, role, target).await?;
        }
        for (copy, base) in &pairs {
            self.promote(copy, base).await?;
        }
        let bases: Vec<String> = pairs.into_iter().map(|(_, b)| b).collect();
        Ok(self.location(&bases))
    }

    /// Guide, "Promoting a Virtual Copy": PUT /volumes/<copy> with action 4;
    /// 200 `{"taskid": n, "links": […]}`; then the task until it ends.
    async fn promote(&self, copy: &str, base: &str) -> Result<(), StepError> {
        let what = format!("promote of virtual copy {copy} onto {base}");
        let body = json!({ "action": PROMOTE_VIRTUAL_COPY, "online": true });
        let b = self
            .client
            .call(Method::PUT, &format!("volumes/{copy}"), Some(&body))
            .await
            .map_err(self.fail(&what))?;
        let id = b.get("taskid").and_then(|t| {
            t.as_i64()
                .or_else(|| t.as_str().and_then(|s| s.trim().parse().ok()))
        });
        match id {
            Some(id) => self.wait_task(id, &what).await,
            // No task: the array did it while answering.
            None => Ok(()),
        }
    }

    async fn wait_task(&self, id: i64, what: &str) -> Result<(), StepError> {
        let start = Instant::now();
        let mut pause = POLL_FIRST;
        loop {
            let t = self
                .client
                .call(Method::GET, &format!("tasks/{id}"), None)
                .await
                .map_err(self.fail(&format!("{what}: reading task {id}")))?;
            let status = t.get("status").and_then(Value::as_i64);
            let detail = t.get("detailedStatus").and_then(Value::as_str).unwrap_or("");
            match status {
                Some(TASK_DONE) => return Ok(()),
                Some(s @ (TASK_CANCELLED | TASK_FAILED)) => {
                    return Err(StepError::new(
                        "3par_task_failed",
                        format!(
                            "3PAR array {}: {what}: task {id} {} {detail}",
                            self.array(),
                            if s == TASK_CANCELLED {
                                "was cancelled"
                            } else {
                                "failed"
                            }
                        ),
                        false,
                    ))
                }
                _ => {}
            }
            if start.elapsed() > PROMOTE_WAIT {
                return Err(StepError::new(
                    "3par_task_timeout",
                    format!(
                        "3PAR array {}: {what}: task {id} still running after {} h; see `showtask -d {id}` on the array",
                        self.array(),
                        PROMOTE_WAIT.as_secs() / 3600
                    ),
                    true,
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// Guide, "Creating Snapshots" of a snapshot: a writable virtual copy
    /// `name` of `parent` (a read-only copy of a read-only volume is refused,
    /// INV_OPERATION_VV_READONLY_TO_READONLY_SNAP). A redelivery meets
    /// EXISTENT_VOL and checks the volume is that copy.
    async fn copy_of_copy(&self, parent: &str, name: &str, comment: String) -> Result<(), StepError> {
        if name.len() > MAX_NAME {
            return Err(StepError::new(
                "3par_name_too_long",
                format!(
                    "3PAR array {}: volume name {name} exceeds {MAX_NAME} characters",
                    self.array()
                ),
                false,
            ));
        }
        let body = json!({
            "action": "createSnapshot",
            "parameters": { "name": name, "readOnly": false, "comment": comment },
        });
        match self
            .client
            .call(Method::POST, &format!("volumes/{parent}"), Some(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_code(EXISTENT_VOL) => self.check_copy(name, parent).await.map(|_| ()),
            Err(e) => Err(self.fail(&format!("createSnapshot of {parent} as {name}"))(e)),
        }
    }

    fn mount_host(&self) -> Result<&str, StepError> {
        self.cfg.mount_host.as_deref().ok_or_else(|| {
            StepError::new(
                "invalid_config",
                format!(
                    "{}.mount_host: missing (required for mounts): name the host, as defined on array {}, that mounts are exported to: mount_host = \"<host>\"",
                    self.cfg.at,
                    self.array()
                ),
                false,
            )
        })
    }

    /// The LUN of the export of `vol` to `host`, if there is one. Lists
    /// every VLUN: the `volumeName EQ` query needs 3PAR OS 3.2.1 MU2.
    async fn vlun_of(&self, vol: &str, host: &str) -> Result<Option<u32>, StepError> {
        let b = self
            .client
            .call(Method::GET, "vluns", None)
            .await
            .map_err(self.fail("listing the VLUNs"))?;
        Ok(b.get("members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v.get("volumeName").and_then(Value::as_str) == Some(vol))
            .filter(|v| v.get("hostname").and_then(Value::as_str) == Some(host))
            .filter_map(|v| v.get("lun").and_then(Value::as_u64))
            .filter_map(|l| u32::try_from(l).ok())
            .min())
    }

    /// Guide, "Creating a VLUN" (python-3parclient `createVLUN(auto=True)`):
    /// the array picks the LUN. An existing export is reused.
    async fn export(&self, vol: &str, host: &str) -> Result<u32, StepError> {
        if let Some(lun) = self.vlun_of(vol, host).await? {
            return Ok(lun);
        }
        let body = json!({ "volumeName": vol, "hostname": host, "lun": 0, "autoLun": true, "maxAutoLun": 0 });
        self.client
            .call(Method::POST, "vluns", Some(&body))
            .await
            .map_err(|e| {
                let mut s = e.to_step(self.array(), &format!("exporting {vol} to host {host}"));
                if e.is_code(NON_EXISTENT_HOST) {
                    s.message
                        .push_str(&format!(" (check {}.mount_host)", self.cfg.at));
                }
                s
            })?;
        self.vlun_of(vol, host).await?.ok_or_else(|| {
            StepError::new(
                "3par_vlun_missing",
                format!(
                    "3PAR array {}: the export of {vol} to {host} was accepted but is not listed",
                    self.array()
                ),
                true,
            )
        })
    }

    /// Guide, "Removing a VLUN": DELETE /vluns/<vol>,<lun>,<host>; a VLUN
    /// (or host) already gone is fine.
    async fn unexport(&self, vol: &str, lun: u32, host: &str) -> Result<(), StepError> {
        match self
            .client
            .call(Method::DELETE, &format!("vluns/{vol},{lun},{host}"), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(self.fail(&format!("removing the export {vol},{lun},{host}"))(e)),
        }
    }

    /// Deletes `name`, a writable copy recman made of one of its snapshots
    /// (a mount copy or a clone); absent is fine, anything else is refused.
    async fn delete_made_copy(&self, name: &str) -> Result<(), StepError> {
        let v = match self
            .client
            .call(Method::GET, &format!("volumes/{name}"), None)
            .await
        {
            Ok(v) => v,
            Err(e) if e.status() == Some(404) => return Ok(()),
            Err(e) => return Err(self.fail(&format!("reading volume {name}"))(e)),
        };
        let copy_of = v.get("copyOf").and_then(Value::as_str).unwrap_or("");
        if v.get("copyType").and_then(Value::as_i64) != Some(VIRTUAL_COPY) || !copy_of.starts_with(PREFIX) {
            return Err(StepError::new(
                "invalid_location",
                format!(
                    "3PAR array {}: volume {name} is not a copy of a recman snapshot (copyOf {}): not deleting it",
                    self.array(),
                    if copy_of.is_empty() { "none" } else { copy_of }
                ),
                false,
            ));
        }
        match self
            .client
            .call(Method::DELETE, &format!("volumes/{name}"), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) if e.is_code(EXPORTED_VLUN) || e.is_code(HAS_CHILD) => Err(StepError::new(
                e.step_code(),
                format!(
                    "{}: unexport it (or remove what was made from it) first",
                    e.to_step(self.array(), &format!("deleting {name}")).message
                ),
                false,
            )),
            Err(e) => Err(self.fail(&format!("deleting {name}"))(e)),
        }
    }

    fn invalid_location(&self, loc: &str, why: &str) -> StepError {
        StepError::new(
            "invalid_location",
            format!(
                "{loc:?} is not a mount or clone the 3par provider made on array {}: {why}; not removing it",
                self.array()
            ),
            false,
        )
    }

    /// The mark a rollback leaves in the safety copy's comment.
    fn rolled_back_mark(job: JobId) -> String {
        format!("restore of job {job} rolled back")
    }

    async fn comment_of(&self, name: &str) -> Result<Option<String>, StepError> {
        match self
            .client
            .call(Method::GET, &format!("volumes/{name}"), None)
            .await
        {
            Ok(v) => Ok(Some(
                v.get("comment").and_then(Value::as_str).unwrap_or("").to_string(),
            )),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(self.fail(&format!("reading volume {name}"))(e)),
        }
    }

    pub(super) async fn restore_step(&self, req: RecoveryJob<'_>) -> Result<String, StepError> {
        check_snapshot_name(req.point)?;
        match req.action {
            RecoveryAction::InPlace { .. } => {
                if let Some(safety) = req.safety {
                    check_snapshot_name(safety)?;
                    // The safety copy (of a set: its first member's copy).
                    let first = self.names(safety, 1).remove(0);
                    let comment = self.comment_of(&first).await?.unwrap_or_default();
                    if comment.contains(&Self::rolled_back_mark(req.job)) {
                        return Err(StepError::new(
                            "rolled_back",
                            format!(
                                "target {}: the restore of job {} was rolled back (safety copy {first}): not promoting {} again",
                                req.target, req.job, req.point
                            ),
                            false,
                        ));
                    }
                }
                self.promote_all(req.point, "restore point", req.target).await
            }
            RecoveryAction::To { .. } => Err(StepError::new(
                "not_supported",
                format!(
                    "target {}: a 3PAR virtual copy cannot be restored to a path: use `recman clone` (a new volume on array {}) or `recman mount` (exported to the target's mount_host)",
                    req.target,
                    self.array()
                ),
                false,
            )),
            RecoveryAction::Clone { name } => {
                check_snapshot_name(name)?;
                let pairs = self.pairs(req.point).await?;
                let names = self.names(name, pairs.len());
                for (copy, base) in &pairs {
                    self.check_point(copy, base, "restore point", req.target).await?;
                }
                for ((copy, _), n) in pairs.iter().zip(&names) {
                    let comment = format!("recman clone {name} of {} by job {}", req.point, req.job);
                    self.copy_of_copy(copy, n, comment).await?;
                }
                Ok(self.location(&names))
            }
            other => Err(wrong_action("3par", "restore", other)),
        }
    }

    pub(super) async fn rollback_step(&self, req: RecoveryJob<'_>) -> Result<String, StepError> {
        let Some(safety) = req.safety else {
            return Err(StepError::new(
                "no_safety_snapshot",
                format!(
                    "target {}: the rollback names no safety snapshot: the base volume is as the restore left it",
                    req.target
                ),
                false,
            ));
        };
        check_snapshot_name(safety)?;
        // The mark first: a restore redelivered from now on is refused.
        let mark = Self::rolled_back_mark(req.job);
        for (copy, base) in self.pairs(safety).await? {
            self.check_point(&copy, &base, "safety snapshot", req.target)
                .await?;
            let old = self.comment_of(&copy).await?.unwrap_or_default();
            if old.contains(&mark) {
                continue;
            }
            let mut comment = if old.is_empty() {
                mark.clone()
            } else {
                format!("{old}; {mark}")
            };
            if comment.len() > MAX_COMMENT {
                comment = mark.clone();
            }
            self.client
                .call(
                    Method::PUT,
                    &format!("volumes/{copy}"),
                    Some(&json!({ "comment": comment })),
                )
                .await
                .map_err(self.fail(&format!("marking safety copy {copy}")))?;
        }
        self.promote_all(safety, "safety snapshot", req.target).await
    }

    pub(super) async fn mount_step(&self, req: RecoveryJob<'_>) -> Result<String, StepError> {
        check_snapshot_name(req.point)?;
        let RecoveryAction::Mount { writable, on } = req.action else {
            return Err(wrong_action("3par", "mount", req.action));
        };
        // `recman mount --on HOST`: that array host, else the target's.
        let host = match on {
            Some(h) => h.as_str(),
            None => self.mount_host()?,
        };
        let pairs = self.pairs(req.point).await?;
        for (copy, base) in &pairs {
            self.check_point(copy, base, "restore point", req.target).await?;
        }
        let rw = self.names(&format!("{MOUNT_PREFIX}{}", job_key(req.job)), pairs.len());
        let mut locations = Vec::new();
        for ((copy, _), rw) in pairs.iter().zip(rw) {
            let vol = if *writable {
                let comment = format!("recman writable mount of {} by job {}", req.point, req.job);
                self.copy_of_copy(copy, &rw, comment).await?;
                rw
            } else {
                copy.clone()
            };
            let lun = self.export(&vol, host).await?;
            locations.push(format!("vlun:{vol},{lun},{host}"));
        }
        Ok(locations.join(";"))
    }

    pub(super) async fn unmount_step(&self, req: RecoveryJob<'_>) -> Result<(), StepError> {
        match req.location {
            Some(loc) => self.remove_location(loc).await,
            None => self.remove_by_job(req).await,
        }
    }

    /// Removes what `loc` (from a message) names, once checked to be ours.
    async fn remove_location(&self, loc: &str) -> Result<(), StepError> {
        if let Some(rest) = loc.strip_prefix("3par:") {
            let Some((array, names)) = rest.split_once('/') else {
                return Err(self.invalid_location(loc, "no volume named"));
            };
            if array != self.array() {
                return Err(self.invalid_location(loc, "another array"));
            }
            for n in names.split(',') {
                if check_snapshot_name(n).is_err() || n.len() > MAX_NAME {
                    return Err(self.invalid_location(loc, "not a volume name"));
                }
            }
            for n in names.split(',') {
                self.delete_made_copy(n).await?;
            }
            return Ok(());
        }
        let mut exports = Vec::new();
        for entry in loc.split(';') {
            let parts: Vec<&str> = entry.strip_prefix("vlun:").unwrap_or("").split(',').collect();
            let [vol, lun, host] = parts.as_slice() else {
                return Err(self.invalid_location(loc, "expected vlun:<volume>,<lun>,<host>"));
            };
            let Ok(lun) = lun.parse::<u32>() else {
                return Err(self.invalid_location(loc, "the LUN is not a number"));
            };
            if check_snapshot_name(vol).is_err() || check_snapshot_name(host).is_err() {
                return Err(self.invalid_location(loc, "not a volume and host name"));
            }
            if !vol.starts_with(PREFIX) && !vol.starts_with(MOUNT_PREFIX) {
                return Err(self.invalid_location(loc, "not an export of a recman snapshot or mount copy"));
            }
            exports.push((vol.to_string(), lun, host.to_string()));
        }
        for (vol, lun, host) in &exports {
            self.unexport(vol, *lun, host).await?;
            if vol.starts_with(MOUNT_PREFIX) {
                self.delete_made_copy(vol).await?;
            }
        }
        Ok(())
    }

    /// No location (the mount step never answered, or was recorded without
    /// one): the exports to the mount host of the job's `rmw-` copies and of
    /// the point itself, then the copies. A read-only export of the point is
    /// the one every read-only mount of that point on that host shares.
    async fn remove_by_job(&self, req: RecoveryJob<'_>) -> Result<(), StepError> {
        let job = match req.action {
            RecoveryAction::Unmount { mount } => *mount,
            RecoveryAction::Mount { .. } => req.job,
            RecoveryAction::RemoveClone { name } => {
                check_snapshot_name(name)?;
                let n = self.pairs(req.point).await.map(|p| p.len()).unwrap_or(1);
                for c in self.names(name, n) {
                    self.delete_made_copy(&c).await?;
                }
                return Ok(());
            }
            other => return Err(wrong_action("3par", "unmount", other)),
        };
        let host = match req.action {
            RecoveryAction::Mount { on: Some(h), .. } => h.as_str(),
            _ => self.mount_host()?,
        };
        let pairs = match check_snapshot_name(req.point) {
            Ok(()) => self.pairs(req.point).await?,
            Err(_) => Vec::new(),
        };
        let copies = self.names(&format!("{MOUNT_PREFIX}{}", job_key(job)), pairs.len().max(1));
        let b = self
            .client
            .call(Method::GET, "vluns", None)
            .await
            .map_err(self.fail("listing the VLUNs"))?;
        let exports: Vec<(String, u32)> = b
            .get("members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v.get("hostname").and_then(Value::as_str) == Some(host))
            .filter_map(|v| {
                let vol = v.get("volumeName")?.as_str()?;
                let lun = u32::try_from(v.get("lun")?.as_u64()?).ok()?;
                let ours = copies.iter().any(|c| c == vol) || pairs.iter().any(|(p, _)| p == vol);
                ours.then(|| (vol.to_string(), lun))
            })
            .collect();
        for (vol, lun) in &exports {
            self.unexport(vol, *lun, host).await?;
        }
        for c in &copies {
            self.delete_made_copy(c).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_copy_names_fit_the_array_and_come_from_the_job() {
        let job = JobId::from_parts(1_700_000_000_000, 7);
        let key = job_key(job);
        assert_eq!(key.len(), 20);
        assert!(snapshot_name(job, 1).contains(&key));
        assert!(format!("{MOUNT_PREFIX}{key}-99").len() <= MAX_NAME);
        assert!(
            !MOUNT_PREFIX.starts_with(PREFIX),
            "mount copies are not restore points"
        );
    }
}
