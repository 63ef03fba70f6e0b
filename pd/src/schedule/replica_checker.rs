//! `replica-checker`: a region whose peer sits on a `Down` store (silent for
//! `--max-store-down-secs`) gets that peer re-created on a live store, so it
//! is back to full strength before another store fails. A peer on an
//! `Offline` store (`pdctl store delete`) moves the same way (down peers
//! first); once the store holds none PD makes it `Tombstone`.
//!
//! The new store keeps one voter per zone: a store in the down store's zone
//! first, else one in a zone none of the remaining voters uses; with no such
//! store (e.g. three stores in three zones) the region waits, reported by
//! `pdctl region check down-peer`. Among candidates, the store with the
//! fewest regions wins. One replacement per region at a time; every step
//! takes a store-limit token on both stores.
//!
//! It also removes a *learner* that no operator has been growing for
//! [`ORPHAN_LEARNER_MS`]: what an add-peer or move-peer leaves when it stops
//! between adding the learner and promoting it (a PD restart or leader
//! change loses running operators; a catch-up that timed out; `operator
//! remove`). The learner holds a copy that no quorum counts; if the region
//! still needs a replica there, the checks above add one afresh.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{ClusterModel, RegionModel, StoreModel, StoreState};
use super::{Operator, OperatorKind, ScheduleContext, Scheduler};

pub const REPLICA_CHECKER: &str = "replica-checker";

/// Most replacements planned per round (each takes a snapshot).
const MAX_PER_ROUND: usize = 4;

/// A learner seen this long with no operator on its region is removed:
/// twice an add-peer's catch-up timeout, so a live operator is never raced.
pub const ORPHAN_LEARNER_MS: i64 = 120_000;

#[derive(Debug, Default)]
pub struct ReplicaChecker {
    /// (region id, learner peer id) → when first seen with no operator on
    /// the region (PD-leader memory: a new leader starts counting afresh).
    learners_seen: BTreeMap<(u64, u64), i64>,
}

impl ReplicaChecker {
    /// Learners without an operator for [`ORPHAN_LEARNER_MS`]: a
    /// remove-peer each (one per region, within the round's budget).
    fn remove_orphan_learners(
        &mut self,
        model: &ClusterModel,
        ctx: &mut ScheduleContext<'_>,
    ) -> Vec<Operator> {
        let mut seen = BTreeMap::new();
        let mut ops = Vec::new();
        for r in model.regions.values() {
            if ctx.busy_regions.contains(&r.id) || r.leader_store.is_none() {
                continue;
            }
            for p in r.peers.iter().filter(|p| p.is_learner) {
                let first = *self.learners_seen.get(&(r.id, p.id)).unwrap_or(&ctx.now_ms);
                seen.insert((r.id, p.id), first);
                let due = ctx.now_ms - first >= ORPHAN_LEARNER_MS;
                if due
                    && ops.len() < MAX_PER_ROUND
                    && !ctx.busy_regions.contains(&r.id)
                    && ctx.limits.available(p.store_id, ctx.now_ms)
                {
                    ctx.limits.take(p.store_id, ctx.now_ms);
                    ctx.busy_regions.insert(r.id);
                    ops.push(Operator {
                        region_id: r.id,
                        kind: OperatorKind::RemovePeer { store: p.store_id },
                        source: REPLICA_CHECKER,
                    });
                }
            }
        }
        // Learners gone, or on a region an operator now works on, start over.
        self.learners_seen = seen;
        ops
    }

    /// Where region `r`'s peer on the down store `down` should go, if anywhere.
    fn target(model: &ClusterModel, r: &RegionModel, down: &StoreModel) -> Option<u64> {
        let used_zones: BTreeSet<&str> = r
            .peers
            .iter()
            .filter(|p| p.store_id != down.id && !p.is_learner)
            .filter_map(|p| model.stores.get(&p.store_id))
            .map(StoreModel::zone)
            .collect();
        model
            .stores
            .values()
            .filter(|s| s.state == StoreState::Up)
            .filter(|s| !r.peers.iter().any(|p| p.store_id == s.id))
            .filter(|s| s.zone() == down.zone() || !used_zones.contains(s.zone()))
            // Same zone first, then the emptiest store, then the lowest id.
            .min_by_key(|s| (s.zone() != down.zone(), s.region_count, s.id))
            .map(|s| s.id)
    }
}

