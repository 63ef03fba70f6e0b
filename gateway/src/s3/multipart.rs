//! Multipart uploads: Create, UploadPart, Complete, Abort, ListParts,
//! ListMultipartUploads.
//!
//! An upload is a `MultipartUploadRecord` at `upload_key` (cf MPU) and one
//! `PartRecord` per part at `part_key`; all of them share the object's key
//! prefix, so Complete is one batch on one region: put the `ObjectRecord`
//! (with a `PartRef` per listed part), delete the upload and every part
//! record, and enqueue GC records for unlisted parts and the replaced body.

use std::collections::BTreeMap;
use std::sync::Arc;

use kura_metashard::client::{BatchOutcome, Cf, Condition, Mutation};
use kura_metashard::keys::{self, ObjectKeyParts};
use kura_proto::meta::{
    DataLocation, MultipartUploadRecord, ObjectRecord, PartRecord, PartRef, StorageClass,
};
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::context::{Ctx, MAX_PART_NUMBER, MAX_PART_SIZE, MIN_PART_SIZE};
use crate::data::checksum::{
    with_checksums, Algo, ChecksumFields, ChecksumPlan, Kind, UploadChecksum,
};
use crate::data::gc;
use crate::data::writer::{write_body_sealed, BodyOwner, WriteSpec, Written};
use crate::error::{GwError, GwResult};
use crate::meta::{self, now_ms, Versioned, RMW_ATTEMPTS};
use crate::s3::common::{
    check_key, check_user_metadata, declared_length, etag, load_bucket, maybe_encode, owner,
    s3_class_name, store_request_headers, timestamp, unquote, wants_url_encoding, write_class,
};
use crate::s3::encryption;
use crate::s3::list::{self, Decoded, Entry, ListParams, MetaSource, MAX_PAGE};
use crate::s3::put::{commit_in_task, WritePrecondition};
use crate::s3::versioning::CommitOutcome;
use crate::usage::{quota, Scope};

/// Upload ids are 32 lowercase hex characters (16 random bytes).
pub const UPLOAD_ID_LEN: usize = 32;

