//! The `Metashard` gRPC service: the edge where requests become [`StoreMsg`]s
//! and answers/errors become wire messages.
//!
//! Region errors travel in `ResponseHeader.region_error` (the client fixes its
//! cache and retries); a gRPC `Status` means the request may or may not have
//! been executed (timeout, store stopping) or was malformed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kura_proto::common::{RegionEpoch, RegionError};
use kura_proto::metashard::metashard_server::Metashard;
use kura_proto::metashard::*;
use tokio::sync::{oneshot, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::apply;
use crate::apply::split::split_point;
use crate::engine::{Engine, ScanOpts};
use crate::errors;
use crate::fsm::validate;
use crate::fsm::{Callback, ReadGrant, Router, StoreMsg};
use crate::metrics;
use crate::snap::{self, SnapError, SnapManager};
use crate::transport::StoreResolver;

/// How long a request waits for raft before the store gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Server default and cap of a scan's `limit`.
pub const DEFAULT_SCAN_LIMIT: usize = 1000;
const MAX_SCAN_LIMIT: usize = 10_000;
/// A snapshot sender that sends no chunk (1 MiB) for this long is cut off:
/// it is hung, and it holds one of the store's receive slots.
const SNAPSHOT_CHUNK_IDLE: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct MetashardService {
    router: Router,
    engine: Engine,
    resolver: Arc<dyn StoreResolver>,
    /// Allocates the new region's ids on a split; `None` (tests without PD):
    /// splits are refused.
    pd: Option<kura_pd_client::PdClient>,
    /// Flips to true when the store stops: ends the long-lived raft streams,
    /// which would otherwise hold the graceful shutdown open.
    stopping: watch::Receiver<bool>,
    snap: Arc<SnapManager>,
    /// Client requests (Batch, Get, Scan) between arrival and answer.
    client_in_flight: Cap,
}

/// Most client requests one store holds at once (queued for the raftstore
/// thread, proposed or reading). Beyond it a request is answered ServerBusy
/// at once, so a flood neither grows the raftstore inbox without bound nor
/// waits out its client's timeout (the routing client backs off and retries).
pub const MAX_CLIENT_IN_FLIGHT: usize = 4096;

/// A cap on requests in flight: each admitted one holds a place until its
/// guard is dropped.
#[derive(Clone)]
struct Cap {
    n: Arc<AtomicUsize>,
    max: usize,
}

/// One admitted request; frees its place when dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Cap {
    fn new(max: usize) -> Cap {
        Cap {
            n: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A place for one more request, or None when all are taken.
    fn admit(&self) -> Option<InFlight> {
        let taken = self.n.fetch_add(1, Ordering::Relaxed);
        let slot = InFlight(self.n.clone());
        (taken < self.max).then_some(slot)
    }
}

impl MetashardService {
    /// Flips to true when the store stops.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.clone()
    }

    /// A place for one more client request, or None when the store is full.
    fn admit(&self) -> Option<InFlight> {
        let slot = self.client_in_flight.admit();
        if slot.is_none() {
            crate::metrics::CLIENT_REQUESTS_REFUSED
                .with_label_values(&["busy"])
                .inc();
        }
        slot
    }

    fn busy() -> RegionError {
        errors::server_busy(&format!(
            "store has {MAX_CLIENT_IN_FLIGHT} client requests in flight"
        ))
    }
}

impl MetashardService {
    pub fn new(
        router: Router,
        engine: Engine,
        resolver: Arc<dyn StoreResolver>,
        pd: Option<kura_pd_client::PdClient>,
        stopping: watch::Receiver<bool>,
        snap: Arc<SnapManager>,
    ) -> Self {
        MetashardService {
            router,
            engine,
            resolver,
            pd,
            stopping,
            snap,
            client_in_flight: Cap::new(MAX_CLIENT_IN_FLIGHT),
        }
    }

    /// The leader's go-ahead for a read starting at `key`: from the
    /// region's read delegate when it vouches for it (`local_read`), else
    /// from the raftstore thread.
    async fn read_grant(
        &self,
        region_id: u64,
        epoch: Option<RegionEpoch>,
        key: &[u8],
    ) -> Result<Result<ReadGrant, RegionError>, Status> {
        if let Some(g) = self
            .router
            .local_readers()
            .grant(region_id, epoch.as_ref(), &[key])
        {
            return Ok(Ok(g));
        }
        self.ask(|cb| StoreMsg::Read {
            region_id,
            epoch,
            keys: vec![key.to_vec()],
            cb,
        })
        .await
    }

    /// Counts a read's answer in its region's and the store's flow.
    fn add_read(&self, grant: &ReadGrant, keys: u64, bytes: u64) {
        grant.flow.add_read(keys, bytes);
        self.router.store_flow().add_read(keys, bytes);
    }

    /// Receives one snapshot file: written to the snapshot directory,
    /// checked against the size and CRC32C its descriptor announces, and
    /// only then is the raft message handed to the poller (which finds the
    /// file by the same descriptor). Returns the file's size.
    async fn receive_snapshot(&self, mut stream: Streaming<SnapshotChunk>) -> Result<u64, Status> {
        let first = tokio::time::timeout(SNAPSHOT_CHUNK_IDLE, stream.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no first snapshot chunk"))??
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let msg = first
            .message
            .ok_or_else(|| Status::invalid_argument("first snapshot chunk without a message"))?;
        let to_status = |e: SnapError| match e {
            SnapError::Corrupt(m) => Status::data_loss(m),
            // The bytes do not match their descriptor: as a corrupt transfer.
            e @ SnapError::Refused("mismatch", _) => Status::data_loss(e.to_string()),
            e @ SnapError::Refused(..) => Status::invalid_argument(e.to_string()),
            e => Status::unavailable(e.to_string()),
        };
        // Before a byte is written: the descriptor must describe a snapshot
        // of this message's region for its addressee (the poller checks the
        // rest against the store), and claim no more than the cap
        // (`SnapManager::receiver`).
        let raft_msg = validate::decode(&msg.message)
            .ok()
            .filter(|m| m.get_msg_type() == raft::prelude::MessageType::MsgSnapshot)
            .filter(|m| validate::check_shape(m).is_ok())
            .ok_or_else(|| {
                to_status(snap::refused(
                    "descriptor",
                    "not a well-formed MsgSnapshot".into(),
                ))
            })?;
        let desc = snap::descriptor_of(raft_msg.get_snapshot())
            .map_err(|e| to_status(snap::refused("descriptor", e.to_string())))?;
        validate::check_snapshot(&raft_msg, &desc, msg.region_id, msg.to_store, u64::MAX).map_err(
            |_| {
                to_status(snap::refused(
                    "descriptor",
                    format!(
                        "descriptor of region {:?} at {} does not match the message",
                        desc.region.as_ref().map(|r| r.id),
                        desc.index
                    ),
                ))
            },
        )?;
        let mut rcv = self.snap.receiver(&desc).await.map_err(to_status)?;
        rcv.write(&first.data).await.map_err(to_status)?;
        let mut stopping = self.stopping.clone();
        loop {
            // A sender that stalls (hung, SIGSTOPped) must not hold the
            // receive slot forever: each chunk gets SNAPSHOT_CHUNK_IDLE.
            let chunk = tokio::select! {
                c = stream.message() => match c? {
                    Some(c) => c,
                    None => break,
                },
                _ = tokio::time::sleep(SNAPSHOT_CHUNK_IDLE) => {
                    return Err(Status::deadline_exceeded(format!(
                        "no snapshot chunk for {SNAPSHOT_CHUNK_IDLE:?}"
                    )))
                }
                _ = stopping.wait_for(|s| *s) => return Err(Status::unavailable("store is stopping")),
            };
            rcv.write(&chunk.data).await.map_err(to_status)?;
        }
        let size = rcv.finish().await.map_err(to_status)?;
        self.router
            .send(StoreMsg::Raft(Box::new(msg)))
            .map_err(|_| Status::unavailable("store is stopping"))?;
        Ok(size)
    }

    /// The split key for `region`: the one asked for, else the middle data
    /// key (by count, cf META) rounded down to its object's prefix.
    async fn choose_split_key(
        &self,
        region: &kura_proto::common::Region,
        asked: &[u8],
    ) -> Result<Vec<u8>, Status> {
        if !asked.is_empty() {
            return Ok(asked.to_vec());
        }
        let engine = self.engine.clone();
        let (start, end) = (region.start_key.to_vec(), region.end_key.to_vec());
        let middle =
            tokio::task::spawn_blocking(move || engine.middle_data_key(Cf::Meta, &start, &end))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::internal(e.to_string()))?;
        middle.and_then(|m| split_point(region, &m)).ok_or_else(|| {
            Status::failed_precondition(format!(
                "region {} has no split point (empty, or a single object)",
                region.id
            ))
        })
    }

    /// Sends a request to the raftstore thread and waits for its answer.
    async fn ask<T>(&self, make: impl FnOnce(Callback<T>) -> StoreMsg) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.router
            .send(make(tx))
            .map_err(|_| Status::unavailable("store is stopping"))?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(Status::unavailable(
                "request dropped by the store; outcome unknown",
            )),
            Err(_) => Err(Status::deadline_exceeded(
                "raft did not answer in time; outcome unknown",
            )),
        }
    }

    /// Adds the leader store's address to a `NotLeader` error.
    async fn with_leader_addr(&self, mut e: RegionError) -> RegionError {
        if let Some(nl) = e.not_leader.as_mut() {
            if let Some(leader) = &nl.leader {
                if let Ok(Ok(addr)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    self.resolver.resolve(leader.store_id),
                )
                .await
                {
                    nl.leader_addr = addr;
                }
            }
        }
        e
    }

    async fn header_err(&self, e: RegionError) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            region_error: Some(self.with_leader_addr(e).await),
        })
    }
}

