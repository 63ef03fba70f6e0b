//! Requests AWS answers before any operation runs, answered the same way
//! here (s3s 0.14.1 answers these differently):
//! - an HTTP method S3 has no operation for → `405 MethodNotAllowed`
//!   (s3s: 501 NotImplemented);
//! - request header fields over 8 KiB in total → `400
//!   RequestHeaderSectionTooLarge` (s3s: accepted);
//! - an `AWS4-HMAC-SHA256` Authorization header without its three
//!   components or with a malformed credential scope → `400
//!   AuthorizationHeaderMalformed` (s3s: 400 InvalidRequest);
//! - a `Range` header that is not one valid byte range is ignored, so the
//!   whole object comes back with 200 (s3s: 400 InvalidArgument, or 416 for
//!   `bytes=-`); when a SigV4 signature covers it, `signed_range.rs` does it
//!   after s3s has verified the signature.
//!   A valid but unsatisfiable range stays 416 InvalidRange.

use http::{HeaderMap, Method, Request};

use crate::error::Refusal;

/// AWS's limit on the request header section (its error says 8192).
pub const AWS_MAX_HEADER_BYTES: usize = 8192;

/// The first reason to refuse `req` before s3s sees it.
pub fn refusal<B>(req: &Request<B>, max_header_bytes: usize) -> Option<Refusal> {
    if !known_method(req.method()) {
        return Some(Refusal::MethodNotAllowed {
            method: req.method().as_str().to_string(),
            resource: resource_type(req.uri().path()),
        });
    }
    if header_section_len(req.headers()) > max_header_bytes {
        return Some(Refusal::HeaderSectionTooLarge {
            max: max_header_bytes,
        });
    }
    let auth = req.headers().get(http::header::AUTHORIZATION)?;
    aws4_malformed(auth.as_bytes()).map(Refusal::AuthorizationHeaderMalformed)
}

/// Methods some S3 operation answers (OPTIONS: CORS preflight).
fn known_method(m: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::DELETE,
        Method::OPTIONS,
    ]
    .contains(m)
}

/// What AWS names in `<ResourceType>`, judged from a path-style path (a
/// virtual-hosted request for `/` is reported as SERVICE: informative only).
fn resource_type(path: &str) -> &'static str {
    match path.trim_start_matches('/').split_once('/') {
        _ if path == "/" || path.is_empty() => "SERVICE",
        Some((_, key)) if !key.is_empty() => "OBJECT",
        _ => "BUCKET",
    }
}

/// Bytes of the header fields as sent on HTTP/1.1 (`name: value\r\n`).
fn header_section_len(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

/// Why an `AWS4-HMAC-SHA256 ...` Authorization header is malformed, if it
/// is; `None` for a well-formed one or another scheme (s3s judges those).
fn aws4_malformed(value: &[u8]) -> Option<&'static str> {
    const THREE: &str = "the authorization header requires three components: \
                         Credential, SignedHeaders, and Signature.";
    let rest = value.strip_prefix(b"AWS4-HMAC-SHA256")?;
    let Ok(rest) = std::str::from_utf8(rest) else {
        return Some(THREE);
    };
    if !rest.starts_with(' ') {
        return Some(THREE);
    }
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',').map(str::trim) {
        let Some((name, v)) = part.split_once('=') else {
            return Some(THREE);
        };
        let slot = match name {
            "Credential" => &mut cred,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut sig,
            _ => return Some(THREE),
        };
        if slot.replace(v).is_some() {
            return Some(THREE);
        }
    }
    let (Some(cred), Some(signed), Some(sig)) = (cred, signed, sig) else {
        return Some(THREE);
    };
    if signed.is_empty() || sig.is_empty() {
        return Some(THREE);
    }
    let scope: Vec<&str> = cred.split('/').collect();
    let date_ok = |d: &str| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit());
    match scope.as_slice() {
        [ak, date, _region, service, "aws4_request"]
            if !ak.is_empty() && date_ok(date) && !service.is_empty() =>
        {
            None
        }
        _ => Some(
            "the Credential is mal-formed; expecting \
             \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".",
        ),
    }
}

