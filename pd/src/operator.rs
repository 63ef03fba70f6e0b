//! Operators an operator (person) asks PD to run, like pd-ctl's `operator add`.
//! `merge-region` lives in `merge.rs`. `split-region` PD forwards to the region's leader
//! store (`Metashard.SplitRegion`); the leader allocates the new ids from PD,
//! picks the middle object prefix if no key is given, and proposes the split
//! as one Raft command. PD then records both halves at once (the leaders'
//! heartbeats confirm them; the map's epoch rules drop anything older).
//!
//! Several keys (HTTP only: `"keys": [hex, ...]`) split the region at each of
//! them in key order, one split after the other (each key must lie inside
//! the region): how tests and `kura bench meta` pre-split a key range.
//!
//! Front ends: `POST /pd/api/v1/operators` (`http_add_operator`) and
//! `pdctl operator add split-region ID [--key HEX]` (`pdctl_add`).
//!
//! `transfer-leader` (`"to_store_id"`) goes to the scheduling core
//! (`schedule::http::add_transfer_leader`), like the operators PD's own
//! schedulers make.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use kura_proto::common::{Region, RegionError};
use kura_proto::metashard::metashard_client::MetashardClient;
use kura_proto::metashard::{RequestHeader, SplitRegionRequest};
use kura_proto::pd::RegionHeartbeatRequest;
use serde::{Deserialize, Serialize};

use crate::schedule::{Operator, OperatorKind};
use crate::server::PdCore;

/// One split may take a PD id allocation and a Raft round; generous.
const SPLIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Leader hops followed before giving up (leadership moving under us).
const MAX_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("invalid operator: {0}")]
    Invalid(String),
    #[error("region {0} not found")]
    RegionNotFound(u64),
    #[error("region {0} has no known leader yet")]
    NoLeader(u64),
    #[error("leader store {addr}: {message}")]
    Store { addr: String, message: String },
    #[error("region {region_id}: {message}")]
    Rejected { region_id: u64, message: String },
    #[error("store {0} not found")]
    StoreNotFound(u64),
    #[error("region {region_id} already has a running operator ({running})")]
    Busy { region_id: u64, running: String },
    #[error("region {region_id}: {message}")]
    TimedOut { region_id: u64, message: String },
    /// `pdctl operator remove` stopped it (what was done is in the message).
    #[error("{0}")]
    Cancelled(String),
    /// `pdctl operator remove` of a region without a running operator.
    #[error("region {0} has no running operator")]
    NoOperator(u64),
}

impl OperatorError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            OperatorError::Invalid(_) => false,
            OperatorError::RegionNotFound(_) => false,
            OperatorError::NoLeader(_) => true,
            OperatorError::Store { .. } => true,
            OperatorError::Rejected { .. } => false,
            OperatorError::StoreNotFound(_) => false,
            OperatorError::Busy { .. } => true,
            OperatorError::TimedOut { .. } => true,
            OperatorError::Cancelled(_) => false,
            OperatorError::NoOperator(_) => false,
        }
    }

    pub(crate) fn http_status(&self) -> StatusCode {
        match self {
            OperatorError::Invalid(_) => StatusCode::BAD_REQUEST,
            OperatorError::RegionNotFound(_) => StatusCode::NOT_FOUND,
            OperatorError::NoLeader(_) | OperatorError::Store { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            OperatorError::Rejected { .. } => StatusCode::CONFLICT,
            OperatorError::StoreNotFound(_) => StatusCode::NOT_FOUND,
            OperatorError::Busy { .. } => StatusCode::CONFLICT,
            OperatorError::TimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
            OperatorError::Cancelled(_) => StatusCode::CONFLICT,
            OperatorError::NoOperator(_) => StatusCode::NOT_FOUND,
        }
    }
}

