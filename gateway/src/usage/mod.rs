//! Usage accounting: bytes and objects stored per bucket, and from them per
//! user and tenant; the storage quotas that use it (`quota.rs`).
//!
//! Exact at rest, cheap on the write path (docs/tenancy.md "Usage and
//! quotas"):
//! 1. every object change writes a [`UsageDelta`] in the same atomic batch
//!    as the change (cf USAGE, next to the object, so in its region): the
//!    delta exists if and only if the change committed;
//! 2. the folder (`fold.rs`) adds a bucket's deltas into its
//!    [`BucketUsage`] counter by compare-and-set and then deletes them,
//!    recording the keys being folded in the counter itself so a fold cut
//!    short is finished, never counted twice;
//! 3. a bucket's usage is its counter plus its pending deltas.

pub mod estimate;
pub mod fold;
pub mod quota;
pub mod traffic;

use bytes::Bytes;
use kura_metashard::client::{Cf, Mutation};
use kura_metashard::keys;
use kura_proto::meta::{BucketRecord, BucketUsage, UsageDelta};
use rand::Rng;

use crate::context::Ctx;
use crate::error::GwResult;
use crate::meta;

/// Whom an object change is counted against.
#[derive(Clone, Debug)]
pub struct Scope {
    pub bucket_id: u64,
    pub tenant: String,
    /// The bucket owner's canonical id (the user whose quota applies).
    pub owner: String,
    /// Whether a write keeps the versions it supersedes (their bytes stay
    /// counted) or replaces the null version (its bytes are released).
    pub versioning: crate::s3::versioning::Versioning,
    /// The bucket's name in `tenant`, for the check after a commit that the
    /// bucket was not deleted meanwhile (docs/decisions/0033); "" skips it.
    pub bucket_name: String,
}

impl Scope {
    pub fn of(bucket: &BucketRecord) -> Scope {
        Scope {
            bucket_id: bucket.id,
            tenant: bucket.tenant.clone(),
            owner: bucket.owner.clone(),
            versioning: crate::s3::versioning::Versioning::of(bucket),
            bucket_name: bucket.name.clone(),
        }
    }
}

/// Bytes and objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: i64,
    pub objects: i64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.bytes += other.bytes;
        self.objects += other.objects;
    }

    pub fn sub(&mut self, other: Usage) {
        self.bytes -= other.bytes;
        self.objects -= other.objects;
    }
}

/// Names one object change's delta: random, chosen before the change is
/// committed (a quota check can then tell whether a read saw it).
pub type DeltaId = [u8; 16];

pub fn new_delta_id() -> DeltaId {
    rand::thread_rng().gen()
}

/// The key a change's delta is written at.
pub fn delta_key(scope: &Scope, key: &str, id: &DeltaId) -> Bytes {
    Bytes::from(keys::usage_delta_key(scope.bucket_id, key.as_bytes(), id))
}

/// The delta record to write with an object change of `change` (none when
/// nothing changes). One id per change: every attempt of its batch writes
/// the same key, and the batch's condition lets only one apply.
pub fn delta_mutation(scope: &Scope, key: &str, change: Usage, id: &DeltaId) -> Option<Mutation> {
    if change == Usage::default() {
        return None;
    }
    let delta = UsageDelta {
        bytes: change.bytes,
        objects: change.objects,
        tenant: scope.tenant.clone(),
        owner: scope.owner.clone(),
    };
    Some(meta::put_record(
        Cf::Usage,
        keys::usage_delta_key(scope.bucket_id, key.as_bytes(), id),
        &delta,
    ))
}

/// Deltas read at most per bucket before a usage read gives up summing
/// (the folder keeps far fewer pending).
const MAX_PENDING_READ: usize = 100_000;

