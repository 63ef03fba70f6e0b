//! The `merge-region` operator: folds a source region into an adjacent
//! target (pd-ctl's `operator add merge-region <source> <target>`).
//!
//! Steps (the metashard side is `metashard/src/apply/merge.rs`):
//! 1. PrepareMerge on the source's leader: the source freezes.
//! 2. Wait until the source peer on EVERY store has applied the
//!    PrepareMerge. A CommitMerge carries no source log entries, so a store
//!    whose source is behind could otherwise never catch up (the other
//!    stores destroy their source peers on commit). Not caught up within
//!    [`CATCH_UP_TIMEOUT`]: roll back (no CommitMerge was proposed, so
//!    that is safe) and fail.
//! 3. CommitMerge on the target's leader. Rejected (same answer on every
//!    replica): roll back. Outcome unknown (timeout): look at the target;
//!    if it covers the source's range the merge happened, else try again.
//!    Never roll back on an unknown outcome: a CommitMerge still in flight
//!    would then apply on some stores while the source serves again.
//!
//! Re-running the operator on a source already frozen for this target
//! resumes at step 2 (e.g. after a PD restart in the middle).

use std::time::{Duration, Instant};

use kura_pd_client::client::regions_adjacent;
use kura_proto::common::Region;
use kura_proto::metashard::{
    CommitMergeRequest, PrepareMergeRequest, RequestHeader, RollbackMergeRequest,
};

use crate::operator::OperatorError;
use crate::region_rpc::{
    answer, client, leader_status, peer_addrs, rejected, status_on, StepAnswer, MAX_ATTEMPTS,
    STEP_TIMEOUT,
};
use crate::server::PdCore;

/// How long every store gets to apply the source's PrepareMerge.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);

/// PD's own check before anything is proposed (the stores check again).
pub fn check_mergeable(source: &Region, target: &Region) -> Result<(), OperatorError> {
    if source.id == target.id {
        return Err(OperatorError::Invalid(
            "a region cannot merge with itself".into(),
        ));
    }
    if !regions_adjacent(source, target) {
        return Err(OperatorError::Invalid(format!(
            "regions {} and {} are not adjacent",
            source.id, target.id
        )));
    }
    let stores = |r: &Region| {
        let mut s: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
        s.sort_unstable();
        s
    };
    if stores(source) != stores(target) {
        return Err(OperatorError::Invalid(format!(
            "regions {} and {} have peers on different stores",
            source.id, target.id
        )));
    }
    Ok(())
}

/// Whether `outer` covers every key of `inner`.
pub fn covers(outer: &Region, inner: &Region) -> bool {
    outer.start_key <= inner.start_key
        && (outer.end_key.is_empty()
            || (!inner.end_key.is_empty() && inner.end_key <= outer.end_key))
}

/// Runs `merge-region`: `source` is folded into `target`. Returns the target
/// as merged.
pub async fn merge_region(
    core: &PdCore,
    source_id: u64,
    target_id: u64,
) -> Result<Region, OperatorError> {
    let source = core
        .region_by_id(source_id)
        .await
        .and_then(|i| i.region)
        .ok_or(OperatorError::RegionNotFound(source_id))?;
    let target = core
        .region_by_id(target_id)
        .await
        .and_then(|i| i.region)
        .ok_or(OperatorError::RegionNotFound(target_id))?;
    if covers(&target, &source) {
        return Ok(target);
    }
    check_mergeable(&source, &target)?;
    let (frozen, prepare_index) = prepare(core, &source, &target).await?;
    if let Err(e) = wait_caught_up(core, &frozen, prepare_index).await {
        rollback(core, &frozen, prepare_index).await?;
        return Err(e);
    }
    let merged = commit(core, &frozen, &target, prepare_index).await?;
    crate::operator::record(core, std::slice::from_ref(&merged)).await;
    tracing::info!(source_id, target_id, "merge-region operator done");
    Ok(merged)
}

