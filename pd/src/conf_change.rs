//! Membership operators of one region (pd-ctl's names):
//! - `add-peer REGION STORE`: a learner on STORE (new peer id from PD), which
//!   the leader catches up by snapshot; once it has applied the learner's
//!   own conf change entry it is promoted to voter.
//! - `remove-peer REGION STORE`: if STORE holds the leader, leadership moves
//!   to another voter first; then the peer is removed (its store deletes the
//!   peer's state and data).
//! - `transfer-peer REGION FROM TO`: add on TO, then remove from FROM; refused
//!   if the voters would end up with two in one zone while three zones exist.
//!
//! Each step is one raft ConfChange proposed on the region's leader
//! (`Metashard.ChangePeer`), answered once applied there.

use std::time::{Duration, Instant};

use kura_proto::common::{Peer, Region};
use kura_proto::metashard::{ChangePeerRequest, PeerChange, RequestHeader, TransferLeaderRequest};

use crate::operator::OperatorError;
use crate::region_rpc::{
    answer, client, leader_status, rejected, status_on, StepAnswer, MAX_ATTEMPTS, STEP_TIMEOUT,
};
use crate::server::PdCore;

/// How long a new learner may take to catch up (it gets a snapshot).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a leadership move may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

async fn region(core: &PdCore, id: u64) -> Result<Region, OperatorError> {
    core.region_by_id(id)
        .await
        .and_then(|i| i.region)
        .ok_or(OperatorError::RegionNotFound(id))
}

/// Store `id`'s address and zone, if PD knows it as a live store.
async fn live_store(core: &PdCore, id: u64) -> Result<(String, String), OperatorError> {
    let now = crate::server::now_ms();
    let max_down = core.runtime().max_store_down_ms();
    core.read(|c| {
        let s = c
            .store(id)
            .ok_or_else(|| OperatorError::Invalid(format!("store {id} not found")))?;
        if c.store_liveness(&s.meta, now, max_down) != crate::cluster::Liveness::Up {
            return Err(OperatorError::Invalid(format!("store {id} is not up")));
        }
        let zone = c.store_labels(id).zone;
        Ok((s.meta.address.clone(), zone))
    })
    .await
}

