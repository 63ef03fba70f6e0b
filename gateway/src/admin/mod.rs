//! The admin API: tenants, users, access keys and user policies over HTTP
//! and JSON, served on the S3 port under `/_kura/admin/v1/` (contract:
//! docs/admin-api.md; client: `kura admin`).
//!
//! It is an s3s custom route, so s3s verifies the SigV4 signature exactly as
//! for S3 requests; [`AdminRoute::check_access`] then admits admin users
//! only, and the body's SHA-256 is checked against the signed
//! `x-amz-content-sha256`. The work itself is `identity::records`.

mod limits;

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode, Uri};
use kura_proto::meta::{AccessKeyRecord, BucketRecord, TenantRecord, UserRecord};
use s3s::route::S3Route;
use s3s::{Body, S3Request, S3Response, S3Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::authz::{self, BucketName};
use crate::context::Ctx;
use crate::error::GwError;
use crate::identity::limits::{self as ilimits, LimitScope, ScopeLimits};
use crate::identity::records::{self as rec, IdentityError, NewUser};
use crate::storage_class;

pub const PREFIX: &str = "/_kura/admin/v1/";
/// Admin bodies are small JSON documents (a policy is at most 20 KiB).
const MAX_BODY: usize = 64 * 1024;

pub struct AdminRoute {
    ctx: Arc<Ctx>,
}

impl AdminRoute {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        AdminRoute { ctx }
    }
}

/// An answer: status and JSON.
struct Reply(StatusCode, Value);

fn ok(v: Value) -> Result<Reply, IdentityError> {
    Ok(Reply(StatusCode::OK, v))
}

fn error_reply(e: &IdentityError) -> Reply {
    use IdentityError as E;
    let (status, code) = match e {
        E::Invalid(_) => (StatusCode::BAD_REQUEST, "InvalidArgument"),
        E::MalformedPolicy(_) => (StatusCode::BAD_REQUEST, "MalformedPolicy"),
        E::NoSuchTenant(_) => (StatusCode::NOT_FOUND, "NoSuchTenant"),
        E::NoSuchUser(_) => (StatusCode::NOT_FOUND, "NoSuchUser"),
        E::NoSuchKey(_) => (StatusCode::NOT_FOUND, "NoSuchKey"),
        E::NoSuchBucket(_) => (StatusCode::NOT_FOUND, "NoSuchBucket"),
        E::NoPolicy => (StatusCode::NOT_FOUND, "NotFound"),
        E::TenantExists(_) => (StatusCode::CONFLICT, "TenantExists"),
        E::UserExists(_) => (StatusCode::CONFLICT, "UserExists"),
        E::KeyExists(_) => (StatusCode::CONFLICT, "KeyExists"),
        E::TenantNotEmpty(_) => (StatusCode::CONFLICT, "TenantNotEmpty"),
        E::UserOwnsBuckets(_) => (StatusCode::CONFLICT, "UserOwnsBuckets"),
        E::Gw(g) if g.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
        E::Gw(g) => {
            tracing::error!(error = %g, "admin request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
        }
    };
    let message = match e {
        E::Gw(_) => "the request could not be completed; retry later".to_string(),
        other => other.to_string(),
    };
    Reply(status, json!({"error": {"code": code, "message": message}}))
}

fn invalid(msg: impl Into<String>) -> IdentityError {
    IdentityError::Invalid(msg.into())
}

fn rfc3339(ms: i64) -> Value {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .map(Value::String)
        .unwrap_or(Value::Null)
}

fn parse_time(s: &str) -> Result<i64, IdentityError> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| invalid(format!("expires: not an RFC 3339 time: {e}")))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn tenant_json(t: &TenantRecord) -> Value {
    json!({"name": t.name, "created": rfc3339(t.created_unix_ms)})
}

