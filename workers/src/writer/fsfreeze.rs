//! The `fsfreeze` writer: `FIFREEZE`/`FITHAW` ioctls on a mounted filesystem.
//! Which job froze it is in the host's freeze state (the worker runtime's
//! `hoststate`, never on the frozen filesystem); on start, a filesystem that
//! no worker process of the host holds but is frozen all the same is thawed.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use recman_events::bus::BoxFuture;
use recman_events::StepError;

use super::{StartupThaw, StepCtx, Writer};
use recman_config::FsFreezeConfig;

/// `_IOWR('X', 119, int)` from `<linux/fs.h>` (the same on every Linux arch
/// with the generic ioctl encoding: x86, arm, riscv, …).
const FIFREEZE: u32 = 0xC004_5877;
/// `_IOWR('X', 120, int)`.
const FITHAW: u32 = 0xC004_5878;

#[derive(Clone, Debug)]
pub struct FsFreezeWriter {
    cfg: FsFreezeConfig,
    target: String,
}

impl FsFreezeWriter {
    pub fn new(target: &str, cfg: FsFreezeConfig) -> Self {
        FsFreezeWriter {
            cfg,
            target: target.to_string(),
        }
    }

    pub fn mountpoint(&self) -> &Path {
        &self.cfg.mountpoint
    }

    /// Blocking: `FIFREEZE` on the mountpoint (after checking it is one).
    pub fn freeze_blocking(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let mp = &self.cfg.mountpoint;
        check_mountpoint(mp)?;
        tracing::debug!(target = %self.target, job = %ctx.job, attempt = ctx.attempt, mountpoint = %mp.display(), "FIFREEZE");
        match ioctl(mp, FIFREEZE) {
            Ok(()) => Ok(()),
            Err(e) => {
                Err(match e.raw_os_error() {
                    Some(libc::EBUSY) => StepError::new(
                        "already_frozen",
                        format!(
                            "{} is already frozen by someone else (FIFREEZE: EBUSY); thaw it with `fsfreeze -u {}` once you know who froze it",
                            mp.display(),
                            mp.display()
                        ),
                        true,
                    ),
                    Some(libc::EOPNOTSUPP) => StepError::new(
                        "not_supported",
                        format!("the filesystem mounted on {} cannot be frozen", mp.display()),
                        false,
                    ),
                    Some(libc::EPERM) => StepError::new(
                        "permission_denied",
                        format!("freezing {} needs CAP_SYS_ADMIN (run the worker as root)", mp.display()),
                        false,
                    ),
                    _ => io_err("freezing", mp, e),
                })
            }
        }
    }

    /// Blocking: `FITHAW`; `Ok(true)` when it was frozen, `Ok(false)` when it
    /// was not (EINVAL: thaw is idempotent).
    pub fn thaw_blocking(&self) -> Result<bool, StepError> {
        let mp = &self.cfg.mountpoint;
        match ioctl(mp, FITHAW) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(io_err("thawing", mp, e)),
        }
    }
}

/// Refuses a path that is not the root of a mount: freezing a directory of
/// the root filesystem because its own filesystem is not mounted would hang
/// the whole host.
pub fn check_mountpoint(mp: &Path) -> Result<(), StepError> {
    let canon = fs::canonicalize(mp).map_err(|e| io_err("resolving", mp, e))?;
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| io_err("reading", Path::new("/proc/self/mountinfo"), e))?;
    if canon == Path::new("/") {
        return Err(StepError::new(
            "refused",
            "refusing to freeze the root filesystem: the worker itself would hang",
            false,
        ));
    }
    if mountinfo_has(&info, &canon) {
        // By device, not by path: a bind mount of `/` elsewhere is the root
        // filesystem too (issue 12 item 7).
        let dev = |p: &Path| fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        let root_dev = dev(Path::new("/")).map_err(|e| io_err("reading", Path::new("/"), e))?;
        if dev(&canon).map_err(|e| io_err("reading", mp, e))? == root_dev {
            return Err(StepError::new(
                "refused",
                format!(
                    "refusing to freeze {}: it is the root filesystem (same device as /, a bind mount?), \
                     and the worker itself would hang",
                    mp.display()
                ),
                false,
            ));
        }
        Ok(())
    } else {
        Err(StepError::new(
            "not_a_mountpoint",
            format!(
                "{} is not a mountpoint (is its filesystem mounted?); refusing to freeze the filesystem that holds it",
                mp.display()
            ),
            false,
        ))
    }
}

