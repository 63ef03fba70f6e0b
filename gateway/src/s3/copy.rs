//! CopyObject and UploadPartCopy: the source is streamed through the GET
//! data path (`data::reader`) into the PUT data path (`data::writer`), so a
//! copy is a fresh body with its own data id; nothing is shared between
//! objects and deleting either side never affects the other.

use std::sync::Arc;

use kura_proto::meta::{ObjectRecord, StorageClass};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::authz::{authorize_bucket, Authorized};
use crate::context::{Ctx, MAX_PART_SIZE, MAX_SINGLE_PUT};
use crate::data::checksum::{with_checksums, ChecksumFields, ChecksumPlan};
use crate::data::reader;
use crate::data::writer::{write_body_sealed, BodyOwner, WriteSpec, Written};
use crate::error::{GwError, GwResult};
use crate::s3::common::{
    check_key, check_user_metadata, etag, load_bucket, store_request_headers, timestamp,
    write_class,
};
use crate::s3::encryption;
use crate::s3::get::check_conditions;
use crate::s3::multipart::{
    check_part_number, commit_part, load_upload, part_for_body, upload_checksum, upload_class,
};
use crate::s3::put::{commit_in_task, object_for_body, WritePrecondition};
use crate::s3::versioning;
use crate::usage::{quota, Scope};

/// The source of a copy, after its x-amz-copy-source-if-* checks.
struct Source {
    bucket: String,
    key: String,
    rec: ObjectRecord,
    /// `x-amz-copy-source-version-id` (the source bucket is versioned).
    version_id: Option<String>,
    /// The request named a version (`?versionId=` in the copy source).
    named_version: bool,
}

