//! AWS ignores a `Range` header that is not one valid byte range and
//! answers 200 with the whole object, even when the client's SigV4
//! signature covers it (boto3 and the aws CLI sign `range`). s3s 0.14.1
//! verifies the signature over the header and then refuses the value while
//! parsing the operation's input (400 InvalidArgument), and the header can't
//! be dropped before the signature check without breaking the signature.
//!
//! So (decision 0043): the front marks such a GET or HEAD
//! ([`ResignWithoutRange`], set in `malformed.rs`); s3s checks the
//! signature and then asks its custom route, which sits between that check
//! and the input parsing, whether the request is its own. [`SignedRangeRoute`]
//! claims marked requests, drops `Range`, signs the request again with the
//! credentials s3s has just verified — the same access key and secret, the
//! same signed headers minus `range`, every other header, the path and the
//! query left as they were — and passes it once more through the same s3s
//! service, where the signature, the access checks and the operation run as
//! for any request. The second pass carries no marker and no `Range`, so it
//! cannot come back here. Header auth gets a fresh `x-amz-date`; a
//! presigned URL keeps its `X-Amz-Date` and `X-Amz-Expires` (so its expiry
//! is judged again exactly) and stays presigned (`s3:authType` unchanged).

use std::sync::{Arc, OnceLock, Weak};

use http::{HeaderMap, Method, Uri};
use s3s::route::S3Route;
use s3s::service::S3Service;
use s3s::{Body, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::sigv4::{self, uri_encode};

/// Set by the front on a GET or HEAD whose SigV4 signature covers a `Range`
/// that is not one valid byte range (and whose body is empty).
#[derive(Clone, Debug)]
pub struct ResignWithoutRange {
    /// The request's HTTP version (s3s's route does not see it).
    pub version: http::Version,
}

/// The s3s service the second pass goes through; set once it is built
/// (weak: the service owns this route).
pub type Reentry = Arc<OnceLock<Weak<S3Service>>>;

/// The custom route that answers marked requests (see the module doc).
pub struct SignedRangeRoute {
    s3: Reentry,
}

impl SignedRangeRoute {
    pub fn new(s3: Reentry) -> Self {
        SignedRangeRoute { s3 }
    }

    /// Only marked requests that still carry their `Range`.
    pub fn matches(headers: &HeaderMap, extensions: &http::Extensions) -> bool {
        extensions.get::<ResignWithoutRange>().is_some()
            && headers.contains_key(http::header::RANGE)
    }
}

#[async_trait::async_trait]
impl S3Route for SignedRangeRoute {
    fn is_match(&self, _m: &Method, _u: &Uri, h: &HeaderMap, e: &mut http::Extensions) -> bool {
        Self::matches(h, e)
    }

    /// The access checks run in the second pass; here only a verified
    /// signature is required (an anonymous request is never marked).
    async fn check_access(&self, req: &mut S3Request<Body>) -> S3Result<()> {
        match req.credentials {
            Some(_) => Ok(()),
            None => Err(S3Error::new(S3ErrorCode::AccessDenied)),
        }
    }

    async fn call(&self, req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        let S3Request {
            input,
            method,
            uri,
            mut headers,
            mut extensions,
            credentials,
            ..
        } = req;
        let version = extensions
            .remove::<ResignWithoutRange>()
            .map_or(http::Version::HTTP_11, |m| m.version);
        let Some(cred) = credentials else {
            return Err(S3Error::new(S3ErrorCode::AccessDenied));
        };
        headers.remove(http::header::RANGE);
        let now = time::OffsetDateTime::now_utc();
        let uri = resign(
            &method,
            &uri,
            &mut headers,
            &cred.access_key,
            cred.secret_key.expose(),
            now,
        )
        .map_err(|e| {
            tracing::debug!(error = %e, "cannot sign the request again without its Range");
            S3Error::with_message(S3ErrorCode::InvalidArgument, "Invalid Range header")
        })?;
        let Some(s3) = self.s3.get().and_then(Weak::upgrade) else {
            return Err(S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                "the gateway is stopping",
            ));
        };
        let mut again = http::Request::new(input);
        *again.method_mut() = method;
        *again.uri_mut() = uri;
        *again.version_mut() = version;
        *again.headers_mut() = headers;
        *again.extensions_mut() = extensions;
        let resp = s3.call(again).await.map_err(|e| {
            tracing::warn!(error = ?e, "second pass of a signed invalid Range failed");
            S3Error::new(S3ErrorCode::InternalError)
        })?;
        let (parts, body) = resp.into_parts();
        let mut out = S3Response::with_status(body, parts.status);
        out.headers = parts.headers;
        out.extensions = parts.extensions;
        Ok(out)
    }
}

