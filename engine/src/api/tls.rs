//! TLS of the HTTP API (`[api] tls_cert`, `tls_key`): the server config
//! built from PEM files (TLS 1.2 and 1.3, rustls with ring, ALPN
//! `http/1.1`), kept current by a SIGHUP that reads both files again. A
//! reload that fails keeps the certificate in use and says why.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// The certificate and key files, and the server config read from them.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads `cert` (a PEM chain, leaf first) and `key` (a PEM private key).
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Tls>> {
        let config = server_config(cert, key)?;
        Ok(Arc::new(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(config),
        }))
    }

    /// The certificate file.
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// The server config for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads both files again; on an error the current config stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// Reloads on every SIGHUP until the process ends (spawn it).
    pub async fn reload_on_hangup(self: Arc<Tls>) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot watch SIGHUP: the API's certificate is not reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            match self.reload() {
                Ok(()) => {
                    tracing::info!(cert = %self.cert.display(), "SIGHUP: the API's certificate was read again")
                }
                Err(e) => tracing::error!(
                    "SIGHUP: the API keeps its certificate, reading the new one failed: {e:#}"
                ),
            }
        }
    }
}

fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = {
        let f = std::fs::File::open(cert).with_context(|| format!("reading tls_cert {}", cert.display()))?;
        pem_certs(&mut BufReader::new(f))
            .with_context(|| format!("tls_cert {} is not a PEM certificate chain", cert.display()))?
    };
    if certs.is_empty() {
        bail!(
            "tls_cert {} holds no certificate (PEM, leaf first)",
            cert.display()
        );
    }
    let key_der: PrivateKeyDer<'static> = {
        let f = std::fs::File::open(key).with_context(|| format!("reading tls_key {}", key.display()))?;
        pem_key(&mut BufReader::new(f))
            .with_context(|| format!("tls_key {} is not a PEM private key", key.display()))?
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS 1.2 and 1.3")?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .with_context(|| {
            format!(
                "tls_key {} does not fit tls_cert {}",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every `CERTIFICATE` block of a PEM stream.
fn pem_certs(r: &mut dyn std::io::BufRead) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_reader_iter(r)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM stream.
fn pem_key(r: &mut dyn std::io::BufRead) -> anyhow::Result<PrivateKeyDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_reader(r).map_err(|e| anyhow::anyhow!("{e}"))
}
