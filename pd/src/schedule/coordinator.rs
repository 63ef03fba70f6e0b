//! The I/O side of scheduling: every `--schedule-interval-secs` builds a
//! [`ClusterModel`] from PD's live state, runs the enabled schedulers and
//! starts their operators; keeps the running operators (one per region), the
//! last finished ones, the paused schedulers and the store limits. Admin
//! operators (`POST /pd/api/v1/operators`) go through the same path.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kura_proto::common::Region;
use kura_proto::pd::RegionInfo;

use super::election_watch::ElectionWatch;
use super::model::ClusterModel;
use super::{default_schedulers, run_round, Operator, OperatorKind, ScheduleContext, Scheduler};
use super::{transfer, StoreLimiter};
use crate::config::{RuntimeConfig, Settings};
use crate::operator::OperatorError;
use crate::server::{now_ms, PdCore};

/// A store silent this long is `Disconnected` for scheduling (stores
/// heartbeat every second; `Down` takes `--max-store-down-secs`).
pub const DISCONNECTED_AFTER_MS: i64 = 3_000;
/// Finished operators kept for `GET /pd/api/v1/operators`.
const KEEP_FINISHED: usize = 32;

/// Scheduling settings (`kura pd` flags).
#[derive(Clone, Debug)]
pub struct ScheduleConfig {
    /// Time between scheduling rounds; zero turns the loop off (admin
    /// operators still run).
    pub interval: Duration,
    /// Leader transfers each store may take part in per minute.
    pub leader_transfers_per_store_per_minute: usize,
}

/// An operator as `GET /pd/api/v1/operators` shows it.
#[derive(Clone, Debug)]
pub struct OperatorRecord {
    pub op: Operator,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// `None` while running; then "done" or the error.
    pub outcome: Option<String>,
    /// Set by `pdctl operator remove`: no further step starts.
    pub cancel: Arc<AtomicBool>,
}

impl OperatorRecord {
    fn new(op: &Operator, now_ms: i64) -> Self {
        OperatorRecord {
            op: op.clone(),
            started_ms: now_ms,
            finished_ms: None,
            outcome: None,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }
}

struct State {
    schedulers: Vec<Box<dyn Scheduler>>,
    /// `pdctl scheduler pause` (persisted in the cluster settings, copied
    /// here by [`sync_settings`]).
    paused: BTreeSet<String>,
    /// `pdctl scheduler remove` (likewise).
    disabled: BTreeSet<String>,
    limits: StoreLimiter,
    running: BTreeMap<u64, OperatorRecord>,
    finished: VecDeque<OperatorRecord>,
    /// Regions whose operator finished since the last round.
    finished_since_plan: BTreeSet<u64>,
    elections: ElectionWatch,
}

pub struct Coordinator {
    cfg: ScheduleConfig,
    state: Mutex<State>,
}

impl Coordinator {
    pub fn new(cfg: ScheduleConfig) -> Self {
        let limits = StoreLimiter::new(cfg.leader_transfers_per_store_per_minute);
        Coordinator {
            cfg,
            state: Mutex::new(State {
                schedulers: default_schedulers(),
                paused: BTreeSet::new(),
                disabled: BTreeSet::new(),
                limits,
                running: BTreeMap::new(),
                finished: VecDeque::new(),
                finished_since_plan: BTreeSet::new(),
                elections: ElectionWatch::default(),
            }),
        }
    }

    pub fn config(&self) -> &ScheduleConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned lock still holds
        // consistent data (every update is a single assignment or push).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one round on `model` and registers the operators it makes as
    /// running (the caller starts them with [`run_registered`]).
    pub fn plan(&self, model: &ClusterModel, now_ms: i64) -> Vec<Operator> {
        let mut st = self.lock();
        let st = &mut *st;
        let mut busy: BTreeSet<u64> = st.running.keys().copied().collect();
        // Leaders that moved since the last round without PD: elections.
        let mut moved_by_pd = std::mem::take(&mut st.finished_since_plan);
        moved_by_pd.extend(busy.iter().copied());
        st.elections.observe(model, &moved_by_pd, now_ms);
        let mut model = model.clone();
        st.elections.apply(&mut model, now_ms);
        let mut ctx = ScheduleContext {
            now_ms,
            busy_regions: &mut busy,
            limits: &mut st.limits,
        };
        let stopped: BTreeSet<String> = st.paused.union(&st.disabled).cloned().collect();
        let ops = run_round(&mut st.schedulers, &stopped, &model, &mut ctx);
        for op in &ops {
            st.running
                .insert(op.region_id, OperatorRecord::new(op, now_ms));
        }
        ops
    }

