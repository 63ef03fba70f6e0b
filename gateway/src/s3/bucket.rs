//! CreateBucket, DeleteBucket, HeadBucket, ListBuckets, GetBucketLocation.
//! (GetBucketVersioning lives with the rest of versioning in `versioning.rs`.)
//!
//! A bucket is one record `bucket_key(name) -> BucketRecord` with an id from
//! PD that is never reused; objects and uploads are keyed by that id.
//!
//! CreateBucket on an existing bucket you own answers like S3 today: 409
//! BucketAlreadyOwnedByYou, except in us-east-1 where S3 keeps its legacy
//! 200 OK (aws CLI, boto3 and rclone rely on either).

use std::sync::Arc;

use kura_metashard::client::{BatchOutcome, Cf};
use kura_metashard::keys;
use kura_proto::meta::{BucketRecord, StorageClass};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::authz::{owns, Authorized, Caller};
use crate::context::Ctx;
use crate::error::{GwError, GwResult};
use crate::meta::{self, now_ms};
use crate::s3::common::{check_placeable, load_bucket, owner, reload_bucket, timestamp};
use crate::storage_class;

/// S3's bucket naming rules (general purpose buckets).
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    let len = name.len();
    if !(3..=63).contains(&len) {
        return Err("Bucket names must be between 3 and 63 characters long".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(
            "Bucket names can consist only of lowercase letters, numbers, dots and hyphens".into(),
        );
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[len - 1];
    if !(first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric()) {
        return Err("Bucket names must begin and end with a letter or number".into());
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err(
            "Bucket names must not contain adjacent periods or a period next to a hyphen".into(),
        );
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("Bucket names must not be formatted as an IP address".into());
    }
    for p in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(p) {
            return Err(format!("Bucket names must not start with {p:?}"));
        }
    }
    for s in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(s) {
            return Err(format!("Bucket names must not end with {s:?}"));
        }
    }
    Ok(())
}

/// What CreateBucket answers when the name is already taken.
fn already_exists(ctx: &Ctx, existing: &BucketRecord, caller: &Caller) -> GwResult<()> {
    if !caller
        .principal
        .as_ref()
        .is_some_and(|p| owns(ctx, p, existing))
    {
        return Err(GwError::BucketAlreadyExists);
    }
    if ctx.region == "us-east-1" {
        Ok(())
    } else {
        Err(GwError::BucketAlreadyOwnedByYou)
    }
}

/// The class of a new bucket: `x-kura-storage-class` or the gateway default.
fn bucket_class(ctx: &Ctx, headers: &http::HeaderMap) -> GwResult<StorageClass> {
    let Some(v) = headers.get(storage_class::BUCKET_CLASS_HEADER) else {
        return Ok(ctx.default_class);
    };
    let class = v
        .to_str()
        .ok()
        .and_then(storage_class::parse)
        .ok_or_else(|| {
            GwError::InvalidStorageClass(format!(
                "{} must be EC_4_2, EC_8_3 or REPLICA3 (or an S3 class name)",
                storage_class::BUCKET_CLASS_HEADER
            ))
        })?;
    check_placeable(ctx, class)?;
    Ok(class)
}

