//! S3 Object Lock / WORM (docs/decisions/0031): Put/GetObjectLockConfiguration,
//! Put/GetObjectRetention, Put/GetObjectLegalHold, and the rules the writes
//! and deletes of the other files apply.
//!
//! A version's lock (`ObjectRecord.object_lock`: a retention mode and date,
//! and a legal hold) lives in the version's own record. Every change to it is
//! a compare-and-set of that record, and every delete by version id
//! (`versioning::delete_version`, also lifecycle's) is one batch conditioned
//! on the very record whose lock it checked ([`check_deletable`]): a racing
//! PutObjectRetention / PutObjectLegalHold either lands before the delete
//! read (and is obeyed) or fails its own condition once the version is gone.
//!
//! Rules, as AWS:
//! - COMPLIANCE: nobody (the root included) deletes the version or shortens
//!   or removes its retention before the date passes; it may be extended.
//! - GOVERNANCE: the same, unless the request says
//!   `x-amz-bypass-governance-retention: true` and the caller holds
//!   `s3:BypassGovernanceRetention` (the owner and admins do).
//! - A legal hold ON blocks deletion whatever the retention; only
//!   PutObjectLegalHold (`s3:PutObjectLegalHold`) removes it.
//! - DELETE without a version id only adds a delete marker: always allowed.
//! - A lock bucket's versioning is Enabled and cannot be Suspended, so a
//!   write never replaces a version.

use std::sync::Arc;

use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::{
    BucketRecord, LegalHoldStatus, LockMode, ObjectLockDefault, ObjectLockState, ObjectRecord,
};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::authz::Authorized;
use crate::context::Ctx;
use crate::error::{GwError, GwResult};
use crate::meta::{now_ms, RMW_ATTEMPTS};
use crate::s3::common::{load_bucket, timestamp, update_bucket};
use crate::s3::versioning::{self, Versioning};

const DAY_MS: i64 = 86_400_000;
/// Longest default retention accepted (AWS allows 100 years).
const MAX_DEFAULT_DAYS: i32 = 36_500;
const MAX_DEFAULT_YEARS: i32 = 100;

fn missing_lock() -> GwError {
    GwError::InvalidRequest("Bucket is missing Object Lock Configuration".into())
}

fn past_date() -> GwError {
    GwError::InvalidArgument("The retain until date must be in the future!".into())
}

fn malformed() -> GwError {
    GwError::MalformedXml(
        "The XML you provided was not well-formed or did not validate against our published schema"
            .into(),
    )
}

fn ms_of(t: &Timestamp) -> i64 {
    let t: time::OffsetDateTime = t.clone().into();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn mode_of(s: &str) -> Option<LockMode> {
    match s {
        ObjectLockRetentionMode::GOVERNANCE => Some(LockMode::Governance),
        ObjectLockRetentionMode::COMPLIANCE => Some(LockMode::Compliance),
        _ => None,
    }
}

fn mode_name(m: LockMode) -> Option<&'static str> {
    match m {
        LockMode::Governance => Some(ObjectLockRetentionMode::GOVERNANCE),
        LockMode::Compliance => Some(ObjectLockRetentionMode::COMPLIANCE),
        LockMode::None => None,
    }
}

fn hold_of(s: &str) -> Option<LegalHoldStatus> {
    match s {
        ObjectLockLegalHoldStatus::ON => Some(LegalHoldStatus::On),
        ObjectLockLegalHoldStatus::OFF => Some(LegalHoldStatus::Off),
        _ => None,
    }
}

/// A stored retention mode; one from a newer gateway counts as COMPLIANCE
/// (the safe reading: it protects).
fn stored_mode(lock: &ObjectLockState) -> LockMode {
    LockMode::try_from(lock.mode).unwrap_or(LockMode::Compliance)
}

fn stored_hold(lock: &ObjectLockState) -> LegalHoldStatus {
    LegalHoldStatus::try_from(lock.legal_hold).unwrap_or(LegalHoldStatus::On)
}

/// The retention in force at `now`: its mode and date, if not expired.
fn active_retention(lock: &ObjectLockState, now: i64) -> Option<(LockMode, i64)> {
    match stored_mode(lock) {
        LockMode::None => None,
        m if lock.retain_until_unix_ms > now => Some((m, lock.retain_until_unix_ms)),
        _ => None,
    }
}

