//! The HTTP admin API (what `pdctl -u` talks to), pd-ctl-like paths under
//! `/pd/api/v1/`, JSON shaped like pd-ctl's where it has the command.
//! Read-only but for data node decommissioning, `POST operators`
//! (`operator.rs`, `schedule/http.rs`) and pausing schedulers;
//! docs/pd-http-api.md lists every endpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kura_proto::common::{Labels, Peer};
use kura_proto::pd::{DataNode, PdMember};
use serde::Serialize;

use crate::cluster::{Cluster, NodeKind, RegionEntry, StoreInfo};
use crate::placement::{Rules, STORAGE_CLASSES};
use crate::rebalance::{self, Drain, Plan};
use crate::server::{now_ms, PdCore};
use crate::Error;

pub const API_PREFIX: &str = "/pd/api/v1";

/// The router serving the admin API.
pub fn router(core: Arc<PdCore>) -> Router {
    Router::new()
        .route("/pd/api/v1/health", get(health))
        .route("/pd/api/v1/members", get(members))
        .route("/pd/api/v1/cluster", get(cluster))
        .route("/pd/api/v1/stores", get(stores))
        .route("/pd/api/v1/store/{id}", get(store).delete(delete_store))
        .route(
            "/pd/api/v1/store/{id}/label",
            post(crate::settings_http::set_labels),
        )
        .route(
            "/pd/api/v1/store/{id}/weight",
            post(crate::settings_http::set_weight),
        )
        .route(
            "/pd/api/v1/store/{id}/limit",
            post(crate::settings_http::set_limit),
        )
        .route("/pd/api/v1/stores/limit", get(crate::settings_http::limits))
        .route(
            "/pd/api/v1/config",
            get(crate::settings_http::show_config).post(crate::settings_http::set_config),
        )
        .route("/pd/api/v1/regions", get(regions))
        .route("/pd/api/v1/regions/check/{kind}", get(regions_check))
        .route("/pd/api/v1/regions/writeflow", get(regions_writeflow))
        .route("/pd/api/v1/regions/readflow", get(regions_readflow))
        .route("/pd/api/v1/region/id/{id}", get(region_by_id))
        .route("/pd/api/v1/region/key/", get(region_by_empty_key))
        .route("/pd/api/v1/region/key/{hex_key}", get(region_by_key))
        .route(
            "/pd/api/v1/region/bucket/{bucket}",
            get(crate::object_region::region_by_object),
        )
        .route(
            "/pd/api/v1/region/bucket/{bucket}/{hex_key}",
            get(crate::object_region::region_by_object),
        )
        .route("/pd/api/v1/placement", get(placement))
        .route("/pd/api/v1/datanodes", get(datanodes))
        .route("/pd/api/v1/datanode/{id}", get(datanode))
        .route(
            "/pd/api/v1/datanode/{id}/decommission",
            post(decommission).delete(cancel_decommission),
        )
        .route(
            "/pd/api/v1/operators",
            post(crate::operator::http_add_operator).get(crate::schedule::http::list_operators),
        )
        .route(
            "/pd/api/v1/operators/{region_id}",
            axum::routing::delete(crate::schedule::http::remove_operator),
        )
        .route(
            "/pd/api/v1/schedulers",
            get(crate::schedule::http::list_schedulers),
        )
        .route(
            "/pd/api/v1/schedulers/{name}/{action}",
            post(crate::schedule::http::set_scheduler),
        )
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint; see docs/pd-http-api.md".into(),
            )
        })
        .layer(middleware::from_fn_with_state(core.clone(), leader_gate))
        .with_state(core)
}

type Core = State<Arc<PdCore>>;

pub(crate) fn error(status: StatusCode, message: String) -> Response {
    json(status, &ErrorJson { error: message })
}

/// Pretty JSON with fields in declaration order (pdctl prints it verbatim).
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode JSON: {e}"),
        )
            .into_response(),
    }
}

fn parse_id(raw: &str, what: &str) -> Result<u64, String> {
    raw.parse()
        .map_err(|_| format!("invalid {what} id {raw:?}"))
}

// ---- JSON shapes ----

#[derive(Serialize)]
pub struct ErrorJson {
    pub error: String,
}

