//! The client gateways (and later healers) use to talk to data nodes.
//!
//! One lazily connecting channel per node address, shared by clones. Every block read is
//! re-verified against its CRC32C on receipt, so corruption on the wire or in the node's
//! memory never reaches the caller as data.

use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kura_proto::datanode::data_node_client::DataNodeClient as RawClient;
use kura_proto::datanode::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::crc::crc32c;
use crate::service::MAX_MESSAGE_SIZE;

/// Messages buffered between the caller's block stream and the network.
const PUT_CHANNEL_CAPACITY: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum DataNodeError {
    /// The node could not be reached or the call was cut off.
    #[error("data node unavailable: {0}")]
    Unavailable(String),
    #[error("fragment not found")]
    NotFound,
    /// Data failed a checksum (on the node's disk, in transit, or as sent).
    #[error("corrupt fragment data: {0}")]
    Corrupt(String),
    /// The node takes no new fragments (disk full or read-only).
    #[error("data node full: {0}")]
    Full(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("data node internal error: {0}")]
    Internal(String),
}

impl DataNodeError {
    /// Whether repeating the same call against the same node may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            DataNodeError::Unavailable(_) => true,
            DataNodeError::NotFound => false,
            DataNodeError::Corrupt(_) => false,
            DataNodeError::Full(_) => false,
            DataNodeError::InvalidArgument(_) => false,
            DataNodeError::Internal(_) => false,
        }
    }
}

impl From<Status> for DataNodeError {
    fn from(s: Status) -> Self {
        let m = s.message().to_string();
        match s.code() {
            Code::Unavailable
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Unknown => DataNodeError::Unavailable(m),
            Code::NotFound => DataNodeError::NotFound,
            Code::DataLoss => DataNodeError::Corrupt(m),
            Code::ResourceExhausted => DataNodeError::Full(m),
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                DataNodeError::InvalidArgument(m)
            }
            Code::Ok
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unimplemented
            | Code::Internal
            | Code::Unauthenticated => DataNodeError::Internal(format!("{:?}: {m}", s.code())),
        }
    }
}

/// Cheap to clone; clones share the channel cache and the suspect list.
#[derive(Clone, Default)]
pub struct DataNodeClient {
    channels: Arc<DashMap<String, Channel>>,
    /// Nodes that recently failed to answer, until when. Readers and writers
    /// go around them instead of paying a connect timeout on every request.
    suspects: Arc<DashMap<String, std::time::Instant>>,
}

