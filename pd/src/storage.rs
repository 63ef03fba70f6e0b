//! Persistence of the whole cluster model.
//!
//! One JSON document, `<data_dir>/pd-state.json`, rewritten on every change
//! that matters (registrations, region metadata, bootstrap progress, the
//! placement map, the id high-water mark): written to a temp file, fsynced,
//! renamed over the old one, then the directory is fsynced, so a crash leaves
//! the old or the new state, never a torn one. Heartbeat statistics are not
//! saved. Behind the [`Storage`] trait so a Raft-replicated PD can replace
//! the file later (docs/decisions/0003-pd-state-file.md).
//!
//! Format history (`format_version`): 1 — the first format.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kura_proto::common::{Labels, Peer, Region, RegionEpoch};
use kura_proto::pd::store::State as StoreState;
use kura_proto::pd::{DataNode, Store};
use serde::{Deserialize, Serialize};

use crate::cluster::{Bootstrap, Cluster, IdAllocator};
use crate::placement::{PlacementState, Rules};

pub const FORMAT_VERSION: u32 = 1;
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
    #[error("{path} has format_version {found}; this PD reads only {FORMAT_VERSION}")]
    UnsupportedVersion { path: PathBuf, found: u32 },
}

/// Where PD keeps its state. `save` returns only once the state is durable.
pub trait Storage: Send + Sync + 'static {
    fn load(&self) -> Result<Option<StateFile>, StorageError>;
    fn save(&self, state: &StateFile) -> Result<(), StorageError>;
}

/// The whole persisted model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub format_version: u32,
    pub cluster_id: u64,
    /// No id at or above this was ever handed out.
    pub id_high_water: u64,
    pub stores: Vec<StoreRecord>,
    pub data_nodes: Vec<DataNodeRecord>,
    pub regions: Vec<RegionRecord>,
    pub bootstrap: Option<BootstrapRecord>,
    pub placement: Option<PlacementRecord>,
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRecord {
    pub version: u64,
    pub data_shards: u32,
    pub parity_shards: u32,
    pub groups: Vec<Vec<u64>>,
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
            placement: c.placement.as_ref().map(|p| PlacementRecord {
                version: p.version,
                data_shards: p.rules.data_shards,
                parity_shards: p.rules.parity_shards,
                groups: p.groups.clone(),
            }),
        }
    }

    /// Rebuilds the model. Its id allocator continues above the saved mark.
    pub fn into_cluster(self) -> Result<Cluster, String> {
        let mut c = Cluster::new(self.cluster_id);
        c.ids = IdAllocator::restored(self.id_high_water);
        for s in self.stores {
            let state = state_from(&s.state)?;
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
        c.placement = self.placement.map(|p| PlacementState {
            version: p.version,
            rules: Rules {
                data_shards: p.data_shards,
                parity_shards: p.parity_shards,
            },
            groups: p.groups,
        });
        Ok(c)
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
        // Read the version first so a newer format is reported as such, not as garbage.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version = serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if v.format_version != FORMAT_VERSION {
            return Err(StorageError::UnsupportedVersion {
                path,
                found: v.format_version,
            });
        }
        let state = serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Some(state))
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
            c.register_store(s, 1_000).unwrap();
            let n = DataNode {
                address: format!("d{addr}"),
                ..Default::default()
            };
            c.register_data_node(n, 1_000).unwrap();
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
        c.placement = Some(PlacementState {
            version: 3,
            rules: Rules::REPLICA3,
            groups: vec![vec![2, 4, 6]],
        });
        c
    }

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
        assert!(text.contains("\"format_version\": 1"));
    }

    #[test]
    fn a_restart_never_reuses_an_id() {
        let mut c = sample_cluster();
        let used = c.ids.alloc(1);
        let back = StateFile::from_cluster(&c).into_cluster().unwrap();
        let mut ids = back.ids.clone();
        assert!(ids.alloc(1) > used);
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        fs::write(storage.path(), b"{\"format_version\": 2}").unwrap();
        assert!(matches!(
            storage.load(),
            Err(StorageError::UnsupportedVersion { found: 2, .. })
        ));
        fs::write(storage.path(), b"{not json").unwrap();
        assert!(matches!(storage.load(), Err(StorageError::Corrupt { .. })));
    }
}