/// Whether `/proc/self/mountinfo` text lists `path` as a mount point.
pub fn mountinfo_has(info: &str, path: &Path) -> bool {
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(&unescape(m)) == path)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ioctl(mp: &Path, req: u32) -> io::Result<()> {
    let f = fs::File::open(mp)?;
    // SAFETY: a valid open descriptor; FIFREEZE/FITHAW take an (ignored) int.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn io_err(what: &str, path: &Path, e: io::Error) -> StepError {
    StepError::new("io_error", format!("{what} {}: {e}", path.display()), true)
}

impl Writer for FsFreezeWriter {
    fn kind(&self) -> &'static str {
        "fsfreeze"
    }
    fn freeze<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        let me = self.clone();
        let ctx = ctx.clone();
        Box::pin(crate::blocking("fsfreeze", move || me.freeze_blocking(&ctx)))
    }
    fn thaw<'a>(&'a self, _: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        let me = self.clone();
        Box::pin(async move {
            crate::blocking("fsfreeze", move || me.thaw_blocking())
                .await
                .map(|_| ())
        })
    }
    fn flush_logs<'a>(&'a self, _: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async { Ok(()) })
    }
    fn stop<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            Err(StepError::new(
                "not_supported",
                format!(
                    "target {}: the fsfreeze writer freezes a filesystem but does not know the \
                     application that writes to it, so it cannot stop it for an in-place restore; \
                     use the exec writer with stop/start hooks for this target, or restore beside \
                     production with --to",
                    ctx.target
                ),
                false,
            ))
        })
    }
    fn start<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        // Nothing was stopped (stop refuses), so there is nothing to start.
        let _ = ctx;
        Box::pin(async { Ok(()) })
    }
    fn startup_thaw(&self) -> BoxFuture<'_, Result<Option<StartupThaw>, StepError>> {
        let me = self.clone();
        Box::pin(crate::blocking("fsfreeze", move || {
            Ok(me.thaw_blocking()?.then(|| StartupThaw {
                what: me.cfg.mountpoint.display().to_string(),
            }))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_is_refused_with_what_to_do_instead() {
        let w = FsFreezeWriter::new(
            "fs",
            FsFreezeConfig {
                mountpoint: "/nonexistent".into(),
                state_dir: "/nonexistent-state".into(),
            },
        );
        let ctx = StepCtx {
            target: recman_events::TargetId::from("fs"),
            job: recman_events::JobId::from_parts(1, 1),
            attempt: 1,
            kind: recman_events::SnapshotKind::Copy,
        };
        let e = w.stop(&ctx).await.unwrap_err();
        assert_eq!(e.code, "not_supported");
        assert!(
            e.message.contains("exec writer") && e.message.contains("--to"),
            "{}",
            e.message
        );
        w.start(&ctx).await.unwrap();
    }

    #[test]
    fn mountinfo_lookup_unescapes_and_matches_whole_paths() {
        let info = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    40 22 7:0 / /mnt/my\\040data rw - ext4 /dev/loop0 rw\n\
                    41 22 7:1 / /srv rw - btrfs /dev/loop1 rw\n";
        assert!(mountinfo_has(info, Path::new("/mnt/my data")));
        assert!(mountinfo_has(info, Path::new("/srv")));
        assert!(!mountinfo_has(info, Path::new("/srv/sub")));
        assert!(!mountinfo_has(info, Path::new("/mnt")));
    }

    #[test]
    fn a_plain_directory_is_refused_and_nothing_is_frozen() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_mountpoint(dir.path()).unwrap_err();
        assert_eq!(e.code, "not_a_mountpoint", "{e:?}");
        assert!(check_mountpoint(Path::new("/")).is_err());
    }

    /// A bind mount of `/` is a mountpoint by path but the root filesystem
    /// by device: refused, never frozen (issue 12 item 7).
    #[test]
    fn a_bind_mount_of_the_root_filesystem_is_refused() {
        if !recman_testkit::need_root("bind-mounting / to check the device comparison") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("root-again");
        std::fs::create_dir(&mnt).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["--bind", "/"])
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount --bind / {} failed", mnt.display());
        let result = check_mountpoint(&mnt);
        let _ = std::process::Command::new("umount").arg(&mnt).status();
        let e = result.expect_err("a bind mount of / must be refused");
        println!("{}: {}", e.code, e.message);
        assert_eq!(e.code, "refused", "{e:?}");
        assert!(e.message.contains("same device as /"), "{e:?}");
    }
}
