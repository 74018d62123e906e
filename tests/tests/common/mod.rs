//! Helpers shared by the CLI tests: find and run the real `recman` binary.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `recman` binary: `RECMAN_BIN`, else the newest of
/// `{CARGO_TARGET_DIR or <workspace>/target}/{release,debug}/recman`.
pub fn recman_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RECMAN_BIN") {
        return PathBuf::from(p);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("recman"))
        .filter(|p| p.exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no recman binary under {}: run `cargo build --release --bin recman` (tests/run does) \
                 or set RECMAN_BIN",
                target.display()
            )
        })
}

/// A `recman` command without `--data-dir` (for the default), environment cleaned.
pub fn recman_cmd_bare() -> Command {
    let mut c = Command::new(recman_bin());
    c.env_remove("RECMAN_DATA_DIR").env_remove("RECMAN_CONFIG");
    c
}

/// A `recman` command on `data_dir`, isolated from the caller's environment.
pub fn recman_cmd(data_dir: &Path) -> Command {
    let mut c = Command::new(recman_bin());
    c.arg("--data-dir")
        .arg(data_dir)
        .env_remove("RECMAN_DATA_DIR")
        .env_remove("RECMAN_CONFIG");
    c
}

/// Runs `recman --data-dir DATA ARGS…` to the end.
pub fn recman(data_dir: &Path, args: &[&str]) -> Output {
    recman_cmd(data_dir).args(args).output().expect("run recman")
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
