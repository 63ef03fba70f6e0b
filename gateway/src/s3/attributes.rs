//! GetObjectAttributes: what HEAD tells plus the parts of a multipart object
//! and their checksums, without the body (docs/decisions/0033).
//!
//! The addressed version is found as GetObject finds it (`versionId`, the
//! delete-marker answers, the object half of the access check); an SSE-C
//! object needs its key, as AWS. Only the attributes named in
//! `x-amz-object-attributes` are returned.

use std::sync::Arc;

use kura_proto::meta::ObjectRecord;
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::context::{Ctx, MAX_PART_NUMBER};
use crate::data::checksum::{Algo, ChecksumFields, Kind};
use crate::error::{GwError, GwResult};
use crate::s3::common::{etag, is_multipart, s3_class_name, timestamp};
use crate::s3::encryption;
use crate::s3::versioning;

/// Most parts one answer lists (AWS: 1,000).
const MAX_PARTS: i32 = 1000;

/// The attributes a request names.
#[derive(Debug, Default, PartialEq, Eq)]
struct Wanted {
    etag: bool,
    checksum: bool,
    parts: bool,
    storage_class: bool,
    size: bool,
}

/// `x-amz-object-attributes`: one or more comma-separated names, in one
/// header or several; an unknown name is refused as AWS does.
fn wanted(list: &[ObjectAttributes]) -> GwResult<Wanted> {
    let mut w = Wanted::default();
    for v in list {
        for name in v.as_str().split(',').map(str::trim) {
            match name {
                "ETag" => w.etag = true,
                "Checksum" => w.checksum = true,
                "ObjectParts" => w.parts = true,
                "StorageClass" => w.storage_class = true,
                "ObjectSize" => w.size = true,
                "" => {}
                _ => {
                    return Err(GwError::InvalidArgument(
                        "Invalid attribute name specified.".into(),
                    ))
                }
            }
        }
    }
    if w == Wanted::default() {
        return Err(GwError::InvalidRequest(
            "The x-amz-object-attributes header specifying the attributes to be retrieved is either missing or empty"
                .into(),
        ));
    }
    Ok(w)
}

/// The whole-object checksum and its type, when the object has one.
fn checksum(rec: &ObjectRecord) -> Option<Checksum> {
    if rec.checksums.is_empty() {
        return None;
    }
    let f = ChecksumFields::from_map(&rec.checksums);
    let kind = Kind::from_stored(rec.checksum_type).unwrap_or(if is_multipart(rec) {
        Kind::Composite
    } else {
        Kind::FullObject
    });
    Some(Checksum {
        checksum_crc32: f.crc32,
        checksum_crc32c: f.crc32c,
        checksum_crc64nvme: f.crc64nvme,
        checksum_sha1: f.sha1,
        checksum_sha256: f.sha256,
        checksum_type: Some(kind.dto()),
    })
}

/// One page of a multipart object's parts, after `marker`, at most `max`.
fn parts_page(rec: &ObjectRecord, marker: i32, max: i32) -> GetObjectAttributesParts {
    // The algorithm the per-part values are of (the object's only one).
    let algo = rec.checksums.keys().find_map(|k| Algo::from_name(k));
    let with_sums = rec.part_checksums.len() == rec.parts.len();
    let after: Vec<(usize, &kura_proto::meta::PartRef)> = rec
        .parts
        .iter()
        .enumerate()
        .filter(|(_, p)| p.part_number as i64 > marker as i64)
        .collect();
    let truncated = after.len() > max as usize;
    let page: Vec<ObjectPart> = after
        .iter()
        .take(max as usize)
        .map(|(i, p)| {
            let sum = if with_sums {
                algo.zip(rec.part_checksums.get(*i).cloned())
            } else {
                None
            };
            let mut part = ObjectPart {
                part_number: Some(p.part_number as i32),
                size: Some(p.size as i64),
                ..Default::default()
            };
            match sum {
                Some((Algo::Crc32, v)) => part.checksum_crc32 = Some(v),
                Some((Algo::Crc32c, v)) => part.checksum_crc32c = Some(v),
                Some((Algo::Crc64Nvme, v)) => part.checksum_crc64nvme = Some(v),
                Some((Algo::Sha1, v)) => part.checksum_sha1 = Some(v),
                Some((Algo::Sha256, v)) => part.checksum_sha256 = Some(v),
                None => {}
            }
            part
        })
        .collect();
    let next = page.last().and_then(|p| p.part_number);
    GetObjectAttributesParts {
        total_parts_count: Some(rec.parts.len() as i32),
        part_number_marker: Some(marker),
        next_part_number_marker: if truncated { next } else { None },
        max_parts: Some(max),
        is_truncated: Some(truncated),
        parts: Some(page),
    }
}

