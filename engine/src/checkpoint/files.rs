//! Checkpoints as files in the data dir (`checkpoints/ckpt-<seq>.bin`):
//! written to a temporary file, fsynced, renamed into place, the directory
//! fsynced; the oldest beyond `keep` removed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{BoxFuture, CheckpointStore};

/// The directory under the data dir.
pub const DIR_NAME: &str = "checkpoints";
const PREFIX: &str = "ckpt-";
const SUFFIX: &str = ".bin";

/// A directory of checkpoint files.
#[derive(Clone, Debug)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// The checkpoints of the log in data dir `data_dir`.
    pub fn in_data_dir(data_dir: &Path) -> FileStore {
        FileStore {
            dir: data_dir.join(DIR_NAME),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of the checkpoint at `seq`.
    pub fn file(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{seq:020}{SUFFIX}"))
    }

    fn list_sync(&self) -> anyhow::Result<Vec<u64>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.dir.display())),
        };
        let mut out = Vec::new();
        for entry in rd {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = name
                .strip_prefix(PREFIX)
                .and_then(|r| r.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            {
                out.push(seq);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Temporary files of writes a process exit cut short.
    fn remove_leftovers(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!(".{PREFIX}")) && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn save_sync(&self, seq: u64, bytes: &[u8], keep: usize) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        self.remove_leftovers();
        let path = self.file(seq);
        let tmp = self.dir.join(format!(".{PREFIX}{seq:020}.tmp"));
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        drop(f);
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} into place", tmp.display()))?;
        sync_dir(&self.dir)?;
        let seqs = self.list_sync()?;
        let keep = keep.max(1);
        if seqs.len() > keep {
            for old in &seqs[..seqs.len() - keep] {
                let p = self.file(*old);
                if let Err(e) = std::fs::remove_file(&p) {
                    tracing::warn!(file = %p.display(), error = %e, "could not remove an old checkpoint");
                }
            }
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

impl CheckpointStore for FileStore {
    fn save(&self, seq: u64, bytes: Vec<u8>, keep: usize) -> BoxFuture<'_, anyhow::Result<()>> {
        let me = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || me.save_sync(seq, &bytes, keep))
                .await
                .context("the checkpoint writer panicked")?
        })
    }

    fn list(&self) -> BoxFuture<'_, anyhow::Result<Vec<u64>>> {
        Box::pin(async move { self.list_sync() })
    }

    fn load(&self, seq: u64) -> BoxFuture<'_, anyhow::Result<Option<Vec<u8>>>> {
        let path = self.file(seq);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || match std::fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
            })
            .await
            .context("the checkpoint reader panicked")?
        })
    }

    fn place(&self) -> String {
        self.dir.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_store_passes_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::in_data_dir(dir.path());
        super::super::contract::run(&store).await;
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX)),
            "{names:?}"
        );
    }
}
