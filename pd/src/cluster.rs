//! The in-memory cluster model: stores, data nodes, regions, the id allocator,
//! the bootstrap progress and the placement maps (one per storage class).
//!
//! Pure logic, no I/O and no clock: callers pass `now_ms` (unix milliseconds).
//! Every mutating method says whether it changed something that must be
//! persisted, so the caller can save before it acknowledges.

use std::collections::BTreeMap;

use kura_proto::common::{Labels, Peer, Region, RegionEpoch};
use kura_proto::pd::store::State as StoreState;
use kura_proto::pd::{DataNode, Store};

use crate::placement::{NodeDesc, PlacementState};
use crate::rebalance::{self, Drain, NodeView, RepairReport, RepairStatus};
use crate::Error;

/// Ids are handed out below a high-water mark that is on disk before any id
/// under it leaves PD, so a crash can never hand out an id twice. The mark is
/// raised in steps of this many ids to keep saves rare.
pub const ID_BATCH: u64 = 1000;

/// Every id PD hands out is below this (2^63 - 1): far beyond any real
/// cluster, and small enough that `id + 1` anywhere downstream cannot
/// overflow and ids survive JSON readers that parse numbers as i64.
pub const MAX_ID: u64 = (1 << 63) - 1;

/// Which kind of registered process an identity belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Store,
    DataNode,
}

/// A data-dir identity as processes present it: 32 lower-case hex digits.
fn check_uuid(uuid: &str) -> Result<(), Error> {
    if uuid.len() == 32 && uuid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "uuid must be 32 lower-case hex digits (the data dir's identity)".into(),
        ))
    }
}

/// Whether a claim of the known id `id` with `presented` stands. Returns
/// whether to record `presented` (true only for an id PD has no identity
/// for: a cluster from before identities; trust on first use, the first
/// registration after the upgrade binds the id to that data dir).
fn check_claim(
    kind: &str,
    id: u64,
    recorded: Option<&String>,
    presented: &str,
) -> Result<bool, Error> {
    match recorded {
        None => {
            tracing::warn!(
                kind,
                id,
                "no identity recorded for this id (registered before identities): adopting the one presented"
            );
            Ok(true)
        }
        Some(r) if r == presented => Ok(false),
        Some(_) => Err(Error::IdentityMismatch(format!(
            "{kind} {id} is registered with another data dir; a wiped or different dir registers with id 0"
        ))),
    }
}

/// Cluster-wide unique ids: stores, data nodes, regions and peers share one space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdAllocator {
    next: u64,
    /// Every id handed out is below this (saved with the state).
    high: u64,
    /// The mark known to be on disk.
    durable_high: u64,
}

impl IdAllocator {
    /// A fresh cluster: ids start at 1.
    pub fn new() -> Self {
        IdAllocator {
            next: 1,
            high: 1,
            durable_high: 1,
        }
    }

    /// After a restart: continue above the saved mark, skipping what the
    /// previous run may have handed out.
    pub fn restored(high_water: u64) -> Self {
        let h = high_water.max(1);
        IdAllocator {
            next: h,
            high: h,
            durable_high: h,
        }
    }

    /// Takes `count` consecutive ids; raises the mark when they do not fit.
    /// The caller must persist (see [`Self::needs_persist`]) before using them.
    /// Checked: ids stay below [`MAX_ID`], so no id can wrap and come back.
    pub fn alloc(&mut self, count: u64) -> Result<u64, Error> {
        let first = self.next;
        let next = first
            .checked_add(count)
            .filter(|n| *n <= MAX_ID)
            .ok_or(Error::IdsExhausted { next: first, count })?;
        self.next = next;
        if self.next > self.high {
            // Below MAX_ID + ID_BATCH, so it cannot overflow either.
            self.high = self.next + ID_BATCH;
        }
        Ok(first)
    }

    /// The id the next allocation starts at: every id PD ever handed out is
    /// below it.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The mark to save.
    pub fn high_water(&self) -> u64 {
        self.high
    }

    /// Whether ids were handed out above the mark on disk.
    pub fn needs_persist(&self) -> bool {
        self.high > self.durable_high
    }

    /// Records that a state with `high_water` is on disk.
    pub fn mark_durable(&mut self, high_water: u64) {
        self.durable_high = self.durable_high.max(high_water);
    }
}

impl Default for IdAllocator {
    fn default() -> Self {
        Self::new()
    }
}

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
}

