//! The preflight of `recman check` (also run by `validate-config --check`
//! and as warnings when `recman up` starts): per target, what would make its
//! writer or provider fail, found before any freeze. It touches nothing: it
//! connects, reads and asks, never freezes, snapshots, writes or deletes.
//!
//! Entry point: [`target`]. The checks of each kind live beside it
//! (`writer/postgres/check.rs`, `provider/threepar/check.rs`) or here
//! (`fs.rs`: mountpoints, filesystems, free space, executables).

pub mod fs;

use std::fmt;
use std::path::Path;

use recman_config::{ProviderConfig, TargetConfig, WriterConfig};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    /// Works, but probably not as intended (e.g. nothing archived yet).
    Warn,
    /// The target's jobs would fail, or their snapshots could not be restored.
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: `recman check` aligns its columns with `{:<4}`.
        f.pad(match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        })
    }
}

/// One thing checked and what was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// What was checked: `postgres`, `btrfs`, `fsfreeze`, `3par`, …
    pub subject: &'static str,
    pub message: String,
}

impl Finding {
    pub fn ok(subject: &'static str, message: impl Into<String>) -> Self {
        Finding {
            level: Level::Ok,
            subject,
            message: message.into(),
        }
    }
    pub fn warn(subject: &'static str, message: impl Into<String>) -> Self {
        Finding {
            level: Level::Warn,
            subject,
            message: message.into(),
        }
    }
    pub fn fail(subject: &'static str, message: impl Into<String>) -> Self {
        Finding {
            level: Level::Fail,
            subject,
            message: message.into(),
        }
    }
}

/// Every check of `t`'s writer and provider; `log_dir` holds the event log
/// (its filesystem must never be frozen).
pub async fn target(log_dir: &Path, t: &TargetConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let data_dir = log_dir;
    match &t.writer {
        WriterConfig::None => {}
        WriterConfig::Exec(e) => {
            for (what, argv) in [
                ("freeze", Some(&e.freeze)),
                ("thaw", Some(&e.thaw)),
                ("flush", e.flush.as_ref()),
            ] {
                if let Some(argv) = argv {
                    out.push(fs::program("exec", what, argv));
                }
            }
        }
        WriterConfig::FsFreeze(f) => out.extend(fs::freezable(&f.mountpoint, &f.state_dir, data_dir)),
        WriterConfig::Postgres(p) => {
            out.extend(crate::writer::postgres::check::run(t.id.as_str(), p).await);
            if let Some(f) = &p.fsfreeze {
                out.extend(fs::freezable(&f.mountpoint, &f.state_dir, data_dir));
            }
        }
    }
    match &t.provider {
        ProviderConfig::None => {}
        ProviderConfig::Copy(c) => out.extend(fs::copy_room(&c.source, &c.dest)),
        ProviderConfig::Exec(e) => {
            out.push(fs::program("exec", "create", &e.create));
            if let Some(d) = &e.delete {
                out.push(fs::program("exec", "delete", d));
            }
        }
        ProviderConfig::Btrfs(b) => out.extend(fs::btrfs_room(&b.subvolume, &b.dest)),
        ProviderConfig::Qcow2(q) => {
            out.push(fs::exists("qcow2", &q.image, "image"));
            out.push(fs::program(
                "qcow2",
                "qemu_img",
                std::slice::from_ref(&q.qemu_img),
            ));
        }
        ProviderConfig::ThreePar(c) => out.extend(crate::provider::threepar::check::run(c).await),
    }
    out
}

/// The worst level of `findings` (`Ok` when empty).
pub fn worst(findings: &[Finding]) -> Level {
    findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok)
}
