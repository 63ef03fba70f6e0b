//! One region peer: its `RawNode`, pending proposals and reads, and the Ready
//! handling split into two phases around the poll round's single synced write.
//! The batches a round brings are proposed together, as one raft step, when
//! its Ready is collected (`flush_proposals`).
//!
//! Phases of a Ready (raft-rs order), driven by `fsm::poller`:
//! 1. [`Peer::collect_ready`]: queue leader messages, apply an incoming
//!    snapshot, append entries and hard state into the round's write batch,
//!    and apply the committed data entries into that same batch (`applier`).
//! 2. (poller writes the batch: synced when it holds new entries, a term or
//!    vote, or a snapshot; see [`PeerCtx::sync`])
//! 3. [`Peer::finish_ready`]: answer the proposals applied in phase 1, send
//!    persisted messages, apply the remaining committed entries (admin
//!    commands, conf changes), `advance`, apply what the LightReady
//!    committed, serve reads whose read index is now applied, compact the log.
//!
//! A split entry (`apply::split`) is applied like a batch, but also writes the
//! new region's initial state into the same synced batch and hands the new
//! region's `PeerStorage` to the poller through [`PeerCtx::created`].
//!
//! Merge (`apply::merge`): a PrepareMerge freezes the source (it refuses
//! every request until merged away or rolled back); a CommitMerge extends the
//! target and destroys the local source peer in the same write
//! ([`PeerCtx::destroyed`]). If this store's source peer has not applied its
//! PrepareMerge yet, the target stops applying at the CommitMerge and keeps
//! the rest of its committed entries in `pending_apply` until it has.

mod applier;
mod entry_cache;
pub mod state;
pub mod storage;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_proto::common::{Peer as PeerMeta, Region, RegionEpoch, RegionError};
use kura_proto::metashard::{
    AdminRequest, BatchRequest, RaftMessage, RegionStatus, RequestHeader, SplitRequest,
};
use kura_proto::pd::RegionHeartbeatRequest;
use prost::Message as _;
use protobuf::Message as PbMessage;
use raft::prelude::{ConfChange, ConfChangeType, Entry, Message, MessageType};
use raft::{RawNode, ReadState, Ready, SnapshotStatus, StateRole};

use crate::apply;
use crate::apply::cmd;
use crate::apply::split;
use crate::engine::{Engine, WriteBatch};
use crate::errors;
use crate::flow::Flow;
use crate::fsm::{AdminResult, BatchResult, Callback, ReadGrant, SplitResult};
use crate::load_split::{LoadSplitConfig, SharedLoad};
use crate::local_read::ReadDelegate;
use crate::metrics;
use crate::snap::SnapManager;
use crate::split_check::{SizeTracker, SplitCheckConfig};
use crate::transport::{Delivery, Transport};
use storage::PeerStorage;

/// Raft settings shared by every peer of a store.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Compact the log once applied is this many entries past the first index.
    pub log_gc_threshold: u64,
    /// ... or once the log holds about this many bytes (0: no size limit),
    /// so a few big batches do not pin megabytes of log until the count is
    /// reached.
    pub log_gc_size_limit: u64,
    /// Automatic split thresholds and pacing.
    pub split_check: SplitCheckConfig,
    /// When a busy region splits by load.
    pub load_split: LoadSplitConfig,
    /// A leader reports its region to PD this often (and at once on a
    /// leader change, a split, or a size check that moved its numbers).
    pub region_heartbeat: Duration,
    /// Serve reads from the leader's lease instead of a ReadIndex round
    /// when the lease is valid (decision 0013).
    pub lease_reads: bool,
    /// A leader reports a peer it has not heard from for this long as down.
    pub peer_down_after: Duration,
}

impl RaftConfig {
    /// How long a confirmed ReadIndex round lets the leader serve reads
    /// alone: 80% of the shortest election timeout. Followers that acked the
    /// round will not vote for anyone else before a full election timeout
    /// (raft-rs with check_quorum ignores votes while it hears a leader), so
    /// no other leader can exist before the lease ends; the 20% margin
    /// covers clock-rate drift between stores. `None`: lease reads off.
    pub fn lease(&self) -> Option<Duration> {
        self.lease_reads
            .then(|| (self.tick * self.election_ticks as u32).mul_f64(0.8))
            .filter(|d| !d.is_zero())
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            log_gc_threshold: 1000,
            log_gc_size_limit: 32 << 20,
            split_check: SplitCheckConfig::default(),
            load_split: LoadSplitConfig::default(),
            region_heartbeat: Duration::from_secs(10),
            lease_reads: true,
            peer_down_after: Duration::from_secs(10),
        }
    }
}

/// Leaders sample which peers answered every this many ticks (raft-rs
/// keeps a peer's `recent_active` for a whole election timeout).
const HEALTH_EVERY_TICKS: u32 = 4;

/// Entries kept behind the applied index when compacting, so a follower that
/// is only slightly behind still catches up from the log.
const LOG_KEEP_TAIL: u64 = 8;

/// Most log entries a leader-transfer target may lag behind (TiKV's
/// `leader-transfer-max-log-lag`): raft-rs first sends it the rest.
const MAX_TRANSFER_LAG: u64 = 128;

/// Longest a batch waits for the append before it to commit
/// ([`Peer::holds_proposals`]): a round trip to a follower under load is
/// about a millisecond here; past this the leader pipelines again.
const HOLD_PROPOSALS_MAX: Duration = Duration::from_millis(2);

/// Batches a leader holds at most before proposing them anyway.
const HOLD_PROPOSALS_BATCHES: usize = 256;

/// Regions produced by this peer's splits that an `EpochNotMatch` also
/// names, so a client learns both halves at once (bounded: newest kept).
const MAX_SPLIT_DERIVED: usize = 8;

/// What a peer needs from its store during one round.
pub struct PeerCtx<'a> {
    pub engine: &'a Engine,
    pub store_id: u64,
    pub transport: &'a mut Transport,
    pub cfg: &'a RaftConfig,
    /// Peers of new regions that applied splits created this round (their
    /// state is already durable); the poller registers them after the round.
    pub created: Vec<SplitPeer>,
    /// Source regions merges destroyed this round (their local state is
    /// deleted); the poller drops their peers at once.
    pub destroyed: Vec<u64>,
    /// The store's total flow (applied writes are added to it).
    pub store_flow: &'a Flow,
    /// The round's write batch holds raft state that must be durable
    /// before the round's persisted messages leave (new entries, a term or
    /// vote, a snapshot): it is then written with fsync. A batch holding
    /// only applied entries and a commit index is not synced: those are
    /// redone from the (already durable) log after a crash, and the next
    /// synced write makes them durable anyway (one WAL).
    pub sync: bool,
}

