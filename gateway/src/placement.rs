//! The placement-group map as the gateway sees it: fetched from PD, refreshed
//! every few seconds and on demand (a PUT that cannot reach a group's nodes
//! asks for a refresh). Object metadata stores only the PG id; the node
//! addresses of a PG are resolved here at read and write time.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kura_pd_client::PdClient;
use kura_proto::meta::{DataLocation, StorageClass};
use kura_proto::pd::PlacementMap;

use crate::error::{GwError, GwResult};

/// How often the map is polled from PD.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(3);
/// On-demand refreshes are not issued more often than this.
const MIN_ON_DEMAND_INTERVAL: Duration = Duration::from_millis(500);

/// One placement group: the address of the node holding each fragment index
/// (`None` when PD does not know the node's address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    pub id: u32,
    pub nodes: Vec<Option<String>>,
    /// Slots whose node takes no new fragments (disk full or read-only):
    /// writes skip them, reads still use them.
    pub read_only: Vec<bool>,
    /// Most members of this group in one zone (what a zone outage takes).
    pub max_zone_share: usize,
    /// The zone of each slot's node ("" when unlabelled or unknown).
    pub zones: Vec<String>,
}

impl GroupView {
    /// Whether every member of this group in some zone is `down`: a whole
    /// failure domain known down, the one case a PUT may be acknowledged
    /// with k fragments instead of k + 1 (docs/architecture.md, "Durability").
    pub fn whole_zone_down(&self, down: impl Fn(usize) -> bool) -> bool {
        let mut zones: HashMap<&str, bool> = HashMap::new();
        for (i, z) in self.zones.iter().enumerate() {
            let all_down = zones.entry(z.as_str()).or_insert(true);
            *all_down &= down(i);
        }
        zones.values().any(|d| *d)
    }

    /// Whether slot `i`'s node is in `reachable`.
    pub fn is_reachable(&self, i: usize, reachable: &BTreeSet<String>) -> bool {
        self.nodes
            .get(i)
            .and_then(|a| a.as_ref())
            .is_some_and(|a| reachable.contains(a))
    }
}

/// The placement groups of one storage class.
#[derive(Clone, Debug)]
pub struct ClassView {
    pub class: StorageClass,
    /// k (1 for REPLICA3).
    pub data_shards: u32,
    /// m (2 for REPLICA3).
    pub parity_shards: u32,
    /// Sorted by id.
    groups: Vec<GroupView>,
}

impl ClassView {
    /// k + m: fragments per body.
    pub fn width(&self) -> usize {
        (self.data_shards + self.parity_shards) as usize
    }

    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }

    /// The group a new body with `data_id` goes to: a hash of the (random)
    /// data id modulo the number of groups.
    pub fn pick_group(&self, data_id: &[u8]) -> Option<&GroupView> {
        if self.groups.is_empty() {
            return None;
        }
        let idx = (fnv1a(data_id) % self.groups.len() as u64) as usize;
        self.groups.get(idx)
    }

    pub fn group(&self, pg: u32) -> Option<&GroupView> {
        self.groups
            .binary_search_by_key(&pg, |g| g.id)
            .ok()
            .map(|i| &self.groups[i])
    }

    /// Every group has k + m nodes with known addresses.
    pub fn all_groups_available(&self) -> bool {
        let w = self.width();
        w > 0
            && !self.groups.is_empty()
            && self
                .groups
                .iter()
                .all(|g| g.nodes.len() == w && g.nodes.iter().all(|n| n.is_some()))
    }

    /// Whether every group has at least `quorum` nodes in `reachable`, i.e.
    /// whether a PUT to any group can reach its write quorum.
    pub fn every_group_has_quorum(
        &self,
        reachable: &BTreeSet<String>,
        quorum: impl Fn(&GroupView) -> usize,
    ) -> bool {
        !self.groups.is_empty()
            && self.groups.iter().all(|g| {
                g.nodes
                    .iter()
                    .flatten()
                    .filter(|a| reachable.contains(*a))
                    .count()
                    >= quorum(g)
            })
    }
}

/// An immutable snapshot of the placement map: one [`ClassView`] per storage
/// class PD could place.
#[derive(Clone, Debug)]
pub struct PlacementView {
    pub version: u64,
    classes: Vec<ClassView>,
}

