//! Fragment reads over raw HTTP/2 (decision 0049): the request and every
//! check are GetFragment's, but the response body is the blocks themselves,
//! each behind a 12-byte header, with the outcome in the trailers.
//!
//! Why not gRPC: tonic copies each message into its encode buffer on the
//! sending node and each received frame into its decode buffer (growing it
//! with a second copy) on the gateway — two passes over every byte a GET
//! serves, about a sixth of the gateway's CPU on large GETs. Here the
//! buffer a block was read into is what h2 writes, and the gateway keeps
//! the `Bytes` h2 received (a block split across DATA frames is the one
//! case that is copied, to join it).
//!
//! Served on the data node's gRPC port next to the gRPC service: the same
//! connections, TLS and cluster-id check.
//!
//! Request: `GET` with the GetFragmentRequest in the `kura-fragment-request`
//! header (one HEADERS frame), or, as the first gateways sent it, a POST
//! whose body is the request.
//!
//! Body: for each block, `index u32 | len u32 | crc32c u32` (big-endian),
//! then `len` bytes. Trailers: `grpc-status` (and `grpc-message`) as gRPC
//! writes them; a body that ends without them was cut and is an error —
//! unless the client sent `kura-fragment-eos` and the node marked the last
//! block ([`LAST_BLOCK`] in its length): then the body ends with that block.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, Limited, StreamBody};
use kura_proto::datanode::GetFragmentRequest;
use prost::Message;
use tonic::body::Body;
use tonic::Status;

use crate::client::DataNodeError;
use crate::crc::crc32c;
use crate::grpc_frames::trailers;
use crate::service::{plan_read, spawn_reads, Block, MAX_MESSAGE_SIZE};
use crate::store::Store;

/// The path the raw read is served at.
pub const PATH: &str = "/kura.datanode.Raw/GetFragment";
const HEADER_LEN: usize = 12;
// The gateways' receive windows are counted in blocks with this header.
const _: () = assert!(kura_pd_client::channel::BULK_BLOCK == (256 << 10) + HEADER_LEN as u32);
/// The GetFragmentRequest, protobuf in unpadded base64.
const REQUEST_HEADER: &str = "kura-fragment-request";
/// Sent by clients that understand [`LAST_BLOCK`].
const EOS_HEADER: &str = "kura-fragment-eos";
/// Set in a block header's length (lengths stay far below it): the last
/// block, all went well, and the body ends with it — no trailers. h2 must
/// flush a large DATA frame before it writes the next frame, so trailers
/// after a block cost the node a write of their own and the gateway a
/// wake-up; END_STREAM on the block's own frame costs nothing.
const LAST_BLOCK: u32 = 1 << 31;
const _: () = assert!((MAX_MESSAGE_SIZE as u32) < LAST_BLOCK);
/// A GetFragmentRequest is a fragment id and two numbers.
const MAX_REQUEST_BYTES: usize = 64 << 10;

/// The server side: a tower service for the data node's tonic router.
#[derive(Clone)]
pub struct RawReadService {
    store: Arc<Store>,
}

impl RawReadService {
    pub fn new(store: Arc<Store>) -> Self {
        RawReadService { store }
    }
}

impl tonic::server::NamedService for RawReadService {
    const NAME: &'static str = "kura.datanode.Raw";
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl tower::Service<http::Request<Body>> for RawReadService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let store = self.store.clone();
        Box::pin(async move { Ok(serve(store, req).await) })
    }
}

async fn serve(store: Arc<Store>, req: http::Request<Body>) -> http::Response<Body> {
    if req.uri().path() != PATH {
        return Status::unimplemented(format!("no raw method {}", req.uri().path())).into_http();
    }
    let eos = req.headers().contains_key(EOS_HEADER);
    let req = match request_of(req).await {
        Ok(r) => r,
        Err(status) => return status.into_http(),
    };
    let plan = match plan_read(&store, req) {
        Ok(p) => p,
        Err(status) => return status.into_http(),
    };
    // One block in the page cache (a small object's whole fragment): read
    // here, so the head and the block (and the status) are all ready at
    // once and h2 writes them together — no task, no channel.
    if plan.end - plan.first == 1 {
        match store.read_block_cached(&plan.loc, plan.first) {
            Some(Ok((data, crc))) => {
                let mut frames = block_frames((plan.first, data, crc), eos);
                if !eos {
                    frames.push(trailers(&Status::ok("")));
                }
                return response(Body::new(ReadyFrames(frames.into())));
            }
            Some(Err(e)) => return Status::from(e).into_http(),
            None => {}
        }
    }
    let blocks = spawn_reads(&store, plan);
    let frames = futures::stream::unfold(Some(blocks), |rx| async move {
        let mut rx = rx?;
        let (frames, rx) = match rx.recv().await {
            Some(Ok(block)) => (block_frames(block, false), Some(rx)),
            Some(Err(status)) => (vec![trailers(&status)], None),
            None => (vec![trailers(&Status::ok(""))], None),
        };
        Some((futures::stream::iter(frames), rx))
    })
    .flatten()
    .map(Ok::<_, Infallible>);
    response(Body::new(StreamBody::new(frames)))
}

