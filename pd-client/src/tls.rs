//! Mutual TLS between Kura processes (docs/security.md, decisions 0026 and 0046).
//!
//! A cluster has one CA (or, during a rollover, a bundle of the old and the
//! new). Every process holds a certificate it signed and presents it on every
//! internal connection, as server and as client; a peer whose certificate the
//! CA did not sign, that a CRL revokes, or that speaks plaintext, is refused by
//! the handshake. The process installs its files once at start ([`install`]);
//! every channel ([`crate::channel`]) and every internal server ([`incoming`])
//! then uses them. One process has one identity, so a process-wide setting is
//! what it is, and no constructor of the dozen client types has to carry it.
//!
//! The material is live: every handshake reads the current certificate, CA
//! bundle and CRLs from one slot, which [`run_reloader`] swaps when the files
//! change or on SIGHUP. Open connections keep what they were made with; a
//! half-written or unparseable file keeps the current material.
//!
//! Certificates carry a role in their subject's common name: `kura-admin`
//! may use PD's mutating HTTP routes (`pdctl`), any other name is a node.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;
use tonic::transport::Server;

/// The common name of an admin certificate.
pub const ADMIN_COMMON_NAME: &str = "kura-admin";

/// How long a TLS handshake may take before the connection is dropped (a
/// peer that opens a connection and sends nothing holds no task for long).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the files' modification times are looked at.
const POLL_EVERY: Duration = Duration::from_secs(2);

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
    /// The cluster CA certificate (PEM); may hold several (a CA rollover).
    pub ca: PathBuf,
    /// This process's certificate chain (PEM), signed by the CA.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// A process's cluster TLS material, checked to parse, reloadable.
pub struct ClusterTls {
    live: Arc<Live>,
    /// Internal gRPC's configs (h2 only), made once: they read the live
    /// material at every handshake.
    grpc_server: Arc<rustls::ServerConfig>,
    grpc_client: Arc<rustls::ClientConfig>,
}

static INSTALLED: OnceLock<Arc<ClusterTls>> = OnceLock::new();

/// Loads `paths` and makes them this process's internal TLS identity.
pub fn install(paths: &TlsPaths) -> Result<(), TlsError> {
    install_with_crl(paths, None)
}

/// [`install`], with the certificate revocation lists (PEM) in `crl`: a peer
/// whose certificate one of them revokes fails the handshake.
pub fn install_with_crl(paths: &TlsPaths, crl: Option<&Path>) -> Result<(), TlsError> {
    let tls = ClusterTls::load_with_crl(paths, crl)?;
    INSTALLED
        .set(Arc::new(tls))
        .map_err(|_| TlsError::AlreadyInstalled)
}

/// The installed identity, if this process runs with cluster TLS.
pub fn installed() -> Option<Arc<ClusterTls>> {
    INSTALLED.get().cloned()
}

/// Reloads the installed material on SIGHUP and whenever its files change,
/// until `shutdown` is true. Returns at once without cluster TLS.
pub async fn run_reloader(shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(tls) = installed() else {
        return;
    };
    watch_files("cluster TLS", shutdown, move |forced| {
        tls.reload(forced);
    })
    .await;
}

/// Calls `reload(true)` on every SIGHUP and `reload(false)` every 2 s (it
/// looks whether its files changed), on a blocking thread (reading and
/// parsing a few small files), until `shutdown` is true. `what` names the
/// material in the one warning this can log. The S3 port's certificate and
/// the cluster's TLS material both reload this way.
pub async fn watch_files(
    what: &'static str,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    reload: impl Fn(bool) + Send + Sync + 'static,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let reload = Arc::new(reload);
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; {what} reloads on file change only");
            None
        }
    };
    let mut tick = tokio::time::interval(POLL_EVERY);
    loop {
        let forced = tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
            _ = tick.tick() => false,
            r = shutdown.wait_for(|s| *s) => { let _ = r; return; }
        };
        let r = reload.clone();
        let _ = tokio::task::spawn_blocking(move || r(forced)).await;
    }
}

/// The server every internal gRPC service runs on: [`server_builder`]'s.
pub type InternalServer =
    Server<tower::layer::util::Stack<crate::cluster_id::CheckLayer, tower::layer::util::Identity>>;