impl PlacementView {
    pub fn from_map(map: &PlacementMap) -> Self {
        let addrs: HashMap<u64, &str> = map
            .nodes
            .iter()
            .filter(|n| !n.address.is_empty())
            .map(|n| (n.id, n.address.as_str()))
            .collect();
        let read_only: HashMap<u64, bool> = map.nodes.iter().map(|n| (n.id, n.read_only)).collect();
        let zones: HashMap<u64, &str> = map
            .nodes
            .iter()
            .map(|n| (n.id, n.labels.as_ref().map_or("", |l| l.zone.as_str())))
            .collect();
        let max_zone_share = |members: &[u64]| {
            let mut per: HashMap<&str, usize> = HashMap::new();
            for id in members {
                *per.entry(zones.get(id).copied().unwrap_or("")).or_default() += 1;
            }
            per.into_values().max().unwrap_or(0)
        };
        let classes = map
            .classes
            .iter()
            .filter_map(|c| {
                let class = StorageClass::try_from(c.storage_class).ok()?;
                let mut groups: Vec<GroupView> = c
                    .groups
                    .iter()
                    .map(|g| GroupView {
                        id: g.id,
                        nodes: g
                            .data_nodes
                            .iter()
                            .map(|id| addrs.get(id).map(|a| a.to_string()))
                            .collect(),
                        read_only: g
                            .data_nodes
                            .iter()
                            .map(|id| read_only.get(id).copied().unwrap_or(false))
                            .collect(),
                        max_zone_share: max_zone_share(&g.data_nodes),
                        zones: g
                            .data_nodes
                            .iter()
                            .map(|id| zones.get(id).copied().unwrap_or("").to_string())
                            .collect(),
                    })
                    .collect();
                groups.sort_by_key(|g| g.id);
                groups.dedup_by_key(|g| g.id);
                Some(ClassView {
                    class,
                    data_shards: c.data_shards,
                    parity_shards: c.parity_shards,
                    groups,
                })
            })
            .collect();
        PlacementView {
            version: map.version,
            classes,
        }
    }

    /// The group holding the body at `loc`.
    pub fn group_of(&self, loc: &DataLocation) -> Option<&GroupView> {
        self.class(stored_class(loc)).and_then(|c| c.group(loc.pg))
    }

    /// The groups of `class`, if PD could place it.
    pub fn class(&self, class: StorageClass) -> Option<&ClassView> {
        self.classes.iter().find(|c| c.class == class)
    }

    pub fn classes(&self) -> &[ClassView] {
        &self.classes
    }

    /// Groups over all classes.
    pub fn num_groups(&self) -> usize {
        self.classes.iter().map(|c| c.num_groups()).sum()
    }

    /// Every distinct node address the map names.
    pub fn node_addresses(&self) -> BTreeSet<String> {
        self.classes
            .iter()
            .flat_map(|c| c.groups.iter())
            .flat_map(|g| g.nodes.iter().flatten().cloned())
            .collect()
    }
}

/// The storage class a stored body was written with (records from before
/// storage classes say nothing: those are REPLICA3).
pub fn stored_class(loc: &DataLocation) -> StorageClass {
    crate::storage_class::recorded(loc.storage_class, StorageClass::Replica3)
}

/// 64-bit FNV-1a: a stable hash (the data id is random already; this only
/// spreads it over the group count without depending on its layout).
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub struct PlacementCache {
    pd: PdClient,
    current: RwLock<Option<Arc<PlacementView>>>,
    last_on_demand: tokio::sync::Mutex<Option<Instant>>,
}

impl PlacementCache {
    pub fn new(pd: PdClient) -> Self {
        PlacementCache {
            pd,
            current: RwLock::new(None),
            last_on_demand: tokio::sync::Mutex::new(None),
        }
    }

    /// The latest map, if one was ever fetched.
    pub fn current(&self) -> Option<Arc<PlacementView>> {
        self.current
            .read()
            .expect("placement lock poisoned")
            .clone()
    }

    /// Fetches the map from PD if it changed.
    pub async fn refresh(&self) -> Result<(), kura_pd_client::PdError> {
        let known = self.current().map(|v| v.version).unwrap_or(0);
        if let Some(map) = self.pd.get_placement(known).await? {
            if map.classes.is_empty() {
                return Ok(());
            }
            let view = Arc::new(PlacementView::from_map(&map));
            let mut cur = self.current.write().expect("placement lock poisoned");
            let newer = cur.as_ref().is_none_or(|c| view.version >= c.version);
            if newer {
                if cur.as_ref().map(|c| c.version) != Some(view.version) {
                    tracing::info!(
                        version = view.version,
                        groups = view.num_groups(),
                        "placement map updated"
                    );
                }
                *cur = Some(view);
            }
        }
        Ok(())
    }