/// The local peer of a region a split just created.
pub struct SplitPeer {
    pub storage: PeerStorage,
    /// The parent's leader is here: campaign at once so the new region gets
    /// a leader without waiting for an election timeout.
    pub campaign: bool,
    /// What the parent's size tracker had counted as written since its last
    /// check: the new region starts with it (`SizeTracker::after_split`).
    pub written: (u64, u64),
}

type ReadCb = Callback<Result<ReadGrant, RegionError>>;

/// A read waiting for its ReadIndex: the epoch and keys are checked again
/// when it is served, since a split may have applied in between.
struct PendingRead {
    epoch: Option<RegionEpoch>,
    keys: Vec<Vec<u8>>,
    cb: ReadCb,
}

enum ProposalCb {
    Batch(Callback<BatchResult>),
    Split(Callback<SplitResult>),
    Admin(Callback<AdminResult>),
}

struct Proposal {
    index: u64,
    term: u64,
    cb: ProposalCb,
}

pub struct Peer {
    raft: RawNode<PeerStorage>,
    /// Ordered by index.
    proposals: VecDeque<Proposal>,
    /// Batches accepted and not proposed yet: proposed together when a
    /// round's Ready is collected ([`Peer::flush_proposals`]), possibly a
    /// later round's ([`Peer::holds_proposals`]).
    proposals_to_flush: Vec<(Vec<u8>, Callback<BatchResult>)>,
    /// When the oldest batch in `proposals_to_flush` came.
    first_to_flush_at: Option<Instant>,
    /// `proposals_to_flush` was held back at least one round.
    flush_held: bool,
    reads_to_issue: Vec<PendingRead>,
    reads_by_ctx: HashMap<u64, (Instant, Vec<PendingRead>)>,
    reads_waiting_apply: VecDeque<(u64, Vec<PendingRead>)>,
    next_read_id: u64,
    is_leader: bool,
    /// Regions split off this one since the store started (newest last).
    split_derived: Vec<Region>,
    /// Length of the leader lease (`None`: every read takes a ReadIndex round).
    lease: Option<Duration>,
    /// The leader may serve reads alone until then (see [`RaftConfig::lease`]).
    lease_until: Option<Instant>,
    /// When the last lease-renewing ReadIndex was issued, while unanswered.
    lease_renewal: Option<Instant>,
    /// Issue a ReadIndex this round even with no read queued (lease renewal).
    renew_lease: bool,
    /// Ticks since start, for sampling peer health every few ticks.
    health_ticks: u32,
    /// While leader: when each other peer last answered (set on every
    /// message a peer sends, and sampled from raft's progress each tick).
    peer_seen: HashMap<u64, Instant>,
    peer_down_after: Duration,
    /// One election timeout: a transfer target heard from within it is up.
    election_timeout: Duration,
    /// The (down, pending) peer ids last reported to PD.
    reported_health: (Vec<u64>, Vec<u64>),
    /// Ticks left during which this peer re-campaigns while the region has
    /// no leader (a new region's peers on other stores may not exist yet).
    campaign_ticks: usize,
    /// Send a region heartbeat to PD at the end of this round.
    pub heartbeat_due: bool,
    /// When the next periodic region heartbeat is due (while leader).
    pub next_heartbeat: Instant,
    /// The region's approximate size, for heartbeats and automatic splits.
    pub size: SizeTracker,
    /// Entries and their bytes appended since start: their mean size
    /// estimates the log's size (no per-entry bookkeeping to keep in sync
    /// with compaction and snapshots).
    appended: (u64, u64),
    /// Requests this leader received, for splits by load (local reads
    /// count into it from the service's threads).
    pub load: Arc<SharedLoad>,
    /// What the last published read delegate vouched for: (serve until,
    /// epoch). `None`: no delegate published.
    local_published: Option<(Instant, RegionEpoch)>,
    /// Writes applied here and reads answered as leader since the last
    /// region heartbeat's sample (the service adds reads to it).
    pub flow: Arc<Flow>,
    /// Committed entries held back behind a CommitMerge whose local source
    /// is not ready yet (oldest first).
    pending_apply: VecDeque<Entry>,
    /// A snapshot went into this round's write batch (the poller then drops
    /// local merge sources the snapshot's range already absorbed).
    pub snapshot_applied: bool,
    snap: Arc<SnapManager>,
    /// The data apply of the snapshot in this round's write batch, handed
    /// to the snapshot worker once that batch is durable.
    apply_to_schedule: Option<state::SnapshotApplyState>,
    /// Answers to proposals whose entries are applied into a write batch
    /// not written yet (`applier`).
    answers: Vec<applier::Answer>,
    /// Committed entries of this round's Ready left for after the round's
    /// write (from the first admin entry or conf change on).
    committed_rest: Vec<Entry>,
    /// While an admin entry this leader proposed is unapplied, its commit
    /// is broadcast at once (see `propose_admin`).
    bcast_commit_until: Option<u64>,
}

/// Engine failures while handling a Ready are fatal to the store: continuing
/// after a failed synced write would break raft's durability assumptions.
pub type FatalError = crate::Error;

impl Peer {
    pub fn new(
        mut storage: PeerStorage,
        cfg: &RaftConfig,
        logger: &slog::Logger,
        snap: &Arc<SnapManager>,
    ) -> Result<Peer, crate::Error> {
        storage.set_snap_manager(snap.clone());
        // Died while the snapshot worker wrote a snapshot's data: redo it.
        if let Some(state) = storage.applying_snapshot() {
            tracing::info!(
                region_id = storage.region().id,
                "redoing an unfinished snapshot apply"
            );
            snap.schedule_apply(storage.region().id, state.clone());
        }
        let rc = raft::Config {
            id: storage.peer_id(),
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            applied: storage.applied_index(),
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            // Followers learn a data entry's commit from the next append or
            // heartbeat instead of an extra round of messages: with many
            // regions each carrying few proposals per round that round
            // would cost as much as the write itself (decision 0020).
            skip_bcast_commit: true,
            ..Default::default()
        };
        let logger = logger
            .new(slog::o!("region_id" => storage.region().id, "peer_id" => storage.peer_id()));
        let raft = RawNode::new(&rc, storage, &logger)?;
        Ok(Peer {
            raft,
            proposals: VecDeque::new(),
            proposals_to_flush: Vec::new(),
            first_to_flush_at: None,
            flush_held: false,
            reads_to_issue: Vec::new(),
            reads_by_ctx: HashMap::new(),
            reads_waiting_apply: VecDeque::new(),
            next_read_id: rand::random::<u64>() >> 1,
            is_leader: false,
            split_derived: Vec::new(),
            campaign_ticks: 0,
            lease: cfg.lease(),
            lease_until: None,
            lease_renewal: None,
            renew_lease: false,
            health_ticks: 0,
            peer_seen: HashMap::new(),
            peer_down_after: cfg.peer_down_after,
            election_timeout: cfg.tick * cfg.election_ticks as u32,
            reported_health: (Vec::new(), Vec::new()),
            heartbeat_due: false,
            // Spread periodic heartbeats of many regions over the interval.
            next_heartbeat: Instant::now() + cfg.region_heartbeat.mul_f64(rand::random::<f64>()),
            size: SizeTracker::default(),
            appended: (0, 0),
            load: Arc::new(SharedLoad::default()),
            local_published: None,
            flow: Arc::new(Flow::default()),
            pending_apply: VecDeque::new(),
            snapshot_applied: false,
            snap: snap.clone(),
            apply_to_schedule: None,
            answers: Vec::new(),
            committed_rest: Vec::new(),
            bcast_commit_until: None,
        })
    }

