//! Store lifecycle: `run` (the process entry point the `kura` binary calls)
//! and [`Store`], the embeddable core that tests start without PD.
//!
//! `run`: open `<data_dir>/db` → store id (persisted, else allocated by PD
//! and persisted before serving; re-registered on every start so PD learns a
//! new address) → bind → [`Store::start`] (load persisted peers, raftstore
//! thread, gRPC server, PD worker) → `ready` → wait for shutdown → stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kura_pd_client::PdClient;
use kura_proto::common::{Labels, Region};
use kura_proto::metashard::metashard_server::MetashardServer;
use kura_proto::pd::{self, StoreHeartbeatRequest};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::StreamExt;

use crate::engine::Engine;
use crate::fsm::poller::{self, Poller};
use crate::fsm::{PdTask, Router, StoreMsg};
use crate::keys::local;
use crate::load_split::LoadSplitConfig;
use crate::peer::state::StoreIdent;
use crate::peer::RaftConfig;
use crate::service::MetashardService;
use crate::snap::{self, SnapManager};
use crate::split_check::{self, SplitCheckConfig};
use crate::transport::{PdStoreResolver, StoreResolver, Transport};
use crate::Error;

/// Settings of one metashard store process.
#[derive(Clone, Debug)]
pub struct Config {
    /// Everything of the store lives here (RocksDB at `<data_dir>/db`, raft
    /// snapshot files at `<data_dir>/snap`).
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// `host:port` other processes dial for gRPC.
    pub advertise: String,
    /// PD endpoints (`host:port`).
    pub pd_endpoints: Vec<String>,
    /// Failure-domain labels reported to PD.
    pub zone: String,
    pub rack: String,
    pub host: String,
    /// Status (HTTP) address reported to PD.
    pub status_advertise: String,
    /// Raft tick interval.
    pub raft_tick_ms: u64,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Leader heartbeat interval in ticks.
    pub heartbeat_ticks: usize,
    /// Compact a region's log once applied is this many entries past its first index.
    pub log_gc_threshold: u64,
    /// ... or once it holds about this many bytes (0: no size limit).
    pub log_gc_size_limit: u64,
    /// Split a region automatically above this many `meta` keys (0: never by keys).
    pub region_split_keys: u64,
    /// ... or above this many bytes of `meta` keys and values (0: never by size).
    pub region_split_size: u64,
    /// Never split a region automatically below this many keys.
    pub region_split_min_keys: u64,
    /// Least seconds between two automatic splits of one region.
    pub region_split_interval_secs: u64,
    /// Split a region whose leader sees at least this many requests per
    /// second for a few seconds, where its load divides evenly (0: never by load).
    pub region_split_load_qps: u64,
    /// Seconds between a leader's periodic region heartbeats to PD.
    pub region_heartbeat_secs: u64,
    /// Leaders answer reads from their lease when it is valid (decision 0013).
    pub lease_reads: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./kura-data/metashard"),
            listen: SocketAddr::from(([127, 0, 0, 1], 20160)),
            advertise: "127.0.0.1:20160".into(),
            pd_endpoints: vec!["127.0.0.1:2379".into()],
            zone: String::new(),
            rack: String::new(),
            host: String::new(),
            status_advertise: String::new(),
            raft_tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            log_gc_threshold: 1000,
            log_gc_size_limit: 32 << 20,
            region_split_keys: 200_000,
            region_split_size: 96 << 20,
            region_split_min_keys: 1_000,
            region_split_interval_secs: 10,
            region_split_load_qps: LoadSplitConfig::default().qps_threshold,
            region_heartbeat_secs: 10,
            lease_reads: true,
        }
    }
}

impl Config {
    /// Defaults with the given addresses and data directory.
    pub fn new(
        data_dir: PathBuf,
        listen: SocketAddr,
        advertise: String,
        pd_endpoints: Vec<String>,
    ) -> Self {
        Config {
            data_dir,
            listen,
            advertise,
            pd_endpoints,
            ..Default::default()
        }
    }

