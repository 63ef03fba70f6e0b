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
}

impl Error {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::InvalidArgument(_) => false,
            Error::NotFound(_) => false,
            Error::Tombstone(_) => false,
            Error::Storage(_) => true,
            Error::Bind { .. } => false,
            Error::Grpc(_) => true,
            Error::Http(_) => true,
        }
    }
}

/// The one place PD errors become gRPC codes. `PdClient` fails over to the
/// next PD on `Unavailable`, so only "PD itself cannot serve now" maps there.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::Tombstone(_) => tonic::Status::permission_denied(msg),
            Error::Storage(_) => tonic::Status::unavailable(msg),
            Error::Bind { .. } => tonic::Status::internal(msg),
            Error::Grpc(_) => tonic::Status::internal(msg),
            Error::Http(_) => tonic::Status::internal(msg),
        }
    }
}
