//! PutObject, and the object commit shared with CompleteMultipartUpload.
//!
//! A PUT streams its body first (`data::writer`), then commits metadata in
//! one conditional batch on the object's region: the new `ObjectRecord` at
//! the null version, plus a `GcRecord` for the body it replaces. The old
//! record is read first and the batch is conditioned on it being unchanged
//! (VALUE_EQUALS, or NOT_EXISTS when there was none), so a concurrent
//! overwrite is detected and the read-modify-write retried; the body that
//! loses is never leaked. The commit runs in its own task, so a client that
//! disconnects once the body is durable cannot leave a half-done commit.

use std::sync::Arc;

use kura_metashard::client::{BatchOutcome, Cf, Condition, Mutation};
use kura_proto::meta::{ObjectRecord, PartRef, StorageClass};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::context::{Ctx, MAX_SINGLE_PUT};
use crate::data::checksum::{ChecksumFields, ChecksumPlan};
use crate::data::gc;
use crate::data::writer::{write_body, BodyOwner, WriteSpec};
use crate::error::{GwError, GwResult};
use crate::meta::{self, now_ms, RMW_ATTEMPTS};
use crate::s3::common::{
    check_key, etag, format_http_date, load_bucket, load_object, object_key,
    stored_content_encoding, unquote,
};

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

/// How a commit ended when it did not fail outright.
pub enum CommitOutcome {
    Committed,
    /// The caller's extra condition number `i` failed (e.g. the upload vanished).
    ExtraConditionFailed(usize),
}

/// Commits `new` as the null version of (bucket_id, key) with the extra
/// conditions and mutations of the caller, replacing and reclaiming whatever
/// body the current version had.
pub async fn commit_object(
    ctx: &Arc<Ctx>,
    bucket_id: u64,
    key: &str,
    new: &ObjectRecord,
    pre: &WritePrecondition,
    extra_conditions: Vec<Condition>,
    extra_mutations: Vec<Mutation>,
) -> GwResult<CommitOutcome> {
    let vkey = object_key(bucket_id, key);
    let value = kura_metashard::keys::encode_value(new);
    for attempt in 0..RMW_ATTEMPTS {
        let old = load_object(ctx, bucket_id, key).await?;
        pre.check(old.as_ref().map(|o| &o.record))?;
        let old_locs = old
            .as_ref()
            .map(|o| gc::object_locations(&o.record))
            .unwrap_or_default();
        let mut conditions = vec![meta::unchanged(
            Cf::Meta,
            vkey.clone(),
            old.as_ref().map(|o| &o.raw),
        )];
        conditions.extend(extra_conditions.iter().cloned());
        let mut mutations = vec![meta::put(Cf::Meta, vkey.clone(), value.clone())];
        mutations.extend(gc::gc_mutations(bucket_id, key, &old_locs));
        mutations.extend(extra_mutations.iter().cloned());
        let applied = match ctx.meta.batch(conditions, mutations).await? {
            BatchOutcome::Applied => true,
            // Our own earlier attempt may have applied (see `Meta::holds`).
            BatchOutcome::ConditionFailed { .. }
                if ctx.meta.holds(Cf::Meta, &vkey, &value).await? =>
            {
                true
            }
            BatchOutcome::ConditionFailed { index: 0 } => {
                tracing::debug!(attempt, "object changed during commit; retrying");
                false
            }
            BatchOutcome::ConditionFailed { index } => {
                return Ok(CommitOutcome::ExtraConditionFailed(index as usize - 1))
            }
        };
        if applied {
            gc::spawn_reclaim(ctx.clone(), bucket_id, key.to_string(), old_locs);
            return Ok(CommitOutcome::Committed);
        }
    }
    Err(GwError::Contention(
        "too many concurrent writes to one key".into(),
    ))
}

pub async fn put_object(
    ctx: &Arc<Ctx>,
    req: S3Request<PutObjectInput>,
) -> GwResult<S3Response<PutObjectOutput>> {
    let S3Request {
        input,
        headers,
        trailing_headers,
        ..
    } = req;
    check_key(&input.key)?;
    let pre =
        WritePrecondition::from_headers(input.if_match.as_ref(), input.if_none_match.as_ref())?;
    if input.write_offset_bytes.is_some() {
        return Err(GwError::NotImplemented(
            "appends (x-amz-write-offset-bytes)",
        ));
    }
    if input.content_length.is_some_and(|l| l < 0) {
        return Err(GwError::InvalidArgument("negative Content-Length".into()));
    }
    let bucket = load_bucket(ctx, &input.bucket).await?;
    let bucket_id = bucket.record.id;
    if !pre.is_empty() {
        // Fail fast before streaming a body that could never commit.
        pre.check(
            load_object(ctx, bucket_id, &input.key)
                .await?
                .as_ref()
                .map(|o| &o.record),
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
        content_length: input.content_length.map(|l| l as u64),
        max_size: MAX_SINGLE_PUT,
        content_md5: input.content_md5.as_deref(),
        checksums,
    };
    let body = input
        .body
        .unwrap_or_else(|| StreamingBlob::from(s3s::Body::empty()));
    let written = write_body(ctx, spec, body).await?;

    let etag_value = written.etag();
    let rec = ObjectRecord {
        bucket_id,
        key: input.key.clone(),
        version: 0,
        size: written.size,
        etag: etag_value.clone(),
        last_modified_unix_ms: now_ms(),
        content_type: input.content_type.unwrap_or_default(),
        content_encoding: stored_content_encoding(input.content_encoding.as_deref()),
        content_disposition: input.content_disposition.unwrap_or_default(),
        content_language: input.content_language.unwrap_or_default(),
        cache_control: input.cache_control.unwrap_or_default(),
        expires: input
            .expires
            .as_ref()
            .and_then(format_http_date)
            .unwrap_or_default(),
        user_metadata: input.metadata.unwrap_or_default(),
        inline_data: written.inline.clone().unwrap_or_default(),
        parts: written
            .location
            .iter()
            .map(|loc| PartRef {
                part_number: 1,
                size: written.size,
                etag: etag_value.clone(),
                location: Some(loc.clone()),
                inline_data: Default::default(),
            })
            .collect(),
        storage_class: StorageClass::Replica3 as i32,
        checksums: written
            .checksums
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };

    // From here on the commit must finish even if the client goes away.
    let task_ctx = ctx.clone();
    let key = input.key.clone();
    let location = written.location.clone();
    let commit = tokio::spawn(async move {
        let res = commit_object(
            &task_ctx,
            bucket_id,
            &key,
            &rec,
            &pre,
            Vec::new(),
            Vec::new(),
        )
        .await;
        if let Err(e) = &res {
            discard_unless_ambiguous(&task_ctx, e, location.into_iter().collect());
        }
        res
    });
    match commit.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(GwError::Internal(format!("commit task failed: {e}"))),
    }

    let f = ChecksumFields::from_map(&written.checksums);
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(etag(&etag_value)),
        checksum_crc32: f.crc32,
        checksum_crc32c: f.crc32c,
        checksum_crc64nvme: f.crc64nvme,
        checksum_sha1: f.sha1,
        checksum_sha256: f.sha256,
        ..Default::default()
    }))
}

/// Deletes a written body after its commit definitely failed. When the
/// outcome is unknown (the metadata call timed out or the region was
/// unreachable, so the batch may have applied) the body is left to the
/// orphan scrubber, which checks metadata before deleting.
pub fn discard_unless_ambiguous(
    ctx: &Arc<Ctx>,
    err: &GwError,
    locs: Vec<kura_proto::meta::DataLocation>,
) {
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