/// A `Range` header of a GET or HEAD that is not one valid byte range is
/// ignored, as RFC 9110 allows and AWS does. When no signature covers it
/// (anonymous, SigV2, SigV4 without `range` in its signed headers) it is
/// dropped here. A SigV4-signed one must stay for s3s to verify the
/// signature: the request is marked instead, and `signed_range.rs` signs it
/// again without the header once s3s has verified it.
pub fn ignore_invalid_range<B>(req: &mut Request<B>) {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return;
    }
    let valid = match req.headers().get(http::header::RANGE) {
        None => return,
        Some(v) => v.to_str().is_ok_and(valid_single_range),
    };
    if valid {
        return;
    }
    match range_signing(req) {
        RangeSigning::Unsigned => {
            req.headers_mut().remove(http::header::RANGE);
        }
        RangeSigning::SigV4 if resignable(req.headers()) => {
            let version = req.version();
            req.extensions_mut()
                .insert(super::signed_range::ResignWithoutRange { version });
        }
        // s3s refuses it (400 InvalidArgument), as before.
        RangeSigning::SigV4 | RangeSigning::Unreadable => {}
    }
}

/// Whether a signature covers a request's `Range`.
#[derive(Debug, PartialEq, Eq)]
enum RangeSigning {
    Unsigned,
    SigV4,
    /// An Authorization header that isn't text: left to s3s.
    Unreadable,
}

/// Whether a SigV4 signature (header or presigned) lists `range`.
fn range_signing<B>(req: &Request<B>) -> RangeSigning {
    let lists_range = |list: &str| list.split(';').any(|h| h.eq_ignore_ascii_case("range"));
    let signed = |yes: bool| {
        if yes {
            RangeSigning::SigV4
        } else {
            RangeSigning::Unsigned
        }
    };
    if let Some(auth) = req.headers().get(http::header::AUTHORIZATION) {
        let Ok(auth) = auth.to_str() else {
            return RangeSigning::Unreadable;
        };
        if !auth.starts_with("AWS4-") {
            return RangeSigning::Unsigned;
        }
        return signed(
            auth.split(',')
                .filter_map(|p| p.trim().strip_prefix("SignedHeaders="))
                .any(lists_range),
        );
    }
    let Some(query) = req.uri().query() else {
        return RangeSigning::Unsigned;
    };
    signed(
        query
            .split('&')
            .filter_map(|p| p.strip_prefix("X-Amz-SignedHeaders="))
            .any(|v| lists_range(&v.replace("%3B", ";").replace("%3b", ";"))),
    )
}

/// A signed request can be signed again when it has no body to sign over
/// (a GET or HEAD never needs one) and no streaming signature.
fn resignable(headers: &HeaderMap) -> bool {
    let empty = match headers.get(http::header::CONTENT_LENGTH) {
        Some(v) => v.as_bytes() == b"0",
        None => !headers.contains_key(http::header::TRANSFER_ENCODING),
    };
    let streaming = headers
        .get("x-amz-content-sha256")
        .is_some_and(|v| v.as_bytes().starts_with(b"STREAMING-"));
    empty && !streaming
}

