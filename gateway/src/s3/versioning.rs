//! S3 object versioning (docs/decisions/0027): Put/GetBucketVersioning,
//! ListObjectVersions, and the version-aware reads, commits and deletes the
//! object operations share.
//!
//! Layout (`kura_metashard::keys` module docs): an object's version keys are
//! adjacent, newest first, so its latest version is the first key under its
//! prefix (one seek). Key 0 is the *null slot*: the null version itself, or
//! an anchor naming the real version key where a null version written above
//! other versions (versioning Suspended) sits.
//!
//! Writes:
//! - Enabled: the new version gets a number above the latest one read (so
//!   the last committed write is the latest whatever the gateway clocks
//!   say), conditioned on its key not existing and the latest being
//!   unchanged. Nothing is reclaimed.
//! - Unversioned / Suspended: the new null version replaces the old one
//!   (its body is reclaimed); conditioned on the null slot (and its target)
//!   being unchanged, so two null writes serialize.
//!
//! Object lock (`s3::object_lock`, docs/decisions/0031) is enforced inside
//! [`delete_version`]: every caller, lifecycle's expiry included, is refused
//! a retained or legally held version, and the lock state checked is the one
//! the delete batch is conditioned on. Only [`delete_version_with`] and
//! [`DeleteOptions::bypass_governance`] can lift GOVERNANCE retention.

use std::sync::Arc;

use bytes::Bytes;
use kura_metashard::client::{BatchOutcome, Cf, Condition, Mutation};
use kura_metashard::keys::{self, NULL_VERSION};
use kura_proto::meta::{BucketVersioning, ObjectRecord};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::context::Ctx;
use crate::data::gc;
use crate::error::{GwError, GwResult};
use crate::meta::{self, now_ms, RMW_ATTEMPTS};
use crate::s3::common::{
    etag, load_bucket, maybe_encode, owner, s3_class_name, timestamp, update_bucket,
    wants_url_encoding,
};
use crate::s3::list::{common_prefix, cursor_after, max_entries, MAX_PAGE};
use crate::s3::put::WritePrecondition;
use crate::usage::{self, DeltaId, Scope, Usage};

/// A bucket's versioning state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Versioning {
    /// Never versioned: only null versions, no version headers.
    #[default]
    Unversioned,
    Enabled,
    Suspended,
}

impl Versioning {
    pub fn of(bucket: &kura_proto::meta::BucketRecord) -> Versioning {
        match BucketVersioning::try_from(bucket.versioning) {
            Ok(BucketVersioning::Enabled) => Versioning::Enabled,
            Ok(BucketVersioning::Suspended) => Versioning::Suspended,
            // A value from a newer gateway is treated as Suspended: it keeps
            // other versions and never invents ids.
            Ok(BucketVersioning::Unversioned) => Versioning::Unversioned,
            Err(_) => Versioning::Suspended,
        }
    }

    /// Whether responses carry `x-amz-version-id` (every bucket that was
    /// ever versioned, as S3).
    pub fn reports_versions(self) -> bool {
        self != Versioning::Unversioned
    }
}

/// A version named by a request's `versionId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionRef {
    Null,
    Id(u64),
}

/// Version ids are 16 lowercase hex digits of the (non-zero) version number.
pub fn format_version(v: u64) -> String {
    format!("{v:016x}")
}

pub fn parse_version_id(s: &str) -> GwResult<VersionRef> {
    if s == "null" {
        return Ok(VersionRef::Null);
    }
    let bad = || GwError::InvalidArgument("Invalid version id specified".into());
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    match u64::from_str_radix(s, 16) {
        Ok(v) if v != NULL_VERSION => Ok(VersionRef::Id(v)),
        _ => Err(bad()),
    }
}

/// The optional `versionId` of a request.
pub fn parse_version_param(s: Option<&str>) -> GwResult<Option<VersionRef>> {
    s.map(parse_version_id).transpose()
}

/// The version number for a new version of a key whose newest existing
/// version is `newest` (`None`: no version but possibly the null slot):
/// `now_ms << 16 | random16` (sortable by time, unlikely to collide between
/// gateways; a collision fails the batch's NOT_EXISTS and retries), raised
/// above `newest` when the clock lags its writer, so the new version is the
/// latest whatever the clocks say. Never the null slot's number.
pub fn version_id_after(now_ms: u64, newest: Option<u64>) -> u64 {
    version_from(now_ms, newest, rand::random::<u16>())
}

/// [`version_id_after`] with its randomness given.
fn version_from(now_ms: u64, newest: Option<u64>, rand16: u16) -> u64 {
    // Keeps the shift from overflowing whatever the clock (or a test's
    // offset) says; real clocks are far below 2^48 ms.
    let clock = ((now_ms & ((1 << 48) - 1)) << 16) | u64::from(rand16);
    let floor = newest.unwrap_or(NULL_VERSION);
    if clock > floor {
        clock
    } else {
        // Just past the newest: spread by the random bits' low byte so two
        // lagging writers racing for the same key rarely pick the same id.
        floor.saturating_add(1 + u64::from(rand16 & 0xff))
    }
}

/// A version number above `latest` (the newest existing version, or the
/// null slot's 0) from this gateway's clock.
pub fn new_version(latest: u64) -> u64 {
    version_id_after(
        crate::meta::skewed_now_ms(),
        (latest != NULL_VERSION).then_some(latest),
    )
}

/// A version record as stored, with the version its key names.
#[derive(Clone, Debug)]
pub struct Stored {
    pub version: u64,
    pub raw: Bytes,
    pub record: ObjectRecord,
}

impl Stored {
    /// The null slot holding only a pointer to the null version.
    pub fn is_anchor(&self) -> bool {
        self.version == NULL_VERSION && self.record.null_moved_to != NULL_VERSION
    }

