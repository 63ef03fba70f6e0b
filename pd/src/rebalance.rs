//! Moving placement-group slots: rebalance when data nodes join, drain a
//! node being decommissioned, and drain a node that has been down too long.
//!
//! Pure logic, no clock. PD only changes the map; the data nodes' repair
//! worker makes each PG's current members hold their fragments (a new member
//! rebuilds its fragment from the others, the old one drops its stray copy
//! once the new one has it). So every map PD publishes must be safe to read
//! from while that happens:
//!
//! - The goal of every class is [`compute`] over the *eligible* nodes (not
//!   leaving, not down for good) with the current groups as `previous`:
//!   rendezvous hashing keeps every member that is still chosen, so a joining
//!   node only takes the slots it wins and a drained node's slots go to the
//!   next-best node. The goal's member sets do not depend on the current map,
//!   so repeated steps converge and never oscillate.
//! - A step ([`plan`]) moves at most `max_moves` slots per class and never
//!   two slots of one PG, so a PG has at most one member rebuilding per step.
//! - A slot moves from a member that still serves only when every other
//!   member of its PG serves too (a degraded PG only gets its missing members
//!   replaced), so reads keep at least k members holding data.
//! - Outgoing and incoming members are paired zone by zone first, so a move
//!   inside a zone leaves the zone counts as they were; a move across zones
//!   only adds to a zone the goal has more members in, so every intermediate
//!   map keeps the per-zone cap ([`Rules::max_per_zone`]) the goal keeps.
//!   Racks and hosts are preferences of [`compute`], not checked per step.
//! - When the eligible nodes cannot hold a class (too few nodes or zones, a
//!   zone that cannot meet the cap), nothing of that class moves and the
//!   class reports why ([`ClassPlan::blocker`]).
//!
//! Steps are paced by the data nodes' repair, not only by time: each serving
//! node reports its last repair pass ([`RepairReport`]); repair has *caught
//! up* with a map version when every serving node reported a pass covering
//! it (or a newer one) with nothing left to rebuild ([`repair_status`]). The
//! next step waits for repair to catch up with the previous step's version,
//! at most a time limit ([`step_gate`]); a leaving node is only
//! decommissioned once repair caught up with the current version.

use std::collections::{BTreeMap, BTreeSet};

use kura_proto::meta::StorageClass;

use crate::placement::{compute, NodeDesc, PlacementError, PlacementState, Rules};

/// Why a node's slots are moved away from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Drain {
    /// Silent for longer than `datanode_down_after`: rebuild its fragments elsewhere.
    Down,
    /// An operator decommissions it.
    Decommission,
}

impl Drain {
    pub fn name(self) -> &'static str {
        match self {
            Drain::Down => "down",
            Drain::Decommission => "decommission",
        }
    }
}

/// A data node as slot movement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub desc: NodeDesc,
    /// Heartbeating recently: it holds and serves its fragments.
    pub serving: bool,
    /// Its slots must move away; it is never a destination.
    pub drain: Option<Drain>,
}

/// One slot changing hands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotMove {
    pub class: StorageClass,
    pub pg: u32,
    /// Fragment index: the new member rebuilds fragment `slot`.
    pub slot: usize,
    pub from: u64,
    pub to: u64,
}

/// Where one class stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassPlan {
    /// Slots that still differ from the goal (this step's moves included).
    pub pending: usize,
    /// PGs with pending slots of which none may move now (a member or the
    /// destination is not serving).
    pub waiting_pgs: usize,
    /// Why the class has no goal to move towards (it then moves nothing).
    pub blocker: Option<String>,
}

/// The next step and the remaining work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The moves of this step, class by class.
    pub moves: Vec<SlotMove>,
    pub classes: BTreeMap<StorageClass, ClassPlan>,
    /// Per node: slots it still has to gain / to give up (all steps to go).
    pub pending_in: BTreeMap<u64, usize>,
    pub pending_out: BTreeMap<u64, usize>,
}

impl Plan {
    /// Slots to move in all classes, this step's included.
    pub fn pending(&self) -> usize {
        self.classes.values().map(|c| c.pending).sum()
    }

