//! The `EventLog` conformance suite (`recman_events::log::conformance`) on
//! every store of this crate: redb and sled (in a data directory, the SIGKILL
//! case included) and the in-memory store. Then what only a data directory
//! has: detection of the backend, read-only opens that create nothing, and a
//! redb file that reading leaves untouched.

use std::path::PathBuf;
use std::sync::Arc;

use recman_events::audit::audit;
use recman_events::log::conformance::{ev, job, DurablePlace, LogPlace};
use recman_events::log::memory::MemoryStore;
use recman_events::log::{self, open, open_for_reading, open_store, Store};
use recman_events::{log_conformance_tests, Backend, EventLog, LogError};

/// A log in a data directory (a temp dir the test owns, or, in the SIGKILL
/// child, the directory it was given).
struct Dir {
    backend: Backend,
    dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
}

impl Dir {
    fn new(backend: Backend) -> Dir {
        let t = recman_testkit::temp_dir();
        Dir {
            backend,
            dir: t.path().to_path_buf(),
            _owned: Some(t),
        }
    }

    fn redb() -> Dir {
        Dir::new(Backend::Redb)
    }

    fn sled() -> Dir {
        Dir::new(Backend::Sled)
    }
}

impl LogPlace for Dir {
    fn open(&self) -> Result<Arc<dyn EventLog>, LogError> {
        open(self.backend, &self.dir)
    }
    fn open_for_reading(&self) -> Result<Arc<dyn EventLog>, LogError> {
        open_for_reading(&self.dir)
    }
    fn store(&self) -> Result<Arc<dyn Store>, LogError> {
        open_store(self.backend, &self.dir, false)
    }
}

impl DurablePlace for Dir {
    fn location(&self) -> String {
        format!("{}:{}", self.backend.as_str(), self.dir.display())
    }
    fn at(location: &str) -> Dir {
        let (backend, dir) = location.split_once(':').expect("backend:dir");
        Dir {
            backend: backend.parse().expect("a backend name"),
            dir: dir.into(),
            _owned: None,
        }
    }
}

/// An in-memory store, reopened like a data directory.
struct Memory(Arc<MemoryStore>);

impl Memory {
    fn new() -> Memory {
        Memory(MemoryStore::new())
    }
}

impl LogPlace for Memory {
    fn open(&self) -> Result<Arc<dyn EventLog>, LogError> {
        log::memory::open_on(&self.0)
    }
    fn open_for_reading(&self) -> Result<Arc<dyn EventLog>, LogError> {
        log::memory::open_for_reading_on(&self.0)
    }
    fn store(&self) -> Result<Arc<dyn Store>, LogError> {
        Ok(self.0.clone())
    }
}

log_conformance_tests!(redb, Dir::redb);
log_conformance_tests!(sled, Dir::sled);
log_conformance_tests!(
    memory,
    Memory::new,
    not_durable =
        "an in-memory log lives and dies with its process: after a SIGKILL there is nothing to reopen"
);

#[allow(dead_code)]
fn _assert_object_safe(_: Arc<dyn EventLog>) {}

async fn fill(log: &dyn EventLog, n: u64) {
    for i in 0..n {
        log.append(vec![ev(job(1 + u128::from(i % 3)), i)]).await.unwrap();
    }
}

/// A data directory opens with the backend found in it and refuses the other.
async fn a_log_dir_opens_with_its_own_backend_only(backend: Backend, other: Backend) {
    let dir = recman_testkit::temp_dir();
    fill(&*open(backend, dir.path()).unwrap(), 7).await;
    assert_eq!(log::detect(dir.path()).unwrap(), Some(backend));
    match open(other, dir.path()) {
        Err(e) => assert!(e.to_string().contains(backend.as_str()), "{e}"),
        Ok(_) => panic!("a {backend:?} log opened as {other:?}"),
    }
    let log = log::open_detected(dir.path(), other).unwrap();
    assert_eq!(log.backend(), backend);
    assert_eq!(log.last_seq(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redb_dir_opens_as_redb_only() {
    a_log_dir_opens_with_its_own_backend_only(Backend::Redb, Backend::Sled).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sled_dir_opens_as_sled_only() {
    a_log_dir_opens_with_its_own_backend_only(Backend::Sled, Backend::Redb).await
}

#[test]
fn open_for_reading_never_creates_a_log() {
    let dir = recman_testkit::temp_dir();
    let missing = dir.path().join("nope");
    assert!(open_for_reading(&missing).is_err());
    assert!(!missing.exists());
    assert!(open_for_reading(dir.path()).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn the_memory_backend_has_no_data_dir() {
    let dir = recman_testkit::temp_dir();
    let e = open(Backend::Memory, dir.path()).err().expect("refused");
    assert!(e.to_string().contains("memory::open"), "{e}");
    assert!(open_store(Backend::Memory, dir.path(), true).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!("memory".parse::<Backend>().is_err(), "not a CLI or config choice");
}

/// Reading a redb log for audit must not change a byte of its file (evidence).
#[tokio::test(flavor = "multi_thread")]
async fn reading_a_redb_log_leaves_its_file_untouched() {
    let dir = recman_testkit::temp_dir();
    let log = open(Backend::Redb, dir.path()).unwrap();
    fill(&*log, 20).await;
    drop(log);
    let file = dir.path().join(log::redb_store::FILE_NAME);
    let before = std::fs::read(&file).unwrap();
    let log = open_for_reading(dir.path()).unwrap();
    assert!(audit(&*log).is_clean());
    assert_eq!(log.read(1, usize::MAX).unwrap().len(), 20);
    assert_eq!(log.read_job(job(1)).unwrap().len(), 7);
    drop(log);
    assert!(
        std::fs::read(&file).unwrap() == before,
        "the audit changed the file"
    );
}