impl MetashardService {
    /// Proposes one merge step on its region's leader (this store) and
    /// answers once it is applied here.
    async fn merge_step(
        &self,
        req: AdminRequest,
    ) -> Result<Response<RegionChangeResponse>, Status> {
        let res = self
            .ask(|cb| StoreMsg::Merge {
                req: Box::new(req),
                cb,
            })
            .await?;
        Ok(Response::new(self.region_change_response(res).await))
    }

    async fn region_change_response(&self, res: crate::fsm::AdminResult) -> RegionChangeResponse {
        match res {
            Ok((region, index)) => RegionChangeResponse {
                header: None,
                region: Some(region),
                index,
            },
            Err(e) => RegionChangeResponse {
                header: self.header_err(e).await,
                region: None,
                index: 0,
            },
        }
    }
}

fn header(h: Option<RequestHeader>) -> Result<RequestHeader, Status> {
    h.ok_or_else(|| Status::invalid_argument("missing request header"))
}

#[tonic::async_trait]
impl Metashard for MetashardService {
    async fn batch(
        &self,
        request: Request<BatchRequest>,
    ) -> Result<Response<BatchResponse>, Status> {
        let req = request.into_inner();
        header(req.header)?;
        apply::validate_batch(&req).map_err(Status::invalid_argument)?;
        let Some(_slot) = self.admit() else {
            return Ok(Response::new(BatchResponse {
                header: self.header_err(Self::busy()).await,
                ..Default::default()
            }));
        };
        let res = self
            .ask(|cb| StoreMsg::Batch {
                req: Box::new(req),
                cb,
            })
            .await?;
        Ok(Response::new(match res {
            Ok((succeeded, failed_condition)) => BatchResponse {
                header: None,
                succeeded,
                failed_condition,
            },
            Err(e) => BatchResponse {
                header: self.header_err(e).await,
                ..Default::default()
            },
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = request.into_inner();
        let h = header(req.header)?;
        let cf = Cf::try_from(req.cf).map_err(|_| Status::invalid_argument("unknown cf"))?;
        let key = req.key.to_vec();
        let Some(_slot) = self.admit() else {
            return Ok(Response::new(GetResponse {
                header: self.header_err(Self::busy()).await,
                ..Default::default()
            }));
        };
        let res = self.read_grant(h.region_id, h.epoch, &key).await?;
        let grant = match res {
            Ok(g) => g,
            Err(e) => {
                return Ok(Response::new(GetResponse {
                    header: self.header_err(e).await,
                    ..Default::default()
                }))
            }
        };
        let v = self
            .engine
            .get_data(cf, &key)
            .map_err(|e| Status::internal(e.to_string()))?;
        let found = u64::from(v.is_some());
        let bytes = v.as_ref().map_or(0, |v| (key.len() + v.len()) as u64);
        self.add_read(&grant, found, bytes);
        Ok(Response::new(GetResponse {
            header: None,
            found: v.is_some(),
            value: v.unwrap_or_default().into(),
        }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let req = request.into_inner();
        let h = header(req.header)?;
        let cf = Cf::try_from(req.cf).map_err(|_| Status::invalid_argument("unknown cf"))?;
        let start = req.start_key.to_vec();
        let Some(_slot) = self.admit() else {
            return Ok(Response::new(ScanResponse {
                header: self.header_err(Self::busy()).await,
                ..Default::default()
            }));
        };
        let res = self.read_grant(h.region_id, h.epoch, &start).await?;
        let grant = match res {
            Ok(g) => g,
            Err(e) => {
                return Ok(Response::new(ScanResponse {
                    header: self.header_err(e).await,
                    ..Default::default()
                }))
            }
        };
        let limit = match req.limit as usize {
            0 => DEFAULT_SCAN_LIMIT,
            n => n.min(MAX_SCAN_LIMIT),
        };
        let req_end = req.end_key.to_vec();
        let region_end = grant.region.end_key.to_vec();
        // Clip to the region: the smaller of the two ends, empty meaning +inf.
        let end = match (req_end.is_empty(), region_end.is_empty()) {
            (true, _) => region_end.clone(),
            (false, true) => req_end.clone(),
            (false, false) => req_end.clone().min(region_end.clone()),
        };
        let engine = self.engine.clone();
        let opts = ScanOpts {
            keys_only: req.keys_only,
            first_per_object: req.first_per_object,
        };
        let rollup = crate::keys::Rollup::new(&req.delimiter_prefix, &req.delimiter);
        let out = tokio::task::spawn_blocking(move || {
            engine.scan_data_rollup(cf, &start, &end, limit, opts, rollup.as_ref())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;
        let cf_name = crate::engine::data_cf_name(cf);
        metrics::SCAN_KEYS_READ
            .with_label_values(&[cf_name])
            .inc_by(out.keys_read);
        metrics::SCAN_SEEKS
            .with_label_values(&[cf_name])
            .inc_by(out.seeks);
        let kvs = out.kvs;
        let bytes = kvs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        self.add_read(&grant, out.keys_read, bytes);
        let region_exhausted = kvs.len() < limit
            && !region_end.is_empty()
            && (req_end.is_empty() || req_end.as_slice() > region_end.as_slice());
        Ok(Response::new(ScanResponse {
            header: None,
            kvs: kvs
                .into_iter()
                .map(|(k, v)| KvPair {
                    key: k.into(),
                    value: v.into(),
                })
                .collect(),
            region_exhausted,
            region_end_key: if region_exhausted {
                grant.region.end_key
            } else {
                Default::default()
            },
        }))
    }

    type CallsStream = kura_pd_client::call_table::AnswerStream<kura_proto::metashard::CallAnswer>;

    async fn calls(
        &self,
        request: Request<Streaming<Call>>,
    ) -> Result<Response<Self::CallsStream>, Status> {
        // Tests: answer as a store from before `Calls` existed.
        fail::fail_point!("metashard::calls_unimplemented", |_| Err(
            Status::unimplemented("Metashard/Calls")
        ));
        Ok(Response::new(crate::calls::serve(
            self,
            request.into_inner(),
        )))
    }

    async fn raft(
        &self,
        request: Request<Streaming<RaftMessageBatch>>,
    ) -> Result<Response<RaftDone>, Status> {
        let mut stream = request.into_inner();
        let mut stopping = self.stopping.clone();
        loop {
            let batch = tokio::select! {
                b = stream.message() => match b? {
                    Some(b) => b,
                    None => break,
                },
                _ = stopping.wait_for(|s| *s) => return Err(Status::unavailable("store is stopping")),
            };
            for m in batch.msgs {
                self.router
                    .send(StoreMsg::Raft(Box::new(m)))
                    .map_err(|_| Status::unavailable("store is stopping"))?;
            }
        }
        Ok(Response::new(RaftDone {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotDone>, Status> {
        let Ok(_permit) = self.snap.recv_limit.clone().try_acquire_owned() else {
            metrics::SNAPSHOT_TRANSFERS
                .with_label_values(&["receive", "rejected"])
                .inc();
            return Err(Status::resource_exhausted(
                "receiving too many snapshots; raft retries",
            ));
        };
        match self.receive_snapshot(request.into_inner()).await {
            Ok(size) => {
                metrics::SNAPSHOT_TRANSFERS
                    .with_label_values(&["receive", "ok"])
                    .inc();
                metrics::SNAPSHOT_BYTES
                    .with_label_values(&["received"])
                    .inc_by(size);
                Ok(Response::new(SnapshotDone {}))
            }
            Err(s) => {
                let outcome = match s.code() {
                    tonic::Code::DataLoss | tonic::Code::InvalidArgument => "rejected",
                    _ => "failed",
                };
                tracing::warn!(error = %s, "snapshot not received");
                metrics::SNAPSHOT_TRANSFERS
                    .with_label_values(&["receive", outcome])
                    .inc();
                Err(s)
            }
        }
    }

    async fn create_peer(
        &self,
        request: Request<CreatePeerRequest>,
    ) -> Result<Response<CreatePeerResponse>, Status> {
        let req = request.into_inner();
        let region = req
            .region
            .ok_or_else(|| Status::invalid_argument("missing region"))?;
        let res = self
            .ask(|cb| StoreMsg::CreatePeer {
                region,
                peer_id: req.peer_id,
                initial: req.initial,
                cb: Some(cb),
            })
            .await?;
        res.map_err(Status::failed_precondition)?;
        Ok(Response::new(CreatePeerResponse { header: None }))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let req = request.into_inner();
        let h = header(req.header)?;
        let res = self
            .ask(|cb| StoreMsg::TransferLeader {
                region_id: h.region_id,
                epoch: h.epoch,
                to_peer: req.to_peer_id,
                cb,
            })
            .await?;
        Ok(Response::new(TransferLeaderResponse {
            header: match res {
                Ok(()) => None,
                Err(e) => self.header_err(e).await,
            },
        }))
    }

    async fn prepare_merge(
        &self,
        request: Request<PrepareMergeRequest>,
    ) -> Result<Response<RegionChangeResponse>, Status> {
        let req = request.into_inner();
        let h = header(req.header)?;
        let target = req
            .target
            .ok_or_else(|| Status::invalid_argument("prepare merge needs the target region"))?;
        self.merge_step(AdminRequest {
            header: Some(h),
            prepare_merge: Some(PrepareMerge {
                target: Some(target),
            }),
            ..Default::default()
        })
        .await
    }

    async fn commit_merge(
        &self,
        request: Request<CommitMergeRequest>,
    ) -> Result<Response<RegionChangeResponse>, Status> {
        let req = request.into_inner();
        let h = header(req.header)?;
        let source = req
            .source
            .ok_or_else(|| Status::invalid_argument("commit merge needs the source region"))?;
        self.merge_step(AdminRequest {
            header: Some(h),
            commit_merge: Some(CommitMerge {
                source: Some(source),
                prepare_index: req.prepare_index,
            }),
            ..Default::default()
        })
        .await
    }

    async fn rollback_merge(
        &self,
        request: Request<RollbackMergeRequest>,
    ) -> Result<Response<RegionChangeResponse>, Status> {
        let req = request.into_inner();
        let h = header(req.header)?;
        self.merge_step(AdminRequest {
            header: Some(h),
            rollback_merge: Some(RollbackMerge {
                prepare_index: req.prepare_index,
            }),
            ..Default::default()
        })
        .await
    }

    async fn change_peer(
        &self,
        request: Request<ChangePeerRequest>,
    ) -> Result<Response<RegionChangeResponse>, Status> {
        use raft::prelude::ConfChangeType;
        let req = request.into_inner();
        let h = header(req.header)?;
        let peer = req
            .peer
            .ok_or_else(|| Status::invalid_argument("change peer needs the peer"))?;
        let change = match PeerChange::try_from(req.change) {
            Ok(PeerChange::AddLearner) => ConfChangeType::AddLearnerNode,
            Ok(PeerChange::Promote) => ConfChangeType::AddNode,
            Ok(PeerChange::Remove) => ConfChangeType::RemoveNode,
            Err(_) => return Err(Status::invalid_argument("unknown peer change")),
        };
        let res = self
            .ask(|cb| StoreMsg::ChangePeer {
                region_id: h.region_id,
                epoch: h.epoch,
                change,
                peer,
                cb,
            })
            .await?;
        Ok(Response::new(self.region_change_response(res).await))
    }

    async fn split_region(
        &self,
        request: Request<SplitRegionRequest>,
    ) -> Result<Response<SplitRegionResponse>, Status> {
        let req = request.into_inner();
        let h = header(req.header)?;
        let Some(pd) = &self.pd else {
            return Err(Status::failed_precondition(
                "this store has no PD client to allocate ids",
            ));
        };
        let region_id = h.region_id;
        let status = self.ask(|cb| StoreMsg::Status { region_id, cb }).await?;
        let Some(region) = status.and_then(|s| s.region) else {
            return Ok(Response::new(SplitRegionResponse {
                header: self
                    .header_err(crate::errors::region_not_found(region_id))
                    .await,
                regions: vec![],
            }));
        };
        if let Err(e) = apply::check_epoch(&region, h.epoch.as_ref()) {
            return Ok(Response::new(SplitRegionResponse {
                header: self.header_err(e).await,
                regions: vec![],
            }));
        }
        let split_key = self.choose_split_key(&region, &req.split_key).await?;
        let n = region.peers.len() as u32 + 1;
        let first = pd
            .alloc_ids(n)
            .await
            .map_err(|e| Status::unavailable(format!("PD cannot allocate ids: {e}")))?;
        let new_peer_ids = (first + 1..first + u64::from(n)).collect();
        tracing::info!(region_id, new_region_id = first, "proposing region split");
        let res = self
            .ask(|cb| StoreMsg::Split {
                region_id,
                // The epoch the key was chosen under: a concurrent change
                // makes the split fail instead of cutting the wrong range.
                epoch: region.epoch,
                split_key,
                new_region_id: first,
                new_peer_ids,
                cb,
            })
            .await?;
        Ok(Response::new(match res {
            Ok(regions) => SplitRegionResponse {
                header: None,
                regions,
            },
            Err(e) => SplitRegionResponse {
                header: self.header_err(e).await,
                regions: vec![],
            },
        }))
    }

    async fn region_status(
        &self,
        request: Request<RegionStatusRequest>,
    ) -> Result<Response<RegionStatusResponse>, Status> {
        let region_id = request.into_inner().region_id;
        let status = self.ask(|cb| StoreMsg::Status { region_id, cb }).await?;
        Ok(Response::new(match status {
            Some(s) => RegionStatusResponse {
                header: None,
                status: Some(s),
            },
            None => RegionStatusResponse {
                header: Some(ResponseHeader {
                    region_error: Some(crate::errors::region_not_found(region_id)),
                }),
                status: None,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_flight_cap_refuses_beyond_its_size_and_frees_on_drop() {
        let cap = Cap::new(2);
        let a = cap.admit().expect("first");
        let _b = cap.admit().expect("second");
        assert!(cap.admit().is_none(), "a third is refused");
        assert!(cap.admit().is_none(), "a refusal holds no place");
        drop(a);
        assert!(cap.admit().is_some(), "a freed place is taken again");
    }

    #[test]
    fn a_request_whose_client_left_is_abandoned() {
        let (cb, rx) = oneshot::channel();
        let msg = StoreMsg::Batch {
            req: Box::default(),
            cb,
        };
        assert!(!msg.abandoned());
        drop(rx);
        assert!(msg.abandoned());
    }
}