pub fn new_upload_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn valid_upload_id(id: &str) -> bool {
    id.len() == UPLOAD_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// ETag of a multipart object: MD5 of the concatenated binary part MD5s, then `-N`.
pub fn multipart_etag(part_etags: &[&str]) -> GwResult<String> {
    let mut h = Md5::new();
    for e in part_etags {
        let raw = hex::decode(e)
            .map_err(|_| GwError::Internal(format!("stored part ETag {e:?} is not hex")))?;
        h.update(&raw);
    }
    Ok(format!(
        "{}-{}",
        hex::encode(h.finalize()),
        part_etags.len()
    ))
}

pub(crate) fn check_part_number(n: i32) -> GwResult<u32> {
    if !(1..=MAX_PART_NUMBER).contains(&n) {
        return Err(GwError::InvalidArgument(format!(
            "Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive"
        )));
    }
    Ok(n as u32)
}

/// The storage class an upload's parts are written with (chosen at CreateMultipartUpload).
pub(crate) fn upload_class(ctx: &Ctx, upload: &MultipartUploadRecord) -> StorageClass {
    crate::storage_class::recorded(upload.storage_class, ctx.default_class)
}

/// Reads the upload record; NoSuchUpload when absent or the id is malformed.
pub(crate) async fn load_upload(
    ctx: &Ctx,
    bucket_id: u64,
    key: &str,
    upload_id: &str,
) -> GwResult<Versioned<MultipartUploadRecord>> {
    if !valid_upload_id(upload_id) {
        return Err(GwError::NoSuchUpload);
    }
    ctx.meta
        .get::<MultipartUploadRecord>(
            Cf::Mpu,
            &keys::upload_key(bucket_id, key.as_bytes(), upload_id),
        )
        .await?
        .ok_or(GwError::NoSuchUpload)
}

/// A stored part with its record key.
struct StoredPart {
    key: Vec<u8>,
    raw: bytes::Bytes,
    record: PartRecord,
}

/// Part records of one upload with part numbers > `after`, at most `limit`.
async fn scan_parts(
    ctx: &Ctx,
    bucket_id: u64,
    key: &str,
    upload_id: &str,
    after: u32,
    limit: usize,
) -> GwResult<Vec<StoredPart>> {
    let ukey = keys::upload_key(bucket_id, key.as_bytes(), upload_id);
    let end = keys::prefix_successor(&ukey).unwrap_or_else(|| keys::bucket_end(bucket_id));
    let mut start = match after.checked_add(1) {
        Some(n) => keys::part_key(bucket_id, key.as_bytes(), upload_id, n),
        None => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    while out.len() < limit {
        let want = (limit - out.len()).min(MAX_PAGE);
        let page = ctx.meta.scan(Cf::Mpu, &start, &end, want, false).await?;
        let n = page.len();
        for kv in page {
            start = kv.key.to_vec();
            start.push(0);
            if kv.key.len() != ukey.len() + 4 {
                continue;
            }
            out.push(StoredPart {
                key: kv.key.to_vec(),
                record: keys::decode_value(&kv.value)?,
                raw: kv.value,
            });
        }
        if n < want {
            break;
        }
    }
    Ok(out)
}

/// Every part of an upload (at most 10,000 exist).
async fn all_parts(
    ctx: &Ctx,
    bucket_id: u64,
    key: &str,
    upload_id: &str,
) -> GwResult<Vec<StoredPart>> {
    scan_parts(
        ctx,
        bucket_id,
        key,
        upload_id,
        0,
        MAX_PART_NUMBER as usize + 1,
    )
    .await
}

pub async fn create_multipart_upload(
    ctx: &Arc<Ctx>,
    req: S3Request<CreateMultipartUploadInput>,
) -> GwResult<S3Response<CreateMultipartUploadOutput>> {
    let initiator = crate::authz::Authorized::of(&req.extensions)?
        .caller
        .user_id()
        .to_string();
    let input = req.input;
    check_key(&input.key)?;
    check_user_metadata(input.metadata.as_ref())?;
    let bucket = load_bucket(&req.extensions)?;
    let bucket_id = bucket.record.id;
    let class = write_class(ctx, input.storage_class.as_ref(), &bucket.record)?;
    // Kept with the upload, given to the object at completion.
    let acl = crate::s3::acl::object_write_acl(
        ctx,
        crate::authz::Authorized::of(&req.extensions)?,
        &bucket.record,
        &crate::s3::acl::acl_headers!(input),
    )?;
    let sse = encryption::for_write(ctx, &bucket.record, &encryption::sse_write_headers!(input))?;
    // Lock headers are kept with the upload; the default is added at completion.
    let object_lock = crate::s3::object_lock::explicit(
        ctx,
        crate::authz::Authorized::of(&req.extensions)?,
        &bucket.record,
        &input.key,
        &crate::s3::object_lock::write_headers!(input),
    )?;
    let sum = UploadChecksum::from_request(
        input.checksum_algorithm.as_ref().map(|a| a.as_str()),
        input.checksum_type.as_ref().map(|t| t.as_str()),
    )?;
    let upload_id = new_upload_id();
    let mut rec = MultipartUploadRecord {
        bucket_id,
        key: input.key.clone(),
        upload_id: upload_id.clone(),
        initiated_unix_ms: now_ms(),
        owner: initiator,
        storage_class: class as i32,
        acl,
        tags: crate::s3::tagging::parse_header(input.tagging.as_deref())?,
        sse: sse.as_ref().map(|s| s.record(Vec::new())),
        object_lock,
        ..Default::default()
    };
    store_request_headers!(rec, input);
    if let Some(sum) = &sum {
        rec.checksum_algorithm = sum.algo.name().to_string();
        rec.checksum_type = sum.kind.to_stored();
    }
    let ukey = keys::upload_key(bucket_id, input.key.as_bytes(), &upload_id);
    let value = keys::encode_value(&rec);
    match ctx
        .meta
        .batch(
            vec![meta::not_exists(Cf::Mpu, ukey.clone())],
            vec![meta::put(Cf::Mpu, ukey.clone(), value.clone())],
        )
        .await?
    {
        BatchOutcome::Applied => {}
        BatchOutcome::ConditionFailed { .. } if ctx.meta.holds(Cf::Mpu, &ukey, &value).await? => {}
        BatchOutcome::ConditionFailed { .. } => {
            return Err(GwError::Internal("random upload id collided".into()));
        }
    }
    // An upload made while its bucket was deleted must not outlive it (decision 0033).
    let b = &bucket.record;
    if !crate::s3::bucket::await_bucket(ctx, &b.tenant, &b.name, bucket_id).await? {
        ctx.meta
            .batch(
                vec![meta::value_equals(Cf::Mpu, ukey.clone(), value.into())],
                vec![meta::delete(Cf::Mpu, ukey)],
            )
            .await?;
        return Err(GwError::NoSuchBucket);
    }
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload_id),
        checksum_algorithm: input.checksum_algorithm,
        checksum_type: sum.map(|s| s.kind.dto()),
        server_side_encryption: encryption::sse_field(sse.as_ref()),
        sse_customer_algorithm: encryption::customer_algorithm_field(sse.as_ref()),
        sse_customer_key_md5: encryption::customer_key_md5_field(sse.as_ref()),
        ..Default::default()
    }))
}

