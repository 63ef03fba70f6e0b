//! HTTPS on the S3 port: rustls (ring provider), HTTP/1.1 and h2 by ALPN.
//!
//! The certificate is resolved per handshake from a slot that a reload
//! swaps, so a new certificate (SIGHUP, or its files changing on disk)
//! serves new connections while open ones go on with the one they got.
//! A reload that fails to parse keeps the current certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// The S3 port's certificate chain and private key (PEM files).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The listener's TLS acceptor and the certificate it serves.
pub struct Tls {
    acceptor: TlsAcceptor,
    cert: Arc<ReloadingCert>,
}

impl Tls {
    /// Loads the files; fails if they don't hold a usable certificate and key.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        // ring is the provider we build (DEPENDENCIES.md: aws-lc-rs costs a
        // minute of build); it has no post-quantum key exchange, hence the
        // deprecation this silences.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = Arc::new(ReloadingCert {
            current: RwLock::new(Arc::new(load_pair(files, &provider)?)),
            stamp: Mutex::new(stamp(files)),
            files: files.clone(),
            provider: provider.clone(),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert,
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reloads the certificate on SIGHUP and when its files change, until
    /// `shutdown`.
    pub async fn run_reloader(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let cert = self.cert.clone();
        kura_pd_client::tls::watch_files("the S3 certificate", shutdown, move |forced| {
            cert.reload(forced)
        })
        .await;
    }
}

/// The certificate handed to each handshake, swapped by reloads.
#[derive(Debug)]
struct ReloadingCert {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of (cert, key) at the last load.
    stamp: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl ReloadingCert {
    /// Loads the files again if `forced` or if they changed since last time.
    fn reload(&self, forced: bool) {
        let now = stamp(&self.files);
        {
            let Ok(mut last) = self.stamp.lock() else {
                return;
            };
            if !forced && (now.is_none() || *last == now) {
                return;
            }
            *last = now;
        }
        match load_pair(&self.files, &self.provider) {
            Ok(ck) => {
                if let Ok(mut cur) = self.current.write() {
                    *cur = Arc::new(ck);
                }
                tracing::info!(cert = %self.files.cert.display(), "S3 TLS certificate reloaded");
            }
            // Half-written files: the next change (or SIGHUP) tries again.
            Err(e) => {
                tracing::warn!(error = %e, "S3 TLS certificate not reloaded; keeping the current one")
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn stamp(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&files.cert)?, m(&files.key)?))
}

fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let invalid = |p: &Path, reason: String| TlsError::Invalid {
        path: p.to_path_buf(),
        reason,
    };
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(invalid(&files.cert, "no certificate in the file".into()));
    }
    let key_pem = read(&files.key)?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| invalid(&files.key, e.to_string()))?;
    // from_der checks the key matches the certificate.
    CertifiedKey::from_der(chain, key, provider).map_err(|e| invalid(&files.key, e.to_string()))
}
