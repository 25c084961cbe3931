//! TLS to servers outside the cluster, which do not chain to the cluster CA: a host's HTTPS
//! health checks (DESIGN.md §6g). They trust the system's certificate store, or, for a check
//! registered with `tls_skip_verify` (Consul's `TLSSkipVerify`), any certificate: the
//! handshake's signatures are still checked, the chain and name are not.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{client_builder, provider};

/// A reqwest client builder for servers outside the cluster: verified against the system's
/// roots, or not verified at all with `skip_verify`.
pub fn outside_client(skip_verify: bool) -> reqwest::ClientBuilder {
    let config = if skip_verify {
        client_builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::debug!(%error, "a system certificate could not be read");
        }
        let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
        client_builder()
            .with_root_certificates(roots)
            .with_no_client_auth()
    };
    reqwest::Client::builder().tls_backend_preconfigured(config)
}

/// Accepts any certificate (only for `tls_skip_verify`); signatures are verified as usual.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
