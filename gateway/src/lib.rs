//! Kura gateway: the S3 front end of a Kura cluster.
//!
//! Owns the S3 operations, composed from three clients: the metadata client
//! (`kura_metashard::client::MetaClient`, linearizable get/scan and atomic
//! conditional batches on one region), the data node client
//! (`kura_datanode::client::DataNodeClient`, fragments as checksummed blocks) and
//! PD (`kura_pd_client`, ids and the placement-group map). The S3 protocol itself
//! (HTTP parsing, SigV4/SigV2, XML, error rendering) is `s3s`'s job.
//! Must not: build metadata keys by hand (only through `kura_metashard::keys`),
//! name S3 error codes outside `error.rs`, or buffer a whole object body.
//!
//! Start reading at `server.rs` (health route, s3s service; `front/` is the
//! listener with admission control, timeouts and TLS), then
//! `s3/mod.rs` (the `S3` trait impl, one file per operation family under `s3/`),
//! then the data paths `data/writer.rs` (PUT) and `data/reader.rs` (GET).

pub mod admin;
pub mod auth;
pub mod authz;
pub mod context;
pub mod data;
pub mod error;
pub mod front;
pub mod identity;
pub mod lifecycle;
pub mod meta;
pub mod metrics;
pub mod placement;
pub mod ratelimit;
pub mod s3;
pub mod server;
pub mod sigv4;
pub mod storage_class;
pub mod usage;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use error::{GwError, GwResult};

/// Gateway settings (the `kura gateway` flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// S3 listen address (HTTPS when `tls` is set, else HTTP).
    pub listen: SocketAddr,
    /// Certificate and key of the S3 port; `None` serves plain HTTP.
    pub tls: Option<front::tls::TlsFiles>,
    /// Timeouts and caps of the S3 port.
    pub admission: front::Admission,
    /// PD gRPC endpoints (`host:port`).
    pub pd_endpoints: Vec<String>,
    /// Root access key (SigV4/SigV2).
    pub access_key: String,
    /// Root secret key.
    pub secret_key: String,
    /// The cluster key sealing access-key secrets at rest (same on every
    /// gateway); `None`: derived from the root secret (see identity/seal.rs).
    pub cluster_key: Option<[u8; 32]>,
    /// Region reported to clients and accepted in LocationConstraint ("us-east-1").
    pub region: String,
    /// The cluster master key (the same on every gateway) wrapping the data
    /// keys of SSE-S3 objects; `None` refuses SSE-S3 (docs/security.md).
    pub master_key: Option<[u8; 32]>,
    /// Bodies of at most this many bytes are stored inside the metadata record (4096).
    pub inline_threshold: usize,
    /// Target data bytes of one stripe (1 MiB); a fragment block is stripe / k.
    pub stripe_size: usize,
    /// Fragments that must be durable before a PUT commits; `None` = k + 1,
    /// lowered (never below k) so writes continue through a whole-zone outage.
    pub write_quorum: Option<usize>,
    /// Storage class of new buckets (EC_4_2).
    pub default_class: kura_proto::meta::StorageClass,
    /// A PUT fails (503) rather than commit metadata later than this after
    /// its body's fragments were created; keep it at most half the data
    /// nodes' `--orphan-after` (30 min).
    pub max_commit_age: std::time::Duration,
    /// How often this gateway sweeps the metadata GC queue (30 s).
    pub gc_sweep_interval: std::time::Duration,
    /// The lifecycle worker's day, pass interval and pace (docs/decisions/0032).
    pub lifecycle: lifecycle::Settings,
    /// Base domain for virtual-hosted-style requests (`bucket.DOMAIN`);
    /// `localhost` is always accepted too.
    pub domain: Option<String>,
}

impl Config {
    /// A config with the documented defaults for everything but the endpoints and keys.
    pub fn new(
        listen: SocketAddr,
        pd_endpoints: Vec<String>,
        access_key: String,
        secret_key: String,
    ) -> Self {
        Config {
            listen,
            tls: None,
            admission: front::Admission::default(),
            pd_endpoints,
            access_key,
            secret_key,
            cluster_key: None,
            region: "us-east-1".to_string(),
            inline_threshold: 4096,
            stripe_size: 1 << 20,
            write_quorum: None,
            default_class: kura_proto::meta::StorageClass::Ec42,
            max_commit_age: std::time::Duration::from_secs(30 * 60),
            gc_sweep_interval: std::time::Duration::from_secs(30),
            lifecycle: lifecycle::Settings::default(),
            domain: None,
            master_key: None,
        }
    }
}

/// Fatal startup problems.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("pd client: {0}")]
    Pd(#[from] kura_pd_client::PdError),
    #[error("S3 TLS: {0}")]
    Tls(#[from] front::tls::TlsError),
}

impl Error {
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Config(_) => false,
            Error::Bind { .. } => true,
            Error::Pd(e) => e.is_retryable(),
            Error::Tls(_) => false,
        }
    }
}

/// Runs the gateway until `shutdown` flips to true. `ready` becomes true once
/// PD reports the cluster bootstrapped and a usable placement map exists.
pub async fn run(
    cfg: Config,
    ready: Arc<AtomicBool>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error> {
    server::run(cfg, ready, shutdown).await
}
