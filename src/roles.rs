//! One process per role: flags → the role crate's `Config`, logging, the status
//! server, signal handling, and the role's `run`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

/// Flags every server role shares.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Address serving /metrics, /health and /ready.
    #[arg(long)]
    pub status_addr: SocketAddr,
    /// Cluster CA certificate (PEM). With --node-cert and --node-key, every
    /// internal connection (gRPC between all processes, PD's HTTP API) is
    /// mutual TLS: peers must present a certificate this CA signed, and
    /// plaintext is refused (docs/security.md).
    #[arg(long, requires_all = ["node_cert", "node_key"])]
    pub ca_cert: Option<PathBuf>,
    /// This process's certificate (PEM) for internal connections, signed by --ca-cert.
    #[arg(long, requires = "ca_cert")]
    pub node_cert: Option<PathBuf>,
    /// The private key (PEM) of --node-cert.
    #[arg(long, requires = "ca_cert")]
    pub node_key: Option<PathBuf>,
    /// Certificate revocation lists (PEM) of the cluster CA: a peer whose
    /// certificate one revokes fails the handshake. The CA, certificate, key
    /// and CRL files are reloaded when they change and on SIGHUP.
    #[arg(long, requires = "ca_cert", value_name = "FILE")]
    pub crl: Option<PathBuf>,
}

