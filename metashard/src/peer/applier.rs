//! Applying committed entries to the state machine, and answering the
//! proposals they carry.
//!
//! Plain data entries (batches and a new leader's no-op) are applied into a
//! write batch that is written once for many entries, many regions even:
//! [`Peer::collect_ready`](super::Peer::collect_ready) applies a Ready's
//! leading data entries into the poll round's own synced batch, and
//! [`Peer::apply_committed`] puts every run of data entries into one write.
//! Such batches come from [`Engine::apply_batch`](crate::engine::Engine::apply_batch):
//! conditions read through them ([`WriteBatch::pending_data`]), so an entry
//! sees the writes of the entries before it in the same batch.
//!
//! Answers wait in [`Peer::answers`] until the batch holding their entry is
//! written: no client hears of a write the engine does not have yet.
//!
//! Admin entries (split, merge steps) and conf changes are applied one by
//! one with their own synced write, after the data entries before them are
//! written, exactly as they would be alone.

use std::time::Instant;

use kura_proto::common::{Peer as PeerMeta, RegionError};
use kura_proto::metashard::{AdminRequest, RaftMessage};
use prost::Message as _;
use protobuf::Message as PbMessage;
use raft::prelude::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType};

use super::storage::PeerStorage;
use super::{FatalError, Peer, PeerCtx, ProposalCb, SplitPeer, MAX_SPLIT_DERIVED};
use crate::apply::cmd::{self, Command};
use crate::apply::split::SplitRegions;
use crate::apply::{self, merge, split, ApplyOutcome};
use crate::engine::WriteBatch;
use crate::errors;
use crate::fsm::{AdminResult, BatchResult, Callback, SplitResult};
use crate::keys::local;
use crate::metrics;

/// A proposal's outcome, sent once the write holding its entry is done.
pub(super) enum Answer {
    Batch(Callback<BatchResult>, BatchResult),
    Split(Callback<SplitResult>, SplitResult),
    Admin(Callback<AdminResult>, AdminResult),
}

impl Answer {
    fn send(self) {
        // A caller that stopped waiting is no error here.
        match self {
            Answer::Batch(cb, r) => {
                let _ = cb.send(r);
            }
            Answer::Split(cb, r) => {
                let _ = cb.send(r);
            }
            Answer::Admin(cb, r) => {
                let _ = cb.send(r);
            }
        }
    }
}

/// Whether a normal entry is plain data (a batch, or a no-op): applied in
/// batches. Conf changes and admin entries are not.
pub(super) fn is_data_entry(e: &Entry) -> bool {
    e.get_entry_type() == EntryType::EntryNormal && !cmd::is_admin(e.data.as_ref())
}

impl Peer {
    /// Applies the leading data entries of `entries` into `wb`, the poll
    /// round's batch (see the module doc), and returns the rest, which
    /// [`Peer::finish_ready`](super::Peer::finish_ready) applies after the
    /// round's write. Nothing is applied while entries are held back or a
    /// snapshot's data is being written.
    pub(super) fn apply_into_round(
        &mut self,
        ctx: &mut PeerCtx<'_>,
        entries: Vec<Entry>,
        wb: &mut WriteBatch,
    ) -> Result<Vec<Entry>, FatalError> {
        if !self.pending_apply.is_empty() || self.is_applying_snapshot() {
            return Ok(entries);
        }
        let n = entries.iter().take_while(|e| is_data_entry(e)).count();
        let mut entries = entries;
        let rest = entries.split_off(n);
        if let Some(last) = entries.last().map(|e| e.index) {
            for e in &entries {
                self.apply_data(ctx, e, wb)?;
            }
            self.raft.mut_store().set_applied(last, wb);
        }
        Ok(rest)
    }

