//! hyper's own answer to an HTTP/1.1 request head it can't take — one over
//! its read buffer (`max_buf_size`) or with more fields than `max_headers` —
//! is a bare `431 Request Header Fields Too Large` without a body, written
//! by hyper itself (no service sees the request). AWS answers an oversized
//! header section `400 RequestHeaderSectionTooLarge` in XML.
//!
//! hyper offers no hook for that answer, so the connection's writer
//! recognises it and sends the S3 answer (with `Connection: close`; hyper
//! closes the connection after it anyway) in its place. It is recognised
//! only when it can't be anything else: hyper writes it as one buffer,
//! exactly its head (`HTTP/1.1 431 Request Header Fields Too Large`, a
//! `content-length: 0`, the blank line), at a response boundary (hyper
//! answers a parse error only before a response has started), while the
//! connection serves no request (`streams.rs`) — so a response body that
//! happens to hold those bytes is never touched.
//!
//! The memory such a head costs is bounded by `max_buf_size` per
//! connection (and the connection cap), see `mod.rs`.
//!
//! Closing a socket with unread bytes makes the kernel reset it, which can
//! destroy the answer before the client has read it (a client still
//! sending its oversized head, or the body of a request refused early). So
//! after that answer, or any answer that said `Connection: close` (such as
//! an error answered before the request body was read, `unread.rs`), the
//! connection lingers: its write side is shut and what the client still
//! sends is read and dropped, for at most [`LINGER`] and [`LINGER_BYTES`].

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::streams::Activity;
use crate::error::Refusal;

const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n";
/// How long a closing connection is drained before it is closed.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);
/// The most drained from it: a client that stops sending when it reads the
/// answer may still have socket buffers' worth in flight (several MiB on
/// loopback), and one that sends its whole body before reading (Python's
/// http.client) gets its answer for bodies up to this size.
const LINGER_BYTES: usize = 64 << 20;
/// Sockets lingering at once (each holds an 8 KiB buffer); beyond, closed
/// at once, so lingering can't be used to hold memory.
static LINGERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1024);

/// The bytes of the S3 answer sent in place of hyper's 431.
pub fn too_large_answer(max_header_bytes: usize) -> Bytes {
    let resp = Refusal::HeaderSectionTooLarge {
        max: max_header_bytes,
    }
    .response();
    let body = resp.body().bytes().unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        resp.status().as_str(),
        resp.status().canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in resp.headers() {
        if name == http::header::CONTENT_LENGTH || name == http::header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// Whether `buf` is hyper's automatic 431 head.
fn is_hyper_431(buf: &[u8]) -> bool {
    buf.len() < 512
        && buf.starts_with(HYPER_431)
        && buf.ends_with(b"\r\n\r\n")
        && buf.windows(19).any(|w| w == b"content-length: 0\r\n")
}

/// An HTTP/1.1 connection's IO with hyper's 431 replaced (module doc).
pub struct Rewrite431<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    /// Always Some until dropped (then it may linger).
    inner: Option<S>,
    activity: Activity,
    answer: Bytes,
    /// What is left to write of the answer.
    pending: Option<Bytes>,
    answered: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Rewrite431<S> {
    pub fn new(inner: S, activity: Activity, answer: Bytes) -> Self {
        Rewrite431 {
            inner: Some(inner),
            activity,
            answer,
            pending: None,
            answered: false,
        }
    }

    fn io(&mut self) -> io::Result<&mut S> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Rewrite431 { inner, pending, .. } = self;
        while let Some(p) = pending.as_mut() {
            let io = inner
                .as_mut()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
            let n = ready!(Pin::new(io).poll_write(cx, p))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            p.advance(n);
            if p.is_empty() {
                *pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Takes hyper's 431 (`len` bytes) and starts writing the answer.
    fn replace(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<usize>> {
        crate::metrics::observe_http(400);
        self.answered = true;
        self.pending = Some(self.answer.clone());
        // Pending is fine: the writer's waker is registered, and hyper
        // flushes (which finishes the answer) before it closes.
        if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(len))
    }

    fn replaces(&self, buf: &[u8]) -> bool {
        is_hyper_431(buf) && self.activity.open_now() == 0
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Rewrite431<S> {
    fn drop(&mut self) {
        let lingers = self.answered || self.activity.lingers();
        let (Some(inner), true) = (self.inner.take(), lingers) else {
            return;
        };
        let (Ok(rt), Ok(permit)) = (
            tokio::runtime::Handle::try_current(),
            LINGERING.try_acquire(),
        ) else {
            return;
        };
        rt.spawn(async move {
            linger(inner).await;
            drop(permit);
        });
    }
}

/// Shuts the write side (the answer is out) and drops what the client
/// still sends, within bounds, so closing does not reset the answer away.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drain = async {
        let _ = io.shutdown().await;
        let mut buf = vec![0u8; 8 << 10];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Rewrite431<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.io()?).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Rewrite431<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if this.replaces(buf) {
            return this.replace(cx, buf.len());
        }
        Pin::new(this.io()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            if this.replaces(only) {
                return this.replace(cx, only.len());
            }
        }
        Pin::new(this.io()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(this.io()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(this.io()?).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEAD: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sat, 05 Dec 2026 20:00:00 GMT\r\n\r\n";

    #[tokio::test]
    async fn hyper_431_becomes_the_s3_answer() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let activity = Activity::default();
        let answer = too_large_answer(8192);
        let mut w = Rewrite431::new(a, activity.clone(), answer.clone());
        // A body that holds the same bytes while a request is served: untouched.
        let g = activity.open();
        w.write_all(HEAD).await.unwrap();
        drop(g);
        // hyper's own answer, with no request being served: replaced.
        w.write_all(HEAD).await.unwrap();
        w.flush().await.unwrap();
        w.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(&got[..HEAD.len()], HEAD);
        let rest = &got[HEAD.len()..];
        assert_eq!(rest, &answer[..]);
        let text = String::from_utf8_lossy(rest);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(
            text.contains("<Code>RequestHeaderSectionTooLarge</Code>"),
            "{text}"
        );
        let body_at = text.find("\r\n\r\n").unwrap() + 4;
        assert!(text.contains(&format!("content-length: {}\r\n", rest.len() - body_at)));
    }

    #[test]
    fn only_the_exact_head_is_recognised() {
        assert!(is_hyper_431(HEAD));
        assert!(!is_hyper_431(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 5\r\n\r\n"
        ));
        assert!(!is_hyper_431(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"
        ));
        let mut with_body = HEAD.to_vec();
        with_body.extend_from_slice(b"xyz");
        assert!(!is_hyper_431(&with_body));
    }
}
