//! Metashard stores in the cluster model: registration under a data-dir
//! identity, heartbeats, liveness, deletion and the admin's labels, weights
//! and limits.

use std::collections::BTreeMap;

use kura_proto::common::Labels;
use kura_proto::pd::store::State as StoreState;
use kura_proto::pd::Store;

use crate::Error;

use super::identity::{check_claim, check_uuid};
use super::*;

impl Cluster {
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
    pub(super) fn unknown_id(&self, kind: &str, id: u64) -> Error {
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
    /// store PD knows, with the same uuid; else nothing changes. Any other
    /// store at the same address is then replaced by this one (decision 0044).
    /// Returns the id and whether to persist.
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
        let address = store.address.clone();
        let labels = store.labels.clone().unwrap_or_default();
        let (id, changed) = match self.stores.get_mut(&id) {
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
                (id, changed)
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
                (id, true)
            }
        };
        let replaced = self.registered_at(NodeKind::Store, id, &address);
        Ok((id, changed || replaced))
    }

    /// Records a store heartbeat, proven by `uuid` (the data dir's identity;
    /// [`super::identity::check_heartbeat`] has the rule: a wrong one, a
    /// missing one once this id's heartbeats carried it, or a replaced id is
    /// refused and changes nothing). Returns whether to persist: bootstrap
    /// progress changed (the store now hosts a region, so it no longer needs
    /// its initial peer), or this is the first heartbeat carrying the uuid.
    pub fn store_heartbeat(
        &mut self,
        store_id: u64,
        uuid: &str,
        stats: StoreStats,
        now_ms: i64,
    ) -> Result<bool, Error> {
        let hosts_regions = stats.region_count >= 1;
        let state = self
            .stores
            .get(&store_id)
            .map(|s| s.meta.state())
            .ok_or_else(|| Error::NotFound(format!("store {store_id}")))?;
        if state == StoreState::Tombstone {
            return Err(Error::Tombstone(format!("store {store_id}")));
        }
        let proved = self.accept_heartbeat(NodeKind::Store, store_id, uuid)?;
        if let Some(info) = self.stores.get_mut(&store_id) {
            info.meta.last_heartbeat_unix_ms = now_ms;
            info.stats = stats;
        }
        Ok((hosts_regions && self.confirm_peer_created(store_id)) | proved)
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

    pub(super) fn liveness(
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
        match self.liveness(
            store.state(),
            store.last_heartbeat_unix_ms,
            now_ms,
            max_down_ms,
        ) {
            Liveness::Up | Liveness::Down
                if self.replaced_by(NodeKind::Store, store.id).is_some() =>
            {
                Liveness::Replaced
            }
            l => l,
        }
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
    pub(super) fn known_live_store(&self, id: u64) -> Result<(), Error> {
        match self.stores.get(&id).map(|s| s.meta.state()) {
            None => Err(Error::NotFound(format!("store {id}"))),
            Some(StoreState::Tombstone) => Err(Error::Tombstone(format!("store {id}"))),
            Some(_) => Ok(()),
        }
    }
}
