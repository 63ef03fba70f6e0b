//! The harness: a PD that only routes, three stores, and the helpers the tests share.

pub(crate) use std::collections::HashMap;
pub(crate) use std::net::SocketAddr;
pub(crate) use std::sync::{Arc, Mutex};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use kura_metashard::client::{condition, mutation, Cf, Condition, Mutation};
pub(crate) use kura_metashard::engine::Engine;
pub(crate) use kura_metashard::peer::RaftConfig;
pub(crate) use kura_metashard::{BatchOutcome, MetaClient, PdStoreResolver, Store, StoreOptions};
pub(crate) use kura_pd_client::{PdClient, RegionCache};
pub(crate) use kura_proto::common::{Peer, Region, RegionEpoch};
pub(crate) use kura_proto::metashard::metashard_client::MetashardClient;
pub(crate) use kura_proto::metashard::RegionStatusRequest;
pub(crate) use kura_proto::pd::pd_server::{Pd, PdServer};
pub(crate) use kura_proto::pd::*;
pub(crate) use tonic::{Request, Response, Status};

// ---------- a PD that only routes ----------

#[derive(Default)]
pub(crate) struct FakePdState {
    pub(crate) stores: HashMap<u64, Store_>,
    pub(crate) region: Option<RegionInfo>,
    pub(crate) to_create: HashMap<u64, Vec<PeerToCreate>>,
    pub(crate) next_store_id: u64,
}
type Store_ = kura_proto::pd::Store;

#[derive(Default, Clone)]
pub(crate) struct FakePd(pub(crate) Arc<Mutex<FakePdState>>);

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Pd for FakePd {
    async fn get_cluster(&self, _: Request<GetClusterRequest>) -> R<GetClusterResponse> {
        Ok(Response::new(GetClusterResponse::default()))
    }
    async fn alloc_id(&self, _: Request<AllocIdRequest>) -> R<AllocIdResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn register_store(&self, r: Request<RegisterStoreRequest>) -> R<RegisterStoreResponse> {
        let mut s = r.into_inner().store.unwrap_or_default();
        let mut st = self.0.lock().unwrap();
        if s.id == 0 {
            st.next_store_id += 1;
            s.id = 1000 + st.next_store_id;
        }
        let id = s.id;
        st.stores.insert(id, s);
        Ok(Response::new(RegisterStoreResponse {
            error: None,
            store_id: id,
        }))
    }
    async fn store_heartbeat(
        &self,
        r: Request<StoreHeartbeatRequest>,
    ) -> R<StoreHeartbeatResponse> {
        let id = r.into_inner().store_id;
        let create_peers = self
            .0
            .lock()
            .unwrap()
            .to_create
            .remove(&id)
            .unwrap_or_default();
        Ok(Response::new(StoreHeartbeatResponse {
            error: None,
            create_peers,
        }))
    }
    async fn region_heartbeat(
        &self,
        r: Request<RegionHeartbeatRequest>,
    ) -> R<RegionHeartbeatResponse> {
        let r = r.into_inner();
        let mut st = self.0.lock().unwrap();
        let leader_addr = r
            .leader
            .as_ref()
            .and_then(|l| st.stores.get(&l.store_id))
            .map(|s| s.address.clone())
            .unwrap_or_default();
        st.region = Some(RegionInfo {
            region: r.region,
            leader: r.leader,
            leader_addr,
            approximate_size: r.approximate_size,
            approximate_keys: r.approximate_keys,
        });
        Ok(Response::new(RegionHeartbeatResponse::default()))
    }
    async fn get_stores(&self, _: Request<GetStoresRequest>) -> R<GetStoresResponse> {
        let stores = self.0.lock().unwrap().stores.values().cloned().collect();
        Ok(Response::new(GetStoresResponse {
            error: None,
            stores,
        }))
    }
    async fn get_region(&self, _: Request<GetRegionRequest>) -> R<GetRegionResponse> {
        Ok(Response::new(GetRegionResponse {
            error: None,
            region: self.0.lock().unwrap().region.clone(),
        }))
    }
    async fn get_region_by_id(&self, _: Request<GetRegionByIdRequest>) -> R<GetRegionResponse> {
        Ok(Response::new(GetRegionResponse {
            error: None,
            region: self.0.lock().unwrap().region.clone(),
        }))
    }
    async fn scan_regions(&self, _: Request<ScanRegionsRequest>) -> R<ScanRegionsResponse> {
        let regions = self.0.lock().unwrap().region.clone().into_iter().collect();
        Ok(Response::new(ScanRegionsResponse {
            error: None,
            regions,
        }))
    }
    async fn register_data_node(
        &self,
        _: Request<RegisterDataNodeRequest>,
    ) -> R<RegisterDataNodeResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn data_node_heartbeat(
        &self,
        _: Request<DataNodeHeartbeatRequest>,
    ) -> R<DataNodeHeartbeatResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_placement(&self, _: Request<GetPlacementRequest>) -> R<GetPlacementResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_members(&self, _: Request<GetMembersRequest>) -> R<GetMembersResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn rate_share(&self, _: Request<RateShareRequest>) -> R<RateShareResponse> {
        Err(Status::unimplemented("fake"))
    }
}

