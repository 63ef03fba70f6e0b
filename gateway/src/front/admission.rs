//! Caps that keep the gateway's memory and tasks bounded under load or
//! attack: open connections, requests in flight, and POST form uploads
//! (which s3s buffers, see `form.rs`).
//!
//! Beyond the connection cap a connection is still accepted, up to
//! [`OVERFLOW_CONNECTIONS`] more, and its first request is answered
//! `503 SlowDown` with `Connection: close`: an AWS SDK reads that as
//! throttling and retries with backoff, where a refused or reset TCP
//! connection would surface as a connect error (botocore's connect timeout
//! is 60 s) or be retried at once. Past the overflow the connection is
//! closed right after accept, so the kernel backlog never fills with
//! connections nobody reads.

use std::sync::Arc;

use http::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::BoxError;

use crate::error::Refusal;

/// Connections accepted beyond the cap only to be answered 503 SlowDown.
pub const OVERFLOW_CONNECTIONS: usize = 256;

/// POST form uploads handled at once (each streams like a PUT; `form.rs`).
pub const POST_FORMS_AT_ONCE: usize = 64;

/// What became of an accepted connection. The permit inside is held for
/// the connection's life.
pub enum Admitted {
    /// Served normally.
    Served(#[allow(dead_code)] OwnedSemaphorePermit),
    /// Over the cap: every request on it is answered 503 SlowDown.
    Refused(#[allow(dead_code)] OwnedSemaphorePermit),
}

/// The connection cap of one listener.
pub struct Connections {
    open: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
}

impl Connections {
    pub fn new(max: usize) -> Self {
        Connections {
            open: Arc::new(Semaphore::new(max)),
            overflow: Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS)),
        }
    }

    /// `None`: close the connection now (even the overflow is full).
    pub fn admit(&self) -> Option<Admitted> {
        if let Ok(p) = self.open.clone().try_acquire_owned() {
            return Some(Admitted::Served(p));
        }
        self.overflow
            .clone()
            .try_acquire_owned()
            .ok()
            .map(Admitted::Refused)
    }
}

/// Turns tower's load-shedding error (the in-flight cap is full) into
/// S3's `503 SlowDown`; other errors pass.
pub fn shed_to_slow_down<B: From<s3s::Body>>(
    r: Result<Response<B>, BoxError>,
) -> Result<Response<B>, BoxError> {
    match r {
        Err(e) if e.is::<tower::load_shed::error::Overloaded>() => {
            let resp = Refusal::SlowDown.response();
            crate::metrics::observe_http(resp.status().as_u16());
            Ok(resp.map(B::from))
        }
        other => other,
    }
}

/// The answer to every request on a connection over the cap.
pub fn over_capacity() -> Response<s3s::Body> {
    let mut resp = Refusal::SlowDown.response();
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    crate::metrics::observe_http(resp.status().as_u16());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_beyond_the_cap_overflow_then_close() {
        let c = Connections::new(2);
        let a = c.admit();
        let b = c.admit();
        assert!(matches!(a, Some(Admitted::Served(_))));
        assert!(matches!(b, Some(Admitted::Served(_))));
        let mut refused = Vec::new();
        for _ in 0..OVERFLOW_CONNECTIONS {
            let r = c.admit();
            assert!(matches!(r, Some(Admitted::Refused(_))));
            refused.push(r);
        }
        assert!(c.admit().is_none());
        drop(a);
        assert!(matches!(c.admit(), Some(Admitted::Served(_))));
    }

    #[test]
    fn shedding_becomes_slow_down() {
        let shed: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
        let resp = shed_to_slow_down::<s3s::Body>(Err(shed)).expect("answered");
        assert_eq!(resp.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        let other: BoxError = "boom".into();
        assert!(shed_to_slow_down::<s3s::Body>(Err(other)).is_err());
    }
}