impl Liveness {
    /// The name pd-ctl prints in `state_name`.
    pub fn name(self) -> &'static str {
        match self {
            Liveness::Up => "Up",
            Liveness::Down => "Down",
            Liveness::Offline => "Offline",
            Liveness::Tombstone => "Tombstone",
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

    // ---- stores ----

    pub fn stores(&self) -> impl Iterator<Item = &StoreInfo> {
        self.stores.values()
    }

    pub fn store(&self, id: u64) -> Option<&StoreInfo> {
        self.stores.get(&id)
    }

    /// Adds a store as loaded from disk.
    pub fn restore_store(&mut self, meta: Store) {
        self.stores.insert(
            meta.id,
            StoreInfo {
                meta,
                stats: StoreStats::default(),
            },
        );
    }

    /// Restores the identity recorded for a store or data node `id`.
    pub fn restore_uuid(&mut self, kind: NodeKind, id: u64, uuid: String) {
        if uuid.is_empty() {
            return;
        }
        match kind {
            NodeKind::Store => self.store_uuids.insert(id, uuid),
            NodeKind::DataNode => self.data_node_uuids.insert(id, uuid),
        };
    }

    /// The identity recorded for `id` (persistence only: never serve it).
    pub fn uuid_of(&self, kind: NodeKind, id: u64) -> Option<&str> {
        match kind {
            NodeKind::Store => self.store_uuids.get(&id),
            NodeKind::DataNode => self.data_node_uuids.get(&id),
        }
        .map(String::as_str)
    }

    /// The refusal of a nonzero id PD has no such record of: ids are PD's to
    /// give, a caller cannot choose one (an id at or past the allocator's
    /// next one would make PD hand it out again later).
    fn unknown_id(&self, kind: &str, id: u64) -> Error {
        if id >= self.ids.next() {
            Error::InvalidArgument(format!(
                "{kind} id {id} was never allocated (next id is {}); register with id 0",
                self.ids.next()
            ))
        } else {
            Error::NotFound(format!("{kind} {id}"))
        }
    }

    /// Registers or re-registers a store, proven by `uuid` (its data dir's
    /// identity; docs/decisions/0024-node-identities.md). Id 0: the id
    /// recorded with that uuid (a restart that lost its id before saving it),
    /// else a new one — never the id of another store at the same address,
    /// which may be the same disk wiped (Raft amnesia). A nonzero id must be a
    /// store PD knows, with the same uuid; else nothing changes. Returns the
    /// id and whether to persist.
    pub fn register_store(
        &mut self,
        mut store: Store,
        uuid: &str,
        now_ms: i64,
    ) -> Result<(u64, bool), Error> {
        if store.address.is_empty() {
            return Err(Error::InvalidArgument("store address is empty".into()));
        }
        check_uuid(uuid)?;
        let mut adopt = false;
        if store.id == 0 {
            let proven = self.store_uuids.iter().find(|(id, u)| {
                u.as_str() == uuid
                    && self
                        .stores
                        .get(id)
                        .is_some_and(|s| s.meta.state() != StoreState::Tombstone)
            });
            store.id = match proven {
                Some((&id, _)) => id,
                None => {
                    adopt = true;
                    self.ids.alloc(1)?
                }
            };
        } else {
            let known = self
                .stores
                .get(&store.id)
                .ok_or_else(|| self.unknown_id("store", store.id))?;
            if known.meta.state() == StoreState::Tombstone {
                return Err(Error::Tombstone(format!("store {}", store.id)));
            }
            adopt = check_claim("store", store.id, self.store_uuids.get(&store.id), uuid)?;
        }
        if adopt {
            self.store_uuids.insert(store.id, uuid.to_string());
        }
        let id = store.id;
        let labels = store.labels.clone().unwrap_or_default();
        match self.stores.get_mut(&id) {
            Some(known) => {
                if known.meta.state() == StoreState::Tombstone {
                    return Err(Error::Tombstone(format!("store {id}")));
                }
                let changed = adopt
                    || known.meta.address != store.address
                    || known.meta.status_address != store.status_address
                    || known.meta.labels.clone().unwrap_or_default() != labels;
                known.meta.address = store.address;
                known.meta.status_address = store.status_address;
                known.meta.labels = Some(labels);
                // An Offline store (being deleted) stays Offline across restarts.
                known.meta.last_heartbeat_unix_ms = now_ms;
                Ok((id, changed))
            }
            None => {
                let meta = Store {
                    id,
                    address: store.address,
                    status_address: store.status_address,
                    labels: Some(labels),
                    state: StoreState::Up as i32,
                    last_heartbeat_unix_ms: now_ms,
                };
                self.stores.insert(
                    id,
                    StoreInfo {
                        meta,
                        stats: StoreStats::default(),
                    },
                );
                Ok((id, true))
            }
        }
    }

    /// Records a store heartbeat. Returns whether bootstrap progress changed
    /// (the store now hosts a region, so it no longer needs its initial peer).
    pub fn store_heartbeat(
        &mut self,
        store_id: u64,
        stats: StoreStats,
        now_ms: i64,
    ) -> Result<bool, Error> {
        let hosts_regions = stats.region_count >= 1;
        let info = self
            .stores
            .get_mut(&store_id)
            .ok_or_else(|| Error::NotFound(format!("store {store_id}")))?;
        if info.meta.state() == StoreState::Tombstone {
            return Err(Error::Tombstone(format!("store {store_id}")));
        }
        info.meta.last_heartbeat_unix_ms = now_ms;
        info.stats = stats;
        Ok(hosts_regions && self.confirm_peer_created(store_id))
    }

    /// The store hosts the first region: stop asking it to create its peer.
    /// Returns whether anything changed.
    pub fn confirm_peer_created(&mut self, store_id: u64) -> bool {
        let Some(b) = self.bootstrap.as_mut() else {
            return false;
        };
        let removed = b.pending.remove(&store_id).is_some();
        if b.pending.is_empty() {
            self.bootstrap = None;
        }
        removed
    }

    fn liveness(
        &self,
        state: StoreState,
        last_heartbeat_ms: i64,
        now_ms: i64,
        max_down_ms: i64,
    ) -> Liveness {
        match state {
            StoreState::Tombstone => Liveness::Tombstone,
            StoreState::Offline => Liveness::Offline,
            StoreState::Up => {
                let last = last_heartbeat_ms.max(self.liveness_floor_ms);
                if now_ms.saturating_sub(last) > max_down_ms {
                    Liveness::Down
                } else {
                    Liveness::Up
                }
            }
        }
    }

    pub fn store_liveness(&self, store: &Store, now_ms: i64, max_down_ms: i64) -> Liveness {
        self.liveness(
            store.state(),
            store.last_heartbeat_unix_ms,
            now_ms,
            max_down_ms,
        )
    }

    /// Starts deleting store `id` (`pdctl store delete`): it becomes
    /// `Offline`, the replica checker moves its peers away, and
    /// [`Self::finish_store_deletions`] makes it `Tombstone` once it holds
    /// none. Refused when fewer than `max_replicas` usable (up, not being
    /// deleted) stores would remain. Returns whether the state changed (an
    /// Offline store is left so).
    pub fn delete_store(
        &mut self,
        id: u64,
        max_replicas: u32,
        now_ms: i64,
        max_down_ms: i64,
    ) -> Result<bool, Error> {
        let state = self
            .stores
            .get(&id)
            .map(|s| s.meta.state())
            .ok_or_else(|| Error::NotFound(format!("store {id}")))?;
        match state {
            StoreState::Tombstone => return Err(Error::Tombstone(format!("store {id}"))),
            StoreState::Offline => return Ok(false),
            StoreState::Up => {}
        }
        let usable = self
            .stores
            .values()
            .filter(|s| s.meta.id != id)
            .filter(|s| self.store_liveness(&s.meta, now_ms, max_down_ms) == Liveness::Up)
            .count();
        if usable < max_replicas as usize {
            return Err(Error::InvalidArgument(format!(
                "deleting store {id} would leave {usable} usable store(s), fewer than \
                 max-replicas ({max_replicas}); add a store first"
            )));
        }
        if let Some(s) = self.stores.get_mut(&id) {
            s.meta.set_state(StoreState::Offline);
        }
        Ok(true)
    }

    /// Offline stores that hold no region peer any more (per PD's region
    /// map) become `Tombstone`; returns their ids.
    pub fn finish_store_deletions(&mut self) -> Vec<u64> {
        let done: Vec<u64> = self
            .stores
            .values()
            .filter(|s| s.meta.state() == StoreState::Offline)
            .map(|s| s.meta.id)
            .filter(|id| self.store_region_counts(*id).0 == 0)
            .collect();
        for id in &done {
            if let Some(s) = self.stores.get_mut(id) {
                s.meta.set_state(StoreState::Tombstone);
            }
        }
        done
    }

    /// Address of store `id`, empty when unknown.
    pub fn store_address(&self, id: u64) -> String {
        self.stores
            .get(&id)
            .map(|s| s.meta.address.clone())
            .unwrap_or_default()
    }

    /// Regions and leaders per store, as PD's region map sees them.
    pub fn store_region_counts(&self, store_id: u64) -> (u64, u64) {
        let mut regions = 0;
        let mut leaders = 0;
        for e in self.regions.values() {
            if e.region.peers.iter().any(|p| p.store_id == store_id) {
                regions += 1;
            }
            if e.leader.as_ref().is_some_and(|l| l.store_id == store_id) {
                leaders += 1;
            }
        }
        (regions, leaders)
    }

    // ---- data nodes ----

    pub fn data_nodes(&self) -> impl Iterator<Item = &DataNode> {
        self.data_nodes.values()
    }

    pub fn data_node(&self, id: u64) -> Option<&DataNode> {
        self.data_nodes.get(&id)
    }

    pub fn restore_data_node(&mut self, node: DataNode) {
        self.data_nodes.insert(node.id, node);
    }

    /// Registers or re-registers a data node, with the same id and uuid
    /// rules as [`Self::register_store`]: a claim of a known id with another
    /// uuid is refused, so no process can re-point a node's slots at itself.
    /// A known node keeps its id and only updates address, labels and usage; if
    /// the placement map references it, the map's version grows so clients
    /// pick up the new address (any class referencing it counts). Returns the
    /// id and whether to persist.
    pub fn register_data_node(
        &mut self,
        mut node: DataNode,
        uuid: &str,
        now_ms: i64,
    ) -> Result<(u64, bool), Error> {
        if node.address.is_empty() {
            return Err(Error::InvalidArgument("data node address is empty".into()));
        }
        check_uuid(uuid)?;
        let adopt;
        if node.id == 0 {
            let proven = self
                .data_node_uuids
                .iter()
                .find(|(id, u)| u.as_str() == uuid && self.data_nodes.contains_key(id));
            (node.id, adopt) = match proven {
                Some((&id, _)) => (id, false),
                None => (self.ids.alloc(1)?, true),
            };
        } else {
            if !self.data_nodes.contains_key(&node.id) {
                return Err(self.unknown_id("data node", node.id));
            }
            adopt = check_claim(
                "data node",
                node.id,
                self.data_node_uuids.get(&node.id),
                uuid,
            )?;
        }
        if adopt {
            self.data_node_uuids.insert(node.id, uuid.to_string());
        }
        let id = node.id;
        node.labels = Some(node.labels.unwrap_or_default());
        node.last_heartbeat_unix_ms = now_ms;
        let changed = match self.data_nodes.get(&id) {
            Some(known) => {
                known.address != node.address
                    || known.status_address != node.status_address
                    || known.labels != node.labels
                    || known.read_only != node.read_only
            }
            None => true,
        } || adopt;
        self.data_nodes.insert(id, node);
        if changed {
            self.bump_placement_if_references(id);
        }
        Ok((id, changed))
    }

    /// Records a data node heartbeat. Returns whether to persist (its
    /// read-only flag flipped, which writers must learn through the map).
    pub fn data_node_heartbeat(
        &mut self,
        id: u64,
        capacity_bytes: u64,
        used_bytes: u64,
        read_only: bool,
        now_ms: i64,
    ) -> Result<bool, Error> {
        let node = self
            .data_nodes
            .get_mut(&id)
            .ok_or_else(|| Error::NotFound(format!("data node {id}")))?;
        node.capacity_bytes = capacity_bytes;
        node.used_bytes = used_bytes;
        node.last_heartbeat_unix_ms = now_ms;
        let flipped = node.read_only != read_only;
        node.read_only = read_only;
        if flipped {
            self.bump_placement_if_references(id);
        }
        Ok(flipped)
    }

    /// Records the repair progress a data node's heartbeat carried.
    pub fn report_repair(&mut self, id: u64, report: RepairReport) {
        if self.data_nodes.contains_key(&id) {
            self.repair.insert(id, report);
        }
    }

    /// Data node `id`'s last repair report (None before its first heartbeat
    /// since PD started).
    pub fn repair_report(&self, id: u64) -> Option<RepairReport> {
        self.repair.get(&id).copied()
    }

    /// Repair against map `version` across the data nodes that serve now
    /// (heartbeated within `max_down_ms`, not decommissioned): a node that is
    /// down cannot repair and does not hold anyone back.
    pub fn repair_status(&self, version: u64, now_ms: i64, max_down_ms: i64) -> RepairStatus {
        let serving: Vec<(u64, Option<RepairReport>)> = self
            .data_nodes
            .values()
            .filter(|n| self.data_node_admin_state(n.id) != AdminState::Decommissioned)
            .filter(|n| self.heard_from(n, now_ms, max_down_ms))
            .map(|n| (n.id, self.repair_report(n.id)))
            .collect();
        rebalance::repair_status(&serving, version)
    }

    fn bump_placement_if_references(&mut self, node_id: u64) {
        if self.placement.references(node_id) {
            self.placement.version += 1;
        }
    }

    /// pd-ctl's names: `Offline` while being decommissioned, `Tombstone`
    /// once decommissioned, else `Up` or `Down` by heartbeat.
    pub fn data_node_liveness(&self, node: &DataNode, now_ms: i64, max_down_ms: i64) -> Liveness {
        match self.data_node_admin_state(node.id) {
            AdminState::Leaving => Liveness::Offline,
            AdminState::Decommissioned => Liveness::Tombstone,
            AdminState::Active => self.liveness(
                StoreState::Up,
                node.last_heartbeat_unix_ms,
                now_ms,
                max_down_ms,
            ),
        }
    }

    /// Whether `node` heartbeated within `within_ms` (counting from PD's start).
    fn heard_from(&self, node: &DataNode, now_ms: i64, within_ms: i64) -> bool {
        let last = node.last_heartbeat_unix_ms.max(self.liveness_floor_ms);
        now_ms.saturating_sub(last) <= within_ms
    }

    /// Active data nodes that are up now, as placement sees them (what new
    /// classes are built from).
    pub fn live_data_nodes(&self, now_ms: i64, max_down_ms: i64) -> Vec<NodeDesc> {
        self.data_nodes
            .values()
            .filter(|n| self.data_node_liveness(n, now_ms, max_down_ms) == Liveness::Up)
            .map(node_desc)
            .collect()
    }

    /// Every data node as slot movement sees it: serving when it heartbeated
    /// within `max_down_ms`; drained when leaving or decommissioned, or when
    /// silent for more than `down_after_ms`.
    pub fn node_views(&self, now_ms: i64, max_down_ms: i64, down_after_ms: i64) -> Vec<NodeView> {
        self.data_nodes
            .values()
            .map(|n| {
                let drain = match self.data_node_admin_state(n.id) {
                    AdminState::Leaving | AdminState::Decommissioned => Some(Drain::Decommission),
                    AdminState::Active if !self.heard_from(n, now_ms, down_after_ms) => {
                        Some(Drain::Down)
                    }
                    AdminState::Active => None,
                };
                NodeView {
                    desc: node_desc(n),
                    serving: self.heard_from(n, now_ms, max_down_ms),
                    drain,
                }
            })
            .collect()
    }

    pub fn data_node_admin_state(&self, id: u64) -> AdminState {
        self.data_node_admin.get(&id).copied().unwrap_or_default()
    }

    /// Sets a known node's state as loaded from disk.
    pub fn restore_data_node_admin_state(&mut self, id: u64, state: AdminState) {
        match state {
            AdminState::Active => self.data_node_admin.remove(&id),
            other => self.data_node_admin.insert(id, other),
        };
    }

    /// Starts decommissioning data node `id`: `Leaving` until
    /// [`Self::finish_decommissions`] finds it done (the caller runs it at
    /// once, so a node holding nothing with repair caught up is decommissioned
    /// right away). Returns whether the state changed (to persist); a node
    /// already leaving or gone is left so.
    pub fn decommission_data_node(&mut self, id: u64) -> Result<bool, Error> {
        if !self.data_nodes.contains_key(&id) {
            return Err(Error::NotFound(format!("data node {id}")));
        }
        if self.data_node_admin_state(id) != AdminState::Active {
            return Ok(false);
        }
        self.data_node_admin.insert(id, AdminState::Leaving);
        Ok(true)
    }

    /// Makes a leaving or decommissioned node active again (rebalancing
    /// then gives it its share back). Returns whether the state changed.
    pub fn cancel_decommission(&mut self, id: u64) -> Result<bool, Error> {
        if !self.data_nodes.contains_key(&id) {
            return Err(Error::NotFound(format!("data node {id}")));
        }
        Ok(self.data_node_admin.remove(&id).is_some())
    }

    /// Leaving nodes that hold no slot any more become `Decommissioned`
    /// once repair has caught up with the current map on every serving node
    /// (so the fragments they held were rebuilt on their PGs' members);
    /// returns their ids.
    pub fn finish_decommissions(&mut self, now_ms: i64, max_down_ms: i64) -> Vec<u64> {
        let drained: Vec<u64> = self
            .data_node_admin
            .iter()
            .filter(|(id, s)| **s == AdminState::Leaving && !self.placement.references(**id))
            .map(|(id, _)| *id)
            .collect();
        if drained.is_empty()
            || !self
                .repair_status(self.placement.version, now_ms, max_down_ms)
                .caught_up()
        {
            return Vec::new();
        }
        let done = drained;
        for id in &done {
            self.data_node_admin.insert(*id, AdminState::Decommissioned);
        }
        done
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

    /// Labels of store `id` as placement sees them: what it registered
    /// with, `pdctl store label` overrides on top (default when unknown).
    pub fn store_labels(&self, id: u64) -> Labels {
        let mut l = self
            .stores
            .get(&id)
            .and_then(|s| s.meta.labels.clone())
            .unwrap_or_default();
        if let Some(set) = self.settings.stores.get(&id) {
            for (k, v) in &set.labels {
                match k.as_str() {
                    "zone" => l.zone = v.clone(),
                    "rack" => l.rack = v.clone(),
                    "host" => l.host = v.clone(),
                    _ => {}
                }
            }
        }
        l
    }

    /// Every label of store `id` (registered ones, overrides on top, empty
    /// values left out), by key.
    pub fn store_label_map(&self, id: u64) -> BTreeMap<String, String> {
        let l = self
            .stores
            .get(&id)
            .and_then(|s| s.meta.labels.clone())
            .unwrap_or_default();
        let mut map: BTreeMap<String, String> =
            [("zone", l.zone), ("rack", l.rack), ("host", l.host)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        if let Some(set) = self.settings.stores.get(&id) {
            map.extend(set.labels.clone());
        }
        map.retain(|_, v| !v.is_empty());
        map
    }

    /// `pdctl store label ID K=V...`: merges `labels` into store `id`'s
    /// overrides (an empty value drops that override). Returns whether
    /// anything changed.
    pub fn set_store_labels(
        &mut self,
        id: u64,
        labels: &[(String, String)],
    ) -> Result<bool, Error> {
        self.known_live_store(id)?;
        Ok(self.settings.update_store(id, |s| {
            for (k, v) in labels {
                if v.is_empty() {
                    s.labels.remove(k);
                } else {
                    s.labels.insert(k.clone(), v.clone());
                }
            }
        }))
    }

    /// `pdctl store weight ID LEADER REGION`.
    pub fn set_store_weight(&mut self, id: u64, leader: f64, region: f64) -> Result<bool, Error> {
        self.known_live_store(id)?;
        let leader =
            crate::config::check_weight("leader weight", leader).map_err(Error::InvalidArgument)?;
        let region =
            crate::config::check_weight("region weight", region).map_err(Error::InvalidArgument)?;
        Ok(self.settings.update_store(id, |s| {
            s.leader_weight = leader;
            s.region_weight = region;
        }))
    }

    /// `pdctl store limit ID RATE`: store `id`'s operators per minute.
    pub fn set_store_limit(&mut self, id: u64, per_minute: usize) -> Result<bool, Error> {
        self.known_live_store(id)?;
        Ok(self
            .settings
            .update_store(id, |s| s.limit_per_minute = Some(per_minute)))
    }

    /// Ok for a known store that is not a tombstone.
    fn known_live_store(&self, id: u64) -> Result<(), Error> {
        match self.stores.get(&id).map(|s| s.meta.state()) {
            None => Err(Error::NotFound(format!("store {id}"))),
            Some(StoreState::Tombstone) => Err(Error::Tombstone(format!("store {id}"))),
            Some(_) => Ok(()),
        }
    }
}

/// Tests: a uuid standing for the data dir `tag` names (the same tag, the
/// same dir).
#[cfg(test)]
pub(crate) fn uuid_for(tag: &str) -> String {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, tag).hash(&mut h);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

#[cfg(test)]
impl Cluster {
    /// Tests: registers as the data dir named by the store's address.
    pub(crate) fn register_store_at(
        &mut self,
        store: Store,
        now_ms: i64,
    ) -> Result<(u64, bool), Error> {
        let uuid = uuid_for(&store.address);
        self.register_store(store, &uuid, now_ms)
    }

    /// Tests: registers as the data dir named by the node's address.
    pub(crate) fn register_data_node_at(
        &mut self,
        node: DataNode,
        now_ms: i64,
    ) -> Result<(u64, bool), Error> {
        let uuid = uuid_for(&node.address);
        self.register_data_node(node, &uuid, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{ClassGroups, Rules};
    use kura_proto::meta::StorageClass;

    fn store(id: u64, addr: &str, zone: &str) -> Store {
        Store {
            id,
            address: addr.into(),
            labels: Some(Labels {
                zone: zone.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn region(id: u64, start: &[u8], end: &[u8], conf_ver: u64, version: u64) -> Region {
        Region {
            id,
            start_key: start.to_vec().into(),
            end_key: end.to_vec().into(),
            epoch: Some(RegionEpoch { conf_ver, version }),
            peers: vec![Peer {
                id: id * 10 + 1,
                store_id: 1,
                is_learner: false,
            }],
        }
    }

    #[test]
    fn id_allocator_persists_ahead_and_never_repeats_after_restart() {
        let mut ids = IdAllocator::new();
        assert!(!ids.needs_persist());
        assert_eq!(ids.alloc(1).unwrap(), 1);
        assert!(ids.needs_persist());
        let high = ids.high_water();
        ids.mark_durable(high);
        assert_eq!(ids.alloc(10).unwrap(), 2);
        assert!(!ids.needs_persist(), "within the batch: no save needed");
        // Crash: restart from the saved mark; nothing below it comes back.
        let mut after = IdAllocator::restored(high);
        assert!(after.alloc(1).unwrap() >= high);
        assert!(after.needs_persist());
    }

    #[test]
    fn an_unsaved_mark_still_needs_persisting_after_a_failed_save() {
        let mut ids = IdAllocator::new();
        ids.alloc(ID_BATCH * 2).unwrap();
        // The save failed: mark_durable was not called.
        ids.alloc(1).unwrap();
        assert!(ids.needs_persist());
    }

    #[test]
    fn id_allocation_is_checked_and_never_wraps() {
        let mut ids = IdAllocator::restored(MAX_ID - 2);
        assert_eq!(ids.alloc(1).unwrap(), MAX_ID - 2);
        assert!(matches!(ids.alloc(2), Err(Error::IdsExhausted { .. })));
        assert!(matches!(
            ids.alloc(u64::MAX),
            Err(Error::IdsExhausted { .. })
        ));
        assert_eq!(ids.next(), MAX_ID - 1, "a refused allocation takes nothing");
        assert_eq!(ids.alloc(1).unwrap(), MAX_ID - 1);
        assert!(ids.alloc(1).is_err());
        // A state file written with a wrapped mark stays refused too.
        assert!(IdAllocator::restored(u64::MAX).alloc(1).is_err());
    }

    #[test]
    fn store_registration_allocates_then_keeps_the_id() {
        let mut c = Cluster::new(7);
        let dir = uuid_for("dir-1");
        let (id, changed) = c.register_store(store(0, "a:1", "z1"), &dir, 100).unwrap();
        assert!(changed && id >= 1);
        // Restart with the known id and a new address: same id, address updated.
        let (again, changed) = c.register_store(store(id, "a:2", "z1"), &dir, 200).unwrap();
        assert_eq!((again, changed), (id, true));
        assert_eq!(c.store(id).unwrap().meta.address, "a:2");
        // Id 0 with the same uuid (the id was lost before it was saved): the same store.
        assert_eq!(
            c.register_store(store(0, "a:2", "z1"), &dir, 300).unwrap(),
            (id, false)
        );
        assert!(matches!(
            c.register_store(store(0, "", "z1"), &dir, 0),
            Err(Error::InvalidArgument(_))
        ));
        for bad in ["", "xyz", &"A".repeat(32), &"0".repeat(33)] {
            assert!(
                matches!(
                    c.register_store(store(0, "a:9", "z1"), bad, 0),
                    Err(Error::InvalidArgument(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_wiped_dir_at_the_same_address_gets_a_new_id() {
        let mut c = Cluster::new(7);
        let (old, _) = c
            .register_store(store(0, "a:1", "z1"), &uuid_for("before"), 100)
            .unwrap();
        let wiped = uuid_for("after");
        let (new, changed) = c
            .register_store(store(0, "a:1", "z1"), &wiped, 200)
            .unwrap();
        assert!(changed && new != old);
        assert!(
            c.store(old).is_some(),
            "the old id stays, to be seen as down"
        );
        assert_eq!(c.store(old).unwrap().meta.last_heartbeat_unix_ms, 100);
        // The same for data nodes.
        let dn = |id: u64| DataNode {
            id,
            address: "d:1".into(),
            ..Default::default()
        };
        let (old, _) = c
            .register_data_node(dn(0), &uuid_for("d-before"), 0)
            .unwrap();
        let (new, _) = c
            .register_data_node(dn(0), &uuid_for("d-after"), 0)
            .unwrap();
        assert_ne!(old, new);
    }

    #[test]
    fn a_claim_of_a_known_id_with_another_uuid_changes_nothing() {
        let mut c = Cluster::new(7);
        let (id, _) = c.register_store_at(store(0, "a:1", "z1"), 100).unwrap();
        let before = c.store(id).unwrap().clone();
        let err = c
            .register_store(store(id, "evil:1", "z9"), &uuid_for("evil"), 200)
            .unwrap_err();
        assert!(matches!(err, Error::IdentityMismatch(_)), "{err}");
        assert_eq!(c.store(id).unwrap(), &before);
        let node = |id: u64, addr: &str| DataNode {
            id,
            address: addr.into(),
            ..Default::default()
        };
        let (nid, _) = c.register_data_node_at(node(0, "d:1"), 100).unwrap();
        let before = c.data_node(nid).unwrap().clone();
        let version = c.placement.version;
        let err = c
            .register_data_node(node(nid, "evil:2"), &uuid_for("evil"), 200)
            .unwrap_err();
        assert!(matches!(err, Error::IdentityMismatch(_)), "{err}");
        assert_eq!(c.data_node(nid).unwrap(), &before, "still points at d:1");
        assert_eq!(c.placement.version, version);
    }

    #[test]
    fn an_id_without_a_recorded_uuid_adopts_the_first_one_presented() {
        let mut c = Cluster::new(7);
        // As loaded from a state file written before identities.
        c.restore_store(Store {
            id: 4,
            address: "a:1".into(),
            ..Default::default()
        });
        c.ids = IdAllocator::restored(10);
        let dir = uuid_for("dir");
        assert_eq!(
            c.register_store(store(4, "a:1", "z1"), &dir, 1).unwrap(),
            (4, true)
        );
        assert_eq!(c.uuid_of(NodeKind::Store, 4), Some(dir.as_str()));
        assert!(matches!(
            c.register_store(store(4, "a:1", "z1"), &uuid_for("other"), 2),
            Err(Error::IdentityMismatch(_))
        ));
    }

    #[test]
    fn deleting_a_store_goes_offline_then_tombstone_once_it_holds_no_peer() {
        let mut c = Cluster::new(1);
        let ids: Vec<u64> = (1..=4)
            .map(|i| {
                c.register_store_at(store(0, &format!("a:{i}"), &format!("z{i}")), 1_000)
                    .unwrap()
                    .0
            })
            .collect();
        let mut r = region(1, b"", b"", 1, 1);
        r.peers[0].store_id = ids[0];
        c.insert_region(r.clone());
        assert!(matches!(
            c.delete_store(999, 3, 1_000, 30_000),
            Err(Error::NotFound(_))
        ));
        assert!(c.delete_store(ids[0], 3, 1_000, 30_000).unwrap());
        assert!(!c.delete_store(ids[0], 3, 1_000, 30_000).unwrap(), "again");
        let meta = c.store(ids[0]).unwrap().meta.clone();
        assert_eq!(c.store_liveness(&meta, 1_000, 30_000), Liveness::Offline);
        // Only 2 usable stores would remain: refused.
        let err = c.delete_store(ids[1], 3, 1_000, 30_000).unwrap_err();
        assert!(err.to_string().contains("max-replicas"), "{err}");
        // A restart of the store keeps it Offline.
        c.register_store_at(store(ids[0], "a:1", "z1"), 2_000)
            .unwrap();
        assert_eq!(c.store(ids[0]).unwrap().meta.state(), StoreState::Offline);
        // Still holds a peer: stays Offline; once moved away: Tombstone.
        assert!(c.finish_store_deletions().is_empty());
        assert_eq!(c.check_regions("offline-peer", 3).unwrap().len(), 1);
        r.peers[0].store_id = ids[3];
        r.epoch = Some(RegionEpoch {
            conf_ver: 2,
            version: 1,
        });
        c.region_heartbeat(r, None, 1, 0, 0).unwrap();
        assert!(c.check_regions("offline-peer", 3).unwrap().is_empty());
        assert_eq!(c.finish_store_deletions(), vec![ids[0]]);
        assert_eq!(c.store(ids[0]).unwrap().meta.state(), StoreState::Tombstone);
        assert!(matches!(
            c.store_heartbeat(ids[0], StoreStats::default(), 3_000),
            Err(Error::Tombstone(_))
        ));
        assert!(matches!(
            c.register_store_at(store(ids[0], "a:1", "z1"), 3_000),
            Err(Error::Tombstone(_))
        ));
        assert!(matches!(
            c.delete_store(ids[0], 3, 3_000, 30_000),
            Err(Error::Tombstone(_))
        ));
    }

    #[test]
    fn ids_pd_never_gave_are_refused_and_the_allocator_stays_put() {
        let mut c = Cluster::new(7);
        for id in [5000, u64::MAX, MAX_ID] {
            assert!(matches!(
                c.register_store_at(store(id, "a:1", "z1"), 0),
                Err(Error::InvalidArgument(_))
            ));
            let node = DataNode {
                id,
                address: "d:1".into(),
                ..Default::default()
            };
            assert!(matches!(
                c.register_data_node_at(node, 0),
                Err(Error::InvalidArgument(_))
            ));
        }
        assert_eq!(c.ids.next(), 1);
        assert_eq!(c.stores().count(), 0);
        // Below the allocator but no such store (a region's id, say): not found.
        c.ids.alloc(10).unwrap();
        assert!(matches!(
            c.register_store_at(store(3, "a:1", "z1"), 0),
            Err(Error::NotFound(_))
        ));
        assert_eq!(c.register_store_at(store(0, "a:1", "z1"), 0).unwrap().0, 11);
    }

    #[test]
    fn liveness_uses_heartbeats_and_the_restart_floor() {
        let mut c = Cluster::new(1);
        let (id, _) = c.register_store_at(store(0, "a:1", "z1"), 1_000).unwrap();
        let meta = c.store(id).unwrap().meta.clone();
        assert_eq!(c.store_liveness(&meta, 20_000, 30_000), Liveness::Up);
        assert_eq!(c.store_liveness(&meta, 40_000, 30_000), Liveness::Down);
        c.liveness_floor_ms = 35_000;
        assert_eq!(c.store_liveness(&meta, 40_000, 30_000), Liveness::Up);
        c.store_heartbeat(id, StoreStats::default(), 60_000)
            .unwrap();
        assert!(matches!(
            c.store_heartbeat(99, StoreStats::default(), 0),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn key_lookup_and_scan_follow_the_ranges() {
        let mut c = Cluster::new(1);
        c.insert_region(region(1, b"", b"m", 1, 1));
        c.insert_region(region(2, b"m", b"t", 1, 1));
        c.insert_region(region(3, b"t", b"", 1, 1));
        assert_eq!(c.region_by_key(b"").unwrap().region.id, 1);
        assert_eq!(c.region_by_key(b"abc").unwrap().region.id, 1);
        assert_eq!(c.region_by_key(b"m").unwrap().region.id, 2);
        assert_eq!(c.region_by_key(b"zzz").unwrap().region.id, 3);
        let ids = |v: Vec<&RegionEntry>| v.iter().map(|e| e.region.id).collect::<Vec<_>>();
        assert_eq!(ids(c.scan_regions(b"c", b"n", 100)), vec![1, 2]);
        assert_eq!(ids(c.scan_regions(b"n", b"", 100)), vec![2, 3]);
        assert_eq!(ids(c.scan_regions(b"", b"", 2)), vec![1, 2]);
        assert_eq!(ids(c.scan_regions(b"m", b"t", 100)), vec![2]);
    }

    #[test]
    fn a_gap_in_the_ranges_finds_no_region() {
        let mut c = Cluster::new(1);
        c.insert_region(region(1, b"a", b"c", 1, 1));
        assert!(c.region_by_key(b"0").is_none());
        assert!(c.region_by_key(b"d").is_none());
    }

    #[test]
    fn region_checks_list_down_pending_and_missing_peers() {
        let mut c = Cluster::new(1);
        let mut full = region(1, b"", b"m", 1, 1);
        full.peers = (1..=3)
            .map(|s| Peer {
                id: 10 + s,
                store_id: s,
                is_learner: false,
            })
            .collect();
        c.insert_region(full.clone());
        c.insert_region(region(2, b"m", b"", 1, 1)); // one voter only
        let ids = |c: &Cluster, kind: &str| -> Vec<u64> {
            c.check_regions(kind, 3)
                .unwrap()
                .iter()
                .map(|e| e.region.id)
                .collect()
        };
        assert_eq!(ids(&c, "miss-peer"), vec![2]);
        assert!(ids(&c, "down-peer").is_empty() && ids(&c, "pending-peer").is_empty());
        c.set_peer_health(1, vec![full.peers[2]], vec![full.peers[1]]);
        assert_eq!(ids(&c, "down-peer"), vec![1]);
        assert_eq!(ids(&c, "pending-peer"), vec![1]);
        c.set_peer_health(1, vec![], vec![]);
        assert!(ids(&c, "down-peer").is_empty());
        assert!(c.check_regions("extra-peer", 3).is_none());
    }

    #[test]
    fn region_heartbeat_takes_newer_epochs_and_ignores_older_ones() {
        let mut c = Cluster::new(1);
        c.insert_region(region(1, b"", b"", 1, 1));
        let leader = Some(Peer {
            id: 11,
            store_id: 1,
            is_learner: false,
        });
        assert_eq!(
            c.region_heartbeat(region(1, b"", b"", 1, 1), leader, 5, 10, 2)
                .unwrap(),
            HeartbeatOutcome::StatsOnly
        );
        assert_eq!(c.region(1).unwrap().leader, leader);
        assert_eq!(c.region(1).unwrap().approximate_keys, 2);
        assert_eq!(
            c.region_heartbeat(region(1, b"", b"", 2, 1), None, 5, 0, 0)
                .unwrap(),
            HeartbeatOutcome::MetaChanged
        );
        assert_eq!(
            c.region_heartbeat(region(1, b"", b"", 1, 1), None, 9, 0, 0)
                .unwrap(),
            HeartbeatOutcome::Stale
        );
        assert_eq!(
            c.region_heartbeat(region(1, b"", b"", 2, 1), leader, 4, 0, 0)
                .unwrap(),
            HeartbeatOutcome::Stale
        );
        assert_eq!(epoch_of(&c.region(1).unwrap().region).conf_ver, 2);
        assert_eq!(
            c.region(1).unwrap().leader,
            leader,
            "leader kept across a meta change"
        );
    }

    #[test]
    fn a_split_reported_late_replaces_the_old_range() {
        let mut c = Cluster::new(1);
        c.insert_region(region(1, b"", b"", 1, 1));
        // The split's right half reports first; it overlaps region 1 (version 1 < 2).
        assert_eq!(
            c.region_heartbeat(region(2, b"m", b"", 1, 2), None, 1, 0, 0)
                .unwrap(),
            HeartbeatOutcome::MetaChanged
        );
        assert!(c.region(1).is_none());
        assert_eq!(
            c.region_heartbeat(region(1, b"", b"m", 1, 2), None, 1, 0, 0)
                .unwrap(),
            HeartbeatOutcome::MetaChanged
        );
        assert_eq!(c.region_by_key(b"a").unwrap().region.id, 1);
        assert_eq!(c.region_by_key(b"x").unwrap().region.id, 2);
        // A stale pre-split report of region 1 cannot swallow region 2.
        assert_eq!(
            c.region_heartbeat(region(1, b"", b"", 1, 1), None, 1, 0, 0)
                .unwrap(),
            HeartbeatOutcome::Stale
        );
        assert_eq!(c.region_count(), 2);
    }

    #[test]
    fn bad_region_heartbeats_are_rejected() {
        let mut c = Cluster::new(1);
        assert!(c
            .region_heartbeat(region(0, b"", b"", 1, 1), None, 1, 0, 0)
            .is_err());
        assert!(c
            .region_heartbeat(region(1, b"b", b"a", 1, 1), None, 1, 0, 0)
            .is_err());
        let stranger = Some(Peer {
            id: 999,
            store_id: 1,
            is_learner: false,
        });
        assert!(c
            .region_heartbeat(region(1, b"", b"", 1, 1), stranger, 1, 0, 0)
            .is_err());
    }

    #[test]
    fn data_node_address_change_bumps_the_placement_version() {
        let mut c = Cluster::new(1);
        let node = |id: u64, addr: &str| DataNode {
            id,
            address: addr.into(),
            ..Default::default()
        };
        let (id, _) = c
            .register_data_node(node(0, "d:1"), &uuid_for("d:1"), 0)
            .unwrap();
        let (other, _) = c.register_data_node_at(node(0, "d:9"), 0).unwrap();
        // The node is only in the EC_4_2 map: that alone must bump the version.
        c.placement = PlacementState {
            version: 1,
            classes: [
                (
                    StorageClass::Replica3,
                    ClassGroups {
                        rules: Rules::REPLICA3,
                        groups: vec![vec![100, 101, 102]],
                    },
                ),
                (
                    StorageClass::Ec42,
                    ClassGroups {
                        rules: Rules::EC_4_2,
                        groups: vec![vec![100, 101, 102, 103, 104, id]],
                    },
                ),
            ]
            .into(),
        };
        assert_eq!(
            c.register_data_node_at(node(id, "d:1"), 10).unwrap(),
            (id, false)
        );
        assert_eq!(c.placement.version, 1);
        assert_eq!(
            c.register_data_node(node(id, "d:2"), &uuid_for("d:1"), 20)
                .unwrap(),
            (id, true)
        );
        assert_eq!(c.placement.version, 2);
        assert!(c.data_node_heartbeat(id, 10, 1, true, 30).unwrap());
        assert_eq!(c.placement.version, 3);
        assert!(!c.data_node_heartbeat(id, 10, 1, true, 40).unwrap());
        // A node no class references changes nothing.
        assert!(
            c.register_data_node(node(other, "d:10"), &uuid_for("d:9"), 50)
                .unwrap()
                .1
        );
        assert_eq!(c.placement.version, 3);
    }

    #[test]
    fn decommission_states_and_node_views() {
        let mut c = Cluster::new(1);
        let node = |addr: &str| DataNode {
            address: addr.into(),
            ..Default::default()
        };
        let (a, _) = c.register_data_node_at(node("d:1"), 1_000).unwrap();
        let (b, _) = c.register_data_node_at(node("d:2"), 1_000).unwrap();
        c.placement = PlacementState {
            version: 1,
            classes: [(
                StorageClass::Replica3,
                ClassGroups {
                    rules: Rules::REPLICA3,
                    groups: vec![vec![a, 100, 101]],
                },
            )]
            .into(),
        };
        let (silent, _) = c.register_data_node_at(node("d:3"), 1_000).unwrap();
        // Both leave; repeats change nothing.
        assert!(c.decommission_data_node(a).unwrap());
        assert!(!c.decommission_data_node(a).unwrap());
        assert!(c.decommission_data_node(b).unwrap());
        assert_eq!(c.data_node_admin_state(a), AdminState::Leaving);
        assert_eq!(c.data_node_admin_state(b), AdminState::Leaving);
        assert!(matches!(
            c.decommission_data_node(9_999),
            Err(Error::NotFound(_))
        ));
        let na = c.data_node(a).unwrap().clone();
        assert_eq!(c.data_node_liveness(&na, 1_000, 30_000), Liveness::Offline);
        // B holds nothing, but no serving node has reported a repair pass yet.
        assert!(c.finish_decommissions(2_000, 30_000).is_empty());
        let report = |backlog, map_version| RepairReport {
            backlog,
            passes: 1,
            map_version,
        };
        for id in [a, b, silent] {
            c.report_repair(id, report(0, 1));
        }
        assert_eq!(c.finish_decommissions(2_000, 30_000), vec![b]);
        assert_eq!(c.data_node_admin_state(b), AdminState::Decommissioned);
        // Re-registering keeps the state.
        c.register_data_node_at(node("d:1"), 2_000).unwrap();
        assert_eq!(c.data_node_admin_state(a), AdminState::Leaving);
        assert!(
            c.finish_decommissions(2_000, 30_000).is_empty(),
            "still holds a slot"
        );
        // Its last slot moves (version 2): decommissioned once repair covered version 2.
        c.placement
            .classes
            .get_mut(&StorageClass::Replica3)
            .unwrap()
            .groups[0][0] = 102;
        c.placement.version = 2;
        assert!(
            c.finish_decommissions(2_000, 30_000).is_empty(),
            "repair on 1"
        );
        c.report_repair(a, report(0, 2));
        assert!(
            c.finish_decommissions(2_000, 30_000).is_empty(),
            "the third node is serving and still on 1"
        );
        c.report_repair(silent, report(3, 2));
        assert_eq!(
            c.repair_status(2, 2_000, 30_000),
            RepairStatus {
                backlog: 3,
                lagging: vec![silent]
            },
            "decommissioned b does not count"
        );
        assert!(
            c.finish_decommissions(2_000, 30_000).is_empty(),
            "a backlog"
        );
        // The third node goes silent: it no longer holds the others back.
        c.data_node_heartbeat(a, 0, 0, false, 40_000).unwrap();
        assert!(c.repair_status(2, 40_000, 30_000).caught_up());
        assert_eq!(c.finish_decommissions(40_000, 30_000), vec![a]);
        assert_eq!(c.data_node_admin_state(a), AdminState::Decommissioned);
        // Views: decommissioned nodes drain; an active node silent too long is down.
        assert!(c.cancel_decommission(b).unwrap());
        assert!(!c.cancel_decommission(b).unwrap());
        let views = c.node_views(200_000, 30_000, 100_000);
        let view = |id: u64| views.iter().find(|v| v.desc.id == id).unwrap().clone();
        assert_eq!(view(a).drain, Some(Drain::Decommission));
        assert_eq!(view(b).drain, Some(Drain::Down));
        assert!(!view(b).serving);
        let views = c.node_views(20_000, 30_000, 100_000);
        assert!(views.iter().all(|v| v.serving));
        assert_eq!(views.iter().find(|v| v.desc.id == b).unwrap().drain, None);
        assert_eq!(
            c.live_data_nodes(20_000, 30_000).len(),
            2,
            "only the active ones"
        );
    }
}
