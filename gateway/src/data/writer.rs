//! The PUT data path: one pass over the request body that computes the MD5
//! (the ETag), the additional checksums and the size, cuts the body into
//! `block_size` blocks and streams them to the nodes of one placement group.
//!
//! Small bodies (at most `inline_threshold` bytes) never reach a data node:
//! they are returned inline and stored in the metadata record.
//!
//! REPLICA3 (k = 1, m = 2): every block goes to all three nodes of the group
//! (node i stores shard i), each through a bounded channel, so a PUT holds at
//! most a few blocks in memory. The body is durable once `quorum` nodes
//! acknowledged their whole fragment; a failed node does not fail the PUT
//! while the quorum holds (healing restores the missing copy later).
//! Erasure-coded maps (k > 1) are refused until the EC codec lands here.
//!
//! If the request is cancelled or fails before `write_body` returns, the
//! fragment streams are aborted (never finalized) and their fragments deleted
//! best-effort. After it returns, the caller owns the body: it either commits
//! it or calls `gc::spawn_discard`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use kura_datanode::client::DataNodeError;
use kura_proto::datanode::{FragmentHeader, FragmentId, PutFragmentResponse};
use kura_proto::meta::{DataLocation, StorageClass};
use md5::{Digest, Md5};
use s3s::dto::StreamingBlob;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::context::Ctx;
use crate::data::checksum::ChecksumPlan;
use crate::data::gc;
use crate::error::{body_error, GwError, GwResult};
use crate::meta::now_ms;
use crate::metrics;

/// Blocks queued per replica before the body reader waits.
const WINDOW: usize = 4;
/// A replica that accepts no block for this long is dropped from the write.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for a replica to make its fragment durable after the last block.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

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
}

/// A body that is either inline or durable on a write quorum, not yet referenced.
#[derive(Debug)]
pub struct Written {
    pub inline: Option<Bytes>,
    pub location: Option<DataLocation>,
    pub size: u64,
    pub md5: [u8; 16],
    pub checksums: BTreeMap<String, String>,
}

impl Written {
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

/// Decodes a Content-MD5 header.
pub fn parse_content_md5(v: &str) -> GwResult<[u8; 16]> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|_| GwError::InvalidDigest("Content-MD5 is not valid base64".into()))?;
    raw.try_into()
        .map_err(|_| GwError::InvalidDigest("Content-MD5 is not 16 bytes".into()))
}

/// Streams `body` to the data nodes (or keeps it inline) and returns it.
pub async fn write_body(
    ctx: &Arc<Ctx>,
    spec: WriteSpec<'_>,
    mut body: StreamingBlob,
) -> GwResult<Written> {
    if spec.content_length.is_some_and(|l| l > spec.max_size) {
        return Err(GwError::EntityTooLarge);
    }
    let expected_md5 = spec.content_md5.map(parse_content_md5).transpose()?;
    let mut checks = spec.checksums;
    let mut md5 = Md5::new();
    let mut splitter = BlockSplitter::new(ctx.block_size);
    let mut blocks: Vec<Bytes> = Vec::new();
    let mut size: u64 = 0;
    let mut fanout: Option<Fanout> = None;

    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(body_error)?;
        size += chunk.len() as u64;
        if size > spec.max_size {
            return Err(GwError::EntityTooLarge);
        }
        metrics::add_bytes_in(chunk.len() as u64);
        md5.update(&chunk);
        checks.update(&chunk);
        splitter.push(chunk, &mut blocks);
        if fanout.is_none() && size > ctx.inline_threshold as u64 {
            fanout = Some(Fanout::start(ctx, &spec.owner).await?);
        }
        if let Some(f) = fanout.as_mut() {
            for b in blocks.drain(..) {
                f.send(b).await?;
            }
        }
    }

    if spec.content_length.is_some_and(|l| l != size) {
        return Err(GwError::IncompleteBody);
    }
    let md5: [u8; 16] = md5.finalize().into();
    if expected_md5.is_some_and(|e| e != md5) {
        return Err(GwError::BadDigest(
            "The Content-MD5 you specified did not match what we received.".into(),
        ));
    }
    let checksums = checks.finish()?;

    match fanout {
        None => {
            let mut inline = BytesMut::with_capacity(size as usize);
            for b in blocks {
                inline.extend_from_slice(&b);
            }
            if let Some(rest) = splitter.finish() {
                inline.extend_from_slice(&rest);
            }
            Ok(Written {
                inline: Some(inline.freeze()),
                location: None,
                size,
                md5,
                checksums,
            })
        }
        Some(mut f) => {
            if let Some(last) = splitter.finish() {
                f.send(last).await?;
            }
            let mut location = f.finish(size).await?;
            location.size = size;
            Ok(Written {
                inline: None,
                location: Some(location),
                size,
                md5,
                checksums,
            })
        }
    }
}

type PutResult = Result<PutFragmentResponse, DataNodeError>;

struct Replica {
    shard: u32,
    addr: Option<String>,
    tx: Option<mpsc::Sender<Bytes>>,
    task: Option<JoinHandle<PutResult>>,
}

/// The fragment streams of one body. Dropping it before `finish` succeeded
/// aborts the streams and deletes whatever the nodes stored.
struct Fanout {
    ctx: Arc<Ctx>,
    location: DataLocation,
    replicas: Vec<Replica>,
    quorum: usize,
    armed: bool,
}

