//! The `recman` binary the CLI tests run, and commands on it.
//!
//! [`recman_bin`] never falls back to a binary that happens to lie around:
//! it is `RECMAN_BIN` (tests/run builds the release binary and sets it) or,
//! when that is unset, the current sources built with the test's own profile
//! into the test's own target dir (a no-op when nothing changed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The variable that names the binary to test.
pub const BIN_VAR: &str = "RECMAN_BIN";

/// The `recman` binary: `RECMAN_BIN`, else `cargo build --bin recman` of
/// this workspace (once per test process).
pub fn recman_bin() -> PathBuf {
    if let Some(p) = std::env::var_os(BIN_VAR).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{BIN_VAR}={} is not a file", p.display());
        return p;
    }
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build).clone()
}

/// Builds `recman` with the profile and into the target dir of the running
/// test binary (`<target>/<profile>/deps/<test>` or `…/examples/<name>`).
fn build() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--bin", "recman", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    // Cargo gives the test its package's CARGO_PKG_*, CARGO_MANIFEST_* …;
    // build scripts that watch those (ring's) would see them changed and
    // rebuild the whole tree, and again in the next shell without them.
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        let from_the_test = k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                k,
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if from_the_test {
            cmd.env_remove(k);
        }
    }
    eprintln!("{BIN_VAR} is not set: building the current recman ({profile})");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", Path::new(&cargo).display()));
    assert!(
        status.success(),
        "cargo build --bin recman failed ({status}); fix the build or set {BIN_VAR}"
    );
    let bin = profile_dir.join("recman");
    assert!(
        bin.is_file(),
        "cargo built recman, but {} is missing",
        bin.display()
    );
    bin
}

/// A `recman` command without `--data-dir` (for the default), with no
/// recman environment inherited.
pub fn recman_cmd_bare() -> Command {
    let mut c = Command::new(recman_bin());
    c.env_remove("RECMAN_DATA_DIR")
        .env_remove("RECMAN_CONFIG")
        .env_remove("RECMAN_TOKEN");
    c
}

/// A `recman --data-dir DATA` command, with no recman environment inherited.
pub fn recman_cmd(data: &Path) -> Command {
    let mut c = recman_cmd_bare();
    c.arg("--data-dir").arg(data);
    c
}

/// Runs `recman --data-dir DATA ARGS…` to the end.
pub fn recman(data: &Path, args: &[&str]) -> Output {
    recman_cmd(data).args(args).output().expect("run recman")
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
