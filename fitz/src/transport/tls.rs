//! TLS for `tls://` and `wss://`: rustls with the `ring` provider (pure Rust
//! plus ring's assembly; no C toolchain or cmake needed).

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::BoxedStream;
use crate::error::{Error, Result};
use crate::options::TlsConfig;

/// Builds the rustls client configuration once, when the client is built, so
/// a bad CA bundle fails `build()` rather than every connection attempt.
pub(crate) fn client_config(config: &TlsConfig) -> Result<Arc<ClientConfig>> {
    let roots = match config {
        TlsConfig::Rustls(c) => return Ok(c.clone()),
        TlsConfig::SystemRoots => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::invalid(
                    "no usable system root certificates; use TlsConfig::CustomCa",
                ));
            }
            roots
        }
        TlsConfig::CustomCa(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| Error::invalid(format!("invalid CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::invalid(format!("invalid CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(Error::invalid("the CA PEM holds no certificate"));
            }
            roots
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

pub(crate) async fn handshake(
    config: &Arc<ClientConfig>,
    host: &str,
    raw: BoxedStream,
) -> Result<BoxedStream> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::invalid(format!("invalid TLS server name {host:?}: {e}")))?;
    let tls = TlsConnector::from(config.clone())
        .connect(name, raw)
        .await
        .map_err(|e| Error::io("TLS handshake failed", e))?;
    Ok(Box::new(tls))
}
