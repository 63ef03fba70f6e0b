//! Who is calling: tenants, users and access keys, kept in the replicated
//! metadata (system family, `kura_metashard::keys`), and the gateway's cache
//! of them.
//!
//! - `seal.rs`: secrets are stored sealed with the cluster key.
//! - `records.rs`: create, read, list and delete the identity records (what
//!   the admin API does).
//! - this file: [`Principal`] (a caller, resolved from its access key),
//!   [`IdentityStore`] (the key cache: an entry is trusted for
//!   [`KEY_CACHE_TTL`], so a key created, disabled or deleted through any
//!   gateway takes effect on every gateway within that time) and the s3s
//!   authentication provider built on it.
//!
//! The root key (`KURA_ROOT_*`) is the bootstrap admin: a user of the root
//! tenant with the fixed id [`ROOT_USER_ID`], never stored.

pub mod limits;
pub mod records;
pub mod seal;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::{AccessKeyRecord, TenantRecord, UserRecord};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Error, S3Result};

use crate::authz::policy::Policy;
use crate::error::{GwError, GwResult};
use crate::meta::{now_ms, Meta};
use seal::Sealer;

/// Canonical id of the root user (SHA-256 of "kura root user").
pub const ROOT_USER_ID: &str = "74b32fda3d315c5ebb04a0771b320d01dd0bd29c5e93d2436d772cb365685389";
pub const ROOT_USER_NAME: &str = "root";

/// How long a gateway trusts what it read of an access key. Changes made
/// through another gateway are seen after at most this (the promise is 5 s).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
/// Entries kept at most (unknown keys are cached too, so a flood of made-up
/// keys costs one metadata read per key per TTL, and bounded memory).
const KEY_CACHE_MAX: usize = 100_000;

/// An authenticated caller.
#[derive(Debug)]
pub struct Principal {
    pub user_id: String,
    /// "" = the root tenant.
    pub tenant: String,
    pub name: String,
    pub display_name: String,
    pub admin: bool,
    /// The access key this request was signed with.
    pub access_key: String,
    /// The user policy, parsed.
    pub policy: Option<Arc<Policy>>,
}

/// What a valid access key resolves to.
pub struct KeyEntry {
    pub secret: String,
    pub principal: Arc<Principal>,
}

struct Cached {
    at: Instant,
    entry: Option<Arc<KeyEntry>>,
}

pub struct IdentityStore {
    meta: Meta,
    sealer: Sealer,
    root_access_key: String,
    root: Arc<KeyEntry>,
    cache: DashMap<String, Cached>,
}

impl IdentityStore {
    pub fn new(meta: Meta, sealer: Sealer, root_access_key: &str, root_secret: &str) -> Self {
        let principal = Arc::new(Principal {
            user_id: ROOT_USER_ID.to_string(),
            tenant: String::new(),
            name: ROOT_USER_NAME.to_string(),
            display_name: ROOT_USER_NAME.to_string(),
            admin: true,
            access_key: root_access_key.to_string(),
            policy: None,
        });
        IdentityStore {
            meta,
            sealer,
            root_access_key: root_access_key.to_string(),
            root: Arc::new(KeyEntry {
                secret: root_secret.to_string(),
                principal,
            }),
            cache: DashMap::new(),
        }
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub fn root_access_key(&self) -> &str {
        &self.root_access_key
    }

    pub fn root_principal(&self) -> Arc<Principal> {
        self.root.principal.clone()
    }

    /// The key's secret and principal, if the key exists, is active and has
    /// not expired (from the cache when fresh).
    pub async fn lookup(&self, access_key: &str) -> GwResult<Option<Arc<KeyEntry>>> {
        if access_key == self.root_access_key {
            return Ok(Some(self.root.clone()));
        }
        if let Some(c) = self.cache.get(access_key) {
            if c.at.elapsed() < KEY_CACHE_TTL {
                return Ok(c.entry.clone());
            }
        }
        let entry = self.fetch(access_key).await?;
        if self.cache.len() >= KEY_CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(
            access_key.to_string(),
            Cached {
                at: Instant::now(),
                entry: entry.clone(),
            },
        );
        Ok(entry)
    }

    /// Drops what this gateway cached of a key (after changing it here).
    pub fn forget(&self, access_key: &str) {
        self.cache.remove(access_key);
    }

    /// Drops every cached key of a user (after changing the user).
    pub fn forget_user(&self, user_id: &str) {
        self.cache.retain(|_, c| {
            c.entry
                .as_ref()
                .is_none_or(|e| e.principal.user_id != user_id)
        });
    }

    async fn fetch(&self, access_key: &str) -> GwResult<Option<Arc<KeyEntry>>> {
        let Some(key) = self
            .meta
            .get::<AccessKeyRecord>(Cf::Meta, &keys::access_key_key(access_key))
            .await?
        else {
            return Ok(None);
        };
        let key = key.record;
        if !usable(&key, now_ms()) {
            return Ok(None);
        }
        let Some(user) = self
            .meta
            .get::<UserRecord>(Cf::Meta, &keys::user_key(&key.user_id))
            .await?
        else {
            return Ok(None);
        };
        let user = user.record;
        let secret = self
            .sealer
            .open(access_key, &key.sealed_secret)
            .map_err(|e| GwError::Internal(format!("access key record: {e}")))?;
        let policy = parse_stored_policy(&user.policy, "user policy")?;
        Ok(Some(Arc::new(KeyEntry {
            secret,
            principal: Arc::new(Principal {
                user_id: user.id,
                tenant: user.tenant,
                name: user.name,
                display_name: user.display_name,
                admin: user.admin,
                access_key: access_key.to_string(),
                policy,
            }),
        })))
    }
}

/// Tenant and user records as quotas and rate limits need them, cached for
/// [`KEY_CACHE_TTL`] like keys (so a changed limit is in force everywhere
/// within that time). A missing record caches as the default (no limits).
pub struct RecordCache {
    meta: Meta,
    tenants: DashMap<String, (Instant, Arc<TenantRecord>)>,
    users: DashMap<String, (Instant, Arc<UserRecord>)>,
}

impl RecordCache {
    pub fn new(meta: Meta) -> Self {
        RecordCache {
            meta,
            tenants: DashMap::new(),
            users: DashMap::new(),
        }
    }

