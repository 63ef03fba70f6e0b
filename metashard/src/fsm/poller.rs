//! The raftstore thread: owns every peer of the store and drives them in rounds.
//!
//! A round: take every queued message (bounded), tick if due, then collect
//! the Ready of every peer with work — new entries, hard state, and the
//! committed data entries applied — into ONE write batch, write it (with one
//! fsync if raft needs any of it durable), and only then answer clients, send
//! persisted messages, apply the remaining committed entries (admin, conf
//! change) and advance each peer; finally hand the round's messages to the
//! transport.
//!
//! Many regions: a round only looks at the peers something happened to (a
//! message, request, delivery report, or a Ready last round: the `active`
//! set); only a tick round visits every peer. Periodic region heartbeats to
//! PD are spread over `RaftConfig::region_heartbeat` (random phase per peer),
//! and split checks run on the checker task (`split_check`), never here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crossbeam::channel::RecvTimeoutError;
use kura_proto::common::Region;
use kura_proto::metashard::RaftMessage;
use raft::prelude::Message;
use tokio::sync::mpsc::UnboundedSender;

use super::uninit::{self, Tracker};
use super::validate::{self, DropReason};
use super::{Mailbox, PdTask, Router, StoreMsg, StoreStats};
use crate::engine::Engine;
use crate::errors;
use crate::flow::Flow;
use crate::keys::local;
use crate::local_read::LocalReaders;
use crate::metrics;
use crate::peer::storage::PeerStorage;
use crate::peer::{Peer, PeerCtx, RaftConfig, SplitPeer};
use crate::snap::{self, SnapManager};
use crate::split_check::{CheckTask, SizeTracker};
use crate::transport::{Delivery, Transport};

/// Messages handled per round before the Ready phase runs, so a flood of
/// requests cannot starve raft.
const MAX_MSGS_PER_ROUND: usize = 4096;

/// How often uninitialized peers are looked at (`fsm::uninit`).
const UNINIT_SCAN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Poller {
    engine: Engine,
    store_id: u64,
    cfg: RaftConfig,
    transport: Transport,
    peers: HashMap<u64, Peer>,
    rx: Mailbox,
    pd_tx: Option<UnboundedSender<PdTask>>,
    check_tx: Option<UnboundedSender<CheckTask>>,
    logger: slog::Logger,
    /// Peers to look at in the next (non-tick) round.
    active: HashSet<u64>,
    /// The store's total flow ([`Router::store_flow`]).
    store_flow: Arc<Flow>,
    /// Read delegates of the regions led here ([`Router::local_readers`]).
    local: Arc<LocalReaders>,
    snap: Arc<SnapManager>,
    /// Tombstones for peers that were applying a snapshot (their data was
    /// being written): handled once the apply is done.
    deferred_tombstones: HashMap<u64, RaftMessage>,
    /// Regions whose tombstone's sender is being asked to confirm it.
    tombstone_checks: HashSet<u64>,
    /// Peers still waiting for their first snapshot: bounded, and destroyed
    /// when PD does not know them (decision 0045).
    uninit: Tracker,
    next_uninit_scan: Instant,
    /// Votes for regions a local split is about to create, replayed when it
    /// does ([`EarlyVotes`]).
    early_votes: EarlyVotes,
    /// When the next round must run for batches a leader holds
    /// ([`Peer::holds_proposals`]) though no message came.
    held_wake: Option<Instant>,
}

impl Poller {
    /// Loads every persisted peer of the store (redoing unfinished
    /// snapshot applies) and clears the snapshot directory of the rest.
    pub fn new(
        engine: Engine,
        store_id: u64,
        cfg: RaftConfig,
        transport: Transport,
        rx: Mailbox,
        pd_tx: Option<UnboundedSender<PdTask>>,
        snap: Arc<SnapManager>,
    ) -> Result<Poller, crate::Error> {
        let logger = crate::logger::raft_logger();
        let mut ids = Vec::new();
        let (s, e) = local::region_state_range();
        engine.scan_raft(&s, &e, |k, _| {
            ids.extend(local::region_id_of_state_key(k));
            true
        })?;
        let mut storages = Vec::new();
        for id in ids {
            if let Some(s) = PeerStorage::load(engine.clone(), id)? {
                storages.push((id, s));
            }
        }
        // Before any peer queues a redo: the files those need stay.
        let in_use: Vec<_> = storages
            .iter()
            .filter_map(|(_, s)| s.applying_snapshot().and_then(|a| a.descriptor.clone()))
            .collect();
        snap.gc_on_start(&in_use);
        let mut peers = HashMap::new();
        let mut uninit = Tracker::default();
        for (id, storage) in storages {
            if !storage.is_initialized() {
                // Junk from before a restart is collected like new junk.
                uninit.insert(id, Instant::now());
            }
            let peer = Peer::new(storage, &cfg, &logger, &snap)?;
            tracing::info!(
                region_id = id,
                peer_id = peer.peer_id(),
                "loaded region peer"
            );
            peers.insert(id, peer);
        }
        metrics::REGION_COUNT.add(peers.len() as i64);
        metrics::UNINITIALIZED_PEERS.set(uninit.len() as i64);
        Ok(Poller {
            engine,
            store_id,
            cfg,
            transport,
            peers,
            rx,
            pd_tx,
            check_tx: None,
            logger,
            active: HashSet::new(),
            store_flow: Arc::new(Flow::default()),
            local: Arc::new(LocalReaders::default()),
            snap,
            deferred_tombstones: HashMap::new(),
            tombstone_checks: HashSet::new(),
            uninit,
            next_uninit_scan: Instant::now(),
            early_votes: EarlyVotes::default(),
            held_wake: None,
        })
    }

