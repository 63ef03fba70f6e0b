//! This gateway's running usage of each bucket whose writes are checked
//! against a quota (decision 0057).
//!
//! A bucket's usage read costs two counter reads and a scan of every pending
//! delta (hundreds under load, until the folder folds them), so a quota check
//! cannot read it for every write. Instead each bucket has an estimate: the
//! last read, plus every write this gateway admitted since that the read
//! cannot have counted (in flight, or committed after the read began, and not
//! among the deltas it saw), minus the admitted writes released without a
//! commit. Through this gateway the estimate is exact: each write's delta key
//! is chosen at admission, so "did the read see it" is a lookup. What it lags
//! is other gateways' writes and every delete (which only lower usage): a
//! check reads again when the estimate is older than [`super::quota::SNAPSHOT_TTL`],
//! and before it refuses a write.
//!
//! One read per bucket at a time: checks that need one wait for the one in
//! flight (`reading`) and use it when it is what they need.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{bucket_usage_seen, Scope, Usage};
use crate::context::Ctx;
use crate::error::{GwError, GwResult};

/// A read older than this is not applied: the committed writes it may have
/// missed are remembered this long at most.
const MAX_READ_AGE: Duration = Duration::from_secs(30);

/// Buckets tracked before idle ones are forgotten.
const MAX_BUCKETS: usize = 10_000;

/// The estimates of every bucket this gateway checks quotas for.
#[derive(Default)]
pub struct Estimates {
    buckets: Mutex<HashMap<u64, Arc<BucketEstimate>>>,
    /// `buckets.len()`, read without the lock by writes to unlimited buckets.
    tracked: AtomicUsize,
}

