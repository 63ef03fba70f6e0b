//! The identity records: tenants, users (with their name index) and access
//! keys, read and changed through the metadata client. What the admin API
//! does, without its HTTP and JSON (`crate::admin`).
//!
//! Every change is a conditional single-key batch, so it needs no cross-key
//! atomicity (the system family may be split like any other range). Where
//! two keys are involved (a user and its name), they are written in an order
//! that leaves at worst a dangling name, which the next create of that name
//! reclaims.

use kura_metashard::client::{Cf, KvPair};
use kura_metashard::keys;
use kura_proto::meta::{AccessKeyRecord, BucketRecord, TenantRecord, UserNameRecord, UserRecord};
use rand::Rng;

use super::IdentityStore;
use crate::authz::policy::Policy;
use crate::error::GwError;
use crate::meta::{self, now_ms, Versioned};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    MalformedPolicy(String),
    #[error("tenant {0:?} does not exist")]
    NoSuchTenant(String),
    #[error("user {0:?} does not exist")]
    NoSuchUser(String),
    #[error("access key {0:?} does not exist")]
    NoSuchKey(String),
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    #[error("no policy is set")]
    NoPolicy,
    #[error("tenant {0:?} already exists")]
    TenantExists(String),
    #[error("{0}")]
    UserExists(String),
    #[error("access key {0:?} already exists")]
    KeyExists(String),
    #[error("tenant {0:?} still has users or buckets")]
    TenantNotEmpty(String),
    #[error("user {0:?} still owns buckets")]
    UserOwnsBuckets(String),
    #[error(transparent)]
    Gw(#[from] GwError),
}

type Result<T> = std::result::Result<T, IdentityError>;

/// Tenant names: 1–32 of `[a-z0-9_-]` (no ':' so `tenant:bucket` parses).
pub fn valid_tenant(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@+=,-".contains(&b))
}