pub(crate) async fn start_fake_pd() -> (FakePd, SocketAddr) {
    let pd = FakePd::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pd_addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PdServer::new(pd.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    (pd, pd_addr)
}

// ---------- cluster harness ----------

pub(crate) const REGION_ID: u64 = 1;
pub(crate) const GC_THRESHOLD: u64 = 40;

pub(crate) struct Node {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) addr: SocketAddr,
    pub(crate) store: Option<Store>,
}

pub(crate) struct Cluster {
    pub(crate) pd: FakePd,
    pub(crate) pd_client: PdClient,
    pub(crate) nodes: HashMap<u64, Node>,
    pub(crate) raft: RaftConfig,
}

pub(crate) fn raft_cfg() -> RaftConfig {
    RaftConfig {
        tick: Duration::from_millis(50),
        election_ticks: 10,
        heartbeat_ticks: 2,
        log_gc_threshold: GC_THRESHOLD,
        ..Default::default()
    }
}

pub(crate) fn region() -> Region {
    Region {
        id: REGION_ID,
        start_key: Default::default(),
        end_key: Default::default(),
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: (1..=3)
            .map(|s| Peer {
                id: 100 + s,
                store_id: s,
                is_learner: false,
            })
            .collect(),
    }
}

impl Cluster {
    pub(crate) async fn start() -> Cluster {
        Cluster::start_with(raft_cfg()).await
    }