pub async fn upload_part(
    ctx: &Arc<Ctx>,
    req: S3Request<UploadPartInput>,
) -> GwResult<S3Response<UploadPartOutput>> {
    let S3Request {
        input,
        headers,
        trailing_headers,
        extensions,
        ..
    } = req;
    let part_number = check_part_number(input.part_number)?;
    check_key(&input.key)?;
    let content_length = declared_length(input.content_length)?;
    let bucket = load_bucket(&extensions)?;
    let bucket_id = bucket.record.id;
    let upload = load_upload(ctx, bucket_id, &input.key, &input.upload_id).await?;
    crate::s3::object_lock::check_part_integrity(
        &bucket.record,
        upload.record.object_lock.as_ref(),
        &headers,
    )?;
    let sse = encryption::for_part(
        ctx,
        &upload.record,
        &encryption::sse_customer_headers!(input),
    )?;
    let mut checksums = ChecksumPlan::from_headers(&headers, trailing_headers)?;
    if let Some(sum) = upload_checksum(&upload.record) {
        checksums.require(sum.algo)?;
    }
    let spec = WriteSpec {
        owner: BodyOwner {
            bucket_id,
            key: input.key.clone(),
            upload_id: input.upload_id.clone(),
            part_number,
        },
        content_length,
        max_size: MAX_PART_SIZE,
        content_md5: input.content_md5.as_deref(),
        checksums,
        class: upload_class(ctx, &upload.record),
    };
    let body = input
        .body
        .unwrap_or_else(|| StreamingBlob::from(s3s::Body::empty()));
    let seal = sse.as_ref().map(|s| s.new_body()).transpose()?;
    let written = write_body_sealed(ctx, spec, body, seal).await?;
    let part = part_for_body(part_number, &written);

    let (key, upload_id) = (input.key.clone(), input.upload_id.clone());
    commit_in_task(ctx, written.stored(), move |ctx| async move {
        commit_part(&ctx, bucket_id, &key, &upload_id, &upload, &part).await
    })
    .await?;

    let resp = S3Response::new(with_checksums!(
        ChecksumFields::from_map(&written.checksums),
        UploadPartOutput {
            e_tag: Some(etag(&written.etag())),
        }
    ));
    Ok(encryption::with_echo(resp, sse.map(|s| s.echo())))
}

/// The record of part `part_number` whose body is `written`.
pub(crate) fn part_for_body(part_number: u32, written: &Written) -> PartRecord {
    PartRecord {
        part_number,
        size: written.size,
        etag: written.etag(),
        last_modified_unix_ms: now_ms(),
        location: written.location.clone(),
        inline_data: written.inline.clone().unwrap_or_default(),
        sse: written.sse.clone(),
        checksums: written
            .checksums
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The checksum an upload was created with, if any (decision 0033).
pub(crate) fn upload_checksum(upload: &MultipartUploadRecord) -> Option<UploadChecksum> {
    UploadChecksum::from_stored(&upload.checksum_algorithm, upload.checksum_type)
}

/// Stores a part record while the upload exists, reclaiming a replaced part's body.
pub(crate) async fn commit_part(
    ctx: &Arc<Ctx>,
    bucket_id: u64,
    key: &str,
    upload_id: &str,
    upload: &Versioned<MultipartUploadRecord>,
    part: &PartRecord,
) -> GwResult<()> {
    let ukey = keys::upload_key(bucket_id, key.as_bytes(), upload_id);
    let pkey = keys::part_key(bucket_id, key.as_bytes(), upload_id, part.part_number);
    let value = keys::encode_value(part);
    for _ in 0..RMW_ATTEMPTS {
        let old = ctx.meta.get::<PartRecord>(Cf::Mpu, &pkey).await?;
        let old_locs = old
            .as_ref()
            .map(|o| gc::part_locations(&o.record))
            .unwrap_or_default();
        let conditions = vec![
            meta::value_equals(Cf::Mpu, ukey.clone(), upload.raw.clone()),
            meta::unchanged(Cf::Mpu, pkey.clone(), old.as_ref().map(|o| &o.raw)),
        ];
        let mut mutations = vec![meta::put(Cf::Mpu, pkey.clone(), value.clone())];
        mutations.extend(gc::gc_mutations(bucket_id, key, &old_locs));
        let applied = match ctx.meta.batch(conditions, mutations).await? {
            BatchOutcome::Applied => true,
            // Our own earlier attempt may have applied (see `Meta::holds`).
            BatchOutcome::ConditionFailed { .. }
                if ctx.meta.holds(Cf::Mpu, &pkey, &value).await? =>
            {
                true
            }
            BatchOutcome::ConditionFailed { index: 0 } => return Err(GwError::NoSuchUpload),
            BatchOutcome::ConditionFailed { .. } => false,
        };
        if applied {
            gc::spawn_reclaim(ctx.clone(), bucket_id, key.to_string(), old_locs);
            return Ok(());
        }
    }
    Err(GwError::Contention(
        "too many concurrent uploads of one part".into(),
    ))
}

/// Validates the client's part list against the stored parts; returns the
/// chosen parts in order.
fn choose_parts<'a>(
    listed: &[(u32, String)],
    stored: &'a BTreeMap<u32, &'a StoredPart>,
) -> GwResult<Vec<&'a StoredPart>> {
    if listed.is_empty() {
        return Err(GwError::MalformedXml(
            "The XML you provided did not list any parts".into(),
        ));
    }
    if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(GwError::InvalidPartOrder);
    }
    let mut chosen = Vec::with_capacity(listed.len());
    for (i, (n, tag)) in listed.iter().enumerate() {
        let part = stored
            .get(n)
            .ok_or_else(|| GwError::InvalidPart(format!("part {n} was not uploaded")))?;
        if unquote(tag) != part.record.etag {
            return Err(GwError::InvalidPart(format!(
                "part {n} has a different ETag"
            )));
        }
        let last = i + 1 == listed.len();
        if !last && part.record.size < MIN_PART_SIZE {
            return Err(GwError::EntityTooSmall);
        }
        chosen.push(*part);
    }
    Ok(chosen)
}

