//! Put/Get/DeleteBucketCors, and the rule matching the front door
//! (`front/cors.rs`) applies to preflights and to real requests that carry
//! an `Origin`.
//!
//! A bucket's CORS rules live in its record (BucketRecord.cors), replaced by
//! compare-and-set like its policy. Validation and matching follow what S3
//! is observed to do (docs/decisions/0030): an origin or allowed-header
//! pattern holds at most one `*`, which matches any run of characters (also
//! none) and anchors at both ends; origins match case-sensitively, headers
//! case-insensitively; the first rule that matches wins.

use std::sync::Arc;

use kura_proto::meta as pb;
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::authz::Authorized;
use crate::context::Ctx;
use crate::error::{GwError, GwResult};
use crate::s3::common::update_bucket;

/// Most rules in one configuration (AWS).
pub const MAX_RULES: usize = 100;
/// The methods a rule may allow (AWS).
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// What `Vary` names on every CORS answer: the answer depends on them.
pub const VARY: &str = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method";

/// A PutBucketCors body as it is stored, after AWS's checks.
pub fn from_dto(cfg: &CORSConfiguration) -> GwResult<pb::CorsConfiguration> {
    if cfg.cors_rules.is_empty() {
        return Err(GwError::MalformedXml(
            "The XML you provided was not well-formed or did not validate against our published schema".into(),
        ));
    }
    if cfg.cors_rules.len() > MAX_RULES {
        return Err(GwError::InvalidRequest(format!(
            "The CORS configuration allows at most {MAX_RULES} rules"
        )));
    }
    let mut rules = Vec::with_capacity(cfg.cors_rules.len());
    for r in &cfg.cors_rules {
        if r.allowed_origins.is_empty() || r.allowed_methods.is_empty() {
            return Err(GwError::MalformedXml(
                "Each CORSRule must have at least one AllowedOrigin and one AllowedMethod".into(),
            ));
        }
        if let Some(m) = r
            .allowed_methods
            .iter()
            .find(|m| !METHODS.contains(&m.as_str()))
        {
            return Err(GwError::InvalidRequest(format!(
                "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
            )));
        }
        if let Some(o) = r
            .allowed_origins
            .iter()
            .find(|o| o.matches('*').count() > 1)
        {
            return Err(GwError::InvalidRequest(format!(
                "AllowedOrigin \"{o}\" can not have more than one wildcard."
            )));
        }
        let headers = r.allowed_headers.clone().unwrap_or_default();
        if let Some(h) = headers.iter().find(|h| h.matches('*').count() > 1) {
            return Err(GwError::InvalidRequest(format!(
                "AllowedHeader \"{h}\" can not have more than one wildcard."
            )));
        }
        let expose = r.expose_headers.clone().unwrap_or_default();
        if let Some(h) = expose.iter().find(|h| h.contains('*')) {
            return Err(GwError::InvalidRequest(format!(
                "ExposeHeader \"{h}\" contains wildcard. We currently do not support wildcard for ExposeHeader."
            )));
        }
        rules.push(pb::CorsRule {
            id: r.id.clone().unwrap_or_default(),
            allowed_origins: r.allowed_origins.clone(),
            allowed_methods: r.allowed_methods.clone(),
            allowed_headers: headers,
            expose_headers: expose,
            max_age_seconds: r.max_age_seconds,
        });
    }
    Ok(pb::CorsConfiguration { rules })
}

fn non_empty(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn to_dto(cfg: &pb::CorsConfiguration) -> CORSRules {
    cfg.rules
        .iter()
        .map(|r| CORSRule {
            id: (!r.id.is_empty()).then(|| r.id.clone()),
            allowed_origins: r.allowed_origins.clone(),
            allowed_methods: r.allowed_methods.clone(),
            allowed_headers: non_empty(&r.allowed_headers),
            expose_headers: non_empty(&r.expose_headers),
            max_age_seconds: r.max_age_seconds,
        })
        .collect()
}

/// `pattern` (at most one `*`, matching any run of characters, also none)
/// against all of `s`.
pub fn wildcard_match(pattern: &str, s: &str, ignore_case: bool) -> bool {
    let eq = |a: &str, b: &str| {
        if ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    match pattern.split_once('*') {
        None => eq(pattern, s),
        Some((prefix, suffix)) => {
            s.len() >= prefix.len() + suffix.len()
                && s.is_char_boundary(prefix.len())
                && s.is_char_boundary(s.len() - suffix.len())
                && eq(&s[..prefix.len()], prefix)
                && eq(&s[s.len() - suffix.len()..], suffix)
        }
    }
}

/// A rule that allowed a request, and how: the `*` origin is answered as
/// `*`, any other as the request's origin.
#[derive(Debug, PartialEq)]
pub struct Matched<'a> {
    pub rule: &'a pb::CorsRule,
    pub any_origin: bool,
}

/// The first rule allowing `origin` to use `method` with the request
/// headers `headers` (lowercase; a real request passes none: S3 checks
/// headers on preflights only).
pub fn find_rule<'a>(
    cfg: &'a pb::CorsConfiguration,
    origin: &str,
    method: &str,
    headers: &[String],
) -> Option<Matched<'a>> {
    cfg.rules.iter().find_map(|rule| {
        let pattern = rule
            .allowed_origins
            .iter()
            .find(|o| wildcard_match(o, origin, false))?;
        if !rule.allowed_methods.iter().any(|m| m == method) {
            return None;
        }
        let headers_ok = headers.iter().all(|h| {
            rule.allowed_headers
                .iter()
                .any(|a| wildcard_match(a, h, true))
        });
        headers_ok.then_some(Matched {
            rule,
            any_origin: pattern == "*",
        })
    })
}

