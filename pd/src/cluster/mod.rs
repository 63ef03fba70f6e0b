//! The in-memory cluster model: stores, data nodes, regions, the id allocator,
//! the bootstrap progress and the placement maps (one per storage class).
//!
//! Pure logic, no I/O and no clock: callers pass `now_ms` (unix milliseconds).
//! Every mutating method says whether it changed something that must be
//! persisted, so the caller can save before it acknowledges.
//!
//! | file            | what |
//! |-----------------|------|
//! | `identity.rs`   | the id allocator, who may claim an id, which heartbeats count, replaced ids |
//! | `stores.rs`     | metashard stores: registration, heartbeats, liveness, deletion, labels |
//! | `data_nodes.rs` | data nodes: registration, heartbeats, repair reports, decommission |
//! | `mod.rs`        | the model itself and its regions (lookups, heartbeats, checks) |

mod data_nodes;
mod identity;
mod stores;
#[cfg(test)]
mod tests;

pub use identity::{IdAllocator, NodeKind, ID_BATCH, MAX_ID};
#[cfg(test)]
pub(crate) use tests::uuid_for;

use std::collections::{BTreeMap, BTreeSet};

use kura_proto::common::{Peer, Region, RegionEpoch};
use kura_proto::pd::store::State as StoreState;
use kura_proto::pd::{DataNode, Store};

use crate::placement::{NodeDesc, PlacementState};
use crate::rebalance::RepairReport;
use crate::Error;

/// What a store last reported about itself (not persisted: the next heartbeat refills it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub region_count: u64,
    pub leader_count: u64,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    /// Flow from the last heartbeat that carried a sample (per second).
    pub flow: crate::flow::FlowRates,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoreInfo {
    pub meta: Store,
    pub stats: StoreStats,
}

/// A region plus what its leader last reported.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionEntry {
    pub region: Region,
    pub leader: Option<Peer>,
    /// Raft term of the heartbeat that set `leader`.
    pub term: u64,
    pub approximate_size: u64,
    pub approximate_keys: u64,
    /// From the leader's last heartbeat: peers it has not heard from for a
    /// while, and peers that need a snapshot to catch up.
    pub down_peers: Vec<Peer>,
    pub pending_peers: Vec<Peer>,
    /// The epoch version PD last saw, and since when (unix ms; 0: not yet
    /// seen by this PD leader). The merge checker leaves regions that split
    /// or merged recently alone.
    pub seen_version: u64,
    pub version_since_ms: i64,
    /// The leader's last two flow samples (not persisted).
    pub flow: crate::flow::FlowHistory,
}

/// The first region and the stores that have not yet said they host it.
#[derive(Clone, Debug, PartialEq)]
pub struct Bootstrap {
    /// The region exactly as it was created (all peers start from this).
    pub region: Region,
    /// store id → peer id, for stores still to create their peer.
    pub pending: BTreeMap<u64, u64>,
}

/// The liveness a store or data node shows to operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Up,
    Down,
    Offline,
    Tombstone,
    /// Another data dir registered at its address (a wiped or swapped
    /// disk): scheduled like `Down` at once, without waiting for the down
    /// timeout, until its own data dir registers again (decision 0044).
    Replaced,
}

impl Liveness {
    pub const ALL: [Liveness; 5] = [
        Liveness::Up,
        Liveness::Down,
        Liveness::Offline,
        Liveness::Tombstone,
        Liveness::Replaced,
    ];

    /// The name pd-ctl prints in `state_name`.
    pub fn name(self) -> &'static str {
        match self {
            Liveness::Up => "Up",
            Liveness::Down => "Down",
            Liveness::Offline => "Offline",
            Liveness::Tombstone => "Tombstone",
            Liveness::Replaced => "Replaced",
        }
    }
}

/// What an operator decided about a data node (persisted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AdminState {
    /// A normal member: placement may give it slots.
    #[default]
    Active,
    /// Being decommissioned: its slots move away step by step.
    Leaving,
    /// Decommissioned: it holds no slot and gets none, and the data nodes'
    /// repair rebuilt its fragments elsewhere; it may be stopped.
    Decommissioned,
}

