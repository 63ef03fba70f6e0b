//! The S3 port's front door: the listener and everything a connection or a
//! request goes through before the S3 handler (`server.rs`) sees it.
//!
//! Per connection: the connection cap (`admission.rs`; an over-cap
//! connection is closed after its first answer, HTTP/2 with GOAWAY), TCP
//! keepalive and TCP_NODELAY, the first bytes awaited under the header
//! timeout (to tell h2c from HTTP/1.1 before hyper, whose version sniffing
//! has no timer), a write-stall timeout (tokio-io-timeout: a client that
//! reads nothing for `write_timeout` is dropped), the TLS handshake when
//! HTTPS is on (`tls.rs`, bounded by the header timeout), hyper's header
//! read timeout for HTTP/1.1 (its Tokio timer; it also ends idle keep-alive
//! connections) and its head limits, whose bare 431 is replaced by the S3
//! answer (`h1_limits.rs`); for HTTP/2 an idle clock that closes a
//! connection with no request in flight for the header timeout
//! (`streams.rs`), keepalive PINGs and stream/header-list caps.
//! Per request: the in-flight cap (tower's load shedding over a global
//! concurrency limit → 503 SlowDown), what AWS refuses before any operation
//! (`malformed.rs`; an invalid signed `Range` is marked for
//! `signed_range.rs`), the POST form caps (`form.rs`), an idle timeout on the
//! request body (tower-http's `TimeoutBody`: a body that sends nothing for
//! `body_idle_timeout` fails with 400 RequestTimeout; a slow but steady
//! upload never does), the `RemoteAddr` / `SecureTransport` extensions
//! the access check reads, and CORS (`cors.rs`: preflights answered here,
//! CORS headers added to answers), and `Connection: close` on an error
//! answered before the body was read (`unread.rs`, so the answer is not
//! lost to a reset). Nothing here buffers a body.

pub mod admission;
pub mod cors;
pub mod form;
pub mod h1_limits;
pub mod malformed;
pub mod signed_range;
pub mod streams;
pub mod tls;
pub mod unread;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower::{BoxError, ServiceBuilder};

use crate::authz::{RemoteAddr, SecureTransport};
use admission::{Admitted, Connections};
use streams::{Activity, Counted};

/// How long in-flight requests get to finish after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive: first probe after this idle time, then every 10 s.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// HTTP/2 PING interval on idle connections; no answer within 20 s closes.
const H2_KEEPALIVE: Duration = Duration::from_secs(30);
/// HTTP/2 streams one connection may have open at once.
const H2_MAX_STREAMS: u32 = 100;
/// hyper's HTTP/1.1 read buffer (its default is ~400 KiB): the most a
/// request head can take of a connection's memory; a larger one gets
/// `400 RequestHeaderSectionTooLarge` (`h1_limits.rs`). Bodies stream
/// through it in reads of up to this size.
const H1_MAX_BUF: usize = 64 * 1024;
/// How long a connection closed for idleness (HTTP/2 GOAWAY) or over the
/// cap may take to go before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Admission control and timeouts of the S3 port (`kura gateway` flags;
/// docs/security.md "The S3 port" says why each default).
#[derive(Clone, Debug)]
pub struct Admission {
    /// A request's headers (and a TLS handshake) must arrive within this;
    /// also how long an idle keep-alive connection stays open (30 s).
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long fails (60 s).
    pub body_idle_timeout: Duration,
    /// A connection whose client reads nothing for this long is dropped (60 s).
    pub write_timeout: Duration,
    /// Open connections served at once (10,000).
    pub max_connections: usize,
    /// Requests handled at once; more are answered 503 SlowDown (1,024).
    pub max_in_flight: usize,
    /// Bytes of request header fields (AWS: 8,192).
    pub max_header_bytes: usize,
    /// Largest file part of a POST form upload (5 GiB, as AWS; streamed,
    /// so this bounds storage, not memory); see `form.rs`.
    pub max_post_object_bytes: u64,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            header_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_in_flight: 1024,
            max_header_bytes: malformed::AWS_MAX_HEADER_BYTES,
            max_post_object_bytes: 5 << 30,
        }
    }
}

impl Admission {
    pub fn validate(&self) -> Result<(), String> {
        let secs = [
            ("header timeout", self.header_timeout),
            ("body idle timeout", self.body_idle_timeout),
            ("write timeout", self.write_timeout),
        ];
        if let Some((name, _)) = secs.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{name} must be at least 1 s"));
        }
        if self.max_connections == 0 || self.max_in_flight == 0 {
            return Err("max connections and max in-flight requests must be at least 1".into());
        }
        if self.max_header_bytes < 1024 {
            return Err("max header bytes must be at least 1024".into());
        }
        Ok(())
    }
}

