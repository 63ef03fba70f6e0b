//! Talking to a region on its stores, for operators: its status on each
//! store, its current leader (asked of the stores, not PD's map, which can
//! lag), and the answers of admin rpcs (merge steps, conf changes) sorted
//! into done / not leader / rejected / outcome unknown.

use std::time::Duration;

use kura_pd_client::channel::Channel;
use kura_proto::common::{Region, RegionError};
use kura_proto::metashard::metashard_client::MetashardClient;
use kura_proto::metashard::{RegionChangeResponse, RegionStatus, RegionStatusRequest};

use crate::operator::OperatorError;
use crate::server::PdCore;

/// One admin step: a Raft round on a healthy region; generous.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// Leader hops and unknown-outcome retries per step.
pub const MAX_ATTEMPTS: usize = 8;

pub fn client(addr: &str) -> Result<MetashardClient<Channel>, OperatorError> {
    let ch = kura_pd_client::channel::lazy_channel(addr).map_err(|e| OperatorError::Store {
        addr: addr.to_string(),
        message: e.to_string(),
    })?;
    Ok(MetashardClient::new(ch))
}

/// The region's status as the store at `addr` sees it (`None`: no peer there).
pub async fn status_on(addr: &str, region_id: u64) -> Result<Option<RegionStatus>, OperatorError> {
    let mut c = client(addr)?;
    let call = c.region_status(RegionStatusRequest { region_id });
    match tokio::time::timeout(STEP_TIMEOUT, call).await {
        Ok(Ok(r)) => Ok(r.into_inner().status),
        Ok(Err(s)) => Err(OperatorError::Store {
            addr: addr.into(),
            message: s.message().to_string(),
        }),
        Err(_) => Err(OperatorError::Store {
            addr: addr.into(),
            message: "region status timed out".into(),
        }),
    }
}

/// Addresses of the stores holding a peer of `region`.
pub async fn peer_addrs(core: &PdCore, region: &Region) -> Vec<(u64, String)> {
    let ids: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
    core.read(|c| ids.iter().map(|id| (*id, c.store_address(*id))).collect())
        .await
}

/// The status of `region_id` from its current leader, asking every store.
pub async fn leader_status(core: &PdCore, region: &Region) -> Option<(String, RegionStatus)> {
    for (store_id, addr) in peer_addrs(core, region).await {
        if let Ok(Some(st)) = status_on(&addr, region.id).await {
            let r = st.region.clone().unwrap_or_default();
            if r.peers
                .iter()
                .any(|p| p.id == st.leader_peer_id && p.store_id == store_id)
            {
                return Some((addr, st));
            }
        }
    }
    None
}

/// What one step call came back with.
pub enum StepAnswer {
    Done(Region, u64),
    NotLeader,
    Rejected(RegionError),
    Unknown(String),
}

pub fn answer(
    res: Result<
        Result<tonic::Response<RegionChangeResponse>, tonic::Status>,
        tokio::time::error::Elapsed,
    >,
) -> StepAnswer {
    match res {
        Err(_) => StepAnswer::Unknown("timed out".into()),
        Ok(Err(s)) => StepAnswer::Unknown(s.message().to_string()),
        Ok(Ok(r)) => {
            let r = r.into_inner();
            match r.header.and_then(|h| h.region_error) {
                None => StepAnswer::Done(r.region.unwrap_or_default(), r.index),
                Some(e) if e.not_leader.is_some() => StepAnswer::NotLeader,
                Some(e) => StepAnswer::Rejected(e),
            }
        }
    }
}

pub fn rejected(region_id: u64, e: &RegionError) -> OperatorError {
    OperatorError::Rejected {
        region_id,
        message: if e.message.is_empty() {
            "region error".into()
        } else {
            e.message.clone()
        },
    }
}
