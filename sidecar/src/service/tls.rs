//! The gRPC server's TLS, with the serving certificate re-read when its files change:
//! cert-manager renews certificates in place (the same Secret, the same mounted paths), and a
//! sidecar that read them once would serve the expired one until restarted. The key pair is
//! checked at most once a second, on a handshake; a pair that cannot be read or parsed (a
//! rotation half-written) keeps the previous one. Client certificates signed by `ca_cert` are
//! required, as in Medusa.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// How often the files are looked at, at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A handshake that takes longer is dropped.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// The serving certificate, re-read when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    hash: blake3::Hash,
    key: Arc<CertifiedKey>,
    checked: Instant,
}

fn load(cert: &Path, key: &Path, provider: &rustls::crypto::CryptoProvider) -> Result<Loaded, String> {
    let cert_pem = std::fs::read(cert).map_err(|e| format!("[grpc] tls_cert {}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("[grpc] tls_key {}: {e}", key.display()))?;
    let hash = blake3::Hasher::new().update(&cert_pem).update(&key_pem).finalize();
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("[grpc] tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("[grpc] tls_cert {} holds no PEM certificate", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("[grpc] tls_key {}: {e}", key.display()))?;
    let certified = CertifiedKey::from_der(chain, der, provider)
        .map_err(|e| format!("[grpc] tls_cert/tls_key do not form a key pair: {e}"))?;
    Ok(Loaded { hash, key: Arc::new(certified), checked: Instant::now() })
}

impl ReloadingCert {
    fn new(cert: PathBuf, key: PathBuf, provider: Arc<rustls::crypto::CryptoProvider>) -> Result<Self, String> {
        let loaded = load(&cert, &key, &provider)?;
        Ok(ReloadingCert { cert, key, provider, state: Mutex::new(loaded) })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut state = self.state.lock().expect("certificate lock");
        if state.checked.elapsed() >= CHECK_EVERY {
            state.checked = Instant::now();
            match load(&self.cert, &self.key, &self.provider) {
                Ok(new) if new.hash != state.hash => {
                    tracing::info!(cert = %self.cert.display(), "gRPC TLS certificate changed on disk: serving the new one");
                    *state = new;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "gRPC TLS certificate unreadable; still serving the previous one"),
            }
        }
        Some(state.key.clone())
    }
}

/// The server configuration for `[grpc]` TLS, `None` without `tls_cert`.
pub fn server_config(g: &crate::config::GrpcConfig) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    let (Some(cert), Some(key), Some(ca)) = (&g.tls_cert, &g.tls_key, &g.ca_cert) else { return Ok(None) };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let ca_pem = std::fs::read(ca).map_err(|e| format!("[grpc] ca_cert {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca_pem) {
        let c = c.map_err(|e| format!("[grpc] ca_cert {}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("[grpc] ca_cert {}: {e}", ca.display()))?;
    }
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("[grpc] ca_cert {}: {e}", ca.display()))?;
    let resolver = ReloadingCert::new(cert.clone(), key.clone(), provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(clients)
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// TLS connections accepted on `listener`: each handshake runs on its own task, so that a slow
/// or failing client delays nobody; failed handshakes are logged and dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