/// What the front hands each admitted request to: the S3 service.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        req: Request<s3s::Body>,
    ) -> impl Future<Output = Result<Response<s3s::Body>, s3s::HttpError>> + Send + 'static;

    /// CORS preflights and response headers (`cors.rs`); None: no CORS.
    fn cors(&self) -> Option<&cors::Cors> {
        None
    }
}

struct Shared<H> {
    handler: Arc<H>,
    cfg: Admission,
    tls: Option<Arc<tls::Tls>>,
    in_flight: Arc<tokio::sync::Semaphore>,
    forms: form::Forms,
    /// HTTP/1.1 and HTTP/2 (chosen before hyper sees the connection, so
    /// every byte is under a timeout).
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    /// HTTP/1.1 for over-cap connections: answered once and closed.
    h1_refusing: auto::Builder<TokioExecutor>,
    /// Sent in place of hyper's own 431 (`h1_limits.rs`).
    too_large: bytes::Bytes,
}

impl<H> Shared<H> {
    fn builder(&self, h2: bool, admitted: bool) -> &auto::Builder<TokioExecutor> {
        match (h2, admitted) {
            (true, _) => &self.h2,
            (false, true) => &self.h1,
            (false, false) => &self.h1_refusing,
        }
    }
}

/// Serves `listener` until `shutdown`, then drains open connections.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    cfg: Admission,
    tls: Option<Arc<tls::Tls>>,
    handler: Arc<H>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let connections = Connections::new(cfg.max_connections);
    let shared = Arc::new(Shared {
        handler,
        in_flight: Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight)),
        forms: form::Forms::default(),
        h1: http_builder(&cfg, true).http1_only(),
        h2: http_builder(&cfg, true).http2_only(),
        h1_refusing: http_builder(&cfg, false).http1_only(),
        too_large: h1_limits::too_large_answer(cfg.max_header_bytes),
        tls,
        cfg,
    });
    // Every connection holds a sender: recv() ends once all have closed.
    let (drained_tx, mut drained) = mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(admitted) = connections.admit() else {
                    tracing::debug!(%peer, "connection and overflow caps full: closed");
                    continue;
                };
                tune_socket(&stream);
                let end = Ending { shutdown: shutdown.clone(), _drained: drained_tx.clone() };
                tokio::spawn(serve_connection(shared.clone(), stream, peer, admitted, end));
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    drop(drained_tx);
    tracing::info!("S3 gateway stopping; draining connections");
    tokio::select! {
        _ = drained.recv() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("connections still open after drain timeout"),
    }
}

fn http_builder(cfg: &Admission, keep_alive: bool) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout)
        .keep_alive(keep_alive)
        // hyper's own field cap stays at its default, 100: any other value
        // makes it allocate and fill two arrays of that many entries for
        // every request (at 1,024 fields, 4% of the gateway's CPU on 4 KiB
        // PUTs). More fields get the same XML 400 (decision 0043).
        .max_buf_size(H1_MAX_BUF.max(2 * cfg.max_header_bytes));
    // The header timeout of HTTP/2 is the idle clock in `drive`.
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE)
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(H2_MAX_STREAMS)
        // HPACK counts 32 bytes more per field than the front does: room
        // for that, so our XML 400 answers what is over --max-header-bytes.
        .max_header_list_size(h2_max_header_list(cfg.max_header_bytes));
    b
}

fn h2_max_header_list(max_header_bytes: usize) -> u32 {
    u32::try_from(2 * max_header_bytes).unwrap_or(u32::MAX)
}

/// What ends a connection from outside: the gateway's shutdown (graceful:
/// in-flight requests finish), and the drain count it waits on.
struct Ending {
    shutdown: watch::Receiver<bool>,
    _drained: mpsc::Sender<()>,
}

fn tune_socket(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let ka = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE)
        .with_interval(Duration::from_secs(10));
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
}

