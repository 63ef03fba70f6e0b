//! Storage quotas: bytes and objects per bucket, user (the bucket's owner)
//! and tenant; buckets per user and tenant. Checked before a write's body is
//! read (PUT, copy, multipart complete) and on CreateBucket; refused with
//! `403 QuotaExceeded`.
//!
//! What a check counts, per scope that has a quota:
//! - the bucket: its estimate (`estimate.rs`): a usage read (counter +
//!   pending deltas, with the keys of the deltas it saw) at most
//!   [`SNAPSHOT_TTL`] old, plus this gateway's writes to it that the read
//!   cannot have seen: admitted ones whose delta it did not see, and ones
//!   committed after it began (each write's delta key is chosen at
//!   admission, so "did the read see it" is a lookup, not a guess). Past
//!   [`NEAR_LIMIT`] of a limit, and before any refusal, the check waits for
//!   a read begun after it began;
//! - the owner and the tenant: a snapshot of the tenant's buckets (counter
//!   plus pending deltas each, at most [`SNAPSHOT_TTL`] old), plus the
//!   changes this gateway committed since, plus its writes in flight, with
//!   the written bucket's own entry replaced by its estimate.
//!
//! So bucket quotas hold exactly through one gateway, bursts included; user
//! and tenant quotas hold exactly for writes through one gateway one after
//! another, and may count a write twice for a moment under a burst (refusing
//! early, never late). Writes spread over several gateways can overshoot by
//! what the others have in flight, and, below [`NEAR_LIMIT`] of the limit,
//! by what they committed in the last [`SNAPSHOT_TTL`] (plus, for user and
//! tenant quotas, what they committed to other buckets of the tenant in
//! that time). docs/tenancy.md says so. A write that replaces an object is
//! counted by its difference.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::{BucketRecord, Quota};

use super::estimate::{BucketEstimate, Estimates};
use super::{bucket_usage, delta_key, new_delta_id, DeltaId, Scope, Usage};
use crate::context::Ctx;
use crate::error::{GwError, GwResult};

/// Age limit of a tenant's counter snapshot.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum ScopeKey {
    Bucket(u64),
    User(String),
    Tenant(String),
}

/// One bucket's usage in a tenant snapshot or ledger: (bucket id, owner, usage).
type BucketEntry = (u64, String, Usage);

/// This gateway's admitted writes, tenant snapshots, and the changes it
/// committed since each snapshot was taken.
/// A listing of bucket usage and when it was taken.
type Snapshot = (Instant, Arc<Vec<BucketEntry>>);

#[derive(Default)]
pub struct Quotas {
    next_id: std::sync::atomic::AtomicU64,
    /// Usage of the buckets written to, with this gateway's writes.
    estimates: Estimates,
    /// In-flight writes per user and tenant scope.
    reserved: Mutex<HashMap<ScopeKey, Usage>>,
    snapshots: Mutex<HashMap<String, Snapshot>>,
    /// Held by the one check reading a tenant's snapshot.
    snapshot_readers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    ledger: Mutex<HashMap<String, Vec<(Instant, BucketEntry)>>>,
}

/// A write admitted by the quota check: the delta id its commit must use,
/// and its hold on the quotas until the write is over.
pub struct Admission {
    pub delta_id: DeltaId,
    hold: Option<Hold>,
}

struct Hold {
    ctx: Arc<Ctx>,
    /// The written bucket's estimate, and this write's id in it.
    bucket: (Arc<BucketEstimate>, u64),
    scopes: Vec<(ScopeKey, Usage)>,
    committed: bool,
}

impl Admission {
    fn unlimited() -> Admission {
        Admission {
            delta_id: new_delta_id(),
            hold: None,
        }
    }