    pub(crate) async fn start_with(raft: RaftConfig) -> Cluster {
        let (pd, pd_addr) = start_fake_pd().await;
        let pd_client = PdClient::new(&[pd_addr.to_string()]).unwrap();
        let mut c = Cluster {
            pd,
            pd_client,
            nodes: HashMap::new(),
            raft,
        };
        for id in 1..=3u64 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let dir = tempfile::tempdir().unwrap();
            {
                let mut st = c.pd.0.lock().unwrap();
                st.stores.insert(
                    id,
                    Store_ {
                        id,
                        address: addr.to_string(),
                        ..Default::default()
                    },
                );
                // Bootstrap as PD does: each store learns its founding peer from a heartbeat.
                st.to_create.insert(
                    id,
                    vec![PeerToCreate {
                        region: Some(region()),
                        peer_id: 100 + id,
                        initial: true,
                    }],
                );
            }
            let store = c.start_store(id, &dir, l).await;
            c.nodes.insert(
                id,
                Node {
                    dir,
                    addr,
                    store: Some(store),
                },
            );
        }
        c
    }

    pub(crate) async fn start_store(
        &self,
        id: u64,
        dir: &tempfile::TempDir,
        l: tokio::net::TcpListener,
    ) -> Store {
        let engine = Engine::open(&dir.path().join("db")).unwrap();
        Store::start(StoreOptions {
            engine,
            store_id: id,
            listener: l,
            resolver: Arc::new(PdStoreResolver::new(self.pd_client.clone())),
            raft: self.raft.clone(),
            pd: Some(self.pd_client.clone()),
        })
        .await
        .unwrap()
    }

    pub(crate) async fn stop(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).unwrap();
        n.store.take().unwrap().stop().await.unwrap();
    }

    pub(crate) async fn restart(&mut self, id: u64) {
        let addr = self.nodes[&id].addr;
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        let store = {
            let n = &self.nodes[&id];
            self.start_store(id, &n.dir, l).await
        };
        self.nodes.get_mut(&id).unwrap().store = Some(store);
    }

    pub(crate) fn client(&self) -> MetaClient {
        MetaClient::new(Arc::new(RegionCache::new(self.pd_client.clone())))
    }

    /// The store id of the current leader, per the stores themselves.
    pub(crate) async fn leader(&self) -> Option<u64> {
        for (id, n) in &self.nodes {
            if n.store.is_none() {
                continue;
            }
            let mut c = MetashardClient::connect(format!("http://{}", n.addr))
                .await
                .ok()?;
            let s = c
                .region_status(RegionStatusRequest {
                    region_id: REGION_ID,
                })
                .await
                .ok()?
                .into_inner();
            if let Some(st) = s.status {
                if st.leader_peer_id == 100 + id {
                    return Some(*id);
                }
            }
        }
        None
    }

    pub(crate) async fn status(&self, id: u64) -> kura_proto::metashard::RegionStatus {
        let mut c = MetashardClient::connect(format!("http://{}", self.nodes[&id].addr))
            .await
            .unwrap();
        c.region_status(RegionStatusRequest {
            region_id: REGION_ID,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
    }

    pub(crate) fn engine(&self, id: u64) -> &Engine {
        self.nodes[&id].store.as_ref().unwrap().engine()
    }
}

pub(crate) fn put(k: &[u8], v: &[u8]) -> Mutation {
    Mutation {
        op: mutation::Op::Put as i32,
        cf: Cf::Meta as i32,
        key: k.to_vec().into(),
        value: v.to_vec().into(),
    }
}

fn meta_condition(kind: condition::Kind, k: &[u8], v: &[u8]) -> Condition {
    Condition {
        kind: kind as i32,
        cf: Cf::Meta as i32,
        key: k.to_vec().into(),
        value: v.to_vec().into(),
    }
}

pub(crate) fn not_exists(k: &[u8]) -> Condition {
    meta_condition(condition::Kind::NotExists, k, b"")
}

pub(crate) fn value_equals(k: &[u8], v: &[u8]) -> Condition {
    meta_condition(condition::Kind::ValueEquals, k, v)
}

/// Sends the `i`-th write of `counter` straight to a store's raftstore:
/// it puts `i`, conditioned on the value being `i - 1` (absent for 0), so
/// writes apply only in order.
pub(crate) fn send_counter_write(
    router: &kura_metashard::fsm::Router,
    counter: &[u8],
    i: usize,
) -> tokio::sync::oneshot::Receiver<kura_metashard::fsm::BatchResult> {
    let condition = match i {
        0 => not_exists(counter),
        _ => value_equals(counter, (i - 1).to_string().as_bytes()),
    };
    let mut req = raw_batch(REGION_ID, 1, counter);
    req.conditions = vec![condition];
    req.mutations = vec![put(counter, i.to_string().as_bytes())];
    let (tx, rx) = tokio::sync::oneshot::channel();
    router
        .send(kura_metashard::fsm::StoreMsg::Batch {
            req: Box::new(req),
            cb: tx,
        })
        .unwrap();
    rx
}

pub(crate) fn key(i: usize) -> Vec<u8> {
    format!("\x02key-{i:05}").into_bytes()
}

pub(crate) async fn eventually<F: FnMut() -> bool>(what: &str, timeout: Duration, mut f: F) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn write_range(client: &MetaClient, range: std::ops::Range<usize>) {
    for i in range {
        let k = key(i);
        let out = client
            .batch(
                vec![not_exists(&k)],
                vec![put(&k, format!("v{i}").as_bytes())],
            )
            .await
            .unwrap();
        assert_eq!(out, BatchOutcome::Applied, "key {i}");
    }
}

pub(crate) async fn check_all(client: &MetaClient, n: usize) {
    for i in 0..n {
        let v = client.get(Cf::Meta, &key(i)).await.unwrap();
        assert_eq!(v.as_deref(), Some(format!("v{i}").as_bytes()), "key {i}");
    }
    let all = client
        .scan(Cf::Meta, b"\x02", b"", usize::MAX, false)
        .await
        .unwrap();
    assert_eq!(all.len(), n);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key));
}

pub(crate) fn has_all(e: &Engine, n: usize) -> bool {
    (0..n).all(|i| e.get_data(Cf::Meta, &key(i)).unwrap().is_some())
}

/// Polls store `id`'s region status until `ok` holds (5 s at most).
pub(crate) async fn eventually_status(
    c: &Cluster,
    id: u64,
    ok: impl Fn(&kura_proto::metashard::RegionStatus) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = c.status(id).await;
        if ok(&st) {
            return;
        }
        assert!(Instant::now() < deadline, "store {id}: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The region's status on store `id` as that store sees it (`None`: no peer).
pub(crate) async fn region_status_on(
    c: &Cluster,
    id: u64,
    region_id: u64,
) -> Option<kura_proto::metashard::RegionStatus> {
    let mut mc = MetashardClient::connect(format!("http://{}", c.nodes[&id].addr))
        .await
        .ok()?;
    mc.region_status(RegionStatusRequest { region_id })
        .await
        .ok()?
        .into_inner()
        .status
}

pub(crate) fn raw_batch(
    region_id: u64,
    version: u64,
    k: &[u8],
) -> kura_proto::metashard::BatchRequest {
    kura_proto::metashard::BatchRequest {
        header: Some(kura_proto::metashard::RequestHeader {
            region_id,
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version,
            }),
        }),
        conditions: vec![],
        mutations: vec![put(k, b"v")],
    }
}