async fn serve_connection<H: Handler>(
    shared: Arc<Shared<H>>,
    stream: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    end: Ending,
) {
    let header_timeout = shared.cfg.header_timeout;
    let plain_h2 = if shared.tls.is_none() {
        match tokio::time::timeout(header_timeout, sniff_h2(&stream)).await {
            Ok(Some(h2)) => h2,
            Ok(None) => return, // closed before a byte
            Err(_) => {
                tracing::debug!(%peer, "no request within the header timeout: closed");
                return;
            }
        }
    } else {
        false
    };
    // A client that reads nothing for write_timeout: its writes stay pending.
    let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
    stream.set_write_timeout(Some(shared.cfg.write_timeout));
    let stream = Box::pin(stream);
    match shared.tls.clone() {
        None => serve_http(shared, stream, peer, false, plain_h2, &admitted, end).await,
        Some(tls) => {
            let handshake =
                tokio::time::timeout(header_timeout, tls.acceptor().accept(stream)).await;
            match handshake {
                Ok(Ok(s)) => {
                    let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_http(shared, s, peer, true, h2, &admitted, end).await
                }
                // Plaintext on the TLS port ends here too.
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
    drop(admitted);
}

/// Whether a plaintext connection opens with the HTTP/2 preface (h2c prior
/// knowledge), judged by peeking, so hyper still reads every byte. Waiting
/// here, under the header timeout, is what bounds a connection that sends
/// nothing: hyper-util's own version sniffing has no timer, and hyper's
/// header timeout only starts after it.
async fn sniff_h2(stream: &TcpStream) -> Option<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != PREFACE[..n] {
            return Some(false);
        }
        if n == PREFACE.len() {
            return Some(true);
        }
        // Part of the preface: peek would answer at once, so wait a little.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn serve_http<H, S>(
    shared: Arc<Shared<H>>,
    stream: S,
    peer: SocketAddr,
    secure: bool,
    h2: bool,
    admitted: &Admitted,
    end: Ending,
) where
    H: Handler,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let activity = Activity::default();
    if h2 {
        serve_io(
            shared,
            TokioIo::new(stream),
            peer,
            secure,
            h2,
            admitted,
            end,
            activity,
        )
        .await
    } else {
        let answer = shared.too_large.clone();
        let io = h1_limits::Rewrite431::new(stream, activity.clone(), answer);
        serve_io(
            shared,
            TokioIo::new(io),
            peer,
            secure,
            h2,
            admitted,
            end,
            activity,
        )
        .await
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_io<H, I>(
    shared: Arc<Shared<H>>,
    io: I,
    peer: SocketAddr,
    secure: bool,
    h2: bool,
    admitted: &Admitted,
    end: Ending,
    activity: Activity,
) where
    H: Handler,
    I: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
{
    // HTTP/1.1 has hyper's header read timeout; HTTP/2 this idle clock.
    let idle = h2.then(|| (activity.clone(), shared.cfg.header_timeout));
    let result = match admitted {
        Admitted::Refused(_) => {
            // After its first answer the connection is closed (HTTP/1.1:
            // no keep-alive; HTTP/2: GOAWAY).
            let answered = Arc::new(tokio::sync::Notify::new());
            let svc = {
                let answered = answered.clone();
                let activity = activity.clone();
                hyper::service::service_fn(move |_req: Request<Incoming>| {
                    answered.notify_one();
                    let guard = activity.open();
                    let activity = activity.clone();
                    async move {
                        let resp = admission::over_capacity();
                        activity.closes_after(&resp);
                        Ok::<_, std::convert::Infallible>(resp.map(|b| Counted::new(b, guard)))
                    }
                })
            };
            let conn = shared.builder(h2, false).serve_connection(io, svc);
            drive(conn, end, idle, Some(answered)).await
        }
        Admitted::Served(_) => {
            let per_request = {
                let shared = shared.clone();
                move |req: Request<Incoming>| -> RequestFuture {
                    let guard = activity.open();
                    let activity = activity.clone();
                    let answer = admit(shared.clone(), req, peer, secure);
                    Box::pin(async move {
                        let resp = answer.await;
                        if let Ok(r) = &resp {
                            activity.closes_after(r);
                        }
                        resp.map(|r| r.map(|b| Counted::new(b, guard)))
                    })
                }
            };
            let svc = ServiceBuilder::new()
                .map_result(admission::shed_to_slow_down)
                .load_shed()
                .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
                    shared.in_flight.clone(),
                ))
                .service_fn(per_request);
            let conn = shared
                .builder(h2, true)
                .serve_connection(io, TowerToHyperService::new(svc));
            drive(conn, end, idle, None).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Runs a connection until it ends, closing it gracefully (HTTP/2: GOAWAY;
/// in-flight requests finish) when the gateway shuts down, when `idle`
/// says it has served no request for that long, or once `answered` fires;
/// a connection that does not go within [`CLOSE_GRACE`] after an idle or
/// over-cap close is dropped.
async fn drive<C>(
    conn: C,
    mut end: Ending,
    idle: Option<(Activity, Duration)>,
    answered: Option<Arc<tokio::sync::Notify>>,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    let idle_clock = async {
        match &idle {
            Some((activity, limit)) => activity.idle_for(*limit).await,
            None => std::future::pending().await,
        }
    };
    let answered_once = async {
        match &answered {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    let stopping = async {
        // A dropped sender is a shutdown too, as in `serve`.
        let _ = end.shutdown.wait_for(|stop| *stop).await;
    };
    tokio::pin!(idle_clock, answered_once, stopping);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut closing = false;
    loop {
        let grace = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => return r,
            _ = &mut stopping, if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut idle_clock, if !closing => {
                tracing::debug!("HTTP/2 connection idle for the header timeout: closing");
                closing = true;
                deadline = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut answered_once, if !closing => {
                closing = true;
                deadline = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                conn.as_mut().graceful_shutdown();
            }
            _ = grace => return Ok(()),
        }
    }
}

/// Boxed so tower's error conversions see one concrete future type (the
/// compiler can't prove the nested generic futures `Send` otherwise).
type RequestFuture = std::pin::Pin<
    Box<dyn Future<Output = Result<Response<Counted>, s3s::HttpError>> + Send + 'static>,
>;

/// One request that got past the in-flight cap.
async fn admit<H: Handler>(
    shared: Arc<Shared<H>>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    secure: bool,
) -> Result<Response<s3s::Body>, s3s::HttpError> {
    if let Some(refusal) = malformed::refusal(&req, shared.cfg.max_header_bytes) {
        let mut resp = refused(refusal.response(), &req);
        // As for the heads hyper refuses itself (`h1_limits.rs`).
        if matches!(refusal, crate::error::Refusal::HeaderSectionTooLarge { .. }) {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        return Ok(resp);
    }
    malformed::ignore_invalid_range(&mut req);
    // CORS: preflights are answered here (s3s has no OPTIONS operation);
    // other answers get the bucket's CORS headers once the handler is done.
    let cors = shared.handler.cors();
    if let Some(cors) = cors.filter(|_| req.method() == http::Method::OPTIONS) {
        return Ok(cors.preflight(&req).await);
    }
    let cors_pending = cors.and_then(|c| c.observe(&req));
    let max_file = shared.cfg.max_post_object_bytes;
    let form_permit = if form::is_form(&req) {
        match shared.forms.admit(&req, max_file) {
            Ok(p) => Some(p),
            Err(refusal) => return Ok(refused(refusal.response(), &req)),
        }
    } else {
        None
    };
    if form_permit.is_some() {
        req.extensions_mut().insert(form::FormLimit(max_file));
    }
    req.extensions_mut().insert(RemoteAddr(peer));
    if secure {
        req.extensions_mut().insert(SecureTransport);
    }
    // Chunked forms have no declared length: they are cut at the cap.
    let limit = form_permit
        .as_ref()
        .map(|_| form::max_form_bytes(max_file) as usize);
    let idle = shared.cfg.body_idle_timeout;
    let version = req.version();
    let (parts, body) = req.into_parts();
    let (body, body_end) = request_body(body, idle, limit);
    let mut resp = shared
        .handler
        .clone()
        .handle(Request::from_parts(parts, body))
        .await;
    drop(form_permit);
    if let Ok(r) = resp.as_mut() {
        body_end.close_if_unread(version, r);
    }
    if let (Some(cors), Some(pending), Ok(r)) = (cors, cors_pending, resp.as_mut()) {
        cors.finish(pending, r).await;
    }
    resp
}

/// A front refusal, counted, closing the connection when the request may
/// still have body bytes on the wire nobody will read.
fn refused<B>(mut resp: Response<s3s::Body>, req: &Request<B>) -> Response<s3s::Body> {
    crate::metrics::observe_http(resp.status().as_u16());
    let bodiless = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
        || (!req.headers().contains_key(http::header::CONTENT_LENGTH)
            && !req.headers().contains_key(http::header::TRANSFER_ENCODING));
    if !bodiless {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// The request body as the handler reads it: an idle timeout, and a size
/// cap for POST forms; and whether it was read to its end (`unread.rs`).
fn request_body(b: Incoming, idle: Duration, limit: Option<usize>) -> (s3s::Body, unread::BodyEnd) {
    // Nothing to wait for; and TimeoutBody hides the exact size (0) that
    // s3s reads when there is no Content-Length.
    if hyper::body::Body::is_end_stream(&b) {
        return (s3s::Body::from(b), unread::BodyEnd::reached());
    }
    let (b, end) = unread::Watched::new(b);
    let body = tower_http::timeout::TimeoutBody::new(idle, b).map_err(idle_to_request_timeout);
    let body = match limit {
        Some(max) => s3s::Body::http_body(http_body_util::Limited::new(body, max)),
        None => s3s::Body::http_body(body),
    };
    (body, end)
}

/// tower-http's idle timeout becomes AWS's RequestTimeout, which the
/// handlers pass through to the client (`error::body_error`).
fn idle_to_request_timeout(e: BoxError) -> BoxError {
    if e.is::<tower_http::timeout::TimeoutError>() {
        Box::new(crate::error::request_timeout())
    } else {
        e
    }
}
