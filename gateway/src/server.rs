//! The S3 gateway put together: its clients, background loops and the s3s
//! service, served by the front door (`front/`: listener, admission control,
//! timeouts, TLS). `GET /_kura/health` is answered here before s3s;
//! everything else goes to the s3s service (auth, path-style and
//! virtual-hosted-style addressing, XML, errors).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kura_datanode::client::DataNodeClient;
use kura_metashard::client::{Cf, MetaClient};
use kura_metashard::keys;
use kura_pd_client::supervise;
use kura_pd_client::{PdClient, RegionCache};
use s3s::host::{S3Host, VirtualHost};
use s3s::route::S3Route;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{Body, S3Request, S3Response, S3Result};
use tokio::net::TcpListener;

use crate::admin::AdminRoute;
use crate::authz::{Access, PolicyCache};
use crate::context::Ctx;
use crate::identity::records::valid_tenant;
use crate::identity::seal::Sealer;
use crate::identity::{Auth, IdentityStore, RecordCache};
use crate::meta::Meta;
use crate::placement::PlacementCache;
use crate::s3::KuraS3;
use crate::usage::fold::Folder;
use crate::usage::quota::Quotas;
use crate::usage::traffic::TrafficSlot;
use crate::{auth, front, metrics, Config, Error};

const HEALTH_PATH: &str = "/_kura/health";

