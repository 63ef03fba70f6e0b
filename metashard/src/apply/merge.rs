//! Merging two adjacent regions: the pure part (checks and resulting regions).
//!
//! Like a split, a merge moves no data (keys are stored raw, one RocksDB per
//! store holds every region). It takes two Raft commands in two logs:
//! 1. `PrepareMerge` in the source's log freezes the source: its epoch moves
//!    (`version` and `conf_ver` + 1, so every request made against the old
//!    epoch fails), and from then on it refuses every batch, read and split.
//!    Its data is final once the PrepareMerge entry is applied.
//! 2. `CommitMerge` in the target's log extends the target over the source's
//!    range and destroys the local source peer, in one write. A store applies
//!    it only once its own source peer has applied the PrepareMerge (the
//!    operator checks every store first; a store that is still behind holds
//!    the target's apply until it catches up, never rejects: a rejection
//!    must be the same on every replica, so it may depend only on the
//!    target's own state and the command).
//!
//! `RollbackMerge` unfreezes a source whose CommitMerge was rejected (by
//! every replica alike); the operator never rolls back when the CommitMerge
//! outcome is unknown.

use kura_pd_client::client::regions_adjacent;
use kura_proto::common::{Region, RegionEpoch, RegionError};
use kura_proto::metashard::{CommitMerge, PrepareMerge, RequestHeader, RollbackMerge};

use super::check_epoch;
use crate::errors;
use crate::peer::state::MergeState;

/// Stores holding a peer of `r`, sorted.
fn stores_of(r: &Region) -> Vec<u64> {
    let mut s: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
    s.sort_unstable();
    s
}

/// Checks that `source` may merge into `target` (both as currently known).
pub fn check_pair(source: &Region, target: &Region) -> Result<(), String> {
    if source.id == target.id {
        return Err("a region cannot merge with itself".into());
    }
    if !regions_adjacent(source, target) {
        return Err(format!(
            "regions {} and {} are not adjacent",
            source.id, target.id
        ));
    }
    if stores_of(source) != stores_of(target) || source.peers.iter().any(|p| p.is_learner) {
        return Err(format!(
            "regions {} and {} do not have voters on the same stores",
            source.id, target.id
        ));
    }
    Ok(())
}

fn bump(epoch: Option<RegionEpoch>, conf: u64, version: u64) -> RegionEpoch {
    let e = epoch.unwrap_or_default();
    RegionEpoch {
        conf_ver: e.conf_ver + conf,
        version: e.version + version,
    }
}

/// The source after its PrepareMerge at log `index`, and its merge state.
pub fn exec_prepare(
    source: &Region,
    merging: Option<&MergeState>,
    header: Option<&RequestHeader>,
    req: &PrepareMerge,
    index: u64,
) -> Result<(Region, MergeState), RegionError> {
    check_epoch(source, header.and_then(|h| h.epoch.as_ref()))?;
    if merging.is_some() {
        return Err(errors::server_busy("region is already merging"));
    }
    let target = req.target.clone().unwrap_or_default();
    check_pair(source, &target).map_err(|m| errors::server_busy(&m))?;
    let mut frozen = source.clone();
    frozen.epoch = Some(bump(source.epoch, 1, 1));
    Ok((
        frozen,
        MergeState {
            target: Some(target),
            prepare_index: index,
        },
    ))
}

/// The target after absorbing `req.source` (checked against the target's
/// own state only, so every replica decides alike).
pub fn exec_commit(
    target: &Region,
    header: Option<&RequestHeader>,
    req: &CommitMerge,
) -> Result<Region, RegionError> {
    check_epoch(target, header.and_then(|h| h.epoch.as_ref()))?;
    let source = req
        .source
        .as_ref()
        .ok_or_else(|| errors::server_busy("commit merge: no source region"))?;
    check_pair(source, target).map_err(|m| errors::server_busy(&m))?;
    if req.prepare_index == 0 {
        return Err(errors::server_busy("commit merge: no prepare index"));
    }
    let mut merged = target.clone();
    // (Empty keys are the unbounded ends: compare the bounded side only.)
    if !target.end_key.is_empty() && target.end_key == source.start_key {
        merged.end_key = source.end_key.clone();
    } else {
        merged.start_key = source.start_key.clone();
    }
    let (t, s) = (
        target.epoch.unwrap_or_default(),
        source.epoch.unwrap_or_default(),
    );
    // Newer than both, so PD and every cache prefer it over either half.
    merged.epoch = Some(RegionEpoch {
        conf_ver: t.conf_ver,
        version: t.version.max(s.version) + 1,
    });
    Ok(merged)
}

/// Whether the local source peer (its persisted region, merge state and
/// applied index) is ready for `req` to be applied on this store.
pub fn source_ready(
    source: Option<(&Region, Option<&MergeState>, u64)>,
    target_id: u64,
    req: &CommitMerge,
) -> bool {
    let Some((region, merging, applied)) = source else {
        return false;
    };
    let want = req.source.as_ref();
    merging.is_some_and(|m| {
        m.prepare_index == req.prepare_index
            && m.target.as_ref().map(|t| t.id) == Some(target_id)
            && applied >= m.prepare_index
    }) && want.is_some_and(|w| w.id == region.id && w.epoch == region.epoch)
}

