//! TLS on the HTTP API (issue 20): `recman up` with `[api] tls_cert` and
//! `tls_key` (a test CA from rcgen) speaks HTTPS only, announces an
//! `https://` URL, and the read commands reach it through `[api] ca_file`;
//! plain HTTP on its port and a client that does not trust the CA get
//! nothing; a SIGHUP reads the certificate again (a broken one is refused
//! and the old one kept). Beyond loopback, an API without TLS is refused
//! unless `insecure_http = true`, before anything is bound.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use recman_testkit::{free_port, recman_bin, text, wait_until, DEADLINE};

/// A CA and certificates for 127.0.0.1 that it signs.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for 127.0.0.1 named `cn`: (cert PEM, key PEM, DER).
    fn server(&self, cn: &str) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// The DER of the certificate the server on `port` presents, trusting `ca`.
async fn presented(port: u16, ca: &str) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    Ok(conn.peer_certificates().unwrap()[0].to_vec())
}

use rustls::pki_types::pem::PemObject;

/// A `recman up` with the TLS config of `dir`, killed when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// `DIR/recman.toml`: `[api]` with `api` (its lines), one `none` target.
fn write_config(dir: &Path, api: &str) -> PathBuf {
    let p = dir.join("recman.toml");
    let target =
        "[[target]]\nid = \"t\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"none\"\n";
    std::fs::write(&p, format!("[api]\n{api}\n{target}")).unwrap();
    p
}

/// The API on 127.0.0.1:`port` with the certificate files of `dir`.
fn tls_config(dir: &Path, port: u16) -> PathBuf {
    let d = dir.display();
    write_config(
        dir,
        &format!(
            "listen = \"127.0.0.1:{port}\"\ntls_cert = \"{d}/cert.pem\"\ntls_key = \"{d}/key.pem\"\n\
             ca_file = \"{d}/ca.pem\""
        ),
    )
}

fn write_pair(dir: &Path, (cert, key, _): &(String, String, Vec<u8>)) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_speaks_https_only_with_its_certificate_and_reloads_it_on_sighup() {
    let dir = recman_testkit::temp_dir();
    let d = dir.path();
    let ca = Ca::new("recman test CA");
    std::fs::write(d.join("ca.pem"), &ca.pem).unwrap();
    let first = ca.server("recman api one");
    write_pair(d, &first);
    let port = free_port();
    let cfg = tls_config(d, port);
    let data = d.join("data");
    let mut child = Command::new(recman_bin())
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .arg("up")
        .env_remove("RECMAN_DATA_DIR")
        .env_remove("RECMAN_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let up = Up(child);
    let mut lines = BufReader::new(stdout).lines();
    let said = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(said.contains(&format!("https://127.0.0.1:{port}")), "{said:?}");
    std::thread::spawn(move || for _ in lines {});
    let (log_tx, log_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(l);
        }
    });

    // HTTPS with the CA: the certificate in the files.
    let rt = tokio::runtime::Handle::current();
    let pem = ca.pem.clone();
    let got = tokio::task::spawn_blocking(move || {
        let mut last = Err(String::new());
        wait_until("the API's TLS handshake", DEADLINE, || {
            last = rt.block_on(presented(port, &pem));
            last.is_ok()
        });
        last
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, first.2, "the server presents tls_cert");
    let disc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("server.json")).unwrap()).unwrap();
    assert_eq!(disc["url"], format!("https://127.0.0.1:{port}"));
    assert_eq!(disc["tls_cert"], d.join("cert.pem").display().to_string());

    // The read commands find it and trust it through [api] ca_file.
    let out = Command::new(recman_bin())
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .args(["targets", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("\"t\""), "{}", text(&out));
    // Through the server, not by reading the data dir after a failed handshake.
    assert!(!text(&out).contains("does not answer"), "{}", text(&out));

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/1.1 200"), "plain HTTP was served");
    // A client that trusts another CA fails its handshake.
    let other = Ca::new("someone else's CA");
    assert!(presented(port, &other.pem).await.is_err());

    // SIGHUP with a new certificate: new handshakes see it.
    let second = ca.server("recman api two");
    write_pair(d, &second);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(up.0.id() as i32, libc::SIGHUP) };
    let pem = ca.pem.clone();
    let rt = tokio::runtime::Handle::current();
    let want = second.2.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("the new certificate after SIGHUP", DEADLINE, || {
            rt.block_on(presented(port, &pem)).is_ok_and(|c| c == want)
        })
    })
    .await
    .unwrap();
    // A broken one: refused, said, and the one in use stays.
    std::fs::write(d.join("cert.pem"), "not a certificate").unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(up.0.id() as i32, libc::SIGHUP) };
    let said = loop {
        let l = log_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a log line about the failed reload");
        if l.contains("keeps its certificate") {
            break l;
        }
    };
    assert!(said.contains("cert.pem"), "{said}");
    assert_eq!(presented(port, &ca.pem).await.unwrap(), second.2);
    drop(up);
}

#[test]
fn beyond_loopback_without_tls_the_api_is_refused_before_anything_is_bound() {
    let dir = recman_testkit::temp_dir();
    let d = dir.path();
    std::fs::write(d.join("token"), "s3cret\n").unwrap();
    let token = format!("token_file = \"{}/token\"", d.display());
    let cfg = write_config(d, &token);
    // A documentation address (TEST-NET-1): refused before any bind.
    let out = Command::new(recman_bin())
        .arg("--data-dir")
        .arg(d.join("data"))
        .arg("--config")
        .arg(&cfg)
        .args(["up", "--listen", "192.0.2.10:7080"])
        .env_remove("RECMAN_DATA_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("192.0.2.10:7080") && text(&out).contains("no TLS"),
        "{}",
        text(&out)
    );
    assert!(!d.join("data/server.json").exists());
    // In the file: refused with file, line and key.
    let cfg = write_config(d, &format!("listen = \"192.0.2.10:7080\"\n{token}"));
    let out = Command::new(recman_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("validate-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("recman.toml:2:") && text(&out).contains("api.listen"),
        "{}",
        text(&out)
    );
}
