//! A PD client that retries across the configured PD endpoints.
//!
//! Every call goes to the endpoint that answered last; on a transport error or
//! `Unavailable` it moves to the next endpoint and retries with bounded backoff.
//! A replicated PD's follower answers `Unavailable` naming the leader in the
//! `kura-pd-leader` metadata: the client goes straight there when the leader
//! is one of its endpoints, so a leader change costs one extra hop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::channel::Channel;
use kura_proto::common::Region;
use kura_proto::pd::pd_client::PdClient as RawPdClient;
use kura_proto::pd::*;

use crate::channel::lazy_channel;

#[derive(Debug, thiserror::Error)]
pub enum PdError {
    #[error("no PD endpoint given")]
    NoEndpoints,
    #[error("invalid PD endpoint {0:?}: {1}")]
    BadEndpoint(String, String),
    #[error("PD unreachable after {attempts} attempts: {last}")]
    Unreachable { attempts: u32, last: String },
    #[error("PD rejected the request: {0}")]
    Rejected(String),
}

impl PdError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            PdError::NoEndpoints => false,
            PdError::BadEndpoint(..) => false,
            PdError::Unreachable { .. } => true,
            PdError::Rejected(_) => false,
        }
    }
}

/// Cheap to clone; clones share nothing but the channels (which are shared handles).
#[derive(Clone)]
pub struct PdClient {
    endpoints: std::sync::Arc<Vec<(String, RawPdClient<Channel>)>>,
    current: std::sync::Arc<AtomicUsize>,
    attempts: u32,
}

const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// gRPC metadata a PD follower names the leader's gRPC address in.
pub const LEADER_METADATA: &str = "kura-pd-leader";

/// `host:port` of an endpoint given as `host:port` or a URL.
fn authority(endpoint: &str) -> &str {
    let e = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    e.trim_end_matches('/')
}

impl PdClient {
    /// Builds a client over `endpoints` (`host:port` or URLs). Does not connect yet.
    pub fn new(endpoints: &[String]) -> Result<Self, PdError> {
        if endpoints.is_empty() {
            return Err(PdError::NoEndpoints);
        }
        let mut v = Vec::new();
        for e in endpoints {
            let ch =
                lazy_channel(e).map_err(|err| PdError::BadEndpoint(e.clone(), err.to_string()))?;
            v.push((e.clone(), RawPdClient::new(ch)));
        }
        Ok(PdClient {
            endpoints: std::sync::Arc::new(v),
            current: Default::default(),
            attempts: 10,
        })
    }

