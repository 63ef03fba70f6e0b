//! ListObjects (v1) and ListObjectsV2, and the ordered-listing engine that
//! ListMultipartUploads shares.
//!
//! A listing scans the bucket's key range `object_range(bucket_id, prefix)`
//! in pages. With a delimiter, the first listable key under a common prefix
//! emits the prefix and the scan *seeks* past every key under it
//! (`keys::object_seek_after_prefix`); the stores do the same inside a page
//! (`keys::Rollup`, docs/decisions/0035), so keys under a common prefix are
//! never read. A prefix whose first key is a delete marker is probed up to
//! its first listable key: S3 lists common prefixes of listable keys only. Markers and
//! continuation tokens resume strictly after the last returned entry; when
//! that entry was a common prefix, after everything under it.
//!
//! Object listings show each key's latest version: the object's first key
//! (docs/decisions/0027). In a bucket that has versions the scan asks the
//! stores for only the first key of each object (`first_per_object`,
//! docs/decisions/0034): they seek past older versions, so a LIST reads one
//! record per key however many versions it has — what an unversioned LIST
//! reads. The listing itself also continues at `keys::object_seek_after_key`
//! and skips anything sorting before it, so it stays correct against a
//! store that ignores the option.

use std::future::Future;
use std::sync::Arc;

use base64::Engine;
use kura_metashard::client::{Cf, KvPair};
use kura_metashard::keys::{self, ObjectKeyParts, Rollup};
use kura_proto::meta::ObjectRecord;
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use crate::context::Ctx;
use crate::error::{GwError, GwResult};
use crate::s3::common::{
    etag, load_bucket, maybe_encode, owner, s3_class_name, timestamp, wants_url_encoding,
};
use crate::s3::versioning::Versioning;

/// Most entries one page returns (S3's cap for max-keys / max-uploads).
pub const MAX_PAGE: usize = 1000;

/// Where a listing reads its keys from.
pub trait ListSource: Sync {
    /// With `rollup` (the listing's delimiter) a source may return only the
    /// first key under each common prefix (docs/decisions/0035); one that
    /// returns more is still listed right.
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        rollup: Option<&Rollup>,
    ) -> impl Future<Output = GwResult<Vec<KvPair>>> + Send;
}

/// A column family of the metadata store.
pub struct MetaSource<'a> {
    pub ctx: &'a Ctx,
    pub cf: Cf,
}

/// cf META as object listings read it: in a bucket that has versions
/// (`first_per_object`), only each object's first key.
pub struct ObjectSource<'a> {
    pub ctx: &'a Ctx,
    pub first_per_object: bool,
}

impl ListSource for ObjectSource<'_> {
    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        rollup: Option<&Rollup>,
    ) -> GwResult<Vec<KvPair>> {
        self.ctx
            .meta
            .scan_listing(Cf::Meta, start, end, limit, self.first_per_object, rollup)
            .await
    }
}

impl ListSource for MetaSource<'_> {
    /// Every key (ListMultipartUploads: an upload is its record and parts).
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        _rollup: Option<&Rollup>,
    ) -> impl Future<Output = GwResult<Vec<KvPair>>> + Send {
        self.ctx.meta.scan(self.cf, start, end, limit, false)
    }
}

#[derive(Debug, PartialEq)]
pub enum Entry<T> {
    Item { key: String, item: T },
    Prefix(String),
}

#[derive(Debug)]
pub struct Listing<T> {
    pub entries: Vec<Entry<T>>,
    pub truncated: bool,
}

impl<T> Listing<T> {
    /// The string a marker/continuation token resumes after.
    pub fn last_name(&self) -> Option<&str> {
        self.entries.last().map(|e| match e {
            Entry::Item { key, .. } => key.as_str(),
            Entry::Prefix(p) => p.as_str(),
        })
    }
}

pub struct ListParams<'a> {
    pub bucket_id: u64,
    pub prefix: &'a str,
    /// Empty = no delimiter.
    pub delimiter: &'a str,
    pub max: usize,
    /// Encoded key to start at (inclusive); clamped into the prefix range.
    pub start: Vec<u8>,
}

