//! Load-based splitting: a region that stays busy is cut where its requests
//! divide evenly, so its two halves can be led (and served) by two stores.
//!
//! Size-based splits (`split_check`) never see a small region that takes
//! most of the traffic: a hot bucket of a few thousand objects. Like TiKV's
//! auto-split controller, each leader counts the requests it receives per
//! one-second window ([`LoadTracker::record`], on the raftstore thread: a
//! counter, a comparison per candidate and a cheap reservoir sample, no
//! locks). A window at or above `qps_threshold` makes the keys sampled in it
//! the candidates of the next window, which counts for each candidate how
//! many requests fall left and right of it. After `detect_windows` busy
//! windows in a row, the candidate with the most even left/right division
//! (at most `max_imbalance` apart, as a fraction of the requests) becomes the
//! split key, rounded down to its object's first key like every split.
//!
//! A region hammered on one key (or one object) has no even division: it is
//! not split (splitting would not spread the load). Ranged requests (LIST)
//! count at their start key.

use std::time::{Duration, Instant};

/// When and how a busy region is split by load.
#[derive(Debug, Clone)]
pub struct LoadSplitConfig {
    /// Requests per second (reads and writes) a region's leader must see in
    /// `detect_windows` consecutive windows before it splits (0: never by load).
    pub qps_threshold: u64,
    /// Length of one counting window.
    pub window: Duration,
    /// Consecutive busy windows before a split.
    pub detect_windows: u32,
    /// Candidate split keys sampled per window.
    pub sample_keys: usize,
    /// Largest |left - right| / (left + right) a split key may leave.
    pub max_imbalance: f64,
}

impl Default for LoadSplitConfig {
    fn default() -> Self {
        LoadSplitConfig {
            qps_threshold: 3_000,
            window: Duration::from_secs(1),
            detect_windows: 3,
            sample_keys: 20,
            max_imbalance: 0.25,
        }
    }
}

impl LoadSplitConfig {
    pub fn disabled(&self) -> bool {
        self.qps_threshold == 0
    }
}

#[derive(Debug, Clone)]
struct Candidate {
    key: Vec<u8>,
    left: u64,
    right: u64,
}

impl Candidate {
    /// How unevenly this key divides the requests (0: evenly, 1: all on one
    /// side); `None` when one side got nothing.
    fn imbalance(&self) -> Option<f64> {
        if self.left == 0 || self.right == 0 {
            return None;
        }
        let (l, r) = (self.left as f64, self.right as f64);
        Some((l - r).abs() / (l + r))
    }
}

/// A [`LoadTracker`] shared by the raftstore thread and the reads the
/// service answers itself (`local_read`).
#[derive(Default)]
pub struct SharedLoad(std::sync::Mutex<LoadTracker>);

impl SharedLoad {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, LoadTracker> {
        // The tracker holds counts only: one poisoned by a panic is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One leader peer's request counting (see the module doc).
#[derive(Debug, Default)]
pub struct LoadTracker {
    window_start: Option<Instant>,
    requests: u64,
    /// Reservoir sample of this window's request keys.
    sample: Vec<Vec<u8>>,
    /// Requests offered to the reservoir this window.
    offered: u64,
    rng: u64,
    /// Keys sampled in the previous (busy) window, scored in this one.
    candidates: Vec<Candidate>,
    busy_windows: u32,
}

impl LoadTracker {
    /// Counts one request to `key` (the first key it touches).
    pub fn record(&mut self, cfg: &LoadSplitConfig, key: &[u8]) {
        if cfg.disabled() {
            return;
        }
        self.requests += 1;
        for c in &mut self.candidates {
            if key < c.key.as_slice() {
                c.left += 1;
            } else {
                c.right += 1;
            }
        }
        // Reservoir sampling (Algorithm R): every request of the window has
        // the same chance to become a candidate.
        self.offered += 1;
        if self.sample.len() < cfg.sample_keys {
            self.sample.push(key.to_vec());
        } else {
            let j = self.next_random() % self.offered;
            if let Some(slot) = self.sample.get_mut(j as usize) {
                slot.clear();
                slot.extend_from_slice(key);
            }
        }
    }

    /// Closes the window if it is over; returns a key to split at when the
    /// region has been busy long enough and a key divides its load evenly.
    pub fn on_tick(&mut self, cfg: &LoadSplitConfig, now: Instant) -> Option<Vec<u8>> {
        if cfg.disabled() {
            return None;
        }
        let Some(start) = self.window_start else {
            self.window_start = Some(now);
            return None;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < cfg.window {
            return None;
        }
        let qps = self.requests as f64 / elapsed.as_secs_f64();
        let mut split = None;
        if qps >= cfg.qps_threshold as f64 {
            self.busy_windows += 1;
            if self.busy_windows >= cfg.detect_windows {
                split = self.best_candidate(cfg);
            }
            let mut keys = std::mem::take(&mut self.sample);
            keys.sort();
            keys.dedup();
            self.candidates = keys
                .into_iter()
                .map(|key| Candidate {
                    key,
                    left: 0,
                    right: 0,
                })
                .collect();
        } else {
            self.busy_windows = 0;
            self.candidates.clear();
            self.sample.clear();
        }
        if split.is_some() {
            self.busy_windows = 0;
            self.candidates.clear();
        }
        self.requests = 0;
        self.offered = 0;
        self.window_start = Some(now);
        split
    }

    /// The candidate that divides the last window most evenly, if even enough.
    fn best_candidate(&self, cfg: &LoadSplitConfig) -> Option<Vec<u8>> {
        self.candidates
            .iter()
            .filter_map(|c| c.imbalance().map(|i| (i, c)))
            .filter(|(i, _)| *i <= cfg.max_imbalance)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, c)| c.key.clone())
    }