pub async fn run(
    cfg: Config,
    ready: Arc<AtomicBool>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error> {
    validate(&cfg)?;
    let tls = match &cfg.tls {
        Some(files) => Some(Arc::new(front::tls::Tls::load(files)?)),
        None => None,
    };
    metrics::init();
    let pd = PdClient::new(&cfg.pd_endpoints)?;
    let placement = Arc::new(PlacementCache::new(pd.clone()));
    let meta = Meta::new(MetaClient::new(Arc::new(RegionCache::new(pd.clone()))));
    let sealer = match &cfg.cluster_key {
        Some(k) => Sealer::new(k),
        None => {
            tracing::warn!(
                "no cluster key given (--cluster-key-file): access-key secrets are sealed \
                 with a key derived from the root secret, which must then never change"
            );
            Sealer::derived_from_root(&cfg.secret_key)
        }
    };
    let identity = Arc::new(IdentityStore::new(
        meta.clone(),
        sealer,
        &cfg.access_key,
        &cfg.secret_key,
    ));
    let ctx = Arc::new(Ctx {
        meta: meta.clone(),
        data: Arc::new(DataNodeClient::new()),
        pd: pd.clone(),
        placement: placement.clone(),
        identity: identity.clone(),
        policies: PolicyCache::default(),
        records: RecordCache::new(meta.clone()),
        folder: Arc::new(Folder::default()),
        quotas: Quotas::default(),
        fresh_keys: Default::default(),
        traffic: Arc::new(crate::usage::traffic::Traffic::new(cfg.listen.to_string())),
        // Unique per process: PD keys its rate-limit reports by it.
        ratelimit: Arc::new(crate::ratelimit::RateLimiter::new(format!(
            "{}-{:016x}",
            cfg.listen,
            rand::random::<u64>()
        ))),
        inline_threshold: cfg.inline_threshold,
        stripe_size: cfg.stripe_size,
        default_class: cfg.default_class,
        max_commit_age: cfg.max_commit_age,
        write_quorum: cfg.write_quorum,
        region: cfg.region.clone(),
        master_key: cfg
            .master_key
            .as_ref()
            .map(|k| Arc::new(crate::data::crypto::MasterKey::new(k))),
    });

    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: cfg.listen,
            source,
        })?;
    tracing::info!(addr = %cfg.listen, https = tls.is_some(), "S3 gateway listening");

    // Background loops are supervised: a panic is logged, counted
    // (kura_background_task_panics_total{task}) and the loop restarts.
    let (c, sd) = (ctx.clone(), shutdown.clone());
    supervise::spawn("gateway_placement_refresher", move || {
        c.placement.clone().run_refresher(sd.clone())
    });
    let (c, sd, every) = (ctx.clone(), shutdown.clone(), cfg.gc_sweep_interval);
    supervise::spawn("gateway_gc_sweeper", move || {
        crate::data::gc::run_sweeper(c.clone(), every, sd.clone())
    });
    // Lifecycle: every gateway runs the worker; per-region leases decide
    // which one acts where (docs/decisions/0032).
    let (c, sd, lc) = (ctx.clone(), shutdown.clone(), cfg.lifecycle.clone());
    let owner = crate::lifecycle::lease::Owner {
        id: format!("{}-{:016x}", cfg.listen, rand::random::<u64>()),
        addr: cfg.listen.to_string(),
    };
    supervise::spawn("gateway_lifecycle", move || {
        crate::lifecycle::worker::run(c.clone(), lc.clone(), owner.clone(), sd.clone())
    });
    let (c, r, sd) = (ctx.clone(), ready.clone(), shutdown.clone());
    supervise::spawn("gateway_become_ready", move || {
        become_ready(c.clone(), r.clone(), sd.clone())
    });
    let (c, sd) = (ctx.clone(), shutdown.clone());
    supervise::spawn("gateway_usage_folder", move || {
        c.folder.clone().run(c.clone(), sd.clone())
    });
    metrics::register_tenant_traffic(ctx.traffic.clone());
    let (c, sd) = (ctx.clone(), shutdown.clone());
    supervise::spawn("gateway_traffic", move || {
        c.traffic.clone().run(c.clone(), sd.clone())
    });
    // Its own client: followers' stale leader hints that the reports
    // follow must not steer the endpoint the request path uses.
    let (limiter, sd) = (ctx.ratelimit.clone(), shutdown.clone());
    let lease_pd = PdClient::new(&cfg.pd_endpoints)?.with_attempts(2);
    supervise::spawn("gateway_ratelimit_lease", move || {
        crate::ratelimit::lease::run(limiter.clone(), lease_pd.clone(), sd.clone())
    });

    let host = KuraHost::new(cfg.domain.as_deref());
    let mut builder = S3ServiceBuilder::new(KuraS3::new(ctx.clone()));
    builder.set_auth(Auth(identity));
    builder.set_access(Access::new(ctx.clone()));
    let reentry = front::signed_range::Reentry::default();
    builder.set_route(Routes {
        admin: AdminRoute::new(ctx.clone()),
        signed_range: front::signed_range::SignedRangeRoute::new(reentry.clone()),
    });
    builder.set_validation(KuraNames);
    builder.set_host(KuraHost::new(cfg.domain.as_deref()));
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        front::form::s3s_config(),
    ))));
    let s3 = Arc::new(builder.build());
    let _ = reentry.set(Arc::downgrade(&s3));
    let front = Arc::new(Front {
        s3,
        cors: front::cors::Cors::new(ctx.clone(), Box::new(KuraHost::new(cfg.domain.as_deref()))),
        ctx,
        host,
    });

    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().run_reloader(shutdown.clone()));
    }
    tokio::spawn(not_ready_on_shutdown(ready.clone(), shutdown.clone()));
    front::serve(listener, cfg.admission.clone(), tls, front, shutdown).await;
    ready.store(false, Ordering::SeqCst);
    Ok(())
}

/// Clears `ready` as soon as shutdown starts, while connections drain.
async fn not_ready_on_shutdown(
    ready: Arc<AtomicBool>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    ready.store(false, Ordering::SeqCst);
}

fn validate(cfg: &Config) -> Result<(), Error> {
    if cfg.access_key.is_empty() || cfg.secret_key.is_empty() {
        return Err(Error::Config(
            "access key and secret key must not be empty".into(),
        ));
    }
    // A REPLICA3 block is a whole stripe, and data nodes take blocks of at most 16 MiB.
    if !(4096..=(16 << 20)).contains(&cfg.stripe_size) {
        return Err(Error::Config(format!(
            "stripe_size {} must be in 4 KiB..=16 MiB",
            cfg.stripe_size
        )));
    }
    if cfg.inline_threshold >= cfg.stripe_size {
        return Err(Error::Config(
            "inline_threshold must be smaller than stripe_size".into(),
        ));
    }
    if cfg.region.is_empty() {
        return Err(Error::Config("region must not be empty".into()));
    }
    cfg.admission.validate().map_err(Error::Config)?;
    if cfg.write_quorum == Some(0) {
        return Err(Error::Config("write_quorum must be at least 1".into()));
    }
    if let Some(d) = &cfg.domain {
        if d.is_empty() || d.contains(':') || d.contains('/') {
            return Err(Error::Config(format!(
                "domain {d:?} must be a bare host name"
            )));
        }
    }
    Ok(())
}