impl Scheduler for ReplicaChecker {
    fn name(&self) -> &'static str {
        REPLICA_CHECKER
    }

    fn schedule(&mut self, model: &ClusterModel, ctx: &mut ScheduleContext<'_>) -> Vec<Operator> {
        let mut ops = self.remove_orphan_learners(model, ctx);
        for r in model.regions.values() {
            if ops.len() >= MAX_PER_ROUND {
                break;
            }
            if ctx.busy_regions.contains(&r.id) || r.leader_store.is_none() {
                continue;
            }
            // A down store's peer first (the region is short of a replica),
            // then one on a store being deleted.
            let on = |state: StoreState| {
                r.peers
                    .iter()
                    .filter_map(|p| model.stores.get(&p.store_id))
                    .find(|s| s.state == state)
            };
            let Some(down) = on(StoreState::Down).or_else(|| on(StoreState::Offline)) else {
                continue;
            };
            let Some(to) = Self::target(model, r, down) else {
                continue;
            };
            if !ctx.limits.available(to, ctx.now_ms) {
                continue;
            }
            ctx.limits.take(to, ctx.now_ms);
            ctx.busy_regions.insert(r.id);
            ops.push(Operator {
                region_id: r.id,
                kind: OperatorKind::ReplacePeer {
                    from_store: down.id,
                    to_store: to,
                },
                source: REPLICA_CHECKER,
            });
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::test_util::{self, zoned_store};
    use super::super::StoreLimiter;
    use super::*;

    fn store(id: u64, zone: &str, state: StoreState, regions: u64) -> StoreModel {
        StoreModel {
            region_count: regions,
            ..zoned_store(id, zone, state)
        }
    }

    fn region(id: u64, stores: &[u64]) -> RegionModel {
        test_util::region(id, stores, stores[0])
    }

    fn plan(model: &ClusterModel) -> Vec<(u64, u64, u64)> {
        let mut busy = BTreeSet::new();
        let mut limits = StoreLimiter::new(100);
        let mut ctx = ScheduleContext {
            now_ms: 1,
            busy_regions: &mut busy,
            limits: &mut limits,
        };
        ReplicaChecker::default()
            .schedule(model, &mut ctx)
            .into_iter()
            .map(|op| match op.kind {
                OperatorKind::ReplacePeer {
                    from_store,
                    to_store,
                } => (op.region_id, from_store, to_store),
                _ => panic!("replacements only"),
            })
            .collect()
    }

    /// Keeps the given region counts (they model load, not these regions).
    fn model(stores: Vec<StoreModel>, regions: Vec<RegionModel>) -> ClusterModel {
        ClusterModel {
            stores: stores.into_iter().map(|s| (s.id, s)).collect(),
            regions: regions.into_iter().map(|r| (r.id, r)).collect(),
        }
    }

    #[test]
    fn peers_of_an_offline_store_move_like_down_ones() {
        use StoreState::*;
        let mut m = model(
            vec![
                store(1, "z1", Offline, 2),
                store(2, "z2", Up, 2),
                store(3, "z3", Up, 2),
                store(4, "z1", Up, 0),
                store(5, "z4", Up, 0),
            ],
            vec![region(10, &[1, 2, 3]), region(11, &[2, 1, 3])],
        );
        // Same zone first.
        assert_eq!(plan(&m), vec![(10, 1, 4), (11, 1, 4)]);
        // No store left in z1: an unused zone.
        m.stores.remove(&4);
        assert_eq!(plan(&m), vec![(10, 1, 5), (11, 1, 5)]);
        // A down peer of the same region goes first.
        m.stores.get_mut(&3).unwrap().state = Down;
        assert_eq!(plan(&m), vec![(10, 3, 5), (11, 3, 5)]);
    }

    #[test]
    fn down_peers_move_to_the_same_zone_or_an_unused_one() {
        use StoreState::*;
        let healthy = model(
            vec![
                store(1, "z1", Up, 1),
                store(2, "z2", Up, 1),
                store(3, "z3", Up, 1),
                store(4, "z1", Up, 0),
            ],
            vec![region(10, &[1, 2, 3])],
        );
        assert!(plan(&healthy).is_empty(), "nothing down, nothing to do");
        // Store 1 (z1) is down: store 4 in z1 takes its peer.
        let mut m = healthy.clone();
        m.stores.get_mut(&1).unwrap().state = Down;
        assert_eq!(plan(&m), vec![(10, 1, 4)]);
        // Only a merely disconnected store: wait (it may come back).
        m.stores.get_mut(&1).unwrap().state = Disconnected;
        assert!(plan(&m).is_empty());
        // Three zones, three stores, one down: nowhere to go without
        // doubling a zone, so wait.
        let mut tight = model(
            vec![
                store(1, "z1", Down, 1),
                store(2, "z2", Up, 1),
                store(3, "z3", Up, 1),
            ],
            vec![region(10, &[1, 2, 3])],
        );
        assert!(plan(&tight).is_empty());
        // A fourth zone is fine; a second z2 store is not.
        tight.stores.insert(5, store(5, "z2", Up, 0));
        assert!(plan(&tight).is_empty());
        tight.stores.insert(6, store(6, "z4", Up, 3));
        assert_eq!(plan(&tight), vec![(10, 1, 6)]);
        // Same zone beats an emptier store elsewhere; busy regions are skipped.
        tight.stores.insert(7, store(7, "z1", Up, 9));
        assert_eq!(plan(&tight), vec![(10, 1, 7)]);
        let mut busy = BTreeSet::from([10]);
        let mut limits = StoreLimiter::new(100);
        let mut ctx = ScheduleContext {
            now_ms: 1,
            busy_regions: &mut busy,
            limits: &mut limits,
        };
        assert!(ReplicaChecker::default()
            .schedule(&tight, &mut ctx)
            .is_empty());
    }

    /// A learner left behind by an operator that stopped is removed after
    /// `ORPHAN_LEARNER_MS` without an operator on its region; an operator on
    /// the region restarts the wait.
    #[test]
    fn an_orphan_learner_is_removed_after_a_while() {
        let mut r = region(10, &[1, 2, 3, 4]);
        r.peers[3].is_learner = true;
        let m = model(
            (1..=4)
                .map(|i| store(i, &format!("z{i}"), StoreState::Up, 1))
                .collect(),
            vec![r],
        );
        let mut checker = ReplicaChecker::default();
        let mut limits = StoreLimiter::new(100);
        let mut round = |now_ms: i64, busy: &[u64]| {
            let mut busy: BTreeSet<u64> = busy.iter().copied().collect();
            let mut ctx = ScheduleContext {
                now_ms,
                busy_regions: &mut busy,
                limits: &mut limits,
            };
            checker
                .schedule(&m, &mut ctx)
                .into_iter()
                .map(|op| (op.region_id, op.kind))
                .collect::<Vec<_>>()
        };
        assert!(round(0, &[]).is_empty());
        assert!(round(ORPHAN_LEARNER_MS - 1, &[]).is_empty());
        // An operator works on the region: the wait starts over after it.
        assert!(round(ORPHAN_LEARNER_MS, &[10]).is_empty());
        assert!(round(ORPHAN_LEARNER_MS + 1, &[]).is_empty());
        assert!(round(2 * ORPHAN_LEARNER_MS, &[]).is_empty());
        assert_eq!(
            round(2 * ORPHAN_LEARNER_MS + 1, &[]),
            vec![(10, OperatorKind::RemovePeer { store: 4 })]
        );
    }
}
