//! The placement-group (PG) maps: which data nodes hold the fragments of each
//! PG, one map per storage class.
//!
//! Pure logic. Each PG gets an ordered list of k+m data nodes (slot i holds
//! fragment i), chosen by rendezvous hashing of (pg, node): every node gets a
//! pseudo-random score per PG and the highest-scoring nodes win, subject to the
//! failure-domain rules:
//! - no zone holds more than ceil((k+m)/zones) members of one PG, so the
//!   fragments spread evenly and losing a whole zone loses at most m of them;
//! - a class is refused while the nodes span fewer zones than that needs
//!   ([`Rules::min_zones`]) — it is never built with a weaker guarantee;
//! - within that, distinct racks and then distinct hosts are preferred.
//!
//! What each class therefore needs (nodes = k+m, zones = [`Rules::min_zones`]):
//!
//! | class    | k+m  | zones | at most per zone |
//! |----------|------|-------|------------------|
//! | REPLICA3 | 1+2  | ≥ 2   | 2 with 2 zones, 1 with 3 |
//! | EC_4_2   | 4+2  | ≥ 3   | 2 with 3 zones   |
//! | EC_8_3   | 8+3  | ≥ 4   | 3 with 4 zones   |
//!
//! So EC_8_3 needs at least 11 nodes in at least 4 zones (and enough nodes per
//! zone to meet the cap): the `kura dev` layout (6 nodes, 3 zones) has
//! REPLICA3 and EC_4_2 but no EC_8_3. That is intended: with 3 zones, 8+3
//! would put 4 fragments in one zone and a zone loss would lose data.
//!
//! Rendezvous hashing moves little when the node set changes: a new node only
//! takes the slots where it outscores a current member of its zone, and
//! [`compute`] given the previous map keeps every surviving member in its slot.
//! PD builds each class's map once (objects record only their storage class
//! and PG id, so the number of PGs never changes); later changes — nodes
//! joining, leaving, down for good — recompute with `previous` and are applied
//! a few slots at a time (`rebalance`). PG ids are per class.

use std::collections::{BTreeMap, BTreeSet};

use kura_proto::meta::StorageClass;

/// Every storage class PD builds a map for, in the order it tries them.
pub const STORAGE_CLASSES: [StorageClass; 3] = [
    StorageClass::Replica3,
    StorageClass::Ec42,
    StorageClass::Ec83,
];

/// The erasure-coding shape a map is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// k: fragments that carry data (1 for REPLICA3).
    pub data_shards: u32,
    /// m: extra fragments; any m of the k+m may be lost.
    pub parity_shards: u32,
}

impl Rules {
    /// Three full copies: k=1, m=2. The walking skeleton's storage class.
    pub const REPLICA3: Rules = Rules {
        data_shards: 1,
        parity_shards: 2,
    };
    /// Reed-Solomon 4+2 (the design's default class for large objects).
    pub const EC_4_2: Rules = Rules {
        data_shards: 4,
        parity_shards: 2,
    };

    /// Reed-Solomon 8+3: needs ≥ 11 nodes in ≥ 4 zones (see the module doc).
    pub const EC_8_3: Rules = Rules {
        data_shards: 8,
        parity_shards: 3,
    };

    /// The shape of a storage class (None for UNSPECIFIED, which names no shape).
    pub fn for_class(class: StorageClass) -> Option<Rules> {
        match class {
            StorageClass::Unspecified => None,
            StorageClass::Replica3 => Some(Rules::REPLICA3),
            StorageClass::Ec42 => Some(Rules::EC_4_2),
            StorageClass::Ec83 => Some(Rules::EC_8_3),
        }
    }

    /// The storage class with this shape, if any.
    pub fn storage_class(&self) -> Option<StorageClass> {
        STORAGE_CLASSES
            .into_iter()
            .find(|c| Rules::for_class(*c) == Some(*self))
    }

    /// k+m: members of each PG.
    pub fn width(&self) -> usize {
        (self.data_shards + self.parity_shards) as usize
    }

    /// Most members of one PG a zone may hold when nodes span `zones` zones.
    pub fn max_per_zone(&self, zones: usize) -> usize {
        self.width().div_ceil(zones.max(1))
    }