/// A response body whose frames are all at hand: it says it has ended as
/// soon as the last one is taken, so hyper sets END_STREAM on that frame.
pub(crate) struct ReadyFrames(pub(crate) VecDeque<Frame<Bytes>>);

impl http_body::Body for ReadyFrames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// The request: in the [`REQUEST_HEADER`] (a body-less request is one
/// HEADERS frame, so one write and one wake-up per fragment read), or as the
/// body, as the first gateways sent it.
async fn request_of(req: http::Request<Body>) -> Result<GetFragmentRequest, Status> {
    use base64::Engine;
    let encoded = match req.headers().get(REQUEST_HEADER) {
        Some(v) => base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(v.as_bytes())
            .map(Bytes::from)
            .map_err(|e| Status::invalid_argument(format!("{REQUEST_HEADER}: {e}")))?,
        None => Limited::new(req.into_body(), MAX_REQUEST_BYTES)
            .collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("request body: {e}")))?
            .to_bytes(),
    };
    GetFragmentRequest::decode(encoded)
        .map_err(|e| Status::invalid_argument(format!("request: {e}")))
}

fn response(body: Body) -> http::Response<Body> {
    let mut resp = http::Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// A block's header and data; `last` marks it [`LAST_BLOCK`].
fn block_frames((index, data, crc): Block, last: bool) -> Vec<Frame<Bytes>> {
    let mut head = BytesMut::with_capacity(HEADER_LEN);
    head.put_u32(index);
    head.put_u32(data.len() as u32 | if last { LAST_BLOCK } else { 0 });
    head.put_u32(crc);
    vec![Frame::data(head.freeze()), Frame::data(data)]
}

/// The client side: sends the request on `channel` (the node's gRPC
/// channel) and streams the blocks, each checked against its crc32c, as
/// [`crate::client::DataNodeClient::get_fragment`] promises.
pub(crate) async fn get_fragment<S>(
    channel: S,
    host: &str,
    req: GetFragmentRequest,
    idle: Duration,
) -> Result<BoxStream<'static, Result<Bytes, DataNodeError>>, DataNodeError>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send,
{
    let (first, count) = (req.first_block, req.block_count);
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(req.encode_to_vec())
    };
    let mut request = http::Request::new(Body::empty());
    *request.method_mut() = http::Method::GET;
    *request.uri_mut() = format!("http://{host}{PATH}")
        .parse()
        .map_err(|e| DataNodeError::InvalidArgument(format!("data node address {host:?}: {e}")))?;
    request.headers_mut().insert(
        REQUEST_HEADER,
        http::HeaderValue::try_from(encoded)
            .map_err(|e| DataNodeError::InvalidArgument(format!("fragment request: {e}")))?,
    );
    request
        .headers_mut()
        .insert(EOS_HEADER, http::HeaderValue::from_static("1"));
    let resp = tokio::time::timeout(idle, crate::grpc_frames::send(channel, request))
        .await
        .map_err(|_| DataNodeError::TimedOut(format!("no response head for {idle:?}")))??;
    // A refusal before any block (not found, out of range, another
    // cluster) comes as gRPC's trailers-only answer: status in the head.
    check_head(&resp, "raw read")?;
    let reader = BlockReader::new(first, count);
    let state = (resp.into_body(), reader);
    let stream = futures::stream::unfold(state, move |(mut body, mut reader)| async move {
        loop {
            if let Some(item) = reader.ready.pop_front() {
                if item.is_err() {
                    reader.ready.clear();
                    reader.finished = true;
                }
                return Some((item, (body, reader)));
            }
            if reader.finished {
                return None;
            }
            match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => reader.fail(DataNodeError::TimedOut(format!("no block for {idle:?}"))),
                Ok(None) => reader.end(None),
                Ok(Some(Err(status))) => reader.fail(status.into()),
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => reader.push(data),
                    Err(frame) => reader.end(frame.into_trailers().ok()),
                },
            }
        }
    });
    Ok(stream.boxed())
}