#[derive(Serialize)]
pub struct MembersJson {
    pub members: Vec<MemberJson>,
    /// null while no leader is known.
    pub leader: Option<MemberJson>,
}

#[derive(Serialize)]
pub struct ClusterJson {
    pub id: u64,
    pub max_peer_count: u32,
    /// The first region exists.
    pub bootstrapped: bool,
    pub store_count: usize,
    pub datanode_count: usize,
    pub region_count: usize,
}

#[derive(Serialize)]
pub struct StoresJson {
    pub count: usize,
    pub stores: Vec<StoreJson>,
}

#[derive(Serialize)]
pub struct RegionsJson {
    pub count: usize,
    pub regions: Vec<RegionJson>,
}

#[derive(Serialize)]
pub struct DataNodesJson {
    pub count: usize,
    pub datanodes: Vec<DataNodeJson>,
}

#[derive(Serialize)]
pub struct LabelJson {
    pub key: String,
    pub value: String,
}

fn labels_json(l: Option<&Labels>) -> Vec<LabelJson> {
    let l = l.cloned().unwrap_or_default();
    [("zone", l.zone), ("rack", l.rack), ("host", l.host)]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| LabelJson {
            key: k.into(),
            value: v,
        })
        .collect()
}

/// RFC 3339 UTC, like pd-ctl's `last_heartbeat_ts`.
pub(crate) fn timestamp(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[derive(Serialize)]
pub struct MemberJson {
    pub name: String,
    pub member_id: u64,
    pub client_urls: Vec<String>,
    pub grpc_address: String,
    pub health: bool,
}

#[derive(Serialize)]
pub struct StoreMetaJson {
    pub id: u64,
    pub address: String,
    pub labels: Vec<LabelJson>,
    pub state_name: &'static str,
    pub status_address: String,
    /// The first 8 hex digits of its data dir's uuid (see [`uuid_prefix`]).
    pub uuid_prefix: String,
    /// The id that registered at its address with another data dir.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<u64>,
}

/// Enough of a data dir's uuid for an operator to tell two apart (32 of
/// its 128 bits): the rest stays secret, since the whole uuid is what a
/// registration or heartbeat of the id must present. Empty: none recorded.
fn uuid_prefix(c: &Cluster, kind: NodeKind, id: u64) -> String {
    c.uuid_of(kind, id)
        .map(|u| u.chars().take(8).collect())
        .unwrap_or_default()
}

#[derive(Serialize)]
pub struct StoreStatusJson {
    pub region_count: u64,
    pub leader_count: u64,
    pub capacity: u64,
    pub used: u64,
    pub last_heartbeat_ts: String,
    /// The store's flow per second (its last heartbeat's sample).
    #[serde(flatten)]
    pub flow: crate::flow::FlowRates,
    /// `store weight` (pd-ctl's fields; 1 by default).
    pub leader_weight: f64,
    pub region_weight: f64,
}

#[derive(Serialize)]
pub struct StoreJson {
    pub store: StoreMetaJson,
    pub status: StoreStatusJson,
}

#[derive(Serialize)]
pub struct PeerJson {
    pub id: u64,
    pub store_id: u64,
    pub role_name: &'static str,
}

#[derive(Serialize)]
pub struct EpochJson {
    pub conf_ver: u64,
    pub version: u64,
}

#[derive(Serialize)]
pub struct RegionJson {
    pub id: u64,
    /// Raw key bytes as upper-case hex (pd-ctl's format); "" is the keyspace's start/end.
    pub start_key: String,
    pub end_key: String,
    pub epoch: EpochJson,
    pub peers: Vec<PeerJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<PeerJson>,
    pub leader_address: String,
    pub approximate_size: u64,
    pub approximate_keys: u64,
    /// Peers the leader has not heard from for a while (pd-ctl's shape).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub down_peers: Vec<DownPeerJson>,
    /// Peers that need a snapshot to catch up.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending_peers: Vec<PeerJson>,
    /// The leader's last flow sample, per second.
    #[serde(flatten)]
    pub flow: crate::flow::FlowRates,
}

#[derive(Serialize)]
pub struct DownPeerJson {
    pub peer: PeerJson,
}

#[derive(Serialize)]
pub struct DataNodeJson {
    pub id: u64,
    pub address: String,
    pub status_address: String,
    pub labels: Vec<LabelJson>,
    /// `Up`/`Down` by heartbeat; `Offline` while decommissioning, `Tombstone`
    /// once done; `Replaced` once another data dir registered at its address.
    pub state_name: &'static str,
    /// `Active`, `Leaving` or `Decommissioned`.
    pub admin_state: &'static str,
    /// The first 8 hex digits of its data dir's uuid (see [`uuid_prefix`]).
    pub uuid_prefix: String,
    /// The id that registered at its address with another data dir.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<u64>,
    pub read_only: bool,
    pub capacity: u64,
    pub used: u64,
    pub last_heartbeat_ts: String,
    /// PG slots it holds, all built classes together.
    pub slots: usize,
    /// Per built class (proto names).
    pub slots_by_class: BTreeMap<&'static str, usize>,
    /// Why its slots move away: `decommission` or `down` (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draining: Option<&'static str>,
    /// While draining: slots it still holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots_remaining: Option<usize>,
    /// Slots the planned steps will still take from / give to it.
    pub slots_to_move_out: usize,
    pub slots_to_move_in: usize,
    /// While draining: why some of its slots cannot move (a class blocked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_blocker: Option<String>,
    /// From its last repair pass (absent until its first heartbeat since PD
    /// started): bodies missing fragments in the PGs it is primary of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair_backlog: Option<u64>,
    /// Repair passes it completed since it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair_passes: Option<u64>,
    /// The newest map version its last pass fully covered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair_map_version: Option<u64>,
}

#[derive(Serialize)]
pub struct PlacementGroupJson {
    pub id: u32,
    pub data_nodes: Vec<u64>,
}

/// One storage class: its groups once built, else why not.
#[derive(Serialize)]
pub struct ClassPlacementJson {
    /// The proto name: "REPLICA3", "EC_4_2", "EC_8_3".
    pub storage_class: &'static str,
    pub data_shards: u32,
    pub parity_shards: u32,
    pub built: bool,
    /// Why the class has no map yet (absent once built).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocker: Option<String>,
    /// Slots still to move to reach the balanced map (all steps to go).
    pub pending_moves: usize,
    /// PGs with slots to move that wait for a member or destination to serve.
    pub waiting_pgs: usize,
    /// Why no slot of the class can move (too few nodes or zones would remain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub move_blocker: Option<String>,
    /// Empty while not built.
    pub groups: Vec<PlacementGroupJson>,
}

#[derive(Serialize)]
pub struct PlacementJson {
    /// One version for all classes; 0 while no class is built.
    pub version: u64,
    /// Every storage class PD knows, built or not, in class order.
    pub classes: Vec<ClassPlacementJson>,
    /// Every data node some built class references.
    pub nodes: Vec<DataNodeJson>,
    pub rebalance: RebalanceJson,
}

/// Slot movement: its limits and progress.
#[derive(Serialize)]
pub struct RebalanceJson {
    pub max_moves_per_step: usize,
    pub interval_secs: u64,
    pub datanode_down_after_secs: u64,
    /// When the last step changed the maps ("" if never).
    pub last_step_ts: String,
    /// Slots moved since the cluster was created.
    pub slots_moved: u64,
    /// Slots still to move, all classes.
    pub pending_moves: usize,
    /// Longest a step waits for repair of the previous one.
    pub repair_catch_up_limit_secs: u64,
    /// The map version the last step made (0: none recorded).
    pub last_step_version: u64,
    /// Bodies missing fragments, summed over the serving data nodes' last passes.
    pub repair_backlog: u64,
    /// Every serving data node reported a pass covering the current map
    /// version with an empty backlog (what a decommission waits for).
    pub repair_caught_up: bool,
    /// Serving data nodes that have not (by id).
    pub repair_lagging_nodes: Vec<u64>,
    /// The next step is due but waits for repair of the last one.
    pub waiting_for_repair: bool,
}

fn peer_json(p: &Peer) -> PeerJson {
    PeerJson {
        id: p.id,
        store_id: p.store_id,
        role_name: if p.is_learner { "Learner" } else { "Voter" },
    }
}

fn region_json(c: &Cluster, e: &RegionEntry) -> RegionJson {
    let epoch = e.region.epoch.unwrap_or_default();
    RegionJson {
        id: e.region.id,
        start_key: hex::encode_upper(&e.region.start_key),
        end_key: hex::encode_upper(&e.region.end_key),
        epoch: EpochJson {
            conf_ver: epoch.conf_ver,
            version: epoch.version,
        },
        peers: e.region.peers.iter().map(peer_json).collect(),
        leader: e.leader.as_ref().map(peer_json),
        leader_address: e
            .leader
            .as_ref()
            .map(|l| c.store_address(l.store_id))
            .unwrap_or_default(),
        approximate_size: e.approximate_size,
        approximate_keys: e.approximate_keys,
        down_peers: e
            .down_peers
            .iter()
            .map(|p| DownPeerJson { peer: peer_json(p) })
            .collect(),
        pending_peers: e.pending_peers.iter().map(peer_json).collect(),
        flow: e.flow.last,
    }
}

fn store_json(c: &Cluster, s: &StoreInfo, now: i64, max_down_ms: i64) -> StoreJson {
    let (region_count, leader_count) = c.store_region_counts(s.meta.id);
    StoreJson {
        store: StoreMetaJson {
            id: s.meta.id,
            address: s.meta.address.clone(),
            labels: c
                .store_label_map(s.meta.id)
                .into_iter()
                .map(|(key, value)| LabelJson { key, value })
                .collect(),
            state_name: c.store_liveness(&s.meta, now, max_down_ms).name(),
            status_address: s.meta.status_address.clone(),
            uuid_prefix: uuid_prefix(c, NodeKind::Store, s.meta.id),
            replaced_by: c.replaced_by(NodeKind::Store, s.meta.id),
        },
        status: StoreStatusJson {
            region_count,
            leader_count,
            capacity: s.stats.capacity_bytes,
            used: s.stats.used_bytes,
            last_heartbeat_ts: timestamp(s.meta.last_heartbeat_unix_ms),
            flow: s.stats.flow,
            leader_weight: c.settings.store(s.meta.id).leader_weight,
            region_weight: c.settings.store(s.meta.id).region_weight,
        },
    }
}

/// What datanode JSON needs besides the node: the model, the plan, the clock.
struct NodeCtx<'a> {
    c: &'a Cluster,
    plan: &'a Plan,
    now: i64,
    max_down_ms: i64,
    /// Nodes whose slots move away, and why.
    drains: BTreeMap<u64, Drain>,
}

