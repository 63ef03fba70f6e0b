//! The data node process: open the store, serve gRPC, register with PD, heartbeat.
//!
//! Phases of `run`: (1) open the store (scan segments; refuse a foreign or unmounted-looking
//! directory); (2) bind and start serving (reads of existing fragments work even before PD
//! answers); (3) register with PD (id 0 the first time, then the persisted id) and persist
//! the assigned id; (4) heartbeat every second with capacity/used/read_only and the repair
//! worker's progress (PD paces slot movement and decommissioning on it); (5) on
//! `shutdown`, stop the server gracefully. Background maintenance (scrub, compaction;
//! see `maintenance`) runs from phase 2 until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kura_pd_client::supervise;
use kura_pd_client::{PdClient, PdError};
use kura_proto::common::Labels;
use kura_proto::pd::{DataNode as PdDataNode, DataNodeHeartbeatRequest};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use crate::disk_health::{DiskHealth, ProbeTiming};
use crate::error::Error;
use crate::maintenance::{self, Maintenance};
use crate::repair::{Repair, RepairProgress, RepairWorker};
use crate::service::DataNodeService;
use crate::store::{DirectIo, Store, StoreOptions};

pub const DEFAULT_SEGMENT_SIZE: u64 = 256 << 20;
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1 << 30;
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of one data node process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of this node's disk: identity file and `segments/`.
    pub data_dir: PathBuf,
    /// gRPC address to bind.
    pub listen: SocketAddr,
    /// `host:port` other processes dial for gRPC.
    pub advertise: String,
    /// `host:port` of this process's status HTTP server (reported to PD).
    pub status_advertise: String,
    /// PD endpoints (`host:port` or URLs).
    pub pd_endpoints: Vec<String>,
    /// Failure-domain labels.
    pub zone: String,
    pub rack: String,
    pub host: String,
    /// A segment takes no more records once at least this long (default 256 MiB).
    pub segment_size: u64,
    /// New fragments are refused when less disk space than this is free (default 1 GiB).
    pub min_free_bytes: u64,
    /// O_DIRECT segment writes (decision 0042; default auto: on where the filesystem has it).
    pub direct_io: DirectIo,
    /// Scrub and compaction settings (`Maintenance::default()` for the defaults).
    pub maintenance: Maintenance,
    /// Healing, orphan GC and stray cleanup of the PGs this node is primary of.
    pub repair: Repair,
}

impl Config {
    fn store_options(&self) -> StoreOptions {
        StoreOptions {
            segment_size: self.segment_size,
            min_free_bytes: self.min_free_bytes,
            direct_io: self.direct_io,
        }
    }
}

/// Runs a data node until `shutdown` turns true.
pub async fn run(
    cfg: Config,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let (dir, opts) = (cfg.data_dir.clone(), cfg.store_options());
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, opts))
        .await
        .map_err(|e| Error::Internal(format!("store open task: {e}")))??;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: cfg.listen,
            source,
        })?;
    let pd = PdClient::new(&cfg.pd_endpoints)?;

    let disk = DiskHealth::new(store.dir(), ProbeTiming::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server = tokio::spawn(serve(
        store.clone(),
        disk.clone(),
        listener,
        stop_rx.clone(),
    ));
    let workers = [
        // Supervised: a panic is counted and the loop restarts (kura_pd_client::supervise).
        supervise::spawn("datanode_scrub", {
            let (store, m, stop) = (store.clone(), cfg.maintenance.clone(), stop_rx.clone());
            move || maintenance::scrub_loop(store.clone(), m.clone(), stop.clone())
        }),
        supervise::spawn("datanode_compaction", {
            let (store, m, stop) = (store.clone(), cfg.maintenance.clone(), stop_rx.clone());
            move || maintenance::compact_loop(store.clone(), m.clone(), stop.clone())
        }),
    ];

    let outcome = async {
        let node_id = tokio::select! {
            r = register(&pd, &store, &cfg) => r?,
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
            r = &mut server => return server_ended(r),
        };
        tracing::info!(node_id, addr = %cfg.advertise, "data node registered with PD");
        // Ready while the disk answers its probe (the first runs now).
        let _disk_probe = AbortOnDrop(supervise::spawn("datanode_disk_probe", {
            let (disk, ready, stop) = (disk.clone(), ready.clone(), stop_rx.clone());
            move || disk.clone().run(ready.clone(), stop.clone())
        }));
        let repair = RepairWorker::new(cfg.advertise.clone(), pd.clone(), cfg.repair.clone());
        let progress = repair.progress();
        // The worker's caches survive a panicked pass: the restarted loop
        // locks the same worker (a tokio Mutex is not poisoned by a panic).
        let repair = Arc::new(tokio::sync::Mutex::new(repair));
        let repair = AbortOnDrop(supervise::spawn("datanode_repair", {
            let stop = stop_rx.clone();
            move || {
                let (repair, stop) = (repair.clone(), stop.clone());
                async move { repair.lock().await.run(stop).await }
            }
        }));
        let mut heartbeat = supervise::spawn("datanode_heartbeat", {
            let (pd, store, cfg) = (pd.clone(), store.clone(), cfg.clone());
            move || {
                heartbeat_loop(
                    pd.clone(),
                    store.clone(),
                    cfg.clone(),
                    node_id,
                    progress.clone(),
                )
            }
        });
        let r = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => Ok(()),
            r = &mut server => server_ended(r),
            r = &mut heartbeat => Err(Error::Internal(format!("heartbeat loop ended: {r:?}"))),
        };
        heartbeat.abort();
        drop(repair);
        r
    }
    .await;

    ready.store(false, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    // Let the workers leave their blocking work, so no thread touches the store after
    // `run` returns.
    for w in workers {
        if tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .is_err()
        {
            tracing::warn!("a maintenance worker did not stop within 5 s");
        }
    }
    if !server.is_finished() {
        match tokio::time::timeout(Duration::from_secs(10), server).await {
            Ok(r) => server_ended(r)?,
            Err(_) => tracing::warn!("gRPC server did not stop within 10 s"),
        }
    }
    outcome
}

