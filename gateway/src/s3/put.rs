//! PutObject, and what the other writes share with it: the object commit
//! (CopyObject, CompleteMultipartUpload) and `commit_in_task`, which runs
//! the metadata commit of every write (PUT, both copies, UploadPart, Complete).
//!
//! A PUT streams its body first (`data::writer`), then commits metadata in
//! one conditional batch on the object's region (`s3::versioning::commit`):
//! the new `ObjectRecord` as a new version (versioning Enabled) or as the
//! null version, plus a `GcRecord` for the body of the null version it
//! replaces. What it replaces is read first and the batch is conditioned on
//! it being unchanged, so a concurrent overwrite is detected and the
//! read-modify-write retried; the body that loses is never leaked. (A new
//! key may commit before any read, conditioned on being absent: decision 0053.) The commit runs in its own task, so a client that
//! disconnects once the body is durable cannot leave a half-done commit.

use std::future::Future;
use std::sync::Arc;

use kura_proto::meta::{DataLocation, ObjectRecord, PartRef, StorageClass};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::context::{Ctx, MAX_SINGLE_PUT};
use crate::data::checksum::{with_checksums, ChecksumFields, ChecksumPlan};
use crate::data::gc;
use crate::data::writer::{write_body_sealed, BodyOwner, WriteSpec, Written};
use crate::error::{GwError, GwResult};
use crate::meta::now_ms;
use crate::s3::common::{
    check_key, check_user_metadata, declared_length, etag, load_bucket, store_request_headers,
    unquote, write_class, NULL_VERSION,
};
use crate::s3::encryption;
use crate::s3::object_lock;
use crate::usage::{quota, Scope};

/// A conditional write (`If-None-Match: *` / `If-Match: "etag"` on PUT or Complete).
#[derive(Clone, Debug, Default)]
pub struct WritePrecondition {
    /// The object must not exist.
    pub if_none_match_any: bool,
    /// The object must exist with this ETag (None: `*`, any existing object).
    pub if_match: Option<Option<String>>,
}

impl WritePrecondition {
    pub fn from_headers(
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> GwResult<Self> {
        let if_none_match_any = match if_none_match {
            None => false,
            Some(ETagCondition::Any) => true,
            Some(ETagCondition::ETag(_)) => {
                return Err(GwError::NotImplemented(
                    "If-None-Match on writes supports only '*'",
                ));
            }
        };
        let if_match = if_match.map(|c| match c {
            ETagCondition::Any => None,
            ETagCondition::ETag(e) => Some(unquote(e.value()).to_string()),
        });
        Ok(WritePrecondition {
            if_none_match_any,
            if_match,
        })
    }

    pub fn is_empty(&self) -> bool {
        !self.if_none_match_any && self.if_match.is_none()
    }

    /// Checks the precondition against the current record.
    pub fn check(&self, current: Option<&ObjectRecord>) -> GwResult<()> {
        if self.if_none_match_any && current.is_some() {
            return Err(GwError::PreconditionFailed);
        }
        match (&self.if_match, current) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(GwError::NoSuchKey),
            (Some(None), Some(_)) => Ok(()),
            (Some(Some(want)), Some(rec)) if *want == rec.etag => Ok(()),
            (Some(Some(_)), Some(_)) => Err(GwError::PreconditionFailed),
        }
    }
}