/// Refuses to delete a version that a legal hold or an unexpired retention
/// protects (GOVERNANCE gives way to `bypass_governance`). Called by
/// `versioning::delete_version` on the record its batch is conditioned on.
pub fn check_deletable(rec: &ObjectRecord, now: i64, bypass_governance: bool) -> GwResult<()> {
    let Some(lock) = &rec.object_lock else {
        return Ok(());
    };
    if stored_hold(lock) == LegalHoldStatus::On {
        return Err(GwError::ObjectLocked);
    }
    match active_retention(lock, now) {
        Some((LockMode::Compliance, _)) => Err(GwError::ObjectLocked),
        Some((LockMode::Governance, _)) if !bypass_governance => Err(GwError::ObjectLocked),
        _ => Ok(()),
    }
}

/// Whether a retention may go from `current` to `new` (`None`: removed).
/// Extending is always allowed; shortening, removing or weakening
/// COMPLIANCE to GOVERNANCE is not while the old retention is in force,
/// except GOVERNANCE with a bypass.
fn check_retention_change(
    current: Option<&ObjectLockState>,
    new: Option<(LockMode, i64)>,
    now: i64,
    bypass_governance: bool,
) -> GwResult<()> {
    let Some((old_mode, old_until)) = current.and_then(|c| active_retention(c, now)) else {
        return Ok(());
    };
    let keeps = match new {
        None => false,
        Some((mode, until)) => {
            until >= old_until
                && !(old_mode == LockMode::Compliance && mode != LockMode::Compliance)
        }
    };
    match old_mode {
        _ if keeps => Ok(()),
        LockMode::Governance if bypass_governance => Ok(()),
        _ => Err(GwError::ObjectLocked),
    }
}

/// Whether the request asks to bypass GOVERNANCE retention and may.
pub fn bypass_allowed(
    ctx: &Ctx,
    auth: &Authorized,
    asked: Option<bool>,
    key: &str,
) -> GwResult<bool> {
    if asked != Some(true) {
        return Ok(false);
    }
    auth.allows(ctx, "s3:BypassGovernanceRetention", Some(key))
}

/// `Content-MD5` or an `x-amz-checksum-*` (header or announced trailer):
/// AWS requires one on writes that carry a retention or legal hold, and on
/// the object lock and DeleteObjects XML bodies. `x-amz-sdk-checksum-algorithm`
/// alone names an algorithm but protects nothing; AWS refuses it too.
pub fn has_integrity_header(headers: &http::HeaderMap) -> bool {
    const SUMS: [&str; 5] = [
        "x-amz-checksum-crc32",
        "x-amz-checksum-crc32c",
        "x-amz-checksum-crc64nvme",
        "x-amz-checksum-sha1",
        "x-amz-checksum-sha256",
    ];
    headers.contains_key("content-md5")
        || SUMS.iter().any(|h| headers.contains_key(*h))
        || headers
            .get_all("x-amz-trailer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| SUMS.contains(&t.trim().to_ascii_lowercase().as_str()))
            })
}

/// The lock headers of a write (PutObject, CopyObject, CreateMultipartUpload).
#[derive(Clone, Debug, Default)]
pub struct WriteHeaders<'a> {
    pub mode: Option<&'a ObjectLockMode>,
    pub retain_until: Option<&'a Timestamp>,
    pub legal_hold: Option<&'a ObjectLockLegalHoldStatus>,
}

/// Borrows the lock headers of an s3s write input (the inputs share field
/// names but no trait).
macro_rules! write_headers {
    ($input:expr) => {
        $crate::s3::object_lock::WriteHeaders {
            mode: $input.object_lock_mode.as_ref(),
            retain_until: $input.object_lock_retain_until_date.as_ref(),
            legal_hold: $input.object_lock_legal_hold_status.as_ref(),
        }
    };
}
pub(crate) use write_headers;

