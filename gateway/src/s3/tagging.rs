//! Object and bucket tagging: Put/Get/DeleteObjectTagging,
//! Put/Get/DeleteBucketTagging, and the tags a write stores (`x-amz-tagging`
//! on PutObject, CreateMultipartUpload and CopyObject with
//! `x-amz-tagging-directive: REPLACE`; `x-amz-tagging-count` on GET/HEAD).
//!
//! Tags live in the record they describe (ObjectRecord.tags, BucketRecord.tags),
//! sorted by key, so reading them costs nothing extra and they go wherever
//! the record goes. A tag change is a read-modify-write of the object's record
//! by compare-and-set (one conditional batch on one key), retried when the
//! record changed meanwhile: it can never undo a concurrent overwrite, and an
//! overwrite that lands first simply gets the new tags applied to it.
//! The limits and error codes are AWS's (docs/decisions/0030).

use std::collections::BTreeMap;
use std::sync::Arc;

use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::{self as pb, ObjectRecord};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::authz::Authorized;
use crate::context::Ctx;
use crate::error::{GwError, GwResult};
use crate::meta::RMW_ATTEMPTS;
use crate::s3::common::update_bucket;
use crate::s3::versioning::{self};

/// Most tags on one object (AWS).
pub const MAX_OBJECT_TAGS: usize = 10;
/// Most tags on one bucket (AWS).
pub const MAX_BUCKET_TAGS: usize = 50;
/// Longest key and value, in UTF-16 code units: AWS counts "Unicode
/// characters" as S3 stores them internally, in UTF-16.
const MAX_KEY_CHARS: usize = 128;
const MAX_VALUE_CHARS: usize = 256;

const HEADER_MALFORMED: &str = "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters without tag name duplicates.";

/// What is being tagged: the limits and messages differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Object,
    Bucket,
}

/// Letters, numbers, white space and `_ . : / = + - @` (AWS's tag
/// character set, `[\p{L}\p{Z}\p{N}_.:/=+\-@]`).
fn allowed_char(c: char) -> bool {
    c.is_alphabetic()
        || c.is_numeric()
        || (c.is_whitespace() && !c.is_control())
        || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
}

/// Checks a tag set against AWS's limits and returns it sorted by key.
pub fn validate(tags: Vec<(String, String)>, target: Target) -> GwResult<Vec<pb::Tag>> {
    match target {
        Target::Object if tags.len() > MAX_OBJECT_TAGS => {
            return Err(GwError::BadRequest(
                "Object tags cannot be greater than 10".into(),
            ))
        }
        Target::Bucket if tags.len() > MAX_BUCKET_TAGS => {
            return Err(GwError::InvalidTag(
                "Bucket tag count cannot be greater than 50".into(),
            ))
        }
        _ => {}
    }
    let mut sorted = BTreeMap::new();
    for (key, value) in tags {
        if key.is_empty() || !key.chars().all(allowed_char) {
            return Err(GwError::InvalidTag(
                "The TagKey you have provided is invalid".into(),
            ));
        }
        if key.encode_utf16().count() > MAX_KEY_CHARS {
            return Err(GwError::InvalidTag(
                "The TagKey you have provided is too long, max 128".into(),
            ));
        }
        if !value.chars().all(allowed_char) {
            return Err(GwError::InvalidTag(
                "The TagValue you have provided is invalid".into(),
            ));
        }
        if value.encode_utf16().count() > MAX_VALUE_CHARS {
            return Err(GwError::InvalidTag(
                "The TagValue you have provided is too long, max 256".into(),
            ));
        }
        if key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
            return Err(GwError::InvalidTag(match target {
                Target::Object => "Your TagKey cannot be prefixed with aws:".into(),
                Target::Bucket => "System tags cannot be added/updated by requester".into(),
            }));
        }
        if sorted.insert(key, value).is_some() {
            return Err(GwError::InvalidTag(
                "Cannot provide multiple Tags with the same key".into(),
            ));
        }
    }
    Ok(sorted
        .into_iter()
        .map(|(key, value)| pb::Tag { key, value })
        .collect())
}

