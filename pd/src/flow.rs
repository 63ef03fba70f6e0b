//! Read/write flow as PD keeps it: per-second rates from the last region
//! and store heartbeats (not persisted; the next heartbeats refill them),
//! for `region topread|topwrite`, the region/store JSON and the hot-region
//! scheduler.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::Serialize;

/// Bytes and keys per second, written (applied) and read (answered by the
/// leader). JSON names are pd-ctl's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowRates {
    pub written_bytes: u64,
    pub written_keys: u64,
    pub read_bytes: u64,
    pub read_keys: u64,
}

impl FlowRates {
    /// Rates from totals over `interval_ms`; `None` when the report carries
    /// no sample (`interval_ms` 0).
    pub fn from_totals(
        bytes_written: u64,
        keys_written: u64,
        bytes_read: u64,
        keys_read: u64,
        interval_ms: u64,
    ) -> Option<FlowRates> {
        if interval_ms == 0 {
            return None;
        }
        let per_sec = |n: u64| ((n as u128 * 1000) / interval_ms as u128) as u64;
        Some(FlowRates {
            written_bytes: per_sec(bytes_written),
            written_keys: per_sec(keys_written),
            read_bytes: per_sec(bytes_read),
            read_keys: per_sec(keys_read),
        })
    }

    /// Field by field minimum.
    pub fn min(self, o: FlowRates) -> FlowRates {
        FlowRates {
            written_bytes: self.written_bytes.min(o.written_bytes),
            written_keys: self.written_keys.min(o.written_keys),
            read_bytes: self.read_bytes.min(o.read_bytes),
            read_keys: self.read_keys.min(o.read_keys),
        }
    }

    /// Field by field maximum.
    pub fn max(self, o: FlowRates) -> FlowRates {
        FlowRates {
            written_bytes: self.written_bytes.max(o.written_bytes),
            written_keys: self.written_keys.max(o.written_keys),
            read_bytes: self.read_bytes.max(o.read_bytes),
            read_keys: self.read_keys.max(o.read_keys),
        }
    }
}

/// A region's last two flow samples: the hot-region scheduler trusts only
/// flow both show (one busy interval is not a hot spot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowHistory {
    pub last: FlowRates,
    pub previous: FlowRates,
}

impl FlowHistory {
    pub fn record(&mut self, r: FlowRates) {
        self.previous = self.last;
        self.last = r;
    }

    /// Flow sustained over the last two samples.
    pub fn sustained(&self) -> FlowRates {
        self.last.min(self.previous)
    }
}

/// Which flow `region topread|topwrite` ranks by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowKind {
    Read,
    Write,
}

impl FlowKind {
    /// The ranking key: bytes, then keys.
    pub fn key(self, r: &FlowRates) -> (u64, u64) {
        match self {
            FlowKind::Read => (r.read_bytes, r.read_keys),
            FlowKind::Write => (r.written_bytes, r.written_keys),
        }
    }
}

