//! gRPC messages framed and decoded by hand over h2's frames, so a block's
//! bytes are never copied into or out of a message (decisions 0049, 0059).
//!
//! tonic's encoder copies each message, block included, into one buffer,
//! and its decoder copies every received frame into its buffer before
//! decoding (growing it with a second copy). Here a message with a large
//! `bytes` field goes out as two body frames, everything else first and
//! then the field's `Bytes` itself, which h2 writes from where it is; on
//! the wire it is the same gRPC message (protobuf lets fields come in any
//! order). Received messages are decoded over the frames as h2 delivered
//! them ([`Messages`]): a field that lies within one frame is a slice of it.
//! Any gRPC peer's messages decode the same way.

use std::collections::VecDeque;
use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::stream::Stream;
use http_body_util::BodyExt;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;
use tonic::body::Body;
use tonic::Status;

use crate::service::MAX_MESSAGE_SIZE;

/// gRPC's message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// `rest` as a gRPC message followed by the bytes field `field` holding
/// `data`, as body frames: the prefix and `rest`'s fields, then `data` as it
/// is (absent when empty). `rest` must not set `field` itself.
pub fn message_frames<M: Message>(rest: &M, field: u32, data: Bytes) -> [Option<Bytes>; 2] {
    let data_field = if data.is_empty() {
        0
    } else {
        1 + encoded_len_varint(data.len() as u64) + data.len()
    };
    let len = rest.encoded_len();
    let mut head = BytesMut::with_capacity(PREFIX + len + 11);
    head.put_u8(0); // not compressed
    head.put_u32((len + data_field) as u32);
    rest.encode_raw(&mut head);
    if data.is_empty() {
        return [Some(head.freeze()), None];
    }
    encode_key(field, WireType::LengthDelimited, &mut head);
    encode_varint(data.len() as u64, &mut head);
    [Some(head.freeze()), Some(data)]
}

/// A small message (no bytes worth keeping apart) as one gRPC frame.
pub fn message_frame<M: Message>(msg: &M) -> Bytes {
    let mut buf = BytesMut::with_capacity(PREFIX + msg.encoded_len());
    buf.put_u8(0);
    buf.put_u32(msg.encoded_len() as u32);
    msg.encode_raw(&mut buf);
    buf.freeze()
}

/// A gRPC call's request to `path` on `host` with `body` (its messages).
pub fn request(host: &str, path: &str, body: Body) -> Result<http::Request<Body>, Status> {
    let mut request = http::Request::new(body);
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = format!("http://{host}{path}")
        .parse()
        .map_err(|e| Status::invalid_argument(format!("data node address {host:?}: {e}")))?;
    let h = request.headers_mut();
    h.insert(http::header::CONTENT_TYPE, GRPC);
    h.insert("te", http::HeaderValue::from_static("trailers"));
    Ok(request)
}

/// A gRPC answer's head, with `body` (its messages and trailers).
pub fn response(body: Body) -> http::Response<Body> {
    let mut resp = http::Response::new(body);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, GRPC);
    resp
}

const GRPC: http::HeaderValue = http::HeaderValue::from_static("application/grpc");

/// The head of an answer: a gRPC status in it (a trailers-only refusal) or
/// an HTTP status other than 200 is the call's error.
pub fn head_status(resp: &http::Response<Body>, what: &str) -> Result<(), Status> {
    if let Some(status) = Status::from_header_map(resp.headers()) {
        if status.code() != tonic::Code::Ok {
            return Err(status);
        }
    }
    if resp.status() != http::StatusCode::OK {
        return Err(Status::unavailable(format!(
            "{what} answered HTTP {}",
            resp.status()
        )));
    }
    Ok(())
}

/// Sends `request` on `channel` once it is ready: the answer's head, or the
/// channel's failure as a status.
pub async fn send<S>(
    mut channel: S,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, Status>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use tower::ServiceExt;
    let svc = channel.ready().await.map_err(transport_status)?;
    svc.call(request).await.map_err(transport_status)
}

/// `grpc-status` and `grpc-message` as gRPC writes them.
pub fn status_map(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.clear();
        map.insert("grpc-status", http::HeaderValue::from(status.code() as i32));
    }
    map
}

/// `status` as a body's trailers frame.
pub fn trailers(status: &Status) -> http_body::Frame<Bytes> {
    http_body::Frame::trailers(status_map(status))
}