/// The source after a RollbackMerge: unfrozen, version + 1.
pub fn exec_rollback(
    source: &Region,
    merging: Option<&MergeState>,
    header: Option<&RequestHeader>,
    req: &RollbackMerge,
) -> Result<Region, RegionError> {
    check_epoch(source, header.and_then(|h| h.epoch.as_ref()))?;
    match merging {
        Some(m) if m.prepare_index == req.prepare_index => {}
        _ => {
            return Err(errors::server_busy(
                "rollback merge: not merging at that index",
            ))
        }
    }
    let mut r = source.clone();
    r.epoch = Some(bump(source.epoch, 0, 1));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_proto::common::Peer;

    fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> Region {
        Region {
            id,
            start_key: start.to_vec().into(),
            end_key: end.to_vec().into(),
            epoch: Some(RegionEpoch {
                conf_ver: 3,
                version,
            }),
            peers: (1..=3)
                .map(|s| Peer {
                    id: id * 10 + s,
                    store_id: s,
                    is_learner: false,
                })
                .collect(),
        }
    }

    fn header(r: &Region) -> RequestHeader {
        RequestHeader {
            region_id: r.id,
            epoch: r.epoch,
        }
    }

    #[test]
    fn prepare_then_commit_extends_the_target_either_side() {
        let left = region(1, b"", b"m", 4);
        let right = region(2, b"m", b"", 7);
        // Right merges into left.
        let prep = PrepareMerge {
            target: Some(left.clone()),
        };
        let (frozen, ms) = exec_prepare(&right, None, Some(&header(&right)), &prep, 42).unwrap();
        assert_eq!(frozen.epoch.unwrap().version, 8);
        assert_eq!(frozen.epoch.unwrap().conf_ver, 4);
        assert_eq!(ms.prepare_index, 42);
        let commit = CommitMerge {
            source: Some(frozen.clone()),
            prepare_index: 42,
        };
        let merged = exec_commit(&left, Some(&header(&left)), &commit).unwrap();
        assert_eq!(merged.id, 1);
        assert!(merged.start_key.is_empty() && merged.end_key.is_empty());
        assert_eq!(merged.epoch.unwrap().version, 9, "newer than both halves");
        assert_eq!(merged.epoch.unwrap().conf_ver, 3);
        assert!(source_ready(Some((&frozen, Some(&ms), 42)), 1, &commit));
        assert!(
            !source_ready(Some((&frozen, Some(&ms), 41)), 1, &commit),
            "behind"
        );
        assert!(
            !source_ready(Some((&frozen, None, 50)), 1, &commit),
            "not frozen"
        );
        assert!(!source_ready(None, 1, &commit), "no local peer");
        assert!(
            !source_ready(Some((&frozen, Some(&ms), 42)), 3, &commit),
            "other target"
        );
        // Left merges into right.
        let (frozen, _) = exec_prepare(
            &left,
            None,
            Some(&header(&left)),
            &PrepareMerge {
                target: Some(right.clone()),
            },
            9,
        )
        .unwrap();
        let merged = exec_commit(
            &right,
            Some(&header(&right)),
            &CommitMerge {
                source: Some(frozen),
                prepare_index: 9,
            },
        )
        .unwrap();
        assert_eq!(merged.id, 2);
        assert!(merged.start_key.is_empty() && merged.end_key.is_empty());
    }

    #[test]
    fn bad_merges_are_rejected() {
        let a = region(1, b"", b"f", 2);
        let b = region(2, b"f", b"m", 2);
        let c = region(3, b"m", b"", 2);
        let prep = |t: &Region| PrepareMerge {
            target: Some(t.clone()),
        };
        assert!(
            exec_prepare(&a, None, Some(&header(&a)), &prep(&c), 5).is_err(),
            "not adjacent"
        );
        assert!(
            exec_prepare(&a, None, Some(&header(&a)), &prep(&a), 5).is_err(),
            "itself"
        );
        let mut elsewhere = b.clone();
        elsewhere.peers[0].store_id = 9;
        assert!(exec_prepare(&a, None, Some(&header(&a)), &prep(&elsewhere), 5).is_err());
        let stale = RequestHeader {
            region_id: 1,
            epoch: Some(RegionEpoch {
                conf_ver: 3,
                version: 1,
            }),
        };
        assert!(exec_prepare(&a, None, Some(&stale), &prep(&b), 5)
            .unwrap_err()
            .epoch_not_match
            .is_some());
        let (frozen, ms) = exec_prepare(&a, None, Some(&header(&a)), &prep(&b), 5).unwrap();
        assert!(
            exec_prepare(&frozen, Some(&ms), Some(&header(&frozen)), &prep(&b), 6).is_err(),
            "already merging"
        );
        // The target split since: the commit names a source no longer adjacent.
        let shrunk = region(2, b"g", b"m", 3);
        let commit = CommitMerge {
            source: Some(frozen.clone()),
            prepare_index: 5,
        };
        assert!(exec_commit(&shrunk, None, &commit).is_err());
        // Rollback needs the same prepare index.
        let rb = |i| RollbackMerge { prepare_index: i };
        assert!(exec_rollback(&frozen, Some(&ms), None, &rb(4)).is_err());
        assert!(exec_rollback(&frozen, None, None, &rb(5)).is_err());
        let back = exec_rollback(&frozen, Some(&ms), Some(&header(&frozen)), &rb(5)).unwrap();
        assert_eq!(
            back.epoch.unwrap().version,
            frozen.epoch.unwrap().version + 1
        );
        assert_eq!(back.end_key, a.end_key);
    }
}
