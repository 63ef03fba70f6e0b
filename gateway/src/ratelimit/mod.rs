//! Cluster-wide request-rate limits, the gateway's half (docs/tenancy.md
//! "Rate limits", docs/decisions/0022).
//!
//! A tenant, a user and a bucket may each carry limits (`RateLimits` in
//! their records): read, write, LIST and DELETE operations per second, bytes
//! per second in and out. A limit holds for the whole cluster: PD splits it
//! into per-gateway shares from the demand every gateway reports
//! (`lease.rs`, `kura_pd::ratelimit`), and each gateway admits at its share
//! with one token bucket per (scope, kind) (`bucket.rs`).
//!
//! The phases of one request:
//! 1. [`admit`], called by the access check once it has *allowed* the
//!    request (a refused request costs nobody tokens: a stranger can't use up
//!    a bucket's budget with requests it may not make), reads the caller's
//!    tenant and user records (cached) and takes the bucket record the check
//!    read, and builds one [`Charge`] per limit that applies ([`charges`]).
//! 2. [`RateLimiter::admit`] counts the arrival in every bucket's demand,
//!    then takes tokens from each; if one has too few, what was taken is
//!    given back and the request gets `503 SlowDown` with `Retry-After`.
//! 3. Bytes out are charged when the response head is ready
//!    ([`BytesOut::settle`], called by the listener): a GET's size is not
//!    known when it is admitted.
//!
//! Admins (the root key, users with the admin flag) are never limited.
//! Anonymous callers count against the bucket only.

pub mod bucket;
pub mod lease;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dashmap::DashMap;
use kura_proto::meta::{BucketRecord, RateLimits};
use kura_proto::pd::RateKind;
use s3s::access::S3AccessContext;

use crate::authz::{BucketName, Caller};
use crate::context::Ctx;
use crate::error::{GwError, GwResult};
use crate::metrics;
use bucket::{retry_after_secs, TokenBucket};

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ReadOps,
    WriteOps,
    ListOps,
    DeleteOps,
    ReadBytes,
    WriteBytes,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::ReadOps,
        Kind::WriteOps,
        Kind::ListOps,
        Kind::DeleteOps,
        Kind::ReadBytes,
        Kind::WriteBytes,
    ];

    /// The name in metrics, logs and the admin API (without `max_`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::ReadOps => "read_ops",
            Kind::WriteOps => "write_ops",
            Kind::ListOps => "list_ops",
            Kind::DeleteOps => "delete_ops",
            Kind::ReadBytes => "read_bytes",
            Kind::WriteBytes => "write_bytes",
        }
    }

    /// This kind's limit in a scope's record; `None` = no limit.
    pub fn limit_in(self, l: &RateLimits) -> Option<u64> {
        match self {
            Kind::ReadOps => l.read_ops,
            Kind::WriteOps => l.write_ops,
            Kind::ListOps => l.list_ops,
            Kind::DeleteOps => l.delete_ops,
            Kind::ReadBytes => l.read_bytes,
            Kind::WriteBytes => l.write_bytes,
        }
    }

    pub fn to_proto(self) -> RateKind {
        match self {
            Kind::ReadOps => RateKind::ReadOps,
            Kind::WriteOps => RateKind::WriteOps,
            Kind::ListOps => RateKind::ListOps,
            Kind::DeleteOps => RateKind::DeleteOps,
            Kind::ReadBytes => RateKind::ReadBytes,
            Kind::WriteBytes => RateKind::WriteBytes,
        }
    }

    pub fn from_proto(k: i32) -> Option<Kind> {
        match RateKind::try_from(k).ok()? {
            RateKind::ReadOps => Some(Kind::ReadOps),
            RateKind::WriteOps => Some(Kind::WriteOps),
            RateKind::ListOps => Some(Kind::ListOps),
            RateKind::DeleteOps => Some(Kind::DeleteOps),
            RateKind::ReadBytes => Some(Kind::ReadBytes),
            RateKind::WriteBytes => Some(Kind::WriteBytes),
            RateKind::Unspecified => None,
        }
    }
}