    /// The write committed: its delta is in the metadata from now on.
    pub fn committed(mut self) {
        if let Some(h) = self.hold.as_mut() {
            h.committed = true;
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let (estimate, id) = &self.bucket;
        estimate.lock().release(*id, self.committed, Instant::now());
        // User and tenant scopes count committed writes through the ledger.
        let mut r = self
            .ctx
            .quotas
            .reserved
            .lock()
            .expect("quota lock poisoned");
        for (k, u) in self.scopes.drain(..) {
            if let Some(cur) = r.get_mut(&k) {
                cur.sub(u);
                if *cur == Usage::default() {
                    r.remove(&k);
                }
            }
        }
    }
}

/// Past this share of a limit, every check reads the bucket's usage afresh
/// instead of trusting the estimate (which lags other gateways by up to
/// [`SNAPSHOT_TTL`]); Ceph RGW's "soft threshold" is the same idea.
const NEAR_LIMIT: f64 = 0.9;

/// What a check found, under the locks.
enum Decision {
    Admitted,
    /// The estimate is older than [`SNAPSHOT_TTL`].
    Stale,
    /// Within the limits, but past [`NEAR_LIMIT`] of one.
    Near,
    Over(ScopeKey, String),
}

/// Whether `u` grown by `add` passes [`NEAR_LIMIT`] of a limit of `q`.
fn near_limit(q: &Quota, u: Usage, add: Usage) -> bool {
    let past = |max: Option<u64>, used: i64, added: i64| {
        max.is_some_and(|m| added > 0 && (used + added) as f64 > m as f64 * NEAR_LIMIT)
    };
    past(q.max_bytes, u.bytes, add.bytes) || past(q.max_objects, u.objects, add.objects)
}

fn limited(q: Option<&Quota>) -> Option<&Quota> {
    q.filter(|q| q.max_bytes.is_some() || q.max_objects.is_some())
}

fn exceeds(q: &Quota, u: Usage, add: Usage) -> Option<String> {
    if let Some(max) = q.max_bytes {
        if add.bytes > 0 && u.bytes + add.bytes > i64::try_from(max).unwrap_or(i64::MAX) {
            return Some(format!("{} + {} bytes > {max}", u.bytes.max(0), add.bytes));
        }
    }
    if let Some(max) = q.max_objects {
        if add.objects > 0 && u.objects + add.objects > i64::try_from(max).unwrap_or(i64::MAX) {
            return Some(format!(
                "{} + {} objects > {max}",
                u.objects.max(0),
                add.objects
            ));
        }
    }
    None
}

impl Quotas {
    /// The usage of the tenant's buckets other than `bucket_id`: those
    /// `owner` owns, and all of them. From the snapshot (refreshed when older
    /// than [`SNAPSHOT_TTL`], by one check at a time) and this gateway's
    /// changes since.
    async fn other_buckets_usage(
        &self,
        ctx: &Ctx,
        tenant: &str,
        bucket_id: u64,
        owner: &str,
    ) -> GwResult<(Usage, Usage)> {
        let (taken, snap) = match self.snapshot(tenant) {
            Some(s) => s,
            None => {
                let reader = self
                    .snapshot_readers
                    .lock()
                    .expect("quota lock poisoned")
                    .entry(tenant.to_string())
                    .or_default()
                    .clone();
                let _reading = reader.lock().await;
                match self.snapshot(tenant) {
                    Some(s) => s,
                    None => {
                        let taken = Instant::now();
                        let snap = Arc::new(tenant_snapshot(ctx, tenant).await?);
                        let mut snaps = self.snapshots.lock().expect("quota lock poisoned");
                        if snaps.len() > 10_000 {
                            snaps.clear();
                            self.snapshot_readers
                                .lock()
                                .expect("quota lock poisoned")
                                .clear();
                        }
                        snaps.insert(tenant.to_string(), (taken, snap.clone()));
                        (taken, snap)
                    }
                }
            }
        };
        let mut ledger = self.ledger.lock().expect("quota lock poisoned");
        let mut since: &[(Instant, BucketEntry)] = &[];
        if let Some(l) = ledger.get_mut(tenant) {
            // What the snapshot counts already is dropped from the ledger.
            l.retain(|(at, _)| *at >= taken);
            since = l;
        }
        let (mut owned, mut all) = (Usage::default(), Usage::default());
        for (id, o, u) in snap.iter().chain(since.iter().map(|(_, e)| e)) {
            if *id != bucket_id {
                all.add(*u);
                if o == owner {
                    owned.add(*u);
                }
            }
        }
        Ok((owned, all))
    }

    /// The tenant's snapshot, if it is younger than [`SNAPSHOT_TTL`].
    fn snapshot(&self, tenant: &str) -> Option<Snapshot> {
        self.snapshots
            .lock()
            .expect("quota lock poisoned")
            .get(tenant)
            .filter(|(at, _)| at.elapsed() < SNAPSHOT_TTL)
            .cloned()
    }

