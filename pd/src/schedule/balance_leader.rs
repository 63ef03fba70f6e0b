//! `balance-leader`: moves region leaders from the store leading the most
//! regions to the one leading the fewest while their counts differ by more
//! than `tolerance` (counts divided by each store's leader weight,
//! `pdctl store weight`, 1 by default). Leaders are where reads and writes of a region are
//! served, so a store leading every region is the cluster's bottleneck
//! (new regions of a split start with their leader on the parent's store).
//!
//! Among the regions it could move it picks the one with the least flow,
//! so it does not undo what `hot-region` spreads by load.
//!
//! Only `Up` stores are sources or targets (a down or disconnected store's
//! leaders are gone already or about to be; moving leaders to it would stall
//! writes). Regions with a running operator are skipped, the target must
//! hold a voter of the region, each round plans at most `max_per_round`
//! transfers, and each store takes part in at most the store limit's
//! transfers per minute.

use std::collections::BTreeMap;

use super::model::{by_weighted_count, worth_moving, ClusterModel, RegionModel};
use super::{Operator, OperatorKind, ScheduleContext, Scheduler};

pub const NAME: &str = "balance-leader";

#[derive(Debug, Clone)]
pub struct BalanceLeader {
    /// Largest leader-count difference between two stores left alone.
    pub tolerance: u64,
    /// Most transfers planned per round.
    pub max_per_round: usize,
}

impl Default for BalanceLeader {
    fn default() -> Self {
        BalanceLeader {
            tolerance: 1,
            max_per_round: 8,
        }
    }
}

impl Scheduler for BalanceLeader {
    fn name(&self) -> &'static str {
        NAME
    }

    fn schedule(&mut self, model: &ClusterModel, ctx: &mut ScheduleContext<'_>) -> Vec<Operator> {
        // Leader counts of schedulable stores, updated as transfers are planned.
        let mut counts: BTreeMap<u64, u64> = model
            .stores
            .values()
            .filter(|s| s.state.is_schedulable())
            .map(|s| (s.id, s.leader_count))
            .collect();
        let mut ops = Vec::new();
        while ops.len() < self.max_per_round {
            let Some(op) = self.pick(model, &counts, ctx) else {
                break;
            };
            match op.kind {
                OperatorKind::ReplacePeer { .. }
                | OperatorKind::RemovePeer { .. }
                | OperatorKind::AddPeer { .. } => {}
                OperatorKind::TransferLeader {
                    from_store,
                    to_store,
                } => {
                    if let Some(c) = counts.get_mut(&from_store) {
                        *c = c.saturating_sub(1);
                    }
                    *counts.entry(to_store).or_default() += 1;
                    ctx.limits.take(from_store, ctx.now_ms);
                    ctx.limits.take(to_store, ctx.now_ms);
                }
            }
            ctx.busy_regions.insert(op.region_id);
            ops.push(op);
        }
        ops
    }
}

