//! Raft message transport between stores, and store address resolution.
//!
//! One long-lived `Raft` client stream per peer store, run by a tokio task.
//! The raftstore thread only buffers messages during a poll round and hands
//! each store's batch to its task with `try_send` at the end of the round, so
//! a slow or dead peer never blocks the poll loop: its messages are dropped
//! (raft retries) and the peers on it are reported unreachable.
//!
//! Snapshots do not go on that stream: each is sent by its own task over the
//! `Snapshot` call (the message, then the file in 1 MiB chunks; at most
//! `snap::MAX_SENDING` at once), and its outcome comes back to raft as a
//! `StoreMsg::SnapshotSent` (decision 0018).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kura_pd_client::channel::lazy_channel;
use kura_pd_client::PdClient;
use kura_proto::common::Region;
use kura_proto::metashard::metashard_client::MetashardClient;
use kura_proto::metashard::{RaftMessage, RaftMessageBatch, RegionStatusRequest, SnapshotChunk};
use tokio::sync::mpsc;

use crate::fsm::{Router, StoreMsg};
use crate::metrics;
use crate::snap::{self, SnapError, SnapManager};

pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// Maps a store id to its gRPC address.
pub trait StoreResolver: Send + Sync + 'static {
    fn resolve(&self, store_id: u64) -> ResolveFuture<'_>;
    /// The address of `store_id` may have changed (connection failed).
    fn invalidate(&self, store_id: u64);
}

/// Fixed addresses, for tests and static deployments.
#[derive(Default)]
pub struct StaticResolver {
    addrs: RwLock<HashMap<u64, String>>,
}

impl StaticResolver {
    pub fn new(addrs: HashMap<u64, String>) -> Self {
        StaticResolver {
            addrs: RwLock::new(addrs),
        }
    }

    pub fn set(&self, store_id: u64, addr: String) {
        self.addrs
            .write()
            .expect("resolver lock poisoned")
            .insert(store_id, addr);
    }
}

impl StoreResolver for StaticResolver {
    fn resolve(&self, store_id: u64) -> ResolveFuture<'_> {
        let r = self
            .addrs
            .read()
            .expect("resolver lock poisoned")
            .get(&store_id)
            .cloned();
        Box::pin(async move { r.ok_or_else(|| format!("store {store_id} unknown")) })
    }

    fn invalidate(&self, _store_id: u64) {}
}

/// Addresses from PD's store list, cached and refreshed on a miss or invalidation.
pub struct PdStoreResolver {
    pd: PdClient,
    cache: RwLock<HashMap<u64, String>>,
}

impl PdStoreResolver {
    pub fn new(pd: PdClient) -> Self {
        PdStoreResolver {
            pd,
            cache: RwLock::new(HashMap::new()),
        }
    }
}

impl StoreResolver for PdStoreResolver {
    fn resolve(&self, store_id: u64) -> ResolveFuture<'_> {
        Box::pin(async move {
            if let Some(a) = self
                .cache
                .read()
                .expect("resolver lock poisoned")
                .get(&store_id)
            {
                return Ok(a.clone());
            }
            let stores = self.pd.get_stores().await.map_err(|e| e.to_string())?;
            let mut cache = self.cache.write().expect("resolver lock poisoned");
            for s in stores {
                if !s.address.is_empty() {
                    cache.insert(s.id, s.address);
                }
            }
            cache
                .get(&store_id)
                .cloned()
                .ok_or_else(|| format!("PD does not know store {store_id}"))
        })
    }

    fn invalidate(&self, store_id: u64) {
        self.cache
            .write()
            .expect("resolver lock poisoned")
            .remove(&store_id);
    }
}

/// A message waiting for the end of the poll round.
struct Outgoing {
    msg: RaftMessage,
    to_peer: u64,
}

/// What happened to a message the poller must tell raft about.
#[derive(Debug)]
pub struct Delivery {
    pub region_id: u64,
    pub to_peer: u64,
    pub is_snapshot: bool,
    pub delivered: bool,
}