    /// Campaigns now and again on each of the next `ticks` ticks while no
    /// leader is known (used for a region a split just created).
    pub fn campaign_now(&mut self, ticks: usize) {
        self.campaign_ticks = ticks;
        if let Err(e) = self.raft.campaign() {
            tracing::debug!(region_id = self.region_id(), error = %e, "campaign failed");
        }
    }

    /// Adds the regions split off this one to an `EpochNotMatch`.
    fn enrich(&self, mut e: RegionError) -> RegionError {
        if let Some(en) = e.epoch_not_match.as_mut() {
            for r in self.split_derived.iter().rev() {
                if !en.current_regions.iter().any(|c| c.id == r.id) {
                    en.current_regions.push(r.clone());
                }
            }
        }
        e
    }

    /// The PrepareMerge this region is frozen by, if any.
    fn merging(&self) -> Option<&state::MergeState> {
        self.raft.store().merge_state()
    }

    /// The region this one is frozen to merge into, if any.
    pub fn merge_target_id(&self) -> Option<u64> {
        self.merging().and_then(|m| m.target.as_ref()).map(|t| t.id)
    }

    /// `Err` while the region is frozen for a merge: clients back off and
    /// re-route (the target serves the range once the merge commits).
    fn check_not_merging(&self) -> Result<(), RegionError> {
        match self.merging() {
            Some(_) => Err(errors::server_busy("region is merging")),
            None => Ok(()),
        }
    }

    /// Epoch and key checks of a read against the current region.
    fn check_read(&self, epoch: Option<&RegionEpoch>, keys: &[Vec<u8>]) -> Result<(), RegionError> {
        self.check_not_merging()?;
        apply::check_epoch(self.region(), epoch)
            .and_then(|_| apply::check_keys(self.region(), keys.iter().map(|k| k.as_slice())))
            .map_err(|e| self.enrich(e))
    }

    pub fn region(&self) -> &Region {
        self.raft.store().region()
    }

    pub fn region_id(&self) -> u64 {
        self.region().id
    }

    /// What a message from the network is checked against before `step`.
    pub fn local_log(&self) -> crate::fsm::validate::LocalLog {
        let log = &self.raft.raft.raft_log;
        crate::fsm::validate::LocalLog {
            peer_id: self.peer_id(),
            last_index: log.last_index(),
            committed: log.committed,
            // Always readable: compaction stops at the applied index.
            committed_term: log.term(log.committed).unwrap_or(0),
        }
    }

    pub fn peer_id(&self) -> u64 {
        self.raft.store().peer_id()
    }

    /// False for an empty peer still waiting for its first snapshot.
    pub fn is_initialized(&self) -> bool {
        self.raft.store().is_initialized()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.raft.state == StateRole::Leader
    }

    fn peer_meta(&self, peer_id: u64) -> Option<PeerMeta> {
        self.region()
            .peers
            .iter()
            .find(|p| p.id == peer_id)
            .cloned()
    }

    /// The `NotLeader` error naming the leader this peer believes in.
    pub fn not_leader(&self) -> RegionError {
        let leader = match self.raft.raft.leader_id {
            0 => None,
            id => self.peer_meta(id),
        };
        errors::not_leader(self.region_id(), leader)
    }

    pub fn tick(&mut self) {
        self.raft.tick();
        // Every few ticks is enough for a 10 s down threshold, and keeps
        // the per-tick cost of many led regions low.
        self.health_ticks = self.health_ticks.wrapping_add(1);
        if self.is_leader() && self.health_ticks.is_multiple_of(HEALTH_EVERY_TICKS) {
            self.track_peer_health();
        }
        if self.campaign_ticks > 0 {
            self.campaign_ticks -= 1;
            if self.raft.raft.leader_id == 0 && !self.is_leader() {
                let _ = self.raft.campaign();
            } else {
                self.campaign_ticks = 0;
            }
        }
        self.retry_lost_reads(Instant::now());
    }

    /// ReadIndex rounds that never came back (a heartbeat or its answer
    /// lost): after an election timeout their reads go into the next round,
    /// well before the caller's deadline. A late answer to the old round is
    /// ignored (its context is gone).
    fn retry_lost_reads(&mut self, now: Instant) {
        let after = self.election_timeout;
        let lost = self
            .reads_by_ctx
            .extract_if(|_, (issued, _)| now.duration_since(*issued) >= after);
        for (_, (_, reads)) in lost {
            metrics::READ_INDEX_RETRIES.inc();
            // Callers that gave up need no answer.
            self.reads_to_issue
                .extend(reads.into_iter().filter(|r| !r.cb.is_closed()));
        }
    }

    pub fn step(&mut self, msg: Message) {
        if self.is_leader && msg.from != 0 && msg.from != self.peer_id() {
            self.peer_seen.insert(msg.from, Instant::now());
        }
        if let Err(e) = self.raft.step(msg) {
            tracing::debug!(region_id = self.region_id(), error = %e, "raft step failed");
        }
    }

