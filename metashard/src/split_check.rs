//! Automatic region splitting by size and key count.
//!
//! Cheap tracking, occasional exact counts: every peer counts the puts its
//! applied batches wrote ([`SizeTracker::on_write`]); when a leader's writes
//! since its last check reach its last count (at least 1/16 of a threshold),
//! or its estimate is over a threshold, the raftstore thread hands a
//! [`CheckTask`] to the checker task ([`run_checker`]). The checker scans the
//! region's `meta` keys once, off the raftstore thread (one pass, bounded
//! memory: [`KeySampler`]), reports the exact count and bytes back
//! (`StoreMsg::SizeChecked`, used by region heartbeats) and, when the region is
//! over `split_keys` or `split_size` (and above the `min_keys` floor, and its
//! last automatic split is `min_interval` ago), splits it exactly like the
//! `split-region` operator: new ids from PD, one Raft admin entry. The scan
//! also counted both halves (up to the split key's sample), which it reports
//! for them once the split applied: halves are not scanned again until they
//! grow (operator and load splits, whose halves nobody counted, are scanned
//! a second after).
//!
//! Split key: the middle key by count rounded down to its object's prefix
//! (`apply::split::split_point`), unless a bucket boundary lies in the middle
//! half of the region: then the region is cut there, so a bucket stays whole
//! (LIST of a bucket touches fewer regions). Counts and the middle cover cf
//! `meta` only (object versions and bucket records: what LIST and the size of
//! the keyspace are about); multipart and GC records follow their objects.

use std::time::{Duration, Instant};

use kura_pd_client::PdClient;
use kura_proto::common::Region;
use kura_proto::metashard::Cf;
use tokio::sync::{mpsc, oneshot};

use crate::apply::split::{check_split_key, split_point};
use crate::engine::Engine;
use crate::fsm::{Router, StoreMsg};
use crate::keys::FAMILY_OBJECT;

/// Thresholds and pacing of automatic splits.
#[derive(Debug, Clone)]
pub struct SplitCheckConfig {
    /// Split a region holding more `meta` keys than this (0: no key threshold).
    pub split_keys: u64,
    /// Split a region whose `meta` keys and values exceed this many bytes (0: no size threshold).
    pub split_size: u64,
    /// Never split a region holding fewer keys than this.
    pub min_keys: u64,
    /// Least time between two automatic splits of one region (and between a
    /// region's creation by a split and its own first automatic split).
    pub min_interval: Duration,
    /// Least time between two scans of one region.
    pub min_check_interval: Duration,
}

impl Default for SplitCheckConfig {
    fn default() -> Self {
        SplitCheckConfig {
            split_keys: 200_000,
            split_size: 96 << 20,
            min_keys: 1_000,
            min_interval: Duration::from_secs(10),
            min_check_interval: Duration::from_secs(1),
        }
    }
}

impl SplitCheckConfig {
    /// No threshold set: regions are never checked nor split automatically.
    pub fn disabled(&self) -> bool {
        self.split_keys == 0 && self.split_size == 0
    }

    /// Whether a region of `keys` keys and `bytes` bytes should split.
    pub fn over_threshold(&self, keys: u64, bytes: u64) -> bool {
        if keys < self.min_keys.max(2) {
            return false;
        }
        (self.split_keys > 0 && keys > self.split_keys)
            || (self.split_size > 0 && bytes > self.split_size)
    }

    /// The least writes (keys, bytes) since the last check after which a
    /// region is checked again: 1/16 of each threshold.
    fn step(&self) -> (u64, u64) {
        let part = |t: u64| if t == 0 { u64::MAX } else { (t / 16).max(1) };
        (part(self.split_keys), part(self.split_size))
    }
}