impl NodeCtx<'_> {
    fn json(&self, n: &DataNode) -> DataNodeJson {
        let c = self.c;
        let by_class = rebalance::slots_by_class(&c.placement, n.id);
        let slots = by_class.values().sum();
        let draining = self.drains.get(&n.id).copied();
        let repair = c.repair_report(n.id);
        DataNodeJson {
            id: n.id,
            address: n.address.clone(),
            status_address: n.status_address.clone(),
            labels: labels_json(n.labels.as_ref()),
            state_name: c.data_node_liveness(n, self.now, self.max_down_ms).name(),
            admin_state: c.data_node_admin_state(n.id).name(),
            uuid_prefix: uuid_prefix(c, NodeKind::DataNode, n.id),
            replaced_by: c.replaced_by(NodeKind::DataNode, n.id),
            read_only: n.read_only,
            capacity: n.capacity_bytes,
            used: n.used_bytes,
            last_heartbeat_ts: timestamp(n.last_heartbeat_unix_ms),
            slots,
            slots_by_class: by_class
                .into_iter()
                .map(|(class, k)| (class.as_str_name(), k))
                .collect(),
            draining: draining.map(|d| d.name()),
            slots_remaining: draining.map(|_| slots),
            slots_to_move_out: self.plan.pending_out.get(&n.id).copied().unwrap_or(0),
            slots_to_move_in: self.plan.pending_in.get(&n.id).copied().unwrap_or(0),
            drain_blocker: draining.and_then(|_| self.plan.drain_blocker(&c.placement, n.id)),
            repair_backlog: repair.map(|r| r.backlog),
            repair_passes: repair.map(|r| r.passes),
            repair_map_version: repair.map(|r| r.map_version),
        }
    }
}

