//! The gRPC service `kura.datanode.DataNode` over a `Store`. Store errors become gRPC
//! `Status` here and nowhere else. Blocking file I/O runs on `spawn_blocking`.
//!
//! PutFragment protocol (see datanode.proto): the first message carries the header; each
//! message carries at most ONE whole block (`data` may be empty, e.g. a header-only first
//! message or a bare final message); `crc32c` is the sender's CRC of `data`; `last=true`
//! ends the stream and the reply is sent only once the fragment is durable. A stream that
//! ends or fails without `last=true` stores nothing.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kura_proto::datanode::data_node_server::{DataNode, DataNodeServer};
use kura_proto::datanode::*;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::disk_health::DiskHealth;
use crate::error::StoreError;
use crate::metrics;
use crate::store::Pacer;
use crate::store::{PutOutcome, PutWriter, Store};

/// Largest gRPC message either side accepts: one block of up to 16 MiB plus framing.
pub const MAX_MESSAGE_SIZE: usize = 20 << 20;

/// Blocks read ahead of the network per GetFragment stream.
const READ_AHEAD: usize = 4;

/// ListFragments page size when the request says 0, and the most one page may hold
/// (5000 headers with 1 KiB keys stay far below `MAX_MESSAGE_SIZE`).
pub const DEFAULT_LIST_LIMIT: u32 = 1000;
pub const MAX_LIST_LIMIT: u32 = 5000;
/// A PutFragment stream that brings no message for this long is aborted
/// (nothing stored): its writer is hung.
const PUT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A fragment's age by this node's clock: `now − stored` (0 if the clock went
/// back), or None for fragments stored before nodes recorded the time.
pub fn fragment_age_ms(stored_unix_ms: i64, now_unix_ms: i64) -> Option<u64> {
    (stored_unix_ms > 0).then(|| now_unix_ms.saturating_sub(stored_unix_ms).max(0) as u64)
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Status::not_found("fragment not found"),
            StoreError::Corrupt(m) => Status::data_loss(m),
            StoreError::Full(m) => Status::resource_exhausted(m),
            StoreError::InvalidArgument(m) => Status::invalid_argument(m),
            e @ StoreError::Io { .. } => Status::internal(e.to_string()),
            e @ StoreError::Identity(_) => Status::internal(e.to_string()),
        }
    }
}

#[derive(Clone)]
pub struct DataNodeService {
    store: Arc<Store>,
    disk: Arc<DiskHealth>,
    /// Turns true when the node stops: long-lived call streams end
    /// then, or they would hold the server's graceful shutdown open.
    stopping: Option<watch::Receiver<bool>>,
}

impl DataNodeService {
    pub fn new(store: Arc<Store>, disk: Arc<DiskHealth>) -> Self {
        DataNodeService {
            store,
            disk,
            stopping: None,
        }
    }

    /// Ends the `PutFragments` and `GetFragments` streams it serves once
    /// `stopping` is true.
    pub fn with_stopping(mut self, stopping: watch::Receiver<bool>) -> Self {
        self.stopping = Some(stopping);
        self
    }

    /// What [`Self::with_stopping`] gave, for the streams served ahead of tonic.
    pub(crate) fn stopping(&self) -> Option<watch::Receiver<bool>> {
        self.stopping.clone()
    }

    /// `Unavailable` while the disk does not answer its probe: writers and
    /// liveness probes go elsewhere at once instead of waiting on it.
    fn require_disk(&self) -> Result<(), Status> {
        if self.disk.ok() {
            Ok(())
        } else {
            Err(Status::unavailable("this data node's disk does not answer"))
        }
    }