impl AdminState {
    /// The name the state file and the HTTP API use.
    pub fn name(self) -> &'static str {
        match self {
            AdminState::Active => "Active",
            AdminState::Leaving => "Leaving",
            AdminState::Decommissioned => "Decommissioned",
        }
    }

    pub fn from_name(name: &str) -> Option<AdminState> {
        [
            AdminState::Active,
            AdminState::Leaving,
            AdminState::Decommissioned,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// Slot-movement bookkeeping (persisted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RebalanceProgress {
    /// When the last step changed the maps (0: never).
    pub last_step_unix_ms: i64,
    /// The map version the last step made (0: never, or not recorded).
    pub last_step_version: u64,
    /// Slots moved since the cluster was created.
    pub slots_moved: u64,
}

/// What a region heartbeat did to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// Range, epoch or peers changed (or the region is new): persist.
    MetaChanged,
    /// Only leader or statistics changed: nothing to persist.
    StatsOnly,
    /// The report was older than what PD knows; ignored.
    Stale,
}

#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub cluster_id: u64,
    pub ids: IdAllocator,
    stores: BTreeMap<u64, StoreInfo>,
    data_nodes: BTreeMap<u64, DataNode>,
    /// The data-dir identity each store and data node proved at registration
    /// (persisted; never served: it is what a claim of the id must present).
    /// An id without one is from before identities (adopted on first use).
    store_uuids: BTreeMap<u64, String>,
    data_node_uuids: BTreeMap<u64, String>,
    /// Ids whose heartbeats carried their uuid since they last registered
    /// (persisted, format 6): a heartbeat without one is refused for them.
    store_beats_uuid: BTreeSet<u64>,
    data_node_beats_uuid: BTreeSet<u64>,
    /// id → the id that registered at its address with another data dir
    /// (persisted, format 6): [`Liveness::Replaced`] until this id's own
    /// data dir registers again.
    store_replaced: BTreeMap<u64, u64>,
    data_node_replaced: BTreeMap<u64, u64>,
    /// Data nodes not [`AdminState::Active`] (absent: active).
    data_node_admin: BTreeMap<u64, AdminState>,
    /// Each data node's last repair report (not persisted: heartbeats refill it).
    repair: BTreeMap<u64, RepairReport>,
    regions: BTreeMap<u64, RegionEntry>,
    /// start_key → region id, for key lookups and ordered scans.
    by_start: BTreeMap<Vec<u8>, u64>,
    pub bootstrap: Option<Bootstrap>,
    /// Every built storage class's PG map, under one version.
    pub placement: PlacementState,
    pub rebalance: RebalanceProgress,
    /// Heartbeats are not persisted: after a PD restart, liveness counts from
    /// this instant, so every store does not show as down at once.
    pub liveness_floor_ms: i64,
    /// Admin settings: store labels/weights/limits, `config set` values,
    /// disabled and paused schedulers (persisted, format 4).
    pub settings: crate::config::Settings,
}

fn node_desc(n: &DataNode) -> NodeDesc {
    let l = n.labels.clone().unwrap_or_default();
    NodeDesc {
        id: n.id,
        zone: l.zone,
        rack: l.rack,
        host: l.host,
    }
}

/// True when `key` lies in `region`'s range.
pub fn region_contains(region: &Region, key: &[u8]) -> bool {
    key >= region.start_key.as_ref() && (region.end_key.is_empty() || key < region.end_key.as_ref())
}

fn epoch_of(r: &Region) -> RegionEpoch {
    r.epoch.unwrap_or_default()
}
impl Cluster {
    pub fn new(cluster_id: u64) -> Self {
        Cluster {
            cluster_id,
            ..Default::default()
        }
    }

    // ---- regions ----

    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    pub fn region(&self, id: u64) -> Option<&RegionEntry> {
        self.regions.get(&id)
    }

