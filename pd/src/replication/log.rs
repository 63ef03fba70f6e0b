//! The Raft log of one PD member, in its own RocksDB under `<data_dir>/raft`.
//!
//! raft-rs reads the log from an in-memory `MemStorage` copy; every change is
//! first written to RocksDB (synced), so nothing raft treats as persisted is
//! lost by kill -9. Every entry carries a whole PD state, so a snapshot is
//! just the state at the applied index: the log is compacted to it every
//! [`COMPACT_EVERY`] applied entries and a lagging member gets that state.

use std::path::Path;

use protobuf::Message as PbMessage;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

/// Applied entries between two compactions.
pub const COMPACT_EVERY: u64 = 64;

const HARD_STATE: &[u8] = b"hs";
const SNAPSHOT: &[u8] = b"snap";
const ENTRY_PREFIX: u8 = b'e';

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("raft log {op}: {reason}")]
    Db { op: &'static str, reason: String },
    #[error("raft log holds a corrupt {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

fn db_err(op: &'static str) -> impl Fn(rocksdb::Error) -> LogError {
    move |e| LogError::Db {
        op,
        reason: e.to_string(),
    }
}

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn encode<M: PbMessage>(m: &M) -> Vec<u8> {
    m.write_to_bytes()
        .expect("encoding a raft message into memory cannot fail")
}

fn decode<M: PbMessage>(b: &[u8], what: &'static str) -> Result<M, LogError> {
    M::parse_from_bytes(b).map_err(|e| LogError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

/// What a restarted member had applied.
pub struct Restored {
    /// The highest index known committed (and so applied, once replayed).
    pub applied: u64,
    /// The PD state at `applied` (None: nothing was ever committed).
    pub state: Option<Vec<u8>>,
}

pub struct RaftLog {
    db: DB,
    mem: raft::storage::MemStorage,
    /// The last compaction's snapshot, with its state as data (index 0: none).
    snapshot: Snapshot,
}

impl RaftLog {
    /// Opens (or creates) the log under `dir`. A new log's membership is
    /// `voters` (static: the `--peers` list).
    pub fn open(dir: &Path, voters: &[u64]) -> Result<(Self, Restored), LogError> {
        let db = DB::open_default(dir).map_err(db_err("open"))?;
        let mem = raft::storage::MemStorage::new();
        let mut snapshot = Snapshot::default();
        match db.get(SNAPSHOT).map_err(db_err("read"))? {
            Some(b) => {
                snapshot = decode(&b, "snapshot")?;
                mem.wl()
                    .apply_snapshot(snapshot.clone())
                    .map_err(|e| LogError::Corrupt {
                        what: "snapshot",
                        reason: e.to_string(),
                    })?;
            }
            None => mem
                .wl()
                .set_conf_state(ConfState::from((voters.to_vec(), vec![]))),
        }
        let snap_index = snapshot.get_metadata().index;
        let mut entries = Vec::new();
        let iter = db.iterator(IteratorMode::From(&entry_key(0), Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(db_err("read"))?;
            if k.first() != Some(&ENTRY_PREFIX) {
                break;
            }
            let e: Entry = decode(&v, "entry")?;
            if e.index > snap_index {
                entries.push(e);
            }
        }
        mem.wl().append(&entries).map_err(|e| LogError::Corrupt {
            what: "entry sequence",
            reason: e.to_string(),
        })?;
        if let Some(b) = db.get(HARD_STATE).map_err(db_err("read"))? {
            let mut hs: HardState = decode(&b, "hard state")?;
            let last = mem.last_index().unwrap_or(snap_index);
            hs.commit = hs.commit.clamp(snap_index, last);
            mem.wl().set_hardstate(hs);
        }
        let applied = mem.rl().hard_state().commit;
        let state = entries
            .iter()
            .rev()
            .filter(|e| e.index <= applied && !e.data.is_empty())
            .map(|e| e.data.to_vec())
            .next()
            .or_else(|| (snap_index > 0).then(|| snapshot.data.to_vec()));
        Ok((RaftLog { db, mem, snapshot }, Restored { applied, state }))
    }

    fn write(&self, wb: WriteBatch) -> Result<(), LogError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(wb, &opts).map_err(db_err("write"))
    }

    /// Makes one Ready's snapshot, entries and hard state durable, then
    /// visible to raft.
    pub fn persist(
        &mut self,
        snapshot: &Snapshot,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<(), LogError> {
        let mut wb = WriteBatch::default();
        if snapshot.get_metadata().index > 0 {
            wb.put(SNAPSHOT, encode(snapshot));
            wb.delete_range(entry_key(0), entry_key(u64::MAX));
        }
        if let Some(last) = entries.last() {
            for e in entries {
                wb.put(entry_key(e.index), encode(e));
            }
            // A new leader's entries replace any longer conflicting tail.
            wb.delete_range(entry_key(last.index + 1), entry_key(u64::MAX));
        }
        if let Some(hs) = hs {
            wb.put(HARD_STATE, encode(hs));
        }
        self.write(wb)?;
        let mut core = self.mem.wl();
        let raft_err = |e: raft::Error| LogError::Corrupt {
            what: "raft state",
            reason: e.to_string(),
        };
        if snapshot.get_metadata().index > 0 {
            core.apply_snapshot(snapshot.clone()).map_err(raft_err)?;
            self.snapshot = snapshot.clone();
        }
        core.append(entries).map_err(raft_err)?;
        if let Some(hs) = hs {
            core.set_hardstate(hs.clone());
        }
        Ok(())
    }

    /// Records a newer commit index (not synced: a lost one is re-learnt
    /// from the leader).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), LogError> {
        let hs = {
            let mut core = self.mem.wl();
            core.mut_hard_state().commit = commit;
            core.hard_state().clone()
        };
        self.db
            .put(HARD_STATE, encode(&hs))
            .map_err(db_err("write"))
    }

    /// Drops the log before `applied`, keeping `state` (the state at
    /// `applied`) as the snapshot a lagging member is sent.
    pub fn compact(&mut self, applied: u64, state: &[u8]) -> Result<(), LogError> {
        let term = self.mem.term(applied).map_err(|e| LogError::Corrupt {
            what: "term of the applied index",
            reason: e.to_string(),
        })?;
        let mut snap = Snapshot {
            data: state.to_vec().into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = applied;
        meta.term = term;
        meta.set_conf_state(
            self.mem
                .initial_state()
                .map(|s| s.conf_state)
                .unwrap_or_default(),
        );
        let mut wb = WriteBatch::default();
        wb.put(SNAPSHOT, encode(&snap));
        wb.delete_range(entry_key(0), entry_key(applied));
        self.write(wb)?;
        self.snapshot = snap;
        self.mem
            .wl()
            .compact(applied)
            .map_err(|e| LogError::Corrupt {
                what: "compaction",
                reason: e.to_string(),
            })
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }
}

impl Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index == 0 {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry {
            index,
            term,
            data: data.as_bytes().to_vec().into(),
            ..Default::default()
        }
    }

    fn hard_state(term: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote: 1,
            commit,
            ..Default::default()
        }
    }

    #[test]
    fn a_reopened_log_has_the_last_committed_state_and_not_an_uncommitted_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, restored) = RaftLog::open(dir.path(), &[1, 2, 3]).unwrap();
            assert_eq!((restored.applied, restored.state), (0, None));
            let entries = [entry(1, 1, ""), entry(2, 1, "s2"), entry(3, 1, "s3")];
            log.persist(&Snapshot::default(), &entries, Some(&hard_state(1, 2)))
                .unwrap();
        }
        let (log, restored) = RaftLog::open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(restored.applied, 2);
        assert_eq!(
            restored.state.as_deref(),
            Some(&b"s2"[..]),
            "3 is not committed"
        );
        assert_eq!(log.last_index().unwrap(), 3);
        assert_eq!(
            log.initial_state().unwrap().conf_state.voters,
            vec![1, 2, 3]
        );
    }

    #[test]
    fn a_new_leaders_entries_replace_a_conflicting_tail_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = RaftLog::open(dir.path(), &[1, 2, 3]).unwrap();
            let old = [entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")];
            log.persist(&Snapshot::default(), &old, Some(&hard_state(1, 1)))
                .unwrap();
            log.persist(
                &Snapshot::default(),
                &[entry(2, 2, "B")],
                Some(&hard_state(2, 2)),
            )
            .unwrap();
        }
        let (log, restored) = RaftLog::open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(log.last_index().unwrap(), 2);
        assert_eq!(log.term(2).unwrap(), 2);
        assert_eq!(restored.state.as_deref(), Some(&b"B"[..]));
    }

    #[test]
    fn compaction_keeps_the_state_as_the_snapshot_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = RaftLog::open(dir.path(), &[1, 2, 3]).unwrap();
            let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1, &format!("s{i}"))).collect();
            log.persist(&Snapshot::default(), &entries, Some(&hard_state(1, 8)))
                .unwrap();
            log.compact(8, b"s8").unwrap();
            assert_eq!(log.first_index().unwrap(), 8);
            let snap = log.snapshot(0, 2).unwrap();
            assert_eq!(snap.get_metadata().index, 8);
            assert_eq!(&snap.data[..], b"s8");
        }
        let (log, restored) = RaftLog::open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(restored.applied, 8);
        assert_eq!(restored.state.as_deref(), Some(&b"s8"[..]));
        assert_eq!(log.snapshot_index(), 8);
        assert_eq!(log.last_index().unwrap(), 10);
        assert_eq!(
            log.entries(9, 11, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_snapshot_from_the_leader_replaces_the_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = RaftLog::open(dir.path(), &[1, 2, 3]).unwrap();
            log.persist(
                &Snapshot::default(),
                &[entry(1, 1, "old")],
                Some(&hard_state(1, 1)),
            )
            .unwrap();
            let mut snap = Snapshot {
                data: b"leader state".to_vec().into(),
                ..Default::default()
            };
            snap.mut_metadata().index = 50;
            snap.mut_metadata().term = 3;
            snap.mut_metadata()
                .set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
            log.persist(&snap, &[], Some(&hard_state(3, 50))).unwrap();
        }
        let (log, restored) = RaftLog::open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(restored.applied, 50);
        assert_eq!(restored.state.as_deref(), Some(&b"leader state"[..]));
        assert_eq!(log.first_index().unwrap(), 51);
    }
}
