//! Data nodes in the cluster model: registration under a data-dir identity,
//! heartbeats, repair reports, liveness and decommission.

use kura_proto::pd::store::State as StoreState;
use kura_proto::pd::DataNode;

use crate::placement::NodeDesc;
use crate::rebalance::{self, Drain, NodeView, RepairReport, RepairStatus};
use crate::Error;

use super::identity::{check_claim, check_uuid};
use super::*;

impl Cluster {
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
        let address = node.address.clone();
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
        let replaced = self.registered_at(NodeKind::DataNode, id, &address);
        Ok((id, changed || replaced))
    }

    /// Records a data node heartbeat, proven by `uuid` (same rule as
    /// [`Self::store_heartbeat`]). Returns whether to persist (its read-only
    /// flag flipped, which writers must learn through the map, or this is the
    /// first heartbeat carrying the uuid).
    pub fn data_node_heartbeat(
        &mut self,
        id: u64,
        uuid: &str,
        capacity_bytes: u64,
        used_bytes: u64,
        read_only: bool,
        now_ms: i64,
    ) -> Result<bool, Error> {
        if !self.data_nodes.contains_key(&id) {
            return Err(Error::NotFound(format!("data node {id}")));
        }
        let proved = self.accept_heartbeat(NodeKind::DataNode, id, uuid)?;
        let Some(node) = self.data_nodes.get_mut(&id) else {
            return Err(Error::NotFound(format!("data node {id}")));
        };
        node.capacity_bytes = capacity_bytes;
        node.used_bytes = used_bytes;
        node.last_heartbeat_unix_ms = now_ms;
        let flipped = node.read_only != read_only;
        node.read_only = read_only;
        if flipped {
            self.bump_placement_if_references(id);
        }
        Ok(flipped || proved)
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

    pub(super) fn bump_placement_if_references(&mut self, node_id: u64) {
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
            AdminState::Active if self.replaced_by(NodeKind::DataNode, node.id).is_some() => {
                Liveness::Replaced
            }
            AdminState::Active => self.liveness(
                StoreState::Up,
                node.last_heartbeat_unix_ms,
                now_ms,
                max_down_ms,
            ),
        }
    }

    /// Whether `node` heartbeated within `within_ms` (counting from PD's
    /// start). Never for a replaced node: whatever it said last, another
    /// data dir holds its address now, so slot movement drains it at once
    /// and repair does not wait for it.
    pub(super) fn heard_from(&self, node: &DataNode, now_ms: i64, within_ms: i64) -> bool {
        if self.replaced_by(NodeKind::DataNode, node.id).is_some() {
            return false;
        }
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
}