    /// Proposes `req` or answers `cb` with why it cannot be proposed.
    pub fn propose(&mut self, req: BatchRequest, cb: Callback<BatchResult>) {
        if !self.is_leader() {
            let _ = cb.send(Err(self.not_leader()));
            return;
        }
        // One batch is one raft entry: capped, so every peer can take it
        // (followers drop larger entries, fsm/validate.rs).
        let size = req.encoded_len();
        if size > crate::fsm::validate::MAX_PROPOSAL_BYTES {
            let _ = cb.send(Err(RegionError {
                message: format!(
                    "batch of {size} bytes is over the {} byte raft entry cap",
                    crate::fsm::validate::MAX_PROPOSAL_BYTES
                ),
                ..Default::default()
            }));
            return;
        }
        if let Err(e) = self
            .check_not_merging()
            .and_then(|_| apply::check_batch(self.region(), &req))
        {
            let _ = cb.send(Err(self.enrich(e)));
            return;
        }
        self.first_to_flush_at.get_or_insert_with(Instant::now);
        self.proposals_to_flush.push((cmd::encode_batch(&req), cb));
    }

    /// Group commit across rounds: while the leader's last append is being
    /// replicated (entries past the commit index), batches that came since
    /// wait for it to commit, up to [`HOLD_PROPOSALS_MAX`] or
    /// [`HOLD_PROPOSALS_BATCHES`], and then go as one append. Under
    /// concurrent writes this makes each round (a synced write on every
    /// store, an append and its answer) carry more batches; a lone writer
    /// finds nothing in flight and never waits (decision 0020, second
    /// addendum).
    pub fn holds_proposals(&self, now: Instant) -> bool {
        let Some(first) = self.first_to_flush_at else {
            return false;
        };
        let log = &self.raft.raft.raft_log;
        self.is_leader()
            && log.last_index() > log.committed
            && self.proposals_to_flush.len() < HOLD_PROPOSALS_BATCHES
            && now.saturating_duration_since(first) < HOLD_PROPOSALS_MAX
    }

    /// When held batches go regardless ([`Peer::holds_proposals`]); `None`
    /// with none waiting.
    pub fn proposals_due_at(&self) -> Option<Instant> {
        self.first_to_flush_at.map(|t| t + HOLD_PROPOSALS_MAX)
    }

