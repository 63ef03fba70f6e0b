//! CORS at the front door: preflights (`OPTIONS`) answered from the
//! addressed bucket's rules without authentication (s3s has no OPTIONS
//! operation: it would answer 501), and the CORS headers added to every
//! other answer — errors included — for a request whose `Origin` a rule
//! allows. The rules and their matching are `s3::cors`.
//!
//! A browser sends `Origin` on every cross-origin request, so the bucket's
//! rules are cached here per bucket for [`RULES_TTL`] (as access keys and
//! tenant records are cached), also when a bucket has none or does not
//! exist; a PutBucketCors or DeleteBucketCors through this gateway drops the
//! entry at once, one through another gateway is seen within the TTL.
//!
//! Which bucket: path-style or virtual-hosted (the gateway's `S3Host`),
//! `tenant:bucket` names another tenant's; an unqualified name is the
//! caller's tenant's, found from the request's access key (unsigned
//! requests, preflights among them, address the root tenant's buckets).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use kura_metashard::client::Cf;
use kura_proto::meta::{BucketRecord, CorsConfiguration};
use s3s::host::S3Host;

use crate::authz::BucketName;
use crate::context::Ctx;
use crate::error::{GwResult, Refusal};
use crate::s3::cors::{find_rule, requested_headers, response_headers};

/// How long a bucket's rules are trusted once read.
pub const RULES_TTL: Duration = Duration::from_secs(2);
/// Buckets whose rules are kept at most (unknown names are cached too).
const CACHE_MAX: usize = 100_000;

const NOT_ALLOWED: &str = "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.";
const NOT_ENABLED: &str = "CORSResponse: CORS is not enabled for this bucket.";

/// The front door's CORS state: the gateway's context and host parser, and
/// the rules cache.
pub struct Cors {
    ctx: Arc<Ctx>,
    host: Box<dyn S3Host>,
    cache: DashMap<Vec<u8>, (Instant, Option<Arc<CorsConfiguration>>)>,
}

/// What the front remembers of a request while the handler runs.
pub struct Pending {
    bucket: String,
    origin: Option<String>,
    /// The method a rule must allow: `Access-Control-Request-Method` if
    /// sent (S3 honours it on real requests too), else the request's.
    method: String,
    access_key: Option<String>,
    /// PutBucketCors or DeleteBucketCors: drop the cached rules once it succeeds.
    changes_rules: bool,
}

impl Cors {
    pub fn new(ctx: Arc<Ctx>, host: Box<dyn S3Host>) -> Self {
        Cors {
            ctx,
            host,
            cache: DashMap::new(),
        }
    }

    /// The bucket a request addresses, as named in it, and whether it names a key.
    fn target<B>(&self, req: &Request<B>) -> Option<(String, bool)> {
        let path = percent_encoding::percent_decode_str(req.uri().path()).decode_utf8_lossy();
        let path = path.strip_prefix('/').unwrap_or(&path);
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        let vh_bucket = host.filter(|h| !is_ip(h)).and_then(|h| {
            self.host
                .parse_host_header(&h)
                .ok()
                .and_then(|vh| vh.bucket().map(str::to_string))
        });
        match vh_bucket {
            Some(b) => Some((b, !path.is_empty())),
            None => {
                let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
                (!bucket.is_empty()).then(|| (bucket.to_string(), !key.is_empty()))
            }
        }
    }

    /// The rules of `name` ("None": no configuration, or no such bucket).
    async fn rules(&self, name: &BucketName) -> GwResult<Option<Arc<CorsConfiguration>>> {
        let key = name.key();
        if let Some(e) = self.cache.get(&key) {
            if e.0.elapsed() < RULES_TTL {
                return Ok(e.1.clone());
            }
        }
        let rules = self
            .ctx
            .meta
            .get_shared::<BucketRecord>(Cf::Meta, &key)
            .await?
            .and_then(|b| b.record.cors)
            .map(Arc::new);
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(key, (Instant::now(), rules.clone()));
        Ok(rules)
    }

    /// Answers a preflight (`OPTIONS`), as S3 does: 400 without `Origin`
    /// or `Access-Control-Request-Method`, 403 when no rule allows it, else
    /// 200 with the allowing rule's headers. No authentication: browsers
    /// send preflights without credentials.
    pub async fn preflight<B>(&self, req: &Request<B>) -> Response<s3s::Body> {
        let resp = self.answer_preflight(req).await;
        crate::metrics::observe_http(resp.status().as_u16());
        resp
    }