    pub fn is_null(&self) -> bool {
        self.version == NULL_VERSION || self.record.null_version
    }

    pub fn is_delete_marker(&self) -> bool {
        self.record.delete_marker
    }

    pub fn version_id(&self) -> String {
        if self.is_null() {
            "null".to_string()
        } else {
            format_version(self.version)
        }
    }

    pub fn meta_key(&self) -> Vec<u8> {
        keys::object_version_key(
            self.record.bucket_id,
            self.record.key.as_bytes(),
            self.version,
        )
    }

    fn usage(&self) -> Usage {
        if self.is_anchor() || self.is_delete_marker() {
            Usage::default()
        } else {
            Usage {
                bytes: self.record.size as i64,
                objects: 1,
            }
        }
    }
}

fn decode_stored(raw_key: &[u8], raw: Bytes) -> GwResult<Stored> {
    let version = keys::decode_object_key(raw_key)
        .and_then(|p| keys::decode_version(&p.suffix))
        .ok_or_else(|| GwError::Internal("unreadable object version key".into()))?;
    let record = keys::decode_value(&raw)?;
    Ok(Stored {
        version,
        raw,
        record,
    })
}

/// The record at version key `v` of an object.
pub async fn get_version(ctx: &Ctx, bucket_id: u64, key: &str, v: u64) -> GwResult<Option<Stored>> {
    let k = keys::object_version_key(bucket_id, key.as_bytes(), v);
    Ok(ctx
        .meta
        .get::<ObjectRecord>(Cf::Meta, &k)
        .await?
        .map(|r| Stored {
            version: v,
            raw: r.raw,
            record: r.record,
        }))
}

/// The first `limit` version keys of an object, newest first (one seek).
async fn first_versions(
    ctx: &Ctx,
    bucket_id: u64,
    key: &str,
    limit: usize,
) -> GwResult<Vec<Stored>> {
    let (start, end) = keys::object_versions_range(bucket_id, key.as_bytes());
    ctx.meta
        .scan(Cf::Meta, &start, &end, limit, false)
        .await?
        .into_iter()
        .map(|kv| decode_stored(&kv.key, kv.value))
        .collect()
}

/// The null slot of an object and, when it is an anchor, its target.
#[derive(Clone, Debug, Default)]
pub struct NullSlot {
    pub slot: Option<Stored>,
    pub target: Option<Stored>,
}

impl NullSlot {
    /// The null version, wherever it sits.
    pub fn version(&self) -> Option<&Stored> {
        match &self.slot {
            Some(s) if s.is_anchor() => self.target.as_ref(),
            other => other.as_ref(),
        }
    }
}

pub async fn null_slot(ctx: &Ctx, bucket_id: u64, key: &str) -> GwResult<NullSlot> {
    let slot = get_version(ctx, bucket_id, key, NULL_VERSION).await?;
    let target = match &slot {
        Some(s) if s.is_anchor() => get_version(ctx, bucket_id, key, s.record.null_moved_to)
            .await?
            .filter(|t| t.record.null_version),
        _ => None,
    };
    Ok(NullSlot { slot, target })
}

/// The latest version of an object (possibly a delete marker).
pub async fn latest(
    ctx: &Ctx,
    versioning: Versioning,
    bucket_id: u64,
    key: &str,
) -> GwResult<Option<Stored>> {
    if versioning == Versioning::Unversioned {
        // Only the null slot can exist: one point read.
        return get_version(ctx, bucket_id, key, NULL_VERSION).await;
    }
    match first_versions(ctx, bucket_id, key, 1)
        .await?
        .into_iter()
        .next()
    {
        // An anchor never sorts first while its target exists.
        Some(s) if s.is_anchor() => Ok(null_slot(ctx, bucket_id, key).await?.version().cloned()),
        other => Ok(other),
    }
}

/// The version a `versionId` names.
pub async fn by_ref(
    ctx: &Ctx,
    bucket_id: u64,
    key: &str,
    r: VersionRef,
) -> GwResult<Option<Stored>> {
    match r {
        VersionRef::Null => Ok(null_slot(ctx, bucket_id, key).await?.version().cloned()),
        VersionRef::Id(v) => Ok(get_version(ctx, bucket_id, key, v).await?),
    }
}

/// What a read of "the object" (`versionId` or the latest) found, already
/// checked: NoSuchKey / NoSuchVersion, and the delete-marker answers.
pub async fn resolve(
    ctx: &Ctx,
    versioning: Versioning,
    bucket_id: u64,
    key: &str,
    r: Option<VersionRef>,
) -> GwResult<Option<Stored>> {
    match r {
        None => latest(ctx, versioning, bucket_id, key).await,
        Some(r) => by_ref(ctx, bucket_id, key, r).await,
    }
}

/// Turns a resolved version into the object to serve, or S3's error.
pub fn readable(
    found: Option<Stored>,
    asked: Option<VersionRef>,
    versioning: Versioning,
) -> GwResult<Stored> {
    match (found, asked) {
        (None, Some(VersionRef::Id(_))) => Err(GwError::NoSuchVersion),
        (None, _) => Err(GwError::NoSuchKey),
        (Some(dm), None) if dm.is_delete_marker() => Err(GwError::DeleteMarkerIsLatest {
            version_id: versioning.reports_versions().then(|| dm.version_id()),
        }),
        (Some(dm), Some(_)) if dm.is_delete_marker() => Err(GwError::DeleteMarkerNotReadable {
            version_id: dm.version_id(),
        }),
        (Some(s), _) => Ok(s),
    }
}