/// A peer's view of its region's size: the last exact count plus what was
/// written since. Puts that overwrite a key count as new until the next check.
#[derive(Debug, Clone, Default)]
pub struct SizeTracker {
    /// Last scanned (keys, bytes); `None` until the first check.
    checked: Option<(u64, u64)>,
    written_keys: u64,
    written_bytes: u64,
    /// `written_*` when the running check was queued: a count subtracts only
    /// these, so writes applied while it scanned stay (counted twice at worst:
    /// the estimate stays an upper bound).
    written_at_queue: (u64, u64),
    /// A check is queued or running.
    checking: bool,
    last_check: Option<Instant>,
    last_split: Option<Instant>,
}

impl SizeTracker {
    /// A tracker for a region a split just created: it waits `min_interval`
    /// before its own first automatic split, and `min_check_interval` before
    /// its first scan (an automatic split's checker sends both halves' counts
    /// meanwhile). `written`: the parent's writes since its last count (either
    /// half may hold them; both keep them, an overestimate).
    pub fn after_split(now: Instant, written: (u64, u64)) -> Self {
        SizeTracker {
            written_keys: written.0,
            written_bytes: written.1,
            last_split: Some(now),
            last_check: Some(now),
            ..Default::default()
        }
    }

    /// Puts counted since the last check: (keys, bytes).
    pub fn written(&self) -> (u64, u64) {
        (self.written_keys, self.written_bytes)
    }

    /// An applied batch put `keys` keys of `bytes` bytes.
    pub fn on_write(&mut self, keys: u64, bytes: u64) {
        self.written_keys = self.written_keys.saturating_add(keys);
        self.written_bytes = self.written_bytes.saturating_add(bytes);
    }

    /// Approximate (keys, bytes) now: last check plus writes since.
    pub fn estimate(&self) -> (u64, u64) {
        let (k, b) = self.checked.unwrap_or((0, 0));
        (
            k.saturating_add(self.written_keys),
            b.saturating_add(self.written_bytes),
        )
    }

    /// The region's range changed (split applied): the last count no longer
    /// holds. No scan for `min_check_interval`, as in [`Self::after_split`].
    pub fn on_split(&mut self, now: Instant) {
        self.checked = None;
        self.written_at_queue = (0, 0);
        self.last_split = Some(now);
        self.last_check = Some(now);
    }

    /// Whether the leader should queue a check now.
    pub fn needs_check(&self, cfg: &SplitCheckConfig, now: Instant) -> bool {
        if cfg.disabled() || self.checking {
            return false;
        }
        if self
            .last_check
            .is_some_and(|t| now.duration_since(t) < cfg.min_check_interval)
        {
            return false;
        }
        let Some((checked_keys, checked_bytes)) = self.checked else {
            return true;
        };
        // A scan reads the whole region: counting again after a fixed step
        // made a region's scans add up to ~8x its size by the time it split.
        // The step grows with the region (its last count: the estimate, an
        // upper bound, doubled), so the scans of a growing region add up to
        // about twice its size; a region that may have crossed a threshold
        // is counted after one base step.
        let (step_keys, step_bytes) = cfg.step();
        let written =
            |keys: u64, bytes: u64| self.written_keys >= keys || self.written_bytes >= bytes;
        if written(step_keys.max(checked_keys), step_bytes.max(checked_bytes)) {
            return true;
        }
        let (k, b) = self.estimate();
        if !cfg.over_threshold(k, b) {
            return false;
        }
        // Over a threshold but a split was not allowed (or failed): look again
        // once a split may run.
        written(step_keys, step_bytes)
            || (cfg.over_threshold(checked_keys, checked_bytes) && self.may_split(cfg, now))
    }

    /// Whether an automatic split may run now (rate limit).
    pub fn may_split(&self, cfg: &SplitCheckConfig, now: Instant) -> bool {
        self.last_split
            .is_none_or(|t| now.duration_since(t) >= cfg.min_interval)
    }

    /// A check was queued.
    pub fn on_check_queued(&mut self, now: Instant) {
        self.checking = true;
        self.last_check = Some(now);
        self.written_at_queue = self.written();
    }