    /// Why `node`'s slots cannot all move away, one line per blocked class
    /// that still holds some of them.
    pub fn drain_blocker(&self, state: &PlacementState, node: u64) -> Option<String> {
        let lines: Vec<String> = self
            .classes
            .iter()
            .filter_map(|(class, p)| {
                let holds = state
                    .classes
                    .get(class)
                    .is_some_and(|c| c.groups.iter().any(|g| g.contains(&node)));
                p.blocker.as_ref().filter(|_| holds).cloned()
            })
            .collect();
        (!lines.is_empty()).then(|| lines.join("; "))
    }
}

/// What a data node's last repair pass reported (see the heartbeat fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Bodies missing fragments in the PGs it is primary of.
    pub backlog: u64,
    /// Completed passes since it started (0: none yet, the rest means nothing).
    pub passes: u64,
    /// The newest map version that pass fully covered.
    pub map_version: u64,
}

impl RepairReport {
    /// Whether this report says the node's PGs are whole as of `version`.
    pub fn caught_up(&self, version: u64) -> bool {
        self.passes > 0 && self.map_version >= version && self.backlog == 0
    }
}

/// Repair across the serving data nodes, against one map version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairStatus {
    /// Sum of the serving nodes' backlogs.
    pub backlog: u64,
    /// Serving nodes that have not caught up with the version (no pass yet,
    /// an older version, or a backlog), by id.
    pub lagging: Vec<u64>,
}

impl RepairStatus {
    pub fn caught_up(&self) -> bool {
        self.lagging.is_empty()
    }
}

/// Repair of the serving nodes (`(id, last report)`) against `version`.
/// Nodes that are not serving are left out by the caller: a down node
/// cannot repair, and its PGs are repaired by their next member.
pub fn repair_status(serving: &[(u64, Option<RepairReport>)], version: u64) -> RepairStatus {
    RepairStatus {
        backlog: serving
            .iter()
            .filter_map(|(_, r)| r.map(|r| r.backlog))
            .sum(),
        lagging: serving
            .iter()
            .filter(|(_, r)| !r.is_some_and(|r| r.caught_up(version)))
            .map(|(id, _)| *id)
            .collect(),
    }
}

/// Whether the next step may go, given the repair of the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepGate {
    /// Repair caught up with the last step (or there was none).
    Go,
    /// Repair is still rebuilding what the last step moved.
    WaitForRepair,
    /// Repair has not caught up within the limit: step anyway.
    Overdue,
}

/// The gate for the next step: `last_step_version` is the map version the
/// last step made (0: no step yet), `caught_up` whether repair caught up with
/// it, `since_step_ms` how long ago it was, `limit_ms` the longest wait.
pub fn step_gate(
    last_step_version: u64,
    caught_up: bool,
    since_step_ms: i64,
    limit_ms: i64,
) -> StepGate {
    if last_step_version == 0 || caught_up {
        StepGate::Go
    } else if since_step_ms >= limit_ms || since_step_ms < 0 {
        // A clock that went back must not hold movement until it catches up.
        StepGate::Overdue
    } else {
        StepGate::WaitForRepair
    }
}

/// Slots `node` holds per built class.
pub fn slots_by_class(state: &PlacementState, node: u64) -> BTreeMap<StorageClass, usize> {
    state
        .classes
        .iter()
        .map(|(class, c)| {
            let n = c.groups.iter().flatten().filter(|&&id| id == node).count();
            (*class, n)
        })
        .collect()
}

