//! Persistence of the whole cluster model.
//!
//! One JSON document, `<data_dir>/pd-state.json`, rewritten on every change
//! that matters (registrations, bootstrap progress, the placement map, the
//! id high-water mark) before PD answers, and at most once per PD tick for
//! region range changes (`PdCore::flush_regions`: the stores own the
//! regions and heartbeats bring back what a crash lost): written to a temp file, fsynced,
//! renamed over the old one, then the directory is fsynced, so a crash leaves
//! the old or the new state, never a torn one. Heartbeat statistics are not
//! saved. Behind the [`Storage`] trait: a replicated PD (`replication`)
//! commits the same document through Raft instead of writing the file
//! (docs/decisions/0003-pd-state-file.md, 0014-pd-raft-replication.md).
//!
//! Format history (`format_version`; docs/decisions/0003-pd-state-file.md):
//! - 1 — the first format: `placement` is one map (`version`, `data_shards`,
//!   `parity_shards`, `groups`), always REPLICA3 in practice.
//! - 2 — one map per storage class: `placement` is `{version, classes: [{
//!   storage_class, data_shards, parity_shards, groups}]}`, `storage_class`
//!   being the proto name ("REPLICA3", "EC_4_2", "EC_8_3").
//! - 3 — slot movement: each data node record has `admin_state` ("Active",
//!   "Leaving", "Decommissioned") and the document a `rebalance` record
//!   (`last_step_unix_ms`, `slots_moved`, and since the repair gate the
//!   optional `last_step_version`, 0 when absent). The steps themselves are not
//!   saved: each is derived from the saved maps and node states
//!   (docs/decisions/0010-pd-slot-movement.md).
//! - 4 — admin settings: a `settings` record (`stores`: per-store label
//!   overrides, leader/region weights and operator limit; `config`: the
//!   `pdctl config set` values by key; `disabled_schedulers`,
//!   `paused_schedulers`). A version-3 file reads as having none.
//! - 5 — node identities: each store and data node record may carry `uuid`,
//!   the data-dir identity its registration proved (absent: registered
//!   before identities; the next registration's is adopted, decision 0024).
//!   A version-4 file reads as having none.
//! - 6 — heartbeat identities (decision 0044): each store and data node
//!   record may carry `heartbeats_carry_uuid` (true once a heartbeat of the
//!   id carried its uuid since it last registered: a heartbeat without one
//!   is refused from then on) and `replaced_by` (the id that registered at
//!   its address with another data dir; absent: not replaced). A version-5
//!   file reads as having neither.
//!
//! PD reads every older format and writes only the newest: a version-1 file
//! is migrated on load (its map becomes the class its k+m names — REPLICA3 —
//! keeping its version and groups), then like a version-2 file (every data
//! node `Active`, no step taken yet), then like a version-3 file (no
//! settings), and rewritten as version 4 by the next save. A PD that only knows older versions refuses a newer file rather
//! than guess.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kura_proto::common::{Labels, Peer, Region, RegionEpoch};
use kura_proto::meta::StorageClass;
use kura_proto::pd::store::State as StoreState;
use kura_proto::pd::{DataNode, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cluster::{AdminState, Bootstrap, Cluster, IdAllocator, NodeKind, RebalanceProgress};
use crate::config::{Settings, StoreSettings};
use crate::placement::{ClassGroups, PlacementState, Rules};

/// The format this PD writes.
pub const FORMAT_VERSION: u32 = 6;
/// The oldest format this PD still reads (and migrates).
pub const OLDEST_FORMAT_VERSION: u32 = 1;
const STATE_FILE: &str = "pd-state.json";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} is not a valid PD state: {reason}")]
    Corrupt { what: String, reason: String },
    #[error(
        "{path} has format_version {found}; this PD reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}"
    )]
    UnsupportedVersion { path: PathBuf, found: u32 },
    /// A replicated PD could not commit the state (not the leader, no
    /// quorum, timed out): nothing was acknowledged.
    #[error("not replicated: {0}")]
    NotReplicated(String),
}

/// Where PD keeps its state. `save` returns only once the state is durable.
pub trait Storage: Send + Sync + 'static {
    fn load(&self) -> Result<Option<StateFile>, StorageError>;
    fn save(&self, state: &StateFile) -> Result<(), StorageError>;
}

