//! Key → region → leader cache, filled from PD and corrected by routing errors.
//!
//! Entries never expire on their own: a gateway keeps routing from its cache
//! while PD is briefly unavailable. An entry is dropped or corrected when a
//! store answers `NotLeader`, `EpochNotMatch`, `RegionNotFound` or
//! `KeyNotInRegion` for it. After a split, `EpochNotMatch` carries both halves;
//! they replace every overlapping entry, and an answer from PD older (lower
//! `version`) than a cached overlapping region is not allowed to undo that.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kura_proto::common::{Peer, Region};
use kura_proto::pd::RegionInfo;

use crate::client::{region_contains, PdClient, PdError};

/// Where to send a request for a key.
#[derive(Clone, Debug)]
pub struct RegionRoute {
    pub region: Region,
    /// The leader peer, when known.
    pub leader: Option<Peer>,
    /// gRPC address of the leader's store, when known.
    pub leader_addr: String,
}

impl RegionRoute {
    /// Every store address of the region's peers that we know, leader first.
    pub fn has_leader(&self) -> bool {
        self.leader.is_some() && !self.leader_addr.is_empty()
    }
}

pub struct RegionCache {
    pd: PdClient,
    /// start_key → route.
    routes: Mutex<BTreeMap<Vec<u8>, RegionRoute>>,
}

