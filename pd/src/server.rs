//! [`PdCore`]: the state behind both the gRPC service and the HTTP API — the
//! cluster model under one lock, its storage, and the periodic tick.
//!
//! Rule: a change that matters is saved before the call that made it returns
//! (ids, registrations, region metadata, bootstrap progress, the placement
//! maps). If a save fails, the call fails with `Unavailable` and the next call
//! retries the save before it answers; a map step whose save fails is undone,
//! so no client ever sees a map version that a restart could give to another
//! map.
//!
//! Replicated PD (`replica` set): saves go through the Raft log
//! (`replication`), only the serving leader answers ([`PdCore::ensure_leader`]),
//! and each time this member starts to serve a new term it reloads the model
//! from the replicated state, heartbeat statistics starting empty again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kura_proto::meta::StorageClass;
use kura_proto::pd::{
    ClassPlacement, DataNode, DataNodeHeartbeatRequest, GetClusterResponse, PdMember, PeerToCreate,
    PlacementGroup, PlacementMap, RegionHeartbeatRequest, RegionInfo, Store, StoreHeartbeatRequest,
};
use tokio::sync::{Mutex, MutexGuard};

use crate::bootstrap;
use crate::cluster::{Cluster, HeartbeatOutcome, Liveness, RegionEntry, StoreStats};
use crate::config::RuntimeConfig;
use crate::metrics::metrics;
use crate::placement::{self, PlacementState};
use crate::rebalance::{self, Plan, RepairReport, RepairStatus, StepGate};
use crate::replication::Replica;
use crate::storage::{StateFile, Storage, StorageError};
use crate::{Config, Error};

/// Most ids one AllocId call may take.
pub const MAX_ALLOC_COUNT: u32 = 100_000;
/// ScanRegions limit when the caller gives 0.
pub const DEFAULT_SCAN_LIMIT: usize = 1000;

/// Wall-clock unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Inner {
    cluster: Cluster,
    /// A save failed: the model holds changes the disk does not.
    dirty: bool,
    /// Region records changed since the last save; written by the next
    /// save or the next [`PdCore::flush_regions`], not before answering the
    /// heartbeat (see there).
    unsaved_regions: bool,
    /// Why each unbuilt storage class has no map yet (logged once per change).
    placement_blockers: BTreeMap<StorageClass, String>,
    /// The slot movement still to do, as of the last tick or admin call.
    plan: Plan,
    /// The step version whose repair wait was last logged (logged once).
    logged_wait: u64,
}

pub struct PdCore {
    cfg: Config,
    inner: Mutex<Inner>,
    storage: Arc<dyn Storage>,
    started: Instant,
    /// Set on a replicated PD.
    replica: Option<Arc<Replica>>,
    /// The Raft term whose state the model was loaded in (0: never loaded).
    loaded_term: AtomicU64,
    /// Scheduling: running operators, paused schedulers, store limits.
    pub schedule: crate::schedule::coordinator::Coordinator,
    /// Held from a state capture (under the model lock) until its write is
    /// done, so writes land in capture order even when the model lock is
    /// released before writing (`flush_regions`).
    save_order: Mutex<()>,
    /// The schedule settings in effect: the flags with `pdctl config set`
    /// values on top, refreshed whenever the model is loaded or changed by
    /// an admin call.
    runtime: std::sync::RwLock<RuntimeConfig>,
}

impl PdCore {
    /// Loads the saved state (or starts a new cluster and saves it at once).
    pub async fn open(cfg: Config, storage: Arc<dyn Storage>) -> Result<Self, Error> {
        let (cluster, fresh) = load_cluster(&storage, "the PD state").await?;
        kura_pd_client::cluster_id::set(cluster.cluster_id);
        tracing::info!(
            cluster_id = cluster.cluster_id,
            fresh,
            stores = cluster.stores().count(),
            data_nodes = cluster.data_nodes().count(),
            regions = cluster.region_count(),
            "PD state loaded"
        );
        let schedule = coordinator(&cfg);
        let runtime =
            std::sync::RwLock::new(RuntimeConfig::effective(&cfg, &cluster.settings.config));
        let core = PdCore {
            runtime,
            cfg,
            inner: Mutex::new(Inner {
                cluster,
                dirty: fresh,
                unsaved_regions: false,
                placement_blockers: BTreeMap::new(),
                plan: Plan::default(),
                logged_wait: 0,
            }),
            storage,
            started: Instant::now(),
            replica: None,
            loaded_term: AtomicU64::new(0),
            schedule,
            save_order: Mutex::new(()),
        };
        {
            let mut inner = core.inner.lock().await;
            core.save_if(&mut inner, fresh).await?;
        }
        core.update_gauges().await;
        Ok(core)
    }