impl WriteHeaders<'_> {
    fn is_empty(&self) -> bool {
        self.mode.is_none() && self.retain_until.is_none() && self.legal_hold.is_none()
    }

    /// The explicit lock they ask for, checked as AWS does.
    fn parse(&self, now: i64) -> GwResult<ObjectLockState> {
        let mut lock = ObjectLockState::default();
        match (self.mode, self.retain_until) {
            (None, None) => {}
            (Some(m), Some(t)) => {
                let mode = mode_of(m.as_str()).ok_or_else(|| {
                    GwError::InvalidArgument("Unknown wormMode directive.".into())
                })?;
                let until = ms_of(t);
                if until <= now {
                    return Err(past_date());
                }
                lock.mode = mode as i32;
                lock.retain_until_unix_ms = until;
            }
            _ => {
                return Err(GwError::InvalidArgument(
                    "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied".into(),
                ))
            }
        }
        if let Some(h) = self.legal_hold {
            let hold = hold_of(h.as_str()).ok_or_else(|| {
                GwError::InvalidArgument("Legal Hold must be either of 'ON' or 'OFF'".into())
            })?;
            lock.legal_hold = hold as i32;
        }
        Ok(lock)
    }
}

/// The bucket's default retention for a version created at `created_ms`.
fn default_retention(bucket: &BucketRecord, created_ms: i64) -> Option<(LockMode, i64)> {
    let d = bucket.object_lock_default.as_ref()?;
    if !bucket.object_lock_enabled {
        return None;
    }
    let mode = match stored_mode_of_default(d) {
        LockMode::None => return None,
        m => m,
    };
    let until = if d.years > 0 {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(created_ms) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let year = t.year() + d.years as i32;
        // 29 February in a year that has none: 1 March, as calendars do.
        let later = t
            .replace_year(year)
            .or_else(|_| (t + time::Duration::days(1)).replace_year(year))
            .unwrap_or(t + time::Duration::days(365 * i64::from(d.years)));
        (later.unix_timestamp_nanos() / 1_000_000) as i64
    } else {
        created_ms.saturating_add(i64::from(d.days) * DAY_MS)
    };
    Some((mode, until))
}

fn stored_mode_of_default(d: &ObjectLockDefault) -> LockMode {
    LockMode::try_from(d.mode).unwrap_or(LockMode::Compliance)
}

/// The lock a write's headers ask for (`None`: none), refused on a bucket
/// without object lock, and each half needing its own IAM action, as AWS.
/// The bucket default is added by [`with_default`] when the version is made.
pub fn explicit(
    ctx: &Ctx,
    auth: &Authorized,
    bucket: &BucketRecord,
    key: &str,
    headers: &WriteHeaders<'_>,
) -> GwResult<Option<ObjectLockState>> {
    if headers.is_empty() {
        return Ok(None);
    }
    if !bucket.object_lock_enabled {
        return Err(missing_lock());
    }
    let lock = headers.parse(now_ms())?;
    if lock.mode != LockMode::None as i32
        && !auth.allows(ctx, "s3:PutObjectRetention", Some(key))?
    {
        return Err(GwError::AccessDenied);
    }
    if lock.legal_hold != LegalHoldStatus::Unset as i32
        && !auth.allows(ctx, "s3:PutObjectLegalHold", Some(key))?
    {
        return Err(GwError::AccessDenied);
    }
    Ok(Some(lock))
}

/// The lock of a version created at `created_ms`: the explicit one, its
/// retention filled from the bucket's default when it names none.
pub fn with_default(
    explicit: Option<ObjectLockState>,
    bucket: &BucketRecord,
    created_ms: i64,
) -> Option<ObjectLockState> {
    let mut lock = explicit.unwrap_or_default();
    if lock.mode == LockMode::None as i32 {
        if let Some((mode, until)) = default_retention(bucket, created_ms) {
            lock.mode = mode as i32;
            lock.retain_until_unix_ms = until;
        }
    }
    (lock != ObjectLockState::default()).then_some(lock)
}

/// PutObject of a version that will be locked (explicitly or by default)
/// needs `Content-MD5` or a checksum, as AWS.
pub fn check_put_integrity(
    lock: Option<&ObjectLockState>,
    headers: &http::HeaderMap,
) -> GwResult<()> {
    if lock.is_some() && !has_integrity_header(headers) {
        return Err(GwError::InvalidRequest(
            "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters".into(),
        ));
    }
    Ok(())
}

