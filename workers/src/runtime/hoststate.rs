//! The host's freeze state of each target (the worker core's `TargetMemory`),
//! shared by every worker process of the host and surviving their restarts:
//! `<state_dir>/targets/<target>.json`, read, changed and written back under
//! an exclusive `flock` of `<state_dir>/targets/<target>.lock`, held for the
//! whole plan → run → record of a freeze or a thaw; each write is atomic
//! (temp file, fsync, rename, fsync of the directory). A freeze's hold
//! lands before the writer is called; its outcome is written after the
//! step's report is out (the hold answers a redelivery until then). A process is alive while it holds the `flock` of its
//! own `<state_dir>/processes/<token>.lock` (the kernel drops it when the
//! process dies, even by SIGKILL): a hold whose process lock is free belongs
//! to a dead process and is taken over (`recman_core::worker::adoptable`).
//!
//! `<state_dir>/verify/<target>.json` keeps the reports of the target's last
//! verify and recovery commands, whichever process of the host ran them: a
//! command redelivered after its run ended (its process died before the
//! ack) is answered from it, not run again, because the engine may by then
//! have let the target's next freeze begin (`verify_outside_freeze` in the
//! simulator), or moved on from a restore that must not revert the live data
//! a second time.
//!
//! Without a state directory (`HostState::in_memory`: tests, one process
//! alone, the benchmarks) the same state lives in this process only, one
//! async lock per target, and a step changes it in place: no copy per step.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use recman_core::worker::{Process, TargetMemory};
use recman_events::wire::Report;
use recman_events::{clock, TargetId, WorkerId};

/// Verify and recovery reports kept per target: a redelivery comes soon
/// after its run.
const VERIFY_ANSWERS: usize = 16;

/// How often a waiting process tries a target's lock again.
const LOCK_POLL: Duration = Duration::from_millis(2);

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("host freeze state {path}: {what}: {error} (the state directory must be writable by every worker of this host: pass --state-dir or set [worker] state_dir)")]
    Io {
        path: PathBuf,
        what: &'static str,
        error: io::Error,
    },
    #[error("host freeze state {path} is unreadable ({error}); move it away if no application of this target is frozen")]
    Corrupt { path: PathBuf, error: String },
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |error| StateError::Io {
        path: path.to_path_buf(),
        what,
        error,
    }
}

/// Runs the blocking write `f` of `path` off the async threads (it fsyncs);
/// a write task that died is an error naming `path`.
async fn off_thread(
    path: PathBuf,
    f: impl FnOnce() -> Result<(), StateError> + Send + 'static,
) -> Result<(), StateError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StateError::Io {
            path,
            what: "writing",
            error: io::Error::other(e.to_string()),
        })
    })
}

/// One target's state in this process, behind the lock a step holds.
type Slot = Arc<tokio::sync::Mutex<TargetMemory>>;

/// Where the freeze state of a host lives.
enum Store {
    Dir(PathBuf),
    Memory(Mutex<HashMap<TargetId, Slot>>),
}

/// The host's freeze state, as one worker process sees it.
pub struct HostState {
    store: Store,
    process: Process,
    /// The `flock` that says this process is alive (`Store::Dir` only).
    life: Option<(File, PathBuf)>,
}

/// One target's state, locked for this process until dropped.
pub struct Locked {
    pub memory: Memory,
    /// The target's lock (`Store::Dir`); `None` in memory.
    _lock: Option<File>,
    path: Option<PathBuf>,
}

/// A locked target's state: read from the state directory (written back
/// by `HostState::save`), or the in-process one itself, changed in place.
pub enum Memory {
    Read(TargetMemory),
    InPlace(tokio::sync::OwnedMutexGuard<TargetMemory>),
}

impl Deref for Memory {
    type Target = TargetMemory;

    fn deref(&self) -> &TargetMemory {
        match self {
            Memory::Read(m) => m,
            Memory::InPlace(g) => g,
        }
    }
}

impl DerefMut for Memory {
    fn deref_mut(&mut self) -> &mut TargetMemory {
        match self {
            Memory::Read(m) => m,
            Memory::InPlace(g) => g,
        }
    }
}

impl HostState {
    /// The state in `dir` as an observer reads it (`recman worker
    /// --status`): no process of its own, nothing created or locked.
    pub fn inspect(dir: &Path) -> HostState {
        HostState {
            store: Store::Dir(dir.to_path_buf()),
            process: Process {
                worker: WorkerId::from("status"),
                token: 0,
            },
            life: None,
        }
    }

