//! How fast PD's cluster model takes region heartbeats, on one core, with
//! many regions (issue 5's "region heartbeats/s on one core").
//!
//! Three stores; `regions` adjacent regions are first reported (each a
//! meta change: a new region, an overlap lookup, an insert), then every
//! region reports again with the same epoch and new statistics (the steady
//! state: what a cluster sends every heartbeat interval). Pure logic: no
//! lock, no persistence, no network — those are PD's service around it.

use std::time::{Duration, Instant};

use kura_pd::cluster::{Cluster, HeartbeatOutcome, IdAllocator};
use kura_proto::common::{Peer, Region, RegionEpoch};
use kura_proto::pd::Store;

/// Figures of one run.
#[derive(Debug, Clone)]
pub struct HeartbeatReport {
    pub regions: usize,
    /// First reports (new regions), per second.
    pub new_per_sec: f64,
    /// Steady-state reports (same epoch, new sizes), per second.
    pub steady_per_sec: f64,
    pub steady_elapsed: Duration,
}

/// Region `i` of `n` adjacent regions tiling the keyspace, peers on stores 1..=3.
pub fn region(i: usize, n: usize) -> Region {
    let key = |i: usize| -> Vec<u8> {
        if i == 0 || i == n {
            Vec::new()
        } else {
            format!("k{i:09}").into_bytes()
        }
    };
    Region {
        id: 1000 + i as u64,
        start_key: key(i).into(),
        end_key: key(i + 1).into(),
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: (1..=3)
            .map(|s| Peer {
                id: 10 * (1000 + i as u64) + s,
                store_id: s,
                is_learner: false,
            })
            .collect(),
    }
}

/// A model with three stores in three zones.
pub fn three_store_cluster() -> Cluster {
    let mut c = Cluster::new(1);
    for s in 1..=3u64 {
        let store = Store {
            id: s,
            address: format!("127.0.0.1:{}", 20160 + s),
            labels: Some(kura_proto::common::Labels {
                zone: format!("z{s}"),
                ..Default::default()
            }),
            ..Default::default()
        };
        // As loaded from PD's state: a registration may not choose its id.
        c.restore_store(store);
    }
    c.ids = IdAllocator::restored(4);
    c
}

/// Runs the heartbeat benchmark with `regions` regions.
pub fn run(regions: usize) -> HeartbeatReport {
    let mut c = three_store_cluster();
    let all: Vec<Region> = (0..regions).map(|i| region(i, regions)).collect();
    let t0 = Instant::now();
    for (i, r) in all.iter().enumerate() {
        let leader = r.peers[i % 3];
        let out = c
            .region_heartbeat(r.clone(), Some(leader), 2, 1 << 20, 1000)
            .expect("valid heartbeat");
        debug_assert_eq!(out, HeartbeatOutcome::MetaChanged);
    }
    let new_elapsed = t0.elapsed();
    let t1 = Instant::now();
    for (i, r) in all.iter().enumerate() {
        let leader = r.peers[i % 3];
        let out = c
            .region_heartbeat(r.clone(), Some(leader), 2, 2 << 20, 2000 + i as u64)
            .expect("valid heartbeat");
        debug_assert_eq!(out, HeartbeatOutcome::StatsOnly);
    }
    let steady_elapsed = t1.elapsed();
    assert_eq!(c.region_count(), regions, "every region kept");
    let rate = |d: Duration| regions as f64 / d.as_secs_f64().max(1e-9);
    HeartbeatReport {
        regions,
        new_per_sec: rate(new_elapsed),
        steady_per_sec: rate(steady_elapsed),
        steady_elapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_tile_the_keyspace_and_all_are_kept() {
        let r = run(1000);
        assert_eq!(r.regions, 1000);
        assert!(r.steady_per_sec > 0.0 && r.new_per_sec > 0.0);
        assert!(region(0, 10).start_key.is_empty() && region(9, 10).end_key.is_empty());
        assert_eq!(region(3, 10).end_key, region(4, 10).start_key);
    }
}