impl Fanout {
    async fn start(ctx: &Arc<Ctx>, owner: &BodyOwner) -> GwResult<Fanout> {
        let view = ctx.placement.get().await?;
        let (k, m) = (view.data_shards as usize, view.parity_shards as usize);
        if k != 1 {
            return Err(GwError::Unavailable(format!(
                "placement map uses {k}+{m} erasure coding, which this gateway cannot write yet"
            )));
        }
        let data_id: [u8; 16] = rand::random();
        let group = view
            .pick_group(&data_id)
            .ok_or_else(|| GwError::Unavailable("placement map has no groups".into()))?
            .clone();
        let quorum = ctx.quorum(k, m);
        let live = group.nodes.iter().filter(|n| n.is_some()).count();
        if group.nodes.len() != k + m || live < quorum {
            ctx.placement.refresh_soon().await;
            return Err(GwError::Unavailable(format!(
                "placement group {} has {live} reachable nodes",
                group.id
            )));
        }
        let location = DataLocation {
            data_id: Bytes::copy_from_slice(&data_id),
            pg: group.id,
            storage_class: StorageClass::Replica3 as i32,
            size: 0,
            block_size: ctx.block_size as u32,
            data_shards: k as u32,
            parity_shards: m as u32,
        };
        let created = now_ms();
        let mut replicas = Vec::with_capacity(group.nodes.len());
        for (i, addr) in group.nodes.iter().enumerate() {
            let shard = i as u32;
            let Some(addr) = addr.clone() else {
                replicas.push(Replica {
                    shard,
                    addr: None,
                    tx: None,
                    task: None,
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
                block_size: ctx.block_size as u32,
                pg: group.id,
                created_unix_ms: created,
            };
            let (tx, rx) = mpsc::channel::<Bytes>(WINDOW);
            let blocks =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
                );
            let data = ctx.data.clone();
            let node = addr.clone();
            let task = tokio::spawn(async move { data.put_fragment(&node, header, blocks).await });
            replicas.push(Replica {
                shard,
                addr: Some(addr),
                tx: Some(tx),
                task: Some(task),
            });
        }
        Ok(Fanout {
            ctx: ctx.clone(),
            location,
            replicas,
            quorum,
            armed: true,
        })
    }

    fn live(&self) -> usize {
        self.replicas.iter().filter(|r| r.tx.is_some()).count()
    }

    /// Sends one block to every live replica; drops replicas that failed or stalled.
    async fn send(&mut self, block: Bytes) -> GwResult<()> {
        let sends = self.replicas.iter_mut().filter(|r| r.tx.is_some()).map(|r| {
            let block = block.clone();
            async move {
                let ok = match r.tx.as_ref() {
                    Some(tx) => matches!(tokio::time::timeout(SEND_TIMEOUT, tx.send(block)).await, Ok(Ok(()))),
                    None => false,
                };
                if !ok {
                    r.tx = None;
                    let why = match r.task.take() {
                        Some(t) if t.is_finished() => match t.await {
                            Ok(Err(e)) => e.to_string(),
                            Ok(Ok(_)) => "finished early".to_string(),
                            Err(e) => e.to_string(),
                        },
                        Some(t) => {
                            t.abort();
                            "stalled".to_string()
                        }
                        None => "no task".to_string(),
                    };
                    tracing::warn!(shard = r.shard, node = ?r.addr, error = %why, "replica dropped from write");
                }
            }
        });
        futures::future::join_all(sends).await;
        if self.live() < self.quorum {
            self.ctx.placement.refresh_soon().await;
            return Err(GwError::Unavailable(format!(
                "write quorum lost: {} of {} replicas left, {} needed",
                self.live(),
                self.replicas.len(),
                self.quorum
            )));
        }
        Ok(())
    }

    /// Ends the streams and waits until `quorum` replicas stored `size` bytes durably.
    async fn finish(mut self, size: u64) -> GwResult<DataLocation> {
        for r in &mut self.replicas {
            r.tx = None;
        }
        let mut pending: FuturesUnordered<_> = self
            .replicas
            .iter_mut()
            .filter_map(|r| {
                let shard = r.shard;
                r.task
                    .take()
                    .map(|t| async move { (shard, tokio::time::timeout(FINISH_TIMEOUT, t).await) })
            })
            .collect();
        let mut acked = 0usize;
        let mut errors = Vec::new();
        while acked < self.quorum {
            let Some((shard, res)) = pending.next().await else {
                break;
            };
            match res {
                Ok(Ok(Ok(resp))) if resp.length == size => acked += 1,
                Ok(Ok(Ok(resp))) => errors.push(format!(
                    "shard {shard}: stored {} of {size} bytes",
                    resp.length
                )),
                Ok(Ok(Err(e))) => errors.push(format!("shard {shard}: {e}")),
                Ok(Err(e)) => errors.push(format!("shard {shard}: task {e}")),
                Err(_) => errors.push(format!("shard {shard}: timed out")),
            }
        }
        if acked < self.quorum {
            return Err(GwError::Unavailable(format!(
                "write quorum not reached ({acked} of {} needed): {}",
                self.quorum,
                errors.join("; ")
            )));
        }
        for e in &errors {
            tracing::warn!(error = %e, "replica write failed; body is under-replicated until healed");
        }
        // Stragglers finish on their own; their outcome only matters for healing.
        if !pending.is_empty() {
            tokio::spawn(async move {
                while let Some((shard, res)) = pending.next().await {
                    if !matches!(res, Ok(Ok(Ok(_)))) {
                        tracing::warn!(
                            shard,
                            "late replica write failed; body is under-replicated until healed"
                        );
                    }
                }
            });
        }
        self.armed = false;
        Ok(self.location.clone())
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            r.tx = None;
            if let Some(t) = r.task.take() {
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