/// Sets `ready` once PD reports the cluster bootstrapped and a placement map exists.
async fn become_ready(
    ctx: Arc<Ctx>,
    ready: Arc<AtomicBool>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let bootstrapped = matches!(ctx.pd.get_cluster().await, Ok(c) if c.bootstrapped);
        if bootstrapped {
            if ctx.placement.current().is_none() {
                ctx.placement.refresh_soon().await;
            }
            if ctx.placement.current().is_some_and(|v| v.num_groups() > 0) {
                ready.store(true, Ordering::SeqCst);
                tracing::info!("S3 gateway ready");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// s3s takes one custom route: the admin API's, and the second pass of a
/// request whose signed `Range` is ignored (`front/signed_range.rs`).
struct Routes {
    admin: AdminRoute,
    signed_range: front::signed_range::SignedRangeRoute,
}

impl Routes {
    fn is_admin(&self, req: &mut S3Request<Body>) -> bool {
        self.admin
            .is_match(&req.method, &req.uri, &req.headers, &mut req.extensions)
    }
}

#[async_trait::async_trait]
impl S3Route for Routes {
    fn is_match(
        &self,
        m: &Method,
        u: &http::Uri,
        h: &http::HeaderMap,
        e: &mut http::Extensions,
    ) -> bool {
        self.admin.is_match(m, u, h, e) || self.signed_range.is_match(m, u, h, e)
    }

    async fn check_access(&self, req: &mut S3Request<Body>) -> S3Result<()> {
        if self.is_admin(req) {
            self.admin.check_access(req).await
        } else {
            self.signed_range.check_access(req).await
        }
    }

    async fn call(&self, mut req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        if self.is_admin(&mut req) {
            self.admin.call(req).await
        } else {
            self.signed_range.call(req).await
        }
    }
}

struct Front {
    s3: Arc<S3Service>,
    cors: front::cors::Cors,
    ctx: Arc<Ctx>,
    host: KuraHost,
}

impl front::Handler for Front {
    fn handle(
        self: Arc<Self>,
        mut req: Request<Body>,
    ) -> impl std::future::Future<Output = Result<Response<Body>, s3s::HttpError>> + Send + 'static
    {
        // A GET under a read_bytes limit pays its size once known.
        let bytes_out = crate::ratelimit::BytesOut::attach(req.extensions_mut());
        let traffic = TrafficSlot::attach(req.extensions_mut());
        let bytes_in = crate::ratelimit::declared_body_len(req.headers());
        async move {
            let resp = self.serve(req).await;
            if let Ok(r) = &resp {
                bytes_out.settle(r.status(), r.headers());
                traffic.settle(&self.ctx.traffic, bytes_in, r.headers());
            }
            resp
        }
    }

    fn cors(&self) -> Option<&front::cors::Cors> {
        Some(&self.cors)
    }
}

impl Front {
    async fn serve(&self, req: Request<Body>) -> Result<Response<Body>, s3s::HttpError> {
        if req.method() == Method::GET
            && req.uri().path() == HEALTH_PATH
            && !self.is_bucket_host(&req)
        {
            let resp = health(&self.ctx).await;
            metrics::observe_http(resp.status().as_u16());
            return Ok(resp);
        }
        if let Some(resp) = presign_too_long(&req).or_else(|| sigv2_too_skewed(&req)) {
            metrics::observe_http(resp.status().as_u16());
            return Ok(resp);
        }
        if let Some(sent) = auth::credential_region(&req) {
            if sent != self.ctx.region {
                let resp = crate::error::wrong_region_response(&sent, &self.ctx.region);
                metrics::observe_http(resp.status().as_u16());
                return Ok(resp);
            }
        }
        // PostObject (browser forms) is Kura's own, streamed: s3s would
        // buffer the file part before any access check.
        if let Some(target) = crate::s3::post_object::target(&req, &self.host) {
            let resp = crate::s3::post_object::serve(&self.ctx, req, target).await;
            metrics::observe_http(resp.status().as_u16());
            return Ok(resp);
        }
        let expects_continue = req
            .headers()
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        // hyper never sends "100 Continue" for an empty body, so the final
        // answer is the first thing such a client reads.
        let empty_body = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        let is_head = req.method() == Method::HEAD;
        let mut resp = self.s3.call(req).await;
        if let Ok(r) = &mut resp {
            // s3s sends HeadObject as 200 even with a Content-Range; S3 answers 206.
            if is_head
                && r.status() == StatusCode::OK
                && r.headers().contains_key(http::header::CONTENT_RANGE)
            {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            }
            // A final answer where the client waited for "100 Continue" leaves
            // the connection unsafe to reuse:
            // - an error answered before the body was read: the client may never
            //   send that body, and hyper would read the next request's bytes
            //   as the abandoned body;
            // - an empty body (hyper skips the 100): botocore keeps the early
            //   status line for its next request on that connection and hangs
            //   until its read timeout (60 s) — seen with boto3 PUTs of 0 bytes.
            if expects_continue && (!r.status().is_success() || empty_body) {
                r.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
        }
        match &resp {
            Ok(r) => metrics::observe_http(r.status().as_u16()),
            Err(_) => metrics::observe_http(500),
        }
        resp
    }

    /// A virtual-hosted-style request addresses a bucket: its paths are object keys.
    fn is_bucket_host(&self, req: &Request<Body>) -> bool {
        let Some(host) = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
        else {
            return false;
        };
        self.host
            .parse_host_header(host)
            .is_ok_and(|vh| vh.bucket().is_some())
    }
}

/// Longest validity of a presigned URL (AWS: 7 days).
const MAX_PRESIGN_SECS: u64 = 7 * 24 * 3600;

/// AWS refuses a presigned URL valid for more than 7 days; s3s accepts any
/// `X-Amz-Expires`, so the cap is applied here. SigV2 URLs carry an absolute
/// `Expires` instead: one more than 7 days ahead is refused too.
fn presign_too_long<B>(req: &Request<B>) -> Option<Response<Body>> {
    let query = req.uri().query()?;
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
    };
    if let Some(value) = param("X-Amz-Expires") {
        return match value.parse::<u64>() {
            Ok(secs) if secs <= MAX_PRESIGN_SECS => None,
            _ => Some(crate::error::xml_error_response(
                StatusCode::BAD_REQUEST,
                "AuthorizationQueryParametersError",
                "X-Amz-Expires must be less than a week (in seconds) that is 604800",
            )),
        };
    }
    let expires = param("Expires").filter(|_| param("AWSAccessKeyId").is_some())?;
    let now = (crate::meta::now_ms() / 1000) as u64;
    match expires.parse::<u64>() {
        Ok(at) if at <= now + MAX_PRESIGN_SECS => None,
        // Unparsable: s3s refuses it.
        Err(_) => None,
        Ok(_) => Some(crate::error::xml_error_response(
            StatusCode::BAD_REQUEST,
            "AuthorizationQueryParametersError",
            "Expires must be less than a week (604800 seconds) in the future",
        )),
    }
}

/// How far a SigV2 request's date may be from the gateway's clock (AWS: 15
/// minutes); older requests are refused so a captured one can't be replayed.
const MAX_SIGV2_SKEW_SECS: i64 = 15 * 60;

/// s3s checks the clock skew of SigV4 requests but not of SigV2 header
/// auth, so that check is made here.
fn sigv2_too_skewed<B>(req: &Request<B>) -> Option<Response<Body>> {
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    if !auth.starts_with("AWS ") {
        return None;
    }
    let date = req
        .headers()
        .get("x-amz-date")
        .or_else(|| req.headers().get(http::header::DATE))
        .and_then(|v| v.to_str().ok())
        .and_then(crate::s3::common::parse_http_date);
    let skew =
        date.map(|d| (crate::s3::common::unix_seconds(&d) - crate::meta::now_ms() / 1000).abs());
    match skew {
        Some(s) if s <= MAX_SIGV2_SKEW_SECS => None,
        // A missing or unreadable date is s3s's to refuse; a far one is ours.
        None => None,
        Some(_) => Some(crate::error::xml_error_response(
            StatusCode::FORBIDDEN,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )),
    }
}

/// Bucket names as Kura accepts them in a request: AWS's rules, optionally
/// qualified by a tenant (`tenant:bucket`, `:bucket` for the root tenant),
/// and `_kura`, the admin API's path prefix (never a bucket: CreateBucket
/// applies the AWS rules to the name itself).
struct KuraNames;

impl s3s::validation::NameValidation for KuraNames {
    fn validate_bucket_name(&self, name: &str) -> bool {
        if name == "_kura" {
            return true;
        }
        match name.split_once(kura_metashard::keys::TENANT_SEPARATOR) {
            Some((tenant, bucket)) => {
                (tenant.is_empty() || valid_tenant(tenant)) && s3s::path::check_bucket_name(bucket)
            }
            None => s3s::path::check_bucket_name(name),
        }
    }
}

/// 200 only when the cluster can take writes: a linearizable metadata read
/// succeeds, and every placement group has all its nodes known and at least a
/// write quorum of them answering.
async fn health(ctx: &Ctx) -> Response<Body> {
    // Bucket names are at least 3 bytes, so this key never exists; reading it
    // still needs a live region leader.
    let probe = keys::bucket_key("");
    let meta = tokio::time::timeout(Duration::from_secs(3), ctx.meta.get_raw(Cf::Meta, &probe));
    let data = data_nodes_writable(ctx);
    let (meta, placement_ok) = tokio::join!(meta, data);
    let meta_ok = matches!(meta, Ok(Ok(_)));
    let (status, body) = if meta_ok && placement_ok {
        (StatusCode::OK, r#"{"status":"ok"}"#.to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                r#"{{"status":"unavailable","metadata":{meta_ok},"placement":{placement_ok}}}"#
            ),
        )
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Probes every data node of the placement map (a stat of a fragment that
/// never exists) and checks each group still has a write quorum of them.
async fn data_nodes_writable(ctx: &Ctx) -> bool {
    let Some(view) = ctx.placement.current() else {
        return false;
    };
    if view.classes().is_empty() || !view.classes().iter().all(|c| c.all_groups_available()) {
        return false;
    }
    let probe_id = kura_proto::datanode::FragmentId {
        data_id: bytes::Bytes::from_static(&[0u8; 16]),
        shard: 0,
    };
    let probes = view.node_addresses().into_iter().map(|addr| {
        let id = probe_id.clone();
        async move {
            let answer =
                tokio::time::timeout(Duration::from_secs(1), ctx.data.stat_fragment(&addr, id))
                    .await;
            // Any answer from the node (found or not) means it is up.
            let up = matches!(
                answer,
                Ok(Ok(_)) | Ok(Err(kura_datanode::client::DataNodeError::NotFound))
            );
            (addr, up)
        }
    });
    let reachable = futures::future::join_all(probes)
        .await
        .into_iter()
        .filter(|(_, up)| *up)
        .map(|(addr, _)| addr)
        .collect();
    view.classes().iter().all(|c| {
        c.every_group_has_quorum(&reachable, |g| {
            let down = |i| !g.is_reachable(i, &reachable);
            ctx.quorum(c.data_shards as usize, c.parity_shards as usize, g, down)
        })
    })
}

/// Virtual-hosted-style parsing for `bucket.<domain>` with any port; the
/// configured domain, `s3.localhost` and `localhost` are recognised. A host
/// that matches none of them is served path-style (no CNAME buckets).
pub struct KuraHost {
    /// Longest first, so `s3.localhost` wins over `localhost`.
    domains: Vec<String>,
}

impl KuraHost {
    pub fn new(domain: Option<&str>) -> Self {
        let mut domains: Vec<String> = ["s3.localhost", "localhost"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(d) = domain {
            domains.push(d.trim_end_matches('.').to_ascii_lowercase());
        }
        domains.sort_by_key(|d| std::cmp::Reverse(d.len()));
        domains.dedup();
        KuraHost { domains }
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host; // IPv6 literal; s3s already treats IPs as path-style
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

impl S3Host for KuraHost {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = strip_port(host).trim_end_matches('.');
        for d in &self.domains {
            if name.eq_ignore_ascii_case(d) {
                return Ok(VirtualHost::new(d.as_str()));
            }
            if name.len() > d.len() + 1 && name.as_bytes()[name.len() - d.len() - 1] == b'.' {
                let (bucket, suffix) = name.split_at(name.len() - d.len() - 1);
                if suffix[1..].eq_ignore_ascii_case(d) {
                    return Ok(VirtualHost::new(d.as_str()).with_bucket(bucket));
                }
            }
        }
        Ok(VirtualHost::new(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_of(h: &KuraHost, host: &str) -> Option<String> {
        h.parse_host_header(host)
            .unwrap()
            .bucket()
            .map(str::to_string)
    }

    #[test]
    fn host_parsing() {
        let h = KuraHost::new(Some("s3.example.com"));
        assert_eq!(bucket_of(&h, "localhost:9000"), None);
        assert_eq!(bucket_of(&h, "localhost"), None);
        assert_eq!(
            bucket_of(&h, "photos.localhost:9000"),
            Some("photos".into())
        );
        assert_eq!(bucket_of(&h, "s3.localhost:9000"), None);
        assert_eq!(
            bucket_of(&h, "my.bucket.s3.localhost:9000"),
            Some("my.bucket".into())
        );
        assert_eq!(bucket_of(&h, "s3.example.com"), None);
        assert_eq!(
            bucket_of(&h, "data.s3.example.com:443"),
            Some("data".into())
        );
        assert_eq!(bucket_of(&h, "gateway.internal:9000"), None);
        assert_eq!(bucket_of(&h, "xlocalhost:9000"), None);
    }

    #[test]
    fn names_may_carry_a_tenant() {
        use s3s::validation::NameValidation;
        for ok in [
            "photos",
            "acme:photos",
            ":photos",
            "_kura",
            "a_b-1:my.bucket",
        ] {
            assert!(KuraNames.validate_bucket_name(ok), "{ok}");
        }
        for bad in [
            "Photos",
            "acme:",
            "Acme:photos",
            "a:b:c",
            "_kura2",
            "ac me:photos",
        ] {
            assert!(!KuraNames.validate_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn presigned_urls_live_at_most_a_week() {
        let req = |q: &str| {
            Request::builder()
                .uri(format!("/b/k?{q}"))
                .body(())
                .unwrap()
        };
        assert!(presign_too_long(&req("X-Amz-Expires=604800")).is_none());
        assert!(presign_too_long(&req("a=1")).is_none());
        let r = presign_too_long(&req("X-Amz-Expires=604801")).unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(presign_too_long(&req("X-Amz-Expires=-1")).is_some());
        let now = crate::meta::now_ms() / 1000;
        let v2 = |at: i64| req(&format!("AWSAccessKeyId=AK&Expires={at}&Signature=x"));
        assert!(presign_too_long(&v2(now + 3600)).is_none());
        assert!(presign_too_long(&v2(now + 8 * 24 * 3600)).is_some());
    }

    #[test]
    fn sigv2_requests_expire_after_15_minutes() {
        let req = |date: &str| {
            Request::builder()
                .uri("/b/k")
                .header("authorization", "AWS AK:sig")
                .header("date", date)
                .body(())
                .unwrap()
        };
        let fmt = |secs_ago: i64| {
            let t = crate::s3::common::timestamp(crate::meta::now_ms() - secs_ago * 1000);
            crate::s3::common::format_http_date(&t).unwrap()
        };
        assert!(sigv2_too_skewed(&req(&fmt(60))).is_none());
        assert!(sigv2_too_skewed(&req(&fmt(-60))).is_none());
        let r = sigv2_too_skewed(&req(&fmt(16 * 60))).unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(sigv2_too_skewed(&req(&fmt(-16 * 60))).is_some());
        // SigV4 is s3s's to check.
        let v4 = Request::builder()
            .uri("/b/k")
            .header("authorization", "AWS4-HMAC-SHA256 Credential=x")
            .header("date", fmt(3600))
            .body(())
            .unwrap();
        assert!(sigv2_too_skewed(&v4).is_none());
    }

    #[test]
    fn config_validation() {
        let mut c = Config::new(
            "127.0.0.1:0".parse().unwrap(),
            vec!["127.0.0.1:1".into()],
            "a".into(),
            "b".into(),
        );
        assert!(validate(&c).is_ok());
        c.inline_threshold = c.stripe_size;
        assert!(validate(&c).is_err());
        c.inline_threshold = 4096;
        c.write_quorum = Some(0);
        assert!(validate(&c).is_err());
        c.write_quorum = None;
        c.domain = Some("s3.example.com:9000".into());
        assert!(validate(&c).is_err());
    }
}
