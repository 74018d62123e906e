//! The `btrfs` provider: a read-only snapshot of a subvolume, `dest/<name>`,
//! taken with the `BTRFS_IOC_SNAP_CREATE_V2` ioctl (atomic: a btrfs snapshot
//! needs no freeze), deleted with `BTRFS_IOC_SNAP_DESTROY`.
//!
//! Recovery is `trees.rs`'s procedure over writable snapshots: restoring in
//! place renames the live subvolume aside, puts a writable snapshot of the
//! point in its place and deletes the aside; to a path, a clone
//! (`dest/.clones/NAME`) and a writable mount (`dest/.mounts/JOB`) are
//! writable snapshots; a read-only mount is the snapshot itself (read-only
//! for root too). The subvolume must be reached through its parent
//! directory (not mounted on its own: a mount point cannot be renamed), the
//! paths must be on its filesystem, and it must hold no nested subvolume
//! (a snapshot does not include them, the delete refuses them). The
//! restored subvolume has a new subvolume id.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use recman_core::worker::Existing;
use recman_events::{JobId, SnapshotInfo, StepError};

use super::{check_snapshot_name, owner};

/// `BTRFS_IOC_SNAP_CREATE_V2` = `_IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)` (4096 bytes).
const SNAP_CREATE_V2: u32 = 0x5000_9417;
/// `BTRFS_IOC_SNAP_DESTROY` = `_IOW(0x94, 15, struct btrfs_ioctl_vol_args)` (4096 bytes).
const SNAP_DESTROY: u32 = 0x5000_940F;
/// `BTRFS_IOC_INO_LOOKUP` = `_IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args)` (4096 bytes).
const INO_LOOKUP: u32 = 0xD000_9412;
/// `BTRFS_SUBVOL_RDONLY`.
const SUBVOL_RDONLY: u64 = 1 << 1;
/// Inode number of every subvolume's root directory.
const FIRST_FREE_OBJECTID: u64 = 256;
/// `BTRFS_SUPER_MAGIC` (statfs f_type).
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

/// `struct btrfs_ioctl_vol_args_v2` from `<linux/btrfs.h>`.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<InoLookupArgs>() == 4096);

#[derive(Clone, Debug)]
pub struct BtrfsProvider {
    subvolume: PathBuf,
    dest: PathBuf,
}

impl BtrfsProvider {
    pub fn new(subvolume: PathBuf, dest: PathBuf) -> Self {
        BtrfsProvider { subvolume, dest }
    }

    /// Blocking: snapshot `name`; finds an existing one instead of failing.
    pub fn snapshot_blocking(&self, name: &str) -> Result<SnapshotInfo, StepError> {
        self.snapshot_owned_blocking(name, None)
    }

    /// Blocking: what `dest/<name>` is (its owner marker).
    pub fn lookup_blocking(&self, name: &str) -> Result<Existing, StepError> {
        check_snapshot_name(name)?;
        Ok(owner::lookup(
            &self.dest,
            name,
            is_subvolume(&self.dest.join(name)),
        ))
    }

    /// Blocking: the snapshot, its owner (job, attempt) recorded first.
    pub fn snapshot_owned_blocking(
        &self,
        name: &str,
        job: Option<(JobId, u32)>,
    ) -> Result<SnapshotInfo, StepError> {
        check_snapshot_name(name)?;
        let fin = self.dest.join(name);
        let existed = if is_subvolume(&fin) {
            true
        } else {
            fs::create_dir_all(&self.dest).map_err(|e| io_err("creating", &self.dest, e))?;
            owner::write(&self.dest, name, job)?;
            match create_snapshot(&self.subvolume, &self.dest, name) {
                Ok(()) => false,
                // A concurrent delivery of the same command won the race.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && is_subvolume(&fin) => true,
                Err(e) => return Err(self.snap_err(e)),
            }
        };
        let id = subvolume_id(&fin).map_err(|e| io_err("looking up the subvolume id of", &fin, e))?;
        let size = tree_size(&fin).map_err(|e| io_err("measuring", &fin, e))?;
        Ok(SnapshotInfo {
            name: name.to_string(),
            provider: "btrfs".into(),
            location: format!("{} (subvolid {id})", fin.display()),
            size_bytes: Some(size),
            existed,
            array_expiry: None,
        })
    }

    fn snap_err(&self, e: io::Error) -> StepError {
        let (sub, dest) = (self.subvolume.display(), self.dest.display());
        match e.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) if !on_btrfs(&self.subvolume) => {
                StepError::new("not_btrfs", format!("{sub} is not on a btrfs filesystem"), false)
            }
            Some(libc::EXDEV) => StepError::new(
                "cross_device",
                format!("{dest} is not on the same btrfs filesystem as {sub}"),
                false,
            ),
            Some(libc::EINVAL) => StepError::new(
                "not_a_subvolume",
                format!("{sub} is not a btrfs subvolume (create it with `btrfs subvolume create`)"),
                false,
            ),
            Some(libc::EPERM) => StepError::new(
                "permission_denied",
                format!("snapshot of {sub} into {dest}: permission denied (run the worker as root)"),
                false,
            ),
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StepError::new(
                "no_space",
                format!("snapshot of {sub}: no space left ({e})"),
                true,
            ),
            _ => io_err("snapshotting", &self.subvolume, e),
        }
    }

    /// Blocking: deletes snapshot `name`; `Ok(false)` when it was not there.
    pub fn delete_blocking(&self, name: &str) -> Result<bool, StepError> {
        check_snapshot_name(name)?;
        let fin = self.dest.join(name);
        if !fin.exists() {
            return Ok(false);
        }
        if !is_subvolume(&fin) {
            return Err(StepError::new(
                "not_a_subvolume",
                format!("{} is not a btrfs subvolume: not deleting it", fin.display()),
                false,
            ));
        }
        match destroy_snapshot(&self.dest, name) {
            Ok(()) => {
                owner::remove(&self.dest, name);
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(io_err("deleting", &fin, e)),
        }
    }

    /// Snapshot names in `dest` (subvolumes only), sorted.
    pub fn list_blocking(&self) -> Result<Vec<String>, StepError> {
        let rd = match fs::read_dir(&self.dest) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &self.dest, e)),
        };
        let mut names: Vec<String> = rd
            .filter_map(Result::ok)
            .filter(|e| is_subvolume(&e.path()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| check_snapshot_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }
}