/// Aborts the feeding task when `put_fragment` returns or is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl DataNodeClient {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `addr` as not answering for `period` (see [`Self::is_suspect`]).
    pub fn mark_suspect(&self, addr: &str, period: std::time::Duration) {
        self.suspects
            .insert(addr.to_string(), std::time::Instant::now() + period);
    }

    /// Whether `addr` failed to answer recently. Callers that have enough
    /// other nodes skip it; the mark expires on its own.
    pub fn is_suspect(&self, addr: &str) -> bool {
        let until = self.suspects.get(addr).map(|u| *u);
        match until {
            Some(u) if u > std::time::Instant::now() => true,
            Some(_) => {
                self.suspects.remove(addr);
                false
            }
            None => false,
        }
    }

    /// Forgets the mark on `addr` (it answered).
    pub fn clear_suspect(&self, addr: &str) {
        if self.suspects.contains_key(addr) {
            self.suspects.remove(addr);
        }
    }

    fn client(&self, addr: &str) -> Result<RawClient<Channel>, DataNodeError> {
        // Clone out of the map at once: a dashmap guard must never be held across work.
        let cached = self.channels.get(addr).map(|c| c.clone());
        let channel = match cached {
            Some(c) => c,
            None => {
                let c = kura_pd_client::channel::lazy_channel_with(
                    addr,
                    kura_pd_client::channel::Windows::BULK,
                )
                .map_err(|e| {
                    DataNodeError::InvalidArgument(format!("bad data node address {addr:?}: {e}"))
                })?;
                self.channels.entry(addr.to_string()).or_insert(c).clone()
            }
        };
        Ok(RawClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE))
    }

    /// Streams one fragment to `addr`; `blocks` yields whole blocks in order (each exactly
    /// header.block_size bytes except the last, which may be shorter; an empty stream = empty
    /// fragment). Computes each block's crc32c, sends one block per message, the final
    /// message has last=true. Returns once the node has made the fragment durable.
    ///
    /// The end of `blocks` commits the fragment. Writers that may have to abandon a
    /// fragment midway use [`Self::put_fragment_sealed`] instead.
    pub async fn put_fragment<S>(
        &self,
        addr: &str,
        header: FragmentHeader,
        blocks: S,
    ) -> Result<PutFragmentResponse, DataNodeError>
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        let sealed = blocks.chain(futures::stream::once(async { Bytes::new() }));
        self.put_fragment_sealed(addr, header, sealed).await
    }

    /// Like [`Self::put_fragment`], but the fragment is committed only when `blocks`
    /// yields an empty `Bytes` (the seal; blocks themselves are never empty). If the
    /// stream ends without the seal — its sender was dropped because the upstream body
    /// failed or the request was cancelled — the call ends without `last=true`, and the
    /// node stores nothing. (Relying on aborting the call instead races with the end of
    /// the stream: a truncated fragment could be committed.)
    pub async fn put_fragment_sealed<S>(
        &self,
        addr: &str,
        header: FragmentHeader,
        blocks: S,
    ) -> Result<PutFragmentResponse, DataNodeError>
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        let mut client = self.client(addr)?;
        let (tx, rx) = mpsc::channel(PUT_CHANNEL_CAPACITY);
        let feeder = tokio::spawn(async move {
            let mut blocks = Box::pin(blocks);
            let mut header = Some(header);
            let mut current = match blocks.next().await {
                // Not sealed: abandon (dropping `tx` ends the call without last=true).
                None => return,
                Some(b) if b.is_empty() => {
                    let _ = tx
                        .send(PutFragmentChunk {
                            header: header.take(),
                            data: Bytes::new(),
                            crc32c: 0,
                            last: true,
                        })
                        .await;
                    return;
                }
                Some(b) => b,
            };
            loop {
                // Look one item ahead so the final block carries last=true.
                let sealed = match blocks.next().await {
                    None => return, // ended without the seal: abandon
                    Some(next) if next.is_empty() => None,
                    Some(next) => Some(next),
                };
                let crc32c = crc32c(&current);
                let msg = PutFragmentChunk {
                    header: header.take(),
                    data: current,
                    crc32c,
                    last: sealed.is_none(),
                };
                if tx.send(msg).await.is_err() {
                    return; // the call ended
                }
                match sealed {
                    Some(next) => current = next,
                    None => return,
                }
            }
        });
        let _guard = AbortOnDrop(feeder.abort_handle());
        let resp = client.put_fragment(ReceiverStream::new(rx)).await?;
        Ok(resp.into_inner())
    }

    /// Streams blocks [first_block, first_block+block_count) (block_count 0 = to the end),
    /// each re-verified against its crc32c on receipt.
    pub async fn get_fragment(
        &self,
        addr: &str,
        id: FragmentId,
        first_block: u32,
        block_count: u32,
    ) -> Result<BoxStream<'static, Result<Bytes, DataNodeError>>, DataNodeError> {
        let mut client = self.client(addr)?;
        let req = GetFragmentRequest {
            id: Some(id),
            first_block,
            block_count,
        };
        let inner = client.get_fragment(req).await?.into_inner();
        let state = (inner, first_block, false);
        let stream =
            futures::stream::unfold(state, move |(mut inner, expected, done)| async move {
                if done {
                    return None;
                }
                let item = match inner.message().await {
                    Ok(Some(chunk)) => verify_chunk(chunk, expected),
                    Ok(None) => {
                        let received = expected - first_block;
                        if block_count != 0 && received < block_count {
                            Err(DataNodeError::Unavailable(format!(
                                "stream ended after {received} of {block_count} blocks"
                            )))
                        } else {
                            return None;
                        }
                    }
                    Err(status) => Err(status.into()),
                };
                let done = item.is_err();
                Some((item, (inner, expected.wrapping_add(1), done)))
            });
        Ok(stream.boxed())
    }

    /// Deletes a fragment; returns whether the node had it.
    pub async fn delete_fragment(&self, addr: &str, id: FragmentId) -> Result<bool, DataNodeError> {
        let mut client = self.client(addr)?;
        let resp = client
            .delete_fragment(DeleteFragmentRequest { id: Some(id) })
            .await?;
        Ok(resp.into_inner().existed)
    }

    /// What the node knows about a fragment (`found=false` when it has none).
    pub async fn stat_fragment(
        &self,
        addr: &str,
        id: FragmentId,
    ) -> Result<StatFragmentResponse, DataNodeError> {
        let mut client = self.client(addr)?;
        let resp = client
            .stat_fragment(StatFragmentRequest { id: Some(id) })
            .await?;
        Ok(resp.into_inner())
    }

    /// One page of the fragments `addr` holds, in (data_id, shard) order, from the node's
    /// in-memory index (cheap). `after`: the last id of the previous page (None = start);
    /// `limit` 0 = the node's default (1000), capped at 5000. `more` says whether to ask
    /// for the next page (with `after` = the last id returned).
    pub async fn list_fragments(
        &self,
        addr: &str,
        pg: PgFilter,
        after: Option<FragmentId>,
        limit: u32,
    ) -> Result<ListFragmentsResponse, DataNodeError> {
        let mut client = self.client(addr)?;
        let (all_pgs, pg) = match pg {
            PgFilter::All => (true, 0),
            PgFilter::Pg(pg) => (false, pg),
        };
        let resp = client
            .list_fragments(ListFragmentsRequest {
                all_pgs,
                pg,
                after,
                limit,
            })
            .await?;
        Ok(resp.into_inner())
    }

    /// Makes `addr` verify every block of the fragments of `pg` now, quarantining corrupt
    /// ones; returns when done (minutes on a big node: give the call no short deadline).
    /// `bytes_per_sec` 0 = unpaced.
    pub async fn scrub_now(
        &self,
        addr: &str,
        pg: PgFilter,
        bytes_per_sec: u64,
    ) -> Result<ScrubNowResponse, DataNodeError> {
        let mut client = self.client(addr)?;
        let (all_pgs, pg) = match pg {
            PgFilter::All => (true, 0),
            PgFilter::Pg(pg) => (false, pg),
        };
        let resp = client
            .scrub_now(ScrubNowRequest {
                all_pgs,
                pg,
                bytes_per_sec,
            })
            .await?;
        Ok(resp.into_inner())
    }

    /// Every fragment `addr` holds in `pg`, following pages to the end. The listing is not
    /// a snapshot: fragments written or deleted meanwhile may or may not appear.
    pub async fn list_all_fragments(
        &self,
        addr: &str,
        pg: PgFilter,
    ) -> Result<Vec<FragmentEntry>, DataNodeError> {
        let mut out: Vec<FragmentEntry> = Vec::new();
        let mut after = None;
        loop {
            let page = self.list_fragments(addr, pg, after, 0).await?;
            out.extend(page.fragments);
            if !page.more {
                return Ok(out);
            }
            after = out.last().and_then(|e| e.header.as_ref()?.id.clone());
            if after.is_none() {
                return Err(DataNodeError::Internal(
                    "listing page says more but ends without an id".into(),
                ));
            }
        }
    }
}