impl RegionCache {
    pub fn new(pd: PdClient) -> Self {
        RegionCache {
            pd,
            routes: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn pd(&self) -> &PdClient {
        &self.pd
    }

    fn cached(&self, key: &[u8]) -> Option<RegionRoute> {
        let routes = self.routes.lock().expect("region cache lock poisoned");
        let (_, route) = routes.range(..=key.to_vec()).next_back()?;
        region_contains(&route.region, key).then(|| route.clone())
    }

    /// Whether the cache holds a route with a known leader for `key`.
    pub fn is_cached(&self, key: &[u8]) -> bool {
        self.cached(key).is_some_and(|r| r.has_leader())
    }

    /// The route for `key`, from cache or PD. `Ok(None)`: PD has no region for it yet
    /// (the cluster is still bootstrapping).
    pub async fn locate(&self, key: &[u8]) -> Result<Option<RegionRoute>, PdError> {
        if let Some(r) = self.cached(key) {
            if r.has_leader() {
                return Ok(Some(r));
            }
        }
        match self.pd.get_region(key).await {
            Ok(Some(info)) => match self.insert(info) {
                Some(route) => Ok(Some(route)),
                // PD has not heard of a split we already know about: route
                // with what we know (the leader, if unknown, comes later).
                None => Ok(self.cached(key)),
            },
            Ok(None) => Ok(None),
            // PD is unreachable: route with whatever we know, so the store can
            // tell us the leader.
            Err(e) if e.is_retryable() => match self.cached(key) {
                Some(r) => Ok(Some(r)),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Loads every region overlapping [start, end) in one PD call and caches them.
    pub async fn load_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<RegionRoute>, PdError> {
        let infos = self.pd.scan_regions(start, end, limit).await?;
        Ok(infos.into_iter().filter_map(|i| self.insert(i)).collect())
    }

    /// Caches a region PD sent; `None` when the cache knows a newer region
    /// overlapping it (PD is behind a split), which is then kept.
    fn insert(&self, info: RegionInfo) -> Option<RegionRoute> {
        let mut region = info.region.unwrap_or_default();
        // Cached for long: own the keys rather than pin the response's buffer.
        region.start_key = region.start_key.to_vec().into();
        region.end_key = region.end_key.to_vec().into();
        let route = RegionRoute {
            region,
            leader: info.leader,
            leader_addr: info.leader_addr,
        };
        self.put(route.clone()).then_some(route)
    }

    /// Inserts `route`, dropping every cached region it overlaps, unless one
    /// of those has a newer `version` (then nothing changes and this is false).
    fn put(&self, route: RegionRoute) -> bool {
        let mut routes = self.routes.lock().expect("region cache lock poisoned");
        let start = route.region.start_key.to_vec();
        let end = route.region.end_key.to_vec();
        let version = route.region.epoch.unwrap_or_default().version;
        let overlapping: Vec<Vec<u8>> = routes
            .iter()
            .filter(|(_, r)| {
                let r_end_after_start =
                    r.region.end_key.is_empty() || r.region.end_key.as_ref() > start.as_slice();
                let r_start_before_end =
                    end.is_empty() || r.region.start_key.as_ref() < end.as_slice();
                r_end_after_start && r_start_before_end
            })
            .map(|(k, _)| k.clone())
            .collect();
        let newer_cached = overlapping.iter().any(|k| {
            routes
                .get(k)
                .is_some_and(|r| r.region.epoch.unwrap_or_default().version > version)
        });
        if newer_cached {
            return false;
        }
        for k in overlapping {
            routes.remove(&k);
        }
        routes.insert(start, route);
        true
    }

    /// Drops the cached entry of `region_id`.
    pub fn invalidate(&self, region_id: u64) {
        let mut routes = self.routes.lock().expect("region cache lock poisoned");
        routes.retain(|_, r| r.region.id != region_id);
    }

    /// A store said it is not the leader; it may have told us who is.
    pub fn on_not_leader(&self, region_id: u64, leader: Option<Peer>, leader_addr: &str) {
        let mut routes = self.routes.lock().expect("region cache lock poisoned");
        let entry = routes.values_mut().find(|r| r.region.id == region_id);
        match (entry, leader) {
            (Some(r), Some(l)) if !leader_addr.is_empty() => {
                r.leader = Some(l);
                r.leader_addr = leader_addr.to_string();
            }
            (Some(r), _) => {
                r.leader = None;
                r.leader_addr.clear();
            }
            (None, _) => {}
        }
    }

    /// A store said our epoch is stale and sent the regions it has now
    /// (after a split: the parent's new range and the regions split off it).
    /// They replace every cached region they overlap. Their leader is
    /// guessed to be on the store that answered (`answered_by`: store id and
    /// address), where a split leaves the new regions' leaders: a wrong guess
    /// costs one `NotLeader`/`RegionNotFound` round trip.
    pub fn on_epoch_not_match(
        &self,
        region_id: u64,
        current: Vec<Region>,
        answered_by: Option<(u64, &str)>,
    ) {
        self.invalidate(region_id);
        for region in current {
            let leader = answered_by.and_then(|(store_id, addr)| {
                region
                    .peers
                    .iter()
                    .find(|p| p.store_id == store_id && !p.is_learner)
                    .map(|p| (*p, addr.to_string()))
            });
            let (leader, leader_addr) = match leader {
                Some((p, a)) => (Some(p), a),
                None => (None, String::new()),
            };
            self.put(RegionRoute {
                region,
                leader,
                leader_addr,
            });
        }
    }

    /// Every cached route in key order (for tests and debugging).
    pub fn routes(&self) -> Vec<RegionRoute> {
        self.routes
            .lock()
            .expect("region cache lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Number of cached regions (for metrics and tests).
    pub fn len(&self) -> usize {
        self.routes
            .lock()
            .expect("region cache lock poisoned")
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_proto::common::RegionEpoch;

    fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> Region {
        Region {
            id,
            start_key: start.to_vec().into(),
            end_key: end.to_vec().into(),
            epoch: Some(RegionEpoch {
                conf_ver: 1,
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

    fn route(r: Region) -> RegionRoute {
        RegionRoute {
            leader: Some(r.peers[1]),
            region: r,
            leader_addr: "s2:1".into(),
        }
    }

    fn cache() -> RegionCache {
        RegionCache::new(PdClient::new(&["127.0.0.1:1".to_string()]).unwrap())
    }

    fn ids(c: &RegionCache) -> Vec<u64> {
        c.routes().iter().map(|r| r.region.id).collect()
    }

    #[tokio::test]
    async fn epoch_not_match_after_a_split_replaces_the_parent_with_both_halves() {
        let c = cache();
        assert!(c.put(route(region(1, b"", b"", 1))));
        c.on_epoch_not_match(
            1,
            vec![region(1, b"", b"m", 2), region(2, b"m", b"", 2)],
            Some((2, "s2:1")),
        );
        assert_eq!(ids(&c), vec![1, 2]);
        let right = c.cached(b"x").unwrap();
        assert_eq!(right.region.id, 2);
        assert_eq!(
            right.leader.unwrap().id,
            22,
            "leader guessed on the answering store"
        );
        assert_eq!(right.leader_addr, "s2:1");
        assert_eq!(c.cached(b"a").unwrap().region.id, 1);
        // PD has not heard of the split yet: its old region does not undo it.
        assert!(!c.put(route(region(1, b"", b"", 1))));
        assert_eq!(ids(&c), vec![1, 2]);
        // A newer view replaces older overlapping entries.
        assert!(c.put(route(region(3, b"k", b"z", 3))));
        assert_eq!(ids(&c), vec![3]);
        c.invalidate(3);
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn key_lookup_respects_range_ends() {
        let c = cache();
        c.put(route(region(1, b"", b"m", 2)));
        assert!(c.cached(b"m").is_none(), "end is exclusive");
        c.put(route(region(2, b"m", b"", 2)));
        assert_eq!(c.cached(b"m").unwrap().region.id, 2);
        assert_eq!(c.cached(b"").unwrap().region.id, 1);
    }
}