    /// A change committed through this gateway; kept for tenants whose
    /// quotas are being checked (they have a snapshot), until the next one.
    pub fn note_commit(&self, scope: &Scope, change: Usage) {
        if !self
            .snapshots
            .lock()
            .expect("quota lock poisoned")
            .contains_key(&scope.tenant)
        {
            return;
        }
        self.ledger
            .lock()
            .expect("quota lock poisoned")
            .entry(scope.tenant.clone())
            .or_default()
            .push((
                Instant::now(),
                (scope.bucket_id, scope.owner.clone(), change),
            ));
    }
}

/// Every bucket of `tenant` with its usage now (counter plus pending
/// deltas each; a bucket never folded yet has only deltas).
async fn tenant_snapshot(ctx: &Ctx, tenant: &str) -> GwResult<Vec<BucketEntry>> {
    let (start, end) = keys::bucket_range(tenant);
    let mut out = Vec::new();
    let mut pages = ctx.meta.pages(Cf::Meta, start, end, 1000);
    while let Some(page) = pages.next_page().await? {
        for kv in &page {
            let b: BucketRecord = keys::decode_value(&kv.value)?;
            let scope = Scope::of(&b);
            out.push((b.id, b.owner, bucket_usage(ctx, &scope).await?));
        }
    }
    Ok(out)
}

/// Checks a write of `size` bytes to `key` of `bucket` against every quota
/// that applies, and admits it: the returned [`Admission`] names the delta
/// id the commit must use, and is to be marked [`Admission::committed`]
/// once the commit landed (dropping it otherwise releases the write).
pub async fn check_write(
    ctx: &Arc<Ctx>,
    bucket: &BucketRecord,
    key: &str,
    size: u64,
) -> GwResult<Admission> {
    let owner = ctx.records.user(&bucket.owner).await?;
    let tenant = ctx.records.tenant(&bucket.tenant).await?;
    let scopes: Vec<(ScopeKey, Quota)> = [
        (ScopeKey::Bucket(bucket.id), limited(bucket.quota.as_ref())),
        (
            ScopeKey::User(bucket.owner.clone()),
            limited(owner.quota.as_ref()),
        ),
        (
            ScopeKey::Tenant(bucket.tenant.clone()),
            limited(tenant.quota.as_ref()),
        ),
    ]
    .into_iter()
    .filter_map(|(k, q)| q.map(|q| (k, *q)))
    .collect();
    if scopes.is_empty() {
        ctx.quotas.estimates.forget(bucket.id);
        return Ok(Admission::unlimited());
    }
    crate::metrics::quota_check();
    let scope = Scope::of(bucket);
    let delta_id = new_delta_id();
    // The tenant's other buckets, for the owner's and the tenant's quotas.
    let (mut owned, mut all) = (Usage::default(), Usage::default());
    if scopes
        .iter()
        .any(|(k, _)| !matches!(k, ScopeKey::Bucket(_)))
    {
        (owned, all) = ctx
            .quotas
            .other_buckets_usage(ctx, &bucket.tenant, bucket.id, &bucket.owner)
            .await?;
    }
    let others: Vec<(ScopeKey, Quota, Usage)> = scopes
        .into_iter()
        .map(|(k, q)| {
            let other = match k {
                ScopeKey::Bucket(_) => Usage::default(),
                ScopeKey::User(_) => owned,
                ScopeKey::Tenant(_) => all,
            };
            (k, q, other)
        })
        .collect();
    let estimate = ctx.quotas.estimates.of(bucket.id);
    // A refusal waits for a read begun after this moment.
    let begun = estimate.lock().reads_begun();
    let mut add = Usage {
        bytes: size as i64,
        objects: 1,
    };
    let (mut reread, mut replaced) = (false, false);
    let q = &ctx.quotas;
    let id = q.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut held = Vec::new();
    loop {
        // Decide and admit under the locks, with no await in between, so two
        // checks can't both take the last room.
        let decided = {
            let mut e = estimate.lock();
            match e.usage_if_newer(SNAPSHOT_TTL) {
                None => Decision::Stale,
                Some(bucket_usage) => {
                    let mut reserved = q.reserved.lock().expect("quota lock poisoned");
                    let mut near = false;
                    let over = others.iter().find_map(|(k, q, other)| {
                        let mut now = bucket_usage;
                        now.add(*other);
                        now.add(reserved.get(k).copied().unwrap_or_default());
                        near |= near_limit(q, now, add);
                        exceeds(q, now, add).map(|why| (k.clone(), why))
                    });
                    match over {
                        Some((k, why)) => Decision::Over(k, why),
                        None if near && !reread => Decision::Near,
                        None => {
                            e.admit(id, delta_key(&scope, key, &delta_id), add);
                            for (k, _, _) in &others {
                                if !matches!(k, ScopeKey::Bucket(_)) {
                                    reserved.entry(k.clone()).or_default().add(add);
                                    held.push((k.clone(), add));
                                }
                            }
                            Decision::Admitted
                        }
                    }
                }
            }
        };
        match decided {
            Decision::Admitted => break,
            Decision::Stale => {
                estimate
                    .read_until(ctx, &scope, |e| e.usage_if_newer(SNAPSHOT_TTL).is_some())
                    .await?;
            }
            // The estimate lags deletes and other gateways: near a limit,
            // and before a refusal, it is read afresh (begun after this
            // check began).
            Decision::Near | Decision::Over(..) if !reread => {
                reread = true;
                estimate
                    .read_until(ctx, &scope, |e| e.read_since(begun))
                    .await?;
            }
            Decision::Over(k, why) if replaced => {
                tracing::debug!(bucket_id = bucket.id, scope = ?k, %why, "quota exceeded");
                return Err(GwError::QuotaExceeded(quota_message(&k)));
            }
            Decision::Near | Decision::Over(..) => {
                // Over only if this adds a new object: an overwrite of the
                // null version counts its difference (a versioned write
                // keeps every older version, so it adds all of it).
                replaced = true;
                use crate::s3::versioning::{null_slot, Versioning};
                if Versioning::of(bucket) != Versioning::Enabled {
                    let slot = null_slot(ctx, bucket.id, key).await?;
                    if let Some(old) = slot.version().filter(|o| !o.is_delete_marker()) {
                        add = Usage {
                            bytes: size as i64 - old.record.size as i64,
                            objects: 0,
                        };
                    }
                }
            }
        }
    }
    Ok(Admission {
        delta_id,
        hold: Some(Hold {
            ctx: ctx.clone(),
            bucket: (estimate, id),
            scopes: held,
            committed: false,
        }),
    })
}

fn quota_message(k: &ScopeKey) -> String {
    match k {
        ScopeKey::Bucket(_) => "The bucket's storage quota would be exceeded".into(),
        ScopeKey::User(_) => "The bucket owner's storage quota would be exceeded".into(),
        ScopeKey::Tenant(_) => "The tenant's storage quota would be exceeded".into(),
    }
}

/// CreateBucket: the creator's and its tenant's bucket quotas.
pub async fn check_new_bucket(ctx: &Ctx, tenant: &str, owner: &str) -> GwResult<()> {
    let user = ctx.records.user(owner).await?;
    let t = ctx.records.tenant(tenant).await?;
    let user_max = user.quota.as_ref().and_then(|q| q.max_buckets);
    let tenant_max = t.quota.as_ref().and_then(|q| q.max_buckets);
    if user_max.is_none() && tenant_max.is_none() {
        return Ok(());
    }
    let (start, end) = keys::bucket_range(tenant);
    let (mut all, mut mine) = (0u64, 0u64);
    let mut pages = ctx.meta.pages(Cf::Meta, start, end, 1000);
    while let Some(page) = pages.next_page().await? {
        for kv in &page {
            let b: BucketRecord = keys::decode_value(&kv.value)?;
            all += 1;
            if b.owner == owner {
                mine += 1;
            }
        }
    }
    if user_max.is_some_and(|m| mine >= m) {
        return Err(GwError::QuotaExceeded(
            "Your bucket quota would be exceeded".into(),
        ));
    }
    if tenant_max.is_some_and(|m| all >= m) {
        return Err(GwError::QuotaExceeded(
            "The tenant's bucket quota would be exceeded".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_apply_to_growth_only() {
        let q = Quota {
            max_bytes: Some(100),
            max_objects: Some(3),
            max_buckets: None,
        };
        let u = Usage {
            bytes: 90,
            objects: 2,
        };
        assert!(exceeds(
            &q,
            u,
            Usage {
                bytes: 10,
                objects: 1
            }
        )
        .is_none());
        assert!(exceeds(
            &q,
            u,
            Usage {
                bytes: 11,
                objects: 1
            }
        )
        .is_some());
        assert!(exceeds(
            &q,
            Usage {
                bytes: 0,
                objects: 3
            },
            Usage {
                bytes: 1,
                objects: 1
            }
        )
        .is_some());
        // Shrinking or keeping the count is always allowed, even over quota.
        let over = Usage {
            bytes: 500,
            objects: 9,
        };
        assert!(exceeds(
            &q,
            over,
            Usage {
                bytes: -5,
                objects: 0
            }
        )
        .is_none());
        assert!(limited(Some(&Quota::default())).is_none());
        // A limit beyond i64 is no limit, never a negative one.
        let huge = Quota {
            max_bytes: Some(u64::MAX),
            max_objects: Some(u64::MAX),
            max_buckets: None,
        };
        assert!(exceeds(
            &huge,
            Usage {
                bytes: 1,
                objects: 1
            },
            Usage {
                bytes: 1 << 40,
                objects: 1
            }
        )
        .is_none());
        assert!(limited(None).is_none());
    }

    #[test]
    fn near_is_past_nine_tenths_of_a_limit_by_growth() {
        let q = Quota {
            max_bytes: Some(1000),
            max_objects: Some(20),
            max_buckets: None,
        };
        let u = |bytes, objects| Usage { bytes, objects };
        assert!(!near_limit(&q, u(800, 10), u(100, 1)));
        assert!(near_limit(&q, u(800, 10), u(101, 1)));
        assert!(!near_limit(&q, u(0, 17), u(0, 1)));
        assert!(near_limit(&q, u(0, 18), u(0, 1)));
        // Shrinking is never near, even over the limit.
        assert!(!near_limit(&q, u(5000, 50), u(-1, 0)));
        assert!(!near_limit(&Quota::default(), u(i64::MAX / 2, 1), u(1, 1)));
    }
}