    /// The state of the host in `dir` (created if missing), for a new
    /// process of worker `worker`.
    pub fn open(dir: &Path, worker: &WorkerId) -> Result<HostState, StateError> {
        let process = Process {
            worker: worker.clone(),
            token: process_token(),
        };
        for sub in ["targets", "processes", "verify"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(io_err(&d, "creating"))?;
        }
        let life_path = process_lock_path(dir, &process);
        let life = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&life_path)
            .map_err(io_err(&life_path, "creating"))?;
        flock(&life, false).map_err(io_err(&life_path, "locking"))?;
        // Its worker id, for an operator looking at the directory.
        let _ = (&life).write_all(format!("{}\n", process.worker).as_bytes());
        Ok(HostState {
            store: Store::Dir(dir.to_path_buf()),
            process,
            life: Some((life, life_path)),
        })
    }

    /// State kept in this process only (tests; a worker alone on its host).
    pub fn in_memory(worker: &WorkerId) -> HostState {
        HostState {
            store: Store::Memory(Mutex::new(HashMap::new())),
            process: Process {
                worker: worker.clone(),
                token: process_token(),
            },
            life: None,
        }
    }

    /// The report a process of this host gave to verify command
    /// `message_id` of `t`, if any (none without a state directory).
    pub fn verify_answer(&self, t: &TargetId, message_id: &str) -> Option<Report> {
        let Store::Dir(dir) = &self.store else {
            return None;
        };
        read_verify(&verify_path(dir, t))
            .into_iter()
            .find(|(m, _)| m == message_id)
            .map(|(_, r)| r)
    }

    /// Records `report` as the answer to verify command `message_id` of `t`,
    /// durably (off the async threads: it fsyncs), before it is published.
    pub async fn record_verify(
        &self,
        t: &TargetId,
        message_id: &str,
        report: &Report,
    ) -> Result<(), StateError> {
        let Store::Dir(dir) = &self.store else {
            return Ok(());
        };
        let path = verify_path(dir, t);
        let tmp = path.with_extension(format!("json.{:016x}.tmp", self.process.token));
        let (message_id, report) = (message_id.to_string(), report.clone());
        off_thread(path.clone(), move || {
            let mut answers = read_verify(&path);
            answers.retain(|(m, _)| *m != message_id);
            answers.push((message_id, report));
            let drop = answers.len().saturating_sub(VERIFY_ANSWERS);
            answers.drain(..drop);
            let body = serde_json::to_vec(&answers).expect("reports serialize");
            write_atomic_via(&path, &tmp, &body)
        })
        .await
    }

    /// This process, as the holds it records name it.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The state directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        match &self.store {
            Store::Dir(d) => Some(d),
            Store::Memory(_) => None,
        }
    }

    /// Locks `t`'s state for this process (waiting while another holds it)
    /// and reads it. Entries long past their deadline are forgotten.
    pub async fn lock(&self, t: &TargetId) -> Result<Locked, StateError> {
        let dir = match &self.store {
            Store::Memory(m) => {
                let mut memory = slot(m, t).lock_owned().await;
                memory.expire(clock::now_ms());
                return Ok(Locked {
                    memory: Memory::InPlace(memory),
                    _lock: None,
                    path: None,
                });
            }
            Store::Dir(dir) => dir,
        };
        let lock_path = dir.join("targets").join(format!("{t}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path, "opening"))?;
        loop {
            match flock(&lock, true) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tokio::time::sleep(LOCK_POLL).await,
                Err(e) => return Err(io_err(&lock_path, "locking")(e)),
            }
        }
        let path = state_path(dir, t);
        let mut memory = read(&path)?;
        memory.expire(clock::now_ms());
        Ok(Locked {
            memory: Memory::Read(memory),
            _lock: Some(lock),
            path: Some(path),
        })
    }

    /// Holds `t`'s recovery lock (`<state_dir>/targets/<target>.recovery.lock`)
    /// until the guard drops, waiting while another process of the host
    /// holds it: a rollback sent after the engine gave up on a restore that
    /// still runs waits for that restore, then undoes it. Separate from the
    /// freeze state's lock, which a watchdog's thaw must never wait behind.
    /// In memory, `None`: the caller's provider lock serialises.
    pub async fn lock_recovery(&self, t: &TargetId) -> Result<Option<File>, StateError> {
        let Store::Dir(dir) = &self.store else {
            return Ok(None);
        };
        let lock_path = dir.join("targets").join(format!("{t}.recovery.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path, "opening"))?;
        loop {
            match flock(&lock, true) {
                Ok(()) => return Ok(Some(lock)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(io_err(&lock_path, "locking")(e)),
            }
        }
    }

    /// Reads `t`'s state without locking (a consistent snapshot: writes are
    /// atomic renames); for checks that change nothing. In this process
    /// only, it waits while a step holds the target's state.
    pub async fn read(&self, t: &TargetId) -> Result<TargetMemory, StateError> {
        self.peek(t, TargetMemory::clone).await
    }

    /// Runs `f` on `t`'s state as [`HostState::read`] sees it, without a copy
    /// in this process.
    pub async fn peek<R>(&self, t: &TargetId, f: impl FnOnce(&TargetMemory) -> R) -> Result<R, StateError> {
        match &self.store {
            Store::Memory(m) => Ok(f(&*slot(m, t).lock().await)),
            Store::Dir(dir) => Ok(f(&read(&state_path(dir, t))?)),
        }
    }

    /// Writes `l` back (atomically, durably) while it is still locked. In
    /// this process only, `l` was changed in place: every change is saved
    /// right after it is made, and this save cannot fail, so there is
    /// nothing left to do.
    pub async fn save(&self, l: &Locked) -> Result<(), StateError> {
        match (&self.store, &l.path) {
            (Store::Memory(_), _) => Ok(()),
            (Store::Dir(_), Some(path)) => {
                let body = serde_json::to_vec(&*l.memory).map_err(|e| StateError::Corrupt {
                    path: path.clone(),
                    error: e.to_string(),
                })?;
                let path = path.clone();
                off_thread(path.clone(), move || write_atomic(&path, &body)).await
            }
            (Store::Dir(_), None) => Ok(()),
        }
    }

    /// Whether `p` is alive: this process, or one that holds its process lock.
    pub fn alive(&self, p: &Process) -> bool {
        if p == &self.process {
            return true;
        }
        let Store::Dir(dir) = &self.store else {
            // In memory, only this process ever recorded a hold.
            return false;
        };
        let path = process_lock_path(dir, p);
        let f = match OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
            // Cannot tell: count it alive (its watchdog may still run).
            Err(_) => return true,
        };
        match flock(&f, true) {
            Ok(()) => {
                // Dead: nobody holds it any more; tidy up while we hold it.
                let _ = fs::remove_file(&path);
                false
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(_) => true,
        }
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        // A clean end: the holds this process had are thawed by then.
        if let Some((_, path)) = &self.life {
            let _ = fs::remove_file(path);
        }
    }
}

/// Refuses a state directory on a filesystem that a target freezes (by
/// device, not by path): the worker writes the state before it thaws, so
/// that write would wait for a thaw that never comes.
pub fn check_off_frozen(dir: &Path, mounts: &[(TargetId, PathBuf)]) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(here) = fs::metadata(dir).map(|m| m.dev()) else {
        return Ok(());
    };
    for (t, mp) in mounts {
        // Only a real mount is ever frozen (`check_mountpoint`).
        let mounted = crate::writer::check_mountpoint(mp).is_ok();
        if mounted && fs::metadata(mp).is_ok_and(|m| m.dev() == here) {
            return Err(format!(
                "the host freeze state directory {} is on the filesystem that target {t} freezes ({}): \
                 the worker could not record a thaw while it is frozen; pass --state-dir (or set \
                 [worker] state_dir) to a directory on another filesystem, such as /run/recman",
                dir.display(),
                mp.display()
            ));
        }
    }
    Ok(())
}

/// `t`'s slot in the in-process store (created empty on first use).
fn slot(m: &Mutex<HashMap<TargetId, Slot>>, t: &TargetId) -> Slot {
    let mut map = m.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(t.clone()).or_default().clone()
}

fn state_path(dir: &Path, t: &TargetId) -> PathBuf {
    dir.join("targets").join(format!("{t}.json"))
}

fn process_lock_path(dir: &Path, p: &Process) -> PathBuf {
    dir.join("processes").join(format!("{:016x}.lock", p.token))
}

fn read(path: &Path) -> Result<TargetMemory, StateError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path: path.to_path_buf(),
            error: e.to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TargetMemory::default()),
        Err(e) => Err(io_err(path, "reading")(e)),
    }
}

