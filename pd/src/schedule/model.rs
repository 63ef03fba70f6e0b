//! The scheduling core's input: an in-memory snapshot of stores and regions
//! ([`ClusterModel`]), built from PD's live state ([`ClusterModel::from_cluster`])
//! or by hand in tests. Schedulers only read it.

use std::collections::BTreeMap;

use crate::cluster::{Cluster, Liveness};
use crate::flow::FlowRates;

/// Whether a store may take part in scheduling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreState {
    /// Heartbeating: a source and a target.
    Up,
    /// Missed a few heartbeats (killed, partitioned, restarting) but not yet
    /// `Down`, or lost region leaderships to elections in the last few
    /// seconds (`election_watch`): neither source nor target. A transfer to it would stall the
    /// region's writes until raft gives up on the transfer.
    Disconnected,
    /// Silent for `--max-store-down-secs`.
    Down,
    /// Being removed or removed (admin state).
    Offline,
    Tombstone,
}

impl StoreState {
    pub fn is_schedulable(self) -> bool {
        match self {
            StoreState::Up => true,
            StoreState::Disconnected
            | StoreState::Down
            | StoreState::Offline
            | StoreState::Tombstone => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoreModel {
    pub id: u64,
    /// Failure-domain labels (zone, rack, host) for placement-aware schedulers.
    pub labels: BTreeMap<String, String>,
    pub state: StoreState,
    /// Regions whose leader is on this store, per PD's region map.
    pub leader_count: u64,
    /// Regions with a peer on this store.
    pub region_count: u64,
    /// `pdctl store weight`: balance-leader evens out leader_count /
    /// leader_weight, balance-region region_count / region_weight (1.0 by default).
    pub leader_weight: f64,
    pub region_weight: f64,
}

impl StoreModel {
    /// The store's `zone` label ("" when it has none).
    pub fn zone(&self) -> &str {
        self.labels.get("zone").map(String::as_str).unwrap_or("")
    }

    /// Leaders per unit of leader weight.
    pub fn leader_score(&self, leaders: u64) -> f64 {
        leaders as f64 / self.leader_weight
    }

    /// Region peers per unit of region weight.
    pub fn region_score(&self, regions: u64) -> f64 {
        regions as f64 / self.region_weight
    }
}

/// Whether moving one unit (a leader, a peer) from a store with `src`
/// units and weight `src_w` to one with `dst` and `dst_w` evens out their
/// count/weight scores: the gap must exceed `tolerance` units, weighted as
/// the move changes it. With both weights 1 this is `src > dst + tolerance`,
/// and a move never makes the reverse move worth doing (no ping-pong).
pub fn worth_moving(src: u64, src_w: f64, dst: u64, dst_w: f64, tolerance: u64) -> bool {
    let gap = src as f64 / src_w - dst as f64 / dst_w;
    gap > tolerance as f64 * (1.0 / src_w + 1.0 / dst_w) / 2.0 + 1e-9
}

/// Stores as `(count / weight, store id, count)`, emptiest first (ties by
/// id): the order the balancers pick sources (from the end) and targets in.
pub fn by_weighted_count(
    counts: &BTreeMap<u64, u64>,
    weight: impl Fn(u64) -> f64,
) -> Vec<(f64, u64, u64)> {
    let mut by_score: Vec<(f64, u64, u64)> = counts
        .iter()
        .map(|(&s, &n)| (n as f64 / weight(s), s, n))
        .collect();
    by_score.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    by_score
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerModel {
    pub id: u64,
    pub store_id: u64,
    pub is_learner: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RegionModel {
    pub id: u64,
    pub peers: Vec<PeerModel>,
    /// The leader's store, if PD has heard from a leader.
    pub leader_store: Option<u64>,
    pub conf_ver: u64,
    pub version: u64,
    pub approximate_size: u64,
    pub approximate_keys: u64,
    /// Flow per second its leader's last two heartbeats both showed
    /// ([`crate::flow::FlowHistory::sustained`]).
    pub flow: FlowRates,
}

impl RegionModel {
    /// The voter peer on `store_id`, if any.
    pub fn voter_on(&self, store_id: u64) -> Option<&PeerModel> {
        self.peers
            .iter()
            .find(|p| p.store_id == store_id && !p.is_learner)
    }
}

/// A consistent snapshot of what the schedulers decide on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterModel {
    pub stores: BTreeMap<u64, StoreModel>,
    pub regions: BTreeMap<u64, RegionModel>,
}

impl ClusterModel {
    /// Adds regions and fills every store's counts from them (tests and
    /// [`Self::from_cluster`] alike, so the counts always match the regions).
    pub fn with_regions(mut self, regions: impl IntoIterator<Item = RegionModel>) -> Self {
        for r in regions {
            self.regions.insert(r.id, r);
        }
        self.recount();
        self
    }

    /// Recomputes each store's leader and region counts from the regions.
    pub fn recount(&mut self) {
        for s in self.stores.values_mut() {
            s.leader_count = 0;
            s.region_count = 0;
        }
        for r in self.regions.values() {
            for p in &r.peers {
                if let Some(s) = self.stores.get_mut(&p.store_id) {
                    s.region_count += 1;
                }
            }
            if let Some(s) = r.leader_store.and_then(|id| self.stores.get_mut(&id)) {
                s.leader_count += 1;
            }
        }
    }

    /// PD's live state as a model. A store silent for `disconnected_ms`
    /// (heartbeats come every second) is `Disconnected` until it is `Down`.
    pub fn from_cluster(c: &Cluster, now_ms: i64, max_down_ms: i64, disconnected_ms: i64) -> Self {
        let mut stores = BTreeMap::new();
        for s in c.stores() {
            let state = match c.store_liveness(&s.meta, now_ms, max_down_ms) {
                Liveness::Up if now_ms - s.meta.last_heartbeat_unix_ms > disconnected_ms => {
                    StoreState::Disconnected
                }
                Liveness::Up => StoreState::Up,
                // Another data dir holds its address: its peers cannot be
                // live, so they are replaced now, not after the down timeout.
                Liveness::Down | Liveness::Replaced => StoreState::Down,
                Liveness::Offline => StoreState::Offline,
                Liveness::Tombstone => StoreState::Tombstone,
            };
            // Registered labels with `pdctl store label` overrides on top.
            let labels = c.store_label_map(s.meta.id);
            let set = c.settings.store(s.meta.id);
            stores.insert(
                s.meta.id,
                StoreModel {
                    id: s.meta.id,
                    labels,
                    state,
                    leader_count: 0,
                    region_count: 0,
                    leader_weight: set.leader_weight,
                    region_weight: set.region_weight,
                },
            );
        }
        let regions = c.regions_in_order().map(|e| {
            let epoch = e.region.epoch.unwrap_or_default();
            RegionModel {
                id: e.region.id,
                peers: e
                    .region
                    .peers
                    .iter()
                    .map(|p| PeerModel {
                        id: p.id,
                        store_id: p.store_id,
                        is_learner: p.is_learner,
                    })
                    .collect(),
                leader_store: e.leader.map(|l| l.store_id),
                conf_ver: epoch.conf_ver,
                version: epoch.version,
                approximate_size: e.approximate_size,
                approximate_keys: e.approximate_keys,
                flow: e.flow.sustained(),
            }
        });
        ClusterModel {
            stores,
            regions: BTreeMap::new(),
        }
        .with_regions(regions)
    }
}

/// Builders for unit tests of the schedulers.
#[cfg(test)]
pub mod test_util {
    use super::*;

    /// One round of scheduler `s` over `m` with no region busy.
    pub fn round(
        s: &mut dyn crate::schedule::Scheduler,
        m: &ClusterModel,
        limits: &mut crate::schedule::StoreLimiter,
        now_ms: i64,
    ) -> Vec<crate::schedule::Operator> {
        let mut busy = std::collections::BTreeSet::new();
        let mut ctx = crate::schedule::ScheduleContext {
            now_ms,
            busy_regions: &mut busy,
            limits,
        };
        s.schedule(m, &mut ctx)
    }

    pub fn store(id: u64, state: StoreState) -> StoreModel {
        StoreModel {
            id,
            labels: BTreeMap::new(),
            state,
            leader_count: 0,
            region_count: 0,
            leader_weight: 1.0,
            region_weight: 1.0,
        }
    }

    /// Store `id` in `zone`.
    pub fn zoned_store(id: u64, zone: &str, state: StoreState) -> StoreModel {
        let mut s = store(id, state);
        s.labels.insert("zone".to_string(), zone.to_string());
        s
    }

    /// A model of `stores` and `regions` (store counts filled in).
    pub fn model(stores: Vec<StoreModel>, regions: Vec<RegionModel>) -> ClusterModel {
        ClusterModel {
            stores: stores.into_iter().map(|s| (s.id, s)).collect(),
            regions: BTreeMap::new(),
        }
        .with_regions(regions)
    }

    /// Region `id` with a voter on each of `stores` (peer id = id * 100 +
    /// store id) and its leader on `leader`.
    pub fn region(id: u64, stores: &[u64], leader: u64) -> RegionModel {
        RegionModel {
            id,
            peers: stores
                .iter()
                .map(|&s| PeerModel {
                    id: id * 100 + s,
                    store_id: s,
                    is_learner: false,
                })
                .collect(),
            leader_store: Some(leader),
            conf_ver: 1,
            version: 1,
            approximate_size: 0,
            approximate_keys: 0,
            flow: FlowRates::default(),
        }
    }

    /// Stores 1..=n all `Up`, and `leaders[i]` regions led by store i+1,
    /// each with a peer on every store.
    pub fn cluster(leaders: &[u64]) -> ClusterModel {
        let ids: Vec<u64> = (1..=leaders.len() as u64).collect();
        let mut m = ClusterModel::default();
        for &id in &ids {
            m.stores.insert(id, store(id, StoreState::Up));
        }
        let mut next = 1;
        let mut regions = Vec::new();
        for (i, &n) in leaders.iter().enumerate() {
            for _ in 0..n {
                regions.push(region(next, &ids, ids[i]));
                next += 1;
            }
        }
        m.with_regions(regions)
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn the_model_takes_label_overrides_and_weights_from_the_settings() {
        use kura_proto::common::Labels;
        use kura_proto::pd::Store;
        let mut c = Cluster::new(1);
        let store = Store {
            address: "a:1".into(),
            labels: Some(Labels {
                zone: "z1".into(),
                host: "h1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (id, _) = c.register_store_at(store, 1_000).unwrap();
        c.set_store_labels(id, &[("zone".into(), "z4".into())])
            .unwrap();
        c.set_store_weight(id, 2.0, 0.5).unwrap();
        let m = ClusterModel::from_cluster(&c, 1_000, 30_000, 3_000);
        let s = &m.stores[&id];
        assert_eq!(s.zone(), "z4", "the override wins over the registered zone");
        assert_eq!(s.labels["host"], "h1", "other registered labels stay");
        assert_eq!((s.leader_weight, s.region_weight), (2.0, 0.5));
        assert_eq!(
            c.store_labels(id).zone,
            "z4",
            "what conf-change zone checks use"
        );
        // A re-registration does not undo the override.
        let again = Store {
            id,
            address: "a:1".into(),
            labels: Some(Labels {
                zone: "z1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        c.register_store_at(again, 2_000).unwrap();
        assert_eq!(c.store_labels(id).zone, "z4");
        // `zone=` drops the override.
        c.set_store_labels(id, &[("zone".into(), String::new())])
            .unwrap();
        assert_eq!(c.store_labels(id).zone, "z1");
    }

    #[test]
    fn counts_follow_the_regions() {
        let m = cluster(&[3, 1, 0]);
        let counts: Vec<(u64, u64)> = m
            .stores
            .values()
            .map(|s| (s.leader_count, s.region_count))
            .collect();
        assert_eq!(counts, vec![(3, 4), (1, 4), (0, 4)]);
        assert_eq!(m.regions[&1].voter_on(2).map(|p| p.id), Some(102));
        assert!(m.regions[&1].voter_on(9).is_none());
    }
}
