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
use kura_proto::meta::{BucketRecord, ObjectRecord, PartRecord, StorageClass};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::authz::{owns, Authorized, Caller};
use crate::context::Ctx;
use crate::data::gc;
use crate::error::{GwError, GwResult};
use crate::meta::{self, now_ms, Versioned, RMW_ATTEMPTS};
use crate::s3::common::{check_placeable, load_bucket, owner, timestamp};
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
    let lock = input.object_lock_enabled_for_bucket == Some(true);
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
        // Object lock needs versioning, which then can't be suspended (decision 0031).
        object_lock_enabled: lock,
        versioning: if lock {
            kura_proto::meta::BucketVersioning::Enabled as i32
        } else {
            Default::default()
        },
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

/// DeleteBucket (docs/decisions/0033). Objects live in other regions than
/// the bucket record, so no write can be conditioned on the record. Instead:
/// 1. the record is marked deleting (`deleting_since_unix_ms`), by
///    compare-and-set from the live record;
/// 2. any version, delete marker or anchor under the bucket id → the mark is
///    taken back, 409 BucketNotEmpty (as S3);
/// 3. incomplete multipart uploads are aborted (as S3);
/// 4. the record is deleted if it still holds our mark.
///
/// Every object write, after its commit, reads the record (`await_bucket`):
/// it stands only if it saw the bucket live, and then step 2 (which runs
/// after a mark made later) sees it; if it saw the mark it waits for the
/// outcome and undoes itself when the bucket went away. So no record of a
/// write outlives its bucket, whoever wins.
pub async fn delete_bucket(
    ctx: &Arc<Ctx>,
    req: S3Request<DeleteBucketInput>,
) -> GwResult<S3Response<DeleteBucketOutput>> {
    let key = Authorized::of(&req.extensions)?.bucket_name()?.key();
    let mut cur = load_bucket(&req.extensions)?;
    let deleted = || Ok(S3Response::new(DeleteBucketOutput::default()));
    // 1. Mark it, unless another DeleteBucket did: then carry that one on.
    let mut marked = false;
    for _ in 0..RMW_ATTEMPTS {
        if is_deleting(&cur.record) {
            marked = true;
            break;
        }
        if has_versions(ctx, cur.record.id).await? {
            return Err(GwError::BucketNotEmpty);
        }
        match remark(ctx, &key, &cur, now_ms().max(1)).await? {
            Some(m) => {
                cur = m;
                marked = true;
                break;
            }
            // Gone: a concurrent delete won; either way it is deleted.
            None => match ctx.meta.get::<BucketRecord>(Cf::Meta, &key).await? {
                None => return deleted(),
                Some(b) => cur = b,
            },
        }
    }
    if !marked {
        return Err(GwError::Contention("bucket changed during delete".into()));
    }
    // Test builds stop here to leave a delete half done (the background
    // sweeper finishes it: docs/decisions/0037).
    fail::fail_point!("gateway::delete_bucket_after_mark");
    if carry_on(ctx, &key, cur).await? {
        deleted()
    } else {
        Err(GwError::BucketNotEmpty)
    }
}

/// Steps 2–4 of a delete whose mark `cur` this caller set or took over:
/// true when the record is gone, false when the bucket is not empty (the
/// mark is then taken back).
async fn carry_on(ctx: &Arc<Ctx>, key: &[u8], cur: Versioned<BucketRecord>) -> GwResult<bool> {
    let id = cur.record.id;
    // 2. Decide.
    if has_versions(ctx, id).await? {
        if remark(ctx, key, &cur, 0).await?.is_none()
            && ctx.meta.get::<BucketRecord>(Cf::Meta, key).await?.is_none()
        {
            return Ok(true);
        }
        return Ok(false);
    }
    // 3. Abort what uploads remain.
    let cur = sweep_uploads(ctx, key, cur).await?;
    // 4. Remove the record if it still holds our mark.
    let outcome = ctx
        .meta
        .batch(
            vec![meta::value_equals(Cf::Meta, key.to_vec(), cur.raw.clone())],
            vec![meta::delete(Cf::Meta, key.to_vec())],
        )
        .await?;
    match outcome {
        BatchOutcome::Applied => {}
        BatchOutcome::ConditionFailed { .. } => {
            match ctx.meta.get::<BucketRecord>(Cf::Meta, key).await? {
                // Our own earlier attempt applied, or another delete finished.
                None => {}
                Some(b) if b.record.id != id => {}
                // A writer took a stale-looking mark back.
                Some(_) => return Err(aborted()),
            }
        }
    }
    tracing::info!(bucket_id = id, "bucket deleted");
    Ok(true)
}

