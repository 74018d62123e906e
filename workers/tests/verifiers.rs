//! The verifiers against real things: `qemu-img check` of a real qcow2
//! image (sound, a missing tag, a damaged refcount block), the `checksum`
//! verifier on a `copy` snapshot (sealed, then a changed byte named), an
//! `exec` hook with its variables, and the cleanup on start of what a
//! killed verify worker left behind.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use recman_config::{Config, TargetConfig, VerifyConfig};
use recman_testkit::which;
use recman_workers::provider::CopyProvider;
use recman_workers::verify;

fn target(dir: &Path, body: &str) -> TargetConfig {
    let text = format!("[[target]]\nid = \"t1\"\n[target.writer]\ntype = \"none\"\n{body}");
    let c = Config::from_str(&text, dir.join("recman.toml")).expect("config");
    c.targets[0].clone()
}

fn vcfg(t: &TargetConfig) -> VerifyConfig {
    t.verify.clone().expect("[target.verify]")
}

const BUDGET: Duration = Duration::from_secs(60);

#[tokio::test]
async fn qemu_img_checks_a_real_qcow2_and_finds_damage() {
    if which("qemu-img").is_none() {
        assert!(std::env::var("CI").is_err(), "CI=true: qemu-img is required");
        eprintln!("skipped: needs qemu-img");
        return;
    }
    let d = tempfile::tempdir().expect("tempdir");
    let img = d.path().join("vm.qcow2");
    let img_s = img.to_str().expect("utf-8");
    let run = |args: &[&str]| {
        let st = std::process::Command::new("qemu-img")
            .args(args)
            .status()
            .expect("qemu-img");
        assert!(st.success(), "qemu-img {args:?}");
    };
    run(&["create", "-q", "-f", "qcow2", img_s, "16M"]);
    run(&["snapshot", "-c", "rm-verify-a1", img_s]);
    let t = target(
        d.path(),
        &format!(
            "[target.provider]\ntype = \"qcow2\"\nimage = \"{img_s}\"\n[target.verify]\ntype = \"qemu-img\"\n"
        ),
    );
    let v = vcfg(&t);
    let checked = verify::verify(&t, &v, "rm-verify-a1", BUDGET)
        .await
        .expect("a sound image");
    assert!(checked.contains("qemu-img check"), "{checked}");
    let e = verify::verify(&t, &v, "rm-other-a1", BUDGET)
        .await
        .expect_err("no such tag");
    assert_eq!(e.code, "snapshot_missing", "{e}");
    // Damage: zero the first refcount block (its offset is the first entry
    // of the refcount table, whose offset is at byte 48 of the header).
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .expect("open");
    let mut hdr = [0u8; 64];
    f.read_exact(&mut hdr).expect("header");
    let table = u64::from_be_bytes(hdr[48..56].try_into().expect("8 bytes"));
    f.seek(SeekFrom::Start(table)).expect("seek");
    let mut entry = [0u8; 8];
    f.read_exact(&mut entry).expect("entry");
    let block = u64::from_be_bytes(entry);
    assert!(block > 0, "a refcount block");
    f.seek(SeekFrom::Start(block)).expect("seek");
    f.write_all(&[0u8; 4096]).expect("zero");
    f.sync_all().expect("sync");
    drop(f);
    let e = verify::verify(&t, &v, "rm-verify-a1", BUDGET)
        .await
        .expect_err("damaged");
    assert_eq!(e.code, "image_corrupt", "{e}");
    assert!(e.message.contains("vm.qcow2"), "{e}");
}