    /// A member of a replicated PD. Its model is loaded when it first
    /// serves as leader ([`Self::ensure_leader`]).
    pub fn replicated(cfg: Config, replica: Arc<Replica>) -> Self {
        let schedule = coordinator(&cfg);
        PdCore {
            runtime: std::sync::RwLock::new(RuntimeConfig::from_flags(&cfg)),
            cfg,
            inner: Mutex::new(Inner {
                cluster: Cluster::new(0),
                dirty: false,
                unsaved_regions: false,
                placement_blockers: BTreeMap::new(),
                plan: Plan::default(),
                logged_wait: 0,
            }),
            storage: replica.clone(),
            started: Instant::now(),
            replica: Some(replica),
            loaded_term: AtomicU64::new(0),
            schedule,
            save_order: Mutex::new(()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Every member and the leader as this member knows it (a single PD:
    /// itself, id 1, always the leader).
    pub fn members(&self) -> (Vec<PdMember>, Option<PdMember>) {
        let Some(replica) = &self.replica else {
            let me = PdMember {
                id: 1,
                grpc_address: self.cfg.advertise.clone(),
                http_address: self.cfg.http_listen.to_string(),
            };
            return (vec![me.clone()], Some(me));
        };
        let pb = |p: &crate::replication::PeerSpec| PdMember {
            id: p.id,
            grpc_address: p.grpc.clone(),
            http_address: p.http.clone(),
        };
        let members = replica.members().iter().map(pb).collect();
        (members, replica.leader().map(pb))
    }

    /// The Raft member, on a replicated PD.
    pub fn replica(&self) -> Option<&Arc<Replica>> {
        self.replica.as_ref()
    }

    /// Ok when this PD may serve: always for a single PD; for a replicated
    /// one only on the leader once it applied everything before its term
    /// (loading the model for that term first). Otherwise `NotLeader`
    /// naming the leader when it is known.
    pub async fn ensure_leader(&self) -> Result<(), Error> {
        let Some(replica) = &self.replica else {
            return Ok(());
        };
        let status = replica.status();
        if !status.serving {
            let leader = replica
                .member(status.leader_id)
                .filter(|p| p.id != replica.id())
                .map(|p| (p.grpc.clone(), p.http.clone()));
            return Err(Error::NotLeader { leader });
        }
        if self.loaded_term.load(Ordering::Acquire) == status.term {
            return Ok(());
        }
        let mut inner = self.inner.lock().await;
        if self.loaded_term.load(Ordering::Acquire) == status.term {
            return Ok(());
        }
        self.reload(&mut inner).await?;
        kura_pd_client::cluster_id::set(inner.cluster.cluster_id);
        self.loaded_term.store(status.term, Ordering::Release);
        tracing::info!(
            member = replica.id(),
            term = status.term,
            cluster_id = inner.cluster.cluster_id,
            stores = inner.cluster.stores().count(),
            data_nodes = inner.cluster.data_nodes().count(),
            regions = inner.cluster.region_count(),
            "PD leader serving; state loaded from the replicated log"
        );
        Ok(())
    }

    /// Replaces the model with the applied replicated state (a new cluster
    /// when there is none yet, committed at once).
    async fn reload(&self, inner: &mut MutexGuard<'_, Inner>) -> Result<(), Error> {
        let (cluster, fresh) = load_cluster(&self.storage, "the replicated PD state").await?;
        self.refresh_runtime(&cluster);
        inner.cluster = cluster;
        inner.dirty = fresh;
        inner.unsaved_regions = false;
        inner.placement_blockers.clear();
        inner.plan = Plan::default();
        inner.logged_wait = 0;
        self.save_if(inner, fresh).await
    }

    fn max_down_ms(&self) -> i64 {
        self.runtime().max_store_down_ms()
    }

    /// The schedule settings in effect now (flags, then `config set` values).
    pub fn runtime(&self) -> RuntimeConfig {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn refresh_runtime(&self, c: &Cluster) {
        let rc = RuntimeConfig::effective(&self.cfg, &c.settings.config);
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = rc;
    }

    /// Runs `f` on a consistent view of the model.
    pub async fn read<R>(&self, f: impl FnOnce(&Cluster) -> R) -> R {
        f(&self.inner.lock().await.cluster)
    }

    /// Like [`Self::read`], also passing why each unbuilt class has no map
    /// yet and the slot movement still to do.
    pub async fn read_placement<R>(
        &self,
        f: impl FnOnce(&Cluster, &BTreeMap<StorageClass, String>, &Plan) -> R,
    ) -> R {
        let inner = self.inner.lock().await;
        f(&inner.cluster, &inner.placement_blockers, &inner.plan)
    }

    /// Saves the model if `changed`, if an earlier save failed, or if ids were
    /// handed out above the saved mark.
    async fn save_if(&self, inner: &mut MutexGuard<'_, Inner>, changed: bool) -> Result<(), Error> {
        if !(changed || inner.dirty || inner.cluster.ids.needs_persist()) {
            return Ok(());
        }
        let file = StateFile::from_cluster(&inner.cluster);
        let high = file.id_high_water;
        let regions_were_unsaved = std::mem::take(&mut inner.unsaved_regions);
        let _order = self.save_order.lock().await;
        match self.write_state(file).await {
            Ok(()) => {
                inner.dirty = false;
                inner.cluster.ids.mark_durable(high);
                Ok(())
            }
            Err(e) => {
                inner.dirty = true;
                inner.unsaved_regions |= regions_were_unsaved;
                Err(e)
            }
        }
    }

    /// Writes region records that changed since the last save, without
    /// holding the model lock while writing: at 100,000 regions the state
    /// document is ~46 MB and a durable write takes ~0.3 s, which must not
    /// stall every heartbeat behind it once per split. Region records need
    /// not be durable before PD answers: the stores own the regions, and a
    /// restarted PD (or a new PD leader) that lost the last second of range
    /// changes gets them again from region heartbeats, newer epochs winning;
    /// every operator PD sends is epoch-checked by the stores. Ids, stores,
    /// data nodes and placement maps are still saved before PD answers.
    pub async fn flush_regions(&self) {
        let mut inner = self.inner.lock().await;
        if !inner.unsaved_regions {
            return;
        }
        let file = StateFile::from_cluster(&inner.cluster);
        inner.unsaved_regions = false;
        // Taken before the model lock is released: a later capture cannot
        // overtake this write.
        let order = self.save_order.lock().await;
        drop(inner);
        let written = self.write_state(file).await;
        drop(order);
        if written.is_err() {
            self.inner.lock().await.unsaved_regions = true;
        }
    }

    /// One durable write of `file` (logged and counted).
    async fn write_state(&self, file: StateFile) -> Result<(), Error> {
        let storage = self.storage.clone();
        let saved = tokio::task::spawn_blocking(move || storage.save(&file))
            .await
            .map_err(join_error);
        match saved.and_then(|r| r.map_err(Error::from)) {
            Ok(()) => {
                metrics().state_saves.inc();
                Ok(())
            }
            Err(e) => {
                tracing::warn!("cannot save PD state: {e}");
                Err(e)
            }
        }
    }

    // ---- gRPC operations ----

    pub async fn cluster_info(&self) -> GetClusterResponse {
        let inner = self.inner.lock().await;
        GetClusterResponse {
            error: None,
            cluster_id: inner.cluster.cluster_id,
            bootstrapped: inner.cluster.region_count() > 0,
            max_replicas: self.cfg.max_replicas,
        }
    }

    /// Allocates `count` consecutive ids, durable before they are returned.
    pub async fn alloc_ids(&self, count: u32) -> Result<u64, Error> {
        if count == 0 || count > MAX_ALLOC_COUNT {
            return Err(Error::InvalidArgument(format!(
                "id count must be 1..={MAX_ALLOC_COUNT}, got {count}"
            )));
        }
        let mut inner = self.inner.lock().await;
        let first = inner.cluster.ids.alloc(u64::from(count))?;
        self.save_if(&mut inner, false).await?;
        Ok(first)
    }

    pub async fn register_store(&self, store: Store, uuid: &str) -> Result<u64, Error> {
        let now = now_ms();
        let mut inner = self.inner.lock().await;
        let (id, changed) = inner.cluster.register_store(store, uuid, now)?;
        let booted = bootstrap::maybe_bootstrap(
            &mut inner.cluster,
            self.cfg.max_replicas,
            now,
            self.max_down_ms(),
        );
        self.save_if(&mut inner, changed || booted.is_some())
            .await?;
        let s = inner
            .cluster
            .store(id)
            .map(|s| s.meta.clone())
            .unwrap_or_default();
        tracing::info!(store_id = id, address = %s.address, zone = %s.labels.unwrap_or_default().zone, "store registered");
        drop(inner);
        self.update_gauges().await;
        Ok(id)
    }

    /// Records the heartbeat; returns the peers the store must create.
    pub async fn store_heartbeat(
        &self,
        req: StoreHeartbeatRequest,
    ) -> Result<Vec<PeerToCreate>, Error> {
        metrics().store_heartbeats.inc();
        let now = now_ms();
        let sample = crate::flow::FlowRates::from_totals(
            req.bytes_written,
            req.keys_written,
            req.bytes_read,
            req.keys_read,
            req.interval_ms,
        );
        let mut inner = self.inner.lock().await;
        let stats = StoreStats {
            region_count: req.region_count,
            leader_count: req.leader_count,
            capacity_bytes: req.capacity_bytes,
            used_bytes: req.used_bytes,
            // No sample in this heartbeat: keep the last one.
            flow: sample.unwrap_or_else(|| {
                inner
                    .cluster
                    .store(req.store_id)
                    .map(|s| s.stats.flow)
                    .unwrap_or_default()
            }),
        };
        let mut changed = inner
            .cluster
            .store_heartbeat(req.store_id, &req.uuid, stats, now)?;
        changed |= bootstrap::maybe_bootstrap(
            &mut inner.cluster,
            self.cfg.max_replicas,
            now,
            self.max_down_ms(),
        )
        .is_some();
        // Also makes sure a freshly created first region is on disk before
        // any store is told to create a peer of it.
        self.save_if(&mut inner, changed).await?;
        Ok(bootstrap::peers_to_create(&inner.cluster, req.store_id))
    }

    pub async fn region_heartbeat(&self, req: RegionHeartbeatRequest) -> Result<(), Error> {
        metrics().region_heartbeats.inc();
        let mut region = req
            .region
            .ok_or_else(|| Error::InvalidArgument("region heartbeat without a region".into()))?;
        // Kept for as long as the region lives: own the keys. Decoded by tonic
        // they are views into the request's whole receive buffer (8 KiB at
        // least), which every stored region would otherwise pin.
        region.start_key = region.start_key.to_vec().into();
        region.end_key = region.end_key.to_vec().into();
        let region_id = region.id;
        let mut inner = self.inner.lock().await;
        let bootstrapping = inner.cluster.bootstrap.clone();
        let outcome = inner.cluster.region_heartbeat(
            region,
            req.leader,
            req.term,
            req.approximate_size,
            req.approximate_keys,
        )?;
        if outcome != HeartbeatOutcome::Stale {
            inner
                .cluster
                .set_peer_health(region_id, req.down_peers, req.pending_peers);
            let sample = crate::flow::FlowRates::from_totals(
                req.bytes_written,
                req.keys_written,
                req.bytes_read,
                req.keys_read,
                req.interval_ms,
            );
            if let Some(rates) = sample {
                inner.cluster.record_region_flow(region_id, rates);
            }
            inner.cluster.touch_version(region_id, now_ms());
        }
        match outcome {
            HeartbeatOutcome::Stale => {
                metrics().stale_region_heartbeats.inc();
                tracing::debug!(region_id, "ignored a stale region heartbeat");
                Ok(())
            }
            HeartbeatOutcome::StatsOnly => self.save_if(&mut inner, false).await,
            HeartbeatOutcome::MetaChanged => {
                inner.unsaved_regions = true;
                // Bootstrap progress is saved before answering, like every
                // membership record; range changes are flushed lazily.
                let booted = inner.cluster.bootstrap != bootstrapping;
                self.save_if(&mut inner, booted).await
            }
        }
    }

    pub async fn stores(&self) -> Vec<Store> {
        self.read(|c| c.stores().map(|s| s.meta.clone()).collect())
            .await
    }

    pub async fn region_by_key(&self, key: &[u8]) -> Option<RegionInfo> {
        self.read(|c| c.region_by_key(key).map(|e| region_info(c, e)))
            .await
    }

    pub async fn region_by_id(&self, id: u64) -> Option<RegionInfo> {
        self.read(|c| c.region(id).map(|e| region_info(c, e))).await
    }

    pub async fn scan_regions(&self, start: &[u8], end: &[u8], limit: u32) -> Vec<RegionInfo> {
        let limit = if limit == 0 {
            DEFAULT_SCAN_LIMIT
        } else {
            limit as usize
        };
        self.read(|c| {
            c.scan_regions(start, end, limit)
                .into_iter()
                .map(|e| region_info(c, e))
                .collect()
        })
        .await
    }

    pub async fn register_data_node(&self, node: DataNode, uuid: &str) -> Result<u64, Error> {
        let now = now_ms();
        let mut inner = self.inner.lock().await;
        let (id, changed) = inner.cluster.register_data_node(node, uuid, now)?;
        let placed = self.maybe_place(&mut inner, now);
        self.save_if(&mut inner, changed || placed).await?;
        let n = inner.cluster.data_node(id).cloned().unwrap_or_default();
        tracing::info!(node_id = id, address = %n.address, zone = %n.labels.unwrap_or_default().zone, "data node registered");
        drop(inner);
        self.update_gauges().await;
        Ok(id)
    }

    pub async fn data_node_heartbeat(&self, req: DataNodeHeartbeatRequest) -> Result<(), Error> {
        metrics().data_node_heartbeats.inc();
        let mut inner = self.inner.lock().await;
        let changed = inner.cluster.data_node_heartbeat(
            req.node_id,
            &req.uuid,
            req.capacity_bytes,
            req.used_bytes,
            req.read_only,
            now_ms(),
        )?;
        inner.cluster.report_repair(
            req.node_id,
            RepairReport {
                backlog: req.repair_backlog,
                passes: req.repair_passes,
                map_version: req.repair_map_version,
            },
        );
        self.save_if(&mut inner, changed).await
    }

    /// Every built class's map, or None when no class is built yet or the
    /// caller has this version.
    pub async fn placement(&self, known_version: u64) -> Option<PlacementMap> {
        self.read(|c| {
            let p = &c.placement;
            (!p.is_empty() && p.version != known_version).then(|| placement_map(c, p))
        })
        .await
    }

    /// Starts decommissioning data node `id` (durable before it returns).
    pub async fn decommission_data_node(&self, id: u64) -> Result<(), Error> {
        let now = now_ms();
        let mut inner = self.inner.lock().await;
        let mut changed = inner.cluster.decommission_data_node(id)?;
        // Holding nothing with repair caught up: decommissioned at once.
        changed |= self.finish_decommissions(&mut inner, now);
        self.save_if(&mut inner, changed).await?;
        if changed {
            let state = inner.cluster.data_node_admin_state(id);
            tracing::info!(
                node_id = id,
                state = state.name(),
                "data node decommission requested"
            );
        }
        self.refresh_plan(&mut inner, now);
        Ok(())
    }

    /// Makes a leaving or decommissioned data node active again.
    pub async fn cancel_decommission(&self, id: u64) -> Result<(), Error> {
        let mut inner = self.inner.lock().await;
        let changed = inner.cluster.cancel_decommission(id)?;
        self.save_if(&mut inner, changed).await?;
        if changed {
            tracing::info!(node_id = id, "data node decommission cancelled");
        }
        self.refresh_plan(&mut inner, now_ms());
        Ok(())
    }

    // ---- store admin (pdctl store delete|label|weight|limit, config, schedulers) ----

    /// Runs `f` on the model under the lock and saves when it says it
    /// changed something (before returning: the change is durable, or
    /// replicated, when this returns Ok).
    pub async fn update_cluster<R>(
        &self,
        f: impl FnOnce(&mut Cluster) -> Result<(R, bool), Error>,
    ) -> Result<R, Error> {
        let mut inner = self.inner.lock().await;
        let before = inner.cluster.settings.clone();
        let (out, changed) = match f(&mut inner.cluster) {
            Ok(v) => v,
            Err(e) => {
                inner.cluster.settings = before;
                return Err(e);
            }
        };
        if let Err(e) = self.save_if(&mut inner, changed).await {
            // Settings are admin-only: undo so nothing unsaved takes effect.
            inner.cluster.settings = before;
            return Err(e);
        }
        self.refresh_runtime(&inner.cluster);
        Ok(out)
    }

    /// `pdctl store delete ID`: the store goes Offline (durable before it
    /// returns); see [`Cluster::delete_store`].
    pub async fn delete_store(&self, id: u64) -> Result<(), Error> {
        let (now, max_down, replicas) = (now_ms(), self.max_down_ms(), self.cfg.max_replicas);
        let changed = self
            .update_cluster(|c| {
                let changed = c.delete_store(id, replicas, now, max_down)?;
                Ok((changed, changed))
            })
            .await?;
        if changed {
            tracing::info!(
                store_id = id,
                "store delete requested: Offline; its peers move to other stores"
            );
        }
        Ok(())
    }

    /// Offline stores that hold no peer become Tombstone; returns whether any did.
    fn finish_store_deletions(&self, inner: &mut Inner) -> bool {
        let done = inner.cluster.finish_store_deletions();
        for id in &done {
            tracing::info!(
                store_id = id,
                "store deleted: it holds no region peer; Tombstone (it may be stopped)"
            );
        }
        !done.is_empty()
    }

    // ---- background ----

    /// The slot movement to do from the current maps and node states.
    fn compute_plan(&self, cluster: &Cluster, now: i64) -> Plan {
        if cluster.placement.is_empty() {
            return Plan::default();
        }
        let views = cluster.node_views(
            now,
            self.max_down_ms(),
            self.cfg.datanode_down_after.as_millis() as i64,
        );
        rebalance::plan(&cluster.placement, &views, self.cfg.max_moves_per_step)
    }

    /// Recomputes the plan for status.
    fn refresh_plan(&self, inner: &mut Inner, now: i64) {
        let plan = self.compute_plan(&inner.cluster, now);
        self.set_plan(inner, plan);
    }

    /// Keeps `plan` for status; logs each class blocker once.
    fn set_plan(&self, inner: &mut Inner, plan: Plan) {
        for (class, p) in &plan.classes {
            let before = inner
                .plan
                .classes
                .get(class)
                .and_then(|c| c.blocker.as_ref());
            match (&p.blocker, before) {
                (Some(why), b) if b != Some(why) => {
                    tracing::warn!(
                        storage_class = class.as_str_name(),
                        "slot movement blocked: {why}"
                    )
                }
                (None, Some(_)) => tracing::info!(
                    storage_class = class.as_str_name(),
                    "slot movement unblocked"
                ),
                _ => {}
            }
        }
        inner.plan = plan;
    }

    /// Whether the next step may go: repair of the last step's map version
    /// across the serving data nodes, and the gate that makes of it.
    pub fn step_gate(&self, c: &Cluster, now: i64) -> (StepGate, RepairStatus) {
        let version = c.rebalance.last_step_version;
        let status = c.repair_status(version, now, self.max_down_ms());
        let gate = rebalance::step_gate(
            version,
            status.caught_up(),
            now - c.rebalance.last_step_unix_ms,
            self.cfg.repair_catch_up_limit.as_millis() as i64,
        );
        (gate, status)
    }

    /// Repair across the serving data nodes against the current map version.
    pub fn repair_status(&self, c: &Cluster, now: i64) -> RepairStatus {
        c.repair_status(c.placement.version, now, self.max_down_ms())
    }

    /// One map step when one is due, there is work and the data nodes'
    /// repair caught up with the previous step (or the wait hit
    /// `repair_catch_up_limit`): moves at most `max_moves_per_step` slots per
    /// class, bumps the version, saves (the step is undone if the save
    /// fails), then marks drained leaving nodes decommissioned.
    async fn maybe_step(&self, inner: &mut MutexGuard<'_, Inner>, now: i64) {
        let mut changed = self.finish_decommissions(inner, now);
        let last = inner.cluster.rebalance.last_step_unix_ms;
        let interval = self.cfg.rebalance_interval.as_millis() as i64;
        // A clock that went back must not stop movement until it catches up.
        let due = now < last || now - last >= interval;
        let mut plan = self.compute_plan(&inner.cluster, now);
        let go = due && !plan.moves.is_empty() && self.repair_allows_step(inner, now);
        if go {
            let before = (inner.cluster.placement.clone(), inner.cluster.rebalance);
            let moved = rebalance::apply(&mut inner.cluster.placement, &plan.moves);
            inner.cluster.rebalance.last_step_unix_ms = now;
            inner.cluster.rebalance.last_step_version = inner.cluster.placement.version;
            inner.cluster.rebalance.slots_moved += moved as u64;
            match self.save_if(inner, true).await {
                Ok(()) => {
                    for m in &plan.moves {
                        tracing::debug!(
                            storage_class = m.class.as_str_name(),
                            pg = m.pg,
                            slot = m.slot,
                            from = m.from,
                            to = m.to,
                            "slot moved"
                        );
                    }
                    tracing::info!(
                        moved,
                        pending = plan.pending() - moved,
                        version = inner.cluster.placement.version,
                        "placement step"
                    );
                    metrics().slot_moves.inc_by(moved as u64);
                    metrics().rebalance_steps.inc();
                    changed = self.finish_decommissions(inner, now);
                    plan = self.compute_plan(&inner.cluster, now);
                }
                Err(_) => {
                    // Logged in save_if. Undo: the version must stay unused.
                    (inner.cluster.placement, inner.cluster.rebalance) = before;
                    changed = false;
                }
            }
        }
        if changed {
            let _ = self.save_if(inner, true).await;
        }
        self.set_plan(inner, plan);
    }

    /// Applies the repair gate to a step that is otherwise due; logs a wait
    /// once per step version and every step that goes without repair.
    fn repair_allows_step(&self, inner: &mut Inner, now: i64) -> bool {
        let (gate, status) = self.step_gate(&inner.cluster, now);
        let version = inner.cluster.rebalance.last_step_version;
        match gate {
            StepGate::Go => true,
            StepGate::WaitForRepair => {
                if inner.logged_wait != version {
                    inner.logged_wait = version;
                    tracing::info!(
                        version,
                        backlog = status.backlog,
                        lagging = ?status.lagging,
                        "next placement step waits for the data nodes' repair of the last one"
                    );
                }
                false
            }
            StepGate::Overdue => {
                tracing::warn!(
                    version,
                    backlog = status.backlog,
                    lagging = ?status.lagging,
                    limit_secs = self.cfg.repair_catch_up_limit.as_secs(),
                    "placement step goes without repair having caught up with the last \
                     one: the wait reached repair_catch_up_limit (lagging data nodes have \
                     not reported a pass on that map version with an empty backlog)"
                );
                true
            }
        }
    }

    /// Leaving nodes that hold no slot become decommissioned once repair
    /// caught up with the current map; returns whether any did.
    fn finish_decommissions(&self, inner: &mut Inner, now: i64) -> bool {
        let done = inner.cluster.finish_decommissions(now, self.max_down_ms());
        for id in &done {
            tracing::info!(
                node_id = id,
                version = inner.cluster.placement.version,
                "data node decommissioned: it holds no slot and every serving data node's \
                 repair caught up with the current map; it may be stopped"
            );
        }
        !done.is_empty()
    }

    /// Builds each storage class's map that is missing, when the conditions
    /// hold; each class on its own, so one needing more nodes or zones does
    /// not hold back the others. Returns whether any class was built.
    fn maybe_place(&self, inner: &mut Inner, now: i64) -> bool {
        let missing = inner.cluster.placement.missing_classes();
        if missing.is_empty() {
            return false;
        }
        let nodes = inner.cluster.live_data_nodes(now, self.max_down_ms());
        let waited = self.started.elapsed() >= self.cfg.placement_wait;
        if !placement::should_create(&nodes, self.cfg.expected_data_nodes, waited) {
            let zones = nodes
                .iter()
                .map(|n| n.zone.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let reason = format!(
                "waiting for {} data nodes in at least {} zones (have {} in {zones}) \
                 or the end of the placement wait ({:?})",
                self.cfg.expected_data_nodes,
                placement::EXPECTED_ZONES,
                nodes.len(),
                self.cfg.placement_wait,
            );
            // One condition for every class: log it once, not per class.
            let changed = missing
                .iter()
                .any(|c| inner.placement_blockers.get(c) != Some(&reason));
            if changed {
                tracing::info!("placement: {reason}");
                for c in missing {
                    inner.placement_blockers.insert(c, reason.clone());
                }
            }
            return false;
        }
        let mut built = false;
        for (class, outcome) in inner
            .cluster
            .placement
            .build_missing(&nodes, self.cfg.num_pgs)
        {
            let name = class.as_str_name();
            match outcome {
                Ok(pgs) => {
                    tracing::info!(
                        storage_class = name,
                        nodes = nodes.len(),
                        pgs,
                        version = inner.cluster.placement.version,
                        "placement map created"
                    );
                    inner.placement_blockers.remove(&class);
                    built = true;
                }
                Err(e) => {
                    let reason = e.to_string();
                    if inner.placement_blockers.get(&class) != Some(&reason) {
                        tracing::warn!(
                            storage_class = name,
                            "cannot build the placement map yet: {reason}"
                        );
                        inner.placement_blockers.insert(class, reason);
                    }
                }
            }
        }
        built
    }

    /// Periodic work: bootstrap, placement, slot movement, metrics (on a
    /// replicated PD only by the leader).
    pub async fn tick(&self) {
        if self.ensure_leader().await.is_err() {
            return;
        }
        let now = now_ms();
        {
            let mut inner = self.inner.lock().await;
            let booted = bootstrap::maybe_bootstrap(
                &mut inner.cluster,
                self.cfg.max_replicas,
                now,
                self.max_down_ms(),
            )
            .is_some();
            let placed = self.maybe_place(&mut inner, now);
            let deleted = self.finish_store_deletions(&mut inner);
            // A failed save is logged in save_if and retried on the next call.
            let _ = self.save_if(&mut inner, booted || placed || deleted).await;
            self.maybe_step(&mut inner, now).await;
        }
        self.flush_regions().await;
        self.update_gauges().await;
    }

    async fn update_gauges(&self) {
        let now = now_ms();
        let max_down = self.max_down_ms();
        let m = metrics();
        self.read_placement(|c, _, plan| {
            for state in Liveness::ALL {
                let n = c
                    .stores()
                    .filter(|s| c.store_liveness(&s.meta, now, max_down) == state)
                    .count();
                m.stores.with_label_values(&[state.name()]).set(n as i64);
            }
            for state in Liveness::ALL {
                let n = c
                    .data_nodes()
                    .filter(|d| c.data_node_liveness(d, now, max_down) == state)
                    .count();
                m.data_nodes
                    .with_label_values(&[state.name()])
                    .set(n as i64);
            }
            m.regions.set(c.region_count() as i64);
            m.placement_version.set(c.placement.version as i64);
            for class in placement::STORAGE_CLASSES {
                let pgs = c
                    .placement
                    .classes
                    .get(&class)
                    .map_or(0, |g| g.groups.len());
                m.placement_groups
                    .with_label_values(&[class.as_str_name()])
                    .set(pgs as i64);
                let p = plan.classes.get(&class);
                m.pending_moves
                    .with_label_values(&[class.as_str_name()])
                    .set(p.map_or(0, |p| p.pending) as i64);
                m.moves_blocked
                    .with_label_values(&[class.as_str_name()])
                    .set(p.is_some_and(|p| p.blocker.is_some()) as i64);
            }
            m.slots_moved.set(c.rebalance.slots_moved as i64);
        })
        .await;
    }

    /// Runs [`Self::tick`] every `every` until `shutdown` flips.
    pub async fn tick_loop(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                _ = interval.tick() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            }
            self.tick().await;
        }
    }
}

/// The saved cluster model (`what` names it in a corruption error), or a
/// new cluster; `true` when new. Liveness is measured from now on.
async fn load_cluster(storage: &Arc<dyn Storage>, what: &str) -> Result<(Cluster, bool), Error> {
    let s = storage.clone();
    let loaded = tokio::task::spawn_blocking(move || s.load())
        .await
        .map_err(join_error)??;
    let fresh = loaded.is_none();
    let mut cluster = match loaded {
        Some(file) => file
            .into_cluster()
            .map_err(|reason| StorageError::Corrupt {
                what: what.into(),
                reason,
            })?,
        None => Cluster::new(new_cluster_id()),
    };
    cluster.liveness_floor_ms = now_ms();
    Ok((cluster, fresh))
}

/// The scheduling state PD starts with.
fn coordinator(cfg: &Config) -> crate::schedule::coordinator::Coordinator {
    crate::schedule::coordinator::Coordinator::new(crate::schedule::coordinator::ScheduleConfig {
        interval: cfg.schedule_interval,
        leader_transfers_per_store_per_minute: cfg.leader_transfers_per_store_per_minute,
    })
}

/// A region as the wire shows it, with its leader's address.
pub fn region_info(c: &Cluster, e: &RegionEntry) -> RegionInfo {
    RegionInfo {
        region: Some(e.region.clone()),
        leader: e.leader,
        leader_addr: e
            .leader
            .as_ref()
            .map(|l| c.store_address(l.store_id))
            .unwrap_or_default(),
        approximate_size: e.approximate_size,
        approximate_keys: e.approximate_keys,
    }
}

/// The maps as the wire shows them: every built class, in class order, with
/// the current record of every node any class references.
pub fn placement_map(c: &Cluster, p: &PlacementState) -> PlacementMap {
    PlacementMap {
        version: p.version,
        classes: p
            .classes
            .iter()
            .map(|(class, g)| ClassPlacement {
                storage_class: *class as i32,
                data_shards: g.rules.data_shards,
                parity_shards: g.rules.parity_shards,
                groups: g
                    .groups
                    .iter()
                    .enumerate()
                    .map(|(i, members)| PlacementGroup {
                        id: i as u32,
                        data_nodes: members.clone(),
                    })
                    .collect(),
            })
            .collect(),
        nodes: p
            .referenced_nodes()
            .into_iter()
            .filter_map(|id| c.data_node(id).cloned())
            .collect(),
    }
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Storage(StorageError::Io {
        op: "run the storage task",
        path: Default::default(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// A random non-zero id naming this cluster for its whole life.
fn new_cluster_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::AdminState;
    use crate::placement::{ClassGroups, Rules};
    use crate::storage::MemStorage;
    use kura_proto::common::Labels;

    fn data_node(addr: &str, zone: &str) -> DataNode {
        DataNode {
            address: addr.into(),
            labels: Some(Labels {
                zone: zone.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn config() -> Config {
        let addr = "127.0.0.1:1".parse().expect("a valid address");
        let mut cfg = Config::new("/nonexistent".into(), addr, addr);
        cfg.num_pgs = 8;
        cfg
    }

    /// A cluster saved by the single-map PD (REPLICA3 at version 5) keeps that
    /// map and gets the other classes it has the nodes for.
    #[tokio::test]
    async fn an_old_replica3_map_is_kept_and_the_other_classes_are_added() {
        let mut c = Cluster::new(9);
        for (i, zone) in ["z1", "z1", "z2", "z2", "z3", "z3"].iter().enumerate() {
            c.register_data_node_at(data_node(&format!("d:{i}"), zone), now_ms())
                .unwrap();
        }
        let nodes = c.live_data_nodes(now_ms(), 30_000);
        let old = placement::compute(&nodes, 8, Rules::REPLICA3, None).unwrap();
        c.placement = PlacementState {
            version: 5,
            classes: [(
                StorageClass::Replica3,
                ClassGroups {
                    rules: Rules::REPLICA3,
                    groups: old.clone(),
                },
            )]
            .into(),
        };
        let storage = Arc::new(MemStorage::default());
        storage.save(&StateFile::from_cluster(&c)).unwrap();

        let core = PdCore::open(config(), storage.clone()).await.unwrap();
        assert_eq!(core.placement(0).await.unwrap().classes.len(), 1);
        core.tick().await;
        let map = core.placement(5).await.expect("a newer map than 5");
        assert_eq!(map.version, 6);
        let classes: Vec<(i32, usize)> = map
            .classes
            .iter()
            .map(|c| (c.storage_class, c.groups.len()))
            .collect();
        assert_eq!(
            classes,
            [
                (StorageClass::Replica3 as i32, 8),
                (StorageClass::Ec42 as i32, 8)
            ]
        );
        let kept: Vec<Vec<u64>> = map.classes[0]
            .groups
            .iter()
            .map(|g| g.data_nodes.clone())
            .collect();
        assert_eq!(kept, old);
        assert_eq!(map.nodes.len(), 6);
        let blockers = core.read_placement(|_, b, _| b.clone()).await;
        assert_eq!(
            blockers.into_iter().collect::<Vec<_>>(),
            [(
                StorageClass::Ec83,
                "need at least 11 data nodes, have 6".to_string()
            )]
        );
        // Saved at once; a second tick changes nothing.
        let saved = storage.load().unwrap().unwrap();
        assert_eq!(saved.placement.version, 6);
        core.tick().await;
        assert!(core.placement(6).await.is_none());
    }

    /// A split reported by a region heartbeat is in PD's model at once but
    /// reaches the disk with the next flush (every tick), and a PD restarted
    /// from that state has both halves.
    #[tokio::test]
    async fn range_changes_are_flushed_after_the_heartbeat() {
        use kura_proto::common::{Peer, Region, RegionEpoch};
        let peers: Vec<Peer> = (1..=3)
            .map(|s| Peer {
                id: 10 + s,
                store_id: s,
                is_learner: false,
            })
            .collect();
        let region = |id: u64, start: &[u8], end: &[u8], version: u64| Region {
            id,
            start_key: start.to_vec().into(),
            end_key: end.to_vec().into(),
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version,
            }),
            peers: peers.clone(),
        };
        let mut c = Cluster::new(9);
        c.insert_region(region(2, b"", b"", 1));
        let storage = Arc::new(MemStorage::default());
        storage.save(&StateFile::from_cluster(&c)).unwrap();
        let core = PdCore::open(config(), storage.clone()).await.unwrap();
        for r in [region(2, b"", b"m", 2), region(20, b"m", b"", 2)] {
            core.region_heartbeat(RegionHeartbeatRequest {
                region: Some(r),
                leader: Some(peers[0]),
                term: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        assert_eq!(core.read(|c| c.region_count()).await, 2);
        assert_eq!(storage.load().unwrap().unwrap().regions.len(), 1);
        core.flush_regions().await;
        assert_eq!(storage.load().unwrap().unwrap().regions.len(), 2);
        let again = PdCore::open(config(), storage).await.unwrap();
        let ends: Vec<Vec<u8>> = again
            .read(|c| {
                c.regions_in_order()
                    .map(|e| e.region.end_key.to_vec())
                    .collect()
            })
            .await;
        assert_eq!(ends, [b"m".to_vec(), Vec::new()]);
    }

    #[tokio::test]
    async fn classes_wait_for_the_expected_nodes_and_say_so() {
        let core = PdCore::open(config(), Arc::new(MemStorage::default()))
            .await
            .unwrap();
        core.register_data_node(data_node("d:1", "z1"), &crate::cluster::uuid_for("d:1"))
            .await
            .unwrap();
        assert!(core.placement(0).await.is_none());
        let blockers = core.read_placement(|_, b, _| b.clone()).await;
        assert_eq!(blockers.len(), 3);
        assert!(
            blockers[&StorageClass::Ec42].starts_with("waiting for 6 data nodes"),
            "{blockers:?}"
        );
    }

    fn fast_config() -> Config {
        let mut cfg = config();
        cfg.rebalance_interval = Duration::ZERO;
        cfg.max_moves_per_step = 2;
        cfg
    }

    async fn register_dev_nodes(core: &PdCore) -> Vec<u64> {
        let mut ids = Vec::new();
        for (i, zone) in ["z1", "z1", "z2", "z2", "z3", "z3"].iter().enumerate() {
            ids.push(
                core.register_data_node(
                    data_node(&format!("d:{i}"), zone),
                    &crate::cluster::uuid_for(&format!("d:{i}")),
                )
                .await
                .unwrap(),
            );
        }
        ids
    }

    /// Heartbeats of `ids` reporting a repair pass on map `version`.
    async fn report_repair(core: &PdCore, ids: &[u64], version: u64, backlog: u64) {
        for &id in ids {
            core.data_node_heartbeat(DataNodeHeartbeatRequest {
                node_id: id,
                repair_backlog: backlog,
                repair_passes: 1,
                repair_map_version: version,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    }

    /// Every registered data node, by id.
    async fn all_ids(core: &PdCore) -> Vec<u64> {
        core.read(|c| c.data_nodes().map(|n| n.id).collect()).await
    }

    /// Ticks until a tick changes nothing, `ids` reporting before each tick
    /// that their repair caught up with the current map; returns the map
    /// steps taken.
    async fn settle_with(core: &PdCore, ids: &[u64]) -> u64 {
        let start = core.read(|c| c.placement.version).await;
        for _ in 0..200 {
            let before = core.read(|c| c.placement.version).await;
            report_repair(core, ids, before, 0).await;
            core.tick().await;
            if core.read(|c| c.placement.version).await == before {
                return before - start;
            }
        }
        panic!("slot movement did not settle");
    }

    /// [`settle_with`] every registered node's repair keeping up.
    async fn settle(core: &PdCore) -> u64 {
        let ids = all_ids(core).await;
        settle_with(core, &ids).await
    }

    fn held(c: &Cluster, id: u64) -> usize {
        rebalance::slots_by_class(&c.placement, id).values().sum()
    }

    #[tokio::test]
    async fn a_joining_node_gets_slots_in_bounded_steps_and_decommission_drains_it() {
        let storage = Arc::new(MemStorage::default());
        let core = PdCore::open(fast_config(), storage.clone()).await.unwrap();
        register_dev_nodes(&core).await;
        let v0 = core.read(|c| c.placement.version).await;
        assert_eq!(v0, 1, "built at the sixth registration");
        assert_eq!(settle(&core).await, 0, "nothing to move");

        let new = core
            .register_data_node(data_node("d:new", "z1"), &crate::cluster::uuid_for("d:new"))
            .await
            .unwrap();
        let before = core.read(|c| c.placement.clone()).await;
        core.tick().await;
        let after = core.read(|c| c.placement.clone()).await;
        assert_eq!(after.version, v0 + 1);
        for (class, g) in &after.classes {
            let moved: usize = g
                .groups
                .iter()
                .zip(&before.classes[class].groups)
                .map(|(a, b)| a.iter().zip(b).filter(|(x, y)| x != y).count())
                .sum();
            assert!(moved <= 2, "{class:?}: {moved}");
        }
        let steps = settle(&core).await;
        assert!(steps >= 1, "more than one step for 2 moves per class");
        assert!(core.read(|c| held(c, new)).await > 0);
        let pending = core.read_placement(|_, _, p| p.pending()).await;
        assert_eq!(pending, 0);
        let saved = storage.load().unwrap().unwrap();
        assert_eq!(
            saved.placement.version,
            core.read(|c| c.placement.version).await
        );
        assert!(saved.rebalance.slots_moved > 0);

        // Decommission the new node: it drains completely, then is decommissioned.
        core.decommission_data_node(new).await.unwrap();
        assert_eq!(
            core.read(|c| c.data_node_admin_state(new)).await,
            AdminState::Leaving
        );
        let out = core
            .read_placement(|c, _, p| (held(c, new), p.pending_out.get(&new).copied()))
            .await;
        assert_eq!(Some(out.0), out.1, "all its slots are to move");
        settle(&core).await;
        assert_eq!(core.read(|c| held(c, new)).await, 0);
        assert_eq!(
            core.read(|c| c.data_node_admin_state(new)).await,
            AdminState::Decommissioned
        );
        let saved = storage.load().unwrap().unwrap();
        let rec = saved.data_nodes.iter().find(|n| n.id == new).unwrap();
        assert_eq!(rec.admin_state, "Decommissioned");

        // With only the six left, EC_4_2 cannot drain any of them: it says so.
        let first = core.read(|c| c.data_nodes().next().unwrap().id).await;
        core.decommission_data_node(first).await.unwrap();
        settle(&core).await;
        let (why, left) = core
            .read_placement(|c, _, p| (p.drain_blocker(&c.placement, first), held(c, first)))
            .await;
        let why = why.expect("EC_4_2 is blocked");
        assert!(
            why.contains("EC_4_2") && why.contains("only 5 would remain"),
            "{why}"
        );
        assert!(left > 0, "its EC_4_2 slots stay");
        assert_eq!(
            core.read(|c| c.data_node_admin_state(first)).await,
            AdminState::Leaving
        );
        // Cancelled: an active member again, and it gets its REPLICA3 share back.
        core.cancel_decommission(first).await.unwrap();
        settle(&core).await;
        assert_eq!(
            core.read(|c| c.data_node_admin_state(first)).await,
            AdminState::Active
        );
        assert!(core.read(|c| held(c, first)).await > left);
        assert!(matches!(
            core.decommission_data_node(999_999).await,
            Err(Error::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_node_down_for_long_is_drained_and_comes_back_as_a_normal_member() {
        let mut cfg = fast_config();
        cfg.max_moves_per_step = 100;
        cfg.max_store_down_time = Duration::from_millis(150);
        cfg.datanode_down_after = Duration::from_millis(300);
        let core = PdCore::open(cfg, Arc::new(MemStorage::default()))
            .await
            .unwrap();
        let mut ids = register_dev_nodes(&core).await;
        ids.push(
            core.register_data_node(data_node("d:7", "z1"), &crate::cluster::uuid_for("d:7"))
                .await
                .unwrap(),
        );
        settle(&core).await;
        let victim = ids[0];
        assert!(core.read(|c| held(c, victim)).await > 0);
        let beat = |id: u64| DataNodeHeartbeatRequest {
            node_id: id,
            ..Default::default()
        };
        // Everyone but the victim heartbeats for longer than datanode_down_after.
        for _ in 0..8 {
            for &id in &ids[1..] {
                core.data_node_heartbeat(beat(id)).await.unwrap();
            }
            core.tick().await;
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        settle_with(&core, &ids[1..]).await;
        assert_eq!(core.read(|c| held(c, victim)).await, 0, "rebuilt elsewhere");
        assert_eq!(
            core.read(|c| c.data_node_admin_state(victim)).await,
            AdminState::Active,
            "down is not decommissioned"
        );
        // It comes back: an ordinary member that rebalancing fills again.
        settle_with(&core, &ids).await;
        assert!(core.read(|c| held(c, victim)).await > 0);
    }

    #[tokio::test]
    async fn a_step_waits_for_repair_of_the_last_one_and_decommission_for_the_rebuild() {
        let mut cfg = fast_config();
        cfg.max_moves_per_step = 1;
        cfg.repair_catch_up_limit = Duration::from_secs(3600);
        let core = PdCore::open(cfg, Arc::new(MemStorage::default()))
            .await
            .unwrap();
        let mut ids = register_dev_nodes(&core).await;
        let new = core
            .register_data_node(data_node("d:new", "z1"), &crate::cluster::uuid_for("d:new"))
            .await
            .unwrap();
        ids.push(new);
        let version = || core.read(|c| c.placement.version);
        core.tick().await;
        let v1 = version().await;
        assert_eq!(v1, 2, "the first step does not wait");
        core.tick().await;
        assert_eq!(
            version().await,
            v1,
            "no repair reported: the next step waits"
        );
        let (gate, status) = core.read(|c| core.step_gate(c, now_ms())).await;
        assert_eq!(gate, StepGate::WaitForRepair);
        assert_eq!(status.lagging, ids);
        // An older map, then a backlog on one node: still waiting.
        report_repair(&core, &ids, v1 - 1, 0).await;
        core.tick().await;
        assert_eq!(version().await, v1);
        report_repair(&core, &ids, v1, 0).await;
        report_repair(&core, &[new], v1, 4).await;
        core.tick().await;
        assert_eq!(version().await, v1);
        let status = core.read(|c| core.repair_status(c, now_ms())).await;
        assert_eq!((status.backlog, status.lagging), (4, vec![new]));
        // Caught up: the next step goes.
        report_repair(&core, &[new], v1, 0).await;
        core.tick().await;
        assert_eq!(version().await, v1 + 1);
        settle(&core).await;

        // Decommission: its slots move; it stays Leaving until repair covered the last move.
        core.decommission_data_node(new).await.unwrap();
        for _ in 0..200 {
            if core.read(|c| held(c, new)).await == 0 {
                break;
            }
            let v = version().await;
            report_repair(&core, &ids, v, 0).await;
            core.tick().await;
        }
        assert_eq!(core.read(|c| held(c, new)).await, 0);
        let last = version().await;
        core.tick().await;
        assert_eq!(
            core.read(|c| c.data_node_admin_state(new)).await,
            AdminState::Leaving,
            "no repair pass on the map that took its last slot yet"
        );
        report_repair(&core, &ids, last, 0).await;
        core.tick().await;
        assert_eq!(
            core.read(|c| c.data_node_admin_state(new)).await,
            AdminState::Decommissioned
        );
    }

    #[tokio::test]
    async fn a_step_goes_without_repair_once_the_wait_reaches_the_limit() {
        let mut cfg = fast_config();
        cfg.repair_catch_up_limit = Duration::ZERO;
        let core = PdCore::open(cfg, Arc::new(MemStorage::default()))
            .await
            .unwrap();
        register_dev_nodes(&core).await;
        core.register_data_node(data_node("d:new", "z1"), &crate::cluster::uuid_for("d:new"))
            .await
            .unwrap();
        let start = core.read(|c| c.placement.version).await;
        for _ in 0..3 {
            core.tick().await;
        }
        assert_eq!(
            core.read(|c| c.placement.version).await,
            start + 3,
            "no repair reported, yet every tick steps"
        );
    }
}
