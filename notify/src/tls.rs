//! TLS trust of the sinks: the system's CA certificates plus a sink's own
//! `ca_file`, on rustls with ring (the workspace's one TLS stack).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// The PEM certificates of `ca_file`.
pub fn read_ca(ca_file: &Path) -> Result<Vec<u8>, String> {
    let pem =
        std::fs::read(ca_file).map_err(|e| format!("cannot read ca_file {}: {e}", ca_file.display()))?;
    let n = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_file {}: not PEM certificates: {e}", ca_file.display()))?
        .len();
    if n == 0 {
        return Err(format!("ca_file {} holds no PEM certificate", ca_file.display()));
    }
    Ok(pem)
}

/// A client config trusting the system's roots and `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = ca_file {
        let pem = read_ca(ca)?;
        for c in CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        }
    }
    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}