/// The `x-amz-version-id` to report for a version.
pub fn reported_id(versioning: Versioning, s: &Stored) -> Option<String> {
    versioning.reports_versions().then(|| s.version_id())
}

/// The version a request addresses (`versionId`'s, else the latest) as
/// GetObject finds it — NoSuchKey, NoSuchVersion and a delete marker's
/// answers included — after the object half of the access check (readable
/// through its own ACL if not through the bucket's); with the
/// `x-amz-version-id` to report.
pub async fn load_addressed(
    ctx: &Ctx,
    ext: &http::Extensions,
    key: &str,
    version_id: Option<&str>,
) -> GwResult<(Stored, Option<String>)> {
    crate::s3::common::check_key(key)?;
    let asked = parse_version_param(version_id)?;
    let auth = crate::authz::Authorized::of(ext)?;
    let bucket = auth.bucket()?.record;
    let mode = Versioning::of(&bucket);
    let found = resolve(ctx, mode, bucket.id, key, asked).await?;
    auth.check_object(
        found
            .as_ref()
            .filter(|s| !s.is_delete_marker())
            .map(|s| &s.record),
    )?;
    let stored = readable(found, asked, mode)?;
    let reported = reported_id(mode, &stored);
    Ok((stored, reported))
}

/// A new delete marker for `key`, stamped now (its version is chosen at commit).
pub fn delete_marker(bucket_id: u64, key: &str) -> ObjectRecord {
    ObjectRecord {
        bucket_id,
        key: key.to_string(),
        delete_marker: true,
        last_modified_unix_ms: now_ms(),
        ..Default::default()
    }
}

/// How a commit ended when it did not fail outright.
#[derive(Debug)]
pub enum CommitOutcome {
    /// The version id to report (none in a never-versioned bucket).
    Committed { version_id: Option<String> },
    /// The caller's extra condition number `i` failed (e.g. the upload vanished).
    ExtraConditionFailed(usize),
}

impl CommitOutcome {
    /// The version id to report, for callers that pass no extra condition.
    pub fn version_id(self) -> Option<String> {
        match self {
            CommitOutcome::Committed { version_id } => version_id,
            CommitOutcome::ExtraConditionFailed(_) => None,
        }
    }
}

/// One attempt's batch.
struct Plan {
    /// The latest version before the write (for preconditions).
    current: Option<Stored>,
    /// Where the new version goes and what it holds.
    key: Vec<u8>,
    value: Vec<u8>,
    version_id: String,
    conditions: Vec<Condition>,
    mutations: Vec<Mutation>,
    /// The null version this write replaces; its body is reclaimed.
    replaced: Option<Stored>,
}

/// A new real version above the latest (versioning Enabled).
async fn plan_new_version(ctx: &Ctx, key: &str, new: &ObjectRecord) -> GwResult<Plan> {
    let bucket_id = new.bucket_id;
    let latest = latest(ctx, Versioning::Enabled, bucket_id, key).await?;
    let v = new_version(latest.as_ref().map_or(NULL_VERSION, |l| l.version));
    let mut rec = new.clone();
    rec.version = v;
    rec.null_version = false;
    rec.null_moved_to = NULL_VERSION;
    let vkey = keys::object_version_key(bucket_id, key.as_bytes(), v);
    let value = keys::encode_value(&rec);
    let mut conditions = vec![meta::not_exists(Cf::Meta, vkey.clone())];
    if let Some(l) = &latest {
        conditions.push(meta::value_equals(Cf::Meta, l.meta_key(), l.raw.clone()));
    }
    Ok(Plan {
        current: latest,
        mutations: vec![meta::put(Cf::Meta, vkey.clone(), value.clone())],
        key: vkey,
        value,
        version_id: format_version(v),
        conditions,
        replaced: None,
    })
}

/// A new null version replacing the old one (never versioned, or Suspended).
async fn plan_null(
    ctx: &Ctx,
    versioning: Versioning,
    key: &str,
    new: &ObjectRecord,
) -> GwResult<Plan> {
    let bucket_id = new.bucket_id;
    let slot = null_slot(ctx, bucket_id, key).await?;
    let (latest, only_null) = if versioning == Versioning::Unversioned {
        (slot.version().cloned(), true)
    } else {
        // Two keys tell whether anything but the null version exists: the
        // anchor sorts last, right after its target when nothing is older.
        let first = first_versions(ctx, bucket_id, key, 2).await?;
        let only_null = first.iter().all(Stored::is_null);
        let latest = match first.into_iter().next() {
            Some(s) if s.is_anchor() => slot.version().cloned(),
            other => other,
        };
        (latest, only_null)
    };
    Ok(null_plan(key, new, slot, latest, only_null))
}

