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
use crate::s3::versioning::{self, DeleteOptions, DeletePlan, Deleted, PlannedDelete, VersionRef};
use crate::usage::{self, Scope, Usage};
use kura_metashard::client::BatchOutcome;

/// At most this many keys per DeleteObjects request (as S3).
const MAX_DELETE_KEYS: usize = 1000;
/// Keys of one DeleteObjects request read (and checked) concurrently.
const DELETE_CONCURRENCY: usize = 16;
/// A DeleteObjects batch holds at most this many keys of one region ...
const GROUP_KEYS: usize = 128;
/// ... and about this many bytes (a raft entry is capped at 8 MiB).
const GROUP_BYTES: usize = 1 << 20;
/// Batches of one DeleteObjects request committed concurrently.
const GROUPS_IN_FLIGHT: usize = 4;

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

/// Runs [`delete_checked`] to completion even if the client disconnects.
async fn delete_in_task(
    ctx: &Arc<Ctx>,
    scope: Scope,
    key: String,
    version: Option<VersionRef>,
    opts: DeleteOptions,
    pre: WritePrecondition,
) -> GwResult<Deleted> {
    let ctx = ctx.clone();
    tokio::spawn(async move { delete_checked(&ctx, &scope, &key, version, opts, &pre).await })
        .await
        .map_err(|e| GwError::Internal(format!("delete task failed: {e}")))?
}

