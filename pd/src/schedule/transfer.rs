//! Executes a leader transfer: asks the region's leader store
//! (`Metashard.TransferLeader`, following `NotLeader` hops) to hand
//! leadership to the region's peer on the target store, then waits until
//! PD's region map shows the new leader (its first heartbeat as leader comes
//! at once), asking again every second: raft-rs gives up a transfer
//! after one election timeout when the target does not catch up.

use std::time::Duration;

use kura_proto::metashard::metashard_client::MetashardClient;
use kura_proto::metashard::{RequestHeader, TransferLeaderRequest};
use kura_proto::pd::RegionInfo;
use tokio::time::Instant;

use super::coordinator::DISCONNECTED_AFTER_MS;
use crate::operator::OperatorError;
use crate::server::{now_ms, PdCore};

/// Longest a transfer may take, all attempts included.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(15);
/// Ask the leader again after this long without the new leader in PD's map.
const RESEND_AFTER: Duration = Duration::from_secs(1);
/// One `TransferLeader` call.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// `NotLeader` hops followed per attempt.
const MAX_HOPS: usize = 4;
const POLL: Duration = Duration::from_millis(100);

fn leader_store(info: &RegionInfo) -> Option<u64> {
    info.leader.map(|l| l.store_id)
}

/// Checks that `to_store` exists, heartbeats, and holds a voter of
/// `region_id`; returns the region as PD knows it.
pub async fn check_target(
    core: &PdCore,
    region_id: u64,
    to_store: u64,
) -> Result<RegionInfo, OperatorError> {
    let info = core
        .region_by_id(region_id)
        .await
        .ok_or(OperatorError::RegionNotFound(region_id))?;
    let now = now_ms();
    let silent_ms = core
        .read(|c| {
            c.store(to_store)
                .map(|s| now - s.meta.last_heartbeat_unix_ms)
        })
        .await
        .ok_or(OperatorError::StoreNotFound(to_store))?;
    if silent_ms > DISCONNECTED_AFTER_MS {
        // Down, killed or cut off: its peer cannot take over (and the
        // leader would refuse it); fail now rather than after the timeout.
        return Err(OperatorError::Rejected {
            region_id,
            message: format!(
                "target store {to_store} has not sent a heartbeat for {} s",
                silent_ms / 1000
            ),
        });
    }
    let peers = info
        .region
        .as_ref()
        .map(|r| r.peers.clone())
        .unwrap_or_default();
    if !peers
        .iter()
        .any(|p| p.store_id == to_store && !p.is_learner)
    {
        let stores: Vec<String> = peers.iter().map(|p| p.store_id.to_string()).collect();
        return Err(OperatorError::Invalid(format!(
            "region {region_id} has no voter on store {to_store} (its peers are on stores {})",
            stores.join(",")
        )));
    }
    Ok(info)
}

/// Moves `region_id`'s leadership to its peer on `to_store`; returns the
/// region once PD's map shows that leader.
pub async fn transfer_leader(
    core: &PdCore,
    region_id: u64,
    to_store: u64,
) -> Result<RegionInfo, OperatorError> {
    let deadline = Instant::now() + TRANSFER_TIMEOUT;
    let mut last: Option<OperatorError> = None;
    loop {
        let info = check_target(core, region_id, to_store).await?;
        if leader_store(&info) == Some(to_store) {
            return Ok(info);
        }
        if Instant::now() >= deadline {
            let why = last.map(|e| e.to_string()).unwrap_or_default();
            return Err(OperatorError::TimedOut {
                region_id,
                message: format!(
                    "leader did not move to store {to_store} within {}s{}{why}",
                    TRANSFER_TIMEOUT.as_secs(),
                    if why.is_empty() { "" } else { "; last error: " }
                ),
            });
        }
        let to_peer = info
            .region
            .as_ref()
            .and_then(|r| {
                r.peers
                    .iter()
                    .find(|p| p.store_id == to_store && !p.is_learner)
            })
            .map(|p| p.id)
            .unwrap_or_default();
        match ask_leader(&info.leader_addr, region_id, to_peer).await {
            Ok(()) => last = None,
            Err(e) if e.is_retryable() => {
                tracing::debug!(region_id, to_store, error = %e, "transfer-leader attempt failed");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
        let until = (Instant::now() + RESEND_AFTER).min(deadline);
        while Instant::now() < until {
            tokio::time::sleep(POLL).await;
            match core.region_by_id(region_id).await {
                Some(i) if leader_store(&i) == Some(to_store) => return Ok(i),
                Some(_) => {}
                None => return Err(OperatorError::RegionNotFound(region_id)),
            }
        }
    }
}

/// Sends `TransferLeader` to the leader at `addr`, following `NotLeader`.
async fn ask_leader(addr: &str, region_id: u64, to_peer: u64) -> Result<(), OperatorError> {
    let mut addr = addr.to_string();
    for _ in 0..MAX_HOPS {
        if addr.is_empty() {
            return Err(OperatorError::NoLeader(region_id));
        }
        let store_err = |message: String| OperatorError::Store {
            addr: addr.clone(),
            message,
        };
        let ch =
            kura_pd_client::channel::lazy_channel(&addr).map_err(|e| store_err(e.to_string()))?;
        let req = TransferLeaderRequest {
            header: Some(RequestHeader {
                region_id,
                epoch: None,
            }),
            to_peer_id: to_peer,
        };
        let resp =
            match tokio::time::timeout(RPC_TIMEOUT, MetashardClient::new(ch).transfer_leader(req))
                .await
            {
                Err(_) => return Err(store_err("transfer-leader call timed out".into())),
                Ok(Err(s)) => return Err(store_err(s.message().to_string())),
                Ok(Ok(r)) => r.into_inner(),
            };
        let Some(e) = resp.header.and_then(|h| h.region_error) else {
            return Ok(());
        };
        if let Some(nl) = e.not_leader {
            if nl.leader.is_some_and(|l| l.id == to_peer) {
                // Already done; PD's map catches up with the next heartbeat.
                return Ok(());
            }
            addr = nl.leader_addr;
            continue;
        }
        if e.server_busy.is_some() {
            // e.g. the target is not caught up yet: worth another try.
            return Err(store_err(e.message));
        }
        return Err(OperatorError::Rejected {
            region_id,
            message: e.message,
        });
    }
    Err(OperatorError::NoLeader(region_id))
}