/// Owned by the raftstore thread.
pub struct Transport {
    resolver: Arc<dyn StoreResolver>,
    runtime: tokio::runtime::Handle,
    router: Router,
    conns: HashMap<u64, mpsc::Sender<RaftMessageBatch>>,
    pending: HashMap<u64, Vec<Outgoing>>,
    snap: Arc<SnapManager>,
}

/// Batches queued per peer store before messages are dropped.
const STORE_QUEUE: usize = 256;

impl Transport {
    pub fn new(
        resolver: Arc<dyn StoreResolver>,
        runtime: tokio::runtime::Handle,
        router: Router,
        snap: Arc<SnapManager>,
    ) -> Self {
        Transport {
            resolver,
            runtime,
            router,
            conns: HashMap::new(),
            pending: HashMap::new(),
            snap,
        }
    }

    /// Buffers `msg` for `to_store` until [`Transport::flush`]; a snapshot
    /// starts its own send task at once.
    pub fn send(&mut self, msg: RaftMessage, to_peer: u64, is_snapshot: bool) {
        if is_snapshot {
            self.runtime.spawn(send_snapshot(
                msg,
                to_peer,
                self.resolver.clone(),
                self.snap.clone(),
                self.router.clone(),
            ));
            return;
        }
        self.pending
            .entry(msg.to_store)
            .or_default()
            .push(Outgoing { msg, to_peer });
    }

    /// Asks `from_store` for its own view of `region_id` (a tombstone from it
    /// is acted on only as that view says); the answer comes back as
    /// `StoreMsg::TombstoneChecked`.
    pub fn check_tombstone(&self, region_id: u64, from_store: u64) {
        let resolver = self.resolver.clone();
        let router = self.router.clone();
        self.runtime.spawn(async move {
            let region = tokio::time::timeout(
                TOMBSTONE_CHECK_TIMEOUT,
                ask_region(resolver.as_ref(), from_store, region_id),
            )
            .await
            .ok()
            .flatten();
            let _ = router.send(StoreMsg::TombstoneChecked {
                region_id,
                from_store,
                region,
            });
        });
    }

    /// Hands every buffered message to its store's stream task. Returns the
    /// dropped messages, which raft must hear about.
    pub fn flush(&mut self) -> Vec<Delivery> {
        let mut reports = Vec::new();
        for (store_id, outs) in self.pending.drain() {
            if outs.is_empty() {
                continue;
            }
            let tx = self.conns.entry(store_id).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(STORE_QUEUE);
                self.runtime.spawn(stream_to_store(
                    store_id,
                    self.resolver.clone(),
                    rx,
                    self.router.clone(),
                ));
                tx
            });
            for outs in split_by_size(outs, MAX_BATCH_BYTES) {
                let meta: Vec<(u64, u64)> =
                    outs.iter().map(|o| (o.msg.region_id, o.to_peer)).collect();
                let n = outs.len() as u64;
                let batch = RaftMessageBatch {
                    msgs: outs.into_iter().map(|o| o.msg).collect(),
                };
                let delivered = tx.try_send(batch).is_ok();
                metrics::RAFT_MESSAGES
                    .with_label_values(&[if delivered { "sent" } else { "dropped" }])
                    .inc_by(n);
                if !delivered {
                    reports.extend(meta.into_iter().map(|(region_id, to_peer)| Delivery {
                        region_id,
                        to_peer,
                        is_snapshot: false,
                        delivered,
                    }));
                }
            }
        }
        reports
    }
}

/// A round's messages to one store go out in batches of about this many
/// encoded bytes (one message, up to an 8 MiB entry and 1 MiB of others,
/// may pass it alone), so receivers can cap what they decode
/// ([`MAX_RAFT_DECODE_BYTES`]) without refusing a busy round.
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// The most a metashard's server decodes of one gRPC message: a raft batch
/// (at most [`MAX_BATCH_BYTES`] plus one message), a client batch (8 MiB)
/// or a snapshot chunk (1 MiB) all fit; a peer claiming more is refused
/// before its bytes are gathered.
pub const MAX_RAFT_DECODE_BYTES: usize = 64 << 20;