    /// The region changed (split, merge, leadership): start counting afresh.
    pub fn reset(&mut self) {
        *self = LoadTracker {
            rng: self.rng,
            ..Default::default()
        };
    }

    /// xorshift64*: cheap, and sampling needs no cryptographic quality.
    fn next_random(&mut self) -> u64 {
        if self.rng == 0 {
            self.rng = rand::random::<u64>() | 1;
        }
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LoadSplitConfig {
        LoadSplitConfig {
            qps_threshold: 100,
            window: Duration::from_secs(1),
            detect_windows: 2,
            sample_keys: 20,
            max_imbalance: 0.25,
        }
    }

    /// Drives `windows` windows of `per_window` requests each, keys from `key_of(i)`.
    fn drive(
        t: &mut LoadTracker,
        cfg: &LoadSplitConfig,
        windows: u32,
        per_window: u64,
        key_of: impl Fn(u64) -> Vec<u8>,
    ) -> Option<Vec<u8>> {
        let mut now = Instant::now();
        t.on_tick(cfg, now);
        let mut out = None;
        for w in 0..windows {
            for i in 0..per_window {
                t.record(cfg, &key_of(u64::from(w) * per_window + i));
            }
            now += cfg.window;
            if let Some(k) = t.on_tick(cfg, now) {
                out = Some(k);
            }
        }
        out
    }

    #[test]
    fn an_evenly_loaded_busy_region_splits_near_the_middle() {
        let cfg = cfg();
        let mut t = LoadTracker::default();
        // 1,000 distinct keys hit uniformly, 500 requests per second.
        let key = |i: u64| format!("k{:04}", (i * 7919) % 1000).into_bytes();
        let split = drive(&mut t, &cfg, 3, 500, key).expect("split key");
        let s = String::from_utf8(split).unwrap();
        let n: u64 = s[1..].parse().unwrap();
        assert!(
            (250..=750).contains(&n),
            "split at {s}, not near the middle"
        );
    }

    #[test]
    fn a_quiet_region_never_splits() {
        let cfg = cfg();
        let mut t = LoadTracker::default();
        let key = |i: u64| format!("k{:04}", (i * 7919) % 1000).into_bytes();
        assert_eq!(drive(&mut t, &cfg, 10, 50, key), None);
    }

    #[test]
    fn busy_windows_must_be_consecutive() {
        let cfg = cfg();
        let mut t = LoadTracker::default();
        let key = |i: u64| format!("k{:04}", (i * 7919) % 1000).into_bytes();
        let mut now = Instant::now();
        t.on_tick(&cfg, now);
        for per_window in [500, 10, 500] {
            for i in 0..per_window {
                t.record(&cfg, &key(i));
            }
            now += cfg.window;
            assert_eq!(t.on_tick(&cfg, now), None);
        }
    }

    #[test]
    fn one_hot_key_is_not_split() {
        let cfg = cfg();
        let mut t = LoadTracker::default();
        assert_eq!(drive(&mut t, &cfg, 5, 1000, |_| b"hot".to_vec()), None);
    }

    #[test]
    fn a_skewed_load_splits_where_it_divides_evenly() {
        let cfg = cfg();
        let mut t = LoadTracker::default();
        // 90% of requests on keys a000..a009, 10% spread over b000..b999: an
        // even division lies inside the hot a-keys, never among the b-keys.
        let key = |i: u64| {
            if i.is_multiple_of(10) {
                format!("b{:03}", i % 1000).into_bytes()
            } else {
                format!("a{:03}", i % 10).into_bytes()
            }
        };
        let split = drive(&mut t, &cfg, 4, 2000, key).expect("split key");
        assert_eq!(
            split[0],
            b'a',
            "split at {:?}",
            String::from_utf8_lossy(&split)
        );
    }

    #[test]
    fn disabled_tracker_does_nothing() {
        let cfg = LoadSplitConfig {
            qps_threshold: 0,
            ..cfg()
        };
        let mut t = LoadTracker::default();
        let key = |i: u64| format!("k{:04}", (i * 7919) % 1000).into_bytes();
        assert_eq!(drive(&mut t, &cfg, 5, 5000, key), None);
        assert!(t.sample.is_empty());
    }
}