/// The `limit` items with the largest `key`, largest first (ties: earlier
/// first). A bounded heap: O(n log limit), not a sort of all n.
pub fn top_n<T, K: Ord + Copy>(
    items: impl IntoIterator<Item = T>,
    limit: usize,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    if limit == 0 {
        return Vec::new();
    }
    // Min-heap of (key, Reverse(seq)): the root is the weakest kept item.
    let mut heap: BinaryHeap<Reverse<(K, Reverse<usize>)>> = BinaryHeap::with_capacity(limit + 1);
    let mut kept: Vec<Option<T>> = Vec::new();
    for item in items {
        let k = key(&item);
        // Slots grow with arrival: a smaller slot is an earlier item.
        let slot = kept.len();
        if heap.len() == limit {
            let Some(Reverse(weakest)) = heap.peek() else {
                break;
            };
            if (k, Reverse(slot)) <= *weakest {
                continue;
            }
            if let Some(Reverse((_, Reverse(gone)))) = heap.pop() {
                kept[gone] = None;
            }
        }
        heap.push(Reverse((k, Reverse(slot))));
        kept.push(Some(item));
    }
    let mut order: Vec<(K, Reverse<usize>)> = heap.into_iter().map(|Reverse(e)| e).collect();
    order.sort_by(|a, b| b.cmp(a));
    order
        .into_iter()
        .filter_map(|(_, Reverse(slot))| kept[slot].take())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second() {
        let r = FlowRates::from_totals(10_000, 100, 3000, 30, 2000).unwrap();
        assert_eq!(
            r,
            FlowRates {
                written_bytes: 5000,
                written_keys: 50,
                read_bytes: 1500,
                read_keys: 15,
            }
        );
        assert_eq!(FlowRates::from_totals(1, 1, 1, 1, 0), None);
    }

    #[test]
    fn sustained_is_what_both_samples_show() {
        let mut h = FlowHistory::default();
        let hot = FlowRates {
            read_bytes: 100,
            ..Default::default()
        };
        h.record(hot);
        assert_eq!(h.sustained().read_bytes, 0, "one sample is not enough");
        h.record(hot);
        assert_eq!(h.sustained().read_bytes, 100);
        h.record(FlowRates::default());
        assert_eq!(h.sustained().read_bytes, 0);
    }

    #[test]
    fn the_region_map_keeps_flow_and_ranks_by_it() {
        use kura_proto::common::{Peer, Region, RegionEpoch};
        let region = |id: u64, start: &[u8], end: &[u8], conf_ver: u64| Region {
            id,
            start_key: start.to_vec().into(),
            end_key: end.to_vec().into(),
            epoch: Some(RegionEpoch {
                conf_ver,
                version: 1,
            }),
            peers: vec![Peer {
                id: id * 10,
                store_id: 1,
                is_learner: false,
            }],
        };
        let mut c = crate::cluster::Cluster::new(1);
        c.insert_region(region(1, b"", b"m", 1));
        c.insert_region(region(2, b"m", b"t", 1));
        c.insert_region(region(3, b"t", b"", 1));
        let reads = |b| FlowRates {
            read_bytes: b,
            read_keys: 1,
            ..Default::default()
        };
        c.record_region_flow(1, reads(10));
        c.record_region_flow(2, reads(30));
        c.record_region_flow(3, FlowRates::default());
        let ids = |v: Vec<&crate::cluster::RegionEntry>| -> Vec<u64> {
            v.iter().map(|e| e.region.id).collect()
        };
        assert_eq!(ids(c.top_flow_regions(FlowKind::Read, 16)), vec![2, 1]);
        assert_eq!(ids(c.top_flow_regions(FlowKind::Read, 1)), vec![2]);
        assert!(c.top_flow_regions(FlowKind::Write, 16).is_empty());
        // A conf change (new epoch) keeps what the region's leader reported.
        let leader = Some(Peer {
            id: 20,
            store_id: 1,
            is_learner: false,
        });
        c.region_heartbeat(region(2, b"m", b"t", 2), leader, 1, 0, 0)
            .expect("heartbeat");
        assert_eq!(c.region(2).map(|e| e.flow.last), Some(reads(30)));
    }

    #[test]
    fn top_n_keeps_the_largest_in_order() {
        let v = [5u64, 1, 9, 3, 9, 7, 2];
        let top = top_n(v.iter().enumerate(), 3, |(_, x)| **x);
        let idx: Vec<usize> = top.iter().map(|(i, _)| *i).collect();
        // The two 9s (first one first), then 7.
        assert_eq!(idx, vec![2, 4, 5]);
        assert_eq!(top_n(v.iter(), 0, |x| **x).len(), 0);
        assert_eq!(top_n(v.iter(), 100, |x| **x).len(), v.len());
        let all: Vec<u64> = top_n(v.iter().copied(), 100, |x| *x);
        assert_eq!(all, vec![9, 9, 7, 5, 3, 2, 1]);
    }
}
