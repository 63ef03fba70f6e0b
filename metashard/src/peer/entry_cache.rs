//! The tail of a peer's raft log kept in memory (TiKV's entry cache).
//!
//! raft-rs reads back every entry it hands out for applying, and the terms
//! of recent indexes, through `raft::Storage`. Without a cache each of those
//! is a RocksDB iterator or point read; with many regions each carrying one
//! entry per round, that costs as much as writing the entry. The cache holds
//! the entries appended but not yet applied here (plus the last applied
//! one, whose term raft asks for), contiguous, up to [`MAX_BYTES`]; reads it
//! cannot answer whole go to the engine as before.

use std::collections::VecDeque;

use protobuf::Message as PbMessage;
use raft::prelude::Entry;

/// Most bytes of entries one peer keeps (older ones are read from disk).
pub const MAX_BYTES: usize = 4 << 20;

#[derive(Default)]
pub struct EntryCache {
    /// Contiguous by index.
    entries: VecDeque<Entry>,
    bytes: usize,
}

fn size_of(e: &Entry) -> usize {
    e.data.len() + e.context.len() + 32
}

impl EntryCache {
    /// Entries just appended to the log: replaces a conflicting suffix
    /// (a new leader's entries overwrite ours), starts over after a gap.
    pub fn append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else { return };
        match (self.entries.front(), self.entries.back()) {
            (Some(f), _) if first.index <= f.index => self.clear(),
            (_, Some(b)) if first.index > b.index + 1 => self.clear(),
            (Some(f), _) => {
                let keep = (first.index - f.index) as usize;
                while self.entries.len() > keep {
                    if let Some(e) = self.entries.pop_back() {
                        self.bytes -= size_of(&e);
                    }
                }
            }
            _ => {}
        }
        for e in new {
            self.bytes += size_of(e);
            self.entries.push_back(e.clone());
        }
        while self.bytes > MAX_BYTES && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    /// Entries [low, high) if all are here, cut to `max_size` bytes as
    /// raft-rs wants it (at least one entry).
    pub fn get(&self, low: u64, high: u64, max_size: Option<u64>) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.index;
        let last = self.entries.back()?.index;
        if low < first || high > last + 1 || low >= high {
            return None;
        }
        let start = (low - first) as usize;
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for e in self.entries.range(start..start + (high - low) as usize) {
            if let Some(max) = max_size {
                size += u64::from(e.compute_size());
                if size > max && !out.is_empty() {
                    break;
                }
            }
            out.push(e.clone());
        }
        Some(out)
    }

    pub fn term(&self, index: u64) -> Option<u64> {
        let first = self.entries.front()?.index;
        let i = index.checked_sub(first)?;
        self.entries.get(i as usize).map(|e| e.term)
    }

    /// Drops the entries before `index` (applied here: raft will not ask
    /// for them again, except for a lagging follower, read from disk).
    pub fn trim_before(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index < index) {
            self.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= size_of(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(range: std::ops::Range<u64>, term: u64) -> Vec<Entry> {
        range
            .map(|index| Entry {
                index,
                term,
                data: vec![0; 10].into(),
                ..Default::default()
            })
            .collect()
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<(u64, u64)>> {
        v.map(|v| v.iter().map(|e| (e.index, e.term)).collect())
    }

    #[test]
    fn serves_only_what_it_holds_whole() {
        let mut c = EntryCache::default();
        c.append(&ents(6..10, 2));
        assert_eq!(indexes(c.get(6, 10, None)).unwrap().len(), 4);
        assert_eq!(indexes(c.get(7, 9, None)), Some(vec![(7, 2), (8, 2)]));
        assert_eq!(c.get(5, 8, None), None, "before the cache");
        assert_eq!(c.get(8, 11, None), None, "past the last entry");
        assert_eq!(c.term(9), Some(2));
        assert_eq!(c.term(10), None);
        assert_eq!(c.term(5), None);
        // A size limit keeps at least one entry.
        assert_eq!(indexes(c.get(6, 10, Some(0))), Some(vec![(6, 2)]));
    }

    #[test]
    fn conflicting_suffix_is_replaced_and_gaps_start_over() {
        let mut c = EntryCache::default();
        c.append(&ents(6..10, 2));
        c.append(&ents(8..9, 3));
        assert_eq!(
            indexes(c.get(6, 9, None)),
            Some(vec![(6, 2), (7, 2), (8, 3)])
        );
        assert_eq!(c.term(9), None, "the old 9 is gone");
        c.append(&ents(9..11, 3));
        assert_eq!(c.term(10), Some(3));
        c.append(&ents(20..21, 4));
        assert_eq!(c.term(10), None);
        assert_eq!(indexes(c.get(20, 21, None)), Some(vec![(20, 4)]));
        c.append(&ents(3..5, 5));
        assert_eq!(c.term(20), None, "an append before the cache replaces it");
        assert_eq!(c.term(4), Some(5));
    }

    #[test]
    fn trims_applied_entries_and_stays_bounded() {
        let mut c = EntryCache::default();
        c.append(&ents(1..11, 1));
        c.trim_before(8);
        assert_eq!(c.get(7, 9, None), None);
        assert_eq!(indexes(c.get(8, 11, None)).unwrap().len(), 3);
        let big = |index| Entry {
            index,
            term: 1,
            data: vec![0; MAX_BYTES / 3].into(),
            ..Default::default()
        };
        c.append(&[big(11), big(12), big(13), big(14)]);
        assert!(c.bytes <= MAX_BYTES);
        assert_eq!(c.term(14), Some(1));
        assert_eq!(c.term(10), None, "oldest dropped first");
    }
}