/// What a decoder says about one stored entry.
pub enum Decoded<T> {
    Skip,
    /// Nothing to list here; continue the scan at this key.
    SkipTo(Vec<u8>),
    /// An item; `resume_at`, when set, is where the scan continues (to skip
    /// records that belong to this item, e.g. the parts of an upload).
    Item {
        item: T,
        resume_at: Option<Vec<u8>>,
    },
}

/// The common prefix `key` rolls up into, if any.
pub fn common_prefix<'k>(key: &'k str, prefix: &str, delimiter: &str) -> Option<&'k str> {
    if delimiter.is_empty() {
        return None;
    }
    let rest = key.strip_prefix(prefix)?;
    let pos = rest.find(delimiter)?;
    Some(&key[..prefix.len() + pos + delimiter.len()])
}

/// The smallest key strictly after `raw`.
fn successor(raw: &[u8]) -> Vec<u8> {
    let mut v = raw.to_vec();
    v.push(0);
    v
}

/// The scan position strictly after the entry named `marker` (a key, or a
/// common prefix we returned).
pub fn cursor_after(bucket_id: u64, prefix: &str, delimiter: &str, marker: &str) -> Vec<u8> {
    if common_prefix(marker, prefix, delimiter) == Some(marker) {
        return keys::object_seek_after_prefix(bucket_id, marker.as_bytes());
    }
    keys::prefix_successor(&keys::object_prefix(bucket_id, marker.as_bytes()))
        .unwrap_or_else(|| keys::bucket_end(bucket_id))
}

/// Lists up to `p.max` entries (items and common prefixes) in key order.
pub async fn list_entries<T, S, D>(
    src: &S,
    p: ListParams<'_>,
    mut decode: D,
) -> GwResult<Listing<T>>
where
    S: ListSource,
    D: FnMut(&ObjectKeyParts, &KvPair) -> GwResult<Decoded<T>>,
{
    let mut entries = Vec::new();
    if p.max == 0 {
        return Ok(Listing {
            entries,
            truncated: false,
        });
    }
    let (range_start, end) = keys::object_range(p.bucket_id, p.prefix.as_bytes());
    let rollup = Rollup::new(p.prefix.as_bytes(), p.delimiter.as_bytes());
    let mut cursor = p.start.max(range_start);
    let mut truncated = false;
    // A common prefix whose first key is not listable (a delete marker):
    // S3 lists a common prefix only over listable keys, so its keys are
    // read, without rolling up, up to the first listable one. Holds the
    // prefix's end.
    let mut probing: Option<Vec<u8>> = None;
    'scan: while cursor < end {
        let want = (p.max - entries.len() + 1).clamp(1, MAX_PAGE);
        let (scan_end, roll) = match &probing {
            Some(cp_end) => (cp_end.min(&end).clone(), None),
            None => (end.clone(), rollup.as_ref()),
        };
        if cursor >= scan_end {
            // Probed to the prefix's end: nothing listable under it.
            probing = None;
            continue;
        }
        let page = src.scan(&cursor, &scan_end, want, roll).await?;
        let full = page.len() >= want;
        let mut skip_prefix: Option<String> = None;
        for kv in &page {
            if kv.key.as_ref() < cursor.as_slice() {
                // Sought past (under a common prefix, or an older version
                // from a store that returns every key).
                continue;
            }
            let Some(parts) = keys::decode_object_key(&kv.key) else {
                cursor = successor(&kv.key);
                continue;
            };
            if parts.bucket_id != p.bucket_id {
                break 'scan;
            }
            let key = String::from_utf8_lossy(&parts.key).into_owned();
            if let Some(sp) = &skip_prefix {
                if key.starts_with(sp.as_str()) {
                    continue;
                }
                skip_prefix = None;
            }
            let decoded = decode(&parts, kv)?;
            if let Some(cp) = common_prefix(&key, p.prefix, p.delimiter) {
                let cp_end = keys::object_seek_after_prefix(p.bucket_id, cp.as_bytes());
                let next = match decoded {
                    Decoded::Item { .. } => None,
                    Decoded::Skip => Some(successor(&kv.key)),
                    Decoded::SkipTo(at) => Some(at.max(successor(&kv.key))),
                };
                if let Some(next) = next {
                    // Nothing listable yet: look further under this prefix.
                    // The rest of a rolled-up page lies past it, so rescan.
                    cursor = next;
                    if probing.is_none() {
                        probing = Some(cp_end);
                        continue 'scan;
                    }
                    continue;
                }
                if entries.len() == p.max {
                    truncated = true;
                    break 'scan;
                }
                cursor = cp_end;
                entries.push(Entry::Prefix(cp.to_string()));
                if probing.take().is_some() {
                    // A probe page holds only this prefix's keys.
                    continue 'scan;
                }
                skip_prefix = Some(cp.to_string());
                continue;
            }
            match decoded {
                Decoded::Skip => cursor = successor(&kv.key),
                Decoded::SkipTo(at) => cursor = at.max(successor(&kv.key)),
                Decoded::Item { item, resume_at } => {
                    if entries.len() == p.max {
                        truncated = true;
                        break 'scan;
                    }
                    entries.push(Entry::Item { key, item });
                    cursor = resume_at.unwrap_or_else(|| successor(&kv.key));
                }
            }
        }
        if !full {
            match probing.take() {
                // Nothing listable under the probed prefix: go on past it.
                Some(cp_end) => cursor = cursor.max(cp_end),
                None => break,
            }
        }
    }
    Ok(Listing { entries, truncated })
}

