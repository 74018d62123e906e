//! The machine: root, tools, free ports, temp dirs.

use std::path::PathBuf;
use std::process::Command;

/// True when the test runs as root (loop devices, mount, FIFREEZE, runuser).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `prog` on the PATH, or in the sbin and PostgreSQL directories that are
/// not on a normal user's PATH.
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/lib/postgresql/15/bin"].map(PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Runs `prog` (found with [`which`]) and returns its stdout; panics with its
/// output when it fails.
pub fn sh(prog: &str, args: &[&str]) -> String {
    let exe = which(prog).unwrap_or_else(|| PathBuf::from(prog));
    let out = Command::new(&exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free TCP port on 127.0.0.1 (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// A new temp dir, removed on drop, whose name starts with the test's name
/// (so one left behind by a killed run says whose it is).
pub fn temp_dir() -> tempfile::TempDir {
    let current = std::thread::current();
    let test: String = current
        .name()
        .unwrap_or("test")
        .rsplit("::")
        .next()
        .unwrap_or("test")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    tempfile::Builder::new()
        .prefix(&format!("recman-{test}-"))
        .tempdir()
        .expect("a temp dir")
}
