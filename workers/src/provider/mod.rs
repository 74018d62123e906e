//! Providers take the point-in-time copy of a (frozen) target and delete old
//! ones. One provider instance per target, built from the target's config.

/// `Provider` for a type whose steps are blocking calls (`snapshot_blocking`,
/// `delete_blocking`, `list_blocking`): each runs off the async threads
/// through `crate::blocking`.
macro_rules! blocking_provider {
    ($ty:ty, $kind:literal) => {
        blocking_provider!($ty, $kind, {});
    };
    // `cleanup_blocking` runs when the worker starts; the snapshot's owner
    // is recorded (`snapshot_owned_blocking`) and looked up (`lookup_blocking`);
    // recovery is `trees.rs`'s, over the type's `TreeStore`.
    ($ty:ty, $kind:literal, owned $(, $cleanup:ident)?) => {
        blocking_provider!($ty, $kind, {
            fn restore<'a>(
                &'a self,
                req: $crate::provider::RecoveryJob<'a>,
            ) -> recman_events::bus::BoxFuture<'a, Result<String, recman_events::StepError>> {
                let me = self.clone();
                let req = $crate::provider::trees::Req::from(req);
                Box::pin($crate::blocking($kind, move || $crate::provider::trees::restore(&me, &req)))
            }
            fn rollback<'a>(
                &'a self,
                req: $crate::provider::RecoveryJob<'a>,
            ) -> recman_events::bus::BoxFuture<'a, Result<String, recman_events::StepError>> {
                let me = self.clone();
                let req = $crate::provider::trees::Req::from(req);
                Box::pin($crate::blocking($kind, move || $crate::provider::trees::rollback(&me, &req)))
            }
            fn mount<'a>(
                &'a self,
                req: $crate::provider::RecoveryJob<'a>,
            ) -> recman_events::bus::BoxFuture<'a, Result<String, recman_events::StepError>> {
                let me = self.clone();
                let req = $crate::provider::trees::Req::from(req);
                Box::pin($crate::blocking($kind, move || $crate::provider::trees::mount(&me, &req)))
            }
            fn unmount<'a>(
                &'a self,
                req: $crate::provider::RecoveryJob<'a>,
            ) -> recman_events::bus::BoxFuture<'a, Result<(), recman_events::StepError>> {
                let me = self.clone();
                let req = $crate::provider::trees::Req::from(req);
                Box::pin($crate::blocking($kind, move || $crate::provider::trees::unmount(&me, &req)))
            }
            $(
            fn $cleanup(
                &self,
            ) -> recman_events::bus::BoxFuture<'_, Result<Vec<String>, recman_events::StepError>> {
                let me = self.clone();
                Box::pin($crate::blocking($kind, move || me.cleanup_blocking()))
            }
            )?
            fn snapshot_job<'a>(
                &'a self,
                req: $crate::provider::SnapshotJob<'a>,
            ) -> recman_events::bus::BoxFuture<
                'a,
                Result<recman_events::SnapshotInfo, recman_events::StepError>,
            > {
                let me = self.clone();
                let name = req.name.to_string();
                let owner = req.job;
                Box::pin($crate::blocking($kind, move || me.snapshot_owned_blocking(&name, owner)))
            }
            fn lookup<'a>(
                &'a self,
                name: &'a str,
                _target: &'a recman_events::TargetId,
            ) -> recman_events::bus::BoxFuture<
                'a,
                Result<recman_core::worker::Existing, recman_events::StepError>,
            > {
                let me = self.clone();
                let name = name.to_string();
                Box::pin($crate::blocking($kind, move || me.lookup_blocking(&name)))
            }
        });
    };
    ($ty:ty, $kind:literal, { $($extra:tt)* }) => {
        impl $crate::provider::Provider for $ty {
            $($extra)*
            fn kind(&self) -> &'static str {
                $kind
            }
            fn snapshot<'a>(
                &'a self,
                name: &'a str,
                _target: &'a recman_events::TargetId,
                _kind: recman_events::SnapshotKind,
            ) -> recman_events::bus::BoxFuture<
                'a,
                Result<recman_events::SnapshotInfo, recman_events::StepError>,
            > {
                let me = self.clone();
                let name = name.to_string();
                Box::pin($crate::blocking($kind, move || me.snapshot_blocking(&name)))
            }
            fn delete<'a>(
                &'a self,
                name: &'a str,
                _target: &'a recman_events::TargetId,
            ) -> recman_events::bus::BoxFuture<'a, Result<bool, recman_events::StepError>> {
                let me = self.clone();
                let name = name.to_string();
                Box::pin($crate::blocking($kind, move || me.delete_blocking(&name)))
            }
            fn list<'a>(
                &'a self,
                _target: &'a recman_events::TargetId,
            ) -> recman_events::bus::BoxFuture<'a, Result<Vec<String>, recman_events::StepError>> {
                let me = self.clone();
                Box::pin($crate::blocking($kind, move || me.list_blocking()))
            }
        }
    };
}