    /// Fewest zones with which losing any whole zone leaves every PG readable
    /// (at most m members per zone).
    pub fn min_zones(&self) -> usize {
        let m = self.parity_shards as usize;
        if m == 0 {
            // Nothing may be lost anyway: zone spread cannot add safety.
            return 1;
        }
        (1..=self.width())
            .find(|&z| self.max_per_zone(z) <= m)
            .unwrap_or(self.width())
    }
}

/// A data node as placement sees it: its id and failure domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDesc {
    pub id: u64,
    pub zone: String,
    pub rack: String,
    pub host: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("need at least {need} data nodes, have {have}")]
    TooFewNodes { need: usize, have: usize },
    #[error("need data nodes in at least {need} zones, have {have}")]
    TooFewZones { need: usize, have: usize },
    #[error("the number of placement groups must be at least 1")]
    NoGroups,
    #[error("placement group {pg} cannot satisfy the zone rules")]
    Unsatisfiable { pg: u32 },
}

/// The PGs of one storage class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassGroups {
    pub rules: Rules,
    /// groups[pg] = data node ids, slot i holding fragment i.
    pub groups: Vec<Vec<u64>>,
}

/// The PG maps of every built class, as PD keeps them (addresses are joined
/// in when they are served). Empty with version 0 until a class is built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacementState {
    /// One version for all classes: grows whenever any class is built or a
    /// referenced node changes, so clients can ask "anything newer than v?".
    pub version: u64,
    pub classes: BTreeMap<StorageClass, ClassGroups>,
}

/// What one [`PlacementState::build_missing`] attempt did for a class.
pub type BuildOutcome = Result<usize, PlacementError>;

impl PlacementState {
    /// No class is built yet.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Classes of [`STORAGE_CLASSES`] that have no map yet, in order.
    pub fn missing_classes(&self) -> Vec<StorageClass> {
        STORAGE_CLASSES
            .into_iter()
            .filter(|c| !self.classes.contains_key(c))
            .collect()
    }

    /// Every node id some PG of some class references, ascending.
    pub fn referenced_nodes(&self) -> BTreeSet<u64> {
        self.classes
            .values()
            .flat_map(|c| c.groups.iter().flatten().copied())
            .collect()
    }

    /// Whether some PG of some class holds `node_id`.
    pub fn references(&self, node_id: u64) -> bool {
        self.classes
            .values()
            .any(|c| c.groups.iter().any(|g| g.contains(&node_id)))
    }

    /// Tries to build every missing class from `nodes`, each independently;
    /// a built class is never recomputed. Bumps the version once if any class
    /// was built. Returns, per class tried, its group count or why not.
    pub fn build_missing(
        &mut self,
        nodes: &[NodeDesc],
        num_pgs: u32,
    ) -> Vec<(StorageClass, BuildOutcome)> {
        let mut report = Vec::new();
        for class in self.missing_classes() {
            let rules = Rules::for_class(class).expect("STORAGE_CLASSES all have rules");
            let outcome = compute(nodes, num_pgs, rules, None).map(|groups| {
                let n = groups.len();
                self.classes.insert(class, ClassGroups { rules, groups });
                n
            });
            report.push((class, outcome));
        }
        if report.iter().any(|(_, o)| o.is_ok()) {
            self.version += 1;
        }
        report
    }
}

/// Zones [`should_create`] waits for along with the expected nodes.
pub const EXPECTED_ZONES: usize = 3;

/// Whether PD should try to build the missing class maps now: all the
/// expected nodes are there in at least [`EXPECTED_ZONES`] zones, or the wait
/// is over and we place on what we have. Each class then still needs the
/// nodes and zones its rules ask for ([`compute`] refuses otherwise).
pub fn should_create(nodes: &[NodeDesc], expected_nodes: u32, wait_elapsed: bool) -> bool {
    let zones: BTreeSet<&str> = nodes.iter().map(|n| n.zone.as_str()).collect();
    (nodes.len() >= expected_nodes as usize && zones.len() >= EXPECTED_ZONES) || wait_elapsed
}

