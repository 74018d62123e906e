//! The `qcow2` provider: internal snapshots of a qcow2 image with
//! `qemu-img snapshot -c/-l/-d`. qemu-img refuses an image a running VM holds
//! (its write lock); that becomes a clear `image_in_use` error. A running VM
//! must be snapshotted through QMP instead (not done here).
//!
//! Recovery. In place: `qemu-img snapshot -a POINT IMAGE` (qcow2 switches
//! its active L1 table to the snapshot's: the image is either before or
//! after), so there is nothing to keep aside and a rollback is
//! `-a SAFETY`. qemu-img takes the image's write lock for it, so a running
//! VM makes it fail (`image_in_use`) instead of changing its disk under it;
//! the VM must be stopped by the writer first. To a path, a clone and a
//! mount are image files extracted with `qemu-img convert -l
//! snapshot.name=POINT -O qcow2 IMAGE TMP`, renamed into place when
//! complete (never over an existing file). Clones are
//! `DIR/.IMAGE.recman/clones/NAME.qcow2`, mounts (the image to attach,
//! not a mounted filesystem: that needs the guest's partitions)
//! `DIR/.IMAGE.recman/mounts/JOB.qcow2`, mode 0444 unless writable. Marks
//! in that directory (`.recman-restored-JOB`, …) make a redelivered restore
//! find its work done, and refuse it once a rollback began.

use std::path::{Path, PathBuf};

use recman_events::bus::BoxFuture;
use recman_events::{JobId, RecoveryAction, SnapshotInfo, SnapshotKind, StepError, TargetId};

use super::trees::{check_path, path_exists, put_mark, rename_noreplace, sync, wrong_action};
use super::{check_snapshot_name, Provider, RecoveryJob};
use crate::exec;
use recman_config::Qcow2Config;

#[derive(Clone, Debug)]
pub struct Qcow2Provider {
    cfg: Qcow2Config,
}

/// One line of `qemu-img snapshot -l`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qcow2Snapshot {
    pub id: String,
    pub tag: String,
}

impl Qcow2Provider {
    pub fn new(cfg: Qcow2Config) -> Self {
        Qcow2Provider { cfg }
    }

    fn image(&self) -> String {
        self.cfg.image.display().to_string()
    }

    async fn qemu_img(&self, args: &[&str]) -> Result<String, StepError> {
        let mut argv = vec![self.cfg.qemu_img.clone()];
        argv.extend(args.iter().map(|s| s.to_string()));
        match exec::run(&argv, &[], self.cfg.timeout).await {
            Ok(out) => Ok(out.stdout),
            Err(e) => Err(classify(&self.cfg.image, e)),
        }
    }

    /// Snapshots in the image, in creation (ID) order.
    pub async fn snapshots(&self) -> Result<Vec<Qcow2Snapshot>, StepError> {
        if !self.cfg.image.is_file() {
            return Err(StepError::new(
                "image_missing",
                format!("qcow2 image {} does not exist", self.image()),
                false,
            ));
        }
        let out = self.qemu_img(&["snapshot", "-l", &self.image()]).await?;
        Ok(parse_list(&out))
    }

    async fn virtual_size(&self) -> Option<u64> {
        let out = self
            .qemu_img(&["info", "--output=json", &self.image()])
            .await
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v.get("virtual-size")?.as_u64()
    }

    async fn snapshot_inner(&self, name: &str) -> Result<SnapshotInfo, StepError> {
        check_snapshot_name(name)?;
        let mut existed = true;
        let mut found = self.snapshots().await?.into_iter().find(|s| s.tag == name);
        if found.is_none() {
            existed = false;
            self.qemu_img(&["snapshot", "-c", name, &self.image()]).await?;
            found = self.snapshots().await?.into_iter().find(|s| s.tag == name);
        }
        let Some(s) = found else {
            return Err(StepError::new(
                "snapshot_missing",
                format!("qemu-img created {name} in {} but does not list it", self.image()),
                true,
            ));
        };
        Ok(SnapshotInfo {
            name: name.to_string(),
            provider: "qcow2".into(),
            location: format!("{}@{} (id {})", self.image(), s.tag, s.id),
            // What the snapshot captures: the disk's virtual size.
            size_bytes: self.virtual_size().await,
            existed,
            array_expiry: None,
        })
    }

    async fn delete_inner(&self, name: &str) -> Result<bool, StepError> {
        check_snapshot_name(name)?;
        if !self.snapshots().await?.iter().any(|s| s.tag == name) {
            return Ok(false);
        }
        self.qemu_img(&["snapshot", "-d", name, &self.image()]).await?;
        Ok(true)
    }
}

impl Qcow2Provider {
    /// `DIR/.IMAGE.recman`: clones, mounts and marks.
    fn own_dir(&self) -> PathBuf {
        let img = &self.cfg.image;
        let name = img.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        img.parent()
            .unwrap_or(Path::new("/"))
            .join(format!(".{name}.recman"))
    }

    fn mark(&self, what: &str, job: JobId) -> PathBuf {
        self.own_dir().join(format!(".recman-{what}-{job}"))
    }

