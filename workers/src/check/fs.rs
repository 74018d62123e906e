//! Preflight checks on the local machine: programs that must be executable,
//! filesystems that must (not) be frozen, directories on the right
//! filesystem with room for a snapshot. Read-only: stat, statfs, access.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::Finding;

/// Below this much free space a snapshot or a label fails.
pub const MIN_FREE: u64 = 64 << 20;
/// Below this share of free space a copy-on-write snapshot soon fills the filesystem.
pub const LOW_FREE_PERCENT: u64 = 10;
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

/// `path` itself or its closest existing ancestor.
pub fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
    p
}

fn cstr(p: &Path) -> Option<CString> {
    CString::new(p.as_os_str().as_bytes()).ok()
}

/// (filesystem type, bytes available to unprivileged users, total bytes).
pub fn statfs(p: &Path) -> std::io::Result<(i64, u64, u64)> {
    let c = cstr(p).ok_or_else(|| std::io::Error::other("path with a NUL byte"))?;
    // SAFETY: `c` is a valid C string; `s` is written by the kernel.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let bs = s.f_bsize as u64;
    #[allow(clippy::unnecessary_cast)]
    Ok((s.f_type as i64, s.f_bavail as u64 * bs, s.f_blocks as u64 * bs))
}

fn writable(p: &Path) -> bool {
    // SAFETY: a valid C string.
    cstr(p).is_some_and(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0)
}

fn executable_file(p: &Path) -> bool {
    p.is_file() && cstr(p).is_some_and(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0)
}

/// Where `prog` resolves: a path as is, a bare name through `PATH`.
pub fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return executable_file(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| executable_file(p))
}

/// The program of `argv` (a hook `what`) exists and may be executed.
pub fn program(subject: &'static str, what: &str, argv: &[String]) -> Finding {
    let Some(prog) = argv.first() else {
        return Finding::fail(subject, format!("{what}: empty command"));
    };
    match which(prog) {
        Some(p) => Finding::ok(subject, format!("{what}: {} is executable", p.display())),
        None => Finding::fail(
            subject,
            format!(
                "{what}: {prog} is not an executable file{}",
                if prog.contains('/') { "" } else { " in PATH" }
            ),
        ),
    }
}

/// `path` (`key` of the config) exists.
pub fn exists(subject: &'static str, path: &Path, key: &str) -> Finding {
    if path.exists() {
        Finding::ok(subject, format!("{key} {} exists", path.display()))
    } else {
        Finding::fail(subject, format!("{key} {} does not exist", path.display()))
    }
}

/// The free space finding for `path`'s filesystem, needing `need` bytes.
pub fn room(subject: &'static str, key: &str, path: &Path, need: u64) -> Finding {
    let at = nearest_existing(path);
    match statfs(&at) {
        Err(e) => Finding::fail(subject, format!("{key} {}: statfs: {e}", at.display())),
        Ok((_, avail, total)) => {
            let need = need.max(MIN_FREE);
            let msg = format!(
                "{key} {}: {} free of {}",
                path.display(),
                human(avail),
                human(total)
            );
            if avail < need {
                Finding::fail(subject, format!("{msg}, needs at least {}", human(need)))
            } else if total > 0 && avail * 100 < total * LOW_FREE_PERCENT {
                Finding::warn(subject, format!("{msg} (under {LOW_FREE_PERCENT} %)"))
            } else {
                Finding::ok(subject, msg)
            }
        }
    }
}

/// A directory recman writes into (`key`): it exists, or its closest
/// existing ancestor lets this user create it; with room.
pub fn writable_dir(subject: &'static str, key: &str, path: &Path) -> Vec<Finding> {
    let at = nearest_existing(path);
    let first = if path.exists() && !path.is_dir() {
        Finding::fail(subject, format!("{key} {} is not a directory", path.display()))
    } else if !writable(&at) {
        Finding::fail(
            subject,
            format!(
                "{key} {}: {} is not writable by this user",
                path.display(),
                at.display()
            ),
        )
    } else if at == path {
        Finding::ok(
            subject,
            format!("{key} {} is a writable directory", path.display()),
        )
    } else {
        Finding::ok(
            subject,
            format!("{key} {} will be created in {}", path.display(), at.display()),
        )
    };
    vec![first, room(subject, key, path, 0)]
}

/// The mount that holds `path` (canonical): its mountpoint and source, from
/// `/proc/self/mountinfo` (the longest mountpoint that is a prefix).
pub fn mount_of(path: &Path) -> Option<(PathBuf, String)> {
    let canon = std::fs::canonicalize(nearest_existing(path)).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let mp = PathBuf::from(crate::writer::unescape_mountinfo(f.nth(4)?));
            let source = l.split(" - ").nth(1)?.split(' ').nth(1)?.to_string();
            canon.starts_with(&mp).then_some((mp, source))
        })
        .max_by_key(|(mp, _)| mp.as_os_str().len())
}

