//! The PUT data path: one pass over the request body that computes the MD5
//! (the ETag), the additional checksums and the size, cuts the body into
//! stripes and streams their fragment blocks to the k+m nodes of one
//! placement group of the body's storage class.
//!
//! Small bodies (at most `inline_threshold` bytes) never reach a data node:
//! they are returned inline and stored in the metadata record.
//!
//! With server-side encryption (`write_body_sealed`, `data::crypto`) the
//! plaintext is hashed, then sealed chunk by chunk, and only the sealed
//! bytes are kept inline or striped: nothing below this sees plaintext.
//!
//! Each stripe (k shard blocks of data) is encoded into k+m blocks
//! (`kura_datanode::ec`; REPLICA3 is k = 1 with plain copies) and block i goes
//! to fragment writer i through a bounded channel, so a PUT holds at most a
//! few stripes in memory whatever the body size. A body of at most one
//! stripe is held whole instead, and each of its fragments (one block) goes
//! as one call on its node's fragment stream (decision 0059). The body is durable once a
//! write quorum of fragments was acknowledged (fsynced); a failed node does
//! not fail the PUT while the quorum holds. Missing fragments are counted
//! (`kura_gateway_degraded_writes_total`) and rebuilt by healing.
//!
//! If the request is cancelled or fails before `write_body` returns, the
//! fragment streams are aborted (never finalized) and their fragments deleted
//! best-effort. After it returns, the caller owns the body: it either commits
//! it or calls `gc::spawn_discard`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::data::etag::{BodyMd5, EtagError, SealedMd5};
use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use kura_datanode::client::{DataNodeClient, DataNodeError};
use kura_datanode::crc::CheckedBlock;
use kura_datanode::ec::{Codec, Layout};
use kura_proto::datanode::{FragmentHeader, FragmentId, PutFragmentResponse};
use kura_proto::meta::{DataLocation, SseBody, StorageClass};
use s3s::dto::StreamingBlob;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::context::Ctx;
use crate::data::checksum::ChecksumPlan;
use crate::data::crypto::{NewBody, Sealer};
use crate::data::gc;
use crate::data::stripes::SUSPECT_FOR;
use crate::error::{body_error, GwError, GwResult};
use crate::meta::skewed_now_ms;
use crate::metrics;
use crate::placement::GroupView;

/// Blocks queued per fragment before the body reader waits.
const WINDOW: usize = 4;
/// A fragment whose node accepts no block for this long is dropped from the
/// write while the quorum holds without it, and its node is marked suspect:
/// a hung (SIGSTOPped, stuck disk) node costs a PUT this much, not a hang.
const STALL_TIMEOUT: Duration = Duration::from_secs(3);
/// A fragment whose node accepts no block for this long is dropped from the
/// write even when the quorum is then lost (the PUT fails with 503).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for a node to make its fragment durable after the last block.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);
/// Least time fragments still in flight get once the write quorum is reached.
const GRACE_MIN: Duration = Duration::from_millis(50);

/// Whose body this is (written into every fragment header for the orphan scrubber).
#[derive(Clone, Debug)]
pub struct BodyOwner {
    pub bucket_id: u64,
    pub key: String,
    /// Empty for a plain PUT.
    pub upload_id: String,
    /// 0 for a plain PUT.
    pub part_number: u32,
}

pub struct WriteSpec<'a> {
    pub owner: BodyOwner,
    /// The decoded Content-Length, when the client sent one.
    pub content_length: Option<u64>,
    /// EntityTooLarge above this.
    pub max_size: u64,
    /// Base64 Content-MD5, verified when present.
    pub content_md5: Option<&'a str>,
    pub checksums: ChecksumPlan,
    /// Where a stored body goes (inline bodies ignore it).
    pub class: StorageClass,
}

/// A body that is either inline or durable on a write quorum, not yet referenced.
#[derive(Debug)]
pub struct Written {
    pub inline: Option<Bytes>,
    pub location: Option<DataLocation>,
    /// When its fragments were created (the time in their headers, from
    /// which orphan GC counts): the metadata commit must happen within
    /// `Ctx::max_commit_age` of it.
    pub started: Instant,
    pub size: u64,
    pub md5: [u8; 16],
    pub checksums: BTreeMap<String, String>,
    /// How the body is encrypted (for its record); `None` = in the clear.
    pub sse: Option<SseBody>,
}