    pub fn raft_config(&self) -> RaftConfig {
        RaftConfig {
            tick: Duration::from_millis(self.raft_tick_ms.max(1)),
            election_ticks: self.election_ticks,
            heartbeat_ticks: self.heartbeat_ticks,
            log_gc_threshold: self.log_gc_threshold,
            log_gc_size_limit: self.log_gc_size_limit,
            split_check: SplitCheckConfig {
                split_keys: self.region_split_keys,
                split_size: self.region_split_size,
                min_keys: self.region_split_min_keys,
                min_interval: Duration::from_secs(self.region_split_interval_secs),
                min_check_interval: Duration::from_secs(1),
            },
            load_split: LoadSplitConfig {
                qps_threshold: self.region_split_load_qps,
                ..LoadSplitConfig::default()
            },
            region_heartbeat: Duration::from_secs(self.region_heartbeat_secs.max(1)),
            lease_reads: self.lease_reads,
            ..RaftConfig::default()
        }
    }
}

/// Runs a metashard store until `shutdown` flips to true.
pub async fn run(
    cfg: Config,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    if cfg.heartbeat_ticks == 0 || cfg.election_ticks <= cfg.heartbeat_ticks {
        return Err(Error::Config(
            "election_ticks must exceed heartbeat_ticks > 0".into(),
        ));
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", cfg.data_dir.display())))?;
    let engine = Engine::open(&cfg.data_dir.join("db"))?;
    let pd = PdClient::new(&cfg.pd_endpoints)?;
    let Some(store_id) = register(&cfg, &engine, &pd, &mut shutdown).await? else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: cfg.listen,
            source,
        })?;
    let resolver: Arc<dyn StoreResolver> = Arc::new(PdStoreResolver::new(pd.clone()));
    let store = Store::start(StoreOptions {
        engine,
        store_id,
        listener,
        resolver,
        raft: cfg.raft_config(),
        pd: Some(pd),
    })
    .await?;
    ready.store(true, Ordering::SeqCst);
    tracing::info!(store_id, listen = %cfg.listen, advertise = %cfg.advertise, "metashard store serving");
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let fatal = loop {
        tokio::select! {
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break false;
                }
            }
            _ = check.tick() => {
                if store.raftstore_stopped() {
                    break true;
                }
            }
        }
    };
    ready.store(false, Ordering::SeqCst);
    let res = store.stop().await;
    if fatal {
        return Err(res.err().unwrap_or(Error::StoreStopped));
    }
    res
}

/// The persisted store id, or one PD allocates (persisted before serving).
/// `None` when shutdown came first. The store's identity (a uuid) is made
/// and synced with the first write to a new data dir, before PD hears of it,
/// so PD can bind the id it gives to this dir: a wiped dir has a new uuid
/// and gets a new id, never the old one with an empty log (decision 0024).
async fn register(
    cfg: &Config,
    engine: &Engine,
    pd: &PdClient,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<u64>, Error> {
    let mut ident = engine
        .get_raft_msg::<StoreIdent>(local::STORE_IDENT_KEY)?
        .unwrap_or_default();
    if ident.uuid.is_empty() {
        // A new dir, or one from before identities (PD adopts its uuid).
        ident.uuid = new_uuid();
        let mut wb = engine.batch();
        wb.put_raft_msg(local::STORE_IDENT_KEY, &ident);
        engine.write(wb, true)?;
    }
    let known = ident.store_id;
    let meta = pd::Store {
        id: known,
        address: cfg.advertise.clone(),
        status_address: cfg.status_advertise.clone(),
        labels: Some(Labels {
            zone: cfg.zone.clone(),
            rack: cfg.rack.clone(),
            host: cfg.host.clone(),
        }),
        state: pd::store::State::Up as i32,
        last_heartbeat_unix_ms: 0,
    };
    let id = loop {
        match pd.register_store(meta.clone(), &ident.uuid).await {
            Ok(id) => break id,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "PD unreachable; retrying store registration");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return Ok(None) },
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    if id == 0 {
        return Err(Error::Config("PD allocated store id 0".into()));
    }
    if known != 0 && id != known {
        return Err(Error::Config(format!(
            "PD answered store id {id} for this store's id {known}"
        )));
    }
    if known == 0 {
        ident.store_id = id;
        let mut wb = engine.batch();
        wb.put_raft_msg(local::STORE_IDENT_KEY, &ident);
        engine.write(wb, true)?;
    }
    Ok(Some(id))
}

/// A fresh data-dir identity: 128 random bits as 32 lower-case hex digits.
fn new_uuid() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`Store::start`] needs; tests build it without PD.
pub struct StoreOptions {
    pub engine: Engine,
    pub store_id: u64,
    pub listener: tokio::net::TcpListener,
    pub resolver: Arc<dyn StoreResolver>,
    pub raft: RaftConfig,
    /// When set: store heartbeats (creating the peers PD asks for) and region heartbeats.
    pub pd: Option<PdClient>,
}