/// Why a request could not be signed again.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResignError {
    #[error("the request carries no readable SigV4 signature")]
    NotSigV4,
    #[error("the signature's access key is not the verified one")]
    OtherKey,
    #[error("a signed header is not UTF-8")]
    NotUtf8,
    #[error("the rebuilt request is not a valid URI or header")]
    Invalid,
}

/// Signs `headers` (and, for a presigned URL, `uri`'s query) again for the
/// same credential scope without `range` among the signed headers; returns
/// the URI to send.
pub fn resign(
    method: &Method,
    uri: &Uri,
    headers: &mut HeaderMap,
    access_key: &str,
    secret: &str,
    now: time::OffsetDateTime,
) -> Result<Uri, ResignError> {
    if headers.contains_key(http::header::AUTHORIZATION) {
        resign_header(method, uri, headers, access_key, secret, now)?;
        Ok(uri.clone())
    } else {
        resign_presigned(method, uri, headers, access_key, secret)
    }
}

/// `AK/DATE/REGION/SERVICE/aws4_request` → (AK, REGION, SERVICE).
fn scope(credential: &str) -> Option<(&str, &str, &str)> {
    let mut p = credential.split('/');
    match (p.next(), p.next(), p.next(), p.next(), p.next(), p.next()) {
        (Some(ak), Some(_), Some(region), Some(service), Some("aws4_request"), None) => {
            Some((ak, region, service))
        }
        _ => None,
    }
}

/// The signed header names minus `range`, sorted (as s3s reads them).
fn without_range(list: &str) -> Vec<String> {
    let mut names: Vec<String> = list
        .split(';')
        .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case("range"))
        .map(str::to_ascii_lowercase)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

fn resign_header(
    method: &Method,
    uri: &Uri,
    headers: &mut HeaderMap,
    access_key: &str,
    secret: &str,
    now: time::OffsetDateTime,
) -> Result<(), ResignError> {
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("AWS4-HMAC-SHA256"))
        .ok_or(ResignError::NotSigV4)?;
    let field = |name: &str| {
        auth.split(',')
            .find_map(|p| p.trim().strip_prefix(name)?.strip_prefix('='))
    };
    let credential = field("Credential").ok_or(ResignError::NotSigV4)?;
    let signed = field("SignedHeaders").ok_or(ResignError::NotSigV4)?;
    let (ak, region, service) = scope(credential).ok_or(ResignError::NotSigV4)?;
    if ak != access_key {
        return Err(ResignError::OtherKey);
    }
    let (ak, region, service) = (ak.to_string(), region.to_string(), service.to_string());
    let names = without_range(signed);
    let amz_date = sigv4::amz_date(now);
    let value = http::HeaderValue::from_str(&amz_date).map_err(|_| ResignError::Invalid)?;
    headers.insert("x-amz-date", value);
    let payload = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("UNSIGNED-PAYLOAD")
        .to_string();
    let query = decoded_query(uri.query().unwrap_or(""));
    let canonical = canonical_request(method, uri.path(), &query, headers, &names, &payload)?;
    let signature = sign(secret, &amz_date, &region, &service, &canonical);
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={ak}/{}/{region}/{service}/aws4_request, \
         SignedHeaders={}, Signature={signature}",
        &amz_date[..8],
        names.join(";"),
    );
    let value = http::HeaderValue::from_str(&auth).map_err(|_| ResignError::Invalid)?;
    headers.insert(http::header::AUTHORIZATION, value);
    Ok(())
}