fn max_down_ms(core: &PdCore) -> i64 {
    core.runtime().max_store_down_ms()
}

fn node_ctx<'a>(core: &PdCore, c: &'a Cluster, plan: &'a Plan) -> NodeCtx<'a> {
    let (now, max_down_ms) = (now_ms(), max_down_ms(core));
    let down_after_ms = core.config().datanode_down_after.as_millis() as i64;
    NodeCtx {
        c,
        plan,
        now,
        max_down_ms,
        drains: c
            .node_views(now, max_down_ms, down_after_ms)
            .into_iter()
            .filter_map(|v| Some((v.desc.id, v.drain?)))
            .collect(),
    }
}

// ---- handlers ----

fn member_json(m: &PdMember, health: bool) -> MemberJson {
    MemberJson {
        name: format!("pd-{}", m.id),
        member_id: m.id,
        client_urls: if m.http_address.is_empty() {
            Vec::new()
        } else {
            vec![format!("http://{}", m.http_address)]
        },
        grpc_address: m.grpc_address.clone(),
        health,
    }
}

/// Every member with its health as this member sees it: the leader knows
/// whom it heard from recently; a follower vouches for itself and the leader.
fn members_json(core: &PdCore) -> MembersJson {
    let (members, leader) = core.members();
    let healthy = |id: u64| match core.replica() {
        None => true,
        Some(r) => {
            let st = r.status();
            if st.serving {
                st.active.contains(&id)
            } else {
                id == r.id() || id == st.leader_id
            }
        }
    };
    MembersJson {
        members: members
            .iter()
            .map(|m| member_json(m, healthy(m.id)))
            .collect(),
        leader: leader.map(|m| member_json(&m, healthy(m.id))),
    }
}