#[tokio::test]
async fn checksum_seals_a_copy_snapshot_then_names_a_changed_byte() {
    let d = tempfile::tempdir().expect("tempdir");
    let src = d.path().join("src");
    let dest = d.path().join("snaps");
    fs::create_dir_all(src.join("base")).expect("mkdir");
    fs::write(src.join("base/16384"), vec![3u8; 300_000]).expect("write");
    fs::write(src.join("PG_VERSION"), b"16\n").expect("write");
    let t = target(
        d.path(),
        &format!(
            "[target.provider]\ntype = \"copy\"\nsource = \"{}\"\ndest = \"{}\"\n[target.verify]\ntype = \"checksum\"\n",
            src.display(),
            dest.display()
        ),
    );
    let v = vcfg(&t);
    CopyProvider::new(src.clone(), dest.clone())
        .snapshot_blocking("rm-s1-a1")
        .expect("snapshot");
    let first = verify::verify(&t, &v, "rm-s1-a1", BUDGET).await.expect("seal");
    assert!(first.starts_with("sealed: 2 files"), "{first}");
    let again = verify::verify(&t, &v, "rm-s1-a1", BUDGET)
        .await
        .expect("unchanged");
    assert!(again.contains("match the manifest"), "{again}");
    let f = dest.join("rm-s1-a1/base/16384");
    let mut bytes = fs::read(&f).expect("read");
    bytes[123_456] ^= 0x40;
    fs::write(&f, bytes).expect("write");
    let e = verify::verify(&t, &v, "rm-s1-a1", BUDGET)
        .await
        .expect_err("a changed byte");
    assert_eq!(e.code, "checksum_mismatch");
    assert!(e.message.contains("base/16384"), "{e}");
    let e = verify::verify(&t, &v, "rm-gone-a1", BUDGET)
        .await
        .expect_err("no such snapshot");
    assert_eq!(e.code, "snapshot_missing");
}

#[tokio::test]
async fn an_exec_verifier_gets_the_snapshot_in_its_variables_only() {
    let d = tempfile::tempdir().expect("tempdir");
    let t = target(
        d.path(),
        "[target.provider]\ntype = \"copy\"\nsource = \"/srv/x\"\ndest = \"/srv/snaps\"\n[target.verify]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"test -z \\\"$RECMAN_AMQP_URL\\\" && echo checked $RECMAN_TARGET $RECMAN_SNAPSHOT $RECMAN_SNAPSHOT_LOCATION\"]\n",
    );
    let v = vcfg(&t);
    let checked = verify::verify(&t, &v, "rm-s1-a1", BUDGET).await.expect("hook ok");
    assert_eq!(checked, "checked t1 rm-s1-a1 /srv/snaps/rm-s1-a1");
    let t = target(
        d.path(),
        "[target.provider]\ntype = \"none\"\n[target.verify]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"echo eseutil: page 42 bad >&2; exit 1\"]\n",
    );
    let e = verify::verify(&t, &vcfg(&t), "rm-s1-a1", BUDGET)
        .await
        .expect_err("hook fails");
    assert!(e.message.contains("page 42 bad"), "{e}");
}

/// A verify worker killed mid-manifest leaves its temp file; the next
/// start removes it (a live process's is left alone).
#[test]
fn cleanup_on_start_removes_what_a_killed_verifier_left() {
    let d = tempfile::tempdir().expect("tempdir");
    let dest = d.path().join("snaps");
    fs::create_dir_all(&dest).expect("mkdir");
    let t = target(
        d.path(),
        &format!(
            "[target.provider]\ntype = \"copy\"\nsource = \"/srv/x\"\ndest = \"{}\"\n[target.verify]\ntype = \"checksum\"\n",
            dest.display()
        ),
    );
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let dead = child.id();
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let left = dest.join(format!(".rm-s1-a1.manifest.tmp.{dead}"));
    fs::write(&left, b"half a manifest").expect("write");
    let live = dest.join(format!(".rm-s2-a1.manifest.tmp.{}", std::process::id()));
    fs::write(&live, b"in progress").expect("write");
    let removed = verify::cleanup(&t);
    assert_eq!(removed, vec![left.display().to_string()]);
    assert!(!left.exists() && live.exists());
}
