//! PutFragment without tonic's copies, both sides.
//!
//! Client: tonic's encoder copies each message into one buffer, the block
//! too (7% of a gateway's CPU under 64 MiB PUTs). Here each message becomes
//! two body frames: the gRPC length prefix with every field except the
//! block's bytes (and the block's key and length), then the block's `Bytes`
//! itself, which h2 writes from where it is. On the wire it is the same gRPC
//! message: protobuf lets fields come in any order.
//!
//! Server: tonic's decoder copies every received frame into its buffer
//! before decoding (12% of a data node's CPU under 64 MiB PUTs).
//! [`PutFragmentServer`] answers the same gRPC method ahead of tonic: it keeps
//! h2's frames as they came and decodes each message over them, so a block
//! that arrived in one frame (as this client sends it) reaches the store as
//! a slice of that frame. Any gRPC client's messages decode the same way;
//! every other method of the service goes on to tonic.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::stream::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use kura_proto::datanode::data_node_server::DataNodeServer;
use kura_proto::datanode::{PutFragmentChunk, PutFragmentResponse};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::Status;

use crate::client::DataNodeError;
use crate::raw_read::{check_head, status_map, unavailable, BoxFuture, ReadyFrames};
use crate::service::{DataNodeService, MAX_MESSAGE_SIZE};

pub const PATH: &str = "/kura.datanode.DataNode/PutFragment";
/// `PutFragmentChunk.data`'s field number.
const DATA_FIELD: u32 = 2;
/// An answer is a few varints; anything larger is not one.
const MAX_RESPONSE: usize = 1024;

/// A message as body frames: the gRPC prefix and every other field, then
/// the block (absent when empty).
fn frames(mut msg: PutFragmentChunk) -> [Option<Bytes>; 2] {
    let data = std::mem::take(&mut msg.data);
    let data_field = if data.is_empty() {
        0
    } else {
        1 + encoded_len_varint(data.len() as u64) + data.len()
    };
    let rest = msg.encoded_len();
    let mut head = BytesMut::with_capacity(5 + rest + 11);
    head.put_u8(0); // not compressed
    head.put_u32((rest + data_field) as u32);
    msg.encode_raw(&mut head);
    if data.is_empty() {
        return [Some(head.freeze()), None];
    }
    encode_key(DATA_FIELD, WireType::LengthDelimited, &mut head);
    encode_varint(data.len() as u64, &mut head);
    [Some(head.freeze()), Some(data)]
}

/// Sends the messages of `rx` as one PutFragment call on `channel` and
/// returns the node's answer.
pub(crate) async fn put_fragment<S>(
    mut channel: S,
    host: &str,
    rx: mpsc::Receiver<PutFragmentChunk>,
) -> Result<PutFragmentResponse, DataNodeError>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send,
{
    use tower::ServiceExt;
    let body = ReceiverStream::new(rx)
        .flat_map(|msg| futures::stream::iter(frames(msg).into_iter().flatten()))
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut request = http::Request::new(Body::new(StreamBody::new(body)));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = format!("http://{host}{PATH}")
        .parse()
        .map_err(|e| DataNodeError::InvalidArgument(format!("data node address {host:?}: {e}")))?;
    let h = request.headers_mut();
    h.insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    h.insert("te", http::HeaderValue::from_static("trailers"));
    let svc = channel.ready().await.map_err(unavailable)?;
    let resp = svc.call(request).await.map_err(unavailable)?;
    // A refusal can come as gRPC's trailers-only answer: status in the head.
    check_head(&resp, "PutFragment")?;
    let mut body = resp.into_body();
    let mut answer = BytesMut::new();
    let trailers = loop {
        match body.frame().await {
            None => break None,
            Some(Err(status)) => return Err(status.into()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if answer.len() + data.len() > MAX_RESPONSE {
                        return Err(DataNodeError::Internal(
                            "PutFragment answer too large".into(),
                        ));
                    }
                    answer.extend_from_slice(&data);
                }
                Err(frame) => break frame.into_trailers().ok(),
            },
        }
    };
    match trailers.as_ref().and_then(Status::from_header_map) {
        Some(s) if s.code() == tonic::Code::Ok => {}
        Some(s) => return Err(s.into()),
        None => {
            return Err(DataNodeError::Unavailable(
                "PutFragment answer ended without a status".into(),
            ))
        }
    }
    decode_answer(&answer)
}