/// Object listings see the latest version of each key (its first key),
/// unless it is a delete marker; older versions are sought past.
fn decode_object(parts: &ObjectKeyParts, kv: &KvPair) -> GwResult<Decoded<ObjectRecord>> {
    let past = keys::object_seek_after_key(parts.bucket_id, &parts.key);
    let rec: ObjectRecord = keys::decode_value(&kv.value)?;
    // An anchor (`null_moved_to`) never sorts first; skip it defensively.
    if rec.delete_marker || rec.null_moved_to != 0 {
        return Ok(Decoded::SkipTo(past));
    }
    Ok(Decoded::Item {
        item: rec,
        resume_at: Some(past),
    })
}

/// A page-size parameter (`what`: max-keys, max-uploads, max-parts): at most
/// [`MAX_PAGE`], which is also the default.
pub fn max_entries(v: Option<i32>, what: &str) -> GwResult<usize> {
    match v {
        None => Ok(MAX_PAGE),
        Some(n) if n < 0 => Err(GwError::InvalidArgument(format!(
            "{what} must not be negative"
        ))),
        Some(n) => Ok((n as usize).min(MAX_PAGE)),
    }
}

fn to_object(key: &str, rec: &ObjectRecord, url: bool, owner_id: Option<&str>) -> Object {
    Object {
        key: Some(maybe_encode(key, url)),
        e_tag: Some(etag(&rec.etag)),
        last_modified: Some(timestamp(rec.last_modified_unix_ms)),
        size: Some(rec.size as i64),
        storage_class: Some(ObjectStorageClass::from(
            s3_class_name(rec.storage_class).to_string(),
        )),
        owner: owner_id.map(owner),
        ..Default::default()
    }
}

struct Page {
    contents: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    truncated: bool,
    last: Option<String>,
}

struct PageRequest<'a> {
    bucket_id: u64,
    prefix: &'a str,
    delimiter: &'a str,
    max: usize,
    /// Resume strictly after this key or common prefix.
    after: Option<&'a str>,
    url: bool,
    /// Include this owner in every entry.
    owner_id: Option<&'a str>,
    /// The bucket has (or had) versioning: read only each key's first version.
    versioned: bool,
}

async fn list_page(ctx: &Ctx, r: PageRequest<'_>) -> GwResult<Page> {
    let PageRequest {
        bucket_id,
        prefix,
        delimiter,
        max,
        after,
        url,
        owner_id,
        versioned,
    } = r;
    let start = match after {
        Some(m) if !m.is_empty() => cursor_after(bucket_id, prefix, delimiter, m),
        _ => Vec::new(),
    };
    let src = ObjectSource {
        ctx,
        first_per_object: versioned,
    };
    let listing = list_entries(
        &src,
        ListParams {
            bucket_id,
            prefix,
            delimiter,
            max,
            start,
        },
        decode_object,
    )
    .await?;
    let last = listing.last_name().map(str::to_string);
    let mut contents = Vec::new();
    let mut prefixes = Vec::new();
    for e in listing.entries {
        match e {
            Entry::Item { key, item } => contents.push(to_object(&key, &item, url, owner_id)),
            Entry::Prefix(p) => prefixes.push(CommonPrefix {
                prefix: Some(maybe_encode(&p, url)),
            }),
        }
    }
    Ok(Page {
        contents,
        prefixes,
        truncated: listing.truncated,
        last,
    })
}