/// A gRPC server as every internal service runs it: TCP_NODELAY, TCP and
/// HTTP/2 keepalive (a peer that vanished without a FIN is noticed), large
/// HTTP/2 frames (`channel::MAX_FRAME_SIZE`); requests stamped with another
/// cluster's id are refused (`crate::cluster_id`). Its connections must come
/// through [`incoming`], which does the mutual TLS.
pub fn server_builder() -> Result<InternalServer, TlsError> {
    Ok(Server::builder()
        .layer(crate::cluster_id::CheckLayer)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .max_frame_size(Some(crate::channel::MAX_FRAME_SIZE))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20))))
}

/// A connection of an internal server: plaintext without cluster TLS,
/// otherwise one whose mutual-TLS handshake has succeeded.
pub enum ServerIo<IO> {
    Plain(IO),
    Tls(Box<TlsConn<IO>>),
}

/// A TLS connection of an internal server. When the material changes, the
/// peer's certificate is checked again on the next read: a peer revoked (or
/// whose CA was dropped) since its handshake loses the connection, others
/// keep it.
pub struct TlsConn<IO> {
    stream: tokio_rustls::server::TlsStream<IO>,
    live: Arc<Live>,
    /// The material generation the peer was last checked against.
    checked: u64,
}

impl<IO> TlsConn<IO> {
    fn still_trusted(&mut self) -> std::io::Result<()> {
        let g = self
            .live
            .generation
            .load(std::sync::atomic::Ordering::Acquire);
        if g == self.checked {
            return Ok(());
        }
        self.checked = g;
        let Some(certs) = self.stream.get_ref().1.peer_certificates() else {
            return Ok(());
        };
        let Some((end, rest)) = certs.split_first() else {
            return Ok(());
        };
        match self
            .live
            .get()
            .client_verifier
            .verify_client_cert(end, rest, UnixTime::now())
        {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "closing an internal connection: its peer's certificate is no longer trusted");
                Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))
            }
        }
    }
}

/// Wraps an internal server's accepted connections: with cluster TLS each
/// one is handshaken (with the material current at that moment, within
/// [`HANDSHAKE_TIMEOUT`], concurrently) and only those that succeed are
/// served; without it they pass as they are. Dropping the stream (the server
/// stopping) drops the listener and aborts handshakes in flight.
pub fn incoming<S, IO, IE>(incoming: S) -> impl Stream<Item = Result<ServerIo<IO>, IE>> + Send
where
    S: Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    IE: Send + 'static,
{
    // Without cluster TLS: plaintext. With it, a connection is served only
    // once its handshake succeeded.
    let mode = match installed() {
        None => Mode::Plain,
        Some(t) => Mode::Tls(
            tokio_rustls::TlsAcceptor::from(t.grpc_server.clone()),
            t.live.clone(),
        ),
    };
    struct State<S, IO> {
        inner: Pin<Box<S>>,
        handshakes: tokio::task::JoinSet<
            Result<
                std::io::Result<tokio_rustls::server::TlsStream<IO>>,
                tokio::time::error::Elapsed,
            >,
        >,
        mode: Mode,
        done: bool,
    }
    let state = State {
        inner: Box::pin(incoming),
        handshakes: tokio::task::JoinSet::new(),
        mode,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done && st.handshakes.is_empty() {
                return None;
            }
            tokio::select! {
                next = st.inner.next(), if !st.done => match next {
                    None => st.done = true,
                    Some(Err(e)) => return Some((Err(e), st)),
                    Some(Ok(io)) => match &st.mode {
                        Mode::Plain => return Some((Ok(ServerIo::Plain(io)), st)),
                        Mode::Tls(a, _) => {
                            let accept = a.accept(io);
                            st.handshakes.spawn(tokio::time::timeout(HANDSHAKE_TIMEOUT, accept));
                        }
                    },
                },
                Some(joined) = st.handshakes.join_next(), if !st.handshakes.is_empty() => match joined {
                    Ok(Ok(Ok(stream))) => {
                        let Mode::Tls(_, live) = &st.mode else { continue };
                        let conn = TlsConn {
                            stream,
                            live: live.clone(),
                            // Just verified with the current material.
                            checked: live.generation.load(std::sync::atomic::Ordering::Acquire),
                        };
                        return Some((Ok(ServerIo::Tls(Box::new(conn))), st));
                    }
                    Ok(Ok(Err(e))) => tracing::debug!(error = %e, "internal TLS handshake refused"),
                    Ok(Err(_)) => tracing::debug!("internal TLS handshake timed out"),
                    Err(e) => tracing::debug!(error = %e, "internal TLS handshake task failed"),
                },
            }
        }
    })
}

