//! Who may call the S3 API. For now one root key pair from the config; s3s
//! verifies the signatures (SigV4 in all its forms and SigV2) with the secret
//! this provider returns. Tenants with their own keys and buckets come later
//! and will back `KeyStore` with metadata plus an `S3Access` policy.

use std::collections::HashMap;

use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};

use crate::Config;

/// Access key → secret key.
pub struct KeyStore {
    keys: HashMap<String, SecretKey>,
}

#[async_trait::async_trait]
impl S3Auth for KeyStore {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.keys.get(access_key) {
            Some(secret) => Ok(secret.clone()),
            // What AWS answers for a key it does not know (s3s's SimpleAuth says NotSignedUp).
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

/// The authentication provider for the S3 service.
pub fn root_auth(cfg: &Config) -> KeyStore {
    let mut keys = HashMap::new();
    keys.insert(
        cfg.access_key.clone(),
        SecretKey::from(cfg.secret_key.clone()),
    );
    KeyStore { keys }
}

/// The owner recorded on buckets and uploads created with `access_key`.
pub fn owner_of(credentials: Option<&s3s::auth::Credentials>) -> String {
    credentials
        .map(|c| c.access_key.clone())
        .unwrap_or_default()
}

/// The region in a SigV4 credential scope (`AK/DATE/REGION/s3/aws4_request`),
/// from the Authorization header or a presigned URL's `X-Amz-Credential`.
pub fn credential_region<B>(req: &http::Request<B>) -> Option<String> {
    let scope = if let Some(auth) = req.headers().get(http::header::AUTHORIZATION) {
        let auth = auth.to_str().ok()?;
        let rest = auth.strip_prefix("AWS4-HMAC-SHA256")?;
        let cred = rest
            .split(',')
            .find_map(|p| p.trim().strip_prefix("Credential="))?;
        cred.to_string()
    } else {
        let query = req.uri().query()?;
        let raw = query
            .split('&')
            .find_map(|p| p.strip_prefix("X-Amz-Credential="))?;
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .ok()?
            .into_owned()
    };
    let mut parts = scope.split('/');
    let (_key, _date, region) = (parts.next()?, parts.next()?, parts.next()?);
    Some(region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_region_in_header_and_query() {
        let req = http::Request::builder()
            .uri("/b/k")
            .header("authorization", "AWS4-HMAC-SHA256 Credential=AK/20260101/US/s3/aws4_request, SignedHeaders=host, Signature=00")
            .body(())
            .unwrap();
        assert_eq!(credential_region(&req).as_deref(), Some("US"));
        let req = http::Request::builder()
            .uri("/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20260101%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Signature=0")
            .body(())
            .unwrap();
        assert_eq!(credential_region(&req).as_deref(), Some("eu-west-1"));
        let v2 = http::Request::builder()
            .uri("/b/k")
            .header("authorization", "AWS AK:sig")
            .body(())
            .unwrap();
        assert_eq!(credential_region(&v2), None);
    }
}