/// The source object of a copy, after its x-amz-copy-source-if-* checks.
async fn load_source(
    ctx: &Ctx,
    ext: &http::Extensions,
    src: &CopySource,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> GwResult<Source> {
    let (bucket, key, version) = match src {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => (bucket.to_string(), key.to_string(), version_id.as_deref()),
        // Another tenant's bucket: s3s refuses `tenant:bucket/key` in this
        // header (AWS's bucket-name rules), so a copy from another tenant
        // names the source as an access point of that "account":
        // `arn:aws:s3:REGION:TENANT:accesspoint/BUCKET/object/KEY`.
        CopySource::AccessPoint {
            region,
            account_id,
            access_point_name,
            key,
            version_id,
            ..
        } => {
            if !region.is_empty() && region.as_ref() != ctx.region {
                return Err(GwError::InvalidArgument(format!(
                    "copy source region {region} is not this endpoint's region"
                )));
            }
            (
                format!("{account_id}:{access_point_name}"),
                key.to_string(),
                version_id.as_deref(),
            )
        }
        CopySource::Outpost { .. } => return Err(GwError::NotImplemented("outpost copy sources")),
    };
    check_key(&key)?;
    let asked = versioning::parse_version_param(version)?;
    // The source is a second resource: the caller needs s3:GetObject (or
    // s3:GetObjectVersion for a named version) on it.
    let action = if asked.is_some() {
        "s3:GetObjectVersion"
    } else {
        "s3:GetObject"
    };
    let caller = &Authorized::of(ext)?.caller;
    let (b, gate) = authorize_bucket(ctx, caller, &bucket, action, Some(&key)).await?;
    let mode = versioning::Versioning::of(&b.record);
    let found = versioning::resolve(ctx, mode, b.record.id, &key, asked).await?;
    // Readable through the source object's own ACL, if not through the bucket.
    gate.check(
        caller,
        found
            .as_ref()
            .filter(|s| !s.is_delete_marker())
            .map(|s| &s.record),
    )?;
    let stored = match versioning::readable(found, asked, mode) {
        // A delete marker is not a copy source: 404 latest, 400 by version (as S3).
        Err(GwError::DeleteMarkerIsLatest { .. }) => return Err(GwError::NoSuchKey),
        Err(GwError::DeleteMarkerNotReadable { .. }) => {
            return Err(GwError::InvalidRequest(
                "The source of a copy request may not specifically refer to a delete marker by version id.".into(),
            ))
        }
        other => other?,
    };
    let version_id = versioning::reported_id(mode, &stored);
    let rec = stored.record;
    // For copies every failed source condition is 412 (never 304).
    match check_conditions(
        &rec,
        if_match,
        if_none_match,
        if_modified_since,
        if_unmodified_since,
    ) {
        Ok(()) => {}
        Err(GwError::NotModified { .. }) => return Err(GwError::PreconditionFailed),
        Err(e) => return Err(e),
    }
    Ok(Source {
        bucket,
        key,
        rec,
        version_id,
        named_version: asked.is_some(),
    })
}

/// The checksums a copy of `range` of `src` computes as it streams: the
/// source's algorithms for a whole copy (so a copied object keeps them),
/// none for a part of it.
fn source_checksums(src: &ObjectRecord, range: &std::ops::Range<u64>) -> ChecksumPlan {
    if range.start == 0 && range.end == src.size {
        ChecksumPlan::computing(src.checksums.keys())
    } else {
        ChecksumPlan::none()
    }
}

/// The checksums of a part copied into `upload`: the upload's algorithm
/// when it has one (so CompleteMultipartUpload can derive the object's
/// COMPOSITE or FULL_OBJECT value from every part), else the source's.
fn part_checksums(
    upload: &kura_proto::meta::MultipartUploadRecord,
    src: &ObjectRecord,
    range: &std::ops::Range<u64>,
) -> ChecksumPlan {
    match upload_checksum(upload) {
        Some(sum) => ChecksumPlan::computing([&sum.algo.name().to_string()]),
        None => source_checksums(src, range),
    }
}

/// Streams `range` of `src` into a new body owned by `owner`, computing
/// `checksums` over the copied plaintext.
#[allow(clippy::too_many_arguments)]
async fn copy_body(
    ctx: &Arc<Ctx>,
    src: &ObjectRecord,
    range: std::ops::Range<u64>,
    owner: BodyOwner,
    max_size: u64,
    class: StorageClass,
    checksums: ChecksumPlan,
    src_keys: &Option<encryption::ReadKeys>,
    sse: Option<&encryption::WriteSse>,
) -> GwResult<Written> {
    let len = range.end - range.start;
    if len > max_size {
        return Err(GwError::InvalidRequest(
            "The specified copy source is larger than the maximum allowable size".into(),
        ));
    }
    let pieces = reader::plan(
        &reader::bodies(src, encryption::ciphers(src_keys))?,
        range.clone(),
    );
    let body = reader::open(ctx.clone(), pieces, len).await?;
    let spec = WriteSpec {
        owner,
        content_length: Some(len),
        max_size,
        content_md5: None,
        checksums,
        class,
    };
    let seal = sse.map(|s| s.new_body()).transpose()?;
    write_body_sealed(ctx, spec, body, seal).await
}

pub async fn copy_object(
    ctx: &Arc<Ctx>,
    req: S3Request<CopyObjectInput>,
) -> GwResult<S3Response<CopyObjectOutput>> {
    let input = req.input;
    check_key(&input.key)?;
    check_user_metadata(input.metadata.as_ref())?;
    let replace = match input
        .metadata_directive
        .as_ref()
        .map(|d| d.as_str().to_ascii_uppercase())
    {
        None => false,
        Some(d) if d == MetadataDirective::COPY => false,
        Some(d) if d == MetadataDirective::REPLACE => true,
        Some(_) => {
            return Err(GwError::InvalidArgument(
                "Unknown metadata directive.".into(),
            ))
        }
    };
    let dst = load_bucket(&req.extensions)?;
    let bucket_id = dst.record.id;
    // The copy gets the request's ACL (or private), never the source's.
    let acl = crate::s3::acl::object_write_acl(
        ctx,
        Authorized::of(&req.extensions)?,
        &dst.record,
        &crate::s3::acl::acl_headers!(input),
    )?;
    let lock = crate::s3::object_lock::explicit(
        ctx,
        Authorized::of(&req.extensions)?,
        &dst.record,
        &input.key,
        &crate::s3::object_lock::write_headers!(input),
    )?;
    let source = load_source(
        ctx,
        &req.extensions,
        &input.copy_source,
        input.copy_source_if_match.as_ref(),
        input.copy_source_if_none_match.as_ref(),
        input.copy_source_if_modified_since.as_ref(),
        input.copy_source_if_unmodified_since.as_ref(),
    )
    .await?;
    let src = &source.rec;
    let src_keys = encryption::read_keys(ctx, src, &encryption::sse_copy_source_headers!(input))?;
    let sse = encryption::for_write(ctx, &dst.record, &encryption::sse_write_headers!(input))?;
    // Copying a named version onto its own key restores it (allowed, as S3).
    if source.bucket == input.bucket
        && source.key == input.key
        && !replace
        && !source.named_version
        && !sse.as_ref().is_some_and(|s| s.explicit)
    {
        return Err(GwError::InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.".into(),
        ));
    }
    let tags = crate::s3::tagging::for_copy(
        input.tagging_directive.as_ref(),
        input.tagging.as_deref(),
        src,
    )?;
    let owner = BodyOwner {
        bucket_id,
        key: input.key.clone(),
        upload_id: String::new(),
        part_number: 0,
    };
    let class = write_class(ctx, input.storage_class.as_ref(), &dst.record)?;
    let admission = quota::check_write(ctx, &dst.record, &input.key, src.size).await?;
    let written = copy_body(
        ctx,
        src,
        0..src.size,
        owner,
        MAX_SINGLE_PUT,
        class,
        source_checksums(src, &(0..src.size)),
        &src_keys,
        sse.as_ref(),
    )
    .await?;
    let etag_value = written.etag();
    let mut rec = object_for_body(bucket_id, &input.key, &written, class);
    if replace {
        store_request_headers!(rec, input);
    } else {
        rec.content_type = src.content_type.clone();
        rec.content_encoding = src.content_encoding.clone();
        rec.content_disposition = src.content_disposition.clone();
        rec.content_language = src.content_language.clone();
        rec.cache_control = src.cache_control.clone();
        rec.expires = src.expires.clone();
        rec.user_metadata = src.user_metadata.clone();
    }
    rec.acl = acl;
    rec.tags = tags;
    rec.sse = sse.as_ref().and_then(|s| s.object(written.sse.as_ref()));
    // The copy's own lock headers or the bucket default; never the source's (as AWS).
    rec.object_lock =
        crate::s3::object_lock::with_default(lock, &dst.record, rec.last_modified_unix_ms);
    let last_modified = rec.last_modified_unix_ms;

    let key = input.key.clone();
    let scope = Scope::of(&dst.record);
    let delta_id = admission.delta_id;
    let outcome = commit_in_task(ctx, written.stored(), move |ctx| async move {
        let pre = WritePrecondition::default();
        crate::s3::versioning::commit(
            &ctx,
            &scope,
            &key,
            &rec,
            &pre,
            &delta_id,
            Vec::new(),
            Vec::new(),
        )
        .await
    })
    .await?;
    admission.committed();

    let version_id = outcome.version_id();
    Ok(S3Response::new(CopyObjectOutput {
        version_id,
        copy_source_version_id: source.version_id.clone(),
        server_side_encryption: encryption::sse_field(sse.as_ref()),
        sse_customer_algorithm: encryption::customer_algorithm_field(sse.as_ref()),
        sse_customer_key_md5: encryption::customer_key_md5_field(sse.as_ref()),
        copy_object_result: Some(with_checksums!(
            ChecksumFields::from_map(&written.checksums),
            CopyObjectResult {
                e_tag: Some(etag(&etag_value)),
                last_modified: Some(timestamp(last_modified)),
            }
        )),
        ..Default::default()
    }))
}