/// The whole persisted model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub format_version: u32,
    pub cluster_id: u64,
    /// No id at or above this was ever handed out.
    pub id_high_water: u64,
    pub stores: Vec<StoreRecord>,
    pub data_nodes: Vec<DataNodeRecord>,
    pub regions: Vec<RegionRecord>,
    pub bootstrap: Option<BootstrapRecord>,
    pub placement: PlacementRecord,
    pub rebalance: RebalanceRecord,
    /// Format 4 (absent in older files: nothing set).
    #[serde(default)]
    pub settings: SettingsRecord,
}

/// Admin settings (format 4).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SettingsRecord {
    pub stores: Vec<StoreSettingsRecord>,
    /// `pdctl config set` values, kebab-case key → value.
    pub config: BTreeMap<String, String>,
    pub disabled_schedulers: Vec<String>,
    pub paused_schedulers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreSettingsRecord {
    pub store_id: u64,
    /// Label overrides merged over the registered labels.
    pub labels: BTreeMap<String, String>,
    pub leader_weight: f64,
    pub region_weight: f64,
    /// Operators per minute (absent: the default).
    pub limit_per_minute: Option<u64>,
}

fn settings_record(s: &Settings) -> SettingsRecord {
    SettingsRecord {
        stores: s
            .stores
            .iter()
            .map(|(&store_id, st)| StoreSettingsRecord {
                store_id,
                labels: st.labels.clone(),
                leader_weight: st.leader_weight,
                region_weight: st.region_weight,
                limit_per_minute: st.limit_per_minute.map(|n| n as u64),
            })
            .collect(),
        config: s.config.clone(),
        disabled_schedulers: s.disabled_schedulers.iter().cloned().collect(),
        paused_schedulers: s.paused_schedulers.iter().cloned().collect(),
    }
}

fn settings_from(r: SettingsRecord) -> Result<Settings, String> {
    let mut stores = BTreeMap::new();
    for st in r.stores {
        for (what, w) in [("leader", st.leader_weight), ("region", st.region_weight)] {
            crate::config::check_weight(what, w)
                .map_err(|e| format!("store {}: {e}", st.store_id))?;
        }
        stores.insert(
            st.store_id,
            StoreSettings {
                labels: st.labels,
                leader_weight: st.leader_weight,
                region_weight: st.region_weight,
                limit_per_minute: st.limit_per_minute.map(|n| n as usize),
            },
        );
    }
    Ok(Settings {
        stores,
        config: r.config,
        disabled_schedulers: r.disabled_schedulers.into_iter().collect(),
        paused_schedulers: r.paused_schedulers.into_iter().collect(),
    })
}

