//! PD's scheduling core. Pure logic first: a [`model::ClusterModel`] snapshot
//! goes through every enabled [`Scheduler`] and comes out as a list of
//! [`Operator`]s; no I/O, so every decision is unit-tested on hand-made
//! models. Then the I/O around it: [`coordinator`] builds the model from
//! PD's live state every `--schedule-interval-secs`, tracks running
//! operators and paused schedulers, and runs operators through
//! [`transfer`] (also what `POST /pd/api/v1/operators` with
//! `transfer-leader` uses); [`http`] is its admin API.
//!
//! Schedulers today: `replica-checker` (re-creates peers of down stores),
//! `balance-region` (evens out peers per store, e.g. onto a new store),
//! `balance-leader`, `hot-region` (spreads read/write flow). A new one
//! (e.g. merge-checker) is a module with a type
//! implementing [`Scheduler`], listed in [`default_schedulers`], and, if it
//! makes a new kind of step, an [`OperatorKind`] variant and its executor.

pub mod balance_leader;
pub mod balance_region;
pub mod coordinator;
pub mod election_watch;
pub mod hot_region;
pub mod http;
pub mod model;
pub mod replica_checker;
pub mod scatter;
pub mod transfer;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use model::ClusterModel;

/// The operator name of a leader transfer (HTTP `name`, pdctl subcommand).
pub const TRANSFER_LEADER: &str = "transfer-leader";
/// The operator name of moving a region's peer to another store.
pub const MOVE_PEER: &str = "move-peer";
/// The operator name of removing a region's peer.
pub const REMOVE_PEER: &str = "remove-peer";
/// The operator name of adding a peer (learner, then promoted).
pub const ADD_PEER: &str = "add-peer";
/// The `source` of operators a person asked for.
pub const ADMIN: &str = "admin";

/// One step PD asks the stores to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorKind {
    /// Move the region's leadership from `from_store` (0: unknown) to the
    /// peer on `to_store`.
    TransferLeader { from_store: u64, to_store: u64 },
    /// Move the region's peer on `from_store` (down: replica-checker; full:
    /// balance-region) to `to_store` (add a learner, promote, remove the old peer).
    ReplacePeer { from_store: u64, to_store: u64 },
    /// Remove the region's peer on `store` (replica-checker: a learner no
    /// operator is growing any more).
    RemovePeer { store: u64 },
    /// Add a peer on `store`: a learner that catches up, then promoted
    /// (admin `add-peer`).
    AddPeer { store: u64 },
}

impl OperatorKind {
    pub fn name(&self) -> &'static str {
        match self {
            OperatorKind::TransferLeader { .. } => TRANSFER_LEADER,
            OperatorKind::ReplacePeer { .. } => MOVE_PEER,
            OperatorKind::RemovePeer { .. } => REMOVE_PEER,
            OperatorKind::AddPeer { .. } => ADD_PEER,
        }
    }

    /// The store the step takes something from and the one it gives it
    /// to (0: none, e.g. a removal).
    pub fn from_to(&self) -> (u64, u64) {
        match *self {
            OperatorKind::TransferLeader {
                from_store,
                to_store,
            }
            | OperatorKind::ReplacePeer {
                from_store,
                to_store,
            } => (from_store, to_store),
            OperatorKind::RemovePeer { store } => (store, 0),
            OperatorKind::AddPeer { store } => (0, store),
        }
    }

    /// Stores whose limit the step uses.
    fn stores(&self) -> Vec<u64> {
        let (from, to) = self.from_to();
        [from, to].into_iter().filter(|&s| s != 0).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    pub region_id: u64,
    pub kind: OperatorKind,
    /// Who made it: a scheduler's name or [`ADMIN`].
    pub source: &'static str,
}

/// At most `per_minute` leader transfers in or out of each store in any
/// sliding minute ("store limit"): bounds the churn a scheduler causes.
#[derive(Debug)]
pub struct StoreLimiter {
    per_minute: usize,
    /// `pdctl store limit ID RATE`: stores with their own limit.
    overrides: BTreeMap<u64, usize>,
    /// Start times (unix ms) of each store's transfers in the last minute.
    recent: BTreeMap<u64, VecDeque<i64>>,
}

const MINUTE_MS: i64 = 60_000;

impl StoreLimiter {
    pub fn new(per_minute: usize) -> Self {
        StoreLimiter {
            per_minute,
            overrides: BTreeMap::new(),
            recent: BTreeMap::new(),
        }
    }

    pub fn per_minute(&self) -> usize {
        self.per_minute
    }

