//! `balance-region`: evens out how many region peers each store holds, so
//! a store that joins takes its share (and its share of leaders, which
//! balance-leader then moves onto it).
//!
//! While the fullest `Up` store holds more than `tolerance` peers more than
//! the emptiest store it could give one to (counts divided by each store's
//! region weight, `pdctl store weight`, 1 by default), move one peer of a healthy
//! region (leader known, no down peer, not busy) from the fullest store to
//! that store: add a learner there, promote it, remove the old peer
//! (`OperatorKind::ReplacePeer`, the same steps as replica-checker). A
//! target must keep one voter per zone: same zone as the source, or a zone
//! none of the region's other voters uses. Moves are slow (a snapshot each),
//! so at most `max_per_round` per round.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{
    by_weighted_count, worth_moving, ClusterModel, RegionModel, StoreModel, StoreState,
};
use super::{Operator, OperatorKind, ScheduleContext, Scheduler};

pub const BALANCE_REGION: &str = "balance-region";

pub struct BalanceRegion {
    /// Peer-count difference tolerated between two stores.
    pub tolerance: u64,
    pub max_per_round: usize,
}

impl Default for BalanceRegion {
    fn default() -> Self {
        BalanceRegion {
            tolerance: 1,
            max_per_round: 2,
        }
    }
}

/// Whether `r`'s peer on `from` may move to `to` keeping one voter per zone.
pub(super) fn zone_ok(
    model: &ClusterModel,
    r: &RegionModel,
    from: &StoreModel,
    to: &StoreModel,
) -> bool {
    if to.zone() == from.zone() {
        return true;
    }
    let others: BTreeSet<&str> = r
        .peers
        .iter()
        .filter(|p| p.store_id != from.id && !p.is_learner)
        .filter_map(|p| model.stores.get(&p.store_id))
        .map(StoreModel::zone)
        .collect();
    !others.contains(to.zone())
}

impl Scheduler for BalanceRegion {
    fn name(&self) -> &'static str {
        BALANCE_REGION
    }

    fn schedule(&mut self, model: &ClusterModel, ctx: &mut ScheduleContext<'_>) -> Vec<Operator> {
        // A store is down or half-gone: repairing comes first (replica-checker).
        let any_down = model.stores.values().any(|s| s.state == StoreState::Down);
        if any_down {
            return Vec::new();
        }
        let mut counts: BTreeMap<u64, u64> = model
            .stores
            .values()
            .filter(|s| s.state == StoreState::Up)
            .map(|s| (s.id, s.region_count))
            .collect();
        let mut ops = Vec::new();
        while ops.len() < self.max_per_round {
            let Some(op) = self.pick(model, &counts, ctx) else {
                break;
            };
            if let OperatorKind::ReplacePeer {
                from_store,
                to_store,
            } = op.kind
            {
                *counts.entry(from_store).or_default() -= 1;
                *counts.entry(to_store).or_default() += 1;
                ctx.limits.take(to_store, ctx.now_ms);
            }
            ctx.busy_regions.insert(op.region_id);
            ops.push(op);
        }
        ops
    }
}