impl Written {
    /// The stored body and the time its fragments were created, if not inline.
    pub fn stored(&self) -> Option<(DataLocation, Instant)> {
        self.location.clone().map(|l| (l, self.started))
    }

    /// The S3 ETag (hex MD5, no quotes).
    pub fn etag(&self) -> String {
        hex::encode(self.md5)
    }
}

/// Cuts a byte stream into blocks of exactly `block_size` bytes (the last may be short).
pub struct BlockSplitter {
    block_size: usize,
    buf: BytesMut,
}

impl BlockSplitter {
    pub fn new(block_size: usize) -> Self {
        BlockSplitter {
            block_size: block_size.max(1),
            buf: BytesMut::new(),
        }
    }

    /// Appends `chunk`; every block it completes is pushed to `out`.
    pub fn push(&mut self, mut chunk: Bytes, out: &mut Vec<Bytes>) {
        let bs = self.block_size;
        if !self.buf.is_empty() {
            let take = (bs - self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk[..take]);
            chunk.advance(take);
            if self.buf.len() == bs {
                out.push(self.buf.split().freeze());
            }
        }
        // Whole blocks straight from the chunk, without copying.
        while chunk.len() >= bs {
            out.push(chunk.split_to(bs));
        }
        if !chunk.is_empty() {
            if self.buf.capacity() < bs {
                self.buf.reserve(bs);
            }
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// The final short block, if any bytes remain.
    pub fn finish(self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.freeze())
    }
}

fn md5_error(e: EtagError) -> GwError {
    GwError::Internal(format!("MD5: {e}"))
}

/// Decodes a Content-MD5 header.
pub fn parse_content_md5(v: &str) -> GwResult<[u8; 16]> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|_| GwError::InvalidDigest("Content-MD5 is not valid base64".into()))?;
    raw.try_into()
        .map_err(|_| GwError::InvalidDigest("Content-MD5 is not 16 bytes".into()))
}

/// Streams `body` to the data nodes (or keeps it inline) and returns it,
/// in the clear. Writes into a bucket call `write_body_sealed` with what
/// `s3::encryption::for_write` says, so SSE and bucket default encryption
/// are honoured.
pub async fn write_body(
    ctx: &Arc<Ctx>,
    spec: WriteSpec<'_>,
    body: StreamingBlob,
) -> GwResult<Written> {
    write_body_sealed(ctx, spec, body, None).await
}

