//! Mutual TLS between Kura processes (docs/security.md).
//!
//! A cluster has one CA. Every process holds a certificate it signed and
//! presents it on every internal connection, as server and as client; a peer
//! whose certificate the CA did not sign, or that speaks plaintext, is
//! refused by the handshake. The process installs its files once at start
//! ([`install`]); every channel ([`crate::channel`]) and every internal server
//! ([`server_builder`]) then uses them. One process has one identity, so a
//! process-wide setting is what it is, and no constructor of the dozen client
//! types has to carry it.
//!
//! Certificates carry a role in their subject's common name: `kura-admin`
//! may use PD's mutating HTTP routes (`pdctl`), any other name is a node.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, Server, ServerTlsConfig};

/// The common name of an admin certificate.
pub const ADMIN_COMMON_NAME: &str = "kura-admin";

/// How long a TLS handshake may take before the connection is dropped (a
/// peer that opens a connection and sends nothing holds no task for long).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("cluster TLS was already installed in this process")]
    AlreadyInstalled,
}

/// Where a process's TLS files are.
#[derive(Clone, Debug)]
pub struct TlsPaths {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// This process's certificate chain (PEM), signed by the CA.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// A process's cluster TLS material, checked to parse.
pub struct ClusterTls {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

static INSTALLED: OnceLock<Arc<ClusterTls>> = OnceLock::new();

/// Loads `paths` and makes them this process's internal TLS identity.
pub fn install(paths: &TlsPaths) -> Result<(), TlsError> {
    let tls = ClusterTls::load(paths)?;
    INSTALLED
        .set(Arc::new(tls))
        .map_err(|_| TlsError::AlreadyInstalled)
}

/// The installed identity, if this process runs with cluster TLS.
pub fn installed() -> Option<Arc<ClusterTls>> {
    INSTALLED.get().cloned()
}

/// The server every internal gRPC service runs on: [`server_builder`]'s.
pub type InternalServer =
    Server<tower::layer::util::Stack<crate::cluster_id::CheckLayer, tower::layer::util::Identity>>;

/// A gRPC server as every internal service runs it: TCP_NODELAY, TCP and
/// HTTP/2 keepalive (a peer that vanished without a FIN is noticed), large
/// HTTP/2 frames (`channel::MAX_FRAME_SIZE`), and
/// mutual TLS when installed; requests stamped with another cluster's id
/// are refused (`crate::cluster_id`).
pub fn server_builder() -> Result<InternalServer, TlsError> {
    let b = Server::builder()
        .layer(crate::cluster_id::CheckLayer)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .max_frame_size(Some(crate::channel::MAX_FRAME_SIZE))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    match installed() {
        None => Ok(b),
        Some(tls) => b
            .tls_config(tls.tonic_server())
            .map_err(|e| TlsError::Config(e.to_string())),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            path: path.to_path_buf(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

impl ClusterTls {
    pub fn load(paths: &TlsPaths) -> Result<ClusterTls, TlsError> {
        let (ca_pem, cert_pem, key_pem) = (read(&paths.ca)?, read(&paths.cert)?, read(&paths.key)?);
        let ca = certs(&paths.ca, &ca_pem)?;
        let chain = certs(&paths.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Invalid {
            path: paths.key.clone(),
            reason: e.to_string(),
        })?;
        let tls = ClusterTls {
            ca_pem,
            cert_pem,
            key_pem,
            ca,
            chain,
            key,
        };
        // Fail at start, not at the first connection.
        tls.rustls_server(true)?;
        tls.rustls_client()?;
        Ok(tls)
    }

    /// For tonic channels: trust only the cluster CA, present our certificate.
    pub fn tonic_client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// For tonic servers: a client certificate signed by the CA is required.
    pub fn tonic_server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.ca {
            roots
                .add(c.clone())
                .map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
        }
        Ok(roots)
    }

    // ring, not aws-lc-rs: aws-lc-sys adds 45-80 s to every cold build
    // (DEPENDENCIES.md). rustls 0.23.48 deprecates ring's provider only
    // because it lacks post-quantum key exchange; tonic uses the same one.
    #[allow(deprecated)]
    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A rustls server config for HTTP servers (PD's API): our certificate,
    /// and client certificates verified against the CA, required unless
    /// `require_client_cert` is false.
    pub fn rustls_server(
        &self,
        require_client_cert: bool,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Self::provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider.clone(),
        );
        let verifier = if require_client_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        }
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// A rustls client config for HTTP clients (pdctl, `kura dev`'s probes).
    pub fn rustls_client(&self) -> Result<rustls::ClientConfig, TlsError> {
        client_config(
            self.roots()?,
            Some((self.chain.clone(), self.key.clone_key())),
        )
    }
}

/// A rustls client config trusting `ca_pem` only, presenting `identity`
/// (certificate chain and key PEM) when given.
pub fn rustls_client_from_pem(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let ca_pem = read(ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca, &ca_pem)? {
        roots
            .add(c)
            .map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
    }
    let identity = match identity {
        None => None,
        Some((cert, key)) => {
            let chain = certs(cert, &read(cert)?)?;
            let key =
                PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsError::Invalid {
                    path: key.to_path_buf(),
                    reason: e.to_string(),
                })?;
            Some((chain, key))
        }
    };
    client_config(roots, identity)
}

fn client_config(
    roots: rustls::RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let b = rustls::ClientConfig::builder_with_provider(ClusterTls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(b.with_no_client_auth()),
        Some((chain, key)) => b
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string())),
    }
}
