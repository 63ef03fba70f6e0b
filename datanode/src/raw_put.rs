//! PutFragment without tonic's copies, both sides, and the data node's
//! service front ([`DataPathServer`]) that serves it and `GetFragments`
//! over h2's frames ahead of tonic.
//!
//! Client: tonic's encoder copies each message into one buffer, the block
//! too (7% of a gateway's CPU under 64 MiB PUTs). Here each message becomes
//! two body frames (`grpc_frames::message_frames`): the gRPC prefix with
//! every other field, then the block's `Bytes` itself, which h2 writes from
//! where it is. On the wire it is the same gRPC message.
//!
//! Server: tonic's decoder copies every received frame into its buffer
//! before decoding (12% of a data node's CPU under 64 MiB PUTs).
//! [`DataPathServer`] answers the same gRPC method ahead of tonic and decodes
//! each message over h2's frames (`grpc_frames::Messages`), so a block that
//! arrived in one frame (as this client sends it) reaches the store as a
//! slice of that frame. Any gRPC client's messages decode the same way;
//! every method but these two goes on to tonic.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::stream::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use kura_proto::datanode::data_node_server::DataNodeServer;
use kura_proto::datanode::{PutFragmentChunk, PutFragmentResponse};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::Status;

use crate::client::DataNodeError;
use crate::grpc_frames::{self, message_frame, message_frames, trailers, Messages};
use crate::raw_read::{check_head, BoxFuture, ReadyFrames};
use crate::service::DataNodeService;

pub const PATH: &str = "/kura.datanode.DataNode/PutFragment";
/// `PutFragmentChunk.data`'s field number.
const DATA_FIELD: u32 = 2;
/// An answer is a few varints; anything larger is not one.
const MAX_RESPONSE: usize = 1024;

/// A message as body frames: the gRPC prefix and every other field, then
/// the block (absent when empty).
fn frames(mut msg: PutFragmentChunk) -> [Option<Bytes>; 2] {
    let data = std::mem::take(&mut msg.data);
    message_frames(&msg, DATA_FIELD, data)
}

/// Sends the messages of `rx` as one PutFragment call on `channel` and
/// returns the node's answer.
pub(crate) async fn put_fragment<S>(
    channel: S,
    host: &str,
    rx: mpsc::Receiver<PutFragmentChunk>,
) -> Result<PutFragmentResponse, DataNodeError>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send,
{
    let body = ReceiverStream::new(rx)
        .flat_map(|msg| futures::stream::iter(frames(msg).into_iter().flatten()))
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let request = grpc_frames::request(host, PATH, Body::new(StreamBody::new(body)))?;
    let resp = grpc_frames::send(channel, request).await?;
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
/// here, GetFragments served by `calls`, every other method by tonic.
#[derive(Clone)]
pub struct DataPathServer {
    service: Arc<DataNodeService>,
    grpc: DataNodeServer<DataNodeService>,
}

impl DataPathServer {
    pub fn new(service: DataNodeService) -> Self {
        let service = Arc::new(service);
        DataPathServer {
            grpc: service.clone().grpc_server(),
            service,
        }
    }
}

impl tonic::server::NamedService for DataPathServer {
    const NAME: &'static str =
        <DataNodeServer<DataNodeService> as tonic::server::NamedService>::NAME;
}

impl tower::Service<http::Request<Body>> for DataPathServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<http::Request<Body>>::poll_ready(&mut self.grpc, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match req.uri().path() {
            PATH => {}
            crate::calls::GET_FRAGMENTS_PATH => {
                let response = crate::calls::serve_gets(self.service.clone(), req.into_body());
                return Box::pin(async move { Ok(response) });
            }
            _ => return self.grpc.call(req),
        }
        let service = self.service.clone();
        Box::pin(async move {
            let messages = Box::pin(
                Messages::<_, PutFragmentChunk>::new(req.into_body(), "PutFragment message")
                    .into_stream(),
            );
            Ok(match service.store_fragment(messages).await {
                Ok(answer) => answered(&answer),
                Err(status) => status.into_http(),
            })
        })
    }
}

/// A gRPC answer: the head, the one message, `grpc-status: 0` in trailers.
fn answered(answer: &PutFragmentResponse) -> http::Response<Body> {
    let frames = [
        Frame::data(message_frame(answer)),
        trailers(&tonic::Status::ok("")),
    ];
    grpc_frames::response(Body::new(ReadyFrames(frames.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked() {
        let ok = PutFragmentResponse {
            length: 5,
            blocks: 1,
        };
        let buf = message_frame(&ok).to_vec();
        assert_eq!(decode_answer(&buf).unwrap(), ok);
        assert!(decode_answer(&buf[..buf.len() - 1]).is_err());
        assert!(decode_answer(&[]).is_err());
        let mut compressed = buf.clone();
        compressed[0] = 1;
        assert!(decode_answer(&compressed).is_err());
    }
}