impl CommonArgs {
    fn tls(&self) -> Option<kura_pd_client::tls::TlsPaths> {
        match (&self.ca_cert, &self.node_cert, &self.node_key) {
            (Some(ca), Some(cert), Some(key)) => Some(kura_pd_client::tls::TlsPaths {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

/// Flags of roles that register with PD under failure-domain labels.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Directory for this process's data.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Address other processes dial (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// PD gRPC endpoints, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub pd: Vec<String>,
    /// Failure domain: zone (PD keeps one replica of a region, and at most a
    /// fair share of a placement group, per zone).
    #[arg(long, default_value = "")]
    pub zone: String,
    /// Failure domain: rack within the zone.
    #[arg(long, default_value = "")]
    pub rack: String,
    /// Failure domain: host within the rack.
    #[arg(long, default_value = "")]
    pub host: String,
}

#[derive(Debug, Args)]
pub struct PdArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Directory for PD's state.
    #[arg(long)]
    data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:2380")]
    listen: SocketAddr,
    /// Address other processes dial (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// HTTP admin API address (what `pdctl -u` talks to).
    #[arg(long, default_value = "127.0.0.1:2379")]
    http_listen: SocketAddr,
    /// Replicated PD: every member (this one included) as
    /// ID=GRPC_ADDR@HTTP_ADDR, comma-separated, the same list on each member
    /// (e.g. 1=10.0.0.1:2380@10.0.0.1:2379,2=...,3=...). The members form
    /// one Raft group; only the leader serves. Without it PD is one process.
    #[arg(long, value_delimiter = ',', requires = "member_id")]
    peers: Vec<String>,
    /// This member's id in --peers.
    #[arg(long, requires = "peers")]
    member_id: Option<u64>,
    /// Replicas per metadata region (one per zone).
    #[arg(long, default_value_t = 3)]
    max_replicas: u32,
    /// Data nodes to wait for before the placement-group map is built.
    #[arg(long, default_value_t = 6)]
    expected_data_nodes: u32,
    /// Placement groups per storage class.
    #[arg(long, default_value_t = 64)]
    num_pgs: u32,
    /// Seconds to wait for --expected-data-nodes before placing on fewer.
    #[arg(long, default_value_t = 10)]
    placement_wait_secs: u64,
    /// Seconds without heartbeat after which a store or data node is down
    /// (initial value: `pdctl config set max-store-down-time` wins once set).
    #[arg(long, default_value_t = 30)]
    max_store_down_secs: u64,
    /// Most PG slots moved per storage class in one placement step
    /// (rebalance on join, decommission, down nodes); 0 turns movement off.
    #[arg(long, default_value_t = 8)]
    max_moves_per_step: usize,
    /// Least seconds between two placement steps.
    #[arg(long, default_value_t = 10)]
    rebalance_interval_secs: u64,
    /// Most seconds a placement step waits for the data nodes' repair to
    /// catch up with the previous step before it goes anyway.
    #[arg(long, default_value_t = 600)]
    repair_catch_up_limit_secs: u64,
    /// Seconds without heartbeat after which a data node's slots are rebuilt elsewhere.
    #[arg(long, default_value_t = 300)]
    datanode_down_after_secs: u64,
    /// Seconds between merge checks: two adjacent small, quiet regions are
    /// merged (0: never merge automatically).
    #[arg(long, default_value_t = 10)]
    merge_check_interval_secs: u64,
    /// A region that split or merged less than this many seconds ago is not
    /// merged (so a region that just split is not merged back). Initial
    /// value of `split-merge-interval` (`pdctl config set` wins once set).
    #[arg(long, default_value_t = 3600)]
    split_merge_interval_secs: u64,
    /// Regions merge automatically only if both hold at most this many keys
    /// (`max-merge-region-keys`; `pdctl config set` wins once set) ...
    #[arg(long, default_value_t = 40_000)]
    max_merge_region_keys: u64,
    /// ... and at most this many MiB (`max-merge-region-size`).
    #[arg(long, default_value_t = 20)]
    max_merge_region_size_mb: u64,
    /// Seconds between scheduling rounds (balance-leader moves region
    /// leaders from the store leading the most regions to the one leading
    /// the fewest); 0 turns automatic scheduling off. Initial value of
    /// `schedule-interval` (`pdctl config set` wins once set).
    #[arg(long, default_value_t = 3)]
    schedule_interval_secs: u64,
    /// Most operators (leader transfers, peer moves) each store takes part
    /// in per minute (store limit). Initial value of `leader-transfer-limit`
    /// (`pdctl config set` wins once set; `pdctl store limit ID RATE` per store).
    #[arg(long, default_value_t = 120)]
    leader_transfer_limit: usize,
    /// File holding the token that may change things through the HTTP API
    /// (`Authorization: Bearer TOKEN`; pdctl --token). Give every member
    /// the same file. Without it PD uses DATA_DIR/admin.token, made at
    /// first start. With cluster TLS the admin certificate works too.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// File holding a token that may only read the HTTP API (monitoring).
    #[arg(long)]
    read_token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MetashardArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    node: NodeArgs,
    /// Raft tick interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    raft_tick_ms: u64,
    /// Ticks without a leader heartbeat before a follower campaigns.
    #[arg(long, default_value_t = 10)]
    election_ticks: usize,
    /// Applied entries kept in the Raft log before it is compacted.
    #[arg(long, default_value_t = 1000)]
    log_gc_threshold: u64,
    /// MiB a region's Raft log may hold before it is compacted, whichever
    /// of this and --log-gc-threshold is reached first (0: no size limit).
    #[arg(long, default_value_t = 32)]
    log_gc_size_limit_mb: u64,
    /// Region leaders answer GET/HEAD/LIST reads from a leader lease (80% of
    /// the election timeout, renewed by ReadIndex rounds) instead of a
    /// quorum round per read. `false`: a ReadIndex round for every read.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    lease_reads: bool,
    /// Split a region automatically once it holds more metadata keys than
    /// this (0: never by key count).
    #[arg(long, default_value_t = 200_000)]
    region_split_keys: u64,
    /// Split a region automatically once its metadata exceeds this many MiB
    /// (0: never by size).
    #[arg(long, default_value_t = 96)]
    region_split_size_mb: u64,
    /// Never split a region automatically below this many keys.
    #[arg(long, default_value_t = 1000)]
    region_split_min_keys: u64,
    /// Least seconds between two automatic splits of one region.
    #[arg(long, default_value_t = 10)]
    region_split_interval_secs: u64,
    /// Split a region whose leader sees at least this many requests (reads
    /// and writes) per second for 3 s in a row, at a key that divides them
    /// evenly; a load on one object never splits (0: never by load).
    #[arg(long, default_value_t = 3000)]
    region_split_load_qps: u64,
    /// Seconds between a region leader's periodic heartbeats to PD (it also
    /// reports at once on leader change, split, or a size change).
    #[arg(long, default_value_t = 10)]
    region_heartbeat_secs: u64,
}

#[derive(Debug, Args)]
pub struct DatanodeArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    node: NodeArgs,
    /// Size at which a segment file is closed and a new one started.
    #[arg(long, default_value_t = 256 << 20)]
    segment_size: u64,
    /// Below this much free disk space the node takes no new fragments.
    #[arg(long, default_value_t = 1 << 30)]
    min_free_bytes: u64,
    /// Write segment files with O_DIRECT, bypassing the page cache (the
    /// kernel's copy into it was half of a data node's CPU under large PUTs):
    /// auto = where the filesystem supports it, else buffered (logged once;
    /// metric kura_datanode_direct_io); on = fail without it; off = buffered.
    /// Reads stay buffered either way.
    #[arg(long, default_value_t = kura_datanode::DirectIo::Auto)]
    direct_io: kura_datanode::DirectIo,
    /// Background scrub rate (bytes/s of fragment data re-read and checked
    /// against their CRC32C); 0 turns the scrubber off.
    #[arg(long, default_value_t = kura_datanode::maintenance::DEFAULT_SCRUB_BYTES_PER_SEC)]
    scrub_bytes_per_sec: u64,
    /// Seconds between the starts of two full scrub passes.
    #[arg(long, default_value_t = 3600)]
    scrub_interval_secs: u64,
    /// A full segment is rewritten once this fraction of it is dead
    /// (deleted or replaced fragments); 0 turns compaction off.
    #[arg(long, default_value_t = 0.5)]
    compact_dead_fraction: f64,
    /// Compaction copy rate (bytes/s of live fragment data rewritten out of
    /// mostly-dead segments); 0 = no limit.
    #[arg(long, default_value_t = kura_datanode::maintenance::DEFAULT_COMPACT_BYTES_PER_SEC)]
    compact_bytes_per_sec: u64,
    /// Seconds between repair passes (healing, orphan GC, strays) over the
    /// placement groups this node is primary of; 0 turns repair off.
    #[arg(long, default_value_t = 30)]
    repair_interval_secs: u64,
    /// Bodies younger than this are not healed (their PUT may still run).
    #[arg(long, default_value_t = 60)]
    heal_after_secs: u64,
    /// Bodies older than this that no metadata references are deleted.
    /// Keep it at least twice the gateways' --max-commit-age-secs.
    #[arg(long, default_value_t = 3600)]
    orphan_after_secs: u64,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// S3 listen address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// PD gRPC endpoints, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pd: Vec<String>,
    /// JSON file with {"access_key", "secret_key"} of the root user.
    /// KURA_ROOT_ACCESS_KEY / KURA_ROOT_SECRET_KEY override it.
    #[arg(long)]
    credentials_file: Option<PathBuf>,
    /// S3 region name reported to clients.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Bodies up to this size are stored inside the metadata record.
    #[arg(long, default_value_t = 4096)]
    inline_threshold: usize,
    /// Target data bytes per stripe; each of the k data fragments gets
    /// stripe/k bytes of it (REPLICA3: the whole stripe per copy).
    #[arg(long, default_value_t = 1 << 20)]
    stripe_size: usize,
    /// Fragments that must be durable before a PUT commits (default: k+1;
    /// k only while a whole zone of the placement group is known down;
    /// docs/architecture.md says what each class survives).
    #[arg(long)]
    write_quorum: Option<usize>,
    /// Storage class of new buckets: EC_4_2 (S3 STANDARD), EC_8_3
    /// (STANDARD_IA) or REPLICA3 (REDUCED_REDUNDANCY).
    #[arg(long, default_value = "EC_4_2", value_parser = parse_storage_class)]
    default_storage_class: kura_proto::meta::StorageClass,
    /// A PUT fails with 503 rather than commit its metadata later than this
    /// after its body was started (at most half the data nodes'
    /// --orphan-after-secs, so orphan GC never races a commit).
    #[arg(long, default_value_t = 1800)]
    max_commit_age_secs: u64,
    /// Seconds between sweeps of the metadata GC queue (deleting the
    /// fragments of replaced or deleted objects that were not reclaimed
    /// right away).
    #[arg(long, default_value_t = 30)]
    gc_sweep_interval_secs: u64,
    /// Seconds in a lifecycle "day": rules' Days count in these (tests
    /// shorten it; kura dev --lifecycle-day-secs).
    #[arg(long, default_value_t = 86_400)]
    lifecycle_day_secs: u64,
    /// Seconds between the end of a region's lifecycle pass and the start
    /// of its next one.
    #[arg(long, default_value_t = 3600)]
    lifecycle_interval_secs: u64,
    /// Most lifecycle actions (expirations, delete-marker removals, upload
    /// aborts, dead-bucket deletes) this gateway makes per second, and 100
    /// times that many records its passes read; 0 = unpaced.
    #[arg(long, default_value_t = 100)]
    lifecycle_ops_per_sec: u32,
    /// Domain for virtual-hosted-style requests (bucket.DOMAIN).
    #[arg(long)]
    domain: Option<String>,
    /// File holding the cluster key (64 hex characters, the same on every
    /// gateway) that seals access-key secrets in the metadata. Without it
    /// the key is derived from the root secret key.
    #[arg(long)]
    cluster_key_file: Option<PathBuf>,
    /// File holding the cluster master key for SSE-S3 (the same on every
    /// gateway): exactly 32 random bytes, either raw (a 32-byte file) or
    /// base64-encoded (44 characters; whitespace around it is ignored), e.g.
    /// `head -c 32 /dev/urandom | base64 > master.key`. It wraps each
    /// object's random data key; losing it makes SSE-S3 objects unreadable.
    /// Without it, SSE-S3 requests and bucket default encryption answer 501.
    #[arg(long)]
    master_key_file: Option<PathBuf>,
    /// The S3 port's certificate chain (PEM): with --tls-key, S3 is served
    /// over HTTPS only (HTTP/1.1 and h2). Reloaded on SIGHUP and when the
    /// files change, without dropping open connections. Without it, SSE-C
    /// requests are accepted from loopback clients only (as AWS, which
    /// refuses SSE-C over plain HTTP).
    #[arg(long, env = "KURA_GATEWAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "KURA_GATEWAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds a client has to send a request's headers (and to finish a
    /// TLS handshake); also how long an idle keep-alive connection stays.
    #[arg(long, env = "KURA_GATEWAY_HEADER_TIMEOUT_SECS", default_value_t = 30)]
    header_timeout_secs: u64,
    /// Seconds a request body may send nothing before it fails with 400
    /// RequestTimeout (a slow but steady upload never does).
    #[arg(
        long,
        env = "KURA_GATEWAY_BODY_IDLE_TIMEOUT_SECS",
        default_value_t = 60
    )]
    body_idle_timeout_secs: u64,
    /// Seconds a client may read nothing of a response before its
    /// connection is dropped.
    #[arg(long, env = "KURA_GATEWAY_WRITE_TIMEOUT_SECS", default_value_t = 60)]
    write_timeout_secs: u64,
    /// Open S3 connections served at once; beyond, a connection's request
    /// is answered 503 SlowDown and the connection closed.
    #[arg(long, env = "KURA_GATEWAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// S3 requests handled at once; beyond, 503 SlowDown.
    #[arg(long, env = "KURA_GATEWAY_MAX_IN_FLIGHT", default_value_t = 1024)]
    max_in_flight: usize,
    /// Bytes of request header fields accepted (AWS: 8192); beyond, 400
    /// RequestHeaderSectionTooLarge and the connection closed (also sets
    /// hyper's field count, this / 8, and HTTP/2's header list, twice this).
    #[arg(long, env = "KURA_GATEWAY_MAX_HEADER_BYTES", default_value_t = 8192)]
    max_header_bytes: usize,
    /// Largest file of a POST form upload, in bytes (5 GiB, as AWS; the
    /// file streams to the data nodes, so this bounds storage, not memory).
    #[arg(long, env = "KURA_GATEWAY_MAX_POST_OBJECT_BYTES", default_value_t = 5 << 30)]
    max_post_object_bytes: u64,
}

