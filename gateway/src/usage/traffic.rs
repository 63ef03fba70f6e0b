//! Request traffic per tenant, user and bucket: requests, bytes in, bytes
//! out.
//!
//! - Counted once per allowed request: the access check names the scopes
//!   ([`note`]), the listener adds the bytes when the response head is out
//!   ([`TrafficSlot::settle`]: the request's declared body length and the
//!   response's Content-Length — bodies cut short still count whole).
//! - Kept per gateway in memory, flushed every [`FLUSH_INTERVAL`] into that
//!   gateway's own cumulative records in the metadata (no two gateways
//!   write one record, so no contention); `kura admin usage` sums them over
//!   gateways. Traffic of the last interval of a gateway that dies is lost.
//! - Exposed per tenant on `/metrics` with bounded cardinality
//!   ([`TenantSeries`]): at most [`TOP_TENANTS`] tenants get their own
//!   series (the busiest, once promoted never demoted, so their counters only
//!   grow), every other tenant is summed under `tenant="other"`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::TrafficRecord;
use s3s::access::S3AccessContext;

use crate::authz::{BucketName, Caller};
use crate::context::Ctx;
use crate::error::GwResult;

/// How often a gateway adds its counts to its records in the metadata.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Tenants with a series of their own on `/metrics`.
pub const TOP_TENANTS: usize = 20;

/// What traffic is counted against.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum TrafficScope {
    Tenant(String),
    /// A user's canonical id.
    User(String),
    /// `tenant:bucket` (`bucket` in the root tenant).
    Bucket(String),
}

impl TrafficScope {
    /// The scope's name in its metadata key.
    fn key_part(&self) -> String {
        match self {
            TrafficScope::Tenant(t) => format!("t/{t}"),
            TrafficScope::User(u) => format!("u/{u}"),
            TrafficScope::Bucket(b) => format!("b/{b}"),
        }
    }

