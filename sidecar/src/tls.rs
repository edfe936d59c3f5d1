//! TLS client configuration shared by the health probe and the Management API client: the
//! server's chain verified against a CA, with its host name checked only when asked for. That
//! is how k8ssandra-operator's gRPC client and cass-operator's Management API client verify
//! (the chain, no host name): certificates that work with them need not name 127.0.0.1 or the
//! pod, so medusa-rs must not require it either.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// Which servers to trust.
pub enum Trust {
    /// Those whose chain leads to a certificate of `pem`; the name only when `check_name`.
    Ca {
        /// PEM certificates.
        pem: Vec<u8>,
        /// Check the server's name too.
        check_name: bool,
    },
    /// Any server (handshake signatures are still checked).
    Anything,
}

/// A client configuration with `trust` and, if given, a client identity (PEM chain, PEM key).
pub fn client_config(trust: Trust, identity: Option<(Vec<u8>, Vec<u8>)>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier = match trust {
        Trust::Anything => Verifier { chain: None, check_name: false, provider: provider.clone() },
        Trust::Ca { pem, check_name } => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(c.map_err(|e| format!("CA certificate: {e}"))?)
                    .map_err(|e| format!("CA certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("the CA file holds no PEM certificate".into());
            }
            let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| e.to_string())?;
            Verifier { chain: Some(chain), check_name, provider: provider.clone() }
        }
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier));
    match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("client key: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The server verifier: the chain against the CA (`chain`), the name only when `check_name`;
/// without a CA any certificate (`-tls-no-verify`). Handshake signatures are always checked.
#[derive(Debug)]
pub struct Verifier {
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end: &CertificateDer<'_>,
        mid: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end, mid, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