/// Default log filter (override with `KURA_LOG`). s3s logs every client error
/// (bad signature, missing key) at ERROR; the gateway logs what needs a human
/// itself (see gateway/src/error.rs), so s3s's own reports are hidden.
const DEFAULT_LOG_FILTER: &str = "info,h2=warn,tower=warn,hyper=warn,raft=warn,s3s=off";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KURA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .init();
}

/// Runs one role to completion: cluster TLS, status server, signals, then `body`.
fn run_role<F, Fut, E>(name: &str, common: &CommonArgs, body: F) -> i32
where
    F: FnOnce(Arc<AtomicBool>, tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    init_logging();
    let status_addr = common.status_addr;
    if let Some(paths) = common.tls() {
        if let Err(e) = kura_pd_client::tls::install_with_crl(&paths, common.crl.as_deref()) {
            eprintln!("kura {name}: {e}");
            return 2;
        }
    }
    #[cfg(feature = "failpoints")]
    if let Err(e) = crate::failpoints::arm_from_env() {
        eprintln!("kura {name}: {e}");
        return 2;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kura {name}: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let ready = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let status = tokio::spawn(crate::status::serve(status_addr, ready.clone(), rx.clone()));
        // Cluster TLS material: reloaded on change and SIGHUP (no-op without).
        tokio::spawn(kura_pd_client::tls::run_reloader(rx.clone()));
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("stop signal received; shutting down");
            let _ = tx.send(true);
        });
        let result = body(ready, rx).await;
        let code = match result {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("kura {name} failed: {e}");
                eprintln!("kura {name}: {e}");
                1
            }
        };
        status.abort();
        code
    })
}

