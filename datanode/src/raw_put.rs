//! The client side of PutFragment, framed by hand so that no block is copied
//! on its way out.
//!
//! The node serves PutFragment with tonic as before; only the sender
//! changes. tonic's client encodes each message into one buffer, copying
//! the block (7% of a gateway's CPU under 64 MiB PUTs). Here each message
//! becomes two body frames: the gRPC length prefix with every field except
//! the block's bytes (and the block's key and length), then the block's
//! `Bytes` itself, which h2 writes from where it is. On the wire it is the
//! same gRPC message: protobuf lets fields come in any order.

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use kura_proto::datanode::{PutFragmentChunk, PutFragmentResponse};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::Status;

use crate::client::DataNodeError;
use crate::raw_read::{check_head, unavailable};

const PATH: &str = "/kura.datanode.DataNode/PutFragment";
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