fn key_json(k: &AccessKeyRecord, secret: Option<&str>) -> Value {
    let mut v = json!({
        "access_key": k.access_key,
        "user": k.user_id,
        "tenant": k.tenant,
        "status": if k.active { "active" } else { "inactive" },
        "created": rfc3339(k.created_unix_ms),
        "expires": if k.expires_unix_ms == 0 { Value::Null } else { rfc3339(k.expires_unix_ms) },
    });
    if let Some(s) = secret {
        v["secret_key"] = Value::String(s.to_string());
    }
    v
}

fn policy_json(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or(Value::String(text.to_string()))
}

fn user_json(u: &UserRecord, keys: Vec<Value>) -> Value {
    json!({
        "id": u.id,
        "tenant": u.tenant,
        "name": u.name,
        "display_name": u.display_name,
        "email": u.email,
        "created": rfc3339(u.created_unix_ms),
        "admin": u.admin,
        "keys": keys,
        "policy": policy_json(&u.policy),
    })
}

fn bucket_json(ctx: &Ctx, name: &BucketName, b: &BucketRecord) -> Value {
    json!({
        "name": name.name,
        "tenant": name.tenant,
        "id": b.id,
        "owner": authz::owner_id(ctx, b),
        "created": rfc3339(b.created_unix_ms),
        "storage_class": storage_class::recorded(b.storage_class, ctx.default_class).as_str_name(),
        "policy": policy_json(&b.policy),
    })
}