    /// The tonic server for this service, with message limits raised for big blocks.
    /// The node serves it behind [`crate::raw_put::DataPathServer`].
    pub fn grpc_server(self: Arc<Self>) -> DataNodeServer<DataNodeService> {
        DataNodeServer::from_arc(self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// Stores one PutFragment stream's messages, whoever decoded them: tonic
    /// (`put_fragment`) or the raw server (`raw_put`), which hands over each
    /// block as the `Bytes` h2 received.
    pub(crate) async fn store_fragment<S>(
        &self,
        mut stream: S,
    ) -> Result<PutFragmentResponse, Status>
    where
        S: Stream<Item = Result<PutFragmentChunk, Status>> + Unpin,
    {
        self.require_disk()?;
        let mut msg = stream
            .next()
            .await
            .transpose()?
            .ok_or_else(|| Status::invalid_argument("empty PutFragment stream"))?;
        let mut header = msg.header.take().ok_or_else(|| {
            Status::invalid_argument("the first PutFragment message must carry the header")
        })?;
        // Our clock, not the writer's: orphan GC judges age by it.
        header.stored_unix_ms = crate::now_unix_ms();
        let _in_progress = InProgress::new(&metrics::FRAGMENT_PUTS_IN_PROGRESS);
        // What one message asks of the store runs in ONE blocking hop: opening the
        // record, its block and, with `last`, the commit. A small object's fragment
        // is a single message, and three thread hand-offs for it were a fifth of a
        // data node's CPU under small PUTs. A block that only fills the record's
        // staging buffer needs no hop at all (`append_stays_in_memory`): one each
        // was a thread wake-up and two context switches per block of a large PUT.
        // Dropping the writer on any early return (error, client gone) aborts the
        // record.
        let mut pending = Pending::Begin(header);
        loop {
            if msg.header.is_some() {
                return Err(Status::invalid_argument(
                    "only the first message may carry a header",
                ));
            }
            let (data, crc, last) = (std::mem::take(&mut msg.data), msg.crc32c, msg.last);
            match &mut pending {
                Pending::Open(w) if !last && w.append_stays_in_memory(data.len()) => {
                    if !data.is_empty() {
                        w.append_block(data, crc)?;
                    }
                }
                _ => {
                    let store = self.store.clone();
                    // Ok(Ok(outcome)) once committed, Ok(Err(writer)) while still open.
                    let step = blocking(
                        move || -> Result<Result<PutOutcome, PutWriter>, StoreError> {
                            let mut w = match pending {
                                Pending::Begin(header) => store.begin_put(header)?,
                                Pending::Open(w) => w,
                            };
                            if !data.is_empty() {
                                w.append_block(data, crc)?;
                            }
                            if last {
                                w.commit().map(Ok)
                            } else {
                                Ok(Err(w))
                            }
                        },
                    )
                    .await??;
                    match step {
                        Ok(out) => {
                            return Ok(PutFragmentResponse {
                                length: out.length,
                                blocks: out.blocks,
                            });
                        }
                        Err(w) => pending = Pending::Open(w),
                    }
                }
            }
            // A writer that stalls (hung gateway) must not hold the record open forever.
            msg = tokio::time::timeout(PUT_IDLE_TIMEOUT, stream.next())
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "no PutFragment message for {PUT_IDLE_TIMEOUT:?}"
                    ))
                })?
                .transpose()?
                .ok_or_else(|| {
                    Status::invalid_argument("PutFragment stream ended without last=true")
                })?;
        }
    }
}

impl DataNodeService {
    /// Stores a whole fragment (one message with `last`, a call on a `PutFragments`
    /// stream). A small one is checked and kept in memory right here and committed by
    /// the shared segment's next batch without a blocking hop of its own
    /// (`PutWriter::commit_async`); any other takes [`Self::store_fragment`]'s path.
    pub(crate) async fn store_whole(
        &self,
        mut chunk: PutFragmentChunk,
    ) -> Result<PutFragmentResponse, Status> {
        if !self.store.would_buffer(chunk.data.len()) {
            return self
                .store_fragment(futures::stream::iter([Ok(chunk)]))
                .await;
        }
        self.require_disk()?;
        let mut header = chunk
            .header
            .take()
            .ok_or_else(|| Status::invalid_argument("a whole fragment must carry its header"))?;
        header.stored_unix_ms = crate::now_unix_ms();
        let _in_progress = InProgress::new(&metrics::FRAGMENT_PUTS_IN_PROGRESS);
        let mut w = self.store.begin_put(header)?;
        if !chunk.data.is_empty() {
            w.append_block(std::mem::take(&mut chunk.data), chunk.crc32c)?;
        }
        // Dropping the future before the batch is durable (the client went away)
        // abandons the wait, not the record: it is committed, unreferenced (orphan GC).
        let out = match w.commit_async() {
            Ok(commit) => commit.await?,
            // Spilled to a segment of its own after all (memory budget raced away).
            Err(w) => blocking(move || (*w).commit()).await??,
        };
        Ok(PutFragmentResponse {
            length: out.length,
            blocks: out.blocks,
        })
    }
}