    async fn answer_preflight<B>(&self, req: &Request<B>) -> Response<s3s::Body> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let Some(origin) = header("origin") else {
            return Refusal::CorsBadRequest(
                "Insufficient information. Origin request header needed.".into(),
            )
            .response();
        };
        let requested_method = header("access-control-request-method");
        let forbidden = |message, resource| {
            Refusal::CorsForbidden {
                message,
                method: requested_method.unwrap_or("OPTIONS").to_string(),
                resource,
            }
            .response()
        };
        let Some((bucket, has_key)) = self.target(req) else {
            return forbidden(NOT_ENABLED, "BUCKET");
        };
        // Unsigned: an unqualified name is the root tenant's.
        let name = BucketName::resolve(&bucket, "");
        let rules = match self.rules(&name).await {
            Ok(Some(r)) => r,
            // No configuration and no such bucket look the same: an
            // unsigned request learns nothing about which names exist.
            Ok(None) => return forbidden(NOT_ENABLED, "BUCKET"),
            Err(e) => {
                return crate::error::xml_error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    &format!("Please reduce your request rate or retry later. ({e})"),
                )
            }
        };
        let Some(method) = requested_method else {
            return Refusal::CorsBadRequest("Invalid Access-Control-Request-Method: null".into())
                .response();
        };
        let headers = requested_headers(header("access-control-request-headers"));
        let resource = if has_key { "OBJECT" } else { "BUCKET" };
        let Some(m) = find_rule(&rules, origin, method, &headers) else {
            return forbidden(NOT_ALLOWED, resource);
        };
        let mut resp = Response::new(s3s::Body::empty());
        for (name, value) in response_headers(&m, origin, Some(&headers)) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().append(name, v);
            }
        }
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        resp
    }

    /// What the front must do with `req`'s answer, if anything: add CORS
    /// headers (it carries an `Origin`) or forget cached rules (it changes
    /// them). None for most requests, which then cost nothing here.
    pub fn observe<B>(&self, req: &Request<B>) -> Option<Pending> {
        let origin = req
            .headers()
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let changes_rules = (req.method() == Method::PUT || req.method() == Method::DELETE)
            && req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "cors" || p.starts_with("cors=")));
        if origin.is_none() && !changes_rules {
            return None;
        }
        let (bucket, _) = self.target(req)?;
        let method = req
            .headers()
            .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(req.method().as_str())
            .to_string();
        Some(Pending {
            bucket,
            origin,
            method,
            access_key: access_key(req),
            changes_rules,
        })
    }

    /// Completes what [`Cors::observe`] noted, once the answer is known.
    pub async fn finish(&self, p: Pending, resp: &mut Response<s3s::Body>) {
        let Some(name) = self.bucket_name(&p).await else {
            return;
        };
        if p.changes_rules && resp.status().is_success() {
            self.cache.remove(&name.key());
        }
        let Some(origin) = p.origin.as_deref() else {
            return;
        };
        // A real request's headers are not checked (S3 checks them on preflights).
        let rules = match self.rules(&name).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "CORS rules unreadable; answer sent without CORS headers");
                return;
            }
        };
        let Some(m) = find_rule(&rules, origin, &p.method, &[]) else {
            return;
        };
        for (name, value) in response_headers(&m, origin, None) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
    }

    /// The bucket of a pending request, in its caller's tenant. None when
    /// the request is signed with a key this gateway does not know (it is
    /// refused anyway, and its tenant is unknown).
    async fn bucket_name(&self, p: &Pending) -> Option<BucketName> {
        let tenant = match &p.access_key {
            None => String::new(),
            Some(ak) => match self.ctx.identity.lookup(ak).await {
                Ok(Some(entry)) => entry.principal.tenant.clone(),
                _ => return None,
            },
        };
        Some(BucketName::resolve(&p.bucket, &tenant))
    }
}

/// Host names s3s serves path-style whatever the configured domains are.
fn is_ip(host: &str) -> bool {
    host.parse::<std::net::SocketAddr>().is_ok()
        || host.parse::<std::net::IpAddr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.split_once(']'))
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok())
}

/// The access key a request is signed with: SigV4 or SigV2, in the
/// Authorization header or a presigned URL.
fn access_key<B>(req: &Request<B>) -> Option<String> {
    if let Some(auth) = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256") {
            let cred = rest
                .split(',')
                .find_map(|p| p.trim().strip_prefix("Credential="))?;
            return cred.split('/').next().map(str::to_string);
        }
        if let Some(rest) = auth.strip_prefix("AWS ") {
            return rest.split(':').next().map(|k| k.trim().to_string());
        }
        return None;
    }
    let query = req.uri().query()?;
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .map(|v| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    };
    if let Some(cred) = param("X-Amz-Credential") {
        return cred.split('/').next().map(str::to_string);
    }
    param("AWSAccessKeyId")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn access_keys() {
        let v4 = req(
            "/b/k",
            &[(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            )],
        );
        assert_eq!(access_key(&v4).as_deref(), Some("AKID"));
        let v2 = req("/b/k", &[("authorization", "AWS AKID2:sig")]);
        assert_eq!(access_key(&v2).as_deref(), Some("AKID2"));
        let pre = req(
            "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK3%2F20260101%2Fus-east-1%2Fs3%2Faws4_request",
            &[],
        );
        assert_eq!(access_key(&pre).as_deref(), Some("AK3"));
        let pre2 = req("/b/k?AWSAccessKeyId=AK4&Expires=1&Signature=x", &[]);
        assert_eq!(access_key(&pre2).as_deref(), Some("AK4"));
        assert_eq!(access_key(&req("/b/k", &[])), None);
    }

    #[test]
    fn ips_are_path_style() {
        assert!(is_ip("127.0.0.1:9000"));
        assert!(is_ip("127.0.0.1"));
        assert!(is_ip("[::1]:9000"));
        assert!(!is_ip("bucket.localhost:9000"));
    }
}
