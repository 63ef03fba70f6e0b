//! The batch system: one raftstore thread drives every region peer of the
//! store (`poller`), fed by [`StoreMsg`]s through a [`Router`].
//!
//! Message kinds (TiKV's split): raft traffic and transport reports may be lost
//! (raft retries); requests carry a callback and always get an answer, or the
//! callback is dropped when the outcome is unknown (store stopping, snapshot
//! overtook a proposal), which callers report as "outcome unknown".

pub mod poller;
pub mod uninit;
pub mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{RecvTimeoutError, TryRecvError};
use crossbeam::sync::{Parker, Unparker};
use kura_proto::common::{Region, RegionEpoch, RegionError};
use kura_proto::metashard::{AdminRequest, BatchRequest, RaftMessage, RegionStatus};
use kura_proto::pd::RegionHeartbeatRequest;
use tokio::sync::oneshot;

use crate::flow::Flow;

pub type Callback<T> = oneshot::Sender<T>;

/// Outcome of a proposed batch: `Ok((succeeded, failed_condition))`.
pub type BatchResult = Result<(bool, u32), RegionError>;

/// Outcome of a proposed split: the parent's new range and the new region.
pub type SplitResult = Result<Vec<Region>, RegionError>;

/// Outcome of a proposed merge step or conf change: the region as applied
/// and the entry's index.
pub type AdminResult = Result<(Region, u64), RegionError>;

/// A leader's go-ahead for a read: the region as of now, and the flow
/// counter the reader adds what it returned to.
#[derive(Debug)]
pub struct ReadGrant {
    pub region: Region,
    pub flow: Arc<Flow>,
}

/// Counters reported in store heartbeats.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub region_count: u64,
    pub leader_count: u64,
    pub used_bytes: u64,
}

pub enum StoreMsg {
    /// May be lost: raft retries.
    Raft(Box<RaftMessage>),
    /// A conditional batch to propose on `req.header.region_id`.
    Batch {
        req: Box<BatchRequest>,
        cb: Callback<BatchResult>,
    },
    /// A linearizable read: answered with the region once this leader's
    /// applied index reaches a ReadIndex taken after the message arrived;
    /// the caller then reads the engine.
    Read {
        region_id: u64,
        epoch: Option<RegionEpoch>,
        keys: Vec<Vec<u8>>,
        cb: Callback<Result<ReadGrant, RegionError>>,
    },
    /// Proposes a split of `region_id` at `split_key` (leader only); answered
    /// once the split entry is applied here.
    Split {
        region_id: u64,
        epoch: Option<RegionEpoch>,
        split_key: Vec<u8>,
        new_region_id: u64,
        new_peer_ids: Vec<u64>,
        cb: Callback<SplitResult>,
    },
    /// Proposes one merge step (`req` holds a prepare, commit or rollback)
    /// on `req.header.region_id` (leader only); answered once applied here.
    Merge {
        req: Box<AdminRequest>,
        cb: Callback<AdminResult>,
    },
    /// Proposes one membership change of `region_id` (leader only);
    /// answered once applied here.
    ChangePeer {
        region_id: u64,
        epoch: Option<RegionEpoch>,
        change: raft::prelude::ConfChangeType,
        peer: kura_proto::common::Peer,
        cb: Callback<AdminResult>,
    },
    CreatePeer {
        region: Region,
        peer_id: u64,
        initial: bool,
        cb: Option<Callback<Result<(), String>>>,
    },
    TransferLeader {
        region_id: u64,
        epoch: Option<RegionEpoch>,
        to_peer: u64,
        cb: Callback<Result<(), RegionError>>,
    },
    Status {
        region_id: u64,
        cb: Callback<Option<RegionStatus>>,
    },
    /// The transport lost its stream to `store_id`; may be lost.
    StoreUnreachable {
        store_id: u64,
    },
    Stats {
        cb: Callback<StoreStats>,
    },
    /// The split checker counted a region (as of `epoch`); `counted` is
    /// `None` when the scan failed. May be lost.
    SizeChecked {
        region_id: u64,
        epoch: Option<RegionEpoch>,
        counted: Option<(u64, u64)>,
        /// The checker is proposing a split of it.
        splitting: bool,
    },
    /// The snapshot worker finished (or failed, `ok` false) writing the data
    /// of the snapshot at `index` of `region_id`.
    SnapshotApplied {
        region_id: u64,
        index: u64,
        ok: bool,
    },
    /// The transport finished sending a snapshot to `to_peer` (`ok`: the
    /// receiver verified and accepted the file). May be lost.
    SnapshotSent {
        region_id: u64,
        to_peer: u64,
        ok: bool,
    },
    /// What the sender of a tombstone for `region_id` answered when asked
    /// itself (`None`: it could not be asked, or does not host the region).
    /// May be lost: the tombstone is then ignored and the removed peer,
    /// which keeps campaigning, draws another one.
    TombstoneChecked {
        region_id: u64,
        from_store: u64,
        region: Option<Region>,
    },
    /// What PD answered about the region of an uninitialized peer (`Err`:
    /// PD could not be asked; `Ok(None)`: PD knows no such region). May be
    /// lost: the peer is asked about again.
    PeerValidated {
        region_id: u64,
        answer: Result<Option<Region>, String>,
    },
    Shutdown,
}

