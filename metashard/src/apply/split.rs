//! Splitting a region: the pure part (checks and the two resulting regions).
//!
//! A split moves no data: data keys are stored raw, not prefixed by region,
//! so both halves find their records where they are. What changes is region
//! metadata: the parent keeps `[start, split_key)`, the new region gets
//! `[split_key, end)` with the same stores (new peer ids), and both carry the
//! parent's `version + 1`, so every request made against the old epoch is
//! answered `EpochNotMatch` and re-routed.

use kura_proto::common::{Peer, Region, RegionEpoch, RegionError};
use kura_proto::metashard::{RequestHeader, SplitRequest};

use super::check_epoch;
use crate::errors;
use crate::keys;

/// The regions a split produces.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitRegions {
    /// The parent, now `[start, split_key)`.
    pub left: Region,
    /// The new region `[split_key, end)`.
    pub right: Region,
}

/// `Ok` when `key` cuts `region` into two non-empty ranges.
pub fn check_split_key(region: &Region, key: &[u8]) -> Result<(), RegionError> {
    let after_start = key > region.start_key.as_ref();
    let before_end = region.end_key.is_empty() || key < region.end_key.as_ref();
    if key.is_empty() || !after_start || !before_end {
        return Err(errors::key_not_in_region(key, region));
    }
    Ok(())
}

/// Checks `split` against `region` (as of the entry's position in the log)
/// and returns the two regions. `Err`: the split is rejected, nothing changes.
pub fn exec_split(
    region: &Region,
    header: Option<&RequestHeader>,
    split: &SplitRequest,
) -> Result<SplitRegions, RegionError> {
    check_epoch(region, header.and_then(|h| h.epoch.as_ref()))?;
    check_split_key(region, &split.split_key)?;
    if split.new_region_id == 0 || split.new_region_id == region.id {
        return Err(errors::server_busy("split: invalid new region id"));
    }
    if split.new_peer_ids.len() != region.peers.len()
        || split.new_peer_ids.contains(&0)
        || (1..split.new_peer_ids.len())
            .any(|i| split.new_peer_ids[..i].contains(&split.new_peer_ids[i]))
    {
        return Err(errors::server_busy(
            "split: need one distinct new peer id per peer",
        ));
    }
    let epoch = region.epoch.unwrap_or_default();
    let new_epoch = RegionEpoch {
        conf_ver: epoch.conf_ver,
        version: epoch.version + 1,
    };
    let mut left = region.clone();
    left.end_key = split.split_key.clone();
    left.epoch = Some(new_epoch);
    let right = Region {
        id: split.new_region_id,
        start_key: split.split_key.clone(),
        end_key: region.end_key.clone(),
        epoch: Some(new_epoch),
        peers: region
            .peers
            .iter()
            .zip(&split.new_peer_ids)
            .map(|(p, id)| Peer {
                id: *id,
                store_id: p.store_id,
                is_learner: p.is_learner,
            })
            .collect(),
    };
    Ok(SplitRegions { left, right })
}