pub async fn list_objects(
    ctx: &Arc<Ctx>,
    req: S3Request<ListObjectsInput>,
) -> GwResult<S3Response<ListObjectsOutput>> {
    let input = req.input;
    let url = wants_url_encoding(input.encoding_type.as_ref())?;
    let max = max_entries(input.max_keys, "max-keys")?;
    let bucket = load_bucket(&req.extensions)?;
    let prefix = input.prefix.unwrap_or_default();
    let delimiter = input.delimiter.unwrap_or_default();
    let marker = input.marker.unwrap_or_default();
    let page = list_page(
        ctx,
        PageRequest {
            bucket_id: bucket.record.id,
            prefix: &prefix,
            delimiter: &delimiter,
            max,
            after: Some(&marker),
            url,
            owner_id: Some(&bucket.record.owner),
            versioned: Versioning::of(&bucket.record).reports_versions(),
        },
    )
    .await?;
    // S3 sends NextMarker only with a delimiter; without one clients resume after the last key.
    let next_marker = (page.truncated && !delimiter.is_empty())
        .then(|| maybe_encode(page.last.as_deref().unwrap_or(""), url));
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(maybe_encode(&prefix, url)),
        marker: Some(maybe_encode(&marker, url)),
        max_keys: Some(max as i32),
        is_truncated: Some(page.truncated),
        contents: Some(page.contents),
        common_prefixes: Some(page.prefixes),
        delimiter: (!delimiter.is_empty()).then(|| maybe_encode(&delimiter, url)),
        next_marker,
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

pub fn encode_token(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes())
}

pub fn decode_token(token: &str) -> GwResult<String> {
    let bad = || GwError::InvalidArgument("The continuation token provided is incorrect".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| bad())?;
    String::from_utf8(raw).map_err(|_| bad())
}

