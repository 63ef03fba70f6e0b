//! Errors of the storage layer and of the node's lifecycle. Mapping to gRPC `Status`
//! happens once, in `service.rs`.

use std::io;

/// What can go wrong inside the fragment store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("fragment not found")]
    NotFound,
    /// Stored or received bytes fail their checksum or structure; never served.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Below the free-space floor, disk full, or read-only: no new fragments.
    #[error("no space for new fragments: {0}")]
    Full(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The data directory does not prove it is ours (missing/foreign identity, unknown
    /// format version): refuse to start rather than treat a disk as empty.
    #[error("data directory identity: {0}")]
    Identity(String),
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::ReadOnlyFilesystem => {
                StoreError::Full(format!("{}: {source}", context.into()))
            }
            _ => StoreError::Io {
                context: context.into(),
                source,
            },
        }
    }

    /// Whether the same call may succeed later on this node.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Io { .. } => true,
            StoreError::NotFound => false,
            StoreError::Corrupt(_) => false,
            StoreError::Full(_) => false,
            StoreError::InvalidArgument(_) => false,
            StoreError::Identity(_) => false,
        }
    }
}

/// Fatal problems of the data node process (`run` / `serve`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("PD: {0}")]
    Pd(#[from] kura_pd_client::PdError),
    #[error("PD assigned node id {assigned} but this disk belongs to node {persisted}")]
    NodeIdMismatch { persisted: u64, assigned: u64 },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(e) => e.is_retryable(),
            Error::Bind { .. } => true,
            Error::Pd(e) => e.is_retryable(),
            Error::NodeIdMismatch { .. } => false,
            Error::Transport(_) => true,
            Error::Internal(_) => false,
        }
    }
}