fn resign_presigned(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    access_key: &str,
    secret: &str,
) -> Result<Uri, ResignError> {
    let raw_query = uri.query().ok_or(ResignError::NotSigV4)?;
    let query = decoded_query(raw_query);
    let param = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let credential = param("X-Amz-Credential").ok_or(ResignError::NotSigV4)?;
    let amz_date = param("X-Amz-Date").ok_or(ResignError::NotSigV4)?;
    let signed = param("X-Amz-SignedHeaders").ok_or(ResignError::NotSigV4)?;
    let (ak, region, service) = scope(credential).ok_or(ResignError::NotSigV4)?;
    if ak != access_key {
        return Err(ResignError::OtherKey);
    }
    if amz_date.len() < 8 {
        return Err(ResignError::NotSigV4);
    }
    let names = without_range(signed);
    let list = names.join(";");
    // The query as sent, with the signed-header list replaced; the
    // signature is set once it is known.
    let rebuilt: Vec<String> = raw_query
        .split('&')
        .map(|piece| match piece.split_once('=').map(|(n, _)| n) {
            Some("X-Amz-SignedHeaders") => {
                format!("X-Amz-SignedHeaders={}", uri_encode(&list, true))
            }
            _ => piece.to_string(),
        })
        .collect();
    let new_query = decoded_query(&rebuilt.join("&"));
    let canonical = canonical_request(
        method,
        uri.path(),
        &new_query,
        headers,
        &names,
        "UNSIGNED-PAYLOAD",
    )?;
    let signature = sign(secret, amz_date, region, service, &canonical);
    let query: Vec<String> = rebuilt
        .into_iter()
        .map(|piece| match piece.split_once('=').map(|(n, _)| n) {
            Some("X-Amz-Signature") => format!("X-Amz-Signature={signature}"),
            _ => piece,
        })
        .collect();
    let path_and_query = format!("{}?{}", uri.path(), query.join("&"));
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| ResignError::Invalid)?);
    Uri::from_parts(parts).map_err(|_| ResignError::Invalid)
}

/// The query's pairs, decoded as s3s decodes them (form-urlencoded:
/// `+` is a space), in order.
fn decoded_query(q: &str) -> Vec<(String, String)> {
    let dec = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(n), dec(v))
        })
        .collect()
}

