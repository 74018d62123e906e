//! Recovery for the providers whose snapshots are trees in a directory
//! (`copy`: directory copies, `btrfs`: read-only subvolume snapshots): one
//! procedure for both; a [`TreeStore`] only says how to make a new writable
//! tree from a snapshot and how to remove a tree. Everything here blocks (the
//! provider macro runs it through `crate::blocking`).
//!
//! Names (every one carries the recovery job id, so a redelivered command
//! finds its own work and never another job's):
//!
//! ```text
//! live  DIR/NAME (the copy provider's source, the btrfs subvolume)
//!   in place    DIR/.NAME.recman-restore-JOB   the point, built, then renamed to DIR/NAME
//!               DIR/.NAME.recman-aside-JOB     the live tree moved aside, dropped at the end
//!   rollback    DIR/.NAME.recman-rollback-JOB  the restored tree moved aside (rollback
//!                                              from the safety snapshot), dropped at the end
//! to PATH       PATH.recman-tmp-JOB            built, then renamed to PATH (never replacing)
//! clone NAME    DEST/.clones/NAME              built as DEST/.clones/.NAME.tmp-JOB
//! mount (rw)    DEST/.mounts/JOB               built as DEST/.mounts/.JOB.tmp-JOB
//! mount (ro)    DEST/POINT                     the snapshot itself: nothing is made
//! marks         DEST/.recman-restored-JOB      the restore finished
//!               DEST/.recman-rollback-JOB      a rollback began: the restore is refused
//!               DEST/.recman-rolled-back-JOB   the rollback finished
//! ```
//!
//! The in-place invariant: **while the aside exists, whatever is at DIR/NAME
//! is recovery's own** (the point, whole or in part), never the data it
//! replaced; the aside is only made once the point is fully built, and is
//! dropped only after the restored mark is durable. So a crash anywhere
//! leaves either the live tree untouched, or the aside for `rollback` to put
//! back, or the restore finished; a redelivered restore finishes the work
//! (it rebuilds what is at DIR/NAME from the point). The marks keep a
//! redelivered restore from running again after it finished (the
//! application may be running on it by then) or after a rollback began.
//!
//! Read-only mounts of a `copy` snapshot are the snapshot directory itself:
//! a read-only bind mount needs root and a mount table entry to clean up
//! after a crash, and the snapshot is recman's own copy that nothing else
//! writes. Only a btrfs snapshot is read-only for root too.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use recman_events::{JobId, RecoveryAction, StepError, TargetId};

use super::{check_snapshot_name, RecoveryJob};

/// What a provider with snapshot trees supplies.
pub(super) trait TreeStore {
    fn kind(&self) -> &'static str;
    /// The live tree.
    fn live(&self) -> &Path;
    /// The directory of the snapshots (`DEST/NAME`).
    fn dest(&self) -> &Path;
    /// True when `p` is a complete snapshot (tree) of this store.
    fn is_tree(&self, p: &Path) -> bool;
    /// Makes `to` (absent; its parent exists) a writable copy of the tree
    /// `from`; on failure nothing is left at `to`.
    fn copy_tree(&self, from: &Path, to: &Path) -> Result<(), StepError>;
    /// Removes the tree at `p`; absent is fine.
    fn remove_tree(&self, p: &Path) -> Result<(), StepError>;
}

/// A recovery step, owned (it moves to a blocking thread).
#[derive(Clone, Debug)]
pub(super) struct Req {
    pub point: String,
    pub target: TargetId,
    pub action: RecoveryAction,
    pub safety: Option<String>,
    pub location: Option<String>,
    pub job: JobId,
}

impl From<RecoveryJob<'_>> for Req {
    fn from(r: RecoveryJob<'_>) -> Req {
        Req {
            point: r.point.to_string(),
            target: r.target.clone(),
            action: r.action.clone(),
            safety: r.safety.map(str::to_string),
            location: r.location.map(str::to_string),
            job: r.job,
        }
    }
}

/// The sub-directories of DEST for clones and writable mounts.
pub(super) const CLONES: &str = ".clones";
pub(super) const MOUNTS: &str = ".mounts";