    /// The region whose range holds `key`.
    pub fn region_by_key(&self, key: &[u8]) -> Option<&RegionEntry> {
        use std::ops::Bound;
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let e = self.regions.get(id)?;
        region_contains(&e.region, key).then_some(e)
    }

    /// Regions overlapping `[start, end)` (empty end: to the end), in key order.
    pub fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<&RegionEntry> {
        let first = self
            .region_by_key(start)
            .map(|e| e.region.start_key.to_vec())
            .unwrap_or_else(|| start.to_vec());
        self.by_start
            .range(first..)
            .map_while(|(k, id)| (end.is_empty() || k.as_slice() < end).then_some(id))
            .filter_map(|id| self.regions.get(id))
            .take(limit)
            .collect()
    }

    /// All regions in key order.
    pub fn regions_in_order(&self) -> impl Iterator<Item = &RegionEntry> {
        self.by_start.values().filter_map(|id| self.regions.get(id))
    }

    /// Inserts a region PD itself created or loaded (no epoch checks).
    pub fn insert_region(&mut self, region: Region) {
        if let Some(old) = self.regions.get(&region.id) {
            self.by_start.remove(old.region.start_key.as_ref());
        }
        self.by_start.insert(region.start_key.to_vec(), region.id);
        self.regions.insert(
            region.id,
            RegionEntry {
                region,
                leader: None,
                term: 0,
                approximate_size: 0,
                approximate_keys: 0,
                down_peers: Vec::new(),
                pending_peers: Vec::new(),
                seen_version: 0,
                version_since_ms: 0,
                flow: Default::default(),
            },
        );
    }

    /// Notes the time if region `region_id`'s version is new to this PD.
    pub fn touch_version(&mut self, region_id: u64, now_ms: i64) {
        if let Some(e) = self.regions.get_mut(&region_id) {
            let v = epoch_of(&e.region).version;
            if e.seen_version != v || e.version_since_ms == 0 {
                e.seen_version = v;
                e.version_since_ms = now_ms;
            }
        }
    }

    /// Records the peer health a leader reported (after its heartbeat was
    /// accepted by [`Cluster::region_heartbeat`]).
    pub fn set_peer_health(&mut self, region_id: u64, down: Vec<Peer>, pending: Vec<Peer>) {
        if let Some(e) = self.regions.get_mut(&region_id) {
            e.down_peers = down;
            e.pending_peers = pending;
        }
    }

    /// Records a flow sample a leader reported (after its heartbeat was
    /// accepted by [`Cluster::region_heartbeat`]).
    pub fn record_region_flow(&mut self, region_id: u64, rates: crate::flow::FlowRates) {
        if let Some(e) = self.regions.get_mut(&region_id) {
            e.flow.record(rates);
        }
    }

    /// The `limit` regions with the most read or written flow (last sample),
    /// most first; regions without any are left out.
    pub fn top_flow_regions(&self, kind: crate::flow::FlowKind, limit: usize) -> Vec<&RegionEntry> {
        let busy = self
            .regions
            .values()
            .filter(|e| kind.key(&e.flow.last) != (0, 0));
        crate::flow::top_n(busy, limit, |e| {
            (kind.key(&e.flow.last), std::cmp::Reverse(e.region.id))
        })
    }

    /// Regions with a problem of `kind` (pd-ctl's `region check`), in key
    /// order: `down-peer`, `pending-peer`, `miss-peer` (fewer voters than
    /// `replicas`) or `offline-peer` (a peer on an Offline store). `None`
    /// for an unknown kind.
    pub fn check_regions(&self, kind: &str, replicas: usize) -> Option<Vec<&RegionEntry>> {
        if kind == "offline-peer" {
            // A peer on a store being deleted (`pdctl store delete`).
            let offline = |id: &u64| {
                self.stores
                    .get(id)
                    .is_some_and(|s| s.meta.state() == StoreState::Offline)
            };
            return Some(
                self.regions_in_order()
                    .filter(|e| e.region.peers.iter().any(|p| offline(&p.store_id)))
                    .collect(),
            );
        }
        let pick: fn(&RegionEntry, usize) -> bool = match kind {
            "down-peer" => |e, _| !e.down_peers.is_empty(),
            "pending-peer" => |e, _| !e.pending_peers.is_empty(),
            "miss-peer" => |e, n| e.region.peers.iter().filter(|p| !p.is_learner).count() < n,
            _ => return None,
        };
        Some(
            self.regions_in_order()
                .filter(|e| pick(e, replicas))
                .collect(),
        )
    }

