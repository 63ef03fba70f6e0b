//! DeleteObject and DeleteObjects.
//!
//! Without a version id: a never-versioned bucket loses the object's null
//! version (its body reclaimed through a GC record written in the same
//! batch); a versioned one gets a delete marker (`s3::versioning`). With a
//! version id, that version is deleted for good. Deleting a missing key or
//! version succeeds (204), as S3.

use std::sync::Arc;

use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::context::Ctx;
use crate::error::{code_and_message, GwError, GwResult};
use crate::s3::common::{check_key, load_bucket};
use crate::s3::versioning::{self, Deleted, VersionRef};
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
) -> GwResult<Deleted> {
    match version {
        None => versioning::delete_latest(ctx, scope, key).await,
        Some(r) => versioning::delete_version(ctx, scope, key, r).await,
    }
}

/// Runs [`delete_one`] to completion even if the client disconnects.
async fn delete_in_task(
    ctx: &Arc<Ctx>,
    scope: Scope,
    key: String,
    version: Option<VersionRef>,
) -> GwResult<Deleted> {
    let ctx = ctx.clone();
    tokio::spawn(async move { delete_one(&ctx, &scope, &key, version).await })
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
    if input.if_match.is_some()
        || input.if_match_size.is_some()
        || input.if_match_last_modified_time.is_some()
    {
        return Err(GwError::NotImplemented("conditional deletes"));
    }
    let bucket = load_bucket(&req.extensions)?;
    let scope = Scope::of(&bucket.record);
    let done = delete_in_task(ctx, scope, input.key, version).await?;
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
    let input = req.input;
    let objects = input.delete.objects;
    let quiet = input.delete.quiet.unwrap_or(false);
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
                    delete_in_task(&ctx, scope, obj.key.clone(), version).await
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