/// Which fragments `DataNodeClient::list_fragments` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgFilter {
    All,
    Pg(u32),
}

fn verify_chunk(chunk: GetFragmentChunk, expected: u32) -> Result<Bytes, DataNodeError> {
    if chunk.block_index != expected {
        return Err(DataNodeError::Internal(format!(
            "node sent block {} where {expected} was due",
            chunk.block_index
        )));
    }
    let crc = crc32c(&chunk.data);
    if crc != chunk.crc32c {
        return Err(DataNodeError::Corrupt(format!(
            "block {expected} arrived with crc32c {crc:08x}, node sent {:08x}",
            chunk.crc32c
        )));
    }
    Ok(chunk.data)
}

#[cfg(test)]
mod tests {

    #[test]
    fn suspect_marks_expire() {
        let c = DataNodeClient::new();
        assert!(!c.is_suspect("a:1"));
        c.mark_suspect("a:1", std::time::Duration::from_secs(60));
        assert!(c.is_suspect("a:1"));
        assert!(!c.is_suspect("b:1"));
        c.clear_suspect("a:1");
        assert!(!c.is_suspect("a:1"));
        c.mark_suspect("a:1", std::time::Duration::ZERO);
        assert!(!c.is_suspect("a:1"), "an expired mark is gone");
    }

    use super::*;

    #[test]
    fn status_mapping() {
        assert!(matches!(
            DataNodeError::from(Status::data_loss("x")),
            DataNodeError::Corrupt(_)
        ));
        assert!(matches!(
            DataNodeError::from(Status::not_found("x")),
            DataNodeError::NotFound
        ));
        assert!(matches!(
            DataNodeError::from(Status::resource_exhausted("x")),
            DataNodeError::Full(_)
        ));
        assert!(DataNodeError::from(Status::unavailable("x")).is_retryable());
        assert!(!DataNodeError::from(Status::internal("x")).is_retryable());
    }

    #[test]
    fn client_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let c = DataNodeClient::new();
        let put = c.put_fragment(
            "127.0.0.1:1",
            FragmentHeader::default(),
            futures::stream::empty(),
        );
        assert_send(&put);
        assert_send(&c.get_fragment("127.0.0.1:1", FragmentId::default(), 0, 0));
        assert_send(&c.delete_fragment("127.0.0.1:1", FragmentId::default()));
        assert_send(&c.stat_fragment("127.0.0.1:1", FragmentId::default()));
        assert_send(&c.list_fragments("127.0.0.1:1", PgFilter::All, None, 0));
        assert_send(&c.list_all_fragments("127.0.0.1:1", PgFilter::Pg(3)));
        assert_send(&c.scrub_now("127.0.0.1:1", PgFilter::All, 0));
    }

    #[test]
    fn chunk_verification() {
        let data = Bytes::from_static(b"hello");
        let good = GetFragmentChunk {
            block_index: 2,
            data: data.clone(),
            crc32c: crc32c(&data),
        };
        assert_eq!(verify_chunk(good.clone(), 2).unwrap(), data);
        assert!(matches!(
            verify_chunk(good.clone(), 3),
            Err(DataNodeError::Internal(_))
        ));
        let bad = GetFragmentChunk {
            crc32c: good.crc32c ^ 1,
            ..good
        };
        assert!(matches!(
            verify_chunk(bad, 2),
            Err(DataNodeError::Corrupt(_))
        ));
    }
}