/// A channel's failure to call, as a status (`Unavailable` unless the
/// channel's own layers said otherwise).
fn transport_status(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Status {
    let e = e.into();
    match e.downcast::<Status>() {
        Ok(status) => *status,
        Err(e) => Status::unavailable(e.to_string()),
    }
}

/// The gRPC messages of a body, decoded over the frames h2 received.
pub struct Messages<B, M> {
    body: B,
    frames: Frames,
    /// What the messages are, for errors ("PutFragment message").
    what: &'static str,
    _message: PhantomData<fn() -> M>,
}

impl<B, M> Messages<B, M>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    M: Message + Default,
{
    pub fn new(body: B, what: &'static str) -> Self {
        Messages {
            body,
            frames: Frames::default(),
            what,
            _message: PhantomData,
        }
    }

    /// The next message; None once the body ended between messages
    /// (trailers, if any, are not looked at).
    pub async fn next(&mut self) -> Result<Option<M>, Status> {
        loop {
            if let Some(len) = self.frames.message_len(self.what)? {
                if self.frames.remaining() >= PREFIX + len {
                    self.frames.advance(PREFIX);
                    return M::decode((&mut self.frames).take(len))
                        .map(Some)
                        .map_err(|e| Status::invalid_argument(format!("{}: {e}", self.what)));
                }
            }
            match self.body.frame().await {
                None if self.frames.remaining() == 0 => return Ok(None),
                None => {
                    return Err(Status::invalid_argument(format!(
                        "body ended inside a {}",
                        self.what
                    )))
                }
                Some(Err(e)) => return Err(Status::from_error(e.into())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.frames.push(data);
                    }
                }
            }
        }
    }

    /// The messages as a stream that ends after its first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<M, Status>> + Send
    where
        B: Send,
        M: Send,
    {
        futures::stream::unfold(Some(self), |reader| async move {
            let mut reader = reader?;
            match reader.next().await.transpose()? {
                Ok(msg) => Some((Ok(msg), Some(reader))),
                Err(status) => Some((Err(status), None)),
            }
        })
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
    fn message_len(&self, what: &str) -> Result<Option<usize>, Status> {
        if self.len < PREFIX {
            return Ok(None);
        }
        let mut prefix = [0u8; PREFIX];
        let mut at = 0;
        for part in &self.parts {
            let n = part.len().min(PREFIX - at);
            prefix[at..at + n].copy_from_slice(&part[..n]);
            at += n;
            if at == PREFIX {
                break;
            }
        }
        if prefix[0] != 0 {
            return Err(Status::unimplemented(format!("compressed {what}s")));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > MAX_MESSAGE_SIZE {
            return Err(Status::out_of_range(format!(
                "{what} of {len} bytes, the most is {MAX_MESSAGE_SIZE}"
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
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::StreamBody;
    use kura_proto::datanode::{BlockGetAnswer, FragmentHeader, PutFragmentChunk};

    const PUT: &str = "PutFragment message";
    /// `PutFragmentChunk.data`'s field number.
    const DATA_FIELD: u32 = 2;

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

    /// `msg` as body frames with its `data` apart.
    fn split_frames(mut msg: PutFragmentChunk) -> Vec<Bytes> {
        let data = std::mem::take(&mut msg.data);
        message_frames(&msg, DATA_FIELD, data)
            .into_iter()
            .flatten()
            .collect()
    }

    #[test]
    fn the_frames_are_the_message_tonic_would_send() {
        for data in [
            Bytes::new(),
            Bytes::from_static(b"x"),
            Bytes::from(vec![7u8; 300_000]),
        ] {
            let msg = chunk(data, true);
            let wire: Vec<u8> = split_frames(msg.clone()).concat();
            assert_eq!(wire[0], 0);
            let len = u32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]) as usize;
            assert_eq!(len, wire.len() - PREFIX);
            assert_eq!(PutFragmentChunk::decode(&wire[PREFIX..]).unwrap(), msg);
        }
        // Another message and field: a block answer, its data last.
        let answer = BlockGetAnswer {
            id: 7,
            data: Bytes::from(vec![1u8; 1000]),
            crc32c: 9,
            ..Default::default()
        };
        let mut rest = answer.clone();
        let data = std::mem::take(&mut rest.data);
        let wire: Vec<u8> = message_frames(&rest, 4, data)
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .concat();
        assert_eq!(BlockGetAnswer::decode(&wire[PREFIX..]).unwrap(), answer);
        assert_eq!(message_frame(&rest)[PREFIX..], rest.encode_to_vec()[..]);
    }

    /// How tonic (and any gRPC client) sends a message: prefix and all fields in one piece.
    fn grpc_encoded(msg: &PutFragmentChunk) -> Vec<u8> {
        message_frame(msg).to_vec()
    }

    type TestBody = StreamBody<futures::stream::Iter<std::vec::IntoIter<TestFrame>>>;
    type TestFrame = Result<Frame<Bytes>, Infallible>;

    fn body_of(frames: Vec<Bytes>) -> TestBody {
        let frames: Vec<TestFrame> = frames.into_iter().map(|b| Ok(Frame::data(b))).collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    async fn decode_all(body: TestBody) -> Result<Vec<PutFragmentChunk>, Status> {
        let mut messages = Messages::<_, PutFragmentChunk>::new(body, PUT);
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
        let got = decode_all(body_of(split_frames(chunk(block.clone(), true))))
            .await
            .unwrap();
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
        // An empty body is no message at all.
        assert!(decode_all(body_of(vec![])).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_stream_ends_after_its_first_error() {
        let mut wire = grpc_encoded(&chunk(Bytes::from_static(b"ok"), false));
        wire.extend_from_slice(&[1, 0, 0, 0, 0]); // compressed: refused
        wire.extend_from_slice(&grpc_encoded(&chunk(Bytes::new(), true)));
        let got: Vec<_> = futures::StreamExt::collect(
            Messages::<_, PutFragmentChunk>::new(body_of(vec![Bytes::from(wire)]), PUT)
                .into_stream(),
        )
        .await;
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert_eq!(
            got[1].as_ref().unwrap_err().code(),
            tonic::Code::Unimplemented
        );
    }
}