/// The null-version write of `new` over what was read: its `slot`, the
/// `latest` version, and whether the null version is `only_null` one stored.
/// With nothing read (an empty slot, no latest) it is the blind commit of a
/// new key in an unversioned bucket (`fresh_keys`).
fn null_plan(
    key: &str,
    new: &ObjectRecord,
    slot: NullSlot,
    latest: Option<Stored>,
    only_null: bool,
) -> Plan {
    let bucket_id = new.bucket_id;
    let slot_key = keys::object_version_key(bucket_id, key.as_bytes(), NULL_VERSION);
    let mut conditions = vec![meta::unchanged(
        Cf::Meta,
        slot_key.clone(),
        slot.slot.as_ref().map(|s| &s.raw),
    )];
    if let Some(t) = &slot.target {
        conditions.push(meta::value_equals(Cf::Meta, t.meta_key(), t.raw.clone()));
    }
    let mut mutations = Vec::new();
    let mut rec = new.clone();
    rec.null_moved_to = NULL_VERSION;
    let v = if only_null {
        // Nothing else is stored: the null version sits in its slot (the
        // layout of a never-versioned object).
        rec.version = NULL_VERSION;
        rec.null_version = false;
        NULL_VERSION
    } else {
        // Above the others, so it is the latest; the slot points at it.
        let v = new_version(latest.as_ref().map_or(NULL_VERSION, |l| l.version));
        rec.version = v;
        rec.null_version = true;
        let vkey = keys::object_version_key(bucket_id, key.as_bytes(), v);
        conditions.push(meta::not_exists(Cf::Meta, vkey));
        if let Some(l) = latest.as_ref().filter(|l| !l.is_null()) {
            conditions.push(meta::value_equals(Cf::Meta, l.meta_key(), l.raw.clone()));
        }
        let anchor = ObjectRecord {
            bucket_id,
            key: key.to_string(),
            null_moved_to: v,
            ..Default::default()
        };
        mutations.push(meta::put_record(Cf::Meta, slot_key, &anchor));
        v
    };
    let vkey = keys::object_version_key(bucket_id, key.as_bytes(), v);
    let value = keys::encode_value(&rec);
    mutations.push(meta::put(Cf::Meta, vkey.clone(), value.clone()));
    if let Some(t) = slot.target.as_ref().filter(|t| t.version != v) {
        mutations.push(meta::delete(Cf::Meta, t.meta_key()));
    }
    Plan {
        current: latest,
        key: vkey,
        value,
        version_id: "null".into(),
        conditions,
        mutations,
        replaced: slot.version().cloned(),
    }
}

/// Commits `new` (an object version or a delete marker) as the latest
/// version of `key` the way the bucket's versioning says, with the caller's
/// extra conditions and mutations (multipart completion), and counts the
/// change in the bucket's usage. `pre` is checked against the latest
/// version (a delete marker counts as no object).
#[allow(clippy::too_many_arguments)]
pub async fn commit(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    key: &str,
    new: &ObjectRecord,
    pre: &WritePrecondition,
    delta_id: &DeltaId,
    extra_conditions: Vec<Condition>,
    extra_mutations: Vec<Mutation>,
) -> GwResult<CommitOutcome> {
    let bucket_id = scope.bucket_id;
    let mut new = new.clone();
    new.bucket_id = bucket_id;
    new.key = key.to_string();
    let added = Stored {
        version: 1,
        raw: Bytes::new(),
        record: new.clone(),
    }
    .usage();
    // A new key in an unversioned bucket whose PUTs mostly create keys:
    // commit first, read only if the key turns out to exist (decision 0053).
    let fresh = scope.versioning == Versioning::Unversioned;
    let went_blind = fresh && pre.if_match.is_none() && ctx.fresh_keys.go_blind(bucket_id);
    for attempt in 0..RMW_ATTEMPTS + usize::from(went_blind) {
        let this_blind = went_blind && attempt == 0;
        let plan = match scope.versioning {
            Versioning::Enabled => plan_new_version(ctx, key, &new).await?,
            _ if this_blind => null_plan(key, &new, NullSlot::default(), None, true),
            v => plan_null(ctx, v, key, &new).await?,
        };
        if fresh && !went_blind && attempt == 0 {
            // Each PUT scores once: here, or by its blind attempt's outcome.
            ctx.fresh_keys.note(bucket_id, plan.current.is_none());
        }
        pre.check(
            plan.current
                .as_ref()
                .filter(|c| !c.is_delete_marker())
                .map(|c| &c.record),
        )?;
        if let Some(old) = &plan.replaced {
            // A null version is replaced only outside lock buckets (their
            // versioning stays Enabled); a lock on it still wins.
            crate::s3::object_lock::check_deletable(&old.record, now_ms(), false)?;
        }
        let old_locs = plan
            .replaced
            .as_ref()
            .map(|o| gc::object_locations(&o.record))
            .unwrap_or_default();
        let base = plan.conditions.len();
        let mut conditions = plan.conditions;
        conditions.extend(extra_conditions.iter().cloned());
        let mut mutations = plan.mutations;
        mutations.extend(gc::gc_mutations(bucket_id, key, &old_locs));
        mutations.extend(extra_mutations.iter().cloned());
        // Exact usage: the delta commits with the change, or not at all.
        // Every stored version counts; only a replaced null version leaves.
        let mut change = added;
        if let Some(old) = &plan.replaced {
            change.sub(old.usage());
        }
        mutations.extend(usage::delta_mutation(scope, key, change, delta_id));
        let applied = match ctx.meta.batch(conditions, mutations).await? {
            BatchOutcome::Applied => true,
            // Our own earlier attempt may have applied (see `Meta::holds`).
            BatchOutcome::ConditionFailed { .. }
                if ctx.meta.holds(Cf::Meta, &plan.key, &plan.value).await? =>
            {
                true
            }
            BatchOutcome::ConditionFailed { index } if (index as usize) < base => {
                tracing::debug!(attempt, "object changed during commit; retrying");
                false
            }
            BatchOutcome::ConditionFailed { index } => {
                return Ok(CommitOutcome::ExtraConditionFailed(index as usize - base))
            }
        };
        if this_blind {
            ctx.fresh_keys.note(bucket_id, applied);
            crate::metrics::blind_put(applied);
        }
        if applied {
            ctx.folder.note(bucket_id);
            ctx.quotas.note_commit(scope, change);
            gc::spawn_reclaim(ctx.clone(), bucket_id, key.to_string(), old_locs);
            // Stands only if the bucket was not deleted meanwhile (decision 0033).
            crate::s3::bucket::confirm_commit(ctx, scope, key, &plan.key, &plan.value).await?;
            return Ok(CommitOutcome::Committed {
                version_id: scope
                    .versioning
                    .reports_versions()
                    .then_some(plan.version_id),
            });
        }
    }
    Err(GwError::Contention(
        "too many concurrent writes to one key".into(),
    ))
}