/// Finishes a DeleteBucket whose gateway died after marking the record
/// `cur` (read at `key`): a mark not renewed for [`DELETE_STALE_MS`] is
/// taken over by compare-and-set (a writer taking it back at the same time,
/// or another gateway doing this, wins or loses as a whole) and the delete
/// carried on. None: nothing to finish (live, a fresh mark, or it changed);
/// Some(true) deleted; Some(false) not empty, the bucket is live again.
pub async fn finish_stale_delete(
    ctx: &Arc<Ctx>,
    key: &[u8],
    cur: &Versioned<BucketRecord>,
) -> GwResult<Option<bool>> {
    if !is_deleting(&cur.record) || now_ms() - cur.record.deleting_since_unix_ms <= DELETE_STALE_MS
    {
        return Ok(None);
    }
    let Some(mine) = remark(ctx, key, cur, now_ms()).await? else {
        return Ok(None);
    };
    tracing::warn!(
        bucket_id = cur.record.id,
        "finishing a DeleteBucket whose gateway stopped half way"
    );
    carry_on(ctx, key, mine).await.map(Some)
}

/// A DeleteBucket that has held its mark this long without renewing it is
/// presumed dead: a writer that meets the mark takes it back.
const DELETE_STALE_MS: i64 = 30_000;
/// A long sweep of uploads renews its mark this often.
const DELETE_RENEW_MS: i64 = 5_000;
/// How often a writer that met a mark looks at the record again.
const DELETE_POLL: std::time::Duration = std::time::Duration::from_millis(20);

fn is_deleting(rec: &BucketRecord) -> bool {
    rec.deleting_since_unix_ms != 0
}

fn aborted() -> GwError {
    GwError::OperationAborted(
        "A conflicting conditional operation is currently in progress against this resource. Please try again."
            .into(),
    )
}

/// Whether anything is stored under the bucket in cf META: a version, a
/// delete marker or a null-slot anchor.
async fn has_versions(ctx: &Ctx, bucket_id: u64) -> GwResult<bool> {
    let (start, end) = keys::object_range(bucket_id, b"");
    Ok(!ctx
        .meta
        .scan(Cf::Meta, &start, &end, 1, true)
        .await?
        .is_empty())
}

/// Sets the record's deleting mark to `since` (0 = live again) if it is
/// still `cur`; the new record, or None when it changed.
async fn remark(
    ctx: &Ctx,
    key: &[u8],
    cur: &Versioned<BucketRecord>,
    since: i64,
) -> GwResult<Option<Versioned<BucketRecord>>> {
    let mut rec = cur.record.clone();
    rec.deleting_since_unix_ms = since;
    let value = keys::encode_value(&rec);
    if ctx.meta.swap(Cf::Meta, key, Some(&cur.raw), &value).await? {
        Ok(Some(Versioned {
            raw: value.into(),
            record: rec,
        }))
    } else {
        Ok(None)
    }
}

/// Aborts every multipart upload of a marked bucket and removes part records
/// left without an upload, renewing the mark as it goes; the record as it
/// is afterwards (still our mark), or OperationAborted if it was taken back.
async fn sweep_uploads(
    ctx: &Arc<Ctx>,
    key: &[u8],
    mut cur: Versioned<BucketRecord>,
) -> GwResult<Versioned<BucketRecord>> {
    let id = cur.record.id;
    let (start, end) = keys::object_range(id, b"");
    let mut pages = ctx.meta.pages(Cf::Mpu, start, end, 256);
    while let Some(page) = pages.next_page().await? {
        for kv in &page {
            if now_ms() - cur.record.deleting_since_unix_ms > DELETE_RENEW_MS {
                cur = remark(ctx, key, &cur, now_ms())
                    .await?
                    .ok_or_else(aborted)?;
            }
            drop_upload_entry(ctx, id, kv).await?;
        }
    }
    Ok(cur)
}

/// Removes one cf MPU record of bucket `id`: an upload is aborted (its
/// parts with it), a part whose upload is gone is dropped; their bodies
/// are reclaimed. A record changed meanwhile is left for the next look.
pub async fn drop_upload_entry(
    ctx: &Arc<Ctx>,
    id: u64,
    kv: &kura_metashard::client::KvPair,
) -> GwResult<()> {
    use crate::s3::multipart::{abort_upload, UPLOAD_ID_LEN};
    let Some(parts) = keys::decode_object_key(&kv.key) else {
        return Ok(());
    };
    let Ok(object_key) = String::from_utf8(parts.key) else {
        tracing::warn!(bucket_id = id, "upload under a non-UTF-8 key left in place");
        return Ok(());
    };
    if parts.suffix.len() == UPLOAD_ID_LEN {
        let upload = Versioned {
            raw: kv.value.clone(),
            record: keys::decode_value(&kv.value)?,
        };
        let upload_id = String::from_utf8_lossy(&parts.suffix).into_owned();
        match abort_upload(ctx, id, &object_key, &upload_id, &upload).await {
            Ok(()) | Err(GwError::NoSuchUpload) => {}
            Err(e) => return Err(e),
        }
    } else if parts.suffix.len() == UPLOAD_ID_LEN + 4 {
        // A part whose upload is gone (aborted just now, or left by
        // an older gateway): drop it if it is still there.
        let rec: PartRecord = keys::decode_value(&kv.value)?;
        let locs = gc::part_locations(&rec);
        let mut mutations = vec![meta::delete(Cf::Mpu, kv.key.to_vec())];
        mutations.extend(gc::gc_mutations(id, &object_key, &locs));
        let cond = vec![meta::value_equals(
            Cf::Mpu,
            kv.key.to_vec(),
            kv.value.clone(),
        )];
        if let BatchOutcome::Applied = ctx.meta.batch(cond, mutations).await? {
            gc::spawn_reclaim(ctx.clone(), id, object_key, locs);
        }
    }
    Ok(())
}