/// An XML body AWS wants protected (PutObjectRetention, PutObjectLegalHold,
/// PutObjectLockConfiguration, DeleteObjects): `Content-MD5` or a checksum,
/// else 400 with AWS's message. SDKs and the aws CLI always send one.
pub fn check_body_integrity(headers: &http::HeaderMap) -> GwResult<()> {
    if !has_integrity_header(headers) {
        return Err(GwError::InvalidRequest(
            "Missing required header for this request: Content-MD5 OR x-amz-checksum-*".into(),
        ));
    }
    Ok(())
}

/// UploadPart of an upload that will carry a lock: AWS wants an integrity
/// header on every part.
pub fn check_part_integrity(
    bucket: &BucketRecord,
    upload_lock: Option<&ObjectLockState>,
    headers: &http::HeaderMap,
) -> GwResult<()> {
    let locked = upload_lock.is_some()
        || (bucket.object_lock_enabled && bucket.object_lock_default.is_some());
    if locked && !has_integrity_header(headers) {
        return Err(GwError::InvalidRequest(
            "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Part requests with Object Lock parameters".into(),
        ));
    }
    Ok(())
}

/// What GET/HEAD report of a version's lock: each half only to callers
/// allowed to read it (s3:GetObjectRetention / s3:GetObjectLegalHold), as AWS.
#[derive(Default)]
pub struct LockView {
    pub mode: Option<ObjectLockMode>,
    pub retain_until: Option<Timestamp>,
    pub legal_hold: Option<ObjectLockLegalHoldStatus>,
}

pub fn view(ctx: &Ctx, ext: &http::Extensions, key: &str, rec: &ObjectRecord) -> LockView {
    let mut v = LockView::default();
    let (Some(lock), Ok(auth)) = (&rec.object_lock, Authorized::of(ext)) else {
        return v;
    };
    let may = |action: &str| auth.allows(ctx, action, Some(key)).unwrap_or(false);
    if let Some(name) = mode_name(stored_mode(lock)) {
        if may("s3:GetObjectRetention") {
            v.mode = Some(ObjectLockMode::from_static(name));
            v.retain_until = Some(timestamp(lock.retain_until_unix_ms));
        }
    }
    let hold = match stored_hold(lock) {
        LegalHoldStatus::On => Some(ObjectLockLegalHoldStatus::ON),
        LegalHoldStatus::Off => Some(ObjectLockLegalHoldStatus::OFF),
        LegalHoldStatus::Unset => None,
    };
    if let Some(h) = hold {
        if may("s3:GetObjectLegalHold") {
            v.legal_hold = Some(ObjectLockLegalHoldStatus::from_static(h));
        }
    }
    v
}

// --- bucket configuration

/// Refuses to Suspend versioning of a lock bucket (PutBucketVersioning's
/// read-modify-write calls this on the record it replaces).
pub fn check_versioning_change(bucket: &BucketRecord, suspend: bool) -> GwResult<()> {
    if bucket.object_lock_enabled && suspend {
        return Err(GwError::InvalidBucketState(
            "An Object Lock configuration is present on this bucket, so the versioning state cannot be changed.".into(),
        ));
    }
    Ok(())
}

/// The stored default of a configuration's rule (`None`: no rule).
fn parse_rule(rule: Option<&ObjectLockRule>) -> GwResult<Option<ObjectLockDefault>> {
    let Some(rule) = rule else {
        return Ok(None);
    };
    let d = rule.default_retention.as_ref().ok_or_else(malformed)?;
    let mode = d
        .mode
        .as_ref()
        .and_then(|m| mode_of(m.as_str()))
        .ok_or_else(malformed)?;
    let positive = || {
        GwError::InvalidRetentionPeriod(
            "Default retention period must be a positive integer value".into(),
        )
    };
    let (days, years) = match (d.days, d.years) {
        (Some(days), None) => {
            if days <= 0 {
                return Err(positive());
            }
            if days > MAX_DEFAULT_DAYS {
                return Err(GwError::InvalidRetentionPeriod(format!(
                    "Default retention period cannot exceed {MAX_DEFAULT_DAYS} days"
                )));
            }
            (days as u32, 0)
        }
        (None, Some(years)) => {
            if years <= 0 {
                return Err(positive());
            }
            if years > MAX_DEFAULT_YEARS {
                return Err(GwError::InvalidRetentionPeriod(format!(
                    "Default retention period cannot exceed {MAX_DEFAULT_YEARS} years"
                )));
            }
            (0, years as u32)
        }
        _ => return Err(malformed()),
    };
    Ok(Some(ObjectLockDefault {
        mode: mode as i32,
        days,
        years,
    }))
}

