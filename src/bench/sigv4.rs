//! SigV4 header auth for Kura's own HTTP clients: `kura bench`'s minimal S3
//! client (`UNSIGNED-PAYLOAD`, path-style URLs, keys of URL-safe characters
//! only) and `kura admin` (the SHA-256 of each JSON body). Hand-written
//! because the AWS SDK costs minutes of build for a few calls
//! (see docs/decisions/0005-bench-client.md).

use kura_gateway::sigv4;
pub use kura_gateway::sigv4::uri_encode;
use sha2::{Digest, Sha256};

/// The payload hash that signs headers only (what `kura bench` sends).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The `x-amz-content-sha256` of a body: its hex SHA-256 (of "" when empty).
pub fn payload_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The canonical query string of decoded `params`: names and values
/// URI-encoded, sorted by name then value, `name=value` joined by `&`
/// (empty when there are none). Also a valid query string to send.
pub fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

pub struct Signer {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

/// What one signature covers. `path` is the canonical URI (already
/// URI-encoded), `query` the canonical query string ([`canonical_query`]),
/// `extra` further headers to send and sign (lowercase names), `payload`
/// the `x-amz-content-sha256` value.
struct Signed<'a> {
    method: &'a str,
    host: &'a str,
    path: &'a str,
    query: &'a str,
    extra: &'a [(&'a str, &'a str)],
    payload: &'a str,
}

impl Signer {
    /// Headers to add to a request of `method` on `path` (already URI-safe)
    /// with `query` in canonical form (parameters sorted by name, values
    /// URI-safe; empty: none) at `host`. `extra` are further headers to send
    /// and sign (lowercase `x-amz-*` names, sorted). The payload is not
    /// signed (`UNSIGNED-PAYLOAD`).
    pub fn headers_with_query(
        &self,
        method: &str,
        host: &str,
        path: &str,
        query: &str,
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        self.headers_with_payload(method, host, path, query, extra, UNSIGNED_PAYLOAD)
    }

    /// As [`Signer::headers_with_query`], signing `payload_hash` as
    /// `x-amz-content-sha256` ([`payload_hash`] of the body, or
    /// [`UNSIGNED_PAYLOAD`]). `extra` may hold any lowercase header names.
    pub fn headers_with_payload(
        &self,
        method: &str,
        host: &str,
        path: &str,
        query: &str,
        extra: &[(&str, &str)],
        payload_hash: &str,
    ) -> Vec<(String, String)> {
        let req = Signed {
            method,
            host,
            path,
            query,
            extra,
            payload: payload_hash,
        };
        self.sign_at(&sigv4::amz_date(time::OffsetDateTime::now_utc()), &req)
    }

    /// The day's signing key. It changes once a day, so each thread keeps
    /// the last one: four HMACs fewer per request on `kura bench`'s path.
    fn signing_key(&self, day: &str) -> ring::hmac::Key {
        type Cached = (String, String, String, ring::hmac::Key);
        thread_local! {
            static LAST: std::cell::RefCell<Option<Cached>> =
                const { std::cell::RefCell::new(None) };
        }
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            if let Some((secret, region, d, key)) = last.as_ref() {
                if *secret == self.secret_key && *region == self.region && d == day {
                    return key.clone();
                }
            }
            let key = sigv4::signing_key(&self.secret_key, day, &self.region, "s3");
            *last = Some((
                self.secret_key.clone(),
                self.region.clone(),
                day.to_string(),
                key.clone(),
            ));
            key
        })
    }

    /// The headers for `req` signed at `date` (`YYYYMMDDTHHMMSSZ`).
    fn sign_at(&self, date: &str, req: &Signed<'_>) -> Vec<(String, String)> {
        let day = &date[..8];
        let (canonical, signed_names) = canonical_request(date, req);
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let signature = sigv4::signature(&self.signing_key(day), date, &scope, &canonical);
        let mut out: Vec<(String, String)> = vec![
            ("x-amz-date".into(), date.to_string()),
            ("x-amz-content-sha256".into(), req.payload.into()),
            (
                "authorization".into(),
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
                    self.access_key
                ),
            ),
        ];
        out.extend(
            req.extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        out
    }
}

