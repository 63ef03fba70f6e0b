//! The crate's error type and builders of the wire `RegionError`s.

use kura_proto::common::{
    EpochNotMatch, KeyNotInRegion, NotLeader, Peer, Region, RegionError, RegionNotFound, ServerBusy,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage: {0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error("PD: {0}")]
    Pd(#[from] kura_pd_client::PdError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("the raftstore thread stopped")]
    StoreStopped,
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether starting again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Engine(_) => false,
            Error::Pd(e) => e.is_retryable(),
            Error::Bind { .. } => true,
            Error::Server(_) => true,
            Error::Raft(_) => false,
            Error::StoreStopped => false,
            Error::Config(_) => false,
        }
    }
}

pub fn not_leader(region_id: u64, leader: Option<Peer>) -> RegionError {
    RegionError {
        message: "not leader".into(),
        not_leader: Some(NotLeader {
            region_id,
            leader,
            leader_addr: String::new(),
        }),
        ..Default::default()
    }
}

pub fn epoch_not_match(current: &Region) -> RegionError {
    RegionError {
        message: "epoch not match".into(),
        epoch_not_match: Some(EpochNotMatch {
            current_regions: vec![current.clone()],
        }),
        ..Default::default()
    }
}

pub fn region_not_found(region_id: u64) -> RegionError {
    RegionError {
        message: "region not found".into(),
        region_not_found: Some(RegionNotFound { region_id }),
        ..Default::default()
    }
}

pub fn key_not_in_region(key: &[u8], region: &Region) -> RegionError {
    RegionError {
        message: "key not in region".into(),
        key_not_in_region: Some(KeyNotInRegion {
            key: key.to_vec().into(),
            region_id: region.id,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
        }),
        ..Default::default()
    }
}

pub fn server_busy(reason: &str) -> RegionError {
    RegionError {
        message: reason.to_string(),
        server_busy: Some(ServerBusy {
            reason: reason.to_string(),
        }),
        ..Default::default()
    }
}