    /// A check finished (or a split's checker counted this half): `counted`
    /// is the exact (keys, bytes) unless the region changed while it ran.
    /// Writes applied since the check was queued may or may not be in the
    /// count; they stay in the estimate (the next check corrects).
    pub fn on_checked(&mut self, counted: Option<(u64, u64)>, now: Instant) {
        self.checking = false;
        self.last_check = Some(now);
        let (k, b) = std::mem::take(&mut self.written_at_queue);
        if let Some(c) = counted {
            self.checked = Some(c);
            self.written_keys = self.written_keys.saturating_sub(k);
            self.written_bytes = self.written_bytes.saturating_sub(b);
        }
    }
}

/// Keys at evenly spaced positions of a key stream, and the bucket
/// boundaries in it, with bounded memory: when a list reaches `2 * cap`
/// entries every other one is dropped and the spacing doubles.
#[derive(Debug)]
pub struct KeySampler {
    cap: usize,
    n: u64,
    bytes: u64,
    stride: u64,
    samples: Vec<Sample>,
    boundary_stride: u64,
    boundaries_seen: u64,
    boundaries: Vec<Sample>,
    group: Vec<u8>,
}

/// A key of the stream with the keys and bytes fed before it.
#[derive(Debug, Clone)]
struct Sample {
    n: u64,
    bytes: u64,
    key: Vec<u8>,
}

/// Where to split a scanned region, and roughly how much lies left of it
/// (counted up to the sampled key the point was taken from; an object's
/// versions before that key are counted left though they go right).
#[derive(Debug, Clone, PartialEq)]
pub struct SplitAt {
    pub key: Vec<u8>,
    pub left_keys: u64,
    pub left_bytes: u64,
}

/// The group a key belongs to: `0x02 bucket_id` for object keys, its family
/// byte otherwise. A change of group is a bucket boundary.
fn group_of(key: &[u8]) -> &[u8] {
    if key.first() == Some(&FAMILY_OBJECT) && key.len() >= 9 {
        &key[..9]
    } else {
        &key[..key.len().min(1)]
    }
}

impl KeySampler {
    pub fn new(cap: usize) -> Self {
        KeySampler {
            cap: cap.max(2),
            n: 0,
            bytes: 0,
            stride: 1,
            samples: Vec::new(),
            boundary_stride: 1,
            boundaries_seen: 0,
            boundaries: Vec::new(),
            group: Vec::new(),
        }
    }

    /// Feeds the next key (in key order) and its value's length.
    pub fn push(&mut self, key: &[u8], value_len: usize) {
        let g = group_of(key);
        if self.n > 0 && g != self.group.as_slice() {
            if self.boundaries_seen.is_multiple_of(self.boundary_stride) {
                self.boundaries.push(Sample {
                    n: self.n,
                    bytes: self.bytes,
                    key: g.to_vec(),
                });
                if self.boundaries.len() >= 2 * self.cap {
                    thin(&mut self.boundaries);
                    self.boundary_stride *= 2;
                }
            }
            self.boundaries_seen += 1;
        }
        if self.n == 0 || g != self.group.as_slice() {
            self.group = g.to_vec();
        }
        if self.n.is_multiple_of(self.stride) {
            self.samples.push(Sample {
                n: self.n,
                bytes: self.bytes,
                key: key.to_vec(),
            });
            if self.samples.len() >= 2 * self.cap {
                thin(&mut self.samples);
                self.stride *= 2;
            }
        }
        self.n += 1;
        self.bytes += (key.len() + value_len) as u64;
    }

    /// Keys fed so far.
    pub fn keys(&self) -> u64 {
        self.n
    }

    /// Bytes (keys + values) fed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Where to split `region`, whose keys were fed: a bucket boundary in the
    /// middle half closest to the middle, else the middle key's object
    /// prefix (or the next sampled key's, when the middle one's object starts
    /// the region). `None`: no point strictly inside.
    pub fn split_key(&self, region: &Region) -> Option<Vec<u8>> {
        self.split_at(region).map(|s| s.key)
    }

