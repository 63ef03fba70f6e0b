//! The in-memory fragment index: FragmentId → where its blocks are.
//!
//! Rebuilt at every start by scanning the segments (a persisted checkpoint is a later
//! issue). Records carry a store-wide `seq` (in their footer) and the highest seq for a
//! FragmentId wins, so the outcome does not depend on which segment a record landed in
//! or on scan order: a later PUT supersedes, a later tombstone deletes.
//!
//! Live writers complicate this: a PUT takes its seq just before its footer is written
//! and enters the index only after its fsync. A delete applied in between must not be
//! undone by that PUT arriving later, so while any commit is in flight a delete leaves a
//! `Deleted{seq}` slot behind; the slots are dropped once no commit is in flight.

use std::collections::HashMap;
use std::sync::Arc;

use kura_proto::datanode::{FragmentHeader, FragmentId};

use super::format::BLOCK_HEADER_LEN;

/// Where one committed fragment lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub seq: u64,
    pub segment: u64,
    /// Offset of the record header; the record spans `record_len` bytes from here.
    pub record_offset: u64,
    pub record_len: u64,
    /// Offset of block 0's header.
    pub first_block_offset: u64,
    pub blocks: u32,
    pub length: u64,
    pub header: FragmentHeader,
}

impl Location {
    pub fn block_size(&self) -> u32 {
        self.header.block_size
    }

    /// Payload length of block `i` (every block but the last is exactly `block_size`).
    pub fn block_len(&self, i: u32) -> u32 {
        debug_assert!(i < self.blocks);
        if i + 1 < self.blocks {
            self.block_size()
        } else {
            (self.length - (self.blocks as u64 - 1) * self.block_size() as u64) as u32
        }
    }

    /// Offset of block `i`'s 8-byte header.
    pub fn block_offset(&self, i: u32) -> u64 {
        self.first_block_offset + i as u64 * (BLOCK_HEADER_LEN + self.block_size() as u64)
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Live(Arc<Location>),
    Deleted { seq: u64 },
}

#[derive(Debug, Default)]
pub struct Index {
    map: HashMap<FragmentId, Slot>,
    next_seq: u64,
    /// PUT commits holding a seq but not yet applied.
    committing: usize,
    /// Recovery keeps every tombstone until the scan ends (records arrive in any order).
    recovering: bool,
    deleted_slots: Vec<FragmentId>,
    live: usize,
    live_bytes: u64,
    /// Bytes of superseded/deleted PUT records per segment (what compaction could reclaim).
    dead_bytes: HashMap<u64, u64>,
}

impl Index {
    pub fn new() -> Self {
        Index {
            next_seq: 1,
            ..Default::default()
        }
    }

    pub fn for_recovery() -> Self {
        Index {
            recovering: true,
            ..Index::new()
        }
    }

    /// Ends recovery: drops tombstone slots, which only mattered for ordering.
    pub fn finish_recovery(&mut self) {
        self.recovering = false;
        self.map.retain(|_, s| matches!(s, Slot::Live(_)));
        self.deleted_slots.clear();
    }

    /// Records that `seq` exists on disk, so new seqs are larger.
    pub fn observe_seq(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq + 1);
    }

    pub fn get(&self, id: &FragmentId) -> Option<Arc<Location>> {
        match self.map.get(id) {
            Some(Slot::Live(loc)) => Some(loc.clone()),
            Some(Slot::Deleted { .. }) | None => None,
        }
    }

    /// A seq for a tombstone (no commit tracking: see `apply_tombstone`).
    pub fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// A seq for a PUT about to write its footer; pair with `finish_commit`/`abort_commit`.
    pub fn begin_commit(&mut self) -> u64 {
        self.committing += 1;
        self.take_seq()
    }

    /// Applies a durable PUT. Returns false when a newer record already decided this id.
    pub fn finish_commit(&mut self, loc: Arc<Location>) -> bool {
        let applied = self.apply_put(loc);
        self.end_commit();
        applied
    }

    pub fn abort_commit(&mut self) {
        self.end_commit();
    }

    fn end_commit(&mut self) {
        self.committing = self.committing.saturating_sub(1);
        if self.committing == 0 && !self.recovering {
            for id in std::mem::take(&mut self.deleted_slots) {
                if let Some(Slot::Deleted { .. }) = self.map.get(&id) {
                    self.map.remove(&id);
                }
            }
        }
    }

    /// Inserts a PUT unless a record with a higher seq decided this id.
    pub fn apply_put(&mut self, loc: Arc<Location>) -> bool {
        let id = loc.header.id.clone().unwrap_or_default();
        match self.map.get(&id) {
            Some(Slot::Live(old)) if old.seq > loc.seq => {
                self.add_dead(loc.segment, loc.record_len);
                false
            }
            Some(Slot::Deleted { seq }) if *seq > loc.seq => {
                self.add_dead(loc.segment, loc.record_len);
                false
            }
            _ => {
                self.live_bytes += loc.length;
                if let Some(Slot::Live(old)) = self.map.insert(id, Slot::Live(loc)) {
                    self.remove_live(&old);
                }
                self.live += 1;
                true
            }
        }
    }