/// The `(algorithm, value)` pairs of the five `checksum_*` fields of an s3s
/// value (a CompletedPart, or the Complete request's whole-object ones).
macro_rules! listed_checksums {
    ($v:expr) => {
        [
            (Algo::Crc32, &$v.checksum_crc32),
            (Algo::Crc32c, &$v.checksum_crc32c),
            (Algo::Crc64Nvme, &$v.checksum_crc64nvme),
            (Algo::Sha1, &$v.checksum_sha1),
            (Algo::Sha256, &$v.checksum_sha256),
        ]
        .into_iter()
        .filter_map(|(a, v)| v.as_ref().map(|v| (a, v.trim().to_string())))
        .collect::<Vec<(Algo, String)>>()
    };
}

/// A completed object's checksum (decision 0033).
struct ObjectChecksum {
    sum: UploadChecksum,
    value: String,
    /// The value of each chosen part, in order.
    parts: Vec<String>,
}

/// Checks the checksums the client listed for parts against theirs, derives
/// the object's checksum from the parts' values, and checks the whole-object
/// value a client sent with Complete against it. None when the upload has no
/// checksum, or a part has no value for its algorithm (a part copied with
/// UploadPartCopy by a gateway older than decision 0036), and the client
/// asserted none for the whole object.
fn object_checksum(
    sum: Option<UploadChecksum>,
    chosen: &[&StoredPart],
    claimed: &BTreeMap<u32, Vec<(Algo, String)>>,
    whole: &[(Algo, String)],
    whole_kind: Option<&str>,
) -> GwResult<Option<ObjectChecksum>> {
    for p in chosen {
        let n = p.record.part_number;
        for (algo, v) in claimed.get(&n).into_iter().flatten() {
            if p.record.checksums.get(algo.name()) != Some(v) {
                return Err(GwError::InvalidPart(format!(
                    "The {} checksum of part {n} does not match the part's",
                    algo.name()
                )));
            }
        }
    }
    let whole_kind = whole_kind
        .map(|k| {
            Kind::from_name(k).ok_or_else(|| {
                GwError::InvalidRequest(format!(
                    "Value for x-amz-checksum-type header is invalid: {k:?}"
                ))
            })
        })
        .transpose()?;
    // A client may assert a whole-object CRC for an upload created without
    // an algorithm: then it is checked against the parts' CRCs if they have them.
    let sum = match (sum, whole.first()) {
        (Some(s), _) => s,
        (None, None) => return Ok(None),
        (None, Some((algo, _))) => UploadChecksum {
            algo: *algo,
            kind: whole_kind.unwrap_or(if matches!(algo, Algo::Sha1 | Algo::Sha256) {
                Kind::Composite
            } else {
                Kind::FullObject
            }),
        },
    };
    if whole_kind.is_some_and(|k| k != sum.kind) {
        return Err(GwError::InvalidRequest(format!(
            "The upload was created using the {} checksum mode. The complete request must use the same checksum mode.",
            sum.kind.name()
        )));
    }
    let values: Option<Vec<(&str, u64)>> = chosen
        .iter()
        .map(|p| {
            p.record
                .checksums
                .get(sum.algo.name())
                .map(|v| (v.as_str(), p.record.size))
        })
        .collect();
    let Some(values) = values else {
        if whole.is_empty() {
            return Ok(None);
        }
        return Err(GwError::InvalidRequest(format!(
            "Not every part has a {} checksum to check the object's against",
            sum.algo.name()
        )));
    };
    let value = sum.combine(&values)?;
    for (algo, v) in whole {
        if *algo != sum.algo {
            return Err(GwError::InvalidRequest(format!(
                "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                sum.algo.name().to_lowercase(),
                algo.name().to_lowercase()
            )));
        }
        // A composite value may be sent with or without its "-N".
        let bare = value.split('-').next().unwrap_or(&value);
        if *v != value && v != bare {
            return Err(GwError::BadDigest(format!(
                "The {} you specified did not match the calculated checksum.",
                algo.name()
            )));
        }
    }
    Ok(Some(ObjectChecksum {
        sum,
        value,
        parts: values.iter().map(|(v, _)| v.to_string()).collect(),
    }))
}