pub async fn put_object(
    ctx: &Arc<Ctx>,
    req: S3Request<PutObjectInput>,
) -> GwResult<S3Response<PutObjectOutput>> {
    let S3Request {
        input,
        headers,
        trailing_headers,
        extensions,
        ..
    } = req;
    check_key(&input.key)?;
    check_user_metadata(input.metadata.as_ref())?;
    let tags = crate::s3::tagging::parse_header(input.tagging.as_deref())?;
    let pre =
        WritePrecondition::from_headers(input.if_match.as_ref(), input.if_none_match.as_ref())?;
    if input.write_offset_bytes.is_some() {
        return Err(GwError::NotImplemented(
            "appends (x-amz-write-offset-bytes)",
        ));
    }
    let content_length = declared_length(input.content_length)?;
    let bucket = load_bucket(&extensions)?;
    let bucket_id = bucket.record.id;
    let class = write_class(ctx, input.storage_class.as_ref(), &bucket.record)?;
    let acl = crate::s3::acl::object_write_acl(
        ctx,
        crate::authz::Authorized::of(&extensions)?,
        &bucket.record,
        &crate::s3::acl::acl_headers!(input),
    )?;
    let sse = encryption::for_write(ctx, &bucket.record, &encryption::sse_write_headers!(input))?;
    // Object lock headers are checked before the body is read; the default
    // retention counts from the version's creation (set below).
    let lock = object_lock::explicit(
        ctx,
        crate::authz::Authorized::of(&extensions)?,
        &bucket.record,
        &input.key,
        &object_lock::write_headers!(input),
    )?;
    object_lock::check_put_integrity(
        object_lock::with_default(lock, &bucket.record, now_ms()).as_ref(),
        &headers,
    )?;
    // Checked before the body is read; held until the commit is over.
    let mut admission =
        quota::check_write(ctx, &bucket.record, &input.key, content_length.unwrap_or(0)).await?;
    if !pre.is_empty() {
        // Fail fast before streaming a body that could never commit.
        let versioning = crate::s3::versioning::Versioning::of(&bucket.record);
        let current = crate::s3::versioning::latest(ctx, versioning, bucket_id, &input.key).await?;
        pre.check(
            current
                .as_ref()
                .filter(|c| !c.is_delete_marker())
                .map(|c| &c.record),
        )?;
    }
    let checksums = ChecksumPlan::from_headers(&headers, trailing_headers)?;
    let spec = WriteSpec {
        owner: BodyOwner {
            bucket_id,
            key: input.key.clone(),
            upload_id: String::new(),
            part_number: 0,
        },
        content_length,
        max_size: MAX_SINGLE_PUT,
        content_md5: input.content_md5.as_deref(),
        checksums,
        class,
    };
    let body = input
        .body
        .unwrap_or_else(|| StreamingBlob::from(s3s::Body::empty()));
    let seal = sse.as_ref().map(|s| s.new_body()).transpose()?;
    let written = write_body_sealed(ctx, spec, body, seal).await?;

    let etag_value = written.etag();
    let mut rec = object_for_body(bucket_id, &input.key, &written, class);
    store_request_headers!(rec, input);
    rec.acl = acl;
    rec.tags = tags;
    rec.sse = sse.as_ref().and_then(|s| s.object(written.sse.as_ref()));
    rec.object_lock = object_lock::with_default(lock, &bucket.record, rec.last_modified_unix_ms);

    // The body is durable on the data nodes, no metadata names it yet: a
    // crash here must leave no visible object, only an orphan for GC.
    fail::fail_point!("gateway::put_before_commit");
    // From here on the commit must finish even if the client goes away.
    if content_length.is_none() {
        // The size is known only now: check again with it.
        // (its own first admission must not count against it)
        drop(admission);
        admission = quota::check_write(ctx, &bucket.record, &input.key, written.size).await?;
    }
    let key = input.key.clone();
    let scope = Scope::of(&bucket.record);
    let delta_id = admission.delta_id;
    let outcome = commit_in_task(ctx, written.stored(), move |ctx| async move {
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
    let version_id = outcome.version_id();
    admission.committed();
    // Committed, not acknowledged: the object is whole and visible.
    fail::fail_point!("gateway::put_after_commit_before_respond");

    let resp = S3Response::new(with_checksums!(
        ChecksumFields::from_map(&written.checksums),
        PutObjectOutput {
            e_tag: Some(etag(&etag_value)),
            version_id: version_id,
        }
    ));
    Ok(encryption::with_echo(resp, sse.map(|s| s.echo())))
}

/// The record of a new object whose whole body is `written`, as the null
/// version of (bucket_id, key), written for storage class `class`. HTTP
/// headers and user metadata are left empty for the caller to fill in.
pub fn object_for_body(
    bucket_id: u64,
    key: &str,
    written: &Written,
    class: StorageClass,
) -> ObjectRecord {
    let etag = written.etag();
    ObjectRecord {
        bucket_id,
        key: key.to_string(),
        version: NULL_VERSION,
        size: written.size,
        last_modified_unix_ms: now_ms(),
        inline_data: written.inline.clone().unwrap_or_default(),
        parts: written
            .location
            .iter()
            .map(|loc| PartRef {
                part_number: 1,
                size: written.size,
                etag: etag.clone(),
                location: Some(loc.clone()),
                inline_data: Default::default(),
            })
            .collect(),
        etag,
        storage_class: class as i32,
        checksums: written
            .checksums
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

/// Runs the metadata commit of a freshly written body in its own task, so a
/// client that goes away cannot cancel it halfway. If the commit fails, the
/// body is discarded unless the outcome is unknown
/// (`discard_unless_ambiguous`).
///
/// The commit must finish within `Ctx::max_commit_age` of the body's
/// fragments being created: orphan GC on the data nodes deletes bodies it
/// finds unreferenced once they are twice that old, so a commit that lands
/// later could reference deleted fragments. Past the deadline the PUT fails
/// with 503 and the body is left to orphan GC.
pub async fn commit_in_task<T, F>(
    ctx: &Arc<Ctx>,
    body: Option<(DataLocation, std::time::Instant)>,
    commit: impl FnOnce(Arc<Ctx>) -> F,
) -> GwResult<T>
where
    F: Future<Output = GwResult<T>> + Send + 'static,
    T: Send + 'static,
{
    let task_ctx = ctx.clone();
    // Boxed: the commit's state is large, and the task would copy it twice.
    let commit = Box::pin(commit(ctx.clone()));
    let deadline = body
        .as_ref()
        .map(|(_, started)| tokio::time::Instant::from_std(*started + ctx.max_commit_age));
    let location = body.map(|(l, _)| l);
    tokio::spawn(async move {
        let res = match deadline {
            Some(d) => tokio::time::timeout_at(d, commit)
                .await
                .unwrap_or_else(|_| {
                    Err(GwError::Unavailable(
                        "the metadata commit did not finish in time; the body is left to orphan GC"
                            .into(),
                    ))
                }),
            None => commit.await,
        };
        if let Err(e) = &res {
            discard_unless_ambiguous(&task_ctx, e, location.into_iter().collect());
        }
        res
    })
    .await
    .map_err(|e| GwError::Internal(format!("commit task failed: {e}")))?
}

/// Deletes a written body after its commit definitely failed. When the
/// outcome is unknown (the metadata call timed out or the region was
/// unreachable, so the batch may have applied) the body is left to the
/// orphan scrubber, which checks metadata before deleting.
pub fn discard_unless_ambiguous(ctx: &Arc<Ctx>, err: &GwError, locs: Vec<DataLocation>) {
    let ambiguous = matches!(err, GwError::Unavailable(_) | GwError::Internal(_));
    if ambiguous {
        if !locs.is_empty() {
            tracing::warn!(error = %err, "commit outcome unknown; body left for the orphan scrubber");
        }
    } else {
        gc::spawn_discard(ctx.clone(), locs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(etag: &str) -> ObjectRecord {
        ObjectRecord {
            etag: etag.into(),
            ..Default::default()
        }
    }

    #[test]
    fn write_preconditions() {
        let none = WritePrecondition::default();
        assert!(none.is_empty());
        assert!(none.check(None).is_ok());
        assert!(none.check(Some(&rec("a"))).is_ok());

        let create_only = WritePrecondition {
            if_none_match_any: true,
            if_match: None,
        };
        assert!(create_only.check(None).is_ok());
        assert!(matches!(
            create_only.check(Some(&rec("a"))),
            Err(GwError::PreconditionFailed)
        ));

        let m = WritePrecondition {
            if_none_match_any: false,
            if_match: Some(Some("a".into())),
        };
        assert!(m.check(Some(&rec("a"))).is_ok());
        assert!(matches!(
            m.check(Some(&rec("b"))),
            Err(GwError::PreconditionFailed)
        ));
        assert!(matches!(m.check(None), Err(GwError::NoSuchKey)));

        let any = WritePrecondition {
            if_none_match_any: false,
            if_match: Some(None),
        };
        assert!(any.check(Some(&rec("z"))).is_ok());
    }

    #[test]
    fn preconditions_from_headers() {
        let p = WritePrecondition::from_headers(None, Some(&ETagCondition::Any)).unwrap();
        assert!(p.if_none_match_any);
        let p = WritePrecondition::from_headers(
            Some(&ETagCondition::ETag(ETag::Strong("x".into()))),
            None,
        )
        .unwrap();
        assert_eq!(p.if_match, Some(Some("x".into())));
        assert!(WritePrecondition::from_headers(
            None,
            Some(&ETagCondition::ETag(ETag::Strong("x".into())))
        )
        .is_err());
    }
}