/// `bytes=FIRST-LAST` (FIRST ≤ LAST), `bytes=FIRST-` or `bytes=-SUFFIX`.
fn valid_single_range(v: &str) -> bool {
    let Some(spec) = v.strip_prefix("bytes=") else {
        return false;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return false;
    };
    let num = |s: &str| {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse::<u64>().ok()
        }
    };
    match (first.is_empty(), last.is_empty()) {
        (true, true) => false,
        (true, false) => num(last).is_some(),
        (false, true) => num(first).is_some(),
        (false, false) => matches!((num(first), num(last)), (Some(a), Some(b)) if a <= b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_kept_or_ignored() {
        for ok in [
            "bytes=0-0",
            "bytes=0-",
            "bytes=-5",
            "bytes=-0",
            "bytes=10-100",
        ] {
            assert!(valid_single_range(ok), "{ok}");
        }
        for bad in [
            "bytes=abc",
            "bytes=5-2",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=",
            "bytes=-",
            "bytes=--1",
            "bytes=1-2-3",
            "bytes= 1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert!(!valid_single_range(bad), "{bad}");
        }
        let mut req = Request::get("/b/k")
            .header("range", "bytes=9-1")
            .body(())
            .unwrap();
        ignore_invalid_range(&mut req);
        assert!(req.headers().get("range").is_none());
        // SigV2 does not sign Range; SigV4 may.
        let mut v2 = Request::get("/b/k")
            .header("range", "bytes=9-1")
            .header("authorization", "AWS AK:sig")
            .body(())
            .unwrap();
        ignore_invalid_range(&mut v2);
        assert!(v2.headers().get("range").is_none());
        // (kept, marked to be signed again without it)
        let marked = |r: &Request<()>| {
            r.extensions()
                .get::<super::super::signed_range::ResignWithoutRange>()
                .is_some()
        };
        let v4 = |signed: &str, extra: Option<(&str, &str)>| {
            let mut b = Request::get("/b/k")
                .header("range", "bytes=9-1")
                .header("authorization", format!("AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders={signed}, Signature=00"));
            if let Some((n, v)) = extra {
                b = b.header(n, v);
            }
            let mut r = b.body(()).unwrap();
            ignore_invalid_range(&mut r);
            (r.headers().contains_key("range"), marked(&r))
        };
        assert_eq!(v4("host;range;x-amz-date", None), (true, true));
        assert_eq!(v4("host;x-amz-date", None), (false, false));
        // A body or a streaming signature: left to s3s (400).
        assert_eq!(
            v4("host;range", Some(("content-length", "5"))),
            (true, false)
        );
        assert_eq!(
            v4("host;range", Some(("content-length", "0"))),
            (true, true)
        );
        assert_eq!(
            v4(
                "host;range",
                Some(("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"))
            ),
            (true, false)
        );
        let mut presigned =
            Request::get("/b/k?X-Amz-SignedHeaders=host%3Brange&X-Amz-Signature=00")
                .header("range", "bytes=9-1")
                .body(())
                .unwrap();
        ignore_invalid_range(&mut presigned);
        assert!(presigned.headers().contains_key("range") && marked(&presigned));
        // A valid range is never marked.
        let mut ok = Request::get("/b/k")
            .header("range", "bytes=1-9")
            .header("authorization", "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;range, Signature=00")
            .body(())
            .unwrap();
        ignore_invalid_range(&mut ok);
        assert!(ok.headers().contains_key("range") && !marked(&ok));
        // Other methods keep theirs (UploadPartCopy reads its own header).
        let mut put = Request::put("/b/k")
            .header("range", "bytes=9-1")
            .body(())
            .unwrap();
        ignore_invalid_range(&mut put);
        assert!(put.headers().get("range").is_some());
    }

    #[test]
    fn aws4_headers() {
        let good = "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=abcd";
        assert_eq!(aws4_malformed(good.as_bytes()), None);
        let compact = "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=ab";
        assert_eq!(aws4_malformed(compact.as_bytes()), None);
        for bad in [
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 garbage",
            "AWS4-HMAC-SHA256 Credential=AK, SignedHeaders=host, Signature=ab",
            "AWS4-HMAC-SHA256 Credential=AK/2026/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=ab",
            "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, Signature=ab, Signature=ab",
            "AWS4-HMAC-SHA256Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=ab",
        ] {
            assert!(aws4_malformed(bad.as_bytes()).is_some(), "{bad}");
        }
        // Other schemes are s3s's to judge.
        assert_eq!(aws4_malformed(b"AWS AK:sig"), None);
        assert_eq!(aws4_malformed(b"Bearer x"), None);
    }

    #[test]
    fn methods_and_header_sizes() {
        let req = |m: &str| Request::builder().method(m).uri("/b/k").body(()).unwrap();
        assert!(refusal(&req("GET"), AWS_MAX_HEADER_BYTES).is_none());
        assert!(refusal(&req("OPTIONS"), AWS_MAX_HEADER_BYTES).is_none());
        for m in ["FOO", "PATCH", "TRACE", "PROPFIND"] {
            assert!(
                matches!(
                    refusal(&req(m), AWS_MAX_HEADER_BYTES),
                    Some(Refusal::MethodNotAllowed {
                        resource: "OBJECT",
                        ..
                    })
                ),
                "{m}"
            );
        }
        assert_eq!(resource_type("/"), "SERVICE");
        assert_eq!(resource_type("/b"), "BUCKET");
        assert_eq!(resource_type("/b/"), "BUCKET");
        let big = Request::get("/b/k")
            .header("x-amz-meta-a", "v".repeat(AWS_MAX_HEADER_BYTES))
            .body(())
            .unwrap();
        assert!(matches!(
            refusal(&big, AWS_MAX_HEADER_BYTES),
            Some(Refusal::HeaderSectionTooLarge { max: 8192 })
        ));
        let fits = Request::get("/b/k")
            .header("x-amz-meta-a", "v".repeat(AWS_MAX_HEADER_BYTES - 100))
            .body(())
            .unwrap();
        assert!(refusal(&fits, AWS_MAX_HEADER_BYTES).is_none());
    }
}
