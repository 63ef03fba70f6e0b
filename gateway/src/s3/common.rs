//! Helpers shared by the operation files: bucket lookup, key checks, record
//! keys, and conversions between stored records and s3s DTO values.

use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::{BucketRecord, ObjectRecord, StorageClass};
use s3s::dto::{ETag, Owner, Timestamp, TimestampFormat};

use crate::authz::Authorized;
use crate::context::{Ctx, MAX_KEY_LEN};
use crate::error::{GwError, GwResult};
use crate::meta::{Versioned, RMW_ATTEMPTS};
use crate::storage_class;

/// The only object version that exists today.
pub const NULL_VERSION: u64 = 0;

/// The bucket a request addresses, as the access check read it
/// (linearizable, moments ago); NoSuchBucket when absent.
pub fn load_bucket(ext: &http::Extensions) -> GwResult<Versioned<BucketRecord>> {
    Authorized::of(ext)?.bucket()
}

/// Reads the addressed bucket's record again (after a lost race).
pub async fn reload_bucket(ctx: &Ctx, ext: &http::Extensions) -> GwResult<Versioned<BucketRecord>> {
    let name = Authorized::of(ext)?.bucket_name()?;
    ctx.meta
        .get_shared::<BucketRecord>(Cf::Meta, &name.key())
        .await?
        .ok_or(GwError::NoSuchBucket)
}

/// Changes the addressed bucket's record by compare-and-set; `change` sees
/// the current record (again after a lost race) and may refuse.
pub async fn update_bucket(
    ctx: &Ctx,
    ext: &http::Extensions,
    change: impl Fn(&mut BucketRecord) -> GwResult<()>,
) -> GwResult<()> {
    let key = Authorized::of(ext)?.bucket_name()?.key();
    let mut bucket = Authorized::of(ext)?.bucket()?;
    for _ in 0..RMW_ATTEMPTS {
        let mut rec: BucketRecord = bucket.record.clone();
        change(&mut rec)?;
        let value = keys::encode_value(&rec);
        if ctx
            .meta
            .swap(Cf::Meta, &key, Some(&bucket.raw), &value)
            .await?
        {
            return Ok(());
        }
        bucket = reload_bucket(ctx, ext).await?;
    }
    Err(GwError::Contention(
        "bucket changed during its update".into(),
    ))
}

/// The class a new body goes to: `x-amz-storage-class` when the client sent
/// one, else the bucket's. InvalidStorageClass for names we do not know and
/// for classes this cluster cannot place (too few data nodes or zones).
pub fn write_class(
    ctx: &Ctx,
    requested: Option<&s3s::dto::StorageClass>,
    bucket: &BucketRecord,
) -> GwResult<StorageClass> {
    let class = match requested {
        Some(name) => storage_class::parse(name.as_str()).ok_or_else(|| {
            GwError::InvalidStorageClass(format!(
                "The storage class you specified is not valid: {}",
                name.as_str()
            ))
        })?,
        None => storage_class::recorded(bucket.storage_class, ctx.default_class),
    };
    check_placeable(ctx, class)?;
    Ok(class)
}

/// InvalidStorageClass when PD's map has no groups for `class` (too few data
/// nodes or zones for its rules). Without a map yet, nothing is refused here.
pub fn check_placeable(ctx: &Ctx, class: StorageClass) -> GwResult<()> {
    match ctx.placement.current() {
        Some(view) if view.class(class).is_none() => Err(GwError::InvalidStorageClass(format!(
            "storage class {} cannot be placed in this cluster (too few data nodes or zones)",
            class.as_str_name()
        ))),
        _ => Ok(()),
    }
}

/// The S3 name of a recorded storage class.
pub fn s3_class_name(value: i32) -> &'static str {
    storage_class::s3_name(storage_class::recorded(value, StorageClass::Ec42))
}

/// The `x-amz-storage-class` header for a stored class: none for STANDARD, as AWS.
pub fn reported_class(value: i32) -> Option<s3s::dto::StorageClass> {
    let name = s3_class_name(value);
    (name != "STANDARD").then(|| s3s::dto::StorageClass::from(name.to_string()))
}

/// The metadata key of an object's null version.
pub fn object_key(bucket_id: u64, key: &str) -> Vec<u8> {
    keys::object_version_key(bucket_id, key.as_bytes(), NULL_VERSION)
}