impl DataNodeService {
    /// One block of a fragment, verified on the way out of the store (a call on a
    /// `GetFragments` stream): from the page cache right here, or read on a
    /// blocking thread when it would wait for the disk.
    pub(crate) async fn read_one_block(
        &self,
        id: Option<FragmentId>,
        block: u32,
    ) -> Result<(bytes::Bytes, u32), Status> {
        let req = GetFragmentRequest {
            id,
            first_block: block,
            block_count: 1,
        };
        let ReadPlan { loc, .. } = plan_read(&self.store, req)?;
        let read = match self.store.read_block_cached(&loc, block) {
            Some(done) => done,
            None => {
                let store = self.store.clone();
                blocking(move || store.read_block(&loc, block)).await?
            }
        };
        read.map_err(Status::from)
    }
}

/// A PutFragment stream's record between messages.
enum Pending {
    /// Nothing opened yet: the first message opens the record with this header.
    Begin(FragmentHeader),
    Open(PutWriter),
}

/// Runs blocking store work off the async executor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("blocking task failed: {e}")))
}

/// One block read for GetFragment: (index, payload, crc32c).
pub(crate) type Block = (u32, bytes::Bytes, u32);

/// A GetFragment request checked against the fragment: blocks [first, end) of it.
pub(crate) struct ReadPlan {
    pub loc: Arc<crate::store::Location>,
    pub first: u32,
    pub end: u32,
}

/// Checks a GetFragment request against the fragment: the gRPC and the raw
/// HTTP/2 reads (`raw_read`) both start here.
pub(crate) fn plan_read(store: &Store, req: GetFragmentRequest) -> Result<ReadPlan, Status> {
    let id = require_id(req.id)?;
    let loc = store
        .location(&id)
        .ok_or_else(|| Status::from(StoreError::NotFound))?;
    let first = req.first_block;
    let end = if req.block_count == 0 {
        loc.blocks.max(first)
    } else {
        first
            .checked_add(req.block_count)
            .ok_or_else(|| Status::out_of_range("block range overflows"))?
    };
    if end > loc.blocks || (first >= loc.blocks && !(first == 0 && loc.blocks == 0)) {
        return Err(Status::out_of_range(format!(
            "blocks [{first}, {end}) requested, fragment has {}",
            loc.blocks
        )));
    }
    metrics::FRAGMENTS_GET.inc();
    Ok(ReadPlan { loc, first, end })
}

/// Checks a GetFragment request and starts reading its blocks, [`READ_AHEAD`]
/// ahead of the network. An error ends the stream.
pub(crate) fn read_blocks(
    store: &Arc<Store>,
    req: GetFragmentRequest,
) -> Result<mpsc::Receiver<Result<Block, Status>>, Status> {
    Ok(spawn_reads(store, plan_read(store, req)?))
}

/// Reads the planned blocks on a task of their own, [`READ_AHEAD`] ahead of
/// the network.
pub(crate) fn spawn_reads(
    store: &Arc<Store>,
    plan: ReadPlan,
) -> mpsc::Receiver<Result<Block, Status>> {
    let ReadPlan { loc, first, end } = plan;
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let store = store.clone();
    tokio::spawn(async move {
        for i in first..end {
            // From the page cache right here; a block that would wait
            // for the disk is read on a blocking thread.
            let read = match store.read_block_cached(&loc, i) {
                Some(done) => Ok(done),
                None => {
                    let (store, loc) = (store.clone(), loc.clone());
                    blocking(move || store.read_block(&loc, i)).await
                }
            };
            let item = match read {
                Ok(Ok((data, crc32c))) => Ok((i, data, crc32c)),
                Ok(Err(e)) => Err(Status::from(e)),
                Err(status) => Err(status),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return; // reader gone, or the error was the last word
            }
        }
    });
    rx
}

fn require_id(id: Option<FragmentId>) -> Result<FragmentId, Status> {
    id.ok_or_else(|| Status::invalid_argument("missing fragment id"))
}