/// The one gRPC message of an answer.
fn decode_answer(buf: &[u8]) -> Result<PutFragmentResponse, DataNodeError> {
    let bad = |why: &str| DataNodeError::Internal(format!("PutFragment answer: {why}"));
    if buf.len() < 5 {
        return Err(bad("no message"));
    }
    if buf[0] != 0 {
        return Err(bad("compressed"));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() != 5 + len {
        return Err(bad("length does not match"));
    }
    PutFragmentResponse::decode(&buf[5..]).map_err(|e| bad(&e.to_string()))
}

/// The data node's `kura.datanode.DataNode` service: PutFragment decoded
/// here, every other method by tonic.
#[derive(Clone)]
pub struct PutFragmentServer {
    service: Arc<DataNodeService>,
    grpc: DataNodeServer<DataNodeService>,
}

impl PutFragmentServer {
    pub fn new(service: DataNodeService) -> Self {
        let service = Arc::new(service);
        PutFragmentServer {
            grpc: service.clone().grpc_server(),
            service,
        }
    }
}

impl tonic::server::NamedService for PutFragmentServer {
    const NAME: &'static str =
        <DataNodeServer<DataNodeService> as tonic::server::NamedService>::NAME;
}

impl tower::Service<http::Request<Body>> for PutFragmentServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<http::Request<Body>>::poll_ready(&mut self.grpc, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != PATH {
            return self.grpc.call(req);
        }
        let service = self.service.clone();
        Box::pin(async move {
            let messages = Box::pin(futures::stream::unfold(
                Some(Messages::new(req.into_body())),
                |reader| async move {
                    let mut reader = reader?;
                    match reader.next().await.transpose()? {
                        Ok(msg) => Some((Ok(msg), Some(reader))),
                        Err(status) => Some((Err(status), None)),
                    }
                },
            ));
            Ok(match service.store_fragment(messages).await {
                Ok(answer) => answered(&answer),
                Err(status) => status.into_http(),
            })
        })
    }
}

/// A gRPC answer: the head, the one message, `grpc-status: 0` in trailers.
fn answered(answer: &PutFragmentResponse) -> http::Response<Body> {
    let mut buf = BytesMut::with_capacity(5 + answer.encoded_len());
    buf.put_u8(0);
    buf.put_u32(answer.encoded_len() as u32);
    answer.encode_raw(&mut buf);
    let frames = [
        Frame::data(buf.freeze()),
        Frame::trailers(status_map(&tonic::Status::ok(""))),
    ];
    let mut resp = http::Response::new(Body::new(ReadyFrames(frames.into())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// The request body's gRPC messages, decoded over the frames h2 received.
struct Messages<B> {
    body: B,
    frames: Frames,
}

impl<B> Messages<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn new(body: B) -> Self {
        Messages {
            body,
            frames: Frames::default(),
        }
    }

    /// The next message; None once the body ended between messages.
    async fn next(&mut self) -> Result<Option<PutFragmentChunk>, Status> {
        loop {
            if let Some(len) = self.frames.message_len()? {
                if self.frames.remaining() >= 5 + len {
                    self.frames.advance(5);
                    return PutFragmentChunk::decode((&mut self.frames).take(len))
                        .map(Some)
                        .map_err(|e| {
                            Status::invalid_argument(format!("PutFragment message: {e}"))
                        });
                }
            }
            match self.body.frame().await {
                None if self.frames.remaining() == 0 => return Ok(None),
                None => {
                    return Err(Status::invalid_argument(
                        "PutFragment body ended inside a message",
                    ))
                }
                Some(Err(e)) => {
                    return Err(Status::from_error(e.into()));
                }
                // Clients send no trailers; any that come carry nothing for us.
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.frames.push(data);
                    }
                }
            }
        }
    }
}