/// S3 keys are at most 1024 bytes of UTF-8.
pub fn check_key(key: &str) -> GwResult<()> {
    if key.is_empty() {
        return Err(GwError::InvalidArgument(
            "the object key must not be empty".into(),
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(GwError::KeyTooLong);
    }
    Ok(())
}

/// Most bytes of user metadata (`x-amz-meta-*` names without the prefix,
/// plus values, UTF-8) one object may carry, as AWS.
pub const MAX_USER_METADATA: usize = 2048;

/// User metadata over [`MAX_USER_METADATA`] is refused before anything is stored.
pub fn check_user_metadata(m: Option<&std::collections::HashMap<String, String>>) -> GwResult<()> {
    let size: usize = m
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if size > MAX_USER_METADATA {
        return Err(GwError::MetadataTooLarge(size));
    }
    Ok(())
}

/// The Content-Length a request declared, if any; a negative one is refused.
pub fn declared_length(v: Option<i64>) -> GwResult<Option<u64>> {
    match v {
        Some(l) if l < 0 => Err(GwError::InvalidArgument("negative Content-Length".into())),
        v => Ok(v.map(|l| l as u64)),
    }
}

pub fn timestamp(ms: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

/// Whole seconds since the epoch of an HTTP date.
pub fn unix_seconds(t: &Timestamp) -> i64 {
    let t: time::OffsetDateTime = t.clone().into();
    t.unix_timestamp()
}

/// Formats an `Expires` timestamp the way we store it (HTTP date).
pub fn format_http_date(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

pub fn parse_http_date(s: &str) -> Option<Timestamp> {
    if s.is_empty() {
        return None;
    }
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

pub fn etag(value: &str) -> ETag {
    ETag::Strong(value.to_string())
}

/// An ETag as clients send it back: with or without quotes, maybe weak.
pub fn unquote(s: &str) -> &str {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s)
}

pub fn owner(id: &str) -> Owner {
    Owner {
        display_name: Some(id.to_string()),
        id: Some(id.to_string()),
    }
}

pub fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The Content-Encoding to store: `aws-chunked` describes the upload, not the object.
pub fn stored_content_encoding(v: Option<&str>) -> String {
    v.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("aws-chunked"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Sets the HTTP headers and user metadata that a write request (PutObject,
/// CopyObject with REPLACE, CreateMultipartUpload) stores with its object on
/// `rec` (an `ObjectRecord` or `MultipartUploadRecord`), moving them out of
/// `input`. The s3s inputs share these field names but no trait, hence a macro.
macro_rules! store_request_headers {
    ($rec:ident, $input:ident) => {{
        use $crate::s3::common::{format_http_date, stored_content_encoding};
        $rec.content_type = $input.content_type.unwrap_or_default();
        $rec.content_encoding = stored_content_encoding($input.content_encoding.as_deref());
        $rec.content_disposition = $input.content_disposition.unwrap_or_default();
        $rec.content_language = $input.content_language.unwrap_or_default();
        $rec.cache_control = $input.cache_control.unwrap_or_default();
        $rec.expires = $input
            .expires
            .as_ref()
            .and_then(format_http_date)
            .unwrap_or_default();
        $rec.user_metadata = $input.metadata.unwrap_or_default();
    }};
}
pub(crate) use store_request_headers;

/// A multipart object's ETag ends in `-N`.
pub fn is_multipart(rec: &ObjectRecord) -> bool {
    rec.etag.contains('-')
}

/// `encoding-type=url`: percent-encodes everything but unreserved characters and '/'.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Applies `encoding-type=url` when requested.
pub fn maybe_encode(s: &str, url: bool) -> String {
    if url {
        url_encode(s)
    } else {
        s.to_string()
    }
}

pub fn wants_url_encoding(enc: Option<&s3s::dto::EncodingType>) -> GwResult<bool> {
    match enc {
        None => Ok(false),
        Some(e) if e.as_str().eq_ignore_ascii_case("url") => Ok(true),
        Some(_) => Err(GwError::InvalidArgument(
            "Invalid Encoding Method specified in Request".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_at_most_1024_bytes() {
        assert!(check_key("a").is_ok());
        assert!(check_key(&"k".repeat(1024)).is_ok());
        assert!(matches!(
            check_key(&"k".repeat(1025)),
            Err(GwError::KeyTooLong)
        ));
    }

    #[test]
    fn user_metadata_is_at_most_2_kib() {
        let mut m = std::collections::HashMap::new();
        assert!(check_user_metadata(None).is_ok());
        m.insert("k".to_string(), "v".repeat(2047));
        assert!(check_user_metadata(Some(&m)).is_ok());
        m.insert("k".to_string(), "v".repeat(2048));
        assert!(matches!(
            check_user_metadata(Some(&m)),
            Err(GwError::MetadataTooLarge(2049))
        ));
    }

    #[test]
    fn declared_lengths() {
        assert_eq!(declared_length(None).unwrap(), None);
        assert_eq!(declared_length(Some(0)).unwrap(), Some(0));
        assert_eq!(declared_length(Some(5)).unwrap(), Some(5));
        assert!(matches!(
            declared_length(Some(-1)),
            Err(GwError::InvalidArgument(_))
        ));
    }

    #[test]
    fn etag_unquoting() {
        assert_eq!(unquote("\"abc\""), "abc");
        assert_eq!(unquote("abc"), "abc");
        assert_eq!(unquote("W/\"abc-2\""), "abc-2");
        assert_eq!(unquote(" \"x\" "), "x");
    }

    #[test]
    fn content_encoding_drops_aws_chunked() {
        assert_eq!(stored_content_encoding(Some("aws-chunked")), "");
        assert_eq!(stored_content_encoding(Some("aws-chunked,gzip")), "gzip");
        assert_eq!(stored_content_encoding(Some("gzip")), "gzip");
        assert_eq!(stored_content_encoding(None), "");
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("a b/c+d%é"), "a%20b/c%2Bd%25%C3%A9");
        assert_eq!(url_encode("plain-key_1.txt~"), "plain-key_1.txt~");
    }

    #[test]
    fn dates_roundtrip() {
        let t = timestamp(1_700_000_000_123);
        assert_eq!(unix_seconds(&t), 1_700_000_000);
        let s = format_http_date(&t).unwrap();
        assert_eq!(s, "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(unix_seconds(&parse_http_date(&s).unwrap()), 1_700_000_000);
        assert!(parse_http_date("").is_none());
    }
}
