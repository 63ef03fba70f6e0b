//! Notices stores that lose region leaderships to elections (not to PD's
//! own transfers): the sign of a store that just died or was cut off, a
//! second or two before its missing heartbeats show it. Such a store is
//! treated as `Disconnected` for a while, so no scheduler makes it a target
//! in the window where it already leads nothing but still looks `Up`.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{ClusterModel, StoreState};

/// How long a store that lost a leadership to an election is left alone.
pub const HOLD_MS: i64 = 10_000;

#[derive(Debug, Default)]
pub struct ElectionWatch {
    /// Region → leader store as of the previous round.
    prev: BTreeMap<u64, u64>,
    /// Store → until when (unix ms) it is not a target.
    suspect_until: BTreeMap<u64, i64>,
}

impl ElectionWatch {
    /// Compares the leaders in `model` with the previous round's; a leader
    /// that moved off a store outside `moved_by_pd` (regions PD transferred
    /// since then, or is transferring) marks that store.
    pub fn observe(&mut self, model: &ClusterModel, moved_by_pd: &BTreeSet<u64>, now_ms: i64) {
        for r in model.regions.values() {
            let (Some(new), Some(&old)) = (r.leader_store, self.prev.get(&r.id)) else {
                continue;
            };
            if new != old && !moved_by_pd.contains(&r.id) {
                self.suspect_until.insert(old, now_ms + HOLD_MS);
            }
        }
        self.prev = model
            .regions
            .values()
            .filter_map(|r| r.leader_store.map(|s| (r.id, s)))
            .collect();
        self.suspect_until.retain(|_, until| *until > now_ms);
    }

    /// `model` with every suspect `Up` store marked `Disconnected`.
    pub fn apply(&self, model: &mut ClusterModel, now_ms: i64) {
        for (store, until) in &self.suspect_until {
            if *until > now_ms {
                if let Some(s) = model.stores.get_mut(store) {
                    if s.state == StoreState::Up {
                        s.state = StoreState::Disconnected;
                    }
                }
            }
        }
    }

    /// Stores currently held back.
    pub fn suspects(&self, now_ms: i64) -> Vec<u64> {
        self.suspect_until
            .iter()
            .filter(|(_, u)| **u > now_ms)
            .map(|(s, _)| *s)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::test_util::cluster;
    use super::*;

    fn lead(m: &mut ClusterModel, region: u64, store: u64) {
        m.regions.get_mut(&region).expect("region").leader_store = Some(store);
        m.recount();
    }

    #[test]
    fn a_store_losing_leaders_to_elections_is_held_back() {
        let mut m = cluster(&[3, 3, 0]);
        let mut w = ElectionWatch::default();
        w.observe(&m, &BTreeSet::new(), 0);
        assert!(w.suspects(0).is_empty(), "first look: nothing to compare");
        // Store 1 dies: its regions 1..=3 elect leaders on store 2.
        for r in 1..=3 {
            lead(&mut m, r, 2);
        }
        w.observe(&m, &BTreeSet::new(), 1_000);
        assert_eq!(w.suspects(1_000), vec![1]);
        let mut held = m.clone();
        w.apply(&mut held, 1_000);
        assert_eq!(held.stores[&1].state, StoreState::Disconnected);
        assert_eq!(held.stores[&3].state, StoreState::Up);
        // Ten seconds later (and no more elections) it is a target again.
        w.observe(&m, &BTreeSet::new(), 1_000 + HOLD_MS);
        assert!(w.suspects(1_000 + HOLD_MS).is_empty());
    }

    #[test]
    fn leaders_pd_moved_do_not_count() {
        let mut m = cluster(&[3, 0, 0]);
        let mut w = ElectionWatch::default();
        w.observe(&m, &BTreeSet::new(), 0);
        lead(&mut m, 1, 2);
        lead(&mut m, 2, 3);
        w.observe(&m, &[1, 2].into(), 3_000);
        assert!(w.suspects(3_000).is_empty());
    }
}