fn is_subvolume(p: &Path) -> bool {
    fs::symlink_metadata(p)
        .map(|m| m.is_dir() && m.ino() == FIRST_FREE_OBJECTID)
        .unwrap_or(false)
}

fn on_btrfs(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; c is a valid C string.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == BTRFS_SUPER_MAGIC
    }
}

fn put_name(dst: &mut [u8], name: &str) -> io::Result<()> {
    let b = name.as_bytes();
    if b.len() >= dst.len() || b.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    dst[..b.len()].copy_from_slice(b);
    Ok(())
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A read-only snapshot of `subvolume` named `name` inside `dest_dir`.
pub fn create_snapshot(subvolume: &Path, dest_dir: &Path, name: &str) -> io::Result<()> {
    snapshot(subvolume, dest_dir, name, true)
}

/// A snapshot of `subvolume` named `name` inside `dest_dir`.
fn snapshot(subvolume: &Path, dest_dir: &Path, name: &str, read_only: bool) -> io::Result<()> {
    let src = fs::File::open(subvolume)?;
    let dst = fs::File::open(dest_dir)?;
    let mut args = Box::new(VolArgsV2 {
        fd: i64::from(src.as_raw_fd()),
        transid: 0,
        flags: if read_only { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; 4040],
    });
    put_name(&mut args.name, name)?;
    // SAFETY: args is a valid, correctly sized struct; both fds are open.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), SNAP_CREATE_V2 as _, &mut *args as *mut VolArgsV2) })
}

fn destroy_snapshot(dest_dir: &Path, name: &str) -> io::Result<()> {
    let dst = fs::File::open(dest_dir)?;
    let mut args = Box::new(VolArgs {
        fd: 0,
        name: [0; 4088],
    });
    put_name(&mut args.name, name)?;
    // SAFETY: as above.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), SNAP_DESTROY as _, &mut *args as *mut VolArgs) })
}

/// The subvolume (tree) id of the subvolume at `p`.
pub fn subvolume_id(p: &Path) -> io::Result<u64> {
    let f = fs::File::open(p)?;
    let mut args = Box::new(InoLookupArgs {
        treeid: 0,
        objectid: FIRST_FREE_OBJECTID,
        name: [0; 4080],
    });
    // SAFETY: as above.
    check(unsafe { libc::ioctl(f.as_raw_fd(), INO_LOOKUP as _, &mut *args as *mut InoLookupArgs) })?;
    Ok(args.treeid)
}

/// Bytes of regular files under `dir` (what the snapshot references).
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

fn io_err(what: &str, path: &Path, e: io::Error) -> StepError {
    let retryable = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
    StepError::new("io_error", format!("{what} {}: {e}", path.display()), retryable)
}

impl super::trees::TreeStore for BtrfsProvider {
    fn kind(&self) -> &'static str {
        "btrfs"
    }
    fn live(&self) -> &Path {
        &self.subvolume
    }
    fn dest(&self) -> &Path {
        &self.dest
    }
    fn is_tree(&self, p: &Path) -> bool {
        is_subvolume(p)
    }
    fn copy_tree(&self, from: &Path, to: &Path) -> Result<(), StepError> {
        let (Some(dir), Some(name)) = (to.parent(), to.file_name().and_then(|n| n.to_str())) else {
            return Err(io_err(
                "snapshotting into",
                to,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        };
        snapshot(from, dir, name, false).map_err(|e| match e.raw_os_error() {
            Some(libc::EXDEV) => StepError::new(
                "cross_device",
                format!(
                    "{} is not on the btrfs filesystem of {}: a restore or clone of a btrfs \
                     snapshot must stay on it",
                    to.display(),
                    from.display()
                ),
                false,
            ),
            _ => io_err(&format!("snapshotting {} to", from.display()), to, e),
        })
    }
    fn remove_tree(&self, p: &Path) -> Result<(), StepError> {
        let r = match fs::symlink_metadata(p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => Err(e),
            Ok(_) if is_subvolume(p) => {
                let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
                    return Err(io_err("deleting", p, io::Error::from_raw_os_error(libc::EINVAL)));
                };
                destroy_snapshot(dir, name)
            }
            Ok(m) if m.is_dir() => fs::remove_dir_all(p),
            Ok(_) => fs::remove_file(p),
        };
        r.map_err(|e| io_err("deleting", p, e))
    }
}

blocking_provider!(BtrfsProvider, "btrfs", owned);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_on_btrfs_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir_all(&sub).unwrap();
        let p = BtrfsProvider::new(sub, dir.path().join("snaps"));
        if on_btrfs(dir.path()) {
            return; // a plain dir on btrfs gives not_a_subvolume instead
        }
        let e = p.snapshot_blocking("rm-1").unwrap_err();
        assert_eq!(e.code, "not_btrfs", "{e:?}");
        assert!(p.list_blocking().unwrap().is_empty());
        assert!(!p.delete_blocking("rm-1").unwrap());
        assert!(p.snapshot_blocking("../x").is_err());
    }
}