/// What a delete did, for its response headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    /// `x-amz-version-id`: the marker created, or the version deleted.
    pub version_id: Option<String>,
    /// `x-amz-delete-marker`: a marker was created, or the deleted version was one.
    pub delete_marker: bool,
}

/// DeleteObject without a version id: removes the null version in a
/// never-versioned bucket, otherwise puts a delete marker on top (Suspended:
/// as the null version, replacing the old one).
pub async fn delete_latest(ctx: &Arc<Ctx>, scope: &Scope, key: &str) -> GwResult<Deleted> {
    delete_latest_if(ctx, scope, key, &WritePrecondition::default()).await
}

/// [`delete_latest`] if the latest version passes `pre` (DeleteObject's
/// `If-Match`, decision 0033), checked in the same read-modify-write: a
/// missing key or a delete marker → NoSuchKey, another ETag → 412.
pub async fn delete_latest_if(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    key: &str,
    pre: &WritePrecondition,
) -> GwResult<Deleted> {
    if scope.versioning == Versioning::Unversioned {
        delete_version_if(
            ctx,
            scope,
            key,
            VersionRef::Null,
            DeleteOptions::default(),
            pre,
        )
        .await?;
        return Ok(Deleted::default());
    }
    let marker = delete_marker(scope.bucket_id, key);
    let delta_id = usage::new_delta_id();
    match commit(
        ctx,
        scope,
        key,
        &marker,
        pre,
        &delta_id,
        Vec::new(),
        Vec::new(),
    )
    .await?
    {
        CommitOutcome::Committed { version_id } => Ok(Deleted {
            version_id,
            delete_marker: true,
        }),
        CommitOutcome::ExtraConditionFailed(_) => Err(GwError::Internal(
            "delete marker without extra conditions".into(),
        )),
    }
}

/// What a delete by version id may override (docs/decisions/0031).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// The request sent `x-amz-bypass-governance-retention: true` and its
    /// caller holds `s3:BypassGovernanceRetention`: GOVERNANCE retention
    /// gives way (COMPLIANCE and legal holds never do).
    pub bypass_governance: bool,
}

/// Deletes one version for good (its body is reclaimed), unless object lock
/// protects it: `GwError::ObjectLocked` (403), nothing changed. Deleting a
/// version that does not exist succeeds, as S3. Lifecycle calls this: locks
/// always win over it.
pub async fn delete_version(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    key: &str,
    r: VersionRef,
) -> GwResult<Deleted> {
    delete_version_with(ctx, scope, key, r, DeleteOptions::default()).await
}

/// [`delete_version`] with what the request may override.
pub async fn delete_version_with(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    key: &str,
    r: VersionRef,
    opts: DeleteOptions,
) -> GwResult<Deleted> {
    delete_version_if(ctx, scope, key, r, opts, &WritePrecondition::default()).await
}

/// [`delete_version_with`] if the version passes `pre` (`If-Match`,
/// decision 0033): a missing version or a delete marker → NoSuchKey.
pub async fn delete_version_if(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    key: &str,
    r: VersionRef,
    opts: DeleteOptions,
    pre: &WritePrecondition,
) -> GwResult<Deleted> {
    let delta_id = usage::new_delta_id();
    for _ in 0..RMW_ATTEMPTS {
        let mut plan = match plan_version_delete(ctx, scope, key, r, opts, pre).await? {
            DeletePlan::Nothing(done) => return Ok(done),
            DeletePlan::Commit(plan) => plan,
        };
        let conditions = std::mem::take(&mut plan.conditions);
        let mut mutations = std::mem::take(&mut plan.mutations);
        mutations.extend(usage::delta_mutation(scope, key, plan.change, &delta_id));
        match ctx.meta.batch(conditions, mutations).await? {
            BatchOutcome::Applied => return Ok(plan.applied(ctx, scope)),
            BatchOutcome::ConditionFailed { .. } => {
                // Either our own earlier attempt applied (then its GC
                // records are in and the sweeper reclaims the body; the next
                // read finds the version gone) or another writer changed the
                // version — a tag, ACL or lock update, an overwrite of the
                // null version — and the body may still be referenced, maybe
                // now held by a lock: never reclaim here, read again.
            }
        }
    }
    Err(GwError::Contention(
        "too many concurrent writes to one key".into(),
    ))
}

/// What deleting one version comes to, once read and checked.
pub enum DeletePlan {
    /// Nothing to delete (the version does not exist): the answer as is.
    Nothing(Deleted),
    /// A batch to commit.
    Commit(PlannedDelete),
}

/// A version delete read and checked (object lock, `If-Match`), not yet
/// committed: alone by [`delete_version_if`], or in one batch with other
/// keys of its region by DeleteObjects (`s3::delete`). The batch is
/// conditioned on every record read, so a concurrent change fails it.
pub struct PlannedDelete {
    /// The version's meta key (batches of several keys go in its order).
    pub meta_key: Vec<u8>,
    pub conditions: Vec<Condition>,
    /// The deletes and GC records, without the usage delta (a batch of
    /// several keys writes one delta for all of them).
    pub mutations: Vec<Mutation>,
    /// Usage change of this delete.
    pub change: Usage,
    key: String,
    locs: Vec<kura_proto::meta::DataLocation>,
    done: Deleted,
}

impl PlannedDelete {
    /// The object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// About what it adds to a batch, in bytes.
    pub fn encoded_len(&self) -> usize {
        use prost::Message;
        let c: usize = self.conditions.iter().map(|c| c.encoded_len()).sum();
        c + self
            .mutations
            .iter()
            .map(|m| m.encoded_len())
            .sum::<usize>()
    }