    /// Adds applied writes to `router`'s store flow (store heartbeats).
    pub fn with_store_flow(mut self, router: &Router) -> Self {
        self.store_flow = router.store_flow().clone();
        self.local = router.local_readers().clone();
        self
    }

    /// Hands split checks of led regions to the checker task.
    pub fn with_split_checker(mut self, tx: UnboundedSender<CheckTask>) -> Self {
        self.check_tx = Some(tx);
        self
    }

    /// Runs until `Shutdown` (or every router is dropped). `Err`: a fatal
    /// storage failure; the store must stop.
    pub fn run(mut self) -> Result<(), crate::Error> {
        let res = self.run_loop();
        if let Err(e) = &res {
            tracing::error!(error = %e, "raftstore stopped on a fatal error");
        }
        metrics::REGION_COUNT.sub(self.peers.len() as i64);
        metrics::UNINITIALIZED_PEERS.set(0);
        for p in self.peers.values_mut() {
            p.on_stop();
        }
        res
    }

    fn run_loop(&mut self) -> Result<(), crate::Error> {
        let mut next_tick = Instant::now() + self.cfg.tick;
        loop {
            let wake = self.held_wake.map_or(next_tick, |h| h.min(next_tick));
            let wait = wake.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(msg) => {
                    if !self.handle(msg)? {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            for _ in 0..MAX_MSGS_PER_ROUND {
                match self.rx.try_recv() {
                    Ok(msg) => {
                        if !self.handle(msg)? {
                            return Ok(());
                        }
                    }
                    Err(_) => break,
                }
            }
            let tick = Instant::now() >= next_tick;
            if tick {
                next_tick = Instant::now() + self.cfg.tick;
                self.tick_all();
                if Instant::now() >= self.next_uninit_scan {
                    self.next_uninit_scan = Instant::now() + UNINIT_SCAN_INTERVAL;
                    self.scan_uninitialized();
                }
            }
            self.round(tick)?;
        }
    }

    /// Ticks every peer; leaders also get their periodic PD heartbeat and
    /// split check when due (both cheap checks of a few fields).
    fn tick_all(&mut self) {
        let now = Instant::now();
        let mut checker_gone = false;
        for p in self.peers.values_mut() {
            p.tick();
            if !p.is_leader() {
                continue;
            }
            if now >= p.next_heartbeat {
                p.heartbeat_due = true;
            }
            if let Some(tx) = &self.check_tx {
                let cfg = &self.cfg.split_check;
                let load_split_key = p.load.lock().on_tick(&self.cfg.load_split, now);
                let by_load = load_split_key.is_some() && p.size.may_split(cfg, now);
                if by_load || p.size.needs_check(cfg, now) {
                    p.size.on_check_queued(now);
                    let task = CheckTask {
                        region: p.region().clone(),
                        may_split: p.size.may_split(cfg, now),
                        load_split_key: load_split_key.filter(|_| by_load),
                    };
                    checker_gone |= tx.send(task).is_err();
                }
            }
        }
        if checker_gone {
            // The checker task ended (store stopping): stop queueing.
            self.check_tx = None;
        }
    }

    /// Handles one message; false on shutdown.
    fn handle(&mut self, msg: StoreMsg) -> Result<bool, crate::Error> {
        // A client that gave up while its request was queued (timed out or
        // cancelled) is not worth a proposal or a read round.
        if msg.abandoned() {
            crate::metrics::CLIENT_REQUESTS_REFUSED
                .with_label_values(&["abandoned"])
                .inc();
            return Ok(true);
        }
        if let Some(id) = msg.region_id() {
            self.active.insert(id);
        }
        match msg {
            StoreMsg::Raft(m) => self.on_raft_message(*m)?,
            StoreMsg::Batch { req, cb } => {
                let region_id = req.header.as_ref().map(|h| h.region_id).unwrap_or(0);
                match self.peers.get_mut(&region_id) {
                    Some(p) => {
                        if let (true, Some(m)) = (p.is_leader(), req.mutations.first()) {
                            p.load.lock().record(&self.cfg.load_split, &m.key);
                        }
                        p.propose(*req, cb)
                    }
                    None => {
                        let _ = cb.send(Err(errors::region_not_found(region_id)));
                    }
                }
            }
            StoreMsg::Read {
                region_id,
                epoch,
                keys,
                cb,
            } => match self.peers.get_mut(&region_id) {
                Some(p) => {
                    if let (true, Some(k)) = (p.is_leader(), keys.first()) {
                        p.load.lock().record(&self.cfg.load_split, k);
                    }
                    p.read(epoch, &keys, cb)
                }
                None => {
                    let _ = cb.send(Err(errors::region_not_found(region_id)));
                }
            },
            StoreMsg::Merge { req, cb } => {
                let region_id = req.header.as_ref().map(|h| h.region_id).unwrap_or(0);
                match self.peers.get_mut(&region_id) {
                    Some(p) => p.propose_merge(*req, cb),
                    None => {
                        let _ = cb.send(Err(errors::region_not_found(region_id)));
                    }
                }
            }
            StoreMsg::ChangePeer {
                region_id,
                epoch,
                change,
                peer,
                cb,
            } => match self.peers.get_mut(&region_id) {
                Some(p) => p.propose_conf_change(epoch, change, peer, cb),
                None => {
                    let _ = cb.send(Err(errors::region_not_found(region_id)));
                }
            },
            StoreMsg::Split {
                region_id,
                epoch,
                split_key,
                new_region_id,
                new_peer_ids,
                cb,
            } => match self.peers.get_mut(&region_id) {
                Some(p) => p.propose_split(epoch, split_key, new_region_id, new_peer_ids, cb),
                None => {
                    let _ = cb.send(Err(errors::region_not_found(region_id)));
                }
            },
            StoreMsg::CreatePeer {
                region,
                peer_id,
                initial,
                cb,
            } => {
                let res = self.create_peer(region, peer_id, initial);
                if let Some(cb) = cb {
                    let _ = cb.send(res);
                } else if let Err(e) = res {
                    tracing::warn!(error = %e, "cannot create peer");
                }
            }
            StoreMsg::TransferLeader {
                region_id,
                epoch,
                to_peer,
                cb,
            } => {
                let res = match self.peers.get_mut(&region_id) {
                    Some(p) => {
                        let res = p.transfer_leader(epoch, to_peer);
                        // The transferee may win at once, ignoring the lease:
                        // no local read from here on (before any message of
                        // the transfer leaves, at this round's end).
                        if res.is_ok() {
                            self.local.revoke(region_id);
                            p.local_revoked();
                        }
                        res
                    }
                    None => Err(errors::region_not_found(region_id)),
                };
                let _ = cb.send(res);
            }
            StoreMsg::Status { region_id, cb } => {
                let _ = cb.send(self.peers.get(&region_id).map(|p| p.status()));
            }
            StoreMsg::StoreUnreachable { store_id } => {
                for p in self.peers.values_mut() {
                    p.on_store_unreachable(store_id);
                }
            }
            StoreMsg::Stats { cb } => {
                // Empty peers waiting for a snapshot (maybe forged) hold no
                // data and must not sway PD's balancing.
                let initialized = self.peers.values().filter(|p| p.is_initialized()).count();
                let _ = cb.send(StoreStats {
                    region_count: initialized as u64,
                    leader_count: self.peers.values().filter(|p| p.is_leader()).count() as u64,
                    used_bytes: self.engine.approximate_size(&[], &[]),
                });
            }
            StoreMsg::SizeChecked {
                region_id,
                epoch,
                counted,
                splitting,
            } => {
                if let Some(p) = self.peers.get_mut(&region_id) {
                    p.on_size_checked(epoch, counted);
                    if splitting {
                        tracing::debug!(region_id, "automatic split being proposed");
                    }
                }
            }
            StoreMsg::SnapshotApplied {
                region_id,
                index,
                ok,
            } => {
                if let Some(p) = self.peers.get_mut(&region_id) {
                    p.on_snapshot_applied(index, ok);
                }
                if let Some(m) = self.deferred_tombstones.remove(&region_id) {
                    self.on_tombstone(&m)?;
                }
            }
            StoreMsg::SnapshotSent {
                region_id,
                to_peer,
                ok,
            } => {
                if let Some(p) = self.peers.get_mut(&region_id) {
                    p.on_delivery(&Delivery {
                        region_id,
                        to_peer,
                        is_snapshot: true,
                        delivered: ok,
                    });
                }
            }
            StoreMsg::TombstoneChecked {
                region_id,
                from_store,
                region,
            } => {
                self.tombstone_checks.remove(&region_id);
                match region {
                    Some(region) => self.on_tombstone(&RaftMessage {
                        region_id,
                        from_store,
                        to_store: self.store_id,
                        region: Some(region),
                        message: Default::default(),
                        tombstone: true,
                    })?,
                    None => DropReason::TombstoneRefused.count(region_id),
                }
            }
            StoreMsg::PeerValidated { region_id, answer } => {
                self.on_peer_validated(region_id, &answer)?
            }
            StoreMsg::Shutdown => return Ok(false),
        }
        Ok(true)
    }

    /// A raft message off the wire. Everything a peer controls is checked
    /// before raft-rs sees it (`validate`); what fails is dropped and
    /// counted, never stepped (raft retries what real peers send).
    fn on_raft_message(&mut self, m: RaftMessage) -> Result<(), crate::Error> {
        let region_id = m.region_id;
        if m.to_store != self.store_id {
            // Also what a wiped store that came back under a new id at its
            // old address gets for its old id: never a peer created empty.
            DropReason::WrongStore.count(region_id);
            return Ok(());
        }
        if m.tombstone {
            self.on_tombstone_claim(&m);
            return Ok(());
        }
        let msg = match validate::decode(&m.message)
            .and_then(|msg| validate::check_shape(&msg).map(|()| msg))
        {
            Ok(msg) => msg,
            Err(d) => {
                d.count(region_id);
                return Ok(());
            }
        };
        if msg.get_msg_type() == raft::prelude::MessageType::MsgSnapshot
            && !self.snapshot_acceptable(region_id, &msg)
        {
            return Ok(());
        }
        if !self.peers.contains_key(&region_id) {
            // A peer PD added (or a founding member whose CreatePeer is late):
            // create it empty; the leader sends it a snapshot.
            let Some(region) = m.region.clone().filter(|r| {
                r.id == region_id
                    && validate::range_ok(r)
                    && r.peers
                        .iter()
                        .any(|p| p.id == msg.to && p.store_id == self.store_id)
            }) else {
                DropReason::UnknownRegion.count(region_id);
                return Ok(());
            };
            // A region split off a local one that has not applied the split
            // yet: its peer is created by that split (with the data already
            // here), not empty from a message; an empty peer could take a
            // snapshot that older parent entries would then overwrite.
            // Only peers with data count: an empty one's range is only what
            // some message claimed (maybe a forger), and must not block a
            // real peer.
            if let Some(p) = self
                .peers
                .values()
                .find(|p| p.is_initialized() && ranges_overlap(p.region(), &region))
            {
                // The new region's first campaign reaches us with the
                // split's commit, before our apply: kept, its leader is
                // elected at once instead of at its next re-campaign tick.
                if is_vote(&msg) {
                    self.early_votes
                        .keep(m, self.cfg.tick * self.cfg.election_ticks as u32);
                    return Ok(());
                }
                tracing::debug!(
                    region_id,
                    local_region_id = p.region_id(),
                    "message for a region overlapping a local one dropped"
                );
                return Ok(());
            }
            // Forged messages could otherwise make any number of empty
            // peers; a real leader retries until there is room.
            if !self.uninit.has_room() {
                DropReason::UninitializedFull.count(region_id);
                return Ok(());
            }
            if let Err(e) = self.create_peer(region, msg.to, false) {
                tracing::warn!(region_id, error = %e, "cannot create peer from raft message");
                return Ok(());
            }
        }
        let Some(p) = self.peers.get_mut(&region_id) else {
            return Ok(());
        };
        let theirs = m.region.as_ref().map_or(0, conf_ver);
        match p.region().peers.iter().find(|x| x.id == msg.from) {
            Some(sender) if sender.store_id != m.from_store => {
                DropReason::SenderStoreMismatch.count(region_id);
                return Ok(());
            }
            Some(_) => {}
            None if conf_ver(p.region()) > theirs => {
                // A peer removed while it was away (it never saw its removal)
                // still campaigns: tell it to go.
                let rm = RaftMessage {
                    region_id,
                    from_store: self.store_id,
                    to_store: m.from_store,
                    region: Some(p.region().clone()),
                    message: Default::default(),
                    tombstone: true,
                };
                self.transport.send(rm, msg.from, false);
                return Ok(());
            }
            // Not a member in a view as new as ours: forged or confused. (A
            // newer view may name members we have not applied yet: stepped.)
            None if conf_ver(p.region()) == theirs => {
                DropReason::UnknownSender.count(region_id);
                return Ok(());
            }
            None => {}
        }
        match validate::check_against(&msg, p.local_log()) {
            Ok(()) => p.step(msg),
            Err(d) => d.count(region_id),
        }
        Ok(())
    }

    /// A tombstone says our peer of the region was removed. It is only a
    /// hint: a forged one must not wipe a live replica. It names a newer view
    /// without our peer; then the sender itself is asked (at the address PD
    /// has for it, `Transport::check_tombstone`) and its own view decides
    /// (`StoreMsg::TombstoneChecked` → [`Self::on_tombstone`]). TiKV's gc
    /// check compares epochs only; it trusts an authenticated network.
    fn on_tombstone_claim(&mut self, m: &RaftMessage) {
        let Some(p) = self.peers.get(&m.region_id) else {
            DropReason::UnknownRegion.count(m.region_id);
            return;
        };
        let plausible = m.region.as_ref().is_some_and(|r| {
            r.id == m.region_id
                && !r.peers.iter().any(|x| x.id == p.peer_id())
                && conf_ver(r) > conf_ver(p.region())
                && r.peers.iter().any(|x| x.store_id == m.from_store)
        });
        if !plausible || m.from_store == self.store_id {
            DropReason::TombstoneRefused.count(m.region_id);
            return;
        }
        // One question per region at a time: a flood asks once.
        if self.tombstone_checks.insert(m.region_id) {
            self.transport.check_tombstone(m.region_id, m.from_store);
        }
    }

    /// A MsgSnapshot is stepped only if its descriptor installs our peer of
    /// this region (`validate::check_snapshot`), its range overlaps no other
    /// local region with data (but merge sources the region absorbs), its
    /// file arrived whole through the `Snapshot` call with exactly this
    /// descriptor, and the peer is not still writing an earlier one.
    fn snapshot_acceptable(&self, region_id: u64, msg: &Message) -> bool {
        if self
            .peers
            .get(&region_id)
            .is_some_and(|p| p.is_applying_snapshot())
        {
            tracing::debug!(region_id, "snapshot dropped: still applying the last one");
            return false;
        }
        let d = match snap::descriptor_of(msg.get_snapshot()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(region_id, error = %e, "snapshot message dropped");
                DropReason::BadSnapshot.count(region_id);
                return false;
            }
        };
        let checked =
            validate::check_snapshot(msg, &d, region_id, self.store_id, self.snap.max_bytes());
        let overlapping = d.region.as_ref().and_then(|r| {
            self.peers.values().find(|p| {
                p.region_id() != region_id
                    && p.is_initialized()
                    && p.merge_target_id() != Some(region_id)
                    && ranges_overlap(p.region(), r)
            })
        });
        if let Some(p) = overlapping {
            // Its range is another local region's (a forgery, or a stale
            // snapshot from before a split): applying it would clear that
            // region's data. A real leader sends a newer one.
            tracing::info!(
                region_id,
                local_region_id = p.region_id(),
                "snapshot overlapping a local region dropped"
            );
            DropReason::BadSnapshot.count(region_id);
            return false;
        }
        if let Err(reason) = checked {
            tracing::warn!(
                region_id,
                "snapshot not matching its message or this store dropped"
            );
            reason.count(region_id);
            return false;
        }
        if !self.snap.has_received(&d) {
            tracing::warn!(
                region_id,
                "snapshot message without its received file dropped"
            );
            DropReason::BadSnapshot.count(region_id);
            return false;
        }
        true
    }

    /// Forgets uninitialized peers that got their snapshot (or are gone) and
    /// asks PD about those past the grace (`fsm::uninit`).
    fn scan_uninitialized(&mut self) {
        for id in self.uninit.regions() {
            if self.peers.get(&id).is_none_or(|p| p.is_initialized()) {
                self.uninit.remove(id);
            }
        }
        metrics::UNINITIALIZED_PEERS.set(self.uninit.len() as i64);
        let Some(tx) = &self.pd_tx else {
            return;
        };
        for region_id in self.uninit.due(Instant::now()) {
            let _ = tx.send(PdTask::ValidatePeer { region_id });
        }
    }

    /// PD answered about an uninitialized peer's region: destroyed unless PD
    /// lists it (its raft state only: an empty peer has no data, and its
    /// claimed range may be anyone's).
    fn on_peer_validated(
        &mut self,
        region_id: u64,
        answer: &Result<Option<Region>, String>,
    ) -> Result<(), crate::Error> {
        let Some(p) = self.peers.get(&region_id) else {
            self.uninit.remove(region_id);
            return Ok(());
        };
        if p.is_initialized() || p.is_applying_snapshot() {
            self.uninit.remove(region_id);
            return Ok(());
        }
        let verdict = uninit::verdict(answer, region_id, p.peer_id(), self.store_id);
        if !self.uninit.on_answer(region_id, verdict, Instant::now()) {
            if let Err(e) = answer {
                tracing::debug!(region_id, error = %e, "cannot ask PD about an uninitialized peer");
            }
            return Ok(());
        }
        let peer_id = p.peer_id();
        let mut wb = self.engine.batch();
        PeerStorage::destroy(region_id, &mut wb);
        // Not synced: a crash before the next synced write brings it back,
        // and it is collected again.
        self.engine.write(wb, false)?;
        if let Some(mut p) = self.peers.remove(&region_id) {
            p.on_stop();
            metrics::REGION_COUNT.dec();
        }
        self.local.revoke(region_id);
        self.uninit.remove(region_id);
        self.active.remove(&region_id);
        self.deferred_tombstones.remove(&region_id);
        metrics::UNINITIALIZED_PEERS.set(self.uninit.len() as i64);
        metrics::UNINITIALIZED_PEERS_DESTROYED.inc();
        tracing::info!(
            region_id,
            peer_id,
            "uninitialized peer PD does not know destroyed"
        );
        Ok(())
    }

    /// The sender confirmed our peer of the region was removed (`m.region` is
    /// its own view, fetched by us): destroy it (and its copy of the data) if
    /// that view is really newer than ours and excludes us.
    fn on_tombstone(&mut self, m: &RaftMessage) -> Result<(), crate::Error> {
        let Some(p) = self.peers.get(&m.region_id) else {
            return Ok(());
        };
        if p.is_applying_snapshot() {
            // Its data is being written by the snapshot worker: destroying
            // it now would race that; done when the worker is.
            self.deferred_tombstones.insert(m.region_id, m.clone());
            return Ok(());
        }
        let Some(newer) = m.region.as_ref() else {
            return Ok(());
        };
        let excluded = !newer.peers.iter().any(|x| x.id == p.peer_id());
        if newer.id != m.region_id || !excluded || conf_ver(newer) <= conf_ver(p.region()) {
            DropReason::TombstoneRefused.count(m.region_id);
            return Ok(());
        }
        let region = p.region().clone();
        // No read may be answered from the data about to go.
        self.local.revoke(region.id);
        let mut wb = self.engine.batch();
        PeerStorage::destroy(region.id, &mut wb);
        wb.delete_data_range(&region.start_key, &region.end_key)?;
        self.engine.write(wb, true)?;
        tracing::info!(region_id = region.id, "removed peer destroyed on tombstone");
        let mut gone = vec![region.id];
        drop_destroyed(&mut self.peers, &self.local, &mut gone);
        Ok(())
    }

    fn create_peer(&mut self, region: Region, peer_id: u64, initial: bool) -> Result<(), String> {
        if let Some(p) = self.peers.get(&region.id) {
            return if p.peer_id() == peer_id {
                Ok(())
            } else {
                Err(format!(
                    "region {} already has peer {} on this store",
                    region.id,
                    p.peer_id()
                ))
            };
        }
        if !region
            .peers
            .iter()
            .any(|p| p.id == peer_id && p.store_id == self.store_id)
        {
            return Err(format!(
                "peer {peer_id} of region {} is not on store {}",
                region.id, self.store_id
            ));
        }
        let region_id = region.id;
        let mut wb = self.engine.batch();
        let storage = PeerStorage::create(self.engine.clone(), region, peer_id, initial, &mut wb);
        self.engine.write(wb, true).map_err(|e| e.to_string())?;
        let peer =
            Peer::new(storage, &self.cfg, &self.logger, &self.snap).map_err(|e| e.to_string())?;
        if !peer.is_initialized() {
            self.uninit.insert(region_id, Instant::now());
            metrics::UNINITIALIZED_PEERS.set(self.uninit.len() as i64);
        }
        self.peers.insert(region_id, peer);
        metrics::REGION_COUNT.inc();
        tracing::info!(region_id, peer_id, initial, "created region peer");
        Ok(())
    }

    /// One round over every peer (`all`, after a tick) or the active ones.
    fn round(&mut self, all: bool) -> Result<(), crate::Error> {
        let ids: Vec<u64> = if all {
            self.active.clear();
            self.peers.keys().copied().collect()
        } else {
            self.active.drain().collect()
        };
        // Committed entries are applied into it too (`Peer::collect_ready`).
        let mut wb = self.engine.apply_batch();
        let mut readies = Vec::new();
        let mut ctx = PeerCtx {
            engine: &self.engine,
            store_id: self.store_id,
            transport: &mut self.transport,
            cfg: &self.cfg,
            created: Vec::new(),
            destroyed: Vec::new(),
            store_flow: &self.store_flow,
            sync: false,
        };
        for id in &ids {
            let Some(peer) = self.peers.get_mut(id) else {
                continue;
            };
            if let Some(rd) = peer.collect_ready(&mut ctx, &mut wb)? {
                readies.push((*id, rd));
            }
        }
        drop_absorbed_sources(&mut self.peers, &readies, &mut wb, &mut ctx.destroyed);
        // (Only with a snapshot in the batch, which syncs anyway.)
        ctx.sync |= !ctx.destroyed.is_empty();
        if !readies.is_empty() {
            metrics::READY_ROUNDS.inc();
            if !wb.is_empty() {
                metrics::ROUND_WRITES
                    .with_label_values(&[if ctx.sync { "true" } else { "false" }])
                    .inc();
                ctx.engine.write(wb, ctx.sync)?;
            }
            drop_destroyed(&mut self.peers, &self.local, &mut ctx.destroyed);
            for (id, rd) in readies {
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.finish_ready(&mut ctx, rd)?;
                }
                // Advancing may leave more work (e.g. entries committed by
                // the LightReady): look again next round.
                self.active.insert(id);
                // A merged-away source must not write again, even later in
                // this round: its local state is gone.
                drop_destroyed(&mut self.peers, &self.local, &mut ctx.destroyed);
            }
        }
        for id in &ids {
            if let Some(peer) = self.peers.get_mut(id) {
                if peer.has_pending_apply() {
                    peer.resume_apply(&mut ctx)?;
                    drop_destroyed(&mut self.peers, &self.local, &mut ctx.destroyed);
                }
            }
        }
        let created = std::mem::take(&mut ctx.created);
        let now = Instant::now();
        for id in &ids {
            let Some(p) = self.peers.get_mut(id) else {
                continue;
            };
            // After the round's write, before its messages leave.
            match p.local_read_update(&self.cfg.load_split) {
                Some(Some(d)) => self.local.publish(*id, d),
                Some(None) => self.local.revoke(*id),
                None => {}
            }
            if p.heartbeat_due {
                p.heartbeat_due = false;
                p.next_heartbeat = now + self.cfg.region_heartbeat;
                if let Some(tx) = &self.pd_tx {
                    let _ = tx.send(PdTask::RegionHeartbeat(p.region_heartbeat()));
                }
            }
        }
        for d in self.transport.flush() {
            if let Some(p) = self.peers.get_mut(&d.region_id) {
                p.on_delivery(&d);
                self.active.insert(d.region_id);
            }
        }
        self.held_wake = None;
        let now = Instant::now();
        for id in &ids {
            let Some(p) = self.peers.get(id) else {
                continue;
            };
            if let Some(due) = p.proposals_due_at() {
                // Held, or free to go now that this round committed the
                // append they waited for: either way, another round.
                let at = if p.holds_proposals(now) { due } else { now };
                self.held_wake = Some(self.held_wake.map_or(at, |w| w.min(at)));
                self.active.insert(*id);
            }
        }
        if !created.is_empty() {
            self.register_split_peers(created)?;
            // Send the new leaders' campaign messages now, not next tick.
            self.round(false)?;
        }
        Ok(())
    }

