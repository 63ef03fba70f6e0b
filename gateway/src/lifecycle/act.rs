//! The lifecycle actions. Each is one conditional single-region batch that
//! applies only if what the pass saw is still there, so a racing PUT,
//! DELETE or second worker is never undone: the action simply does not
//! happen and the next pass looks again. Bodies are reclaimed through the
//! GC queue and usage deltas are written exactly as a user delete does;
//! object lock is honoured (`versioning::delete_version` refuses locked
//! versions, and the deletes made here check `object_lock::check_deletable`
//! on the very record their batch is conditioned on).

use std::sync::Arc;

use kura_metashard::client::{BatchOutcome, Cf};
use kura_metashard::keys::{self, NULL_VERSION};
use kura_proto::meta::ObjectRecord;

use crate::context::Ctx;
use crate::data::gc;
use crate::error::{GwError, GwResult};
use crate::meta::{self, now_ms};
use crate::s3::put::WritePrecondition;
use crate::s3::versioning::{self, CommitOutcome, Stored, VersionRef, Versioning};
use crate::usage::{self, Scope, Usage};

/// Whether an action happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    Applied,
    /// The record changed since the pass read it (or is gone): nothing done.
    Changed,
    /// Object lock protects it: nothing done.
    Locked,
}

fn locked_or(e: GwError) -> GwResult<Done> {
    match e {
        GwError::ObjectLocked => Ok(Done::Locked),
        e => Err(e),
    }
}

fn usage_of(s: &Stored) -> Usage {
    if s.is_delete_marker() || s.is_anchor() {
        Usage::default()
    } else {
        Usage {
            bytes: s.record.size as i64,
            objects: 1,
        }
    }
}

/// Expiration of the current version `seen` (not a delete marker):
/// - never versioned: the object is deleted (body reclaimed);
/// - Enabled: a delete marker goes right above it (version `seen + 1`), so
///   a PUT racing with it always sorts above the marker and stays the
///   latest, and a second marker for the same expiry cannot be written;
/// - Suspended: a null delete marker replaces the null version, as
///   DeleteObject does, only while the null slot is still as seen.
pub async fn expire_current(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    key: &str,
    seen: &Stored,
) -> GwResult<Done> {
    match scope.versioning {
        Versioning::Unversioned => delete_exact(ctx, scope, key, seen).await,
        Versioning::Enabled => marker_above(ctx, scope, key, seen).await,
        Versioning::Suspended => null_marker(ctx, scope, key, seen).await,
    }
}

/// Deletes a noncurrent version, or a delete marker that is the only
/// version left of its key, for good.
pub async fn delete_version(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    key: &str,
    seen: &Stored,
) -> GwResult<Done> {
    if seen.version == NULL_VERSION {
        // The null slot itself: `versioning::delete_version(Null)` would
        // read the slot again and could delete a null version written
        // since; this deletes exactly what was seen.
        return delete_exact(ctx, scope, key, seen).await;
    }
    // A version at its own key (a moved null version's anchor goes with it).
    // Versions are written once (only tags/ACL/lock change in place), so
    // deleting this key can only remove what the pass saw.
    match versioning::get_version(ctx, scope.bucket_id, key, seen.version).await? {
        Some(now) if now.raw == seen.raw => {}
        _ => return Ok(Done::Changed),
    }
    match versioning::delete_version(ctx, scope, key, VersionRef::Id(seen.version)).await {
        Ok(_) => Ok(Done::Applied),
        Err(e) => locked_or(e),
    }
}