    /// After its batch applied: usage noted, body reclaimed, the answer.
    pub fn applied(self, ctx: &Arc<Ctx>, scope: &Scope) -> Deleted {
        ctx.folder.note(scope.bucket_id);
        ctx.quotas.note_commit(scope, self.change);
        gc::spawn_reclaim(ctx.clone(), scope.bucket_id, self.key, self.locs);
        self.done
    }
}

/// Reads the version `r` names (and, for a null version above others, its
/// anchor), checks `pre` and object lock, and returns the batch that deletes
/// it for good.
pub async fn plan_version_delete(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    key: &str,
    r: VersionRef,
    opts: DeleteOptions,
    pre: &WritePrecondition,
) -> GwResult<DeletePlan> {
    let bucket_id = scope.bucket_id;
    let reported = scope.versioning.reports_versions().then(|| match r {
        VersionRef::Null => "null".to_string(),
        VersionRef::Id(v) => format_version(v),
    });
    let nothing = || {
        pre.check(None)?;
        Ok(DeletePlan::Nothing(Deleted {
            version_id: reported.clone(),
            delete_marker: false,
        }))
    };
    // The version and, for a null version above others, its anchor.
    let (target, anchor) = match r {
        VersionRef::Null => {
            let slot = null_slot(ctx, bucket_id, key).await?;
            match (slot.slot, slot.target) {
                (Some(a), Some(t)) if a.is_anchor() => (t, Some(a)),
                // An anchor whose target is gone: drop it.
                (Some(a), None) if a.is_anchor() => (a, None),
                (Some(s), _) => (s, None),
                (None, _) => return nothing(),
            }
        }
        VersionRef::Id(v) => {
            let Some(t) = get_version(ctx, bucket_id, key, v).await? else {
                return nothing();
            };
            let anchor = if t.record.null_version {
                get_version(ctx, bucket_id, key, NULL_VERSION)
                    .await?
                    .filter(|a| a.is_anchor() && a.record.null_moved_to == v)
            } else {
                None
            };
            (t, anchor)
        }
    };
    // In the batch's read: a concurrent overwrite fails it, and we read again.
    let object = !target.is_delete_marker() && !target.is_anchor();
    pre.check(Some(&target.record).filter(|_| object))?;
    // The lock read here is part of the record the batch is conditioned
    // on: a racing retention / legal hold change fails it.
    crate::s3::object_lock::check_deletable(&target.record, now_ms(), opts.bypass_governance)?;
    let locs = gc::object_locations(&target.record);
    let meta_key = target.meta_key();
    let mut conditions = vec![meta::value_equals(
        Cf::Meta,
        meta_key.clone(),
        target.raw.clone(),
    )];
    let mut mutations = vec![meta::delete(Cf::Meta, meta_key.clone())];
    if let Some(a) = &anchor {
        conditions.push(meta::value_equals(Cf::Meta, a.meta_key(), a.raw.clone()));
        mutations.push(meta::delete(Cf::Meta, a.meta_key()));
    }
    mutations.extend(gc::gc_mutations(bucket_id, key, &locs));
    let mut change = Usage::default();
    change.sub(target.usage());
    Ok(DeletePlan::Commit(PlannedDelete {
        meta_key,
        conditions,
        mutations,
        change,
        key: key.to_string(),
        locs,
        done: Deleted {
            version_id: reported,
            delete_marker: target.is_delete_marker(),
        },
    }))
}

// --- bucket configuration

pub async fn put_bucket_versioning(
    ctx: &Arc<Ctx>,
    req: S3Request<PutBucketVersioningInput>,
) -> GwResult<S3Response<PutBucketVersioningOutput>> {
    let cfg = &req.input.versioning_configuration;
    let mfa_enabled = cfg
        .mfa_delete
        .as_ref()
        .is_some_and(|m| m.as_str() == MFADelete::ENABLED);
    if mfa_enabled || req.input.mfa.is_some() {
        return Err(GwError::NotImplemented("MFA delete"));
    }
    if let Some(m) = &cfg.mfa_delete {
        if m.as_str() != MFADelete::DISABLED {
            return Err(GwError::MalformedXml(
                "MfaDelete must be Enabled or Disabled".into(),
            ));
        }
    }
    let state = match cfg.status.as_ref().map(|s| s.as_str()) {
        Some(BucketVersioningStatus::ENABLED) => BucketVersioning::Enabled,
        Some(BucketVersioningStatus::SUSPENDED) => BucketVersioning::Suspended,
        _ => {
            return Err(GwError::MalformedXml(
                "The XML you provided was not well-formed or did not validate against our published schema".into(),
            ))
        }
    };
    load_bucket(&req.extensions)?;
    update_bucket(ctx, &req.extensions, |rec| {
        // Checked on the record replaced, so it cannot race PutObjectLockConfiguration.
        crate::s3::object_lock::check_versioning_change(rec, state == BucketVersioning::Suspended)?;
        rec.versioning = state as i32;
        Ok(())
    })
    .await?;
    Ok(S3Response::new(PutBucketVersioningOutput::default()))
}

pub async fn get_bucket_versioning(
    _ctx: &Arc<Ctx>,
    req: S3Request<GetBucketVersioningInput>,
) -> GwResult<S3Response<GetBucketVersioningOutput>> {
    let bucket = load_bucket(&req.extensions)?;
    let status = match Versioning::of(&bucket.record) {
        // Never versioned: S3 answers with an empty configuration.
        Versioning::Unversioned => None,
        Versioning::Enabled => Some(BucketVersioningStatus::from_static(
            BucketVersioningStatus::ENABLED,
        )),
        Versioning::Suspended => Some(BucketVersioningStatus::from_static(
            BucketVersioningStatus::SUSPENDED,
        )),
    };
    Ok(S3Response::new(GetBucketVersioningOutput {
        status,
        ..Default::default()
    }))
}

