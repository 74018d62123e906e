//! The `qcow2` provider: internal snapshots of a qcow2 image with
//! `qemu-img snapshot -c/-l/-d`. qemu-img refuses an image a running VM holds
//! (its write lock); that becomes a clear `image_in_use` error. A running VM
//! must be snapshotted through QMP instead (not done here).

use std::path::Path;

use recman_events::bus::BoxFuture;
use recman_events::{SnapshotInfo, SnapshotKind, StepError, TargetId};

use super::{check_snapshot_name, Provider};
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
