//! The placement-group (PG) map: which data nodes hold the fragments of each PG.
//!
//! Pure logic. Each PG gets an ordered list of k+m data nodes (slot i holds
//! fragment i), chosen by rendezvous hashing of (pg, node): every node gets a
//! pseudo-random score per PG and the highest-scoring nodes win, subject to the
//! failure-domain rules:
//! - no zone holds more than ceil((k+m)/zones) members of one PG, so the
//!   fragments spread evenly and losing a whole zone loses at most m of them;
//! - within that, distinct racks and then distinct hosts are preferred.
//!
//! Rendezvous hashing moves little when the node set changes: a new node only
//! takes the slots where it outscores a current member of its zone, and
//! [`compute`] given the previous map keeps every surviving member in its slot.
//! PD builds the map once and keeps it stable (objects record only their PG
//! id); recomputing with `previous` is for the later rebalance work.

use std::collections::{BTreeMap, BTreeSet};

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

/// The PG map as PD keeps it (addresses are joined in when it is served).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementState {
    /// Grows on every change, so clients can ask "anything newer than v?".
    pub version: u64,
    pub rules: Rules,
    /// groups[pg] = data node ids, slot i holding fragment i.
    pub groups: Vec<Vec<u64>>,
}

impl PlacementState {
    /// Every node id some PG references, ascending.
    pub fn referenced_nodes(&self) -> BTreeSet<u64> {
        self.groups.iter().flatten().copied().collect()
    }
}

/// Whether PD should try to build the first map now: all the expected nodes
/// are there in at least 3 zones, or the wait is over and we place on what we have.
pub fn should_create(nodes: &[NodeDesc], expected_nodes: u32, wait_elapsed: bool) -> bool {
    let zones: BTreeSet<&str> = nodes.iter().map(|n| n.zone.as_str()).collect();
    (nodes.len() >= expected_nodes as usize && zones.len() >= 3) || wait_elapsed
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
        assert_eq!(Rules::REPLICA3.max_per_zone(3), 1);
        assert_eq!(Rules::EC_4_2.max_per_zone(3), 2);
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
