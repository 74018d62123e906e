//! Who a snapshot was taken for, for providers that keep snapshots as
//! entries of a directory (`copy`, `btrfs`): a hidden sidecar file
//! `dest/.NAME.owner` naming the job and attempt, written (durably) before
//! the snapshot appears under its name and removed after it is deleted. A
//! redelivered snapshot command after a worker crash then finds the one it
//! took (`Existing::Owned`), and never adopts another job's
//! (`Existing::Foreign`, `name_conflict`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use recman_core::worker::Existing;
use recman_events::{JobId, StepError};

fn path(dest: &Path, name: &str) -> PathBuf {
    dest.join(format!(".{name}.owner"))
}

/// Records that `dest/name` is (about to be) the snapshot of `owner`.
pub fn write(dest: &Path, name: &str, owner: Option<(JobId, u32)>) -> Result<(), StepError> {
    let Some((job, attempt)) = owner else {
        return Ok(());
    };
    let p = path(dest, name);
    let tmp = dest.join(format!(".{name}.owner.tmp"));
    let io = |e: io::Error| StepError::new("io_error", format!("writing {}: {e}", p.display()), true);
    let mut f = fs::File::create(&tmp).map_err(io)?;
    f.write_all(format!("{job} {attempt}\n").as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, &p).map_err(io)?;
    fs::File::open(dest).and_then(|d| d.sync_all()).map_err(io)
}

/// What `dest/name` is: absent, taken for a known attempt, or foreign
/// (there, with no marker or an unreadable one).
pub fn lookup(dest: &Path, name: &str, exists: bool) -> Existing {
    if !exists {
        return Existing::Absent;
    }
    let p = path(dest, name);
    let owner = fs::read_to_string(&p).ok().and_then(|s| {
        let (job, attempt) = s.trim().split_once(' ')?;
        Some((job.parse::<JobId>().ok()?, attempt.parse::<u32>().ok()?))
    });
    match owner {
        Some(k) => Existing::Owned(k),
        None => Existing::Foreign(format!(
            "{} (no recman owner marker {})",
            dest.join(name).display(),
            p.display()
        )),
    }
}

/// The snapshot is gone: so is its marker.
pub fn remove(dest: &Path, name: &str) {
    let _ = fs::remove_file(path(dest, name));
}
