//! What a connection is doing: how many of its requests are being served
//! (from the moment the service is called until the response body has
//! been sent or dropped) and since when it has served none.
//!
//! HTTP/2 has no header read timeout in hyper, and its keepalive PINGs keep
//! an idle connection alive forever; so an h2 connection that has had no
//! open request for the header timeout is closed (GOAWAY, then dropped if
//! the client does not go) — one that opens h2 and sends nothing, sends a
//! HEADERS frame that never ends, or only PINGs. A busy connection (any
//! request in flight, however long) is never cut. HTTP/1.1 uses the same
//! count to recognise hyper's own error answers (`h1_limits.rs`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
struct State {
    open: usize,
    idle_since: Instant,
    /// An answer said `Connection: close` (HTTP/1.1): the socket lingers
    /// when it closes (`h1_limits.rs`).
    linger: bool,
}

/// One connection's request count.
#[derive(Clone)]
pub struct Activity(Arc<watch::Sender<State>>);

impl Default for Activity {
    fn default() -> Self {
        Activity(Arc::new(watch::Sender::new(State {
            open: 0,
            idle_since: Instant::now(),
            linger: false,
        })))
    }
}

impl Activity {
    /// A request starts; it counts until the guard is dropped.
    pub fn open(&self) -> Guard {
        self.0.send_modify(|s| s.open += 1);
        Guard(self.clone())
    }

    /// Notes an answer that closes the connection (see `State::linger`).
    pub fn closes_after<B>(&self, resp: &http::Response<B>) {
        let closes = resp
            .headers()
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if closes {
            self.0.send_modify(|s| s.linger = true);
        }
    }

    /// Whether the connection should linger when it closes.
    pub fn lingers(&self) -> bool {
        self.0.borrow().linger
    }

    /// Requests being served right now.
    pub fn open_now(&self) -> usize {
        self.0.borrow().open
    }

    /// Resolves once the connection has had no open request for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        let mut rx = self.0.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if s.open > 0 {
                // The sender lives as long as `self`: changed() can't fail.
                let _ = rx.changed().await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(s.idle_since + limit) => return,
                _ = rx.changed() => {}
            }
        }
    }
}

/// Counts one request while it lives.
pub struct Guard(Activity);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0 .0.send_modify(|s| {
            s.open = s.open.saturating_sub(1);
            if s.open == 0 {
                s.idle_since = Instant::now();
            }
        });
    }
}

/// A response body that keeps its request counted until it has been sent
/// (or dropped: the client went away).
pub struct Counted {
    body: s3s::Body,
    _guard: Option<Guard>,
}

impl Counted {
    pub fn new(body: s3s::Body, guard: Guard) -> Self {
        Counted {
            body,
            _guard: Some(guard),
        }
    }
}

/// Answers made outside the counted service (load shedding).
impl From<s3s::Body> for Counted {
    fn from(body: s3s::Body) -> Self {
        Counted { body, _guard: None }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = <s3s::Body as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self._guard = None; // sent
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_clock_runs_only_without_open_requests() {
        let a = Activity::default();
        let limit = Duration::from_secs(30);
        // No request yet: idle after the limit.
        let t0 = Instant::now();
        a.idle_for(limit).await;
        assert!(t0.elapsed() >= limit);
        // A long request keeps it busy; the clock restarts when it ends.
        let g = a.open();
        assert_eq!(a.open_now(), 1);
        let idle = tokio::spawn({
            let a = a.clone();
            async move { a.idle_for(limit).await }
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!idle.is_finished());
        let ended = Instant::now();
        drop(g);
        idle.await.unwrap();
        assert!(ended.elapsed() >= limit && ended.elapsed() < limit * 2);
        assert_eq!(a.open_now(), 0);
    }

    #[test]
    fn an_answer_that_closes_makes_the_connection_linger() {
        let a = Activity::default();
        a.closes_after(&http::Response::new(()));
        assert!(!a.lingers());
        let mut closing = http::Response::new(());
        closing.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        a.closes_after(&closing);
        assert!(a.lingers());
    }

    #[tokio::test]
    async fn a_response_counts_until_sent() {
        use http_body_util::BodyExt;
        let a = Activity::default();
        let body = Counted::new(s3s::Body::from("abc".to_string()), a.open());
        assert_eq!(a.open_now(), 1);
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"abc");
        assert_eq!(a.open_now(), 0);
        let dropped = Counted::new(s3s::Body::from("abc".to_string()), a.open());
        drop(dropped);
        assert_eq!(a.open_now(), 0);
    }
}
