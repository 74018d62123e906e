//! Verifiers: prove a restore point restores, off the freeze window (issue
//! 15). The engine sends a `verify` command (`Stage::Verify`, the snapshot's
//! name, a deadline) to the target's verify pool; the runtime
//! (`runtime::steps`) calls [`verify`] under the target's verify lock.
//!
//! - `checksum` (`copy`, `btrfs`): the snapshot against its manifest (size
//!   and BLAKE3 of every file, see `manifest`); the first bad file is named.
//! - `qemu-img` (`qcow2`): the snapshot's tag is in the image and
//!   `qemu-img check` finds no errors (`--force-share`: the VM may run).
//! - `postgres` (`copy`, `btrfs`): a throw-away PostgreSQL on a writable
//!   clone recovers, `pg_amcheck --all` passes, the configured queries run
//!   (see `postgres`); the relation pg_amcheck complains about is named.
//! - `exec`: an argv hook with `RECMAN_TARGET`, `RECMAN_SNAPSHOT`,
//!   `RECMAN_SNAPSHOT_LOCATION` in a clean environment; exit 0 = verified.
//!
//! Children run in their own process group and die with the worker
//! (`exec::run`); what a dead worker leaves on disk (manifest temp files)
//! and the `postgres` verifier's clones (and a PostgreSQL still running on
//! one) are removed by [`cleanup`] when the worker starts.

pub mod manifest;
pub mod postgres;

use std::path::PathBuf;
use std::time::Duration;

use recman_config::{ProviderConfig, TargetConfig, VerifyConfig, VerifyKind};
use recman_events::StepError;

/// Where snapshot `name` of the target is: a directory (copy, btrfs), and
/// the location a hook is told.
fn location(cfg: &TargetConfig, name: &str) -> (Option<(PathBuf, PathBuf)>, String) {
    match &cfg.provider {
        ProviderConfig::Copy(c) => {
            let d = c.dest.join(name);
            let s = d.display().to_string();
            (Some((c.dest.clone(), d)), s)
        }
        ProviderConfig::Btrfs(b) => {
            let d = b.dest.join(name);
            let s = d.display().to_string();
            (Some((b.dest.clone(), d)), s)
        }
        ProviderConfig::Qcow2(q) => (None, format!("{}@{name}", q.image.display())),
        _ => (None, name.to_string()),
    }
}

/// Verifies snapshot `name` of `cfg`'s target within `budget`; returns what
/// was checked.
pub async fn verify(
    cfg: &TargetConfig,
    v: &VerifyConfig,
    name: &str,
    budget: Duration,
) -> Result<String, StepError> {
    crate::provider::check_snapshot_name(name)?;
    let timeout = |what: &str| {
        StepError::new(
            "timeout",
            format!("{what} of {name} did not finish within {budget:?}: stopped"),
            true,
        )
    };
    match &v.kind {
        VerifyKind::Checksum => {
            let (Some((dest, dir)), _) = location(cfg, name) else {
                return Err(StepError::new(
                    "verify_unsupported",
                    format!(
                        "checksum verifies copy and btrfs snapshots; {} uses the {} provider",
                        cfg.id,
                        cfg.provider.kind()
                    ),
                    false,
                ));
            };
            let name = name.to_string();
            let work = crate::blocking("checksum", move || checksum(&dest, &dir, &name));
            tokio::time::timeout(budget, work)
                .await
                .map_err(|_| timeout("checksum"))?
        }
        VerifyKind::QemuImg => {
            let ProviderConfig::Qcow2(q) = &cfg.provider else {
                return Err(StepError::new(
                    "verify_unsupported",
                    format!(
                        "qemu-img verifies qcow2 snapshots; {} uses the {} provider",
                        cfg.id,
                        cfg.provider.kind()
                    ),
                    false,
                ));
            };
            let image = q.image.display().to_string();
            let argv = |args: &[&str]| -> Vec<String> {
                std::iter::once(q.qemu_img.clone())
                    .chain(args.iter().map(|s| s.to_string()))
                    .collect()
            };
            let list = crate::exec::run(&argv(&["snapshot", "-l", "-U", &image]), &[], budget).await?;
            let tags = crate::provider::parse_qcow2_list(&list.stdout);
            if !tags.iter().any(|s| s.tag == name) {
                return Err(StepError::new(
                    "snapshot_missing",
                    format!("{image} has no internal snapshot {name}"),
                    false,
                ));
            }
            match crate::exec::run(&argv(&["check", "-U", &image]), &[], budget).await {
                Ok(out) => Ok(format!(
                    "qemu-img check {image}: {}",
                    out.stdout.lines().last().unwrap_or("no errors").trim()
                )),
                Err(e) => Err(StepError::new(
                    "image_corrupt",
                    format!(
                        "qemu-img check of {image} (snapshot {name}) failed: {}",
                        e.message
                    ),
                    false,
                )),
            }
        }
        VerifyKind::Postgres(p) => {
            let (kind, dest) = match &cfg.provider {
                ProviderConfig::Copy(c) => (postgres::CloneKind::Copy, &c.dest),
                ProviderConfig::Btrfs(b) => (postgres::CloneKind::Btrfs, &b.dest),
                other => {
                    return Err(StepError::new(
                        "verify_unsupported",
                        format!(
                            "the postgres verifier clones copy and btrfs snapshots; {} uses the {} provider \
                             (use an exec verifier for it)",
                            cfg.id,
                            other.kind()
                        ),
                        false,
                    ))
                }
            };
            let snap = dest.join(name);
            postgres::verify(cfg, p, kind, dest, &snap, name, budget).await
        }
        VerifyKind::Exec { command } => {
            let (_, loc) = location(cfg, name);
            let env = [
                ("RECMAN_TARGET", cfg.id.to_string()),
                ("RECMAN_SNAPSHOT", name.to_string()),
                ("RECMAN_SNAPSHOT_LOCATION", loc),
            ];
            let out = crate::exec::run(command, &env, budget).await?;
            let said = out.stdout.lines().last().unwrap_or("").trim().to_string();
            Ok(if said.is_empty() {
                format!("{} exited 0", command[0])
            } else {
                crate::exec::tail(&said)
            })
        }
    }
}

/// Blocking: seals the snapshot (first run) or compares it with its manifest.
fn checksum(dest: &std::path::Path, dir: &std::path::Path, name: &str) -> Result<String, StepError> {
    if !dir.is_dir() {
        return Err(StepError::new(
            "snapshot_missing",
            format!("{} is not there (deleted?)", dir.display()),
            false,
        ));
    }
    match manifest::load(dest, name)? {
        Some(m) => {
            manifest::compare(dir, &m)?;
            Ok(format!(
                "{} files, {} bytes match the manifest (BLAKE3)",
                m.files.len(),
                m.bytes()
            ))
        }
        None => {
            let m = manifest::build(dir)?;
            manifest::store(dest, name, &m)?;
            Ok(format!(
                "sealed: {} files, {} bytes read, manifest written (BLAKE3)",
                m.files.len(),
                m.bytes()
            ))
        }
    }
}

/// On start: what dead verifications of this target left behind.
pub fn cleanup(cfg: &TargetConfig) -> Vec<String> {
    let dest = match &cfg.provider {
        ProviderConfig::Copy(c) => &c.dest,
        ProviderConfig::Btrfs(b) => &b.dest,
        _ => return Vec::new(),
    };
    let mut removed = manifest::cleanup(dest);
    if let Some(VerifyConfig {
        kind: VerifyKind::Postgres(p),
        ..
    }) = &cfg.verify
    {
        removed.extend(postgres::cleanup(dest, &p.data_dir));
    }
    removed
}