pub async fn put_object_lock_configuration(
    ctx: &Arc<Ctx>,
    req: S3Request<PutObjectLockConfigurationInput>,
) -> GwResult<S3Response<PutObjectLockConfigurationOutput>> {
    check_body_integrity(&req.headers)?;
    let cfg = req
        .input
        .object_lock_configuration
        .as_ref()
        .ok_or_else(malformed)?;
    if cfg.object_lock_enabled.as_ref().map(|e| e.as_str()) != Some(ObjectLockEnabled::ENABLED) {
        return Err(malformed());
    }
    let default = parse_rule(cfg.rule.as_ref())?;
    load_bucket(&req.extensions)?;
    update_bucket(ctx, &req.extensions, |rec| {
        // AWS now lets a versioned bucket turn object lock on (no token
        // needed); never one whose versioning is off or Suspended.
        if !rec.object_lock_enabled && Versioning::of(rec) != Versioning::Enabled {
            return Err(GwError::InvalidBucketState(
                "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration"
                    .into(),
            ));
        }
        rec.object_lock_enabled = true;
        rec.object_lock_default = default;
        Ok(())
    })
    .await?;
    Ok(S3Response::new(PutObjectLockConfigurationOutput::default()))
}

pub async fn get_object_lock_configuration(
    _ctx: &Arc<Ctx>,
    req: S3Request<GetObjectLockConfigurationInput>,
) -> GwResult<S3Response<GetObjectLockConfigurationOutput>> {
    let bucket = load_bucket(&req.extensions)?.record;
    if !bucket.object_lock_enabled {
        return Err(GwError::ObjectLockConfigurationNotFound);
    }
    let rule = bucket.object_lock_default.as_ref().map(|d| ObjectLockRule {
        default_retention: Some(DefaultRetention {
            mode: mode_name(stored_mode_of_default(d)).map(ObjectLockRetentionMode::from_static),
            days: (d.days > 0).then_some(d.days as i32),
            years: (d.years > 0).then_some(d.years as i32),
        }),
    });
    Ok(S3Response::new(GetObjectLockConfigurationOutput {
        object_lock_configuration: Some(ObjectLockConfiguration {
            object_lock_enabled: Some(ObjectLockEnabled::from_static(ObjectLockEnabled::ENABLED)),
            rule,
        }),
    }))
}

// --- per version

/// The addressed bucket, refused unless it has object lock.
fn lock_bucket(ext: &http::Extensions) -> GwResult<BucketRecord> {
    let bucket = load_bucket(ext)?.record;
    if !bucket.object_lock_enabled {
        return Err(missing_lock());
    }
    Ok(bucket)
}

/// The lock state of the addressed version (`versionId`, else the latest),
/// in a bucket with object lock; found as GetObject finds it.
async fn stored_lock(
    ctx: &Ctx,
    ext: &http::Extensions,
    key: &str,
    version_id: Option<&str>,
) -> GwResult<Option<ObjectLockState>> {
    lock_bucket(ext)?;
    let (stored, _) = versioning::load_addressed(ctx, ext, key, version_id).await?;
    Ok(stored.record.object_lock)
}

