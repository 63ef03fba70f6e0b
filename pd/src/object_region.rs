//! `pdctl region key BUCKET [KEY]`: the region holding an object key's
//! metadata. The bucket's id is read from its bucket record (one
//! linearizable `Metashard.Get` on the leader of the region holding the
//! record's key); the object's records all start with
//! `kura_metashard::keys::object_prefix(bucket_id, key)`, the same encoding
//! the gateway writes with, so the region holding that prefix holds them.
//! Without KEY: the region where the bucket's objects begin.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use kura_metashard::keys;
use kura_proto::meta::BucketRecord;
use kura_proto::metashard::metashard_client::MetashardClient;
use kura_proto::metashard::{Cf, GetRequest, RequestHeader};

use crate::server::PdCore;

/// One Get on a healthy region; generous.
const GET_TIMEOUT: Duration = Duration::from_secs(5);
/// Leader hops followed (leadership moving under us).
const MAX_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("bucket {0:?} not found")]
    NoBucket(String),
    #[error("no region holds the key yet")]
    NoRegion,
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read the bucket record: {0}")]
    Unavailable(String),
    #[error("the bucket record is corrupt: {0}")]
    Corrupt(String),
}

impl LookupError {
    pub fn is_retryable(&self) -> bool {
        match self {
            LookupError::NoBucket(_) => false,
            LookupError::NoRegion => true,
            LookupError::Invalid(_) => false,
            LookupError::Unavailable(_) => true,
            LookupError::Corrupt(_) => false,
        }
    }

    fn http_status(&self) -> StatusCode {
        match self {
            LookupError::NoBucket(_) | LookupError::NoRegion => StatusCode::NOT_FOUND,
            LookupError::Invalid(_) => StatusCode::BAD_REQUEST,
            LookupError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            LookupError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The raw metadata key `region key BUCKET [KEY]` looks up: the object's
/// record prefix, or (no key) the start of the bucket's object range.
pub fn object_lookup_key(bucket_id: u64, key: Option<&[u8]>) -> Vec<u8> {
    match key {
        Some(k) => keys::object_prefix(bucket_id, k),
        None => keys::object_range(bucket_id, b"").0,
    }
}

/// The id of bucket `name`, from its record.
pub async fn bucket_id(core: &PdCore, name: &str) -> Result<u64, LookupError> {
    let key = keys::bucket_key(name);
    let mut last = LookupError::NoRegion;
    for _ in 0..MAX_ATTEMPTS {
        let Some(info) = core.region_by_key(&key).await else {
            return Err(LookupError::NoRegion);
        };
        let region_id = info.region.as_ref().map_or(0, |r| r.id);
        if info.leader_addr.is_empty() {
            last = LookupError::Unavailable(format!("region {region_id} has no known leader"));
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        let ch = kura_pd_client::channel::lazy_channel(&info.leader_addr)
            .map_err(|e| LookupError::Unavailable(e.to_string()))?;
        let req = GetRequest {
            header: Some(RequestHeader {
                region_id,
                epoch: None,
            }),
            cf: Cf::Meta as i32,
            key: key.clone().into(),
        };
        let resp = match tokio::time::timeout(GET_TIMEOUT, MetashardClient::new(ch).get(req)).await
        {
            Err(_) => {
                last = LookupError::Unavailable(format!("{} timed out", info.leader_addr));
                continue;
            }
            Ok(Err(s)) => {
                last = LookupError::Unavailable(format!("{}: {}", info.leader_addr, s.message()));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        if let Some(e) = resp.header.and_then(|h| h.region_error) {
            // Not leader, epoch changed, key moved: PD's map catches up.
            last = LookupError::Unavailable(format!("region {region_id}: {}", e.message));
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if !resp.found {
            return Err(LookupError::NoBucket(name.to_string()));
        }
        let rec: BucketRecord =
            keys::decode_value(&resp.value).map_err(|e| LookupError::Corrupt(e.to_string()))?;
        return Ok(rec.id);
    }
    Err(last)
}

/// `GET /pd/api/v1/region/bucket/{bucket}` and
/// `GET /pd/api/v1/region/bucket/{bucket}/{hex_key}`: the region holding
/// that object key's metadata (pd-ctl's region shape), or where the
/// bucket's objects begin.
pub async fn region_by_object(
    State(core): State<std::sync::Arc<PdCore>>,
    Path(mut params): Path<std::collections::HashMap<String, String>>,
) -> Response {
    let bucket = params.remove("bucket").unwrap_or_default();
    let hex_key = params.remove("hex_key");
    let key = match hex_key
        .map(|h| hex::decode(h.trim_start_matches("0x")))
        .transpose()
    {
        Ok(k) => k,
        Err(e) => {
            let e = LookupError::Invalid(format!("the object key must be hex: {e}"));
            return crate::http::error(e.http_status(), e.to_string());
        }
    };
    let id = match bucket_id(&core, &bucket).await {
        Ok(id) => id,
        Err(e) => return crate::http::error(e.http_status(), e.to_string()),
    };
    let raw = object_lookup_key(id, key.as_deref());
    crate::http::region_for_key(&core, raw).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_keys_are_the_gateways_object_prefixes() {
        let k = object_lookup_key(7, Some(b"photos/a.jpg"));
        assert_eq!(k, keys::object_prefix(7, b"photos/a.jpg"));
        assert!(k.starts_with(&[keys::FAMILY_OBJECT, 0, 0, 0, 0, 0, 0, 0, 7]));
        // Every version record of the object lies under the prefix.
        assert!(keys::object_version_key(7, b"photos/a.jpg", 3).starts_with(&k));
        // No key: at or before the bucket's first object, after the bucket before it.
        let start = object_lookup_key(7, None);
        assert!(start <= keys::object_prefix(7, b"\0"));
        assert!(start > keys::object_prefix(6, b"\xff\xff"));
    }
}