    /// Registers an admin operator; refused while the region has one running.
    pub fn begin(&self, op: &Operator, now_ms: i64) -> Result<(), OperatorError> {
        let mut st = self.lock();
        if let Some(cur) = st.running.get(&op.region_id) {
            return Err(OperatorError::Busy {
                region_id: op.region_id,
                running: format!("{} from {}", cur.op.kind.name(), cur.op.source),
            });
        }
        for s in op.kind.stores() {
            st.limits.take(s, now_ms);
        }
        st.running
            .insert(op.region_id, OperatorRecord::new(op, now_ms));
        Ok(())
    }

    fn finish(&self, region_id: u64, outcome: String) {
        let mut st = self.lock();
        st.finished_since_plan.insert(region_id);
        if let Some(mut rec) = st.running.remove(&region_id) {
            rec.finished_ms = Some(now_ms());
            rec.outcome = Some(outcome);
            st.finished.push_back(rec);
            while st.finished.len() > KEEP_FINISHED {
                st.finished.pop_front();
            }
        }
    }

    /// `pdctl operator remove`: asks region `region_id`'s running operator
    /// to stop (a step in flight finishes; no further step starts). Returns
    /// it, or None when the region has none running.
    pub fn cancel(&self, region_id: u64) -> Option<OperatorRecord> {
        let st = self.lock();
        let rec = st.running.get(&region_id)?;
        rec.cancel.store(true, Ordering::Release);
        Some(rec.clone())
    }

    /// The cancel flag of region `region_id`'s running operator.
    fn cancel_flag(&self, region_id: u64) -> Arc<AtomicBool> {
        self.lock()
            .running
            .get(&region_id)
            .map(|r| r.cancel.clone())
            .unwrap_or_default()
    }

    /// Running operators, then the last finished ones (oldest first).
    pub fn operators(&self) -> (Vec<OperatorRecord>, Vec<OperatorRecord>) {
        let st = self.lock();
        (
            st.running.values().cloned().collect(),
            st.finished.iter().cloned().collect(),
        )
    }

    /// Each scheduler's name, whether it is paused and whether it is disabled.
    pub fn schedulers(&self) -> Vec<(&'static str, bool, bool)> {
        let st = self.lock();
        st.schedulers
            .iter()
            .map(|s| {
                (
                    s.name(),
                    st.paused.contains(s.name()),
                    st.disabled.contains(s.name()),
                )
            })
            .collect()
    }

    /// Whether PD has a scheduler called `name`.
    pub fn knows(&self, name: &str) -> bool {
        self.lock().schedulers.iter().any(|s| s.name() == name)
    }

    /// Takes the persisted settings: paused and disabled schedulers, the
    /// default store limit and each store's own.
    pub fn apply_settings(&self, rc: &RuntimeConfig, s: &Settings) {
        let mut st = self.lock();
        st.paused = s.paused_schedulers.clone();
        st.disabled = s.disabled_schedulers.clone();
        let overrides = s
            .stores
            .iter()
            .filter_map(|(&id, set)| Some((id, set.limit_per_minute?)))
            .collect();
        st.limits.configure(rc.leader_transfer_limit, overrides);
        for s in &mut st.schedulers {
            s.configure(rc);
        }
    }

    /// Each store's limit per minute and operators in the last minute.
    pub fn limits(&self, stores: &[u64], now_ms: i64) -> Vec<(u64, usize, usize)> {
        let mut st = self.lock();
        stores
            .iter()
            .map(|&s| (s, st.limits.limit_of(s), st.limits.used(s, now_ms)))
            .collect()
    }