/// Assigns `num_pgs` PGs to `nodes` under `rules`. Deterministic: the same
/// inputs give the same map. With `previous`, members that are still chosen
/// keep their slot and only the freed slots take new members.
pub fn compute(
    nodes: &[NodeDesc],
    num_pgs: u32,
    rules: Rules,
    previous: Option<&[Vec<u64>]>,
) -> Result<Vec<Vec<u64>>, PlacementError> {
    if num_pgs == 0 {
        return Err(PlacementError::NoGroups);
    }
    let width = rules.width();
    if nodes.len() < width {
        return Err(PlacementError::TooFewNodes {
            need: width,
            have: nodes.len(),
        });
    }
    let zones: BTreeSet<&str> = nodes.iter().map(|n| n.zone.as_str()).collect();
    let need_zones = rules.min_zones();
    if zones.len() < need_zones {
        return Err(PlacementError::TooFewZones {
            need: need_zones,
            have: zones.len(),
        });
    }
    let cap = rules.max_per_zone(zones.len());
    let mut sorted: Vec<&NodeDesc> = nodes.iter().collect();
    sorted.sort_by_key(|n| n.id);

    (0..num_pgs)
        .map(|pg| {
            let chosen =
                choose(pg, &sorted, width, cap).ok_or(PlacementError::Unsatisfiable { pg })?;
            let prev = previous
                .and_then(|p| p.get(pg as usize))
                .filter(|p| p.len() == width);
            Ok(match prev {
                Some(prev) => keep_slots(prev, &chosen),
                None => chosen,
            })
        })
        .collect()
}

/// The members of PG `pg`, best score first, or None if the caps cannot be met.
fn choose(pg: u32, nodes: &[&NodeDesc], width: usize, zone_cap: usize) -> Option<Vec<u64>> {
    let mut ranked: Vec<&NodeDesc> = nodes.to_vec();
    ranked.sort_by(|a, b| score(pg, b.id).cmp(&score(pg, a.id)).then(a.id.cmp(&b.id)));

    let mut chosen: Vec<&NodeDesc> = Vec::with_capacity(width);
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    // Pass 0 wants a new rack and host, pass 1 a new host, pass 2 only the zone cap.
    for pass in 0..3 {
        for n in &ranked {
            if chosen.len() == width {
                break;
            }
            if chosen.iter().any(|c| c.id == n.id)
                || per_zone.get(n.zone.as_str()).copied().unwrap_or(0) >= zone_cap
            {
                continue;
            }
            let same_rack = chosen.iter().any(|c| c.zone == n.zone && c.rack == n.rack);
            let same_host = chosen
                .iter()
                .any(|c| c.zone == n.zone && c.rack == n.rack && c.host == n.host);
            let ok = match pass {
                0 => !same_rack && !same_host,
                1 => !same_host,
                _ => true,
            };
            if ok {
                *per_zone.entry(n.zone.as_str()).or_default() += 1;
                chosen.push(n);
            }
        }
    }
    (chosen.len() == width).then(|| chosen.iter().map(|n| n.id).collect())
}

/// `prev` with the members no longer chosen replaced by the newly chosen ones,
/// so a surviving member never changes slot (fragment index).
fn keep_slots(prev: &[u64], chosen: &[u64]) -> Vec<u64> {
    let mut incoming = chosen.iter().filter(|id| !prev.contains(id));
    prev.iter()
        .map(|id| {
            if chosen.contains(id) {
                *id
            } else {
                *incoming
                    .next()
                    .expect("as many chosen nodes are new as previous ones were dropped")
            }
        })
        .collect()
}