/// The pending deltas of a bucket (at most `limit`), keys and their sum,
/// leaving out `counted` (the keys of a fold in progress, already in the
/// counter).
pub async fn pending(
    ctx: &Ctx,
    bucket_id: u64,
    limit: usize,
    counted: &[Bytes],
) -> GwResult<(Vec<Bytes>, Usage)> {
    let (start, end) = keys::object_range(bucket_id, b"");
    let kvs = ctx.meta.scan(Cf::Usage, &start, &end, limit, false).await?;
    let mut sum = Usage::default();
    let mut keys_out = Vec::with_capacity(kvs.len());
    for kv in kvs {
        if counted.contains(&kv.key) {
            continue;
        }
        let d: UsageDelta = keys::decode_value(&kv.value)?;
        sum.add(Usage {
            bytes: d.bytes,
            objects: d.objects,
        });
        keys_out.push(kv.key);
    }
    Ok((keys_out, sum))
}

/// A bucket's folded counter (the default when it has none yet).
pub async fn counter(ctx: &Ctx, scope: &Scope) -> GwResult<Option<meta::Versioned<BucketUsage>>> {
    ctx.meta
        .get::<BucketUsage>(
            Cf::Usage,
            &keys::bucket_usage_key(&scope.tenant, scope.bucket_id),
        )
        .await
}

/// A bucket's usage now: its counter plus its pending deltas (linearizable).
///
/// Counter, deltas, counter again, until the counter did not move in
/// between: every fold changes the counter's bytes (its first step bumps
/// `folds`, its last clears `folding`; `folds` never goes back), so an
/// unchanged counter means no fold counted or deleted a delta meanwhile
/// except those it lists, which are left out of the deltas. Without the
/// second read a fold landing between the two reads would be missed.
pub async fn bucket_usage(ctx: &Ctx, scope: &Scope) -> GwResult<Usage> {
    Ok(bucket_usage_seen(ctx, scope).await?.0)
}

/// [`bucket_usage`], and the keys of the pending deltas it counted.
pub async fn bucket_usage_seen(ctx: &Ctx, scope: &Scope) -> GwResult<(Usage, Vec<Bytes>)> {
    for _ in 0..8 {
        let before = counter(ctx, scope).await?;
        let counted = before
            .as_ref()
            .map(|c| c.record.folding.clone())
            .unwrap_or_default();
        let (seen, pending) = pending(ctx, scope.bucket_id, MAX_PENDING_READ, &counted).await?;
        let after = counter(ctx, scope).await?;
        if before.as_ref().map(|c| &c.raw) != after.as_ref().map(|c| &c.raw) {
            continue;
        }
        let mut u = before.map_or(Usage::default(), |c| Usage {
            bytes: c.record.bytes,
            objects: c.record.objects,
        });
        u.add(pending);
        return Ok((u, seen));
    }
    Err(crate::error::GwError::Contention(
        "usage counter moved during every read".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_only_for_changes() {
        let s = Scope {
            bucket_id: 7,
            tenant: "acme".into(),
            owner: "u".into(),
            versioning: Default::default(),
            bucket_name: String::new(),
        };
        let id = new_delta_id();
        assert!(delta_mutation(&s, "k", Usage::default(), &id).is_none());
        let m = delta_mutation(
            &s,
            "k",
            Usage {
                bytes: -5,
                objects: 0,
            },
            &id,
        )
        .unwrap();
        assert_eq!(m.key, delta_key(&s, "k", &id));
        assert_eq!(m.cf, Cf::Usage as i32);
        let d: UsageDelta = keys::decode_value(&m.value).unwrap();
        assert_eq!((d.bytes, d.objects, d.tenant.as_str()), (-5, 0, "acme"));
        let (start, end) = keys::object_range(7, b"k");
        assert!(m.key.as_ref() >= start.as_slice() && m.key.as_ref() < end.as_slice());
        // Two changes of one key never share a delta key.
        let m2 = delta_mutation(
            &s,
            "k",
            Usage {
                bytes: 1,
                objects: 1,
            },
            &new_delta_id(),
        )
        .unwrap();
        assert_ne!(m.key, m2.key);
    }
}