    /// Refreshes now unless another on-demand refresh ran very recently.
    pub async fn refresh_soon(&self) {
        let mut last = self.last_on_demand.lock().await;
        if last.is_some_and(|t| t.elapsed() < MIN_ON_DEMAND_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "placement refresh failed");
        }
    }

    /// The current map, fetching it first if there is none yet.
    pub async fn get(&self) -> GwResult<Arc<PlacementView>> {
        if let Some(v) = self.current() {
            return Ok(v);
        }
        self.refresh_soon().await;
        self.current()
            .ok_or_else(|| GwError::Unavailable("no placement map yet".into()))
    }

    /// Polls PD until `shutdown` flips.
    pub async fn run_refresher(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.refresh().await {
                tracing::debug!(error = %e, "placement poll failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_proto::pd::{ClassPlacement, DataNode, PlacementGroup};

    fn map(groups: Vec<(u32, Vec<u64>)>, nodes: &[u64]) -> PlacementMap {
        PlacementMap {
            version: 3,
            classes: vec![ClassPlacement {
                storage_class: StorageClass::Replica3 as i32,
                data_shards: 1,
                parity_shards: 2,
                groups: groups
                    .into_iter()
                    .map(|(id, data_nodes)| PlacementGroup { id, data_nodes })
                    .collect(),
            }],
            nodes: nodes
                .iter()
                .map(|&id| DataNode {
                    id,
                    address: format!("127.0.0.1:{}", 7000 + id),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn replica3(v: &PlacementView) -> &ClassView {
        v.class(StorageClass::Replica3).expect("class present")
    }

    #[test]
    fn quorum_needs_enough_reachable_nodes_in_every_group() {
        let v = PlacementView::from_map(&map(
            vec![(0, vec![1, 2, 3]), (1, vec![4, 5, 6])],
            &[1, 2, 3, 4, 5, 6],
        ));
        assert_eq!(v.node_addresses().len(), 6);
        let up = |ids: &[u64]| {
            ids.iter()
                .map(|i| format!("127.0.0.1:{}", 7000 + i))
                .collect()
        };
        let c = replica3(&v);
        assert!(c.every_group_has_quorum(&up(&[1, 2, 3, 4, 5, 6]), |_| 2));
        assert!(c.every_group_has_quorum(&up(&[1, 3, 5, 6]), |_| 2));
        assert!(
            !c.every_group_has_quorum(&up(&[1, 2, 3, 4]), |_| 2),
            "group 1 has one node"
        );
        assert!(!c.every_group_has_quorum(&up(&[]), |_| 1));
    }

    #[test]
    fn resolves_addresses_and_availability() {
        let v = PlacementView::from_map(&map(
            vec![(1, vec![1, 2, 3]), (0, vec![4, 5, 6])],
            &[1, 2, 3, 4, 5, 6],
        ));
        let c = replica3(&v);
        assert_eq!(c.width(), 3);
        assert_eq!(
            c.group(1).unwrap().nodes[0].as_deref(),
            Some("127.0.0.1:7001")
        );
        assert_eq!(
            c.group(0).unwrap().nodes[2].as_deref(),
            Some("127.0.0.1:7006")
        );
        assert!(c.group(9).is_none());
        assert!(c.all_groups_available());
        assert!(v.class(StorageClass::Ec42).is_none());

        let v = PlacementView::from_map(&map(vec![(0, vec![1, 2, 3])], &[1, 2]));
        assert_eq!(replica3(&v).group(0).unwrap().nodes[2], None);
        assert!(!replica3(&v).all_groups_available());

        let v = PlacementView::from_map(&map(vec![(0, vec![1, 2])], &[1, 2]));
        assert!(
            !replica3(&v).all_groups_available(),
            "a group narrower than k+m is not usable"
        );
    }

    #[test]
    fn pick_group_is_stable_and_spreads() {
        let v = PlacementView::from_map(&map(
            (0..8).map(|i| (i, vec![1, 2, 3])).collect(),
            &[1, 2, 3],
        ));
        let c = replica3(&v);
        let a = c.pick_group(b"0123456789abcdef").unwrap().id;
        assert_eq!(a, c.pick_group(b"0123456789abcdef").unwrap().id);
        let mut seen = std::collections::HashSet::new();
        for i in 0..200u32 {
            seen.insert(c.pick_group(&i.to_be_bytes()).unwrap().id);
        }
        assert_eq!(seen.len(), 8);
        let empty = PlacementView::from_map(&map(vec![], &[]));
        assert!(replica3(&empty).pick_group(b"x").is_none());
    }
}
