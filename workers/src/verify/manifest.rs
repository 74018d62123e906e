//! The checksum manifest of a `copy` or `btrfs` snapshot: size and BLAKE3 of
//! every file, written next to the snapshot as `.<name>.manifest` (JSON),
//! through a `.tmp.<pid>` file renamed into place, so a crash never leaves
//! a half manifest that looks whole (`cleanup` removes the dead ones).
//!
//! It is sealed by the first verification, right after the job and off the
//! freeze window: a reflink or btrfs snapshot reads no data when it is cut,
//! and hashing it inside the freeze would make the window grow with the
//! data. Every later verification re-reads the snapshot and compares.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use recman_events::StepError;
use serde::{Deserialize, Serialize};

/// One file of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub size: u64,
    pub blake3: String,
}

/// Every file of a snapshot, by path relative to its root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: BTreeMap<String, Entry>,
}

impl Manifest {
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|e| e.size).sum()
    }
}

/// Where the manifest of snapshot `name` in `dest` lives.
pub fn path(dest: &Path, name: &str) -> PathBuf {
    dest.join(format!(".{name}.manifest"))
}

fn io_err(what: &str, p: &Path, e: io::Error) -> StepError {
    StepError::new("io_error", format!("{what} {}: {e}", p.display()), true)
}

/// Reads every file under `root` (symlinks are not followed).
pub fn build(root: &Path) -> Result<Manifest, StepError> {
    let mut m = Manifest::default();
    walk(root, root, &mut m)?;
    Ok(m)
}

fn walk(root: &Path, dir: &Path, m: &mut Manifest) -> Result<(), StepError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| io_err("reading", dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io_err("reading", dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let ft = e.file_type().map_err(|err| io_err("reading", &p, err))?;
        if ft.is_dir() {
            walk(root, &p, m)?;
        } else if ft.is_file() {
            let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().into_owned();
            m.files.insert(rel, hash_file(&p)?);
        }
    }
    Ok(())
}

fn hash_file(p: &Path) -> Result<Entry, StepError> {
    let mut f = fs::File::open(p).map_err(|e| io_err("opening", p, e))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err("reading", p, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok(Entry {
        size,
        blake3: h.finalize().to_hex().to_string(),
    })
}

/// The manifest of `name`, if one was written.
pub fn load(dest: &Path, name: &str) -> Result<Option<Manifest>, StepError> {
    let p = path(dest, name);
    match fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            StepError::new(
                "manifest_corrupt",
                format!(
                    "{} is not a manifest ({e}): delete it to seal the snapshot again",
                    p.display()
                ),
                false,
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", &p, e)),
    }
}

/// Writes the manifest of `name` (tmp file, fsync, rename).
pub fn store(dest: &Path, name: &str, m: &Manifest) -> Result<(), StepError> {
    let p = path(dest, name);
    let tmp = dest.join(format!(".{name}.manifest.tmp.{}", std::process::id()));
    let body = serde_json::to_vec(m).map_err(|e| StepError::new("internal", e.to_string(), false))?;
    let write = || -> io::Result<()> {
        use std::io::Write;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, &p)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("writing", &p, e)
    })
}

/// Compares the snapshot at `root` with `m`; the first difference names the file.
pub fn compare(root: &Path, m: &Manifest) -> Result<(), StepError> {
    let now = build(root)?;
    let bad = |f: &str, why: String| {
        Err(StepError::new(
            "checksum_mismatch",
            format!("{}: {why}", root.join(f).display()),
            false,
        ))
    };
    for (f, want) in &m.files {
        match now.files.get(f) {
            None => return bad(f, "missing (listed in the manifest)".into()),
            Some(got) if got.size != want.size => {
                return bad(
                    f,
                    format!("size {} differs from the manifest's {}", got.size, want.size),
                )
            }
            Some(got) if got.blake3 != want.blake3 => {
                return bad(f, "content differs from the manifest (BLAKE3)".into())
            }
            Some(_) => {}
        }
    }
    if let Some(f) = now.files.keys().find(|f| !m.files.contains_key(*f)) {
        return bad(f, "not in the manifest (a file was added)".into());
    }
    Ok(())
}

/// On start: removes manifest temp files whose process is gone.
pub fn cleanup(dest: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir(dest) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, pid)) = name.rsplit_once(".manifest.tmp.") else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else { continue };
        if pid != std::process::id() as i32 && !alive(pid) && fs::remove_file(e.path()).is_ok() {
            removed.push(e.path().display().to_string());
        }
    }
    removed
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_byte_is_found_and_named() {
        let d = tempfile::tempdir().expect("tempdir");
        let snap = d.path().join("s1");
        fs::create_dir_all(snap.join("base")).expect("mkdir");
        fs::write(snap.join("base/rel1"), vec![7u8; 100_000]).expect("write");
        fs::write(snap.join("pg_control"), b"control").expect("write");
        let m = build(&snap).expect("build");
        assert_eq!(m.files.len(), 2);
        store(d.path(), "s1", &m).expect("store");
        let back = load(d.path(), "s1").expect("load").expect("some");
        assert_eq!(back, m);
        compare(&snap, &back).expect("unchanged");
        let mut bytes = fs::read(snap.join("base/rel1")).expect("read");
        bytes[54_321] ^= 1;
        fs::write(snap.join("base/rel1"), bytes).expect("write");
        let e = compare(&snap, &back).expect_err("a changed byte");
        assert_eq!(e.code, "checksum_mismatch");
        assert!(e.message.contains("base/rel1"), "{e}");
        fs::write(snap.join("new"), b"x").expect("write");
        fs::remove_file(snap.join("pg_control")).expect("rm");
        let e = compare(&snap, &back).expect_err("differs");
        assert!(e.message.contains("base/rel1"), "{e}");
    }

    #[test]
    fn cleanup_removes_only_dead_processes_temp_files() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::write(d.path().join(".s1.manifest.tmp.999999999"), b"half").expect("write");
        let mine = d.path().join(format!(".s2.manifest.tmp.{}", std::process::id()));
        fs::write(&mine, b"mine").expect("write");
        let removed = cleanup(d.path());
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(mine.exists());
    }
}