/// The batch half that ends an upload (Complete and Abort): conditions that
/// the upload record (condition 0) and every part record are still as read,
/// and mutations deleting them all. Conditioning on each part means a part
/// replaced concurrently fails the batch instead of losing its body.
fn remove_upload(
    ukey: Vec<u8>,
    upload: &Versioned<MultipartUploadRecord>,
    parts: &[StoredPart],
) -> (Vec<Condition>, Vec<Mutation>) {
    let mut conditions = vec![meta::value_equals(
        Cf::Mpu,
        ukey.clone(),
        upload.raw.clone(),
    )];
    conditions.extend(
        parts
            .iter()
            .map(|p| meta::value_equals(Cf::Mpu, p.key.clone(), p.raw.clone())),
    );
    let mut mutations = vec![meta::delete(Cf::Mpu, ukey)];
    mutations.extend(parts.iter().map(|p| meta::delete(Cf::Mpu, p.key.clone())));
    (conditions, mutations)
}

pub async fn complete_multipart_upload(
    ctx: &Arc<Ctx>,
    req: S3Request<CompleteMultipartUploadInput>,
) -> GwResult<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    check_key(&input.key)?;
    let pre =
        WritePrecondition::from_headers(input.if_match.as_ref(), input.if_none_match.as_ref())?;
    // The checksums the client lists per part (decision 0033).
    let mut claimed: BTreeMap<u32, Vec<(Algo, String)>> = BTreeMap::new();
    let listed: Vec<(u32, String)> = input
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let n = p
                .part_number
                .ok_or_else(|| GwError::MalformedXml("a Part has no PartNumber".into()))?;
            let n = u32::try_from(n)
                .map_err(|_| GwError::InvalidPart(format!("part number {n} is not valid")))?;
            claimed.insert(n, listed_checksums!(p));
            let tag = p.e_tag.map(|e| e.value().to_string()).unwrap_or_default();
            Ok((n, tag))
        })
        .collect::<GwResult<_>>()?;
    let whole = listed_checksums!(input);
    let bucket = load_bucket(&req.extensions)?;
    let bucket_id = bucket.record.id;
    let upload = load_upload(ctx, bucket_id, &input.key, &input.upload_id).await?;
    let parts = all_parts(ctx, bucket_id, &input.key, &input.upload_id).await?;
    let by_number: BTreeMap<u32, &StoredPart> =
        parts.iter().map(|p| (p.record.part_number, p)).collect();
    let chosen = choose_parts(&listed, &by_number)?;
    let object_sum = object_checksum(
        upload_checksum(&upload.record),
        &chosen,
        &claimed,
        &whole,
        input.checksum_type.as_ref().map(|t| t.as_str()),
    )?;

    let etags: Vec<&str> = chosen.iter().map(|p| p.record.etag.as_str()).collect();
    let etag_value = multipart_etag(&etags)?;
    let u = &upload.record;
    let sse_echo = encryption::upload_echo(u);
    let rec = ObjectRecord {
        bucket_id,
        key: input.key.clone(),
        version: 0,
        size: chosen.iter().map(|p| p.record.size).sum(),
        etag: etag_value.clone(),
        last_modified_unix_ms: now_ms(),
        content_type: u.content_type.clone(),
        content_encoding: u.content_encoding.clone(),
        content_disposition: u.content_disposition.clone(),
        content_language: u.content_language.clone(),
        cache_control: u.cache_control.clone(),
        expires: u.expires.clone(),
        user_metadata: u.user_metadata.clone(),
        inline_data: Default::default(),
        parts: chosen
            .iter()
            .map(|p| PartRef {
                part_number: p.record.part_number,
                size: p.record.size,
                etag: p.record.etag.clone(),
                location: p.record.location.clone(),
                inline_data: p.record.inline_data.clone(),
            })
            .collect(),
        storage_class: u.storage_class,
        checksums: Default::default(),
        acl: u.acl.clone(),
        tags: u.tags.clone(),
        sse: encryption::completed(u, chosen.iter().map(|p| &p.record)),
        // The version fields are set by the commit.
        ..Default::default()
    };
    let mut rec = rec;
    if let Some(o) = &object_sum {
        rec.checksums = [(o.sum.algo.name().to_string(), o.value.clone())].into();
        rec.checksum_type = o.sum.kind.to_stored();
        rec.part_checksums = o.parts.clone();
    }
    let mut rec = rec;
    rec.object_lock = crate::s3::object_lock::with_default(
        u.object_lock,
        &bucket.record,
        rec.last_modified_unix_ms,
    );
    let chosen_numbers: std::collections::HashSet<u32> =
        chosen.iter().map(|p| p.record.part_number).collect();
    let unlisted: Vec<DataLocation> = parts
        .iter()
        .filter(|p| !chosen_numbers.contains(&p.record.part_number))
        .flat_map(|p| gc::part_locations(&p.record))
        .collect();
    let admission = quota::check_write(ctx, &bucket.record, &input.key, rec.size).await?;
    let delta_id = admission.delta_id;
    let ukey = keys::upload_key(bucket_id, input.key.as_bytes(), &input.upload_id);
    let (extra_conditions, mut extra_mutations) = remove_upload(ukey, &upload, &parts);
    extra_mutations.extend(gc::gc_mutations(bucket_id, &input.key, &unlisted));

    // The new object references only bodies already committed, so there is no body to discard.
    let key = input.key.clone();
    let scope = Scope::of(&bucket.record);
    let committed = commit_in_task(ctx, None, move |ctx| async move {
        let out = crate::s3::versioning::commit(
            &ctx,
            &scope,
            &key,
            &rec,
            &pre,
            &delta_id,
            extra_conditions,
            extra_mutations,
        )
        .await;
        if matches!(out, Ok(CommitOutcome::Committed { .. })) {
            gc::spawn_reclaim(ctx.clone(), bucket_id, key.clone(), unlisted);
        }
        out
    })
    .await?;
    let version_id = match committed {
        CommitOutcome::Committed { version_id } => {
            admission.committed();
            version_id
        }
        // The upload was completed or aborted concurrently; its parts are that request's business.
        CommitOutcome::ExtraConditionFailed(0) => return Err(GwError::NoSuchUpload),
        CommitOutcome::ExtraConditionFailed(_) => {
            return Err(GwError::Contention(
                "a part was re-uploaded during completion".into(),
            ))
        }
    };
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        version_id,
        bucket: Some(input.bucket.clone()),
        key: Some(input.key.clone()),
        e_tag: Some(etag(&etag_value)),
        location: Some(format!("/{}/{}", input.bucket, input.key)),
        server_side_encryption: sse_echo,
        ..with_checksums!(
            ChecksumFields::from_map(
                object_sum
                    .iter()
                    .flat_map(|o| [(o.sum.algo.name().to_string(), o.value.clone())])
                    .collect::<BTreeMap<_, _>>()
                    .iter()
            ),
            CompleteMultipartUploadOutput {
                checksum_type: object_sum.as_ref().map(|o| o.sum.kind.dto()),
            }
        )
    }))
}