/// The canonical request of `req` at `date`, and its signed header names.
fn canonical_request(date: &str, req: &Signed<'_>) -> (String, String) {
    // SigV4 wants the canonical headers sorted by name.
    let mut signed: Vec<(&str, &str)> = vec![
        ("host", req.host),
        ("x-amz-content-sha256", req.payload),
        ("x-amz-date", date),
    ];
    signed.extend_from_slice(req.extra);
    signed.sort_by(|a, b| a.0.cmp(b.0));
    let canonical_headers: String = signed
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed_names = signed.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_names}\n{}",
        req.method, req.path, req.query, req.payload
    );
    (canonical, signed_names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example credentials of AWS's "Signature Calculations for the
    /// Authorization Header" (S3 API reference, SigV4 header auth).
    fn aws_example() -> Signer {
        Signer {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
        }
    }

    fn authorization(headers: &[(String, String)]) -> &str {
        headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }

    #[test]
    fn signs_aws_get_object_example() {
        let empty = payload_hash(b"");
        assert_eq!(
            empty,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let req = Signed {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: "",
            extra: &[("range", "bytes=0-9")],
            payload: &empty,
        };
        let h = aws_example().sign_at("20130524T000000Z", &req);
        assert_eq!(
            authorization(&h),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn signs_aws_list_objects_example_with_a_sorted_query() {
        let empty = payload_hash(b"");
        // Given out of order: the canonical query sorts by name.
        let query = canonical_query(&[("prefix", "J"), ("max-keys", "2")]);
        assert_eq!(query, "max-keys=2&prefix=J");
        let req = Signed {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/",
            query: &query,
            extra: &[],
            payload: &empty,
        };
        let h = aws_example().sign_at("20130524T000000Z", &req);
        assert!(
            authorization(&h).ends_with(
                "SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
                 Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
            ),
            "{h:?}"
        );
    }

    #[test]
    fn signs_aws_put_object_example_with_a_payload_hash() {
        let body = b"Welcome to Amazon S3.";
        let hash = payload_hash(body);
        assert_eq!(
            hash,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let path = format!("/{}", uri_encode("test$file.text", true));
        assert_eq!(path, "/test%24file.text");
        let req = Signed {
            method: "PUT",
            host: "examplebucket.s3.amazonaws.com",
            path: &path,
            query: "",
            extra: &[
                ("date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ],
            payload: &hash,
        };
        let h = aws_example().sign_at("20130524T000000Z", &req);
        assert!(
            authorization(&h).ends_with(
                "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, \
                 Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
            ),
            "{h:?}"
        );
    }

    #[test]
    fn canonical_request_lists_sorted_headers_and_the_payload_hash() {
        let req = Signed {
            method: "POST",
            host: "127.0.0.1:9000",
            path: "/_kura/admin/v1/keys",
            query: "",
            extra: &[("content-type", "application/json")],
            payload: "abc",
        };
        let (canonical, names) = canonical_request("20260101T000000Z", &req);
        assert_eq!(names, "content-type;host;x-amz-content-sha256;x-amz-date");
        assert_eq!(
            canonical,
            "POST\n/_kura/admin/v1/keys\n\ncontent-type:application/json\nhost:127.0.0.1:9000\n\
             x-amz-content-sha256:abc\nx-amz-date:20260101T000000Z\n\n\
             content-type;host;x-amz-content-sha256;x-amz-date\nabc"
        );
    }

    #[test]
    fn query_values_are_uri_encoded_with_uppercase_hex() {
        assert_eq!(
            canonical_query(&[("user", "a b/c:d~e"), ("tenant", "")]),
            "tenant=&user=a%20b%2Fc%3Ad~e"
        );
        assert_eq!(uri_encode("é", true), "%C3%A9");
        assert_eq!(uri_encode("a/b", false), "a/b");
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn the_cached_signing_key_follows_the_secret_and_the_day() {
        let empty = payload_hash(b"");
        let req = Signed {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: "",
            extra: &[("range", "bytes=0-9")],
            payload: &empty,
        };
        let want = "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
        let first = aws_example().sign_at("20130524T000000Z", &req);
        let mut other = aws_example();
        other.secret_key.push('x');
        let changed = other.sign_at("20130524T000000Z", &req);
        let next_day = aws_example().sign_at("20130525T000000Z", &req);
        let again = aws_example().sign_at("20130524T000000Z", &req);
        assert!(authorization(&first).ends_with(want));
        assert!(!authorization(&changed).ends_with(want));
        assert!(!authorization(&next_day).ends_with(want));
        assert_eq!(authorization(&again), authorization(&first));
    }

    #[test]
    fn unsigned_payload_is_what_bench_signs() {
        let h = aws_example().headers_with_query("GET", "h:1", "/b/k", "", &[]);
        assert_eq!(h[0].0, "x-amz-date");
        assert_eq!(
            h[1],
            ("x-amz-content-sha256".into(), UNSIGNED_PAYLOAD.into())
        );
        assert!(authorization(&h).starts_with("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/"));
    }
}
