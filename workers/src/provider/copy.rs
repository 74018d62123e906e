//! The `copy` provider: a point-in-time copy of a directory into
//! `dest/<name>`. Files are reflinked (`FICLONE`) where the filesystem can,
//! copied otherwise; symlinks, directories and permissions are kept. The copy
//! is built in a hidden `.partial` directory, synced, then renamed, so a
//! crashed copy never looks complete.
//!
//! Recovery (restore in place or to a path, clone, mount, unmount) is
//! `trees.rs`'s procedure over plain directory copies; its module comment
//! names every path it makes beside `source` and under `dest`.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use recman_core::worker::Existing;
use recman_events::{JobId, SnapshotInfo, StepError};

use super::{check_snapshot_name, owner};

#[derive(Clone, Debug)]
pub struct CopyProvider {
    source: PathBuf,
    dest: PathBuf,
}

impl CopyProvider {
    pub fn new(source: PathBuf, dest: PathBuf) -> Self {
        CopyProvider { source, dest }
    }

    /// Blocking: the whole snapshot. Returns the info for `dest/<name>`.
    pub fn snapshot_blocking(&self, name: &str) -> Result<SnapshotInfo, StepError> {
        self.snapshot_owned_blocking(name, None)
    }

    /// Blocking: what `dest/<name>` is (its owner marker).
    pub fn lookup_blocking(&self, name: &str) -> Result<Existing, StepError> {
        check_snapshot_name(name)?;
        Ok(owner::lookup(&self.dest, name, self.dest.join(name).is_dir()))
    }

    /// Blocking: the snapshot, its owner (job, attempt) recorded first.
    pub fn snapshot_owned_blocking(
        &self,
        name: &str,
        job: Option<(JobId, u32)>,
    ) -> Result<SnapshotInfo, StepError> {
        check_snapshot_name(name)?;
        let fin = self.dest.join(name);
        let info = |size, existed| SnapshotInfo {
            name: name.to_string(),
            provider: "copy".into(),
            location: fin.display().to_string(),
            size_bytes: Some(size),
            existed,
            array_expiry: None,
        };
        if fin.is_dir() {
            return Ok(info(
                tree_size(&fin).map_err(|e| io_err("measuring", &fin, e))?,
                true,
            ));
        }
        if !self.source.is_dir() {
            return Err(StepError::new(
                "source_missing",
                format!("source {} is not a directory", self.source.display()),
                false,
            ));
        }
        fs::create_dir_all(&self.dest).map_err(|e| io_err("creating", &self.dest, e))?;
        // Unique per attempt, so two concurrent deliveries never share one.
        let partial = self
            .dest
            .join(format!(".{name}.partial.{}.{}", std::process::id(), unique()));
        let result = copy_tree(&self.source, &partial).and_then(|size| {
            sync_dir(&partial)?;
            Ok(size)
        });
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                let _ = fs::remove_dir_all(&partial);
                return Err(io_err("copying into", &partial, e));
            }
        };
        if let Err(e) = owner::write(&self.dest, name, job) {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
        match fs::rename(&partial, &fin) {
            Ok(()) => {
                sync_dir(&self.dest).map_err(|e| io_err("syncing", &self.dest, e))?;
                Ok(info(size, false))
            }
            // Someone else finished the same snapshot first: theirs stands.
            Err(_) if fin.is_dir() => {
                let _ = fs::remove_dir_all(&partial);
                Ok(info(size, true))
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&partial);
                Err(io_err("renaming", &partial, e))
            }
        }
    }

    /// Blocking: removes `dest/<name>`; `Ok(false)` when it was not there.
    pub fn delete_blocking(&self, name: &str) -> Result<bool, StepError> {
        check_snapshot_name(name)?;
        let fin = self.dest.join(name);
        if !fin.exists() {
            return Ok(false);
        }
        // Hide it first, so a half-deleted snapshot never looks complete.
        let doomed = self.dest.join(format!(".{name}.deleting.{}", unique()));
        fs::rename(&fin, &doomed).map_err(|e| io_err("deleting", &fin, e))?;
        fs::remove_dir_all(&doomed).map_err(|e| io_err("deleting", &doomed, e))?;
        owner::remove(&self.dest, name);
        Ok(true)
    }

    /// Blocking: removes the `.NAME.partial.PID.N` directories of copies
    /// whose process is gone (a copy interrupted by a crash); a live
    /// process's copy in progress (another worker of the host) stays.
    pub fn cleanup_blocking(&self) -> Result<Vec<String>, StepError> {
        let rd = match fs::read_dir(&self.dest) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &self.dest, e)),
        };
        let mut removed = Vec::new();
        for e in rd.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = partial_pid(&name) else { continue };
            if pid == std::process::id() || process_alive(pid) {
                continue;
            }
            let p = e.path();
            fs::remove_dir_all(&p).map_err(|e| io_err("removing", &p, e))?;
            removed.push(p.display().to_string());
        }
        if !removed.is_empty() {
            sync_dir(&self.dest).map_err(|e| io_err("syncing", &self.dest, e))?;
        }
        Ok(removed)
    }

    pub fn list_blocking(&self) -> Result<Vec<String>, StepError> {
        let rd = match fs::read_dir(&self.dest) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &self.dest, e)),
        };
        let mut names: Vec<String> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// The pid in `.NAME.partial.PID.N`, if `name` is such a directory.