    /// Starts the peers of regions that splits created this round.
    fn register_split_peers(&mut self, created: Vec<SplitPeer>) -> Result<(), crate::Error> {
        for sp in created {
            let region_id = sp.storage.region().id;
            if self.peers.contains_key(&region_id) {
                continue;
            }
            let mut peer = Peer::new(sp.storage, &self.cfg, &self.logger, &self.snap)?;
            peer.size = SizeTracker::after_split(Instant::now(), sp.written);
            if sp.campaign {
                peer.campaign_now(self.cfg.election_ticks);
            }
            tracing::info!(
                region_id,
                peer_id = peer.peer_id(),
                campaign = sp.campaign,
                "started peer of a split region"
            );
            self.peers.insert(region_id, peer);
            self.active.insert(region_id);
            metrics::REGION_COUNT.inc();
            for m in self.early_votes.take(region_id) {
                metrics::EARLY_VOTES_REPLAYED.inc();
                self.on_raft_message(m)?;
            }
        }
        Ok(())
    }
}

/// Whether `msg` asks for a (pre-)vote.
fn is_vote(msg: &Message) -> bool {
    use raft::prelude::MessageType::{MsgRequestPreVote, MsgRequestVote};
    matches!(msg.get_msg_type(), MsgRequestPreVote | MsgRequestVote)
}