/// Query parameters, decoded.
fn query(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn body_json(body: &[u8]) -> Result<Value, IdentityError> {
    if body.is_empty() {
        return Err(invalid("a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| invalid(format!("body is not JSON: {e}")))
}

fn str_field<'a>(v: &'a Value, name: &str) -> Result<Option<&'a str>, IdentityError> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(invalid(format!("{name} must be a string"))),
    }
}

async fn user_with_keys(ctx: &Ctx, u: &UserRecord) -> Result<Value, IdentityError> {
    let keys = if u.id == crate::identity::ROOT_USER_ID {
        vec![
            json!({"access_key": ctx.identity.root_access_key(), "user": u.id, "tenant": "",
                    "status": "active", "created": Value::Null, "expires": Value::Null}),
        ]
    } else {
        rec::list_keys(&ctx.identity, Some(&u.id))
            .await?
            .iter()
            .map(|k| key_json(k, None))
            .collect()
    };
    Ok(user_json(u, keys))
}

/// Routes one admin request (path relative to [`PREFIX`]).
async fn dispatch(
    ctx: &Ctx,
    method: &Method,
    path: &str,
    q: &[(String, String)],
    body: &[u8],
) -> Result<Reply, IdentityError> {
    let store = &ctx.identity;
    let seg: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
    match (method.as_str(), seg.as_slice()) {
        ("GET", ["tenants"]) => {
            let tenants: Vec<Value> = rec::list_tenants(store)
                .await?
                .iter()
                .map(tenant_json)
                .collect();
            ok(json!({"count": tenants.len(), "tenants": tenants}))
        }
        ("POST", ["tenants"]) => {
            let v = body_json(body)?;
            let name = str_field(&v, "name")?.ok_or_else(|| invalid("name is required"))?;
            ok(tenant_json(&rec::create_tenant(store, name).await?))
        }
        ("DELETE", ["tenants", name]) => {
            rec::delete_tenant(store, name).await?;
            ok(json!({}))
        }
        ("POST", ["users"]) => {
            let v = body_json(body)?;
            let new = NewUser {
                tenant: str_field(&v, "tenant")?.unwrap_or_default(),
                name: str_field(&v, "name")?.ok_or_else(|| invalid("name is required"))?,
                id: str_field(&v, "id")?,
                display_name: str_field(&v, "display_name")?,
                email: str_field(&v, "email")?,
            };
            let (user, key, secret) = rec::create_user(store, new).await?;
            ok(user_json(&user, vec![key_json(&key, Some(&secret))]))
        }
        ("GET", ["users"]) => {
            let mut users = Vec::new();
            for u in rec::list_users(store, param(q, "tenant")).await? {
                users.push(user_with_keys(ctx, &u).await?);
            }
            ok(json!({"count": users.len(), "users": users}))
        }
        ("GET", ["user"]) => {
            let user = match (param(q, "id"), param(q, "access_key")) {
                (Some(id), None) => rec::get_user(store, id).await?.record,
                (None, Some(ak)) => rec::user_by_key(store, ak).await?,
                _ => return Err(invalid("give exactly one of id and access_key")),
            };
            ok(user_with_keys(ctx, &user).await?)
        }
        ("DELETE", ["users", id]) => {
            rec::delete_user(store, id).await?;
            ok(json!({}))
        }
        ("PUT", ["users", id, "policy"]) => {
            let text =
                std::str::from_utf8(body).map_err(|_| invalid("the policy must be UTF-8"))?;
            let user = rec::set_user_policy(store, id, Some(text)).await?;
            ok(user_with_keys(ctx, &user).await?)
        }
        ("GET", ["users", id, "policy"]) => {
            let user = rec::get_user(store, id).await?.record;
            if user.policy.is_empty() {
                return Err(IdentityError::NoPolicy);
            }
            ok(policy_json(&user.policy))
        }
        ("DELETE", ["users", id, "policy"]) => {
            rec::set_user_policy(store, id, None).await?;
            ok(json!({}))
        }
        ("POST", ["keys"]) => {
            let v = body_json(body)?;
            let user = str_field(&v, "user")?.ok_or_else(|| invalid("user is required"))?;
            let expires = str_field(&v, "expires")?
                .map(parse_time)
                .transpose()?
                .unwrap_or(0);
            let (key, secret) = rec::create_key(
                store,
                user,
                str_field(&v, "access_key")?,
                str_field(&v, "secret_key")?,
                expires,
            )
            .await?;
            ok(key_json(&key, Some(&secret)))
        }
        ("GET", ["keys"]) => {
            let keys: Vec<Value> = rec::list_keys(store, param(q, "user"))
                .await?
                .iter()
                .map(|k| key_json(k, None))
                .collect();
            ok(json!({"count": keys.len(), "keys": keys}))
        }
        ("POST", ["keys", ak, action @ ("enable" | "disable")]) => {
            let key = rec::set_key_active(store, ak, *action == "enable").await?;
            ok(key_json(&key, None))
        }
        ("DELETE", ["keys", ak]) => {
            rec::delete_access_key(store, ak).await?;
            ok(json!({}))
        }
        ("GET", ["buckets", name]) => {
            let name = BucketName::resolve(name, "");
            let b = ctx
                .meta
                .get::<BucketRecord>(kura_metashard::client::Cf::Meta, &name.key())
                .await?
                .ok_or_else(|| IdentityError::NoSuchBucket(name.qualified()))?;
            ok(bucket_json(ctx, &name, &b.record))
        }
        ("GET", ["quota"]) => {
            let scope = limits::scope_of(q)?;
            ok(limits::quota_json(
                &scope,
                &ilimits::get(store, &scope).await?,
            ))
        }
        ("PUT", ["quota"]) => {
            let scope = limits::scope_of(q)?;
            let l = ilimits::update(store, &scope, limits::quota_change(body)?).await?;
            forget_scope(ctx, &scope, &l);
            ok(limits::quota_json(&scope, &l))
        }
        ("GET", ["ratelimit"]) => {
            let scope = limits::scope_of(q)?;
            ok(limits::limits_json(
                &scope,
                &ilimits::get(store, &scope).await?,
            ))
        }
        ("PUT", ["ratelimit"]) => {
            let scope = limits::scope_of(q)?;
            let l = ilimits::update(store, &scope, limits::limits_change(body)?).await?;
            forget_scope(ctx, &scope, &l);
            ok(limits::limits_json(&scope, &l))
        }
        ("GET", ["usage"]) => ok(limits::usage_report(ctx, param(q, "tenant")).await?),
        _ => Ok(Reply(
            StatusCode::NOT_FOUND,
            json!({"error": {"code": "NotFound",
                             "message": format!("no admin route {method} /{}", seg.join("/"))}}),
        )),
    }
}

/// This gateway sees a changed tenant or user limit at once (others within
/// the record cache's TTL; bucket limits are read with the bucket).
fn forget_scope(ctx: &Ctx, scope: &LimitScope, l: &ScopeLimits) {
    match scope {
        LimitScope::Tenant(t) => ctx.records.forget_tenant(t),
        LimitScope::User { .. } => {
            if let Some(id) = &l.user_id {
                ctx.records.forget_user(id);
            }
        }
        LimitScope::Bucket { .. } => {}
    }
}

/// The signed payload hash must match the body (for custom routes s3s
/// checks the signature over the header, not the body against it).
fn check_payload(headers: &HeaderMap, body: &[u8]) -> Result<(), IdentityError> {
    let claimed = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if claimed == "UNSIGNED-PAYLOAD" || claimed.is_empty() {
        if body.is_empty() {
            return Ok(());
        }
        return Err(invalid(
            "admin requests with a body must sign its SHA-256 (x-amz-content-sha256)",
        ));
    }
    if !claimed.eq_ignore_ascii_case(&hex::encode(Sha256::digest(body))) {
        return Err(invalid("x-amz-content-sha256 does not match the body"));
    }
    Ok(())
}

#[async_trait::async_trait]
impl S3Route for AdminRoute {
    fn is_match(&self, _m: &Method, uri: &Uri, _h: &HeaderMap, _e: &mut http::Extensions) -> bool {
        uri.path().starts_with(PREFIX)
    }

    async fn check_access(&self, req: &mut S3Request<Body>) -> S3Result<()> {
        let Some(cred) = &req.credentials else {
            return Err(GwError::AccessDenied.into());
        };
        match self.ctx.identity.lookup(&cred.access_key).await {
            Ok(Some(e)) if e.principal.admin => Ok(()),
            Ok(_) => Err(GwError::AccessDenied.into()),
            Err(e) => Err(e.into()),
        }
    }

    async fn call(&self, mut req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        let reply = match req.input.store_all_limited(MAX_BODY).await {
            Err(_) => error_reply(&invalid(format!(
                "the body must be at most {MAX_BODY} bytes"
            ))),
            Ok(body) => {
                let path = req
                    .uri
                    .path()
                    .strip_prefix(PREFIX)
                    .unwrap_or_default()
                    .to_string();
                let q = query(&req.uri);
                let result = match check_payload(&req.headers, &body) {
                    Ok(()) => dispatch(&self.ctx, &req.method, &path, &q, &body).await,
                    Err(e) => Err(e),
                };
                result.unwrap_or_else(|e| error_reply(&e))
            }
        };
        let Reply(status, value) = reply;
        let mut resp = S3Response::with_status(Body::from(value.to_string()), status);
        resp.headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_hash_is_checked() {
        let mut h = HeaderMap::new();
        assert!(check_payload(&h, b"").is_ok());
        assert!(check_payload(&h, b"{}").is_err());
        h.insert(
            "x-amz-content-sha256",
            hex::encode(Sha256::digest(b"{}")).parse().unwrap(),
        );
        assert!(check_payload(&h, b"{}").is_ok());
        assert!(check_payload(&h, b"{ }").is_err());
        h.insert("x-amz-content-sha256", "UNSIGNED-PAYLOAD".parse().unwrap());
        assert!(check_payload(&h, b"{}").is_err());
    }

    #[test]
    fn queries_decode() {
        let uri: Uri = "/_kura/admin/v1/user?access_key=AK%2B1&tenant=a+b"
            .parse()
            .unwrap();
        let q = query(&uri);
        assert_eq!(param(&q, "access_key"), Some("AK+1"));
        assert_eq!(param(&q, "tenant"), Some("a b"));
        assert_eq!(param(&q, "id"), None);
    }
}
