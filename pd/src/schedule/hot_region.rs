//! `hot-region`: spreads read and write flow (pd-ctl's hot-region
//! scheduler) so no store serves most of the cluster's load while others
//! idle. Flow comes from region heartbeats ([`RegionModel::flow`]: what the
//! leader's last two samples both showed, so one busy interval is not a hot
//! spot).
//!
//! A region is read-hot (write-hot) when its read (written) bytes or keys
//! per second reach the thresholds. A store's load is the sum of the bytes
//! per second of the hot regions it serves:
//! - reads land on leaders (they answer Get/Scan): the read pass moves the
//!   leader of a hot region from the store with the most hot read load to
//!   the region's follower on the store with the least;
//! - writes land on every replica, most on the leader: the write pass first
//!   moves leaders the same way (by written bytes of the hot regions each
//!   store leads), then, if every store holding a hot region carries more
//!   hot write load than some store not holding it, moves a peer there
//!   (`ReplacePeer`, keeping one voter per zone; never while a store is
//!   `Down`: repair comes first).
//!
//! A move happens only when the gap is significant: the source's load is at
//! least `min_gap_percent` of the target's, and the target stays below the
//! source after the move (target + flow < source - flow), so the hot spot
//! does not just change places. Against ping-pong, a region moved is left
//! alone for `cooldown_ms`, and until then its flow at the time of the move
//! counts for wherever it is now (its new leader's first samples start from
//! zero). Only `Up` stores are sources or targets; busy regions are
//! skipped; at most `max_per_round` operators per round, within the store
//! limits.

use std::collections::BTreeMap;

use super::balance_region::zone_ok;
use super::model::{ClusterModel, RegionModel, StoreState};
use super::{Operator, OperatorKind, ScheduleContext, Scheduler};
use crate::flow::{FlowKind, FlowRates};

pub const HOT_REGION: &str = "hot-region";

/// When a region counts as hot: either rate reached (per second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotThresholds {
    pub min_bytes: u64,
    pub min_keys: u64,
}

impl HotThresholds {
    fn is_hot(&self, (bytes, keys): (u64, u64)) -> bool {
        bytes >= self.min_bytes || keys >= self.min_keys
    }
}

#[derive(Clone, Copy, Debug)]
struct Moved {
    at_ms: i64,
    flow: FlowRates,
}

#[derive(Debug)]
pub struct HotRegion {
    /// Read-hot: 8 KiB/s or 32 keys/s answered by the leader (metadata
    /// records are small: 32 lookups a second is the signal).
    pub read: HotThresholds,
    /// Write-hot: 4 KiB/s or 16 keys/s applied (each write is a raft round
    /// and an fsync on every replica, so it costs more than a read).
    pub write: HotThresholds,
    /// The source's load must be at least this percentage of the target's.
    pub min_gap_percent: u64,
    /// A region moved is not moved again for this long.
    pub cooldown_ms: i64,
    /// Most operators planned per round (both passes).
    pub max_per_round: usize,
    /// Regions moved within the cooldown, and their flow at the time.
    recent: BTreeMap<u64, Moved>,
}

impl Default for HotRegion {
    fn default() -> Self {
        HotRegion {
            read: HotThresholds {
                min_bytes: 8 << 10,
                min_keys: 32,
            },
            write: HotThresholds {
                min_bytes: 4 << 10,
                min_keys: 16,
            },
            min_gap_percent: 125,
            cooldown_ms: 60_000,
            max_per_round: 4,
            recent: BTreeMap::new(),
        }
    }
}

/// The hot regions of one kind and their load (bytes per second).
type Hot<'a> = Vec<(&'a RegionModel, u64)>;

impl Scheduler for HotRegion {
    fn name(&self) -> &'static str {
        HOT_REGION
    }

    fn configure(&mut self, rc: &crate::config::RuntimeConfig) {
        self.read = rc.hot_read;
        self.write = rc.hot_write;
    }

    fn schedule(&mut self, model: &ClusterModel, ctx: &mut ScheduleContext<'_>) -> Vec<Operator> {
        let (now, cooldown) = (ctx.now_ms, self.cooldown_ms);
        self.recent.retain(|_, m| now - m.at_ms < cooldown);
        let mut ops = Vec::new();
        let read = self.hot(model, FlowKind::Read);
        self.move_leaders(model, &read, ctx, &mut ops);
        if ops.len() < self.max_per_round {
            let write = self.hot(model, FlowKind::Write);
            self.move_leaders(model, &write, ctx, &mut ops);
            self.move_peers(model, &write, ctx, &mut ops);
        }
        ops
    }
}