impl BalanceRegion {
    fn pick(
        &self,
        model: &ClusterModel,
        counts: &BTreeMap<u64, u64>,
        ctx: &mut ScheduleContext<'_>,
    ) -> Option<Operator> {
        let weight = |s: u64| model.stores.get(&s).map_or(1.0, |m| m.region_weight);
        // By peers per unit of weight (`pdctl store weight`), then id.
        let by_score = by_weighted_count(counts, weight);
        for &(_, src, src_n) in by_score.iter().rev() {
            for &(_, dst, dst_n) in &by_score {
                if !worth_moving(src_n, weight(src), dst_n, weight(dst), self.tolerance) {
                    continue;
                }
                if !ctx.limits.available(dst, ctx.now_ms) {
                    continue;
                }
                let (from, to) = (&model.stores[&src], &model.stores[&dst]);
                let region = model.regions.values().find(|r| {
                    !ctx.busy_regions.contains(&r.id)
                        && r.leader_store.is_some()
                        && r.voter_on(src).is_some()
                        && !r.peers.iter().any(|p| p.store_id == dst || p.is_learner)
                        && r.peers.iter().all(|p| {
                            model
                                .stores
                                .get(&p.store_id)
                                .is_some_and(|s| s.state == StoreState::Up)
                        })
                        && zone_ok(model, r, from, to)
                });
                if let Some(r) = region {
                    return Some(Operator {
                        region_id: r.id,
                        kind: OperatorKind::ReplacePeer {
                            from_store: src,
                            to_store: dst,
                        },
                        source: BALANCE_REGION,
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::test_util::{model, region, zoned_store};
    use super::super::StoreLimiter;
    use super::*;

    fn store(id: u64, zone: &str) -> StoreModel {
        zoned_store(id, zone, StoreState::Up)
    }

    /// `regions` regions on stores 1..=3 (z1, z2, z3) and an empty store 4 in z1.
    fn with_new_z1_store(regions: u64) -> ClusterModel {
        model(
            vec![
                store(1, "z1"),
                store(2, "z2"),
                store(3, "z3"),
                store(4, "z1"),
            ],
            (1..=regions).map(|i| region(i, &[1, 2, 3], 1)).collect(),
        )
    }

    /// Plans rounds and applies them to the model until nothing moves.
    fn converge(mut m: ClusterModel) -> (ClusterModel, usize) {
        let mut s = BalanceRegion::default();
        let mut moves = 0;
        for _ in 0..100 {
            let mut busy = BTreeSet::new();
            let mut limits = StoreLimiter::new(1000);
            let mut ctx = ScheduleContext {
                now_ms: 1,
                busy_regions: &mut busy,
                limits: &mut limits,
            };
            let ops = s.schedule(&m, &mut ctx);
            if ops.is_empty() {
                return (m, moves);
            }
            for op in ops {
                let OperatorKind::ReplacePeer {
                    from_store,
                    to_store,
                } = op.kind
                else {
                    panic!("moves only");
                };
                let r = m.regions.get_mut(&op.region_id).unwrap();
                for p in &mut r.peers {
                    if p.store_id == from_store {
                        p.store_id = to_store;
                    }
                }
                if r.leader_store == Some(from_store) {
                    r.leader_store = Some(to_store);
                }
                moves += 1;
            }
            m.recount();
        }
        panic!("did not converge");
    }

    #[test]
    fn a_new_store_takes_its_share_within_its_zone() {
        let m = with_new_z1_store(10);
        let (m, moves) = converge(m);
        let count = |s: u64| m.stores[&s].region_count;
        // Only z1's peers can move (z2, z3 keep one voter per zone).
        assert_eq!((count(1), count(4)), (5, 5), "{moves} moves");
        assert_eq!((count(2), count(3)), (10, 10));
        for r in m.regions.values() {
            let zones: BTreeSet<&str> = r
                .peers
                .iter()
                .map(|p| m.stores[&p.store_id].zone())
                .collect();
            assert_eq!(zones.len(), 3, "one voter per zone in region {}", r.id);
        }
        // Balanced stays put.
        assert_eq!(converge(m).1, 0);
    }

    #[test]
    fn region_weights_scale_each_stores_share() {
        // The new z1 store weighs 3: it takes three peers for each one the old keeps.
        let mut m = with_new_z1_store(12);
        m.stores.get_mut(&4).unwrap().region_weight = 3.0;
        let (m, _) = converge(m);
        assert_eq!(
            (m.stores[&1].region_count, m.stores[&4].region_count),
            (3, 9)
        );
    }

    #[test]
    fn nothing_moves_while_a_store_is_down() {
        let mut m = with_new_z1_store(4);
        m.stores.get_mut(&2).unwrap().state = StoreState::Down;
        assert_eq!(converge(m).1, 0);
    }
}
