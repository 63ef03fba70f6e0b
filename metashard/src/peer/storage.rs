//! `raft::Storage` of one region peer, persisted in the store's RocksDB.
//!
//! The in-memory copies (hard state, conf state, last index, apply state) are
//! the truth for raft; every mutator also puts the change into the caller's
//! [`WriteBatch`], and the poller writes that batch (synced) before anything
//! that depends on it leaves the store. Nothing reads the log between a
//! mutator call and that write, because both happen inside one poll round.

use kura_proto::common::Region;
use protobuf::Message as PbMessage;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use std::sync::Arc;

use super::entry_cache::EntryCache;
use super::state::{ApplyState, MergeState, RaftLocalState, RegionLocalState, SnapshotApplyState};
use crate::engine::{Engine, EngineError, WriteBatch};
use crate::keys::local;
use crate::snap::{self, SnapManager};

/// TiKV's RAFT_INIT_LOG_INDEX: founding members start with an implicit
/// snapshot at this index, so a peer created later (empty log) always needs a
/// real snapshot first and every replica starts from the same state.
pub const INIT_LOG_INDEX: u64 = 5;
pub const INIT_LOG_TERM: u64 = 5;

pub struct PeerStorage {
    engine: Engine,
    region: Region,
    peer_id: u64,
    hard_state: HardState,
    conf_state: ConfState,
    last_index: u64,
    last_term: u64,
    apply: ApplyState,
    merge_state: Option<MergeState>,
    /// Generates snapshots for raft (`None`: this peer cannot serve any).
    snap: Option<Arc<SnapManager>>,
    /// A snapshot whose raft state is persisted while the snapshot worker
    /// still writes its data: the peer serves nothing from its data and
    /// applies no entry until it is done (decision 0018).
    applying: Option<SnapshotApplyState>,
    /// The unapplied tail of the log, so raft rarely reads it from disk.
    cache: EntryCache,
}

fn storage_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

