//! Where quotas and rate limits are kept: in the record of their scope — a
//! tenant's `TenantRecord`, a user's `UserRecord`, a bucket's
//! `BucketRecord` — so the request path reads them with what it reads
//! anyway (the bucket) or caches (tenant, user). Changed by
//! compare-and-set, like every identity record.

use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::{BucketRecord, Quota, RateLimits, TenantRecord, UserNameRecord, UserRecord};

use super::records::{valid_tenant, IdentityError};
use super::IdentityStore;
use crate::error::GwError;
use crate::meta::{now_ms, RMW_ATTEMPTS};

/// What a quota or rate limit applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitScope {
    /// "" = the root tenant.
    Tenant(String),
    User {
        tenant: String,
        name: String,
    },
    Bucket {
        tenant: String,
        name: String,
    },
}

impl LimitScope {
    pub fn kind(&self) -> &'static str {
        match self {
            LimitScope::Tenant(_) => "tenant",
            LimitScope::User { .. } => "user",
            LimitScope::Bucket { .. } => "bucket",
        }
    }

    pub fn tenant(&self) -> &str {
        match self {
            LimitScope::Tenant(t) => t,
            LimitScope::User { tenant, .. } | LimitScope::Bucket { tenant, .. } => tenant,
        }
    }
}

/// A scope's quota and rate limits, and the ids the caches know it by.
#[derive(Clone, Debug, Default)]
pub struct ScopeLimits {
    pub quota: Quota,
    pub limits: RateLimits,
    /// The user's canonical id (user scopes).
    pub user_id: Option<String>,
}

type Result<T> = std::result::Result<T, IdentityError>;

/// The record key of a scope (a user is found through its name).
async fn record_key(
    store: &IdentityStore,
    scope: &LimitScope,
) -> Result<(Vec<u8>, Option<String>)> {
    match scope {
        LimitScope::Tenant(t) => {
            if !t.is_empty() && !valid_tenant(t) {
                return Err(IdentityError::NoSuchTenant(t.clone()));
            }
            Ok((keys::tenant_key(t), None))
        }
        LimitScope::User { tenant, name } => {
            let id = store
                .meta()
                .get::<UserNameRecord>(Cf::Meta, &keys::user_name_key(tenant, name))
                .await?
                .ok_or_else(|| IdentityError::NoSuchUser(format!("{tenant}/{name}")))?
                .record
                .user_id;
            Ok((keys::user_key(&id), Some(id)))
        }
        LimitScope::Bucket { tenant, name } => Ok((keys::tenant_bucket_key(tenant, name), None)),
    }
}

fn not_found(scope: &LimitScope) -> IdentityError {
    match scope {
        LimitScope::Tenant(t) => IdentityError::NoSuchTenant(t.clone()),
        LimitScope::User { tenant, name } => IdentityError::NoSuchUser(format!("{tenant}/{name}")),
        LimitScope::Bucket { tenant, name } => IdentityError::NoSuchBucket(if tenant.is_empty() {
            name.clone()
        } else {
            format!("{tenant}:{name}")
        }),
    }
}

/// A scope's quota and limits (an absent root-tenant record has none).
pub async fn get(store: &IdentityStore, scope: &LimitScope) -> Result<ScopeLimits> {
    let (key, user_id) = record_key(store, scope).await?;
    let raw = store.meta().get_raw(Cf::Meta, &key).await?;
    let (quota, limits) = match (scope, raw) {
        (LimitScope::Tenant(t), None) if t.is_empty() => (None, None),
        (_, None) => return Err(not_found(scope)),
        (LimitScope::Tenant(_), Some(v)) => {
            let r: TenantRecord = keys::decode_value(&v).map_err(GwError::from)?;
            (r.quota, r.limits)
        }
        (LimitScope::User { .. }, Some(v)) => {
            let r: UserRecord = keys::decode_value(&v).map_err(GwError::from)?;
            (r.quota, r.limits)
        }
        (LimitScope::Bucket { .. }, Some(v)) => {
            let r: BucketRecord = keys::decode_value(&v).map_err(GwError::from)?;
            (r.quota, r.limits)
        }
    };
    Ok(ScopeLimits {
        quota: quota.unwrap_or_default(),
        limits: limits.unwrap_or_default(),
        user_id,
    })
}

/// Changes a scope's quota and limits with `f` (read-modify-write).
pub async fn update(
    store: &IdentityStore,
    scope: &LimitScope,
    f: impl Fn(&mut Quota, &mut RateLimits),
) -> Result<ScopeLimits> {
    if matches!(scope, LimitScope::Bucket { .. }) {
        // Not per bucket: counted per tenant and user.
        let mut q = Quota::default();
        f(&mut q, &mut RateLimits::default());
        if q.max_buckets.is_some() {
            return Err(IdentityError::Invalid(
                "max_buckets applies to tenants and users, not buckets".into(),
            ));
        }
    }
    let (key, user_id) = record_key(store, scope).await?;
    for _ in 0..RMW_ATTEMPTS {
        let raw = store.meta().get_raw(Cf::Meta, &key).await?;
        let apply = |quota: &mut Option<Quota>, limits: &mut Option<RateLimits>| {
            let mut q = quota.take().unwrap_or_default();
            let mut l = limits.take().unwrap_or_default();
            f(&mut q, &mut l);
            let out = ScopeLimits {
                quota: q,
                limits: l,
                user_id: user_id.clone(),
            };
            *quota = Some(q);
            *limits = Some(l);
            out
        };
        let (value, out) = match (scope, &raw) {
            // The root tenant's record exists only to hold its limits.
            (LimitScope::Tenant(t), None) if t.is_empty() => {
                let mut r = TenantRecord {
                    created_unix_ms: now_ms(),
                    ..Default::default()
                };
                let out = apply(&mut r.quota, &mut r.limits);
                (keys::encode_value(&r), out)
            }
            (_, None) => return Err(not_found(scope)),
            (LimitScope::Tenant(_), Some(v)) => {
                let mut r: TenantRecord = keys::decode_value(v).map_err(GwError::from)?;
                let out = apply(&mut r.quota, &mut r.limits);
                (keys::encode_value(&r), out)
            }
            (LimitScope::User { .. }, Some(v)) => {
                let mut r: UserRecord = keys::decode_value(v).map_err(GwError::from)?;
                let out = apply(&mut r.quota, &mut r.limits);
                (keys::encode_value(&r), out)
            }
            (LimitScope::Bucket { .. }, Some(v)) => {
                let mut r: BucketRecord = keys::decode_value(v).map_err(GwError::from)?;
                let out = apply(&mut r.quota, &mut r.limits);
                (keys::encode_value(&r), out)
            }
        };
        if store
            .meta()
            .swap(Cf::Meta, &key, raw.as_ref(), &value)
            .await?
        {
            tracing::info!(
                scope = scope.kind(),
                tenant = scope.tenant(),
                "limits changed"
            );
            return Ok(out);
        }
    }
    Err(GwError::Contention("record changed concurrently".into()).into())
}
