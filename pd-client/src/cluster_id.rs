//! The cluster id on every internal message (docs/security.md).
//!
//! PD names its cluster with a random id at first start. Every other
//! process learns it from PD (the first call a `PdClient` makes asks for it)
//! and from then on stamps it on every gRPC request it sends
//! ([`Channel`]). Every internal server refuses a request stamped with
//! another cluster's id ([`CheckLayer`]): a process pointed at the wrong
//! PD, or a data dir moved between clusters, is turned away instead of
//! joining Raft groups or storing fragments of a cluster it does not belong
//! to. Requests without the stamp (a process that has not reached PD yet)
//! pass; mutual TLS is what keeps strangers out.

use std::future::Future;
use std::pin::Pin;
use std::sync::{LazyLock, OnceLock};

use prometheus::IntCounter;
use std::task::{Context, Poll};

/// The gRPC metadata key carrying the sender's cluster id (decimal).
pub const HEADER: &str = "kura-cluster-id";

static CLUSTER_ID: OnceLock<u64> = OnceLock::new();

static REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    let c = IntCounter::new(
        "kura_foreign_cluster_requests_total",
        "Internal requests refused because they came from another cluster",
    )
    .expect("valid metric");
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
});

/// Requests of another cluster this process refused.
pub fn refused() -> u64 {
    REFUSED.get()
}

/// Records this process's cluster id. The first id wins: one process
/// belongs to one cluster (a later, different id is logged and ignored).
pub fn set(id: u64) {
    if id == 0 {
        return;
    }
    let first = *CLUSTER_ID.get_or_init(|| id);
    if first != id {
        tracing::error!(
            first,
            now = id,
            "PD reports another cluster id than before; keeping the first"
        );
    }
}

/// This process's cluster id, once known.
pub fn get() -> Option<u64> {
    CLUSTER_ID.get().copied()
}

type Stamp = fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body>;

/// A gRPC channel that stamps the cluster id on every request.
pub type Channel = tower::util::MapRequest<tonic::transport::Channel, Stamp>;

fn stamp(mut req: http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> {
    if let Some(id) = get() {
        req.headers_mut()
            .insert(HEADER, http::HeaderValue::from(id));
    }
    req
}

/// `ch` stamping this process's cluster id.
pub fn stamped(ch: tonic::transport::Channel) -> Channel {
    tower::util::MapRequest::new(ch, stamp as Stamp)
}

/// Why a request is refused, if it is: stamped with another cluster's id.
pub fn refusal(headers: &http::HeaderMap) -> Option<String> {
    let ours = get()?;
    let theirs = headers.get(HEADER)?;
    match theirs.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
        Some(id) if id == ours => None,
        Some(id) => Some(format!(
            "request from cluster {id}, this is cluster {ours}: refused"
        )),
        None => Some(format!("malformed {HEADER} header: refused")),
    }
}

/// The server-side check, a tower layer for `tonic::transport::Server::layer`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckLayer;

impl<S> tower::Layer<S> for CheckLayer {
    type Service = Check<S>;
    fn layer(&self, inner: S) -> Check<S> {
        Check { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Check<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, R> tower::Service<http::Request<B>> for Check<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(why) = refusal(req.headers()) {
            REFUSED.inc();
            tracing::warn!(path = %req.uri().path(), "{why}");
            // Not FailedPrecondition: PdClient reads that as "not the
            // leader, try the next PD".
            let resp = tonic::Status::permission_denied(why).into_http::<R>();
            return Box::pin(async move { Ok(resp) });
        }
        let fut = self.inner.call(req);
        Box::pin(fut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_of_another_cluster_is_refused_and_ours_passes() {
        set(7);
        set(8); // ignored: the first id wins
        assert_eq!(get(), Some(7));
        let mut h = http::HeaderMap::new();
        assert_eq!(refusal(&h), None, "unstamped passes");
        h.insert(HEADER, http::HeaderValue::from(7u64));
        assert_eq!(refusal(&h), None);
        h.insert(HEADER, http::HeaderValue::from(9u64));
        assert!(refusal(&h).is_some_and(|m| m.contains("cluster 9")));
        h.insert(HEADER, http::HeaderValue::from_static("x"));
        assert!(refusal(&h).is_some());
        let req = stamp(http::Request::new(tonic::body::Body::empty()));
        assert_eq!(
            req.headers().get(HEADER).and_then(|v| v.to_str().ok()),
            Some("7")
        );
    }
}