pub async fn create_bucket(
    ctx: &Arc<Ctx>,
    req: S3Request<CreateBucketInput>,
) -> GwResult<S3Response<CreateBucketOutput>> {
    let auth = Authorized::of(&req.extensions)?;
    let caller = auth.caller.clone();
    let bucket_name = auth.bucket_name()?.clone();
    let class = bucket_class(ctx, &req.headers)?;
    let input = req.input;
    let name = bucket_name.name.clone();
    validate_bucket_name(&name).map_err(GwError::InvalidBucketName)?;
    let constraint = input
        .create_bucket_configuration
        .as_ref()
        .and_then(|c| c.location_constraint.as_ref())
        .map(|c| c.as_str().to_string())
        .unwrap_or_default();
    if !constraint.is_empty() && constraint != ctx.region {
        return Err(GwError::InvalidLocationConstraint(constraint));
    }
    let (acl, object_ownership) = crate::s3::acl::new_bucket_acl(
        caller.user_id(),
        &crate::s3::acl::acl_headers!(input, input.grant_write.as_deref()),
        input.object_ownership.as_ref(),
    )?;
    let output = CreateBucketOutput {
        location: Some(format!("/{name}")),
    };
    let key = bucket_name.key();
    if let Some(existing) = ctx.meta.get::<BucketRecord>(Cf::Meta, &key).await? {
        already_exists(ctx, &existing.record, &caller)?;
        return Ok(S3Response::new(output));
    }
    crate::usage::quota::check_new_bucket(ctx, &bucket_name.tenant, caller.user_id()).await?;
    let id = ctx.pd.alloc_id().await?;
    let rec = BucketRecord {
        id,
        name: name.clone(),
        owner: caller.user_id().to_string(),
        created_unix_ms: now_ms(),
        storage_class: class as i32,
        region: ctx.region.clone(),
        tenant: bucket_name.tenant.clone(),
        acl,
        object_ownership: object_ownership as i32,
        ..Default::default()
    };
    let value = keys::encode_value(&rec);
    let outcome = ctx
        .meta
        .batch(
            vec![meta::not_exists(Cf::Meta, key.clone())],
            vec![meta::put(Cf::Meta, key.clone(), value.clone())],
        )
        .await?;
    match outcome {
        BatchOutcome::Applied => {
            tracing::info!(bucket_id = id, "bucket created");
            Ok(S3Response::new(output))
        }
        BatchOutcome::ConditionFailed { .. } => {
            // Someone created it between our read and our write, or our own
            // earlier attempt applied and its retry failed the condition.
            match ctx.meta.get::<BucketRecord>(Cf::Meta, &key).await? {
                Some(existing) if existing.raw.as_ref() == value.as_slice() => {
                    tracing::info!(bucket_id = id, "bucket created");
                    Ok(S3Response::new(output))
                }
                Some(existing) => {
                    already_exists(ctx, &existing.record, &caller)?;
                    Ok(S3Response::new(output))
                }
                None => Err(GwError::Contention(
                    "bucket created and deleted concurrently".into(),
                )),
            }
        }
    }
}

pub async fn delete_bucket(
    ctx: &Arc<Ctx>,
    req: S3Request<DeleteBucketInput>,
) -> GwResult<S3Response<DeleteBucketOutput>> {
    let bucket = load_bucket(&req.extensions)?;
    let id = bucket.record.id;
    let (start, end) = keys::object_range(id, b"");
    for cf in [Cf::Meta, Cf::Mpu] {
        if !ctx.meta.scan(cf, &start, &end, 1, true).await?.is_empty() {
            return Err(GwError::BucketNotEmpty);
        }
    }
    // Objects written after the emptiness check are not seen here; bucket-id
    // tombstones and a sweeper (DESIGN.md §2) will close that window.
    let key = Authorized::of(&req.extensions)?.bucket_name()?.key();
    let outcome = ctx
        .meta
        .batch(
            vec![meta::value_equals(
                Cf::Meta,
                key.clone(),
                bucket.raw.clone(),
            )],
            vec![meta::delete(Cf::Meta, key)],
        )
        .await?;
    match outcome {
        BatchOutcome::Applied => {
            tracing::info!(bucket_id = id, "bucket deleted");
            Ok(S3Response::new(DeleteBucketOutput::default()))
        }
        BatchOutcome::ConditionFailed { .. } => match reload_bucket(ctx, &req.extensions).await {
            // Gone: our own earlier attempt applied, or a concurrent delete won; either way it is deleted.
            Err(GwError::NoSuchBucket) => Ok(S3Response::new(DeleteBucketOutput::default())),
            Err(e) => Err(e),
            Ok(_) => Err(GwError::Contention("bucket changed during delete".into())),
        },
    }
}

pub async fn head_bucket(
    ctx: &Arc<Ctx>,
    req: S3Request<HeadBucketInput>,
) -> GwResult<S3Response<HeadBucketOutput>> {
    let bucket = load_bucket(&req.extensions)?;
    let region = if bucket.record.region.is_empty() {
        ctx.region.clone()
    } else {
        bucket.record.region
    };
    Ok(S3Response::new(HeadBucketOutput {
        bucket_region: Some(region),
        ..Default::default()
    }))
}

