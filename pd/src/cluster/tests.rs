//! Tests of the cluster model.

use super::*;

/// Tests: a uuid standing for the data dir `tag` names (the same tag, the
/// same dir).
pub(crate) fn uuid_for(tag: &str) -> String {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, tag).hash(&mut h);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

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

use crate::placement::{ClassGroups, Rules};
use crate::rebalance::{Drain, RepairStatus};
use kura_proto::common::Labels;
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
        "the old id stays, replaced (never revived empty)"
    );
    assert_eq!(c.store(old).unwrap().meta.last_heartbeat_unix_ms, 100);
    assert_eq!(c.replaced_by(NodeKind::Store, old), Some(new));
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
        c.store_heartbeat(ids[0], "", StoreStats::default(), 3_000),
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
    c.store_heartbeat(id, "", StoreStats::default(), 60_000)
        .unwrap();
    assert!(matches!(
        c.store_heartbeat(99, "", StoreStats::default(), 0),
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
    assert!(c.data_node_heartbeat(id, "", 10, 1, true, 30).unwrap());
    assert_eq!(c.placement.version, 3);
    assert!(!c.data_node_heartbeat(id, "", 10, 1, true, 40).unwrap());
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
    c.data_node_heartbeat(a, "", 0, 0, false, 40_000).unwrap();
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

/// Refusals counted so far for (kind, reason).
fn refused(kind: &str, reason: &str) -> u64 {
    crate::metrics::metrics()
        .heartbeats_refused
        .with_label_values(&[kind, reason])
        .get()
}

#[test]
fn heartbeats_must_present_the_recorded_uuid_once_they_carried_it() {
    let mut c = Cluster::new(1);
    let dir = uuid_for("a:1");
    let (id, _) = c
        .register_store(store(0, "a:1", "z1"), &dir, 1_000)
        .unwrap();
    let beat = |c: &mut Cluster, uuid: &str, at: i64| {
        c.store_heartbeat(id, uuid, StoreStats::default(), at)
    };
    let last = |c: &Cluster| c.store(id).unwrap().meta.last_heartbeat_unix_ms;
    // An old binary sends none: taken while no heartbeat of this id carried one.
    assert!(!beat(&mut c, "", 2_000).unwrap());
    assert_eq!(last(&c), 2_000);
    // The first carrying it: to persist, and from now on required.
    assert!(beat(&mut c, &dir, 3_000).unwrap());
    assert!(c.heartbeats_carry_uuid(NodeKind::Store, id));
    assert!(
        !beat(&mut c, &dir, 4_000).unwrap(),
        "nothing new to persist"
    );
    let (wrong, none) = (refused("store", "wrong_uuid"), refused("store", "no_uuid"));
    for (uuid, at) in [(uuid_for("evil"), 5_000), (String::new(), 6_000)] {
        let err = beat(&mut c, &uuid, at).unwrap_err();
        assert!(matches!(err, Error::IdentityMismatch(_)), "{err}");
        assert_eq!(last(&c), 4_000, "a refused heartbeat changes nothing");
    }
    // Malformed is just another wrong uuid.
    assert!(beat(&mut c, "NOT-HEX", 7_000).is_err());
    assert!(refused("store", "wrong_uuid") >= wrong + 2);
    assert!(refused("store", "no_uuid") > none);
    let meta = c.store(id).unwrap().meta.clone();
    assert_eq!(
        c.store_liveness(&meta, 4_000 + 31_000, 30_000),
        Liveness::Down,
        "forged heartbeats do not keep it up"
    );
    // A registration (e.g. a downgraded binary) proves the dir afresh: its
    // heartbeats need not carry the uuid until one does again.
    c.register_store(store(id, "a:1", "z1"), &dir, 8_000)
        .unwrap();
    assert!(!c.heartbeats_carry_uuid(NodeKind::Store, id));
    assert!(!beat(&mut c, "", 9_000).unwrap());
    // Registered before identities and not since: nothing to check against.
    c.restore_store(Store {
        id: 50,
        address: "old:1".into(),
        ..Default::default()
    });
    assert!(!c
        .store_heartbeat(50, &uuid_for("x"), StoreStats::default(), 1)
        .unwrap());
    assert!(!c.store_heartbeat(50, "", StoreStats::default(), 2).unwrap());

    // The same rule for data nodes.
    let node = DataNode {
        address: "d:1".into(),
        ..Default::default()
    };
    let ddir = uuid_for("d:1");
    let (nid, _) = c.register_data_node(node, &ddir, 1_000).unwrap();
    assert!(!c.data_node_heartbeat(nid, "", 1, 0, false, 2_000).unwrap());
    assert!(c
        .data_node_heartbeat(nid, &ddir, 1, 0, false, 3_000)
        .unwrap());
    let before = refused("data_node", "wrong_uuid");
    for uuid in [uuid_for("evil"), String::new()] {
        assert!(matches!(
            c.data_node_heartbeat(nid, &uuid, 99, 99, true, 4_000),
            Err(Error::IdentityMismatch(_))
        ));
    }
    let n = c.data_node(nid).unwrap();
    assert_eq!(
        (n.last_heartbeat_unix_ms, n.capacity_bytes, n.read_only),
        (3_000, 1, false)
    );
    assert!(refused("data_node", "wrong_uuid") > before);
}

#[test]
fn a_new_data_dir_at_an_address_replaces_the_old_id_at_once() {
    let mut c = Cluster::new(1);
    let ids: Vec<u64> = (1..=4)
        .map(|i| {
            c.register_store_at(store(0, &format!("a:{i}"), &format!("z{i}")), 1_000)
                .unwrap()
                .0
        })
        .collect();
    let old = ids[0];
    let old_dir = uuid_for("a:1");
    // The dir at a:1 is wiped: a new uuid registers there and gets a new id.
    let (new, changed) = c
        .register_store(store(0, "a:1", "z1"), &uuid_for("wiped"), 2_000)
        .unwrap();
    assert!(changed && new != old);
    assert_eq!(c.replaced_by(NodeKind::Store, old), Some(new));
    let meta = |c: &Cluster, id| c.store(id).unwrap().meta.clone();
    // Replaced right away, well inside the down timeout; others untouched.
    assert_eq!(
        c.store_liveness(&meta(&c, old), 2_000, 30_000),
        Liveness::Replaced
    );
    assert_eq!(
        c.store_liveness(&meta(&c, new), 2_000, 30_000),
        Liveness::Up
    );
    assert_eq!(
        c.store_liveness(&meta(&c, ids[1]), 2_000, 30_000),
        Liveness::Up
    );
    // The replica checker sees it as Down (its peers are replaced now).
    let model = crate::schedule::model::ClusterModel::from_cluster(&c, 2_000, 30_000, 3_000);
    assert_eq!(
        model.stores[&old].state,
        crate::schedule::model::StoreState::Down
    );
    // Its own dir's heartbeats are refused while replaced (they would not
    // say where it is; a registration does).
    let before = refused("store", "replaced");
    assert!(matches!(
        c.store_heartbeat(old, &old_dir, StoreStats::default(), 2_500),
        Err(Error::IdentityMismatch(_))
    ));
    assert!(refused("store", "replaced") > before);
    // Replacement survives a PD restart (format 6).
    let back = crate::storage::StateFile::from_cluster(&c)
        .into_cluster()
        .unwrap();
    assert_eq!(back.replaced_by(NodeKind::Store, old), Some(new));
    // The old disk moved to another host: its dir registers there and the id
    // is live again; the new id at a:1 stays (another address).
    assert_eq!(
        c.register_store(store(old, "b:1", "z1"), &old_dir, 3_000)
            .unwrap(),
        (old, true)
    );
    assert_eq!(c.replaced_by(NodeKind::Store, old), None);
    assert_eq!(c.replaced_by(NodeKind::Store, new), None);
    assert!(
        c.store_heartbeat(old, &old_dir, StoreStats::default(), 3_100)
            .unwrap(),
        "the first heartbeat since it registered proves the uuid afresh"
    );
    assert_eq!(
        c.store_liveness(&meta(&c, old), 3_100, 30_000),
        Liveness::Up
    );
    // …and swapped back to a:1 (the wiped dir's process is gone): the new id
    // is the one replaced now.
    c.register_store(store(old, "a:1", "z1"), &old_dir, 4_000)
        .unwrap();
    assert_eq!(c.replaced_by(NodeKind::Store, new), Some(old));
    // A restart of a dir at its own address replaces nobody.
    c.register_store_at(store(ids[1], "a:2", "z2"), 5_000)
        .unwrap();
    assert_eq!(c.replaced_by(NodeKind::Store, ids[2]), None);
    assert_eq!(
        c.register_store_at(store(ids[1], "a:2", "z2"), 5_000)
            .unwrap(),
        (ids[1], false),
        "nothing to persist"
    );

    // Data nodes: drained at once, not serving, not holding repair back.
    let node = |id: u64, addr: &str| DataNode {
        id,
        address: addr.into(),
        ..Default::default()
    };
    let (a, _) = c.register_data_node_at(node(0, "d:1"), 1_000).unwrap();
    let (b, _) = c.register_data_node_at(node(0, "d:2"), 1_000).unwrap();
    c.report_repair(
        a,
        RepairReport {
            backlog: 5,
            passes: 1,
            map_version: 0,
        },
    );
    let (fresh, _) = c
        .register_data_node(node(0, "d:1"), &uuid_for("d:1 wiped"), 2_000)
        .unwrap();
    assert_eq!(c.replaced_by(NodeKind::DataNode, a), Some(fresh));
    let na = c.data_node(a).unwrap().clone();
    assert_eq!(c.data_node_liveness(&na, 2_000, 30_000), Liveness::Replaced);
    let views = c.node_views(2_000, 30_000, 300_000);
    let view = |id: u64| views.iter().find(|v| v.desc.id == id).unwrap().clone();
    assert_eq!(view(a).drain, Some(Drain::Down), "well before down_after");
    assert!(!view(a).serving);
    assert_eq!((view(b).drain, view(fresh).drain), (None, None));
    assert!(c.live_data_nodes(2_000, 30_000).iter().all(|n| n.id != a));
    assert!(
        !c.repair_status(0, 2_000, 30_000).lagging.contains(&a),
        "its stale repair report holds nobody back"
    );
    assert!(matches!(
        c.data_node_heartbeat(a, &uuid_for("d:1"), 1, 0, false, 2_100),
        Err(Error::IdentityMismatch(_))
    ));
    // Its dir registers elsewhere: a member again.
    c.register_data_node(node(a, "d:7"), &uuid_for("d:1"), 3_000)
        .unwrap();
    assert_eq!(c.replaced_by(NodeKind::DataNode, a), None);
    assert!(c
        .node_views(3_000, 30_000, 300_000)
        .iter()
        .all(|v| v.drain.is_none()));
}