/// The split point of a region whose middle data key is `middle`: the start
/// of that key's object (`0x02 bucket_id enc(key)`), so every record of one
/// object stays in one region. Non-object keys (bucket records) are single
/// records and are used as they are. `None`: no point strictly inside the
/// region (e.g. every key belongs to one object).
pub fn split_point(region: &Region, middle: &[u8]) -> Option<Vec<u8>> {
    let key = match keys::decode_object_key(middle) {
        Some(parts) => keys::object_prefix(parts.bucket_id, &parts.key),
        None => middle.to_vec(),
    };
    check_split_key(region, &key).ok().map(|_| key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_pd_client::client::region_contains;

    fn parent() -> Region {
        Region {
            id: 1,
            start_key: Default::default(),
            end_key: Default::default(),
            epoch: Some(RegionEpoch {
                conf_ver: 3,
                version: 1,
            }),
            peers: (1..=3)
                .map(|i| Peer {
                    id: 10 + i,
                    store_id: i,
                    is_learner: false,
                })
                .collect(),
        }
    }

    fn header(version: u64) -> RequestHeader {
        RequestHeader {
            region_id: 1,
            epoch: Some(RegionEpoch {
                conf_ver: 3,
                version,
            }),
        }
    }

    fn split(key: &[u8]) -> SplitRequest {
        SplitRequest {
            split_key: key.to_vec().into(),
            new_region_id: 2,
            new_peer_ids: vec![21, 22, 23],
        }
    }

    #[test]
    fn split_cuts_the_range_and_bumps_both_versions() {
        let key = keys::object_prefix(7, b"m");
        let r = exec_split(&parent(), Some(&header(1)), &split(&key)).unwrap();
        assert_eq!(r.left.id, 1);
        assert_eq!(r.left.start_key.as_ref(), b"");
        assert_eq!(r.left.end_key.as_ref(), key.as_slice());
        assert_eq!(r.right.start_key.as_ref(), key.as_slice());
        assert!(r.right.end_key.is_empty());
        for reg in [&r.left, &r.right] {
            assert_eq!(
                reg.epoch,
                Some(RegionEpoch {
                    conf_ver: 3,
                    version: 2
                })
            );
        }
        let stores: Vec<_> = r.right.peers.iter().map(|p| (p.id, p.store_id)).collect();
        assert_eq!(stores, vec![(21, 1), (22, 2), (23, 3)]);
        // Key routing: every record of one object lands on one side.
        for (obj, left) in [
            (&b"a"[..], true),
            (b"l\xff", true),
            (b"m", false),
            (b"z", false),
        ] {
            for k in [
                keys::object_version_key(7, obj, 0),
                keys::object_version_key(7, obj, u64::MAX),
                keys::upload_key(7, obj, "u"),
                keys::gc_key(7, obj, b"\xff\xff"),
            ] {
                assert_eq!(region_contains(&r.left, &k), left, "{obj:?}");
                assert_eq!(region_contains(&r.right, &k), !left, "{obj:?}");
            }
        }
        assert!(region_contains(&r.left, &keys::bucket_key("b")));
        assert!(region_contains(&r.right, &keys::object_prefix(8, b"")));
        // The right half splits again under its own epoch.
        let again = SplitRequest {
            split_key: keys::object_prefix(7, b"t").into(),
            new_region_id: 3,
            new_peer_ids: vec![31, 32, 33],
        };
        let h2 = RequestHeader {
            region_id: 2,
            ..header(2)
        };
        let r2 = exec_split(&r.right, Some(&h2), &again).unwrap();
        assert_eq!(r2.left.id, 2);
        assert_eq!(r2.left.epoch.unwrap().version, 3);
        assert!(r2.right.end_key.is_empty());
    }

    #[test]
    fn bad_splits_are_rejected() {
        let p = parent();
        let key = keys::object_prefix(7, b"m");
        let e = exec_split(&p, Some(&header(0)), &split(&key)).unwrap_err();
        assert_eq!(
            e.epoch_not_match.unwrap().current_regions,
            vec![p.clone()],
            "stale epoch"
        );
        assert!(exec_split(&p, Some(&header(1)), &split(b""))
            .unwrap_err()
            .key_not_in_region
            .is_some());
        let mut narrow = p.clone();
        narrow.start_key = b"b".to_vec().into();
        narrow.end_key = b"m".to_vec().into();
        for k in [&b"a"[..], b"b", b"m", b"z"] {
            assert!(
                exec_split(&narrow, Some(&header(1)), &split(k)).is_err(),
                "{k:?}"
            );
        }
        let mut s = split(&key);
        s.new_peer_ids = vec![21, 22];
        assert!(exec_split(&p, Some(&header(1)), &s).is_err());
        s.new_peer_ids = vec![21, 21, 22];
        assert!(exec_split(&p, Some(&header(1)), &s).is_err());
        let mut s = split(&key);
        s.new_region_id = 1;
        assert!(exec_split(&p, Some(&header(1)), &s).is_err());
    }

    #[test]
    fn split_point_rounds_to_the_object_prefix() {
        let p = parent();
        let mid = keys::object_version_key(7, b"photos/x", 42);
        assert_eq!(
            split_point(&p, &mid),
            Some(keys::object_prefix(7, b"photos/x"))
        );
        assert_eq!(
            split_point(&p, &keys::bucket_key("b")),
            Some(keys::bucket_key("b"))
        );
        // A region that starts at the object: no point inside.
        let mut r = p.clone();
        r.start_key = keys::object_prefix(7, b"photos/x").into();
        assert_eq!(split_point(&r, &mid), None);
    }
}