    /// Stores held back as targets after losing leaders to elections.
    pub fn held_back(&self, now_ms: i64) -> Vec<u64> {
        self.lock().elections.suspects(now_ms)
    }
}

/// Runs an operator [`Coordinator::plan`] or [`Coordinator::begin`]
/// registered, then records how it ended.
pub async fn run_registered(core: &PdCore, op: &Operator) -> Result<RegionInfo, OperatorError> {
    let cancel = core.schedule.cancel_flag(op.region_id);
    let res = match op.kind {
        _ if cancel.load(Ordering::Acquire) => Err(OperatorError::Cancelled(
            "cancelled before its first step".into(),
        )),
        OperatorKind::TransferLeader { to_store, .. } => {
            transfer::transfer_leader(core, op.region_id, to_store).await
        }
        _ => match change_peers(core, op, &cancel).await {
            Ok(_) => core
                .region_by_id(op.region_id)
                .await
                .ok_or(OperatorError::RegionNotFound(op.region_id)),
            Err(e) => Err(e),
        },
    };
    core.schedule.finish(op.region_id, outcome(&res));
    res
}

/// Registers an admin peer change (`add-peer`, `remove-peer`,
/// `transfer-peer`) and runs it, so `operator show` lists it, `operator
/// remove` can stop it between steps and it counts against store limits.
/// Refused while the region has another operator. Returns the region as
/// the store answered after the last step.
pub async fn run_admin_peer_change(core: &PdCore, op: &Operator) -> Result<Region, OperatorError> {
    core.schedule.begin(op, now_ms())?;
    let cancel = core.schedule.cancel_flag(op.region_id);
    let res = change_peers(core, op, &cancel).await;
    core.schedule.finish(op.region_id, outcome(&res));
    res
}

/// The membership steps of `op`.
async fn change_peers(
    core: &PdCore,
    op: &Operator,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Region, OperatorError> {
    let id = op.region_id;
    match op.kind {
        OperatorKind::ReplacePeer {
            from_store,
            to_store,
        } => {
            crate::conf_change::transfer_peer_cancellable(core, id, from_store, to_store, cancel)
                .await
        }
        OperatorKind::RemovePeer { store } => {
            crate::conf_change::remove_peer(core, id, store).await
        }
        OperatorKind::AddPeer { store } => crate::conf_change::add_peer(core, id, store).await,
        OperatorKind::TransferLeader { .. } => Err(OperatorError::Invalid(
            "a leader transfer is not a membership change".into(),
        )),
    }
}

/// How an operator ended, for `operator show`.
fn outcome<T>(res: &Result<T, OperatorError>) -> String {
    match res {
        Ok(_) => "done".to_string(),
        Err(e) => e.to_string(),
    }
}

/// Copies the persisted scheduler and store-limit settings and the runtime
/// config into the coordinator (each round, and after an admin change).
pub async fn sync_settings(core: &PdCore) {
    let settings = core.read(|c| c.settings.clone()).await;
    core.schedule.apply_settings(&core.runtime(), &settings);
}

/// One scheduling round on PD's current state; starts its operators.
pub async fn schedule_once(core: &Arc<PdCore>) -> usize {
    sync_settings(core).await;
    let now = now_ms();
    let max_down_ms = core.runtime().max_store_down_ms();
    let model = core
        .read(|c| ClusterModel::from_cluster(c, now, max_down_ms, DISCONNECTED_AFTER_MS))
        .await;
    let ops = core.schedule.plan(&model, now);
    for op in &ops {
        tracing::info!(
            region_id = op.region_id,
            scheduler = op.source,
            op = ?op.kind,
            "starting operator"
        );
        let core = core.clone();
        let op = op.clone();
        tokio::spawn(async move {
            if let Err(e) = run_registered(&core, &op).await {
                tracing::warn!(region_id = op.region_id, error = %e, "operator failed");
            }
        });
    }
    ops.len()
}

/// How often a loop turned off (interval 0) looks whether `config set
/// schedule-interval` turned it on.
const OFF_RECHECK: Duration = Duration::from_secs(1);

/// Runs [`schedule_once`] every `schedule-interval` (the runtime config,
/// read each round, so `pdctl config set` takes effect without a restart;
/// zero: no rounds) until `shutdown` flips.
pub async fn schedule_loop(core: Arc<PdCore>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    if core.runtime().schedule_interval.is_zero() {
        tracing::info!("scheduling loop off (schedule-interval 0) until config set turns it on");
    }
    loop {
        if *shutdown.borrow() {
            return;
        }
        let every = core.runtime().schedule_interval;
        // The first round also waits: stores get a round of heartbeats first.
        let wait = if every.is_zero() { OFF_RECHECK } else { every };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        // Only the leader of a replicated PD schedules (its model is the
        // live one; a follower's is not loaded).
        if core.runtime().schedule_interval.is_zero() || core.ensure_leader().await.is_err() {
            continue;
        }
        schedule_once(&core).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_flags_the_running_operator_of_a_region_only() {
        let c = Coordinator::new(ScheduleConfig {
            interval: Duration::from_secs(3),
            leader_transfers_per_store_per_minute: 10,
        });
        let op = Operator {
            region_id: 7,
            kind: OperatorKind::ReplacePeer {
                from_store: 1,
                to_store: 4,
            },
            source: super::super::ADMIN,
        };
        c.begin(&op, 0).unwrap();
        assert!(!c.cancel_flag(7).load(Ordering::Acquire));
        assert!(c.cancel(8).is_none(), "no operator on region 8");
        let rec = c.cancel(7).expect("running");
        assert_eq!(rec.op, op);
        assert!(rec.cancelled() && c.cancel_flag(7).load(Ordering::Acquire));
        c.finish(7, "cancelled after add-peer".into());
        assert!(c.cancel(7).is_none(), "finished: nothing to cancel");
        let (running, finished) = c.operators();
        assert!(running.is_empty());
        assert_eq!(
            finished[0].outcome.as_deref(),
            Some("cancelled after add-peer")
        );
    }
}