/// [`delete_one`], with `If-Match` (`pre`, decision 0033) checked against
/// the version it deletes (the latest without a version id) in the same
/// read-modify-write.
async fn delete_checked(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    key: &str,
    version: Option<VersionRef>,
    opts: DeleteOptions,
    pre: &WritePrecondition,
) -> GwResult<Deleted> {
    if pre.is_empty() {
        return delete_one(ctx, scope, key, version, opts).await;
    }
    match version {
        None => versioning::delete_latest_if(ctx, scope, key, pre).await,
        Some(r) => versioning::delete_version_if(ctx, scope, key, r, opts, pre).await,
    }
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
    // Each key is read and checked on its own (concurrently); the version
    // deletes that pass are then committed one batch per region.
    let asked: Vec<GwResult<Asked>> = objects
        .iter()
        .map(|obj| ask(ctx, auth, bypass_asked, obj))
        .collect();
    let steps: Vec<Step> = futures::stream::iter(asked)
        .map(|asked| {
            let ctx = ctx.clone();
            let scope = scope.clone();
            async move {
                match asked {
                    Ok(asked) => plan_one(&ctx, scope, asked).await,
                    Err(e) => Step::Done(Err(e)),
                }
            }
        })
        .buffered(DELETE_CONCURRENCY)
        .collect()
        .await;
    let mut results: Vec<Option<GwResult<Deleted>>> = Vec::with_capacity(steps.len());
    let mut planned = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Done(res) => results.push(Some(res)),
            Step::Planned(plan, asked) => {
                results.push(None);
                planned.push((i, plan, asked));
            }
        }
    }
    // Tests hold the commit here (milliseconds as the failpoint's return
    // value) to change a key between its read and its batch.
    let hold_ms = (|| {
        fail::fail_point!("gateway::delete_objects_before_commit", |ms| ms
            .and_then(|ms| ms.parse::<u64>().ok()));
        None
    })();
    if let Some(ms) = hold_ms {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    for (i, res) in commit_grouped(ctx, &scope, planned).await? {
        results[i] = Some(res);
    }
    let results = objects.into_iter().zip(results).map(|(obj, res)| {
        let res = res.unwrap_or_else(|| Err(GwError::Internal("delete not carried out".into())));
        (obj, res)
    });

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

/// One key of a DeleteObjects request, validated and authorized.
struct Asked {
    key: String,
    version: Option<VersionRef>,
    opts: DeleteOptions,
    pre: WritePrecondition,
}

/// Where one key of a DeleteObjects request stands after its read.
enum Step {
    Done(GwResult<Deleted>),
    Planned(PlannedDelete, Asked),
}

/// Checks one listed key and whether its caller may delete it.
fn ask(
    ctx: &Arc<Ctx>,
    auth: &crate::authz::Authorized,
    bypass_asked: Option<bool>,
    obj: &ObjectIdentifier,
) -> GwResult<Asked> {
    check_key(&obj.key)?;
    let version = versioning::parse_version_param(obj.version_id.as_deref())?;
    // Decided key by key, as S3 does: a grant may cover a prefix.
    let action = if version.is_some() {
        "s3:DeleteObjectVersion"
    } else {
        "s3:DeleteObject"
    };
    if !auth.allows(ctx, action, Some(&obj.key))? {
        return Err(GwError::AccessDenied);
    }
    let opts = DeleteOptions {
        bypass_governance: version.is_some()
            && crate::s3::object_lock::bypass_allowed(ctx, auth, bypass_asked, &obj.key)?,
    };
    // `<ETag>` of a listed object: its If-Match ("*": it must exist).
    let pre = WritePrecondition {
        if_none_match_any: false,
        if_match: obj.e_tag.as_ref().map(|e| {
            let v = unquote(e.value());
            (v != "*").then(|| v.to_string())
        }),
    };
    Ok(Asked {
        key: obj.key.clone(),
        version,
        opts,
        pre,
    })
}

/// Reads and checks a version delete; a delete marker (a versioned bucket,
/// no version id) is written at once, as DeleteObject does.
async fn plan_one(ctx: &Arc<Ctx>, scope: Scope, asked: Asked) -> Step {
    let r = match asked.version {
        Some(r) => r,
        None if scope.versioning == versioning::Versioning::Unversioned => VersionRef::Null,
        None => {
            let Asked { key, opts, pre, .. } = asked;
            return Step::Done(delete_in_task(ctx, scope, key, None, opts, pre).await);
        }
    };
    match versioning::plan_version_delete(ctx, &scope, &asked.key, r, asked.opts, &asked.pre).await
    {
        Err(e) => Step::Done(Err(e)),
        Ok(DeletePlan::Nothing(done)) => Step::Done(Ok(done)),
        Ok(DeletePlan::Commit(plan)) => Step::Planned(plan, asked),
    }
}

/// Commits planned deletes one batch per region (as the region cache
/// draws them), in a task that finishes even if the client goes away. A
/// batch that does not apply — a key changed since it was read, or the
/// cache was stale and the keys span regions — sends its keys again one by
/// one, each read afresh.
async fn commit_grouped(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    mut planned: Vec<(usize, PlannedDelete, Asked)>,
) -> GwResult<Vec<(usize, GwResult<Deleted>)>> {
    planned.sort_by(|a, b| a.1.meta_key.cmp(&b.1.meta_key));
    // A key listed twice (or a version and the null version it shares an
    // anchor with) is deleted once in a batch; its other entries go on
    // their own afterwards (they find it gone, or what replaced it).
    let mut repeats = Vec::new();
    let mut once: Vec<(usize, PlannedDelete, Asked)> = Vec::with_capacity(planned.len());
    for p in planned {
        match once.last() {
            Some(last) if last.1.key() == p.1.key() => repeats.push(p),
            _ => once.push(p),
        }
    }
    let mut groups: Vec<Vec<(usize, PlannedDelete, Asked)>> = Vec::new();
    let mut rest = once.into_iter().peekable();
    while let Some(first) = rest.next() {
        let end = ctx.meta.region_end(&first.1.meta_key).await;
        let mut bytes = first.1.encoded_len();
        let mut group = vec![first];
        while let Some(next) = rest.peek() {
            let fits = end
                .as_ref()
                .is_none_or(|e| next.1.meta_key.as_slice() < e.as_ref())
                && group.len() < GROUP_KEYS
                && bytes + next.1.encoded_len() <= GROUP_BYTES;
            if !fits {
                break;
            }
            bytes += next.1.encoded_len();
            group.extend(rest.next());
        }
        groups.push(group);
    }
    let ctx = ctx.clone();
    let scope = scope.clone();
    tokio::spawn(async move {
        let done: Vec<Vec<(usize, GwResult<Deleted>)>> = futures::stream::iter(groups)
            .map(|group| commit_group(&ctx, &scope, group))
            .buffer_unordered(GROUPS_IN_FLIGHT)
            .collect()
            .await;
        let mut done: Vec<_> = done.into_iter().flatten().collect();
        for (i, _, a) in repeats {
            let res = delete_checked(&ctx, &scope, &a.key, a.version, a.opts, &a.pre).await;
            done.push((i, res));
        }
        done
    })
    .await
    .map_err(|e| GwError::Internal(format!("delete task failed: {e}")))
}

async fn commit_group(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    mut group: Vec<(usize, PlannedDelete, Asked)>,
) -> Vec<(usize, GwResult<Deleted>)> {
    let mut conditions = Vec::new();
    let mut mutations = Vec::new();
    let mut change = Usage::default();
    for (_, plan, _) in &mut group {
        conditions.append(&mut plan.conditions);
        mutations.append(&mut plan.mutations);
        change.add(plan.change);
    }
    // One usage delta for the batch, next to its first key (in its region).
    mutations.extend(usage::delta_mutation(
        scope,
        group[0].1.key(),
        change,
        &usage::new_delta_id(),
    ));
    let keys = group.len();
    match ctx.meta.batch(conditions, mutations).await {
        Ok(BatchOutcome::Applied) => {
            crate::metrics::delete_batch("applied", keys);
            group
                .into_iter()
                .map(|(i, plan, _)| (i, Ok(plan.applied(ctx, scope))))
                .collect()
        }
        // Metadata is down: the keys one by one would only wait longer.
        Err(GwError::Unavailable(why)) => {
            crate::metrics::delete_batch("failed", keys);
            group
                .into_iter()
                .map(|(i, _, _)| (i, Err(GwError::Unavailable(why.clone()))))
                .collect()
        }
        other => {
            crate::metrics::delete_batch("by_key", keys);
            tracing::debug!(
                keys,
                first = group[0].1.key(),
                outcome = ?other,
                "a DeleteObjects batch did not apply: deleting its keys one by one"
            );
            let mut out = Vec::with_capacity(group.len());
            for (i, _, a) in group {
                let res = delete_checked(ctx, scope, &a.key, a.version, a.opts, &a.pre).await;
                out.push((i, res));
            }
            out
        }
    }
}