pub fn run_pd(a: PdArgs) -> i32 {
    let replication = match (a.member_id, a.peers.is_empty()) {
        (Some(id), false) => match kura_pd::replication::parse_peers(&a.peers) {
            Ok(peers) => Some((id, peers)),
            Err(e) => {
                eprintln!("kura pd: --peers: {e}");
                return 2;
            }
        },
        _ => None,
    };
    let http_auth = match pd_http_auth(&a.data_dir, a.admin_token_file, a.read_token_file) {
        Ok(auth) => auth,
        Err(e) => {
            eprintln!("kura pd: {e}");
            return 2;
        }
    };
    let cfg = kura_pd::Config {
        replication,
        data_dir: a.data_dir,
        listen: a.listen,
        advertise: a.advertise.unwrap_or_else(|| a.listen.to_string()),
        http_listen: a.http_listen,
        max_replicas: a.max_replicas,
        expected_data_nodes: a.expected_data_nodes,
        num_pgs: a.num_pgs,
        placement_wait: Duration::from_secs(a.placement_wait_secs),
        max_store_down_time: Duration::from_secs(a.max_store_down_secs),
        max_moves_per_step: a.max_moves_per_step,
        rebalance_interval: Duration::from_secs(a.rebalance_interval_secs),
        repair_catch_up_limit: Duration::from_secs(a.repair_catch_up_limit_secs),
        datanode_down_after: Duration::from_secs(a.datanode_down_after_secs),
        merge_check_interval: Duration::from_secs(a.merge_check_interval_secs),
        merge: kura_pd::merge::MergeCheckConfig {
            max_keys: a.max_merge_region_keys,
            max_size: a.max_merge_region_size_mb << 20,
            split_merge_interval: Duration::from_secs(a.split_merge_interval_secs),
            ..Default::default()
        },
        schedule_interval: Duration::from_secs(a.schedule_interval_secs),
        leader_transfers_per_store_per_minute: a.leader_transfer_limit,
        http_auth,
    };
    run_role("pd", &a.common, |ready, shutdown| {
        kura_pd::run(cfg, ready, shutdown)
    })
}

