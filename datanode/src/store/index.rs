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
//!
//! Equal seqs (decision 0004): an equal-seq PUT is a compaction copy and replaces the one
//! seen before; a tombstone deletes records with seq <= its own (quarantine writes one
//! with the corrupt record's seq). The index also remembers where dead PUT records still
//! sit on disk, so compaction knows which tombstones it must keep.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
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

/// A fragment id in listing order: (data_id, shard).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FragKey {
    pub data_id: Bytes,
    pub shard: u32,
}

impl From<&FragmentId> for FragKey {
    fn from(id: &FragmentId) -> Self {
        FragKey {
            data_id: id.data_id.clone(),
            shard: id.shard,
        }
    }
}

impl FragKey {
    /// Sorts before every real key (data ids are never empty).
    fn min() -> Self {
        FragKey {
            data_id: Bytes::new(),
            shard: 0,
        }
    }

    pub fn to_id(&self) -> FragmentId {
        FragmentId {
            data_id: self.data_id.clone(),
            shard: self.shard,
        }
    }
}

fn key_of(loc: &Location) -> FragKey {
    loc.header
        .id
        .as_ref()
        .map(FragKey::from)
        .unwrap_or_else(FragKey::min)
}

#[derive(Debug, Clone)]
enum Slot {
    Live(Arc<Location>),
    Deleted { seq: u64 },
}

#[derive(Debug, Default)]
pub struct Index {
    map: BTreeMap<FragKey, Slot>,
    /// Live fragments by placement group, for per-PG listings.
    by_pg: BTreeSet<(u32, FragKey)>,
    next_seq: u64,
    /// Seqs of PUT commits holding a seq but not yet applied.
    committing: BTreeSet<u64>,
    /// Recovery keeps every tombstone until the scan ends (records arrive in any order).
    recovering: bool,
    deleted_slots: Vec<FragKey>,
    live: usize,
    live_bytes: u64,
    /// Bytes of superseded/deleted PUT records per segment (what compaction could reclaim).
    dead_bytes: HashMap<u64, u64>,
    /// PUT records still on disk that do not count (superseded, deleted, quarantined, or
    /// written but never acknowledged), as (segment, seq) per id. Compaction keeps a
    /// tombstone while another segment holds such a record with seq <= the tombstone's.
    dead_puts: HashMap<FragKey, Vec<(u64, u64)>>,
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
        match self.map.get(&FragKey::from(id)) {
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
        let seq = self.take_seq();
        self.committing.insert(seq);
        seq
    }

    /// Applies a durable PUT. Returns false when a newer record already decided this id.
    pub fn finish_commit(&mut self, loc: Arc<Location>) -> bool {
        let seq = loc.seq;
        let applied = self.apply_put(loc);
        self.end_commit(seq);
        applied
    }

    /// Ends a commit that was not applied. `written`: the footer may be on disk (id and
    /// segment), so the record may come back at restart; remember it as a dead PUT so
    /// compaction keeps any tombstone that must shadow it.
    pub fn abort_commit(&mut self, seq: u64, written: Option<(&FragmentId, u64)>) {
        if let Some((id, segment)) = written {
            self.dead_puts
                .entry(FragKey::from(id))
                .or_default()
                .push((segment, seq));
        }
        self.end_commit(seq);
    }

    fn end_commit(&mut self, seq: u64) {
        self.committing.remove(&seq);
        if self.committing.is_empty() && !self.recovering {
            for key in std::mem::take(&mut self.deleted_slots) {
                if let Some(Slot::Deleted { .. }) = self.map.get(&key) {
                    self.map.remove(&key);
                }
            }
        }
    }

