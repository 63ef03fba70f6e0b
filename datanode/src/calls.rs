//! Small fragment writes and block reads as calls on one long-lived stream
//! per client and node (`DataNode/PutFragments`, `DataNode/GetFragments`),
//! both ends: decision 0055's call streams, applied to the data path
//! (decision 0059).
//!
//! A `PutFragment` or `GetFragment` call costs an HTTP/2 stream: headers and
//! trailers encoded and decoded on both ends, a server task, and on the
//! client tasks, channels and timers. The fragments of a body of one stripe
//! are a single block each, known whole before they are sent or wanted
//! whole, so all of that was spent on one message: under 64 KiB PUTs it was
//! most of a gateway's CPU. Here such a fragment (or block) is one message
//! with an id on a stream the client keeps open; the node handles each
//! through the same service code a call of its own reaches
//! ([`DataNodeService::store_whole`], [`DataNodeService::read_one_block`]:
//! same checks, same commit, same verified reads) and answers it when done,
//! in completion order.
//!
//! The client ([`PutStream`], [`GetStream`]) keeps one stream of each kind
//! per node address. A stream that ends or fails answers every call still
//! waiting with `Unavailable`: a write's fate is then unknown, as after a
//! `PutFragment` call's transport error (the gateway never references a
//! fragment it was not told is durable). A call that times out, or that its
//! caller gave up on after a second, retires its stream, so a stream stuck
//! while its connection stays up is not used again.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{Stream, StreamExt};
use futures::Future;
use http_body::Frame;
use http_body_util::StreamBody;
use kura_pd_client::call_table::{outcome, serve_calls, AnswerStream, CallSender, Handled};
use kura_pd_client::channel::Channel;
use kura_proto::datanode::data_node_client::DataNodeClient as RawClient;
use kura_proto::datanode::{
    BlockGet, BlockGetAnswer, FragmentId, FragmentPut, FragmentPutAnswer, PutFragmentChunk,
    PutFragmentResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::body::Body;
use tonic::{Status, Streaming};

use crate::client::DataNodeError;
use crate::crc::crc32c;
use crate::grpc_frames::{self, message_frame, message_frames, trailers, Messages};
use crate::metrics;
use crate::service::DataNodeService;

/// Largest block sent as a call: a stream delivers its messages in order,
/// and a large one would make the small ones behind it wait for its bytes
/// (256 KiB: the block of a 1 MiB stripe at k = 4).
pub const MAX_STREAMED_BLOCK: usize = 256 << 10;

/// Largest block a reader should ask for as a call ([`GetStream`]): every
/// block of a body of one stripe (256 KiB at the default 1 MiB stripe and
/// k = 4). The block moves as the `Bytes` it is, as raw `GetFragment` reads
/// move it; while calls copied blocks into and out of gRPC messages they
/// lost to raw reads above 64 KiB (1 MiB GETs −8%), without the copies they
/// win there too (1 MiB GETs +11–52%, decision 0059's addendum).
pub const MAX_CALL_READ_BLOCK: usize = MAX_STREAMED_BLOCK;

/// Bytes a stream may have sent and not had answered. Beyond it fragments
/// go as `PutFragment` calls (whose stall detection then applies) instead of
/// piling up in memory behind a node that stopped reading.
const MAX_IN_FLIGHT_BYTES: usize = 16 << 20;

/// Server end of `PutFragments`: stores the fragments of `inbound`.
pub(crate) fn serve_puts(
    svc: Arc<DataNodeService>,
    inbound: Streaming<FragmentPut>,
    stopping: Option<watch::Receiver<bool>>,
) -> AnswerStream<FragmentPutAnswer> {
    serve(inbound, stopping, move |put: FragmentPut| {
        metrics::STREAMED_FRAGMENT_PUTS.inc();
        let svc = svc.clone();
        Handled::Answer(Box::pin(async move { store(&svc, put).await }))
    })
}

/// The path of `GetFragments`, which [`crate::raw_put::DataPathServer`]
/// serves ahead of tonic ([`serve_gets`]).
pub const GET_FRAGMENTS_PATH: &str = "/kura.datanode.DataNode/GetFragments";

/// `BlockGetAnswer.data`'s field number.
const ANSWER_DATA_FIELD: u32 = 4;

/// Server end of `GetFragments`: reads the blocks the request body asks for
/// and answers as gRPC would, but with each block's `Bytes` as a body frame
/// of its own (`grpc_frames`): tonic would copy every block into its encode
/// buffer, and the gateway's tonic decoder would copy it again.
pub(crate) fn serve_gets(svc: Arc<DataNodeService>, body: Body) -> http::Response<Body> {
    let inbound = Messages::<_, BlockGet>::new(body, "GetFragments call").into_stream();
    let stopping = svc.stopping();
    let answers = serve(inbound, stopping, move |get: BlockGet| {
        metrics::STREAMED_BLOCK_GETS.inc();
        let svc = svc.clone();
        Handled::Answer(Box::pin(async move { read(&svc, get).await }))
    });
    // Each answer as its frames; the end (or the node stopping) as trailers.
    let frames = futures::stream::unfold(Some(answers), |answers| async move {
        let mut answers = answers?;
        let (frames, rest) = match answers.next().await {
            Some(Ok(mut answer)) => {
                let data = std::mem::take(&mut answer.data);
                let frames = message_frames(&answer, ANSWER_DATA_FIELD, data);
                (
                    frames.into_iter().flatten().map(Frame::data).collect(),
                    Some(answers),
                )
            }
            Some(Err(status)) => (vec![trailers(&status)], None),
            None => (vec![trailers(&Status::ok(""))], None),
        };
        Some((futures::stream::iter(frames), rest))
    })
    .flatten()
    .map(Ok::<_, Infallible>);
    grpc_frames::response(Body::new(StreamBody::new(frames)))
}

/// Answers the calls of `inbound` until it ends, the client goes away or the
/// node stops (`stopping` turns true; calls still running are then dropped
/// and the client hears `Unavailable` — a fragment being stored may still be
/// committed, unreferenced).
fn serve<R, A>(
    inbound: impl Stream<Item = Result<R, Status>> + Send + 'static,
    stopping: Option<watch::Receiver<bool>>,
    handle: impl FnMut(R) -> Handled<A> + Send + 'static,
) -> AnswerStream<A>
where
    R: Send + 'static,
    A: Send + 'static,
{
    let stopped = async move {
        match stopping {
            Some(mut s) => {
                let _ = s.wait_for(|s| *s).await;
            }
            None => futures::future::pending().await,
        }
    };
    let open = &*metrics::CALL_STREAMS;
    serve_calls(inbound, stopped, "data node is stopping", open, handle)
}

async fn store(svc: &DataNodeService, put: FragmentPut) -> FragmentPutAnswer {
    let id = put.id;
    let stored = match put.chunk {
        Some(chunk) if chunk.last => svc.store_whole(chunk).await,
        Some(_) => Err(Status::invalid_argument(
            "a fragment sent as a call must be whole (last=true)",
        )),
        None => Err(Status::invalid_argument("a call without a fragment")),
    };
    match stored {
        Ok(response) => FragmentPutAnswer {
            id,
            code: 0,
            message: String::new(),
            response: Some(response),
        },
        Err(s) => FragmentPutAnswer {
            id,
            code: s.code() as i32,
            message: s.message().to_string(),
            response: None,
        },
    }
}

async fn read(svc: &DataNodeService, get: BlockGet) -> BlockGetAnswer {
    let id = get.id;
    match svc.read_one_block(get.fragment, get.block).await {
        Ok((data, crc32c)) => BlockGetAnswer {
            id,
            code: 0,
            message: String::new(),
            data,
            crc32c,
        },
        Err(s) => BlockGetAnswer {
            id,
            code: s.code() as i32,
            message: s.message().to_string(),
            data: Bytes::new(),
            crc32c: 0,
        },
    }
}

/// What a client holds per node address: an open stream of one kind.
pub trait OpenStreamHandle {
    fn has_ended(&self) -> bool;
}

/// Client end: one open `PutFragments` stream to a node.
pub struct PutStream {
    calls: CallSender<FragmentPut, PutFragmentResponse>,
    /// Block bytes sent and not answered yet.
    in_flight: AtomicUsize,
}

impl OpenStreamHandle for PutStream {
    fn has_ended(&self) -> bool {
        self.calls.has_ended()
    }
}

impl PutStream {
    /// Opens a stream (one round trip: the node's response headers).
    pub async fn open(mut client: RawClient<Channel>) -> Result<PutStream, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let answers = client
            .put_fragments(UnboundedReceiverStream::new(rx))
            .await?
            .into_inner();
        let calls = CallSender::new(tx, answers, |a: FragmentPutAnswer| {
            (a.id, outcome(a.code, a.message, a.response))
        });
        Ok(PutStream {
            calls,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Sends a whole fragment (`chunk.last` set) and waits, at most `within`,
    /// until the node has made it durable. `Err(chunk)`: not sent, the
    /// stream has too much in flight; send it another way.
    pub async fn put(
        &self,
        chunk: PutFragmentChunk,
        within: Duration,
    ) -> Result<Result<PutFragmentResponse, DataNodeError>, PutFragmentChunk> {
        let bytes = chunk.data.len();
        if self.in_flight.fetch_add(bytes, Ordering::Relaxed) + bytes > MAX_IN_FLIGHT_BYTES {
            self.in_flight.fetch_sub(bytes, Ordering::Relaxed);
            return Err(chunk);
        }
        let _in_flight = InFlight {
            stream: self,
            bytes,
        };
        let call = self.calls.call(|id| FragmentPut {
            id,
            chunk: Some(chunk),
        });
        Ok(bounded(&self.calls, within, "a streamed fragment", call).await)
    }
}

/// A call's block bytes, counted in flight until its caller stops waiting.
struct InFlight<'a> {
    stream: &'a PutStream,
    bytes: usize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stream
            .in_flight
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Client end: one open `GetFragments` stream to a node.
pub struct GetStream {
    calls: CallSender<BlockGet, BlockGetAnswer>,
}

impl OpenStreamHandle for GetStream {
    fn has_ended(&self) -> bool {
        self.calls.has_ended()
    }
}

impl GetStream {
    /// Opens a stream on `channel` to `host` (one round trip: the node's
    /// response headers). The calls and answers are `GetFragments`' gRPC
    /// messages, framed and decoded by hand: each block arrives as the
    /// `Bytes` h2 received (`grpc_frames`).
    pub async fn open(channel: Channel, host: &str) -> Result<GetStream, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let calls = UnboundedReceiverStream::new(rx)
            .map(|get: BlockGet| Ok::<_, Infallible>(Frame::data(message_frame(&get))));
        let request =
            grpc_frames::request(host, GET_FRAGMENTS_PATH, Body::new(StreamBody::new(calls)))?;
        let response = grpc_frames::send(channel, request).await?;
        // Unimplemented (an older node) comes as a trailers-only answer.
        grpc_frames::head_status(&response, "GetFragments")?;
        let answers =
            Messages::<_, BlockGetAnswer>::new(response.into_body(), "GetFragments answer")
                .into_stream();
        let calls = CallSender::new(tx, answers, |a: BlockGetAnswer| match a.code {
            0 => (a.id, Ok(a)),
            code => (a.id, Err(Status::new(tonic::Code::from(code), a.message))),
        });
        Ok(GetStream { calls })
    }

    /// Block `block` of fragment `fragment`, verified against its CRC32C on
    /// receipt; waits at most `within`.
    pub async fn get(
        &self,
        fragment: FragmentId,
        block: u32,
        within: Duration,
    ) -> Result<Bytes, DataNodeError> {
        let call = self.calls.call(|id| BlockGet {
            id,
            fragment: Some(fragment),
            block,
        });
        let answer = bounded(&self.calls, within, "a streamed block read", call).await?;
        let got = crc32c(&answer.data);
        if got != answer.crc32c {
            return Err(DataNodeError::Corrupt(format!(
                "block {block} arrived with crc32c {got:08x}, the node sent {:08x}",
                answer.crc32c
            )));
        }
        Ok(answer.data)
    }
}

/// A caller that gives up on a call after waiting this long retires the
/// call's stream too: readers drop a block they waited on for their own
/// patience (2 s) long before the call's deadline, and a stream to a node
/// that froze with its connection up would otherwise be used again each time
/// the node's suspect mark expires. Answers take milliseconds; a hedged call
/// dropped this late found a slow node, and the next call only opens a new
/// stream.
const RETIRE_IF_ABANDONED_AFTER: Duration = Duration::from_secs(1);

/// Awaits a call for at most `within`; a call that times out, or that its
/// caller stops awaiting after [`RETIRE_IF_ABANDONED_AFTER`], retires its
/// stream (stuck with its connection up, maybe: the next calls open another).
async fn bounded<Req, T: Send + 'static>(
    calls: &CallSender<Req, T>,
    within: Duration,
    what: &str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, DataNodeError> {
    let mut abandoned = RetireIfAbandoned::new(|| calls.retire());
    let answer = tokio::time::timeout(within, call).await;
    abandoned.answered();
    match answer {
        Ok(answer) => answer.map_err(DataNodeError::from),
        Err(_) => {
            calls.retire();
            Err(DataNodeError::TimedOut(format!(
                "no answer to {what} within {within:?}"
            )))
        }
    }
}

/// Runs `retire` when dropped before [`Self::answered`], if it was made at
/// least [`RETIRE_IF_ABANDONED_AFTER`] earlier.
struct RetireIfAbandoned<F: FnOnce()> {
    retire: Option<F>,
    since: tokio::time::Instant,
}

impl<F: FnOnce()> RetireIfAbandoned<F> {
    fn new(retire: F) -> Self {
        RetireIfAbandoned {
            retire: Some(retire),
            since: tokio::time::Instant::now(),
        }
    }

    fn answered(&mut self) {
        self.retire = None;
    }
}

impl<F: FnOnce()> Drop for RetireIfAbandoned<F> {
    fn drop(&mut self) {
        if let Some(retire) = self.retire.take() {
            if self.since.elapsed() >= RETIRE_IF_ABANDONED_AFTER {
                retire();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Waits on a call that never answers for `wait`, then gives up (drops
    /// it) or, with `answer`, gets its answer; says whether it retired.
    async fn retired_after(wait: Duration, answer: bool) -> bool {
        let retired = AtomicBool::new(false);
        let call = async {
            let _guard = {
                let mut g = RetireIfAbandoned::new(|| retired.store(true, Ordering::SeqCst));
                tokio::time::sleep(wait).await;
                if answer {
                    g.answered();
                }
                g
            };
        };
        call.await;
        retired.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_given_up_late_retires_its_stream() {
        assert!(retired_after(RETIRE_IF_ABANDONED_AFTER, false).await);
        assert!(retired_after(Duration::from_secs(2), false).await);
        // Dropped soon (a hedged read whose other blocks came first): kept.
        assert!(!retired_after(Duration::from_millis(20), false).await);
        // Answered, however late: the stream works.
        assert!(!retired_after(Duration::from_secs(5), true).await);
    }
}