    /// [`Self::split_key`] with the keys and bytes left of it.
    pub fn split_at(&self, region: &Region) -> Option<SplitAt> {
        if self.n < 2 {
            return None;
        }
        let mid = self.n / 2;
        let (lo, hi) = (self.n / 4, self.n - self.n / 4);
        let at = |s: &Sample, key: Vec<u8>| SplitAt {
            key,
            left_keys: s.n,
            left_bytes: s.bytes,
        };
        let boundary = self
            .boundaries
            .iter()
            .filter(|s| s.n >= lo.max(1) && s.n <= hi)
            .filter(|s| check_split_key(region, &s.key).is_ok())
            .min_by_key(|s| s.n.abs_diff(mid));
        if let Some(s) = boundary {
            return Some(at(s, s.key.clone()));
        }
        let first = self.samples.partition_point(|s| s.n < mid);
        self.samples[first..]
            .iter()
            .chain(self.samples[..first].iter().rev())
            .find_map(|s| split_point(region, &s.key).map(|k| at(s, k)))
    }
}

fn thin<T>(v: &mut Vec<T>) {
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        i % 2 == 1
    });
}

/// Entries kept per sampled list (memory: a few hundred KB at most).
const SAMPLE_CAP: usize = 1024;

/// What one scan of a region found.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionScan {
    pub keys: u64,
    pub bytes: u64,
    pub split: Option<SplitAt>,
}

/// Counts `region`'s `meta` keys and bytes in one pass and picks a split key.
pub fn scan_region(engine: &Engine, region: &Region) -> Result<RegionScan, crate::Error> {
    let mut s = KeySampler::new(SAMPLE_CAP);
    engine.for_each_data(Cf::Meta, &region.start_key, &region.end_key, |k, v| {
        s.push(k, v.len());
        true
    })?;
    crate::metrics::SPLIT_CHECK_SCANS.inc();
    crate::metrics::SPLIT_CHECK_SCANNED_BYTES.inc_by(s.bytes());
    Ok(RegionScan {
        keys: s.keys(),
        bytes: s.bytes(),
        split: s.split_at(region),
    })
}

/// A region the raftstore thread wants checked (its leader is here).
#[derive(Debug)]
pub struct CheckTask {
    pub region: Region,
    /// The rate limit allows an automatic split now.
    pub may_split: bool,
    /// The region is busy and its load divides evenly here
    /// (`load_split`): split at this key's object, without a scan.
    pub load_split_key: Option<Vec<u8>>,
}

/// The checker task: scans queued regions one at a time (a blocking thread
/// per scan), reports sizes, and splits regions over a threshold. Without
/// `pd` (tests) it only counts.
pub async fn run_checker(
    cfg: SplitCheckConfig,
    engine: Engine,
    router: Router,
    pd: Option<PdClient>,
    // Borrowed: a supervised restart after a panic keeps the same queue.
    tasks: &mut mpsc::UnboundedReceiver<CheckTask>,
) {
    while let Some(task) = tasks.recv().await {
        let region = task.region;
        let region_id = region.id;
        if let Some(key) = task.load_split_key {
            split_by_load(&router, pd.as_ref(), &region, &key).await;
            continue;
        }
        let scanned = {
            let engine = engine.clone();
            let region = region.clone();
            tokio::task::spawn_blocking(move || scan_region(&engine, &region)).await
        };
        let scan = match scanned {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::warn!(region_id, error = %e, "split check scan failed");
                None
            }
            Err(e) => {
                tracing::warn!(region_id, error = %e, "split check task failed");
                None
            }
        };
        let split = scan.as_ref().and_then(|s| {
            (task.may_split && cfg.over_threshold(s.keys, s.bytes))
                .then(|| s.split.clone())
                .flatten()
        });
        let _ = router.send(StoreMsg::SizeChecked {
            region_id,
            epoch: region.epoch,
            counted: scan.as_ref().map(|s| (s.keys, s.bytes)),
            splitting: split.is_some(),
        });
        if let (Some(at), Some(pd)) = (split, pd.as_ref()) {
            let (keys, bytes) = scan.map(|s| (s.keys, s.bytes)).unwrap_or_default();
            tracing::info!(region_id, keys, bytes, "region over its split threshold");
            match split_now(&router, pd, &region, at.key).await {
                // The scan already counted both halves: they need no scan of
                // their own before they grow (counting them at once was most
                // of the checker's reading while regions split steadily).
                Ok(halves) => {
                    let left = (at.left_keys, at.left_bytes);
                    let right = (keys - at.left_keys, bytes - at.left_bytes);
                    for (half, counted) in halves.iter().zip([left, right]) {
                        let _ = router.send(StoreMsg::SizeChecked {
                            region_id: half.id,
                            epoch: half.epoch,
                            counted: Some(counted),
                            splitting: false,
                        });
                    }
                }
                Err(e) => tracing::info!(region_id, error = %e, "automatic split failed"),
            }
        }
    }
}

