//! The GET data path: turns an object record and a byte range into a stream.
//!
//! `plan` (pure) maps the range onto the object's bodies (one for a plain
//! PUT, one per part for multipart) and, within a stored body, onto fragment
//! blocks. A producer task reads the needed blocks of one replica through
//! `get_fragment` (the client verifies each block's CRC32C, so only verified
//! bytes are ever sent), checks each block's length, trims the first and last
//! block to the range, and on any error resumes at the next undelivered block
//! on the next replica of the group. It runs a few blocks ahead of the client
//! through a bounded channel and stops when the client goes away.
//!
//! An encrypted body (`data::crypto`) is planned in plaintext offsets; the
//! producer reads the sealed chunks covering the piece, checks and opens
//! them and trims to the piece, so only verified plaintext is ever sent.

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use kura_proto::meta::{DataLocation, ObjectRecord};

use crate::data::crypto::{BodyCipher, Opener};
use s3s::dto::StreamingBlob;
use s3s::stream::{ByteStream, RemainingLength};
use tokio::sync::mpsc;

use crate::context::Ctx;
use crate::data::stripes::StripeReader;
use crate::error::{GwError, GwResult};
use crate::metrics;

/// Blocks buffered ahead of the client.
const READ_AHEAD: usize = 4;

/// Where one body of an object lives.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Inline(Bytes),
    Stored(DataLocation),
}

/// One body of an object: its (plaintext) size and where it lives.
#[derive(Clone, Debug, PartialEq)]
pub struct BodyRef {
    pub size: u64,
    pub source: Source,
    /// Set when the body is stored sealed.
    pub cipher: Option<Arc<BodyCipher>>,
}

/// A slice [start, end) of one body (plaintext offsets).
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub source: Source,
    pub start: u64,
    pub end: u64,
    /// The body's size and cipher when it is sealed.
    pub sealed: Option<(u64, Arc<BodyCipher>)>,
}

/// The bodies of an object, in order. An encrypted object needs its body
/// ciphers (`s3::encryption::read_keys`), one per body: without them it is
/// an error, never ciphertext served as the object.
pub fn bodies(rec: &ObjectRecord, ciphers: Option<&[Arc<BodyCipher>]>) -> GwResult<Vec<BodyRef>> {
    let mut out: Vec<BodyRef> = if rec.parts.is_empty() {
        vec![BodyRef {
            size: rec.size,
            source: Source::Inline(rec.inline_data.clone()),
            cipher: None,
        }]
    } else {
        rec.parts
            .iter()
            .map(|p| BodyRef {
                size: p.size,
                source: match &p.location {
                    Some(loc) => Source::Stored(loc.clone()),
                    None => Source::Inline(p.inline_data.clone()),
                },
                cipher: None,
            })
            .collect()
    };
    match (rec.sse.is_some(), ciphers) {
        (false, None) => {}
        (true, Some(c)) if c.len() == out.len() => {
            for (b, c) in out.iter_mut().zip(c) {
                b.cipher = Some(c.clone());
            }
        }
        (true, None) => {
            return Err(GwError::Internal(
                "encrypted object read without its keys".into(),
            ))
        }
        _ => {
            return Err(GwError::Internal(
                "object record's encryption does not match its bodies".into(),
            ))
        }
    }
    Ok(out)
}

/// The slices of `bodies` covering `range` (offsets in the concatenation).
pub fn plan(bodies: &[BodyRef], range: Range<u64>) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    for b in bodies {
        let (lo, hi) = (offset, offset + b.size);
        offset = hi;
        let start = range.start.max(lo);
        let end = range.end.min(hi);
        if start < end {
            out.push(Piece {
                source: b.source.clone(),
                start: start - lo,
                end: end - lo,
                sealed: b.cipher.clone().map(|c| (b.size, c)),
            });
        }
    }
    out
}

/// Opens the stream of `pieces` (`total` bytes). Waits for the first bytes, so
/// an object whose data is unreachable fails with a 503 instead of a cut-off 200.
pub async fn open(ctx: Arc<Ctx>, pieces: Vec<Piece>, total: u64) -> GwResult<StreamingBlob> {
    let (tx, mut rx) = mpsc::channel::<GwResult<Bytes>>(READ_AHEAD);
    let mut first = None;
    if total > 0 {
        tokio::spawn(produce(ctx, pieces, tx));
        loop {
            match rx.recv().await {
                Some(Ok(b)) if b.is_empty() => continue,
                Some(Ok(b)) => {
                    first = Some(b);
                    break;
                }
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(GwError::Internal(
                        "object reader ended before any data".into(),
                    ))
                }
            }
        }
    }
    Ok(StreamingBlob::new(BodyStream {
        first,
        rx,
        remaining: total,
    }))
}

struct BodyStream {
    first: Option<Bytes>,
    rx: mpsc::Receiver<GwResult<Bytes>>,
    remaining: u64,
}

impl BodyStream {
    fn yield_bytes(&mut self, b: Bytes) -> Poll<Option<Result<Bytes, s3s::StdError>>> {
        let n = b.len() as u64;
        if n > self.remaining {
            self.remaining = 0;
            return Poll::Ready(Some(Err(Box::new(GwError::Internal(
                "object reader produced too many bytes".into(),
            )))));
        }
        self.remaining -= n;
        metrics::add_bytes_out(n);
        Poll::Ready(Some(Ok(b)))
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(b) = self.first.take() {
            return self.yield_bytes(b);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(b))) => self.yield_bytes(b),
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "object read failed mid-stream; aborting the response");
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) if self.remaining > 0 => {
                let missing = self.remaining;
                self.remaining = 0;
                Poll::Ready(Some(Err(Box::new(GwError::Internal(format!(
                    "object reader stopped {missing} bytes short"
                ))))))
            }
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, None)
    }
}