async fn health(State(core): Core) -> Response {
    json(StatusCode::OK, &members_json(&core).members)
}

async fn members(State(core): Core) -> Response {
    json(StatusCode::OK, &members_json(&core))
}

/// Replicated PD: only the serving leader answers the admin API; a follower
/// redirects (307, method and body kept) to the leader's HTTP API, or
/// answers 503 while no leader is known. `health` is always answered
/// locally, `members` too when no leader is known.
async fn leader_gate(State(core): Core, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path == "/pd/api/v1/health" {
        return next.run(req).await;
    }
    match core.ensure_leader().await {
        Ok(()) => next.run(req).await,
        Err(Error::NotLeader {
            leader: Some((_, http)),
        }) if !http.is_empty() => {
            let pq = req
                .uri()
                .path_and_query()
                .map_or(path.as_str(), |p| p.as_str());
            let location = format!("http://{http}{pq}");
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
                "",
            )
                .into_response()
        }
        Err(Error::NotLeader { .. }) if path == "/pd/api/v1/members" => next.run(req).await,
        Err(e) => error(error_status(&e), e.to_string()),
    }
}

async fn cluster(State(core): Core) -> Response {
    let info = core.cluster_info().await;
    let (stores, data_nodes, regions) = core
        .read(|c| (c.stores().count(), c.data_nodes().count(), c.region_count()))
        .await;
    json(
        StatusCode::OK,
        &ClusterJson {
            id: info.cluster_id,
            max_peer_count: info.max_replicas,
            bootstrapped: info.bootstrapped,
            store_count: stores,
            datanode_count: data_nodes,
            region_count: regions,
        },
    )
}

async fn stores(State(core): Core) -> Response {
    let (now, down) = (now_ms(), max_down_ms(&core));
    let stores: Vec<StoreJson> = core
        .read(|c| c.stores().map(|s| store_json(c, s, now, down)).collect())
        .await;
    json(
        StatusCode::OK,
        &StoresJson {
            count: stores.len(),
            stores,
        },
    )
}

pub(crate) async fn store(State(core): Core, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, "store") {
        Ok(id) => id,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let (now, down) = (now_ms(), max_down_ms(&core));
    match core
        .read(|c| c.store(id).map(|s| store_json(c, s, now, down)))
        .await
    {
        Some(s) => json(StatusCode::OK, &s),
        None => error(StatusCode::NOT_FOUND, format!("store {id} not found")),
    }
}

/// `DELETE /pd/api/v1/store/{id}` (pd-ctl's `store delete`): the store
/// goes Offline, its peers move away, then it becomes Tombstone. Answers
/// the store as it now stands.
async fn delete_store(State(core): Core, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, "store") {
        Ok(id) => id,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    match core.delete_store(id).await {
        Ok(()) => store(State(core), Path(id.to_string())).await,
        Err(e) => error(error_status(&e), e.to_string()),
    }
}