/// Slot-movement bookkeeping (format 3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceRecord {
    /// When the last step changed the maps (0: never).
    pub last_step_unix_ms: i64,
    /// The map version the last step made (0: never, or a file from before
    /// the repair gate: the next step then does not wait for repair).
    #[serde(default)]
    pub last_step_version: u64,
    /// Slots moved since the cluster was created.
    pub slots_moved: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelsRecord {
    pub zone: String,
    pub rack: String,
    pub host: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRecord {
    pub id: u64,
    pub address: String,
    pub status_address: String,
    pub labels: LabelsRecord,
    /// "Up", "Offline" or "Tombstone".
    pub state: String,
    pub last_heartbeat_unix_ms: i64,
    /// Format 5: the data-dir identity (absent: none recorded yet).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    /// Format 6: its heartbeats carry the uuid (absent: not yet seen).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub heartbeats_carry_uuid: bool,
    /// Format 6: the id that registered at its address with another data
    /// dir (absent: not replaced).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replaced_by: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataNodeRecord {
    pub id: u64,
    pub address: String,
    pub status_address: String,
    pub labels: LabelsRecord,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub read_only: bool,
    pub last_heartbeat_unix_ms: i64,
    /// "Active", "Leaving" or "Decommissioned" (format 3).
    pub admin_state: String,
    /// Format 5: the data-dir identity (absent: none recorded yet).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    /// Format 6: its heartbeats carry the uuid (absent: not yet seen).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub heartbeats_carry_uuid: bool,
    /// Format 6: the id that registered at its address with another data
    /// dir (absent: not replaced).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replaced_by: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub id: u64,
    pub store_id: u64,
    pub is_learner: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRecord {
    pub id: u64,
    /// Hex (lower-case) of the raw key.
    pub start_key: String,
    pub end_key: String,
    pub conf_ver: u64,
    pub version: u64,
    pub peers: Vec<PeerRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPeerRecord {
    pub store_id: u64,
    pub peer_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapRecord {
    pub region: RegionRecord,
    pub pending: Vec<PendingPeerRecord>,
}

/// Every built class's map (format 2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRecord {
    /// 0 while no class is built.
    pub version: u64,
    pub classes: Vec<ClassPlacementRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassPlacementRecord {
    /// The proto name: "REPLICA3", "EC_4_2" or "EC_8_3".
    pub storage_class: String,
    pub data_shards: u32,
    pub parity_shards: u32,
    pub groups: Vec<Vec<u64>>,
}

/// Format 1's single map, read only to migrate it.
#[derive(Deserialize)]
struct PlacementRecordV1 {
    version: u64,
    data_shards: u32,
    parity_shards: u32,
    groups: Vec<Vec<u64>>,
}

/// Rewrites a format-1 document as format 2: its one map becomes the class
/// its k+m names (REPLICA3 for every file PD ever wrote).
fn migrate_v1(mut doc: Value) -> Result<Value, String> {
    let obj = doc
        .as_object_mut()
        .ok_or("the document is not a JSON object")?;
    let old: Option<PlacementRecordV1> =
        serde_json::from_value(obj.remove("placement").unwrap_or(Value::Null))
            .map_err(|e| format!("format 1 placement: {e}"))?;
    let placement = match old {
        None => PlacementRecord::default(),
        Some(p) => {
            let rules = Rules {
                data_shards: p.data_shards,
                parity_shards: p.parity_shards,
            };
            let class = rules.storage_class().ok_or_else(|| {
                format!(
                    "format 1 placement map has k={} m={}, which is no storage class",
                    p.data_shards, p.parity_shards
                )
            })?;
            PlacementRecord {
                version: p.version,
                classes: vec![ClassPlacementRecord {
                    storage_class: class.as_str_name().into(),
                    data_shards: p.data_shards,
                    parity_shards: p.parity_shards,
                    groups: p.groups,
                }],
            }
        }
    };
    let placement = serde_json::to_value(placement).map_err(|e| e.to_string())?;
    obj.insert("placement".into(), placement);
    obj.insert("format_version".into(), Value::from(2));
    Ok(doc)
}

/// Rewrites a format-2 document as format 3: every data node active, no
/// step taken yet.
fn migrate_v2(mut doc: Value) -> Result<Value, String> {
    let obj = doc
        .as_object_mut()
        .ok_or("the document is not a JSON object")?;
    if let Some(nodes) = obj.get_mut("data_nodes").and_then(Value::as_array_mut) {
        for n in nodes {
            let n = n
                .as_object_mut()
                .ok_or("format 2 data node is not a JSON object")?;
            n.insert("admin_state".into(), Value::from(AdminState::Active.name()));
        }
    }
    let rebalance = serde_json::to_value(RebalanceRecord::default()).map_err(|e| e.to_string())?;
    obj.insert("rebalance".into(), rebalance);
    obj.insert("format_version".into(), Value::from(3));
    Ok(doc)
}

/// Rewrites a format-3 document as format 4: no admin settings yet.
fn migrate_v3(mut doc: Value) -> Result<Value, String> {
    let obj = doc
        .as_object_mut()
        .ok_or("the document is not a JSON object")?;
    let settings = serde_json::to_value(SettingsRecord::default()).map_err(|e| e.to_string())?;
    obj.insert("settings".into(), settings);
    obj.insert("format_version".into(), Value::from(4));
    Ok(doc)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Rewrites a format-5 document as format 6: no heartbeat has carried a
/// uuid yet and nothing is replaced (both fields default).
fn migrate_v5(mut doc: Value) -> Result<Value, String> {
    let obj = doc
        .as_object_mut()
        .ok_or("the document is not a JSON object")?;
    obj.insert("format_version".into(), Value::from(6));
    Ok(doc)
}

/// Rewrites a format-4 document as format 5: no identities recorded yet
/// (each record's `uuid` defaults to none).
fn migrate_v4(mut doc: Value) -> Result<Value, String> {
    let obj = doc
        .as_object_mut()
        .ok_or("the document is not a JSON object")?;
    obj.insert("format_version".into(), Value::from(5));
    Ok(doc)
}

fn placement_record(p: &PlacementState) -> PlacementRecord {
    PlacementRecord {
        version: p.version,
        classes: p
            .classes
            .iter()
            .map(|(class, c)| ClassPlacementRecord {
                storage_class: class.as_str_name().into(),
                data_shards: c.rules.data_shards,
                parity_shards: c.rules.parity_shards,
                groups: c.groups.clone(),
            })
            .collect(),
    }
}

fn placement_from(r: PlacementRecord) -> Result<PlacementState, String> {
    let mut state = PlacementState {
        version: r.version,
        classes: Default::default(),
    };
    for c in r.classes {
        let name = c.storage_class;
        let class = StorageClass::from_str_name(&name)
            .filter(|c| *c != StorageClass::Unspecified)
            .ok_or_else(|| format!("unknown storage class {name:?} in the placement"))?;
        let rules = Rules {
            data_shards: c.data_shards,
            parity_shards: c.parity_shards,
        };
        if Rules::for_class(class) != Some(rules) {
            return Err(format!(
                "placement class {name} has k={} m={}, which is not its shape",
                c.data_shards, c.parity_shards
            ));
        }
        if let Some(g) = c.groups.iter().find(|g| g.len() != rules.width()) {
            return Err(format!(
                "placement class {name} has a group of {} nodes, not {}",
                g.len(),
                rules.width()
            ));
        }
        let groups = ClassGroups {
            rules,
            groups: c.groups,
        };
        if state.classes.insert(class, groups).is_some() {
            return Err(format!("placement class {name} appears twice"));
        }
    }
    if state.version == 0 && !state.is_empty() {
        return Err("the placement has classes but version 0".into());
    }
    Ok(state)
}

fn labels_record(l: Option<&Labels>) -> LabelsRecord {
    let l = l.cloned().unwrap_or_default();
    LabelsRecord {
        zone: l.zone,
        rack: l.rack,
        host: l.host,
    }
}

fn labels_from(r: LabelsRecord) -> Labels {
    Labels {
        zone: r.zone,
        rack: r.rack,
        host: r.host,
    }
}

fn region_record(r: &Region) -> RegionRecord {
    let epoch = r.epoch.unwrap_or_default();
    RegionRecord {
        id: r.id,
        start_key: hex::encode(&r.start_key),
        end_key: hex::encode(&r.end_key),
        conf_ver: epoch.conf_ver,
        version: epoch.version,
        peers: r
            .peers
            .iter()
            .map(|p| PeerRecord {
                id: p.id,
                store_id: p.store_id,
                is_learner: p.is_learner,
            })
            .collect(),
    }
}

fn region_from(r: RegionRecord) -> Result<Region, String> {
    let key = |s: &str| hex::decode(s).map_err(|e| format!("region {}: bad key hex: {e}", r.id));
    Ok(Region {
        id: r.id,
        start_key: key(&r.start_key)?.into(),
        end_key: key(&r.end_key)?.into(),
        epoch: Some(RegionEpoch {
            conf_ver: r.conf_ver,
            version: r.version,
        }),
        peers: r
            .peers
            .into_iter()
            .map(|p| Peer {
                id: p.id,
                store_id: p.store_id,
                is_learner: p.is_learner,
            })
            .collect(),
    })
}

fn state_name(s: StoreState) -> &'static str {
    match s {
        StoreState::Up => "Up",
        StoreState::Offline => "Offline",
        StoreState::Tombstone => "Tombstone",
    }
}

fn state_from(name: &str) -> Result<StoreState, String> {
    match name {
        "Up" => Ok(StoreState::Up),
        "Offline" => Ok(StoreState::Offline),
        "Tombstone" => Ok(StoreState::Tombstone),
        other => Err(format!("unknown store state {other:?}")),
    }
}

impl StateFile {
    /// Snapshot of everything in `c` that must survive a restart.
    pub fn from_cluster(c: &Cluster) -> Self {
        StateFile {
            format_version: FORMAT_VERSION,
            cluster_id: c.cluster_id,
            id_high_water: c.ids.high_water(),
            stores: c
                .stores()
                .map(|s| StoreRecord {
                    id: s.meta.id,
                    address: s.meta.address.clone(),
                    status_address: s.meta.status_address.clone(),
                    labels: labels_record(s.meta.labels.as_ref()),
                    state: state_name(s.meta.state()).into(),
                    last_heartbeat_unix_ms: s.meta.last_heartbeat_unix_ms,
                    uuid: c
                        .uuid_of(NodeKind::Store, s.meta.id)
                        .unwrap_or_default()
                        .into(),
                    heartbeats_carry_uuid: c.heartbeats_carry_uuid(NodeKind::Store, s.meta.id),
                    replaced_by: c.replaced_by(NodeKind::Store, s.meta.id).unwrap_or(0),
                })
                .collect(),
            data_nodes: c
                .data_nodes()
                .map(|n| DataNodeRecord {
                    id: n.id,
                    address: n.address.clone(),
                    status_address: n.status_address.clone(),
                    labels: labels_record(n.labels.as_ref()),
                    capacity_bytes: n.capacity_bytes,
                    used_bytes: n.used_bytes,
                    read_only: n.read_only,
                    last_heartbeat_unix_ms: n.last_heartbeat_unix_ms,
                    admin_state: c.data_node_admin_state(n.id).name().into(),
                    uuid: c
                        .uuid_of(NodeKind::DataNode, n.id)
                        .unwrap_or_default()
                        .into(),
                    heartbeats_carry_uuid: c.heartbeats_carry_uuid(NodeKind::DataNode, n.id),
                    replaced_by: c.replaced_by(NodeKind::DataNode, n.id).unwrap_or(0),
                })
                .collect(),
            regions: c
                .regions_in_order()
                .map(|e| region_record(&e.region))
                .collect(),
            bootstrap: c.bootstrap.as_ref().map(|b| BootstrapRecord {
                region: region_record(&b.region),
                pending: b
                    .pending
                    .iter()
                    .map(|(&store_id, &peer_id)| PendingPeerRecord { store_id, peer_id })
                    .collect(),
            }),
            placement: placement_record(&c.placement),
            rebalance: RebalanceRecord {
                last_step_unix_ms: c.rebalance.last_step_unix_ms,
                last_step_version: c.rebalance.last_step_version,
                slots_moved: c.rebalance.slots_moved,
            },
            settings: settings_record(&c.settings),
        }
    }

    /// Rebuilds the model. Its id allocator continues above the saved mark.
    pub fn into_cluster(self) -> Result<Cluster, String> {
        let mut c = Cluster::new(self.cluster_id);
        c.ids = IdAllocator::restored(self.id_high_water);
        for s in self.stores {
            let state = state_from(&s.state)?;
            c.restore_uuid(NodeKind::Store, s.id, s.uuid);
            c.restore_beat_identity(
                NodeKind::Store,
                s.id,
                s.heartbeats_carry_uuid,
                s.replaced_by,
            );
            c.restore_store(Store {
                id: s.id,
                address: s.address,
                status_address: s.status_address,
                labels: Some(labels_from(s.labels)),
                state: state as i32,
                last_heartbeat_unix_ms: s.last_heartbeat_unix_ms,
            });
        }
        for n in self.data_nodes {
            let admin = AdminState::from_name(&n.admin_state).ok_or_else(|| {
                format!(
                    "data node {}: unknown admin_state {:?}",
                    n.id, n.admin_state
                )
            })?;
            c.restore_data_node_admin_state(n.id, admin);
            c.restore_uuid(NodeKind::DataNode, n.id, n.uuid);
            c.restore_beat_identity(
                NodeKind::DataNode,
                n.id,
                n.heartbeats_carry_uuid,
                n.replaced_by,
            );
            c.restore_data_node(DataNode {
                id: n.id,
                address: n.address,
                status_address: n.status_address,
                labels: Some(labels_from(n.labels)),
                capacity_bytes: n.capacity_bytes,
                used_bytes: n.used_bytes,
                last_heartbeat_unix_ms: n.last_heartbeat_unix_ms,
                read_only: n.read_only,
            });
        }
        for r in self.regions {
            c.insert_region(region_from(r)?);
        }
        if let Some(b) = self.bootstrap {
            c.bootstrap = Some(Bootstrap {
                region: region_from(b.region)?,
                pending: b
                    .pending
                    .into_iter()
                    .map(|p| (p.store_id, p.peer_id))
                    .collect(),
            });
        }
        c.placement = placement_from(self.placement)?;
        c.rebalance = RebalanceProgress {
            last_step_unix_ms: self.rebalance.last_step_unix_ms,
            last_step_version: self.rebalance.last_step_version,
            slots_moved: self.rebalance.slots_moved,
        };
        c.settings = settings_from(self.settings)?;
        Ok(c)
    }

    /// Parses a state document of any format this PD reads, migrating older
    /// ones (`path` only names it in errors).
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<StateFile, StorageError> {
        let corrupt = |reason: String| StorageError::Corrupt {
            what: path.display().to_string(),
            reason,
        };
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        // Read the version first so a newer format is reported as such, not as garbage.
        let found = doc
            .get("format_version")
            .and_then(Value::as_u64)
            .ok_or_else(|| corrupt("no numeric format_version".into()))?;
        let doc = match found {
            1 => migrate_v1(doc)
                .and_then(migrate_v2)
                .and_then(migrate_v3)
                .and_then(migrate_v4)
                .and_then(migrate_v5)
                .map_err(corrupt)?,
            2 => migrate_v2(doc)
                .and_then(migrate_v3)
                .and_then(migrate_v4)
                .and_then(migrate_v5)
                .map_err(corrupt)?,
            3 => migrate_v3(doc)
                .and_then(migrate_v4)
                .and_then(migrate_v5)
                .map_err(corrupt)?,
            4 => migrate_v4(doc).and_then(migrate_v5).map_err(corrupt)?,
            5 => migrate_v5(doc).map_err(corrupt)?,
            6 => doc,
            other => {
                return Err(StorageError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    found: u32::try_from(other).unwrap_or(u32::MAX),
                })
            }
        };
        serde_json::from_value(doc).map_err(|e| corrupt(e.to_string()))
    }
}

/// The state file under a directory.
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    /// Uses `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        fs::create_dir_all(dir).map_err(|source| StorageError::Io {
            op: "create",
            path: dir.into(),
            source,
        })?;
        Ok(FileStorage {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }
}

impl Storage for FileStorage {
    fn load(&self) -> Result<Option<StateFile>, StorageError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StorageError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        StateFile::from_json(&bytes, &path).map(Some)
    }

    fn save(&self, state: &StateFile) -> Result<(), StorageError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let io = |op: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| StorageError::Io {
                op,
                path: p,
                source,
            }
        };
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StorageError::Corrupt {
            what: "the in-memory state".into(),
            reason: format!("cannot encode: {e}"),
        })?;
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", &self.dir))?;
        Ok(())
    }
}

