//! The admin API's quota, rate-limit and usage routes (docs/admin-api.md).

use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::{BucketRecord, Quota, RateLimits};
use serde_json::{json, Map, Value};

use crate::authz;
use crate::context::Ctx;
use crate::identity::limits::{LimitScope, ScopeLimits};
use crate::identity::records::{self as rec, IdentityError};
use crate::usage::traffic::{self, Counts, TrafficScope};
use crate::usage::{self, Scope, Usage};
use std::collections::HashMap;

fn invalid(msg: impl Into<String>) -> IdentityError {
    IdentityError::Invalid(msg.into())
}

/// The scope named by `scope=…&tenant=…[&user=…|&bucket=…]`.
pub fn scope_of(q: &[(String, String)]) -> Result<LimitScope, IdentityError> {
    let param = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let tenant = param("tenant").unwrap_or_default().to_string();
    match (param("scope"), param("user"), param("bucket")) {
        (Some("tenant"), None, None) => Ok(LimitScope::Tenant(tenant)),
        (Some("user"), Some(name), None) if !name.is_empty() => Ok(LimitScope::User {
            tenant,
            name: name.to_string(),
        }),
        (Some("bucket"), None, Some(name)) if !name.is_empty() => Ok(LimitScope::Bucket {
            tenant,
            name: name.to_string(),
        }),
        _ => Err(invalid(
            "give scope=tenant, scope=user with user=NAME, or scope=bucket with bucket=NAME \
             (and tenant=T)",
        )),
    }
}

fn scope_fields(scope: &LimitScope) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("scope".into(), json!(scope.kind()));
    m.insert("tenant".into(), json!(scope.tenant()));
    let (user, bucket) = match scope {
        LimitScope::Tenant(_) => (Value::Null, Value::Null),
        LimitScope::User { name, .. } => (json!(name), Value::Null),
        LimitScope::Bucket { name, .. } => (Value::Null, json!(name)),
    };
    m.insert("user".into(), user);
    m.insert("bucket".into(), bucket);
    m
}

pub fn quota_json(scope: &LimitScope, l: &ScopeLimits) -> Value {
    let mut m = scope_fields(scope);
    let q = &l.quota;
    m.insert("max_bytes".into(), json!(q.max_bytes));
    m.insert("max_objects".into(), json!(q.max_objects));
    m.insert("max_buckets".into(), json!(q.max_buckets));
    Value::Object(m)
}

pub fn limits_json(scope: &LimitScope, l: &ScopeLimits) -> Value {
    let mut m = scope_fields(scope);
    let r = &l.limits;
    m.insert("max_read_ops".into(), json!(r.read_ops));
    m.insert("max_write_ops".into(), json!(r.write_ops));
    m.insert("max_list_ops".into(), json!(r.list_ops));
    m.insert("max_delete_ops".into(), json!(r.delete_ops));
    m.insert("max_read_bytes".into(), json!(r.read_bytes));
    m.insert("max_write_bytes".into(), json!(r.write_bytes));
    Value::Object(m)
}

/// One field of a PUT body: absent keeps (`None`), null removes
/// (`Some(None)`), a non-negative integer sets (`Some(Some(n))`).
type Change = Option<Option<u64>>;

fn field(body: &Map<String, Value>, name: &str) -> Result<Change, IdentityError> {
    match body.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => v
            .as_u64()
            .map(|n| Some(Some(n)))
            .ok_or_else(|| invalid(format!("{name} must be a non-negative integer or null"))),
    }
}

fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, IdentityError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("body is not JSON: {e}")))?;
    let Value::Object(m) = v else {
        return Err(invalid("the body must be a JSON object"));
    };
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!("unknown field {k:?}")));
    }
    Ok(m)
}

fn set(slot: &mut Option<u64>, change: Change) {
    if let Some(v) = change {
        *slot = v;
    }
}

/// The quota change a `PUT /quota` body asks for.
pub fn quota_change(body: &[u8]) -> Result<impl Fn(&mut Quota, &mut RateLimits), IdentityError> {
    let m = object(body, &["max_bytes", "max_objects", "max_buckets"])?;
    let (b, o, n) = (
        field(&m, "max_bytes")?,
        field(&m, "max_objects")?,
        field(&m, "max_buckets")?,
    );
    Ok(move |q: &mut Quota, _: &mut RateLimits| {
        set(&mut q.max_bytes, b);
        set(&mut q.max_objects, o);
        set(&mut q.max_buckets, n);
    })
}

const LIMIT_FIELDS: [&str; 6] = [
    "max_read_ops",
    "max_write_ops",
    "max_list_ops",
    "max_delete_ops",
    "max_read_bytes",
    "max_write_bytes",
];

/// The rate-limit change a `PUT /ratelimit` body asks for.
pub fn limits_change(body: &[u8]) -> Result<impl Fn(&mut Quota, &mut RateLimits), IdentityError> {
    let m = object(body, &LIMIT_FIELDS)?;
    let c: Vec<Change> = LIMIT_FIELDS
        .iter()
        .map(|f| field(&m, f))
        .collect::<Result<_, _>>()?;
    Ok(move |_: &mut Quota, l: &mut RateLimits| {
        set(&mut l.read_ops, c[0]);
        set(&mut l.write_ops, c[1]);
        set(&mut l.list_ops, c[2]);
        set(&mut l.delete_ops, c[3]);
        set(&mut l.read_bytes, c[4]);
        set(&mut l.write_bytes, c[5]);
    })
}