pub async fn get_object_attributes(
    ctx: &Arc<Ctx>,
    req: S3Request<GetObjectAttributesInput>,
) -> GwResult<S3Response<GetObjectAttributesOutput>> {
    let input = req.input;
    let w = wanted(&input.object_attributes)?;
    let max = match input.max_parts {
        None => MAX_PARTS,
        Some(n) if (0..=MAX_PARTS).contains(&n) => n,
        Some(_) => {
            return Err(GwError::InvalidArgument(format!(
                "max-parts must be between 0 and {MAX_PARTS}"
            )))
        }
    };
    let marker = match input.part_number_marker {
        None => 0,
        Some(n) if (0..={ MAX_PART_NUMBER }).contains(&n) => n,
        Some(_) => {
            return Err(GwError::InvalidArgument(format!(
                "part-number-marker must be between 0 and {MAX_PART_NUMBER}"
            )))
        }
    };
    let (stored, version_id) = versioning::load_addressed(
        ctx,
        &req.extensions,
        &input.key,
        input.version_id.as_deref(),
    )
    .await?;
    let rec = stored.record;
    // An SSE-C object answers only to its key, as GET does.
    encryption::read_keys(ctx, &rec, &encryption::sse_customer_headers!(input))?;
    let output = GetObjectAttributesOutput {
        e_tag: w.etag.then(|| etag(&rec.etag)),
        checksum: if w.checksum { checksum(&rec) } else { None },
        object_parts: (w.parts && is_multipart(&rec)).then(|| parts_page(&rec, marker, max)),
        storage_class: w
            .storage_class
            .then(|| StorageClass::from(s3_class_name(rec.storage_class).to_string())),
        object_size: w.size.then_some(rec.size as i64),
        last_modified: Some(timestamp(rec.last_modified_unix_ms)),
        version_id,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_proto::meta::PartRef;

    fn names(v: &[&str]) -> Vec<ObjectAttributes> {
        v.iter()
            .map(|s| ObjectAttributes::from(s.to_string()))
            .collect()
    }

    #[test]
    fn attribute_names() {
        let w = wanted(&names(&["ETag,ObjectSize", "StorageClass"])).unwrap();
        assert!(w.etag && w.size && w.storage_class && !w.parts && !w.checksum);
        let w = wanted(&names(&["Checksum, ObjectParts"])).unwrap();
        assert!(w.checksum && w.parts);
        assert!(matches!(
            wanted(&names(&["ETag,Size"])),
            Err(GwError::InvalidArgument(_))
        ));
        assert!(matches!(
            wanted(&names(&[""])),
            Err(GwError::InvalidRequest(_))
        ));
    }

    #[test]
    fn parts_are_paged() {
        let rec = ObjectRecord {
            etag: "x-3".into(),
            parts: [(1, 5), (2, 6), (4, 7)]
                .iter()
                .map(|&(n, s)| PartRef {
                    part_number: n,
                    size: s,
                    ..Default::default()
                })
                .collect(),
            checksums: [("CRC32".to_string(), "AAAAAA==-3".to_string())].into(),
            part_checksums: vec!["a".into(), "b".into(), "c".into()],
            ..Default::default()
        };
        let p = parts_page(&rec, 0, 2);
        assert_eq!(p.total_parts_count, Some(3));
        assert_eq!(p.is_truncated, Some(true));
        assert_eq!(p.next_part_number_marker, Some(2));
        let got = p.parts.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].checksum_crc32.as_deref(), Some("b"));
        assert_eq!(got[1].size, Some(6));
        let p = parts_page(&rec, 2, 2);
        assert_eq!(p.is_truncated, Some(false));
        assert_eq!(p.next_part_number_marker, None);
        let got = p.parts.unwrap();
        assert_eq!(got[0].part_number, Some(4));
        assert_eq!(got[0].checksum_crc32.as_deref(), Some("c"));
    }
}