    /// The record of `tenant` ("" = the root tenant, stored only once it has limits).
    pub async fn tenant(&self, tenant: &str) -> GwResult<Arc<TenantRecord>> {
        cached(&self.tenants, tenant, || async {
            Ok(self
                .meta
                .get::<TenantRecord>(Cf::Meta, &keys::tenant_key(tenant))
                .await?
                .map(|v| v.record)
                .unwrap_or_default())
        })
        .await
    }

    /// The record of user `id` (the root user has none: no limits).
    pub async fn user(&self, id: &str) -> GwResult<Arc<UserRecord>> {
        cached(&self.users, id, || async {
            Ok(self
                .meta
                .get::<UserRecord>(Cf::Meta, &keys::user_key(id))
                .await?
                .map(|v| v.record)
                .unwrap_or_default())
        })
        .await
    }

    /// Drops what this gateway cached (after changing it here).
    pub fn forget_tenant(&self, tenant: &str) {
        self.tenants.remove(tenant);
    }

    pub fn forget_user(&self, id: &str) {
        self.users.remove(id);
    }
}

async fn cached<T, F, Fut>(
    map: &DashMap<String, (Instant, Arc<T>)>,
    key: &str,
    load: F,
) -> GwResult<Arc<T>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = GwResult<T>>,
{
    if let Some(e) = map.get(key) {
        if e.0.elapsed() < KEY_CACHE_TTL {
            return Ok(e.1.clone());
        }
    }
    let value = Arc::new(load().await?);
    if map.len() >= KEY_CACHE_MAX {
        map.clear();
    }
    map.insert(key.to_string(), (Instant::now(), value.clone()));
    Ok(value)
}

/// A key signs requests while it is active and not past its expiry.
pub fn usable(key: &AccessKeyRecord, now_ms: i64) -> bool {
    key.active && (key.expires_unix_ms == 0 || now_ms < key.expires_unix_ms)
}

/// A policy read back from a record: validated when it was written, so a
/// failure here is corrupt state.
pub fn parse_stored_policy(text: &str, what: &str) -> GwResult<Option<Arc<Policy>>> {
    if text.is_empty() {
        return Ok(None);
    }
    Policy::parse(text)
        .map(|p| Some(Arc::new(p)))
        .map_err(|e| GwError::Internal(format!("stored {what} unreadable: {e}")))
}

/// The s3s authentication provider: secrets of usable keys.
pub struct Auth(pub Arc<IdentityStore>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.lookup(access_key).await {
            Ok(Some(entry)) => Ok(SecretKey::from(entry.secret.clone())),
            // What AWS answers for a key it does not know, or an inactive one.
            Ok(None) => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
            Err(e) => Err(S3Error::from(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_usability() {
        let mut k = AccessKeyRecord {
            active: true,
            ..Default::default()
        };
        assert!(usable(&k, 1_000));
        k.expires_unix_ms = 2_000;
        assert!(usable(&k, 1_999));
        assert!(!usable(&k, 2_000));
        k.expires_unix_ms = 0;
        k.active = false;
        assert!(!usable(&k, 1_000));
    }
}