/// Which operations limit an S3 operation counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    Read,
    Write,
    List,
    Delete,
}

impl OpClass {
    pub fn name(self) -> &'static str {
        match self {
            OpClass::Read => "read",
            OpClass::Write => "write",
            OpClass::List => "list",
            OpClass::Delete => "delete",
        }
    }

    fn ops_kind(self) -> Kind {
        match self {
            OpClass::Read => Kind::ReadOps,
            OpClass::Write => Kind::WriteOps,
            OpClass::List => Kind::ListOps,
            OpClass::Delete => Kind::DeleteOps,
        }
    }
}

/// The class of an s3s operation name. Named ones first; then by prefix,
/// so an operation added later lands somewhere sensible (`Get*`/`Head*`
/// read, `List*` list, `Delete*` delete, anything else — Put, Create,
/// Copy, multipart steps — write). DeleteObjects is one delete operation
/// however many keys it names.
pub fn class_of(op: &str) -> OpClass {
    match op {
        "GetObject"
        | "HeadObject"
        | "HeadBucket"
        | "GetBucketLocation"
        | "GetBucketVersioning"
        | "GetBucketPolicy"
        | "GetBucketPolicyStatus" => OpClass::Read,
        "ListObjects"
        | "ListObjectsV2"
        | "ListBuckets"
        | "ListMultipartUploads"
        | "ListParts"
        | "ListObjectVersions" => OpClass::List,
        "DeleteObject" | "DeleteObjects" | "DeleteBucket" => OpClass::Delete,
        "PutObject"
        | "PostObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload"
        | "CreateBucket" => OpClass::Write,
        _ if op.starts_with("Get") || op.starts_with("Head") => OpClass::Read,
        _ if op.starts_with("List") => OpClass::List,
        _ if op.starts_with("Delete") => OpClass::Delete,
        _ => OpClass::Write,
    }
}

/// Scope keys, as reported to PD.
pub fn tenant_scope(tenant: &str) -> String {
    format!("t/{tenant}")
}

pub fn user_scope(user_id: &str) -> String {
    format!("u/{user_id}")
}

pub fn bucket_scope(tenant: &str, bucket: &str) -> String {
    format!("b/{tenant}:{bucket}")
}

/// How much of a limit a request uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cost {
    /// Known at admission (one operation, a declared body size).
    Now(f64),
    /// Known once the response head is ready (a GET's body size): the
    /// request only needs the bucket out of debt.
    AfterResponse,
}

/// One limit a request is counted against.
#[derive(Clone, Debug, PartialEq)]
pub struct Charge {
    pub scope: String,
    pub kind: Kind,
    /// The cluster-wide limit as the scope's record says now.
    pub limit: u64,
    pub cost: Cost,
}

/// The charges of a request of `class` with a declared body of `bytes_in`
/// (0: none), its response body counted against read_bytes when
/// `bytes_out` (GetObject), against every `(scope key, limits)` given.
pub fn charges(
    class: OpClass,
    bytes_in: u64,
    bytes_out: bool,
    scopes: &[(String, RateLimits)],
) -> Vec<Charge> {
    let mut out = Vec::new();
    for (scope, limits) in scopes {
        let mut add = |kind: Kind, cost: Cost| {
            if let Some(limit) = kind.limit_in(limits) {
                out.push(Charge {
                    scope: scope.clone(),
                    kind,
                    limit,
                    cost,
                });
            }
        };
        add(class.ops_kind(), Cost::Now(1.0));
        if bytes_in > 0 {
            add(Kind::WriteBytes, Cost::Now(bytes_in as f64));
        }
        if bytes_out {
            add(Kind::ReadBytes, Cost::AfterResponse);
        }
    }
    out
}

type Key = (String, Kind);