/// The requested headers of a preflight (`Access-Control-Request-Headers`),
/// lowercase, in the order sent.
pub fn requested_headers(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

/// The CORS headers answering a request from `origin` that `m` allowed;
/// `preflight_headers` is what a preflight asked for (None on a real request).
pub fn response_headers(
    m: &Matched<'_>,
    origin: &str,
    preflight_headers: Option<&[String]>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(7);
    if m.any_origin {
        out.push(("access-control-allow-origin", "*".to_string()));
    } else {
        out.push(("access-control-allow-origin", origin.to_string()));
        out.push(("access-control-allow-credentials", "true".to_string()));
    }
    out.push((
        "access-control-allow-methods",
        m.rule.allowed_methods.join(", "),
    ));
    if let Some(h) = preflight_headers.filter(|h| !h.is_empty()) {
        out.push(("access-control-allow-headers", h.join(", ")));
    }
    if !m.rule.expose_headers.is_empty() {
        out.push((
            "access-control-expose-headers",
            m.rule.expose_headers.join(", "),
        ));
    }
    if let Some(age) = m.rule.max_age_seconds {
        out.push(("access-control-max-age", age.to_string()));
    }
    out.push(("vary", VARY.to_string()));
    out
}

pub async fn get_bucket_cors(
    _ctx: &Arc<Ctx>,
    req: S3Request<GetBucketCorsInput>,
) -> GwResult<S3Response<GetBucketCorsOutput>> {
    let bucket = Authorized::of(&req.extensions)?.bucket()?.record;
    let cfg = bucket.cors.ok_or(GwError::NoSuchCorsConfiguration)?;
    Ok(S3Response::new(GetBucketCorsOutput {
        cors_rules: Some(to_dto(&cfg)),
    }))
}

pub async fn put_bucket_cors(
    ctx: &Arc<Ctx>,
    req: S3Request<PutBucketCorsInput>,
) -> GwResult<S3Response<PutBucketCorsOutput>> {
    let cfg = from_dto(&req.input.cors_configuration)?;
    update_bucket(ctx, &req.extensions, |rec| {
        rec.cors = Some(cfg.clone());
        Ok(())
    })
    .await?;
    Ok(S3Response::new(PutBucketCorsOutput {}))
}

pub async fn delete_bucket_cors(
    ctx: &Arc<Ctx>,
    req: S3Request<DeleteBucketCorsInput>,
) -> GwResult<S3Response<DeleteBucketCorsOutput>> {
    update_bucket(ctx, &req.extensions, |rec| {
        rec.cors = None;
        Ok(())
    })
    .await?;
    let mut resp = S3Response::new(DeleteBucketCorsOutput {});
    resp.status = Some(http::StatusCode::NO_CONTENT);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str]) -> CORSRule {
        CORSRule {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn cfg(rules: Vec<CORSRule>) -> CORSConfiguration {
        CORSConfiguration { cors_rules: rules }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "", false));
        assert!(wildcard_match("*", "http://a.example", false));
        assert!(wildcard_match("*suffix", "foo.suffix", false));
        assert!(!wildcard_match("*suffix", "foo.suffix.get", false));
        assert!(wildcard_match("start*end", "startend", false));
        assert!(wildcard_match("start*end", "start12end", false));
        assert!(!wildcard_match("start*end", "0start12end", false));
        assert!(!wildcard_match("start*end", "startend0", false));
        assert!(
            !wildcard_match("ab*ba", "aba", false),
            "prefix and suffix may not overlap"
        );
        assert!(wildcard_match("prefix*", "prefix", false));
        assert!(!wildcard_match("prefix*", "bla.prefix", false));
        assert!(wildcard_match(
            "http://*.origin.com",
            "http://test.origin.com",
            false
        ));
        assert!(!wildcard_match(
            "http://*.origin.com",
            "http://test.origin.com/",
            false
        ));
        assert!(!wildcard_match("http://A.com", "http://a.com", false));
        assert!(wildcard_match("X-Amz-*", "x-amz-date", true));
        assert!(wildcard_match("é*", "éa", false));
        assert!(!wildcard_match("a*", "", false));
    }

    #[test]
    fn validation() {
        assert!(matches!(
            from_dto(&cfg(vec![])),
            Err(GwError::MalformedXml(_))
        ));
        assert!(matches!(
            from_dto(&cfg(vec![rule(&[], &["GET"])])),
            Err(GwError::MalformedXml(_))
        ));
        for (origins, methods) in [
            (&["*a*"][..], &["GET"][..]),
            (&["*"][..], &["PATCH"][..]),
            (&["*"][..], &["get"][..]),
            (&["*"][..], &["OPTIONS"][..]),
            (&["*"][..], &[""][..]),
        ] {
            assert!(
                matches!(
                    from_dto(&cfg(vec![rule(origins, methods)])),
                    Err(GwError::InvalidRequest(_))
                ),
                "{origins:?} {methods:?}"
            );
        }
        let mut r = rule(&["*"], &["GET"]);
        r.allowed_headers = Some(vec!["x-*-*".into()]);
        assert!(matches!(
            from_dto(&cfg(vec![r])),
            Err(GwError::InvalidRequest(_))
        ));
        let mut r = rule(&["*"], &["GET"]);
        r.expose_headers = Some(vec!["x-amz-*".into()]);
        assert!(matches!(
            from_dto(&cfg(vec![r])),
            Err(GwError::InvalidRequest(_))
        ));
        let many: Vec<CORSRule> = (0..101).map(|_| rule(&["*"], &["GET"])).collect();
        assert!(matches!(
            from_dto(&cfg(many)),
            Err(GwError::InvalidRequest(_))
        ));
        let hundred: Vec<CORSRule> = (0..100).map(|_| rule(&["*"], &["GET"])).collect();
        assert_eq!(from_dto(&cfg(hundred)).unwrap().rules.len(), 100);
        // Round trip through the DTO keeps what was given, in order.
        let mut r = rule(
            &["http://b.example", "http://a.example:80"],
            &["PUT", "GET"],
        );
        r.id = Some("one".into());
        r.max_age_seconds = Some(3000);
        r.allowed_headers = Some(vec!["X-Amz-*".into()]);
        let stored = from_dto(&cfg(vec![r.clone()])).unwrap();
        assert_eq!(to_dto(&stored), vec![r]);
    }

    #[test]
    fn matching() {
        let mut r1 = rule(&["http://*.example.com"], &["GET", "PUT"]);
        r1.allowed_headers = Some(vec!["x-amz-*".into(), "Content-Type".into()]);
        r1.expose_headers = Some(vec!["ETag".into()]);
        r1.max_age_seconds = Some(600);
        let r2 = rule(&["*"], &["GET"]);
        let c = from_dto(&cfg(vec![r1, r2])).unwrap();
        let none: Vec<String> = Vec::new();
        let m = find_rule(&c, "http://app.example.com", "PUT", &none).unwrap();
        assert!(!m.any_origin);
        let hs = requested_headers(Some("X-Amz-Date, content-type"));
        assert_eq!(hs, vec!["x-amz-date", "content-type"]);
        let m = find_rule(&c, "http://app.example.com", "PUT", &hs).unwrap();
        let h = response_headers(&m, "http://app.example.com", Some(&hs));
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(
            get("access-control-allow-origin"),
            Some("http://app.example.com")
        );
        assert_eq!(get("access-control-allow-credentials"), Some("true"));
        assert_eq!(get("access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(
            get("access-control-allow-headers"),
            Some("x-amz-date, content-type")
        );
        assert_eq!(get("access-control-expose-headers"), Some("ETag"));
        assert_eq!(get("access-control-max-age"), Some("600"));
        assert_eq!(get("vary"), Some(VARY));
        // A header the first rule does not allow; the second allows none.
        let bad = requested_headers(Some("x-other"));
        assert!(find_rule(&c, "http://app.example.com", "PUT", &bad).is_none());
        // Another origin falls through to the `*` rule, for GET only.
        let m = find_rule(&c, "http://elsewhere", "GET", &none).unwrap();
        assert!(m.any_origin);
        let h = response_headers(&m, "http://elsewhere", None);
        assert!(h.contains(&("access-control-allow-origin", "*".to_string())));
        assert!(!h
            .iter()
            .any(|(k, _)| *k == "access-control-allow-credentials"));
        assert!(find_rule(&c, "http://elsewhere", "PUT", &none).is_none());
        assert!(find_rule(&c, "http://elsewhere", "DELETE", &none).is_none());
    }
}