/// Splits a busy `region` at the object holding `key` (see `load_split`).
async fn split_by_load(router: &Router, pd: Option<&PdClient>, region: &Region, key: &[u8]) {
    let region_id = region.id;
    let at = split_point(region, key);
    let _ = router.send(StoreMsg::SizeChecked {
        region_id,
        epoch: region.epoch,
        counted: None,
        splitting: at.is_some() && pd.is_some(),
    });
    let (Some(at), Some(pd)) = (at, pd) else {
        return;
    };
    tracing::info!(region_id, "region busy: splitting by load");
    match split_now(router, pd, region, at).await {
        Ok(_) => crate::metrics::LOAD_SPLITS.inc(),
        Err(e) => tracing::info!(region_id, error = %e, "split by load failed"),
    }
}

/// Why an automatic split did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("PD cannot allocate ids: {0}")]
    Pd(#[from] kura_pd_client::PdError),
    #[error("the store stopped")]
    Stopped,
    #[error("no answer from raft in time")]
    Timeout,
    #[error("region error: {0}")]
    Region(String),
}

impl SplitError {
    pub fn is_retryable(&self) -> bool {
        match self {
            SplitError::Pd(e) => e.is_retryable(),
            SplitError::Stopped => false,
            SplitError::Timeout => true,
            SplitError::Region(_) => true,
        }
    }
}

