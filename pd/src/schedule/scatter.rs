//! `operator add scatter-region ID` (pd-ctl's name): re-places one region's
//! peers and leader on the stores holding the fewest peers and leaders, so
//! e.g. the regions of a freshly pre-split range do not all sit on the
//! stores their parent happened to use.
//!
//! [`plan_scatter`] is pure: for each voter in turn, the `Up` store with the
//! fewest region peers among those that keep one voter per zone (the peer's
//! own zone, or a zone none of the region's other voters uses) and do not
//! hold a peer of the region yet; the peer moves only when that store holds
//! fewer peers than its current store would without it (ties stay put). Then
//! the leader goes to the final voter leading the fewest regions, if that is
//! fewer than the current leader's store would lead without it.
//! [`run_scatter`] executes the plan as ordinary operators (one move-peer per
//! moved voter, then one transfer-leader), each registered with the
//! coordinator: `operator show` lists them, `operator remove` cancels the
//! running one and the scatter stops there.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::coordinator::{run_registered, DISCONNECTED_AFTER_MS};
use super::model::{ClusterModel, StoreState};
use super::{Operator, OperatorKind};
use crate::operator::OperatorError;
use crate::server::{now_ms, PdCore};

/// The operator name (HTTP `name`, pdctl subcommand) and its steps' source.
pub const SCATTER_REGION: &str = "scatter-region";

/// What scattering one region will do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScatterPlan {
    /// (from store, to store) per moved voter, in order.
    pub moves: Vec<(u64, u64)>,
    /// The store to move the leader to at the end, if any.
    pub leader_to: Option<u64>,
}

/// The plan for region `region_id` (pure; see the module doc).
pub fn plan_scatter(model: &ClusterModel, region_id: u64) -> Result<ScatterPlan, OperatorError> {
    let r = model
        .regions
        .get(&region_id)
        .ok_or(OperatorError::RegionNotFound(region_id))?;
    let leader = r.leader_store.ok_or(OperatorError::NoLeader(region_id))?;
    if r.peers.iter().any(|p| p.is_learner) {
        return Err(OperatorError::Invalid(format!(
            "region {region_id} has a learner (a peer change is under way); try again later"
        )));
    }
    let zone = |s: u64| model.stores.get(&s).map_or("", |m| m.zone());
    let mut peers: BTreeMap<u64, u64> = model
        .stores
        .values()
        .map(|s| (s.id, s.region_count))
        .collect();
    let mut voters: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
    let mut plan = ScatterPlan::default();
    for i in 0..voters.len() {
        let cur = voters[i];
        let others: BTreeSet<&str> = voters
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| zone(*s))
            .collect();
        // The current store's count without this region's peer.
        let stay = peers.get(&cur).copied().unwrap_or(0).saturating_sub(1);
        let best = model
            .stores
            .values()
            .filter(|s| s.state == StoreState::Up && !voters.contains(&s.id))
            .filter(|s| s.zone() == zone(cur) || !others.contains(s.zone()))
            .map(|s| (peers.get(&s.id).copied().unwrap_or(0), s.id))
            .min();
        if let Some((n, to)) = best.filter(|(n, _)| *n < stay) {
            plan.moves.push((cur, to));
            if let Some(c) = peers.get_mut(&cur) {
                *c = c.saturating_sub(1);
            }
            peers.insert(to, n + 1);
            voters[i] = to;
        }
    }
    let leaders = |s: u64| model.stores.get(&s).map_or(0, |m| m.leader_count);
    let leader_now = voters
        .iter()
        .copied()
        .find(|s| *s == leader)
        // The leader's peer moved: another voter leads after the move.
        .unwrap_or(0);
    let stay = if leader_now == 0 {
        u64::MAX
    } else {
        leaders(leader_now).saturating_sub(1)
    };
    let best = voters
        .iter()
        .copied()
        .filter(|s| {
            model
                .stores
                .get(s)
                .is_some_and(|m| m.state == StoreState::Up)
        })
        .map(|s| (leaders(s), s))
        .min();
    if let Some((n, to)) = best {
        if to != leader_now && n < stay {
            plan.leader_to = Some(to);
        }
    }
    Ok(plan)
}

#[derive(Serialize)]
pub struct ScatterMoveJson {
    pub from_store_id: u64,
    pub to_store_id: u64,
}

#[derive(Serialize)]
pub struct ScatterJson {
    pub name: &'static str,
    pub region_id: u64,
    /// The peers moved, in order (empty: already spread out).
    pub moves: Vec<ScatterMoveJson>,
    /// Where the leader was moved (null: it stayed).
    pub leader_to_store_id: Option<u64>,
    /// The region's voters' stores and leader store afterwards.
    pub store_ids: Vec<u64>,
    pub leader_store_id: Option<u64>,
}

