//! Reading a stored body stripe by stripe from its fragments, with
//! reconstruction.
//!
//! For each stripe the reader fetches only the data blocks the requested range
//! needs, one gRPC block stream per fragment (opened once, then consumed in
//! order, so the nodes stream ahead); a single small block (a body of up to a
//! quarter stripe at k = 4) is one call on the node's block stream instead
//! (decision 0059). A fragment that fails, stalls for
//! `BLOCK_TIMEOUT`, returns a block of the wrong length or is missing is
//! dropped for the rest of the read, and the stripe is completed from any k
//! surviving fragments (parity first in line) and decoded. Blocks arrive
//! CRC32C-verified by the data node client, so corrupt fragments surface here
//! as errors and are treated like missing ones. With fewer than k fragments
//! left, the read fails with 503: never wrong bytes.
//!
//! REPLICA3 (k = 1) takes the same path: the first block source is a random
//! copy, the others are the "parity".

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use kura_datanode::calls::MAX_CALL_READ_BLOCK;
use kura_datanode::client::DataNodeError;
use kura_datanode::ec::{Codec, Layout};
use kura_proto::datanode::FragmentId;
use kura_proto::meta::DataLocation;

use crate::context::Ctx;
use crate::error::{GwError, GwResult};
use crate::metrics;
use crate::placement::{stored_class, GroupView};

/// A fragment that yields no block for this long is read around.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// ... or for this long while other fragments could stand in for it: reading
/// around costs a parity read and a decode, waiting on a hung (SIGSTOPped)
/// node costs the client the whole wait.
const STALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A node that failed to answer is skipped by reads for this long.
pub const SUSPECT_FOR: Duration = Duration::from_secs(3);

type BlockStream = BoxStream<'static, Result<Bytes, DataNodeError>>;

/// An open block stream of one fragment, positioned at stripe `next`.
struct Cursor {
    next: u64,
    /// Last stripe the stream was opened for.
    end: u64,
    stream: BlockStream,
}

/// The fragments of one body as seen by one read.
pub struct StripeReader<'a> {
    ctx: &'a Ctx,
    loc: &'a DataLocation,
    pub layout: Layout,
    codec: Codec,
    group: Option<GroupView>,
    refreshed: bool,
    /// Fragments given up on for this read.
    dead: BTreeSet<usize>,
    cursors: HashMap<usize, Cursor>,
    /// k = 1: the copy read first.
    first_copy: usize,
    last_error: String,
}

impl<'a> StripeReader<'a> {
    pub fn new(ctx: &'a Ctx, loc: &'a DataLocation) -> GwResult<Self> {
        let layout = Layout {
            data_shards: loc.data_shards,
            parity_shards: loc.parity_shards,
            block_size: loc.block_size,
            size: loc.size,
        };
        if loc.block_size == 0 || loc.data_shards == 0 {
            return Err(GwError::Internal("unreadable data location".into()));
        }
        let codec = Codec::new(layout.k(), layout.m())
            .map_err(|e| GwError::Internal(format!("data location: {e}")))?;
        Ok(StripeReader {
            ctx,
            loc,
            layout,
            codec,
            group: None,
            refreshed: false,
            dead: BTreeSet::new(),
            cursors: HashMap::new(),
            first_copy: rand::random::<u32>() as usize % layout.width(),
            last_error: String::from("no fragment reachable"),
        })
    }

    async fn load_group(&mut self) -> GwResult<()> {
        if self.group.is_some() {
            return Ok(());
        }
        let view = self.ctx.placement.get().await?;
        let group = view.group_of(self.loc).cloned();
        match group {
            Some(g) if g.nodes.len() == self.layout.width() => {
                // Start without nodes that just failed to answer, if k others remain.
                let suspects: Vec<usize> = (0..g.nodes.len())
                    .filter(|i| {
                        g.nodes[*i]
                            .as_deref()
                            .is_some_and(|a| self.ctx.data.is_suspect(a))
                    })
                    .collect();
                if g.nodes.len() - suspects.len() >= self.layout.k() {
                    self.dead.extend(suspects);
                }
                self.group = Some(g);
                Ok(())
            }
            _ => Err(GwError::Unavailable(format!(
                "placement group {} of {} unknown",
                self.loc.pg,
                stored_class(self.loc).as_str_name()
            ))),
        }
    }

