//! The 3PAR tests' harness: a fake array (HTTP or HTTPS with a fresh
//! self-signed certificate) and the recman config that points at it.

use std::path::{Path, PathBuf};

use crate::wsapi_fake::{FakeWsapi, TlsFiles};
use recman_config::{Config, ProviderConfig, ThreeParConfig};

pub const USER: &str = "recman";
/// Distinctive, so a test can grep for it in logs, events and errors.
pub const PASSWORD: &str = "Pw-9f3c2e71-never-log-me";

pub enum Scheme {
    Http,
    /// HTTPS, trusted through `ca_file`.
    Https,
    /// HTTPS with `insecure_skip_verify = true`.
    HttpsInsecure,
}

/// A fake array plus the `[array.a]` section that reaches it.
pub struct Array {
    pub fake: FakeWsapi,
    /// `[array.a] …` (password in `<dir>/a.password`).
    pub section: String,
    pub ca_file: Option<PathBuf>,
}

pub async fn array(dir: &Path, scheme: Scheme) -> Array {
    let pw = dir.join("a.password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let (fake, trust, ca_file) = match scheme {
        Scheme::Http => (
            FakeWsapi::start_http(USER, PASSWORD).await.unwrap(),
            String::new(),
            None,
        ),
        Scheme::Https | Scheme::HttpsInsecure => {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            let tls = TlsFiles {
                cert_pem: ck.cert.pem(),
                key_pem: ck.signing_key.serialize_pem(),
            };
            let fake = FakeWsapi::start_https(USER, PASSWORD, &tls).await.unwrap();
            if matches!(scheme, Scheme::Https) {
                let ca = dir.join("a-ca.pem");
                std::fs::write(&ca, &tls.cert_pem).unwrap();
                (fake, format!("ca_file = \"{}\"\n", ca.display()), Some(ca))
            } else {
                (fake, "insecure_skip_verify = true\n".to_string(), None)
            }
        }
    };
    let section = format!(
        "[array.a]\nurl = \"{}\"\nuser = \"{USER}\"\npassword_file = \"{}\"\ntimeout = \"5s\"\n{trust}",
        fake.base_url(),
        pw.display()
    );
    Array {
        fake,
        section,
        ca_file,
    }
}

/// The `3par` provider config of a one-target config; `object` is e.g.
/// `volume = "db01"`, `extra` more provider keys.
pub fn provider_config(dir: &Path, section: &str, object: &str, extra: &str) -> ThreeParConfig {
    let toml = format!(
        "{section}\n[[target]]\nid = \"db01\"\npool = \"host.mbx01\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"3par\"\narray = \"a\"\n{object}\n{extra}\n"
    );
    let cfg = Config::from_str(&toml, dir.join("recman.toml")).unwrap();
    assert_eq!(cfg.targets[0].provider_pool.as_str(), "array.a");
    match &cfg.targets[0].provider {
        ProviderConfig::ThreePar(c) => c.clone(),
        other => panic!("not a 3par provider: {other:?}"),
    }
}
