//! `DATA_DIR/server.json`: how CLI commands find the `recman up` (or
//! `recman engine --listen`) that holds a data dir. Written once the API
//! listens, removed on a clean exit; a file left by a dead process is ignored
//! (its pid is checked). A command refused the log ([`explain_locked`]) is
//! told where that process's API is.

use std::path::{Path, PathBuf};

use recman_events::LogError;
use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "server.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// Base URL of the API, e.g. `http://127.0.0.1:7080`.
    pub url: String,
    pub pid: u32,
    /// The server wants `Authorization: Bearer <token>` (from `api.token_file`).
    pub token_required: bool,
    pub started_at_ms: u64,
    /// With TLS (`https://`): the server's certificate file, which commands
    /// on this host trust when their config names no `[api] ca_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Writes the file atomically (temp file + rename).
pub fn write(data_dir: &Path, d: &Discovery) -> std::io::Result<()> {
    let tmp = data_dir.join(format!(".{FILE_NAME}.{}", d.pid));
    std::fs::write(&tmp, serde_json::to_vec_pretty(d).unwrap_or_default())?;
    std::fs::rename(&tmp, path(data_dir))
}

/// Removes the file if it is still ours.
pub fn remove(data_dir: &Path, pid: u32) {
    if read_file(data_dir).is_some_and(|d| d.pid == pid) {
        let _ = std::fs::remove_file(path(data_dir));
    }
}

fn read_file(data_dir: &Path) -> Option<Discovery> {
    let bytes = std::fs::read(path(data_dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The running server of `data_dir`, if its process is alive.
pub fn find(data_dir: &Path) -> Option<Discovery> {
    let d = read_file(data_dir)?;
    alive(d.pid).then_some(d)
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The error of a log open: a log another process owns says which process
/// and where its API is (from the discovery file), or that it announces none.
pub fn explain_locked(data_dir: &Path, e: LogError) -> anyhow::Error {
    let LogError::Locked(m) = e else {
        return e.into();
    };
    match find(data_dir) {
        Some(d) => anyhow::anyhow!(
            "{m}\nthe engine that owns it (pid {}) serves its API at {}: `recman jobs`, `recman job`, \
             `recman targets`, `recman snapshots`, `recman events` and `recman cancel` use it \
             (they find it through {})",
            d.pid,
            d.url,
            path(data_dir).display()
        ),
        None => anyhow::anyhow!(
            "{m}\nthe process that owns it announces no API in {} (`recman engine` serves one \
             only with --listen or `[api] listen`)",
            path(data_dir).display()
        ),
    }
}