/// `write_body`, sealing the body with `sse` when given (`data::crypto`):
/// MD5, checksums and size are the plaintext's; only ciphertext is stored.
pub async fn write_body_sealed(
    ctx: &Arc<Ctx>,
    spec: WriteSpec<'_>,
    mut body: StreamingBlob,
    sse: Option<NewBody>,
) -> GwResult<Written> {
    if spec.content_length.is_some_and(|l| l > spec.max_size) {
        return Err(GwError::EntityTooLarge);
    }
    let expected_md5 = spec.content_md5.map(parse_content_md5).transpose()?;
    let mut checks = spec.checksums;
    let mut md5 = BodyMd5::new();
    // Plaintext bytes received; `out.stored` counts what goes to storage
    // (the same unless the body is sealed).
    let mut size: u64 = 0;
    let mut out = Striping::default();
    let mut sealer = sse.as_ref().map(|s| Sealer::new(s.cipher.clone()));
    let mut sealed: Vec<Bytes> = Vec::new();

    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(body_error)?;
        size += chunk.len() as u64;
        if size > spec.max_size {
            return Err(GwError::EntityTooLarge);
        }
        metrics::add_bytes_in(chunk.len() as u64);
        md5.push(&chunk).map_err(md5_error)?;
        checks.update(&chunk);
        match sealer.as_mut() {
            Some(s) => s.push(chunk, &mut sealed)?,
            None => sealed.push(chunk),
        }
        out.take(&mut sealed);
        out.advance(ctx, &spec.owner, spec.class, spec.content_length, size)
            .await?;
    }
    if let Some(s) = sealer.take() {
        s.finish(&mut sealed)?;
        out.take(&mut sealed);
        out.advance(ctx, &spec.owner, spec.class, spec.content_length, size)
            .await?;
    }

    if spec.content_length.is_some_and(|l| l != size) {
        return Err(GwError::IncompleteBody);
    }
    let mut md5 = md5.seal().map_err(md5_error)?;
    // A Content-MD5 to check decides before anything is committed; else the
    // digest is wanted only once the fragments are durable, and the lanes
    // engine hashes it meanwhile beside other bodies (etag::lanes).
    if let Some(expected) = expected_md5 {
        let got = md5.finish().await.map_err(md5_error)?;
        if got != expected {
            return Err(GwError::BadDigest(
                "The Content-MD5 you specified did not match what we received.".into(),
            ));
        }
        md5 = SealedMd5::ready(got);
    }
    let checksums = checks.finish()?;
    let stored = out.stored;
    let (inline, location, started) = match (out.fanout, out.splitter) {
        (None, _) => (Some(Bytes::from(out.head.concat())), None, Instant::now()),
        (Some(f), None) => {
            let started = f.started;
            let stripe = match <[Bytes; 1]>::try_from(out.head) {
                Ok([one]) => one,
                Err(head) => Bytes::from(head.concat()),
            };
            let mut location = f.store_whole(stripe).await?;
            location.size = stored;
            (None, Some(location), started)
        }
        (Some(mut f), Some(splitter)) => {
            if let Some(last) = splitter.finish() {
                f.send_stripe(last).await?;
            }
            let started = f.started;
            let mut location = f.finish(stored).await?;
            location.size = stored;
            (None, Some(location), started)
        }
    };
    let md5 = md5.finish().await.map_err(md5_error)?;
    let md5 = match &sse {
        Some(s) if s.opaque_etag => crate::data::crypto::random_bytes()?,
        _ => md5,
    };
    Ok(Written {
        inline,
        location,
        started,
        size,
        md5,
        checksums,
        sse: sse.map(|s| s.record),
    })
}

/// Where a body's stored bytes go as they come: kept (`head`) while the
/// body may still be inline or fit one stripe, then cut into stripes for
/// the fragment streams.
#[derive(Default)]
struct Striping {
    /// Bytes for storage (sealed, if the body is) received so far.
    stored: u64,
    /// Chunks not cut into stripes yet.
    head: Vec<Bytes>,
    /// Chosen once the body outgrew the inline threshold.
    fanout: Option<Fanout>,
    /// Set once the body is known to be larger than one stripe: its
    /// fragments are then streamed.
    splitter: Option<BlockSplitter>,
    stripes: Vec<Bytes>,
}

impl Striping {
    fn take(&mut self, chunks: &mut Vec<Bytes>) {
        for chunk in chunks.drain(..) {
            self.stored += chunk.len() as u64;
            match self.splitter.as_mut() {
                Some(splitter) => splitter.push(chunk, &mut self.stripes),
                None => self.head.push(chunk),
            }
        }
    }

    /// After `size` plaintext bytes: picks the placement once the body is
    /// not inline (the decision is on plaintext, so sealing never changes
    /// which bodies are inline), opens the fragment streams once it is
    /// larger than one stripe (or says it will be), and sends whole stripes.
    async fn advance(
        &mut self,
        ctx: &Arc<Ctx>,
        owner: &BodyOwner,
        class: StorageClass,
        content_length: Option<u64>,
        size: u64,
    ) -> GwResult<()> {
        if self.fanout.is_none() && size > ctx.inline_threshold as u64 {
            self.fanout = Some(Fanout::start(ctx, owner, class).await?);
        }
        let Some(f) = self.fanout.as_mut() else {
            return Ok(());
        };
        let stripe = f.stripe_bytes() as u64;
        if self.splitter.is_none()
            && (self.stored > stripe || content_length.is_some_and(|l| l > stripe))
        {
            f.open_streams();
            let mut splitter = BlockSplitter::new(f.stripe_bytes());
            for c in self.head.drain(..) {
                splitter.push(c, &mut self.stripes);
            }
            self.splitter = Some(splitter);
        }
        for stripe in self.stripes.drain(..) {
            f.send_stripe(stripe).await?;
        }
        Ok(())
    }
}