pub fn run_metashard(a: MetashardArgs) -> i32 {
    let n = a.node;
    let advertise = n.advertise.unwrap_or_else(|| n.listen.to_string());
    let mut cfg = kura_metashard::Config::new(n.data_dir, n.listen, advertise, n.pd);
    cfg.status_advertise = a.common.status_addr.to_string();
    cfg.zone = n.zone;
    cfg.rack = n.rack;
    cfg.host = n.host;
    cfg.raft_tick_ms = a.raft_tick_ms;
    cfg.election_ticks = a.election_ticks;
    cfg.log_gc_threshold = a.log_gc_threshold;
    cfg.log_gc_size_limit = a.log_gc_size_limit_mb << 20;
    cfg.lease_reads = a.lease_reads;
    cfg.region_split_keys = a.region_split_keys;
    cfg.region_split_size = a.region_split_size_mb << 20;
    cfg.region_split_min_keys = a.region_split_min_keys;
    cfg.region_split_interval_secs = a.region_split_interval_secs;
    cfg.region_split_load_qps = a.region_split_load_qps;
    cfg.region_heartbeat_secs = a.region_heartbeat_secs;
    run_role("metashard", &a.common, |ready, shutdown| {
        kura_metashard::run(cfg, ready, shutdown)
    })
}