/// Changes the lock of the addressed version by compare-and-set of its
/// record; `change` sees the current lock (again after a lost race) and may
/// refuse. A version deleted meanwhile answers NoSuchVersion / NoSuchKey.
async fn update_lock(
    ctx: &Ctx,
    ext: &http::Extensions,
    key: &str,
    version_id: Option<&str>,
    change: impl Fn(&mut ObjectLockState) -> GwResult<()>,
) -> GwResult<()> {
    for attempt in 0..RMW_ATTEMPTS {
        let (current, _) = versioning::load_addressed(ctx, ext, key, version_id).await?;
        let mut rec = current.record.clone();
        let mut lock = rec.object_lock.unwrap_or_default();
        change(&mut lock)?;
        rec.object_lock = (lock != ObjectLockState::default()).then_some(lock);
        let value = keys::encode_value(&rec);
        if ctx
            .meta
            .swap(Cf::Meta, &current.meta_key(), Some(&current.raw), &value)
            .await?
        {
            return Ok(());
        }
        tracing::debug!(attempt, "object changed during its lock update; retrying");
    }
    Err(GwError::Contention(
        "object changed during its lock update".into(),
    ))
}

pub async fn put_object_retention(
    ctx: &Arc<Ctx>,
    req: S3Request<PutObjectRetentionInput>,
) -> GwResult<S3Response<PutObjectRetentionOutput>> {
    check_body_integrity(&req.headers)?;
    let input = &req.input;
    lock_bucket(&req.extensions)?;
    let retention = input.retention.as_ref().ok_or_else(malformed)?;
    let now = now_ms();
    let new = match (&retention.mode, &retention.retain_until_date) {
        // An empty Retention removes it (GOVERNANCE with a bypass, or expired).
        (None, None) => None,
        (Some(m), Some(t)) => {
            let mode = mode_of(m.as_str()).ok_or_else(malformed)?;
            let until = ms_of(t);
            if until <= now {
                return Err(past_date());
            }
            Some((mode, until))
        }
        _ => return Err(malformed()),
    };
    let auth = Authorized::of(&req.extensions)?;
    let bypass = bypass_allowed(ctx, auth, input.bypass_governance_retention, &input.key)?;
    update_lock(
        ctx,
        &req.extensions,
        &input.key,
        input.version_id.as_deref(),
        |lock| {
            let current = *lock;
            check_retention_change(Some(&current), new, now_ms(), bypass)?;
            let (mode, until) = new.unwrap_or((LockMode::None, 0));
            lock.mode = mode as i32;
            lock.retain_until_unix_ms = until;
            Ok(())
        },
    )
    .await?;
    Ok(S3Response::new(PutObjectRetentionOutput::default()))
}

pub async fn get_object_retention(
    ctx: &Arc<Ctx>,
    req: S3Request<GetObjectRetentionInput>,
) -> GwResult<S3Response<GetObjectRetentionOutput>> {
    let input = &req.input;
    let lock = stored_lock(
        ctx,
        &req.extensions,
        &input.key,
        input.version_id.as_deref(),
    )
    .await?
    .filter(|l| l.mode != LockMode::None as i32)
    .ok_or(GwError::NoSuchObjectLockConfiguration)?;
    Ok(S3Response::new(GetObjectRetentionOutput {
        retention: Some(ObjectLockRetention {
            mode: mode_name(stored_mode(&lock)).map(ObjectLockRetentionMode::from_static),
            retain_until_date: Some(timestamp(lock.retain_until_unix_ms)),
        }),
    }))
}

pub async fn put_object_legal_hold(
    ctx: &Arc<Ctx>,
    req: S3Request<PutObjectLegalHoldInput>,
) -> GwResult<S3Response<PutObjectLegalHoldOutput>> {
    check_body_integrity(&req.headers)?;
    let input = &req.input;
    lock_bucket(&req.extensions)?;
    let hold = input
        .legal_hold
        .as_ref()
        .and_then(|h| h.status.as_ref())
        .and_then(|s| hold_of(s.as_str()))
        .ok_or_else(malformed)?;
    update_lock(
        ctx,
        &req.extensions,
        &input.key,
        input.version_id.as_deref(),
        |lock| {
            lock.legal_hold = hold as i32;
            Ok(())
        },
    )
    .await?;
    Ok(S3Response::new(PutObjectLegalHoldOutput::default()))
}