/// A running store: raftstore thread, gRPC server and PD worker.
pub struct Store {
    store_id: u64,
    router: Router,
    engine: Engine,
    local_addr: SocketAddr,
    raftstore: std::thread::JoinHandle<Result<(), Error>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    stop_server: watch::Sender<bool>,
    pd_worker: Option<tokio::task::JoinHandle<()>>,
    checker: tokio::task::JoinHandle<()>,
    /// Snapshot workers (they hold the engine: stopped with the store).
    snap: Arc<SnapManager>,
}

impl Store {
    pub async fn start(opts: StoreOptions) -> Result<Store, Error> {
        // Heartbeats carry the data dir's identity (decision 0044): PD refuses
        // a heartbeat of this id without it once one carried it, so a forger
        // cannot keep the id looking up after this store is gone. None (tests
        // that never registered): empty, which PD takes only from old binaries.
        let uuid: Arc<str> = opts
            .engine
            .get_raft_msg::<StoreIdent>(local::STORE_IDENT_KEY)?
            .map(|i| i.uuid)
            .unwrap_or_default()
            .into();
        let (router, rx) = Router::channel();
        let snap = SnapManager::start(
            opts.engine.clone(),
            snap::snap_dir_of(&opts.engine),
            router.clone(),
        )
        .map_err(|e| Error::Config(format!("cannot start the snapshot workers: {e}")))?;
        snap.set_max_bytes(snap::max_snapshot_bytes(opts.raft.split_check.split_size));
        let transport = Transport::new(
            opts.resolver.clone(),
            tokio::runtime::Handle::current(),
            router.clone(),
            snap.clone(),
        );
        let (pd_tx, pd_rx) = mpsc::unbounded_channel();
        let pd_tx = opts.pd.as_ref().map(|_| pd_tx);
        let (check_tx, check_rx) = mpsc::unbounded_channel();
        let split_cfg = opts.raft.split_check.clone();
        let poller = match Poller::new(
            opts.engine.clone(),
            opts.store_id,
            opts.raft,
            transport,
            rx,
            pd_tx,
            snap.clone(),
        ) {
            Ok(p) => p.with_split_checker(check_tx).with_store_flow(&router),
            Err(e) => {
                snap.stop();
                return Err(e);
            }
        };
        // Supervised: a panic is counted and the checker restarts on the same queue.
        let checker = kura_pd_client::supervise::spawn("metashard_split_checker", {
            let (engine, router, pd) = (opts.engine.clone(), router.clone(), opts.pd.clone());
            let check_rx = Arc::new(tokio::sync::Mutex::new(check_rx));
            move || {
                let (cfg, engine, router, pd) = (
                    split_cfg.clone(),
                    engine.clone(),
                    router.clone(),
                    pd.clone(),
                );
                let check_rx = check_rx.clone();
                async move {
                    let mut rx = check_rx.lock().await;
                    split_check::run_checker(cfg, engine, router, pd, &mut rx).await
                }
            }
        });
        let raftstore = poller::spawn(poller)
            .map_err(|e| Error::Config(format!("cannot spawn raftstore thread: {e}")))?;
        let local_addr = opts.listener.local_addr().map_err(|source| Error::Bind {
            addr: ([0, 0, 0, 0], 0).into(),
            source,
        })?;
        let (stop_server, stop_rx) = watch::channel(false);
        let service = MetashardService::new(
            router.clone(),
            opts.engine.clone(),
            opts.resolver.clone(),
            opts.pd.clone(),
            stop_rx.clone(),
            snap.clone(),
        );
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(opts.listener).map(|s| {
            if let Ok(s) = &s {
                let _ = s.set_nodelay(true);
            }
            s
        });
        let mut stop = stop_rx;
        let server = tokio::spawn(
            kura_pd_client::tls::server_builder()
                .map_err(|e| Error::Config(e.to_string()))?
                .add_service(
                    MetashardServer::new(service)
                        .max_decoding_message_size(crate::transport::MAX_RAFT_DECODE_BYTES)
                        .max_encoding_message_size(512 << 20),
                )
                .serve_with_incoming_shutdown(
                    kura_pd_client::tls::incoming(incoming),
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    },
                ),
        );
        let pd_worker = opts.pd.map(|pd| {
            let (store_id, router) = (opts.store_id, router.clone());
            let pd_rx = Arc::new(tokio::sync::Mutex::new(pd_rx));
            kura_pd_client::supervise::spawn("metashard_pd_worker", move || {
                let (pd, router, pd_rx, uuid) =
                    (pd.clone(), router.clone(), pd_rx.clone(), uuid.clone());
                async move {
                    pd_worker(pd, store_id, &uuid, router, &mut *pd_rx.lock().await).await
                }
            })
        });
        Ok(Store {
            store_id: opts.store_id,
            router,
            engine: opts.engine,
            local_addr,
            raftstore,
            server,
            stop_server,
            pd_worker,
            checker,
            snap,
        })
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The address the gRPC server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// True when the raftstore thread has exited (fatal error).
    pub fn raftstore_stopped(&self) -> bool {
        self.raftstore.is_finished()
    }

