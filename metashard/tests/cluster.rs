//! Three real stores (real gRPC on 127.0.0.1, real RocksDB in temp dirs)
//! replicating one region, driven through `MetaClient` and a minimal
//! in-process PD that only routes (regions, stores, heartbeats).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kura_metashard::client::{condition, mutation, Cf, Condition, Mutation};
use kura_metashard::engine::Engine;
use kura_metashard::peer::RaftConfig;
use kura_metashard::{BatchOutcome, MetaClient, PdStoreResolver, Store, StoreOptions};
use kura_pd_client::{PdClient, RegionCache};
use kura_proto::common::{Peer, Region, RegionEpoch};
use kura_proto::metashard::metashard_client::MetashardClient;
use kura_proto::metashard::RegionStatusRequest;
use kura_proto::pd::pd_server::{Pd, PdServer};
use kura_proto::pd::*;
use tonic::{Request, Response, Status};

// ---------- a PD that only routes ----------

#[derive(Default)]
struct FakePdState {
    stores: HashMap<u64, Store_>,
    region: Option<RegionInfo>,
    to_create: HashMap<u64, Vec<PeerToCreate>>,
    next_store_id: u64,
}
type Store_ = kura_proto::pd::Store;

#[derive(Default, Clone)]
struct FakePd(Arc<Mutex<FakePdState>>);

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