/// The head of a raw answer: a gRPC status in it (a trailers-only refusal)
/// or an HTTP status other than 200 is the call's error.
pub(crate) fn check_head(resp: &http::Response<Body>, what: &str) -> Result<(), DataNodeError> {
    Ok(crate::grpc_frames::head_status(resp, what)?)
}

/// Cuts the body's DATA frames back into blocks.
struct BlockReader {
    /// The block due next, and how many are due (0: to the end).
    expected: u32,
    first: u32,
    count: u32,
    head: BytesMut,
    /// Header of the block being received: (len, crc32c, marked last).
    block: Option<(usize, u32, bool)>,
    /// A block marked [`LAST_BLOCK`] came whole: the body must end now.
    done: bool,
    parts: Vec<Bytes>,
    have: usize,
    ready: VecDeque<Result<Bytes, DataNodeError>>,
    finished: bool,
}

impl BlockReader {
    fn new(first: u32, count: u32) -> Self {
        BlockReader {
            expected: first,
            first,
            count,
            head: BytesMut::with_capacity(HEADER_LEN),
            block: None,
            done: false,
            parts: Vec::new(),
            have: 0,
            ready: VecDeque::new(),
            finished: false,
        }
    }

    fn fail(&mut self, e: DataNodeError) {
        self.ready.push_back(Err(e));
    }

    fn push(&mut self, mut data: Bytes) {
        while !data.is_empty() {
            if self.done {
                return self.fail(DataNodeError::Internal(
                    "node sent data after the last block".into(),
                ));
            }
            let Some((len, crc, _)) = self.block else {
                let n = (HEADER_LEN - self.head.len()).min(data.len());
                self.head.extend_from_slice(&data[..n]);
                data.advance(n);
                if self.head.len() == HEADER_LEN {
                    if let Err(e) = self.start_block() {
                        return self.fail(e);
                    }
                }
                continue;
            };
            let n = (len - self.have).min(data.len());
            self.parts.push(data.split_to(n));
            self.have += n;
            if self.have == len {
                self.finish_block(crc);
            }
        }
    }

    fn start_block(&mut self) -> Result<(), DataNodeError> {
        let mut h = self.head.split().freeze();
        let (index, len, crc) = (h.get_u32(), h.get_u32(), h.get_u32());
        let last = len & LAST_BLOCK != 0;
        let len = (len & !LAST_BLOCK) as usize;
        if index != self.expected {
            return Err(DataNodeError::Internal(format!(
                "node sent block {index} where {} was due",
                self.expected
            )));
        }
        if len > MAX_MESSAGE_SIZE {
            return Err(DataNodeError::Internal(format!(
                "node announced a block of {len} bytes"
            )));
        }
        self.block = Some((len, crc, last));
        if len == 0 {
            self.finish_block(crc);
        }
        Ok(())
    }

    fn finish_block(&mut self, crc: u32) {
        let data = match self.parts.len() {
            1 => self.parts.pop().unwrap_or_default(),
            _ => {
                let mut joined = BytesMut::with_capacity(self.have);
                for p in self.parts.drain(..) {
                    joined.extend_from_slice(&p);
                }
                joined.freeze()
            }
        };
        self.done = self.block.take().is_some_and(|(_, _, last)| last);
        self.have = 0;
        let got = crc32c(&data);
        let item = if got == crc {
            Ok(data)
        } else {
            Err(DataNodeError::Corrupt(format!(
                "block {} arrived with crc32c {got:08x}, node sent {crc:08x}",
                self.expected
            )))
        };
        self.expected = self.expected.wrapping_add(1);
        self.ready.push_back(item);
    }

