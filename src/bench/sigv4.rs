//! A minimal S3 client for `kura bench`: SigV4 header auth with
//! `UNSIGNED-PAYLOAD`, path-style URLs, keys of URL-safe characters only.
//! Hand-written because the AWS SDK costs minutes of build for two calls
//! (see docs/decisions/0005-bench-client.md).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// `YYYYMMDDTHHMMSSZ` for now.
fn amz_date() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub struct Signer {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl Signer {
    /// Headers to add to a request of `method` on `path` (already URI-safe)
    /// with `query` in canonical form (parameters sorted by name, values
    /// URI-safe; empty: none) at `host`. `extra` are further headers to send
    /// and sign (lowercase `x-amz-*` names, sorted).
    pub fn headers_with_query(
        &self,
        method: &str,
        host: &str,
        path: &str,
        query: &str,
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let date = amz_date();
        let day = &date[..8];
        let payload = "UNSIGNED-PAYLOAD";
        // SigV4 wants the canonical headers sorted by name.
        let mut signed: Vec<(&str, &str)> = vec![
            ("host", host),
            ("x-amz-content-sha256", payload),
            ("x-amz-date", date.as_str()),
        ];
        signed.extend_from_slice(extra);
        signed.sort_by(|a, b| a.0.cmp(b.0));
        let canonical_headers: String = signed
            .iter()
            .map(|(k, v)| format!("{k}:{}\n", v.trim()))
            .collect();
        let signed_names = signed.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
        let canonical =
            format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed_names}\n{payload}");
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let k_date = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            day.as_bytes(),
        );
        let k_region = hmac(&k_date, self.region.as_bytes());
        let k_service = hmac(&k_region, b"s3");
        let k_signing = hmac(&k_service, b"aws4_request");
        let signature = hex::encode(hmac(&k_signing, to_sign.as_bytes()));
        let mut out: Vec<(String, String)> = vec![
            ("x-amz-date".into(), date.clone()),
            ("x-amz-content-sha256".into(), payload.into()),
            (
                "authorization".into(),
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
                    self.access_key
                ),
            ),
        ];
        out.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        out
    }
}