    /// The fragments to read stripe `s` from, given the data shards it needs:
    /// those shards if all are alive, else any k alive fragments (the needed
    /// ones first, then other data, then parity).
    fn choose(&self, needed: &[usize]) -> Option<Vec<usize>> {
        let (k, width) = (self.layout.k(), self.layout.width());
        let alive = |i: &usize| !self.dead.contains(i);
        if k == 1 {
            return (0..width)
                .map(|j| (self.first_copy + j) % width)
                .find(alive)
                .map(|i| vec![i]);
        }
        if needed.iter().all(alive) {
            return Some(needed.to_vec());
        }
        let mut pick: Vec<usize> = needed.iter().copied().filter(alive).collect();
        for i in 0..width {
            if pick.len() >= k {
                break;
            }
            if alive(&i) && !pick.contains(&i) {
                pick.push(i);
            }
        }
        (pick.len() >= k).then_some(pick)
    }

    /// How long to wait on one of `pick` before reading around it: short
    /// while fragments outside `pick` are still alive to replace it.
    fn patience(&self, pick: &[usize]) -> Duration {
        let alive = self.layout.width() - self.dead.len();
        if alive > pick.len() {
            STALL_TIMEOUT
        } else {
            BLOCK_TIMEOUT
        }
    }

    /// Opens (or reuses) the stream of fragment `i` positioned at stripe `s`,
    /// reading up to stripe `end`, waiting at most `patience` for the node.
    async fn cursor(&mut self, i: usize, s: u64, end: u64, patience: Duration) -> bool {
        if self
            .cursors
            .get(&i)
            .is_some_and(|c| c.next == s && s <= c.end)
        {
            return true;
        }
        self.cursors.remove(&i);
        let Some(addr) = self.group.as_ref().and_then(|g| g.nodes[i].clone()) else {
            self.fail(i, "node address unknown".into());
            return false;
        };
        let id = FragmentId {
            data_id: self.loc.data_id.clone(),
            shard: i as u32,
        };
        let count = (end - s + 1) as u32;
        if count == 1 && self.layout.shard_len(s) <= MAX_CALL_READ_BLOCK as u64 {
            // One block (a body of one stripe, a short range): one call on
            // the node's block stream, sent when the block is first awaited, so
            // the fragments of a stripe are asked for together (decision 0059).
            let data = self.ctx.data.clone();
            let block =
                futures::stream::once(async move { data.get_block(&addr, id, s as u32).await });
            let stream = block.boxed();
            self.cursors.insert(
                i,
                Cursor {
                    next: s,
                    end,
                    stream,
                },
            );
            return true;
        }
        let open = tokio::time::timeout(
            patience,
            self.ctx.data.get_fragment(&addr, id, s as u32, count),
        )
        .await;
        match open {
            Ok(Ok(stream)) => {
                self.cursors.insert(
                    i,
                    Cursor {
                        next: s,
                        end,
                        stream,
                    },
                );
                true
            }
            Ok(Err(e)) => {
                if e.is_unresponsive() {
                    self.ctx.data.mark_suspect(&addr, SUSPECT_FOR);
                }
                self.fail(i, format!("{addr}: {e}"));
                false
            }
            Err(_) => {
                self.ctx.data.mark_suspect(&addr, SUSPECT_FOR);
                self.fail(i, format!("{addr}: no answer for {patience:?}"));
                false
            }
        }
    }

    fn fail(&mut self, i: usize, why: String) {
        tracing::warn!(shard = i, error = %why, "fragment unreadable; reading around it");
        self.last_error = format!("shard {i}: {why}");
        self.dead.insert(i);
        self.cursors.remove(&i);
    }