/// Proposes one membership change on the region's leader.
async fn change(
    core: &PdCore,
    region_id: u64,
    kind: PeerChange,
    peer: Peer,
) -> Result<(Region, u64), OperatorError> {
    let current = region(core, region_id).await?;
    let mut last = OperatorError::NoLeader(region_id);
    for _ in 0..MAX_ATTEMPTS {
        let Some((addr, _)) = leader_status(core, &current).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let req = ChangePeerRequest {
            header: Some(RequestHeader {
                region_id,
                epoch: None,
            }),
            change: kind as i32,
            peer: Some(peer),
        };
        let mut c = client(&addr)?;
        match answer(tokio::time::timeout(STEP_TIMEOUT, c.change_peer(req)).await) {
            StepAnswer::Done(r, index) => {
                crate::operator::record(core, std::slice::from_ref(&r)).await;
                return Ok((r, index));
            }
            StepAnswer::NotLeader => {}
            StepAnswer::Rejected(e) => return Err(rejected(region_id, &e)),
            StepAnswer::Unknown(why) => {
                // The next leader status tells whether it applied; a repeated
                // change is refused by the store, never applied twice.
                last = OperatorError::Store { addr, message: why };
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

/// Runs `add-peer`: returns the region with the new voter.
pub async fn add_peer(
    core: &PdCore,
    region_id: u64,
    store_id: u64,
) -> Result<Region, OperatorError> {
    let r = region(core, region_id).await?;
    if r.peers.iter().any(|p| p.store_id == store_id) {
        return Err(OperatorError::Invalid(format!(
            "store {store_id} already holds a peer of region {region_id}"
        )));
    }
    let (addr, _) = live_store(core, store_id).await?;
    let id = core.alloc_ids(1).await.map_err(|e| OperatorError::Store {
        addr: String::new(),
        message: format!("PD cannot allocate an id: {e}"),
    })?;
    let learner = Peer {
        id,
        store_id,
        is_learner: true,
    };
    let (_, index) = change(core, region_id, PeerChange::AddLearner, learner).await?;
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        match status_on(&addr, region_id).await {
            Ok(Some(st)) if st.applied_index >= index => break,
            _ if Instant::now() >= deadline => {
                return Err(OperatorError::Rejected {
                    region_id,
                    message: format!(
                        "the learner on store {store_id} did not catch up in \
                         {CATCH_UP_TIMEOUT:?}; it stays a learner (remove-peer to undo)"
                    ),
                })
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let voter = Peer {
        is_learner: false,
        ..learner
    };
    let (r, _) = change(core, region_id, PeerChange::Promote, voter).await?;
    tracing::info!(region_id, store_id, "add-peer operator done");
    Ok(r)
}

/// Runs `remove-peer`: returns the region without the store's peer.
pub async fn remove_peer(
    core: &PdCore,
    region_id: u64,
    store_id: u64,
) -> Result<Region, OperatorError> {
    let r = region(core, region_id).await?;
    let Some(peer) = r.peers.iter().find(|p| p.store_id == store_id).copied() else {
        return Err(OperatorError::Invalid(format!(
            "store {store_id} holds no peer of region {region_id}"
        )));
    };
    move_leader_off(core, &r, peer).await?;
    let (r, _) = change(core, region_id, PeerChange::Remove, peer).await?;
    tracing::info!(region_id, store_id, "remove-peer operator done");
    Ok(r)
}

/// If `peer` leads the region, hands leadership to another voter first.
async fn move_leader_off(core: &PdCore, r: &Region, peer: Peer) -> Result<(), OperatorError> {
    let deadline = Instant::now() + TRANSFER_TIMEOUT;
    loop {
        let Some((addr, st)) = leader_status(core, r).await else {
            if Instant::now() >= deadline {
                return Err(OperatorError::NoLeader(r.id));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if st.leader_peer_id != peer.id {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(OperatorError::Rejected {
                region_id: r.id,
                message: "the leader did not move off the peer being removed".into(),
            });
        }
        let Some(to) = r.peers.iter().find(|p| p.id != peer.id && !p.is_learner) else {
            return Err(OperatorError::Invalid(format!(
                "region {} has no other voter to lead it",
                r.id
            )));
        };
        let mut c = client(&addr)?;
        let req = TransferLeaderRequest {
            header: Some(RequestHeader {
                region_id: r.id,
                epoch: None,
            }),
            to_peer_id: to.id,
        };
        let _ = tokio::time::timeout(STEP_TIMEOUT, c.transfer_leader(req)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Runs `transfer-peer`: the region's peer on `from` moves to `to`.
pub async fn transfer_peer(
    core: &PdCore,
    region_id: u64,
    from: u64,
    to: u64,
) -> Result<Region, OperatorError> {
    let never = std::sync::atomic::AtomicBool::new(false);
    transfer_peer_cancellable(core, region_id, from, to, &never).await
}

/// [`transfer_peer`] that stops before removing the old peer once `cancel`
/// is set (`pdctl operator remove`): the add step, once started, finishes.
pub async fn transfer_peer_cancellable(
    core: &PdCore,
    region_id: u64,
    from: u64,
    to: u64,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Region, OperatorError> {
    let r = region(core, region_id).await?;
    if !r.peers.iter().any(|p| p.store_id == from) {
        return Err(OperatorError::Invalid(format!(
            "store {from} holds no peer of region {region_id}"
        )));
    }
    let zones = core.read(|c| {
        let zone = |id: u64| c.store_labels(id).zone;
        let after: Vec<String> = r
            .peers
            .iter()
            .filter(|p| p.store_id != from && !p.is_learner)
            .map(|p| zone(p.store_id))
            .chain([zone(to)])
            .collect();
        let all: std::collections::BTreeSet<String> = c.stores().map(|s| zone(s.meta.id)).collect();
        (after, all.len())
    });
    let (after, zone_count) = zones.await;
    if !one_per_zone(&after, zone_count) {
        return Err(OperatorError::Invalid(format!(
            "moving region {region_id}'s peer from store {from} to store {to} would put two \
             voters in one zone"
        )));
    }
    add_peer(core, region_id, to).await?;
    if cancel.load(std::sync::atomic::Ordering::Acquire) {
        return Err(OperatorError::Cancelled(format!(
            "cancelled after add-peer: region {region_id} keeps its new peer on store {to} and \
             its peer on store {from} (remove-peer to undo either)"
        )));
    }
    remove_peer(core, region_id, from).await
}

/// Whether voters in `zones` keep one per zone as far as the cluster's
/// `zone_count` zones allow.
pub fn one_per_zone(zones: &[String], zone_count: usize) -> bool {
    let distinct: std::collections::BTreeSet<&String> = zones.iter().collect();
    distinct.len() >= zones.len().min(zone_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn zones_stay_distinct_when_they_can() {
        assert!(one_per_zone(&z(&["z1", "z2", "z3"]), 3));
        assert!(!one_per_zone(&z(&["z1", "z1", "z3"]), 3));
        assert!(
            one_per_zone(&z(&["z1", "z1", "z2"]), 2),
            "only two zones exist"
        );
        assert!(!one_per_zone(&z(&["z1", "z1", "z1"]), 2));
        assert!(one_per_zone(&z(&["z1", "z1", "z1"]), 1));
    }
}