    /// Applies committed entries in order, writing each run of data
    /// entries at once; stops (holding the rest back) at a CommitMerge
    /// whose local source is not ready.
    pub(super) fn apply_committed(
        &mut self,
        ctx: &mut PeerCtx<'_>,
        entries: Vec<Entry>,
    ) -> Result<(), FatalError> {
        let mut entries = entries.into_iter();
        if !self.pending_apply.is_empty() || self.is_applying_snapshot() {
            self.pending_apply.extend(entries);
            return Ok(());
        }
        let mut wb = ctx.engine.apply_batch();
        let mut last_data = None;
        while let Some(e) = entries.next() {
            if is_data_entry(&e) {
                self.apply_data(ctx, &e, &mut wb)?;
                last_data = Some(e.index);
                continue;
            }
            // What came before is written (and answered) first.
            self.write_applied(ctx, &mut wb, last_data.take())?;
            let applied = match e.get_entry_type() {
                EntryType::EntryNormal => self.apply_admin_entry(ctx, &e)?,
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(ctx, &e)?;
                    true
                }
            };
            if !applied {
                self.pending_apply.push_back(e);
                self.pending_apply.extend(entries);
                return Ok(());
            }
        }
        self.write_applied(ctx, &mut wb, last_data)
    }

    /// Writes `wb` (with `applied` as the applied index, if given) and
    /// sends the answers waiting for it.
    fn write_applied(
        &mut self,
        ctx: &mut PeerCtx<'_>,
        wb: &mut WriteBatch,
        applied: Option<u64>,
    ) -> Result<(), FatalError> {
        if let Some(index) = applied {
            self.raft.mut_store().set_applied(index, wb);
        }
        if !wb.is_empty() {
            let full = std::mem::replace(wb, ctx.engine.apply_batch());
            ctx.engine.write(full, false)?;
        }
        self.send_answers();
        Ok(())
    }

    /// Sends the answers whose entries are written now.
    pub(super) fn send_answers(&mut self) {
        if self.answers.is_empty() {
            return;
        }
        fail::fail_point!("metashard::after_apply_before_respond");
        for a in self.answers.drain(..) {
            a.send();
        }
    }

    /// Applies one data entry (a batch or a no-op) into `wb`; the caller
    /// records the applied index and writes `wb`.
    fn apply_data(
        &mut self,
        ctx: &mut PeerCtx<'_>,
        e: &Entry,
        wb: &mut WriteBatch,
    ) -> Result<(), FatalError> {
        let outcome = match cmd::decode(e.data.as_ref()) {
            // A new leader's empty entry.
            Ok(Command::Noop) => None,
            Ok(Command::Batch(req)) => {
                fail::fail_point!("metashard::before_apply");
                let timer = metrics::APPLY_DURATION.start_timer();
                let outcome = match apply::exec_batch(ctx.engine, self.region(), &req, wb)? {
                    // In flight across a split: name both halves.
                    ApplyOutcome::Rejected(e) => ApplyOutcome::Rejected(Box::new(self.enrich(*e))),
                    ApplyOutcome::Applied => {
                        let (keys, bytes) = apply::meta_puts(&req);
                        self.size.on_write(keys, bytes);
                        let (keys, bytes) = apply::write_flow(&req);
                        self.flow.add_written(keys, bytes);
                        ctx.store_flow.add_written(keys, bytes);
                        ApplyOutcome::Applied
                    }
                    o => o,
                };
                timer.observe_duration();
                Some(outcome)
            }
            // Not data (`is_data_entry` routes these elsewhere); never applied here.
            Ok(Command::Admin(_)) => Some(ApplyOutcome::Rejected(Box::new(errors::server_busy(
                "admin entry applied as data",
            )))),
            Err(err) => Some(ApplyOutcome::Rejected(Box::new(errors::server_busy(
                &format!("undecodable entry: {err}"),
            )))),
        };
        self.respond(e.index, e.term, outcome);
        Ok(())
    }

    /// Applies one admin entry with its own synced write (a split's region
    /// states must be durable before the new peer exists in memory: it may
    /// vote and ack at once). `false`: a CommitMerge whose local source is
    /// not ready, nothing written (try again later, in order).
    fn apply_admin_entry(&mut self, ctx: &mut PeerCtx<'_>, e: &Entry) -> Result<bool, FatalError> {
        let mut wb = ctx.engine.batch();
        let outcome = match cmd::decode(e.data.as_ref()) {
            Ok(Command::Admin(req)) => match self.apply_admin(ctx, &req, e.index, &mut wb)? {
                Some(outcome) => outcome,
                None => return Ok(false),
            },
            Ok(_) => ApplyOutcome::Rejected(Box::new(errors::server_busy(
                "admin entry without an admin command",
            ))),
            Err(err) => ApplyOutcome::Rejected(Box::new(errors::server_busy(&format!(
                "undecodable admin entry: {err}"
            )))),
        };
        self.raft.mut_store().set_applied(e.index, &mut wb);
        ctx.engine.write(wb, true)?;
        match &outcome {
            ApplyOutcome::Split(regions) => self.on_split_applied(ctx, regions),
            ApplyOutcome::RegionChanged(_) => self.on_merge_step_applied(ctx, &req_kind(e)),
            _ => {}
        }
        self.respond(e.index, e.term, Some(outcome));
        self.send_answers();
        Ok(true)
    }

    /// Applies an admin entry: checks it against the current region and,
    /// for a split, puts both region states and the new region's initial raft
    /// state into `wb` (written atomically with this entry's applied index).
    /// `None`: a CommitMerge that must wait for the local source.
    fn apply_admin(
        &mut self,
        ctx: &mut PeerCtx<'_>,
        req: &AdminRequest,
        index: u64,
        wb: &mut WriteBatch,
    ) -> Result<Option<ApplyOutcome>, FatalError> {
        let h = req.header.as_ref();
        let rejected = |e: RegionError| Ok(Some(ApplyOutcome::Rejected(Box::new(e))));
        if let Some(prep) = &req.prepare_merge {
            return match merge::exec_prepare(self.region(), self.merging(), h, prep, index) {
                Ok((frozen, ms)) => {
                    self.raft
                        .mut_store()
                        .set_region_and_merge_state(frozen.clone(), Some(ms), wb);
                    Ok(Some(ApplyOutcome::RegionChanged(Box::new(frozen))))
                }
                Err(e) => rejected(self.enrich(e)),
            };
        }
        if let Some(rb) = &req.rollback_merge {
            return match merge::exec_rollback(self.region(), self.merging(), h, rb) {
                Ok(region) => {
                    self.raft
                        .mut_store()
                        .set_region_and_merge_state(region.clone(), None, wb);
                    Ok(Some(ApplyOutcome::RegionChanged(Box::new(region))))
                }
                Err(e) => rejected(e),
            };
        }
        if let Some(commit) = &req.commit_merge {
            if self.merging().is_some() {
                return rejected(errors::server_busy("commit merge: the target is merging"));
            }
            let merged = match merge::exec_commit(self.region(), h, commit) {
                Ok(m) => m,
                Err(e) => return rejected(self.enrich(e)),
            };
            let source_id = commit.source.as_ref().map_or(0, |s| s.id);
            let local = PeerStorage::load(ctx.engine.clone(), source_id)?;
            let ready = merge::source_ready(
                local
                    .as_ref()
                    .map(|s| (s.region(), s.merge_state(), s.applied_index())),
                self.region_id(),
                commit,
            ) && local
                .as_ref()
                .is_none_or(|s| s.applying_snapshot().is_none());
            // (A source still writing a snapshot's data must finish first:
            // its worker would otherwise overwrite the target's later writes.)
            if !ready {
                if self.pending_apply.is_empty() {
                    tracing::warn!(
                        region_id = self.region_id(),
                        source_id,
                        "commit merge waits for the local source to apply its prepare"
                    );
                }
                return Ok(None);
            }
            fail::fail_point!("metashard::apply_commit_merge");
            PeerStorage::destroy(source_id, wb);
            ctx.destroyed.push(source_id);
            self.raft.mut_store().set_region(merged.clone(), wb);
            return Ok(Some(ApplyOutcome::RegionChanged(Box::new(merged))));
        }
        let Some(split_req) = &req.split else {
            return rejected(errors::server_busy("admin entry without a command"));
        };
        if self.merging().is_some() {
            return rejected(errors::server_busy("split: region is merging"));
        }
        let regions = match split::exec_split(self.region(), h, split_req) {
            Ok(r) => r,
            Err(e) => return rejected(self.enrich(e)),
        };
        fail::fail_point!("metashard::apply_split");
        let right = &regions.right;
        let Some(my_peer) = right.peers.iter().find(|p| p.store_id == ctx.store_id) else {
            return rejected(errors::server_busy(
                "split: the new region has no peer on this store",
            ));
        };
        // The new region's state may exist already only if this entry was
        // applied before (it cannot be: applied index and state are written
        // together) or a peer of it was created from raft messages, which the
        // poller refuses while this parent still covers the range. Never
        // overwrite a peer's state.
        if ctx
            .engine
            .get_raft(&local::region_state_key(right.id))?
            .is_some()
        {
            tracing::warn!(
                region_id = right.id,
                "split: the new region already exists on this store; keeping it"
            );
        } else {
            let storage =
                PeerStorage::create(ctx.engine.clone(), right.clone(), my_peer.id, true, wb);
            ctx.created.push(SplitPeer {
                storage,
                campaign: self.is_leader(),
                written: self.size.written(),
            });
        }
        self.raft.mut_store().set_region(regions.left.clone(), wb);
        Ok(Some(ApplyOutcome::Split(Box::new(regions))))
    }

    fn on_split_applied(&mut self, ctx: &mut PeerCtx<'_>, regions: &SplitRegions) {
        metrics::SPLITS.inc();
        self.size.on_split(Instant::now());
        self.load.lock().reset();
        self.split_derived.push(regions.right.clone());
        if self.split_derived.len() > MAX_SPLIT_DERIVED {
            self.split_derived.remove(0);
        }
        if self.is_leader() {
            self.heartbeat_due = true;
        }
        tracing::info!(
            region_id = self.region_id(),
            new_region_id = regions.right.id,
            version = regions.left.epoch.unwrap_or_default().version,
            store_id = ctx.store_id,
            "region split applied"
        );
    }

    fn on_merge_step_applied(&mut self, ctx: &mut PeerCtx<'_>, kind: &str) {
        if kind == "commit merge" {
            metrics::MERGES.inc();
            self.size.on_split(Instant::now());
            self.load.lock().reset();
        }
        if self.is_leader() {
            self.heartbeat_due = true;
        }
        tracing::info!(
            region_id = self.region_id(),
            version = self.region().epoch.unwrap_or_default().version,
            store_id = ctx.store_id,
            "{kind} applied"
        );
    }

    fn apply_conf_change(&mut self, ctx: &mut PeerCtx<'_>, e: &Entry) -> Result<(), FatalError> {
        let mut region = self.region().clone();
        let mut removed: Option<PeerMeta> = None;
        let cs = if e.get_entry_type() == EntryType::EntryConfChange {
            let mut cc = ConfChange::default();
            cc.merge_from_bytes(&e.data)
                .map_err(|err| crate::Error::Raft(raft::Error::CodecError(err)))?;
            let cs = self.raft.apply_conf_change(&cc)?;
            // The context names the peer (store) for additions.
            let peer = PeerMeta::decode(cc.context.as_ref()).unwrap_or_default();
            removed = region.peers.iter().find(|p| p.id == cc.node_id).cloned();
            region.peers.retain(|p| p.id != cc.node_id);
            match cc.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    region.peers.push(PeerMeta {
                        id: cc.node_id,
                        store_id: peer.store_id,
                        is_learner: cc.get_change_type() == ConfChangeType::AddLearnerNode,
                    });
                }
                ConfChangeType::RemoveNode => {}
            }
            if cc.get_change_type() != ConfChangeType::RemoveNode {
                removed = None;
            }
            cs
        } else {
            let mut cc = ConfChangeV2::default();
            cc.merge_from_bytes(&e.data)
                .map_err(|err| crate::Error::Raft(raft::Error::CodecError(err)))?;
            self.raft.apply_conf_change(&cc)?
        };
        let epoch = region.epoch.get_or_insert_with(Default::default);
        epoch.conf_ver += 1;
        let mut wb = ctx.engine.batch();
        if removed.as_ref().is_some_and(|p| p.id == self.peer_id()) {
            // This peer left the group: its state and its copy of the data go.
            PeerStorage::destroy(self.region_id(), &mut wb);
            wb.delete_data_range(&region.start_key, &region.end_key)?;
            ctx.engine.write(wb, true)?;
            ctx.destroyed.push(self.region_id());
            tracing::info!(
                region_id = self.region_id(),
                "this peer was removed; destroyed"
            );
            return Ok(());
        }
        let store = self.raft.mut_store();
        store.set_conf_state(cs, &mut wb);
        store.set_region(region.clone(), &mut wb);
        store.set_applied(e.index, &mut wb);
        ctx.engine.write(wb, true)?;
        if let Some(gone) = removed {
            // Tell the removed peer now: it may never see this entry commit.
            self.send_tombstone(ctx, gone.store_id, gone.id);
        }
        if self.is_leader() {
            self.heartbeat_due = true;
        }
        tracing::info!(
            region_id = self.region_id(),
            conf_ver = region.epoch.unwrap_or_default().conf_ver,
            peers = ?region.peers.iter().map(|p| (p.id, p.store_id, p.is_learner)).collect::<Vec<_>>(),
            "conf change applied"
        );
        self.respond(
            e.index,
            e.term,
            Some(ApplyOutcome::RegionChanged(Box::new(region))),
        );
        self.send_answers();
        Ok(())
    }

    /// Tells `store_id` that its peer `peer_id` is no longer a member (as
    /// of this peer's region): it destroys itself.
    pub fn send_tombstone(&self, ctx: &mut PeerCtx<'_>, store_id: u64, peer_id: u64) {
        let rm = RaftMessage {
            region_id: self.region_id(),
            from_store: ctx.store_id,
            to_store: store_id,
            region: Some(self.region().clone()),
            message: Default::default(),
            tombstone: true,
        };
        ctx.transport.send(rm, peer_id, false);
    }

    /// Queues the answer to the proposal made at `index`, if this peer made
    /// it; [`Peer::send_answers`] sends it once the entry is written.
    fn respond(&mut self, index: u64, term: u64, outcome: Option<ApplyOutcome>) {
        while let Some(p) = self.proposals.front() {
            if p.index > index {
                break;
            }
            let p = self.proposals.pop_front().expect("front checked");
            if p.index < index {
                // Skipped index (cannot happen without a snapshot): outcome
                // unknown, drop the callback.
                continue;
            }
            // Another leader's entry took this index (term differs, or no
            // outcome): ours was never applied, so the caller may safely retry.
            let ours = if p.term == term {
                outcome.as_ref()
            } else {
                None
            };
            match p.cb {
                ProposalCb::Batch(cb) => {
                    let res = match ours {
                        Some(ApplyOutcome::Applied) => Ok((true, 0)),
                        Some(ApplyOutcome::ConditionFailed(i)) => Ok((false, *i)),
                        Some(ApplyOutcome::Rejected(e)) => Err((**e).clone()),
                        Some(ApplyOutcome::Split(_))
                        | Some(ApplyOutcome::RegionChanged(_))
                        | None => Err(self.not_leader()),
                    };
                    self.answers.push(Answer::Batch(cb, res));
                }
                ProposalCb::Split(cb) => {
                    let res = match ours {
                        Some(ApplyOutcome::Split(r)) => Ok(vec![r.left.clone(), r.right.clone()]),
                        Some(ApplyOutcome::Rejected(e)) => Err((**e).clone()),
                        Some(ApplyOutcome::Applied)
                        | Some(ApplyOutcome::ConditionFailed(_))
                        | Some(ApplyOutcome::RegionChanged(_))
                        | None => Err(self.not_leader()),
                    };
                    self.answers.push(Answer::Split(cb, res));
                }
                ProposalCb::Admin(cb) => {
                    let res = match ours {
                        Some(ApplyOutcome::RegionChanged(r)) => Ok(((**r).clone(), index)),
                        Some(ApplyOutcome::Rejected(e)) => Err((**e).clone()),
                        Some(ApplyOutcome::Applied)
                        | Some(ApplyOutcome::ConditionFailed(_))
                        | Some(ApplyOutcome::Split(_))
                        | None => Err(self.not_leader()),
                    };
                    self.answers.push(Answer::Admin(cb, res));
                }
            }
        }
    }
}

/// Which merge step an applied admin entry was (for logs and metrics).
fn req_kind(e: &Entry) -> String {
    match cmd::decode(e.data.as_ref()) {
        Ok(Command::Admin(a)) if a.prepare_merge.is_some() => "prepare merge".into(),
        Ok(Command::Admin(a)) if a.commit_merge.is_some() => "commit merge".into(),
        Ok(Command::Admin(a)) if a.rollback_merge.is_some() => "rollback merge".into(),
        _ => "admin command".into(),
    }
}