type PutResult = Result<PutFragmentResponse, DataNodeError>;
/// A fragment's answer: its shard and what its node said (or that it did
/// not within `FINISH_TIMEOUT`).
type Answer = BoxFuture<'static, (u32, Result<PutResult, tokio::time::error::Elapsed>)>;
type Pending = FuturesUnordered<Answer>;

/// The stream of one fragment to its node.
struct FragmentWriter {
    shard: u32,
    addr: Option<String>,
    /// Until its fragment is sent (as a stream, or whole).
    header: Option<FragmentHeader>,
    tx: Option<mpsc::Sender<CheckedBlock>>,
    task: Option<JoinHandle<PutResult>>,
    /// Why this fragment can take no more blocks (None while it can).
    down: Option<&'static str>,
    /// Its answer is awaited by `finish` (or by the stragglers' task).
    in_flight: bool,
}

impl FragmentWriter {
    /// Stops sending to this fragment and says why. A node that stalled or
    /// failed to answer is marked suspect, as readers do, so the next PUTs
    /// place around it instead of waiting on it.
    fn drop_out(&mut self, data: &DataNodeClient, stalled: bool) {
        self.tx = None;
        let mut unresponsive = stalled;
        let why = match self.task.take() {
            Some(t) if t.is_finished() => match t.now_or_never() {
                Some(Ok(Err(e))) => {
                    unresponsive |= e.is_unresponsive();
                    format!("its node ended the stream: {e}")
                }
                _ => "its node ended the stream".to_string(),
            },
            Some(t) => {
                t.abort();
                format!("stalled: no block taken for {STALL_TIMEOUT:?}")
            }
            None => "no task".to_string(),
        };
        self.down = Some(if unresponsive {
            "unresponsive"
        } else {
            "failed"
        });
        if unresponsive {
            metrics::write_stall();
            if let Some(a) = &self.addr {
                data.mark_suspect(a, SUSPECT_FOR);
            }
        }
        tracing::warn!(shard = self.shard, node = ?self.addr, why, "fragment dropped from write");
    }
}

/// How one block send ended.
enum Sent {
    Ok,
    /// The fragment's stream is gone (its node failed or answered early).
    Closed,
    /// Not taken within the time given; the block comes back for a retry.
    Stalled(CheckedBlock),
}

/// Sends `block` on `tx` if the stream takes it within `within`.
async fn send_within(
    tx: &mpsc::Sender<CheckedBlock>,
    block: CheckedBlock,
    within: Duration,
) -> Sent {
    // `reserve` is cancel-safe: on timeout the block is not lost, so a
    // fragment waited on longer gets the same block again.
    match tokio::time::timeout(within, tx.reserve()).await {
        Ok(Ok(permit)) => {
            permit.send(block);
            Sent::Ok
        }
        Ok(Err(_)) => Sent::Closed,
        Err(_) => Sent::Stalled(block),
    }
}

/// The fragment streams of one body. Dropping it before `finish` succeeded
/// aborts the streams and deletes whatever the nodes stored.
struct Fanout {
    ctx: Arc<Ctx>,
    codec: Codec,
    layout: Layout,
    location: DataLocation,
    writers: Vec<FragmentWriter>,
    group: GroupView,
    /// The quorum at the start (k + 1 unless a zone was already down).
    quorum: usize,
    armed: bool,
    /// When the fragment headers were stamped.
    started: Instant,
}