    /// Applies a tombstone with `seq`. Returns whether a live fragment was removed.
    pub fn apply_tombstone(&mut self, id: &FragmentId, seq: u64) -> bool {
        let keep_slot = self.recovering || self.committing > 0;
        match self.map.get(id) {
            Some(Slot::Live(old)) if old.seq > seq => false,
            Some(Slot::Deleted { seq: s }) if *s >= seq => false,
            Some(Slot::Live(_)) | Some(Slot::Deleted { .. }) | None => {
                let prev = if keep_slot {
                    self.deleted_slots.push(id.clone());
                    self.map.insert(id.clone(), Slot::Deleted { seq })
                } else {
                    self.map.remove(id)
                };
                match prev {
                    Some(Slot::Live(old)) => {
                        self.remove_live(&old);
                        true
                    }
                    Some(Slot::Deleted { .. }) | None => false,
                }
            }
        }
    }

    fn remove_live(&mut self, old: &Location) {
        self.live -= 1;
        self.live_bytes -= old.length;
        self.add_dead(old.segment, old.record_len);
    }

    fn add_dead(&mut self, segment: u64, bytes: u64) {
        *self.dead_bytes.entry(segment).or_default() += bytes;
    }

    pub fn live_fragments(&self) -> usize {
        self.live
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    pub fn dead_bytes(&self, segment: u64) -> u64 {
        self.dead_bytes.get(&segment).copied().unwrap_or(0)
    }

    pub fn total_dead_bytes(&self) -> u64 {
        self.dead_bytes.values().sum()
    }

    #[cfg(test)]
    fn slots(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fid(n: u8) -> FragmentId {
        FragmentId {
            data_id: vec![n; 16].into(),
            shard: 0,
        }
    }

    fn loc(n: u8, seq: u64, segment: u64) -> Arc<Location> {
        Arc::new(Location {
            seq,
            segment,
            record_offset: 64,
            record_len: 100,
            first_block_offset: 90,
            blocks: 1,
            length: 10,
            header: FragmentHeader {
                id: Some(fid(n)),
                block_size: 16,
                ..Default::default()
            },
        })
    }

    #[test]
    fn block_geometry() {
        let l = Location {
            blocks: 3,
            length: 16 * 2 + 5,
            ..(*loc(1, 1, 1)).clone()
        };
        assert_eq!(l.block_len(0), 16);
        assert_eq!(l.block_len(2), 5);
        assert_eq!(l.block_offset(0), 90);
        assert_eq!(l.block_offset(2), 90 + 2 * 24);
    }

    #[test]
    fn highest_seq_wins_in_any_order() {
        // Recovery sees a tombstone (seq 5) before the PUT (seq 3) it deletes.
        let mut ix = Index::for_recovery();
        assert!(!ix.apply_tombstone(&fid(1), 5));
        assert!(!ix.apply_put(loc(1, 3, 2)));
        // And a newer PUT (seq 7) of another id before an older one (seq 4).
        assert!(ix.apply_put(loc(2, 7, 1)));
        assert!(!ix.apply_put(loc(2, 4, 3)));
        ix.finish_recovery();
        assert!(ix.get(&fid(1)).is_none());
        assert_eq!(ix.get(&fid(2)).unwrap().seq, 7);
        assert_eq!(ix.slots(), 1);
        assert_eq!(ix.dead_bytes(2), 100);
        assert_eq!(ix.dead_bytes(3), 100);
        assert_eq!(ix.live_fragments(), 1);
    }

    #[test]
    fn delete_during_inflight_commit_is_not_undone() {
        let mut ix = Index::new();
        let put_seq = ix.begin_commit(); // PUT holds seq, fsync in progress
        let del_seq = ix.take_seq();
        assert!(!ix.apply_tombstone(&fid(1), del_seq));
        assert!(!ix.finish_commit(loc(1, put_seq, 1)));
        assert!(ix.get(&fid(1)).is_none());
        assert_eq!(
            ix.slots(),
            0,
            "tombstone slot pruned once no commit is in flight"
        );
    }

    #[test]
    fn newer_put_survives_older_tombstone() {
        let mut ix = Index::new();
        let del_seq = ix.take_seq();
        let put_seq = ix.begin_commit();
        assert!(ix.finish_commit(loc(1, put_seq, 1)));
        assert!(!ix.apply_tombstone(&fid(1), del_seq));
        assert!(ix.get(&fid(1)).is_some());
    }

    #[test]
    fn supersede_counts_dead_bytes() {
        let mut ix = Index::new();
        let s1 = ix.begin_commit();
        ix.finish_commit(loc(1, s1, 1));
        let s2 = ix.begin_commit();
        ix.finish_commit(loc(1, s2, 2));
        assert_eq!(ix.get(&fid(1)).unwrap().segment, 2);
        assert_eq!(ix.dead_bytes(1), 100);
        assert_eq!(ix.live_bytes(), 10);
        let s3 = ix.take_seq();
        assert!(ix.apply_tombstone(&fid(1), s3));
        assert_eq!(ix.total_dead_bytes(), 200);
        assert_eq!(ix.live_fragments(), 0);
    }
}
