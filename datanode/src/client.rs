//! The client gateways (and later healers) use to talk to data nodes.
//!
//! One lazily connecting channel per node address, shared by clones. Every block read is
//! re-verified against its CRC32C on receipt, so corruption on the wire or in the node's
//! memory never reaches the caller as data.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kura_pd_client::channel::Channel;
use kura_proto::datanode::data_node_client::DataNodeClient as RawClient;
use kura_proto::datanode::*;
use tokio::sync::mpsc;
use tonic::{Code, Status};

use crate::calls::{GetStream, OpenStreamHandle, PutStream, MAX_STREAMED_BLOCK};
use crate::crc::{CheckedBlock, IntoCheckedBlock};
use crate::service::MAX_MESSAGE_SIZE;

/// Messages buffered between the caller's block stream and the network.
const PUT_CHANNEL_CAPACITY: usize = 4;

/// How long each step of a call may take. A node that accepts the connection
/// and then stalls (SIGSTOP, a hung disk) must not hold its caller forever, so
/// every await on the network is bounded; streams get an *idle* bound (no
/// progress for this long), not a total one, so big transfers are not cut.
/// Callers with alternatives (the gateway reads and writes around a slow
/// fragment) use shorter bounds of their own; these are the backstop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// A unary call (delete, stat, one listing page) is answered within this.
    pub unary: Duration,
    /// A block stream that makes no progress for this long is cut off: a PUT
    /// whose node takes no message, a GET that receives none (or no response head).
    pub stream_idle: Duration,
    /// After the last block of a PUT: the node makes the fragment durable and answers.
    pub commit: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            unary: Duration::from_secs(10),
            stream_idle: Duration::from_secs(20),
            commit: Duration::from_secs(30),
        }
    }
}

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
    /// The node accepted the call, then did not answer or take data within a
    /// deadline ([`Deadlines`]): hung, not (yet) known dead.
    #[error("data node timed out: {0}")]
    TimedOut(String),
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
            DataNodeError::TimedOut(_) => true,
        }
    }

    /// Whether the node itself failed to answer (down, unreachable, or hung),
    /// as opposed to answering with an error: callers mark such a node suspect.
    pub fn is_unresponsive(&self) -> bool {
        match self {
            DataNodeError::Unavailable(_) | DataNodeError::TimedOut(_) => true,
            DataNodeError::NotFound
            | DataNodeError::Corrupt(_)
            | DataNodeError::Full(_)
            | DataNodeError::InvalidArgument(_)
            | DataNodeError::Internal(_) => false,
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

/// One kind of call stream (`calls`) per node address, opened by the first call
/// that needs it (callers wait behind one opening) and reopened after it ended.
struct StreamSlots<S> {
    slots: DashMap<String, Arc<tokio::sync::Mutex<Option<Arc<S>>>>>,
    /// Nodes that answered `Unimplemented` (an older version during a rolling
    /// upgrade): their calls go as calls of their own.
    unsupported: DashMap<String, ()>,
}

impl<S> Default for StreamSlots<S> {
    fn default() -> Self {
        StreamSlots {
            slots: DashMap::new(),
            unsupported: DashMap::new(),
        }
    }
}

impl<S: OpenStreamHandle> StreamSlots<S> {
    /// The open stream to `addr`, opened with `open()` (bounded by `limit`) if
    /// need be; None when the node does not know this kind of stream.
    async fn get<F>(
        &self,
        addr: &str,
        limit: Duration,
        open: impl FnOnce() -> Result<F, DataNodeError>,
    ) -> Result<Option<Arc<S>>, DataNodeError>
    where
        F: std::future::Future<Output = Result<S, Status>>,
    {
        if self.unsupported.contains_key(addr) {
            return Ok(None);
        }
        let slot = self.slots.get(addr).map(|s| s.clone());
        let slot = match slot {
            Some(s) => s,
            None => self.slots.entry(addr.to_string()).or_default().clone(),
        };
        let mut slot = slot.lock().await;
        if let Some(open) = slot.as_ref().filter(|s| !s.has_ended()) {
            return Ok(Some(open.clone()));
        }
        *slot = None;
        match bounded(limit, "opening a call stream", open()?).await? {
            Ok(opened) => {
                let opened = Arc::new(opened);
                *slot = Some(opened.clone());
                Ok(Some(opened))
            }
            Err(s) if s.code() == Code::Unimplemented => {
                self.unsupported.insert(addr.to_string(), ());
                Ok(None)
            }
            Err(s) => Err(s.into()),
        }
    }
}

/// Cheap to clone; clones share the channel cache and the suspect list.
#[derive(Clone, Default)]
pub struct DataNodeClient {
    channels: Arc<DashMap<String, Channel>>,
    /// Nodes that recently failed to answer, until when. Readers and writers
    /// go around them instead of paying a connect timeout on every request.
    suspects: Arc<DashMap<String, Suspect>>,
    deadlines: Deadlines,
    /// Per node address, its `PutFragments` and `GetFragments` streams (`calls`).
    put_streams: Arc<StreamSlots<PutStream>>,
    get_streams: Arc<StreamSlots<GetStream>>,
}

/// Longest a node stays suspect after failing again and again.
pub const SUSPECT_MAX: Duration = Duration::from_secs(15);

/// A suspect mark: skipped until `until`; a node marked again before
/// `until + period` (it failed again as soon as it was tried) is marked for
/// twice as long, up to [`SUSPECT_MAX`], so a hung node costs callers one
/// timeout per period instead of one every few seconds.
#[derive(Clone, Copy, Debug)]
struct Suspect {
    until: std::time::Instant,
    period: Duration,
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

    /// A client with other step deadlines than [`Deadlines::default`].
    pub fn with_deadlines(mut self, deadlines: Deadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    pub fn deadlines(&self) -> Deadlines {
        self.deadlines
    }

    /// Marks `addr` as not answering for `period`, or longer if it was marked
    /// recently (see [`Suspect`] and [`Self::is_suspect`]).
    pub fn mark_suspect(&self, addr: &str, period: Duration) {
        let now = std::time::Instant::now();
        let prev = self.suspects.get(addr).map(|s| *s);
        let period = match prev {
            Some(p) if now < p.until + p.period && !period.is_zero() => {
                period.max(p.period * 2).min(SUSPECT_MAX.max(period))
            }
            _ => period,
        };
        self.suspects.insert(
            addr.to_string(),
            Suspect {
                until: now + period,
                period,
            },
        );
    }

    /// Whether `addr` failed to answer recently. Callers that have enough
    /// other nodes skip it; the mark expires on its own.
    pub fn is_suspect(&self, addr: &str) -> bool {
        let mark = self.suspects.get(addr).map(|u| *u);
        let now = std::time::Instant::now();
        match mark {
            Some(m) if m.until > now => true,
            Some(m) => {
                // Kept a while after expiry to remember repeat offenders.
                if m.until + m.period <= now {
                    self.suspects.remove(addr);
                }
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
        Ok(RawClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE))
    }

    /// The one channel (connection pool) to `addr`.
    fn channel(&self, addr: &str) -> Result<Channel, DataNodeError> {
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
        Ok(channel)
    }

    /// Streams one fragment to `addr`; `blocks` yields whole blocks in order (each exactly
    /// header.block_size bytes except the last, which may be shorter; an empty stream = empty
    /// fragment). Computes each block's crc32c, sends one block per message, the final
    /// message has last=true. Returns once the node has made the fragment durable.
    ///
    /// The end of `blocks` commits the fragment. Writers that may have to abandon a
    /// fragment midway use [`Self::put_fragment_sealed`] instead.
    pub async fn put_fragment<S, B>(
        &self,
        addr: &str,
        header: FragmentHeader,
        blocks: S,
    ) -> Result<PutFragmentResponse, DataNodeError>
    where
        S: Stream<Item = B> + Send + 'static,
        B: IntoCheckedBlock,
    {
        let seal = futures::stream::once(async { CheckedBlock::default() });
        let sealed = blocks.map(IntoCheckedBlock::into_checked).chain(seal);
        self.put_fragment_sealed(addr, header, sealed).await
    }

    /// Like [`Self::put_fragment`], but the fragment is committed only when `blocks`
    /// yields an empty `Bytes` (the seal; blocks themselves are never empty). If the
    /// stream ends without the seal — its sender was dropped because the upstream body
    /// failed or the request was cancelled — the call ends without `last=true`, and the
    /// node stores nothing. (Relying on aborting the call instead races with the end of
    /// the stream: a truncated fragment could be committed.)
    pub async fn put_fragment_sealed<S, B>(
        &self,
        addr: &str,
        header: FragmentHeader,
        blocks: S,
    ) -> Result<PutFragmentResponse, DataNodeError>
    where
        S: Stream<Item = B> + Send + 'static,
        B: IntoCheckedBlock,
    {
        let channel = self.channel(addr)?;
        let (tx, rx) = mpsc::channel(PUT_CHANNEL_CAPACITY);
        let Deadlines {
            stream_idle,
            commit,
            ..
        } = self.deadlines;
        // The feeder reports a hung node here; the call itself would wait forever.
        let (hung_tx, hung_rx) = tokio::sync::oneshot::channel::<String>();
        let feeder = tokio::spawn(async move {
            let why = match feed_put(blocks, header, tx, stream_idle).await {
                Fed::CallEnded => return,
                Fed::Stalled => format!("the node took no block for {stream_idle:?}"),
                // Sealed or abandoned: either way the node answers (commit or
                // error) soon, unless it is hung.
                Fed::Done => {
                    tokio::time::sleep(commit).await;
                    format!("no answer {commit:?} after the last message")
                }
            };
            let _ = hung_tx.send(why);
        });
        let _guard = AbortOnDrop(feeder.abort_handle());
        // Framed by hand: the blocks go out without a copy (raw_put).
        let call = crate::raw_put::put_fragment(channel, host_of(addr), rx);
        tokio::pin!(call);
        tokio::select! {
            r = &mut call => r,
            why = hung_rx => match why {
                Ok(why) => Err(DataNodeError::TimedOut(why)),
                // The feeder saw the call end: its answer is there.
                Err(_) => call.await,
            },
        }
    }

    /// Stores a fragment of one block, `block` (the fragments of a body of
    /// at most one stripe), and returns once the node has made it durable.
    /// It goes as one call on the node's `PutFragments` stream (`calls`),
    /// not as an HTTP/2 stream of its own, unless it is larger than
    /// [`MAX_STREAMED_BLOCK`], the stream has too much in flight, or the node
    /// does not know `PutFragments`.
    pub async fn put_whole_fragment(
        &self,
        addr: &str,
        header: FragmentHeader,
        block: impl IntoCheckedBlock,
    ) -> Result<PutFragmentResponse, DataNodeError> {
        let block = block.into_checked();
        let (header, block) = match self.put_stream(addr, block.data.len()).await? {
            None => (header, block),
            Some(stream) => {
                let chunk = PutFragmentChunk {
                    crc32c: block.crc32c,
                    header: Some(header),
                    data: block.data,
                    last: true,
                };
                match stream.put(chunk, self.deadlines.commit).await {
                    Ok(answer) => return answer,
                    Err(chunk) => (
                        chunk.header.unwrap_or_default(),
                        CheckedBlock {
                            data: chunk.data,
                            crc32c: chunk.crc32c,
                        },
                    ),
                }
            }
        };
        self.put_fragment(addr, header, futures::stream::once(async { block }))
            .await
    }

    /// The open `PutFragments` stream to `addr` for a block of `len` bytes,
    /// opened if need be; None when the block goes as a call of its own.
    async fn put_stream(
        &self,
        addr: &str,
        len: usize,
    ) -> Result<Option<Arc<PutStream>>, DataNodeError> {
        if len > MAX_STREAMED_BLOCK {
            return Ok(None);
        }
        let open = || Ok(PutStream::open(self.client(addr)?));
        self.put_streams.get(addr, self.deadlines.unary, open).await
    }

    /// Block `block` of a fragment, verified against its CRC32C on receipt:
    /// for blocks of at most [`crate::calls::MAX_CALL_READ_BLOCK`] bytes
    /// (larger ones read cheaper through [`Self::get_fragment`]). It is one call on the node's
    /// `GetFragments` stream (`calls`), or a `GetFragment` call of its own if
    /// the node does not know that stream. Waits at most the stream deadline.
    pub async fn get_block(
        &self,
        addr: &str,
        id: FragmentId,
        block: u32,
    ) -> Result<Bytes, DataNodeError> {
        let open = || Ok(GetStream::open(self.channel(addr)?, host_of(addr)));
        let within = self.deadlines.stream_idle;
        match self
            .get_streams
            .get(addr, self.deadlines.unary, open)
            .await?
        {
            Some(stream) => stream.get(id, block, within).await,
            None => {
                let mut blocks = self.get_fragment(addr, id, block, 1).await?;
                match bounded(within, "GetFragment", blocks.next()).await? {
                    Some(b) => b,
                    None => Err(DataNodeError::Internal(format!(
                        "block {block} asked for, none came"
                    ))),
                }
            }
        }
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
        let req = GetFragmentRequest {
            id: Some(id),
            first_block,
            block_count,
        };
        // Raw HTTP/2 on the same channel: no copy of the blocks into and out
        // of gRPC messages (decision 0049).
        crate::raw_read::get_fragment(
            self.channel(addr)?,
            host_of(addr),
            req,
            self.deadlines.stream_idle,
        )
        .await
    }

    /// Deletes a fragment; returns whether the node had it.
    pub async fn delete_fragment(&self, addr: &str, id: FragmentId) -> Result<bool, DataNodeError> {
        let mut client = self.client(addr)?;
        let call = client.delete_fragment(DeleteFragmentRequest { id: Some(id) });
        let resp = bounded(self.deadlines.unary, "DeleteFragment", call).await??;
        Ok(resp.into_inner().existed)
    }

    /// What the node knows about a fragment (`found=false` when it has none).
    pub async fn stat_fragment(
        &self,
        addr: &str,
        id: FragmentId,
    ) -> Result<StatFragmentResponse, DataNodeError> {
        let mut client = self.client(addr)?;
        let call = client.stat_fragment(StatFragmentRequest { id: Some(id) });
        let resp = bounded(self.deadlines.unary, "StatFragment", call).await??;
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
        let call = client.list_fragments(ListFragmentsRequest {
            all_pgs,
            pg,
            after,
            limit,
        });
        let resp = bounded(self.deadlines.unary, "ListFragments", call).await??;
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

/// The outcome of feeding one PUT's messages to the call.
enum Fed {
    /// Sealed (last=true sent) or abandoned (the blocks ended without the seal).
    Done,
    /// The call ended (answered or failed) before everything was sent.
    CallEnded,
    /// The node took no message for the idle deadline.
    Stalled,
}

/// Turns `blocks` into PutFragment messages (header on the first, `last` on
/// the one before the seal) and sends them, each within `idle`.
async fn feed_put<S, B>(
    blocks: S,
    header: FragmentHeader,
    tx: mpsc::Sender<PutFragmentChunk>,
    idle: Duration,
) -> Fed
where
    S: Stream<Item = B> + Send + 'static,
    B: IntoCheckedBlock,
{
    let send = |msg: PutFragmentChunk| {
        let tx = &tx;
        async move {
            match tokio::time::timeout(idle, tx.send(msg)).await {
                Ok(Ok(())) => None,
                Ok(Err(_)) => Some(Fed::CallEnded),
                Err(_) => Some(Fed::Stalled),
            }
        }
    };
    let mut blocks = Box::pin(blocks);
    let mut header = Some(header);
    let mut current = match blocks.next().await {
        // Not sealed: abandon (dropping `tx` ends the call without last=true).
        None => return Fed::Done,
        Some(b) if b.is_empty() => {
            let msg = PutFragmentChunk {
                header: header.take(),
                data: Bytes::new(),
                crc32c: 0,
                last: true,
            };
            return send(msg).await.unwrap_or(Fed::Done);
        }
        Some(b) => b,
    };
    loop {
        // Look one item ahead so the final block carries last=true.
        let sealed = match blocks.next().await {
            None => return Fed::Done, // ended without the seal: abandon
            Some(next) if next.is_empty() => None,
            Some(next) => Some(next),
        };
        let CheckedBlock { data, crc32c } = current.into_checked();
        let msg = PutFragmentChunk {
            header: header.take(),
            data,
            crc32c,
            last: sealed.is_none(),
        };
        if let Some(stop) = send(msg).await {
            return stop;
        }
        match sealed {
            Some(next) => current = next,
            None => return Fed::Done,
        }
    }
}

/// A node address without its scheme: the authority of a raw request.
fn host_of(addr: &str) -> &str {
    addr.strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr)
}

/// Awaits `call` for at most `limit`; `what` names the step in the error.
async fn bounded<F: std::future::Future>(
    limit: Duration,
    what: &str,
    call: F,
) -> Result<F::Output, DataNodeError> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| DataNodeError::TimedOut(format!("{what}: no answer for {limit:?}")))
}

/// Which fragments `DataNodeClient::list_fragments` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgFilter {
    All,
    Pg(u32),
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

    #[test]
    fn repeat_suspects_are_marked_longer() {
        let c = DataNodeClient::new();
        let period = Duration::from_secs(3);
        let mark = |c: &DataNodeClient| c.suspects.get("a:1").map(|s| s.period);
        c.mark_suspect("a:1", period);
        assert_eq!(mark(&c), Some(period));
        c.mark_suspect("a:1", period);
        assert_eq!(mark(&c), Some(period * 2));
        for _ in 0..5 {
            c.mark_suspect("a:1", period);
        }
        assert_eq!(mark(&c), Some(SUSPECT_MAX), "capped");
        c.clear_suspect("a:1");
        c.mark_suspect("a:1", period);
        assert_eq!(mark(&c), Some(period), "a cleared node starts over");
    }

    /// A "node" that accepts TCP connections and never answers: a SIGSTOPped
    /// process looks like this to its peers (the kernel still completes the
    /// handshake and buffers what is sent).
    async fn hung_node() -> (String, tokio::task::JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = l.accept().await {
                held.push(sock);
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn every_call_to_a_hung_node_ends_within_its_deadline() {
        let (addr, task) = hung_node().await;
        let d = Deadlines {
            unary: Duration::from_millis(300),
            stream_idle: Duration::from_millis(300),
            commit: Duration::from_millis(300),
        };
        let c = DataNodeClient::new().with_deadlines(d);
        let t0 = std::time::Instant::now();
        let id = FragmentId::default();
        let r = c.stat_fragment(&addr, id.clone()).await;
        assert!(matches!(r, Err(DataNodeError::TimedOut(_))), "{r:?}");
        let r = c.delete_fragment(&addr, id.clone()).await;
        assert!(matches!(r, Err(DataNodeError::TimedOut(_))), "{r:?}");
        let r = c.list_fragments(&addr, PgFilter::All, None, 0).await;
        assert!(matches!(r, Err(DataNodeError::TimedOut(_))), "{r:?}");
        let r = c.get_fragment(&addr, id.clone(), 0, 0).await.map(|_| ());
        assert!(matches!(r, Err(DataNodeError::TimedOut(_))), "{r:?}");
        // A small fragment fits in the buffers: it is sent, then no answer comes.
        let blocks = futures::stream::iter(vec![Bytes::from_static(b"abc")]);
        let r = c
            .put_fragment(&addr, FragmentHeader::default(), blocks)
            .await;
        assert!(matches!(r, Err(DataNodeError::TimedOut(_))), "{r:?}");
        assert!(r.as_ref().err().is_some_and(|e| e.is_unresponsive()));
        // A big one stalls while sending (the windows and buffers fill up).
        let big = futures::stream::iter((0..64).map(|_| Bytes::from(vec![7u8; 1 << 20])));
        let r = c.put_fragment(&addr, FragmentHeader::default(), big).await;
        assert!(matches!(r, Err(DataNodeError::TimedOut(_))), "{r:?}");
        // Six steps of 300 ms each, plus connection setup: far below a hang.
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        task.abort();
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
            futures::stream::empty::<Bytes>(),
        );
        assert_send(&put);
        assert_send(&c.get_fragment("127.0.0.1:1", FragmentId::default(), 0, 0));
        assert_send(&c.delete_fragment("127.0.0.1:1", FragmentId::default()));
        assert_send(&c.stat_fragment("127.0.0.1:1", FragmentId::default()));
        assert_send(&c.list_fragments("127.0.0.1:1", PgFilter::All, None, 0));
        assert_send(&c.list_all_fragments("127.0.0.1:1", PgFilter::Pg(3)));
        assert_send(&c.scrub_now("127.0.0.1:1", PgFilter::All, 0));
    }
}