/// How a write that just committed under `bucket_id` (named `name` in
/// `tenant`) stands: true when the bucket was live when read afterwards —
/// any later DeleteBucket then sees the write. A DeleteBucket in progress
/// is waited out (a stale one is taken back). False when the bucket is gone
/// (or is another bucket now): the caller must undo its write, which no
/// DeleteBucket saw.
pub async fn await_bucket(ctx: &Ctx, tenant: &str, name: &str, bucket_id: u64) -> GwResult<bool> {
    // Test builds stop here to leave a committed write unchecked (the
    // dead-bucket sweeper removes it if its bucket is gone: decision 0037).
    fail::fail_point!("gateway::before_bucket_check");
    let key = keys::tenant_bucket_key(tenant, name);
    loop {
        let Some(cur) = ctx.meta.get_shared::<BucketRecord>(Cf::Meta, &key).await? else {
            return Ok(false);
        };
        if cur.record.id != bucket_id {
            return Ok(false);
        }
        if !is_deleting(&cur.record) {
            return Ok(true);
        }
        if now_ms() - cur.record.deleting_since_unix_ms > DELETE_STALE_MS {
            tracing::warn!(
                bucket_id,
                "taking back the mark of a DeleteBucket that stalled"
            );
            if remark(ctx, &key, &cur, 0).await?.is_some() {
                return Ok(true);
            }
            continue;
        }
        tokio::time::sleep(DELETE_POLL).await;
    }
}

/// After a commit of `value` at version key `vkey` in `scope`'s bucket:
/// Ok when the bucket still stands ([`await_bucket`]); otherwise removes the
/// version (and the null-slot anchor naming it), reclaims its bodies and
/// answers NoSuchBucket.
pub async fn confirm_commit(
    ctx: &Arc<Ctx>,
    scope: &crate::usage::Scope,
    key: &str,
    vkey: &[u8],
    value: &[u8],
) -> GwResult<()> {
    if scope.bucket_name.is_empty()
        || await_bucket(ctx, &scope.tenant, &scope.bucket_name, scope.bucket_id).await?
    {
        return Ok(());
    }
    let rec: ObjectRecord = keys::decode_value(value)?;
    let locs = gc::object_locations(&rec);
    let mut conditions = vec![meta::value_equals(
        Cf::Meta,
        vkey.to_vec(),
        bytes::Bytes::copy_from_slice(value),
    )];
    let mut mutations = vec![meta::delete(Cf::Meta, vkey.to_vec())];
    if rec.null_version {
        let slot = keys::object_version_key(scope.bucket_id, key.as_bytes(), keys::NULL_VERSION);
        if let Some(a) = ctx.meta.get::<ObjectRecord>(Cf::Meta, &slot).await? {
            if a.record.null_moved_to == rec.version {
                conditions.push(meta::value_equals(Cf::Meta, slot.clone(), a.raw));
                mutations.push(meta::delete(Cf::Meta, slot));
            }
        }
    }
    mutations.extend(gc::gc_mutations(scope.bucket_id, key, &locs));
    if !rec.delete_marker {
        let gone = crate::usage::Usage {
            bytes: -(rec.size as i64),
            objects: -1,
        };
        let id = crate::usage::new_delta_id();
        mutations.extend(crate::usage::delta_mutation(scope, key, gone, &id));
    }
    if let BatchOutcome::Applied = ctx.meta.batch(conditions, mutations).await? {
        gc::spawn_reclaim(ctx.clone(), scope.bucket_id, key.to_string(), locs);
    }
    tracing::info!(
        bucket_id = scope.bucket_id,
        "write undone: its bucket was deleted"
    );
    Err(GwError::NoSuchBucket)
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
    let mut pages = ctx.meta.pages(Cf::Meta, start, end, 1000);
    'scan: while let Some(page) = pages.next_page().await? {
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
