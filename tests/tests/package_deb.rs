//! The Debian package and its systemd units (issue 17): `cargo deb` builds
//! the package from the release binary, `dpkg -i` installs it, every unit
//! passes `systemd-analyze verify` without a word, `recman snapshot demo`
//! runs as a packaged install runs it (the `recman` user, /var/lib/recman),
//! and `dpkg --purge` leaves nothing behind. As root only (it installs a
//! package); skipped with a message otherwise (fails under CI=true). It
//! refuses to touch a `recman` package that was installed before it.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use recman_testkit::{need_root, need_tools, skip, temp_dir, which};

const UNITS: [&str; 3] = [
    "recman.service",
    "recman-engine.service",
    "recman-worker@.service",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(prog: &str, args: &[&str]) -> Output {
    let exe = which(prog).unwrap_or_else(|| PathBuf::from(prog));
    Command::new(exe)
        .args(args)
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"))
}

fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// True when dpkg has the package installed (not only its config files).
fn installed() -> bool {
    let o = run("dpkg-query", &["-W", "-f=${Status}", "recman"]);
    o.status.success() && said(&o).contains("ok installed")
}

/// Purges the package when the test ends, passed or not.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if installed() {
            let _ = run("dpkg", &["--purge", "recman"]);
        }
    }
}

/// `systemd-analyze verify` of `unit`: exit 0 and no output at all (an
/// unknown key or a bad value is only a warning, with exit 0).
fn verify(unit: &Path) {
    let o = run("systemd-analyze", &["verify", unit.to_str().unwrap()]);
    let text = said(&o);
    assert!(
        o.status.success() && text.trim().is_empty(),
        "systemd-analyze verify {}: {:?}\n{text}",
        unit.display(),
        o.status
    );
}