pub async fn abort_multipart_upload(
    ctx: &Arc<Ctx>,
    req: S3Request<AbortMultipartUploadInput>,
) -> GwResult<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    check_key(&input.key)?;
    let bucket = load_bucket(&req.extensions)?;
    let bucket_id = bucket.record.id;
    let upload = load_upload(ctx, bucket_id, &input.key, &input.upload_id).await?;
    let task_ctx = ctx.clone();
    let (key, upload_id) = (input.key, input.upload_id);
    tokio::spawn(
        async move { abort_upload(&task_ctx, bucket_id, &key, &upload_id, &upload).await },
    )
    .await
    .map_err(|e| GwError::Internal(format!("abort task failed: {e}")))??;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

/// Removes an upload (as read: `upload`) and every part of it, reclaiming
/// their bodies; NoSuchUpload when it is gone or changed. Also used by
/// DeleteBucket, which aborts what uploads remain.
pub(crate) async fn abort_upload(
    ctx: &Arc<Ctx>,
    bucket_id: u64,
    key: &str,
    upload_id: &str,
    upload: &Versioned<MultipartUploadRecord>,
) -> GwResult<()> {
    for _ in 0..RMW_ATTEMPTS {
        let parts = all_parts(ctx, bucket_id, key, upload_id).await?;
        let locs: Vec<DataLocation> = parts
            .iter()
            .flat_map(|p| gc::part_locations(&p.record))
            .collect();
        let ukey = keys::upload_key(bucket_id, key.as_bytes(), upload_id);
        let (conditions, mut mutations) = remove_upload(ukey, upload, &parts);
        mutations.extend(gc::gc_mutations(bucket_id, key, &locs));
        match ctx.meta.batch(conditions, mutations).await? {
            BatchOutcome::Applied => {
                gc::spawn_reclaim(ctx.clone(), bucket_id, key.to_string(), locs);
                // A part that committed between our scan and the batch was
                // not in it; with the upload gone no other can commit now.
                remove_stray_parts(ctx, bucket_id, key, upload_id).await?;
                return Ok(());
            }
            BatchOutcome::ConditionFailed { index: 0 } => return Err(GwError::NoSuchUpload),
            BatchOutcome::ConditionFailed { .. } => continue,
        }
    }
    Err(GwError::Contention(
        "parts kept changing during abort".into(),
    ))
}

/// Deletes the part records (and reclaims the bodies) an upload that no
/// longer exists left behind.
async fn remove_stray_parts(
    ctx: &Arc<Ctx>,
    bucket_id: u64,
    key: &str,
    upload_id: &str,
) -> GwResult<()> {
    for p in all_parts(ctx, bucket_id, key, upload_id).await? {
        let locs = gc::part_locations(&p.record);
        let mut mutations = vec![meta::delete(Cf::Mpu, p.key.clone())];
        mutations.extend(gc::gc_mutations(bucket_id, key, &locs));
        let cond = vec![meta::value_equals(Cf::Mpu, p.key, p.raw)];
        if let BatchOutcome::Applied = ctx.meta.batch(cond, mutations).await? {
            gc::spawn_reclaim(ctx.clone(), bucket_id, key.to_string(), locs);
        }
    }
    Ok(())
}