fn partial_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".partial.")?;
    let (pid, n) = tail.split_once('.')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ N.fetch_add(1, Ordering::Relaxed).rotate_left(48)
}

fn io_err(what: &str, path: &Path, e: io::Error) -> StepError {
    // Out of space or quota may clear up; everything else needs a human.
    let retryable = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
    StepError::new("io_error", format!("{what} {}: {e}", path.display()), retryable)
}

/// Copies `src` (a directory) to `dst` (must not exist); returns bytes copied.
fn copy_tree(src: &Path, dst: &Path) -> io::Result<u64> {
    let meta = fs::symlink_metadata(src)?;
    fs::create_dir(dst)?;
    let mut size = 0;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            symlink(fs::read_link(&from)?, &to)?;
        } else if ft.is_dir() {
            size += copy_tree(&from, &to)?;
        } else if ft.is_file() {
            size += copy_file(&from, &to)?;
        } else {
            tracing::warn!(path = %from.display(), "skipping special file (socket, fifo or device)");
        }
    }
    // Last, so a read-only directory can still be filled.
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.permissions().mode()))?;
    Ok(size)
}

fn copy_file(from: &Path, to: &Path) -> io::Result<u64> {
    let src = fs::File::open(from)?;
    let meta = src.metadata()?;
    let dst = fs::File::create(to)?;
    if !reflink(&src, &dst) {
        let mut src = &src;
        let mut d = &dst;
        io::copy(&mut src, &mut d)?;
    }
    dst.set_permissions(fs::Permissions::from_mode(meta.permissions().mode()))?;
    dst.sync_all()?;
    Ok(meta.len())
}

/// Shares the blocks of `src` with `dst` (btrfs, XFS, …); false when the
/// filesystem cannot, and the caller copies.
fn reflink(src: &fs::File, dst: &fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are open for the duration of the call.
    unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) == 0 }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn tree_size(dir: &Path) -> io::Result<u64> {
    let mut size = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            size += tree_size(&entry.path())?;
        } else if ft.is_file() {
            size += entry.metadata()?.len();
        }
    }
    Ok(size)
}

impl super::trees::TreeStore for CopyProvider {
    fn kind(&self) -> &'static str {
        "copy"
    }
    fn live(&self) -> &Path {
        &self.source
    }
    fn dest(&self) -> &Path {
        &self.dest
    }
    fn is_tree(&self, p: &Path) -> bool {
        fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false)
    }
    fn copy_tree(&self, from: &Path, to: &Path) -> Result<(), StepError> {
        match copy_tree(from, to).and_then(|_| sync_dir(to)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = fs::remove_dir_all(to);
                Err(io_err(&format!("copying {} into", from.display()), to, e))
            }
        }
    }
    fn remove_tree(&self, p: &Path) -> Result<(), StepError> {
        let r = match fs::symlink_metadata(p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => Err(e),
            Ok(m) if m.is_dir() => fs::remove_dir_all(p),
            Ok(_) => fs::remove_file(p),
        };
        r.map_err(|e| io_err("removing", p, e))
    }
}