fn verify_path(dir: &Path, t: &TargetId) -> PathBuf {
    dir.join("verify").join(format!("{t}.json"))
}

/// A target's verify answers; none when missing or unreadable (the command
/// then runs again, as it would have without the record).
fn read_verify(path: &Path) -> Vec<(String, Report)> {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Temp file, fsync, rename over `path`, fsync of the directory.
fn write_atomic(path: &Path, body: &[u8]) -> Result<(), StateError> {
    write_atomic_via(path, &path.with_extension("json.tmp"), body)
}

/// [`write_atomic`] through the temp file `tmp` (one per writer where
/// several processes may write `path` without a lock).
fn write_atomic_via(path: &Path, tmp: &Path, body: &[u8]) -> Result<(), StateError> {
    let mut f = File::create(tmp).map_err(io_err(tmp, "writing"))?;
    f.write_all(body).map_err(io_err(tmp, "writing"))?;
    f.sync_all().map_err(io_err(tmp, "syncing"))?;
    drop(f);
    fs::rename(tmp, path).map_err(io_err(path, "renaming"))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir, "syncing"))?;
    }
    Ok(())
}

/// `flock(LOCK_EX)`, without waiting when `nonblocking`.
fn flock(f: &File, nonblocking: bool) -> io::Result<()> {
    let op = if nonblocking {
        libc::LOCK_EX | libc::LOCK_NB
    } else {
        libc::LOCK_EX
    };
    // SAFETY: a valid open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A token new at every start of a worker process (the hold of a process
/// that is gone is recognisably not this one's).
fn process_token() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 40);
    // splitmix64: two tokens made in one nanosecond still differ by pid.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use recman_core::worker::Hold;
    use recman_events::{JobId, SnapshotKind};

    fn hold(p: &Process) -> Hold {
        Hold {
            job: JobId::from_parts(1, 1),
            attempt: 1,
            kind: SnapshotKind::Full,
            process: p.clone(),
            frozen_at_ms: 5,
            deadline_ms: u64::MAX / 2,
        }
    }

    #[tokio::test]
    async fn two_processes_share_one_targets_state() {
        let dir = tempfile::tempdir().unwrap();
        let a = HostState::open(dir.path(), &WorkerId::from("a")).unwrap();
        let b = HostState::open(dir.path(), &WorkerId::from("b")).unwrap();
        let t = TargetId::from("db01");
        let mut l = a.lock(&t).await.unwrap();
        l.memory.record_freeze_start(hold(a.process()));
        a.save(&l).await.unwrap();
        // b waits for a's lock.
        let waiting = tokio::time::timeout(Duration::from_millis(100), b.lock(&t)).await;
        assert!(waiting.is_err(), "the lock is exclusive across processes");
        drop(l);
        let seen = b.lock(&t).await.unwrap();
        assert_eq!(
            seen.memory.hold().map(|h| h.process.clone()),
            Some(a.process().clone())
        );
        assert!(b.alive(a.process()), "a holds its process lock");
    }

    #[tokio::test]
    async fn in_memory_a_step_changes_the_state_in_place_under_its_lock() {
        let host = HostState::in_memory(&WorkerId::from("a"));
        let t = TargetId::from("db01");
        let mut l = host.lock(&t).await.unwrap();
        l.memory.record_freeze_start(hold(host.process()));
        host.save(&l).await.unwrap();
        // Another step of the target, and a reader, wait for the lock.
        let waiting = tokio::time::timeout(Duration::from_millis(50), host.lock(&t)).await;
        assert!(waiting.is_err(), "one step of a target at a time");
        let reading = tokio::time::timeout(Duration::from_millis(50), host.read(&t)).await;
        assert!(reading.is_err(), "a reader sees no half-made change");
        drop(l);
        let seen = host.read(&t).await.unwrap();
        assert_eq!(seen.hold(), Some(&hold(host.process())));
        let l = host.lock(&t).await.unwrap();
        assert_eq!(
            l.memory.hold(),
            Some(&hold(host.process())),
            "kept for the next step"
        );
        drop(l);
        let other = host.peek(&TargetId::from("db02"), |m| m.hold().is_none()).await;
        assert!(other.unwrap(), "targets do not share a state");
    }

    #[tokio::test]
    async fn a_process_whose_lock_is_free_is_dead() {
        let dir = tempfile::tempdir().unwrap();
        let a = HostState::open(dir.path(), &WorkerId::from("a")).unwrap();
        let b = HostState::open(dir.path(), &WorkerId::from("b")).unwrap();
        let gone = a.process().clone();
        // Its process lock released without the clean end's removal (as
        // after a SIGKILL): the file stays, unlocked.
        let (f, path) = a
            .life
            .as_ref()
            .map(|(f, p)| (f.try_clone().unwrap(), p.clone()))
            .unwrap();
        std::mem::forget(a);
        // SAFETY: our own descriptor.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        drop(f);
        assert!(path.exists());
        assert!(!b.alive(&gone));
        assert!(!b.alive(&Process {
            worker: WorkerId::from("x"),
            token: 42
        }));
        assert!(b.alive(b.process()));
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let e = HostState::open(Path::new("/proc/recman-no"), &WorkerId::from("a"))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("--state-dir"), "{e}");
    }
}
