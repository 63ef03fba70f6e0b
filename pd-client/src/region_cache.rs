//! Key → region → leader cache, filled from PD and corrected by routing errors.
//!
//! Entries never expire on their own: a gateway keeps routing from its cache
//! while PD is briefly unavailable. An entry is dropped or corrected when a
//! store answers `NotLeader`, `EpochNotMatch`, `RegionNotFound` or
//! `KeyNotInRegion` for it.

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

    /// The route for `key`, from cache or PD. `Ok(None)`: PD has no region for it yet
    /// (the cluster is still bootstrapping).
    pub async fn locate(&self, key: &[u8]) -> Result<Option<RegionRoute>, PdError> {
        if let Some(r) = self.cached(key) {
            if r.has_leader() {
                return Ok(Some(r));
            }
        }
        match self.pd.get_region(key).await {
            Ok(Some(info)) => Ok(Some(self.insert(info))),
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
        Ok(infos.into_iter().map(|i| self.insert(i)).collect())
    }

    fn insert(&self, info: RegionInfo) -> RegionRoute {
        let region = info.region.unwrap_or_default();
        let route = RegionRoute {
            region,
            leader: info.leader,
            leader_addr: info.leader_addr,
        };
        self.put(route.clone());
        route
    }

    /// Inserts `route`, dropping every cached region it overlaps.
    fn put(&self, route: RegionRoute) {
        let mut routes = self.routes.lock().expect("region cache lock poisoned");
        let start = route.region.start_key.to_vec();
        let end = route.region.end_key.to_vec();
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
        for k in overlapping {
            routes.remove(&k);
        }
        routes.insert(start, route);
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

    /// A store said our epoch is stale and sent the regions it has now.
    pub fn on_epoch_not_match(&self, region_id: u64, current: Vec<Region>) {
        self.invalidate(region_id);
        for region in current {
            // Leader unknown: the next locate of these keys asks PD.
            self.put(RegionRoute {
                region,
                leader: None,
                leader_addr: String::new(),
            });
        }
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