/// The canonical request as s3s builds it to verify (`sig_v4::methods`):
/// the decoded path encoded again, the query pairs encoded and sorted by
/// name (the signature itself left out), each signed header's values
/// trimmed with inner whitespace collapsed and joined by commas.
fn canonical_request(
    method: &Method,
    raw_path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    signed: &[String],
    payload: &str,
) -> Result<String, ResignError> {
    let path = percent_encoding::percent_decode_str(raw_path)
        .decode_utf8()
        .map_err(|_| ResignError::Invalid)?;
    let mut qs: Vec<(String, String)> = query
        .iter()
        .filter(|(n, _)| n != "X-Amz-Signature")
        .map(|(n, v)| (uri_encode(n, true), uri_encode(v, true)))
        .collect();
    qs.sort_by(|a, b| a.0.cmp(&b.0)); // stable, as s3s
    let qs: Vec<String> = qs.into_iter().map(|(n, v)| format!("{n}={v}")).collect();
    let mut out = format!("{method}\n{}\n{}\n", uri_encode(&path, false), qs.join("&"));
    let mut listed = Vec::new();
    for name in signed.iter().filter(|n| *n != "authorization") {
        let mut values = Vec::new();
        for v in headers.get_all(name.as_str()) {
            // s3s leaves non-UTF-8 values out of what it signs over.
            if let Ok(v) = std::str::from_utf8(v.as_bytes()) {
                values.push(v.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
        if values.is_empty() {
            continue; // s3s signs over the headers present
        }
        out.push_str(&format!("{name}:{}\n", values.join(",")));
        listed.push(name.as_str());
    }
    out.push('\n');
    out.push_str(&listed.join(";"));
    out.push('\n');
    out.push_str(payload);
    Ok(out)
}

/// The hex signature of `canonical` for the scope of `amz_date`.
fn sign(secret: &str, amz_date: &str, region: &str, service: &str, canonical: &str) -> String {
    let date = &amz_date[..8.min(amz_date.len())];
    let key = sigv4::signing_key(secret, date, region, service);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    sigv4::signature(&key, amz_date, &scope, canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn example_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", "examplebucket.s3.amazonaws.com".parse().unwrap());
        h.insert("range", "bytes=0-9".parse().unwrap());
        h.insert("x-amz-content-sha256", EMPTY.parse().unwrap());
        h.insert("x-amz-date", "20130524T000000Z".parse().unwrap());
        h
    }

    /// AWS's published example ("GET Object", SigV4 header auth).
    #[test]
    fn aws_get_object_example() {
        let names: Vec<String> = ["host", "range", "x-amz-content-sha256", "x-amz-date"]
            .map(String::from)
            .to_vec();
        let c = canonical_request(
            &Method::GET,
            "/test.txt",
            &[],
            &example_headers(),
            &names,
            EMPTY,
        )
        .unwrap();
        assert_eq!(
            sign(SECRET, "20130524T000000Z", "us-east-1", "s3", &c),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// AWS's published presigned GET example (X-Amz-Expires=86400).
    #[test]
    fn aws_presigned_example() {
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host";
        let mut h = HeaderMap::new();
        h.insert("host", "examplebucket.s3.amazonaws.com".parse().unwrap());
        let c = canonical_request(
            &Method::GET,
            "/test.txt",
            &decoded_query(q),
            &h,
            &["host".to_string()],
            "UNSIGNED-PAYLOAD",
        )
        .unwrap();
        assert_eq!(
            sign(SECRET, "20130524T000000Z", "us-east-1", "s3", &c),
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
        // Re-signing such a URL with a signed range drops it from the list
        // and signs the rest of the query as it was.
        let uri: Uri = format!(
            "/test.txt?{}&X-Amz-Signature=00",
            q.replace("=host", "=host%3Brange")
        )
        .parse()
        .unwrap();
        let mut h2 = example_headers();
        h2.remove("range");
        let out = resign(
            &Method::GET,
            &uri,
            &mut h2,
            "AKIAIOSFODNN7EXAMPLE",
            SECRET,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let out_q = out.query().unwrap();
        assert!(out_q.contains("X-Amz-SignedHeaders=host&"), "{out_q}");
        assert!(out_q.contains("X-Amz-Date=20130524T000000Z"), "{out_q}");
        assert!(
            out_q.ends_with(
                "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
            ),
            "{out_q}"
        );
    }

    #[test]
    fn header_auth_is_signed_again_without_range() {
        let mut h = example_headers();
        h.insert("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41".parse().unwrap());
        h.insert(
            "x-amz-server-side-encryption-customer-algorithm",
            "AES256".parse().unwrap(),
        );
        h.remove("range");
        let uri: Uri = "/test.txt?versionId=v%201&response-content-type=a%2Fb"
            .parse()
            .unwrap();
        let at = time::OffsetDateTime::from_unix_timestamp(1767323045).unwrap();
        let out = resign(
            &Method::GET,
            &uri,
            &mut h,
            "AKIAIOSFODNN7EXAMPLE",
            SECRET,
            at,
        )
        .unwrap();
        assert_eq!(out, uri);
        assert_eq!(h["x-amz-date"], "20260102T030405Z");
        let auth = h["authorization"].to_str().unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260102/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="), "{auth}");
        // The signature is the one a client would compute for that request.
        let names: Vec<String> = ["host", "x-amz-content-sha256", "x-amz-date"]
            .map(String::from)
            .to_vec();
        let c = canonical_request(
            &Method::GET,
            uri.path(),
            &decoded_query(uri.query().unwrap()),
            &h,
            &names,
            EMPTY,
        )
        .unwrap();
        assert!(
            c.contains("\nresponse-content-type=a%2Fb&versionId=v%201\n"),
            "{c}"
        );
        assert!(auth.ends_with(&sign(SECRET, "20260102T030405Z", "us-east-1", "s3", &c)));
        // Another key's signature is never re-signed.
        let mut h3 = h.clone();
        assert_eq!(
            resign(&Method::GET, &uri, &mut h3, "OTHER", SECRET, at),
            Err(ResignError::OtherKey)
        );
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(uri_encode("a b/c~d.e_f-g+h", false), "a%20b/c~d.e_f-g%2Bh");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        assert_eq!(
            decoded_query("a=1+2&&b&c=%2F"),
            vec![
                ("a".into(), "1 2".into()),
                ("b".into(), "".into()),
                ("c".into(), "/".into())
            ]
        );
        let mut h = HeaderMap::new();
        h.append("x-amz-meta-a", "  one   two ".parse().unwrap());
        h.append("x-amz-meta-a", "three".parse().unwrap());
        h.insert("host", "h".parse().unwrap());
        let names = vec![
            "host".to_string(),
            "missing".to_string(),
            "x-amz-meta-a".to_string(),
        ];
        let c = canonical_request(
            &Method::HEAD,
            "/b/k%20x",
            &[],
            &h,
            &names,
            "UNSIGNED-PAYLOAD",
        )
        .unwrap();
        assert_eq!(c, "HEAD\n/b/k%20x\n\nhost:h\nx-amz-meta-a:one two,three\n\nhost;x-amz-meta-a\nUNSIGNED-PAYLOAD");
    }

    #[test]
    fn only_marked_requests_with_a_range_match() {
        let mut h = HeaderMap::new();
        let mut e = http::Extensions::new();
        assert!(!SignedRangeRoute::matches(&h, &e));
        h.insert("range", "bytes=5-2".parse().unwrap());
        assert!(!SignedRangeRoute::matches(&h, &e));
        e.insert(ResignWithoutRange {
            version: http::Version::HTTP_11,
        });
        assert!(SignedRangeRoute::matches(&h, &e));
        h.remove("range");
        assert!(!SignedRangeRoute::matches(&h, &e));
    }
}