pub async fn list_parts(
    ctx: &Arc<Ctx>,
    req: S3Request<ListPartsInput>,
) -> GwResult<S3Response<ListPartsOutput>> {
    let input = req.input;
    check_key(&input.key)?;
    let max = list::max_entries(input.max_parts, "max-parts")?;
    let marker = match input.part_number_marker {
        None => 0,
        Some(n) if n < 0 => {
            return Err(GwError::InvalidArgument(
                "part-number-marker must not be negative".into(),
            ))
        }
        Some(n) => n as u32,
    };
    let bucket = load_bucket(&req.extensions)?;
    let bucket_id = bucket.record.id;
    let upload = load_upload(ctx, bucket_id, &input.key, &input.upload_id).await?;
    let mut parts = scan_parts(
        ctx,
        bucket_id,
        &input.key,
        &input.upload_id,
        marker,
        max + 1,
    )
    .await?;
    let truncated = parts.len() > max;
    parts.truncate(max);
    let next = parts.last().map(|p| p.record.part_number as i32);
    let who = owner(&upload.record.owner);
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        max_parts: Some(max as i32),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: if truncated { next } else { None },
        is_truncated: Some(truncated),
        initiator: Some(initiator(&who)),
        owner: Some(who),
        storage_class: Some(s3s::dto::StorageClass::from(
            s3_class_name(upload.record.storage_class).to_string(),
        )),
        parts: Some(
            parts
                .into_iter()
                .map(|p| {
                    with_checksums!(
                        ChecksumFields::from_map(&p.record.checksums),
                        Part {
                            part_number: Some(p.record.part_number as i32),
                            e_tag: Some(etag(&p.record.etag)),
                            size: Some(p.record.size as i64),
                            last_modified: Some(timestamp(p.record.last_modified_unix_ms)),
                        }
                    )
                })
                .collect(),
        ),
        checksum_algorithm: upload_checksum(&upload.record)
            .map(|s| ChecksumAlgorithm::from(s.algo.name().to_string())),
        checksum_type: upload_checksum(&upload.record).map(|s| s.kind.dto()),
        ..Default::default()
    }))
}

/// Uploads are initiated and owned by the same principal.
fn initiator(owner: &Owner) -> Initiator {
    Initiator {
        display_name: owner.display_name.clone(),
        id: owner.id.clone(),
    }
}

fn decode_upload(
    parts: &ObjectKeyParts,
    kv: &kura_metashard::client::KvPair,
) -> GwResult<Decoded<MultipartUploadRecord>> {
    if parts.suffix.len() != UPLOAD_ID_LEN {
        return Ok(Decoded::Skip);
    }
    let rec: MultipartUploadRecord = keys::decode_value(&kv.value)?;
    // Skip this upload's part records in one seek.
    let resume_at = keys::prefix_successor(&kv.key);
    Ok(Decoded::Item {
        item: rec,
        resume_at,
    })
}

