//! DeleteObject and DeleteObjects.
//!
//! Deleting removes the null-version record and enqueues a GC record for its
//! body in the same batch (conditioned on the record being unchanged), then
//! reclaims the fragments best-effort. Deleting a missing key succeeds (204).

use std::sync::Arc;

use futures::StreamExt;
use kura_metashard::client::{BatchOutcome, Cf};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::context::Ctx;
use crate::data::gc;
use crate::error::{code_and_message, GwError, GwResult};
use crate::meta::{self, RMW_ATTEMPTS};
use crate::s3::common::{check_key, check_version_id, load_bucket, load_object, object_key};
use crate::usage::{self, Scope, Usage};

/// At most this many keys per DeleteObjects request (as S3).
const MAX_DELETE_KEYS: usize = 1000;
/// Keys of one DeleteObjects request deleted concurrently.
const DELETE_CONCURRENCY: usize = 16;

/// Deletes the current version of `key`, if any.
pub async fn delete_one(ctx: &Arc<Ctx>, scope: &Scope, key: &str) -> GwResult<()> {
    let bucket_id = scope.bucket_id;
    let vkey = object_key(bucket_id, key);
    let delta_id = usage::new_delta_id();
    for _ in 0..RMW_ATTEMPTS {
        let Some(old) = load_object(ctx, bucket_id, key).await? else {
            return Ok(());
        };
        let locs = gc::object_locations(&old.record);
        let mut mutations = vec![meta::delete(Cf::Meta, vkey.clone())];
        mutations.extend(gc::gc_mutations(bucket_id, key, &locs));
        let change = Usage {
            bytes: -(old.record.size as i64),
            objects: -1,
        };
        mutations.extend(usage::delta_mutation(scope, key, change, &delta_id));
        match ctx
            .meta
            .batch(
                vec![meta::value_equals(Cf::Meta, vkey.clone(), old.raw)],
                mutations,
            )
            .await?
        {
            BatchOutcome::Applied => {
                ctx.folder.note(bucket_id);
                ctx.quotas.note_commit(scope, change);
                gc::spawn_reclaim(ctx.clone(), bucket_id, key.to_string(), locs);
                return Ok(());
            }
            BatchOutcome::ConditionFailed { .. } => {
                // The record we read is no longer current: either our own
                // earlier attempt applied (and wrote the GC records), or
                // another writer replaced it and reclaims it. Its body is
                // unreferenced in both cases; reclaiming twice is harmless.
                gc::spawn_reclaim(ctx.clone(), bucket_id, key.to_string(), locs);
                continue;
            }
        }
    }
    Err(GwError::Contention(
        "too many concurrent writes to one key".into(),
    ))
}

pub async fn delete_object(
    ctx: &Arc<Ctx>,
    req: S3Request<DeleteObjectInput>,
) -> GwResult<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    check_key(&input.key)?;
    check_version_id(input.version_id.as_deref())?;
    if input.if_match.is_some()
        || input.if_match_size.is_some()
        || input.if_match_last_modified_time.is_some()
    {
        return Err(GwError::NotImplemented("conditional deletes"));
    }
    let bucket = load_bucket(&req.extensions)?;
    let task_ctx = ctx.clone();
    let key = input.key;
    // Runs to completion even if the client disconnects.
    let scope = Scope::of(&bucket.record);
    tokio::spawn(async move { delete_one(&task_ctx, &scope, &key).await })
        .await
        .map_err(|e| GwError::Internal(format!("delete task failed: {e}")))??;
    Ok(S3Response::new(DeleteObjectOutput::default()))
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
    let results: Vec<(ObjectIdentifier, GwResult<()>)> = futures::stream::iter(objects)
        .map(|obj| {
            let ctx = ctx.clone();
            let scope = scope.clone();
            async move {
                let res = async {
                    check_key(&obj.key)?;
                    check_version_id(obj.version_id.as_deref())?;
                    // Decided key by key, as S3 does: a grant may cover a prefix.
                    if !auth.allows(&ctx, "s3:DeleteObject", Some(&obj.key))? {
                        return Err(GwError::AccessDenied);
                    }
                    let key = obj.key.clone();
                    tokio::spawn(async move { delete_one(&ctx, &scope, &key).await })
                        .await
                        .map_err(|e| GwError::Internal(format!("delete task failed: {e}")))?
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
            Ok(()) => {
                if !quiet {
                    deleted.push(DeletedObject {
                        key: Some(obj.key),
                        version_id: obj.version_id,
                        ..Default::default()
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
