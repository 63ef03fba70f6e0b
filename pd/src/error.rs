//! The crate's one error type and its single mapping to gRPC `Status`.

use std::net::SocketAddr;

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something malformed (missing field, id 0 where one is needed…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The caller named a store, data node or region PD does not know.
    #[error("{0} not found")]
    NotFound(String),
    /// The caller is a store or data node that was removed for good.
    #[error("{0} is a tombstone and cannot rejoin")]
    Tombstone(String),
    /// A registration claimed an id its UUID does not prove (a wiped data
    /// dir, another process, or a forgery): nothing was changed.
    #[error("identity mismatch: {0}")]
    IdentityMismatch(String),
    /// The id allocator would pass its limit: refused rather than wrap.
    #[error("ids exhausted: {count} ids from {next} would pass the limit")]
    IdsExhausted { next: u64, count: u64 },
    /// This member of a replicated PD does not lead (or does not serve yet):
    /// the caller should ask `leader` (its gRPC and HTTP address), if known.
    #[error("this PD member is not the leader; {}", match .leader {
        Some((grpc, _)) => format!("the leader is {grpc}"),
        None => "no leader is known yet".to_string(),
    })]
    NotLeader { leader: Option<(String, String)> },
    /// The replicated PD could not start.
    #[error("PD replication: {0}")]
    Replication(#[from] crate::replication::ReplicationError),
    /// PD's state could not be read or written; nothing was acknowledged.
    #[error("state storage: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot bind the {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    /// The cluster TLS files could not be used.
    #[error("{0}")]
    Tls(#[from] kura_pd_client::tls::TlsError),
}

impl Error {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::InvalidArgument(_) => false,
            Error::NotFound(_) => false,
            Error::Tombstone(_) => false,
            Error::IdentityMismatch(_) => false,
            Error::IdsExhausted { .. } => false,
            Error::NotLeader { .. } => true,
            Error::Replication(e) => e.is_retryable(),
            Error::Storage(_) => true,
            Error::Bind { .. } => false,
            Error::Grpc(_) => true,
            Error::Http(_) => true,
            Error::Tls(_) => false,
        }
    }
}

/// gRPC metadata naming the PD leader's gRPC address on a not-leader answer.
pub const LEADER_METADATA: &str = "kura-pd-leader";

/// The one place PD errors become gRPC codes. `PdClient` fails over to the
/// next PD on `Unavailable`, so only "PD itself cannot serve now" maps there;
/// a follower's answer also names the leader in [`LEADER_METADATA`].
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::NotLeader { leader } => {
                let mut s = tonic::Status::unavailable(msg);
                if let Some(v) = leader.and_then(|(grpc, _)| grpc.parse().ok()) {
                    s.metadata_mut().insert(LEADER_METADATA, v);
                }
                s
            }
            Error::Replication(_) => tonic::Status::unavailable(msg),
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::Tombstone(_) => tonic::Status::permission_denied(msg),
            Error::IdentityMismatch(_) => tonic::Status::permission_denied(msg),
            Error::IdsExhausted { .. } => tonic::Status::resource_exhausted(msg),
            Error::Storage(_) => tonic::Status::unavailable(msg),
            Error::Bind { .. } => tonic::Status::internal(msg),
            Error::Grpc(_) => tonic::Status::internal(msg),
            Error::Http(_) => tonic::Status::internal(msg),
            Error::Tls(_) => tonic::Status::internal(msg),
        }
    }
}