    /// Applies a leader's region heartbeat: newer (or equal) epochs replace
    /// what PD knows, and regions the new range covers with older versions
    /// are dropped (a split or merge PD learns about late).
    pub fn region_heartbeat(
        &mut self,
        region: Region,
        leader: Option<Peer>,
        term: u64,
        approximate_size: u64,
        approximate_keys: u64,
    ) -> Result<HeartbeatOutcome, Error> {
        if region.id == 0 {
            return Err(Error::InvalidArgument("region id is 0".into()));
        }
        if !region.end_key.is_empty() && region.end_key <= region.start_key {
            return Err(Error::InvalidArgument(format!(
                "region {} has end_key <= start_key",
                region.id
            )));
        }
        if let Some(l) = &leader {
            if !region.peers.iter().any(|p| p.id == l.id) {
                return Err(Error::InvalidArgument(format!(
                    "region {}: leader {} is not a peer",
                    region.id, l.id
                )));
            }
        }
        let new_epoch = epoch_of(&region);
        let meta_changed = match self.regions.get(&region.id) {
            Some(cur) => {
                let cur_epoch = epoch_of(&cur.region);
                if new_epoch.conf_ver < cur_epoch.conf_ver || new_epoch.version < cur_epoch.version
                {
                    return Ok(HeartbeatOutcome::Stale);
                }
                if new_epoch == cur_epoch && term < cur.term {
                    // An old leader still reporting after an election.
                    return Ok(HeartbeatOutcome::Stale);
                }
                cur.region != region
            }
            None => true,
        };
        if meta_changed {
            // Other regions the new range overlaps: newer ones win, older
            // ones go. (A key-range lookup: O(log n + overlaps), not a scan of
            // every region, which at 100,000 regions would dominate.)
            let overlapping: Vec<u64> = self
                .scan_regions(&region.start_key, &region.end_key, usize::MAX)
                .iter()
                .map(|e| e.region.id)
                .filter(|id| *id != region.id)
                .collect();
            for id in &overlapping {
                if epoch_of(&self.regions[id].region).version > new_epoch.version {
                    return Ok(HeartbeatOutcome::Stale);
                }
            }
            for id in overlapping {
                if let Some(old) = self.regions.remove(&id) {
                    self.by_start.remove(old.region.start_key.as_ref());
                }
            }
            let (old_leader, old_term, old_flow) = self
                .regions
                .get(&region.id)
                .map(|e| (e.leader, e.term, e.flow))
                .unwrap_or((None, 0, Default::default()));
            self.insert_region(region.clone());
            if let Some(e) = self.regions.get_mut(&region.id) {
                e.leader = old_leader;
                e.term = old_term;
                e.flow = old_flow;
            }
        }
        let e = self
            .regions
            .get_mut(&region.id)
            .expect("the region was inserted above or already known");
        if leader.is_some() {
            e.leader = leader;
            e.term = term;
        }
        e.approximate_size = approximate_size;
        e.approximate_keys = approximate_keys;
        let mut persist = meta_changed;
        // The leader's store evidently hosts the region.
        if let Some(l) = leader {
            if self
                .bootstrap
                .as_ref()
                .is_some_and(|b| b.region.id == region.id)
            {
                persist |= self.confirm_peer_created(l.store_id);
            }
        }
        Ok(if persist {
            HeartbeatOutcome::MetaChanged
        } else {
            HeartbeatOutcome::StatsOnly
        })
    }
}
