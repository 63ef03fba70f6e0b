//! Kura's placement driver (PD): cluster membership, id allocation, the region
//! map, the first region's bootstrap and the placement-group maps (one per
//! storage class: REPLICA3, EC_4_2, EC_8_3) and their step-by-step changes
//! (rebalance on join, decommission, down nodes); its gRPC service, HTTP
//! admin API and the `pdctl` CLI.
//!
//! Owns: the cluster model as pure logic (`cluster`, `bootstrap`, `placement`,
//! `rebalance`), the scheduling core that moves region leaders (`schedule`),
//! read/write flow from heartbeats (`flow`), the shares of cluster-wide
//! rate limits granted to gateways (`ratelimit`, soft state),
//! its persistence behind the `Storage` trait (`storage`: one fsynced JSON file
//! for a single PD; `replication`: the same document through a 3-member
//! raft-rs group for `--peers`), the shared state every front end uses
//! (`server::PdCore`), the gRPC service (`service`), the HTTP API (`http`) and
//! the CLI (`pdctl`), and the admin settings kept in the persisted state
//! (`config`: store labels/weights/limits, the runtime schedule config,
//! disabled/paused schedulers). Must not depend on gateway or datanode (it
//! uses `kura_metashard::keys` only to find an object key's region); talks
//! to nothing but its own clients.
//!
//! Start reading at `run` below, then `server.rs`, then `cluster/mod.rs`.

pub mod bootstrap;
pub mod cluster;
pub mod conf_change;
pub mod config;
mod error;
pub mod flow;
pub mod http;
pub mod http_auth;
mod http_serve;
pub mod merge;
pub mod metrics;
pub mod object_region;
pub mod operator;
pub mod pdctl;
pub mod placement;
pub mod ratelimit;
pub mod rebalance;
pub mod region_rpc;
pub mod replication;
pub mod schedule;
pub mod server;
pub mod service;
pub mod settings_http;
pub mod storage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kura_proto::pd::pd_server::PdServer;
use tokio::net::TcpListener;

pub use error::{Error, LEADER_METADATA};
pub use pdctl::pdctl_main;
pub use server::PdCore;
pub use storage::{FileStorage, MemStorage, Storage};

/// How often PD re-checks bootstrap, placement, slot movement and its gauges.
const TICK: Duration = Duration::from_millis(500);

/// PD settings (the `kura pd` flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory of PD's state file.
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// gRPC address others dial (`host:port`).
    pub advertise: String,
    /// HTTP admin API address (what `pdctl -u` talks to).
    pub http_listen: SocketAddr,
    /// Replicated PD: this member's id and every member (`--member-id`,
    /// `--peers`); None for a single PD.
    pub replication: Option<(u64, Vec<replication::PeerSpec>)>,
    /// Peers per metadata region, one per zone (3).
    pub max_replicas: u32,
    /// Data nodes to wait for (in ≥ 3 zones) before building the placement maps.
    pub expected_data_nodes: u32,
    /// Placement groups in each storage class's map.
    pub num_pgs: u32,
    /// After this long, build each class's map once the nodes up satisfy its rules.
    pub placement_wait: Duration,
    /// A store or data node silent this long shows as "Down" (and a PG with
    /// such a member moves no slot of its serving members).
    pub max_store_down_time: Duration,
    /// Most slots moved per storage class in one map step (rebalance on
    /// join, decommission, down nodes); 0 turns slot movement off.
    pub max_moves_per_step: usize,
    /// Least time between two map steps.
    pub rebalance_interval: Duration,
    /// Longest a map step waits for the data nodes' repair to catch up with
    /// the previous step (every serving node reported a pass on its map
    /// version with nothing left to rebuild); after it the step goes anyway.
    pub repair_catch_up_limit: Duration,
    /// A data node silent this long has its slots rebuilt elsewhere. Long
    /// enough that a restart or short outage moves nothing.
    pub datanode_down_after: Duration,
    /// How often the merge checker looks for small quiet neighbours
    /// (zero: never merge automatically).
    pub merge_check_interval: Duration,
    /// What the merge checker merges.
    pub merge: merge::MergeCheckConfig,
    /// Time between scheduling rounds (balance-leader); zero: no automatic
    /// scheduling (admin operators still run).
    pub schedule_interval: Duration,
    /// Leader transfers each store may take part in per minute ("store limit").
    pub leader_transfers_per_store_per_minute: usize,
    /// Who may read and change through the HTTP API.
    pub http_auth: http_auth::HttpAuth,
}

impl Config {
    /// Defaults for everything but the directory and addresses.
    pub fn new(data_dir: PathBuf, listen: SocketAddr, http_listen: SocketAddr) -> Self {
        Config {
            data_dir,
            listen,
            advertise: listen.to_string(),
            http_listen,
            replication: None,
            max_replicas: 3,
            expected_data_nodes: 6,
            num_pgs: 64,
            placement_wait: Duration::from_secs(10),
            max_store_down_time: Duration::from_secs(30),
            max_moves_per_step: 8,
            rebalance_interval: Duration::from_secs(10),
            repair_catch_up_limit: Duration::from_secs(600),
            datanode_down_after: Duration::from_secs(300),
            merge_check_interval: Duration::from_secs(10),
            merge: merge::MergeCheckConfig::default(),
            schedule_interval: Duration::from_secs(3),
            leader_transfers_per_store_per_minute: 120,
            http_auth: http_auth::HttpAuth::open(),
        }
    }
}