    /// Creates a peer of `region` here (what PD's `create_peers` and the `CreatePeer` rpc do).
    pub async fn create_peer(
        &self,
        region: Region,
        peer_id: u64,
        initial: bool,
    ) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.router.send(StoreMsg::CreatePeer {
            region,
            peer_id,
            initial,
            cb: Some(tx),
        })?;
        rx.await
            .map_err(|_| Error::StoreStopped)?
            .map_err(Error::Config)
    }

    /// Stops serving, then stops the raftstore thread. Acknowledged writes are
    /// already durable, so this is also what a crash looks like to peers.
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.stop_server.send(true);
        if let Some(w) = &self.pd_worker {
            w.abort();
        }
        self.checker.abort();
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(3), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        let _ = self.router.send(StoreMsg::Shutdown);
        let raftstore = self.raftstore;
        let snap = self.snap;
        tokio::task::spawn_blocking(move || {
            let res = raftstore.join();
            snap.stop();
            res
        })
        .await
        .map_err(|_| Error::StoreStopped)?
        .map_err(|_| Error::StoreStopped)?
    }
}

/// Store heartbeats every second (creating the peers PD asks for) and the
/// region heartbeats the raftstore thread produces.
async fn pd_worker(
    pd: PdClient,
    store_id: u64,
    uuid: &str,
    router: Router,
    tasks: &mut mpsc::UnboundedReceiver<PdTask>,
) {
    let pd = pd.with_attempts(2);
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => store_heartbeat(&pd, store_id, uuid, &router).await,
            t = tasks.recv() => match t {
                None => return,
                Some(PdTask::RegionHeartbeat(req)) => {
                    let pd = pd.clone();
                    tokio::spawn(async move {
                        if let Err(e) = pd.region_heartbeat(req).await {
                            tracing::debug!(error = %e, "region heartbeat failed");
                        }
                    });
                }
                Some(PdTask::ValidatePeer { region_id }) => {
                    let (pd, router) = (pd.clone(), router.clone());
                    tokio::spawn(async move {
                        let answer = pd
                            .get_region_by_id(region_id)
                            .await
                            .map(|info| info.and_then(|i| i.region))
                            .map_err(|e| e.to_string());
                        let _ = router.send(StoreMsg::PeerValidated { region_id, answer });
                    });
                }
            },
        }
    }
}

async fn store_heartbeat(pd: &PdClient, store_id: u64, uuid: &str, router: &Router) {
    let (tx, rx) = oneshot::channel();
    if router.send(StoreMsg::Stats { cb: tx }).is_err() {
        return;
    }
    let Ok(stats) = rx.await else { return };
    let flow = router.store_flow().take();
    let req = StoreHeartbeatRequest {
        store_id,
        region_count: stats.region_count,
        leader_count: stats.leader_count,
        capacity_bytes: 0,
        used_bytes: stats.used_bytes,
        bytes_written: flow.bytes_written,
        keys_written: flow.keys_written,
        bytes_read: flow.bytes_read,
        keys_read: flow.keys_read,
        interval_ms: flow.interval_ms,
        uuid: uuid.to_string(),
    };
    match pd.store_heartbeat(req).await {
        Ok(resp) => {
            for cp in resp.create_peers {
                let Some(region) = cp.region else { continue };
                tracing::info!(
                    region_id = region.id,
                    peer_id = cp.peer_id,
                    initial = cp.initial,
                    "PD asks for a peer"
                );
                let _ = router.send(StoreMsg::CreatePeer {
                    region,
                    peer_id: cp.peer_id,
                    initial: cp.initial,
                    cb: None,
                });
            }
        }
        Err(e) => tracing::warn!(error = %e, "store heartbeat failed"),
    }
}