/// The body of `POST /pd/api/v1/operators` (pd-ctl's shape).
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct OperatorRequest {
    pub name: String,
    #[serde(default)]
    pub region_id: u64,
    /// merge-region: the region folded into `target_region_id`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub source_region_id: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub target_region_id: u64,
    /// add-peer: the store to add to; remove-peer: the store to remove from.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub store_id: u64,
    /// transfer-peer: from this store ...
    #[serde(default, skip_serializing_if = "is_zero")]
    pub from_store_id: u64,
    /// ... to this one; transfer-leader: the store to move the leader to.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub to_store_id: u64,
    /// Split keys as hex. Empty: the middle of the region; several: split at
    /// each, in key order.
    #[serde(default)]
    pub keys: Vec<String>,
    /// split-region (pd-ctl's): `usekey` splits at `keys` (required);
    /// `scan` and `approximate` (the same in Kura) split at the middle of
    /// the region's keys, which its leader finds by scanning them, rounded
    /// to an object boundary. Empty: `usekey` if keys are given, else `scan`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Serialize)]
pub struct SplitJson {
    pub name: &'static str,
    pub region_id: u64,
    /// The parent's new range first, then the new region.
    pub regions: Vec<SplitRegionJson>,
}

#[derive(Serialize)]
pub struct SplitRegionJson {
    pub id: u64,
    pub start_key: String,
    pub end_key: String,
    pub conf_ver: u64,
    pub version: u64,
}

/// Most keys one operator may split at (each is one Raft split).
pub const MAX_SPLIT_KEYS: usize = 4096;

/// Checks an operator request; returns the region and its split keys, sorted
/// and distinct (none: the middle of the region).
pub fn parse_split(req: &OperatorRequest) -> Result<(u64, Vec<Vec<u8>>), OperatorError> {
    if req.name != "split-region" {
        return Err(OperatorError::Invalid(format!(
            "unknown operator {:?} (supported: split-region, merge-region, add-peer, \
             remove-peer, transfer-peer, transfer-leader, scatter-region)",
            req.name
        )));
    }
    if req.region_id == 0 {
        return Err(OperatorError::Invalid("region_id is required".into()));
    }
    if req.keys.len() > MAX_SPLIT_KEYS {
        return Err(OperatorError::Invalid(format!(
            "at most {MAX_SPLIT_KEYS} split keys per operator"
        )));
    }
    match (req.policy.as_str(), req.keys.is_empty()) {
        ("" | "usekey", false) | ("" | "scan" | "approximate", true) => {}
        ("usekey", true) => {
            return Err(OperatorError::Invalid(
                "policy usekey needs the split keys (\"keys\": [hex, ...])".into(),
            ))
        }
        ("scan" | "approximate", false) => {
            return Err(OperatorError::Invalid(format!(
                "policy {} finds the split key itself; give keys with policy usekey",
                req.policy
            )))
        }
        (other, _) => {
            return Err(OperatorError::Invalid(format!(
                "unknown split policy {other:?} (approximate, scan, usekey)"
            )))
        }
    }
    let mut keys = req
        .keys
        .iter()
        .map(|k| {
            hex::decode(k.trim_start_matches("0x"))
                .map_err(|e| OperatorError::Invalid(format!("key must be hex: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    keys.retain(|k| !k.is_empty());
    keys.sort();
    keys.dedup();
    Ok((req.region_id, keys))
}

/// Splits `region_id` at every key of `keys` (sorted; empty: its middle),
/// each next key in the region the previous split created. Returns every
/// resulting region in key order: [parent, new 1, new 2, ...].
pub async fn split_region_at(
    core: &PdCore,
    region_id: u64,
    keys: Vec<Vec<u8>>,
) -> Result<Vec<Region>, OperatorError> {
    if keys.is_empty() {
        return split_region(core, region_id, None).await;
    }
    let mut out: Vec<Region> = Vec::with_capacity(keys.len() + 1);
    let mut target = region_id;
    let mut hint = String::new();
    for key in keys {
        let (mut halves, addr) = split_region_hinted(core, target, Some(key), &hint).await?;
        hint = addr;
        let right = halves.pop();
        let left = halves.pop();
        match (left, right) {
            (Some(l), Some(r)) => {
                out.retain(|x| x.id != l.id);
                out.push(l);
                target = r.id;
                out.push(r);
            }
            _ => {
                return Err(OperatorError::Rejected {
                    region_id: target,
                    message: "split answered without both halves".into(),
                })
            }
        }
    }
    Ok(out)
}

fn region_error_message(e: &RegionError) -> String {
    if e.message.is_empty() {
        "region error".into()
    } else {
        e.message.clone()
    }
}

/// Splits `region_id` at `key` (or its middle) through its leader and
/// records the result in PD's region map. Returns [parent, new region].
pub async fn split_region(
    core: &PdCore,
    region_id: u64,
    key: Option<Vec<u8>>,
) -> Result<Vec<Region>, OperatorError> {
    split_region_hinted(core, region_id, key, "")
        .await
        .map(|(regions, _)| regions)
}

/// [`split_region`], trying `hint` when PD knows no leader (a region a split
/// just created: its leader is on the parent leader's store). Also returns
/// the address of the store that did the split.
async fn split_region_hinted(
    core: &PdCore,
    region_id: u64,
    key: Option<Vec<u8>>,
    hint: &str,
) -> Result<(Vec<Region>, String), OperatorError> {
    let info = core
        .region_by_id(region_id)
        .await
        .ok_or(OperatorError::RegionNotFound(region_id))?;
    let mut addr = if info.leader_addr.is_empty() {
        hint.to_string()
    } else {
        info.leader_addr.clone()
    };
    let mut last = OperatorError::NoLeader(region_id);
    for _ in 0..MAX_ATTEMPTS {
        if addr.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            addr = core
                .region_by_id(region_id)
                .await
                .map(|i| i.leader_addr)
                .unwrap_or_default();
            if addr.is_empty() {
                continue;
            }
        }
        let store_err = |message: String| OperatorError::Store {
            addr: addr.clone(),
            message,
        };
        let ch =
            kura_pd_client::channel::lazy_channel(&addr).map_err(|e| store_err(e.to_string()))?;
        let req = SplitRegionRequest {
            // No epoch: split the region as the leader has it now.
            header: Some(RequestHeader {
                region_id,
                epoch: None,
            }),
            split_key: key.clone().unwrap_or_default().into(),
        };
        let resp =
            match tokio::time::timeout(SPLIT_TIMEOUT, MetashardClient::new(ch).split_region(req))
                .await
            {
                Err(_) => return Err(store_err("split timed out; outcome unknown".into())),
                Ok(Err(s)) => return Err(store_err(s.message().to_string())),
                Ok(Ok(r)) => r.into_inner(),
            };
        match resp.header.and_then(|h| h.region_error) {
            None => {
                record(core, &resp.regions).await;
                tracing::info!(region_id, "split-region operator done");
                return Ok((resp.regions, addr));
            }
            Some(e) if e.not_leader.is_some() => {
                last = OperatorError::Rejected {
                    region_id,
                    message: region_error_message(&e),
                };
                let leader = e.not_leader.map(|nl| nl.leader_addr).unwrap_or_default();
                addr = if leader.is_empty() && !hint.is_empty() {
                    // A new region still electing its leader on `hint`.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    hint.to_string()
                } else {
                    leader
                };
            }
            Some(e) => {
                return Err(OperatorError::Rejected {
                    region_id,
                    message: region_error_message(&e),
                })
            }
        }
    }
    Err(last)
}

/// Records the split regions in the map now, without waiting for heartbeats
/// (no leader or statistics: those come with each region's next heartbeat).
pub(crate) async fn record(core: &PdCore, regions: &[Region]) {
    for r in regions {
        let req = RegionHeartbeatRequest {
            region: Some(r.clone()),
            leader: None,
            approximate_size: 0,
            approximate_keys: 0,
            term: 0,
            ..Default::default()
        };
        if let Err(e) = core.region_heartbeat(req).await {
            tracing::warn!(region_id = r.id, error = %e, "cannot record a split region");
        }
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn error(status: StatusCode, message: String) -> Response {
    json(status, &crate::http::ErrorJson { error: message })
}

fn split_json(region_id: u64, regions: &[Region]) -> SplitJson {
    SplitJson {
        name: "split-region",
        region_id,
        regions: regions
            .iter()
            .map(|r| {
                let e = r.epoch.unwrap_or_default();
                SplitRegionJson {
                    id: r.id,
                    start_key: hex::encode_upper(&r.start_key),
                    end_key: hex::encode_upper(&r.end_key),
                    conf_ver: e.conf_ver,
                    version: e.version,
                }
            })
            .collect(),
    }
}

/// `POST /pd/api/v1/operators`: runs the operator and answers when it is done.
pub async fn http_add_operator(State(core): State<Arc<PdCore>>, body: Bytes) -> Response {
    let req: OperatorRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    if req.name == crate::schedule::TRANSFER_LEADER {
        return crate::schedule::http::add_transfer_leader(&core, &req).await;
    }
    match req.name.as_str() {
        crate::schedule::scatter::SCATTER_REGION => {
            return match crate::schedule::scatter::run_scatter(&core, req.region_id).await {
                Ok(done) => json(StatusCode::OK, &done),
                Err(e) => error(e.http_status(), e.to_string()),
            }
        }
        "merge-region" => return http_merge(&core, &req).await,
        "add-peer" | "remove-peer" | "transfer-peer" => return http_change_peer(&core, &req).await,
        _ => {}
    }
    let (region_id, keys) = match parse_split(&req) {
        Ok(v) => v,
        Err(e) => return error(e.http_status(), e.to_string()),
    };
    match split_region_at(&core, region_id, keys).await {
        Ok(regions) => json(StatusCode::OK, &split_json(region_id, &regions)),
        Err(e) => error(e.http_status(), e.to_string()),
    }
}

/// The answer to a merge-region operator.
#[derive(Serialize)]
pub struct MergeJson {
    pub name: &'static str,
    pub source_region_id: u64,
    pub target_region_id: u64,
    /// The target as merged.
    pub region: SplitRegionJson,
}

/// The answer to add-peer / remove-peer / transfer-peer.
#[derive(Serialize)]
pub struct PeerChangeJson {
    pub name: String,
    pub region_id: u64,
    pub region: SplitRegionJson,
    /// `[peer id, store id, learner]` of every peer after the change.
    pub peers: Vec<(u64, u64, bool)>,
}

async fn http_change_peer(core: &PdCore, req: &OperatorRequest) -> Response {
    let id = req.region_id;
    let res = match req.name.as_str() {
        _ if id == 0 => Err(OperatorError::Invalid("region_id is required".into())),
        "add-peer" | "remove-peer" if req.store_id == 0 => {
            Err(OperatorError::Invalid("store_id is required".into()))
        }
        "transfer-peer" if req.from_store_id == 0 || req.to_store_id == 0 => Err(
            OperatorError::Invalid("from_store_id and to_store_id are required".into()),
        ),
        name => {
            let kind = match name {
                "add-peer" => OperatorKind::AddPeer {
                    store: req.store_id,
                },
                "remove-peer" => OperatorKind::RemovePeer {
                    store: req.store_id,
                },
                _ => OperatorKind::ReplacePeer {
                    from_store: req.from_store_id,
                    to_store: req.to_store_id,
                },
            };
            let op = Operator {
                region_id: id,
                kind,
                source: crate::schedule::ADMIN,
            };
            crate::schedule::coordinator::run_admin_peer_change(core, &op).await
        }
    };
    match res {
        Ok(r) => {
            let mut j = split_json(id, std::slice::from_ref(&r));
            json(
                StatusCode::OK,
                &PeerChangeJson {
                    name: req.name.clone(),
                    region_id: id,
                    region: j.regions.remove(0),
                    peers: r
                        .peers
                        .iter()
                        .map(|p| (p.id, p.store_id, p.is_learner))
                        .collect(),
                },
            )
        }
        Err(e) => error(e.http_status(), e.to_string()),
    }
}

async fn http_merge(core: &PdCore, req: &OperatorRequest) -> Response {
    let (source, target) = (req.source_region_id, req.target_region_id);
    if source == 0 || target == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "merge-region needs source_region_id and target_region_id".into(),
        );
    }
    match crate::merge::merge_region(core, source, target).await {
        Ok(merged) => {
            let mut j = split_json(target, std::slice::from_ref(&merged));
            json(
                StatusCode::OK,
                &MergeJson {
                    name: "merge-region",
                    source_region_id: source,
                    target_region_id: target,
                    region: j.regions.remove(0),
                },
            )
        }
        Err(e) => error(e.http_status(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, id: u64, keys: &[&str]) -> OperatorRequest {
        OperatorRequest {
            name: name.into(),
            region_id: id,
            keys: keys.iter().map(|k| k.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn split_requests_are_validated() {
        let none: Vec<Vec<u8>> = vec![];
        assert_eq!(
            parse_split(&req("split-region", 4, &[])).unwrap(),
            (4, none.clone())
        );
        assert_eq!(
            parse_split(&req("split-region", 4, &["0x0A0b"])).unwrap(),
            (4, vec![vec![0x0A, 0x0B]])
        );
        assert_eq!(
            parse_split(&req("split-region", 4, &[""])).unwrap(),
            (4, none)
        );
        assert_eq!(
            parse_split(&req("split-region", 4, &["0B", "0A", "0B"])).unwrap(),
            (4, vec![vec![0x0A], vec![0x0B]]),
            "sorted, distinct"
        );
        let too_many: Vec<String> = (0..=MAX_SPLIT_KEYS).map(|i| format!("{i:08X}")).collect();
        let too_many: Vec<&str> = too_many.iter().map(|s| s.as_str()).collect();
        for bad in [
            req("scatter-region", 4, &[]),
            req("split-region", 0, &[]),
            req("split-region", 4, &["zz"]),
            req("split-region", 4, &too_many),
        ] {
            assert!(matches!(parse_split(&bad), Err(OperatorError::Invalid(_))));
        }
        let body: OperatorRequest =
            serde_json::from_str(r#"{"name":"split-region","region_id":2}"#).unwrap();
        assert_eq!(body, req("split-region", 2, &[]));
    }
}