impl BalanceLeader {
    /// The most useful transfer allowed now: the fullest source and emptiest
    /// target first, falling back to the next pair when no region fits.
    fn pick(
        &self,
        model: &ClusterModel,
        counts: &BTreeMap<u64, u64>,
        ctx: &mut ScheduleContext<'_>,
    ) -> Option<Operator> {
        let weight = |s: u64| model.stores.get(&s).map_or(1.0, |m| m.leader_weight);
        // By leaders per unit of weight (`pdctl store weight`), then id.
        let by_score = by_weighted_count(counts, weight);
        for &(_, src, src_n) in by_score.iter().rev() {
            if !ctx.limits.available(src, ctx.now_ms) {
                continue;
            }
            for &(_, dst, dst_n) in &by_score {
                if !worth_moving(src_n, weight(src), dst_n, weight(dst), self.tolerance) {
                    continue;
                }
                if !ctx.limits.available(dst, ctx.now_ms) {
                    continue;
                }
                // The coldest fitting region: leader counts even out with
                // regions whose flow hot-region does not have to follow.
                let mut region: Option<(&RegionModel, u64)> = None;
                for r in model.regions.values().filter(|r| {
                    r.leader_store == Some(src)
                        && !ctx.busy_regions.contains(&r.id)
                        && r.voter_on(dst).is_some()
                }) {
                    let flow = r.flow.read_bytes.saturating_add(r.flow.written_bytes);
                    if region.is_none_or(|(_, f)| flow < f) {
                        region = Some((r, flow));
                    }
                    if flow == 0 {
                        // Nothing is colder: no need to look further.
                        break;
                    }
                }
                let region = region.map(|(r, _)| r);
                if let Some(r) = region {
                    return Some(Operator {
                        region_id: r.id,
                        kind: OperatorKind::TransferLeader {
                            from_store: src,
                            to_store: dst,
                        },
                        source: NAME,
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::model::test_util::{cluster, region, round, store};
    use super::super::model::StoreState;
    use super::super::StoreLimiter;
    use super::*;

    /// Applies the transfers to the model, as the stores would.
    fn apply(model: &mut ClusterModel, ops: &[Operator]) {
        for op in ops {
            let OperatorKind::TransferLeader { to_store, .. } = op.kind else {
                continue;
            };
            if let Some(r) = model.regions.get_mut(&op.region_id) {
                r.leader_store = Some(to_store);
            }
        }
        model.recount();
    }

    fn leaders(model: &ClusterModel) -> Vec<u64> {
        model.stores.values().map(|s| s.leader_count).collect()
    }

    #[test]
    fn balanced_stays_put() {
        let mut s = BalanceLeader::default();
        let mut limits = StoreLimiter::new(100);
        for counts in [[8, 8, 8], [9, 8, 8], [8, 7, 8], [1, 0, 0], [0, 0, 0]] {
            let m = cluster(&counts);
            assert!(round(&mut s, &m, &mut limits, 0).is_empty(), "{counts:?}");
        }
    }

    #[test]
    fn skewed_converges_in_a_few_rounds() {
        // 24 regions all led by store 1, as after splits of one region.
        let mut m = cluster(&[24, 0, 0]);
        let mut s = BalanceLeader::default();
        let mut limits = StoreLimiter::new(100);
        let mut rounds = 0;
        loop {
            let ops = round(&mut s, &m, &mut limits, rounds * 3000);
            if ops.is_empty() {
                break;
            }
            assert!(ops.len() <= s.max_per_round);
            for op in &ops {
                let OperatorKind::TransferLeader { from_store, .. } = op.kind else {
                    panic!("balance-leader makes transfers only");
                };
                assert_eq!(m.regions[&op.region_id].leader_store, Some(from_store));
            }
            apply(&mut m, &ops);
            rounds += 1;
            assert!(rounds <= 10, "no convergence: {:?}", leaders(&m));
        }
        assert_eq!(leaders(&m), vec![8, 8, 8]);
        // 16 transfers, 8 per round.
        assert_eq!(rounds, 2);
    }

    #[test]
    fn down_and_disconnected_stores_are_ignored() {
        for state in [
            StoreState::Down,
            StoreState::Disconnected,
            StoreState::Offline,
        ] {
            // Store 3 is gone: its peers cannot lead, store 2 takes half.
            let mut m = cluster(&[12, 0, 0]);
            m.stores.get_mut(&3).expect("store 3").state = state;
            let mut s = BalanceLeader::default();
            let mut limits = StoreLimiter::new(100);
            for i in 0..10 {
                let ops = round(&mut s, &m, &mut limits, i * 3000);
                assert!(
                    ops.iter().all(|op| op.kind.stores() == vec![1, 2]),
                    "{state:?}: {ops:?}"
                );
                apply(&mut m, &ops);
            }
            assert_eq!(leaders(&m), vec![6, 6, 0], "{state:?}");
        }
        // A down store's stale leaders are not moved either.
        let mut m = cluster(&[0, 0, 9]);
        m.stores.get_mut(&3).expect("store 3").state = StoreState::Down;
        let mut s = BalanceLeader::default();
        assert!(round(&mut s, &m, &mut StoreLimiter::new(100), 0).is_empty());
    }

    #[test]
    fn the_coldest_region_moves() {
        let mut m = cluster(&[3, 0, 0]);
        for (id, bytes) in [(1, 500), (2, 0), (3, 900)] {
            m.regions.get_mut(&id).unwrap().flow.read_bytes = bytes;
        }
        let mut s = BalanceLeader {
            max_per_round: 1,
            ..Default::default()
        };
        let ops = round(&mut s, &m, &mut StoreLimiter::new(100), 0);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].region_id, 2);
    }

    #[test]
    fn leader_weights_scale_each_stores_share() {
        // Store 1 weighs 2: it ends with twice the leaders of the others.
        let mut m = cluster(&[0, 24, 0]);
        m.stores.get_mut(&1).expect("store 1").leader_weight = 2.0;
        let mut s = BalanceLeader::default();
        let mut limits = StoreLimiter::new(1000);
        for i in 0..20 {
            let ops = round(&mut s, &m, &mut limits, i * 3000);
            if ops.is_empty() {
                break;
            }
            apply(&mut m, &ops);
        }
        assert_eq!(leaders(&m), vec![12, 6, 6]);
    }

    #[test]
    fn store_limit_is_respected() {
        let mut m = cluster(&[24, 0, 0]);
        let mut s = BalanceLeader::default();
        // Two transfers per store per minute: store 1 is the bottleneck.
        let mut limits = StoreLimiter::new(2);
        let mut moved = 0;
        for i in 0..10 {
            let ops = round(&mut s, &m, &mut limits, i * 3000); // all within 30 s
            moved += ops.len();
            apply(&mut m, &ops);
        }
        assert_eq!(moved, 2);
        // A minute later store 1 may give away two more.
        let ops = round(&mut s, &m, &mut limits, 61_000);
        assert_eq!(ops.len(), 2);
    }

    #[test]
    fn busy_regions_and_targets_without_a_voter_are_skipped() {
        let mut m = ClusterModel::default();
        for id in 1..=3 {
            m.stores.insert(id, store(id, StoreState::Up));
        }
        // Region 1 has a peer on store 1 only; region 2 is busy; region 3 fits.
        let mut r1 = region(1, &[1, 2], 1);
        r1.peers.retain(|p| p.store_id != 2);
        let m = m.with_regions([r1, region(2, &[1, 2, 3], 1), region(3, &[1, 2, 3], 1)]);
        let mut busy: BTreeSet<u64> = [2].into();
        let mut limits = StoreLimiter::new(100);
        let mut ctx = ScheduleContext {
            now_ms: 0,
            busy_regions: &mut busy,
            limits: &mut limits,
        };
        let ops = BalanceLeader::default().schedule(&m, &mut ctx);
        assert_eq!(
            ops,
            vec![Operator {
                region_id: 3,
                kind: OperatorKind::TransferLeader {
                    from_store: 1,
                    to_store: 2,
                },
                source: NAME,
            }]
        );
        assert!(busy.contains(&3), "the picked region is marked busy");
    }
}