/// `Provider::restore`: in place, to a path, or a clone.
pub(super) fn restore<S: TreeStore>(s: &S, r: &Req) -> Result<String, StepError> {
    check_snapshot_name(&r.point)?;
    match &r.action {
        RecoveryAction::InPlace { .. } => in_place(s, r),
        RecoveryAction::To { path, .. } => to_path(s, r, path),
        RecoveryAction::Clone { name } => {
            check_snapshot_name(name)?;
            let point = point(s, &r.point)?;
            build(s, &point, &s.dest().join(CLONES).join(name), r.job)
        }
        other => Err(wrong_action(s.kind(), "restore", other)),
    }
}

/// `Provider::mount`: the snapshot itself (read-only) or a writable copy.
pub(super) fn mount<S: TreeStore>(s: &S, r: &Req) -> Result<String, StepError> {
    check_snapshot_name(&r.point)?;
    let point = point(s, &r.point)?;
    match &r.action {
        RecoveryAction::Mount { writable: false, .. } => Ok(point.display().to_string()),
        RecoveryAction::Mount { writable: true, .. } => {
            build(s, &point, &s.dest().join(MOUNTS).join(r.job.to_string()), r.job)
        }
        other => Err(wrong_action(s.kind(), "mount", other)),
    }
}

/// `Provider::unmount`: removes a writable mount or a clone this store made;
/// a read-only mount (a snapshot's own path) leaves nothing to remove.
/// Anything else is refused: the location comes from a message.
pub(super) fn unmount<S: TreeStore>(s: &S, r: &Req) -> Result<(), StepError> {
    let Some(loc) = r.location.as_deref() else {
        // A mount whose step never answered (the engine's compensation, or
        // `recman unmount` of a mount recorded without a location): what
        // the mount job made, if anything, is found by its job id.
        let job = match &r.action {
            RecoveryAction::Unmount { mount } => *mount,
            RecoveryAction::Mount { .. } => r.job,
            other => return Err(wrong_action(s.kind(), "unmount", other)),
        };
        let mounts = s.dest().join(MOUNTS);
        for p in [
            mounts.join(job.to_string()),
            mounts.join(format!(".{job}.tmp-{job}")),
        ] {
            s.remove_tree(&p)?;
        }
        return sync(&mounts).or_else(|e| if mounts.exists() { Err(e) } else { Ok(()) });
    };
    let p = check_path(loc)?;
    let (Some(parent), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
        return Err(not_ours(s, loc));
    };
    if check_snapshot_name(name).is_err() {
        return Err(not_ours(s, loc));
    }
    let dest = s.dest();
    if parent == dest.join(CLONES) || parent == dest.join(MOUNTS) {
        s.remove_tree(&p)?;
        return sync(parent);
    }
    if parent == dest {
        return Ok(()); // a read-only mount: the snapshot stays
    }
    Err(not_ours(s, loc))
}

fn not_ours<S: TreeStore>(s: &S, loc: &str) -> StepError {
    StepError::new(
        "invalid_location",
        format!(
            "{loc:?} is not a mount or clone the {} provider made under {}: not removing it",
            s.kind(),
            s.dest().display()
        ),
        false,
    )
}

/// `Provider::rollback`: the live tree back as it was before the restore
/// of job `r.job`: the aside when there is one, else the safety snapshot.
pub(super) fn rollback<S: TreeStore>(s: &S, r: &Req) -> Result<String, StepError> {
    let n = Names::new(s, r.job)?;
    let done = || Ok(s.live().display().to_string());
    if n.rolled_back.exists() {
        s.remove_tree(&n.rollback)?;
        return done();
    }
    put_mark(&n.rolling_back)?;
    if exists(&n.aside) {
        s.remove_tree(s.live())?;
        s.remove_tree(&n.tmp)?;
        rename(&n.aside, s.live())?;
        sync(&n.dir)?;
    } else {
        let Some(safety) = r.safety.as_deref() else {
            return Err(StepError::new(
                "no_safety_snapshot",
                format!(
                    "target {}: nothing was kept aside and the rollback names no safety snapshot: \
                     the live data is as the restore left it",
                    r.target
                ),
                false,
            ));
        };
        check_snapshot_name(safety)?;
        let from = s.dest().join(safety);
        if !s.is_tree(&from) {
            return Err(StepError::new(
                "safety_snapshot_missing",
                format!(
                    "target {}: safety snapshot {} is gone: cannot roll back",
                    r.target,
                    from.display()
                ),
                false,
            ));
        }
        replace(s, &n, &from, &n.rollback)?;
        s.remove_tree(&n.rollback)?;
    }
    put_mark(&n.rolled_back)?;
    done()
}