    /// Block `s` of fragment `i` through its cursor; checks the length.
    /// Errors say why and whether the node itself stopped answering.
    async fn next_block(
        cursor: &mut Cursor,
        want: u64,
        patience: Duration,
    ) -> Result<Bytes, (String, bool)> {
        match tokio::time::timeout(patience, cursor.stream.next()).await {
            Ok(Some(Ok(b))) if b.len() as u64 == want => {
                cursor.next += 1;
                Ok(b)
            }
            Ok(Some(Ok(b))) => Err((format!("block has {} bytes, want {want}", b.len()), false)),
            Ok(Some(Err(e))) => {
                let gone = e.is_unresponsive();
                Err((e.to_string(), gone))
            }
            Ok(None) => Err(("stream ended early".into(), false)),
            Err(_) => Err((format!("no block for {patience:?}"), true)),
        }
    }

    /// The data blocks of stripe `s` that hold bytes of [start, end), as
    /// (data shard, block). `spans` is `layout.shard_stripe_spans(start, end)`.
    pub async fn read_stripe(
        &mut self,
        s: u64,
        start: u64,
        end: u64,
        spans: &[Option<(u64, u64)>],
    ) -> GwResult<Vec<(usize, Bytes)>> {
        self.load_group().await?;
        let width = self.layout.width();
        let last = self.layout.num_stripes().saturating_sub(1);
        let needed = self.layout.needed_shards(s, start, end);
        let want_len = self.layout.shard_len(s);
        let mut got: Vec<Option<Bytes>> = vec![None; width];
        let mut degraded = false;
        loop {
            let Some(pick) = self.choose(&needed) else {
                if !self.refreshed {
                    // The map may have moved members: try once more with a fresh one.
                    self.refreshed = true;
                    self.ctx.placement.refresh_soon().await;
                    self.group = None;
                    self.dead.clear();
                    self.cursors.clear();
                    got = vec![None; width];
                    self.load_group().await?;
                    continue;
                }
                return Err(GwError::Unavailable(format!(
                    "fewer than {} fragments of the object are readable: {}",
                    self.layout.k(),
                    self.last_error
                )));
            };
            let patience = self.patience(&pick);
            let todo: Vec<usize> = pick.into_iter().filter(|i| got[*i].is_none()).collect();
            for &i in &todo {
                let end_stripe = match spans.get(i).copied().flatten() {
                    Some((_, hi)) if hi >= s && self.layout.k() > 1 => hi,
                    _ => last,
                };
                self.cursor(i, s, end_stripe, patience).await;
            }
            let mut fetches = Vec::new();
            for (i, c) in self.cursors.iter_mut() {
                if todo.contains(i) && got[*i].is_none() {
                    let i = *i;
                    fetches.push(async move { (i, Self::next_block(c, want_len, patience).await) });
                }
            }
            for (i, res) in futures::future::join_all(fetches).await {
                match res {
                    Ok(b) => got[i] = Some(b),
                    Err((why, gone)) => {
                        if gone {
                            if let Some(addr) = self.group.as_ref().and_then(|g| g.nodes[i].clone())
                            {
                                self.ctx.data.mark_suspect(&addr, SUSPECT_FOR);
                            }
                        }
                        self.fail(i, why);
                        degraded = true;
                    }
                }
            }
            if needed.iter().all(|&i| got[i].is_some()) {
                break;
            }
            if got.iter().filter(|b| b.is_some()).count() >= self.layout.k() {
                if degraded || self.layout.k() > 1 {
                    metrics::reconstructed_stripe();
                }
                self.codec
                    .reconstruct_data(&mut got)
                    .map_err(|e| GwError::Internal(format!("reconstruction failed: {e}")))?;
                break;
            }
        }
        // Cursors not used for this stripe fall behind; they reopen if needed.
        Ok(needed
            .into_iter()
            .filter_map(|i| got[i].take().map(|b| (i, b)))
            .collect())
    }
}