/// Binds the gRPC and HTTP listeners, then serves until `shutdown` flips.
pub async fn run(
    cfg: Config,
    ready: Arc<AtomicBool>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error> {
    let grpc = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| Error::Bind {
            what: "gRPC",
            addr: cfg.listen,
            source,
        })?;
    let http = TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|source| Error::Bind {
            what: "HTTP",
            addr: cfg.http_listen,
            source,
        })?;
    serve(cfg, grpc, http, ready, shutdown).await
}

/// [`run`] on listeners the caller bound (tests use ephemeral ports).
pub async fn serve(
    cfg: Config,
    grpc: TcpListener,
    http: TcpListener,
    ready: Arc<AtomicBool>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error> {
    let (core, replica) = match &cfg.replication {
        None => {
            let storage = Arc::new(FileStorage::open(&cfg.data_dir)?);
            (Arc::new(PdCore::open(cfg.clone(), storage).await?), None)
        }
        Some((id, peers)) => {
            let rcfg =
                replication::ReplicaConfig::new(*id, peers.clone(), cfg.data_dir.join("raft"));
            let replica = replication::Replica::start(rcfg)?;
            let core = Arc::new(PdCore::replicated(cfg.clone(), replica.clone()));
            (core, Some(replica))
        }
    };
    if replica.is_none() {
        metrics::metrics().leader.set(1);
    }
    // Supervised: a panicking loop is counted and restarted (kura_pd_client::supervise).
    let ticker = kura_pd_client::supervise::spawn("pd_tick", {
        let (core, shutdown) = (core.clone(), shutdown.clone());
        move || core.clone().tick_loop(TICK, shutdown.clone())
    });
    let merge_checker = (!cfg.merge_check_interval.is_zero()).then(|| {
        let (core, every, shutdown) = (core.clone(), cfg.merge_check_interval, shutdown.clone());
        kura_pd_client::supervise::spawn("pd_merge_checker", move || {
            merge::merge_check_loop(core.clone(), every, shutdown.clone())
        })
    });
    let scheduler = kura_pd_client::supervise::spawn("pd_scheduler", {
        let (core, shutdown) = (core.clone(), shutdown.clone());
        move || schedule::coordinator::schedule_loop(core.clone(), shutdown.clone())
    });

    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // A dropped sender also means stop.
        let _ = rx.wait_for(|v| *v).await;
    };
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    let peer_service = replica.as_ref().map(|r| r.peer_service()).transpose()?;
    let grpc_server = kura_pd_client::tls::server_builder()?
        .add_service(PdServer::new(service::PdService::new(core.clone())))
        .add_optional_service(peer_service)
        .serve_with_incoming_shutdown(
            kura_pd_client::tls::incoming(incoming),
            stop(shutdown.clone()),
        );
    let router = http::router(core.clone()).layer(axum::middleware::from_fn_with_state(
        Arc::new(cfg.http_auth.clone()),
        http_auth::gate,
    ));
    let http_server = http_serve::serve(http, router, stop(shutdown.clone()));

    tracing::info!(grpc = %cfg.listen, http = %cfg.http_listen, "PD serving");
    ready.store(true, Ordering::Release);
    let result = tokio::try_join!(
        async { grpc_server.await.map_err(Error::Grpc) },
        http_server
    );
    ready.store(false, Ordering::Release);
    ticker.abort();
    if let Some(m) = merge_checker {
        m.abort();
    }
    if let Some(r) = replica {
        tokio::task::spawn_blocking(move || r.stop()).await.ok();
    }
    scheduler.abort();
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `kura` binary builds `Config` as a struct literal (src/roles.rs) and
    /// calls `run` and `pdctl_main`: keep those signatures.
    #[test]
    fn the_kura_binary_contract_holds() {
        let listen: SocketAddr = "127.0.0.1:2380".parse().unwrap();
        let cfg = Config {
            data_dir: PathBuf::from("/tmp/pd"),
            listen,
            advertise: listen.to_string(),
            http_listen: "127.0.0.1:2379".parse().unwrap(),
            replication: None,
            max_replicas: 3,
            expected_data_nodes: 6,
            num_pgs: 64,
            placement_wait: Duration::from_secs(10),
            max_store_down_time: Duration::from_secs(30),
            max_moves_per_step: 8,
            rebalance_interval: Duration::from_secs(10),
            repair_catch_up_limit: Duration::from_secs(600),
            datanode_down_after: Duration::from_secs(300),
            merge_check_interval: Duration::from_secs(10),
            merge: merge::MergeCheckConfig::default(),
            schedule_interval: Duration::from_secs(3),
            leader_transfers_per_store_per_minute: 120,
            http_auth: http_auth::HttpAuth::open(),
        };
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let _run: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send>> =
            Box::pin(run(cfg, Arc::new(AtomicBool::new(false)), rx));
        let _main: fn(Vec<String>) -> i32 = pdctl_main;
    }
}
