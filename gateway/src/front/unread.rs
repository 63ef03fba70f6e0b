//! An error answered while the request body is still on the wire.
//!
//! A handler may fail before it has read the body: the access check, a
//! placement group with too few writable data nodes, data nodes lost in
//! the middle of a PUT. hyper then drops the connection after the answer
//! (it drains only what is already buffered), and a socket closed with
//! unread bytes is reset by the kernel — which can destroy the answer in
//! the client's receive queue before the client has read it: the client
//! sees "connection reset" or "error sending request" instead of the S3
//! error, and cannot tell a refusal from a crash (seen with 64 MiB PUTs to
//! a cluster whose data nodes were full).
//!
//! So such an answer says `Connection: close` (HTTP/1.1), which tells the
//! client the connection ends and makes it linger as it closes
//! (`h1_limits.rs`): the write side is shut and what the client still
//! sends is read and dropped, within bounds, so the answer arrives whole.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Whether a request body was read to its end.
#[derive(Clone, Default)]
pub struct BodyEnd(Arc<AtomicBool>);

impl BodyEnd {
    /// An end already reached (a request with no body).
    pub fn reached() -> Self {
        BodyEnd(Arc::new(AtomicBool::new(true)))
    }

    pub fn is_reached(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Marks `resp` `Connection: close` if it is an error answered with
    /// body bytes unread (module doc). HTTP/2 ends just the stream itself.
    pub fn close_if_unread<B>(&self, version: http::Version, resp: &mut http::Response<B>) {
        // 3xx too: S3's redirects (301 PermanentRedirect, 307) are errors.
        if resp.status().as_u16() >= 300 && version < http::Version::HTTP_2 && !self.is_reached() {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }
}

/// hyper's request body, noting when its end is reached.
pub struct Watched {
    inner: Incoming,
    end: BodyEnd,
}

impl Watched {
    pub fn new(inner: Incoming) -> (Self, BodyEnd) {
        let end = BodyEnd::default();
        (
            Watched {
                inner,
                end: end.clone(),
            },
            end,
        )
    }
}

impl Body for Watched {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // A Content-Length body is at its end once its last byte is read,
        // whether or not the reader polls once more for the None.
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.end.0.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> http::Response<()> {
        let mut r = http::Response::new(());
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        r
    }

    fn closes(r: &http::Response<()>) -> bool {
        r.headers().get(http::header::CONNECTION).is_some()
    }

    #[test]
    fn only_errors_with_the_body_unread_close_http1_connections() {
        let unread = BodyEnd::default();
        let read = BodyEnd::reached();
        for (end, status, version, want) in [
            (&unread, 503, http::Version::HTTP_11, true),
            (&unread, 403, http::Version::HTTP_10, true),
            (&unread, 200, http::Version::HTTP_11, false),
            (&unread, 301, http::Version::HTTP_11, true),
            (&unread, 503, http::Version::HTTP_2, false),
            (&read, 503, http::Version::HTTP_11, false),
        ] {
            let mut r = answer(status);
            end.close_if_unread(version, &mut r);
            assert_eq!(closes(&r), want, "{status} {version:?}");
        }
    }
}