/// A `fsfreeze` mountpoint: a mount, not the root filesystem, not the
/// filesystem of the event log (`data_dir`) nor of the freeze markers.
pub fn freezable(mountpoint: &Path, state_dir: &Path, data_dir: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    match crate::writer::check_mountpoint(mountpoint) {
        Ok(()) => out.push(Finding::ok(
            "fsfreeze",
            format!("{} is a mountpoint", mountpoint.display()),
        )),
        Err(e) => {
            out.push(Finding::fail("fsfreeze", e.message));
            return out;
        }
    }
    let dev = |p: &Path| std::fs::metadata(nearest_existing(p)).map(|m| m.dev()).ok();
    let frozen = dev(mountpoint);
    for (key, p, why) in [
        ("data_dir", data_dir, "the event log would block while frozen"),
        (
            "state_dir",
            state_dir,
            "the freeze marker could not be removed while frozen",
        ),
    ] {
        if frozen.is_some() && dev(p) == frozen {
            out.push(Finding::fail(
                "fsfreeze",
                format!(
                    "{key} {} is on the filesystem {} freezes: {why}",
                    p.display(),
                    mountpoint.display()
                ),
            ));
        }
    }
    out
}

/// `copy`: the source exists and the destination has room for a full copy.
pub fn copy_room(source: &Path, dest: &Path) -> Vec<Finding> {
    if !source.is_dir() {
        return vec![Finding::fail(
            "copy",
            format!("source {} is not a directory", source.display()),
        )];
    }
    let mut out = writable_dir("copy", "dest", dest);
    let size = du(source);
    out.push(room("copy", "dest (one full copy of the source)", dest, size));
    out
}

/// Bytes allocated under `dir` (its files' blocks).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// `btrfs`: the subvolume is a btrfs subvolume and `dest` is on the same
/// btrfs filesystem (a snapshot cannot cross filesystems), with room.
pub fn btrfs_room(subvolume: &Path, dest: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    match (statfs(subvolume), std::fs::metadata(subvolume)) {
        (Ok((t, _, _)), Ok(m)) if t == BTRFS_SUPER_MAGIC && m.ino() == 256 => out.push(Finding::ok(
            "btrfs",
            format!("{} is a btrfs subvolume", subvolume.display()),
        )),
        (Ok((t, _, _)), Ok(_)) if t == BTRFS_SUPER_MAGIC => out.push(Finding::fail(
            "btrfs",
            format!(
                "{} is a directory on btrfs, not a subvolume (btrfs subvolume create)",
                subvolume.display()
            ),
        )),
        (Ok(_), Ok(_)) => out.push(Finding::fail(
            "btrfs",
            format!("{} is not on btrfs", subvolume.display()),
        )),
        (Err(e), _) | (_, Err(e)) => out.push(Finding::fail(
            "btrfs",
            format!("subvolume {}: {e}", subvolume.display()),
        )),
    }
    let (a, b) = (mount_of(subvolume), mount_of(dest));
    match (&a, &b) {
        (Some((_, sa)), Some((_, sb))) if sa == sb => out.push(Finding::ok(
            "btrfs",
            format!("dest {} is on the same filesystem ({sa})", dest.display()),
        )),
        (Some((_, sa)), Some((_, sb))) => out.push(Finding::fail(
            "btrfs",
            format!(
                "dest {} is on {sb}, the subvolume on {sa}: a btrfs snapshot cannot cross filesystems",
                dest.display()
            ),
        )),
        _ => out.push(Finding::warn(
            "btrfs",
            "could not find the mounts of subvolume and dest",
        )),
    }
    out.extend(writable_dir("btrfs", "dest", dest));
    out
}

fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Level;

    #[test]
    fn programs_are_found_in_path_or_by_path() {
        assert_eq!(program("exec", "freeze", &["sh".into()]).level, Level::Ok);
        assert_eq!(
            program("exec", "freeze", &["/bin/sh".into(), "-c".into()]).level,
            Level::Ok
        );
        let f = program("exec", "thaw", &["no-such-program-recman".into()]);
        assert!(f.level == Level::Fail && f.message.contains("in PATH"), "{f:?}");
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("hook");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        let f = program("exec", "create", &[p.display().to_string()]);
        assert_eq!(f.level, Level::Fail, "not executable: {f:?}");
    }

    #[test]
    fn directories_are_checked_for_room_and_rights() {
        let t = tempfile::tempdir().unwrap();
        let f = writable_dir("postgres", "label_dir", &t.path().join("a/b"));
        assert_eq!(f[0].level, Level::Ok, "{f:?}");
        assert!(f[0].message.contains("will be created"), "{f:?}");
        let file = t.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(writable_dir("postgres", "label_dir", &file)[0].level, Level::Fail);
        let r = room("copy", "dest", t.path(), u64::MAX / 2);
        assert!(
            r.level == Level::Fail && r.message.contains("needs at least"),
            "{r:?}"
        );
        assert_eq!(human(3 << 30), "3.0 GiB");
    }

    #[test]
    fn a_mount_is_found_for_any_path() {
        let (mp, source) = mount_of(Path::new("/proc/self")).unwrap();
        assert_eq!(mp, Path::new("/proc"));
        assert!(!source.is_empty());
        let f = freezable(
            Path::new("/"),
            Path::new("/run/recman"),
            Path::new("/var/lib/recman"),
        );
        assert_eq!(f[0].level, Level::Fail, "the root filesystem: {f:?}");
    }
}