    async fn put_mark(&self, what: &str, job: JobId) -> Result<(), StepError> {
        let dir = self.own_dir();
        let mark = self.mark(what, job);
        crate::blocking("qcow2", move || {
            std::fs::create_dir_all(&dir).map_err(|e| super::trees::io_err("creating", &dir, e))?;
            put_mark(&mark)
        })
        .await
    }

    /// Fails unless snapshot `name` is in the image.
    async fn require(&self, name: &str, what: &str) -> Result<(), StepError> {
        check_snapshot_name(name)?;
        if self.snapshots().await?.iter().any(|s| s.tag == name) {
            return Ok(());
        }
        Err(StepError::new(
            if what == "safety snapshot" {
                "safety_snapshot_missing"
            } else {
                "snapshot_missing"
            },
            format!("{what} {name} is not in {} (deleted?)", self.image()),
            false,
        ))
    }

    /// `fin`: a new image file holding snapshot `point`, made at a
    /// temporary name and renamed (never over an existing file).
    /// `reuse`: an existing `fin` is this job's, done before.
    async fn extract(
        &self,
        point: &str,
        fin: &Path,
        job: JobId,
        read_only: bool,
        reuse: bool,
    ) -> Result<String, StepError> {
        let done = || Ok(fin.display().to_string());
        if fin.exists() {
            return if reuse { done() } else { Err(path_exists(fin)) };
        }
        let parent = fin.parent().unwrap_or(Path::new("/")).to_path_buf();
        if !parent.is_dir() {
            return Err(StepError::new(
                "invalid_path",
                format!("{} does not exist: create it first", parent.display()),
                false,
            ));
        }
        self.require(point, "restore point").await?;
        let tmp = PathBuf::from(format!("{}.recman-tmp-{job}", fin.display()));
        let _ = std::fs::remove_file(&tmp);
        let snap = format!("snapshot.name={point}");
        let out = tmp.display().to_string();
        if let Err(e) = self
            .qemu_img(&["convert", "-l", &snap, "-O", "qcow2", &self.image(), &out])
            .await
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let fin2 = fin.to_path_buf();
        crate::blocking("qcow2", move || {
            let io = |what: &str, p: &Path, e| super::trees::io_err(what, p, e);
            let f = std::fs::File::open(&tmp).map_err(|e| io("opening", &tmp, e))?;
            f.sync_all().map_err(|e| io("syncing", &tmp, e))?;
            if read_only {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))
                    .map_err(|e| io("making read-only", &tmp, e))?;
            }
            match rename_noreplace(&tmp, &fin2) {
                Ok(()) => sync(&parent),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    if e.raw_os_error() == Some(libc::EEXIST) {
                        if reuse {
                            return Ok(());
                        }
                        return Err(path_exists(&fin2));
                    }
                    Err(io("renaming into place", &fin2, e))
                }
            }
        })
        .await?;
        done()
    }

    async fn restore_inner(&self, req: RecoveryJob<'_>) -> Result<String, StepError> {
        check_snapshot_name(req.point)?;
        match req.action {
            RecoveryAction::InPlace { .. } => {
                if self.mark("rollback", req.job).exists() {
                    return Err(StepError::new(
                        "rolled_back",
                        format!(
                            "target {}: the restore of job {} was rolled back: not restoring again",
                            req.target, req.job
                        ),
                        false,
                    ));
                }
                if !self.mark("restored", req.job).exists() {
                    self.require(req.point, "restore point").await?;
                    self.qemu_img(&["snapshot", "-a", req.point, &self.image()])
                        .await?;
                    self.put_mark("restored", req.job).await?;
                }
                Ok(self.image())
            }
            RecoveryAction::To { path, .. } => {
                let p = check_path(path)?;
                if p == self.cfg.image || p.starts_with(self.own_dir()) {
                    return Err(StepError::new(
                        "invalid_path",
                        format!("{} is the image or recman's own directory beside it", p.display()),
                        false,
                    ));
                }
                let reuse = self.mark("restored", req.job).exists();
                let loc = self.extract(req.point, &p, req.job, false, reuse).await?;
                self.put_mark("restored", req.job).await?;
                Ok(loc)
            }
            RecoveryAction::Clone { name } => {
                check_snapshot_name(name)?;
                let dir = self.own_dir().join("clones");
                create_dir(&dir).await?;
                self.extract(
                    req.point,
                    &dir.join(format!("{name}.qcow2")),
                    req.job,
                    false,
                    true,
                )
                .await
            }
            other => Err(wrong_action("qcow2", "restore", other)),
        }
    }

    async fn rollback_inner(&self, req: RecoveryJob<'_>) -> Result<String, StepError> {
        if self.mark("rolled-back", req.job).exists() {
            return Ok(self.image());
        }
        let Some(safety) = req.safety else {
            return Err(StepError::new(
                "no_safety_snapshot",
                format!("target {}: the rollback names no safety snapshot", req.target),
                false,
            ));
        };
        self.require(safety, "safety snapshot").await?;
        self.put_mark("rollback", req.job).await?;
        self.qemu_img(&["snapshot", "-a", safety, &self.image()]).await?;
        self.put_mark("rolled-back", req.job).await?;
        Ok(self.image())
    }

    async fn mount_inner(&self, req: RecoveryJob<'_>) -> Result<String, StepError> {
        let RecoveryAction::Mount { writable, .. } = req.action else {
            return Err(wrong_action("qcow2", "mount", req.action));
        };
        check_snapshot_name(req.point)?;
        let dir = self.own_dir().join("mounts");
        create_dir(&dir).await?;
        let fin = dir.join(format!("{}.qcow2", req.job));
        self.extract(req.point, &fin, req.job, !writable, true).await
    }

    async fn unmount_inner(&self, req: RecoveryJob<'_>) -> Result<(), StepError> {
        // Without a location (a mount whose step never answered): the
        // image the mount job extracted, found by its job id.
        let derived;
        let loc = match req.location {
            Some(l) => l,
            None => {
                let job = match req.action {
                    RecoveryAction::Unmount { mount } => *mount,
                    RecoveryAction::Mount { .. } => req.job,
                    other => return Err(wrong_action("qcow2", "unmount", other)),
                };
                derived = self.own_dir().join("mounts").join(format!("{job}.qcow2"));
                derived.to_str().unwrap_or_default()
            }
        };
        let p = check_path(loc)?;
        let own = self.own_dir();
        let ours = p
            .parent()
            .is_some_and(|d| d == own.join("clones") || d == own.join("mounts"))
            && p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".qcow2"))
                .is_some_and(|n| check_snapshot_name(n).is_ok());
        if !ours {
            return Err(StepError::new(
                "invalid_location",
                format!(
                    "{loc:?} is not a mount or clone the qcow2 provider made under {}: not removing it",
                    own.display()
                ),
                false,
            ));
        }
        crate::blocking("qcow2", move || match std::fs::remove_file(&p) {
            Ok(()) => sync(p.parent().unwrap_or(Path::new("/"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(super::trees::io_err("removing", &p, e)),
        })
        .await
    }
}

async fn create_dir(dir: &Path) -> Result<(), StepError> {
    let d = dir.to_path_buf();
    crate::blocking("qcow2", move || {
        std::fs::create_dir_all(&d).map_err(|e| super::trees::io_err("creating", &d, e))
    })
    .await
}

/// Parses `qemu-img snapshot -l`: a title, a header, then `ID TAG …` rows.
pub fn parse_list(out: &str) -> Vec<Qcow2Snapshot> {
    out.lines()
        .skip_while(|l| !l.trim_start().starts_with("ID"))
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(Qcow2Snapshot {
                id: it.next()?.to_string(),
                tag: it.next()?.to_string(),
            })
        })
        .collect()
}