/// In-memory storage for tests of the layers above.
#[derive(Default)]
pub struct MemStorage {
    state: Mutex<Option<StateFile>>,
}

impl Storage for MemStorage {
    fn load(&self) -> Result<Option<StateFile>, StorageError> {
        Ok(self
            .state
            .lock()
            .expect("mem storage lock poisoned")
            .clone())
    }

    fn save(&self, state: &StateFile) -> Result<(), StorageError> {
        *self.state.lock().expect("mem storage lock poisoned") = Some(state.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::maybe_bootstrap;

    fn sample_cluster() -> Cluster {
        let mut c = Cluster::new(42);
        for (addr, zone) in [("a:1", "z1"), ("b:1", "z2"), ("c:1", "z3")] {
            let s = Store {
                address: addr.into(),
                labels: Some(Labels {
                    zone: zone.into(),
                    rack: "r1".into(),
                    host: addr.into(),
                }),
                ..Default::default()
            };
            c.register_store_at(s, 1_000).unwrap();
            let n = DataNode {
                address: format!("d{addr}"),
                ..Default::default()
            };
            c.register_data_node_at(n, 1_000).unwrap();
        }
        maybe_bootstrap(&mut c, 3, 1_000, 30_000).unwrap();
        c.insert_region(Region {
            id: 900,
            start_key: vec![0xff, 0x01].into(),
            end_key: Default::default(),
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 2,
            }),
            peers: vec![],
        });
        c.settings.update_store(1, |st| {
            st.labels.insert("zone".into(), "z9".into());
            st.leader_weight = 2.5;
            st.limit_per_minute = Some(7);
        });
        c.settings
            .config
            .insert("max-store-down-time".into(), "1m".into());
        c.settings.paused_schedulers.insert("balance-leader".into());
        c.settings
            .disabled_schedulers
            .insert("balance-region".into());
        c.placement = PlacementState {
            version: 3,
            classes: [
                (
                    StorageClass::Replica3,
                    ClassGroups {
                        rules: Rules::REPLICA3,
                        groups: vec![vec![2, 4, 6]],
                    },
                ),
                (
                    StorageClass::Ec42,
                    ClassGroups {
                        rules: Rules::EC_4_2,
                        groups: vec![vec![2, 4, 6, 8, 10, 12]],
                    },
                ),
            ]
            .into(),
        };
        // Data node 2 is in the maps: decommissioning makes it Leaving.
        assert!(c.decommission_data_node(2).unwrap());
        c.rebalance = RebalanceProgress {
            last_step_unix_ms: 5_000,
            last_step_version: 3,
            slots_moved: 17,
        };
        c
    }