impl StoreMsg {
    /// A client request (batch or read) whose caller stopped waiting.
    pub fn abandoned(&self) -> bool {
        match self {
            StoreMsg::Batch { cb, .. } => cb.is_closed(),
            StoreMsg::Read { cb, .. } => cb.is_closed(),
            _ => false,
        }
    }

    /// The region a message is about (the poller looks at that peer in the
    /// next round); `None` for store-wide messages.
    pub fn region_id(&self) -> Option<u64> {
        match self {
            StoreMsg::Raft(m) => Some(m.region_id),
            StoreMsg::Batch { req, .. } => req.header.as_ref().map(|h| h.region_id),
            StoreMsg::Merge { req, .. } => req.header.as_ref().map(|h| h.region_id),
            StoreMsg::Read { region_id, .. }
            | StoreMsg::Split { region_id, .. }
            | StoreMsg::ChangePeer { region_id, .. }
            | StoreMsg::TransferLeader { region_id, .. }
            | StoreMsg::Status { region_id, .. }
            | StoreMsg::SizeChecked { region_id, .. }
            | StoreMsg::SnapshotApplied { region_id, .. }
            | StoreMsg::SnapshotSent { region_id, .. }
            | StoreMsg::TombstoneChecked { region_id, .. }
            | StoreMsg::PeerValidated { region_id, .. } => Some(*region_id),
            StoreMsg::CreatePeer { region, .. } => Some(region.id),
            StoreMsg::StoreUnreachable { .. } | StoreMsg::Stats { .. } | StoreMsg::Shutdown => None,
        }
    }
}

/// Work for the PD worker, produced by the raftstore thread.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // heartbeats are most of the traffic; boxing them buys nothing
pub enum PdTask {
    RegionHeartbeat(RegionHeartbeatRequest),
    /// Ask PD for its view of `region_id`, whose local peer is still
    /// uninitialized (answered with `StoreMsg::PeerValidated`).
    ValidatePeer {
        region_id: u64,
    },
}

/// Cheap-to-clone handle that sends messages to the raftstore thread.
#[derive(Clone)]
pub struct Router {
    tx: crossbeam::channel::Sender<StoreMsg>,
    /// Wakes the raftstore thread parked in [`Mailbox::recv_timeout`].
    wake: Unparker,
    /// The store's total flow (reads are added by the service, writes by
    /// the raftstore thread); store heartbeats take it.
    store_flow: Arc<Flow>,
    /// Read delegates the raftstore thread publishes for the service.
    local_readers: Arc<crate::local_read::LocalReaders>,
}

/// The raftstore thread's end of the channel. An empty mailbox parks the
/// thread until a sender unparks it: crossbeam's own blocking receive spins
/// and then `sched_yield`s a dozen times first, which on a 2-core machine
/// shared by every process was 5% of a store's CPU under small PUTs (a
/// profile in docs/performance.md) for no gain in latency.
pub struct Mailbox {
    rx: crossbeam::channel::Receiver<StoreMsg>,
    parker: Parker,
}

impl Mailbox {
    /// The next message, waiting at most `wait`.
    pub fn recv_timeout(&self, wait: Duration) -> Result<StoreMsg, RecvTimeoutError> {
        let deadline = Instant::now() + wait;
        loop {
            match self.rx.try_recv() {
                Ok(msg) => return Ok(msg),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            if Instant::now() >= deadline {
                return Err(RecvTimeoutError::Timeout);
            }
            // A send between the `try_recv` above and here left its unpark
            // token: the park returns at once and the loop looks again.
            self.parker.park_deadline(deadline);
        }
    }

    /// The next message if one is queued.
    pub fn try_recv(&self) -> Result<StoreMsg, TryRecvError> {
        self.rx.try_recv()
    }
}

impl Router {
    pub fn channel() -> (Router, Mailbox) {
        let (tx, rx) = crossbeam::channel::unbounded();
        let parker = Parker::new();
        let store_flow = Arc::new(Flow::default());
        let local_readers = Arc::default();
        (
            Router {
                tx,
                wake: parker.unparker().clone(),
                store_flow,
                local_readers,
            },
            Mailbox { rx, parker },
        )
    }

    pub fn store_flow(&self) -> &Arc<Flow> {
        &self.store_flow
    }

    /// Reads the service may answer without the raftstore thread.
    pub fn local_readers(&self) -> &Arc<crate::local_read::LocalReaders> {
        &self.local_readers
    }

    /// Sends `msg`; `Err` when the raftstore thread has stopped.
    pub fn send(&self, msg: StoreMsg) -> Result<(), crate::Error> {
        self.tx.send(msg).map_err(|_| crate::Error::StoreStopped)?;
        self.wake.unpark();
        Ok(())
    }
}