// --- ListObjectVersions

/// The smallest key strictly after `raw`.
fn successor(raw: &[u8]) -> Vec<u8> {
    let mut v = raw.to_vec();
    v.push(0);
    v
}

enum VersionEntry {
    Version {
        key: String,
        stored: Box<Stored>,
        is_latest: bool,
    },
    Prefix(String),
}

pub async fn list_object_versions(
    ctx: &Arc<Ctx>,
    req: S3Request<ListObjectVersionsInput>,
) -> GwResult<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    let url = wants_url_encoding(input.encoding_type.as_ref())?;
    let max = max_entries(input.max_keys, "max-keys")?;
    let bucket = load_bucket(&req.extensions)?;
    let bucket_id = bucket.record.id;
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.clone().unwrap_or_default();
    let key_marker = input.key_marker.clone().unwrap_or_default();
    let vid_marker = input
        .version_id_marker
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(parse_version_id)
        .transpose()?;
    if vid_marker.is_some() && key_marker.is_empty() {
        return Err(GwError::InvalidArgument(
            "A version-id marker cannot be specified without a key marker.".into(),
        ));
    }
    let (range_start, end) = keys::object_range(bucket_id, prefix.as_bytes());
    let mut cursor = match (key_marker.is_empty(), vid_marker) {
        (true, _) => range_start.clone(),
        (false, None) => cursor_after(bucket_id, &prefix, &delimiter, &key_marker),
        (false, Some(VersionRef::Id(v))) => successor(&keys::object_version_key(
            bucket_id,
            key_marker.as_bytes(),
            v,
        )),
        (false, Some(VersionRef::Null)) => {
            match null_slot(ctx, bucket_id, &key_marker).await?.target {
                // The null version sits above older ones: resume after it.
                Some(t) => successor(&t.meta_key()),
                None => keys::object_seek_after_key(bucket_id, key_marker.as_bytes()),
            }
        }
    };
    cursor = cursor.max(range_start);
    let rollup = keys::Rollup::new(prefix.as_bytes(), delimiter.as_bytes());
    // The key of the version seen last: the next one of the same key is not the latest.
    let mut prev_key: Option<String> = vid_marker.map(|_| key_marker.clone());
    let mut entries: Vec<VersionEntry> = Vec::new();
    let mut truncated = false;
    'scan: while max > 0 && cursor < end {
        let want = (max - entries.len() + 1).clamp(1, MAX_PAGE);
        // Every version is listed, delete markers too: the first key under
        // a common prefix always makes it listed, so the stores roll them up.
        let page = ctx
            .meta
            .scan_listing(Cf::Meta, &cursor, &end, want, false, rollup.as_ref())
            .await?;
        let full = page.len() >= want;
        for kv in page {
            if kv.key.as_ref() < cursor.as_slice() {
                continue;
            }
            let Some(parts) = keys::decode_object_key(&kv.key) else {
                cursor = successor(&kv.key);
                continue;
            };
            if parts.bucket_id != bucket_id {
                break 'scan;
            }
            let key = String::from_utf8_lossy(&parts.key).into_owned();
            if let Some(cp) = common_prefix(&key, &prefix, &delimiter) {
                if entries.len() == max {
                    truncated = true;
                    break 'scan;
                }
                cursor = keys::object_seek_after_prefix(bucket_id, cp.as_bytes());
                entries.push(VersionEntry::Prefix(cp.to_string()));
                prev_key = None;
                continue;
            }
            cursor = successor(&kv.key);
            let stored = decode_stored(&kv.key, kv.value)?;
            if stored.is_anchor() {
                continue;
            }
            if entries.len() == max {
                truncated = true;
                break 'scan;
            }
            let is_latest = prev_key.as_deref() != Some(key.as_str());
            prev_key = Some(key.clone());
            entries.push(VersionEntry::Version {
                key,
                stored: Box::new(stored),
                is_latest,
            });
        }
        if !full {
            break;
        }
    }
    let (next_key_marker, next_version_id_marker) = match (truncated, entries.last()) {
        (true, Some(VersionEntry::Version { key, stored, .. })) => {
            (Some(maybe_encode(key, url)), Some(stored.version_id()))
        }
        (true, Some(VersionEntry::Prefix(p))) => (Some(maybe_encode(p, url)), None),
        _ => (None, None),
    };
    let mut versions = Vec::new();
    let mut markers = Vec::new();
    let mut prefixes = Vec::new();
    for e in entries {
        match e {
            VersionEntry::Prefix(p) => prefixes.push(CommonPrefix {
                prefix: Some(maybe_encode(&p, url)),
            }),
            VersionEntry::Version {
                key,
                stored,
                is_latest,
            } => {
                let rec = &stored.record;
                let owner_id = rec
                    .acl
                    .as_ref()
                    .map(|a| a.owner.as_str())
                    .filter(|o| !o.is_empty())
                    .unwrap_or(bucket.record.owner.as_str());
                if stored.is_delete_marker() {
                    markers.push(DeleteMarkerEntry {
                        is_latest: Some(is_latest),
                        key: Some(maybe_encode(&key, url)),
                        last_modified: Some(timestamp(rec.last_modified_unix_ms)),
                        owner: Some(owner(owner_id)),
                        version_id: Some(stored.version_id()),
                    });
                } else {
                    versions.push(ObjectVersion {
                        e_tag: Some(etag(&rec.etag)),
                        is_latest: Some(is_latest),
                        key: Some(maybe_encode(&key, url)),
                        last_modified: Some(timestamp(rec.last_modified_unix_ms)),
                        owner: Some(owner(owner_id)),
                        size: Some(rec.size as i64),
                        storage_class: Some(ObjectVersionStorageClass::from(
                            s3_class_name(rec.storage_class).to_string(),
                        )),
                        version_id: Some(stored.version_id()),
                        ..Default::default()
                    });
                }
            }
        }
    }
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(input.bucket),
        prefix: Some(maybe_encode(&prefix, url)),
        key_marker: Some(maybe_encode(&key_marker, url)),
        version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
        max_keys: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker,
        next_version_id_marker,
        delimiter: (!delimiter.is_empty()).then(|| maybe_encode(&delimiter, url)),
        encoding_type: input.encoding_type,
        versions: Some(versions),
        delete_markers: Some(markers),
        common_prefixes: Some(prefixes),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_roundtrip_and_refuse_garbage() {
        for v in [1u64, 0x1234, u64::MAX] {
            assert_eq!(
                parse_version_id(&format_version(v)).unwrap(),
                VersionRef::Id(v)
            );
        }
        assert_eq!(parse_version_id("null").unwrap(), VersionRef::Null);
        for bad in [
            "",
            "0000000000000000",
            "xyz",
            "123",
            "00000000000000001",
            "+000000000000001",
        ] {
            assert!(
                matches!(parse_version_id(bad), Err(GwError::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn new_versions_pass_the_latest_even_with_a_lagging_clock() {
        let now = new_version(0);
        assert!(now > 0);
        // A writer whose clock ran an hour ahead wrote the latest.
        let ahead = now + (3_600_000u64 << 16);
        for _ in 0..100 {
            assert!(new_version(ahead) > ahead);
        }
        // Ids sort by time when clocks agree.
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(new_version(0) > now);
    }

    #[test]
    fn version_ids_follow_the_clock_when_it_is_ahead() {
        let ms = 1_780_000_000_000u64;
        assert_eq!(version_from(ms, None, 7), (ms << 16) | 7);
        let older = (ms - 1) << 16 | 0xffff;
        assert_eq!(version_from(ms, Some(older), 0), ms << 16);
        // Without any version the clock alone decides (never the null slot).
        assert!(version_from(0, None, 0) > NULL_VERSION);
    }

    #[test]
    fn version_ids_never_go_back_or_repeat() {
        let ms = 1_780_000_000_000u64;
        // Same millisecond, same or smaller random bits: the newest (say
        // written just before a delete of a later one) is passed.
        let newest = (ms << 16) | 0x8000;
        for r in [0u16, 0x7fff, 0x8000, 0xffff] {
            let v = version_from(ms, Some(newest), r);
            assert!(v > newest, "{r:#x}: {v:#x}");
        }
        // A clock an hour behind (or stepped back) still lands above.
        let behind = ms - 3_600_000;
        for r in [0u16, 1, 0xff, 0x100, 0xffff] {
            let v = version_from(behind, Some(newest), r);
            assert!(v > newest && v - newest <= 256, "{r:#x}: {v:#x}");
        }
        // A chain of lagging writers stays strictly increasing.
        let mut last = newest;
        for i in 0..1000u32 {
            let v = version_id_after(behind, Some(last));
            assert!(v > last, "step {i}");
            last = v;
        }
        // The top of the range saturates instead of wrapping to the null slot
        // (the batch's NOT_EXISTS then refuses it).
        assert_eq!(version_from(ms, Some(u64::MAX), 3), u64::MAX);
        // Absurd clocks do not overflow the shift.
        assert!(version_from(u64::MAX, None, 1) > NULL_VERSION);
    }

    #[test]
    fn null_slot_and_anchor() {
        let rec = |null_moved_to, null_version| ObjectRecord {
            null_moved_to,
            null_version,
            ..Default::default()
        };
        let s = |version, r| Stored {
            version,
            raw: Bytes::new(),
            record: r,
        };
        let legacy = s(0, rec(0, false));
        assert!(legacy.is_null() && !legacy.is_anchor());
        assert_eq!(legacy.version_id(), "null");
        let anchor = s(0, rec(9, false));
        assert!(anchor.is_anchor() && anchor.is_null());
        assert_eq!(anchor.usage(), Usage::default());
        let moved = s(9, rec(0, true));
        assert!(moved.is_null() && !moved.is_anchor());
        assert_eq!(moved.version_id(), "null");
        let real = s(9, rec(0, false));
        assert_eq!(real.version_id(), "0000000000000009");
        let slot = NullSlot {
            slot: Some(anchor),
            target: Some(moved),
        };
        assert_eq!(slot.version().map(|v| v.version), Some(9));
    }

    #[test]
    fn delete_markers_answer_as_s3() {
        let dm = Stored {
            version: 5,
            raw: Bytes::new(),
            record: ObjectRecord {
                delete_marker: true,
                ..Default::default()
            },
        };
        assert!(matches!(
            readable(Some(dm.clone()), None, Versioning::Enabled),
            Err(GwError::DeleteMarkerIsLatest { version_id: Some(ref v) }) if v == "0000000000000005"
        ));
        assert!(matches!(
            readable(Some(dm), Some(VersionRef::Id(5)), Versioning::Enabled),
            Err(GwError::DeleteMarkerNotReadable { .. })
        ));
        assert!(matches!(
            readable(None, Some(VersionRef::Id(5)), Versioning::Enabled),
            Err(GwError::NoSuchVersion)
        ));
        assert!(matches!(
            readable(None, None, Versioning::Enabled),
            Err(GwError::NoSuchKey)
        ));
    }
}