    /// A state file as the format-2 PD wrote it (one map per class).
    const V2_FILE: &str = r#"{
  "format_version": 2,
  "cluster_id": 42,
  "id_high_water": 1013,
  "stores": [],
  "data_nodes": [
    {"id": 2, "address": "d:1", "status_address": "",
     "labels": {"zone": "z1", "rack": "", "host": ""},
     "capacity_bytes": 0, "used_bytes": 0, "read_only": false,
     "last_heartbeat_unix_ms": 1000}
  ],
  "regions": [],
  "bootstrap": null,
  "placement": {
    "version": 4,
    "classes": [
      {"storage_class": "REPLICA3", "data_shards": 1, "parity_shards": 2,
       "groups": [[2, 4, 6]]}
    ]
  }
}"#;

    #[test]
    fn a_format_2_file_loads_with_every_node_active_and_no_step_taken() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        fs::write(storage.path(), V2_FILE).unwrap();
        let file = storage.load().unwrap().unwrap();
        assert_eq!(file.format_version, FORMAT_VERSION);
        assert_eq!(file.data_nodes[0].admin_state, "Active");
        assert_eq!(file.rebalance, RebalanceRecord::default());
        let c = file.into_cluster().unwrap();
        assert_eq!(c.data_node_admin_state(2), AdminState::Active);
        assert_eq!(c.rebalance, RebalanceProgress::default());
        assert_eq!(c.placement.version, 4);
        assert_eq!(
            c.placement.classes[&StorageClass::Replica3].groups,
            vec![vec![2, 4, 6]]
        );
        // Rewritten as format 3, it reads back the same.
        storage.save(&StateFile::from_cluster(&c)).unwrap();
        let text = fs::read_to_string(storage.path()).unwrap();
        assert!(text.contains("\"format_version\": 6"));
        assert!(text.contains("\"admin_state\": \"Active\""));
        let again = storage.load().unwrap().unwrap();
        assert_eq!(again, StateFile::from_cluster(&c));
    }

    #[test]
    fn node_states_and_rebalance_progress_survive_a_restart() {
        let mut c = sample_cluster();
        let spare = DataNode {
            address: "spare:1".into(),
            ..Default::default()
        };
        let (other, _) = c.register_data_node_at(spare, 2_000).unwrap();
        c.restore_data_node_admin_state(other, AdminState::Decommissioned);
        let back = StateFile::from_cluster(&c).into_cluster().unwrap();
        assert_eq!(back.data_node_admin_state(2), AdminState::Leaving);
        assert_eq!(
            back.data_node_admin_state(other),
            AdminState::Decommissioned
        );
        assert_eq!(back.rebalance.slots_moved, 17);
        assert_eq!(back.rebalance.last_step_unix_ms, 5_000);
        assert_eq!(back.rebalance.last_step_version, 3);
        let mut bad = StateFile::from_cluster(&c);
        bad.data_nodes[0].admin_state = "Gone".into();
        assert!(bad.into_cluster().is_err());
    }

    /// A state file exactly as the format-1 PD wrote it (REPLICA3 map).
    const V1_FILE: &str = r#"{
  "format_version": 1,
  "cluster_id": 42,
  "id_high_water": 1013,
  "stores": [
    {"id": 1, "address": "a:1", "status_address": "",
     "labels": {"zone": "z1", "rack": "r1", "host": "a:1"},
     "state": "Up", "last_heartbeat_unix_ms": 1000}
  ],
  "data_nodes": [
    {"id": 2, "address": "d:1", "status_address": "",
     "labels": {"zone": "z1", "rack": "", "host": ""},
     "capacity_bytes": 0, "used_bytes": 0, "read_only": false,
     "last_heartbeat_unix_ms": 1000}
  ],
  "regions": [
    {"id": 7, "start_key": "", "end_key": "", "conf_ver": 1, "version": 1,
     "peers": [{"id": 8, "store_id": 1, "is_learner": false}]}
  ],
  "bootstrap": null,
  "placement": {
    "version": 5,
    "data_shards": 1,
    "parity_shards": 2,
    "groups": [[2, 4, 6], [6, 2, 4]]
  }
}"#;

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        assert!(storage.load().unwrap().is_none());
        let c = sample_cluster();
        let file = StateFile::from_cluster(&c);
        storage.save(&file).unwrap();
        let loaded = storage.load().unwrap().unwrap();
        assert_eq!(loaded, file);
        let back = loaded.into_cluster().unwrap();
        assert_eq!(StateFile::from_cluster(&back), file);
        assert_eq!(back.region_by_key(&[0xff, 0x02]).unwrap().region.id, 900);
        assert!(back.bootstrap.is_some());
        assert!(!dir.path().join("pd-state.json.tmp").exists());
        let text = fs::read_to_string(storage.path()).unwrap();
        assert!(text.contains("\"format_version\": 6"));
        assert!(text.contains("\"storage_class\": \"EC_4_2\""));
        assert_eq!(back.placement, c.placement);
        assert_eq!(back.settings, c.settings);
        assert_eq!(back.store_labels(1).zone, "z9");
    }

    #[test]
    fn a_format_1_file_loads_its_map_as_the_replica3_class() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        fs::write(storage.path(), V1_FILE).unwrap();
        let file = storage.load().unwrap().unwrap();
        assert_eq!(file.format_version, FORMAT_VERSION);
        let c = file.into_cluster().unwrap();
        assert_eq!(c.cluster_id, 42);
        assert_eq!(c.region(7).unwrap().region.peers[0].store_id, 1);
        assert_eq!(c.data_node(2).unwrap().address, "d:1");
        assert_eq!(c.placement.version, 5, "clients' known version stays valid");
        assert_eq!(
            c.placement.classes.keys().copied().collect::<Vec<_>>(),
            vec![StorageClass::Replica3]
        );
        let r3 = &c.placement.classes[&StorageClass::Replica3];
        assert_eq!(r3.rules, Rules::REPLICA3);
        assert_eq!(r3.groups, vec![vec![2, 4, 6], vec![6, 2, 4]]);
        // The next save writes the newest format, which reads back the same.
        storage.save(&StateFile::from_cluster(&c)).unwrap();
        let again = storage.load().unwrap().unwrap().into_cluster().unwrap();
        assert_eq!(again.placement, c.placement);
        assert!(fs::read_to_string(storage.path())
            .unwrap()
            .contains("\"format_version\": 6"));
    }

    #[test]
    fn a_format_1_file_without_a_map_has_no_class() {
        let text = V1_FILE.replace(
            &V1_FILE[V1_FILE.find("\"placement\"").unwrap()..V1_FILE.rfind('}').unwrap()],
            "\"placement\": null\n",
        );
        let file = StateFile::from_json(text.as_bytes(), Path::new("x")).unwrap();
        let c = file.into_cluster().unwrap();
        assert!(c.placement.is_empty());
        assert_eq!(c.placement.version, 0);
    }

    #[test]
    fn a_format_1_map_of_no_known_shape_is_refused() {
        let text = V1_FILE.replace("\"data_shards\": 1", "\"data_shards\": 2");
        assert!(matches!(
            StateFile::from_json(text.as_bytes(), Path::new("x")),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn inconsistent_class_records_are_refused() {
        let good = StateFile::from_cluster(&sample_cluster());
        let mut bad = good.clone();
        bad.placement.classes[0].storage_class = "EC_8_3".into();
        assert!(
            bad.into_cluster().is_err(),
            "shape does not match the class"
        );
        let mut bad = good.clone();
        bad.placement.classes[1].storage_class = "REPLICA3".into();
        bad.placement.classes[1].data_shards = 1;
        bad.placement.classes[1].parity_shards = 2;
        assert!(bad.into_cluster().is_err(), "groups of the wrong width");
        let mut bad = good.clone();
        bad.placement.classes[0].storage_class = "GOLD".into();
        assert!(bad.into_cluster().is_err(), "unknown class");
        let mut bad = good;
        bad.placement.version = 0;
        assert!(bad.into_cluster().is_err(), "classes at version 0");
    }

    #[test]
    fn a_restart_never_reuses_an_id() {
        let mut c = sample_cluster();
        let used = c.ids.alloc(1).unwrap();
        let back = StateFile::from_cluster(&c).into_cluster().unwrap();
        let mut ids = back.ids.clone();
        assert!(ids.alloc(1).unwrap() > used);
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        fs::write(storage.path(), b"{\"format_version\": 7}").unwrap();
        assert!(matches!(
            storage.load(),
            Err(StorageError::UnsupportedVersion { found: 7, .. })
        ));
        fs::write(storage.path(), b"{\"cluster_id\": 3}").unwrap();
        assert!(matches!(storage.load(), Err(StorageError::Corrupt { .. })));
        fs::write(storage.path(), b"{not json").unwrap();
        assert!(matches!(storage.load(), Err(StorageError::Corrupt { .. })));
    }
}
