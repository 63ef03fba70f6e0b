//! Storage quotas: bytes and objects per bucket, user (the bucket's owner)
//! and tenant; buckets per user and tenant. Checked before a write's body is
//! read (PUT, copy, multipart complete) and on CreateBucket; refused with
//! `403 QuotaExceeded`.
//!
//! What a check counts, per scope that has a quota:
//! - the bucket: its usage read now (counter + pending deltas, with the keys
//!   of the deltas the read saw), plus this gateway's writes to it that the
//!   read cannot have seen: admitted ones whose delta it did not see, and
//!   ones committed after the read began (each write's delta key is chosen
//!   at admission, so "did the read see it" is a lookup, not a guess);
//! - the owner and the tenant: a snapshot of the tenant's buckets (counter
//!   plus pending deltas each, at most [`SNAPSHOT_TTL`] old), plus the
//!   changes this gateway committed since, plus its writes in flight, with
//!   the written bucket's own entry replaced by its fresh usage.
//!
//! So bucket quotas hold exactly through one gateway, bursts included; user
//! and tenant quotas hold exactly for writes through one gateway one after
//! another, and may count a write twice for a moment under a burst (refusing
//! early, never late). Writes spread over several gateways can overshoot by
//! what the others have in flight, plus (for user and tenant quotas) what
//! they committed to other buckets in the last [`SNAPSHOT_TTL`].
//! docs/tenancy.md says so. A write that replaces an object is counted by
//! its difference.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::{BucketRecord, Quota};

use bytes::Bytes;

use super::{bucket_usage, bucket_usage_seen, delta_key, new_delta_id, DeltaId, Scope, Usage};
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

/// One write admitted to a bucket with a quota, until it can no longer be
/// missing from a usage read.
struct Admitted {
    id: u64,
    delta_key: Bytes,
    add: Usage,
    /// When its commit finished; `None` while in flight.
    committed: Option<Instant>,
}

/// How long a committed write is remembered: longer than any check takes.
const REMEMBER_COMMITTED: Duration = Duration::from_secs(30);

/// One bucket's usage in a tenant snapshot or ledger: (bucket id, owner, usage).
type BucketEntry = (u64, String, Usage);

/// This gateway's admitted writes, tenant snapshots, and the changes it
/// committed since each snapshot was taken.
/// A listing of bucket usage and when it was taken.
type Snapshot = (Instant, Arc<Vec<BucketEntry>>);