/// One `x-amz-tagging` component, form-decoded (`+` is a space).
fn form_decode(s: &str) -> GwResult<String> {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| GwError::InvalidArgument(HEADER_MALFORMED.into()))
}

/// The tags of an `x-amz-tagging` header (`k1=v1&k2=v2`, URL-encoded; a
/// key without `=` has the empty value). None or empty: no tags.
pub fn parse_header(header: Option<&str>) -> GwResult<Vec<pb::Tag>> {
    let Some(header) = header.map(str::trim).filter(|h| !h.is_empty()) else {
        return Ok(Vec::new());
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for piece in header.split('&').filter(|p| !p.is_empty()) {
        let mut parts = piece.split('=');
        let key = form_decode(parts.next().unwrap_or_default())?;
        let value = form_decode(parts.next().unwrap_or_default())?;
        if parts.next().is_some() || pairs.iter().any(|(k, _)| *k == key) {
            return Err(GwError::InvalidArgument(HEADER_MALFORMED.into()));
        }
        pairs.push((key, value));
    }
    validate(pairs, Target::Object)
}

/// The tags of a `<Tagging>` body.
pub fn from_dto(tagging: &Tagging, target: Target) -> GwResult<Vec<pb::Tag>> {
    let pairs = tagging
        .tag_set
        .iter()
        .map(|t| {
            let key = t
                .key
                .clone()
                .ok_or_else(|| GwError::MalformedXml("a Tag has no Key".into()))?;
            Ok((key, t.value.clone().unwrap_or_default()))
        })
        .collect::<GwResult<Vec<_>>>()?;
    validate(pairs, target)
}

fn to_dto(tags: &[pb::Tag]) -> TagSet {
    tags.iter()
        .map(|t| Tag {
            key: Some(t.key.clone()),
            value: Some(t.value.clone()),
        })
        .collect()
}

/// `x-amz-tagging-count` of GET/HEAD: only when the object has tags.
pub fn count(rec: &ObjectRecord) -> Option<i32> {
    (!rec.tags.is_empty()).then_some(rec.tags.len() as i32)
}

/// `x-amz-tagging-count` on a HeadObject answer (s3s' HeadObjectOutput
/// has no field for it, unlike GetObjectOutput).
pub fn set_count_header(headers: &mut http::HeaderMap, rec: &ObjectRecord) {
    if let Some(n) = count(rec) {
        headers.insert("x-amz-tagging-count", http::HeaderValue::from(n));
    }
}

/// The tags a CopyObject gives its copy: the source's (`COPY`, the
/// default) or the request's `x-amz-tagging` (`REPLACE`).
pub fn for_copy(
    directive: Option<&TaggingDirective>,
    header: Option<&str>,
    src: &ObjectRecord,
) -> GwResult<Vec<pb::Tag>> {
    match directive.map(|d| d.as_str().to_ascii_uppercase()) {
        None => Ok(src.tags.clone()),
        Some(d) if d == TaggingDirective::COPY => Ok(src.tags.clone()),
        Some(d) if d == TaggingDirective::REPLACE => parse_header(header),
        Some(_) => Err(GwError::InvalidArgument(
            "Unknown tagging directive.".into(),
        )),
    }
}

/// Replaces the tags of the addressed object by compare-and-set on its
/// record, retrying when a concurrent write changed the record meanwhile
/// (then the new tags go onto whatever is current). Returns the version id
/// to report.
async fn set_object_tags(
    ctx: &Ctx,
    ext: &http::Extensions,
    key: &str,
    version_id: Option<&str>,
    tags: Vec<pb::Tag>,
) -> GwResult<Option<String>> {
    for attempt in 0..RMW_ATTEMPTS {
        let (current, reported) = versioning::load_addressed(ctx, ext, key, version_id).await?;
        let mut rec = current.record.clone();
        rec.tags = tags.clone();
        let value = keys::encode_value(&rec);
        if ctx
            .meta
            .swap(Cf::Meta, &current.meta_key(), Some(&current.raw), &value)
            .await?
        {
            return Ok(reported);
        }
        tracing::debug!(attempt, "object changed during its tag update; retrying");
    }
    Err(GwError::Contention(
        "object changed during its tag update".into(),
    ))
}

pub async fn get_object_tagging(
    ctx: &Arc<Ctx>,
    req: S3Request<GetObjectTaggingInput>,
) -> GwResult<S3Response<GetObjectTaggingOutput>> {
    let input = &req.input;
    let (rec, version_id) = versioning::load_addressed(
        ctx,
        &req.extensions,
        &input.key,
        input.version_id.as_deref(),
    )
    .await?;
    Ok(S3Response::new(GetObjectTaggingOutput {
        tag_set: to_dto(&rec.record.tags),
        version_id,
    }))
}

pub async fn put_object_tagging(
    ctx: &Arc<Ctx>,
    req: S3Request<PutObjectTaggingInput>,
) -> GwResult<S3Response<PutObjectTaggingOutput>> {
    let input = &req.input;
    let tags = from_dto(&input.tagging, Target::Object)?;
    let version_id = set_object_tags(
        ctx,
        &req.extensions,
        &input.key,
        input.version_id.as_deref(),
        tags,
    )
    .await?;
    Ok(S3Response::new(PutObjectTaggingOutput { version_id }))
}

pub async fn delete_object_tagging(
    ctx: &Arc<Ctx>,
    req: S3Request<DeleteObjectTaggingInput>,
) -> GwResult<S3Response<DeleteObjectTaggingOutput>> {
    let input = &req.input;
    let version_id = set_object_tags(
        ctx,
        &req.extensions,
        &input.key,
        input.version_id.as_deref(),
        Vec::new(),
    )
    .await?;
    let mut resp = S3Response::new(DeleteObjectTaggingOutput { version_id });
    resp.status = Some(http::StatusCode::NO_CONTENT);
    Ok(resp)
}

pub async fn get_bucket_tagging(
    _ctx: &Arc<Ctx>,
    req: S3Request<GetBucketTaggingInput>,
) -> GwResult<S3Response<GetBucketTaggingOutput>> {
    let bucket = Authorized::of(&req.extensions)?.bucket()?.record;
    if bucket.tags.is_empty() {
        return Err(GwError::NoSuchTagSet);
    }
    Ok(S3Response::new(GetBucketTaggingOutput {
        tag_set: to_dto(&bucket.tags),
    }))
}

pub async fn put_bucket_tagging(
    ctx: &Arc<Ctx>,
    req: S3Request<PutBucketTaggingInput>,
) -> GwResult<S3Response<PutBucketTaggingOutput>> {
    let tags = from_dto(&req.input.tagging, Target::Bucket)?;
    update_bucket(ctx, &req.extensions, |rec| {
        rec.tags = tags.clone();
        Ok(())
    })
    .await?;
    Ok(S3Response::new(PutBucketTaggingOutput {}))
}

pub async fn delete_bucket_tagging(
    ctx: &Arc<Ctx>,
    req: S3Request<DeleteBucketTaggingInput>,
) -> GwResult<S3Response<DeleteBucketTaggingOutput>> {
    update_bucket(ctx, &req.extensions, |rec| {
        rec.tags.clear();
        Ok(())
    })
    .await?;
    let mut resp = S3Response::new(DeleteBucketTaggingOutput {});
    resp.status = Some(http::StatusCode::NO_CONTENT);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn keys_of(tags: &[pb::Tag]) -> Vec<(&str, &str)> {
        tags.iter()
            .map(|t| (t.key.as_str(), t.value.as_str()))
            .collect()
    }

    #[test]
    fn headers() {
        assert!(parse_header(None).unwrap().is_empty());
        assert!(parse_header(Some("")).unwrap().is_empty());
        let t = parse_header(Some("foo=bar&bar")).unwrap();
        // Sorted by key; a key without '=' holds the empty value.
        assert_eq!(keys_of(&t), vec![("bar", ""), ("foo", "bar")]);
        let t = parse_header(Some("a%20b=c+d&k%3A1=%C3%A9t%C3%A9")).unwrap();
        assert_eq!(keys_of(&t), vec![("a b", "c d"), ("k:1", "été")]);
        for bad in ["a=1&a=2", "TagSet=[{Key=string,Value=string}]", "a=%FF"] {
            assert!(
                matches!(parse_header(Some(bad)), Err(GwError::InvalidArgument(_))),
                "{bad}"
            );
        }
        // Decodes to characters outside the tag set.
        assert!(matches!(
            parse_header(Some("TagSet%3D%5B%7BKey%3Dstring%2CValue%3Dstring%7D%5D")),
            Err(GwError::InvalidTag(_))
        ));
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        assert!(matches!(
            parse_header(Some(&eleven.join("&"))),
            Err(GwError::BadRequest(_))
        ));
    }

    #[test]
    fn limits() {
        let ok = pairs(&[(&"k".repeat(128), &"v".repeat(256))]);
        assert!(validate(ok, Target::Object).is_ok());
        // 128 UTF-16 units: 64 characters outside the BMP are 128 units.
        let astral = "𝒜".repeat(64);
        assert!(validate(pairs(&[(&astral, "")]), Target::Object).is_ok());
        let astral = "𝒜".repeat(65);
        assert!(validate(pairs(&[(&astral, "")]), Target::Object).is_err());
        for bad in [
            pairs(&[(&"k".repeat(129), "v")]),
            pairs(&[("k", &"v".repeat(257))]),
            pairs(&[("", "v")]),
            pairs(&[("a", "1"), ("a", "2")]),
            pairs(&[("aws:x", "1")]),
            pairs(&[("AWS:x", "1")]),
            pairs(&[("k<", "v")]),
            pairs(&[("k", "v\n")]),
        ] {
            assert!(
                matches!(
                    validate(bad.clone(), Target::Object),
                    Err(GwError::InvalidTag(_))
                ),
                "{bad:?}"
            );
        }
        let ten: Vec<(String, String)> = (0..10).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(validate(ten, Target::Object).unwrap().len(), 10);
        let fifty: Vec<(String, String)> = (0..50).map(|i| (format!("k{i}"), "".into())).collect();
        assert_eq!(validate(fifty.clone(), Target::Bucket).unwrap().len(), 50);
        assert!(matches!(
            validate(fifty, Target::Object),
            Err(GwError::BadRequest(_))
        ));
        let many: Vec<(String, String)> = (0..51).map(|i| (format!("k{i}"), "".into())).collect();
        assert!(matches!(
            validate(many, Target::Bucket),
            Err(GwError::InvalidTag(_))
        ));
        // Letters and numbers of any script, spaces and the listed symbols.
        assert!(validate(pairs(&[("日本 語_.:/=+-@", "Ünï 42")]), Target::Object).is_ok());
    }

    #[test]
    fn copies() {
        let src = ObjectRecord {
            tags: vec![pb::Tag {
                key: "a".into(),
                value: "1".into(),
            }],
            ..Default::default()
        };
        assert_eq!(for_copy(None, Some("b=2"), &src).unwrap(), src.tags);
        let copy = TaggingDirective::from_static(TaggingDirective::COPY);
        assert_eq!(for_copy(Some(&copy), None, &src).unwrap(), src.tags);
        let replace = TaggingDirective::from_static(TaggingDirective::REPLACE);
        let t = for_copy(Some(&replace), Some("b=2"), &src).unwrap();
        assert_eq!(keys_of(&t), vec![("b", "2")]);
        assert!(for_copy(Some(&replace), None, &src).unwrap().is_empty());
        let bad = TaggingDirective::from("MOVE".to_string());
        assert!(for_copy(Some(&bad), None, &src).is_err());
        assert_eq!(count(&src), Some(1));
        assert_eq!(count(&ObjectRecord::default()), None);
    }
}