impl Estimates {
    /// The estimate of `bucket_id`, made empty (to be read) the first time.
    pub fn of(&self, bucket_id: u64) -> Arc<BucketEstimate> {
        let mut buckets = self.lock();
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&bucket_id) {
            // Held only here and by checks and writes in flight.
            buckets.retain(|_, e| Arc::strong_count(e) > 1);
        }
        let e = buckets.entry(bucket_id).or_default().clone();
        self.tracked.store(buckets.len(), Ordering::Relaxed);
        e
    }

    /// A write to `bucket_id` goes unchecked (it has no quota now): its
    /// estimate would miss it, so the next check starts from a read.
    pub fn forget(&self, bucket_id: u64) {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut buckets = self.lock();
        buckets.remove(&bucket_id);
        self.tracked.store(buckets.len(), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<BucketEstimate>>> {
        // Inserts and removals only: a panic elsewhere cannot leave it half-changed.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One bucket's estimate, and the right to read its usage.
#[derive(Default)]
pub struct BucketEstimate {
    state: Mutex<Estimate>,
    /// Held by the one check reading the bucket's usage.
    reading: tokio::sync::Mutex<()>,
}

impl BucketEstimate {
    pub fn lock(&self) -> MutexGuard<'_, Estimate> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `enough` true by reading the bucket's usage, unless the read
    /// another check has in flight makes it true first.
    pub async fn read_until(
        &self,
        ctx: &Ctx,
        scope: &Scope,
        enough: impl Fn(&Estimate) -> bool,
    ) -> GwResult<()> {
        let _reader = self.reading.lock().await;
        if enough(&self.lock()) {
            return Ok(());
        }
        let (n, began) = self.lock().begin_read();
        crate::metrics::quota_usage_read();
        let (usage, seen) = bucket_usage_seen(ctx, scope).await?;
        let seen: HashSet<Bytes> = seen.into_iter().collect();
        if self
            .lock()
            .apply_read(n, began, usage, &seen, Instant::now())
        {
            Ok(())
        } else {
            Err(GwError::Contention(
                "the bucket's usage read took too long".into(),
            ))
        }
    }
}

/// The last usage read of a bucket and this gateway's writes around it.
#[derive(Debug, Default)]
pub struct Estimate {
    /// The last read plus this gateway's writes it did not count.
    usage: Usage,
    /// When the read behind `usage` began (none yet: nothing is known).
    read_began: Option<Instant>,
    /// Reads begun so far, and the number of the one applied last.
    reads_begun: u64,
    applied: u64,
    /// Admitted writes in flight: admission id → (delta key, change).
    in_flight: HashMap<u64, (Bytes, Usage)>,
    /// Committed writes a read begun before their commit could miss, in
    /// commit order: (commit finished, delta key, change).
    committed: VecDeque<(Instant, Bytes, Usage)>,
}

impl Estimate {
    /// The bucket's usage with every write this gateway admitted, if the
    /// read behind it began less than `max_age` ago.
    pub fn usage_if_newer(&self, max_age: Duration) -> Option<Usage> {
        self.read_began
            .filter(|at| at.elapsed() < max_age)
            .map(|_| self.usage)
    }

    /// How many reads had begun; a read applied later with a higher number
    /// began after this moment ([`Estimate::read_since`]).
    pub fn reads_begun(&self) -> u64 {
        self.reads_begun
    }

    /// Whether a read begun after the `begun`-th has been applied.
    pub fn read_since(&self, begun: u64) -> bool {
        self.applied > begun
    }

    /// Counts an admitted write from now on.
    pub fn admit(&mut self, id: u64, delta_key: Bytes, change: Usage) {
        self.usage.add(change);
        self.in_flight.insert(id, (delta_key, change));
    }

    /// An admitted write is over: committed (its delta is in the metadata
    /// from `now` on) or not (it never will be).
    pub fn release(&mut self, id: u64, committed: bool, now: Instant) {
        let Some((key, change)) = self.in_flight.remove(&id) else {
            return;
        };
        if committed {
            self.committed.push_back((now, key, change));
        } else {
            self.usage.sub(change);
        }
    }

    fn begin_read(&mut self) -> (u64, Instant) {
        self.reads_begun += 1;
        (self.reads_begun, Instant::now())
    }

    /// The `n`-th read, begun at `began`, found `read` with the pending
    /// deltas `seen`. False when it is too old to apply.
    fn apply_read(
        &mut self,
        n: u64,
        began: Instant,
        read: Usage,
        seen: &HashSet<Bytes>,
        now: Instant,
    ) -> bool {
        if n <= self.applied {
            return true;
        }
        if now.duration_since(began) > MAX_READ_AGE {
            return false;
        }
        // Committed before the read began: counted by it, as a delta or in
        // the counter (a fold only follows a commit).
        while self
            .committed
            .front()
            .is_some_and(|(at, _, _)| *at <= began)
        {
            self.committed.pop_front();
        }
        // What is left committed after `began`, so within MAX_READ_AGE of now.
        let mut usage = read;
        let unseen = self
            .in_flight
            .values()
            .map(|(k, c)| (k, c))
            .chain(self.committed.iter().map(|(_, k, c)| (k, c)));
        for (key, change) in unseen {
            if !seen.contains(key) {
                usage.add(*change);
            }
        }
        self.usage = usage;
        self.read_began = Some(began);
        self.applied = n;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(bytes: i64, objects: i64) -> Usage {
        Usage { bytes, objects }
    }

    fn key(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn nothing_is_known_before_a_read() {
        let e = Estimate::default();
        assert_eq!(e.usage_if_newer(Duration::from_secs(3600)), None);
        assert!(!e.read_since(0));
    }

    #[test]
    fn admitted_writes_count_until_released_uncommitted() {
        let mut e = Estimate::default();
        let (n, began) = e.begin_read();
        assert!(e.apply_read(n, began, u(100, 1), &HashSet::new(), Instant::now()));
        e.admit(1, key("a"), u(10, 1));
        e.admit(2, key("b"), u(20, 1));
        assert_eq!(e.usage_if_newer(Duration::from_secs(60)), Some(u(130, 3)));
        e.release(1, false, Instant::now());
        e.release(2, true, Instant::now());
        assert_eq!(e.usage_if_newer(Duration::from_secs(60)), Some(u(120, 2)));
        // Released twice (never happens) changes nothing.
        e.release(1, false, Instant::now());
        assert_eq!(e.usage_if_newer(Duration::from_secs(60)), Some(u(120, 2)));
    }

    #[test]
    fn a_read_counts_each_write_of_this_gateway_once() {
        let mut e = Estimate::default();
        let (n, began) = e.begin_read();
        assert!(e.apply_read(n, began, u(0, 0), &HashSet::new(), Instant::now()));
        // Committed before the next read begins: the read has it.
        e.admit(1, key("before"), u(1, 1));
        e.release(1, true, Instant::now());
        std::thread::sleep(Duration::from_millis(2));
        let (n, began) = e.begin_read();
        std::thread::sleep(Duration::from_millis(2));
        // During the read: one commits and is seen, one commits unseen, one
        // stays in flight unseen, one stays in flight but is seen (its
        // commit landed, the gateway has not heard yet).
        for (id, k) in [(2, "seen"), (3, "unseen"), (4, "flying"), (5, "landed")] {
            e.admit(id, key(k), u(10 * id as i64, 1));
        }
        e.release(2, true, Instant::now());
        e.release(3, true, Instant::now());
        let seen: HashSet<Bytes> = [key("seen"), key("landed")].into_iter().collect();
        // The read: "before" (1) folded into the counter, "seen" (20) and
        // "landed" (50) pending.
        assert!(e.apply_read(n, began, u(71, 3), &seen, Instant::now()));
        // + unseen 30 + flying 40.
        assert_eq!(e.usage_if_newer(Duration::from_secs(60)), Some(u(141, 5)));
        assert!(e.read_since(n - 1) && !e.read_since(n));
        // Only what committed after the read began is kept.
        assert_eq!(e.committed.len(), 2);
        // A read begun earlier than the one applied is ignored.
        assert!(e.apply_read(n - 1, began, u(0, 0), &seen, Instant::now()));
        assert_eq!(e.usage_if_newer(Duration::from_secs(60)), Some(u(141, 5)));
    }

    #[test]
    fn a_read_too_old_is_not_applied() {
        let mut e = Estimate::default();
        let (n, began) = e.begin_read();
        let late = began + MAX_READ_AGE + Duration::from_secs(1);
        assert!(!e.apply_read(n, began, u(5, 5), &HashSet::new(), late));
        assert_eq!(e.usage_if_newer(Duration::from_secs(3600)), None);
    }
}
