//! Client requests multiplexed over one long-lived gRPC stream per client
//! and store (`Metashard/Calls`, TiKV's BatchCommands), both ends.
//!
//! A unary call costs an HTTP/2 stream: headers and trailers encoded and
//! decoded, a server task and the service stack per request. Under small
//! PUTs that was most of what a leader's gRPC threads did. On a `Calls`
//! stream a request is one message with an id; the server answers each call
//! as it completes (so a slow one does not hold up the rest) through the
//! same `Metashard::batch` / `Metashard::get` a unary call reaches, so
//! admission, region errors and statuses are the same.
//!
//! The client ([`CallStream`]) keeps one stream per store address. A stream
//! that ends or fails answers every call still waiting with `Unavailable`
//! (outcome unknown, as a unary call's transport error) and is reopened by
//! the next call. Requests too large to share a stream without holding up
//! the others go unary ([`MAX_STREAMED_BYTES`]).

use std::sync::Arc;

use kura_pd_client::call_table::{outcome, serve_calls, AnswerStream, CallSender, Handled};
use kura_pd_client::channel::Channel;
use kura_proto::metashard::metashard_client::MetashardClient;
use kura_proto::metashard::metashard_server::Metashard;
use kura_proto::metashard::{call, call_answer, Call, CallAnswer};
use kura_proto::metashard::{BatchRequest, BatchResponse, GetRequest, GetResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics;
use crate::service::MetashardService;

/// Requests whose encoding is larger go as unary calls: one HTTP/2 stream
/// carries a store's calls in order, and a large message would make the
/// small ones behind it wait for its bytes.
pub const MAX_STREAMED_BYTES: usize = 64 << 10;

/// Server end: answers the calls of `inbound` until it ends, the client
/// goes away or the store stops.
pub fn serve(svc: &MetashardService, inbound: Streaming<Call>) -> AnswerStream<CallAnswer> {
    let svc = Arc::new(svc.clone());
    let mut stopping = svc.stopping();
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let open = &*metrics::CALL_STREAMS;
    serve_calls(
        inbound,
        stopped,
        "store is stopping",
        open,
        move |c: Call| {
            if stalls_here() {
                return Handled::Stall;
            }
            metrics::STREAM_CALLS.inc();
            let svc = svc.clone();
            Handled::Answer(Box::pin(async move { answer(&svc, c).await }))
        },
    )
}

/// Failpoint `metashard::call_stream_stall` (tests): this stream's task
/// stops for good, as a stuck one would.
fn stalls_here() -> bool {
    fail::fail_point!("metashard::call_stream_stall", |_| true);
    false
}

async fn answer(svc: &MetashardService, c: Call) -> CallAnswer {
    let id = c.id;
    let out = match c.kind {
        Some(call::Kind::Batch(r)) => svc
            .batch(Request::new(r))
            .await
            .map(|r| call_answer::Kind::Batch(r.into_inner())),
        Some(call::Kind::Get(r)) => svc
            .get(Request::new(r))
            .await
            .map(|r| call_answer::Kind::Get(r.into_inner())),
        None => Err(Status::invalid_argument("a call without a request")),
    };
    match out {
        Ok(kind) => CallAnswer {
            id,
            code: 0,
            message: String::new(),
            kind: Some(kind),
        },
        Err(s) => CallAnswer {
            id,
            code: s.code() as i32,
            message: s.message().to_string(),
            kind: None,
        },
    }
}

/// Client end: one open `Calls` stream to a store.
pub struct CallStream(CallSender<Call, call_answer::Kind>);

impl CallStream {
    /// Opens a stream (one round trip: the server's response headers).
    pub async fn open(mut client: MetashardClient<Channel>) -> Result<CallStream, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let answers = client
            .calls(UnboundedReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(CallStream(CallSender::new(tx, answers, |a: CallAnswer| {
            (a.id, outcome(a.code, a.message, a.kind))
        })))
    }

    /// The stream ended (or was retired): calls fail at once; open another.
    pub fn has_ended(&self) -> bool {
        self.0.has_ended()
    }

    /// Takes no more calls: the next call opens another stream. Calls
    /// already waiting still get their answers; the stream closes once the
    /// last holder drops it.
    pub fn retire(&self) {
        self.0.retire();
    }

    /// `Metashard/Batch` as a call.
    pub async fn batch(&self, req: BatchRequest) -> Result<Response<BatchResponse>, Status> {
        match self.call(call::Kind::Batch(req)).await? {
            call_answer::Kind::Batch(r) => Ok(Response::new(r)),
            _ => Err(Status::internal("a batch answered as another call")),
        }
    }

    /// `Metashard/Get` as a call.
    pub async fn get(&self, req: GetRequest) -> Result<Response<GetResponse>, Status> {
        match self.call(call::Kind::Get(req)).await? {
            call_answer::Kind::Get(r) => Ok(Response::new(r)),
            _ => Err(Status::internal("a get answered as another call")),
        }
    }

    /// Sends one request and waits for its answer. Dropping the future
    /// forgets the call (its answer, if it comes, is dropped).
    async fn call(&self, kind: call::Kind) -> Result<call_answer::Kind, Status> {
        self.0
            .call(|id| Call {
                id,
                kind: Some(kind),
            })
            .await
    }
}