/// The names of one in-place recovery of `s.live()` (module comment).
struct Names {
    dir: PathBuf,
    tmp: PathBuf,
    aside: PathBuf,
    rollback: PathBuf,
    restored: PathBuf,
    rolling_back: PathBuf,
    rolled_back: PathBuf,
}

impl Names {
    fn new<S: TreeStore>(s: &S, job: JobId) -> Result<Names, StepError> {
        let live = s.live();
        let (Some(dir), Some(name)) = (live.parent(), live.file_name()) else {
            return Err(StepError::new(
                "invalid_config",
                format!(
                    "{} has no parent directory: cannot restore it in place",
                    live.display()
                ),
                false,
            ));
        };
        let name = name.to_string_lossy();
        let beside = |what: &str| dir.join(format!(".{name}.recman-{what}-{job}"));
        let mark = |what: &str| s.dest().join(format!(".recman-{what}-{job}"));
        Ok(Names {
            dir: dir.to_path_buf(),
            tmp: beside("restore"),
            aside: beside("aside"),
            rollback: beside("rollback"),
            restored: mark("restored"),
            rolling_back: mark("rollback"),
            rolled_back: mark("rolled-back"),
        })
    }
}

fn in_place<S: TreeStore>(s: &S, r: &Req) -> Result<String, StepError> {
    let n = Names::new(s, r.job)?;
    let live = s.live().display().to_string();
    if n.rolling_back.exists() {
        return Err(StepError::new(
            "rolled_back",
            format!(
                "target {}: the restore of job {} was rolled back: not restoring again",
                r.target, r.job
            ),
            false,
        ));
    }
    if n.restored.exists() {
        // Done before (a crash may have kept the aside): finish the cleanup.
        s.remove_tree(&n.aside)?;
        s.remove_tree(&n.tmp)?;
        return Ok(live);
    }
    let point = point(s, &r.point)?;
    replace(s, &n, &point, &n.aside)?;
    put_mark(&n.restored)?;
    s.remove_tree(&n.aside)?;
    sync(&n.dir)?;
    Ok(live)
}

/// Puts a writable copy of `from` at the live path; what was there is
/// moved to `aside` first, unless `aside` already exists (then what is at
/// the live path is this recovery's own and is rebuilt).
fn replace<S: TreeStore>(s: &S, n: &Names, from: &Path, aside: &Path) -> Result<(), StepError> {
    let live = s.live();
    if exists(aside) {
        s.remove_tree(live)?;
        s.remove_tree(&n.tmp)?;
        s.copy_tree(from, &n.tmp)?;
    } else {
        s.remove_tree(&n.tmp)?;
        s.copy_tree(from, &n.tmp)?;
        if exists(live) {
            rename(live, aside)?;
            sync(&n.dir)?;
        }
    }
    rename(&n.tmp, live)?;
    sync(&n.dir)
}