    /// The trailers came: the node's last word.
    fn end(&mut self, trailers: Option<http::HeaderMap>) {
        self.finished = true;
        let status = trailers.as_ref().and_then(Status::from_header_map);
        let received = self.expected.wrapping_sub(self.first);
        let e = match status {
            // The body ended right after a block marked last: complete if
            // it brought every block asked for.
            None if self.done && (self.count == 0 || received >= self.count) => return,
            None if self.done => DataNodeError::Unavailable(format!(
                "stream ended after {received} of {} blocks",
                self.count
            )),
            None => DataNodeError::Unavailable("fragment stream ended without its status".into()),
            Some(s) if s.code() != tonic::Code::Ok => s.into(),
            Some(_) if self.block.is_some() || !self.head.is_empty() => {
                DataNodeError::Unavailable("fragment stream ended inside a block".into())
            }
            Some(_) if self.count != 0 && received < self.count => DataNodeError::Unavailable(
                format!("stream ended after {received} of {} blocks", self.count),
            ),
            Some(_) => return,
        };
        self.ready.push_back(Err(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc_frames::status_map;

    fn encoded(blocks: &[(u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, data) in blocks {
            out.extend_from_slice(&i.to_be_bytes());
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(&crc32c(data).to_be_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    fn ok_trailers() -> Option<http::HeaderMap> {
        Some(status_map(&Status::ok("")))
    }

    fn drain(r: &mut BlockReader) -> Vec<Result<Bytes, String>> {
        r.ready
            .drain(..)
            .map(|x| x.map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn blocks_come_back_whatever_the_frame_cuts() {
        let a = vec![7u8; 1000];
        let b: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let wire = encoded(&[(5, &a), (6, &[]), (7, &b)]);
        for cut in [1, 5, 12, 13, 999, 1012, 1024, wire.len()] {
            let mut r = BlockReader::new(5, 3);
            for piece in wire.chunks(cut) {
                r.push(Bytes::copy_from_slice(piece));
            }
            r.end(ok_trailers());
            let got = drain(&mut r);
            assert_eq!(got.len(), 3, "cut {cut}: {got:?}");
            assert_eq!(got[0].as_deref().ok(), Some(&a[..]), "cut {cut}");
            assert_eq!(got[1].as_deref().ok(), Some(&[][..]), "cut {cut}");
            assert_eq!(got[2].as_deref().ok(), Some(&b[..]), "cut {cut}");
        }
    }

    #[test]
    fn a_whole_block_in_one_frame_is_not_copied() {
        let data = Bytes::from(vec![3u8; 4096]);
        // Header of a 4096-byte block, then the block as one frame.
        let mut head = BytesMut::new();
        head.put_u32(0);
        head.put_u32(4096);
        head.put_u32(crc32c(&data));
        let mut r2 = BlockReader::new(0, 1);
        r2.push(head.freeze());
        r2.push(data.clone());
        let got = r2.ready.pop_front().expect("a block").expect("verified");
        assert_eq!(got.as_ptr(), data.as_ptr(), "the frame's own bytes");
    }

    #[test]
    fn a_block_marked_last_ends_the_body_without_trailers() {
        let data = vec![7u8; 300];
        let mut wire = encoded(&[(0, &data)]);
        wire[4] |= 0x80; // LAST_BLOCK, in the length's high bit
        let mut r = BlockReader::new(0, 0);
        r.push(Bytes::from(wire.clone()));
        r.end(None);
        let got = drain(&mut r);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].as_deref().ok(), Some(&data[..]));
        // Cut inside it.
        let mut r = BlockReader::new(0, 0);
        r.push(Bytes::copy_from_slice(&wire[..100]));
        r.end(None);
        assert!(matches!(r.ready.pop_front(), Some(Err(_))));
        // Anything after it.
        let mut more = wire.clone();
        more.extend(encoded(&[(1, &data)]));
        let mut r = BlockReader::new(0, 0);
        r.push(Bytes::from(more));
        let got = drain(&mut r);
        assert!(
            got.len() == 2 && got[0].is_ok() && got[1].is_err(),
            "{got:?}"
        );
        // Fewer blocks than asked for.
        let mut r = BlockReader::new(0, 2);
        r.push(Bytes::from(wire));
        r.end(None);
        let got = drain(&mut r);
        assert!(
            got.len() == 2 && got[0].is_ok() && got[1].is_err(),
            "{got:?}"
        );
    }

    #[test]
    fn damage_cuts_and_bad_status_are_errors() {
        let data = vec![1u8; 100];
        let mut wire = encoded(&[(0, &data)]);
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let mut r = BlockReader::new(0, 0);
        r.push(Bytes::from(wire));
        assert!(matches!(
            r.ready.pop_front(),
            Some(Err(DataNodeError::Corrupt(_)))
        ));

        // Out of order.
        let mut r = BlockReader::new(0, 0);
        r.push(Bytes::from(encoded(&[(1, &data)])));
        assert!(matches!(r.ready.pop_front(), Some(Err(_))));

        // Trailers inside a block, none at all, or fewer blocks than asked.
        let wire = encoded(&[(0, &data)]);
        let mut r = BlockReader::new(0, 0);
        r.push(Bytes::copy_from_slice(&wire[..50]));
        r.end(ok_trailers());
        assert!(matches!(r.ready.pop_front(), Some(Err(_))));
        let mut r = BlockReader::new(0, 0);
        r.push(Bytes::from(wire.clone()));
        r.end(None);
        assert_eq!(drain(&mut r).len(), 2);
        let mut r = BlockReader::new(0, 2);
        r.push(Bytes::from(wire.clone()));
        r.end(ok_trailers());
        let got = drain(&mut r);
        assert!(got[0].is_ok() && got[1].is_err(), "{got:?}");

        // The node's error status.
        let mut r = BlockReader::new(0, 0);
        r.end(Some(status_map(&Status::data_loss("bad disk"))));
        assert!(matches!(
            r.ready.pop_front(),
            Some(Err(DataNodeError::Corrupt(_)))
        ));
    }

    /// A store with fragment 1 (one 4 KiB block) and fragment 2 (three 1 KiB
    /// blocks, the last short), served by `serve` itself.
    fn served_store(dir: &std::path::Path) -> Arc<Store> {
        use crate::store::StoreOptions;
        let store = Store::open(
            dir,
            StoreOptions {
                min_free_bytes: 0,
                ..StoreOptions::default()
            },
        )
        .expect("store");
        for (n, block, len) in [(1u8, 4096usize, 4096usize), (2, 1024, 2600)] {
            let mut w = store
                .begin_put(kura_proto::datanode::FragmentHeader {
                    id: Some(raw_fid(n)),
                    block_size: block as u32,
                    ..Default::default()
                })
                .expect("begin");
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ n).collect();
            for c in data.chunks(block) {
                w.append_block(bytes::Bytes::copy_from_slice(c), crc32c(c))
                    .expect("append");
            }
            w.commit().expect("commit");
        }
        store
    }

    fn raw_fid(n: u8) -> kura_proto::datanode::FragmentId {
        kura_proto::datanode::FragmentId {
            data_id: Bytes::from(vec![n; 16]),
            shard: 0,
        }
    }

    fn raw_req(n: u8, first: u32, count: u32) -> GetFragmentRequest {
        GetFragmentRequest {
            id: Some(raw_fid(n)),
            first_block: first,
            block_count: count,
        }
    }

    async fn fetch(store: &Arc<Store>, req: GetFragmentRequest) -> Result<Vec<Bytes>, String> {
        let store = store.clone();
        let svc = tower::service_fn(move |r| {
            let store = store.clone();
            async move { Ok::<_, Infallible>(serve(store, r).await) }
        });
        let stream = get_fragment(svc, "node", req, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
        stream
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|b| b.map_err(|e| e.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn served_blocks_one_inline_or_many_streamed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = served_store(dir.path());
        // A one-block fragment: answered inline, whole.
        let one = fetch(&store, raw_req(1, 0, 0)).await.expect("one block");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].len(), 4096);
        assert_eq!(one[0][5], 5 ^ 1);
        // Several blocks: streamed from a task; one block of them: inline.
        let all = fetch(&store, raw_req(2, 0, 0)).await.expect("all blocks");
        assert_eq!(
            all.iter().map(Bytes::len).collect::<Vec<_>>(),
            [1024, 1024, 552]
        );
        let mid = fetch(&store, raw_req(2, 1, 1)).await.expect("block 1");
        assert_eq!(mid, [all[1].clone()]);
        let tail = fetch(&store, raw_req(2, 2, 0)).await.expect("from block 2");
        assert_eq!(tail, [all[2].clone()]);
        // Refusals come as the node's status.
        let missing = fetch(&store, raw_req(9, 0, 0)).await.expect_err("missing");
        assert!(missing.contains("not found"), "{missing}");
        let past = fetch(&store, raw_req(2, 2, 2))
            .await
            .expect_err("out of range");
        assert!(past.contains("fragment has 3"), "{past}");
    }

    #[tokio::test]
    async fn a_request_in_the_body_is_still_served() {
        // The first gateways with raw reads sent the request as a POST body.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = served_store(dir.path());
        let body = Bytes::from(raw_req(2, 0, 0).encode_to_vec());
        let mut req = http::Request::new(Body::new(http_body_util::Full::new(body)));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("http://node{PATH}").parse().expect("uri");
        let resp = serve(store, req).await;
        assert_eq!(resp.status(), http::StatusCode::OK);
        let mut reader = BlockReader::new(0, 0);
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            match frame.expect("frame").into_data() {
                Ok(data) => reader.push(data),
                Err(f) => reader.end(f.into_trailers().ok()),
            }
        }
        let got = drain(&mut reader);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[2].as_ref().map(Bytes::len), Ok(552));
    }
}
