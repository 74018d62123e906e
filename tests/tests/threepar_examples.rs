//! The 3PAR example configs in deploy/examples load, and the mailbox host's
//! and the backup server's views of each target agree.

use std::path::PathBuf;

use recman_config::{Config, ProviderConfig, ThreeParObject};

fn example(name: &str) -> Config {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name);
    Config::load(&p).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn backup_server_and_mailbox_host_examples_are_valid_and_agree() {
    let server = example("3par-backup-server.toml");
    let host = example("3par-mailbox-host.toml");
    assert_eq!(
        server.worker.as_ref().unwrap().pools.as_ref().unwrap()[0].as_str(),
        "array.3par-a"
    );
    assert_eq!(
        host.worker.as_ref().unwrap().pools.as_ref().unwrap()[0].as_str(),
        "host.mbx01"
    );
    assert_eq!(server.targets.len(), 2);
    assert_eq!(server.targets.len(), host.targets.len());
    for (s, h) in server.targets.iter().zip(&host.targets) {
        assert_eq!(s.id, h.id);
        assert_eq!(s.pool, h.pool, "{}", s.id);
        assert_eq!(s.provider_pool, h.provider_pool, "{}", s.id);
        assert_eq!(s.provider_pool.as_str(), "array.3par-a");
        assert_eq!(h.writer.kind(), "exec", "the writer runs on the mailbox host");
        // The worker of each side compares the part of the engine's
        // fingerprint its stages use: the mailbox host the writer, the
        // backup server's array worker the provider (its own config).
        assert_eq!(s.writer, h.writer, "{}: the writer as the host has it", s.id);
        let ProviderConfig::ThreePar(p) = &s.provider else {
            panic!("{}: not a 3par provider", s.id)
        };
        assert_eq!(p.array.api_url, "https://3par-a.example.com:8080/api/v1");
        assert!(p.array.ca_file.is_some() && !p.array.insecure_skip_verify);
    }
    let ProviderConfig::ThreePar(p) = &server.targets[1].provider else {
        unreachable!()
    };
    assert_eq!(p.object, ThreeParObject::VolumeSet("MBX01-DB02-SET".into()));
}

#[test]
fn recman_validate_config_accepts_the_examples() {
    let bin = recman_testkit::recman_bin();
    for name in ["3par-backup-server.toml", "3par-mailbox-host.toml"] {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/examples")
            .join(name);
        // --engine: the hooks of the mailbox host do not exist on this one.
        let out = std::process::Command::new(&bin)
            .args(["validate-config", "--engine"])
            .arg(&p)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("valid, 2 target(s)"), "{stdout}");
        assert!(stdout.contains("provider_pool=array.3par-a"), "{stdout}");
    }
}