pub async fn list_objects_v2(
    ctx: &Arc<Ctx>,
    req: S3Request<ListObjectsV2Input>,
) -> GwResult<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    let url = wants_url_encoding(input.encoding_type.as_ref())?;
    let max = max_entries(input.max_keys, "max-keys")?;
    let token = match input.continuation_token.as_deref() {
        Some(t) => Some(decode_token(t)?),
        None => None,
    };
    let bucket = load_bucket(&req.extensions)?;
    let prefix = input.prefix.unwrap_or_default();
    let delimiter = input.delimiter.unwrap_or_default();
    let after = token.as_deref().or(input.start_after.as_deref());
    let fetch_owner = input.fetch_owner.unwrap_or(false);
    let owner_id = fetch_owner.then_some(bucket.record.owner.as_str());
    let page = list_page(
        ctx,
        PageRequest {
            bucket_id: bucket.record.id,
            prefix: &prefix,
            delimiter: &delimiter,
            max,
            after,
            url,
            owner_id,
            versioned: Versioning::of(&bucket.record).reports_versions(),
        },
    )
    .await?;
    let key_count = (page.contents.len() + page.prefixes.len()) as i32;
    let next = if page.truncated {
        page.last.as_deref().map(encode_token)
    } else {
        None
    };
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(maybe_encode(&prefix, url)),
        max_keys: Some(max as i32),
        key_count: Some(key_count),
        continuation_token: input.continuation_token,
        is_truncated: Some(page.truncated),
        next_continuation_token: next,
        contents: Some(page.contents),
        common_prefixes: Some(page.prefixes),
        delimiter: (!delimiter.is_empty()).then(|| maybe_encode(&delimiter, url)),
        encoding_type: input.encoding_type,
        start_after: input.start_after.map(|s| maybe_encode(&s, url)),
        ..Default::default()
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// An in-memory ordered store standing in for a column family; with
    /// `first_per_object` it answers as a store does for that option
    /// (each object's first key only), with `rollup` as a store does for a
    /// delimiter, else with every key (an older store).
    pub struct MemSource {
        pub map: BTreeMap<Vec<u8>, Vec<u8>>,
        pub first_per_object: bool,
        pub rollup: bool,
        /// Keys handed out, over all scans.
        pub read: std::sync::atomic::AtomicUsize,
    }

    impl MemSource {
        fn new(map: BTreeMap<Vec<u8>, Vec<u8>>) -> Self {
            MemSource {
                map,
                first_per_object: false,
                rollup: false,
                read: Default::default(),
            }
        }
    }

    impl ListSource for MemSource {
        fn scan(
            &self,
            start: &[u8],
            end: &[u8],
            limit: usize,
            rollup: Option<&Rollup>,
        ) -> impl Future<Output = GwResult<Vec<KvPair>>> + Send {
            let mut out: Vec<KvPair> = Vec::new();
            let mut at = start.to_vec();
            while out.len() < limit && at.as_slice() < end {
                let Some((k, v)) = self.map.range(at.clone()..end.to_vec()).next() else {
                    break;
                };
                out.push(KvPair {
                    key: k.clone().into(),
                    value: v.clone().into(),
                });
                let rolled = rollup.filter(|_| self.rollup).and_then(|r| r.seek_past(k));
                at = match (rolled, self.first_per_object, keys::seek_after_object_of(k)) {
                    (Some(past), _, _) => past,
                    (None, true, Some(past)) => past,
                    _ => successor(k),
                };
            }
            self.read
                .fetch_add(out.len(), std::sync::atomic::Ordering::Relaxed);
            async move { Ok(out) }
        }
    }

    fn store(bucket_id: u64, names: &[&str]) -> MemSource {
        let mut m = BTreeMap::new();
        let version = |n: &str, etag: &str, delete_marker: bool| {
            keys::encode_value(&ObjectRecord {
                key: n.to_string(),
                etag: etag.to_string(),
                delete_marker,
                ..Default::default()
            })
        };
        for n in names {
            // The newest version is listed; older ones (many for some keys)
            // are sought past.
            m.insert(
                keys::object_version_key(bucket_id, n.as_bytes(), 100),
                version(n, "latest", false),
            );
            let older = if n.len() == 1 { 40 } else { 2 };
            for v in 0..older {
                m.insert(
                    keys::object_version_key(bucket_id, n.as_bytes(), v),
                    version(n, "old", false),
                );
            }
        }
        // A key whose latest version is a delete marker is not listed.
        for n in ["a/0", "c/", "zzz"] {
            m.insert(
                keys::object_version_key(bucket_id, n.as_bytes(), 9),
                version(n, "", true),
            );
            m.insert(
                keys::object_version_key(bucket_id, n.as_bytes(), 0),
                version(n, "old", false),
            );
        }
        // Another bucket's keys sit right after.
        let rec = ObjectRecord::default();
        m.insert(
            keys::object_version_key(bucket_id + 1, b"a", 0),
            keys::encode_value(&rec),
        );
        MemSource::new(m)
    }

    fn names(l: &Listing<ObjectRecord>) -> Vec<String> {
        l.entries
            .iter()
            .map(|e| match e {
                Entry::Item { key, .. } => key.clone(),
                Entry::Prefix(p) => format!("{p}*"),
            })
            .collect()
    }

    async fn list(
        src: &MemSource,
        prefix: &str,
        delim: &str,
        max: usize,
        after: Option<&str>,
    ) -> Listing<ObjectRecord> {
        let start = after
            .map(|m| cursor_after(5, prefix, delim, m))
            .unwrap_or_default();
        list_entries(
            src,
            ListParams {
                bucket_id: 5,
                prefix,
                delimiter: delim,
                max,
                start,
            },
            decode_object,
        )
        .await
        .unwrap()
    }

    /// Pages through everything with `max` per page, like a client does.
    async fn list_all(src: &MemSource, prefix: &str, delim: &str, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..1000 {
            let l = list(src, prefix, delim, max, after.as_deref()).await;
            out.extend(names(&l));
            if !l.truncated {
                return out;
            }
            after = l.last_name().map(str::to_string);
        }
        panic!("listing did not terminate");
    }

    const KEYS: &[&str] = &[
        "a", "a/1", "a/2", "a/b/3", "b", "b/", "c/x", "c/y", "d\0z", "d", "e/f/g", "é/1",
    ];

    #[tokio::test]
    async fn flat_listing_in_order() {
        let s = store(5, KEYS);
        let l = list(&s, "", "", 1000, None).await;
        let mut want: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
        want.sort();
        assert_eq!(names(&l), want);
        assert!(!l.truncated);
        for e in &l.entries {
            if let Entry::Item { item, .. } = e {
                assert_eq!(item.etag, "latest");
            }
        }
    }

    #[tokio::test]
    async fn delimiter_rolls_up_and_pages_identically() {
        let s = store(5, KEYS);
        let want = vec!["a", "a/*", "b", "b/*", "c/*", "d", "d\0z", "e/*", "é/*"];
        for max in [1, 2, 3, 1000] {
            assert_eq!(list_all(&s, "", "/", max).await, want, "max {max}");
        }
        assert_eq!(
            list_all(&s, "a/", "/", 1).await,
            vec!["a/1", "a/2", "a/b/*"]
        );
        assert_eq!(list_all(&s, "a", "/", 2).await, vec!["a", "a/*"]);
        assert_eq!(list_all(&s, "", "", 1).await.len(), KEYS.len());
        assert_eq!(list_all(&s, "c/", "", 1).await, vec!["c/x", "c/y"]);
        assert_eq!(list_all(&s, "zz", "/", 10).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn truncation_and_markers() {
        let s = store(5, KEYS);
        let l = list(&s, "", "/", 2, None).await;
        assert_eq!(names(&l), vec!["a", "a/*"]);
        assert!(l.truncated);
        let l = list(&s, "", "/", 9, None).await;
        assert!(!l.truncated, "exactly max entries is not truncated");
        let l = list(&s, "", "", 0, None).await;
        assert!(l.entries.is_empty() && !l.truncated);
        // A marker inside a common prefix still yields that prefix (as S3).
        let l = list(&s, "", "/", 1, Some("a/1")).await;
        assert_eq!(names(&l), vec!["a/*"]);
        // start-after a key that is not stored.
        let l = list(&s, "", "", 2, Some("a/15")).await;
        assert_eq!(names(&l), vec!["a/2", "a/b/3"]);
    }

    /// Against a store that seeks past older versions the listings are the
    /// same as against one returning every key, and a full listing reads
    /// one record per object (plus the one a page reads to know it's full).
    #[tokio::test]
    async fn first_per_object_lists_the_same_reading_one_key_per_object() {
        let all_keys = store(5, KEYS);
        let mut seeking = store(5, KEYS);
        seeking.first_per_object = true;
        for (prefix, delim) in [("", ""), ("", "/"), ("a/", "/"), ("a", "/"), ("c/", "")] {
            for max in [1, 2, 3, 1000] {
                assert_eq!(
                    list_all(&seeking, prefix, delim, max).await,
                    list_all(&all_keys, prefix, delim, max).await,
                    "prefix {prefix:?} delimiter {delim:?} max {max}"
                );
            }
        }
        let (s1, s2) = (store(5, KEYS), {
            let mut s = store(5, KEYS);
            s.first_per_object = true;
            s
        });
        let got = list_all(&s1, "", "", 1000).await;
        assert_eq!(got, list_all(&s2, "", "", 1000).await);
        let read = |s: &MemSource| s.read.load(std::sync::atomic::Ordering::Relaxed);
        // KEYS, the three keys under delete markers, and the next bucket's key
        // (the range end stops before it).
        let objects = KEYS.len() + 3;
        assert_eq!(read(&s2), objects, "one record per object");
        assert!(read(&s1) > 3 * objects, "every version: {}", read(&s1));
    }

    /// Keys whose latest version is a delete marker: all of "dead/" and of
    /// "deadbig/" (more than a page), the first of "mixed/".
    fn add_dead(s: &mut MemSource) {
        let mut put = |n: &str, v: u64, delete_marker: bool| {
            let rec = ObjectRecord {
                key: n.to_string(),
                delete_marker,
                ..Default::default()
            };
            s.map.insert(
                keys::object_version_key(5, n.as_bytes(), v),
                keys::encode_value(&rec),
            );
        };
        let mut dead: Vec<String> = vec!["dead/1".into(), "dead/2".into(), "mixed/1".into()];
        dead.extend((0..30).map(|i| format!("deadbig/{i:02}")));
        for n in &dead {
            put(n, 9, true);
            put(n, 1, false);
        }
        put("mixed/2", 9, false);
    }

    /// A store that rolls common prefixes up lists what one returning every
    /// key lists, reading one key per common prefix; a common prefix whose
    /// keys are all delete markers is not listed (as S3).
    #[tokio::test]
    async fn rollup_lists_the_same_reading_one_key_per_prefix() {
        let mk = |first_per_object, rollup| {
            let mut s = store(5, KEYS);
            add_dead(&mut s);
            s.first_per_object = first_per_object;
            s.rollup = rollup;
            s
        };
        let every = mk(false, false);
        let want = vec![
            "a", "a/*", "b", "b/*", "c/*", "d", "d\0z", "e/*", "mixed/*", "é/*",
        ];
        for max in [1, 2, 3, 1000] {
            assert_eq!(list_all(&every, "", "/", max).await, want, "max {max}");
        }
        for (fpo, roll) in [(false, true), (true, true), (true, false)] {
            let s = mk(fpo, roll);
            for (prefix, delim) in [
                ("", ""),
                ("", "/"),
                ("a/", "/"),
                ("a", "/"),
                ("c/", ""),
                ("dead", "/"),
                ("mixed/", "/"),
                ("", "e"),
            ] {
                for max in [1, 2, 3, 1000] {
                    assert_eq!(
                        list_all(&s, prefix, delim, max).await,
                        list_all(&every, prefix, delim, max).await,
                        "first_per_object {fpo} rollup {roll} prefix {prefix:?} delimiter {delim:?} max {max}"
                    );
                }
            }
        }
        assert_eq!(
            list_all(&every, "dead", "/", 1000).await,
            Vec::<String>::new()
        );
        // Reads: one key per listed entry (and per delete marker probed),
        // not every key under a common prefix.
        let mut big = store(5, &[]);
        big.first_per_object = true;
        for i in 0..500 {
            let rec = keys::encode_value(&ObjectRecord::default());
            big.map.insert(
                keys::object_version_key(5, format!("big/{i:03}").as_bytes(), 1),
                rec,
            );
        }
        let read = |s: &MemSource| s.read.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(list_all(&big, "", "/", 1000).await, vec!["big/*"]);
        let without = read(&big);
        big.rollup = true;
        big.read = Default::default();
        assert_eq!(list_all(&big, "", "/", 1000).await, vec!["big/*"]);
        // "a/0", "c/" and "zzz" (delete markers from `store`): "a/*" and
        // "c/*" are probed, and the page each probe set aside is read again
        // (8 keys in all); "big/*" costs one key, not 500.
        assert!(read(&big) <= 10, "rolled up: {} keys read", read(&big));
        assert!(without >= 500, "without: {without}");
    }

    #[test]
    fn common_prefixes() {
        assert_eq!(common_prefix("a/b/c", "", "/"), Some("a/"));
        assert_eq!(common_prefix("a/b/c", "a/", "/"), Some("a/b/"));
        assert_eq!(common_prefix("a/b", "a/", "/"), None);
        assert_eq!(common_prefix("a--b--c", "a", "--"), Some("a--"));
        assert_eq!(common_prefix("abc", "", ""), None);
        assert_eq!(common_prefix("xyz", "a", "/"), None);
    }

    #[test]
    fn tokens_roundtrip() {
        for s in ["", "a/b c", "é\0x"] {
            assert_eq!(decode_token(&encode_token(s)).unwrap(), s);
        }
        assert!(decode_token("!!").is_err());
    }
}
