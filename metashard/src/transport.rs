//! Raft message transport between stores, and store address resolution.
//!
//! One long-lived `Raft` client stream per peer store, run by a tokio task.
//! The raftstore thread only buffers messages during a poll round and hands
//! each store's batch to its task with `try_send` at the end of the round, so
//! a slow or dead peer never blocks the poll loop: its messages are dropped
//! (raft retries) and the peers on it are reported unreachable.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kura_pd_client::channel::lazy_channel;
use kura_pd_client::PdClient;
use kura_proto::metashard::metashard_client::MetashardClient;
use kura_proto::metashard::{RaftMessage, RaftMessageBatch};
use tokio::sync::mpsc;

use crate::fsm::{Router, StoreMsg};
use crate::metrics;

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
    is_snapshot: bool,
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
}

/// Batches queued per peer store before messages are dropped.
const STORE_QUEUE: usize = 256;

impl Transport {
    pub fn new(
        resolver: Arc<dyn StoreResolver>,
        runtime: tokio::runtime::Handle,
        router: Router,
    ) -> Self {
        Transport {
            resolver,
            runtime,
            router,
            conns: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// Buffers `msg` for `to_store` until [`Transport::flush`].
    pub fn send(&mut self, msg: RaftMessage, to_peer: u64, is_snapshot: bool) {
        self.pending
            .entry(msg.to_store)
            .or_default()
            .push(Outgoing {
                msg,
                to_peer,
                is_snapshot,
            });
    }

    /// Hands every buffered message to its store's stream task. Returns the
    /// dropped messages and the snapshots, which raft must hear about.
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
            let meta: Vec<(u64, u64, bool)> = outs
                .iter()
                .map(|o| (o.msg.region_id, o.to_peer, o.is_snapshot))
                .collect();
            let n = outs.len() as u64;
            let batch = RaftMessageBatch {
                msgs: outs.into_iter().map(|o| o.msg).collect(),
            };
            let delivered = tx.try_send(batch).is_ok();
            metrics::RAFT_MESSAGES
                .with_label_values(&[if delivered { "sent" } else { "dropped" }])
                .inc_by(n);
            for (region_id, to_peer, is_snapshot) in meta {
                if is_snapshot || !delivered {
                    reports.push(Delivery {
                        region_id,
                        to_peer,
                        is_snapshot,
                        delivered,
                    });
                }
            }
        }
        reports
    }
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
