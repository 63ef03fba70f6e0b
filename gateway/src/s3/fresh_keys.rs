//! Whether a bucket's PUTs mostly create new keys, so a PUT may commit without
//! reading what it replaces first (decision 0053).
//!
//! A PUT into an unversioned bucket reads the key's null slot, then commits a batch
//! conditioned on that slot being unchanged (`versioning::commit`). When the key does
//! not exist, the read only confirms what the batch's condition checks again; a
//! *blind* commit sends the batch conditioned on "absent" straight away and falls back
//! to the read when the condition fails. That saves one metadata read per new key and
//! costs a wasted Raft round per existing key, so it is worth it only where nearly
//! every PUT creates its key (uploads of new files, backups, logs, benchmarks).
//!
//! Each bucket (hashed into a fixed table, so memory does not grow with buckets) keeps
//! a score: +1 for every PUT that found its key absent (read or blind), −[`MISS_COST`]
//! for every one that found it present. PUTs go blind while the score is positive, that
//! is, while more than `MISS_COST / (MISS_COST + 1)` (89%) of recent PUTs created their
//! key. A workload that turns to overwrites stops within a few misses; PUTs that read
//! keep scoring, so one that turns back to new keys goes blind again.

use std::sync::atomic::{AtomicI32, Ordering};

/// Score lost when a PUT finds its key present.
pub const MISS_COST: i32 = 8;
/// The score stays within ±this, so a change of workload shows within a few dozen PUTs.
const BOUND: i32 = 64;
/// Slots of the table (buckets beyond this share slots; a shared slot only blurs the odds).
const SLOTS: usize = 1024;

/// Per-bucket odds that a PUT creates its key.
pub struct FreshKeys {
    slots: Box<[AtomicI32]>,
}

impl Default for FreshKeys {
    fn default() -> Self {
        FreshKeys {
            slots: (0..SLOTS).map(|_| AtomicI32::new(0)).collect(),
        }
    }
}

impl FreshKeys {
    fn slot(&self, bucket_id: u64) -> &AtomicI32 {
        // Bucket ids are sequential: a multiplicative hash spreads neighbours apart.
        let h = bucket_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        &self.slots[h as usize % SLOTS]
    }

    /// Whether a PUT into `bucket_id` should commit without reading first.
    pub fn go_blind(&self, bucket_id: u64) -> bool {
        self.slot(bucket_id).load(Ordering::Relaxed) > 0
    }

    /// A PUT into `bucket_id` found its key absent (`true`) or present.
    pub fn note(&self, bucket_id: u64, absent: bool) {
        let delta = if absent { 1 } else { -MISS_COST };
        let _ = self
            .slot(bucket_id)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((s + delta).clamp(-BOUND, BOUND))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keys_go_blind_and_overwrites_stop_it() {
        let f = FreshKeys::default();
        assert!(!f.go_blind(7), "no evidence yet: read first");
        f.note(7, true);
        assert!(f.go_blind(7));
        assert!(!f.go_blind(8), "another bucket has its own odds");
        for _ in 0..200 {
            f.note(7, true);
        }
        // Bounded: a run of new keys does not buy a long run of wasted rounds.
        let mut misses = 0;
        while f.go_blind(7) {
            f.note(7, false);
            misses += 1;
        }
        assert_eq!(misses, (BOUND + MISS_COST - 1) / MISS_COST);
    }

    #[test]
    fn blind_only_where_nearly_every_put_creates_its_key() {
        for (absent_in_ten, blind) in [(10, true), (9, true), (8, false), (5, false)] {
            let f = FreshKeys::default();
            let mut blind_puts = 0;
            for i in 0..1000 {
                if f.go_blind(1) {
                    blind_puts += 1;
                }
                f.note(1, i % 10 < absent_in_ten);
            }
            assert_eq!(
                blind_puts > 500,
                blind,
                "{absent_in_ten} in ten absent: {blind_puts} of 1000 PUTs went blind"
            );
        }
    }
}