#[tonic::async_trait]
impl DataNode for DataNodeService {
    async fn put_fragment(
        &self,
        request: Request<Streaming<PutFragmentChunk>>,
    ) -> Result<Response<PutFragmentResponse>, Status> {
        self.store_fragment(request.into_inner())
            .await
            .map(Response::new)
    }

    type PutFragmentsStream = kura_pd_client::call_table::AnswerStream<FragmentPutAnswer>;

    async fn put_fragments(
        &self,
        request: Request<Streaming<FragmentPut>>,
    ) -> Result<Response<Self::PutFragmentsStream>, Status> {
        let stopping = self.stopping.clone();
        Ok(Response::new(crate::calls::serve_puts(
            Arc::new(self.clone()),
            request.into_inner(),
            stopping,
        )))
    }

    type GetFragmentsStream = kura_pd_client::call_table::AnswerStream<BlockGetAnswer>;

    /// Never reached: [`crate::raw_put::DataPathServer`] serves this method
    /// ahead of tonic (`calls::serve_gets`), without tonic's copies.
    async fn get_fragments(
        &self,
        _request: Request<Streaming<BlockGet>>,
    ) -> Result<Response<Self::GetFragmentsStream>, Status> {
        Err(Status::unimplemented(
            "GetFragments is served ahead of tonic",
        ))
    }

    type GetFragmentStream =
        Pin<Box<dyn Stream<Item = Result<GetFragmentChunk, Status>> + Send + 'static>>;

