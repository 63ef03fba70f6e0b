//! Whole fragments as calls on one long-lived stream per client and node
//! (`DataNode/PutFragments`), both ends: decision 0055's call streams,
//! applied to the data path (decision 0059).
//!
//! A `PutFragment` call costs an HTTP/2 stream: headers and trailers encoded
//! and decoded on both ends, a server task, and on the client a feeder task,
//! two channels and a deadline timer. For a body of one stripe each fragment
//! is a single block, known whole before it is sent, so all of that was
//! spent on one message: under 64 KiB PUTs it was most of a gateway's CPU.
//! Here such a fragment is one message with an id on a stream the client
//! keeps open; the node stores each through the same
//! [`DataNodeService::store_fragment`] a `PutFragment` call reaches (same
//! checks, same commit) and answers it once durable, in completion order.
//!
//! The client ([`PutStream`]) keeps one stream per node address. A stream
//! that ends or fails answers every call still waiting with `Unavailable`:
//! the fragment's fate is unknown, as after a `PutFragment` call's transport
//! error (the gateway never references a fragment it was not told is
//! durable). A call that times out retires its stream, so a stream stuck
//! while its connection stays up is not used again.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Future, Stream, StreamExt};
use kura_pd_client::call_table::{outcome, read_answers, CallTable};
use kura_pd_client::channel::Channel;
use kura_proto::datanode::data_node_client::DataNodeClient as RawClient;
use kura_proto::datanode::{FragmentPut, FragmentPutAnswer, PutFragmentChunk, PutFragmentResponse};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, Streaming};

use crate::client::DataNodeError;
use crate::metrics;
use crate::service::DataNodeService;

/// Largest block sent as a call: a stream delivers its messages in order,
/// and a large one would make the small ones behind it wait for its bytes
/// (256 KiB: the block of a 1 MiB stripe at k = 4).
pub const MAX_STREAMED_BLOCK: usize = 256 << 10;

/// Bytes a stream may have sent and not had answered. Beyond it fragments
/// go as `PutFragment` calls (whose stall detection then applies) instead of
/// piling up in memory behind a node that stopped reading.
const MAX_IN_FLIGHT_BYTES: usize = 16 << 20;

/// The answers of a `PutFragments` stream, in completion order.
pub type AnswerStream =
    Pin<Box<dyn Stream<Item = Result<FragmentPutAnswer, Status>> + Send + 'static>>;

type Storing = Pin<Box<dyn Future<Output = FragmentPutAnswer> + Send>>;

/// Server end: stores the fragments of `inbound` until it ends, the client
/// goes away or the node stops (`stopping` turns true).
pub(crate) fn serve(
    svc: Arc<DataNodeService>,
    inbound: Streaming<FragmentPut>,
    stopping: Option<watch::Receiver<bool>>,
) -> AnswerStream {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(svc, inbound, tx, stopping));
    Box::pin(UnboundedReceiverStream::new(rx))
}

async fn run(
    svc: Arc<DataNodeService>,
    mut inbound: Streaming<FragmentPut>,
    answers: mpsc::UnboundedSender<Result<FragmentPutAnswer, Status>>,
    stopping: Option<watch::Receiver<bool>>,
) {
    metrics::PUT_STREAMS.inc();
    let _open = OpenStream;
    let stopped = async move {
        match stopping {
            Some(mut s) => {
                let _ = s.wait_for(|s| *s).await;
            }
            None => futures::future::pending().await,
        }
    };
    tokio::pin!(stopped);
    let mut running: FuturesUnordered<Storing> = FuturesUnordered::new();
    let mut inbound_open = true;
    loop {
        if !inbound_open && running.is_empty() {
            return;
        }
        tokio::select! {
            m = inbound.message(), if inbound_open => match m {
                Ok(Some(put)) => {
                    metrics::STREAMED_FRAGMENT_PUTS.inc();
                    let svc = svc.clone();
                    running.push(Box::pin(async move { store(&svc, put).await }));
                }
                // The client closed its side (or the connection broke):
                // finish what runs, then end the answers.
                Ok(None) | Err(_) => inbound_open = false,
            },
            Some(a) = running.next(), if !running.is_empty() => {
                if answers.send(Ok(a)).is_err() {
                    return;
                }
            }
            // Fragments being stored are abandoned (dropping a store future
            // aborts its record): the client hears `Unavailable`.
            _ = &mut stopped => {
                let _ = answers.send(Err(Status::unavailable("data node is stopping")));
                return;
            }
        }
    }
}

/// Counts a served stream in `PUT_STREAMS` until its task ends.
struct OpenStream;

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::PUT_STREAMS.dec();
    }
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

/// Client end: one open `PutFragments` stream to a node.
pub struct PutStream {
    calls: mpsc::UnboundedSender<FragmentPut>,
    table: Arc<CallTable<PutFragmentResponse>>,
    /// Block bytes sent and not answered yet.
    in_flight: AtomicUsize,
}

impl PutStream {
    /// Opens a stream (one round trip: the node's response headers).
    pub async fn open(mut client: RawClient<Channel>) -> Result<PutStream, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let answers = client
            .put_fragments(UnboundedReceiverStream::new(rx))
            .await?
            .into_inner();
        let table = Arc::new(CallTable::default());
        tokio::spawn(read_answers(
            answers,
            table.clone(),
            |a: FragmentPutAnswer| (a.id, outcome(a.code, a.message, a.response)),
        ));
        Ok(PutStream {
            calls: tx,
            table,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// The stream ended (or was retired): calls fail at once; open another.
    pub fn has_ended(&self) -> bool {
        self.table.has_ended()
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
        let ended = || Ok(Err(DataNodeError::Unavailable("put stream ended".into())));
        let Some(mut call) = self.table.register() else {
            return ended();
        };
        let put = FragmentPut {
            id: call.id,
            chunk: Some(chunk),
        };
        if self.calls.send(put).is_err() {
            return ended();
        }
        Ok(match tokio::time::timeout(within, call.answer()).await {
            Ok(answer) => answer.map_err(DataNodeError::from),
            Err(_) => {
                // Stuck with its connection up, maybe: the next fragments open another.
                self.table.retire();
                Err(DataNodeError::TimedOut(format!(
                    "no answer to a streamed fragment within {within:?}"
                )))
            }
        })
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
