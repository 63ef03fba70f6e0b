//! The gRPC face of PD: `kura_proto::pd::pd_server::Pd` over [`PdCore`].
//! Thin: unpack, call the core, pack; errors become `Status` once, via
//! `From<Error> for Status` (see `error.rs`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kura_proto::pd::pd_server::Pd;
use kura_proto::pd::*;
use tonic::{Request, Response, Status};

use crate::ratelimit::{Demand, ShareTable};
use crate::server::PdCore;
use crate::Error;

pub struct PdService {
    core: Arc<PdCore>,
    /// Rate-limit shares (soft state, not in the model: see `ratelimit.rs`).
    /// A std mutex: held for one report's arithmetic, never across an await.
    rates: Mutex<ShareTable>,
}

impl PdService {
    pub fn new(core: Arc<PdCore>) -> Self {
        PdService {
            core,
            rates: Mutex::new(ShareTable::new()),
        }
    }
}

/// Most (scope, kind) pairs one gateway may report at once: far above what
/// a gateway tracks (scopes with traffic in the last seconds), low enough
/// that a broken client can't make one report hold the lock for long.
const MAX_RATE_DEMANDS: usize = 100_000;

type Reply<T> = Result<Response<T>, Status>;

fn ok<T>(t: T) -> Reply<T> {
    Ok(Response::new(t))
}

#[tonic::async_trait]
impl Pd for PdService {
    async fn get_cluster(&self, _req: Request<GetClusterRequest>) -> Reply<GetClusterResponse> {
        self.core.ensure_leader().await?;
        ok(self.core.cluster_info().await)
    }

    async fn alloc_id(&self, req: Request<AllocIdRequest>) -> Reply<AllocIdResponse> {
        self.core.ensure_leader().await?;
        let count = req.into_inner().count;
        let first_id = self.core.alloc_ids(count).await?;
        ok(AllocIdResponse {
            error: None,
            first_id,
            count,
        })
    }

    async fn register_store(
        &self,
        req: Request<RegisterStoreRequest>,
    ) -> Reply<RegisterStoreResponse> {
        self.core.ensure_leader().await?;
        let req = req.into_inner();
        let store = req
            .store
            .ok_or_else(|| Error::InvalidArgument("no store given".into()))?;
        let store_id = self.core.register_store(store, &req.uuid).await?;
        ok(RegisterStoreResponse {
            error: None,
            store_id,
        })
    }

    async fn store_heartbeat(
        &self,
        req: Request<StoreHeartbeatRequest>,
    ) -> Reply<StoreHeartbeatResponse> {
        self.core.ensure_leader().await?;
        let create_peers = self.core.store_heartbeat(req.into_inner()).await?;
        ok(StoreHeartbeatResponse {
            error: None,
            create_peers,
        })
    }

    async fn region_heartbeat(
        &self,
        req: Request<RegionHeartbeatRequest>,
    ) -> Reply<RegionHeartbeatResponse> {
        self.core.ensure_leader().await?;
        self.core.region_heartbeat(req.into_inner()).await?;
        ok(RegionHeartbeatResponse { error: None })
    }

    async fn get_stores(&self, _req: Request<GetStoresRequest>) -> Reply<GetStoresResponse> {
        self.core.ensure_leader().await?;
        ok(GetStoresResponse {
            error: None,
            stores: self.core.stores().await,
        })
    }

    async fn get_region(&self, req: Request<GetRegionRequest>) -> Reply<GetRegionResponse> {
        self.core.ensure_leader().await?;
        let region = self.core.region_by_key(&req.into_inner().key).await;
        ok(GetRegionResponse {
            error: None,
            region,
        })
    }

    async fn get_region_by_id(
        &self,
        req: Request<GetRegionByIdRequest>,
    ) -> Reply<GetRegionResponse> {
        self.core.ensure_leader().await?;
        let region = self.core.region_by_id(req.into_inner().region_id).await;
        ok(GetRegionResponse {
            error: None,
            region,
        })
    }

    async fn scan_regions(&self, req: Request<ScanRegionsRequest>) -> Reply<ScanRegionsResponse> {
        self.core.ensure_leader().await?;
        let r = req.into_inner();
        if !r.end_key.is_empty() && r.end_key <= r.start_key {
            return Err(
                Error::InvalidArgument("end_key must be empty or above start_key".into()).into(),
            );
        }
        let regions = self
            .core
            .scan_regions(&r.start_key, &r.end_key, r.limit)
            .await;
        ok(ScanRegionsResponse {
            error: None,
            regions,
        })
    }

    async fn register_data_node(
        &self,
        req: Request<RegisterDataNodeRequest>,
    ) -> Reply<RegisterDataNodeResponse> {
        self.core.ensure_leader().await?;
        let req = req.into_inner();
        let node = req
            .node
            .ok_or_else(|| Error::InvalidArgument("no data node given".into()))?;
        let node_id = self.core.register_data_node(node, &req.uuid).await?;
        ok(RegisterDataNodeResponse {
            error: None,
            node_id,
        })
    }

    async fn data_node_heartbeat(
        &self,
        req: Request<DataNodeHeartbeatRequest>,
    ) -> Reply<DataNodeHeartbeatResponse> {
        self.core.ensure_leader().await?;
        self.core.data_node_heartbeat(req.into_inner()).await?;
        ok(DataNodeHeartbeatResponse { error: None })
    }

    async fn get_placement(
        &self,
        req: Request<GetPlacementRequest>,
    ) -> Reply<GetPlacementResponse> {
        self.core.ensure_leader().await?;
        let map = self.core.placement(req.into_inner().known_version).await;
        ok(GetPlacementResponse { error: None, map })
    }

    async fn get_members(&self, _req: Request<GetMembersRequest>) -> Reply<GetMembersResponse> {
        let (members, leader) = self.core.members();
        ok(GetMembersResponse {
            error: None,
            members,
            leader,
        })
    }

    async fn rate_share(&self, req: Request<RateShareRequest>) -> Reply<RateShareResponse> {
        self.core.ensure_leader().await?;
        let r = req.into_inner();
        if r.gateway_id.is_empty() {
            return Err(Error::InvalidArgument("no gateway_id given".into()).into());
        }
        if r.demands.len() > MAX_RATE_DEMANDS {
            return Err(Error::InvalidArgument(format!(
                "{} rate demands in one report (at most {MAX_RATE_DEMANDS})",
                r.demands.len()
            ))
            .into());
        }
        let demands: Vec<Demand> = r
            .demands
            .iter()
            .map(|d| Demand {
                scope: d.scope.clone(),
                kind: d.kind,
                limit: d.limit,
                demand: d.demand,
            })
            .collect();
        let shares = {
            // A panic elsewhere while holding it leaves only soft state behind.
            let mut table = self.rates.lock().unwrap_or_else(|p| p.into_inner());
            table.report(&r.gateway_id, &demands, Instant::now())
        };
        let grants = r
            .demands
            .into_iter()
            .zip(shares.rates)
            .map(|(d, rate)| RateGrant {
                scope: d.scope,
                kind: d.kind,
                rate,
            })
            .collect();
        ok(RateShareResponse {
            error: None,
            grants,
            gateways: shares.gateways,
            provisional: shares.provisional,
        })
    }
}