/// `bytes=first-last` (inclusive, both required) within an object of `size` bytes.
pub fn parse_copy_range(v: &str, size: u64) -> GwResult<std::ops::Range<u64>> {
    let bad = || {
        GwError::InvalidArgument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last".into(),
        )
    };
    match Range::parse(v).map_err(|_| bad())? {
        Range::Int {
            first,
            last: Some(last),
        } => {
            if last >= size {
                return Err(GwError::InvalidRange);
            }
            Ok(first..last + 1)
        }
        _ => Err(bad()),
    }
}

pub async fn upload_part_copy(
    ctx: &Arc<Ctx>,
    req: S3Request<UploadPartCopyInput>,
) -> GwResult<S3Response<UploadPartCopyOutput>> {
    let input = req.input;
    let part_number = check_part_number(input.part_number)?;
    check_key(&input.key)?;
    let dst = load_bucket(&req.extensions)?;
    let bucket_id = dst.record.id;
    let upload = load_upload(ctx, bucket_id, &input.key, &input.upload_id).await?;
    let source = load_source(
        ctx,
        &req.extensions,
        &input.copy_source,
        input.copy_source_if_match.as_ref(),
        input.copy_source_if_none_match.as_ref(),
        input.copy_source_if_modified_since.as_ref(),
        input.copy_source_if_unmodified_since.as_ref(),
    )
    .await?;
    let src = &source.rec;
    let src_keys = encryption::read_keys(ctx, src, &encryption::sse_copy_source_headers!(input))?;
    let sse = encryption::for_part(
        ctx,
        &upload.record,
        &encryption::sse_customer_headers!(input),
    )?;
    let range = match input.copy_source_range.as_deref() {
        Some(r) => parse_copy_range(r, src.size)?,
        None => 0..src.size,
    };
    let owner = BodyOwner {
        bucket_id,
        key: input.key.clone(),
        upload_id: input.upload_id.clone(),
        part_number,
    };
    let class = upload_class(ctx, &upload.record);
    let checksums = part_checksums(&upload.record, src, &range);
    let written = copy_body(
        ctx,
        src,
        range,
        owner,
        MAX_PART_SIZE,
        class,
        checksums,
        &src_keys,
        sse.as_ref(),
    )
    .await?;
    let etag_value = written.etag();
    let part = part_for_body(part_number, &written);
    let last_modified = part.last_modified_unix_ms;
    let (key, upload_id) = (input.key.clone(), input.upload_id.clone());
    commit_in_task(ctx, written.stored(), move |ctx| async move {
        commit_part(&ctx, bucket_id, &key, &upload_id, &upload, &part).await
    })
    .await?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_source_version_id: source.version_id.clone(),
        server_side_encryption: encryption::sse_field(sse.as_ref()),
        sse_customer_algorithm: encryption::customer_algorithm_field(sse.as_ref()),
        sse_customer_key_md5: encryption::customer_key_md5_field(sse.as_ref()),
        copy_part_result: Some(with_checksums!(
            ChecksumFields::from_map(&written.checksums),
            CopyPartResult {
                e_tag: Some(etag(&etag_value)),
                last_modified: Some(timestamp(last_modified)),
            }
        )),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ranges() {
        assert_eq!(parse_copy_range("bytes=0-9", 100).unwrap(), 0..10);
        assert_eq!(parse_copy_range("bytes=99-99", 100).unwrap(), 99..100);
        assert!(matches!(
            parse_copy_range("bytes=0-100", 100),
            Err(GwError::InvalidRange)
        ));
        assert!(parse_copy_range("bytes=5-", 100).is_err());
        assert!(parse_copy_range("bytes=-5", 100).is_err());
        assert!(parse_copy_range("0-5", 100).is_err());
    }
}