/// `outs` in order, cut into runs whose messages' encoded sizes add up to at
/// most `max` (a message larger than `max` makes a run of its own).
fn split_by_size(outs: Vec<Outgoing>, max: usize) -> Vec<Vec<Outgoing>> {
    use prost::Message;
    let mut runs: Vec<Vec<Outgoing>> = Vec::new();
    let mut size = 0usize;
    for o in outs {
        let len = o.msg.encoded_len();
        match runs.last_mut() {
            Some(run) if size.saturating_add(len) <= max => {
                size += len;
                run.push(o);
            }
            _ => {
                size = len;
                runs.push(vec![o]);
            }
        }
    }
    runs
}

/// Keeps one `Raft` client stream open to `store_id`, reconnecting on error.
async fn stream_to_store(
    store_id: u64,
    resolver: Arc<dyn StoreResolver>,
    mut rx: mpsc::Receiver<RaftMessageBatch>,
    router: Router,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let addr = match resolver.resolve(store_id).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(store_id, error = %e, "cannot resolve peer store");
                if !drop_for(&mut rx, backoff, &router, store_id).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let channel = match lazy_channel(&addr) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(store_id, %addr, error = %e, "bad peer store address");
                resolver.invalidate(store_id);
                if !drop_for(&mut rx, backoff, &router, store_id).await {
                    return;
                }
                continue;
            }
        };
        let mut client = MetashardClient::new(channel);
        let (tx, inner_rx) = mpsc::channel::<RaftMessageBatch>(STORE_QUEUE);
        let call = client.raft(tokio_stream::wrappers::ReceiverStream::new(inner_rx));
        tokio::pin!(call);
        let mut sent_any = false;
        loop {
            tokio::select! {
                res = &mut call => {
                    if let Err(e) = res {
                        tracing::debug!(store_id, %addr, error = %e, "raft stream to peer store ended");
                    }
                    break;
                }
                b = rx.recv() => match b {
                    None => return,
                    Some(b) => {
                        if tx.try_send(b).is_err() {
                            metrics::RAFT_MESSAGES.with_label_values(&["dropped"]).inc();
                            let _ = router.send(StoreMsg::StoreUnreachable { store_id });
                        } else {
                            sent_any = true;
                        }
                    }
                },
            }
        }
        if sent_any {
            backoff = Duration::from_millis(100);
        }
        resolver.invalidate(store_id);
        let _ = router.send(StoreMsg::StoreUnreachable { store_id });
        if !drop_for(&mut rx, backoff, &router, store_id).await {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Drops messages for `d` (the peer is unreachable); false when the transport is gone.
async fn drop_for(
    rx: &mut mpsc::Receiver<RaftMessageBatch>,
    d: Duration,
    router: &Router,
    store_id: u64,
) -> bool {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return true,
            Ok(None) => return false,
            Ok(Some(b)) => {
                metrics::RAFT_MESSAGES
                    .with_label_values(&["dropped"])
                    .inc_by(b.msgs.len() as u64);
                let _ = router.send(StoreMsg::StoreUnreachable { store_id });
            }
        }
    }
}

/// How long the sender of a tombstone has to confirm it.
const TOMBSTONE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The region as `store_id` itself hosts it, asked at the address PD has for
/// that store: a forger would have to be that store, not just name it.
async fn ask_region(resolver: &dyn StoreResolver, store_id: u64, region_id: u64) -> Option<Region> {
    let addr = resolver.resolve(store_id).await.ok()?;
    let mut client = MetashardClient::new(lazy_channel(&addr).ok()?);
    let resp = client
        .region_status(RegionStatusRequest { region_id })
        .await
        .ok()?
        .into_inner();
    resp.status?.region.filter(|r| r.id == region_id)
}

/// A whole snapshot transfer may take this long before raft hears "failed".
const SNAPSHOT_SEND_TIMEOUT: Duration = Duration::from_secs(600);

