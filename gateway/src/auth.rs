//! Who may call the S3 API. For now one root key pair from the config, checked
//! by s3s (SigV4 in all its forms and SigV2); tenants with their own keys and
//! buckets come later and will replace `SimpleAuth` with a metadata-backed
//! `S3Auth` plus an `S3Access` policy.

use s3s::auth::SimpleAuth;

use crate::Config;

/// The authentication provider for the S3 service.
pub fn root_auth(cfg: &Config) -> SimpleAuth {
    SimpleAuth::from_single(cfg.access_key.clone(), cfg.secret_key.clone())
}

/// The owner recorded on buckets and uploads created with `access_key`.
pub fn owner_of(credentials: Option<&s3s::auth::Credentials>) -> String {
    credentials
        .map(|c| c.access_key.clone())
        .unwrap_or_default()
}
