//! GetObject and HeadObject: linearizable record read, conditional headers,
//! Range and partNumber, then the body streamed by `data::reader`.

use std::ops::Range as ByteRange;
use std::sync::Arc;

use kura_proto::meta::ObjectRecord;
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::context::Ctx;
use crate::data::checksum::{with_checksums, ChecksumFields, Kind};
use crate::data::reader;
use crate::error::{GwError, GwResult};
use crate::s3::common::{
    etag, is_multipart, non_empty, parse_http_date, reported_class, timestamp, unix_seconds,
    unquote,
};
use crate::s3::encryption;
use crate::s3::versioning;

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => unquote(e.value()) == etag,
    }
}

/// RFC 9110 §13.2.2 evaluation order, as S3 does it.
pub fn check_conditions(
    rec: &ObjectRecord,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> GwResult<()> {
    let modified = rec.last_modified_unix_ms.div_euclid(1000);
    match (if_match, if_unmodified_since) {
        (Some(c), _) if !etag_matches(c, &rec.etag) => return Err(GwError::PreconditionFailed),
        (None, Some(t)) if modified > unix_seconds(t) => return Err(GwError::PreconditionFailed),
        _ => {}
    }
    let not_modified = || GwError::NotModified {
        etag: rec.etag.clone(),
        last_modified: crate::s3::common::format_http_date(&timestamp(rec.last_modified_unix_ms)),
    };
    match (if_none_match, if_modified_since) {
        (Some(c), _) if etag_matches(c, &rec.etag) => Err(not_modified()),
        (None, Some(t)) if modified <= unix_seconds(t) => Err(not_modified()),
        _ => Ok(()),
    }
}

/// The byte range to serve, with its Content-Range and the parts count to report.
#[derive(Debug, PartialEq, Eq)]
pub struct Selection {
    pub range: ByteRange<u64>,
    pub content_range: Option<String>,
    pub parts_count: Option<i32>,
}

/// Resolves Range / partNumber against the object.
pub fn select(
    rec: &ObjectRecord,
    range: Option<&Range>,
    part_number: Option<i32>,
) -> GwResult<Selection> {
    let size = rec.size;
    let content_range =
        |r: &ByteRange<u64>| Some(format!("bytes {}-{}/{}", r.start, r.end - 1, size));
    match (range, part_number) {
        (Some(_), Some(_)) => Err(GwError::InvalidRequest(
            "Cannot specify both Range header and partNumber query parameter".into(),
        )),
        (None, None) => Ok(Selection {
            range: 0..size,
            content_range: None,
            parts_count: None,
        }),
        (Some(r), None) => {
            let r = r.check(size).map_err(|_| GwError::InvalidRange)?;
            if r.is_empty() {
                return Err(GwError::InvalidRange);
            }
            Ok(Selection {
                content_range: content_range(&r),
                range: r,
                parts_count: None,
            })
        }
        (None, Some(n)) => {
            if n < 1 {
                return Err(GwError::InvalidArgument(
                    "Part number must be an integer between 1 and 10000, inclusive".into(),
                ));
            }
            if !is_multipart(rec) {
                if n != 1 {
                    return Err(GwError::InvalidPartNumber);
                }
                let r = 0..size;
                let cr = if size > 0 { content_range(&r) } else { None };
                return Ok(Selection {
                    range: r,
                    content_range: cr,
                    parts_count: None,
                });
            }
            let mut offset = 0u64;
            for p in &rec.parts {
                if p.part_number as i32 == n {
                    let r = offset..offset + p.size;
                    let cr = if p.size > 0 { content_range(&r) } else { None };
                    return Ok(Selection {
                        range: r,
                        content_range: cr,
                        parts_count: Some(rec.parts.len() as i32),
                    });
                }
                offset += p.size;
            }
            Err(GwError::InvalidPartNumber)
        }
    }
}

/// Checksums are returned for whole objects when asked for, with their
/// `x-amz-checksum-type`: a multipart object's is the value Complete derived
/// (COMPOSITE `…-N` or FULL_OBJECT, decision 0033); a single PUT's is
/// FULL_OBJECT. A multipart object completed without one has none.
fn checksums_for(
    rec: &ObjectRecord,
    mode: Option<&ChecksumMode>,
    sel: &Selection,
) -> ChecksumFields {
    let wanted = mode.is_some_and(|m| m.as_str().eq_ignore_ascii_case(ChecksumMode::ENABLED))
        && sel.content_range.is_none();
    if !wanted || rec.checksums.is_empty() {
        return ChecksumFields::from_map(std::iter::empty());
    }
    let mut f = ChecksumFields::from_map(&rec.checksums);
    f.kind = Some(match Kind::from_stored(rec.checksum_type) {
        Some(k) => k,
        // Written before checksum types were stored: only single PUTs had any.
        None if !is_multipart(rec) => Kind::FullObject,
        None => Kind::Composite,
    });
    f
}

fn content_type(rec: &ObjectRecord) -> String {
    if rec.content_type.is_empty() {
        "binary/octet-stream".to_string()
    } else {
        rec.content_type.clone()
    }
}

/// The answer of GetObject or HeadObject: the object's headers and checksums
/// for selection `$sel`, plus the `fields` only one of them has. s3s makes
/// the two outputs separate structs with the same field names, hence a macro.
macro_rules! object_output {
    ($out:ident { $($field:ident: $value:expr),* $(,)? }, $rec:expr, $sel:expr, $sums:expr) => {{
        let rec: &ObjectRecord = $rec;
        let sel: Selection = $sel;
        let sums: ChecksumFields = $sums;
        let checksum_type = sums.kind.map(|k| k.dto());
        with_checksums!(
            sums,
            $out {
                $($field: $value,)*
                checksum_type: checksum_type,
                accept_ranges: Some("bytes".to_string()),
                content_length: Some((sel.range.end - sel.range.start) as i64),
                content_range: sel.content_range,
                parts_count: sel.parts_count,
                e_tag: Some(etag(&rec.etag)),
                last_modified: Some(timestamp(rec.last_modified_unix_ms)),
                content_type: Some(content_type(rec)),
                content_encoding: non_empty(&rec.content_encoding),
                content_disposition: non_empty(&rec.content_disposition),
                content_language: non_empty(&rec.content_language),
                cache_control: non_empty(&rec.cache_control),
                expires: parse_http_date(&rec.expires),
                metadata: (!rec.user_metadata.is_empty()).then(|| rec.user_metadata.clone()),
                storage_class: reported_class(rec.storage_class),
            }
        )
    }};
}

/// The version a GET/HEAD serves (the latest, or `versionId`'s) and the
/// `x-amz-version-id` to report with it.
async fn load(
    ctx: &Ctx,
    ext: &http::Extensions,
    key: &str,
    version_id: Option<&str>,
) -> GwResult<(ObjectRecord, Option<String>)> {
    let (stored, reported) = versioning::load_addressed(ctx, ext, key, version_id).await?;
    Ok((stored.record, reported))
}

pub async fn get_object(
    ctx: &Arc<Ctx>,
    req: S3Request<GetObjectInput>,
) -> GwResult<S3Response<GetObjectOutput>> {
    let input = req.input;
    let (rec, version_id) = load(
        ctx,
        &req.extensions,
        &input.key,
        input.version_id.as_deref(),
    )
    .await?;
    let keys = encryption::read_keys(ctx, &rec, &encryption::sse_customer_headers!(input))?;
    check_conditions(
        &rec,
        input.if_match.as_ref(),
        input.if_none_match.as_ref(),
        input.if_modified_since.as_ref(),
        input.if_unmodified_since.as_ref(),
    )?;
    let sel = select(&rec, input.range.as_ref(), input.part_number)?;
    let len = sel.range.end - sel.range.start;
    let pieces = reader::plan(
        &reader::bodies(&rec, encryption::ciphers(&keys))?,
        sel.range.clone(),
    );
    let body = reader::open(ctx.clone(), pieces, len).await?;
    let f = checksums_for(&rec, input.checksum_mode.as_ref(), &sel);
    let tag_count = crate::s3::tagging::count(&rec); // x-amz-tagging-count
    let lock = crate::s3::object_lock::view(ctx, &req.extensions, &input.key, &rec);
    let output = object_output!(
        GetObjectOutput {
            body: Some(body),
            tag_count: tag_count,
            version_id: version_id,
            object_lock_mode: lock.mode,
            object_lock_retain_until_date: lock.retain_until,
            object_lock_legal_hold_status: lock.legal_hold
        },
        &rec,
        sel,
        f
    );
    Ok(encryption::with_echo(
        S3Response::new(output),
        keys.map(|k| k.echo),
    ))
}

pub async fn head_object(
    ctx: &Arc<Ctx>,
    req: S3Request<HeadObjectInput>,
) -> GwResult<S3Response<HeadObjectOutput>> {
    let input = req.input;
    let (rec, version_id) = load(
        ctx,
        &req.extensions,
        &input.key,
        input.version_id.as_deref(),
    )
    .await?;
    let keys = encryption::read_keys(ctx, &rec, &encryption::sse_customer_headers!(input))?;
    check_conditions(
        &rec,
        input.if_match.as_ref(),
        input.if_none_match.as_ref(),
        input.if_modified_since.as_ref(),
        input.if_unmodified_since.as_ref(),
    )?;
    let sel = select(&rec, input.range.as_ref(), input.part_number)?;
    let partial = sel.content_range.is_some();
    let f = checksums_for(&rec, input.checksum_mode.as_ref(), &sel);
    let lock = crate::s3::object_lock::view(ctx, &req.extensions, &input.key, &rec);
    let output = object_output!(
        HeadObjectOutput {
            version_id: version_id,
            object_lock_mode: lock.mode,
            object_lock_retain_until_date: lock.retain_until,
            object_lock_legal_hold_status: lock.legal_hold
        },
        &rec,
        sel,
        f
    );
    // s3s ignores `S3Response::status` here; `server.rs` turns a HEAD with
    // Content-Range into 206. Keep the status for our own metrics.
    let mut resp = S3Response::new(output);
    crate::s3::tagging::set_count_header(&mut resp.headers, &rec);
    encryption::echo(&mut resp.headers, encryption::echo_of(&keys));
    if partial {
        resp.status = Some(http::StatusCode::PARTIAL_CONTENT);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_proto::meta::PartRef;

    fn obj(size: u64) -> ObjectRecord {
        ObjectRecord {
            size,
            etag: "abc".into(),
            last_modified_unix_ms: 1_000_500,
            ..Default::default()
        }
    }

    fn mp() -> ObjectRecord {
        ObjectRecord {
            size: 15,
            etag: "abc-3".into(),
            parts: [(1, 5), (2, 5), (4, 5)]
                .iter()
                .map(|&(n, s)| PartRef {
                    part_number: n,
                    size: s,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn r(s: &str) -> Range {
        Range::parse(s).unwrap()
    }

    #[test]
    fn ranges() {
        let o = obj(100);
        assert_eq!(select(&o, None, None).unwrap().range, 0..100);
        let s = select(&o, Some(&r("bytes=0-9")), None).unwrap();
        assert_eq!(s.range, 0..10);
        assert_eq!(s.content_range.as_deref(), Some("bytes 0-9/100"));
        assert_eq!(
            select(&o, Some(&r("bytes=90-")), None).unwrap().range,
            90..100
        );
        assert_eq!(
            select(&o, Some(&r("bytes=-10")), None).unwrap().range,
            90..100
        );
        assert_eq!(
            select(&o, Some(&r("bytes=-1000")), None).unwrap().range,
            0..100
        );
        assert_eq!(
            select(&o, Some(&r("bytes=50-1000")), None).unwrap().range,
            50..100
        );
        assert!(matches!(
            select(&o, Some(&r("bytes=100-")), None),
            Err(GwError::InvalidRange)
        ));
        assert!(matches!(
            select(&o, Some(&r("bytes=-0")), None),
            Err(GwError::InvalidRange)
        ));
        assert!(matches!(
            select(&obj(0), Some(&r("bytes=0-")), None),
            Err(GwError::InvalidRange)
        ));
        assert!(matches!(
            select(&obj(0), Some(&r("bytes=-5")), None),
            Err(GwError::InvalidRange)
        ));
        assert!(select(&o, Some(&r("bytes=0-1")), Some(1)).is_err());
    }

    #[test]
    fn part_numbers() {
        let m = mp();
        let s = select(&m, None, Some(2)).unwrap();
        assert_eq!(s.range, 5..10);
        assert_eq!(s.parts_count, Some(3));
        assert_eq!(s.content_range.as_deref(), Some("bytes 5-9/15"));
        assert_eq!(select(&m, None, Some(4)).unwrap().range, 10..15);
        assert!(matches!(
            select(&m, None, Some(3)),
            Err(GwError::InvalidPartNumber)
        ));
        assert!(select(&m, None, Some(0)).is_err());
        let o = obj(7);
        assert_eq!(select(&o, None, Some(1)).unwrap().range, 0..7);
        assert!(matches!(
            select(&o, None, Some(2)),
            Err(GwError::InvalidPartNumber)
        ));
    }

    #[test]
    fn conditionals() {
        let o = obj(1); // last modified at 1000.5 s
        let at = |s: i64| Timestamp::from(time::OffsetDateTime::from_unix_timestamp(s).unwrap());
        let tag = |s: &str| ETagCondition::ETag(ETag::Strong(s.into()));
        assert!(check_conditions(&o, Some(&tag("abc")), None, None, None).is_ok());
        assert!(matches!(
            check_conditions(&o, Some(&tag("x")), None, None, None),
            Err(GwError::PreconditionFailed)
        ));
        assert!(check_conditions(&o, Some(&ETagCondition::Any), None, None, None).is_ok());
        assert!(matches!(
            check_conditions(&o, None, Some(&tag("abc")), None, None),
            Err(GwError::NotModified { .. })
        ));
        assert!(check_conditions(&o, None, Some(&tag("x")), None, None).is_ok());
        // If-Match true wins over a failing If-Unmodified-Since.
        assert!(check_conditions(&o, Some(&tag("abc")), None, None, Some(&at(10))).is_ok());
        assert!(matches!(
            check_conditions(&o, None, None, None, Some(&at(999))),
            Err(GwError::PreconditionFailed)
        ));
        assert!(check_conditions(&o, None, None, None, Some(&at(1000))).is_ok());
        assert!(matches!(
            check_conditions(&o, None, None, Some(&at(1000)), None),
            Err(GwError::NotModified { .. })
        ));
        assert!(check_conditions(&o, None, None, Some(&at(999)), None).is_ok());
        // If-None-Match false means If-Modified-Since is ignored.
        assert!(check_conditions(&o, None, Some(&tag("x")), Some(&at(5000)), None).is_ok());
    }
}