    fn parse(part: &str) -> Option<TrafficScope> {
        let (kind, name) = part.split_once('/')?;
        Some(match kind {
            "t" => TrafficScope::Tenant(name.to_string()),
            "u" => TrafficScope::User(name.to_string()),
            "b" => TrafficScope::Bucket(name.to_string()),
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.requests += o.requests;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }
}

/// This gateway's counts: since start (for `/metrics`) and not yet flushed.
#[derive(Default)]
pub struct Traffic {
    /// This gateway's name in its records' keys (its S3 listen address:
    /// stable across restarts, so a restarted gateway adds to its records).
    gateway: String,
    totals: Mutex<HashMap<TrafficScope, Counts>>,
    unflushed: Mutex<HashMap<TrafficScope, Counts>>,
    /// One flush at a time: a reader that flushes first then sees every
    /// count taken by a flush running meanwhile.
    flushing: tokio::sync::Mutex<()>,
    promoted: Mutex<BTreeSet<String>>,
}

impl Traffic {
    pub fn new(gateway: String) -> Self {
        Traffic {
            gateway,
            ..Default::default()
        }
    }

    fn record(&self, scopes: &[TrafficScope], c: Counts) {
        for map in [&self.totals, &self.unflushed] {
            let mut m = map.lock().expect("traffic lock poisoned");
            for s in scopes {
                m.entry(s.clone()).or_default().add(c);
            }
        }
    }

    /// Per-tenant series for `/metrics`: the promoted tenants and "other".
    pub fn tenant_series(&self) -> Vec<(String, Counts)> {
        let totals = self.totals.lock().expect("traffic lock poisoned");
        let mut tenants: Vec<(&String, &Counts)> = totals
            .iter()
            .filter_map(|(s, c)| match s {
                TrafficScope::Tenant(t) => Some((t, c)),
                _ => None,
            })
            .collect();
        let mut promoted = self.promoted.lock().expect("traffic lock poisoned");
        if promoted.len() < TOP_TENANTS {
            tenants.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(b.0)));
            for (t, _) in &tenants {
                if promoted.len() >= TOP_TENANTS {
                    break;
                }
                promoted.insert((*t).clone());
            }
        }
        let mut other = Counts::default();
        let mut out = Vec::new();
        for (t, c) in tenants {
            if promoted.contains(t) {
                out.push((label(t), *c));
            } else {
                other.add(*c);
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.push(("other".to_string(), other));
        out
    }

    /// Adds the unflushed counts to this gateway's records.
    pub async fn flush(&self, ctx: &Ctx) -> GwResult<()> {
        let _one = self.flushing.lock().await;
        let gateway = self.gateway.as_str();
        let pending = std::mem::take(&mut *self.unflushed.lock().expect("traffic lock poisoned"));
        let mut failed = HashMap::new();
        for (scope, c) in pending {
            if let Err(e) = flush_one(ctx, gateway, &scope, c).await {
                tracing::debug!(error = %e, "traffic flush failed; retried next time");
                failed.insert(scope, c);
            }
        }
        if !failed.is_empty() {
            let mut m = self.unflushed.lock().expect("traffic lock poisoned");
            for (s, c) in failed {
                m.entry(s).or_default().add(c);
            }
        }
        Ok(())
    }

    /// Flushes every [`FLUSH_INTERVAL`] until `shutdown`, and once more then.
    pub async fn run(
        self: Arc<Self>,
        ctx: Arc<Ctx>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_INTERVAL) => {}
                _ = shutdown.changed() => {}
            }
            let _ = self.flush(&ctx).await;
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

/// The root tenant's label.
fn label(tenant: &str) -> String {
    if tenant.is_empty() {
        "root".to_string()
    } else {
        tenant.to_string()
    }
}

async fn flush_one(ctx: &Ctx, gateway: &str, scope: &TrafficScope, c: Counts) -> GwResult<()> {
    let key = keys::traffic_key(gateway, &scope.key_part());
    for _ in 0..crate::meta::RMW_ATTEMPTS {
        let cur = ctx.meta.get::<TrafficRecord>(Cf::Usage, &key).await?;
        let mut rec = cur.as_ref().map(|v| v.record).unwrap_or_default();
        rec.requests += c.requests;
        rec.bytes_in += c.bytes_in;
        rec.bytes_out += c.bytes_out;
        let value = keys::encode_value(&rec);
        if ctx
            .meta
            .swap(Cf::Usage, &key, cur.as_ref().map(|v| &v.raw), &value)
            .await?
        {
            return Ok(());
        }
    }
    Err(crate::error::GwError::Contention(
        "traffic record changed".into(),
    ))
}

/// Every gateway's flushed counts, summed per scope.
pub async fn totals(ctx: &Ctx) -> GwResult<HashMap<TrafficScope, Counts>> {
    let (start, end) = keys::traffic_range();
    let mut out: HashMap<TrafficScope, Counts> = HashMap::new();
    let mut pages = ctx.meta.pages(Cf::Usage, start, end, 1000);
    while let Some(page) = pages.next_page().await? {
        for kv in &page {
            let Some(part) = keys::traffic_scope_of(&kv.key) else {
                continue;
            };
            let Some(scope) = TrafficScope::parse(&part) else {
                continue;
            };
            let r: TrafficRecord = keys::decode_value(&kv.value)?;
            out.entry(scope).or_default().add(Counts {
                requests: r.requests,
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
            });
        }
    }
    Ok(out)
}

/// Where the access check leaves a request's scopes for the listener.
#[derive(Clone, Default)]
pub struct TrafficSlot(Arc<Mutex<Vec<TrafficScope>>>);

impl TrafficSlot {
    /// A fresh slot in `ext`; keep the returned handle to settle.
    pub fn attach(ext: &mut http::Extensions) -> TrafficSlot {
        let slot = TrafficSlot::default();
        ext.insert(slot.clone());
        slot
    }

    /// Counts the request once its response head is ready.
    pub fn settle(&self, traffic: &Traffic, bytes_in: u64, response: &http::HeaderMap) {
        let scopes = std::mem::take(&mut *self.0.lock().expect("traffic lock poisoned"));
        if scopes.is_empty() {
            return;
        }
        let bytes_out = response
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        traffic.record(
            &scopes,
            Counts {
                requests: 1,
                bytes_in,
                bytes_out,
            },
        );
    }
}

/// The access check's traffic step: names the scopes an allowed request
/// counts against — the caller's tenant and user (anonymous: the bucket's
/// tenant) and the addressed bucket.
pub fn note(cx: &mut S3AccessContext<'_>, caller: &Caller, bucket: Option<&BucketName>) {
    note_in(cx.extensions_mut(), caller, bucket)
}

/// [`note`] for a request s3s never sees (PostObject).
pub fn note_in(extensions: &mut http::Extensions, caller: &Caller, bucket: Option<&BucketName>) {
    let mut scopes = Vec::with_capacity(3);
    match &caller.principal {
        Some(p) => {
            scopes.push(TrafficScope::Tenant(p.tenant.clone()));
            scopes.push(TrafficScope::User(p.user_id.clone()));
        }
        None => {
            if let Some(b) = bucket {
                scopes.push(TrafficScope::Tenant(b.tenant.clone()));
            }
        }
    }
    if let Some(b) = bucket {
        scopes.push(TrafficScope::Bucket(b.qualified()));
    }
    if let Some(slot) = extensions.get::<TrafficSlot>() {
        *slot.0.lock().expect("traffic lock poisoned") = scopes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_their_key_part() {
        for s in [
            TrafficScope::Tenant(String::new()),
            TrafficScope::Tenant("acme".into()),
            TrafficScope::User("abc".into()),
            TrafficScope::Bucket("acme:photos".into()),
        ] {
            assert_eq!(TrafficScope::parse(&s.key_part()), Some(s));
        }
        assert_eq!(TrafficScope::parse("x/y"), None);
    }

    #[test]
    fn at_most_top_tenants_get_a_series_and_counters_only_grow() {
        let t = Traffic::default();
        let one = |n: u64| Counts {
            requests: n,
            bytes_in: 0,
            bytes_out: 0,
        };
        for i in 0..(TOP_TENANTS + 5) {
            t.record(
                &[TrafficScope::Tenant(format!("t{i:02}"))],
                one(i as u64 + 1),
            );
        }
        let s = t.tenant_series();
        assert_eq!(s.len(), TOP_TENANTS + 1, "top tenants plus other");
        let other = s.iter().find(|(n, _)| n == "other").unwrap().1;
        // The five quietest (1..=5 requests) share "other".
        assert_eq!(other.requests, 1 + 2 + 3 + 4 + 5);
        // A quiet tenant growing busy later stays in "other": promoted
        // series never move, so no counter goes down.
        t.record(&[TrafficScope::Tenant("t00".into())], one(1000));
        let s2 = t.tenant_series();
        assert!(!s2.iter().any(|(n, _)| n == "t00"));
        let other2 = s2.iter().find(|(n, _)| n == "other").unwrap().1;
        assert_eq!(other2.requests, other.requests + 1000);
        t.record(&[TrafficScope::Tenant(String::new())], one(1));
        assert!(t.tenant_series().iter().any(|(n, _)| n == "other"));
    }
}