async fn start_fake_pd() -> (FakePd, SocketAddr) {
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

const REGION_ID: u64 = 1;
const GC_THRESHOLD: u64 = 40;

struct Node {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    store: Option<Store>,
}

struct Cluster {
    pd: FakePd,
    pd_client: PdClient,
    nodes: HashMap<u64, Node>,
    raft: RaftConfig,
}

fn raft_cfg() -> RaftConfig {
    RaftConfig {
        tick: Duration::from_millis(50),
        election_ticks: 10,
        heartbeat_ticks: 2,
        log_gc_threshold: GC_THRESHOLD,
        ..Default::default()
    }
}

fn region() -> Region {
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
    async fn start() -> Cluster {
        Cluster::start_with(raft_cfg()).await
    }

    async fn start_with(raft: RaftConfig) -> Cluster {
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

    async fn start_store(
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

    async fn stop(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).unwrap();
        n.store.take().unwrap().stop().await.unwrap();
    }

    async fn restart(&mut self, id: u64) {
        let addr = self.nodes[&id].addr;
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        let store = {
            let n = &self.nodes[&id];
            self.start_store(id, &n.dir, l).await
        };
        self.nodes.get_mut(&id).unwrap().store = Some(store);
    }

    fn client(&self) -> MetaClient {
        MetaClient::new(Arc::new(RegionCache::new(self.pd_client.clone())))
    }

    /// The store id of the current leader, per the stores themselves.
    async fn leader(&self) -> Option<u64> {
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

    async fn status(&self, id: u64) -> kura_proto::metashard::RegionStatus {
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

    fn engine(&self, id: u64) -> &Engine {
        self.nodes[&id].store.as_ref().unwrap().engine()
    }
}

fn put(k: &[u8], v: &[u8]) -> Mutation {
    Mutation {
        op: mutation::Op::Put as i32,
        cf: Cf::Meta as i32,
        key: k.to_vec().into(),
        value: v.to_vec().into(),
    }
}

fn not_exists(k: &[u8]) -> Condition {
    Condition {
        kind: condition::Kind::NotExists as i32,
        cf: Cf::Meta as i32,
        key: k.to_vec().into(),
        value: Default::default(),
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("\x02key-{i:05}").into_bytes()
}

async fn eventually<F: FnMut() -> bool>(what: &str, timeout: Duration, mut f: F) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn write_range(client: &MetaClient, range: std::ops::Range<usize>) {
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

async fn check_all(client: &MetaClient, n: usize) {
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

fn has_all(e: &Engine, n: usize) -> bool {
    (0..n).all(|i| e.get_data(Cf::Meta, &key(i)).unwrap().is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicate_failover_snapshot_restart() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut c = Cluster::start().await;
    let client = c.client();

    // Writes replicate to every store.
    write_range(&client, 0..20).await;
    let again = client
        .batch(vec![not_exists(&key(3))], vec![put(&key(3), b"x")])
        .await
        .unwrap();
    assert_eq!(again, BatchOutcome::ConditionFailed { index: 0 });
    check_all(&client, 20).await;
    let page = client
        .scan(Cf::Meta, &key(5), &key(12), 4, true)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|kv| kv.key.to_vec()).collect::<Vec<_>>(),
        (5..9).map(key).collect::<Vec<_>>()
    );
    assert!(page.iter().all(|kv| kv.value.is_empty()));
    for id in 1..=3 {
        let e = c.engine(id).clone();
        eventually("replication", Duration::from_secs(5), || has_all(&e, 20)).await;
    }
    // Rounds whose batch held only applied entries (the log entries were
    // synced in an earlier round) were written without an fsync.
    let round_writes = |sync| {
        kura_metashard::metrics::ROUND_WRITES
            .with_label_values(&[sync])
            .get()
    };
    assert!(round_writes("true") > 0 && round_writes("false") > 0);

    // Kill the leader: acknowledged writes stay readable, writes continue.
    let leader = c.leader().await.expect("a leader");
    c.stop(leader).await;
    check_all(&client, 20).await;
    // While it is down, commit far more than the GC threshold so the others
    // compact their logs past what it has.
    write_range(&client, 20..20 + 3 * GC_THRESHOLD as usize).await;
    let n = 20 + 3 * GC_THRESHOLD as usize;
    let live: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &live {
        let st = c.status(*id).await;
        assert!(
            st.first_log_index > 21,
            "store {id} compacted its log: {st:?}"
        );
    }

    // The old leader comes back and catches up by snapshot.
    let snaps_before = kura_metashard::metrics::SNAPSHOTS_APPLIED.get();
    c.restart(leader).await;
    let e = c.engine(leader).clone();
    eventually("snapshot catch-up", Duration::from_secs(10), || {
        has_all(&e, n)
    })
    .await;
    drop(e);
    assert!(
        kura_metashard::metrics::SNAPSHOTS_APPLIED.get() > snaps_before,
        "caught up via snapshot"
    );
    check_all(&client, n).await;

    // Restart everything from disk.
    for id in 1..=3 {
        c.stop(id).await;
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    check_all(&client, n).await;
    write_range(&client, n..n + 5).await;
    check_all(&client, n + 5).await;
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// A log of few but big entries is compacted by its size long before the
/// entry-count threshold, on every store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_log_is_compacted_by_size() {
    let mut c = Cluster::start_with(RaftConfig {
        log_gc_threshold: 100_000,
        log_gc_size_limit: 256 << 10,
        ..raft_cfg()
    })
    .await;
    let client = c.client();
    let big = vec![7u8; 32 << 10];
    for i in 0..40 {
        let out = client
            .batch(vec![], vec![put(&key(i), &big)])
            .await
            .unwrap();
        assert_eq!(out, BatchOutcome::Applied);
    }
    for id in 1..=3 {
        eventually_status(&c, id, |st| st.first_log_index > 20).await;
    }
    for i in 0..40 {
        let v = client.get(Cf::Meta, &key(i)).await.unwrap();
        assert_eq!(v.as_deref(), Some(big.as_slice()), "key {i}");
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// Polls store `id`'s region status until `ok` holds (5 s at most).
async fn eventually_status(
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

/// `run`: registers with PD (id allocated once, persisted), creates the peer PD
/// asks for, serves, stops on shutdown, and comes back with the same id and data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_registers_serves_and_restarts() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (pd, pd_addr) = start_fake_pd().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = kura_metashard::Config::new(
        dir.path().to_path_buf(),
        addr,
        addr.to_string(),
        vec![pd_addr.to_string()],
    );
    cfg.raft_tick_ms = 20;
    cfg.zone = "z1".into();
    let start = |cfg: kura_metashard::Config| {
        let ready = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let h = tokio::spawn(kura_metashard::run(cfg, ready.clone(), rx));
        (ready, tx, h)
    };

    let (ready, stop, h) = start(cfg.clone());
    eventually("ready", Duration::from_secs(10), || {
        ready.load(Ordering::SeqCst)
    })
    .await;
    let store_id = {
        let st = pd.0.lock().unwrap();
        assert_eq!(st.stores.len(), 1);
        let (id, s) = st.stores.iter().next().unwrap();
        assert_eq!(s.address, addr.to_string());
        assert_eq!(s.labels.as_ref().unwrap().zone, "z1");
        *id
    };
    let single = Region {
        id: 9,
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![Peer {
            id: 900,
            store_id,
            is_learner: false,
        }],
        ..Default::default()
    };
    pd.0.lock().unwrap().to_create.insert(
        store_id,
        vec![PeerToCreate {
            region: Some(single),
            peer_id: 900,
            initial: true,
        }],
    );
    let pd_client = PdClient::new(&[pd_addr.to_string()]).unwrap();
    let client = MetaClient::new(Arc::new(RegionCache::new(pd_client.clone())));
    write_range(&client, 0..3).await;
    stop.send(true).unwrap();
    h.await.unwrap().unwrap();
    assert!(!ready.load(Ordering::SeqCst));

    let (ready, stop, h) = start(cfg);
    eventually("ready again", Duration::from_secs(10), || {
        ready.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(
        pd.0.lock()
            .unwrap()
            .stores
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![store_id]
    );
    let client = MetaClient::new(Arc::new(RegionCache::new(pd_client)));
    for i in 0..3 {
        assert_eq!(
            client.get(Cf::Meta, &key(i)).await.unwrap().as_deref(),
            Some(format!("v{i}").as_bytes())
        );
    }
    stop.send(true).unwrap();
    h.await.unwrap().unwrap();
}

/// The region's status on store `id` as that store sees it (`None`: no peer).
async fn region_status_on(
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

fn raw_batch(region_id: u64, version: u64, k: &[u8]) -> kura_proto::metashard::BatchRequest {
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

/// A split is one raft command: proposals queued behind it with the old
/// epoch are answered `EpochNotMatch` naming both halves (never lost or
/// applied to the wrong range); the new region elects a leader at once,
/// serves writes, and survives a restart of every store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_applies_everywhere_and_rejects_stale_proposals() {
    use kura_metashard::fsm::StoreMsg;
    use tokio::sync::oneshot;
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..10).await;
    let leader = c.leader().await.expect("a leader");
    let router = c.nodes[&leader].store.as_ref().unwrap().router().clone();
    let split_key = key(5);
    // Reads establish the lease: the leader's read delegate then answers
    // reads of the whole region (decision 0050).
    // (The test lease is short: each try reads again to renew it.)
    let v1 = RegionEpoch {
        conf_ver: 1,
        version: 1,
    };
    let local = router.local_readers().clone();
    eventually_async("a read delegate", || async {
        check_all(&client, 10).await;
        local
            .grant(REGION_ID, Some(&v1), &[key(8).as_slice()])
            .is_some()
    })
    .await;

    // One burst, handled in one raftstore round: batches before the split
    // message, the split, batches after it (all against version 1).
    let mut before = Vec::new();
    let mut after = Vec::new();
    for i in 0..4 {
        let (tx, rx) = oneshot::channel();
        let k = format!("pre-{i}");
        let k = if i % 2 == 0 { key(1) } else { key(8) }
            .into_iter()
            .chain(k.bytes())
            .collect::<Vec<u8>>();
        router
            .send(StoreMsg::Batch {
                req: Box::new(raw_batch(REGION_ID, 1, &k)),
                cb: tx,
            })
            .unwrap();
        before.push((k, rx));
    }
    let (stx, srx) = oneshot::channel();
    router
        .send(StoreMsg::Split {
            region_id: REGION_ID,
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            split_key: split_key.clone(),
            new_region_id: 50,
            new_peer_ids: vec![51, 52, 53],
            cb: stx,
        })
        .unwrap();
    for i in 0..4 {
        let (tx, rx) = oneshot::channel();
        let k = if i % 2 == 0 { key(2) } else { key(7) };
        let k: Vec<u8> = k.into_iter().chain(*b"-post").collect();
        router
            .send(StoreMsg::Batch {
                req: Box::new(raw_batch(REGION_ID, 1, &k)),
                cb: tx,
            })
            .unwrap();
        after.push((k, rx));
    }
    let regions = srx.await.unwrap().expect("split applied");
    // Once the split's round ends, the parent's delegate vouches only for
    // its new epoch and range: a read with the old epoch, or of a key the
    // split moved, goes to the raftstore thread (EpochNotMatch), never to
    // the engine unchecked.
    let v2 = RegionEpoch {
        conf_ver: 1,
        version: 2,
    };
    eventually_async("the delegate follows the split", || async {
        client.get(Cf::Meta, &key(1)).await.expect("read");
        local
            .grant(REGION_ID, Some(&v1), &[key(1).as_slice()])
            .is_none()
            && local
                .grant(REGION_ID, Some(&v2), &[key(1).as_slice()])
                .is_some()
    })
    .await;
    assert!(local
        .grant(REGION_ID, Some(&v2), &[key(8).as_slice()])
        .is_none());
    assert!(local.grant(REGION_ID, None, &[key(8).as_slice()]).is_none());
    assert_eq!(regions.len(), 2);
    assert_eq!((regions[0].id, regions[1].id), (REGION_ID, 50));
    assert_eq!(regions[0].end_key.as_ref(), split_key.as_slice());
    assert_eq!(regions[1].start_key.as_ref(), split_key.as_slice());
    for (k, rx) in before {
        assert_eq!(
            rx.await.unwrap().expect("applied before the split"),
            (true, 0)
        );
        for id in 1..=3 {
            let e = c.engine(id).clone();
            eventually("pre-split write replicated", Duration::from_secs(5), || {
                e.get_data(Cf::Meta, &k).unwrap().is_some()
            })
            .await;
        }
    }
    for (k, rx) in after {
        let err = rx.await.unwrap().expect_err("stale epoch after the split");
        let en = err.epoch_not_match.expect("EpochNotMatch");
        let ids: Vec<u64> = en.current_regions.iter().map(|r| r.id).collect();
        assert!(ids.contains(&REGION_ID) && ids.contains(&50), "{ids:?}");
        assert_eq!(
            c.engine(leader).get_data(Cf::Meta, &k).unwrap(),
            None,
            "a rejected batch wrote nothing"
        );
    }
    // Stale epoch at propose time too, and keys outside the parent's new range.
    let (tx, rx) = oneshot::channel();
    router
        .send(StoreMsg::Batch {
            req: Box::new(raw_batch(REGION_ID, 1, &key(1))),
            cb: tx,
        })
        .unwrap();
    assert!(rx.await.unwrap().unwrap_err().epoch_not_match.is_some());
    let (tx, rx) = oneshot::channel();
    router
        .send(StoreMsg::Batch {
            req: Box::new(raw_batch(REGION_ID, 2, &key(8))),
            cb: tx,
        })
        .unwrap();
    assert!(rx.await.unwrap().unwrap_err().key_not_in_region.is_some());

    // Every store applied the split; the new region elects a leader fast.
    let deadline = Instant::now() + Duration::from_secs(5);
    let new_leader = loop {
        let mut found = None;
        for id in 1..=3 {
            let st = region_status_on(&c, id, 50).await;
            let parent = region_status_on(&c, id, REGION_ID).await;
            if let (Some(st), Some(parent)) = (st, parent) {
                assert_eq!(
                    parent.region.unwrap().end_key.as_ref(),
                    split_key.as_slice()
                );
                if st.leader_peer_id == 50 + id {
                    found = Some(id);
                }
            }
        }
        if let Some(id) = found {
            break id;
        }
        assert!(Instant::now() < deadline, "region 50 elected no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        new_leader, leader,
        "the parent's leader store campaigned first"
    );

    // The new region takes writes for its keys under version 2.
    let router = c.nodes[&new_leader]
        .store
        .as_ref()
        .unwrap()
        .router()
        .clone();
    let (tx, rx) = oneshot::channel();
    router
        .send(StoreMsg::Batch {
            req: Box::new(raw_batch(50, 2, b"\x7fnew")),
            cb: tx,
        })
        .unwrap();
    assert_eq!(rx.await.unwrap().unwrap(), (true, 0));

    // Restart every store: both regions come back from disk.
    for id in 1..=3 {
        c.stop(id).await;
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    for id in 1..=3 {
        let st = region_status_on(&c, id, 50)
            .await
            .expect("split region persisted");
        let r = st.region.unwrap();
        assert_eq!(r.start_key.as_ref(), split_key.as_slice());
        assert_eq!(r.epoch.unwrap().version, 2);
        let p = region_status_on(&c, id, REGION_ID)
            .await
            .unwrap()
            .region
            .unwrap();
        assert_eq!(p.end_key.as_ref(), split_key.as_slice());
        // Committed before the restart; applied everywhere once re-elected.
        let e = c.engine(id).clone();
        eventually(
            "new region's write applied",
            Duration::from_secs(10),
            || e.get_data(Cf::Meta, b"\x7fnew").unwrap().is_some(),
        )
        .await;
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// The store whose peer of `region` leads it, per the stores themselves.
async fn leader_store(c: &Cluster, region: &Region) -> Option<u64> {
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
async fn merge_step(
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
async fn propose(
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

/// Merge is two raft commands in two logs: the source (right half of a
/// split) freezes itself, then the target absorbs it. A store that missed
/// source writes catches up before the commit (the operator's precondition);
/// a store down during the commit applies it after restarting; afterwards
/// one region covers the whole range on every store, the source's peers are
/// gone for good, and every write on either side is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merge_absorbs_the_right_half_on_every_store() {
    use kura_proto::metashard::{AdminRequest, CommitMerge, PrepareMerge, RequestHeader};
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..10).await;
    let leader = c.leader().await.expect("a leader");
    let (left, right) = split_at_key5(&c, leader).await;
    let source_id = right.id;
    let deadline = Instant::now() + Duration::from_secs(10);
    let sl = loop {
        if let Some(id) = leader_store(&c, &right).await {
            break id;
        }
        assert!(Instant::now() < deadline, "the source elected no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // One store misses source writes.
    let lagging = (1..=3).find(|id| *id != sl && *id != leader).unwrap_or(3);
    c.stop(lagging).await;
    let late: Vec<Vec<u8>> = (0..5)
        .map(|i| [key(7), format!("-late{i}").into_bytes()].concat())
        .collect();
    for k in &late {
        assert_eq!(
            propose(&c, sl, raw_batch(source_id, 2, k)).await.unwrap(),
            (true, 0)
        );
    }
    let (frozen, prepare_index) = merge_step(
        &c,
        sl,
        AdminRequest {
            header: Some(RequestHeader {
                region_id: source_id,
                epoch: right.epoch,
            }),
            prepare_merge: Some(PrepareMerge {
                target: Some(left.clone()),
            }),
            ..Default::default()
        },
    )
    .await
    .expect("prepare merge applied");
    assert_eq!(frozen.epoch.unwrap().version, 3);
    let err = propose(&c, sl, raw_batch(source_id, 3, &key(8)))
        .await
        .expect_err("a frozen source refuses writes");
    assert!(err.server_busy.is_some(), "{err:?}");

    // The lagging store catches its source up (what PD waits for) ...
    c.restart(lagging).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = region_status_on(&c, lagging, source_id).await;
        if st.is_some_and(|s| s.applied_index >= prepare_index && s.merge_target_id == REGION_ID) {
            break;
        }
        assert!(Instant::now() < deadline, "lagging source never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... then is down while the target commits.
    c.stop(lagging).await;
    let tl = loop {
        if let Some(l) = c.leader().await {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (merged, _) = merge_step(
        &c,
        tl,
        AdminRequest {
            header: Some(RequestHeader {
                region_id: REGION_ID,
                epoch: left.epoch,
            }),
            commit_merge: Some(CommitMerge {
                source: Some(frozen.clone()),
                prepare_index,
            }),
            ..Default::default()
        },
    )
    .await
    .expect("commit merge applied");
    assert!(merged.start_key.is_empty() && merged.end_key.is_empty());
    assert_eq!(merged.epoch.unwrap().version, 4, "newer than both halves");
    let after = [key(8), b"-after".to_vec()].concat();
    assert_eq!(
        propose(&c, tl, raw_batch(REGION_ID, 4, &after))
            .await
            .unwrap(),
        (true, 0),
        "the target serves the source's old range"
    );
    c.restart(lagging).await;
    for round in 0..2 {
        for id in 1..=3 {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let gone = region_status_on(&c, id, source_id).await.is_none();
                let whole = region_status_on(&c, id, REGION_ID)
                    .await
                    .and_then(|s| s.region)
                    .is_some_and(|r| r.end_key.is_empty() && r.epoch == merged.epoch);
                let e = c.engine(id);
                let data = has_all(e, 10)
                    && late
                        .iter()
                        .chain([&after])
                        .all(|k| e.get_data(Cf::Meta, k).unwrap().is_some());
                if gone && whole && data {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: store {id} gone={gone} whole={whole} data={data}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // The merge is durable: nothing comes back after a restart.
        for id in 1..=3 {
            c.stop(id).await;
        }
        for id in 1..=3 {
            c.restart(id).await;
        }
    }
    // Through the routing client too: one region, every key, in order.
    let all = client
        .scan(Cf::Meta, b"\x02", b"", usize::MAX, false)
        .await
        .unwrap();
    assert_eq!(all.len(), 10 + late.len() + 1);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key));
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// Leader lease reads: a steady read load is answered from the lease (no
/// ReadIndex round per read), mostly by the service itself from the read
/// delegate (no raftstore hop), and a leader that hands its leadership over
/// stops serving alone at once: every read through it afterwards either
/// sees the newest write or is told to go to the new leader, never stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_reads_are_fresh_across_a_leader_transfer() {
    use kura_proto::metashard::{RequestHeader, TransferLeaderRequest};
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..3).await;
    let counter = |name: &str| {
        prometheus::default_registry()
            .gather()
            .iter()
            .find(|m| m.name() == name)
            .map_or(0.0, |m| m.get_metric()[0].get_counter().get_value())
    };
    let lease_reads = || counter("kura_metashard_lease_reads_total");
    let local_reads = || counter("kura_metashard_local_reads_total");
    let (before, before_local) = (lease_reads() + local_reads(), local_reads());
    for _ in 0..50 {
        check_all(&client, 3).await;
    }
    assert!(
        lease_reads() + local_reads() > before + 50.0,
        "reads were served from the lease"
    );
    assert!(
        local_reads() > before_local + 50.0,
        "reads were answered by the service from the read delegate"
    );

    let old = c.leader().await.expect("a leader");
    let new = (1..=3).find(|id| *id != old).unwrap();
    let read_on_old = |c: &Cluster| read_key1(c.nodes[&old].store.as_ref().unwrap().router());
    let mut mc = MetashardClient::connect(format!("http://{}", c.nodes[&old].addr))
        .await
        .unwrap();
    mc.transfer_leader(TransferLeaderRequest {
        header: Some(RequestHeader {
            region_id: REGION_ID,
            epoch: None,
        }),
        to_peer_id: 100 + new,
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.leader().await != Some(new) {
        assert!(Instant::now() < deadline, "leadership did not move");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A write through the new leader, then reads through the old one.
    let k = key(1);
    let cur = client.get(Cf::Meta, &k).await.unwrap().unwrap();
    let out = client
        .batch(
            vec![Condition {
                kind: condition::Kind::ValueEquals as i32,
                cf: Cf::Meta as i32,
                key: k.clone().into(),
                value: cur,
            }],
            vec![put(&k, b"newest")],
        )
        .await
        .unwrap();
    assert_eq!(out, BatchOutcome::Applied);
    let old_router = c.nodes[&old].store.as_ref().unwrap().router();
    assert!(
        old_router
            .local_readers()
            .grant(REGION_ID, None, &[k.as_slice()])
            .is_none(),
        "the old leader still vouches for local reads"
    );
    for _ in 0..20 {
        match read_on_old(&c).await.unwrap() {
            Err(e) => assert!(e.not_leader.is_some(), "{e:?}"),
            Ok(_) => {
                let v = c.engine(old).get_data(Cf::Meta, &k).unwrap();
                assert_eq!(
                    v.as_deref(),
                    Some(&b"newest"[..]),
                    "stale read on the old leader"
                );
            }
        }
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// A read of `key(1)` sent to a store's raftstore thread directly (no
/// service, so no read delegate: the lease or a ReadIndex round answers).
fn read_key1(
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

/// A leader just elected has not committed an entry of its own term, and
/// raft-rs drops a ReadIndex then without a word. Reads that reach it in
/// that window must be answered once its first entry commits, not when the
/// caller's deadline (5 s in the service) runs out: a split's new region and
/// every leader transfer open that window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_reaching_a_new_leader_are_answered_at_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..3).await;
    for _ in 0..3 {
        let old = c.leader().await.expect("a leader");
        let new = (1..=3).find(|id| *id != old).unwrap();
        // Reads sent to the target one after another, before, during and
        // after it takes over (NotLeader until then, answered at once).
        let router = c.nodes[&new].store.as_ref().unwrap().router().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut slowest, mut served) = (Duration::ZERO, 0);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let answer =
                        tokio::time::timeout(Duration::from_secs(5), read_key1(&router)).await;
                    slowest = slowest.max(t.elapsed());
                    if let Ok(Ok(Ok(_))) = answer {
                        served += 1;
                    }
                }
                (slowest, served)
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(transfer_leader_on(&c, old, 100 + new).await, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.leader().await != Some(new) {
            assert!(Instant::now() < deadline, "leadership did not move");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let (slowest, served) = reader.await.unwrap();
        assert!(served > 0, "the new leader served no read");
        // Below the election timeout (500 ms here), after which a lost
        // ReadIndex round is retried: the reads were not lost at all.
        assert!(
            slowest < Duration::from_millis(400),
            "a read waited {slowest:?} at the new leader"
        );
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// Requests that reach the leader in one round are proposed together: the
/// followers get one append for them rather than one per request (raft-rs
/// broadcasts per proposal step), and the entries keep the order the
/// requests came in: each request's condition is the previous one's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_of_one_round_share_one_append() {
    const N: usize = 64;
    let mut c = Cluster::start().await;
    write_range(&c.client(), 0..1).await;
    let leader = c.leader().await.expect("a leader");
    let router = c.nodes[&leader].store.as_ref().unwrap().router().clone();
    let counter = key(99);
    let sent = || {
        kura_metashard::metrics::RAFT_MESSAGES
            .with_label_values(&["sent"])
            .get()
    };
    let sent_before = sent();
    let answers: Vec<_> = (0..N)
        .map(|i| {
            let condition = match i {
                0 => not_exists(&counter),
                _ => Condition {
                    kind: condition::Kind::ValueEquals as i32,
                    cf: Cf::Meta as i32,
                    key: counter.clone().into(),
                    value: (i - 1).to_string().into_bytes().into(),
                },
            };
            let mut req = raw_batch(REGION_ID, 1, &counter);
            req.conditions = vec![condition];
            req.mutations = vec![put(&counter, i.to_string().as_bytes())];
            let (tx, rx) = tokio::sync::oneshot::channel();
            router
                .send(kura_metashard::fsm::StoreMsg::Batch {
                    req: Box::new(req),
                    cb: tx,
                })
                .unwrap();
            rx
        })
        .collect();
    for (i, rx) in answers.into_iter().enumerate() {
        assert_eq!(rx.await.unwrap(), Ok((true, 0)), "request {i}");
    }
    let messages = sent() - sent_before;
    // One entry per append would be 2 × N appends and as many answers.
    assert!(
        messages < N as u64,
        "{messages} raft messages for {N} requests"
    );
    let last = (N - 1).to_string().into_bytes();
    for id in 1..=3 {
        eventually(
            "the last write on every store",
            Duration::from_secs(5),
            || c.engine(id).get_data(Cf::Meta, &counter).unwrap().as_ref() == Some(&last),
        )
        .await;
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// Proposes one membership change through `store`'s router.
async fn change_peer(
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

/// Conf change: a peer removed while its store is down destroys itself
/// (region state and data) when the store comes back and hears from the
/// others; a learner added on that store gets everything by snapshot, is
/// promoted, and then carries a quorum with the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_then_add_learner_and_promote() {
    use raft::prelude::ConfChangeType::*;
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..10).await;
    let leader = c.leader().await.expect("a leader");
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let other = (1..=3).find(|id| *id != leader && *id != victim).unwrap();
    let old = Peer {
        id: 100 + victim,
        store_id: victim,
        is_learner: false,
    };
    let self_removal = Peer {
        id: 100 + leader,
        store_id: leader,
        is_learner: false,
    };
    let e = change_peer(&c, leader, RemoveNode, self_removal)
        .await
        .expect_err("the leader cannot remove itself");
    assert!(e.server_busy.is_some(), "{e:?}");

    c.stop(victim).await;
    let (r, _) = change_peer(&c, leader, RemoveNode, old)
        .await
        .expect("remove applied");
    assert_eq!(r.peers.len(), 2);
    assert_eq!(r.epoch.unwrap().conf_ver, 2);
    write_range(&client, 10..20).await;
    // Back up, the removed peer campaigns, is told it is gone, and goes.
    c.restart(victim).await;
    eventually_async("the removed peer to destroy itself", || async {
        region_status_on(&c, victim, REGION_ID).await.is_none()
            && c.engine(victim)
                .get_data(Cf::Meta, &key(0))
                .unwrap()
                .is_none()
    })
    .await;

    let learner = Peer {
        id: 200 + victim,
        store_id: victim,
        is_learner: true,
    };
    let (r, _) = change_peer(&c, leader, AddLearnerNode, learner)
        .await
        .expect("learner added");
    assert!(r.peers.iter().any(|p| p.id == learner.id && p.is_learner));
    let dup = Peer {
        id: 300 + victim,
        ..learner
    };
    assert!(
        change_peer(&c, leader, AddLearnerNode, dup).await.is_err(),
        "one peer per store"
    );
    eventually_async("the learner to catch up by snapshot", || async {
        has_all(c.engine(victim), 20)
    })
    .await;
    let (r, _) = change_peer(&c, leader, AddNode, learner)
        .await
        .expect("learner promoted");
    assert!(r.peers.iter().all(|p| !p.is_learner) && r.peers.len() == 3);
    // The promoted peer now makes the quorum with the leader.
    c.stop(other).await;
    write_range(&client, 20..25).await;
    eventually_async("the promoted peer to apply new writes", || async {
        has_all(c.engine(victim), 25)
    })
    .await;
    c.restart(other).await;
    check_all(&client, 25).await;
    for id in 1..=3 {
        c.stop(id).await;
    }
}

async fn eventually_async<F, Fut>(what: &str, mut f: F)
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

async fn transfer_leader_on(
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

/// `TransferLeader`: moves leadership to a caught-up follower (writes go
/// on), answers `NotLeader` on a follower, and refuses a target that is
/// not heard from (a stopped store) instead of stalling the region.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_leader_moves_leadership_and_refuses_a_stopped_target() {
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..10).await;
    let leader = c.leader().await.expect("a leader");
    let target = (1..=3).find(|id| *id != leader).expect("a follower");
    let other = (1..=3)
        .find(|id| *id != leader && *id != target)
        .expect("a third store");

    let e = transfer_leader_on(&c, target, 100 + other)
        .await
        .expect("a follower refuses");
    assert!(e.not_leader.is_some(), "{e:?}");

    assert_eq!(transfer_leader_on(&c, leader, 100 + target).await, None);
    let t0 = Instant::now();
    loop {
        if c.leader().await == Some(target) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "leadership never moved to store {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    write_range(&client, 10..20).await;
    check_all(&client, 20).await;

    // A stopped store's peer is not recently active once the leader's
    // quorum check has run (every election timeout, 500 ms here).
    c.stop(other).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = transfer_leader_on(&c, target, 100 + other)
        .await
        .expect("a stopped target is refused");
    assert!(
        e.server_busy.is_some() && e.message.contains("not caught up"),
        "{e:?}"
    );
    assert_eq!(c.leader().await, Some(target), "leadership stayed");
    write_range(&client, 20..25).await;
    check_all(&client, 25).await;
    for id in [leader, target] {
        c.stop(id).await;
    }
}

fn big_key(i: usize) -> Vec<u8> {
    format!("\x02big-{i:06}").into_bytes()
}

/// 1 KiB that differs per key and per byte.
fn big_value(i: usize) -> Vec<u8> {
    (0..1024u32)
        .map(|j| ((i as u32).wrapping_mul(2654435761) ^ j.wrapping_mul(40503)) as u8)
        .collect()
}

/// Splits the region at `key(5)` through `leader`; returns (left, right).
async fn split_at_key5(c: &Cluster, leader: u64) -> (Region, Region) {
    split_founding_region(c, leader, 5, 50).await
}

/// Splits the founding region at `key(at)` through `leader`'s router; the
/// new region (ids `new_id`, peers `new_id + 1..=3`) takes the right half.
async fn split_founding_region(
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

/// A split region's first campaign travels with the split's commit and
/// reaches the other stores before they apply the split: its vote requests
/// are kept until then, so the region has a leader within a few rounds, not
/// at the candidate's next re-campaign tick (one second here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_region_elects_its_leader_without_waiting_a_tick() {
    let mut c = Cluster::start_with(RaftConfig {
        tick: Duration::from_secs(1),
        election_ticks: 3,
        heartbeat_ticks: 1,
        ..raft_cfg()
    })
    .await;
    write_range(&c.client(), 0..10).await;
    let leader = c.leader().await.expect("a leader");
    // Three splits of the founding region, each cutting a new region off.
    for (at, new_id) in [(7, 50), (5, 60), (3, 70)] {
        let (_, right) = split_founding_region(&c, leader, at, new_id).await;
        let t = Instant::now();
        while leader_store(&c, &right).await.is_none() {
            assert!(
                t.elapsed() < Duration::from_millis(300),
                "region {new_id} had no leader {:?} after its split",
                t.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// A region of ~20 MB (20k keys of 1 KiB) catches a store up by snapshot:
/// the data arrives byte-exact, and a region led by the store that generates
/// the snapshot keeps taking writes with a bounded latency meanwhile
/// (generation, streaming and applying all happen off the raftstore thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn big_snapshot_is_exact_and_does_not_stall_other_regions() {
    const KEYS: usize = 20_000;
    const PER_BATCH: usize = 100;
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..10).await;
    let leader = c.leader().await.expect("a leader");
    let (left, right) = split_at_key5(&c, leader).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let right_leader = loop {
        if let Some(id) = leader_store(&c, &right).await {
            break id;
        }
        assert!(Instant::now() < deadline, "region 50 elected no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let left_leader = leader_store(&c, &left).await.expect("left leader");
    let lagging = (1..=3)
        .find(|id| *id != left_leader && *id != right_leader)
        .expect("a third store");
    c.stop(lagging).await;

    // While it is down, the left region grows to ~20 MB, far past the log
    // GC threshold: it can only catch up by snapshot.
    let version = left.epoch.unwrap().version;
    for b in 0..KEYS / PER_BATCH {
        let mut req = raw_batch(REGION_ID, version, &big_key(b * PER_BATCH));
        req.mutations = (b * PER_BATCH..(b + 1) * PER_BATCH)
            .map(|i| put(&big_key(i), &big_value(i)))
            .collect();
        assert_eq!(
            propose(&c, left_leader, req).await.unwrap(),
            (true, 0),
            "batch {b}"
        );
    }
    let st = region_status_on(&c, left_leader, REGION_ID).await.unwrap();
    assert!(
        st.first_log_index > 20,
        "the leader compacted its log: {st:?}"
    );

    // Baseline: the same writes to the other region before any snapshot,
    // so the bounds below scale with how loaded this machine is right now.
    let right_version = right.epoch.unwrap().version;
    let mut baseline = Duration::ZERO;
    for i in 0..100 {
        let k = [key(9), format!("-b{i:05}").into_bytes()].concat();
        let t = Instant::now();
        assert_eq!(
            propose(&c, right_leader, raw_batch(50, right_version, &k))
                .await
                .unwrap(),
            (true, 0)
        );
        baseline = baseline.max(t.elapsed());
    }

    let applied_before = kura_metashard::metrics::SNAPSHOTS_APPLIED.get();
    let generated_before = kura_metashard::metrics::SNAPSHOTS_GENERATED.get();
    c.restart(lagging).await;
    let lag_engine = c.engine(lagging).clone();
    // The receiving store's raftstore thread keeps answering too: a status
    // request for the other region every few ms, timed.
    let lag_router = c.nodes[&lagging].store.as_ref().unwrap().router().clone();
    let stop_probe = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = tokio::spawn({
        let stop = stop_probe.clone();
        async move {
            let mut worst = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let t = Instant::now();
                lag_router
                    .send(kura_metashard::fsm::StoreMsg::Status {
                        region_id: 50,
                        cb: tx,
                    })
                    .unwrap();
                rx.await.unwrap();
                worst = worst.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            worst
        }
    });
    // Meanwhile: one write at a time to the right region, led by a store
    // that generates the snapshot or serves as the quorum's other half.
    let t0 = Instant::now();
    let mut latencies = Vec::new();
    let mut i = 0usize;
    loop {
        let k = [key(9), format!("-w{i:05}").into_bytes()].concat();
        let t = Instant::now();
        assert_eq!(
            propose(&c, right_leader, raw_batch(50, right_version, &k))
                .await
                .unwrap(),
            (true, 0)
        );
        latencies.push(t.elapsed());
        i += 1;
        let done = kura_metashard::metrics::SNAPSHOTS_APPLIED.get() > applied_before
            && lag_engine
                .get_data(Cf::Meta, &big_key(KEYS - 1))
                .unwrap()
                .is_some();
        if done {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no snapshot catch-up in 120 s"
        );
    }
    let catch_up = t0.elapsed();
    stop_probe.store(true, std::sync::atomic::Ordering::Relaxed);
    let receiver_worst = probe.await.unwrap();
    latencies.sort();
    let max = *latencies.last().unwrap();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "snapshot catch-up {catch_up:?}: {} writes to the other region, p99 {p99:?}, max {max:?}; \
         receiving store's raftstore answered within {receiver_worst:?}; \
         before the snapshot writes took at most {baseline:?}",
        latencies.len()
    );
    let bound = |floor_ms: u64| Duration::from_millis(floor_ms).max(baseline * 3);
    assert!(
        kura_metashard::metrics::SNAPSHOTS_GENERATED.get() > generated_before,
        "caught up by snapshot"
    );
    assert!(
        max < bound(MAX_OTHER_REGION_WRITE_MS),
        "a write to the other region took {max:?} during the snapshot \
         (at most {baseline:?} before)"
    );
    assert!(
        receiver_worst < bound(MAX_RECEIVER_STALL_MS),
        "the receiving store's raftstore thread was busy for {receiver_worst:?} \
         (writes took at most {baseline:?} before the snapshot)"
    );

    // Byte-exact: every pair of the left region on the lagging store.
    let got = lag_engine
        .scan_data(Cf::Meta, b"\x02big-", b"\x02big.", KEYS + 1, false)
        .unwrap();
    assert_eq!(got.len(), KEYS);
    for (i, (k, v)) in got.iter().enumerate() {
        assert_eq!(k, &big_key(i));
        assert!(v == &big_value(i), "value of key {i} differs");
    }
    // And it applies what came after the snapshot.
    let k = [key(1), b"-after".to_vec()].concat();
    assert_eq!(
        propose(&c, left_leader, raw_batch(REGION_ID, version, &k))
            .await
            .unwrap(),
        (true, 0)
    );
    eventually(
        "write after the snapshot applied",
        Duration::from_secs(10),
        || lag_engine.get_data(Cf::Meta, &k).unwrap().is_some(),
    )
    .await;
    drop(lag_engine);
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// Bound on one write to another region while a 20 MB snapshot is made,
/// streamed and applied (debug build, 2 cores), unless 3 × the slowest of
/// the same writes just before is more (a loaded machine). Measured: max 19 ms with the
/// snapshot made by a worker; 240–400 ms when it was built in memory on the
/// leader's raftstore thread (the old code), which this bound rejects.
const MAX_OTHER_REGION_WRITE_MS: u64 = 150;

/// Bound on one status request to the receiving store's raftstore thread
/// meanwhile (or 3 × the baseline write, likewise). Measured: at most ~20 ms with the data written by the apply
/// worker in 1 MiB batches (~50–110 ms with 4 MiB batches: the raftstore's
/// synced write queues behind a big batch in RocksDB); 130–170 ms when the
/// whole snapshot was applied as one batch on the raftstore thread.
const MAX_RECEIVER_STALL_MS: u64 = 100;

/// A snapshot whose bytes do not match the checksum its message announces
/// is refused by the `Snapshot` call, and nothing reaches raft.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_snapshot_is_rejected() {
    use kura_metashard::peer::state::SnapshotDescriptor;
    use kura_metashard::snap::file::Crc;
    use kura_proto::metashard::{RaftMessage, SnapshotChunk};
    use protobuf::Message as _;

    let mut c = Cluster::start().await;
    let data = b"KURASNP1 some bytes".to_vec();
    let mut crc = Crc::new();
    crc.update(&data);
    // The descriptor must name the addressee among the region's members
    // (checked before a byte is received); peer 999 on store 2 is no peer
    // store 2 has, so the accepted message is dropped by the store at the end.
    let mut desc_region = region();
    desc_region.peers.push(Peer {
        id: 999,
        store_id: 2,
        is_learner: false,
    });
    let desc = SnapshotDescriptor {
        region: Some(desc_region.clone()),
        size: data.len() as u64,
        crc32c: crc.finish(),
        keys: 0,
        index: 100,
        term: 9,
    };
    let mut msg = raft::prelude::Message::default();
    msg.set_msg_type(raft::prelude::MessageType::MsgSnapshot);
    msg.from = 101;
    // No such peer: the accepted message at the end is dropped by raft.
    msg.to = 999;
    msg.term = 9;
    msg.mut_snapshot().data = prost::Message::encode_to_vec(&desc).into();
    msg.mut_snapshot().mut_metadata().index = 100;
    msg.mut_snapshot().mut_metadata().term = 9;
    msg.mut_snapshot().mut_metadata().mut_conf_state().voters =
        desc_region.peers.iter().map(|p| p.id).collect();
    let rm = RaftMessage {
        region_id: REGION_ID,
        from_store: 1,
        to_store: 2,
        region: Some(region()),
        message: msg.write_to_bytes().unwrap().into(),
        tombstone: false,
    };
    let send = |payload: Vec<Vec<u8>>| {
        let addr = c.nodes[&2].addr;
        let rm = rm.clone();
        async move {
            let mut mc = MetashardClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let mut chunks = vec![SnapshotChunk {
                message: Some(rm),
                data: Default::default(),
            }];
            chunks.extend(payload.into_iter().map(|d| SnapshotChunk {
                message: None,
                data: d.into(),
            }));
            mc.snapshot(futures::stream::iter(chunks)).await
        }
    };
    let mut bad = data.clone();
    bad[10] ^= 0x40;
    let err = send(vec![bad[..5].to_vec(), bad[5..].to_vec()])
        .await
        .expect_err("a corrupted chunk is refused");
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    let short = send(vec![data[..5].to_vec()]).await.expect_err("too short");
    assert_eq!(short.code(), tonic::Code::DataLoss, "{short:?}");
    let snap_dir = c.nodes[&2].dir.path().join("snap");
    let files: Vec<_> = std::fs::read_dir(&snap_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(files.is_empty(), "nothing kept: {files:?}");
    // The peer never saw it: still at its own state, not index 100.
    let st = c.status(2).await;
    assert!(st.applied_index < 100, "{st:?}");

    // The same bytes intact are accepted and kept for raft to apply.
    send(vec![data.clone()])
        .await
        .expect("intact snapshot accepted");
    assert!(snap_dir.join("rcv_1_9_100.snap").is_file());
    for id in 1..=3 {
        c.stop(id).await;
    }
}