blocking_provider!(CopyProvider, "copy", owned, cleanup);

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, CopyProvider) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.txt"), b"hello").unwrap();
        fs::write(src.join("sub/b.bin"), vec![7u8; 1000]).unwrap();
        fs::set_permissions(src.join("a.txt"), fs::Permissions::from_mode(0o640)).unwrap();
        symlink("a.txt", src.join("link")).unwrap();
        let p = CopyProvider::new(src, dir.path().join("snaps"));
        (dir, p)
    }

    #[test]
    fn copies_files_dirs_symlinks_and_modes() {
        let (dir, p) = fixture();
        let info = p.snapshot_blocking("rm-1").unwrap();
        let snap = dir.path().join("snaps/rm-1");
        assert_eq!(info.location, snap.display().to_string());
        assert_eq!(info.size_bytes, Some(1005));
        assert!(!info.existed);
        assert_eq!(fs::read(snap.join("a.txt")).unwrap(), b"hello");
        assert_eq!(fs::read(snap.join("sub/b.bin")).unwrap().len(), 1000);
        assert_eq!(fs::read_link(snap.join("link")).unwrap(), PathBuf::from("a.txt"));
        let mode = fs::metadata(snap.join("a.txt")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // Point in time: later changes to the source do not reach the snapshot.
        fs::write(dir.path().join("src/a.txt"), b"changed").unwrap();
        assert_eq!(fs::read(snap.join("a.txt")).unwrap(), b"hello");
    }

    #[test]
    fn a_second_snapshot_with_the_same_name_finds_the_first() {
        let (dir, p) = fixture();
        p.snapshot_blocking("rm-1").unwrap();
        fs::write(dir.path().join("src/new"), b"x").unwrap();
        let again = p.snapshot_blocking("rm-1").unwrap();
        assert!(again.existed);
        assert_eq!(again.size_bytes, Some(1005));
        assert!(!dir.path().join("snaps/rm-1/new").exists());
        assert_eq!(p.list_blocking().unwrap(), vec!["rm-1"]);
    }

    #[test]
    fn partial_copies_are_hidden_and_cleaned_up() {
        let (dir, p) = fixture();
        // An unreadable file makes the copy fail half-way (unless we are root,
        // who reads anything: then use a source that vanishes instead).
        let p = if unsafe { libc::geteuid() } == 0 {
            CopyProvider::new(dir.path().join("nope"), dir.path().join("snaps"))
        } else {
            fs::set_permissions(
                dir.path().join("src/sub/b.bin"),
                fs::Permissions::from_mode(0o000),
            )
            .unwrap();
            p
        };
        assert!(p.snapshot_blocking("rm-2").is_err());
        assert!(!dir.path().join("snaps/rm-2").exists());
        assert!(p.list_blocking().unwrap().is_empty());
        // A leftover partial from a crash is never listed.
        fs::create_dir_all(dir.path().join("snaps/.rm-3.partial.1.2")).unwrap();
        assert!(p.list_blocking().unwrap().is_empty());
    }

    /// Issue 12 item 13: the partial copy of a dead process is removed on
    /// start; a live one's (another worker's copy in progress) stays.
    #[test]
    fn cleanup_removes_partials_of_dead_processes_only() {
        let (dir, p) = fixture();
        let dest = dir.path().join("snaps");
        std::fs::create_dir_all(&dest).unwrap();
        // A pid that cannot be running (above the kernel's pid_max limit).
        let dead = dest.join(".rm-1-a1.partial.4194305.7");
        std::fs::create_dir_all(dead.join("sub")).unwrap();
        std::fs::write(dead.join("sub/f"), b"x").unwrap();
        let live = dest.join(format!(
            ".rm-2-a1.partial.{}.8",
            std::os::unix::process::parent_id()
        ));
        std::fs::create_dir_all(&live).unwrap();
        p.snapshot_blocking("rm-3-a1").unwrap();
        let removed = p.cleanup_blocking().unwrap();
        assert_eq!(removed, vec![dead.display().to_string()]);
        assert!(!dead.exists() && live.exists());
        assert_eq!(p.list_blocking().unwrap(), vec!["rm-3-a1".to_string()]);
        assert_eq!(partial_pid(".a.b.partial.12.3"), Some(12));
        assert_eq!(partial_pid("rm-1-a1"), None);
        assert_eq!(partial_pid(".x.deleting.5"), None);
    }

    #[test]
    fn delete_removes_and_tolerates_missing() {
        let (dir, p) = fixture();
        p.snapshot_blocking("rm-1").unwrap();
        assert!(p.delete_blocking("rm-1").unwrap());
        assert!(!dir.path().join("snaps/rm-1").exists());
        assert!(!p.delete_blocking("rm-1").unwrap());
        assert!(p.delete_blocking("../src").is_err());
        assert!(dir.path().join("src/a.txt").exists());
    }
}