/// Sends one snapshot over the `Snapshot` call (waiting for a send slot),
/// then tells raft how it went.
async fn send_snapshot(
    msg: RaftMessage,
    to_peer: u64,
    resolver: Arc<dyn StoreResolver>,
    snap: Arc<SnapManager>,
    router: Router,
) {
    let (region_id, store_id) = (msg.region_id, msg.to_store);
    let Ok(_permit) = snap.send_limit.clone().acquire_owned().await else {
        return;
    };
    let started = std::time::Instant::now();
    let res = tokio::time::timeout(
        SNAPSHOT_SEND_TIMEOUT,
        stream_snapshot(msg, resolver.as_ref(), &snap),
    )
    .await
    .unwrap_or_else(|_| Err(SnapError::Io("timed out".into())));
    let ok = match res {
        Ok(bytes) => {
            metrics::SNAPSHOTS_SENT.inc();
            metrics::SNAPSHOT_BYTES
                .with_label_values(&["sent"])
                .inc_by(bytes);
            metrics::SNAPSHOT_DURATION
                .with_label_values(&["send"])
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(region_id, store_id, bytes, "snapshot sent");
            true
        }
        Err(e) => {
            tracing::warn!(region_id, store_id, error = %e, "snapshot send failed");
            if matches!(e, SnapError::Io(_)) {
                resolver.invalidate(store_id);
            }
            false
        }
    };
    metrics::SNAPSHOT_TRANSFERS
        .with_label_values(&["send", if ok { "ok" } else { "failed" }])
        .inc();
    let _ = router.send(StoreMsg::SnapshotSent {
        region_id,
        to_peer,
        ok,
    });
}

/// The message, then the file in [`snap::CHUNK_SIZE`] pieces read as they
/// go (never the whole file in memory). Returns the file bytes sent.
async fn stream_snapshot(
    msg: RaftMessage,
    resolver: &dyn StoreResolver,
    snap: &SnapManager,
) -> Result<u64, SnapError> {
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;

    let desc = snap::descriptor_of_message(&msg.message)?;
    let path = snap.gen_path(&desc);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| SnapError::Io(format!("{}: {e}", path.display())))?;
    let addr = resolver
        .resolve(msg.to_store)
        .await
        .map_err(SnapError::Io)?;
    let channel = lazy_channel(&addr).map_err(|e| SnapError::Io(e.to_string()))?;
    let mut client = MetashardClient::new(channel);
    let first = SnapshotChunk {
        message: Some(msg),
        data: Default::default(),
    };
    // A read error ends the stream early: the receiver sees too few bytes
    // and rejects the snapshot.
    let rest = futures::stream::unfold(Some(file), |file| async move {
        let mut f = file?;
        let mut buf = vec![0u8; snap::CHUNK_SIZE];
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]).await {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => {
                    tracing::warn!(error = %e, "reading a snapshot file failed");
                    return None;
                }
            }
        }
        if n == 0 {
            return None;
        }
        buf.truncate(n);
        Some((
            SnapshotChunk {
                message: None,
                data: buf.into(),
            },
            Some(f),
        ))
    });
    let stream = futures::stream::iter([first]).chain(rest);
    client.snapshot(stream).await.map_err(|s| match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::DataLoss => {
            SnapError::Corrupt(s.message().to_string())
        }
        _ => SnapError::Io(s.to_string()),
    })?;
    Ok(desc.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_by_encoded_size_in_order() {
        let out = |region_id: u64, payload: usize| Outgoing {
            msg: RaftMessage {
                region_id,
                message: vec![7u8; payload].into(),
                ..Default::default()
            },
            to_peer: region_id,
        };
        let outs = vec![
            out(1, 600),
            out(2, 600),
            out(3, 5000),
            out(4, 10),
            out(5, 10),
        ];
        let runs = split_by_size(outs, 1500);
        let ids: Vec<Vec<u64>> = runs
            .iter()
            .map(|r| r.iter().map(|o| o.msg.region_id).collect())
            .collect();
        // 1 and 2 fit together; 3 is over the cap alone; 4 and 5 follow it.
        assert_eq!(ids, vec![vec![1, 2], vec![3], vec![4, 5]]);
        assert!(split_by_size(Vec::new(), 1500).is_empty());
    }
}