/// The store whose peer of `region` leads it, per the stores themselves.
pub(crate) async fn leader_store(c: &Cluster, region: &Region) -> Option<u64> {
    for id in 1..=3 {
        if c.nodes[&id].store.is_none() {
            continue;
        }
        let st = region_status_on(c, id, region.id).await?;
        let mine = region
            .peers
            .iter()
            .any(|p| p.id == st.leader_peer_id && p.store_id == id);
        if mine {
            return Some(id);
        }
    }
    None
}

/// Proposes one merge step through `store`'s router.
pub(crate) async fn merge_step(
    c: &Cluster,
    store: u64,
    req: kura_proto::metashard::AdminRequest,
) -> kura_metashard::fsm::AdminResult {
    let (tx, rx) = tokio::sync::oneshot::channel();
    c.nodes[&store]
        .store
        .as_ref()
        .unwrap()
        .router()
        .send(kura_metashard::fsm::StoreMsg::Merge {
            req: Box::new(req),
            cb: tx,
        })
        .unwrap();
    rx.await.unwrap()
}

/// Proposes `batch` through `store`'s router.
pub(crate) async fn propose(
    c: &Cluster,
    store: u64,
    batch: kura_proto::metashard::BatchRequest,
) -> kura_metashard::fsm::BatchResult {
    let (tx, rx) = tokio::sync::oneshot::channel();
    c.nodes[&store]
        .store
        .as_ref()
        .unwrap()
        .router()
        .send(kura_metashard::fsm::StoreMsg::Batch {
            req: Box::new(batch),
            cb: tx,
        })
        .unwrap();
    rx.await.unwrap()
}

/// A read of `key(1)` sent to a store's raftstore thread directly (no
/// service, so no read delegate: the lease or a ReadIndex round answers).
pub(crate) fn read_key1(
    router: &kura_metashard::fsm::Router,
) -> tokio::sync::oneshot::Receiver<
    Result<kura_metashard::fsm::ReadGrant, kura_proto::common::RegionError>,
> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    router
        .send(kura_metashard::fsm::StoreMsg::Read {
            region_id: REGION_ID,
            epoch: None,
            keys: vec![key(1)],
            cb: tx,
        })
        .unwrap();
    rx
}

/// Proposes one membership change through `store`'s router.
pub(crate) async fn change_peer(
    c: &Cluster,
    store: u64,
    change: raft::prelude::ConfChangeType,
    peer: Peer,
) -> kura_metashard::fsm::AdminResult {
    let (tx, rx) = tokio::sync::oneshot::channel();
    c.nodes[&store]
        .store
        .as_ref()
        .unwrap()
        .router()
        .send(kura_metashard::fsm::StoreMsg::ChangePeer {
            region_id: REGION_ID,
            epoch: None,
            change,
            peer,
            cb: tx,
        })
        .unwrap();
    rx.await.unwrap()
}

pub(crate) async fn eventually_async<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn transfer_leader_on(
    c: &Cluster,
    store: u64,
    to_peer: u64,
) -> Option<kura_proto::common::RegionError> {
    let mut cl = MetashardClient::connect(format!("http://{}", c.nodes[&store].addr))
        .await
        .unwrap();
    cl.transfer_leader(kura_proto::metashard::TransferLeaderRequest {
        header: Some(kura_proto::metashard::RequestHeader {
            region_id: REGION_ID,
            epoch: None,
        }),
        to_peer_id: to_peer,
    })
    .await
    .unwrap()
    .into_inner()
    .header
    .and_then(|h| h.region_error)
}

pub(crate) fn big_key(i: usize) -> Vec<u8> {
    format!("\x02big-{i:06}").into_bytes()
}

/// 1 KiB that differs per key and per byte.
pub(crate) fn big_value(i: usize) -> Vec<u8> {
    (0..1024u32)
        .map(|j| ((i as u32).wrapping_mul(2654435761) ^ j.wrapping_mul(40503)) as u8)
        .collect()
}

/// Splits the region at `key(5)` through `leader`; returns (left, right).
pub(crate) async fn split_at_key5(c: &Cluster, leader: u64) -> (Region, Region) {
    split_founding_region(c, leader, 5, 50).await
}

/// Splits the founding region at `key(at)` through `leader`'s router; the
/// new region (ids `new_id`, peers `new_id + 1..=3`) takes the right half.
pub(crate) async fn split_founding_region(
    c: &Cluster,
    leader: u64,
    at: usize,
    new_id: u64,
) -> (Region, Region) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    c.nodes[&leader]
        .store
        .as_ref()
        .unwrap()
        .router()
        .send(kura_metashard::fsm::StoreMsg::Split {
            region_id: REGION_ID,
            epoch: None,
            split_key: key(at),
            new_region_id: new_id,
            new_peer_ids: vec![new_id + 1, new_id + 2, new_id + 3],
            cb: tx,
        })
        .unwrap();
    let regions = rx.await.unwrap().expect("split applied");
    (regions[0].clone(), regions[1].clone())
}