async fn regions(State(core): Core) -> Response {
    let regions: Vec<RegionJson> = core
        .read(|c| c.regions_in_order().map(|e| region_json(c, e)).collect())
        .await;
    json(
        StatusCode::OK,
        &RegionsJson {
            count: regions.len(),
            regions,
        },
    )
}

/// `GET /pd/api/v1/regions/check/{down-peer|pending-peer|miss-peer}`.
async fn regions_check(State(core): Core, Path(kind): Path<String>) -> Response {
    let replicas = core.config().max_replicas as usize;
    let found = core
        .read(|c| {
            c.check_regions(&kind, replicas)
                .map(|v| v.into_iter().map(|e| region_json(c, e)).collect::<Vec<_>>())
        })
        .await;
    match found {
        Some(regions) => json(
            StatusCode::OK,
            &RegionsJson {
                count: regions.len(),
                regions,
            },
        ),
        None => error(
            StatusCode::BAD_REQUEST,
            format!("unknown check {kind:?} (down-peer, pending-peer, miss-peer, offline-peer)"),
        ),
    }
}

/// `?limit=N` of `regions/writeflow` and `regions/readflow`.
#[derive(serde::Deserialize)]
struct FlowQuery {
    limit: Option<usize>,
}

/// pd-ctl's default for `region topread|topwrite`.
const DEFAULT_TOP_LIMIT: usize = 16;

/// `GET /pd/api/v1/regions/writeflow?limit=N` (pd-ctl's `region topwrite`).
async fn regions_writeflow(State(core): Core, q: axum::extract::Query<FlowQuery>) -> Response {
    top_flow(&core, crate::flow::FlowKind::Write, q.limit).await
}

/// `GET /pd/api/v1/regions/readflow?limit=N` (pd-ctl's `region topread`).
async fn regions_readflow(State(core): Core, q: axum::extract::Query<FlowQuery>) -> Response {
    top_flow(&core, crate::flow::FlowKind::Read, q.limit).await
}

async fn top_flow(core: &PdCore, kind: crate::flow::FlowKind, limit: Option<usize>) -> Response {
    let limit = limit.unwrap_or(DEFAULT_TOP_LIMIT);
    let regions: Vec<RegionJson> = core
        .read(|c| {
            c.top_flow_regions(kind, limit)
                .into_iter()
                .map(|e| region_json(c, e))
                .collect()
        })
        .await;
    json(
        StatusCode::OK,
        &RegionsJson {
            count: regions.len(),
            regions,
        },
    )
}

async fn region_by_id(State(core): Core, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, "region") {
        Ok(id) => id,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    match core.read(|c| c.region(id).map(|e| region_json(c, e))).await {
        Some(r) => json(StatusCode::OK, &r),
        None => error(StatusCode::NOT_FOUND, format!("region {id} not found")),
    }
}

pub(crate) async fn region_for_key(core: &PdCore, key: Vec<u8>) -> Response {
    match core
        .read(|c| c.region_by_key(&key).map(|e| region_json(c, e)))
        .await
    {
        Some(r) => json(StatusCode::OK, &r),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no region holds key {} yet", hex::encode_upper(&key)),
        ),
    }
}

async fn region_by_empty_key(State(core): Core) -> Response {
    region_for_key(&core, Vec::new()).await
}

async fn region_by_key(State(core): Core, Path(hex_key): Path<String>) -> Response {
    match hex::decode(&hex_key) {
        Ok(key) => region_for_key(&core, key).await,
        Err(e) => error(StatusCode::BAD_REQUEST, format!("key must be hex: {e}")),
    }
}