pub fn run_datanode(a: DatanodeArgs) -> i32 {
    let n = a.node;
    let cfg = kura_datanode::Config {
        advertise: n.advertise.unwrap_or_else(|| n.listen.to_string()),
        data_dir: n.data_dir,
        listen: n.listen,
        status_advertise: a.common.status_addr.to_string(),
        pd_endpoints: n.pd,
        zone: n.zone,
        rack: n.rack,
        host: n.host,
        segment_size: a.segment_size,
        min_free_bytes: a.min_free_bytes,
        direct_io: a.direct_io,
        maintenance: kura_datanode::Maintenance {
            scrub_bytes_per_sec: a.scrub_bytes_per_sec,
            scrub_interval: Duration::from_secs(a.scrub_interval_secs),
            scrub_first_delay: Duration::from_secs(a.scrub_interval_secs.min(30)),
            compact_dead_fraction: a.compact_dead_fraction,
            compact_bytes_per_sec: a.compact_bytes_per_sec,
            ..Default::default()
        },
        repair: kura_datanode::Repair {
            interval: Duration::from_secs(a.repair_interval_secs),
            heal_after: Duration::from_secs(a.heal_after_secs),
            orphan_after: Duration::from_secs(a.orphan_after_secs),
        },
    };
    run_role("datanode", &a.common, |ready, shutdown| {
        kura_datanode::run(cfg, ready, shutdown)
    })
}