pub async fn get_object_legal_hold(
    ctx: &Arc<Ctx>,
    req: S3Request<GetObjectLegalHoldInput>,
) -> GwResult<S3Response<GetObjectLegalHoldOutput>> {
    let input = &req.input;
    let lock = stored_lock(
        ctx,
        &req.extensions,
        &input.key,
        input.version_id.as_deref(),
    )
    .await?;
    let status = match lock.as_ref().map(stored_hold) {
        Some(LegalHoldStatus::On) => ObjectLockLegalHoldStatus::ON,
        Some(LegalHoldStatus::Off) => ObjectLockLegalHoldStatus::OFF,
        _ => return Err(GwError::NoSuchObjectLockConfiguration),
    };
    Ok(S3Response::new(GetObjectLegalHoldOutput {
        legal_hold: Some(ObjectLockLegalHold {
            status: Some(ObjectLockLegalHoldStatus::from_static(status)),
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locked(mode: LockMode, until: i64, hold: LegalHoldStatus) -> ObjectRecord {
        ObjectRecord {
            object_lock: Some(ObjectLockState {
                mode: mode as i32,
                retain_until_unix_ms: until,
                legal_hold: hold as i32,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn deletion_obeys_mode_date_hold_and_bypass() {
        use LegalHoldStatus::*;
        use LockMode::*;
        let now = 1_000_000;
        assert!(check_deletable(&ObjectRecord::default(), now, false).is_ok());
        // COMPLIANCE: nobody until the date, bypass or not.
        let c = locked(Compliance, now + 1, Unset);
        assert!(matches!(
            check_deletable(&c, now, true),
            Err(GwError::ObjectLocked)
        ));
        assert!(check_deletable(&c, now + 1, false).is_ok());
        // GOVERNANCE: only with a bypass.
        let g = locked(Governance, now + 1, Unset);
        assert!(matches!(
            check_deletable(&g, now, false),
            Err(GwError::ObjectLocked)
        ));
        assert!(check_deletable(&g, now, true).is_ok());
        // A legal hold blocks whatever the retention, and a bypass does not lift it.
        let h = locked(None, 0, On);
        assert!(matches!(
            check_deletable(&h, now, true),
            Err(GwError::ObjectLocked)
        ));
        assert!(check_deletable(&locked(None, 0, Off), now, false).is_ok());
        let gh = locked(Governance, now - 1, On);
        assert!(matches!(
            check_deletable(&gh, now, true),
            Err(GwError::ObjectLocked)
        ));
        // A mode from a newer gateway protects.
        let mut odd = locked(Compliance, now + 1, Unset);
        if let Some(l) = odd.object_lock.as_mut() {
            l.mode = 99;
        }
        assert!(check_deletable(&odd, now, true).is_err());
    }

    #[test]
    fn retention_changes() {
        use LockMode::{Compliance, Governance};
        let now = 1_000;
        let state = |mode: LockMode, until| ObjectLockState {
            mode: mode as i32,
            retain_until_unix_ms: until,
            legal_hold: 0,
        };
        let c = state(Compliance, 5_000);
        // Extending (or keeping) COMPLIANCE is fine; anything else is not, bypass or not.
        assert!(check_retention_change(Some(&c), Some((Compliance, 6_000)), now, false).is_ok());
        assert!(check_retention_change(Some(&c), Some((Compliance, 5_000)), now, false).is_ok());
        for bypass in [false, true] {
            assert!(
                check_retention_change(Some(&c), Some((Compliance, 4_000)), now, bypass).is_err()
            );
            assert!(
                check_retention_change(Some(&c), Some((Governance, 9_000)), now, bypass).is_err()
            );
            assert!(check_retention_change(Some(&c), None, now, bypass).is_err());
        }
        // Expired: anything goes.
        assert!(check_retention_change(Some(&c), None, 5_000, false).is_ok());
        let g = state(Governance, 5_000);
        assert!(check_retention_change(Some(&g), Some((Governance, 6_000)), now, false).is_ok());
        assert!(check_retention_change(Some(&g), Some((Compliance, 6_000)), now, false).is_ok());
        assert!(check_retention_change(Some(&g), Some((Governance, 4_000)), now, false).is_err());
        assert!(check_retention_change(Some(&g), None, now, false).is_err());
        assert!(check_retention_change(Some(&g), Some((Governance, 4_000)), now, true).is_ok());
        assert!(check_retention_change(Some(&g), None, now, true).is_ok());
        assert!(check_retention_change(None, Some((Governance, 2_000)), now, false).is_ok());
    }

    #[test]
    fn default_rules_parse_as_aws() {
        let rule = |mode: Option<&str>, days: Option<i32>, years: Option<i32>| ObjectLockRule {
            default_retention: Some(DefaultRetention {
                mode: mode.map(|m| ObjectLockRetentionMode::from(m.to_string())),
                days,
                years,
            }),
        };
        let d = parse_rule(Some(&rule(Some("GOVERNANCE"), Some(3), None)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.mode, d.days, d.years),
            (LockMode::Governance as i32, 3, 0)
        );
        assert!(parse_rule(None).unwrap().is_none());
        for (m, d, y) in [
            (Some("GOVERNANCE"), Some(1), Some(1)),
            (Some("GOVERNANCE"), None, None),
            (Some("governance"), Some(1), None),
            (None, Some(1), None),
        ] {
            assert!(
                matches!(
                    parse_rule(Some(&rule(m, d, y))),
                    Err(GwError::MalformedXml(_))
                ),
                "{m:?} {d:?} {y:?}"
            );
        }
        for (d, y) in [(Some(0), None), (None, Some(-1)), (Some(40_000), None)] {
            assert!(matches!(
                parse_rule(Some(&rule(Some("COMPLIANCE"), d, y))),
                Err(GwError::InvalidRetentionPeriod(_))
            ));
        }
        assert!(matches!(
            parse_rule(Some(&ObjectLockRule::default())),
            Err(GwError::MalformedXml(_))
        ));
    }

    #[test]
    fn defaults_apply_days_or_calendar_years() {
        let mut b = BucketRecord {
            object_lock_enabled: true,
            object_lock_default: Some(ObjectLockDefault {
                mode: LockMode::Compliance as i32,
                days: 2,
                years: 0,
            }),
            ..Default::default()
        };
        let t0 = 1_700_000_000_000;
        let d = with_default(None, &b, t0).unwrap();
        assert_eq!(d.retain_until_unix_ms, t0 + 2 * DAY_MS);
        assert_eq!(d.mode, LockMode::Compliance as i32);
        b.object_lock_default = Some(ObjectLockDefault {
            mode: LockMode::Governance as i32,
            days: 0,
            years: 1,
        });
        // 2023-11-14 + 1 year is 2024-11-14: 366 days (29 February 2024 between).
        assert_eq!(
            with_default(None, &b, t0).unwrap().retain_until_unix_ms,
            t0 + 366 * DAY_MS
        );
        // 2024-02-29 + 1 year: 2025-03-01.
        let leap = 1_709_164_800_000; // 2024-02-29T00:00:00Z
        assert_eq!(
            with_default(None, &b, leap).unwrap().retain_until_unix_ms,
            1_740_787_200_000 // 2025-03-01T00:00:00Z
        );
        b.object_lock_enabled = false;
        assert!(with_default(None, &b, t0).is_none());
    }

    #[test]
    fn integrity_headers() {
        let mut h = http::HeaderMap::new();
        assert!(!has_integrity_header(&h));
        h.insert(
            "x-amz-trailer",
            http::HeaderValue::from_static("x-amz-checksum-crc32"),
        );
        assert!(has_integrity_header(&h));
        let mut h = http::HeaderMap::new();
        h.insert("x-amz-checksum-sha256", http::HeaderValue::from_static("x"));
        assert!(has_integrity_header(&h));
        let mut h = http::HeaderMap::new();
        h.insert("content-md5", http::HeaderValue::from_static("x"));
        assert!(has_integrity_header(&h));
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-amz-sdk-checksum-algorithm",
            http::HeaderValue::from_static("CRC32"),
        );
        assert!(!has_integrity_header(&h));
    }

    #[test]
    fn suspend_is_refused_with_lock() {
        let b = BucketRecord {
            object_lock_enabled: true,
            ..Default::default()
        };
        assert!(matches!(
            check_versioning_change(&b, true),
            Err(GwError::InvalidBucketState(_))
        ));
        assert!(check_versioning_change(&b, false).is_ok());
        assert!(check_versioning_change(&BucketRecord::default(), true).is_ok());
    }
}