#[test]
fn deb_installs_runs_the_demo_as_its_user_and_purges_clean() {
    if !need_root("dpkg -i, a system user, runuser")
        || !need_tools(&["cargo-deb", "dpkg", "dpkg-deb", "systemd-analyze", "runuser"])
    {
        return;
    }
    if installed() {
        skip("a recman package is installed on this machine: the test will not replace or purge it");
        return;
    }
    let ws = workspace();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"));
    let built = target.join("release/recman");
    if !built.is_file() {
        skip(format!(
            "no release binary at {} (cargo build --release --bin recman; tests/run builds it)",
            built.display()
        ));
        return;
    }
    if let Some(bin) = std::env::var_os("RECMAN_BIN") {
        assert_eq!(
            fs::canonicalize(&bin).unwrap(),
            fs::canonicalize(&built).unwrap(),
            "RECMAN_BIN is not the binary the package is built from"
        );
    }

    // Build.
    let dir = temp_dir();
    let deb = dir.path().join("recman.deb");
    let o = Command::new(which("cargo").expect("cargo"))
        .args([
            "deb",
            "-p",
            "recman-engine",
            "--no-build",
            "--fast",
            "--strip",
            "-o",
        ])
        .arg(&deb)
        .current_dir(&ws)
        .output()
        .unwrap();
    assert!(o.status.success(), "cargo deb failed:\n{}", said(&o));
    let info = said(&run("dpkg-deb", &["--info", deb.to_str().unwrap()]));
    for want in ["Package: recman", "Depends: ", "passwd", "Section: admin"] {
        assert!(info.contains(want), "control lacks {want:?}:\n{info}");
    }
    let files = said(&run("dpkg-deb", &["--contents", deb.to_str().unwrap()]));
    for want in [
        "./usr/bin/recman",
        "./lib/systemd/system/recman.service",
        "./lib/systemd/system/recman-engine.service",
        "./lib/systemd/system/recman-worker@.service",
        "./usr/share/doc/recman/examples/recman.toml",
        "./usr/share/doc/recman/systemd.md",
    ] {
        assert!(files.contains(want), "the package lacks {want}:\n{files}");
    }

    // Install.
    let _purge = Purge;
    let o = run("dpkg", &["-i", deb.to_str().unwrap()]);
    assert!(o.status.success(), "dpkg -i failed:\n{}", said(&o));
    let id = said(&run("id", &["recman"]));
    assert!(id.contains("(recman)"), "no recman user: {id}");
    let uid: u32 = said(&run("id", &["-u", "recman"])).trim().parse().unwrap();
    let lib = fs::metadata("/var/lib/recman").expect("/var/lib/recman");
    assert_eq!(lib.uid(), uid, "/var/lib/recman is not the recman user's");
    assert_eq!(lib.permissions().mode() & 0o7777, 0o750);
    let etc = fs::metadata("/etc/recman").expect("/etc/recman");
    assert_eq!((etc.uid(), etc.permissions().mode() & 0o7777), (0, 0o750));
    assert!(
        said(&run("/usr/bin/recman", &["--version"])).starts_with("recman "),
        "the installed binary does not run"
    );

    // Every unit, as installed and as kept in deploy/systemd (the same
    // files); the template through an instance name, as systemd loads it.
    let units = dir.path().join("units");
    fs::create_dir(&units).unwrap();
    for unit in UNITS {
        let installed = Path::new("/lib/systemd/system").join(unit);
        assert_eq!(
            fs::read(&installed).unwrap(),
            fs::read(ws.join("deploy/systemd").join(unit)).unwrap(),
            "{unit} differs from deploy/systemd/{unit}"
        );
        if unit.ends_with("@.service") {
            let instance = units.join(unit.replace("@.", "@host.app01."));
            std::os::unix::fs::symlink(&installed, &instance).unwrap();
            verify(&instance);
        } else {
            verify(&installed);
        }
    }
    // A broken unit is noticed: the check above can fail.
    let bad = units.join("recman-bad.service");
    let text = fs::read_to_string("/lib/systemd/system/recman-engine.service").unwrap();
    fs::write(&bad, text.replace("Restart=always", "Restrt=always")).unwrap();
    let o = run("systemd-analyze", &["verify", bad.to_str().unwrap()]);
    assert!(
        said(&o).contains("Restrt"),
        "a unit with a typo passed: {}",
        said(&o)
    );

    // The demo as the package's user, in the package's data dir, from `/`
    // with a clean environment (as a unit runs it).
    let demo = Command::new(which("runuser").unwrap())
        .args(["-u", "recman", "--", "/usr/bin/env", "-i", "PATH=/usr/bin:/bin"])
        .args([
            "RECMAN_DATA_DIR=/var/lib/recman",
            "/usr/bin/recman",
            "snapshot",
            "demo",
        ])
        .current_dir("/")
        .output()
        .unwrap();
    let out = said(&demo);
    assert!(demo.status.success(), "recman snapshot demo failed:\n{out}");
    assert!(out.contains("completed: snapshot "), "{out}");
    assert!(out.contains("none cut, none missing"), "{out}");
    let log = fs::metadata("/var/lib/recman/events.redb").expect("the demo's log");
    assert_eq!(log.uid(), uid, "the log is not the recman user's");
    let audit = Command::new(which("runuser").unwrap())
        .args([
            "-u",
            "recman",
            "--",
            "/usr/bin/recman",
            "--data-dir",
            "/var/lib/recman",
            "audit",
        ])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        audit.status.success() && said(&audit).contains("intact"),
        "recman audit: {}",
        said(&audit)
    );

    // Purge: nothing of it is left.
    let o = run("dpkg", &["--purge", "recman"]);
    assert!(o.status.success(), "dpkg --purge failed:\n{}", said(&o));
    assert!(!installed());
    for gone in ["/usr/bin/recman", "/var/lib/recman", "/etc/recman"]
        .into_iter()
        .map(String::from)
        .chain(UNITS.iter().map(|u| format!("/lib/systemd/system/{u}")))
    {
        assert!(!Path::new(&gone).exists(), "{gone} is left after the purge");
    }
    assert!(
        !run("id", &["recman"]).status.success(),
        "the recman user is left"
    );
}