enum Mode {
    Plain,
    Tls(tokio_rustls::TlsAcceptor, Arc<Live>),
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(io) => Pin::new(io).poll_read(cx, buf),
            ServerIo::Tls(io) => {
                io.still_trusted()?;
                Pin::new(&mut io.stream).poll_read(cx, buf)
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(io) => Pin::new(io).poll_write(cx, buf),
            ServerIo::Tls(io) => Pin::new(&mut io.stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            ServerIo::Tls(io) => Pin::new(&mut io.stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerIo::Plain(io) => io.is_write_vectored(),
            ServerIo::Tls(io) => io.stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(io) => Pin::new(io).poll_flush(cx),
            ServerIo::Tls(io) => Pin::new(&mut io.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(io) => Pin::new(io).poll_shutdown(cx),
            ServerIo::Tls(io) => Pin::new(&mut io.stream).poll_shutdown(cx),
        }
    }
}

/// The transport's connection info (peer and local address), TLS or not.
impl<IO: Connected> Connected for ServerIo<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            ServerIo::Plain(io) => io.connect_info(),
            ServerIo::Tls(io) => io.stream.get_ref().0.connect_info(),
        }
    }
}

/// Dials internal gRPC peers over mutual TLS with the material current at
/// each connect (for tonic's `connect_with_connector_lazy`). The channel's
/// connect timeout bounds TCP and handshake together.
#[derive(Clone)]
pub struct Connector {
    config: Arc<rustls::ClientConfig>,
}

impl tower::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| bad(format!("{uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .ok_or_else(|| bad(format!("{uri}: no port")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name =
                ServerName::try_from(host.clone()).map_err(|e| bad(format!("{host}: {e}")))?;
            let tls = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                tokio_rustls::TlsConnector::from(config).connect(name, tcp),
            )
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))??;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// What every handshake reads: the files' current contents, parsed.
struct Material {
    key: Arc<CertifiedKey>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<WebPkiServerVerifier>,
    /// The serial numbers of our certificate, for the logs.
    serial: String,
}

/// The files and the slot reloads swap.
struct Live {
    paths: TlsPaths,
    crl: Option<PathBuf>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Material>>,
    /// Modification times of the files at the last load.
    stamp: Mutex<Option<Vec<SystemTime>>>,
    /// Bumped by every reload that took (open connections re-check peers).
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("cert", &self.paths.cert)
            .finish()
    }
}