/// Adds a scope's request counts to its usage entry.
fn with_traffic(
    mut v: Value,
    traffic: &HashMap<TrafficScope, Counts>,
    scope: TrafficScope,
) -> Value {
    let c = traffic.get(&scope).copied().unwrap_or_default();
    v["requests"] = json!(c.requests);
    v["bytes_in"] = json!(c.bytes_in);
    v["bytes_out"] = json!(c.bytes_out);
    v
}

/// Bytes and objects stored per tenant, user and bucket, now (each bucket's
/// counter plus its pending deltas), and requests and bytes in and out
/// (every gateway's flushed counts, this gateway's flushed first).
pub async fn usage_report(ctx: &Ctx, tenant: Option<&str>) -> Result<Value, IdentityError> {
    ctx.traffic.flush(ctx).await?;
    let traffic = traffic::totals(ctx).await?;
    let tenants: Vec<String> = match tenant {
        Some(t) => vec![t.to_string()],
        None => std::iter::once(String::new())
            .chain(
                rec::list_tenants(&ctx.identity)
                    .await?
                    .into_iter()
                    .map(|t| t.name),
            )
            .collect(),
    };
    let (mut t_out, mut u_out, mut b_out) = (Vec::new(), Vec::new(), Vec::new());
    for t in &tenants {
        let mut per_owner: std::collections::BTreeMap<String, (Usage, u64)> = Default::default();
        let mut total = Usage::default();
        let (start, end) = keys::bucket_range(t);
        let mut count = 0u64;
        let mut pages = ctx.meta.pages(Cf::Meta, start, end, 1000);
        while let Some(page) = pages.next_page().await? {
            for kv in &page {
                let b: BucketRecord =
                    keys::decode_value(&kv.value).map_err(crate::error::GwError::from)?;
                let u = usage::bucket_usage(ctx, &Scope::of(&b)).await?;
                let owner = authz::owner_id(ctx, &b).to_string();
                total.add(u);
                count += 1;
                let e = per_owner.entry(owner.clone()).or_default();
                e.0.add(u);
                e.1 += 1;
                let qualified = crate::authz::BucketName {
                    tenant: t.clone(),
                    name: b.name.clone(),
                }
                .qualified();
                b_out.push(with_traffic(
                    json!({"tenant": t, "name": b.name, "id": b.id, "owner": owner,
                                  "bytes": u.bytes, "objects": u.objects}),
                    &traffic,
                    TrafficScope::Bucket(qualified),
                ));
            }
        }
        t_out.push(with_traffic(
            json!({"tenant": t, "bytes": total.bytes, "objects": total.objects, "buckets": count}),
            &traffic,
            TrafficScope::Tenant(t.clone()),
        ));
        let mut users = rec::list_users(&ctx.identity, Some(t)).await?;
        if t.is_empty() {
            users.push(
                rec::get_user(&ctx.identity, crate::identity::ROOT_USER_ID)
                    .await?
                    .record,
            );
        }
        for u in users {
            let (usage, buckets) = per_owner.remove(&u.id).unwrap_or_default();
            u_out.push(with_traffic(
                json!({"id": u.id, "tenant": t, "name": u.name, "bytes": usage.bytes,
                              "objects": usage.objects, "buckets": buckets}),
                &traffic,
                TrafficScope::User(u.id.clone()),
            ));
        }
    }
    Ok(json!({"tenants": t_out, "users": u_out, "buckets": b_out}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        s.split('&')
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn scopes() {
        assert_eq!(
            scope_of(&q("scope=tenant&tenant=acme")).unwrap(),
            LimitScope::Tenant("acme".into())
        );
        assert_eq!(
            scope_of(&q("scope=tenant&tenant=")).unwrap(),
            LimitScope::Tenant(String::new())
        );
        assert_eq!(
            scope_of(&q("scope=user&tenant=acme&user=alice")).unwrap(),
            LimitScope::User {
                tenant: "acme".into(),
                name: "alice".into()
            }
        );
        assert!(scope_of(&q("scope=user&tenant=acme")).is_err());
        assert!(scope_of(&q("scope=bucket&tenant=acme&user=alice")).is_err());
        assert!(scope_of(&q("scope=planet&tenant=acme")).is_err());
    }

    #[test]
    fn bodies_set_remove_and_keep() {
        let f = quota_change(br#"{"max_bytes": 10, "max_objects": null}"#).unwrap();
        let mut quota = Quota {
            max_bytes: None,
            max_objects: Some(5),
            max_buckets: Some(2),
        };
        f(&mut quota, &mut RateLimits::default());
        assert_eq!(
            (quota.max_bytes, quota.max_objects, quota.max_buckets),
            (Some(10), None, Some(2))
        );
        assert!(quota_change(br#"{"max_bytes": -1}"#).is_err());
        assert!(quota_change(br#"{"max_bytez": 1}"#).is_err());
        assert!(quota_change(b"[1]").is_err());
        let f = limits_change(br#"{"max_write_ops": 50}"#).unwrap();
        let mut l = RateLimits::default();
        f(&mut Quota::default(), &mut l);
        assert_eq!(l.write_ops, Some(50));
        assert_eq!(l.read_ops, None);
    }
}