    /// Inserts a PUT unless a record with a higher seq (or a tombstone with the same seq,
    /// i.e. a quarantine of exactly this record) decided this id. An equal-seq PUT is a
    /// copy of the same record (compaction) and replaces the one seen before.
    pub fn apply_put(&mut self, loc: Arc<Location>) -> bool {
        let key = key_of(&loc);
        let rejected = match self.map.get(&key) {
            Some(Slot::Live(old)) => old.seq > loc.seq,
            Some(Slot::Deleted { seq }) => *seq >= loc.seq,
            None => false,
        };
        if rejected {
            self.add_dead(&key, loc.segment, loc.seq, loc.record_len);
            return false;
        }
        if let Some(Slot::Live(old)) = self.map.remove(&key) {
            self.remove_live(&key, &old);
        }
        self.live += 1;
        self.live_bytes += loc.length;
        self.by_pg.insert((loc.header.pg, key.clone()));
        self.map.insert(key, Slot::Live(loc));
        true
    }

    /// Applies a tombstone with `seq`: deletes records with seq <= `seq`. Returns whether
    /// a live fragment was removed.
    pub fn apply_tombstone(&mut self, id: &FragmentId, seq: u64) -> bool {
        let key = FragKey::from(id);
        let keep_slot = self.recovering || !self.committing.is_empty();
        match self.map.get(&key) {
            Some(Slot::Live(old)) if old.seq > seq => false,
            Some(Slot::Deleted { seq: s }) if *s >= seq => false,
            Some(Slot::Live(_)) | Some(Slot::Deleted { .. }) | None => {
                let prev = if keep_slot {
                    self.deleted_slots.push(key.clone());
                    self.map.insert(key.clone(), Slot::Deleted { seq })
                } else {
                    self.map.remove(&key)
                };
                match prev {
                    Some(Slot::Live(old)) => {
                        self.remove_live(&key, &old);
                        true
                    }
                    Some(Slot::Deleted { .. }) | None => false,
                }
            }
        }
    }

    fn remove_live(&mut self, key: &FragKey, old: &Location) {
        self.live -= 1;
        self.live_bytes -= old.length;
        self.by_pg.remove(&(old.header.pg, key.clone()));
        self.add_dead(key, old.segment, old.seq, old.record_len);
    }

    fn add_dead(&mut self, key: &FragKey, segment: u64, seq: u64, bytes: u64) {
        *self.dead_bytes.entry(segment).or_default() += bytes;
        self.dead_puts
            .entry(key.clone())
            .or_default()
            .push((segment, seq));
    }

    /// Up to `limit` live fragments after `after` in (data_id, shard) order, of placement
    /// group `pg` (None: all). The flag says whether more follow.
    pub fn list(
        &self,
        pg: Option<u32>,
        after: Option<&FragmentId>,
        limit: usize,
    ) -> (Vec<Arc<Location>>, bool) {
        let after = after.map(FragKey::from);
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        let mut push = |loc: &Arc<Location>| {
            if out.len() == limit {
                more = true;
                false
            } else {
                out.push(loc.clone());
                true
            }
        };
        match pg {
            None => {
                let lower = match &after {
                    Some(k) => Bound::Excluded(k),
                    None => Bound::Unbounded,
                };
                for (_, slot) in self.map.range((lower, Bound::Unbounded)) {
                    if let Slot::Live(loc) = slot {
                        if !push(loc) {
                            break;
                        }
                    }
                }
            }
            Some(pg) => {
                let lower = match after {
                    Some(k) => Bound::Excluded((pg, k)),
                    None => Bound::Included((pg, FragKey::min())),
                };
                for (p, key) in self.by_pg.range((lower, Bound::Unbounded)) {
                    if *p != pg {
                        break;
                    }
                    if let Some(Slot::Live(loc)) = self.map.get(key) {
                        if !push(loc) {
                            break;
                        }
                    }
                }
            }
        }
        (out, more)
    }

    /// Whether the live version of the fragment is the record with `seq` in `segment`.
    pub fn is_live_at(&self, id: &FragmentId, seq: u64, segment: u64) -> bool {
        matches!(self.map.get(&FragKey::from(id)), Some(Slot::Live(l)) if l.seq == seq && l.segment == segment)
    }

