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
    keys.insert(cfg.access_key.clone(), SecretKey::from(cfg.secret_key.clone()));
    KeyStore { keys }
}

/// The owner recorded on buckets and uploads created with `access_key`.
pub fn owner_of(credentials: Option<&s3s::auth::Credentials>) -> String {
    credentials
        .map(|c| c.access_key.clone())
        .unwrap_or_default()
}