/// A qemu-img failure, with the lock conflict called by its name.
fn classify(image: &Path, e: StepError) -> StepError {
    if e.message.contains("lock") {
        return StepError::new(
            "image_in_use",
            format!(
                "qcow2 image {} is in use (another process, e.g. a running VM, holds its write lock); \
                 stop the VM or snapshot it through QMP. qemu-img said: {}",
                image.display(),
                e.message
            ),
            true,
        );
    }
    if e.message.starts_with("cannot run") {
        return StepError::new(
            e.code.clone(),
            format!("{} (is qemu-utils installed?)", e.message),
            false,
        );
    }
    e
}

impl Provider for Qcow2Provider {
    fn kind(&self) -> &'static str {
        "qcow2"
    }
    fn snapshot<'a>(
        &'a self,
        name: &'a str,
        _target: &'a TargetId,
        _kind: SnapshotKind,
    ) -> BoxFuture<'a, Result<SnapshotInfo, StepError>> {
        Box::pin(self.snapshot_inner(name))
    }
    fn delete<'a>(&'a self, name: &'a str, _target: &'a TargetId) -> BoxFuture<'a, Result<bool, StepError>> {
        Box::pin(self.delete_inner(name))
    }
    fn list<'a>(&'a self, _target: &'a TargetId) -> BoxFuture<'a, Result<Vec<String>, StepError>> {
        Box::pin(async move { Ok(self.snapshots().await?.into_iter().map(|s| s.tag).collect()) })
    }
    fn restore<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<String, StepError>> {
        Box::pin(self.restore_inner(req))
    }
    fn rollback<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<String, StepError>> {
        Box::pin(self.rollback_inner(req))
    }
    fn mount<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<String, StepError>> {
        Box::pin(self.mount_inner(req))
    }
    fn unmount<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(self.unmount_inner(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_snapshot_list() {
        let out = "Snapshot list:\n\
ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n\
1         rm-0001-a1            0 B 2026-11-26 01:50:00 00:00:00.000          0\n\
2         rm-0002-a1            0 B 2026-11-26 01:51:00 00:00:00.000          0\n";
        let l = parse_list(out);
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[1],
            Qcow2Snapshot {
                id: "2".into(),
                tag: "rm-0002-a1".into()
            }
        );
        assert!(parse_list("").is_empty());
    }
}