async fn placement(State(core): Core) -> Response {
    let cfg = core.config().clone();
    let map = core
        .read_placement(|c, blockers, plan| {
            let ctx = node_ctx(&core, c, plan);
            let p = &c.placement;
            let repair = core.repair_status(c, ctx.now);
            let (gate, _) = core.step_gate(c, ctx.now);
            let classes = STORAGE_CLASSES
                .into_iter()
                .map(|class| {
                    let built = p.classes.get(&class);
                    let rules = built
                        .map(|g| g.rules)
                        .or_else(|| Rules::for_class(class))
                        .expect("STORAGE_CLASSES all have rules");
                    ClassPlacementJson {
                        storage_class: class.as_str_name(),
                        data_shards: rules.data_shards,
                        parity_shards: rules.parity_shards,
                        built: built.is_some(),
                        blocker: match built {
                            Some(_) => None,
                            None => Some(
                                blockers
                                    .get(&class)
                                    .cloned()
                                    .unwrap_or_else(|| "not tried yet".into()),
                            ),
                        },
                        pending_moves: plan.classes.get(&class).map_or(0, |p| p.pending),
                        waiting_pgs: plan.classes.get(&class).map_or(0, |p| p.waiting_pgs),
                        move_blocker: plan.classes.get(&class).and_then(|p| p.blocker.clone()),
                        groups: built
                            .map(|g| {
                                g.groups
                                    .iter()
                                    .enumerate()
                                    .map(|(i, members)| PlacementGroupJson {
                                        id: i as u32,
                                        data_nodes: members.clone(),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    }
                })
                .collect();
            PlacementJson {
                version: p.version,
                classes,
                nodes: p
                    .referenced_nodes()
                    .into_iter()
                    .filter_map(|id| c.data_node(id))
                    .map(|n| ctx.json(n))
                    .collect(),
                rebalance: RebalanceJson {
                    max_moves_per_step: cfg.max_moves_per_step,
                    interval_secs: cfg.rebalance_interval.as_secs(),
                    datanode_down_after_secs: cfg.datanode_down_after.as_secs(),
                    last_step_ts: match c.rebalance.last_step_unix_ms {
                        0 => String::new(),
                        ms => timestamp(ms),
                    },
                    slots_moved: c.rebalance.slots_moved,
                    pending_moves: plan.pending(),
                    repair_catch_up_limit_secs: cfg.repair_catch_up_limit.as_secs(),
                    last_step_version: c.rebalance.last_step_version,
                    repair_backlog: repair.backlog,
                    repair_caught_up: repair.caught_up(),
                    waiting_for_repair: !plan.moves.is_empty()
                        && gate == rebalance::StepGate::WaitForRepair,
                    repair_lagging_nodes: repair.lagging,
                },
            }
        })
        .await;
    json(StatusCode::OK, &map)
}

async fn datanodes(State(core): Core) -> Response {
    let nodes: Vec<DataNodeJson> = core
        .read_placement(|c, _, plan| {
            let ctx = node_ctx(&core, c, plan);
            c.data_nodes().map(|n| ctx.json(n)).collect()
        })
        .await;
    json(
        StatusCode::OK,
        &DataNodesJson {
            count: nodes.len(),
            datanodes: nodes,
        },
    )
}

async fn datanode(State(core): Core, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, "data node") {
        Ok(id) => id,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    datanode_answer(&core, id).await
}

async fn datanode_answer(core: &PdCore, id: u64) -> Response {
    match core
        .read_placement(|c, _, plan| c.data_node(id).map(|n| node_ctx(core, c, plan).json(n)))
        .await
    {
        Some(n) => json(StatusCode::OK, &n),
        None => error(StatusCode::NOT_FOUND, format!("data node {id} not found")),
    }
}

/// The status an admin call's error gets.
pub(crate) fn error_status(e: &Error) -> StatusCode {
    match e {
        Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Tombstone(_) | Error::IdentityMismatch(_) => StatusCode::CONFLICT,
        Error::IdsExhausted { .. } => StatusCode::INSUFFICIENT_STORAGE,
        Error::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::NotLeader { .. } | Error::Replication(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Bind { .. } | Error::Grpc(_) | Error::Http(_) | Error::Tls(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// Starts decommissioning; answers the node as it now stands.
async fn decommission(State(core): Core, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, "data node") {
        Ok(id) => id,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    match core.decommission_data_node(id).await {
        Ok(()) => datanode_answer(&core, id).await,
        Err(e) => error(error_status(&e), e.to_string()),
    }
}

/// Cancels a decommission (also of a decommissioned node); answers the node.
async fn cancel_decommission(State(core): Core, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id, "data node") {
        Ok(id) => id,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    match core.cancel_decommission(id).await {
        Ok(()) => datanode_answer(&core, id).await,
        Err(e) => error(error_status(&e), e.to_string()),
    }
}