/// Most regions with early votes kept at once, and votes kept per region:
/// enough for a few splits at a time; a forger cannot grow it.
const EARLY_VOTE_REGIONS: usize = 64;
const EARLY_VOTES_PER_REGION: usize = 4;

/// Vote requests for a region that a local region's split (committed, not
/// applied here yet) is about to create. The leader's new peer campaigns as
/// soon as it applies the split and its request travels with the commit, so
/// it used to be dropped here and the region waited a re-campaign tick
/// (100 ms) without a leader, every write to it retrying. TiKV keeps them
/// too (`pending_votes`). Kept at most an election timeout; stale votes are
/// harmless anyway (raft judges a vote by term and log).
#[derive(Default)]
struct EarlyVotes {
    by_region: HashMap<u64, Vec<(Instant, RaftMessage)>>,
}

impl EarlyVotes {
    fn keep(&mut self, m: RaftMessage, ttl: std::time::Duration) {
        let now = Instant::now();
        self.by_region.retain(|_, v| {
            v.retain(|(t, _)| now.duration_since(*t) < ttl);
            !v.is_empty()
        });
        if !self.by_region.contains_key(&m.region_id) && self.by_region.len() >= EARLY_VOTE_REGIONS
        {
            return;
        }
        let v = self.by_region.entry(m.region_id).or_default();
        if v.len() < EARLY_VOTES_PER_REGION {
            v.push((now, m));
        }
    }