impl Fanout {
    async fn start(ctx: &Arc<Ctx>, owner: &BodyOwner, class: StorageClass) -> GwResult<Fanout> {
        let view = ctx.placement.get().await?;
        let cv = view.class(class).ok_or_else(|| {
            GwError::Unavailable(format!(
                "storage class {} is not placeable in this cluster",
                class.as_str_name()
            ))
        })?;
        let (k, m) = (cv.data_shards as usize, cv.parity_shards as usize);
        let codec = Codec::new(k, m).map_err(|e| GwError::Internal(e.to_string()))?;
        let data_id: [u8; 16] = rand::random();
        let group = cv
            .pick_group(&data_id)
            .ok_or_else(|| GwError::Unavailable("placement map has no groups".into()))?
            .clone();
        let usable = |i: usize| {
            group.nodes[i].is_some() && !group.read_only.get(i).copied().unwrap_or(false)
        };
        let suspect = |i: usize| {
            group.nodes[i]
                .as_deref()
                .is_some_and(|a| ctx.data.is_suspect(a))
        };
        // Skip nodes that just failed to answer, unless the quorum needs them.
        // The quorum is k + 1 unless a whole zone of the group is known down.
        let healthy = (0..group.nodes.len())
            .filter(|i| usable(*i) && !suspect(*i))
            .count();
        let quorum_skipping = ctx.quorum(k, m, &group, |i| !usable(i) || suspect(i));
        let skip_suspects = healthy >= quorum_skipping;
        let writable = |i: usize| usable(i) && !(skip_suspects && suspect(i));
        let quorum = ctx.quorum(k, m, &group, |i| !writable(i));
        let live = (0..group.nodes.len()).filter(|i| writable(*i)).count();
        if group.nodes.len() != k + m || live < quorum {
            ctx.placement.refresh_soon().await;
            return Err(GwError::Unavailable(format!(
                "placement group {} has {live} writable nodes",
                group.id
            )));
        }
        let block_size = Layout::block_size_for(ctx.stripe_size as u64, k as u32);
        let location = DataLocation {
            data_id: Bytes::copy_from_slice(&data_id),
            pg: group.id,
            storage_class: class as i32,
            size: 0,
            block_size,
            data_shards: k as u32,
            parity_shards: m as u32,
        };
        let layout = Layout {
            data_shards: k as u32,
            parity_shards: m as u32,
            block_size,
            size: 0,
        };
        // Orphan GC judges age by the data nodes' clocks, never by this.
        let created = skewed_now_ms() as i64;
        let started = Instant::now();
        let mut writers = Vec::with_capacity(group.nodes.len());
        for (i, addr) in group.nodes.iter().enumerate() {
            let shard = i as u32;
            let Some(addr) = addr.clone().filter(|_| writable(i)) else {
                writers.push(FragmentWriter {
                    shard,
                    addr: None,
                    header: None,
                    tx: None,
                    task: None,
                    down: Some("not writable"),
                    in_flight: false,
                });
                continue;
            };
            let header = FragmentHeader {
                id: Some(FragmentId {
                    data_id: location.data_id.clone(),
                    shard,
                }),
                bucket_id: owner.bucket_id,
                object_key: owner.key.clone(),
                version: 0,
                upload_id: owner.upload_id.clone(),
                part_number: owner.part_number,
                block_size,
                pg: group.id,
                created_unix_ms: created,
                storage_class: class as i32,
                // Stamped by the data node with its own clock.
                stored_unix_ms: 0,
            };
            writers.push(FragmentWriter {
                shard,
                addr: Some(addr),
                header: Some(header),
                tx: None,
                task: None,
                down: None,
                in_flight: false,
            });
        }
        Ok(Fanout {
            ctx: ctx.clone(),
            codec,
            layout,
            location,
            writers,
            group,
            quorum,
            armed: true,
            started,
        })
    }

