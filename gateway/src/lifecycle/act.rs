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
/// - Enabled: a delete marker becomes the latest version, unless a write
///   landed since the pass read `seen` (then nothing is done);
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

/// Enabled: a delete marker that is a real new latest version (a number
/// from the versioning clock above `seen`, as DeleteObject's), written only
/// while `seen` is unchanged. The batch cannot say "nothing newer than
/// `seen` exists", so a PUT committing between the pass's read and this
/// batch with a lower number would sit under the marker: the marker then
/// checks what is right below it and takes itself back if that is not
/// `seen` (the PUT stays the latest; the next pass looks again).
async fn marker_above(ctx: &Arc<Ctx>, scope: &Scope, key: &str, seen: &Stored) -> GwResult<Done> {
    let v = versioning::new_version(seen.version);
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
    if !applied {
        return Ok(Done::Changed);
    }
    let (start, end) = keys::object_versions_range(scope.bucket_id, key.as_bytes());
    let top = ctx.meta.scan(Cf::Meta, &start, &end, 2, true).await?;
    let below_marker = match top.as_slice() {
        [first, second, ..] if first.key.as_ref() == mkey.as_slice() => Some(second.key.clone()),
        // Something newer than the marker already: the marker hides nothing.
        _ => None,
    };
    if below_marker.is_some_and(|k| k.as_ref() != seen.meta_key().as_slice()) {
        let undo = ctx
            .meta
            .batch(
                vec![meta::value_equals(Cf::Meta, mkey.clone(), value.into())],
                vec![meta::delete(Cf::Meta, mkey)],
            )
            .await?;
        tracing::debug!(
            key,
            ?undo,
            "a write landed under the expiry marker; marker taken back"
        );
        return Ok(Done::Changed);
    }
    // Markers count nothing in usage.
    Ok(Done::Applied)
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

/// Deletes a cf META record (a version, delete marker or anchor) left under
/// a bucket id whose bucket record is gone (docs/decisions/0037), if it is
/// still exactly `kv`: GC records for its bodies go in the same batch, so
/// they are reclaimed as any deleted version's. No usage delta: the bucket,
/// and so its usage counter, is gone.
pub async fn delete_dead_record(
    ctx: &Arc<Ctx>,
    bucket_id: u64,
    kv: &kura_metashard::client::KvPair,
) -> GwResult<Done> {
    let Some(key) = keys::decode_object_key(&kv.key).and_then(|p| String::from_utf8(p.key).ok())
    else {
        tracing::warn!(
            bucket_id,
            "record under a dead bucket with an undecodable key left in place"
        );
        return Ok(Done::Changed);
    };
    let rec: ObjectRecord = keys::decode_value(&kv.value)?;
    let locs = gc::object_locations(&rec);
    let mut mutations = vec![meta::delete(Cf::Meta, kv.key.to_vec())];
    mutations.extend(gc::gc_mutations(bucket_id, &key, &locs));
    let conditions = vec![meta::value_equals(
        Cf::Meta,
        kv.key.to_vec(),
        kv.value.clone(),
    )];
    match ctx.meta.batch(conditions, mutations).await? {
        BatchOutcome::Applied => {
            gc::spawn_reclaim(ctx.clone(), bucket_id, key, locs);
            Ok(Done::Applied)
        }
        // Our own retried attempt applied, or something else removed it.
        BatchOutcome::ConditionFailed { .. } => Ok(Done::Changed),
    }
}