impl Live {
    fn get(&self) -> Arc<Material> {
        // A poisoned lock still holds a whole Arc: a writer only swaps it.
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Modification times of the files; None if one is missing.
fn stamp(paths: &TlsPaths, crl: Option<&Path>) -> Option<Vec<SystemTime>> {
    [
        paths.ca.as_path(),
        paths.cert.as_path(),
        paths.key.as_path(),
    ]
    .into_iter()
    .chain(crl)
    .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, e))?;
    if certs.is_empty() {
        return Err(invalid(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn roots(path: &Path, ca: Vec<CertificateDer<'static>>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots
            .add(c)
            .map_err(|e| invalid(path, format!("CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The CRLs of a PEM file. An empty file is refused rather than read as "none
/// revoked": it is most likely one being written.
fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let pem = read(path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, e))?;
    if crls.is_empty() {
        return Err(invalid(path, "no CRL in the file"));
    }
    Ok(crls)
}

/// Hex of the serial number of a DER certificate, or "?" (logs only).
fn serial_of(der: &[u8]) -> String {
    // TBSCertificate: [0] version, then INTEGER serial. A tiny DER walk
    // rather than a parser dependency for one log field.
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = b.split_first()?;
        let (&l0, rest) = rest.split_first()?;
        let (len, rest) = if l0 < 0x80 {
            (l0 as usize, rest)
        } else {
            let n = (l0 & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    let serial = (|| {
        let (_, cert, _) = tlv(der)?;
        let (_, tbs, _) = tlv(cert)?;
        let (tag, first, rest) = tlv(tbs)?;
        let (tag, serial) = if tag == 0xa0 {
            let (t, s, _) = tlv(rest)?;
            (t, s)
        } else {
            (tag, first)
        };
        (tag == 0x02).then_some(serial)
    })();
    match serial {
        Some(s) => s.iter().map(|b| format!("{b:02x}")).collect(),
        None => "?".into(),
    }
}

impl ClusterTls {
    pub fn load(paths: &TlsPaths) -> Result<ClusterTls, TlsError> {
        Self::load_with_crl(paths, None)
    }

    /// Loads the files (and CRLs); fails if they are not usable.
    pub fn load_with_crl(paths: &TlsPaths, crl: Option<&Path>) -> Result<ClusterTls, TlsError> {
        let provider = provider();
        let crl = crl.map(Path::to_path_buf);
        let stamp = stamp(paths, crl.as_deref());
        let material = Material::load(paths, crl.as_deref(), &provider)?;
        let live = Live {
            paths: paths.clone(),
            crl,
            provider,
            current: RwLock::new(Arc::new(material)),
            stamp: Mutex::new(stamp),
            generation: std::sync::atomic::AtomicU64::new(0),
        };
        let live = Arc::new(live);
        let grpc_server = Arc::new(server_config(&live, &[b"h2"], true)?);
        let mut grpc_client = client_config(&live)?;
        grpc_client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClusterTls {
            live,
            grpc_server,
            grpc_client: Arc::new(grpc_client),
        })
    }

    /// Loads the files again if `forced` or if one changed since the last
    /// load; keeps the current material (with a warning) if they don't
    /// parse. Returns whether new material is in use.
    pub fn reload(&self, forced: bool) -> bool {
        let live = &self.live;
        let now = stamp(&live.paths, live.crl.as_deref());
        {
            let mut last = match live.stamp.lock() {
                Ok(l) => l,
                Err(p) => p.into_inner(),
            };
            if !forced && (now.is_none() || *last == now) {
                return false;
            }
            *last = now;
        }
        match Material::load(&live.paths, live.crl.as_deref(), &live.provider) {
            Ok(m) => {
                let serial = m.serial.clone();
                match live.current.write() {
                    Ok(mut c) => *c = Arc::new(m),
                    Err(p) => *p.into_inner() = Arc::new(m),
                }
                live.generation
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                tracing::info!(cert = %live.paths.cert.display(), %serial, "cluster TLS material reloaded");
                true
            }
            // Half-written files: the next change (or SIGHUP) tries again.
            Err(e) => {
                tracing::warn!(error = %e, "cluster TLS material not reloaded; keeping the current one");
                false
            }
        }
    }

    /// The serial number (hex) of the certificate in use.
    pub fn serial(&self) -> String {
        self.live.get().serial.clone()
    }

    /// A rustls server config for HTTP servers (PD's API), HTTP/2 and 1.1,
    /// with the live material; client certificates are required unless
    /// `require_client_cert` is false.
    pub fn rustls_server(
        &self,
        require_client_cert: bool,
    ) -> Result<rustls::ServerConfig, TlsError> {
        server_config(&self.live, &[b"h2", b"http/1.1"], require_client_cert)
    }

    /// A rustls client config with the live material (HTTP clients).
    pub fn rustls_client(&self) -> Result<rustls::ClientConfig, TlsError> {
        client_config(&self.live)
    }

    /// The connector internal gRPC channels dial with (HTTP/2 by ALPN).
    pub fn connector(&self) -> Connector {
        Connector {
            config: self.grpc_client.clone(),
        }
    }
}

/// A rustls server config with the live material: our current certificate,
/// client certificates verified against the current CA bundle and CRLs
/// (required unless `require_client_cert` is false).
fn server_config(
    live: &Arc<Live>,
    alpn: &[&[u8]],
    require_client_cert: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = Arc::new(LiveClientVerifier {
        live: live.clone(),
        mandatory: require_client_cert,
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(live.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(LiveCert(live.clone())));
    // A resumed session skips certificate verification: a certificate
    // revoked (or a CA dropped) after it was made would still get in.
    // Internal connections are long-lived, so full handshakes cost little.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// A rustls client config with the live material: the server verified
/// against the current CA bundle and CRLs, our current certificate
/// presented; no session resumption (see `server_config`).
fn client_config(live: &Arc<Live>) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(live.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(LiveServerVerifier(live.clone())))
        .with_client_cert_resolver(Arc::new(LiveCert(live.clone())));
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(cfg)
}

impl Material {
    /// Reads and checks every file; any failure leaves the caller's current
    /// material in place.
    fn load(
        p: &TlsPaths,
        crl: Option<&Path>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Material, TlsError> {
        let ca = certs(&p.ca, &read(&p.ca)?)?;
        let chain = certs(&p.cert, &read(&p.cert)?)?;
        let key = PrivateKeyDer::from_pem_slice(&read(&p.key)?).map_err(|e| invalid(&p.key, e))?;
        let serial = serial_of(chain[0].as_ref());
        // from_der checks that the key matches the certificate: a new
        // certificate beside the old key (files mid-rotation) is refused.
        let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| invalid(&p.key, e))?;
        let crls = match crl {
            Some(path) => crls(path)?,
            None => Vec::new(),
        };
        let what = match crl {
            Some(c) => format!("{} / {}", p.ca.display(), c.display()),
            None => p.ca.display().to_string(),
        };
        let roots = Arc::new(roots(&p.ca, ca)?);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .with_crls(crls.clone())
                // A CRL speaks for its issuer only: during a CA rollover the other
                // CA's certificates have no CRL, and are not refused for it.
                .allow_unknown_revocation_status()
                .build()
                .map_err(|e| TlsError::Config(format!("{what}: {e}")))?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .with_crls(crls)
            .allow_unknown_revocation_status()
            .build()
            .map_err(|e| TlsError::Config(format!("{what}: {e}")))?;
        let m = Material {
            key: Arc::new(key),
            client_verifier,
            server_verifier,
            serial,
        };
        // The certificate must chain to the bundle it comes with: a new
        // certificate of a CA not yet in the bundle would fail every
        // handshake with peers, so it is refused (and the current kept).
        m.server_verifier
            .verify_server_cert(
                &m.key.cert[0],
                &m.key.cert[1..],
                &ServerName::try_from("localhost").map_err(|e| TlsError::Config(e.to_string()))?,
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
            .or_else(|e| match e {
                // We only check the chain and revocation here, not the name.
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                | rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. },
                ) => Ok(()),
                // Our own certificate revoked: peers will refuse us, but the
                // CRL must still apply to them.
                rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked) => {
                    tracing::warn!(cert = %p.cert.display(), "this process's own certificate is revoked");
                    Ok(())
                }
                e => Err(invalid(&p.cert, format!("does not verify against {}: {e}", p.ca.display()))),
            })?;
        Ok(m)
    }
}

// ring, not aws-lc-rs: aws-lc-sys adds 45-80 s to every cold build
// (DEPENDENCIES.md). rustls 0.23.48 deprecates ring's provider only
// because it lacks post-quantum key exchange; tonic uses the same one.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Our current certificate, as server and as client.
#[derive(Debug)]
struct LiveCert(Arc<Live>);

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get().key.clone())
    }
}

impl ResolvesClientCert for LiveCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Client certificates checked against the current CA bundle and CRLs.
#[derive(Debug)]
struct LiveClientVerifier {
    live: Arc<Live>,
    mandatory: bool,
}

impl ClientCertVerifier for LiveClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No CA names are hinted: they live behind the lock and cannot be
    /// borrowed out. Clients (ours, OpenSSL's) send their only certificate
    /// anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.live
            .get()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.live
            .get()
            .client_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.live
            .get()
            .client_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.live.get().client_verifier.supported_verify_schemes()
    }
}

/// Server certificates checked against the current CA bundle and CRLs.
#[derive(Debug)]
struct LiveServerVerifier(Arc<Live>);

impl ServerCertVerifier for LiveServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.get().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .server_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .server_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.get().server_verifier.supported_verify_schemes()
    }
}

/// A rustls client config trusting `ca_pem` only, presenting `identity`
/// (certificate chain and key PEM) when given.
pub fn rustls_client_from_pem(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let roots = roots(ca, certs(ca, &read(ca)?)?)?;
    let identity = match identity {
        None => None,
        Some((cert, key)) => {
            let chain = certs(cert, &read(cert)?)?;
            let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| invalid(key, e))?;
            Some((chain, key))
        }
    };
    let b = rustls::ClientConfig::builder_with_provider(provider())
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