impl ByteStream for BodyStream {
    fn remaining_length(&self) -> RemainingLength {
        RemainingLength::new_exact(self.remaining as usize)
    }
}

/// The client went away: stop reading.
struct Gone;

async fn produce(ctx: Arc<Ctx>, pieces: Vec<Piece>, tx: mpsc::Sender<GwResult<Bytes>>) {
    for p in pieces {
        // A sealed body is read in whole chunks, opened and trimmed.
        let (start, end, mut opener) = match &p.sealed {
            Some((size, cipher)) => {
                let (r, o) = cipher.open_range(*size, p.start..p.end);
                (r.start, r.end, Some(o))
            }
            None => (p.start, p.end, None),
        };
        let res = match &p.source {
            Source::Inline(data) => {
                let (s, e) = (start as usize, end as usize);
                if e > data.len() {
                    let _ = tx
                        .send(Err(GwError::Internal(
                            "inline body shorter than its recorded size".into(),
                        )))
                        .await;
                    return;
                }
                send(&tx, data.slice(s..e), opener.as_mut()).await
            }
            Source::Stored(loc) => read_stored(&ctx, loc, start, end, &tx, opener.as_mut()).await,
        };
        if res.is_err() {
            return;
        }
        if let Some(Err(e)) = opener.map(|o| o.finish()) {
            let _ = tx.send(Err(e)).await;
            return;
        }
    }
}

/// Sends `bytes`, through `opener` when the body is sealed (a chunk that
/// fails its check ends the stream with the error).
async fn send(
    tx: &mpsc::Sender<GwResult<Bytes>>,
    bytes: Bytes,
    opener: Option<&mut Opener>,
) -> Result<(), Gone> {
    let Some(o) = opener else {
        return tx.send(Ok(bytes)).await.map_err(|_| Gone);
    };
    let mut plain = Vec::new();
    if let Err(e) = o.push(&bytes, &mut plain) {
        let _ = tx.send(Err(e)).await;
        return Err(Gone);
    }
    for b in plain {
        tx.send(Ok(b)).await.map_err(|_| Gone)?;
    }
    Ok(())
}

/// Sends the bytes [start, end) of the body at `loc`, stripe by stripe,
/// reading around missing or corrupt fragments (`stripes`).
async fn read_stored(
    ctx: &Ctx,
    loc: &DataLocation,
    start: u64,
    end: u64,
    tx: &mpsc::Sender<GwResult<Bytes>>,
    mut opener: Option<&mut Opener>,
) -> Result<(), Gone> {
    let mut reader = match StripeReader::new(ctx, loc) {
        Ok(r) if end <= loc.size => r,
        Ok(_) => {
            let _ = tx
                .send(Err(GwError::Internal(
                    "range beyond the stored body".into(),
                )))
                .await;
            return Err(Gone);
        }
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return Err(Gone);
        }
    };
    let layout = reader.layout;
    let (first, last) = layout.stripe_span(start, end);
    let spans = layout.shard_stripe_spans(start, end);
    for s in first..=last {
        match reader.read_stripe(s, start, end, &spans).await {
            Ok(blocks) => {
                for (i, block) in blocks {
                    let piece = block.slice(layout.trim(s, i, start, end));
                    send(tx, piece, opener.as_deref_mut()).await?;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return Err(Gone);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(size: u64) -> BodyRef {
        BodyRef {
            size,
            source: Source::Stored(DataLocation {
                size,
                block_size: 4,
                data_shards: 1,
                ..Default::default()
            }),
            cipher: None,
        }
    }

    #[test]
    fn plan_maps_range_onto_parts() {
        let bodies = vec![
            stored(10),
            BodyRef {
                size: 3,
                source: Source::Inline(Bytes::from_static(b"xyz")),
                cipher: None,
            },
            stored(5),
        ];
        let p = plan(&bodies, 0..18);
        assert_eq!(
            p.iter().map(|p| (p.start, p.end)).collect::<Vec<_>>(),
            vec![(0, 10), (0, 3), (0, 5)]
        );
        let p = plan(&bodies, 9..12);
        assert_eq!(
            p.iter().map(|p| (p.start, p.end)).collect::<Vec<_>>(),
            vec![(9, 10), (0, 2)]
        );
        let p = plan(&bodies, 13..14);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].start, p[0].end), (0, 1));
        assert!(plan(&bodies, 5..5).is_empty());
        assert!(plan(&[], 0..0).is_empty());
    }

    #[test]
    fn bodies_of_records() {
        let inline = ObjectRecord {
            size: 3,
            inline_data: Bytes::from_static(b"abc"),
            ..Default::default()
        };
        assert_eq!(
            bodies(&inline, None).unwrap(),
            vec![BodyRef {
                size: 3,
                source: Source::Inline(Bytes::from_static(b"abc")),
                cipher: None,
            }]
        );
        let empty = ObjectRecord::default();
        assert_eq!(bodies(&empty, None).unwrap()[0].size, 0);
        // An encrypted record never yields bodies without their ciphers.
        let sealed = ObjectRecord {
            sse: Some(Default::default()),
            ..inline
        };
        assert!(bodies(&sealed, None).is_err());
        assert!(bodies(&sealed, Some(&[])).is_err());
    }
}