    /// Sets the default limit and the stores with their own (runtime
    /// config and persisted store settings, applied each round).
    pub fn configure(&mut self, per_minute: usize, overrides: BTreeMap<u64, usize>) {
        self.per_minute = per_minute;
        self.overrides = overrides;
    }

    /// Store `store`'s limit per minute.
    pub fn limit_of(&self, store: u64) -> usize {
        self.overrides
            .get(&store)
            .copied()
            .unwrap_or(self.per_minute)
    }

    /// Whether `store` may take part in one more transfer now.
    pub fn available(&mut self, store: u64, now_ms: i64) -> bool {
        let q = self.recent.entry(store).or_default();
        while q.front().is_some_and(|t| now_ms - *t >= MINUTE_MS) {
            q.pop_front();
        }
        let limit = self
            .overrides
            .get(&store)
            .copied()
            .unwrap_or(self.per_minute);
        q.len() < limit
    }

    /// Counts one transfer for `store` (admin operators count without asking).
    pub fn take(&mut self, store: u64, now_ms: i64) {
        if store != 0 {
            self.recent.entry(store).or_default().push_back(now_ms);
        }
    }

    /// Transfers `store` took part in during the last minute.
    pub fn used(&mut self, store: u64, now_ms: i64) -> usize {
        self.available(store, now_ms);
        self.recent.get(&store).map_or(0, VecDeque::len)
    }
}

/// What a scheduler may consult and use besides the model.
pub struct ScheduleContext<'a> {
    pub now_ms: i64,
    /// Regions with a running (or just planned) operator: left alone.
    pub busy_regions: &'a mut BTreeSet<u64>,
    pub limits: &'a mut StoreLimiter,
}

/// One scheduling policy: looks at the model, proposes operators.
pub trait Scheduler: Send {
    /// Stable name (`pdctl scheduler pause NAME`).
    fn name(&self) -> &'static str;
    /// Operators for this round. Must skip `ctx.busy_regions`, add the
    /// regions it picks to it, and take store limits for what it plans.
    fn schedule(&mut self, model: &ClusterModel, ctx: &mut ScheduleContext<'_>) -> Vec<Operator>;
    /// Takes the runtime config (`pdctl config set`) before a round.
    fn configure(&mut self, _rc: &crate::config::RuntimeConfig) {}
}

/// The schedulers PD runs, in order.
pub fn default_schedulers() -> Vec<Box<dyn Scheduler>> {
    vec![
        Box::new(replica_checker::ReplicaChecker::default()),
        Box::new(balance_region::BalanceRegion::default()),
        Box::new(balance_leader::BalanceLeader::default()),
        Box::new(hot_region::HotRegion::default()),
    ]
}

/// One round: every scheduler not in `paused`, in order; each sees the
/// regions earlier ones picked as busy.
pub fn run_round(
    schedulers: &mut [Box<dyn Scheduler>],
    paused: &BTreeSet<String>,
    model: &ClusterModel,
    ctx: &mut ScheduleContext<'_>,
) -> Vec<Operator> {
    let mut ops = Vec::new();
    for s in schedulers.iter_mut() {
        if paused.contains(s.name()) {
            continue;
        }
        ops.extend(s.schedule(model, ctx));
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_limit_is_a_sliding_minute() {
        let mut l = StoreLimiter::new(2);
        assert!(l.available(1, 0));
        l.take(1, 0);
        l.take(1, 10_000);
        assert!(!l.available(1, 30_000));
        assert!(l.available(2, 30_000), "per store");
        assert!(l.available(1, 60_000), "the first one left the window");
        assert_eq!(l.used(1, 60_000), 1);
        l.take(0, 0);
        assert_eq!(l.used(0, 0), 0, "unknown store 0 is not counted");
        // Store 1 gets its own limit of 3; the default drops to 1.
        l.configure(1, [(1, 3)].into());
        assert_eq!((l.limit_of(1), l.limit_of(2)), (3, 1));
        assert!(l.available(1, 60_000), "1 used of 3");
        l.take(2, 60_000);
        assert!(!l.available(2, 60_000));
    }

    #[test]
    fn paused_schedulers_do_not_run() {
        let model = model::test_util::cluster(&[6, 0, 0]);
        let mut scheds = default_schedulers();
        let mut busy = BTreeSet::new();
        let mut limits = StoreLimiter::new(100);
        let mut ctx = ScheduleContext {
            now_ms: 0,
            busy_regions: &mut busy,
            limits: &mut limits,
        };
        let paused: BTreeSet<String> = ["balance-leader".to_string()].into();
        assert!(run_round(&mut scheds, &paused, &model, &mut ctx).is_empty());
        assert!(!run_round(&mut scheds, &BTreeSet::new(), &model, &mut ctx).is_empty());
    }
}