fn server_ended(r: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    r.map_err(|e| Error::Internal(format!("server task: {e}")))?
}

/// HTTP/2 receive windows of the data node's server (see `serve`).
const PUT_STREAM_WINDOW: u32 = 4 << 20;
const PUT_CONNECTION_WINDOW: u32 = 64 << 20;

/// Serves the DataNode gRPC service for `store` on `listener` until `shutdown` is true.
/// Independent of PD, so tests and tools can run a node with a known store.
pub async fn serve(
    store: Arc<Store>,
    disk: Arc<DiskHealth>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    kura_pd_client::tls::server_builder()
        .map_err(|e| Error::Internal(e.to_string()))?
        // PUT streams flow into the node: hyper's 1 MiB windows, shared by every
        // gateway stream on a connection, stalled 16 concurrent PUTs on
        // WINDOW_UPDATE round trips. Streams are drained as they arrive (into
        // the segment, or the group-commit buffer for small records, which has
        // its own budget), so the connection window bounds what a gateway can
        // park in flight here.
        .initial_stream_window_size(Some(PUT_STREAM_WINDOW))
        .initial_connection_window_size(Some(PUT_CONNECTION_WINDOW))
        .add_service(crate::raw_put::DataPathServer::new(
            DataNodeService::new(store.clone(), disk).with_stopping(shutdown.clone()),
        ))
        .add_service(crate::raw_read::RawReadService::new(store))
        .serve_with_incoming_shutdown(kura_pd_client::tls::incoming(incoming), async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

fn describe(cfg: &Config, store: &Store, id: u64) -> PdDataNode {
    let cap = store.capacity();
    PdDataNode {
        id,
        address: cfg.advertise.clone(),
        status_address: cfg.status_advertise.clone(),
        labels: Some(Labels {
            zone: cfg.zone.clone(),
            rack: cfg.rack.clone(),
            host: cfg.host.clone(),
        }),
        capacity_bytes: cap.capacity_bytes,
        used_bytes: cap.used_bytes,
        last_heartbeat_unix_ms: 0,
        read_only: cap.read_only,
    }
}

/// Registers until PD answers (retrying while it is unreachable), persisting a new id.
async fn register(pd: &PdClient, store: &Arc<Store>, cfg: &Config) -> Result<u64, Error> {
    let persisted = store.node_id();
    let mut backoff = Duration::from_millis(200);
    loop {
        match pd
            .register_data_node(describe(cfg, store, persisted), &store.uuid())
            .await
        {
            Ok(assigned) => {
                if persisted != 0 && assigned != persisted {
                    return Err(Error::NodeIdMismatch {
                        persisted,
                        assigned,
                    });
                }
                if assigned == 0 {
                    return Err(Error::Internal("PD assigned node id 0".into()));
                }
                if persisted == 0 {
                    let s = store.clone();
                    tokio::task::spawn_blocking(move || s.set_node_id(assigned))
                        .await
                        .map_err(|e| Error::Internal(format!("persist node id: {e}")))??;
                }
                return Ok(assigned);
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "PD registration failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn heartbeat_loop(
    pd: PdClient,
    store: Arc<Store>,
    cfg: Config,
    node_id: u64,
    repair: Arc<RepairProgress>,
) {
    // One attempt per tick: the next tick is the retry.
    let pd = pd.with_attempts(1);
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let s = store.clone();
        let cap = match tokio::task::spawn_blocking(move || s.refresh_capacity()).await {
            Ok(Ok(cap)) => cap,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read disk capacity");
                store.capacity()
            }
            Err(e) => {
                tracing::warn!(error = %e, "capacity task failed");
                store.capacity()
            }
        };
        let progress = repair.report();
        let req = DataNodeHeartbeatRequest {
            node_id,
            capacity_bytes: cap.capacity_bytes,
            used_bytes: cap.used_bytes,
            read_only: cap.read_only,
            repair_backlog: progress.backlog,
            repair_passes: progress.passes,
            repair_map_version: progress.map_version,
            // The data dir's identity: PD refuses heartbeats of this id
            // without it (decision 0044).
            uuid: store.uuid(),
        };
        match pd.data_node_heartbeat(req).await {
            Ok(()) => {
                if failing {
                    tracing::info!("PD heartbeats succeed again");
                }
                failing = false;
            }
            Err(PdError::Rejected(msg)) => {
                // PD may have lost us (e.g. restarted without state): register again.
                tracing::warn!(%msg, "PD rejected heartbeat; re-registering");
                if let Err(e) = pd
                    .register_data_node(describe(&cfg, &store, node_id), &store.uuid())
                    .await
                {
                    tracing::warn!(error = %e, "re-registration failed");
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "PD heartbeat failed");
                }
                failing = true;
            }
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