    fn take(&mut self, region_id: u64) -> Vec<RaftMessage> {
        self.by_region
            .remove(&region_id)
            .map(|v| v.into_iter().map(|(_, m)| m).collect())
            .unwrap_or_default()
    }
}

/// Spawns the raftstore thread.
pub fn spawn(poller: Poller) -> std::io::Result<std::thread::JoinHandle<Result<(), crate::Error>>> {
    std::thread::Builder::new()
        .name("raftstore".into())
        .spawn(move || poller.run())
}

/// A target that caught up by snapshot past its CommitMerge never
/// applies that entry, so it cannot destroy the local source itself:
/// local sources frozen to merge into a region whose snapshot is in
/// this round's batch are deleted in the same batch.
fn drop_absorbed_sources(
    peers: &mut HashMap<u64, Peer>,
    readies: &[(u64, raft::Ready)],
    wb: &mut crate::engine::WriteBatch,
    destroyed: &mut Vec<u64>,
) {
    for (id, _) in readies {
        let Some(target) = peers.get_mut(id) else {
            continue;
        };
        if !std::mem::take(&mut target.snapshot_applied) {
            continue;
        }
        let region = target.region().clone();
        for p in peers.values() {
            if p.region_id() != region.id
                && p.merge_target_id() == Some(region.id)
                && ranges_overlap(p.region(), &region)
            {
                tracing::info!(
                    region_id = p.region_id(),
                    target_id = region.id,
                    "merge source absorbed by the target's snapshot"
                );
                PeerStorage::destroy(p.region_id(), wb);
                destroyed.push(p.region_id());
            }
        }
    }
}

/// Drops the peers of regions a merge destroyed (state already deleted).
fn drop_destroyed(peers: &mut HashMap<u64, Peer>, local: &LocalReaders, destroyed: &mut Vec<u64>) {
    for id in destroyed.drain(..) {
        local.revoke(id);
        if let Some(mut p) = peers.remove(&id) {
            p.on_stop();
            metrics::REGION_COUNT.dec();
            tracing::info!(region_id = id, "merged-away region peer destroyed");
        }
    }
}

fn conf_ver(r: &Region) -> u64 {
    r.epoch.map_or(0, |e| e.conf_ver)
}

/// Whether two regions' ranges overlap (empty end = +inf).
fn ranges_overlap(a: &Region, b: &Region) -> bool {
    (a.end_key.is_empty() || b.start_key < a.end_key)
        && (b.end_key.is_empty() || a.start_key < b.end_key)
}
