//! A private PostgreSQL server on a data directory, for the `postgres`
//! verifier and for recovery: no TCP listener (a socket in a private
//! directory), run as the directory's owner in its own process group,
//! killed if the worker dies; waited for, stopped, and found again (an
//! orphan of a dead worker) by its `postmaster.pid`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use recman_events::StepError;
use tokio::time::Instant;

pub(crate) fn io_err(what: &str, p: &Path, e: std::io::Error) -> StepError {
    let retryable = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
    StepError::new("io_error", format!("{what} {}: {e}", p.display()), retryable)
}

/// Where PostgreSQL listens: a socket directory only.
pub(crate) struct Conn {
    pub sock: PathBuf,
    pub port: u16,
    pub user: String,
}

impl Conn {
    /// The one row of `q` in `dbname`, on a session of its own.
    pub(crate) async fn query_one(&self, dbname: &str, q: &str) -> Result<tokio_postgres::Row, String> {
        let (client, connection) = self
            .config(dbname)
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let h = tokio::spawn(connection);
        let r = client.query_one(q, &[]).await.map_err(|e| e.to_string());
        drop(client);
        h.abort();
        r
    }

    pub(crate) fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host_path(&self.sock)
            .port(self.port)
            .user(&self.user)
            .dbname(dbname)
            .application_name("recman-verify")
            .connect_timeout(Duration::from_secs(5));
        c
    }
}

/// Time left until `end` (at least a millisecond, so a timeout fires).
pub(crate) fn left(end: Instant) -> Duration {
    end.saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// `s` as one word for `/bin/sh`.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A PostgreSQL program that could not be started.
pub(crate) fn cannot_run(prog: &Path, e: std::io::Error, key: &str) -> StepError {
    StepError::new(
        "not_supported",
        format!(
            "cannot run {}: {e} (set {key} to PostgreSQL's bin directory)",
            prog.display()
        ),
        false,
    )
}

pub(crate) fn free_port() -> Result<u16, StepError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| StepError::new("io_error", format!("finding a free port: {e}"), true))
}

pub(crate) fn user_name(uid: u32) -> Option<String> {
    // SAFETY: getpwuid_r fills `pw` from `buf`; both outlive the call.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let mut buf = vec![0 as libc::c_char; 4096];
        let r = libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out);
        if r != 0 || out.is_null() || pw.pw_name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(pw.pw_name)
            .to_str()
            .ok()
            .map(str::to_string)
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    bin: (&Path, &str),
    data: &Path,
    log: &Path,
    port: u16,
    settings: &[(String, String)],
    cwd: &Path,
    uid: u32,
    gid: u32,
) -> Result<tokio::process::Child, StepError> {
    let (bin_dir, bin_key) = bin;
    let prog = bin_dir.join("postgres");
    let out = fs::File::create(log).map_err(|e| io_err("creating", log, e))?;
    let err = out.try_clone().map_err(|e| io_err("opening", log, e))?;
    let mut cmd = tokio::process::Command::new(&prog);
    cmd.arg("-D").arg(data).arg("-c").arg(format!("port={port}"));
    for (k, v) in settings {
        cmd.arg("-c").arg(format!("{k}={v}"));
    }
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .process_group(0);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Set before the pre_exec hook: a change of user clears the
        // parent-death signal, which the hook sets afterwards.
        cmd.uid(uid).gid(gid);
    }
    crate::exec::die_with_parent(&mut cmd);
    cmd.spawn().map_err(|e| cannot_run(&prog, e, bin_key))
}

/// The end of the server's log, for an error.
pub(crate) fn log_tail(log: &Path) -> String {
    let text = fs::read(log).unwrap_or_default();
    let from = text.len().saturating_sub(crate::exec::STDERR_LIMIT * 2);
    crate::exec::tail(&String::from_utf8_lossy(&text[from..]))
}

/// Below this much free space a server that stopped early is blamed on it.
pub(crate) const LOW_SPACE: u64 = 64 << 20;

/// What to say about the free space of the filesystem holding `dir`: a
/// server that cannot write stops with status 1, often before it can log
/// why (its log is on the same filesystem).
pub(crate) fn space_note(dir: &Path) -> String {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return String::new();
    };
    // SAFETY: statvfs fills the zeroed struct from a NUL-terminated path.
    let free = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return String::new();
        }
        (st.f_bavail as u64).saturating_mul(st.f_frsize as u64)
    };
    if free >= LOW_SPACE {
        return String::new();
    }
    format!(
        " (the filesystem of {} has {} MiB free: recovery writes WAL and pages into the clone, and a \
         full disk stops PostgreSQL before it can log why; free space there and verify again)",
        dir.display(),
        free >> 20
    )
}