fn valid_user_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_access_key(ak: &str) -> bool {
    (16..=128).contains(&ak.len()) && ak.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn valid_secret(sk: &str) -> bool {
    (16..=128).contains(&sk.len()) && sk.bytes().all(|b| b.is_ascii_graphic())
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

pub fn new_access_key() -> String {
    format!(
        "KURA{}",
        random_string(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    )
}

pub fn new_secret_key() -> String {
    random_string(
        40,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    )
}

fn new_user_id() -> String {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    hex::encode(bytes)
}

/// Every record of a range, page by page.
async fn scan_all(store: &IdentityStore, (start, end): (Vec<u8>, Vec<u8>)) -> Result<Vec<KvPair>> {
    let mut pages = store.meta().pages(Cf::Meta, start, end, 1000);
    let mut out = Vec::new();
    while let Some(page) = pages.next_page().await? {
        out.extend(page);
    }
    Ok(out)
}

fn decode<M: prost::Message + Default>(kv: &KvPair) -> Result<M> {
    Ok(keys::decode_value::<M>(&kv.value).map_err(GwError::from)?)
}

/// Writes `value` at `key` if absent; false when something is there.
async fn put_new(store: &IdentityStore, key: Vec<u8>, value: Vec<u8>) -> Result<bool> {
    Ok(store.meta().swap(Cf::Meta, &key, None, &value).await?)
}

/// Replaces the record read as `old` (false: it changed meanwhile).
async fn replace(
    store: &IdentityStore,
    key: Vec<u8>,
    old: &bytes::Bytes,
    value: Vec<u8>,
) -> Result<bool> {
    Ok(store.meta().swap(Cf::Meta, &key, Some(old), &value).await?)
}

async fn delete_key(store: &IdentityStore, key: Vec<u8>) -> Result<()> {
    store
        .meta()
        .batch(vec![], vec![meta::delete(Cf::Meta, key)])
        .await?;
    Ok(())
}

// --- tenants

pub async fn create_tenant(store: &IdentityStore, name: &str) -> Result<TenantRecord> {
    if !valid_tenant(name) {
        return Err(IdentityError::Invalid(
            "tenant names are 1-32 characters of a-z, 0-9, '_' and '-'".into(),
        ));
    }
    let rec = TenantRecord {
        name: name.to_string(),
        created_unix_ms: now_ms(),
        ..Default::default()
    };
    if !put_new(store, keys::tenant_key(name), keys::encode_value(&rec)).await? {
        return Err(IdentityError::TenantExists(name.to_string()));
    }
    tracing::info!(tenant = name, "tenant created");
    Ok(rec)
}

pub async fn list_tenants(store: &IdentityStore) -> Result<Vec<TenantRecord>> {
    scan_all(store, keys::tenant_range())
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// Whether `tenant` exists (the root tenant always does).
pub async fn tenant_exists(store: &IdentityStore, tenant: &str) -> Result<bool> {
    if tenant.is_empty() {
        return Ok(true);
    }
    Ok(store
        .meta()
        .get_raw(Cf::Meta, &keys::tenant_key(tenant))
        .await?
        .is_some())
}

/// Deletes an empty tenant. A user or bucket created in it at the same
/// moment may survive it (then `tenant create` of the name brings it back
/// into view); admins serialise such changes themselves.
pub async fn delete_tenant(store: &IdentityStore, name: &str) -> Result<()> {
    if !valid_tenant(name) || !tenant_exists(store, name).await? {
        return Err(IdentityError::NoSuchTenant(name.to_string()));
    }
    for (start, end) in [keys::user_name_range(name), keys::bucket_range(name)] {
        if !store
            .meta()
            .scan(Cf::Meta, &start, &end, 1, true)
            .await?
            .is_empty()
        {
            return Err(IdentityError::TenantNotEmpty(name.to_string()));
        }
    }
    delete_key(store, keys::tenant_key(name)).await?;
    tracing::info!(tenant = name, "tenant deleted");
    Ok(())
}

// --- users

pub struct NewUser<'a> {
    pub tenant: &'a str,
    pub name: &'a str,
    pub id: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub email: Option<&'a str>,
}

/// Creates a user and its first access key; returns both and the key's secret.
pub async fn create_user(
    store: &IdentityStore,
    new: NewUser<'_>,
) -> Result<(UserRecord, AccessKeyRecord, String)> {
    if !new.tenant.is_empty() && !valid_tenant(new.tenant) {
        return Err(IdentityError::NoSuchTenant(new.tenant.to_string()));
    }
    if !valid_user_name(new.name) {
        return Err(IdentityError::Invalid(
            "user names are 1-64 characters of A-Z, a-z, 0-9 and _.@+=,-".into(),
        ));
    }
    if let Some(id) = new.id {
        if !valid_user_id(id) {
            return Err(IdentityError::Invalid(
                "user ids are 1-64 characters of A-Z, a-z, 0-9, '_' and '-'".into(),
            ));
        }
        if id == super::ROOT_USER_ID {
            return Err(IdentityError::UserExists(format!(
                "user id {id:?} is taken"
            )));
        }
    }
    if !tenant_exists(store, new.tenant).await? {
        return Err(IdentityError::NoSuchTenant(new.tenant.to_string()));
    }
    let id = new.id.map(str::to_string).unwrap_or_else(new_user_id);
    let user = UserRecord {
        id: id.clone(),
        tenant: new.tenant.to_string(),
        name: new.name.to_string(),
        display_name: new.display_name.unwrap_or(new.name).to_string(),
        email: new.email.unwrap_or_default().to_string(),
        created_unix_ms: now_ms(),
        ..Default::default()
    };
    // 1. Claim the name (reclaiming one left by a create that died before step 2).
    let name_key = keys::user_name_key(new.tenant, new.name);
    let claim = keys::encode_value(&UserNameRecord {
        user_id: id.clone(),
    });
    if !put_new(store, name_key.clone(), claim.clone()).await? {
        let held = store
            .meta()
            .get::<UserNameRecord>(Cf::Meta, &name_key)
            .await?;
        let dangling = match &held {
            Some(h) => store
                .meta()
                .get_raw(Cf::Meta, &keys::user_key(&h.record.user_id))
                .await?
                .is_none(),
            None => false,
        };
        let reclaimed = match held {
            Some(h) if dangling => replace(store, name_key.clone(), &h.raw, claim.clone()).await?,
            _ => false,
        };
        if !reclaimed {
            return Err(IdentityError::UserExists(format!(
                "a user named {:?} exists in this tenant",
                new.name
            )));
        }
    }
    // 2. The user record under its id.
    if !put_new(store, keys::user_key(&id), keys::encode_value(&user)).await? {
        let _ = store
            .meta()
            .batch(
                vec![meta::value_equals(Cf::Meta, name_key.clone(), claim.into())],
                vec![meta::delete(Cf::Meta, name_key)],
            )
            .await;
        return Err(IdentityError::UserExists(format!(
            "user id {id:?} is taken"
        )));
    }
    tracing::info!(user = %id, tenant = new.tenant, "user created");
    let (key, secret) = create_key(store, &id, None, None, 0).await?;
    Ok((user, key, secret))
}

pub async fn get_user(store: &IdentityStore, id: &str) -> Result<Versioned<UserRecord>> {
    if id == super::ROOT_USER_ID {
        return Ok(root_user(store));
    }
    store
        .meta()
        .get::<UserRecord>(Cf::Meta, &keys::user_key(id))
        .await?
        .ok_or_else(|| IdentityError::NoSuchUser(id.to_string()))
}

/// The root user as a record (it is never stored).
fn root_user(store: &IdentityStore) -> Versioned<UserRecord> {
    let p = store.root_principal();
    let record = UserRecord {
        id: p.user_id.clone(),
        tenant: String::new(),
        name: p.name.clone(),
        display_name: p.display_name.clone(),
        admin: true,
        ..Default::default()
    };
    Versioned {
        raw: keys::encode_value(&record).into(),
        record,
    }
}

pub async fn user_by_key(store: &IdentityStore, access_key: &str) -> Result<UserRecord> {
    if access_key == store.root_access_key() {
        return Ok(root_user(store).record);
    }
    let key = get_key(store, access_key).await?;
    Ok(get_user(store, &key.record.user_id).await?.record)
}

pub async fn list_users(store: &IdentityStore, tenant: Option<&str>) -> Result<Vec<UserRecord>> {
    let mut users: Vec<UserRecord> = scan_all(store, keys::user_range())
        .await?
        .iter()
        .map(decode)
        .collect::<Result<_>>()?;
    if let Some(t) = tenant {
        users.retain(|u| u.tenant == t);
    }
    Ok(users)
}

/// Deletes a user that owns no bucket, with its keys.
pub async fn delete_user(store: &IdentityStore, id: &str) -> Result<()> {
    if id == super::ROOT_USER_ID {
        return Err(IdentityError::Invalid(
            "the root user can't be deleted".into(),
        ));
    }
    let user = get_user(store, id).await?.record;
    let buckets = scan_all(store, keys::bucket_range(&user.tenant)).await?;
    for kv in &buckets {
        let b: BucketRecord = decode(kv)?;
        if b.owner == user.id {
            return Err(IdentityError::UserOwnsBuckets(id.to_string()));
        }
    }
    for key in list_keys(store, Some(id)).await? {
        delete_key(store, keys::access_key_key(&key.access_key)).await?;
        store.forget(&key.access_key);
    }
    delete_key(store, keys::user_key(id)).await?;
    let name_key = keys::user_name_key(&user.tenant, &user.name);
    let claim = keys::encode_value(&UserNameRecord {
        user_id: id.to_string(),
    });
    store
        .meta()
        .batch(
            vec![meta::value_equals(Cf::Meta, name_key.clone(), claim.into())],
            vec![meta::delete(Cf::Meta, name_key)],
        )
        .await?;
    tracing::info!(user = %id, "user deleted");
    Ok(())
}

/// Sets (`Some`) or removes (`None`) a user's policy.
pub async fn set_user_policy(
    store: &IdentityStore,
    id: &str,
    policy: Option<&str>,
) -> Result<UserRecord> {
    if id == super::ROOT_USER_ID {
        return Err(IdentityError::Invalid("the root user has no policy".into()));
    }
    if let Some(text) = policy {
        let parsed =
            Policy::parse(text).map_err(|e| IdentityError::MalformedPolicy(e.to_string()))?;
        if parsed.names_any_principal() {
            return Err(IdentityError::MalformedPolicy(
                "a user policy must not name a Principal".into(),
            ));
        }
    }
    for _ in 0..meta::RMW_ATTEMPTS {
        let cur = get_user(store, id).await?;
        let mut user = cur.record.clone();
        user.policy = policy.unwrap_or_default().to_string();
        if replace(
            store,
            keys::user_key(id),
            &cur.raw,
            keys::encode_value(&user),
        )
        .await?
        {
            store.forget_user(id);
            return Ok(user);
        }
    }
    Err(GwError::Contention("user changed concurrently".into()).into())
}

// --- access keys

/// Creates an access key for `user_id`; returns it and its secret.
pub async fn create_key(
    store: &IdentityStore,
    user_id: &str,
    access_key: Option<&str>,
    secret: Option<&str>,
    expires_unix_ms: i64,
) -> Result<(AccessKeyRecord, String)> {
    let ak = match access_key {
        Some(ak) if !valid_access_key(ak) => {
            return Err(IdentityError::Invalid(
                "access keys are 16-128 characters of A-Z, a-z and 0-9".into(),
            ))
        }
        Some(ak) => ak.to_string(),
        None => new_access_key(),
    };
    let sk = match secret {
        Some(sk) if !valid_secret(sk) => {
            return Err(IdentityError::Invalid(
                "secret keys are 16-128 printable characters without spaces".into(),
            ))
        }
        Some(sk) => sk.to_string(),
        None => new_secret_key(),
    };
    if ak == store.root_access_key() {
        return Err(IdentityError::KeyExists(ak));
    }
    let user = get_user(store, user_id).await?.record;
    if user.id == super::ROOT_USER_ID {
        return Err(IdentityError::Invalid(
            "the root user's key comes from KURA_ROOT_ACCESS_KEY".into(),
        ));
    }
    let sealed = store
        .sealer()
        .seal(&ak, &sk)
        .map_err(|e| GwError::Internal(e.to_string()))?;
    let rec = AccessKeyRecord {
        access_key: ak.clone(),
        user_id: user.id,
        tenant: user.tenant,
        sealed_secret: sealed.into(),
        active: true,
        created_unix_ms: now_ms(),
        expires_unix_ms,
    };
    if !put_new(store, keys::access_key_key(&ak), keys::encode_value(&rec)).await? {
        return Err(IdentityError::KeyExists(ak));
    }
    store.forget(&ak);
    tracing::info!(user = %user_id, access_key = %ak, "access key created");
    Ok((rec, sk))
}

pub async fn get_key(
    store: &IdentityStore,
    access_key: &str,
) -> Result<Versioned<AccessKeyRecord>> {
    store
        .meta()
        .get::<AccessKeyRecord>(Cf::Meta, &keys::access_key_key(access_key))
        .await?
        .ok_or_else(|| IdentityError::NoSuchKey(access_key.to_string()))
}

pub async fn list_keys(
    store: &IdentityStore,
    user_id: Option<&str>,
) -> Result<Vec<AccessKeyRecord>> {
    let mut out: Vec<AccessKeyRecord> = scan_all(store, keys::access_key_range())
        .await?
        .iter()
        .map(decode)
        .collect::<Result<_>>()?;
    if let Some(u) = user_id {
        out.retain(|k| k.user_id == u);
    }
    Ok(out)
}

pub async fn set_key_active(
    store: &IdentityStore,
    access_key: &str,
    active: bool,
) -> Result<AccessKeyRecord> {
    for _ in 0..meta::RMW_ATTEMPTS {
        let cur = get_key(store, access_key).await?;
        let mut rec = cur.record.clone();
        rec.active = active;
        if replace(
            store,
            keys::access_key_key(access_key),
            &cur.raw,
            keys::encode_value(&rec),
        )
        .await?
        {
            store.forget(access_key);
            tracing::info!(access_key, active, "access key changed");
            return Ok(rec);
        }
    }
    Err(GwError::Contention("access key changed concurrently".into()).into())
}

pub async fn delete_access_key(store: &IdentityStore, access_key: &str) -> Result<()> {
    get_key(store, access_key).await?;
    delete_key(store, keys::access_key_key(access_key)).await?;
    store.forget(access_key);
    tracing::info!(access_key, "access key deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_tenant("acme"));
        assert!(valid_tenant("a_b-9"));
        assert!(!valid_tenant(""));
        assert!(!valid_tenant("Acme"));
        assert!(!valid_tenant("a:b"));
        assert!(!valid_tenant(&"a".repeat(33)));
        assert!(valid_user_name("alice@example.com"));
        assert!(!valid_user_name("al ice"));
        assert!(valid_user_id(&new_user_id()));
        assert_eq!(new_user_id().len(), 64);
        assert!(valid_access_key(&new_access_key()));
        assert!(valid_secret(&new_secret_key()));
        assert!(!valid_secret("short"));
        assert!(!valid_access_key("with-dash-0123456789"));
    }
}