    /// Whether a tombstone (`id`, `seq`) in `segment` must survive compaction: another
    /// segment may hold a PUT of `id` with seq <= `seq`, or an older commit is in flight.
    pub fn tombstone_needed(&self, id: &FragmentId, seq: u64, segment: u64) -> bool {
        if self.recovering || self.committing.first().is_some_and(|&c| c < seq) {
            return true;
        }
        self.dead_puts
            .get(&FragKey::from(id))
            .is_some_and(|v| v.iter().any(|&(s, q)| s != segment && q <= seq))
    }

    /// Points the fragment at its copy `new` made by compaction of `old_segment`, if its
    /// live version is still that record. Otherwise the copy is dead on arrival.
    pub fn relocate(&mut self, new: Arc<Location>, old_segment: u64) -> bool {
        let key = key_of(&new);
        match self.map.get_mut(&key) {
            Some(Slot::Live(cur)) if cur.seq == new.seq && cur.segment == old_segment => {
                *cur = new;
                true
            }
            Some(Slot::Live(_)) | Some(Slot::Deleted { .. }) | None => {
                self.add_dead(&key, new.segment, new.seq, new.record_len);
                false
            }
        }
    }

    /// Forgets everything about a segment that compaction removed.
    pub fn forget_segment(&mut self, segment: u64) {
        self.dead_bytes.remove(&segment);
        self.dead_puts.retain(|_, v| {
            v.retain(|&(s, _)| s != segment);
            !v.is_empty()
        });
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

    fn loc_pg(n: u8, shard: u32, pg: u32, seq: u64) -> Arc<Location> {
        let mut l = (*loc(n, seq, 1)).clone();
        l.header.id = Some(FragmentId {
            data_id: vec![n; 16].into(),
            shard,
        });
        l.header.pg = pg;
        Arc::new(l)
    }

    fn ids(v: &[Arc<Location>]) -> Vec<(u8, u32)> {
        v.iter()
            .map(|l| {
                let id = l.header.id.as_ref().unwrap();
                (id.data_id[0], id.shard)
            })
            .collect()
    }

    #[test]
    fn listing_is_ordered_paged_and_filtered_by_pg() {
        let mut ix = Index::new();
        let mut seq = 0;
        // Insert out of order; pg = n % 3.
        for n in [9u8, 3, 7, 1, 5, 2, 8, 4, 6] {
            for shard in [2u32, 0] {
                seq += 1;
                ix.apply_put(loc_pg(n, shard, n as u32 % 3, seq));
            }
        }
        // Everything, in pages of 4.
        let mut all = Vec::new();
        let mut after: Option<FragmentId> = None;
        loop {
            let (page, more) = ix.list(None, after.as_ref(), 4);
            assert!(page.len() <= 4);
            all.extend(ids(&page));
            after = page.last().and_then(|l| l.header.id.clone());
            if !more {
                break;
            }
        }
        let want: Vec<(u8, u32)> = (1..=9u8).flat_map(|n| [(n, 0), (n, 2)]).collect();
        assert_eq!(all, want);
        // One placement group, pages of 1; the cursor may name an id of another pg.
        let (page, more) = ix.list(Some(1), None, 100);
        assert_eq!(
            ids(&page),
            vec![(1, 0), (1, 2), (4, 0), (4, 2), (7, 0), (7, 2)]
        );
        assert!(!more);
        let cursor = FragmentId {
            data_id: vec![2; 16].into(),
            shard: 0,
        };
        let (page, more) = ix.list(Some(1), Some(&cursor), 1);
        assert_eq!(ids(&page), vec![(4, 0)]);
        assert!(more);
        // Exactly `limit` left: no `more`.
        let last_but_one = page[0].header.id.clone().unwrap();
        let (page, more) = ix.list(Some(1), Some(&last_but_one), 3);
        assert_eq!(ids(&page), vec![(4, 2), (7, 0), (7, 2)]);
        assert!(!more);
        // Deleted and moved-between-pg fragments are listed where they now are.
        ix.observe_seq(seq);
        let s = ix.take_seq();
        ix.apply_tombstone(&page[0].header.id.clone().unwrap(), s);
        seq = ix.take_seq();
        ix.apply_put(loc_pg(7, 0, 2, seq));
        assert_eq!(
            ids(&ix.list(Some(1), None, 100).0),
            vec![(1, 0), (1, 2), (4, 0), (7, 2)]
        );
        assert!(ids(&ix.list(Some(2), None, 100).0).contains(&(7, 0)));
        assert!(ix.list(Some(9), None, 100).0.is_empty());
    }

    #[test]
    fn equal_seq_tombstone_quarantines_exactly_that_record() {
        // Quarantine writes a tombstone with the corrupt record's own seq.
        for tombstone_first in [false, true] {
            let mut ix = Index::for_recovery();
            if tombstone_first {
                ix.apply_tombstone(&fid(1), 5);
                assert!(!ix.apply_put(loc(1, 5, 1)));
            } else {
                ix.apply_put(loc(1, 5, 1));
                assert!(ix.apply_tombstone(&fid(1), 5));
            }
            // A rebuilt copy (newer seq) wins in any order.
            assert!(ix.apply_put(loc(1, 6, 2)));
            ix.finish_recovery();
            assert_eq!(ix.get(&fid(1)).unwrap().seq, 6);
        }
    }

    #[test]
    fn equal_seq_put_is_a_copy() {
        let mut ix = Index::for_recovery();
        assert!(ix.apply_put(loc(1, 5, 1)));
        assert!(ix.apply_put(loc(1, 5, 9)));
        ix.finish_recovery();
        assert_eq!(ix.get(&fid(1)).unwrap().segment, 9);
        assert_eq!(ix.live_fragments(), 1);
        assert_eq!(ix.dead_bytes(1), 100);
    }

    #[test]
    fn tombstone_kept_while_an_older_put_remains_elsewhere() {
        let mut ix = Index::new();
        let s = ix.begin_commit();
        ix.finish_commit(loc(1, s, 1));
        let t = ix.take_seq();
        ix.apply_tombstone(&fid(1), t);
        // The tombstone lives in segment 2; the PUT it deletes is still in segment 1.
        assert!(ix.tombstone_needed(&fid(1), t, 2));
        // Both in the same segment: compacting it removes both.
        assert!(!ix.tombstone_needed(&fid(1), t, 1));
        ix.forget_segment(1);
        assert!(!ix.tombstone_needed(&fid(1), t, 2));
        // An older commit in flight may still land a PUT the tombstone must shadow.
        let inflight = ix.begin_commit();
        let t2 = ix.take_seq();
        assert!(ix.tombstone_needed(&fid(7), t2, 2));
        ix.abort_commit(inflight, Some((&fid(7), 3)));
        assert!(
            ix.tombstone_needed(&fid(7), t2, 2),
            "the unacknowledged record may be on disk"
        );
        ix.forget_segment(3);
        assert!(!ix.tombstone_needed(&fid(7), t2, 2));
    }

    #[test]
    fn relocate_only_the_current_version() {
        let mut ix = Index::new();
        let s = ix.begin_commit();
        ix.finish_commit(loc(1, s, 1));
        let moved = Arc::new(Location {
            segment: 5,
            ..(*loc(1, s, 1)).clone()
        });
        assert!(ix.relocate(moved.clone(), 1));
        assert_eq!(ix.get(&fid(1)).unwrap().segment, 5);
        // A copy of a record deleted meanwhile is dead on arrival.
        let t = ix.take_seq();
        ix.apply_tombstone(&fid(1), t);
        assert!(!ix.relocate(moved, 5));
        assert_eq!(ix.dead_bytes(5), 200);
    }
}