/// Deletes the version record `seen` if it still holds exactly what was
/// read, with its GC records and usage delta in the same batch.
async fn delete_exact(ctx: &Arc<Ctx>, scope: &Scope, key: &str, seen: &Stored) -> GwResult<Done> {
    if let Err(e) = crate::s3::object_lock::check_deletable(&seen.record, now_ms(), false) {
        return locked_or(e);
    }
    let locs = gc::object_locations(&seen.record);
    let mut change = Usage::default();
    change.sub(usage_of(seen));
    let delta_id = usage::new_delta_id();
    let conditions = vec![meta::value_equals(
        Cf::Meta,
        seen.meta_key(),
        seen.raw.clone(),
    )];
    let mut mutations = vec![meta::delete(Cf::Meta, seen.meta_key())];
    mutations.extend(gc::gc_mutations(scope.bucket_id, key, &locs));
    let delta = usage::delta_mutation(scope, key, change, &delta_id);
    mutations.extend(delta.clone());
    let applied = match ctx.meta.batch(conditions, mutations).await? {
        BatchOutcome::Applied => true,
        // A retried batch whose first attempt applied reports the condition
        // failed: its usage delta (unique to this attempt) tells.
        BatchOutcome::ConditionFailed { .. } => match &delta {
            Some(d) => ctx.meta.get_raw(Cf::Usage, &d.key).await?.is_some(),
            None => false,
        },
    };
    if !applied {
        return Ok(Done::Changed);
    }
    ctx.folder.note(scope.bucket_id);
    ctx.quotas.note_commit(scope, change);
    gc::spawn_reclaim(ctx.clone(), scope.bucket_id, key.to_string(), locs);
    Ok(Done::Applied)
}

/// Enabled: a delete marker at version `seen + 1`.
async fn marker_above(ctx: &Arc<Ctx>, scope: &Scope, key: &str, seen: &Stored) -> GwResult<Done> {
    let Some(v) = seen.version.checked_add(1) else {
        return Ok(Done::Changed);
    };
    let marker = ObjectRecord {
        version: v,
        ..versioning::delete_marker(scope.bucket_id, key)
    };
    let mkey = keys::object_version_key(scope.bucket_id, key.as_bytes(), v);
    let value = keys::encode_value(&marker);
    let conditions = vec![
        meta::value_equals(Cf::Meta, seen.meta_key(), seen.raw.clone()),
        meta::not_exists(Cf::Meta, mkey.clone()),
    ];
    let mutations = vec![meta::put(Cf::Meta, mkey.clone(), value.clone())];
    let applied = match ctx.meta.batch(conditions, mutations).await? {
        BatchOutcome::Applied => true,
        BatchOutcome::ConditionFailed { .. } => ctx.meta.holds(Cf::Meta, &mkey, &value).await?,
    };
    // Markers count nothing in usage.
    Ok(if applied {
        Done::Applied
    } else {
        Done::Changed
    })
}

/// Suspended: the null delete marker, through the versioning commit.
async fn null_marker(ctx: &Arc<Ctx>, scope: &Scope, key: &str, seen: &Stored) -> GwResult<Done> {
    // The latest must still be what was seen, and no null write may land
    // between this read and the commit (the slot condition).
    match versioning::latest(ctx, Versioning::Suspended, scope.bucket_id, key).await? {
        Some(l) if l.version == seen.version && l.raw == seen.raw => {}
        _ => return Ok(Done::Changed),
    }
    let slot = versioning::get_version(ctx, scope.bucket_id, key, NULL_VERSION).await?;
    let slot_key = keys::object_version_key(scope.bucket_id, key.as_bytes(), NULL_VERSION);
    let extra = vec![
        meta::value_equals(Cf::Meta, seen.meta_key(), seen.raw.clone()),
        meta::unchanged(Cf::Meta, slot_key, slot.as_ref().map(|s| &s.raw)),
    ];
    let marker = versioning::delete_marker(scope.bucket_id, key);
    let delta_id = usage::new_delta_id();
    match versioning::commit(
        ctx,
        scope,
        key,
        &marker,
        &WritePrecondition::default(),
        &delta_id,
        extra,
        Vec::new(),
    )
    .await
    {
        Ok(CommitOutcome::Committed { .. }) => Ok(Done::Applied),
        Ok(CommitOutcome::ExtraConditionFailed(_)) => Ok(Done::Changed),
        Err(e) => locked_or(e),
    }
}

/// Aborts an upload still as the pass read it, through the multipart
/// abort path (parts reclaimed).
pub async fn abort_upload(
    ctx: &Arc<Ctx>,
    bucket_id: u64,
    key: &str,
    upload: &meta::Versioned<kura_proto::meta::MultipartUploadRecord>,
) -> GwResult<Done> {
    let id = upload.record.upload_id.clone();
    match crate::s3::multipart::abort_upload(ctx, bucket_id, key, &id, upload).await {
        Ok(()) => Ok(Done::Applied),
        Err(GwError::NoSuchUpload) => Ok(Done::Changed),
        Err(e) => Err(e),
    }
}
