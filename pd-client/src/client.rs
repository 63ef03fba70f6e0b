//! A PD client that retries across the configured PD endpoints.
//!
//! Every call goes to the endpoint that answered last; on a transport error or
//! `Unavailable` it moves to the next endpoint and retries with bounded backoff.
//! A replicated PD's follower answers `Unavailable` naming the leader in the
//! `kura-pd-leader` metadata: the client goes straight there when the leader
//! is one of its endpoints, so a leader change costs one extra hop.
//!
//! Right after the leader dies its followers still name it until they elect
//! a new one. So an endpoint that just failed at the transport level is
//! remembered as down for [`DOWN_FOR`], and a hint naming it is not followed:
//! the client keeps rotating (with backoff) until some member answers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// Why one try failed.
enum Failure {
    /// No answer (connect error, timeout).
    Transport(String),
    /// A member answered that it can't serve (not the leader, or no leader
    /// yet), maybe naming the leader among our endpoints.
    NotLeader(String, Option<usize>),
    /// A definite answer: retrying won't change it.
    Rejected(String),
}

/// Cheap to clone; clones share nothing but the channels (which are shared handles).
#[derive(Clone)]
pub struct PdClient {
    endpoints: std::sync::Arc<Vec<(String, RawPdClient<Channel>)>>,
    current: std::sync::Arc<AtomicUsize>,
    /// Per endpoint: when it last failed at the transport level, as ms since
    /// `epoch` (0 = never).
    failed_at: std::sync::Arc<Vec<AtomicU64>>,
    epoch: Instant,
    attempts: u32,
}

/// How long an endpoint that failed at the transport level counts as down
/// for leader hints (longer than a PD election, so a stale hint is ignored).
const DOWN_FOR: Duration = Duration::from_secs(3);

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
            failed_at: std::sync::Arc::new(v.iter().map(|_| AtomicU64::new(0)).collect()),
            endpoints: std::sync::Arc::new(v),
            current: Default::default(),
            epoch: Instant::now(),
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
            match self.try_once(client, &f).await {
                Ok(resp) => return Ok(resp),
                Err(Failure::Rejected(msg)) => return Err(PdError::Rejected(msg)),
                Err(Failure::Transport(msg)) => {
                    last = format!("{addr}: {msg}");
                    self.mark_down(idx);
                }
                Err(Failure::NotLeader(msg, hint)) => {
                    last = format!("{addr}: {msg}");
                    match hint {
                        // A follower named the leader: go there now, unless
                        // that leader just failed (the hint is stale).
                        Some(leader) if leader != idx && !self.is_down(leader) => {
                            self.current.store(leader, Ordering::Relaxed);
                            continue;
                        }
                        _ => {}
                    }
                }
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

    /// One try of `f` against `client` (learning the cluster id first if this
    /// process doesn't know it yet).
    async fn try_once<T, F, Fut>(&self, client: &RawPdClient<Channel>, f: &F) -> Result<T, Failure>
    where
        F: Fn(RawPdClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        if crate::cluster_id::get().is_none() {
            // The first answer from PD names the cluster this process
            // belongs to; every internal request carries it from then on.
            let mut raw = client.clone();
            match tokio::time::timeout(RPC_TIMEOUT, raw.get_cluster(GetClusterRequest {})).await {
                Ok(Ok(r)) => crate::cluster_id::set(r.into_inner().cluster_id),
                Ok(Err(status)) => {
                    if let failure @ Failure::Transport(_) = self.classify(status) {
                        // Down: don't wait for `f` to fail on it too.
                        return Err(failure);
                    }
                }
                Err(_) => return Err(Failure::Transport("timed out".into())),
            }
        }
        match tokio::time::timeout(RPC_TIMEOUT, f(client.clone())).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(self.classify(status)),
            Err(_) => Err(Failure::Transport("timed out".into())),
        }
    }

    fn classify(&self, status: tonic::Status) -> Failure {
        let msg = status.message().to_string();
        // A status with a source was made here from a connect or transport
        // error; one without came over the wire from a live member.
        if std::error::Error::source(&status).is_some() {
            return Failure::Transport(msg);
        }
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                Failure::NotLeader(msg, self.leader_hint(&status))
            }
            // Not the PD leader: try the next endpoint.
            tonic::Code::FailedPrecondition => Failure::NotLeader(msg, None),
            _ => Failure::Rejected(msg),
        }
    }

    fn now_ms(&self) -> u64 {
        // +1 so that a failure in the first millisecond is not "never".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn mark_down(&self, idx: usize) {
        self.failed_at[idx].store(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether endpoint `idx` failed at the transport level within [`DOWN_FOR`].
    fn is_down(&self, idx: usize) -> bool {
        let at = self.failed_at[idx].load(Ordering::Relaxed);
        at != 0 && self.now_ms().saturating_sub(at) < DOWN_FOR.as_millis() as u64
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
        let r = self.call(|mut c| {
            let req = req.clone();
            async move { c.store_heartbeat(req).await }
        });
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
            .call(|mut c| {
                let req = req.clone();
                async move { c.data_node_heartbeat(req).await }
            })
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

    #[tokio::test]
    async fn a_hint_naming_an_endpoint_that_just_failed_is_not_followed() {
        let eps = ["10.0.0.1:2380", "10.0.0.2:2380"].map(String::from);
        let c = PdClient::new(&eps).unwrap();
        let mut stale = tonic::Status::unavailable("not the leader");
        stale
            .metadata_mut()
            .insert(LEADER_METADATA, "10.0.0.1:2380".parse().unwrap());
        assert!(matches!(c.classify(stale), Failure::NotLeader(_, Some(0))));
        assert!(!c.is_down(0));
        c.mark_down(0);
        assert!(c.is_down(0), "a transport failure marks the endpoint down");
        assert!(!c.is_down(1));
        // A status made locally from a connect error carries its source.
        let local = tonic::Status::from_error(Box::new(std::io::Error::other("connect refused")));
        assert!(matches!(c.classify(local), Failure::Transport(_)));
        assert!(matches!(
            c.classify(tonic::Status::invalid_argument("no")),
            Failure::Rejected(_)
        ));
    }
}