    /// Proposes the round's batches as one raft message of many entries.
    /// raft-rs broadcasts an append per proposal step: one entry each cost
    /// every follower a message, a step and an answer per entry (four
    /// messages per small PUT); together they share them. Runs before the
    /// round's Ready and before any other proposal, so entries keep the
    /// order their requests came in.
    fn flush_proposals(&mut self) {
        if self.proposals_to_flush.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.proposals_to_flush);
        self.first_to_flush_at = None;
        if std::mem::take(&mut self.flush_held) {
            metrics::PROPOSALS_HELD.inc_by(pending.len() as u64);
        }
        if !self.is_leader() {
            // Stepped down within the round (a newer term's message): NotLeader for each.
            for (_, cb) in pending {
                self.track_proposal_at(None, ProposalCb::Batch(cb));
            }
            return;
        }
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.peer_id();
        let (entries, cbs): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .map(|(data, cb)| {
                let e = Entry {
                    data: data.into(),
                    ..Default::default()
                };
                (e, cb)
            })
            .unzip();
        m.set_entries(entries.into());
        let last_before = self.raft.raft.raft_log.last_index();
        let res = self.raft.raft.step(m);
        // raft-rs appends all of a message's entries or none.
        let last = if self.appended_since(last_before, res) {
            self.raft.raft.raft_log.last_index()
        } else {
            last_before
        };
        for (i, cb) in (1..).zip(cbs) {
            let index = last_before + i;
            self.track_proposal_at((index <= last).then_some(index), ProposalCb::Batch(cb));
        }
    }

    /// Proposes a split at `split_key` (checked again when applied).
    pub fn propose_split(
        &mut self,
        epoch: Option<RegionEpoch>,
        split_key: Vec<u8>,
        new_region_id: u64,
        new_peer_ids: Vec<u64>,
        cb: Callback<SplitResult>,
    ) {
        if !self.is_leader() {
            let _ = cb.send(Err(self.not_leader()));
            return;
        }
        let epoch = epoch.or(self.region().epoch);
        let checked = self
            .check_not_merging()
            .and_then(|_| apply::check_epoch(self.region(), epoch.as_ref()))
            .and_then(|_| split::check_split_key(self.region(), &split_key));
        if let Err(e) = checked {
            let _ = cb.send(Err(self.enrich(e)));
            return;
        }
        let req = AdminRequest {
            header: Some(RequestHeader {
                region_id: self.region_id(),
                epoch,
            }),
            split: Some(SplitRequest {
                split_key: split_key.into(),
                new_region_id,
                new_peer_ids,
            }),
            ..Default::default()
        };
        self.propose_admin(&req, ProposalCb::Split(cb));
    }

    /// Proposes one merge step (checked again when applied). Only a
    /// rollback is accepted while the region is frozen.
    pub fn propose_merge(&mut self, req: AdminRequest, cb: Callback<AdminResult>) {
        if !self.is_leader() {
            let _ = cb.send(Err(self.not_leader()));
            return;
        }
        let checked = if req.rollback_merge.is_some() {
            Ok(())
        } else {
            self.check_not_merging()
        }
        .and_then(|_| {
            apply::check_epoch(
                self.region(),
                req.header.as_ref().and_then(|h| h.epoch.as_ref()),
            )
        });
        if let Err(e) = checked {
            let _ = cb.send(Err(self.enrich(e)));
            return;
        }
        self.propose_admin(&req, ProposalCb::Admin(cb));
    }

    /// Proposes one membership change (raft ConfChange v1; one at a time).
    pub fn propose_conf_change(
        &mut self,
        epoch: Option<RegionEpoch>,
        change: ConfChangeType,
        peer: PeerMeta,
        cb: Callback<AdminResult>,
    ) {
        if !self.is_leader() {
            let _ = cb.send(Err(self.not_leader()));
            return;
        }
        let checked = self
            .check_not_merging()
            .and_then(|_| apply::check_epoch(self.region(), epoch.as_ref()))
            .map_err(|e| self.enrich(e))
            .and_then(|_| self.check_conf_change(change, &peer));
        if let Err(e) = checked {
            let _ = cb.send(Err(e));
            return;
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(change);
        cc.node_id = peer.id;
        cc.context = peer.encode_to_vec().into();
        self.flush_proposals();
        let last_before = self.raft.raft.raft_log.last_index();
        let res = self.raft.propose_conf_change(Vec::new(), cc);
        self.track_proposal(last_before, res, ProposalCb::Admin(cb));
    }

    /// Why `change` of `peer` cannot be proposed now, if it cannot.
    fn check_conf_change(
        &self,
        change: ConfChangeType,
        peer: &PeerMeta,
    ) -> Result<(), RegionError> {
        let busy = |m: &str| Err(errors::server_busy(m));
        if self.raft.raft.has_pending_conf() {
            return busy("a conf change of this region is still being applied");
        }
        if peer.id == 0 || peer.store_id == 0 {
            return busy("conf change: peer id and store id are required");
        }
        let current = self.region().peers.iter().find(|p| p.id == peer.id);
        match change {
            ConfChangeType::AddLearnerNode => {
                if self
                    .region()
                    .peers
                    .iter()
                    .any(|p| p.store_id == peer.store_id)
                {
                    return busy("the store already holds a peer of this region");
                }
            }
            ConfChangeType::AddNode => match current {
                Some(p) if p.is_learner && p.store_id == peer.store_id => {}
                _ => return busy("only an existing learner can be promoted"),
            },
            ConfChangeType::RemoveNode => {
                if current.is_none_or(|p| p.store_id != peer.store_id) {
                    return busy("no such peer in the region");
                }
                if peer.id == self.peer_id() {
                    return busy("the leader cannot remove itself: transfer leadership first");
                }
            }
        }
        Ok(())
    }

    /// Proposes an admin command, announcing its commit to followers at
    /// once: a split's new peers then exist on every store right away, and
    /// a merge target finds its local source ready (conf changes get the
    /// same from raft-rs itself).
    fn propose_admin(&mut self, req: &AdminRequest, cb: ProposalCb) {
        self.flush_proposals();
        self.raft.skip_bcast_commit(false);
        self.propose_data(cmd::encode_admin(req), cb);
        self.bcast_commit_until = Some(self.raft.raft.raft_log.last_index());
    }

    fn propose_data(&mut self, data: Vec<u8>, cb: ProposalCb) {
        let last_before = self.raft.raft.raft_log.last_index();
        let res = self.raft.propose(Vec::new(), data);
        self.track_proposal(last_before, res, cb);
    }

    /// Keeps `cb` until the proposed entry applies, or answers it now if
    /// raft dropped the proposal.
    fn track_proposal(&mut self, last_before: u64, res: raft::Result<()>, cb: ProposalCb) {
        let index = self
            .appended_since(last_before, res)
            .then(|| self.raft.raft.raft_log.last_index());
        self.track_proposal_at(index, cb);
    }

    /// Whether a proposal step appended to the log.
    fn appended_since(&self, last_before: u64, res: raft::Result<()>) -> bool {
        match res {
            Err(e) => {
                tracing::debug!(region_id = self.region_id(), error = %e, "proposal dropped");
                false
            }
            Ok(()) => self.raft.raft.raft_log.last_index() > last_before,
        }
    }

    /// Keeps `cb` for the entry at `index`, or (`None`: raft dropped the
    /// proposal) answers it now.
    fn track_proposal_at(&mut self, index: Option<u64>, cb: ProposalCb) {
        let Some(index) = index else {
            let nl = self.not_leader();
            match cb {
                ProposalCb::Batch(cb) => {
                    let _ = cb.send(Err(nl));
                }
                ProposalCb::Split(cb) => {
                    let _ = cb.send(Err(nl));
                }
                ProposalCb::Admin(cb) => {
                    let _ = cb.send(Err(nl));
                }
            }
            return;
        };
        metrics::PROPOSALS.inc();
        self.proposals.push_back(Proposal {
            index,
            term: self.raft.raft.term,
            cb,
        });
    }

    /// Queues a linearizable read; issued as one ReadIndex per round.
    pub fn read(&mut self, epoch: Option<RegionEpoch>, keys: &[Vec<u8>], cb: ReadCb) {
        if !self.is_leader() {
            let _ = cb.send(Err(self.not_leader()));
            return;
        }
        if let Err(e) = self.check_read(epoch.as_ref(), keys) {
            let _ = cb.send(Err(e));
            return;
        }
        if self.is_applying_snapshot() {
            let _ = cb.send(Err(errors::server_busy("applying a snapshot")));
            return;
        }
        let read = PendingRead {
            epoch,
            keys: keys.to_vec(),
            cb,
        };
        match self.lease_read_index() {
            Some(index) => {
                metrics::LEASE_READS.inc();
                if self.raft.store().applied_index() >= index {
                    self.answer_reads(vec![read]);
                } else {
                    self.reads_waiting_apply.push_back((index, vec![read]));
                }
            }
            None => self.reads_to_issue.push(read),
        }
    }

    /// The index a read arriving now must wait for, if the lease lets this
    /// leader answer alone: its commit index (no other leader can have
    /// committed anything during the lease). Also asks for a renewal when
    /// half the lease is gone, so a steady read load never falls back to
    /// ReadIndex rounds.
    fn lease_read_index(&mut self) -> Option<u64> {
        let (lease, until) = (self.lease?, self.lease_until?);
        let now = Instant::now();
        let r = &self.raft.raft;
        // A transfer lets the transferee win an election at once (forced
        // votes ignore the followers' leader lease): no lease reads then.
        if now >= until || r.lead_transferee.is_some() || !r.commit_to_current_term() {
            return None;
        }
        let renewing = self
            .lease_renewal
            .is_some_and(|t| now.duration_since(t) < 2 * lease);
        if until.duration_since(now) < lease / 2 && !renewing {
            self.renew_lease = true;
        }
        Some(r.raft_log.committed)
    }

    /// The read delegate to publish for the service (`local_read`) if it
    /// changed since the last call: `Some(Some(d))` publish `d`,
    /// `Some(None)` revoke, `None` nothing new.
    pub fn local_read_update(
        &mut self,
        load_cfg: &LoadSplitConfig,
    ) -> Option<Option<ReadDelegate>> {
        let serve_until = self.local_serve_until();
        let vouched = serve_until.map(|t| (t, self.region().epoch.unwrap_or_default()));
        if vouched == self.local_published {
            return None;
        }
        self.local_published = vouched;
        Some(serve_until.map(|serve_until| ReadDelegate {
            region: self.region().clone(),
            serve_until,
            flow: self.flow.clone(),
            load: self.load.clone(),
            load_cfg: load_cfg.clone(),
        }))
    }

    /// The poller revoked this peer's delegate (a leadership transfer).
    pub fn local_revoked(&mut self) {
        self.local_published = None;
    }

    /// Until when the service may answer reads alone, if at all: while
    /// this peer leads with a valid lease, has applied an entry of its own
    /// term (so every write an earlier leader acknowledged is applied here),
    /// and is not transferring leadership, merging or applying a snapshot.
    /// Half the lease: the reads after that come here and renew it.
    fn local_serve_until(&self) -> Option<Instant> {
        let (lease, until) = (self.lease?, self.lease_until?);
        let r = &self.raft.raft;
        let applied = self.raft.store().applied_index();
        let ok = self.is_leader()
            && r.lead_transferee.is_none()
            && r.commit_to_current_term()
            && r.raft_log.term(applied).ok() == Some(r.term)
            && self.is_initialized()
            && !self.is_applying_snapshot()
            && self.merging().is_none();
        let serve_until = until.checked_sub(lease / 2)?;
        (ok && serve_until > Instant::now()).then_some(serve_until)
    }

    /// Starts one ReadIndex for every read queued this round (or for a
    /// lease renewal).
    pub fn issue_reads(&mut self) {
        if self.reads_to_issue.is_empty() && !self.renew_lease {
            return;
        }
        // raft-rs drops a ReadIndex, silently, while this leader has not
        // committed an entry of its own term (just elected: its no-op is in
        // flight). Keep the reads for the round after that commit; issued
        // now they would wait for the caller's deadline (a 5 s stall seen
        // after splits and leader transfers).
        if !self.raft.raft.commit_to_current_term() {
            return;
        }
        let id = self.next_read_id;
        self.next_read_id = self.next_read_id.wrapping_add(1);
        self.raft.read_index(id.to_be_bytes().to_vec());
        let cbs = std::mem::take(&mut self.reads_to_issue);
        let now = Instant::now();
        if std::mem::take(&mut self.renew_lease) {
            self.lease_renewal = Some(now);
        }
        self.reads_by_ctx.insert(id, (now, cbs));
    }

    fn on_read_state(&mut self, rs: ReadState) {
        let Ok(ctx) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
            return;
        };
        let Some((issued, cbs)) = self.reads_by_ctx.remove(&u64::from_be_bytes(ctx)) else {
            return;
        };
        // A quorum confirmed this leader at `issued` or later: a lease from then.
        if let (Some(lease), true) = (self.lease, self.is_leader()) {
            let until = issued + lease;
            if self.lease_until.is_none_or(|u| u < until) {
                self.lease_until = Some(until);
            }
            if self.lease_renewal.is_some_and(|t| t <= issued) {
                self.lease_renewal = None;
            }
        }
        if self.raft.store().applied_index() >= rs.index && !self.is_applying_snapshot() {
            self.answer_reads(cbs);
        } else {
            self.reads_waiting_apply.push_back((rs.index, cbs));
        }
    }

    /// Serves reads whose ReadIndex is applied. A split applied since the
    /// read was queued may have moved its keys to another region, whose
    /// writes this store may not have applied yet: re-check, so such a read
    /// gets `EpochNotMatch` instead of stale data.
    fn answer_reads(&self, reads: Vec<PendingRead>) {
        for r in reads {
            let res = self
                .check_read(r.epoch.as_ref(), &r.keys)
                .map(|_| ReadGrant {
                    region: self.region().clone(),
                    flow: self.flow.clone(),
                });
            let _ = r.cb.send(res);
        }
    }

    fn serve_applied_reads(&mut self) {
        if self.is_applying_snapshot() {
            return;
        }
        let applied = self.raft.store().applied_index();
        while self
            .reads_waiting_apply
            .front()
            .is_some_and(|(idx, _)| *idx <= applied)
        {
            let (_, cbs) = self.reads_waiting_apply.pop_front().expect("front checked");
            self.answer_reads(cbs);
        }
    }

    pub fn transfer_leader(
        &mut self,
        epoch: Option<RegionEpoch>,
        to_peer: u64,
    ) -> Result<(), RegionError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        apply::check_epoch(self.region(), epoch.as_ref()).map_err(|e| self.enrich(e))?;
        match self.peer_meta(to_peer) {
            None => {
                return Err(errors::server_busy(&format!(
                    "peer {to_peer} is not a member of the region"
                )))
            }
            Some(p) if p.is_learner => {
                return Err(errors::server_busy(&format!(
                    "peer {to_peer} is a learner and cannot lead"
                )))
            }
            Some(_) => {}
        }
        if to_peer == self.peer_id() {
            return Ok(());
        }
        // raft-rs stops taking proposals until the target has caught up and
        // won its election (or an election timeout passes): refuse a target
        // that is far behind or not heard from lately (down, partitioned),
        // instead of stalling the region's writes for nothing.
        // This round's batches go first: raft-rs drops proposals once a
        // transfer starts.
        self.flush_proposals();
        // raft-rs clears `recent_active` at every quorum check, so a live
        // peer can read as inactive until its next answer: what we heard
        // from it ourselves within an election timeout counts too.
        let last = self.raft.raft.raft_log.last_index();
        let heard = self
            .peer_seen
            .get(&to_peer)
            .is_some_and(|t| t.elapsed() < self.election_timeout);
        match self.raft.raft.prs().get(to_peer) {
            Some(pr) if (pr.recent_active || heard) && pr.matched + MAX_TRANSFER_LAG >= last => {}
            Some(pr) => {
                return Err(errors::server_busy(&format!(
                    "transfer target peer {to_peer} is not caught up (matched {}, last {last}, \
                     recently active {}, heard within an election timeout {heard})",
                    pr.matched, pr.recent_active
                )))
            }
            None => {
                return Err(errors::server_busy(&format!(
                    "no raft progress for peer {to_peer}"
                )))
            }
        }
        // The transferee may win at once: stop serving reads alone now.
        self.lease_until = None;
        self.raft.transfer_leader(to_peer);
        Ok(())
    }

    pub fn status(&self) -> RegionStatus {
        let s = self.raft.store();
        RegionStatus {
            region: Some(s.region().clone()),
            leader_peer_id: self.raft.raft.leader_id,
            term: self.raft.raft.term,
            commit_index: self.raft.raft.raft_log.committed,
            applied_index: if self.is_applying_snapshot() {
                0
            } else {
                s.applied_index()
            },
            applying_snapshot: self.is_applying_snapshot(),
            first_log_index: s.first_log_index(),
            last_log_index: self.raft.raft.raft_log.last_index(),
            snapshot_index: s.truncated_index(),
            merge_target_id: self
                .merging()
                .and_then(|m| m.target.as_ref())
                .map_or(0, |t| t.id),
            prepare_merge_index: self.merging().map_or(0, |m| m.prepare_index),
        }
    }

    /// Notes which peers answered since the last tick; a change in the
    /// down/pending sets makes the next heartbeat go at once.
    fn track_peer_health(&mut self) {
        let now = Instant::now();
        let me = self.peer_id();
        for (id, pr) in self.raft.raft.prs().iter() {
            if *id != me && (pr.recent_active || !self.peer_seen.contains_key(id)) {
                self.peer_seen.insert(*id, now);
            }
        }
        let health = self.peer_health();
        let ids = |v: &[PeerMeta]| v.iter().map(|p| p.id).collect::<Vec<_>>();
        let health = (ids(&health.0), ids(&health.1));
        if health != self.reported_health {
            self.reported_health = health;
            self.heartbeat_due = true;
        }
    }

    /// (down, pending) peers as this leader sees them: down = no answer for
    /// `peer_down_after`; pending = needs a snapshot (behind the log's start).
    fn peer_health(&self) -> (Vec<PeerMeta>, Vec<PeerMeta>) {
        let (mut down, mut pending) = (Vec::new(), Vec::new());
        if !self.is_leader() {
            return (down, pending);
        }
        let now = Instant::now();
        let truncated = self.raft.store().truncated_index();
        let me = self.peer_id();
        for p in &self.region().peers {
            if p.id == me {
                continue;
            }
            let seen = self.peer_seen.get(&p.id).copied().unwrap_or(now);
            if now.duration_since(seen) >= self.peer_down_after {
                down.push(*p);
            }
            let behind = self.raft.raft.prs().get(p.id).is_none_or(|pr| {
                pr.state == raft::ProgressState::Snapshot || pr.matched < truncated
            });
            if behind {
                pending.push(*p);
            }
        }
        (down, pending)
    }

    /// The heartbeat PD gets from this leader: sizes are the split checker's
    /// last count plus the puts applied since (no disk access here); flow
    /// since the previous sample (none when that was under a second ago).
    pub fn region_heartbeat(&self) -> RegionHeartbeatRequest {
        let (keys, bytes) = self.size.estimate();
        let (down_peers, pending_peers) = self.peer_health();
        let flow = self.flow.take();
        RegionHeartbeatRequest {
            region: Some(self.region().clone()),
            leader: self.peer_meta(self.peer_id()),
            approximate_size: bytes,
            approximate_keys: keys,
            term: self.raft.raft.term,
            down_peers,
            pending_peers,
            bytes_written: flow.bytes_written,
            keys_written: flow.keys_written,
            bytes_read: flow.bytes_read,
            keys_read: flow.keys_read,
            interval_ms: flow.interval_ms,
        }
    }

    /// The split checker's count of the region as of `epoch` (stale when a
    /// split applied since). A leader whose numbers moved tells PD at once.
    pub fn on_size_checked(&mut self, epoch: Option<RegionEpoch>, counted: Option<(u64, u64)>) {
        let current = self.region().epoch.map(|e| e.version) == epoch.map(|e| e.version);
        let (k0, b0) = self.size.estimate();
        self.size
            .on_checked(counted.filter(|_| current), Instant::now());
        let (k1, b1) = self.size.estimate();
        let moved = |a: u64, b: u64| a.abs_diff(b) > a.max(b) / 8;
        if self.is_leader() && (moved(k0, k1) || moved(b0, b1)) {
            self.heartbeat_due = true;
        }
    }

    /// The transport lost its stream to `store_id`.
    pub fn on_store_unreachable(&mut self, store_id: u64) {
        if !self.is_leader() {
            return;
        }
        let ids: Vec<u64> = self
            .region()
            .peers
            .iter()
            .filter(|p| p.store_id == store_id)
            .map(|p| p.id)
            .collect();
        for id in ids {
            self.raft.report_unreachable(id);
        }
    }

    /// The snapshot worker is still writing this peer's data.
    pub fn is_applying_snapshot(&self) -> bool {
        self.raft.store().applying_snapshot().is_some()
    }

    /// The snapshot worker finished the snapshot at `index`: the peer
    /// serves again and applies what it held back (next round).
    pub fn on_snapshot_applied(&mut self, index: u64, ok: bool) {
        if !ok {
            tracing::error!(
                region_id = self.region_id(),
                index,
                "snapshot data not applied; the peer stays unavailable until restarted"
            );
            return;
        }
        if self.raft.mut_store().finish_snapshot_apply(index) {
            tracing::info!(region_id = self.region_id(), index, "snapshot applied");
            self.serve_applied_reads();
        }
    }

    pub fn on_delivery(&mut self, d: &Delivery) {
        if d.is_snapshot {
            let status = if d.delivered {
                SnapshotStatus::Finish
            } else {
                SnapshotStatus::Failure
            };
            self.raft.report_snapshot(d.to_peer, status);
        }
        if !d.delivered {
            self.raft.report_unreachable(d.to_peer);
        }
    }

    fn on_role(&mut self, role: StateRole) {
        let now_leader = role == StateRole::Leader;
        if now_leader && !self.is_leader {
            metrics::LEADER_COUNT.inc();
            self.heartbeat_due = true;
            tracing::info!(
                region_id = self.region_id(),
                peer_id = self.peer_id(),
                term = self.raft.raft.term,
                "became leader"
            );
        }
        if now_leader != self.is_leader {
            self.lease_until = None;
            self.lease_renewal = None;
            self.peer_seen.clear();
            self.reported_health = (Vec::new(), Vec::new());
        }
        if !now_leader && self.is_leader {
            metrics::LEADER_COUNT.dec();
            // Reads not yet confirmed can never be by this peer now; those
            // already confirmed stay valid and are served once applied.
            // Proposals stay: they resolve when their index applies (success
            // if the entry survived, "dropped" if another term replaced it).
            let nl = self.not_leader();
            for r in self.reads_to_issue.drain(..) {
                let _ = r.cb.send(Err(nl.clone()));
            }
            for (_, (_, reads)) in self.reads_by_ctx.drain() {
                for r in reads {
                    let _ = r.cb.send(Err(nl.clone()));
                }
            }
        }
        if now_leader != self.is_leader {
            self.load.lock().reset();
        }
        self.is_leader = now_leader;
    }

    fn send_msgs(&self, ctx: &mut PeerCtx<'_>, msgs: Vec<Message>) {
        for m in msgs {
            let Some(to) = self.peer_meta(m.to) else {
                tracing::debug!(
                    region_id = self.region_id(),
                    to = m.to,
                    "message to unknown peer dropped"
                );
                continue;
            };
            let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let bytes = match m.write_to_bytes() {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode raft message");
                    continue;
                }
            };
            let rm = RaftMessage {
                region_id: self.region_id(),
                from_store: ctx.store_id,
                to_store: to.store_id,
                region: Some(self.region().clone()),
                message: bytes.into(),
                tombstone: false,
            };
            ctx.transport.send(rm, m.to, is_snapshot);
        }
    }

    /// Phase 1 of a Ready; `None` when there is nothing to do.
    pub fn collect_ready(
        &mut self,
        ctx: &mut PeerCtx<'_>,
        wb: &mut WriteBatch,
    ) -> Result<Option<Ready>, FatalError> {
        if self.holds_proposals(Instant::now()) {
            self.flush_held = true;
        } else {
            self.flush_proposals();
        }
        self.issue_reads();
        if !self.raft.has_ready() {
            return Ok(None);
        }
        let mut rd = self.raft.ready();
        if let Some(ss) = rd.ss() {
            self.on_role(ss.raft_state);
        }
        if !rd.messages().is_empty() {
            let msgs = rd.take_messages();
            self.send_msgs(ctx, msgs);
        }
        if !rd.snapshot().is_empty() {
            let index = rd.snapshot().get_metadata().index;
            let (_, state) = self.raft.mut_store().apply_snapshot(rd.snapshot(), wb)?;
            ctx.sync = true;
            self.apply_to_schedule = Some(state);
            self.snapshot_applied = true;
            // Entries held back behind a merge that the snapshot covers.
            self.pending_apply.retain(|e| e.index > index);
            // Proposals the snapshot covers: their outcome is unknown here.
            while self.proposals.front().is_some_and(|p| p.index <= index) {
                self.proposals.pop_front();
            }
            tracing::info!(region_id = self.region_id(), index, "applying snapshot");
        }
        // raft-rs's own rule (new entries, term or vote), and ours.
        ctx.sync |= rd.must_sync();
        let hs = rd.hs().cloned();
        ctx.sync |= self
            .raft
            .mut_store()
            .append_ready(rd.entries(), hs.as_ref(), wb);
        for e in rd.entries() {
            self.appended.0 += 1;
            self.appended.1 += (e.data.len() + e.context.len()) as u64;
        }
        // Before the apply below: a read is answered only from what is
        // written (reads waiting for this round's entries are answered
        // after the round's write).
        for rs in rd.take_read_states() {
            self.on_read_state(rs);
        }
        // Committed entries are durable in the log already (raft-rs hands
        // out only persisted ones), so their writes may share this batch.
        if rd.snapshot().is_empty() {
            let committed = rd.take_committed_entries();
            self.committed_rest = self.apply_into_round(ctx, committed, wb)?;
        }
        Ok(Some(rd))
    }

    /// Phase 3 of a Ready, after the round's write is durable.
    pub fn finish_ready(&mut self, ctx: &mut PeerCtx<'_>, mut rd: Ready) -> Result<(), FatalError> {
        if let Some(state) = self.apply_to_schedule.take() {
            self.snap.schedule_apply(self.region_id(), state);
        }
        // The round's write holds the entries applied in `collect_ready`.
        self.send_answers();
        let msgs = rd.take_persisted_messages();
        self.send_msgs(ctx, msgs);
        let mut committed = std::mem::take(&mut self.committed_rest);
        committed.extend(rd.take_committed_entries());
        self.apply_committed(ctx, committed)?;
        // Not `advance`: it would mark every committed entry applied, but
        // entries held back (behind a merge, or while a snapshot's data is
        // written) are not; `after_apply` reports the real applied index.
        let mut light = self.raft.advance_append(rd);
        if let Some(c) = light.commit_index() {
            self.raft.mut_store().set_commit(c);
        }
        let msgs = light.take_messages();
        self.send_msgs(ctx, msgs);
        let committed = light.take_committed_entries();
        self.apply_committed(ctx, committed)?;
        self.after_apply(ctx)
    }

    fn after_apply(&mut self, ctx: &mut PeerCtx<'_>) -> Result<(), FatalError> {
        // Not `advance_apply()`: entries held back behind a merge are not applied.
        let applied = self.raft.store().applied_index();
        self.raft.advance_apply_to(applied);
        if self
            .bcast_commit_until
            .is_some_and(|i| applied >= i || !self.is_leader())
        {
            self.bcast_commit_until = None;
            self.raft.skip_bcast_commit(true);
        }
        self.serve_applied_reads();
        self.maybe_compact(ctx)?;
        Ok(())
    }

    /// Whether entries are held back behind a CommitMerge.
    pub fn has_pending_apply(&self) -> bool {
        !self.pending_apply.is_empty()
    }

    /// Applies held-back entries if the merge source caught up meanwhile.
    pub fn resume_apply(&mut self, ctx: &mut PeerCtx<'_>) -> Result<(), FatalError> {
        if self.pending_apply.is_empty() || self.is_applying_snapshot() {
            return Ok(());
        }
        let held: Vec<Entry> = self.pending_apply.drain(..).collect();
        self.apply_committed(ctx, held)?;
        if self.pending_apply.is_empty() {
            tracing::info!(
                region_id = self.region_id(),
                "held-back entries applied; applying again"
            );
        }
        self.after_apply(ctx)
    }

    fn maybe_compact(&mut self, ctx: &mut PeerCtx<'_>) -> Result<(), FatalError> {
        let s = self.raft.store();
        let applied = s.applied_index();
        let first = s.first_log_index();
        let threshold = ctx.cfg.log_gc_threshold.max(1);
        let limit = ctx.cfg.log_gc_size_limit;
        let log_bytes = self.approximate_log_bytes(first);
        let over_size = limit > 0 && log_bytes >= limit && applied > first + LOG_KEEP_TAIL;
        if applied < first + threshold && !over_size {
            return Ok(());
        }
        let mut index = applied.saturating_sub(LOG_KEEP_TAIL);
        // Spare entries a live follower still needs, unless the log grew far
        // past a limit (then it gets a snapshot).
        let far_past = applied - first >= 4 * threshold || (limit > 0 && log_bytes >= 4 * limit);
        if self.is_leader() && !far_past {
            let me = self.peer_id();
            for (id, pr) in self.raft.raft.prs().iter() {
                if *id != me && pr.recent_active && pr.matched >= first {
                    index = index.min(pr.matched);
                }
            }
        }
        if index < first {
            return Ok(());
        }
        let mut wb = ctx.engine.batch();
        self.raft.mut_store().compact_to(index, &mut wb)?;
        ctx.engine.write(wb, false)?;
        tracing::debug!(region_id = self.region_id(), index, "compacted raft log");
        Ok(())
    }

    /// The log's approximate size in bytes: its entries from `first` to the
    /// last index times the mean size of the entries appended so far.
    fn approximate_log_bytes(&self, first: u64) -> u64 {
        let (n, bytes) = self.appended;
        if n == 0 {
            return 0;
        }
        let entries = self.raft.raft.raft_log.last_index().saturating_sub(first) + 1;
        entries.saturating_mul(bytes / n)
    }

    /// Stops the peer; every pending callback is dropped (outcome unknown).
    pub fn on_stop(&mut self) {
        if self.is_leader {
            metrics::LEADER_COUNT.dec();
            self.is_leader = false;
        }
    }
}