/// Received frames not decoded yet, as one `Buf`. A length-delimited field
/// that lies within one frame is taken as a slice of it, not copied: prost
/// reads `bytes` fields with `copy_to_bytes`.
#[derive(Default)]
struct Frames {
    parts: VecDeque<Bytes>,
    len: usize,
}

impl Frames {
    fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.len += data.len();
            self.parts.push_back(data);
        }
    }

    /// The next message's length, once its 5-byte prefix is here.
    fn message_len(&self) -> Result<Option<usize>, Status> {
        if self.len < 5 {
            return Ok(None);
        }
        let mut prefix = [0u8; 5];
        let mut at = 0;
        for part in &self.parts {
            let n = part.len().min(5 - at);
            prefix[at..at + n].copy_from_slice(&part[..n]);
            at += n;
            if at == 5 {
                break;
            }
        }
        if prefix[0] != 0 {
            return Err(Status::unimplemented("compressed PutFragment messages"));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > MAX_MESSAGE_SIZE {
            return Err(Status::out_of_range(format!(
                "PutFragment message of {len} bytes, the most is {MAX_MESSAGE_SIZE}"
            )));
        }
        Ok(Some(len))
    }
}

impl Buf for Frames {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |p| &p[..])
    }

    fn advance(&mut self, mut n: usize) {
        assert!(n <= self.len, "advance past the received frames");
        self.len -= n;
        while n > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            if front.len() > n {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.parts.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, n: usize) -> Bytes {
        assert!(n <= self.len, "copy_to_bytes past the received frames");
        match self.parts.front_mut() {
            Some(front) if front.len() >= n => {
                let out = front.split_to(n);
                if front.is_empty() {
                    self.parts.pop_front();
                }
                self.len -= n;
                out
            }
            // Cut across frames: join them.
            _ => {
                let mut out = BytesMut::with_capacity(n);
                out.put((&mut *self).take(n));
                out.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_proto::datanode::FragmentHeader;

    #[test]
    fn the_frames_are_the_message_tonic_would_send() {
        for data in [
            Bytes::new(),
            Bytes::from_static(b"x"),
            Bytes::from(vec![7u8; 300_000]),
        ] {
            let msg = PutFragmentChunk {
                header: Some(FragmentHeader {
                    block_size: 4,
                    object_key: "k".into(),
                    ..Default::default()
                }),
                data: data.clone(),
                crc32c: 0xdead_beef,
                last: true,
            };
            let mut wire = BytesMut::new();
            for f in frames(msg.clone()).into_iter().flatten() {
                wire.extend_from_slice(&f);
            }
            let len = u32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]) as usize;
            assert_eq!(wire[0], 0);
            assert_eq!(len, wire.len() - 5);
            assert_eq!(len, msg.encoded_len());
            assert_eq!(PutFragmentChunk::decode(&wire[5..]).unwrap(), msg);
        }
    }

    fn chunk(data: Bytes, last: bool) -> PutFragmentChunk {
        PutFragmentChunk {
            header: Some(FragmentHeader {
                block_size: 300_000,
                object_key: "a/b".into(),
                ..Default::default()
            }),
            crc32c: crate::crc::crc32c(&data),
            data,
            last,
        }
    }

    /// How tonic (and any gRPC client) sends a message: prefix and all fields in one piece.
    fn grpc_encoded(msg: &PutFragmentChunk) -> Vec<u8> {
        let mut out = vec![0u8];
        out.extend_from_slice(&(msg.encoded_len() as u32).to_be_bytes());
        out.extend_from_slice(&msg.encode_to_vec());
        out
    }

    type TestBody = StreamBody<futures::stream::Iter<std::vec::IntoIter<TestFrame>>>;
    type TestFrame = Result<Frame<Bytes>, Infallible>;

    fn body_of(frames: Vec<Bytes>) -> TestBody {
        let frames: Vec<TestFrame> = frames.into_iter().map(|b| Ok(Frame::data(b))).collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    async fn decode_all<B>(body: B) -> Result<Vec<PutFragmentChunk>, Status>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut messages = Messages::new(body);
        let mut out = Vec::new();
        while let Some(msg) = messages.next().await? {
            out.push(msg);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn messages_decode_whatever_the_frame_cuts() {
        let mut sent = vec![
            chunk(Bytes::from(vec![3u8; 300_000]), false),
            chunk(Bytes::from_static(b"tail"), false),
            chunk(Bytes::new(), true),
        ];
        sent[1].header = None;
        sent[2].header = None;
        let wire: Vec<u8> = sent.iter().flat_map(grpc_encoded).collect();
        for cut in [1, 4, 5, 7, 4096, 65_536, wire.len()] {
            let frames = wire.chunks(cut).map(Bytes::copy_from_slice).collect();
            assert_eq!(
                decode_all(body_of(frames)).await.unwrap(),
                sent,
                "cut {cut}"
            );
        }
    }

    #[tokio::test]
    async fn a_block_in_one_frame_is_not_copied() {
        let block = Bytes::from(vec![9u8; 262_144]);
        let frames: Vec<Bytes> = frames(chunk(block.clone(), true))
            .into_iter()
            .flatten()
            .collect();
        let got = decode_all(body_of(frames)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, block);
        assert_eq!(got[0].data.as_ptr(), block.as_ptr(), "the block was copied");
    }

    #[tokio::test]
    async fn bad_bodies_are_refused() {
        let whole = grpc_encoded(&chunk(Bytes::from_static(b"xyz"), true));
        let refused = |frames: Vec<Vec<u8>>| async move {
            decode_all(body_of(frames.into_iter().map(Bytes::from).collect()))
                .await
                .unwrap_err()
                .code()
        };
        // Ends inside a message, inside its prefix, or with a message cut short.
        assert_eq!(
            refused(vec![whole[..whole.len() - 1].to_vec()]).await,
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            refused(vec![vec![0, 0]]).await,
            tonic::Code::InvalidArgument
        );
        let mut compressed = whole.clone();
        compressed[0] = 1;
        assert_eq!(refused(vec![compressed]).await, tonic::Code::Unimplemented);
        let mut huge = whole.clone();
        huge[1..5].copy_from_slice(&(MAX_MESSAGE_SIZE as u32 + 1).to_be_bytes());
        assert_eq!(refused(vec![huge]).await, tonic::Code::OutOfRange);
        let mut garbage = vec![0u8, 0, 0, 0, 3];
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(refused(vec![garbage]).await, tonic::Code::InvalidArgument);
        // An empty body is no message at all (the service refuses the stream).
        assert!(decode_all(body_of(vec![])).await.unwrap().is_empty());
    }

    #[test]
    fn answers_are_checked() {
        let ok = PutFragmentResponse {
            length: 5,
            blocks: 1,
        };
        let mut buf = vec![0u8];
        buf.extend_from_slice(&(ok.encoded_len() as u32).to_be_bytes());
        buf.extend_from_slice(&ok.encode_to_vec());
        assert_eq!(decode_answer(&buf).unwrap(), ok);
        assert!(decode_answer(&buf[..buf.len() - 1]).is_err());
        assert!(decode_answer(&[]).is_err());
        let mut compressed = buf.clone();
        compressed[0] = 1;
        assert!(decode_answer(&compressed).is_err());
    }
}