    /// Opens a fragment stream to each writable node: blocks then go out as
    /// stripes are encoded (`send_stripe`), and `finish` seals them.
    fn open_streams(&mut self) {
        for w in &mut self.writers {
            let (Some(addr), Some(header)) = (w.addr.clone(), w.header.take()) else {
                continue;
            };
            let (tx, rx) = mpsc::channel::<CheckedBlock>(WINDOW);
            let blocks =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
                );
            let data = self.ctx.data.clone();
            w.task = Some(tokio::spawn(async move {
                data.put_fragment_sealed(&addr, header, blocks).await
            }));
            w.tx = Some(tx);
        }
    }

    /// The write quorum now: k + 1, or k once every member of one zone of
    /// the group is out of this write (not writable, failed or stalled).
    fn current_quorum(&self) -> usize {
        let (k, m) = (self.codec.data_shards(), self.codec.parity_shards());
        let down = |i: usize| self.writers.get(i).is_none_or(|w| w.down.is_some());
        self.ctx.quorum(k, m, &self.group, down)
    }

    /// Sends `blocks[i]` to every live fragment i. Fragments whose node takes
    /// nothing for [`STALL_TIMEOUT`] are dropped (and their nodes marked
    /// suspect) as long as the quorum holds without them; the others get up
    /// to [`SEND_TIMEOUT`].
    async fn send_all(&mut self, blocks: Vec<CheckedBlock>) {
        let sends: Vec<_> = self
            .writers
            .iter()
            .enumerate()
            .zip(blocks)
            .filter_map(|((i, w), b)| w.tx.clone().map(|tx| (i, tx, b)))
            .collect();
        let outcomes = futures::future::join_all(
            sends
                .into_iter()
                .map(|(i, tx, b)| async move { (i, send_within(&tx, b, STALL_TIMEOUT).await) }),
        )
        .await;
        let data = self.ctx.data.clone();
        let mut stalled = Vec::new();
        for (i, sent) in outcomes {
            match sent {
                Sent::Ok => {}
                Sent::Closed => self.writers[i].drop_out(&data, false),
                Sent::Stalled(b) => stalled.push((i, b)),
            }
        }
        if stalled.is_empty() {
            return;
        }
        // Drop the stalled ones if the quorum survives it, else wait longer.
        let spare = self.live().saturating_sub(self.current_quorum());
        if stalled.len() <= spare {
            for (i, _) in stalled {
                self.writers[i].drop_out(&data, true);
            }
            return;
        }
        let more = SEND_TIMEOUT.saturating_sub(STALL_TIMEOUT);
        let retries = stalled.into_iter().filter_map(|(i, b)| {
            let tx = self.writers[i].tx.clone()?;
            Some(async move { (i, send_within(&tx, b, more).await) })
        });
        for (i, sent) in futures::future::join_all(retries).await {
            match sent {
                Sent::Ok => {}
                Sent::Closed => self.writers[i].drop_out(&data, false),
                Sent::Stalled(_) => self.writers[i].drop_out(&data, true),
            }
        }
    }

    /// Data bytes of one full stripe.
    fn stripe_bytes(&self) -> usize {
        self.layout.stripe_bytes() as usize
    }

    fn live(&self) -> usize {
        self.writers.iter().filter(|r| r.tx.is_some()).count()
    }

    /// The k+m blocks of one stripe (full, or the short last one), each with
    /// its CRC32C taken while the encoder had it in the cache.
    fn encode(&self, stripe: &Bytes) -> GwResult<Vec<CheckedBlock>> {
        let shard_len = if stripe.len() == self.stripe_bytes() {
            self.layout.block_size as usize
        } else {
            stripe.len().div_ceil(self.codec.data_shards())
        };
        self.codec
            .encode_checked(stripe, shard_len)
            .map_err(|e| GwError::Internal(e.to_string()))
    }

    /// Encodes one stripe (full, or the short last one) and sends block i to
    /// fragment i; drops fragments whose node failed or stalled.
    async fn send_stripe(&mut self, stripe: Bytes) -> GwResult<()> {
        let blocks = self.encode(&stripe)?;
        self.send_all(blocks).await;
        let quorum = self.current_quorum();
        if self.live() < quorum {
            self.ctx.placement.refresh_soon().await;
            return Err(GwError::Unavailable(format!(
                "write quorum lost: {} of {} fragments left, {quorum} needed",
                self.live(),
                self.writers.len(),
            )));
        }
        Ok(())
    }

    /// Ends the streams and waits until `quorum` fragments of a `size`-byte
    /// body are durable (see [`Self::collect`]).
    async fn finish(mut self, size: u64) -> GwResult<DataLocation> {
        // The seal (an empty block) commits each fragment; a stream that just
        // ends (Drop, cancellation) is abandoned by its node.
        self.send_all(vec![CheckedBlock::default(); self.writers.len()])
            .await;
        for w in &mut self.writers {
            w.tx = None;
        }
        let pending: Pending = self
            .writers
            .iter_mut()
            .filter_map(|w| {
                let shard = w.shard;
                w.task.take().map(|t| {
                    let t = t.map(|joined| {
                        joined.unwrap_or_else(|e| Err(DataNodeError::Internal(format!("task {e}"))))
                    });
                    Box::pin(async move { (shard, tokio::time::timeout(FINISH_TIMEOUT, t).await) })
                        as Answer
                })
            })
            .collect();
        self.collect(pending, size).await
    }

    /// Stores a body of at most one stripe: each fragment is then one block,
    /// sent whole as a call on its node's fragment stream
    /// (`DataNodeClient::put_whole_fragment`, decision 0059) instead of a
    /// stream of its own with a task and channels.
    async fn store_whole(mut self, stripe: Bytes) -> GwResult<DataLocation> {
        let size = stripe.len() as u64;
        let blocks = self.encode(&stripe)?;
        let data = self.ctx.data.clone();
        let pending: Pending = self
            .writers
            .iter_mut()
            .zip(blocks)
            .filter_map(|(w, block)| {
                let (shard, addr, header) = (w.shard, w.addr.clone()?, w.header.take()?);
                let data = data.clone();
                Some(Box::pin(async move {
                    let put = data.put_whole_fragment(&addr, header, block);
                    (shard, tokio::time::timeout(FINISH_TIMEOUT, put).await)
                }) as Answer)
            })
            .collect();
        self.collect(pending, size).await
    }

    /// Waits until `quorum` fragments of a `size`-byte body are durable.
    /// Fragments still in flight then get a short grace (as long as the
    /// quorum took, at least `GRACE_MIN`) so a healthy cluster stores all
    /// k+m before the PUT is answered.
    async fn collect(mut self, mut pending: Pending, size: u64) -> GwResult<DataLocation> {
        for w in &mut self.writers {
            w.in_flight = w.down.is_none();
        }
        let data = self.ctx.data.clone();
        let want = Layout {
            size,
            ..self.layout
        }
        .fragment_len();
        let started = Instant::now();
        let width = self.writers.len();
        let mut acked = 0usize;
        let mut errors = Vec::new();
        // Marks the fragment down (and its node suspect if it did not answer).
        let judge = |writers: &mut Vec<FragmentWriter>,
                     shard: u32,
                     res: Result<PutResult, tokio::time::error::Elapsed>,
                     acked: &mut usize,
                     errors: &mut Vec<String>| {
            let mut unresponsive = false;
            if let Some(w) = writers.get_mut(shard as usize) {
                w.in_flight = false;
            }
            match res {
                Ok(Ok(PutFragmentResponse { length, .. })) if length == want => {
                    *acked += 1;
                    return;
                }
                Ok(Ok(resp)) => errors.push(format!(
                    "shard {shard}: stored {} of {want} bytes",
                    resp.length
                )),
                Ok(Err(e)) => {
                    unresponsive = e.is_unresponsive();
                    errors.push(format!("shard {shard}: {e}"));
                }
                Err(_) => {
                    unresponsive = true;
                    errors.push(format!("shard {shard}: timed out"));
                }
            }
            if let Some(w) = writers.get_mut(shard as usize) {
                w.down = Some("failed");
                if unresponsive {
                    metrics::write_stall();
                    if let Some(a) = &w.addr {
                        data.mark_suspect(a, SUSPECT_FOR);
                    }
                }
            }
        };
        // Re-evaluated as fragments fail: a whole zone found down lowers it to k.
        while acked < self.current_quorum() {
            let Some((shard, res)) = pending.next().await else {
                break;
            };
            judge(&mut self.writers, shard, res, &mut acked, &mut errors);
        }
        let quorum = self.current_quorum();
        if acked < quorum {
            return Err(GwError::Unavailable(format!(
                "write quorum not reached ({acked} of {quorum} needed): {}",
                errors.join("; ")
            )));
        }
        if quorum < self.quorum {
            tracing::warn!(
                pg = self.group.id,
                acked,
                "a whole zone of the group is down: body acknowledged with k fragments"
            );
        }
        let grace = started.elapsed().max(GRACE_MIN);
        let deadline = tokio::time::Instant::now() + grace;
        while !pending.is_empty() {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((shard, res))) => {
                    judge(&mut self.writers, shard, res, &mut acked, &mut errors)
                }
                Ok(None) | Err(_) => break,
            }
        }
        if acked < width {
            metrics::degraded_write();
            // Late: still writing when the grace ended (a slow node, not a failed one).
            let late = pending.len();
            tracing::warn!(
                acked,
                width,
                late,
                errors = %if errors.is_empty() { "none".into() } else { errors.join("; ") },
                "body stored with missing fragments; healing rebuilds them"
            );
        }
        // Stragglers finish on their own; their outcome only matters for
        // healing, and for judging their nodes: one that has not answered
        // STALL_TIMEOUT after the grace is hung (or far too slow to wait
        // for) and is marked suspect, so the next PUTs place around it.
        if !pending.is_empty() {
            let addrs: Vec<Option<String>> = self.writers.iter().map(|w| w.addr.clone()).collect();
            let mut left: Vec<u32> = self
                .writers
                .iter()
                .filter(|w| w.in_flight)
                .map(|w| w.shard)
                .collect();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + STALL_TIMEOUT;
                loop {
                    match tokio::time::timeout_at(deadline, pending.next()).await {
                        Ok(Some((shard, res))) => {
                            left.retain(|s| *s != shard);
                            let failed = match res {
                                Ok(Err(e)) => e.is_unresponsive(),
                                Err(_) => true,
                                _ => false,
                            };
                            if failed {
                                left.push(shard);
                            }
                        }
                        Ok(None) => break,
                        Err(_) => break,
                    }
                }
                for shard in left {
                    if let Some(Some(a)) = addrs.get(shard as usize) {
                        tracing::warn!(shard, node = %a, "fragment write still unanswered; node marked suspect");
                        metrics::write_stall();
                        data.mark_suspect(a, SUSPECT_FOR);
                    }
                }
                while pending.next().await.is_some() {}
            });
        }
        self.armed = false;
        Ok(self.location.clone())
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        for w in &mut self.writers {
            w.tx = None;
            if let Some(t) = w.task.take() {
                t.abort();
            }
        }
        if self.armed {
            gc::spawn_discard(self.ctx.clone(), vec![self.location.clone()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], bs: usize) -> Vec<Vec<u8>> {
        let mut s = BlockSplitter::new(bs);
        let mut out = Vec::new();
        for c in chunks {
            s.push(Bytes::copy_from_slice(c), &mut out);
        }
        let mut v: Vec<Vec<u8>> = out.into_iter().map(|b| b.to_vec()).collect();
        if let Some(last) = s.finish() {
            v.push(last.to_vec());
        }
        v
    }

    #[test]
    fn splits_into_exact_blocks() {
        assert_eq!(
            split(&[b"abcdefg"], 3),
            vec![b"abc".to_vec(), b"def".to_vec(), b"g".to_vec()]
        );
        assert_eq!(
            split(&[b"ab", b"cd", b"ef"], 3),
            vec![b"abc".to_vec(), b"def".to_vec()]
        );
        assert_eq!(
            split(&[b"a", b"bcdefgh", b"i"], 4),
            vec![b"abcd".to_vec(), b"efgh".to_vec(), b"i".to_vec()]
        );
        assert_eq!(split(&[], 4), Vec::<Vec<u8>>::new());
        assert_eq!(split(&[b"", b"abcd", b""], 4), vec![b"abcd".to_vec()]);
    }

    #[test]
    fn split_preserves_bytes_for_many_shapes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for bs in [1usize, 7, 64, 1000, 4096, 20_000] {
            for step in [1usize, 13, 500, 4096, 10_000] {
                let chunks: Vec<&[u8]> = data.chunks(step).collect();
                let blocks = split(&chunks, bs);
                for b in &blocks[..blocks.len().saturating_sub(1)] {
                    assert_eq!(b.len(), bs);
                }
                assert_eq!(blocks.concat(), data);
            }
        }
    }

    #[test]
    fn content_md5_parsing() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        let m = parse_content_md5("1B2M2Y8AsgTpgAmY7PhCfg==").unwrap();
        assert_eq!(hex::encode(m), "d41d8cd98f00b204e9800998ecf8427e");
        assert!(matches!(
            parse_content_md5("not base64!"),
            Err(GwError::InvalidDigest(_))
        ));
        assert!(matches!(
            parse_content_md5("AAAA"),
            Err(GwError::InvalidDigest(_))
        ));
    }
}