/// Step 1 (or its result, when the source is already frozen for `target`).
async fn prepare(
    core: &PdCore,
    source: &Region,
    target: &Region,
) -> Result<(Region, u64), OperatorError> {
    for _ in 0..MAX_ATTEMPTS {
        let Some((addr, st)) = leader_status(core, source).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        if st.merge_target_id == target.id {
            return Ok((st.region.unwrap_or_default(), st.prepare_merge_index));
        }
        if st.merge_target_id != 0 {
            return Err(OperatorError::Invalid(format!(
                "region {} is already merging into region {}",
                source.id, st.merge_target_id
            )));
        }
        let current = st.region.unwrap_or_default();
        let req = PrepareMergeRequest {
            header: Some(RequestHeader {
                region_id: source.id,
                epoch: current.epoch,
            }),
            target: Some(target.clone()),
        };
        let mut c = client(&addr)?;
        match answer(tokio::time::timeout(STEP_TIMEOUT, c.prepare_merge(req)).await) {
            StepAnswer::Done(r, index) => return Ok((r, index)),
            StepAnswer::NotLeader | StepAnswer::Unknown(_) => {
                // The next status read tells whether it applied.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            StepAnswer::Rejected(e) => return Err(rejected(source.id, &e)),
        }
    }
    Err(OperatorError::NoLeader(source.id))
}

/// Step 2: every store's source peer has applied the PrepareMerge.
async fn wait_caught_up(
    core: &PdCore,
    frozen: &Region,
    prepare_index: u64,
) -> Result<(), OperatorError> {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    let stores = peer_addrs(core, frozen).await;
    loop {
        let mut behind = None;
        for (store_id, addr) in &stores {
            match status_on(addr, frozen.id).await {
                Ok(Some(st)) if st.applied_index >= prepare_index => {}
                Ok(Some(_)) | Err(_) => {
                    behind = Some(*store_id);
                    break;
                }
                Ok(None) => {
                    behind = Some(*store_id);
                    break;
                }
            }
        }
        let Some(store_id) = behind else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(OperatorError::Rejected {
                region_id: frozen.id,
                message: format!(
                    "store {store_id} did not apply the prepare merge in {CATCH_UP_TIMEOUT:?} \
                     (down or far behind); merge rolled back"
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Step 3.
async fn commit(
    core: &PdCore,
    frozen: &Region,
    target: &Region,
    prepare_index: u64,
) -> Result<Region, OperatorError> {
    let mut last = String::from("no leader");
    for _ in 0..MAX_ATTEMPTS {
        let Some((addr, st)) = leader_status(core, target).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let current = st.region.unwrap_or_default();
        if covers(&current, frozen) {
            return Ok(current); // an earlier attempt applied
        }
        let req = CommitMergeRequest {
            header: Some(RequestHeader {
                region_id: target.id,
                epoch: current.epoch,
            }),
            source: Some(frozen.clone()),
            prepare_index,
        };
        let mut c = client(&addr)?;
        match answer(tokio::time::timeout(STEP_TIMEOUT, c.commit_merge(req)).await) {
            StepAnswer::Done(r, _) => return Ok(r),
            StepAnswer::NotLeader => {}
            StepAnswer::Unknown(why) => last = why,
            StepAnswer::Rejected(e) if e.epoch_not_match.is_some() => {
                // The target changed under us (e.g. our own commit applied):
                // the next status read decides.
                last = e.message;
            }
            StepAnswer::Rejected(e) => {
                rollback(core, frozen, prepare_index).await?;
                return Err(rejected(target.id, &e));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(OperatorError::Store {
        addr: String::new(),
        message: format!(
            "commit merge of region {} into {}: outcome unknown ({last}); the source stays \
             frozen, run the operator again to finish",
            frozen.id, target.id
        ),
    })
}

/// Unfreezes a source whose merge will not happen.
async fn rollback(core: &PdCore, frozen: &Region, prepare_index: u64) -> Result<(), OperatorError> {
    for _ in 0..MAX_ATTEMPTS {
        let Some((addr, st)) = leader_status(core, frozen).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        if st.merge_target_id == 0 {
            return Ok(());
        }
        let req = RollbackMergeRequest {
            header: Some(RequestHeader {
                region_id: frozen.id,
                epoch: st.region.and_then(|r| r.epoch),
            }),
            prepare_index,
        };
        let mut c = client(&addr)?;
        match answer(tokio::time::timeout(STEP_TIMEOUT, c.rollback_merge(req)).await) {
            StepAnswer::Done(r, _) => {
                crate::operator::record(core, std::slice::from_ref(&r)).await;
                tracing::info!(region_id = frozen.id, "merge rolled back");
                return Ok(());
            }
            StepAnswer::Rejected(e) => return Err(rejected(frozen.id, &e)),
            StepAnswer::NotLeader | StepAnswer::Unknown(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
        }
    }
    Err(OperatorError::NoLeader(frozen.id))
}

// ---- merge checker: small, quiet neighbours merge by themselves ----

/// When two neighbours are small and quiet enough to merge.
#[derive(Clone, Debug)]
pub struct MergeCheckConfig {
    /// Both regions hold at most this many keys ...
    pub max_keys: u64,
    /// ... and this many bytes.
    pub max_size: u64,
    /// ... and neither sees more requests than this (keys read + written per
    /// second, the higher of its last two flow samples): a busy region (one
    /// that split by load) is not folded back.
    pub max_keys_per_sec: u64,
    /// A region whose version changed (split or merge) less than this long
    /// ago is left alone, so a region that just split is not merged back.
    pub split_merge_interval: Duration,
}

impl Default for MergeCheckConfig {
    fn default() -> Self {
        MergeCheckConfig {
            max_keys: 40_000,
            max_size: 20 << 20,
            max_keys_per_sec: 32,
            split_merge_interval: Duration::from_secs(3600),
        }
    }
}

/// The next (source, target) the merge checker would merge, if any: two
/// adjacent regions, both small and quiet (a leader, no down or pending
/// peer, little flow, version unchanged for `split_merge_interval`), peers on the same
/// stores; the one with fewer keys is folded into the other. Pure logic.
pub fn pick_merge(
    c: &crate::cluster::Cluster,
    now_ms: i64,
    cfg: &MergeCheckConfig,
) -> Option<(u64, u64)> {
    let settle = cfg.split_merge_interval.as_millis() as i64;
    let ok = |e: &crate::cluster::RegionEntry| {
        e.approximate_keys <= cfg.max_keys
            && e.approximate_size <= cfg.max_size
            && e.leader.is_some()
            && e.down_peers.is_empty()
            && e.pending_peers.is_empty()
            && {
                let f = e.flow.last.max(e.flow.previous);
                f.read_keys + f.written_keys <= cfg.max_keys_per_sec
            }
            && e.version_since_ms > 0
            && now_ms - e.version_since_ms >= settle
    };
    let regions: Vec<_> = c.regions_in_order().collect();
    regions.windows(2).find_map(|w| {
        let (a, b) = (w[0], w[1]);
        if !(ok(a) && ok(b)) || check_mergeable(&a.region, &b.region).is_err() {
            return None;
        }
        Some(if b.approximate_keys <= a.approximate_keys {
            (b.region.id, a.region.id)
        } else {
            (a.region.id, b.region.id)
        })
    })
}

/// Runs the merge checker every `every` on the PD leader until `shutdown`:
/// at most one merge per round, with the merge settings of the runtime
/// config (`pdctl config set max-merge-region-keys` etc. apply next round).
pub async fn merge_check_loop(
    core: std::sync::Arc<PdCore>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        }
        if core.ensure_leader().await.is_err() {
            continue;
        }
        let now = crate::server::now_ms();
        let cfg = core.runtime().merge;
        let Some((source, target)) = core.read(|c| pick_merge(c, now, &cfg)).await else {
            continue;
        };
        tracing::info!(
            source,
            target,
            "merge checker: merging small quiet neighbours"
        );
        if let Err(e) = merge_region(&core, source, target).await {
            tracing::warn!(source, target, error = %e, "merge checker: merge failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_proto::common::Peer;

    fn r(id: u64, s: &[u8], e: &[u8], stores: &[u64]) -> Region {
        Region {
            id,
            start_key: s.to_vec().into(),
            end_key: e.to_vec().into(),
            epoch: None,
            peers: stores
                .iter()
                .map(|st| Peer {
                    id: id * 10 + st,
                    store_id: *st,
                    is_learner: false,
                })
                .collect(),
        }
    }

    #[test]
    fn only_adjacent_regions_on_the_same_stores_merge() {
        let a = r(1, b"", b"f", &[1, 2, 3]);
        let b = r(2, b"f", b"m", &[3, 2, 1]);
        let c = r(3, b"m", b"", &[1, 2, 3]);
        assert!(check_mergeable(&a, &b).is_ok());
        assert!(check_mergeable(&c, &b).is_ok());
        assert!(check_mergeable(&a, &c).is_err(), "not adjacent");
        assert!(check_mergeable(&a, &a).is_err(), "itself");
        assert!(check_mergeable(&a, &r(2, b"f", b"m", &[1, 2, 4])).is_err());
        // Unbounded ends are not adjacent to each other.
        assert!(!regions_adjacent(
            &r(1, b"", b"", &[1]),
            &r(2, b"", b"", &[1])
        ));
    }

    #[test]
    fn coverage() {
        let whole = r(1, b"", b"", &[1]);
        let mid = r(2, b"f", b"m", &[1]);
        let tail = r(3, b"m", b"", &[1]);
        assert!(covers(&whole, &mid) && covers(&whole, &tail));
        assert!(covers(&r(1, b"a", b"m", &[1]), &mid));
        assert!(!covers(&mid, &tail));
        assert!(
            !covers(&r(1, b"a", b"z", &[1]), &tail),
            "bounded vs unbounded end"
        );
        assert!(!covers(&r(1, b"g", b"m", &[1]), &mid));
    }

    #[test]
    fn checker_picks_small_quiet_neighbours_only() {
        use crate::cluster::Cluster;
        let cfg = MergeCheckConfig {
            max_keys: 100,
            max_size: 1 << 20,
            max_keys_per_sec: 32,
            split_merge_interval: Duration::from_secs(60),
        };
        let mut c = Cluster::new(1);
        let (a, b, d) = (
            r(1, b"", b"f", &[1, 2, 3]),
            r(2, b"f", b"m", &[1, 2, 3]),
            r(3, b"m", b"", &[1, 2, 3]),
        );
        for (x, keys) in [(&a, 500u64), (&b, 10), (&d, 20)] {
            let leader = Some(x.peers[0]);
            c.region_heartbeat(x.clone(), leader, 1, 1000, keys)
                .unwrap();
            c.touch_version(x.id, 1_000);
        }
        let min = 60_000;
        assert_eq!(
            pick_merge(&c, 1_000 + min - 1, &cfg),
            None,
            "split too recently"
        );
        // a is too big: b and d merge, the smaller (b) into d.
        assert_eq!(pick_merge(&c, 1_000 + min, &cfg), Some((2, 3)));
        c.set_peer_health(3, vec![d.peers[1]], vec![]);
        assert_eq!(pick_merge(&c, 1_000 + min, &cfg), None, "a down peer");
        c.set_peer_health(3, vec![], vec![]);
        // A busy region is not quiet; one quiet sample is not enough either.
        let busy = crate::flow::FlowRates::from_totals(0, 0, 4000, 400, 1000);
        c.record_region_flow(2, busy.expect("a rate"));
        assert_eq!(pick_merge(&c, 1_000 + min, &cfg), None, "b is busy");
        c.record_region_flow(2, crate::flow::FlowRates::default());
        assert_eq!(pick_merge(&c, 1_000 + min, &cfg), None, "b was busy");
        c.record_region_flow(2, crate::flow::FlowRates::default());
        assert_eq!(pick_merge(&c, 1_000 + min, &cfg), Some((2, 3)));
        // A version change restarts the wait.
        let mut d2 = d.clone();
        d2.epoch = Some(kura_proto::common::RegionEpoch {
            conf_ver: 0,
            version: 1,
        });
        c.region_heartbeat(d2, Some(d.peers[0]), 1, 1000, 20)
            .unwrap();
        c.touch_version(3, 1_000 + min);
        assert_eq!(pick_merge(&c, 1_000 + min, &cfg), None);
        assert_eq!(pick_merge(&c, 1_000 + 2 * min, &cfg), Some((2, 3)));
    }
}
