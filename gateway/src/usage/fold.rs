//! The folder: adds pending usage deltas into their bucket's counter.
//!
//! One fold of a bucket, safe with any number of folders at once (every
//! gateway runs one) and against a crash at any step:
//! 1. read the counter (its `folds` number changes with every fold, so a
//!    compare-and-set against a stale read fails: no ABA);
//! 2. if it lists keys of an unfinished fold, finish that first: delete
//!    those deltas, clear the list;
//! 3. else read up to [`FOLD_BATCH`] deltas, add them up, and CAS the
//!    counter to (old + sum, folding = their keys);
//! 4. delete the deltas (one batch per region), then CAS the list away.
//!
//! A delta is counted when step 3 lands and is ignored by readers from then
//! on (it is in `folding` until deleted), so it is counted exactly once.
//!
//! When: a gateway folds a bucket shortly after it wrote a delta there
//! ([`Folder::note`], debounced by [`FOLD_DELAY`]), and sweeps every
//! bucket's pending deltas every [`SWEEP_INTERVAL`] to finish what a dead
//! gateway left.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::{BucketUsage, UsageDelta};

use super::{counter, pending, Scope};
use crate::context::Ctx;
use crate::error::{GwError, GwResult};

/// Deltas folded in one step (they are listed in the counter meanwhile).
pub const FOLD_BATCH: usize = 500;
/// How long after a write its bucket is folded (writes in between share the fold).
pub const FOLD_DELAY: Duration = Duration::from_millis(200);
/// How often every bucket's pending deltas are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Buckets this gateway wrote deltas to, and since when.
#[derive(Default)]
pub struct Folder {
    noted: std::sync::Mutex<HashMap<u64, Instant>>,
}

impl Folder {
    /// `bucket_id` got a delta: fold it soon.
    pub fn note(&self, bucket_id: u64) {
        let mut noted = self.noted.lock().expect("folder lock poisoned");
        noted.entry(bucket_id).or_insert_with(Instant::now);
    }

    /// The noted buckets whose delay has passed (removed from the list).
    fn due(&self) -> Vec<u64> {
        let mut noted = self.noted.lock().expect("folder lock poisoned");
        let due: Vec<u64> = noted
            .iter()
            .filter(|(_, at)| at.elapsed() >= FOLD_DELAY)
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            noted.remove(id);
        }
        due
    }

    /// Runs until `shutdown`: folds noted buckets, sweeps all now and then.
    pub async fn run(
        self: Arc<Self>,
        ctx: Arc<Ctx>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut last_sweep = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FOLD_DELAY / 2) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            for bucket_id in self.due() {
                if let Err(e) = fold_bucket(&ctx, bucket_id).await {
                    tracing::debug!(bucket_id, error = %e, "usage fold failed; retried later");
                    self.note(bucket_id);
                }
            }
            if last_sweep.elapsed() >= SWEEP_INTERVAL {
                last_sweep = Instant::now();
                if let Err(e) = sweep(&ctx).await {
                    tracing::debug!(error = %e, "usage sweep failed; retried later");
                }
            }
        }
    }
}

/// Folds every bucket that has pending deltas.
pub async fn sweep(ctx: &Ctx) -> GwResult<()> {
    let (mut start, end) = keys::object_family_range();
    loop {
        let page = ctx.meta.scan(Cf::Usage, &start, &end, 1, true).await?;
        let Some(kv) = page.first() else {
            return Ok(());
        };
        let Some(parts) = keys::decode_object_key(&kv.key) else {
            return Err(GwError::Internal("unreadable usage delta key".into()));
        };
        fold_bucket(ctx, parts.bucket_id).await?;
        // Next bucket: whatever is left of this one is a later write's.
        start = keys::bucket_end(parts.bucket_id);
    }
}

/// Folds the pending deltas of one bucket; returns how many.
pub async fn fold_bucket(ctx: &Ctx, bucket_id: u64) -> GwResult<usize> {
    let mut folded = 0;
    // The counter's key needs the bucket's tenant, which every delta names.
    let (start, end) = keys::object_range(bucket_id, b"");
    let first = ctx.meta.scan(Cf::Usage, &start, &end, 1, false).await?;
    let Some(first) = first.first() else {
        return Ok(0);
    };
    let d: UsageDelta = keys::decode_value(&first.value)?;
    let scope = Scope {
        bucket_id,
        tenant: d.tenant,
        owner: d.owner,
        versioning: Default::default(),
        bucket_name: String::new(),
    };
    let ckey = keys::bucket_usage_key(&scope.tenant, bucket_id);
    for _ in 0..16 {
        let cur = counter(ctx, &scope).await?;
        let (old_raw, mut rec) = match cur {
            Some(c) => (Some(c.raw), c.record),
            None => (
                None,
                BucketUsage {
                    bucket_id,
                    owner: scope.owner.clone(),
                    ..Default::default()
                },
            ),
        };
        if !rec.folding.is_empty() {
            finish(ctx, &ckey, old_raw, rec).await?;
            continue;
        }
        let (keys_batch, sum) = pending(ctx, bucket_id, FOLD_BATCH, &[]).await?;
        if keys_batch.is_empty() {
            return Ok(folded);
        }
        rec.bytes += sum.bytes;
        rec.objects += sum.objects;
        rec.folds += 1;
        rec.folding = keys_batch.clone();
        let value = keys::encode_value(&rec);
        if !cas(ctx, &ckey, old_raw.as_ref(), &value).await? {
            continue; // another folder moved the counter: read again
        }
        folded += keys_batch.len();
        finish(ctx, &ckey, Some(value.into()), rec).await?;
        if keys_batch.len() < FOLD_BATCH {
            return Ok(folded);
        }
    }
    Err(GwError::Contention(
        "usage counter changed during every fold attempt".into(),
    ))
}

/// Step 4: deletes the listed deltas, then clears the list (a failed CAS
/// means another folder cleared it already).
async fn finish(ctx: &Ctx, ckey: &[u8], raw: Option<Bytes>, mut rec: BucketUsage) -> GwResult<()> {
    ctx.meta
        .delete_many(Cf::Usage, std::mem::take(&mut rec.folding))
        .await?;
    cas(ctx, ckey, raw.as_ref(), &keys::encode_value(&rec)).await?;
    Ok(())
}

/// Replaces the counter read as `old` (absent: `None`) with `value`.
async fn cas(ctx: &Ctx, key: &[u8], old: Option<&Bytes>, value: &[u8]) -> GwResult<bool> {
    ctx.meta.swap(Cf::Usage, key, old, value).await
}