/// Plans and runs a scatter of `region_id`; answers once every step is done.
pub async fn run_scatter(core: &PdCore, region_id: u64) -> Result<ScatterJson, OperatorError> {
    let now = now_ms();
    let max_down = core.runtime().max_store_down_ms();
    let model = core
        .read(|c| ClusterModel::from_cluster(c, now, max_down, DISCONNECTED_AFTER_MS))
        .await;
    let plan = plan_scatter(&model, region_id)?;
    tracing::info!(region_id, ?plan, "scatter-region");
    let steps = plan
        .moves
        .iter()
        .map(|&(from_store, to_store)| OperatorKind::ReplacePeer {
            from_store,
            to_store,
        })
        .chain(plan.leader_to.map(|to_store| OperatorKind::TransferLeader {
            from_store: 0,
            to_store,
        }));
    for kind in steps {
        let op = Operator {
            region_id,
            kind,
            source: SCATTER_REGION,
        };
        core.schedule.begin(&op, now_ms())?;
        run_registered(core, &op).await?;
    }
    let info = core
        .region_by_id(region_id)
        .await
        .ok_or(OperatorError::RegionNotFound(region_id))?;
    Ok(ScatterJson {
        name: SCATTER_REGION,
        region_id,
        moves: plan
            .moves
            .iter()
            .map(|&(from_store_id, to_store_id)| ScatterMoveJson {
                from_store_id,
                to_store_id,
            })
            .collect(),
        leader_to_store_id: plan.leader_to,
        store_ids: info
            .region
            .map(|r| r.peers.iter().map(|p| p.store_id).collect())
            .unwrap_or_default(),
        leader_store_id: info.leader.map(|l| l.store_id),
    })
}

#[cfg(test)]
mod tests {
    use super::super::model::test_util::{model, region, zoned_store};
    use super::*;

    fn store(id: u64, zone: &str) -> super::super::model::StoreModel {
        zoned_store(id, zone, StoreState::Up)
    }

    /// Stores 1..=3 in z1..z3 holding `busy` regions (led by store 1), and
    /// stores 4..=6 in z1..z3 holding `spare` (led by store 4).
    fn six(busy: u64, spare: u64) -> ClusterModel {
        let stores = vec![
            store(1, "z1"),
            store(2, "z2"),
            store(3, "z3"),
            store(4, "z1"),
            store(5, "z2"),
            store(6, "z3"),
        ];
        let regions = (1..=busy)
            .map(|i| region(i, &[1, 2, 3], 1))
            .chain((1..=spare).map(|i| region(100 + i, &[4, 5, 6], 4)))
            .collect();
        model(stores, regions)
    }

    #[test]
    fn peers_and_leader_go_to_the_emptiest_stores_of_the_same_zones() {
        let m = six(10, 0);
        let plan = plan_scatter(&m, 1).unwrap();
        assert_eq!(plan.moves, vec![(1, 4), (2, 5), (3, 6)]);
        assert_eq!(plan.leader_to, Some(4), "fewest leaders, lowest id");
        // Already on the emptier side: nothing to do.
        let m = six(10, 1);
        assert_eq!(plan_scatter(&m, 101).unwrap(), ScatterPlan::default());
        // Peers balanced (ties stay put), but store 1 leads all three of
        // its regions: only the leader moves.
        let m = six(3, 3);
        let plan = plan_scatter(&m, 1).unwrap();
        assert_eq!((plan.moves, plan.leader_to), (vec![], Some(2)));
    }

    #[test]
    fn a_move_never_puts_two_voters_in_one_zone() {
        // Store 4 is empty but in z2, where store 2 already holds a voter:
        // only the z2 peer may move there.
        let m = model(
            vec![
                store(1, "z1"),
                store(2, "z2"),
                store(3, "z3"),
                store(4, "z2"),
            ],
            (1..=5).map(|i| region(i, &[1, 2, 3], 1)).collect(),
        );
        let plan = plan_scatter(&m, 1).unwrap();
        assert_eq!(plan.moves, vec![(2, 4)]);
        // Store 1 leads all 5; stores 3 and 4 lead none: the lower id.
        assert_eq!(plan.leader_to, Some(3));
        // A store that is not up is never a target.
        let mut m = m;
        m.stores.get_mut(&4).unwrap().state = StoreState::Disconnected;
        assert_eq!(plan_scatter(&m, 1).unwrap().moves, vec![]);
    }

    #[test]
    fn unknown_regions_and_regions_without_a_leader_are_refused() {
        let mut m = six(2, 0);
        assert!(matches!(
            plan_scatter(&m, 99),
            Err(OperatorError::RegionNotFound(99))
        ));
        m.regions.get_mut(&1).unwrap().leader_store = None;
        assert!(matches!(
            plan_scatter(&m, 1),
            Err(OperatorError::NoLeader(1))
        ));
    }
}
