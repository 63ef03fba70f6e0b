//! Read and write flow counters for PD's hot-region scheduling and
//! `pdctl region topread|topwrite`: each peer has one (writes it applied,
//! reads it answered as leader), the store has one for its totals. Relaxed
//! atomics, so the gRPC threads answering reads and the raftstore thread
//! applying writes add to them without a lock; a heartbeat takes (and
//! zeroes) what accumulated since the previous sample.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A sample covers at least this long: a heartbeat sent right after another
/// (leader change, split) carries no sample rather than a rate computed over
/// a few milliseconds; PD keeps the previous one.
pub const MIN_SAMPLE: Duration = Duration::from_secs(1);

/// Flow accumulated since the previous sample.
#[derive(Debug)]
pub struct Flow {
    bytes_written: AtomicU64,
    keys_written: AtomicU64,
    bytes_read: AtomicU64,
    keys_read: AtomicU64,
    /// When counting started ([`Flow::take`] measures from it).
    origin: Instant,
    /// Milliseconds after `origin` of the previous sample.
    sampled_at_ms: AtomicU64,
}

/// What [`Flow::take`] returns: totals over `interval_ms` (0: no sample).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSample {
    pub bytes_written: u64,
    pub keys_written: u64,
    pub bytes_read: u64,
    pub keys_read: u64,
    pub interval_ms: u64,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            bytes_written: AtomicU64::new(0),
            keys_written: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            keys_read: AtomicU64::new(0),
            origin: Instant::now(),
            sampled_at_ms: AtomicU64::new(0),
        }
    }
}

impl Flow {
    pub fn add_written(&self, keys: u64, bytes: u64) {
        self.keys_written.fetch_add(keys, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_read(&self, keys: u64, bytes: u64) {
        self.keys_read.fetch_add(keys, Ordering::Relaxed);
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The flow since the previous sample, zeroing the counters; an empty
    /// sample (`interval_ms` 0, counters kept) when that was less than
    /// [`MIN_SAMPLE`] ago.
    pub fn take(&self) -> FlowSample {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> FlowSample {
        let now_ms = now.duration_since(self.origin).as_millis() as u64;
        let prev = self.sampled_at_ms.load(Ordering::Relaxed);
        let interval_ms = now_ms.saturating_sub(prev);
        if interval_ms < MIN_SAMPLE.as_millis() as u64
            || self
                .sampled_at_ms
                .compare_exchange(prev, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            // Too soon, or another taker just sampled.
            return FlowSample::default();
        }
        FlowSample {
            bytes_written: self.bytes_written.swap(0, Ordering::Relaxed),
            keys_written: self.keys_written.swap(0, Ordering::Relaxed),
            bytes_read: self.bytes_read.swap(0, Ordering::Relaxed),
            keys_read: self.keys_read.swap(0, Ordering::Relaxed),
            interval_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_returns_what_accumulated_and_zeroes_it() {
        let f = Flow::default();
        let t0 = f.origin;
        f.add_written(2, 100);
        f.add_read(3, 300);
        f.add_read(1, 50);
        let s = f.take_at(t0 + Duration::from_millis(2500));
        assert_eq!(
            s,
            FlowSample {
                bytes_written: 100,
                keys_written: 2,
                bytes_read: 350,
                keys_read: 4,
                interval_ms: 2500,
            }
        );
        // Too soon after: no sample, the counters keep what came in.
        f.add_read(1, 10);
        let s = f.take_at(t0 + Duration::from_millis(2600));
        assert_eq!(s, FlowSample::default());
        let s = f.take_at(t0 + Duration::from_millis(4500));
        assert_eq!((s.keys_read, s.bytes_read, s.interval_ms), (1, 10, 2000));
        assert_eq!(s.bytes_written, 0);
    }
}