/// How long a split proposal may take before the checker stops waiting.
const SPLIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Splits `region` (as scanned: a changed epoch makes it fail) at `key`
/// through this store's leader peer; the same path as `Metashard.SplitRegion`.
pub async fn split_now(
    router: &Router,
    pd: &PdClient,
    region: &Region,
    key: Vec<u8>,
) -> Result<Vec<Region>, SplitError> {
    let n = region.peers.len() as u32 + 1;
    let first = pd.alloc_ids(n).await?;
    let (tx, rx) = oneshot::channel();
    router
        .send(StoreMsg::Split {
            region_id: region.id,
            epoch: region.epoch,
            split_key: key,
            new_region_id: first,
            new_peer_ids: (first + 1..first + u64::from(n)).collect(),
            cb: tx,
        })
        .map_err(|_| SplitError::Stopped)?;
    match tokio::time::timeout(SPLIT_TIMEOUT, rx).await {
        Err(_) => Err(SplitError::Timeout),
        Ok(Err(_)) => Err(SplitError::Stopped),
        Ok(Ok(Err(e))) => Err(SplitError::Region(e.message)),
        Ok(Ok(Ok(regions))) => {
            tracing::info!(
                region_id = region.id,
                new_region_id = first,
                "automatic split done"
            );
            Ok(regions)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use kura_proto::common::RegionEpoch;

    fn cfg() -> SplitCheckConfig {
        SplitCheckConfig {
            split_keys: 1600,
            split_size: 1 << 20,
            min_keys: 100,
            min_interval: Duration::from_secs(10),
            min_check_interval: Duration::from_secs(1),
        }
    }

    fn whole() -> Region {
        Region {
            id: 1,
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn thresholds_and_floor() {
        let c = cfg();
        assert!(!c.over_threshold(1600, 100));
        assert!(c.over_threshold(1601, 100));
        assert!(c.over_threshold(200, 2 << 20), "size alone");
        assert!(!c.over_threshold(99, 2 << 20), "below the floor");
        let off = SplitCheckConfig {
            split_keys: 0,
            split_size: 0,
            ..cfg()
        };
        assert!(off.disabled() && !off.over_threshold(u64::MAX, u64::MAX));
    }

    #[test]
    fn writes_applied_while_a_scan_ran_stay_in_the_estimate() {
        let t0 = Instant::now();
        let mut t = SizeTracker::default();
        t.on_write(10, 100);
        t.on_check_queued(t0);
        t.on_write(4, 40); // applied while the scan ran: maybe counted, maybe not
        t.on_checked(Some((12, 120)), t0);
        assert_eq!(t.estimate(), (16, 160), "an upper bound");
        // A failed scan forgets nothing.
        t.on_check_queued(t0);
        t.on_write(1, 10);
        t.on_checked(None, t0);
        assert_eq!(t.estimate(), (17, 170));
    }

    #[test]
    fn tracker_triggers_checks_and_rate_limits_splits() {
        let c = cfg();
        let t0 = Instant::now();
        let mut t = SizeTracker::default();
        assert!(t.needs_check(&c, t0), "unknown size: check");
        t.on_check_queued(t0);
        assert!(!t.needs_check(&c, t0 + Duration::from_secs(5)), "in flight");
        t.on_checked(Some((10, 1000)), t0);
        assert!(!t.needs_check(&c, t0 + Duration::from_secs(5)));
        t.on_write(99, 99 * 100);
        assert_eq!(t.estimate(), (109, 10_900));
        assert!(
            !t.needs_check(&c, t0 + Duration::from_secs(5)),
            "below step"
        );
        t.on_write(1, 100);
        assert!(!t.needs_check(&c, t0), "checked less than a second ago");
        assert!(
            t.needs_check(&c, t0 + Duration::from_secs(2)),
            "step reached"
        );
        // Over the threshold, just split: wait for min_interval.
        let t1 = t0 + Duration::from_secs(3);
        t.on_check_queued(t1);
        t.on_checked(Some((5000, 1000)), t1);
        t.on_split(t1);
        t.on_checked(Some((2500, 500)), t1);
        assert!(!t.may_split(&c, t1 + Duration::from_secs(9)));
        assert!(!t.needs_check(&c, t1 + Duration::from_secs(9)));
        assert!(t.may_split(&c, t1 + Duration::from_secs(10)));
        assert!(t.needs_check(&c, t1 + Duration::from_secs(10)));
        // A failed scan keeps the old count.
        t.on_checked(None, t1);
        assert_eq!(t.estimate(), (2500, 500));
        let fresh = SizeTracker::after_split(t1, (7, 70));
        assert!(!fresh.may_split(&c, t1 + Duration::from_secs(1)));
        assert_eq!(
            fresh.estimate(),
            (7, 70),
            "the parent's writes since its count"
        );
    }

    #[test]
    fn a_big_region_is_counted_again_once_it_may_have_doubled_or_near_a_threshold() {
        let c = cfg(); // 1600 keys, base step 100 keys
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        let mut t = SizeTracker::default();
        t.on_checked(Some((700, 100_000)), t0);
        t.on_write(699, 699 * 10);
        assert!(
            !t.needs_check(&c, later),
            "under twice its count, far from a threshold"
        );
        t.on_write(1, 10);
        assert!(t.needs_check(&c, later), "may have doubled");
        let mut t = SizeTracker::default();
        t.on_checked(Some((1550, 100_000)), t0);
        t.on_write(60, 600);
        assert!(
            !t.needs_check(&c, later),
            "may be over, but under a base step written"
        );
        t.on_write(40, 400);
        assert!(
            t.needs_check(&c, later),
            "may be over a threshold: count it"
        );
    }

    fn obj(bucket: u64, i: u32) -> Vec<u8> {
        keys::object_version_key(bucket, format!("k{i:06}").as_bytes(), 0)
    }

    #[test]
    fn middle_of_one_bucket_is_an_object_prefix() {
        let mut s = KeySampler::new(8);
        for i in 0..1001 {
            s.push(&obj(7, i), 10);
        }
        assert_eq!(s.keys(), 1001);
        assert_eq!(s.bytes(), 1001 * (obj(7, 0).len() as u64 + 10));
        let k = s.split_key(&whole()).unwrap();
        // Sampled every 128th key with cap 8: close to the middle.
        let parts = keys::decode_object_key(&[k.clone(), vec![0; 8]].concat()).unwrap();
        let i: u32 = std::str::from_utf8(&parts.key[1..])
            .unwrap()
            .parse()
            .unwrap();
        assert!((380..=620).contains(&i), "{i}");
        assert_eq!(k, keys::object_prefix(7, &parts.key));
    }

    #[test]
    fn bucket_boundary_in_the_middle_half_wins() {
        let mut s = KeySampler::new(16);
        s.push(&keys::bucket_key("a"), 5);
        for i in 0..400 {
            s.push(&obj(7, i), 10);
        }
        for i in 0..600 {
            s.push(&obj(9, i), 10);
        }
        let mut b9 = vec![FAMILY_OBJECT];
        b9.extend_from_slice(&9u64.to_be_bytes());
        assert_eq!(s.split_key(&whole()), Some(b9));
        // The boundary at 10% is outside the middle half: middle of bucket 9.
        let mut s = KeySampler::new(16);
        for i in 0..100 {
            s.push(&obj(7, i), 10);
        }
        for i in 0..900 {
            s.push(&obj(9, i), 10);
        }
        let k = s.split_key(&whole()).unwrap();
        assert_eq!(keys::decode_object_key(&obj(9, 0)).unwrap().bucket_id, 9);
        assert!(k.starts_with(&obj(9, 0)[..9]) && k.len() > 9, "{k:?}");
    }

    #[test]
    fn many_small_buckets_still_find_a_boundary_near_the_middle() {
        let mut s = KeySampler::new(4);
        for b in 1..=1000u64 {
            for i in 0..3 {
                s.push(&obj(b, i), 1);
            }
        }
        let k = s.split_key(&whole()).unwrap();
        assert_eq!(k.len(), 9, "a bucket boundary");
        let b = u64::from_be_bytes(k[1..9].try_into().unwrap());
        assert!((250..=750).contains(&b), "{b}");
    }

    #[test]
    fn no_split_point_inside() {
        let mut s = KeySampler::new(8);
        assert_eq!(s.split_key(&whole()), None);
        // Every key is a version of one object at the region start.
        let mut r = whole();
        r.start_key = keys::object_prefix(7, b"x").into();
        for v in 0..100 {
            s.push(&keys::object_version_key(7, b"x", v), 1);
        }
        assert_eq!(s.split_key(&r), None);
        // Other objects follow: split at the first one after the middle.
        for v in 0..30 {
            s.push(&keys::object_version_key(7, b"y", v), 1);
        }
        assert_eq!(s.split_key(&r), Some(keys::object_prefix(7, b"y")));
    }

    #[test]
    fn scan_counts_the_region_only() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        let mut wb = e.batch();
        for i in 0..100 {
            wb.put_data(Cf::Meta, &obj(7, i), b"0123456789");
        }
        wb.put_data(Cf::Gc, &obj(7, 1), b"gc");
        e.write(wb, true).unwrap();
        let mut r = whole();
        r.end_key = keys::object_prefix(7, b"k000050").into();
        let s = scan_region(&e, &r).unwrap();
        assert_eq!(s.keys, 50);
        assert_eq!(s.bytes, 50 * (obj(7, 0).len() as u64 + 10));
        let at = s.split.unwrap();
        assert_eq!(at.key, keys::object_prefix(7, b"k000025"));
        assert_eq!(at.left_keys, 25);
        assert_eq!(at.left_bytes, 25 * (obj(7, 0).len() as u64 + 10));
    }
}