impl HotRegion {
    /// The flow a region counts with: during its cooldown, at least what it
    /// had when it was moved.
    fn flow(&self, r: &RegionModel) -> FlowRates {
        match self.recent.get(&r.id) {
            Some(m) => r.flow.max(m.flow),
            None => r.flow,
        }
    }

    fn hot<'a>(&self, model: &'a ClusterModel, kind: FlowKind) -> Hot<'a> {
        let t = match kind {
            FlowKind::Read => self.read,
            FlowKind::Write => self.write,
        };
        let mut hot: Hot = model
            .regions
            .values()
            .filter_map(|r| {
                let k = kind.key(&self.flow(r));
                t.is_hot(k).then_some((r, k.0))
            })
            .collect();
        // Hottest first: moving them evens out the most per operator.
        hot.sort_unstable_by_key(|&(r, load)| (std::cmp::Reverse(load), r.id));
        hot
    }

    /// Whether moving `flow` from a store at `src` to one at `dst` narrows
    /// a significant gap without reversing it.
    fn worth_moving(&self, src: u64, dst: u64, flow: u64) -> bool {
        flow > 0
            && src as u128 * 100 >= dst as u128 * self.min_gap_percent as u128
            && dst.saturating_add(flow) < src.saturating_sub(flow)
    }

    /// Whether `r` may be picked now.
    fn movable(&self, r: &RegionModel, ctx: &ScheduleContext<'_>) -> bool {
        !ctx.busy_regions.contains(&r.id) && !self.recent.contains_key(&r.id)
    }

    fn planned(
        &mut self,
        r: &RegionModel,
        op: Operator,
        ctx: &mut ScheduleContext<'_>,
    ) -> Operator {
        ctx.busy_regions.insert(r.id);
        self.recent.insert(
            r.id,
            Moved {
                at_ms: ctx.now_ms,
                flow: self.flow(r),
            },
        );
        op
    }

    /// Leader transfers from the store leading the most hot load to the
    /// region's follower with the least.
    fn move_leaders(
        &mut self,
        model: &ClusterModel,
        hot: &Hot,
        ctx: &mut ScheduleContext<'_>,
        ops: &mut Vec<Operator>,
    ) {
        let up = |s: u64| {
            model
                .stores
                .get(&s)
                .is_some_and(|s| s.state == StoreState::Up)
        };
        let mut load: BTreeMap<u64, u64> = model
            .stores
            .values()
            .filter(|s| s.state == StoreState::Up)
            .map(|s| (s.id, 0))
            .collect();
        for &(r, flow) in hot {
            if let Some(l) = r.leader_store.and_then(|s| load.get_mut(&s)) {
                *l += flow;
            }
        }
        'plan: while ops.len() < self.max_per_round {
            let mut sources: Vec<(u64, u64)> = load.iter().map(|(&s, &l)| (l, s)).collect();
            sources.sort_by(|a, b| b.cmp(a));
            for &(src_load, src) in &sources {
                if !ctx.limits.available(src, ctx.now_ms) {
                    continue;
                }
                for &(r, flow) in hot {
                    if r.leader_store != Some(src) || !self.movable(r, ctx) {
                        continue;
                    }
                    let target = r
                        .peers
                        .iter()
                        .filter(|p| !p.is_learner && p.store_id != src && up(p.store_id))
                        .map(|p| (load.get(&p.store_id).copied().unwrap_or(0), p.store_id))
                        .filter(|&(_, s)| ctx.limits.available(s, ctx.now_ms))
                        .min();
                    let Some((dst_load, dst)) = target else {
                        continue;
                    };
                    if !self.worth_moving(src_load, dst_load, flow) {
                        continue;
                    }
                    let op = Operator {
                        region_id: r.id,
                        kind: OperatorKind::TransferLeader {
                            from_store: src,
                            to_store: dst,
                        },
                        source: HOT_REGION,
                    };
                    ops.push(self.planned(r, op, ctx));
                    ctx.limits.take(src, ctx.now_ms);
                    ctx.limits.take(dst, ctx.now_ms);
                    let l = load.entry(src).or_default();
                    *l = l.saturating_sub(flow);
                    *load.entry(dst).or_default() += flow;
                    continue 'plan;
                }
            }
            break;
        }
    }

    /// Peer moves of write-hot regions from a hot store to a colder one
    /// holding none of their peers, one voter per zone.
    fn move_peers(
        &mut self,
        model: &ClusterModel,
        hot: &Hot,
        ctx: &mut ScheduleContext<'_>,
        ops: &mut Vec<Operator>,
    ) {
        if model.stores.values().any(|s| s.state == StoreState::Down) {
            return;
        }
        let mut load: BTreeMap<u64, u64> = model.stores.keys().map(|&s| (s, 0)).collect();
        for &(r, flow) in hot {
            for p in r.peers.iter().filter(|p| !p.is_learner) {
                *load.entry(p.store_id).or_default() += flow;
            }
        }
        let up = |s: u64| {
            model
                .stores
                .get(&s)
                .is_some_and(|s| s.state == StoreState::Up)
        };
        'plan: while ops.len() < self.max_per_round {
            let mut sources: Vec<(u64, u64)> = load
                .iter()
                .filter(|(&s, _)| up(s))
                .map(|(&s, &l)| (l, s))
                .collect();
            sources.sort_by(|a, b| b.cmp(a));
            for &(src_load, src) in &sources {
                for &(r, flow) in hot {
                    // Every Up store holds it: no target.
                    if r.peers.len() >= sources.len() {
                        continue;
                    }
                    let healthy = r.leader_store.is_some()
                        && r.peers.iter().all(|p| !p.is_learner && up(p.store_id));
                    if !healthy || r.voter_on(src).is_none() || !self.movable(r, ctx) {
                        continue;
                    }
                    let coolest_holder = r
                        .peers
                        .iter()
                        .map(|p| load.get(&p.store_id).copied().unwrap_or(0))
                        .min()
                        .unwrap_or(0);
                    let from = &model.stores[&src];
                    let target = sources
                        .iter()
                        .filter(|&&(l, s)| {
                            l < coolest_holder
                                && !r.peers.iter().any(|p| p.store_id == s)
                                && zone_ok(model, r, from, &model.stores[&s])
                                && ctx.limits.available(s, ctx.now_ms)
                        })
                        .min();
                    let Some(&(dst_load, dst)) = target else {
                        continue;
                    };
                    if !self.worth_moving(src_load, dst_load, flow) {
                        continue;
                    }
                    let op = Operator {
                        region_id: r.id,
                        kind: OperatorKind::ReplacePeer {
                            from_store: src,
                            to_store: dst,
                        },
                        source: HOT_REGION,
                    };
                    ops.push(self.planned(r, op, ctx));
                    ctx.limits.take(dst, ctx.now_ms);
                    let l = load.entry(src).or_default();
                    *l = l.saturating_sub(flow);
                    *load.entry(dst).or_default() += flow;
                    continue 'plan;
                }
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::model::test_util::{model, region, round, store, zoned_store};
    use super::super::StoreLimiter;
    use super::*;

    fn reads(bytes: u64) -> FlowRates {
        FlowRates {
            read_bytes: bytes,
            read_keys: bytes / 256,
            ..Default::default()
        }
    }

    fn writes(bytes: u64) -> FlowRates {
        FlowRates {
            written_bytes: bytes,
            written_keys: bytes / 256,
            ..Default::default()
        }
    }

    /// Region `id` on stores 1..=3 led by `leader` with `flow`.
    fn hot(id: u64, leader: u64, flow: FlowRates) -> RegionModel {
        let mut r = region(id, &[1, 2, 3], leader);
        r.flow = flow;
        r
    }

    fn three_stores(regions: Vec<RegionModel>) -> ClusterModel {
        model((1..=3).map(|i| store(i, StoreState::Up)).collect(), regions)
    }

    fn leader_moves(ops: &[Operator]) -> Vec<(u64, u64, u64)> {
        ops.iter()
            .map(|op| match op.kind {
                OperatorKind::TransferLeader {
                    from_store,
                    to_store,
                } => (op.region_id, from_store, to_store),
                _ => panic!("a leader move expected: {op:?}"),
            })
            .collect()
    }

    /// Applies the operators as the stores would, flow moving along.
    fn apply(m: &mut ClusterModel, ops: &[Operator]) {
        for op in ops {
            let r = m.regions.get_mut(&op.region_id).expect("region");
            match op.kind {
                OperatorKind::TransferLeader { to_store, .. } => r.leader_store = Some(to_store),
                OperatorKind::ReplacePeer {
                    from_store,
                    to_store,
                } => {
                    for p in &mut r.peers {
                        if p.store_id == from_store {
                            p.store_id = to_store;
                        }
                    }
                    if r.leader_store == Some(from_store) {
                        r.leader_store = Some(to_store);
                    }
                }
                OperatorKind::RemovePeer { store } => r.peers.retain(|p| p.store_id != store),
                OperatorKind::AddPeer { .. } => panic!("hot-region adds no peer: {op:?}"),
            }
        }
        m.recount();
    }

    #[test]
    fn hot_read_moves_the_hottest_leader_to_the_coldest_follower() {
        // Store 1 leads three read-hot regions, store 2 one, store 3 none.
        let m = three_stores(vec![
            hot(1, 1, reads(100_000)),
            hot(2, 1, reads(250_000)),
            hot(3, 1, reads(200_000)),
            hot(4, 2, reads(150_000)),
        ]);
        let mut s = HotRegion {
            max_per_round: 1,
            ..Default::default()
        };
        let ops = round(&mut s, &m, &mut StoreLimiter::new(100), 0);
        assert_eq!(leader_moves(&ops), vec![(2, 1, 3)]);
        assert_eq!(ops[0].source, HOT_REGION);
    }

    #[test]
    fn hot_read_converges_and_stays_put() {
        // Eight equally hot regions all led by store 1.
        let mut m = three_stores((1..=8).map(|i| hot(i, 1, reads(50_000))).collect());
        let mut s = HotRegion::default();
        let mut limits = StoreLimiter::new(100);
        for i in 0..10 {
            let ops = round(&mut s, &m, &mut limits, i * 3000);
            apply(&mut m, &ops);
        }
        let leaders: Vec<u64> = m.stores.values().map(|s| s.leader_count).collect();
        assert!(leaders.iter().all(|&n| (2..=4).contains(&n)), "{leaders:?}");
        // Even after the cooldown nothing moves back and forth.
        let mut s = HotRegion::default();
        assert!(round(&mut s, &m, &mut limits, 1_000_000).is_empty());
    }

    #[test]
    fn no_move_when_balanced_cold_or_when_it_would_only_swap_the_hot_spot() {
        let mut s = HotRegion::default();
        let mut limits = StoreLimiter::new(100);
        // Balanced.
        let m = three_stores((1..=6).map(|i| hot(i, i % 3 + 1, reads(50_000))).collect());
        assert!(round(&mut s, &m, &mut limits, 0).is_empty());
        // All on store 1 but below the thresholds.
        let m = three_stores((1..=6).map(|i| hot(i, 1, reads(1000))).collect());
        assert!(round(&mut s, &m, &mut limits, 0).is_empty());
        // One hot region: moving it would just make another store the hot one.
        let m = three_stores(vec![hot(1, 1, reads(500_000)), hot(2, 2, reads(10_000))]);
        assert!(round(&mut s, &m, &mut limits, 0).is_empty());
        // Source not hotter than the target by the gap ratio.
        let m = three_stores(vec![
            hot(1, 1, reads(50_000)),
            hot(2, 1, reads(50_000)),
            hot(3, 1, reads(10_000)),
            hot(4, 2, reads(90_000)),
            hot(5, 3, reads(90_000)),
        ]);
        assert!(round(&mut s, &m, &mut limits, 0).is_empty());
    }

    #[test]
    fn a_moved_region_cools_down() {
        let m = three_stores((1..=4).map(|i| hot(i, 1, reads(100_000 - i))).collect());
        let mut s = HotRegion {
            max_per_round: 1,
            ..Default::default()
        };
        let mut limits = StoreLimiter::new(100);
        assert_eq!(leader_moves(&round(&mut s, &m, &mut limits, 0))[0].0, 1);
        // The transfer did not happen (model unchanged): region 1 is left
        // alone, the next hottest goes instead.
        assert_eq!(leader_moves(&round(&mut s, &m, &mut limits, 3000))[0].0, 2);
        assert_eq!(leader_moves(&round(&mut s, &m, &mut limits, 6000))[0].0, 3);
        // After the cooldown region 1 may move again.
        let later = s.cooldown_ms + 1;
        assert_eq!(leader_moves(&round(&mut s, &m, &mut limits, later))[0].0, 1);
    }

    #[test]
    fn a_moved_region_keeps_its_flow_on_its_new_store_during_the_cooldown() {
        let mut m = three_stores((1..=4).map(|i| hot(i, 1, reads(100_000))).collect());
        let mut s = HotRegion {
            max_per_round: 1,
            ..Default::default()
        };
        let mut limits = StoreLimiter::new(100);
        let ops = round(&mut s, &m, &mut limits, 0);
        assert_eq!(leader_moves(&ops), vec![(1, 1, 2)]);
        apply(&mut m, &ops);
        // The new leader's first samples start from zero...
        m.regions.get_mut(&1).unwrap().flow = FlowRates::default();
        // ...but store 2 still counts region 1's flow: the next goes to 3.
        let ops = round(&mut s, &m, &mut limits, 3000);
        assert_eq!(leader_moves(&ops), vec![(2, 1, 3)]);
    }

    #[test]
    fn store_limits_are_respected() {
        let m = three_stores((1..=8).map(|i| hot(i, 1, reads(50_000))).collect());
        let mut s = HotRegion::default();
        let mut limits = StoreLimiter::new(1);
        assert_eq!(round(&mut s, &m, &mut limits, 0).len(), 1);
        assert!(round(&mut s, &m, &mut limits, 3000).is_empty());
    }

    #[test]
    fn write_hot_moves_leaders_first() {
        let m = three_stores((1..=6).map(|i| hot(i, 1, writes(50_000))).collect());
        let mut s = HotRegion::default();
        let ops = round(&mut s, &m, &mut StoreLimiter::new(100), 0);
        assert!(!ops.is_empty());
        assert!(leader_moves(&ops).iter().all(|&(_, from, _)| from == 1));
    }

    /// Stores 1..=3 in zones z1..z3 hold every write-hot region (leaders
    /// spread evenly); store 4 (zone z1) holds none.
    fn write_hot_with_a_cold_store() -> ClusterModel {
        let z = |id, zone| zoned_store(id, zone, StoreState::Up);
        model(
            vec![z(1, "z1"), z(2, "z2"), z(3, "z3"), z(4, "z1")],
            (1..=6).map(|i| hot(i, i % 3 + 1, writes(50_000))).collect(),
        )
    }

    #[test]
    fn write_hot_moves_a_peer_to_a_cold_store_zone_safely() {
        let mut m = write_hot_with_a_cold_store();
        let mut s = HotRegion::default();
        let mut limits = StoreLimiter::new(100);
        let mut moved = 0;
        for i in 0..10 {
            let ops = round(&mut s, &m, &mut limits, i * 3000);
            for op in &ops {
                // Only z1's peers may go to store 4 (z2, z3 keep one voter per zone).
                assert_eq!(
                    op.kind,
                    OperatorKind::ReplacePeer {
                        from_store: 1,
                        to_store: 4
                    },
                    "{op:?}"
                );
            }
            moved += ops.len();
            apply(&mut m, &ops);
        }
        assert!(moved >= 2, "{moved} moves");
        let peers = |s: u64| m.stores[&s].region_count;
        assert!(peers(4) < peers(2), "store 4 does not become the hot one");
        for r in m.regions.values() {
            let zones: BTreeSet<&str> = r
                .peers
                .iter()
                .map(|p| m.stores[&p.store_id].zone())
                .collect();
            assert_eq!(zones.len(), 3, "one voter per zone in region {}", r.id);
        }
    }

    #[test]
    fn a_down_store_blocks_peer_moves_and_is_no_target() {
        let mut m = write_hot_with_a_cold_store();
        m.stores.get_mut(&3).unwrap().state = StoreState::Down;
        let mut s = HotRegion::default();
        let ops = round(&mut s, &m, &mut StoreLimiter::new(100), 0);
        assert!(
            ops.iter().all(|op| matches!(
                op.kind,
                OperatorKind::TransferLeader { to_store, from_store } if to_store != 3 && from_store != 3
            )),
            "{ops:?}"
        );
        assert!(
            !ops.iter()
                .any(|op| matches!(op.kind, OperatorKind::ReplacePeer { .. })),
            "{ops:?}"
        );
    }
}