mod btrfs;
#[cfg(test)]
mod contract;
mod copy;
mod exec;
mod none;
mod owner;
mod qcow2;
pub mod threepar;
mod trees;

use std::sync::Arc;

use recman_events::bus::BoxFuture;
use recman_events::{JobId, SnapshotInfo, SnapshotKind, StepError, TargetId};

pub use btrfs::{create_snapshot as btrfs_snapshot_ioctl, subvolume_id, BtrfsProvider};
pub use copy::CopyProvider;
pub use exec::ExecProvider;
pub use none::NoneProvider;
pub use qcow2::{parse_list as parse_qcow2_list, Qcow2Provider, Qcow2Snapshot};
pub use threepar::{ArrayClient, ThreeParProvider, WsapiError};

use recman_config::ProviderConfig;

/// Object-safe: the runtime holds `Arc<dyn Provider>` per target.
pub trait Provider: Send + Sync {
    /// `copy`, `exec`, `none`, …
    fn kind(&self) -> &'static str;
    /// Takes snapshot `name` of `target`. Idempotent: when `name` already
    /// exists, succeeds with `existed: true` and takes nothing.
    fn snapshot<'a>(
        &'a self,
        name: &'a str,
        target: &'a TargetId,
        kind: SnapshotKind,
    ) -> BoxFuture<'a, Result<SnapshotInfo, StepError>>;
    /// Deletes snapshot `name`; `Ok(false)` when it was not there.
    fn delete<'a>(&'a self, name: &'a str, target: &'a TargetId) -> BoxFuture<'a, Result<bool, StepError>>;
    /// Names of the snapshots this provider holds, oldest name first when
    /// the provider cannot tell (sorted).
    fn list<'a>(&'a self, target: &'a TargetId) -> BoxFuture<'a, Result<Vec<String>, StepError>>;
    /// `snapshot` with the job it belongs to (the runtime calls this one);
    /// providers that record the job (the `3par` comment) override it.
    fn snapshot_job<'a>(&'a self, req: SnapshotJob<'a>) -> BoxFuture<'a, Result<SnapshotInfo, StepError>> {
        self.snapshot(req.name, req.target, req.kind)
    }
    /// Called once when the worker stops (log out of sessions, …).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// What the storage holds under `name` for `target`: nothing, the
    /// snapshot of a known job attempt (its marker, the 3PAR comment), or
    /// something recman did not take for one (never adopted). The runtime
    /// asks before a snapshot, so a snapshot redelivered after a worker
    /// crash reports the one it took instead of failing or cutting a second.
    /// Providers that keep no record (`none`, `exec`) say `Absent`: their
    /// `snapshot` must be idempotent by itself.
    fn lookup<'a>(
        &'a self,
        _name: &'a str,
        _target: &'a TargetId,
    ) -> BoxFuture<'a, Result<recman_core::worker::Existing, StepError>> {
        Box::pin(async { Ok(recman_core::worker::Existing::Absent) })
    }
    /// Called once when the worker starts: removes what snapshots
    /// interrupted by a crash left behind (never a live process's work in
    /// progress); returns what it removed, for the log.
    fn cleanup(&self) -> BoxFuture<'_, Result<Vec<String>, StepError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// Recovery: brings restore point `req.point` back as `req.action`
    /// says, and returns where the data now is.
    /// - in place: the live data becomes the restore point's. What it was is
    ///   moved aside first and dropped once the restore point is in place,
    ///   so a crash in between leaves something `rollback` can put back (and
    ///   after it, the safety snapshot holds the state before);
    /// - to `path`: a new copy at `path` (which must not exist), made under
    ///   a temporary name and renamed into place, so it is complete or absent;
    /// - clone `name`: a writable, independent copy the provider places
    ///   (beside its snapshots), kept until `unmount` removes it.
    ///
    /// Idempotent: a redelivered command after a crash finishes the work or
    /// finds it done, and reports the same location.
    fn restore<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<String, StepError>> {
        Box::pin(async move { Err(provider_not_supported(self.kind(), "restore", req.target)) })
    }
    /// Undoes an in-place `restore` that failed or was interrupted, or that
    /// finished after the engine gave up on it: the live data goes back to
    /// what it was (the copy kept aside, when there is one; otherwise
    /// `req.safety`, the safety snapshot, which holds it). Idempotent.
    fn rollback<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<String, StepError>> {
        Box::pin(async move {
            Err(provider_not_supported(
                self.kind(),
                "roll back a restore",
                req.target,
            ))
        })
    }
    /// Exposes restore point `req.point` on this host (read-only unless the
    /// action says `writable`, which works on a copy); returns the mount
    /// point (or image path). Idempotent.
    fn mount<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<String, StepError>> {
        Box::pin(async move { Err(provider_not_supported(self.kind(), "mount", req.target)) })
    }
    /// Takes away the mount or removes the clone at `req.location`.
    /// Idempotent (a location already gone succeeds).
    fn unmount<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move { Err(provider_not_supported(self.kind(), "unmount", req.target)) })
    }
}