    /// Same client, but giving up after `attempts` tries (at least 1).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Runs `f` against the current endpoint, failing over and backing off on
    /// transport errors. `f` receives a fresh clone of the raw tonic client.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, PdError>
    where
        F: Fn(RawPdClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = Duration::from_millis(50);
        let mut last = String::new();
        for attempt in 0..self.attempts {
            let idx = self.current.load(Ordering::Relaxed) % self.endpoints.len();
            let (addr, client) = &self.endpoints[idx];
            if crate::cluster_id::get().is_none() {
                // The first answer from PD names the cluster this process
                // belongs to; every internal request carries it from then on.
                let mut raw = client.clone();
                let learn = raw.get_cluster(GetClusterRequest {});
                if let Ok(Ok(r)) = tokio::time::timeout(RPC_TIMEOUT, learn).await {
                    crate::cluster_id::set(r.into_inner().cluster_id);
                }
            }
            match tokio::time::timeout(RPC_TIMEOUT, f(client.clone())).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) => match status.code() {
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                        last = format!("{addr}: {}", status.message());
                        if let Some(leader) = self.leader_hint(&status) {
                            if leader != idx {
                                // A follower named the leader: go there now.
                                self.current.store(leader, Ordering::Relaxed);
                                continue;
                            }
                        }
                    }
                    tonic::Code::FailedPrecondition => {
                        // Not the PD leader: try the next endpoint.
                        last = format!("{addr}: {}", status.message());
                    }
                    _ => return Err(PdError::Rejected(status.message().to_string())),
                },
                Err(_) => last = format!("{addr}: timed out"),
            }
            self.current.store(idx + 1, Ordering::Relaxed);
            if attempt + 1 < self.attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
        Err(PdError::Unreachable {
            attempts: self.attempts,
            last,
        })
    }

    /// The index of the endpoint a not-leader answer names, if it is one of ours.
    fn leader_hint(&self, status: &tonic::Status) -> Option<usize> {
        let leader = status.metadata().get(LEADER_METADATA)?.to_str().ok()?;
        self.endpoints
            .iter()
            .position(|(e, _)| authority(e) == authority(leader))
    }

    /// The PD members and the leader, as the endpoint that answers knows them
    /// (any member answers, leader or not).
    pub async fn get_members(&self) -> Result<GetMembersResponse, PdError> {
        let r = self
            .call(|mut c| async move { c.get_members(GetMembersRequest {}).await })
            .await?;
        Self::check(r.error.clone())?;
        Ok(r)
    }

    fn check(err: Option<kura_proto::pd::PdError>) -> Result<(), PdError> {
        match err {
            Some(e) if !e.message.is_empty() => Err(PdError::Rejected(e.message)),
            _ => Ok(()),
        }
    }

    pub async fn get_cluster(&self) -> Result<GetClusterResponse, PdError> {
        let r = self
            .call(|mut c| async move { c.get_cluster(GetClusterRequest {}).await })
            .await?;
        Self::check(r.error.clone())?;
        Ok(r)
    }

    /// Allocates `count` consecutive ids and returns the first.
    pub async fn alloc_ids(&self, count: u32) -> Result<u64, PdError> {
        let r = self
            .call(|mut c| async move { c.alloc_id(AllocIdRequest { count }).await })
            .await?;
        Self::check(r.error)?;
        Ok(r.first_id)
    }

    pub async fn alloc_id(&self) -> Result<u64, PdError> {
        self.alloc_ids(1).await
    }

    /// Registers a metashard store; `uuid` is its data dir's identity, which
    /// proves a nonzero `store.id` (docs/decisions/0024-node-identities.md).
    pub async fn register_store(&self, store: Store, uuid: &str) -> Result<u64, PdError> {
        let r = self
            .call(|mut c| {
                let req = RegisterStoreRequest {
                    store: Some(store.clone()),
                    uuid: uuid.to_string(),
                };
                async move { c.register_store(req).await }
            })
            .await?;
        Self::check(r.error)?;
        Ok(r.store_id)
    }

    pub async fn store_heartbeat(
        &self,
        req: StoreHeartbeatRequest,
    ) -> Result<StoreHeartbeatResponse, PdError> {
        let r = self.call(|mut c| async move { c.store_heartbeat(req).await });
        let r = r.await?;
        Self::check(r.error.clone())?;
        Ok(r)
    }

    pub async fn region_heartbeat(&self, req: RegionHeartbeatRequest) -> Result<(), PdError> {
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.region_heartbeat(req).await }
            })
            .await?;
        Self::check(r.error)
    }

    pub async fn get_stores(&self) -> Result<Vec<Store>, PdError> {
        let r = self
            .call(|mut c| async move { c.get_stores(GetStoresRequest {}).await })
            .await?;
        Self::check(r.error)?;
        Ok(r.stores)
    }

    /// The region holding `key`, if PD knows one yet.
    pub async fn get_region(&self, key: &[u8]) -> Result<Option<RegionInfo>, PdError> {
        let key = key.to_vec();
        let r = self
            .call(|mut c| {
                let key = key.clone();
                async move { c.get_region(GetRegionRequest { key: key.into() }).await }
            })
            .await?;
        Self::check(r.error)?;
        Ok(r.region)
    }

    pub async fn get_region_by_id(&self, region_id: u64) -> Result<Option<RegionInfo>, PdError> {
        let r = self
            .call(
                |mut c| async move { c.get_region_by_id(GetRegionByIdRequest { region_id }).await },
            )
            .await?;
        Self::check(r.error)?;
        Ok(r.region)
    }

    /// Regions overlapping [start, end) in key order, at most `limit` (0: PD's default).
    pub async fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<RegionInfo>, PdError> {
        let (start, end) = (start.to_vec(), end.to_vec());
        let r = self
            .call(|mut c| {
                let req = ScanRegionsRequest {
                    start_key: start.clone().into(),
                    end_key: end.clone().into(),
                    limit,
                };
                async move { c.scan_regions(req).await }
            })
            .await?;
        Self::check(r.error)?;
        Ok(r.regions)
    }

    /// Registers a data node; `uuid` proves a nonzero `node.id` as for stores.
    pub async fn register_data_node(&self, node: DataNode, uuid: &str) -> Result<u64, PdError> {
        let r = self
            .call(|mut c| {
                let req = RegisterDataNodeRequest {
                    node: Some(node.clone()),
                    uuid: uuid.to_string(),
                };
                async move { c.register_data_node(req).await }
            })
            .await?;
        Self::check(r.error)?;
        Ok(r.node_id)
    }

    pub async fn data_node_heartbeat(&self, req: DataNodeHeartbeatRequest) -> Result<(), PdError> {
        let r = self
            .call(|mut c| async move { c.data_node_heartbeat(req).await })
            .await?;
        Self::check(r.error)
    }

    /// The placement map; `None` when PD's version equals `known_version`.
    pub async fn get_placement(&self, known_version: u64) -> Result<Option<PlacementMap>, PdError> {
        let r = self
            .call(
                |mut c| async move { c.get_placement(GetPlacementRequest { known_version }).await },
            )
            .await?;
        Self::check(r.error)?;
        Ok(r.map)
    }

    /// Reports this gateway's rate-limit demand and returns its shares
    /// (docs/decisions/0022). Callers use a client with few attempts: a
    /// report that fails is replaced by the next one a few hundred ms later.
    pub async fn rate_share(&self, req: RateShareRequest) -> Result<RateShareResponse, PdError> {
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.rate_share(req).await }
            })
            .await?;
        Self::check(r.error.clone())?;
        Ok(r)
    }
}

/// True when `a` ends where `b` starts or `b` ends where `a` starts (an
/// empty key is an unbounded end, never a shared boundary).
pub fn regions_adjacent(a: &Region, b: &Region) -> bool {
    (!a.end_key.is_empty() && a.end_key == b.start_key)
        || (!b.end_key.is_empty() && b.end_key == a.start_key)
}

/// True when `key` lies in `region`'s range.
pub fn region_contains(region: &Region, key: &[u8]) -> bool {
    key >= region.start_key.as_ref() && (region.end_key.is_empty() || key < region.end_key.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_leader_hint_names_one_of_the_endpoints_however_it_is_spelled() {
        let eps = ["http://10.0.0.1:2380/", "10.0.0.2:2380", "10.0.0.3:2380"].map(String::from);
        let c = PdClient::new(&eps).unwrap();
        let hint = |leader: &str| {
            let mut s = tonic::Status::unavailable("not the leader");
            s.metadata_mut()
                .insert(LEADER_METADATA, leader.parse().unwrap());
            c.leader_hint(&s)
        };
        assert_eq!(hint("10.0.0.1:2380"), Some(0));
        assert_eq!(hint("http://10.0.0.3:2380"), Some(2));
        assert_eq!(hint("10.0.0.9:2380"), None, "not one of ours");
        assert_eq!(c.leader_hint(&tonic::Status::unavailable("down")), None);
    }
}