/// The next step towards every built class's goal: at most `max_moves`
/// slots per class, at most one per PG, most urgent first (slots of down
/// nodes, then of nodes not serving, then of decommissioned ones, then
/// plain rebalancing), then by PG id.
pub fn plan(state: &PlacementState, nodes: &[NodeView], max_moves: usize) -> Plan {
    let by_id: BTreeMap<u64, &NodeView> = nodes.iter().map(|n| (n.desc.id, n)).collect();
    let eligible: Vec<NodeDesc> = nodes
        .iter()
        .filter(|n| n.drain.is_none())
        .map(|n| n.desc.clone())
        .collect();
    let zones = eligible
        .iter()
        .map(|n| n.zone.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    let mut out = Plan::default();
    for (class, c) in &state.classes {
        let mut cp = ClassPlan::default();
        let goal = match compute(&eligible, c.groups.len() as u32, c.rules, Some(&c.groups)) {
            Ok(goal) => goal,
            Err(e) => {
                cp.blocker = Some(explain(*class, c.rules, &e, zones));
                out.classes.insert(*class, cp);
                continue;
            }
        };
        let cap = c.rules.max_per_zone(zones);
        // (urgency, pg, move) for each PG that may move a slot now.
        let mut candidates: Vec<(u8, SlotMove)> = Vec::new();
        for (pg, (cur, want)) in c.groups.iter().zip(&goal).enumerate() {
            let pairs = pair_slots(cur, want, &by_id);
            if pairs.is_empty() {
                continue;
            }
            cp.pending += pairs.len();
            for &(_, from, to) in &pairs {
                *out.pending_out.entry(from).or_default() += 1;
                *out.pending_in.entry(to).or_default() += 1;
            }
            let best = pairs
                .iter()
                .filter(|&&(slot, from, to)| may_move(cur, slot, from, to, &by_id, cap))
                .min_by_key(|&&(_, from, _)| urgency(by_id.get(&from).copied()));
            match best {
                Some(&(slot, from, to)) => candidates.push((
                    urgency(by_id.get(&from).copied()),
                    SlotMove {
                        class: *class,
                        pg: pg as u32,
                        slot,
                        from,
                        to,
                    },
                )),
                None => cp.waiting_pgs += 1,
            }
        }
        candidates.sort_by_key(|(u, m)| (*u, m.pg));
        out.moves
            .extend(candidates.into_iter().take(max_moves).map(|(_, m)| m));
        out.classes.insert(*class, cp);
    }
    out
}

/// Applies one step's moves; bumps the version once if anything moved.
/// A move whose slot no longer holds `from` is skipped. Returns how many moved.
pub fn apply(state: &mut PlacementState, moves: &[SlotMove]) -> usize {
    let mut moved = 0;
    for m in moves {
        let Some(slot) = state
            .classes
            .get_mut(&m.class)
            .and_then(|c| c.groups.get_mut(m.pg as usize))
            .and_then(|g| g.get_mut(m.slot))
        else {
            continue;
        };
        if *slot == m.from {
            *slot = m.to;
            moved += 1;
        }
    }
    if moved > 0 {
        state.version += 1;
    }
    moved
}

/// Lower is more urgent.
fn urgency(from: Option<&NodeView>) -> u8 {
    match from {
        // A member PD does not even know: nothing serves that fragment.
        None => 0,
        Some(n) if n.drain == Some(Drain::Down) => 0,
        Some(n) if !n.serving => 1,
        Some(n) if n.drain == Some(Drain::Decommission) => 2,
        Some(_) => 3,
    }
}

fn serving(by_id: &BTreeMap<u64, &NodeView>, id: u64) -> bool {
    by_id.get(&id).is_some_and(|n| n.serving)
}

fn zone_of<'a>(by_id: &BTreeMap<u64, &'a NodeView>, id: u64) -> &'a str {
    by_id.get(&id).map_or("", |n| n.desc.zone.as_str())
}

/// Whether slot `slot` of PG `cur` may go from `from` to `to` now.
fn may_move(
    cur: &[u64],
    slot: usize,
    from: u64,
    to: u64,
    by_id: &BTreeMap<u64, &NodeView>,
    cap: usize,
) -> bool {
    if !serving(by_id, to) {
        // It could not rebuild anything yet; wait for it.
        return false;
    }
    if serving(by_id, from) {
        // Taking a serving member out (it stops counting as a holder while
        // the new one rebuilds) only when no other member is missing.
        let others_serve = cur
            .iter()
            .enumerate()
            .all(|(i, &id)| i == slot || serving(by_id, id));
        if !others_serve {
            return false;
        }
    }
    let (zf, zt) = (zone_of(by_id, from), zone_of(by_id, to));
    if zf == zt {
        return true;
    }
    let in_zone = cur
        .iter()
        .enumerate()
        .filter(|&(i, &id)| i != slot && zone_of(by_id, id) == zt)
        .count();
    in_zone < cap
}