/// One recovery step as a provider sees it.
#[derive(Clone, Copy, Debug)]
pub struct RecoveryJob<'a> {
    /// The restore point.
    pub point: &'a str,
    pub target: &'a TargetId,
    pub action: &'a recman_events::RecoveryAction,
    /// In place: the safety snapshot's name.
    pub safety: Option<&'a str>,
    /// Unmount: where the mount or the clone is.
    pub location: Option<&'a str>,
    /// The recovery job (names its temporary and aside paths).
    pub job: JobId,
}

/// The refusal of a recovery step a provider cannot do.
pub fn provider_not_supported(kind: &str, what: &str, target: &TargetId) -> StepError {
    StepError::new(
        "not_supported",
        format!("target {target}: the {kind} provider cannot {what} (see README, \"Restore\")"),
        false,
    )
}

/// One snapshot step as the runtime sees it.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotJob<'a> {
    pub name: &'a str,
    pub target: &'a TargetId,
    pub kind: SnapshotKind,
    /// Job id and attempt, when the step comes from a job.
    pub job: Option<(JobId, u32)>,
}

/// The provider a target's config asks for.
pub fn from_config(cfg: &ProviderConfig) -> Arc<dyn Provider> {
    match cfg {
        ProviderConfig::None => Arc::new(NoneProvider),
        ProviderConfig::Copy(c) => Arc::new(CopyProvider::new(c.source.clone(), c.dest.clone())),
        ProviderConfig::Exec(e) => Arc::new(ExecProvider::new(e.clone())),
        ProviderConfig::ThreePar(c) => Arc::new(ThreeParProvider::new(c.clone())),
        ProviderConfig::Btrfs(b) => Arc::new(BtrfsProvider::new(b.subvolume.clone(), b.dest.clone())),
        ProviderConfig::Qcow2(q) => Arc::new(Qcow2Provider::new(q.clone())),
    }
}

/// Longest accepted snapshot name.
pub const MAX_SNAPSHOT_NAME: usize = 128;

/// Snapshot names come from messages and become path components and
/// arguments: only `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn check_snapshot_name(name: &str) -> Result<(), StepError> {
    let bad = |why: &str| {
        Err(StepError::new(
            "invalid_snapshot_name",
            format!("snapshot name {name:?} refused: {why}"),
            false,
        ))
    };
    if name.is_empty() || name.len() > MAX_SNAPSHOT_NAME {
        return bad("must be 1 to 128 characters");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("must not start with '.' or '-'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_cannot_escape() {
        assert!(check_snapshot_name("rm-0123abcd-a1").is_ok());
        for bad in ["", "..", "../etc", "a/b", ".hidden", "-rf", "a b", "x\0"] {
            assert!(check_snapshot_name(bad).is_err(), "{bad:?}");
        }
    }
}