/// Rendezvous score of `node` for `pg`: a fixed mix (not std's hasher, whose
/// output may change between Rust releases), so maps are reproducible forever.
fn score(pg: u32, node: u64) -> u64 {
    splitmix64(splitmix64(u64::from(pg) ^ 0x5047_5f4d_4150) ^ node)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, zone: &str) -> NodeDesc {
        NodeDesc {
            id,
            zone: zone.into(),
            rack: String::new(),
            host: format!("h{id}"),
        }
    }

    /// Six nodes, two per zone: the `kura dev` layout.
    fn dev_nodes() -> Vec<NodeDesc> {
        vec![
            node(1, "z1"),
            node(2, "z1"),
            node(3, "z2"),
            node(4, "z2"),
            node(5, "z3"),
            node(6, "z3"),
        ]
    }

    fn zone_of(nodes: &[NodeDesc], id: u64) -> String {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.zone.clone())
            .unwrap_or_default()
    }

    fn max_in_one_zone(nodes: &[NodeDesc], group: &[u64]) -> usize {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for id in group {
            *count.entry(zone_of(nodes, *id)).or_default() += 1;
        }
        count.values().copied().max().unwrap_or(0)
    }

    #[test]
    fn replica3_puts_one_copy_per_zone_and_uses_every_node() {
        let nodes = dev_nodes();
        let map = compute(&nodes, 64, Rules::REPLICA3, None).unwrap();
        assert_eq!(map.len(), 64);
        let mut per_node: BTreeMap<u64, usize> = BTreeMap::new();
        for g in &map {
            assert_eq!(g.len(), 3);
            assert_eq!(max_in_one_zone(&nodes, g), 1, "group {g:?}");
            for id in g {
                *per_node.entry(*id).or_default() += 1;
            }
        }
        // 192 slots over 6 nodes: each gets a share, none is idle.
        assert_eq!(per_node.len(), 6);
        assert!(
            per_node.values().all(|&c| (16..=48).contains(&c)),
            "{per_node:?}"
        );
    }

    #[test]
    fn ec_4_2_puts_at_most_two_per_zone() {
        let nodes = dev_nodes();
        let map = compute(&nodes, 64, Rules::EC_4_2, None).unwrap();
        for g in &map {
            assert_eq!(g.len(), 6);
            assert_eq!(max_in_one_zone(&nodes, g), 2);
            assert_eq!(
                g.iter().collect::<BTreeSet<_>>().len(),
                6,
                "distinct members"
            );
        }
    }

    #[test]
    fn ec_4_2_over_four_zones_caps_at_two() {
        let mut nodes = dev_nodes();
        nodes.extend([node(7, "z4"), node(8, "z4")]);
        for g in compute(&nodes, 32, Rules::EC_4_2, None).unwrap() {
            assert!(max_in_one_zone(&nodes, &g) <= 2);
        }
    }

    #[test]
    fn same_inputs_give_the_same_map_in_any_order() {
        let nodes = dev_nodes();
        let mut shuffled = nodes.clone();
        shuffled.reverse();
        assert_eq!(
            compute(&nodes, 64, Rules::REPLICA3, None).unwrap(),
            compute(&shuffled, 64, Rules::REPLICA3, None).unwrap()
        );
    }

    #[test]
    fn adding_a_node_moves_only_slots_it_takes() {
        let nodes = dev_nodes();
        let before = compute(&nodes, 64, Rules::REPLICA3, None).unwrap();
        let mut more = nodes.clone();
        more.push(node(7, "z1"));
        let after = compute(&more, 64, Rules::REPLICA3, Some(&before)).unwrap();
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            let changed: Vec<usize> = (0..3).filter(|&i| a[i] != b[i]).collect();
            assert!(changed.len() <= 1, "{b:?} -> {a:?}");
            for i in changed {
                assert_eq!(a[i], 7, "only the new node takes slots");
                assert_eq!(
                    zone_of(&nodes, b[i]),
                    "z1",
                    "it replaces a member of its own zone"
                );
                moved += 1;
            }
            assert_eq!(max_in_one_zone(&more, a), 1);
        }
        // z1 now has 3 nodes: the new one should win about a third of z1's slots.
        assert!((8..=40).contains(&moved), "moved {moved}");
    }

    #[test]
    fn too_few_zones_or_nodes_fail() {
        let one_zone: Vec<NodeDesc> = (1..=6).map(|i| node(i, "z1")).collect();
        assert_eq!(
            compute(&one_zone, 8, Rules::EC_4_2, None),
            Err(PlacementError::TooFewZones { need: 3, have: 1 })
        );
        assert_eq!(
            compute(&one_zone, 8, Rules::REPLICA3, None),
            Err(PlacementError::TooFewZones { need: 2, have: 1 })
        );
        assert_eq!(
            compute(&dev_nodes()[..2], 8, Rules::REPLICA3, None),
            Err(PlacementError::TooFewNodes { need: 3, have: 2 })
        );
        assert_eq!(
            compute(&dev_nodes(), 0, Rules::REPLICA3, None),
            Err(PlacementError::NoGroups)
        );
    }

    #[test]
    fn uneven_zones_that_cannot_meet_the_cap_fail() {
        // 4+2 over 3 zones allows 2 per zone, but z3 has a single node.
        let nodes = vec![
            node(1, "z1"),
            node(2, "z1"),
            node(3, "z1"),
            node(4, "z2"),
            node(5, "z2"),
            node(6, "z3"),
        ];
        assert_eq!(
            compute(&nodes, 4, Rules::EC_4_2, None),
            Err(PlacementError::Unsatisfiable { pg: 0 })
        );
    }

    #[test]
    fn distinct_hosts_are_preferred_within_a_zone() {
        // Four zones, 4+2: two members may share a zone; they should not share a host.
        let mut nodes = Vec::new();
        for (i, z) in ["z1", "z2", "z3", "z4"].iter().enumerate() {
            let base = (i as u64) * 10;
            nodes.push(NodeDesc {
                id: base + 1,
                zone: z.to_string(),
                rack: "r".into(),
                host: "a".into(),
            });
            nodes.push(NodeDesc {
                id: base + 2,
                zone: z.to_string(),
                rack: "r".into(),
                host: "a".into(),
            });
            nodes.push(NodeDesc {
                id: base + 3,
                zone: z.to_string(),
                rack: "r".into(),
                host: "b".into(),
            });
        }
        for g in compute(&nodes, 32, Rules::EC_4_2, None).unwrap() {
            let hosts: BTreeSet<(String, String)> = g
                .iter()
                .map(|id| {
                    let n = nodes.iter().find(|n| n.id == *id).unwrap();
                    (n.zone.clone(), n.host.clone())
                })
                .collect();
            assert_eq!(hosts.len(), 6, "no two members on one host: {g:?}");
        }
    }

    #[test]
    fn min_zones_follows_the_zone_loss_rule() {
        assert_eq!(Rules::REPLICA3.min_zones(), 2);
        assert_eq!(Rules::EC_4_2.min_zones(), 3);
        assert_eq!(Rules::EC_8_3.min_zones(), 4);
        assert_eq!(Rules::REPLICA3.max_per_zone(3), 1);
        assert_eq!(Rules::EC_4_2.max_per_zone(3), 2);
        assert_eq!(Rules::EC_8_3.max_per_zone(3), 4, "more than m: refused");
        assert_eq!(Rules::EC_8_3.max_per_zone(4), 3);
    }

    #[test]
    fn classes_and_rules_map_both_ways() {
        for (class, rules) in [
            (StorageClass::Replica3, Rules::REPLICA3),
            (StorageClass::Ec42, Rules::EC_4_2),
            (StorageClass::Ec83, Rules::EC_8_3),
        ] {
            assert_eq!(Rules::for_class(class), Some(rules));
            assert_eq!(rules.storage_class(), Some(class));
        }
        assert_eq!(Rules::for_class(StorageClass::Unspecified), None);
        let odd = Rules {
            data_shards: 2,
            parity_shards: 2,
        };
        assert_eq!(odd.storage_class(), None);
    }

    /// `per_zone` nodes in each of `zones` zones, ids from 1.
    fn grid_nodes(zones: usize, per_zone: usize) -> Vec<NodeDesc> {
        (0..zones * per_zone)
            .map(|i| node(i as u64 + 1, &format!("z{}", i / per_zone + 1)))
            .collect()
    }

    fn built(p: &PlacementState) -> Vec<StorageClass> {
        p.classes.keys().copied().collect()
    }

    #[test]
    fn the_dev_layout_builds_replica3_and_ec_4_2_but_not_ec_8_3() {
        let nodes = dev_nodes();
        let mut p = PlacementState::default();
        let report = p.build_missing(&nodes, 64);
        assert_eq!(
            report,
            vec![
                (StorageClass::Replica3, Ok(64)),
                (StorageClass::Ec42, Ok(64)),
                (
                    StorageClass::Ec83,
                    Err(PlacementError::TooFewNodes { need: 11, have: 6 })
                ),
            ]
        );
        assert_eq!(
            report[2].1.as_ref().unwrap_err().to_string(),
            "need at least 11 data nodes, have 6"
        );
        assert_eq!(p.version, 1);
        assert_eq!(built(&p), [StorageClass::Replica3, StorageClass::Ec42]);
        assert_eq!(p.missing_classes(), [StorageClass::Ec83]);
        for (class, cap) in [(StorageClass::Replica3, 1), (StorageClass::Ec42, 2)] {
            let c = &p.classes[&class];
            assert_eq!(c.rules, Rules::for_class(class).unwrap());
            for g in &c.groups {
                assert_eq!(g.len(), c.rules.width());
                assert_eq!(max_in_one_zone(&nodes, g), cap, "{class:?} {g:?}");
            }
        }
        assert_eq!(p.referenced_nodes().len(), 6);
        assert!(p.references(1) && !p.references(7));
    }

    #[test]
    fn ec_8_3_over_three_zones_is_refused_even_with_enough_nodes() {
        let mut p = PlacementState::default();
        let report = p.build_missing(&grid_nodes(3, 4), 16);
        assert_eq!(
            report[2],
            (
                StorageClass::Ec83,
                Err(PlacementError::TooFewZones { need: 4, have: 3 })
            )
        );
        assert_eq!(built(&p), [StorageClass::Replica3, StorageClass::Ec42]);
    }

    #[test]
    fn twelve_nodes_in_four_zones_build_ec_8_3_with_at_most_three_per_zone() {
        let nodes = grid_nodes(4, 3);
        let mut p = PlacementState::default();
        assert!(p.build_missing(&nodes, 64).iter().all(|(_, o)| o.is_ok()));
        assert_eq!(built(&p), STORAGE_CLASSES);
        assert_eq!(p.version, 1, "one bump for everything built at once");
        let ec83 = &p.classes[&StorageClass::Ec83];
        assert_eq!(ec83.groups.len(), 64);
        for g in &ec83.groups {
            assert_eq!(g.iter().collect::<BTreeSet<_>>().len(), 11, "{g:?}");
            assert!(max_in_one_zone(&nodes, g) <= 3, "{g:?}");
        }
        // Every node carries some EC_8_3 fragments.
        assert_eq!(
            ec83.groups.iter().flatten().collect::<BTreeSet<_>>().len(),
            12
        );
    }

    #[test]
    fn built_classes_stay_as_they_are_when_more_nodes_join() {
        let mut nodes = dev_nodes();
        let mut p = PlacementState::default();
        p.build_missing(&nodes, 32);
        let before = p.clone();
        // Nothing new: nothing is tried but the missing class, and nothing changes.
        assert_eq!(p.build_missing(&nodes, 32).len(), 1);
        assert_eq!(p, before);
        // Six more nodes, a fourth zone: EC_8_3 appears, the others keep their groups.
        nodes.extend((7..=9).map(|i| node(i, "z4")));
        nodes.extend([node(10, "z1"), node(11, "z2"), node(12, "z3")]);
        let report = p.build_missing(&nodes, 32);
        assert_eq!(report, vec![(StorageClass::Ec83, Ok(32))]);
        assert_eq!(p.version, 2);
        for class in [StorageClass::Replica3, StorageClass::Ec42] {
            assert_eq!(p.classes[&class], before.classes[&class]);
        }
        // Recomputing a built class from its own map changes nothing either.
        let ec83 = &p.classes[&StorageClass::Ec83].groups;
        assert_eq!(
            &compute(&nodes, 32, Rules::EC_8_3, Some(ec83)).unwrap(),
            ec83
        );
        assert!(p.build_missing(&nodes, 32).is_empty());
        assert_eq!(p.version, 2);
    }

    #[test]
    fn should_create_waits_for_expected_nodes_in_three_zones() {
        let nodes = dev_nodes();
        assert!(should_create(&nodes, 6, false));
        assert!(!should_create(&nodes[..5], 6, false));
        assert!(should_create(&nodes[..5], 6, true));
        let two_zones = vec![
            node(1, "z1"),
            node(2, "z2"),
            node(3, "z1"),
            node(4, "z2"),
            node(5, "z1"),
            node(6, "z2"),
        ];
        assert!(!should_create(&two_zones, 6, false));
    }
}