/// The slots of `cur` whose member the goal drops, each paired with an
/// incoming member of the goal: same zone first, so such a move changes no
/// zone count; the rest pair up across zones, each adding to a zone that
/// the goal holds more of than `cur` (so it stays under the cap).
fn pair_slots(
    cur: &[u64],
    goal: &[u64],
    by_id: &BTreeMap<u64, &NodeView>,
) -> Vec<(usize, u64, u64)> {
    let leaving: Vec<(usize, u64)> = cur
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, id)| !goal.contains(id))
        .collect();
    let mut incoming: Vec<u64> = goal
        .iter()
        .copied()
        .filter(|id| !cur.contains(id))
        .collect();
    let mut pairs = Vec::with_capacity(leaving.len());
    let mut unpaired = Vec::new();
    for (slot, from) in leaving {
        let zone = zone_of(by_id, from);
        match incoming.iter().position(|&to| zone_of(by_id, to) == zone) {
            Some(i) => pairs.push((slot, from, incoming.remove(i))),
            None => unpaired.push((slot, from)),
        }
    }
    pairs.extend(
        unpaired
            .into_iter()
            .zip(incoming)
            .map(|((slot, from), to)| (slot, from, to)),
    );
    pairs.sort_unstable();
    pairs
}

/// Why the eligible nodes cannot hold `class`, for operators.
fn explain(class: StorageClass, rules: Rules, e: &PlacementError, zones: usize) -> String {
    let name = class.as_str_name();
    match e {
        PlacementError::TooFewNodes { need, have } => format!(
            "{name}: cannot move slots: every PG needs {need} distinct data nodes and only \
             {have} would remain (not leaving, not down); add a data node first"
        ),
        PlacementError::TooFewZones { need, have } => format!(
            "{name}: cannot move slots: it needs data nodes in at least {need} zones and only \
             {have} would remain; add a data node in another zone first"
        ),
        PlacementError::Unsatisfiable { .. } => format!(
            "{name}: cannot move slots: the nodes that would remain cannot keep at most {} of \
             a PG's {} members per zone (a zone has too few nodes); add a data node first",
            rules.max_per_zone(zones),
            rules.width()
        ),
        PlacementError::NoGroups => format!("{name}: the class has no placement groups"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::ClassGroups;

    fn desc(id: u64, zone: &str) -> NodeDesc {
        NodeDesc {
            id,
            zone: zone.into(),
            rack: String::new(),
            host: format!("h{id}"),
        }
    }

    fn up(id: u64, zone: &str) -> NodeView {
        NodeView {
            desc: desc(id, zone),
            serving: true,
            drain: None,
        }
    }

    /// Six nodes, two per zone (the `kura dev` layout), ids 1..=6.
    fn dev() -> Vec<NodeView> {
        (1..=6)
            .map(|i| up(i, &format!("z{}", i.div_ceil(2))))
            .collect()
    }

    fn built(nodes: &[NodeView], num_pgs: u32, classes: &[StorageClass]) -> PlacementState {
        let descs: Vec<NodeDesc> = nodes.iter().map(|n| n.desc.clone()).collect();
        let mut p = PlacementState {
            version: 1,
            classes: BTreeMap::new(),
        };
        for class in classes {
            let rules = Rules::for_class(*class).unwrap();
            let groups = compute(&descs, num_pgs, rules, None).unwrap();
            p.classes.insert(*class, ClassGroups { rules, groups });
        }
        p
    }

    fn zone_counts(nodes: &[NodeView], g: &[u64]) -> BTreeMap<String, usize> {
        let mut count = BTreeMap::new();
        for id in g {
            let z = nodes
                .iter()
                .find(|n| n.desc.id == *id)
                .unwrap()
                .desc
                .zone
                .clone();
            *count.entry(z).or_default() += 1;
        }
        count
    }

    /// Checks one step against the rules; returns how many slots it moved.
    fn check_step(
        before: &PlacementState,
        after: &PlacementState,
        nodes: &[NodeView],
        max: usize,
    ) -> usize {
        let mut total = 0;
        for (class, c) in &after.classes {
            let old = &before.classes[class].groups;
            let cap = c.rules.max_per_zone(3);
            let mut moved = 0;
            for (pg, (a, b)) in c.groups.iter().zip(old).enumerate() {
                let changed = a.iter().zip(b).filter(|(x, y)| x != y).count();
                assert!(changed <= 1, "{class:?} pg {pg}: {b:?} -> {a:?}");
                moved += changed;
                assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), a.len(), "distinct");
                let counts = zone_counts(nodes, a);
                assert!(
                    counts.values().all(|&n| n <= cap),
                    "{class:?} {a:?} {counts:?}"
                );
            }
            assert!(moved <= max, "{class:?} moved {moved} > {max}");
            total += moved;
        }
        total
    }

    /// Steps until nothing is pending; checks every step. Returns the steps taken.
    fn run_to_end(p: &mut PlacementState, nodes: &[NodeView], max: usize) -> usize {
        for step in 0..1000 {
            let plan = plan(p, nodes, max);
            if plan.moves.is_empty() {
                assert_eq!(plan.pending(), 0, "stuck: {plan:?}");
                return step;
            }
            let before = p.clone();
            let version = p.version;
            assert_eq!(apply(p, &plan.moves), plan.moves.len());
            assert_eq!(p.version, version + 1, "one version per step");
            assert_eq!(check_step(&before, p, nodes, max), plan.moves.len());
        }
        panic!("did not converge");
    }

    fn eligible(nodes: &[NodeView]) -> Vec<NodeDesc> {
        nodes
            .iter()
            .filter(|n| n.drain.is_none())
            .map(|n| n.desc.clone())
            .collect()
    }

    /// The map equals the full recompute: same members per PG, and a fixed point.
    fn assert_converged(p: &PlacementState, nodes: &[NodeView]) {
        let el = eligible(nodes);
        for c in p.classes.values() {
            let fresh = compute(&el, c.groups.len() as u32, c.rules, None).unwrap();
            for (a, b) in c.groups.iter().zip(&fresh) {
                let (a, b): (BTreeSet<_>, BTreeSet<_>) = (a.iter().collect(), b.iter().collect());
                assert_eq!(a, b);
            }
            let again = compute(&el, c.groups.len() as u32, c.rules, Some(&c.groups)).unwrap();
            assert_eq!(again, c.groups, "a fixed point");
        }
    }

    const BOTH: [StorageClass; 2] = [StorageClass::Replica3, StorageClass::Ec42];

    #[test]
    fn nothing_moves_when_nothing_changed() {
        let nodes = dev();
        let p = built(&nodes, 64, &BOTH);
        let plan = plan(&p, &nodes, 8);
        assert!(plan.moves.is_empty());
        assert_eq!(plan.pending(), 0);
        assert!(plan.classes.values().all(|c| c.blocker.is_none()));
    }

    #[test]
    fn two_joining_nodes_take_a_share_in_bounded_steps_and_converge() {
        let nodes = dev();
        let mut p = built(&nodes, 64, &BOTH);
        let mut more = nodes.clone();
        more.extend([up(7, "z1"), up(8, "z2")]);
        let first = plan(&p, &more, 8);
        let pending = first.pending();
        assert!(
            pending > 16,
            "the new nodes should win many slots: {pending}"
        );
        assert_eq!(first.moves.len(), 16, "8 per class");
        // Only the new nodes gain slots; each move stays inside its zone here.
        assert!(first.moves.iter().all(|m| m.to == 7 || m.to == 8));
        assert_eq!(first.pending_in.keys().copied().collect::<Vec<_>>(), [7, 8]);
        let steps = run_to_end(&mut p, &more, 8);
        assert!(steps >= pending.div_ceil(16), "{steps} steps for {pending}");
        assert_converged(&p, &more);
        for id in [7, 8] {
            let held: usize = slots_by_class(&p, id).values().sum();
            // 64*3 + 64*6 = 576 slots over 8 nodes: about 72 each.
            assert!((36..=110).contains(&held), "node {id} holds {held}");
        }
    }

    #[test]
    fn a_node_in_a_new_zone_pairs_moves_across_zones_under_the_cap() {
        let nodes = dev();
        let mut p = built(&nodes, 64, &BOTH);
        let mut more = nodes.clone();
        more.extend([up(7, "z4"), up(8, "z4")]);
        run_to_end(&mut p, &more, 5);
        assert_converged(&p, &more);
        for c in p.classes.values() {
            let cap = c.rules.max_per_zone(4);
            for g in &c.groups {
                assert!(zone_counts(&more, g).values().all(|&n| n <= cap));
            }
        }
    }

    #[test]
    fn decommission_drains_replica3_but_ec_4_2_on_six_nodes_cannot_and_says_why() {
        let mut nodes = dev();
        let mut p = built(&nodes, 32, &BOTH);
        nodes[0].drain = Some(Drain::Decommission);
        let first = plan(&p, &nodes, 8);
        let ec = &first.classes[&StorageClass::Ec42];
        let why = ec.blocker.clone().expect("EC_4_2 cannot drain");
        assert!(
            why.contains("needs 6 distinct data nodes and only 5 would remain"),
            "{why}"
        );
        assert_eq!(ec.pending, 0);
        assert!(first
            .moves
            .iter()
            .all(|m| m.class == StorageClass::Replica3));
        assert!(
            first.moves.iter().all(|m| m.from == 1 && m.to == 2),
            "same zone"
        );
        run_to_end(&mut p, &nodes, 8);
        let held = slots_by_class(&p, 1);
        assert_eq!(held[&StorageClass::Replica3], 0);
        assert!(held[&StorageClass::Ec42] > 0, "EC_4_2 keeps it");
        let last = plan(&p, &nodes, 8);
        assert_eq!(last.drain_blocker(&p, 1), Some(why));
        assert_eq!(
            last.drain_blocker(&p, 2),
            Some(last.classes[&StorageClass::Ec42].blocker.clone().unwrap())
        );
    }

    #[test]
    fn decommission_with_a_spare_node_drains_completely() {
        let mut nodes = dev();
        nodes.push(up(7, "z1"));
        let mut p = built(&nodes, 32, &BOTH);
        assert!(slots_by_class(&p, 1).values().sum::<usize>() > 0);
        nodes[0].drain = Some(Drain::Decommission);
        let first = plan(&p, &nodes, 4);
        assert!(first.classes.values().all(|c| c.blocker.is_none()));
        assert_eq!(
            first.pending_out.keys().copied().collect::<Vec<_>>(),
            [1],
            "only the leaving node's slots move"
        );
        run_to_end(&mut p, &nodes, 4);
        assert_eq!(slots_by_class(&p, 1).values().sum::<usize>(), 0);
        assert!(!p.references(1));
        assert_converged(&p, &nodes);
    }

    #[test]
    fn a_down_node_is_rebuilt_elsewhere_first_and_healthy_members_wait() {
        let mut nodes = dev();
        nodes.push(up(7, "z1"));
        let mut p = built(&nodes, 32, &BOTH);
        nodes[0].serving = false;
        nodes[0].drain = Some(Drain::Down);
        // Node 8 joins at the same time: PGs that hold node 1 only replace node 1.
        nodes.push(up(8, "z3"));
        let first = plan(&p, &nodes, 100);
        for m in &first.moves {
            let g = &p.classes[&m.class].groups[m.pg as usize];
            if g.contains(&1) {
                assert_eq!(m.from, 1, "a degraded PG only replaces its missing member");
            }
        }
        run_to_end(&mut p, &nodes, 3);
        assert!(!p.references(1));
        assert_converged(&p, &nodes);
    }

    #[test]
    fn a_briefly_silent_member_holds_back_the_moves_of_its_pgs() {
        let nodes = dev();
        let p = built(&nodes, 16, &[StorageClass::Replica3]);
        let mut more = nodes.clone();
        more.push(up(7, "z1"));
        more[2].serving = false; // node 3: not heartbeating, not down for good
        let plan = plan(&p, &more, 100);
        let groups = &p.classes[&StorageClass::Replica3].groups;
        for m in &plan.moves {
            assert!(!groups[m.pg as usize].contains(&3), "{m:?}");
        }
        let waiting = plan.classes[&StorageClass::Replica3].waiting_pgs;
        let with_3 = groups
            .iter()
            .zip(compute(&eligible(&more), 16, Rules::REPLICA3, Some(groups)).unwrap())
            .filter(|(g, want)| g.contains(&3) && *g != want)
            .count();
        assert_eq!(waiting, with_3);
        // The destination must serve too.
        let mut silent_new = nodes.clone();
        silent_new.push(NodeView {
            serving: false,
            ..up(7, "z1")
        });
        let plan = super::plan(&p, &silent_new, 100);
        assert!(plan.moves.is_empty());
        assert!(plan.pending() > 0);
    }

    #[test]
    fn a_down_node_in_a_zone_that_cannot_spare_it_is_left_and_reported() {
        let mut nodes = dev();
        let mut p = built(&nodes, 16, &BOTH);
        nodes[4].serving = false;
        nodes[4].drain = Some(Drain::Down);
        let first = plan(&p, &nodes, 8);
        let why = first.classes[&StorageClass::Ec42].blocker.clone().unwrap();
        assert!(why.starts_with("EC_4_2: cannot move slots"), "{why}");
        // REPLICA3 (one per zone) rebuilds on node 6, the other node of z3.
        assert!(first.moves.iter().all(|m| m.from == 5 && m.to == 6));
        run_to_end(&mut p, &nodes, 8);
        assert_eq!(slots_by_class(&p, 5)[&StorageClass::Replica3], 0);
        assert!(plan(&p, &nodes, 8).drain_blocker(&p, 5).is_some());
    }

    #[test]
    fn a_node_back_before_it_is_drained_gets_a_fair_share_again() {
        let mut nodes = dev();
        nodes.push(up(7, "z1"));
        let original = built(&nodes, 32, &[StorageClass::Replica3]);
        let mut p = original.clone();
        nodes[0].serving = false;
        nodes[0].drain = Some(Drain::Down);
        let step = plan(&p, &nodes, 4);
        apply(&mut p, &step.moves);
        nodes[0].serving = true;
        nodes[0].drain = None;
        run_to_end(&mut p, &nodes, 4);
        // Back to the same member sets as before it went down.
        for (a, b) in p.classes[&StorageClass::Replica3]
            .groups
            .iter()
            .zip(&original.classes[&StorageClass::Replica3].groups)
        {
            assert_eq!(
                a.iter().collect::<BTreeSet<_>>(),
                b.iter().collect::<BTreeSet<_>>()
            );
        }
    }

    #[test]
    fn zero_moves_per_step_moves_nothing_but_reports_the_work() {
        let nodes = dev();
        let p = built(&nodes, 16, &BOTH);
        let mut more = nodes.clone();
        more.push(up(7, "z2"));
        let plan = plan(&p, &more, 0);
        assert!(plan.moves.is_empty());
        assert!(plan.pending() > 0);
    }

    #[test]
    fn repair_catches_up_when_every_serving_node_covered_the_version_with_no_backlog() {
        let r = |backlog, passes, map_version| {
            Some(RepairReport {
                backlog,
                passes,
                map_version,
            })
        };
        let all = [(1, r(0, 3, 5)), (2, r(0, 9, 6)), (3, r(0, 1, 5))];
        let s = repair_status(&all, 5);
        assert!(s.caught_up());
        assert_eq!(s.backlog, 0);
        assert!(
            !repair_status(&all, 6).caught_up(),
            "nodes 1 and 3 are on 5"
        );
        assert_eq!(repair_status(&all, 6).lagging, [1, 3]);
        let busy = [(1, r(4, 3, 5)), (2, r(2, 9, 6)), (3, None)];
        let s = repair_status(&busy, 5);
        assert_eq!(s.backlog, 6);
        assert_eq!(s.lagging, [1, 2, 3], "a backlog, a backlog, no report");
        assert!(
            !repair_status(&[(1, r(0, 0, 0))], 0).caught_up(),
            "no pass yet"
        );
        assert!(
            repair_status(&[], 7).caught_up(),
            "nobody serving: nobody to wait for"
        );
    }

    #[test]
    fn a_step_waits_for_repair_up_to_the_limit() {
        assert_eq!(step_gate(0, false, 0, 1_000), StepGate::Go, "no step yet");
        assert_eq!(step_gate(4, true, 0, 1_000), StepGate::Go);
        assert_eq!(step_gate(4, false, 999, 1_000), StepGate::WaitForRepair);
        assert_eq!(step_gate(4, false, 1_000, 1_000), StepGate::Overdue);
        assert_eq!(
            step_gate(4, false, -5, 1_000),
            StepGate::Overdue,
            "clock went back"
        );
    }

    #[test]
    fn apply_skips_stale_moves() {
        let nodes = dev();
        let mut p = built(&nodes, 4, &[StorageClass::Replica3]);
        let g0 = p.classes[&StorageClass::Replica3].groups[0].clone();
        let stale = SlotMove {
            class: StorageClass::Replica3,
            pg: 0,
            slot: 0,
            from: 99,
            to: 7,
        };
        assert_eq!(apply(&mut p, &[stale]), 0);
        assert_eq!(p.version, 1);
        assert_eq!(p.classes[&StorageClass::Replica3].groups[0], g0);
    }
}
