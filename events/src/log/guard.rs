//! Store calls that cannot take the process down. A storage engine may panic
//! on a damaged file (redb does on some single-byte flips of its pages); every
//! store call runs inside [`guard`], which turns such a panic into a
//! `LogError` naming the file, so `recman audit` and the engine report it
//! instead of crashing (issue 12 item 10). The panic's own message is not
//! printed by the default hook: it is in the error.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use crate::ids::JobId;
use crate::log::store::{Batch, BatchVisitor, Store};
use crate::log::{LogError, RawRecord};

thread_local! {
    /// Set while this thread runs a guarded call.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Once per process: a panic hook that stays quiet on guarded threads and
/// defers to the previous hook everywhere else.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside becomes `LogError::Store` naming `file`.
pub fn guard<T>(file: &Path, f: impl FnOnce() -> Result<T, LogError>) -> Result<T, LogError> {
    install_hook();
    let was = GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    result.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(LogError::Store(format!(
            "{}: the storage engine failed on damaged data ({why}); the file is damaged: \
             run `recman audit`, and restore the log from a backup",
            file.display()
        )))
    })
}

/// A store whose every call runs inside [`guard`].
pub struct Guarded {
    inner: Arc<dyn Store>,
    file: PathBuf,
}

impl Guarded {
    pub fn new(inner: Arc<dyn Store>, file: PathBuf) -> Guarded {
        Guarded { inner, file }
    }
}

impl Store for Guarded {
    fn commit(&self, batch: &Batch) -> Result<(), LogError> {
        guard(&self.file, || self.inner.commit(batch))
    }
    fn read_raw(&self, from: u64, max: usize) -> Result<Vec<RawRecord>, LogError> {
        guard(&self.file, || self.inner.read_raw(from, max))
    }
    fn scan(&self, from: u64, max: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize, LogError> {
        guard(&self.file, || self.inner.scan(from, max, f))
    }
    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        guard(&self.file, || self.inner.get(seq))
    }
    fn job_seqs(&self, job: JobId) -> Result<Vec<u64>, LogError> {
        guard(&self.file, || self.inner.job_seqs(job))
    }
    fn last(&self) -> Result<Option<RawRecord>, LogError> {
        guard(&self.file, || self.inner.last())
    }
    fn put_raw(&self, seq: u64, bytes: Option<&[u8]>) -> Result<(), LogError> {
        guard(&self.file, || self.inner.put_raw(seq, bytes))
    }
    fn index_damage(&self) -> Vec<(u64, String)> {
        self.inner.index_damage()
    }
    fn batches(&self, from: u64, f: &mut BatchVisitor<'_>) -> Result<(), LogError> {
        guard(&self.file, || self.inner.batches(from, f))
    }
    fn drop_before(&self, before: u64) -> Result<u64, LogError> {
        guard(&self.file, || self.inner.drop_before(before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_naming_the_file() {
        let e = guard(Path::new("/data/events.redb"), || -> Result<(), LogError> {
            panic!("index out of bounds")
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/data/events.redb") && e.contains("index out of bounds") && e.contains("audit"),
            "{e}"
        );
        assert_eq!(guard(Path::new("x"), || Ok(7)).unwrap(), 7);
    }
}