pub fn run_gateway(a: GatewayArgs) -> i32 {
    let (access_key, secret_key) = match gateway_credentials(a.credentials_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kura gateway: {e}");
            return 2;
        }
    };
    let cluster_key = match &a.cluster_key_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| kura_gateway::identity::seal::parse_key_file(&t))
        {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("kura gateway: cluster key file {}: {e}", path.display());
                return 2;
            }
        },
    };
    let master_key = match &a.master_key_file {
        None => None,
        Some(path) => match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| kura_gateway::data::crypto::MasterKey::parse_file(&b))
        {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("kura gateway: master key file {}: {e}", path.display());
                return 2;
            }
        },
    };
    let cfg = kura_gateway::Config {
        listen: a.listen,
        master_key,
        pd_endpoints: a.pd,
        access_key,
        secret_key,
        cluster_key,
        region: a.region,
        inline_threshold: a.inline_threshold,
        stripe_size: a.stripe_size,
        write_quorum: a.write_quorum,
        default_class: a.default_storage_class,
        max_commit_age: Duration::from_secs(a.max_commit_age_secs),
        gc_sweep_interval: Duration::from_secs(a.gc_sweep_interval_secs.max(1)),
        lifecycle: kura_gateway::lifecycle::Settings {
            day: Duration::from_secs(a.lifecycle_day_secs.max(1)),
            ops_per_sec: a.lifecycle_ops_per_sec,
            ..Default::default()
        }
        .with_interval(Duration::from_secs(a.lifecycle_interval_secs.max(1))),
        domain: a.domain,
        tls: match (a.tls_cert, a.tls_key) {
            (Some(cert), Some(key)) => Some(kura_gateway::front::tls::TlsFiles { cert, key }),
            _ => None,
        },
        admission: kura_gateway::front::Admission {
            header_timeout: Duration::from_secs(a.header_timeout_secs),
            body_idle_timeout: Duration::from_secs(a.body_idle_timeout_secs),
            write_timeout: Duration::from_secs(a.write_timeout_secs),
            max_connections: a.max_connections,
            max_in_flight: a.max_in_flight,
            max_header_bytes: a.max_header_bytes,
            max_post_object_bytes: a.max_post_object_bytes,
        },
    };
    run_role("gateway", &a.common, |ready, shutdown| {
        kura_gateway::run(cfg, ready, shutdown)
    })
}

/// PD's HTTP credentials: the token files given, or a token made in the
/// data dir at first start, so the API is never open.
fn pd_http_auth(
    data_dir: &std::path::Path,
    admin: Option<PathBuf>,
    read: Option<PathBuf>,
) -> Result<kura_pd::http_auth::HttpAuth, String> {
    let read_token = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map_err(|e| format!("token file {}: {e}", p.display()))
            .and_then(|t| {
                let t = t.trim().to_string();
                if t.len() < 16 {
                    Err(format!(
                        "token file {}: a token has at least 16 characters",
                        p.display()
                    ))
                } else {
                    Ok(t)
                }
            })
    };
    let admin = match admin {
        Some(p) => read_token(&p)?,
        None => {
            let p = data_dir.join("admin.token");
            if !p.exists() {
                std::fs::create_dir_all(data_dir)
                    .map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
                crate::dev::write_secret_file(&p, &crate::dev::random_token())
                    .map_err(|e| format!("writing {}: {e}", p.display()))?;
            }
            read_token(&p)?
        }
    };
    let read = read.as_deref().map(read_token).transpose()?;
    Ok(kura_pd::http_auth::HttpAuth::tokens(
        Some(&admin),
        read.as_deref(),
    ))
}

fn parse_storage_class(s: &str) -> Result<kura_proto::meta::StorageClass, String> {
    kura_gateway::storage_class::parse(s)
        .ok_or_else(|| format!("unknown storage class {s:?} (EC_4_2, EC_8_3 or REPLICA3)"))
}

/// Root credentials: environment first, then the credentials file.
fn gateway_credentials(file: Option<&std::path::Path>) -> Result<(String, String), String> {
    if let (Ok(a), Ok(s)) = (
        std::env::var("KURA_ROOT_ACCESS_KEY"),
        std::env::var("KURA_ROOT_SECRET_KEY"),
    ) {
        if !a.is_empty() && !s.is_empty() {
            return Ok((a, s));
        }
    }
    let path = file.ok_or(
        "no credentials: set KURA_ROOT_ACCESS_KEY/KURA_ROOT_SECRET_KEY or --credentials-file",
    )?;
    match crate::dev::load_credentials(path) {
        Ok(Some(c)) => Ok((c.access_key, c.secret_key)),
        Ok(None) => Err(format!(
            "credentials file {} does not exist",
            path.display()
        )),
        Err(e) => Err(format!("credentials file {}: {e}", path.display())),
    }
}
