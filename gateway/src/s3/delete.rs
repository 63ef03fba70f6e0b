//! DeleteObject and DeleteObjects.
//!
//! Without a version id: a never-versioned bucket loses the object's null
//! version (its body reclaimed through a GC record written in the same
//! batch); a versioned one gets a delete marker (`s3::versioning`). With a
//! version id, that version is deleted for good — unless object lock
//! protects it (403; GOVERNANCE gives way to `x-amz-bypass-governance-retention`
//! with `s3:BypassGovernanceRetention`, docs/decisions/0031). Deleting a
//! missing key or version succeeds (204), as S3.

use std::sync::Arc;

use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::context::Ctx;
use crate::error::{code_and_message, GwError, GwResult};
use crate::s3::common::{check_key, load_bucket, unquote};
use crate::s3::put::WritePrecondition;
use crate::s3::versioning::{self, DeleteOptions, Deleted, VersionRef};
use crate::usage::Scope;

/// At most this many keys per DeleteObjects request (as S3).
const MAX_DELETE_KEYS: usize = 1000;
/// Keys of one DeleteObjects request deleted concurrently.
const DELETE_CONCURRENCY: usize = 16;

/// Deletes `key` (a delete marker in a versioned bucket) or one version of it.
pub async fn delete_one(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    key: &str,
    version: Option<VersionRef>,
    opts: DeleteOptions,
) -> GwResult<Deleted> {
    match version {
        // A delete marker: allowed whatever locks the versions below have.
        None => versioning::delete_latest(ctx, scope, key).await,
        Some(r) => versioning::delete_version_with(ctx, scope, key, r, opts).await,
    }
}

/// Runs [`delete_one`] to completion even if the client disconnects; with
/// `If-Match` (`pre`, decision 0033) checked against the version it deletes
/// (the latest without a version id) in the same read-modify-write.
async fn delete_in_task(
    ctx: &Arc<Ctx>,
    scope: Scope,
    key: String,
    version: Option<VersionRef>,
    opts: DeleteOptions,
    pre: WritePrecondition,
) -> GwResult<Deleted> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        if pre.is_empty() {
            return delete_one(&ctx, &scope, &key, version, opts).await;
        }
        match version {
            None => versioning::delete_latest_if(&ctx, &scope, &key, &pre).await,
            Some(r) => versioning::delete_version_if(&ctx, &scope, &key, r, opts, &pre).await,
        }
    })
    .await
    .map_err(|e| GwError::Internal(format!("delete task failed: {e}")))?
}

pub async fn delete_object(
    ctx: &Arc<Ctx>,
    req: S3Request<DeleteObjectInput>,
) -> GwResult<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    check_key(&input.key)?;
    let version = versioning::parse_version_param(input.version_id.as_deref())?;
    // AWS honours these two on directory buckets only.
    if input.if_match_size.is_some() || input.if_match_last_modified_time.is_some() {
        return Err(GwError::NotImplemented(
            "x-amz-if-match-size and x-amz-if-match-last-modified-time",
        ));
    }
    let pre = WritePrecondition::from_headers(input.if_match.as_ref(), None)?;
    let bucket = load_bucket(&req.extensions)?;
    let scope = Scope::of(&bucket.record);
    let opts = DeleteOptions {
        bypass_governance: crate::s3::object_lock::bypass_allowed(
            ctx,
            crate::authz::Authorized::of(&req.extensions)?,
            input.bypass_governance_retention,
            &input.key,
        )?,
    };
    let done = delete_in_task(ctx, scope, input.key, version, opts, pre).await?;
    Ok(S3Response::new(DeleteObjectOutput {
        delete_marker: done.delete_marker.then_some(true),
        version_id: done.version_id,
        ..Default::default()
    }))
}

pub async fn delete_objects(
    ctx: &Arc<Ctx>,
    req: S3Request<DeleteObjectsInput>,
) -> GwResult<S3Response<DeleteObjectsOutput>> {
    // AWS requires Content-MD5 or a checksum on the body (decision 0036).
    crate::s3::object_lock::check_body_integrity(&req.headers)?;
    let input = req.input;
    let objects = input.delete.objects;
    let quiet = input.delete.quiet.unwrap_or(false);
    let bypass_asked = input.bypass_governance_retention;
    if objects.is_empty() || objects.len() > MAX_DELETE_KEYS {
        return Err(GwError::MalformedXml(format!(
            "a Delete request lists 1 to {MAX_DELETE_KEYS} keys"
        )));
    }
    let auth = crate::authz::Authorized::of(&req.extensions)?;
    let bucket = auth.bucket()?;
    let scope = Scope::of(&bucket.record);
    let results: Vec<(ObjectIdentifier, GwResult<Deleted>)> = futures::stream::iter(objects)
        .map(|obj| {
            let ctx = ctx.clone();
            let scope = scope.clone();
            async move {
                let res = async {
                    check_key(&obj.key)?;
                    let version = versioning::parse_version_param(obj.version_id.as_deref())?;
                    // Decided key by key, as S3 does: a grant may cover a prefix.
                    let action = if version.is_some() {
                        "s3:DeleteObjectVersion"
                    } else {
                        "s3:DeleteObject"
                    };
                    if !auth.allows(&ctx, action, Some(&obj.key))? {
                        return Err(GwError::AccessDenied);
                    }
                    let opts = DeleteOptions {
                        bypass_governance: version.is_some()
                            && crate::s3::object_lock::bypass_allowed(
                                &ctx,
                                auth,
                                bypass_asked,
                                &obj.key,
                            )?,
                    };
                    // `<ETag>` of a listed object: its If-Match ("*": it must exist).
                    let pre = WritePrecondition {
                        if_none_match_any: false,
                        if_match: obj.e_tag.as_ref().map(|e| {
                            let v = unquote(e.value());
                            (v != "*").then(|| v.to_string())
                        }),
                    };
                    delete_in_task(&ctx, scope, obj.key.clone(), version, opts, pre).await
                }
                .await;
                (obj, res)
            }
        })
        .buffered(DELETE_CONCURRENCY)
        .collect()
        .await;

    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (obj, res) in results {
        match res {
            Ok(done) => {
                if !quiet {
                    // A marker created, or a marker deleted by its id: the
                    // marker's id is DeleteMarkerVersionId (as S3).
                    deleted.push(DeletedObject {
                        key: Some(obj.key),
                        version_id: obj.version_id,
                        delete_marker: done.delete_marker.then_some(true),
                        delete_marker_version_id: if done.delete_marker {
                            done.version_id
                        } else {
                            None
                        },
                    });
                }
            }
            Err(e) => {
                let (code, message) = code_and_message(&e);
                errors.push(Error {
                    code: Some(code),
                    key: Some(obj.key),
                    message: Some(message),
                    version_id: obj.version_id,
                });
            }
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: (!deleted.is_empty()).then_some(deleted),
        errors: (!errors.is_empty()).then_some(errors),
        ..Default::default()
    }))
}