/// Until the server accepts connections and has left recovery; `what` is
/// what it runs on (`the clone of rm-…`).
pub(crate) async fn wait_ready(
    child: &mut tokio::process::Child,
    conn: &Conn,
    log: &Path,
    what: &str,
    end: Instant,
) -> Result<(), StepError> {
    let mut last = String::from("no connection yet");
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(StepError::new(
                "recovery_failed",
                format!(
                    "PostgreSQL on {what} exited ({st}) before it was consistent{}: {}",
                    log.parent().map(space_note).unwrap_or_default(),
                    log_tail(log)
                ),
                false,
            ));
        }
        if Instant::now() >= end {
            return Err(StepError::new(
                "timeout",
                format!(
                    "PostgreSQL on {what} was not consistent and promoted in time ({last}): {}",
                    log_tail(log)
                ),
                true,
            ));
        }
        let probe = async {
            conn.query_one("template1", "SELECT pg_is_in_recovery()")
                .await
                .map(|row| row.get::<_, bool>(0))
        };
        match tokio::time::timeout_at(end, probe).await {
            Ok(Ok(false)) => return Ok(()),
            Ok(Ok(true)) => last = "still in recovery".into(),
            Ok(Err(e)) => last = e,
            Err(_) => continue,
        }
        tokio::time::sleep(Duration::from_millis(100).min(left(end))).await;
    }
}

/// Signals `child`'s process (the postmaster).
pub(crate) fn signal(child: &tokio::process::Child, sig: libc::c_int) {
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: plain syscall on our own child.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Fast shutdown, then immediate, then SIGKILL; each bounded. Fails with
/// `code` when even SIGKILL did not end it.
pub(crate) async fn stop(
    child: &mut tokio::process::Child,
    end: Instant,
    code: &str,
) -> Result<(), StepError> {
    let steps = [
        (libc::SIGINT, Duration::from_secs(20)),
        (libc::SIGQUIT, Duration::from_secs(5)),
        (libc::SIGKILL, Duration::from_secs(5)),
    ];
    for (sig, wait) in steps {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        signal(child, sig);
        let until = (Instant::now() + wait).min(end.max(Instant::now() + Duration::from_secs(1)));
        if let Ok(Ok(_)) = tokio::time::timeout_at(until, child.wait()).await {
            return Ok(());
        }
    }
    Err(StepError::new(
        code,
        "PostgreSQL did not stop, not even on SIGKILL (the worker stops it when it starts again)",
        true,
    ))
}

/// Blocking: removes the System V segment a killed postmaster of `data`
/// left (its id is on line 7 of `postmaster.pid`), when nothing uses it.
pub(crate) fn release_shm(data: &Path) {
    let Ok(text) = fs::read_to_string(data.join("postmaster.pid")) else {
        return;
    };
    let Some(id) = text
        .lines()
        .nth(6)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<libc::c_int>().ok())
    else {
        return;
    };
    // SAFETY: shmctl with IPC_STAT fills the zeroed struct; IPC_RMID takes none.
    unsafe {
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        if libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0 && ds.shm_nattch == 0 {
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

pub(crate) fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// A postmaster running on `data` (by its `postmaster.pid`, and only if the
/// process's working directory is `data`: a reused pid is not killed),
/// stopped; its pid. Blocking.
pub(crate) fn stop_orphan(data: &Path) -> Option<i32> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    if cwd != fs::canonicalize(data).ok()? {
        return None;
    }
    for (sig, wait) in [(libc::SIGQUIT, 50), (libc::SIGKILL, 50)] {
        // SAFETY: plain syscall; the pid was checked to be the postmaster of `data`.
        unsafe {
            libc::kill(pid, sig);
        }
        for _ in 0..wait {
            if !process_alive(pid) {
                return Some(pid);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Some(pid)
}

/// Blocking: removes what a copied data directory may hold of the server it
/// was copied from (lock and options files) and of an earlier recovery
/// (signal files, `backup_label`, `tablespace_map`).
pub(crate) fn clear_recovery_files(data: &Path) -> Result<(), StepError> {
    for f in [
        "postmaster.pid",
        "postmaster.opts",
        "standby.signal",
        "recovery.signal",
        "backup_label",
        "tablespace_map",
    ] {
        let p = data.join(f);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &p, e)),
        }
    }
    Ok(())
}

/// The pid of a live postmaster on `data`, by its `postmaster.pid` (a stale
/// file of a dead server, or a pid reused by another process, is not one:
/// a postmaster's working directory is its data directory). Blocking.
pub(crate) fn running_postmaster(data: &Path) -> Option<i32> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    (process_alive(pid) && cwd == fs::canonicalize(data).ok()?).then_some(pid)
}