    async fn get_fragment(
        &self,
        request: Request<GetFragmentRequest>,
    ) -> Result<Response<Self::GetFragmentStream>, Status> {
        let blocks = read_blocks(&self.store, request.into_inner())?;
        let chunks = ReceiverStream::new(blocks).map(|block| {
            block.map(|(block_index, data, crc32c)| GetFragmentChunk {
                block_index,
                data,
                crc32c,
            })
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn delete_fragment(
        &self,
        request: Request<DeleteFragmentRequest>,
    ) -> Result<Response<DeleteFragmentResponse>, Status> {
        let id = require_id(request.into_inner().id)?;
        let store = self.store.clone();
        let existed = blocking(move || store.delete(&id)).await??;
        Ok(Response::new(DeleteFragmentResponse { existed }))
    }

    async fn stat_fragment(
        &self,
        request: Request<StatFragmentRequest>,
    ) -> Result<Response<StatFragmentResponse>, Status> {
        self.require_disk()?;
        let id = require_id(request.into_inner().id)?;
        let resp = match self.store.location(&id) {
            Some(loc) => StatFragmentResponse {
                found: true,
                header: Some(loc.header.clone()),
                length: loc.length,
                blocks: loc.blocks,
            },
            None => StatFragmentResponse {
                found: false,
                header: None,
                length: 0,
                blocks: 0,
            },
        };
        Ok(Response::new(resp))
    }

    async fn list_fragments(
        &self,
        request: Request<ListFragmentsRequest>,
    ) -> Result<Response<ListFragmentsResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        } as usize;
        let pg = (!req.all_pgs).then_some(req.pg);
        let (locs, more) = self.store.list_fragments(pg, req.after.as_ref(), limit);
        let now = crate::now_unix_ms();
        let fragments = locs
            .iter()
            .map(|l| FragmentEntry {
                header: Some(l.header.clone()),
                length: l.length,
                blocks: l.blocks,
                age_ms: fragment_age_ms(l.header.stored_unix_ms, now),
            })
            .collect();
        Ok(Response::new(ListFragmentsResponse { fragments, more }))
    }

    async fn scrub_now(
        &self,
        request: Request<ScrubNowRequest>,
    ) -> Result<Response<ScrubNowResponse>, Status> {
        let req = request.into_inner();
        let pg = (!req.all_pgs).then_some(req.pg);
        let store = self.store.clone();
        // Runs to the end even if the caller goes away: it is bounded by the store size.
        let stats = blocking(move || {
            let mut pacer = Pacer::new(req.bytes_per_sec, Box::new(|| false));
            store.scrub(pg, &mut pacer, &mut |_, _| {})
        })
        .await?;
        Ok(Response::new(ScrubNowResponse {
            fragments: stats.fragments,
            bytes: stats.bytes,
            corrupt: stats.corrupt,
            read_errors: stats.read_errors,
        }))
    }
}

/// Holds a gauge up for as long as it lives (every return path lowers it).
struct InProgress(&'static prometheus::IntGauge);

impl InProgress {
    fn new(gauge: &'static prometheus::IntGauge) -> Self {
        gauge.inc();
        InProgress(gauge)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc::crc32c;
    use crate::disk_health::ProbeTiming;
    use crate::store::{DirectIo, StoreOptions};
    use bytes::Bytes;

    fn service(dir: &std::path::Path) -> DataNodeService {
        let opts = StoreOptions {
            segment_size: 64 << 20,
            min_free_bytes: 0,
            direct_io: DirectIo::Auto,
        };
        let store = Store::open(dir, opts).unwrap();
        // Streamed fragments take the exclusive path, as large ones do.
        store.set_group_commit_max_record(0);
        DataNodeService::new(store, DiskHealth::new(dir, ProbeTiming::default()))
    }

    fn id() -> FragmentId {
        FragmentId {
            data_id: Bytes::from_static(&[7; 16]),
            shard: 2,
        }
    }

    /// A fragment of `n` blocks of `bs` bytes as its stream's messages,
    /// `last` on the final one.
    fn messages(n: usize, bs: usize) -> Vec<PutFragmentChunk> {
        (0..n)
            .map(|i| {
                let data = Bytes::from(vec![i as u8 + 1; bs]);
                PutFragmentChunk {
                    header: (i == 0).then(|| FragmentHeader {
                        id: Some(id()),
                        block_size: bs as u32,
                        object_key: "k".into(),
                        ..Default::default()
                    }),
                    crc32c: crc32c(&data),
                    data,
                    last: i + 1 == n,
                }
            })
            .collect()
    }

    fn ready(
        msgs: Vec<PutFragmentChunk>,
    ) -> impl Stream<Item = Result<PutFragmentChunk, Status>> + Unpin {
        futures::stream::iter(msgs.into_iter().map(Ok))
    }

    /// A fragment's blocks are stored in order whether they only fill the
    /// staging buffer (appended on the async thread) or fill it over and over
    /// (written in a hop); what follows `last` is not part of the fragment.
    #[tokio::test]
    async fn blocks_are_stored_in_order_in_memory_or_through_a_hop() {
        for (n, bs) in [(5, 4096), (9, 300_000)] {
            let dir = tempfile::tempdir().unwrap();
            let svc = service(dir.path());
            let mut msgs = messages(n, bs);
            let mut after_last = messages(1, bs).pop().unwrap();
            after_last.header = None;
            msgs.push(after_last);
            let out = svc.store_fragment(ready(msgs)).await.unwrap();
            assert_eq!((out.blocks, out.length), (n as u32, (n * bs) as u64));
            let loc = svc.store.location(&id()).unwrap();
            for i in 0..n {
                let (block, _) = svc.store.read_block(&loc, i as u32).unwrap();
                assert_eq!(block, vec![i as u8 + 1; bs], "block {i} of {n} × {bs}");
            }
        }
    }

    /// Blocks that arrive one at a time take the same path as ready ones.
    #[tokio::test]
    async fn messages_that_trickle_in_are_stored_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let (tx, rx) = mpsc::channel(1);
        let feed = tokio::spawn(async move {
            for m in messages(12, 200_000) {
                tx.send(Ok(m)).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let out = svc.store_fragment(ReceiverStream::new(rx)).await.unwrap();
        feed.await.unwrap();
        assert_eq!((out.blocks, out.length), (12, 12 * 200_000));
        let loc = svc.store.location(&id()).unwrap();
        for i in 0..12u32 {
            let (block, _) = svc.store.read_block(&loc, i).unwrap();
            assert_eq!(block, vec![i as u8 + 1; 200_000]);
        }
    }

    /// A stream that ends without `last`, or with a second header, stores nothing.
    #[tokio::test]
    async fn a_stream_cut_short_or_with_a_second_header_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let mut msgs = messages(4, 4096);
        msgs.pop();
        let e = svc.store_fragment(ready(msgs)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(svc.store.location(&id()).is_none());

        let mut msgs = messages(4, 4096);
        msgs[2].header = msgs[0].header.clone();
        let e = svc.store_fragment(ready(msgs)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(svc.store.location(&id()).is_none());
    }
}