fn to_path<S: TreeStore>(s: &S, r: &Req, path: &str) -> Result<String, StepError> {
    let p = check_path(path)?;
    let mark = s.dest().join(format!(".recman-restored-{}", r.job));
    if mark.exists() && exists(&p) {
        return Ok(p.display().to_string()); // done by an earlier delivery
    }
    if exists(&p) {
        return Err(path_exists(&p));
    }
    if p.starts_with(s.dest()) || p.starts_with(s.live()) || s.live().starts_with(&p) {
        return Err(StepError::new(
            "invalid_path",
            format!(
                "{} is inside the snapshots ({}) or the live data ({}): restore elsewhere",
                p.display(),
                s.dest().display(),
                s.live().display()
            ),
            false,
        ));
    }
    let parent = p.parent().unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        return Err(StepError::new(
            "invalid_path",
            format!("{} does not exist: create it first", parent.display()),
            false,
        ));
    }
    let point = point(s, &r.point)?;
    let tmp = PathBuf::from(format!("{}.recman-tmp-{}", p.display(), r.job));
    s.remove_tree(&tmp)?;
    s.copy_tree(&point, &tmp)?;
    match rename_noreplace(&tmp, &p) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) || e.raw_os_error() == Some(libc::ENOTEMPTY) => {
            s.remove_tree(&tmp)?;
            return Err(path_exists(&p));
        }
        Err(e) => {
            let err = io_err("renaming into place", &p, e);
            s.remove_tree(&tmp)?;
            return Err(err);
        }
    }
    sync(parent)?;
    put_mark(&mark)?;
    Ok(p.display().to_string())
}

/// A writable copy of `point` at `fin` (a clone or a writable mount),
/// built under a hidden name beside it; an existing `fin` is complete.
fn build<S: TreeStore>(s: &S, point: &Path, fin: &Path, job: JobId) -> Result<String, StepError> {
    let done = Ok(fin.display().to_string());
    if exists(fin) {
        return done;
    }
    let parent = fin.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent).map_err(|e| io_err("creating", parent, e))?;
    let name = fin.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{job}"));
    s.remove_tree(&tmp)?;
    s.copy_tree(point, &tmp)?;
    match rename_noreplace(&tmp, fin) {
        Ok(()) => {}
        // A concurrent delivery finished first.
        Err(_) if exists(fin) => s.remove_tree(&tmp)?,
        Err(e) => {
            let err = io_err("renaming into place", fin, e);
            s.remove_tree(&tmp)?;
            return Err(err);
        }
    }
    sync(parent)?;
    done
}

/// `DEST/POINT`, when it is a complete snapshot.
fn point<S: TreeStore>(s: &S, name: &str) -> Result<PathBuf, StepError> {
    let p = s.dest().join(name);
    if s.is_tree(&p) {
        Ok(p)
    } else {
        Err(StepError::new(
            "snapshot_missing",
            format!("restore point {} is not there (deleted?)", p.display()),
            false,
        ))
    }
}

/// A path from a message, checked again on the worker: absolute, no `..`,
/// no control characters, not `/`.
pub(super) fn check_path(p: &str) -> Result<PathBuf, StepError> {
    recman_events::wire::check_path("path", p)
        .map_err(|e| StepError::new("invalid_path", format!("{p:?} refused: {e}"), false))?;
    Ok(PathBuf::from(p.trim_end_matches('/')))
}

pub(super) fn path_exists(p: &Path) -> StepError {
    StepError::new(
        "path_exists",
        format!(
            "{} exists: a restore never overwrites; choose a new path or remove it",
            p.display()
        ),
        false,
    )
}

pub(super) fn wrong_action(kind: &str, step: &str, a: &RecoveryAction) -> StepError {
    StepError::new(
        "invalid_command",
        format!("the {kind} provider's {step} step got a {} action", a.as_str()),
        false,
    )
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

fn rename(from: &Path, to: &Path) -> Result<(), StepError> {
    fs::rename(from, to).map_err(|e| io_err(&format!("renaming {} to", from.display()), to, e))
}

/// `rename(2)` that fails with `EEXIST` instead of replacing `to` (which a
/// plain rename does when `to` is an empty directory).
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both are valid C strings for the duration of the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An empty file, durable (file and directory synced).
pub(super) fn put_mark(p: &Path) -> Result<(), StepError> {
    let io = |e| io_err("writing", p, e);
    fs::File::create(p).and_then(|f| f.sync_all()).map_err(io)?;
    sync(p.parent().unwrap_or(Path::new("/")))
}

pub(super) fn sync(dir: &Path) -> Result<(), StepError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing", dir, e))
}

pub(super) fn io_err(what: &str, path: &Path, e: io::Error) -> StepError {
    let retryable = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
    StepError::new("io_error", format!("{what} {}: {e}", path.display()), retryable)
}