#[derive(Default)]
pub struct Quotas {
    next_id: std::sync::atomic::AtomicU64,
    admitted: Mutex<HashMap<u64, Vec<Admitted>>>,
    /// In-flight writes per user and tenant scope.
    reserved: Mutex<HashMap<ScopeKey, Usage>>,
    snapshots: Mutex<HashMap<String, Snapshot>>,
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
    bucket: Option<(u64, u64)>,
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
        let q = &self.ctx.quotas;
        if let Some((bucket_id, id)) = self.bucket {
            let mut admitted = q.admitted.lock().expect("quota lock poisoned");
            if let Some(list) = admitted.get_mut(&bucket_id) {
                if self.committed {
                    if let Some(a) = list.iter_mut().find(|a| a.id == id) {
                        a.committed = Some(Instant::now());
                    }
                } else {
                    list.retain(|a| a.id != id);
                }
            }
        }
        // User and tenant scopes count committed writes through the ledger.
        let mut r = q.reserved.lock().expect("quota lock poisoned");
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
    /// The tenant's buckets' usage: the snapshot (refreshed when older than
    /// [`SNAPSHOT_TTL`]) followed by this gateway's changes since.
    async fn tenant_usage(&self, ctx: &Ctx, tenant: &str) -> GwResult<Vec<BucketEntry>> {
        let fresh = self
            .snapshots
            .lock()
            .expect("quota lock poisoned")
            .get(tenant)
            .filter(|(at, _)| at.elapsed() < SNAPSHOT_TTL)
            .cloned();
        let (taken, snap) = match fresh {
            Some(s) => s,
            None => {
                let taken = Instant::now();
                let snap = Arc::new(tenant_snapshot(ctx, tenant).await?);
                let mut snaps = self.snapshots.lock().expect("quota lock poisoned");
                if snaps.len() > 10_000 {
                    snaps.clear();
                }
                snaps.insert(tenant.to_string(), (taken, snap.clone()));
                (taken, snap)
            }
        };
        let mut out: Vec<BucketEntry> = snap.as_ref().clone();
        let mut ledger = self.ledger.lock().expect("quota lock poisoned");
        if let Some(l) = ledger.get_mut(tenant) {
            // What the snapshot counts already is dropped from the ledger.
            l.retain(|(at, _)| *at >= taken);
            out.extend(l.iter().map(|(_, e)| e.clone()));
        }
        Ok(out)
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

    /// This gateway's writes to `bucket_id` that a read begun at `read_start`
    /// which saw the pending deltas `seen` does not count.
    fn unseen(&self, bucket_id: u64, read_start: Instant, seen: &HashSet<Bytes>) -> Usage {
        let mut admitted = self.admitted.lock().expect("quota lock poisoned");
        let mut u = Usage::default();
        if let Some(list) = admitted.get_mut(&bucket_id) {
            list.retain(|a| {
                a.committed
                    .is_none_or(|at| at.elapsed() < REMEMBER_COMMITTED)
            });
            for a in list.iter() {
                // In flight, or committed after the read began, and not
                // among the deltas it saw (a folded delta was committed
                // before the read began, and the counter has it).
                let maybe_missed = a.committed.is_none_or(|at| at > read_start);
                if maybe_missed && !seen.contains(&a.delta_key) {
                    u.add(a.add);
                }
            }
        }
        u
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
        return Ok(Admission::unlimited());
    }
    let scope = Scope::of(bucket);
    let delta_id = new_delta_id();
    let read_start = Instant::now();
    let (fresh, seen) = bucket_usage_seen(ctx, &scope).await?;
    let seen: HashSet<Bytes> = seen.into_iter().collect();
    // Usage of each scope as read, before this gateway's in-flight writes.
    let mut base = Vec::with_capacity(scopes.len());
    for (k, q) in &scopes {
        let u = match k {
            ScopeKey::Bucket(_) => fresh,
            ScopeKey::User(_) | ScopeKey::Tenant(_) => {
                let entries = ctx.quotas.tenant_usage(ctx, &bucket.tenant).await?;
                let mut u = fresh;
                for (id, owner, b) in entries.iter() {
                    let counts = match k {
                        ScopeKey::User(user) => owner == user,
                        _ => true,
                    };
                    if counts && *id != bucket.id {
                        u.add(*b);
                    }
                }
                u
            }
        };
        base.push((k.clone(), *q, u));
    }
    let mut add = Usage {
        bytes: size as i64,
        objects: 1,
    };
    let mut replaced = false;
    loop {
        // Decide and admit under the locks, with no await in between, so two
        // checks can't both take the last room.
        let over = {
            let unseen = ctx.quotas.unseen(bucket.id, read_start, &seen);
            let reserved = ctx.quotas.reserved.lock().expect("quota lock poisoned");
            base.iter().find_map(|(k, q, u)| {
                let mut now = *u;
                now.add(unseen);
                now.add(reserved.get(k).copied().unwrap_or_default());
                exceeds(q, now, add).map(|why| (k.clone(), why))
            })
        };
        match over {
            None => break,
            Some((k, why)) if replaced => {
                tracing::debug!(bucket_id = bucket.id, scope = ?k, %why, "quota exceeded");
                return Err(GwError::QuotaExceeded(quota_message(&k)));
            }
            Some(_) => {
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
    let q = &ctx.quotas;
    let id = q.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut bucket_hold = None;
    let mut held = Vec::new();
    {
        let mut admitted = q.admitted.lock().expect("quota lock poisoned");
        let mut reserved = q.reserved.lock().expect("quota lock poisoned");
        for (k, _, _) in &base {
            match k {
                ScopeKey::Bucket(b) => {
                    admitted.entry(*b).or_default().push(Admitted {
                        id,
                        delta_key: delta_key(&scope, key, &delta_id),
                        add,
                        committed: None,
                    });
                    bucket_hold = Some((*b, id));
                }
                _ => {
                    reserved.entry(k.clone()).or_default().add(add);
                    held.push((k.clone(), add));
                }
            }
        }
    }
    Ok(Admission {
        delta_id,
        hold: Some(Hold {
            ctx: ctx.clone(),
            bucket: bucket_hold,
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
}