fn decode_pb<M: PbMessage>(b: &[u8], what: &str) -> Result<M, EngineError> {
    M::parse_from_bytes(b).map_err(|e| EngineError::CorruptRaft {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn encode_pb<M: PbMessage>(m: &M) -> bytes::Bytes {
    m.write_to_bytes()
        .expect("encoding a raft message into memory cannot fail")
        .into()
}

impl PeerStorage {
    /// A new peer of `region`. `initial`: a founding member whose ConfState is
    /// the region's voters (raft-rs's static-cluster bootstrap); otherwise an
    /// empty peer that waits for a snapshot from the leader.
    pub fn create(
        engine: Engine,
        region: Region,
        peer_id: u64,
        initial: bool,
        wb: &mut WriteBatch,
    ) -> Self {
        let mut s = PeerStorage {
            engine,
            region,
            peer_id,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            last_index: 0,
            last_term: 0,
            apply: ApplyState::default(),
            merge_state: None,
            snap: None,
            applying: None,
            cache: EntryCache::default(),
        };
        if initial {
            for p in &s.region.peers {
                if p.is_learner {
                    s.conf_state.learners.push(p.id);
                } else {
                    s.conf_state.voters.push(p.id);
                }
            }
            s.hard_state.term = INIT_LOG_TERM;
            s.hard_state.commit = INIT_LOG_INDEX;
            s.last_index = INIT_LOG_INDEX;
            s.last_term = INIT_LOG_TERM;
            s.apply = ApplyState {
                applied_index: INIT_LOG_INDEX,
                truncated_index: INIT_LOG_INDEX,
                truncated_term: INIT_LOG_TERM,
            };
        }
        s.persist_region(wb);
        s.persist_raft_state(wb);
        s.persist_apply_state(wb);
        s
    }

    /// Loads the peer of `region_id` from disk; `None` if it has no region state.
    pub fn load(engine: Engine, region_id: u64) -> Result<Option<Self>, EngineError> {
        let Some(rs) =
            engine.get_raft_msg::<RegionLocalState>(&local::region_state_key(region_id))?
        else {
            return Ok(None);
        };
        let raft: RaftLocalState = engine
            .get_raft_msg(&local::raft_state_key(region_id))?
            .unwrap_or_default();
        let apply: ApplyState = engine
            .get_raft_msg(&local::apply_state_key(region_id))?
            .unwrap_or_default();
        let mut hard_state: HardState = decode_pb(&raft.hard_state, "hard state")?;
        // Applied entries were committed, so this is truthful, and raft-rs
        // refuses to start with applied > commit (the commit index is persisted lazily).
        hard_state.commit = hard_state.commit.max(apply.applied_index);
        let conf_state: ConfState = decode_pb(&raft.conf_state, "conf state")?;
        let applying = engine.get_raft_msg(&local::snapshot_apply_key(region_id))?;
        Ok(Some(PeerStorage {
            engine,
            region: rs.region.unwrap_or_default(),
            peer_id: rs.peer_id,
            hard_state,
            conf_state,
            last_index: raft.last_index,
            last_term: raft.last_term,
            apply,
            merge_state: rs.merge_state,
            snap: None,
            applying,
            cache: EntryCache::default(),
        }))
    }

    /// Lets raft get snapshots of this peer from `snap`.
    pub fn set_snap_manager(&mut self, snap: Arc<SnapManager>) {
        self.snap = Some(snap);
    }

    /// The snapshot whose data is still being written, if any.
    pub fn applying_snapshot(&self) -> Option<&SnapshotApplyState> {
        self.applying.as_ref()
    }

    /// The worker wrote the data of the snapshot at `index` (and deleted
    /// the marker); false if that is not the one this peer waits for.
    pub fn finish_snapshot_apply(&mut self, index: u64) -> bool {
        let current = self
            .applying
            .as_ref()
            .and_then(|a| a.descriptor.as_ref())
            .is_some_and(|d| d.index == index);
        if current {
            self.applying = None;
        }
        current
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    pub fn peer_id(&self) -> u64 {
        self.peer_id
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// True once the peer has a ConfState (founding member or snapshot applied).
    pub fn is_initialized(&self) -> bool {
        !self.conf_state.voters.is_empty() || !self.conf_state.learners.is_empty()
    }

    pub fn applied_index(&self) -> u64 {
        self.apply.applied_index
    }

    pub fn truncated_index(&self) -> u64 {
        self.apply.truncated_index
    }

    pub fn first_log_index(&self) -> u64 {
        self.apply.truncated_index + 1
    }

    pub fn last_log_index(&self) -> u64 {
        self.last_index
    }

    pub fn commit_index(&self) -> u64 {
        self.hard_state.commit
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    fn region_id(&self) -> u64 {
        self.region.id
    }

    /// The PrepareMerge this region is frozen by, if any.
    pub fn merge_state(&self) -> Option<&MergeState> {
        self.merge_state.as_ref()
    }

    /// Region metadata and merge state change together (one record).
    pub fn set_region_and_merge_state(
        &mut self,
        region: Region,
        merge_state: Option<MergeState>,
        wb: &mut WriteBatch,
    ) {
        self.region = region;
        self.merge_state = merge_state;
        self.persist_region(wb);
    }

    /// Deletes every local record of `region_id`'s peer (region, raft and
    /// apply state, the whole log), not its data: a merged-away source's
    /// keys now belong to the target.
    pub fn destroy(region_id: u64, wb: &mut WriteBatch) {
        wb.delete_raft(&local::region_state_key(region_id));
        wb.delete_raft(&local::raft_state_key(region_id));
        wb.delete_raft(&local::apply_state_key(region_id));
        wb.delete_raft(&local::snapshot_apply_key(region_id));
        let (s, e) = local::raft_log_range(region_id, 0, u64::MAX);
        wb.delete_raft_range(&s, &e);
    }

    fn persist_region(&self, wb: &mut WriteBatch) {
        let rs = RegionLocalState {
            region: Some(self.region.clone()),
            peer_id: self.peer_id,
            merge_state: self.merge_state.clone(),
        };
        wb.put_raft_msg(&local::region_state_key(self.region_id()), &rs);
    }

    fn persist_raft_state(&self, wb: &mut WriteBatch) {
        let rs = RaftLocalState {
            hard_state: encode_pb(&self.hard_state),
            conf_state: encode_pb(&self.conf_state),
            last_index: self.last_index,
            last_term: self.last_term,
        };
        wb.put_raft_msg(&local::raft_state_key(self.region_id()), &rs);
    }

    fn persist_apply_state(&self, wb: &mut WriteBatch) {
        wb.put_raft_msg(&local::apply_state_key(self.region_id()), &self.apply);
    }

    /// One Ready's log changes: appends `entries` (replacing any
    /// conflicting suffix) and takes its new hard state, with at most one
    /// raft state write. A hard state that only moved the commit index is
    /// not written by itself: the commit index need not be durable (a
    /// restart takes at least the applied index, and the leader re-sends
    /// the rest), and with many regions that write per round adds up.
    /// Returns whether anything raft needs durable was put into `wb`.
    pub fn append_ready(
        &mut self,
        entries: &[Entry],
        hs: Option<&HardState>,
        wb: &mut WriteBatch,
    ) -> bool {
        let mut persist = self.append_entries(entries, wb);
        if let Some(hs) = hs {
            persist |= hs.term != self.hard_state.term || hs.vote != self.hard_state.vote;
            self.hard_state = hs.clone();
        }
        if persist {
            self.persist_raft_state(wb);
        }
        persist
    }

    /// Appends `entries`, replacing any conflicting suffix of the log;
    /// true if anything changed (the raft state must then be written).
    fn append_entries(&mut self, entries: &[Entry], wb: &mut WriteBatch) -> bool {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return false;
        };
        for e in entries {
            wb.put_raft(
                &local::raft_log_key(self.region_id(), e.index),
                &encode_pb(e),
            );
        }
        if last.index < self.last_index {
            let (s, e) =
                local::raft_log_range(self.region_id(), last.index + 1, self.last_index + 1);
            wb.delete_raft_range(&s, &e);
        }
        debug_assert!(
            first.index <= self.last_index + 1,
            "raft appends without gaps"
        );
        self.last_index = last.index;
        self.last_term = last.term;
        self.cache.append(entries);
        true
    }

    /// Raft advanced the commit index without a new HardState in a Ready
    /// (LightReady); kept in memory and persisted with the next state write.
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = self.hard_state.commit.max(commit);
    }

    pub fn set_conf_state(&mut self, cs: ConfState, wb: &mut WriteBatch) {
        self.conf_state = cs;
        self.persist_raft_state(wb);
    }

    pub fn set_region(&mut self, region: Region, wb: &mut WriteBatch) {
        self.region = region;
        self.persist_region(wb);
    }

    /// Records `index` as applied (in `wb`, which carries that entry's writes).
    pub fn set_applied(&mut self, index: u64, wb: &mut WriteBatch) {
        self.apply.applied_index = index;
        self.persist_apply_state(wb);
        // Raft still asks for the applied entry's term.
        self.cache.trim_before(index);
    }

    /// Deletes log entries up to and including `index` (must be ≤ applied).
    pub fn compact_to(&mut self, index: u64, wb: &mut WriteBatch) -> raft::Result<()> {
        if index <= self.apply.truncated_index || index > self.apply.applied_index {
            return Ok(());
        }
        let term = raft::Storage::term(self, index)?;
        let (s, e) = local::raft_log_range(self.region_id(), self.first_log_index(), index + 1);
        wb.delete_raft_range(&s, &e);
        self.apply.truncated_index = index;
        self.apply.truncated_term = term;
        self.cache.trim_before(index + 1);
        self.persist_apply_state(wb);
        Ok(())
    }

    /// Replaces this peer's log and state with `snap`'s (in `wb`), with a
    /// marker naming the received file; the data is written afterwards by
    /// the snapshot worker ([`SnapManager::schedule_apply`] with the
    /// returned state, once `wb` is durable). Returns the snapshot's region.
    pub fn apply_snapshot(
        &mut self,
        snap: &Snapshot,
        wb: &mut WriteBatch,
    ) -> Result<(Region, SnapshotApplyState), EngineError> {
        fail::fail_point!("metashard::snapshot_apply");
        let desc = snap::descriptor_of(snap).map_err(|e| EngineError::CorruptRaft {
            what: "snapshot descriptor".into(),
            reason: e.to_string(),
        })?;
        let region = desc.region.clone().unwrap_or_default();
        let meta = snap.get_metadata();
        let state = SnapshotApplyState {
            descriptor: Some(desc),
            old_region: self.is_initialized().then(|| self.region.clone()),
        };
        wb.put_raft_msg(&local::snapshot_apply_key(self.region_id()), &state);
        if self.last_index >= self.first_log_index() {
            let (s, e) = local::raft_log_range(
                self.region_id(),
                self.first_log_index(),
                self.last_index + 1,
            );
            wb.delete_raft_range(&s, &e);
        }
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = meta.index;
        self.conf_state = meta.get_conf_state().clone();
        self.last_index = meta.index;
        self.last_term = meta.term;
        self.apply = ApplyState {
            applied_index: meta.index,
            truncated_index: meta.index,
            truncated_term: meta.term,
        };
        self.region = region.clone();
        self.applying = Some(state.clone());
        self.cache.clear();
        self.persist_region(wb);
        self.persist_raft_state(wb);
        self.persist_apply_state(wb);
        Ok((region, state))
    }

    fn read_entries(&self, low: u64, high: u64, max_size: Option<u64>) -> raft::Result<Vec<Entry>> {
        let (s, e) = local::raft_log_range(self.region_id(), low, high);
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        let mut err = None;
        self.engine
            .scan_raft(&s, &e, |_, v| match Entry::parse_from_bytes(v) {
                Ok(ent) => {
                    size += v.len() as u64;
                    let over = max_size.is_some_and(|m| size > m) && !out.is_empty();
                    if over {
                        return false;
                    }
                    out.push(ent);
                    true
                }
                Err(e) => {
                    err = Some(storage_err(e));
                    false
                }
            })
            .map_err(storage_err)?;
        if let Some(e) = err {
            return Err(e);
        }
        let complete = out.len() as u64 == high - low;
        let contiguous = out
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == low + i as u64);
        if !contiguous || (!complete && max_size.is_none()) {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }
}

impl raft::Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.apply.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let max = max_size.into().filter(|m| *m != raft::NO_LIMIT);
        if let Some(cached) = self.cache.get(low, high, max) {
            return Ok(cached);
        }
        self.read_entries(low, high, max)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.apply.truncated_index {
            return Ok(self.apply.truncated_term);
        }
        if idx < self.apply.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx == self.last_index {
            return Ok(self.last_term);
        }
        if let Some(term) = self.cache.term(idx) {
            return Ok(term);
        }
        let v = self
            .engine
            .get_raft(&local::raft_log_key(self.region_id(), idx))
            .map_err(storage_err)?
            .ok_or(raft::Error::Store(StorageError::Unavailable))?;
        Ok(Entry::parse_from_bytes(&v).map_err(storage_err)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_log_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    /// Never builds the snapshot here (the raftstore thread): the snapshot
    /// worker does, and raft asks again (decision 0018).
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let (Some(snap), None) = (&self.snap, &self.applying) else {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        };
        if self.apply.applied_index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        snap.snapshot(self.region_id(), request_index, self.apply.truncated_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_proto::common::Peer as PeerMeta;
    use raft::Storage;

    fn region() -> Region {
        Region {
            id: 3,
            peers: vec![PeerMeta {
                id: 7,
                store_id: 1,
                is_learner: false,
            }],
            ..Default::default()
        }
    }

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8].into(),
            ..Default::default()
        }
    }

    fn ctx() -> GetEntriesContext {
        GetEntriesContext::empty(false)
    }

    #[test]
    fn a_commit_only_hard_state_is_not_written_alone() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        let mut wb = e.batch();
        let mut s = PeerStorage::create(e.clone(), region(), 7, true, &mut wb);
        let hs = |term, vote, commit| HardState {
            term,
            vote,
            commit,
            ..Default::default()
        };
        let reloaded = || {
            let back = PeerStorage::load(e.clone(), 3).unwrap().unwrap();
            let h = back.initial_state().unwrap().hard_state;
            (h.term, h.vote, h.commit)
        };
        s.append_ready(&[ent(6, 5), ent(7, 5)], Some(&hs(5, 0, 6)), &mut wb);
        e.write(wb, true).unwrap();
        assert_eq!(reloaded(), (5, 0, 6), "written with the entries");
        let mut wb = e.batch();
        s.append_ready(&[], Some(&hs(5, 0, 7)), &mut wb);
        assert!(wb.is_empty(), "a commit index alone is not written");
        assert_eq!(s.commit_index(), 7);
        let mut wb = e.batch();
        s.set_applied(7, &mut wb);
        e.write(wb, true).unwrap();
        assert_eq!(
            reloaded(),
            (5, 0, 7),
            "a restart takes at least the applied index"
        );
        let mut wb = e.batch();
        s.append_ready(&[], Some(&hs(6, 2, 7)), &mut wb);
        e.write(wb, true).unwrap();
        assert_eq!(reloaded(), (6, 2, 7), "a vote is written at once");
    }

    #[test]
    fn log_append_overwrite_compact_reload() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        let mut wb = e.batch();
        let mut s = PeerStorage::create(e.clone(), region(), 7, false, &mut wb);
        assert!(!s.is_initialized());
        s.append_ready(
            &(1..=5).map(|i| ent(i, 1)).collect::<Vec<_>>(),
            None,
            &mut wb,
        );
        e.write(wb, true).unwrap();
        assert_eq!(s.entries(1, 6, None, ctx()).unwrap().len(), 5);
        assert_eq!(s.entries(1, 6, Some(1), ctx()).unwrap().len(), 1);
        // A new leader overwrites the tail.
        let mut wb = e.batch();
        s.append_ready(&[ent(4, 2)], None, &mut wb);
        e.write(wb, true).unwrap();
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(s.term(4).unwrap(), 2);
        assert_eq!(s.term(3).unwrap(), 1);
        assert!(s.entries(1, 6, None, ctx()).is_err());
        // The entry cache answers exactly as the disk does.
        let disk = PeerStorage::load(e.clone(), 3).unwrap().unwrap();
        assert_eq!(
            s.entries(1, 5, None, ctx()).unwrap(),
            disk.entries(1, 5, None, ctx()).unwrap()
        );
        assert_eq!(s.term(3).unwrap(), disk.term(3).unwrap());
        let mut wb = e.batch();
        s.set_applied(4, &mut wb);
        s.compact_to(3, &mut wb).unwrap();
        e.write(wb, true).unwrap();
        assert_eq!(s.first_index().unwrap(), 4);
        assert_eq!(s.term(3).unwrap(), 1);
        assert!(matches!(
            s.entries(2, 4, None, ctx()),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let back = PeerStorage::load(e.clone(), 3).unwrap().unwrap();
        assert_eq!(
            (
                back.first_log_index(),
                back.last_log_index(),
                back.applied_index()
            ),
            (4, 4, 4)
        );
        assert_eq!(back.entries(4, 5, None, ctx()).unwrap()[0].term, 2);
        assert_eq!(
            back.initial_state().unwrap().hard_state.commit,
            4,
            "commit is at least applied"
        );
    }
}