/// A request refused by a limit.
#[derive(Clone, Debug, PartialEq)]
pub struct Throttled {
    pub scope: String,
    pub kind: Kind,
    pub retry_after_secs: u32,
}

/// A request admitted: the buckets its response size is charged to.
#[derive(Debug, Default)]
pub struct Admitted {
    pub after_response: Vec<Arc<Mutex<TokenBucket>>>,
}

/// This gateway's token buckets, one per (scope, kind) with traffic lately.
pub struct RateLimiter {
    id: String,
    buckets: DashMap<Key, Arc<Mutex<TokenBucket>>>,
    /// Gateways PD knows of (this one included), for the first share of a
    /// new scope; 1 until PD answered.
    gateways: AtomicU32,
    /// A new scope appeared: report it now rather than at the next tick.
    new_scope: tokio::sync::Notify,
}

fn lock(b: &Mutex<TokenBucket>) -> std::sync::MutexGuard<'_, TokenBucket> {
    // A panic while holding it leaves a bucket of numbers, still usable.
    b.lock().unwrap_or_else(|p| p.into_inner())
}

impl RateLimiter {
    /// `id` must be unique per gateway process (PD keys reports by it).
    pub fn new(id: String) -> Self {
        RateLimiter {
            id,
            buckets: DashMap::new(),
            gateways: AtomicU32::new(1),
            new_scope: tokio::sync::Notify::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn known_gateways(&self) -> u32 {
        self.gateways.load(Ordering::Relaxed).max(1)
    }

    /// (scope, kind) pairs tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// The bucket of `key`, made at the initial share when new.
    fn bucket(&self, key: Key, limit: u64, now: Instant) -> Arc<Mutex<TokenBucket>> {
        if let Some(b) = self.buckets.get(&key) {
            return b.value().clone();
        }
        let gateways = self.known_gateways();
        let b = self
            .buckets
            .entry(key)
            .or_insert_with(|| {
                self.new_scope.notify_one();
                Arc::new(Mutex::new(TokenBucket::new(limit, gateways, now)))
            })
            .value()
            .clone();
        metrics::set_ratelimit_scopes(self.buckets.len());
        b
    }

    /// Counts a request with `charges` and admits it if every bucket has
    /// the tokens; otherwise names the (first) limit that refused it.
    pub fn admit(&self, charges: &[Charge], now: Instant) -> Result<Admitted, Throttled> {
        let gateways = self.known_gateways();
        let buckets: Vec<Arc<Mutex<TokenBucket>>> = charges
            .iter()
            .map(|c| self.bucket((c.scope.clone(), c.kind), c.limit, now))
            .collect();
        let mut taken: Vec<(usize, f64)> = Vec::with_capacity(charges.len());
        let mut refused: Option<Throttled> = None;
        for (i, (c, b)) in charges.iter().zip(&buckets).enumerate() {
            let mut b = lock(b);
            b.set_limit(c.limit, gateways, now);
            let (arrival, need, cost) = match c.cost {
                Cost::Now(n) => (n, n, n),
                Cost::AfterResponse => (b.mean_charge(), 1.0, 0.0),
            };
            if refused.is_none() {
                match b.check(need, now) {
                    None => {
                        b.take(cost);
                        taken.push((i, cost));
                        if c.cost == Cost::AfterResponse {
                            // Its size arrives with the charge.
                            continue;
                        }
                    }
                    Some(wait) => {
                        refused = Some(Throttled {
                            scope: c.scope.clone(),
                            kind: c.kind,
                            retry_after_secs: retry_after_secs(wait),
                        });
                    }
                }
            }
            // Every bucket sees the arrival, refused or not: that is the
            // demand PD sizes this gateway's share by.
            b.arrive(arrival, now);
        }
        if let Some(t) = refused {
            for (i, cost) in taken {
                let mut b = lock(&buckets[i]);
                b.refund(cost);
                if charges[i].cost == Cost::AfterResponse {
                    let mean = b.mean_charge();
                    b.arrive(mean, now);
                }
            }
            return Err(t);
        }
        let after_response = charges
            .iter()
            .zip(buckets)
            .filter(|(c, _)| c.cost == Cost::AfterResponse)
            .map(|(_, b)| b)
            .collect();
        Ok(Admitted { after_response })
    }
}

/// The declared size of a request's body: the decoded length of an
/// aws-chunked body, else Content-Length; 0 when neither is given.
pub fn declared_body_len(headers: &http::HeaderMap) -> u64 {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    get("x-amz-decoded-content-length")
        .or_else(|| get(http::header::CONTENT_LENGTH.as_str()))
        .unwrap_or(0)
}

/// The listener's half of charging bytes out: put into each request's
/// extensions before s3s sees it, filled by [`admit`] for a GET under a
/// read_bytes limit, settled once the response head is ready.
#[derive(Clone, Default)]
pub struct BytesOut(Arc<Mutex<Vec<Arc<Mutex<TokenBucket>>>>>);

impl BytesOut {
    /// A fresh slot in `ext`; keep the returned handle to settle.
    pub fn attach(ext: &mut http::Extensions) -> BytesOut {
        let slot = BytesOut::default();
        ext.insert(slot.clone());
        slot
    }

    fn fill(&self, buckets: Vec<Arc<Mutex<TokenBucket>>>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = buckets;
    }

    /// Charges a successful response's body (its Content-Length) to the
    /// buckets [`admit`] left here, if any.
    pub fn settle(&self, status: http::StatusCode, headers: &http::HeaderMap) {
        let buckets = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        if buckets.is_empty() || !status.is_success() {
            return;
        }
        let len = declared_body_len_of_response(headers);
        let now = Instant::now();
        for b in buckets {
            lock(&b).charge(len as f64, now);
        }
    }
}

fn declared_body_len_of_response(headers: &http::HeaderMap) -> u64 {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// The access check's rate-limit step (module doc, phase 1): counts the
/// request against the limits of the caller's tenant and user and of the
/// addressed bucket (`record`: as the check read it; `None` when it does
/// not exist or is not read, e.g. CreateBucket). Call it only for requests
/// the check allowed.
pub async fn admit(
    ctx: &Ctx,
    cx: &mut S3AccessContext<'_>,
    caller: &Caller,
    bucket: Option<&BucketName>,
    record: Option<&BucketRecord>,
) -> GwResult<()> {
    let (op, body_len) = (
        cx.s3_op().name().to_owned(),
        declared_body_len(cx.headers()),
    );
    admit_op(
        ctx,
        &op,
        body_len,
        cx.extensions_mut(),
        caller,
        bucket,
        record,
    )
    .await
}

/// [`admit`] for a request s3s never sees (PostObject): `op` is the S3
/// operation's name, `body_len` its declared body size.
pub async fn admit_op(
    ctx: &Ctx,
    op: &str,
    body_len: u64,
    extensions: &mut http::Extensions,
    caller: &Caller,
    bucket: Option<&BucketName>,
    record: Option<&BucketRecord>,
) -> GwResult<()> {
    if caller.is_admin() {
        return Ok(());
    }
    let class = class_of(op);
    let mut scopes: Vec<(String, RateLimits)> = Vec::new();
    if let Some(p) = &caller.principal {
        if let Some(l) = ctx.records.tenant(&p.tenant).await?.limits {
            scopes.push((tenant_scope(&p.tenant), l));
        }
        if let Some(l) = ctx.records.user(&p.user_id).await?.limits {
            scopes.push((user_scope(&p.user_id), l));
        }
    }
    if let (Some(name), Some(l)) = (bucket, record.and_then(|r| r.limits)) {
        scopes.push((bucket_scope(&name.tenant, &name.name), l));
    }
    if scopes.is_empty() {
        return Ok(());
    }
    let charges = charges(class, body_len, op == "GetObject", &scopes);
    if charges.is_empty() {
        return Ok(());
    }
    match ctx.ratelimit.admit(&charges, Instant::now()) {
        Ok(admitted) => {
            metrics::ratelimit_admitted(class.name());
            if !admitted.after_response.is_empty() {
                if let Some(slot) = extensions.get::<BytesOut>() {
                    slot.fill(admitted.after_response);
                }
            }
            Ok(())
        }
        Err(t) => {
            metrics::ratelimit_throttled(t.kind.name());
            tracing::debug!(scope = %t.scope, limit = t.kind.name(), op, "rate limited");
            Err(GwError::RateLimited {
                why: format!("{} limit of {}", t.kind.name(), t.scope),
                retry_after_secs: t.retry_after_secs,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(f: impl FnOnce(&mut RateLimits)) -> RateLimits {
        let mut l = RateLimits::default();
        f(&mut l);
        l
    }

    #[test]
    fn every_operation_has_its_class() {
        use OpClass::*;
        for (op, class) in [
            ("GetObject", Read),
            ("HeadObject", Read),
            ("HeadBucket", Read),
            ("GetBucketPolicy", Read),
            ("GetObjectTagging", Read),
            ("PutObject", Write),
            ("CopyObject", Write),
            ("CreateMultipartUpload", Write),
            ("UploadPart", Write),
            ("UploadPartCopy", Write),
            ("CompleteMultipartUpload", Write),
            ("AbortMultipartUpload", Write),
            ("CreateBucket", Write),
            ("PutBucketPolicy", Write),
            ("ListObjects", List),
            ("ListObjectsV2", List),
            ("ListBuckets", List),
            ("ListMultipartUploads", List),
            ("ListParts", List),
            ("DeleteObject", Delete),
            ("DeleteObjects", Delete),
            ("DeleteBucket", Delete),
            ("DeleteBucketPolicy", Delete),
            // Tagging and CORS go by their HTTP method, like the policy operations.
            ("GetObjectTagging", Read),
            ("GetBucketTagging", Read),
            ("GetBucketCors", Read),
            ("PutObjectTagging", Write),
            ("PutBucketTagging", Write),
            ("PutBucketCors", Write),
            ("DeleteObjectTagging", Delete),
            ("DeleteBucketTagging", Delete),
            ("DeleteBucketCors", Delete),
        ] {
            assert_eq!(class_of(op), class, "{op}");
        }
    }

    #[test]
    fn kinds_round_trip_the_wire() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_proto(k.to_proto() as i32), Some(k));
        }
        assert_eq!(Kind::from_proto(0), None);
        assert_eq!(Kind::from_proto(99), None);
    }

    #[test]
    fn a_request_is_charged_to_each_scope_with_a_limit_of_its_kind() {
        let scopes = vec![
            ("t/acme".to_string(), limits(|l| l.write_ops = Some(100))),
            (
                "u/alice".to_string(),
                limits(|l| {
                    l.write_ops = Some(50);
                    l.write_bytes = Some(1 << 20);
                    l.read_ops = Some(7);
                }),
            ),
            (
                "b/acme:photos".to_string(),
                limits(|l| l.read_bytes = Some(9)),
            ),
        ];
        let put = charges(OpClass::Write, 4096, false, &scopes);
        assert_eq!(
            put.iter()
                .map(|c| (c.scope.as_str(), c.kind, c.limit, c.cost))
                .collect::<Vec<_>>(),
            vec![
                ("t/acme", Kind::WriteOps, 100, Cost::Now(1.0)),
                ("u/alice", Kind::WriteOps, 50, Cost::Now(1.0)),
                ("u/alice", Kind::WriteBytes, 1 << 20, Cost::Now(4096.0)),
            ]
        );
        let get = charges(OpClass::Read, 0, true, &scopes);
        assert_eq!(
            get.iter()
                .map(|c| (c.scope.as_str(), c.kind, c.cost))
                .collect::<Vec<_>>(),
            vec![
                ("u/alice", Kind::ReadOps, Cost::Now(1.0)),
                ("b/acme:photos", Kind::ReadBytes, Cost::AfterResponse),
            ]
        );
        assert!(charges(OpClass::List, 0, false, &scopes).is_empty());
    }

    fn ops(scope: &str, kind: Kind, limit: u64) -> Charge {
        Charge {
            scope: scope.into(),
            kind,
            limit,
            cost: Cost::Now(1.0),
        }
    }

    #[test]
    fn the_tightest_scope_refuses_and_the_others_keep_their_tokens() {
        let l = RateLimiter::new("g".into());
        let t0 = Instant::now();
        // Tenant 100/s (20 tokens), user 1/s (2 tokens).
        let req = [
            ops("t/a", Kind::WriteOps, 100),
            ops("u/x", Kind::WriteOps, 1),
        ];
        assert!(l.admit(&req, t0).is_ok());
        assert!(l.admit(&req, t0).is_ok());
        let t = l.admit(&req, t0).expect_err("user bucket empty");
        assert_eq!(t.scope, "u/x");
        assert_eq!(t.kind, Kind::WriteOps);
        assert_eq!(t.retry_after_secs, 1);
        // The tenant's refunded token is there for another user.
        for _ in 0..18 {
            assert!(l.admit(&[ops("t/a", Kind::WriteOps, 100)], t0).is_ok());
        }
        assert!(l.admit(&[ops("t/a", Kind::WriteOps, 100)], t0).is_err());
        assert_eq!(l.tracked(), 2);
    }

    #[test]
    fn demand_counts_refused_requests_too() {
        let l = RateLimiter::new("g".into());
        let t0 = Instant::now();
        let req = [ops("u/x", Kind::ReadOps, 10)];
        let mut ok = 0;
        for i in 0..100 {
            if l.admit(&req, t0 + Duration::from_millis(i * 10)).is_ok() {
                ok += 1;
            }
        }
        // 1 s at 10/s from a full bucket (2·sqrt(10) = 6.3 tokens).
        assert!((15..=17).contains(&ok), "{ok}");
        let report = l.report(t0 + Duration::from_millis(1000));
        assert_eq!(report.demands.len(), 1);
        assert!((report.demands[0].demand - 100.0).abs() < 1e-9);
        assert_eq!(report.demands[0].limit, 10);
    }

    #[test]
    fn a_get_needs_the_bucket_out_of_debt_and_pays_its_size_after() {
        let l = RateLimiter::new("g".into());
        let t0 = Instant::now();
        let get = [Charge {
            scope: "u/x".into(),
            kind: Kind::ReadBytes,
            limit: 1000,
            cost: Cost::AfterResponse,
        }];
        let a = l.admit(&get, t0).expect("admitted");
        assert_eq!(a.after_response.len(), 1);
        let slot = BytesOut::default();
        slot.fill(a.after_response);
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_LENGTH, "3000".parse().unwrap());
        slot.settle(http::StatusCode::OK, &h);
        // 100 tokens - 3000 (charged a moment later): ~2.9 s of debt.
        let t = l.admit(&get, t0).expect_err("in debt");
        assert_eq!(t.retry_after_secs, 3);
        // An error response is not charged.
        let slot = BytesOut::default();
        slot.fill(vec![l.bucket(("u/x".into(), Kind::ReadBytes), 1000, t0)]);
        slot.settle(http::StatusCode::NOT_FOUND, &h);
        assert!(l.admit(&get, t0 + Duration::from_millis(3000)).is_ok());
    }

    #[test]
    fn declared_sizes() {
        let mut h = http::HeaderMap::new();
        assert_eq!(declared_body_len(&h), 0);
        h.insert(http::header::CONTENT_LENGTH, "1234".parse().unwrap());
        assert_eq!(declared_body_len(&h), 1234);
        h.insert("x-amz-decoded-content-length", "1000".parse().unwrap());
        assert_eq!(declared_body_len(&h), 1000, "aws-chunked: the payload");
    }
}