pub async fn get_bucket_location(
    ctx: &Arc<Ctx>,
    req: S3Request<GetBucketLocationInput>,
) -> GwResult<S3Response<GetBucketLocationOutput>> {
    let bucket = load_bucket(&req.extensions)?;
    let region = if bucket.record.region.is_empty() {
        ctx.region.clone()
    } else {
        bucket.record.region
    };
    // S3 reports us-east-1 as an empty LocationConstraint.
    let location_constraint =
        (region != "us-east-1").then(|| BucketLocationConstraint::from(region));
    Ok(S3Response::new(GetBucketLocationOutput {
        location_constraint,
    }))
}

pub async fn list_buckets(
    ctx: &Arc<Ctx>,
    req: S3Request<ListBucketsInput>,
) -> GwResult<S3Response<ListBucketsOutput>> {
    let caller = Authorized::of(&req.extensions)?.caller.clone();
    let principal = caller.principal.clone().ok_or(GwError::AccessDenied)?;
    let input = req.input;
    let prefix = input.prefix.unwrap_or_default();
    let max = match input.max_buckets {
        None => MAX_BUCKETS_PAGE,
        Some(n) if (1..=MAX_BUCKETS_PAGE as i32).contains(&n) => n as usize,
        Some(_) => {
            return Err(GwError::InvalidArgument(format!(
                "max-buckets must be between 1 and {MAX_BUCKETS_PAGE}"
            )))
        }
    };
    let after = match input.continuation_token.as_deref() {
        Some(t) => Some(decode_token(t)?),
        None => None,
    };
    // The caller's tenant's buckets, in name order, those it owns; the scan
    // starts after the token (or at the prefix) and stops past the prefix.
    let (range_start, mut end) = keys::bucket_range(&principal.tenant);
    let mut start = range_start.clone();
    start.extend_from_slice(prefix.as_bytes());
    if let Some(after) = &after {
        let mut k = keys::tenant_bucket_key(&principal.tenant, after);
        k.push(0);
        start = start.max(k);
    }
    if let Some(next) = keys::prefix_successor(prefix.as_bytes()) {
        let mut e = range_start.clone();
        e.extend_from_slice(&next);
        end = end.min(e);
    }
    let mut buckets = Vec::new();
    let mut more = false;
    const PAGE: usize = 1000;
    'scan: loop {
        let page = ctx.meta.scan(Cf::Meta, &start, &end, PAGE, false).await?;
        for kv in &page {
            let rec: BucketRecord = keys::decode_value(&kv.value)?;
            if !owns(ctx, &principal, &rec) {
                continue;
            }
            if buckets.len() == max {
                more = true;
                break 'scan;
            }
            buckets.push(Bucket {
                name: Some(rec.name),
                creation_date: Some(timestamp(rec.created_unix_ms)),
                bucket_region: Some(if rec.region.is_empty() {
                    ctx.region.clone()
                } else {
                    rec.region
                }),
            });
        }
        match page.last() {
            Some(last) if page.len() == PAGE => {
                start = last.key.to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    let continuation_token = if more {
        buckets
            .last()
            .and_then(|b| b.name.as_deref())
            .map(encode_token)
    } else {
        None
    };
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(owner(&principal.user_id)),
        prefix: non_empty_prefix(prefix),
        continuation_token,
    }))
}

/// Most buckets one ListBuckets page returns (AWS: 10,000).
const MAX_BUCKETS_PAGE: usize = 10_000;

/// ListBuckets' continuation token: the last name returned, base64.
fn encode_token(name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name)
}

fn decode_token(token: &str) -> GwResult<String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            GwError::InvalidArgument("The continuation token provided is incorrect".into())
        })
}

fn non_empty_prefix(p: String) -> Option<String> {
    (!p.is_empty()).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_tokens_roundtrip() {
        let t = encode_token("my.bucket-1");
        assert_eq!(decode_token(&t).unwrap(), "my.bucket-1");
        assert!(decode_token("!!!").is_err());
    }

    #[test]
    fn bucket_names() {
        for ok in [
            "abc",
            "my-bucket",
            "my.bucket.1",
            "a1b",
            &"a".repeat(63),
            "123",
        ] {
            assert!(validate_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "My-Bucket",
            "-abc",
            "abc-",
            ".abc",
            "a..b",
            "a.-b",
            "a-.b",
            "192.168.1.1",
            "xn--abc",
            "abc-s3alias",
            "abc--ol-s3",
            "under_score",
            "sp ace",
            "bucket/",
        ] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }
}