pub async fn list_multipart_uploads(
    ctx: &Arc<Ctx>,
    req: S3Request<ListMultipartUploadsInput>,
) -> GwResult<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    let url = wants_url_encoding(input.encoding_type.as_ref())?;
    let max = list::max_entries(input.max_uploads, "max-uploads")?;
    let bucket = load_bucket(&req.extensions)?;
    let bucket_id = bucket.record.id;
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.clone().unwrap_or_default();
    let key_marker = input.key_marker.clone().unwrap_or_default();
    let upload_id_marker = input.upload_id_marker.clone().unwrap_or_default();
    let start = if key_marker.is_empty() {
        Vec::new()
    } else if !upload_id_marker.is_empty() {
        keys::prefix_successor(&keys::upload_key(
            bucket_id,
            key_marker.as_bytes(),
            &upload_id_marker,
        ))
        .unwrap_or_else(|| keys::bucket_end(bucket_id))
    } else {
        list::cursor_after(bucket_id, &prefix, &delimiter, &key_marker)
    };
    let src = MetaSource { ctx, cf: Cf::Mpu };
    let listing = list::list_entries(
        &src,
        ListParams {
            bucket_id,
            prefix: &prefix,
            delimiter: &delimiter,
            max,
            start,
        },
        decode_upload,
    )
    .await?;
    let (mut next_key, mut next_upload) = (None, None);
    if listing.truncated {
        match listing.entries.last() {
            Some(Entry::Item { key, item }) => {
                next_key = Some(maybe_encode(key, url));
                next_upload = Some(item.upload_id.clone());
            }
            Some(Entry::Prefix(p)) => next_key = Some(maybe_encode(p, url)),
            None => {}
        }
    }
    let mut uploads = Vec::new();
    let mut prefixes = Vec::new();
    for e in listing.entries {
        match e {
            Entry::Item { key, item } => {
                let who = owner(&item.owner);
                uploads.push(MultipartUpload {
                    key: Some(maybe_encode(&key, url)),
                    upload_id: Some(item.upload_id),
                    initiated: Some(timestamp(item.initiated_unix_ms)),
                    initiator: Some(initiator(&who)),
                    owner: Some(who),
                    storage_class: Some(s3s::dto::StorageClass::from(
                        s3_class_name(item.storage_class).to_string(),
                    )),
                    ..Default::default()
                });
            }
            Entry::Prefix(p) => prefixes.push(CommonPrefix {
                prefix: Some(maybe_encode(&p, url)),
            }),
        }
    }
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: Some(maybe_encode(&prefix, url)),
        delimiter: (!delimiter.is_empty()).then(|| maybe_encode(&delimiter, url)),
        key_marker: Some(maybe_encode(&key_marker, url)),
        upload_id_marker: Some(upload_id_marker),
        next_key_marker: next_key,
        next_upload_id_marker: next_upload,
        max_uploads: Some(max as i32),
        is_truncated: Some(listing.truncated),
        uploads: Some(uploads),
        common_prefixes: Some(prefixes),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids() {
        let id = new_upload_id();
        assert!(valid_upload_id(&id), "{id}");
        assert_ne!(id, new_upload_id());
        assert!(!valid_upload_id("abc"));
        assert!(!valid_upload_id(&"G".repeat(32)));
        assert!(!valid_upload_id(&"a".repeat(36)));
    }

    #[test]
    fn multipart_etag_matches_s3() {
        // Two parts whose MD5s are md5("a") and md5("b"); value computed with
        // `cat <(md5 a) <(md5 b) | xxd -r -p | md5sum`.
        let a = "0cc175b9c0f1b6a831c399e269772661";
        let b = "92eb5ffee6ae2fec3ad71c777531578f";
        let mut h = Md5::new();
        h.update(hex::decode(a).unwrap());
        h.update(hex::decode(b).unwrap());
        let want = format!("{}-2", hex::encode(h.finalize()));
        assert_eq!(multipart_etag(&[a, b]).unwrap(), want);
        assert!(multipart_etag(&["zz"]).is_err());
    }

    fn stored(n: u32, size: u64, etag: &str) -> StoredPart {
        StoredPart {
            key: vec![n as u8],
            raw: Default::default(),
            record: PartRecord {
                part_number: n,
                size,
                etag: etag.into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn part_list_validation() {
        let big = MIN_PART_SIZE;
        let parts = [
            stored(1, big, "e1"),
            stored(2, big, "e2"),
            stored(3, 10, "e3"),
            stored(5, 1, "e5"),
        ];
        let map: BTreeMap<u32, &StoredPart> =
            parts.iter().map(|p| (p.record.part_number, p)).collect();
        let l = |v: &[(u32, &str)]| {
            v.iter()
                .map(|(n, e)| (*n, e.to_string()))
                .collect::<Vec<_>>()
        };

        let ok = choose_parts(&l(&[(1, "\"e1\""), (2, "e2"), (3, "e3")]), &map).unwrap();
        assert_eq!(
            ok.iter().map(|p| p.record.part_number).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(
            choose_parts(&l(&[(1, "e1"), (5, "e5")]), &map).is_ok(),
            "gaps are allowed"
        );
        assert!(matches!(
            choose_parts(&l(&[(2, "e2"), (1, "e1")]), &map),
            Err(GwError::InvalidPartOrder)
        ));
        assert!(matches!(
            choose_parts(&l(&[(1, "e1"), (1, "e1")]), &map),
            Err(GwError::InvalidPartOrder)
        ));
        assert!(matches!(
            choose_parts(&l(&[(3, "e3"), (1, "e1")]), &map),
            Err(GwError::InvalidPartOrder)
        ));
        assert!(matches!(
            choose_parts(&l(&[(1, "e1"), (4, "e4")]), &map),
            Err(GwError::InvalidPart(_))
        ));
        assert!(matches!(
            choose_parts(&l(&[(1, "bad")]), &map),
            Err(GwError::InvalidPart(_))
        ));
        assert!(matches!(
            choose_parts(&l(&[(3, "e3"), (5, "e5")]), &map),
            Err(GwError::EntityTooSmall)
        ));
        assert!(matches!(
            choose_parts(&l(&[]), &map),
            Err(GwError::MalformedXml(_))
        ));
    }

    #[test]
    fn part_numbers() {
        assert!(check_part_number(1).is_ok());
        assert!(check_part_number(10_000).is_ok());
        assert!(check_part_number(0).is_err());
        assert!(check_part_number(10_001).is_err());
        assert!(check_part_number(-1).is_err());
    }
}
