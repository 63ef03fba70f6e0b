//! Creating the first region once enough stores have joined.
//!
//! Pure logic over [`Cluster`]. When no region exists and at least
//! `max_replicas` live stores sit in distinct zones, PD creates one region
//! covering the whole keyspace (start = end = empty, epoch {1, 1}) with one
//! peer per zone, on the lowest store id of each zone. Each chosen store then
//! gets `PeerToCreate{initial: true}` in its heartbeat responses until it shows
//! it hosts the region (see [`Cluster::store_heartbeat`] and
//! [`Cluster::region_heartbeat`]). The caller persists the result before
//! answering anyone.

use std::collections::BTreeMap;

use kura_proto::common::{Peer, Region, RegionEpoch};
use kura_proto::pd::PeerToCreate;

use crate::cluster::{Bootstrap, Cluster, Liveness};

/// The stores for the first region: among `stores` (id, zone) that are up,
/// the lowest id in each zone, taking zones in order of their lowest store
/// id; None when fewer than `max_replicas` zones have one.
pub fn pick_stores(stores: &[(u64, String)], max_replicas: u32) -> Option<Vec<u64>> {
    let mut first_per_zone: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, zone) in stores {
        let e = first_per_zone.entry(zone.as_str()).or_insert(*id);
        *e = (*e).min(*id);
    }
    let mut picks: Vec<u64> = first_per_zone.into_values().collect();
    picks.sort_unstable();
    if picks.len() < max_replicas as usize || max_replicas == 0 {
        return None;
    }
    picks.truncate(max_replicas as usize);
    Some(picks)
}

/// Creates the first region if the cluster is ready for it and has none.
/// Returns the new region; the caller must persist before acknowledging.
pub fn maybe_bootstrap(
    cluster: &mut Cluster,
    max_replicas: u32,
    now_ms: i64,
    max_down_ms: i64,
) -> Option<Region> {
    if cluster.region_count() > 0 {
        return None;
    }
    let up: Vec<(u64, String)> = cluster
        .stores()
        .filter(|s| cluster.store_liveness(&s.meta, now_ms, max_down_ms) == Liveness::Up)
        .map(|s| (s.meta.id, cluster.store_labels(s.meta.id).zone))
        .collect();
    let stores = pick_stores(&up, max_replicas)?;
    // Ids exhausted (never in practice): no bootstrap rather than a wrapped id.
    let region_id = cluster.ids.alloc(1).ok()?;
    let first_peer = cluster.ids.alloc(stores.len() as u64).ok()?;
    let peers: Vec<Peer> = stores
        .iter()
        .zip(first_peer..)
        .map(|(&store_id, id)| Peer {
            id,
            store_id,
            is_learner: false,
        })
        .collect();
    let region = Region {
        id: region_id,
        start_key: Default::default(),
        end_key: Default::default(),
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: peers.clone(),
    };
    cluster.insert_region(region.clone());
    cluster.bootstrap = Some(Bootstrap {
        region: region.clone(),
        pending: peers.iter().map(|p| (p.store_id, p.id)).collect(),
    });
    tracing::info!(region_id, ?stores, "bootstrapped the first region");
    Some(region)
}

/// What store `store_id` must still create (empty when nothing).
pub fn peers_to_create(cluster: &Cluster, store_id: u64) -> Vec<PeerToCreate> {
    let Some(b) = &cluster.bootstrap else {
        return Vec::new();
    };
    b.pending
        .get(&store_id)
        .map(|&peer_id| {
            vec![PeerToCreate {
                region: Some(b.region.clone()),
                peer_id,
                initial: true,
            }]
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::StoreStats;
    use kura_proto::common::Labels;
    use kura_proto::pd::Store;

    fn add_store(c: &mut Cluster, addr: &str, zone: &str, now: i64) -> u64 {
        let s = Store {
            address: addr.into(),
            labels: Some(Labels {
                zone: zone.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        c.register_store_at(s, now).unwrap().0
    }

    #[test]
    fn pick_takes_the_lowest_id_per_zone() {
        let s = |id, z: &str| (id, z.to_string());
        assert_eq!(
            pick_stores(&[s(4, "z1"), s(2, "z1"), s(3, "z2"), s(9, "z3")], 3),
            Some(vec![2, 3, 9])
        );
        assert_eq!(pick_stores(&[s(1, "z1"), s(2, "z1"), s(3, "z2")], 3), None);
        assert_eq!(
            pick_stores(&[s(5, "z1"), s(6, "z2"), s(1, "z3"), s(7, "z4")], 3),
            Some(vec![1, 5, 6])
        );
        assert_eq!(pick_stores(&[s(5, "")], 1), Some(vec![5]));
    }

    #[test]
    fn three_zones_bootstrap_one_whole_keyspace_region() {
        let mut c = Cluster::new(1);
        let a = add_store(&mut c, "a:1", "z1", 0);
        let b = add_store(&mut c, "b:1", "z2", 0);
        assert!(
            maybe_bootstrap(&mut c, 3, 0, 30_000).is_none(),
            "only two zones"
        );
        let _a2 = add_store(&mut c, "a:2", "z1", 0);
        assert!(
            maybe_bootstrap(&mut c, 3, 0, 30_000).is_none(),
            "still two zones"
        );
        let d = add_store(&mut c, "d:1", "z3", 0);
        let r = maybe_bootstrap(&mut c, 3, 0, 30_000).unwrap();
        assert!(r.start_key.is_empty() && r.end_key.is_empty());
        assert_eq!(
            r.epoch,
            Some(RegionEpoch {
                conf_ver: 1,
                version: 1
            })
        );
        let stores: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
        assert_eq!(stores, vec![a, b, d]);
        let ids: std::collections::BTreeSet<u64> = r
            .peers
            .iter()
            .map(|p| p.id)
            .chain([r.id, a, b, d])
            .collect();
        assert_eq!(ids.len(), 7, "region, peer and store ids are all distinct");
        assert!(maybe_bootstrap(&mut c, 3, 0, 30_000).is_none(), "only once");

        // Each chosen store is asked to create its peer until it reports it.
        let todo = peers_to_create(&c, a);
        assert_eq!(todo.len(), 1);
        assert!(todo[0].initial);
        assert_eq!(todo[0].region.as_ref().unwrap().id, r.id);
        assert!(peers_to_create(&c, _a2).is_empty());
        let stats = StoreStats {
            region_count: 1,
            ..Default::default()
        };
        assert!(c.store_heartbeat(a, "", stats.clone(), 1).unwrap());
        assert!(peers_to_create(&c, a).is_empty());
        // A region heartbeat from the leader on `b` confirms `b`.
        let leader = r.peers.iter().find(|p| p.store_id == b).cloned();
        c.region_heartbeat(r.clone(), leader, 1, 0, 0).unwrap();
        assert!(peers_to_create(&c, b).is_empty());
        assert!(!peers_to_create(&c, d).is_empty());
        assert!(c.store_heartbeat(d, "", stats, 1).unwrap());
        assert!(c.bootstrap.is_none(), "all peers created");
    }

    #[test]
    fn down_stores_do_not_count() {
        let mut c = Cluster::new(1);
        add_store(&mut c, "a:1", "z1", 0);
        add_store(&mut c, "b:1", "z2", 0);
        add_store(&mut c, "c:1", "z3", 100_000);
        assert!(maybe_bootstrap(&mut c, 3, 100_000, 30_000).is_none());
    }
}
