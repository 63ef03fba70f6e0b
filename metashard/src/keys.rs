//! The one place that builds keys of the metadata keyspace (DESIGN.md §2).
//!
//! Data keys (replicated, split into regions), first byte = family:
//! - `0x01 'b' name`                        → `BucketRecord` of the root tenant (system family, cf META)
//! - `0x01 'B' tenant ':' name`             → `BucketRecord` of another tenant
//! - `0x01 't' tenant`                      → `TenantRecord`
//! - `0x01 'u' user_id`                     → `UserRecord`
//! - `0x01 'n' tenant 0x00 user_name`       → `UserNameRecord` (a user's name in its tenant)
//! - `0x01 'k' access_key`                  → `AccessKeyRecord`
//! - `0x02 bucket_id(8, BE) enc(key) !ver(8)` → `ObjectRecord` (cf META)
//! - `0x02 bucket_id enc(key) upload_id`      → `MultipartUploadRecord` (cf MPU)
//! - `0x02 bucket_id enc(key) upload_id part(4, BE)` → `PartRecord` (cf MPU)
//! - `0x02 bucket_id enc(key) data_id`        → `GcRecord` (cf GC)
//! - `0x02 bucket_id enc(key) delta_id(16)`   → `UsageDelta` (cf USAGE)
//! - `0x01 'q' tenant 0x00 bucket_id(8, BE)`  → `BucketUsage` (a bucket's folded usage, cf USAGE)
//! - `0x01 'r' gateway 0x00 scope`            → `TrafficRecord` (one gateway's request counts, cf USAGE)
//! - `0x01 'L' region_id(8, BE)`              → `LifecycleLease` (which gateway runs lifecycle on a region, and its progress; cf USAGE, docs/decisions/0032)
//!
//! Usage bookkeeping stays in cf USAGE, so cf META — what LIST reads and
//! what region sizes and split points count — holds only the S3 model.
//!
//! Every record of one `(bucket_id, object_key)` shares the prefix
//! `0x02 bucket_id enc(key)`, so a region split never separates them and each S3
//! mutation is one single-region batch. `enc` is an order-preserving,
//! prefix-free byte encoding: `0x00` is escaped as `0x00 0xFF` and the key ends
//! with `0x00 0x00`; so `enc(a) < enc(b)` iff `a < b`, and for a prefix `p` of
//! `k`, the escaped bytes of `p` (without terminator) are a prefix of `enc(k)`.
//! Versions are stored inverted (`!version`) so the newest sorts first; the
//! key of version 0 sorts last.
//!
//! Object versions (docs/decisions/0027). In cf META the only keys under an
//! object prefix are version keys, so the object's *first* key there is its
//! latest version (one seek: [`object_versions_range`], limit 1):
//! - a real version `v` (≥ 1) is a number above the object's latest version
//!   at the time of the write (milliseconds << 16 | random, raised past the
//!   latest when a clock lags), so the last committed write sorts first
//!   whatever the gateways' clocks say;
//! - version key 0 (sorting last) is the *null slot*. It holds either the
//!   null version itself (every object written before versioning, and a
//!   null written when the object has no other version), or — once a null
//!   version is written above other versions while versioning is Suspended
//!   — an anchor record (`ObjectRecord.null_moved_to = v`) naming the real
//!   version key `v` where the null version (`null_version = true`) sits, so
//!   it is still the latest and still found (and replaced) with two reads.
//!   The anchor never sorts first: it exists only together with its target.
//! - delete markers are version records with `delete_marker = true`.
//!
//! LIST of a versioned bucket reads an object's first key and then seeks to
//! [`object_seek_after_key`], past the object's older versions: the store's
//! scan does it with `first_per_object` ([`seek_after_object_of`], decision 0034).
//!
//! Values start with a one-byte format version (`VALUE_FORMAT_V1`), then the
//! prost encoding of the record.

pub const FAMILY_SYSTEM: u8 = 0x01;
pub const FAMILY_OBJECT: u8 = 0x02;
const SYSTEM_BUCKET: u8 = b'b';
const SYSTEM_TENANT_BUCKET: u8 = b'B';
const SYSTEM_TENANT: u8 = b't';
const SYSTEM_USER: u8 = b'u';
const SYSTEM_USER_NAME: u8 = b'n';
const SYSTEM_ACCESS_KEY: u8 = b'k';
const SYSTEM_USAGE: u8 = b'q';
const SYSTEM_TRAFFIC: u8 = b'r';
const SYSTEM_LIFECYCLE: u8 = b'L';
/// Separates a tenant from a bucket name (`tenant:bucket`, as Ceph RGW);
/// bucket names never contain it.
pub const TENANT_SEPARATOR: char = ':';

/// First byte of every stored record value.
pub const VALUE_FORMAT_V1: u8 = 1;

fn system_key(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(FAMILY_SYSTEM);
    k.push(kind);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// The key of a bucket's record in `tenant` ("" = the root tenant).
pub fn tenant_bucket_key(tenant: &str, name: &str) -> Vec<u8> {
    if tenant.is_empty() {
        system_key(SYSTEM_BUCKET, &[name.as_bytes()])
    } else {
        system_key(
            SYSTEM_TENANT_BUCKET,
            &[tenant.as_bytes(), b":", name.as_bytes()],
        )
    }
}

/// The key of a bucket's record by qualified name: `bucket` (root tenant),
/// `:bucket` (root tenant too) or `tenant:bucket`.
pub fn bucket_key(qualified: &str) -> Vec<u8> {
    match qualified.split_once(TENANT_SEPARATOR) {
        Some((tenant, name)) => tenant_bucket_key(tenant, name),
        None => tenant_bucket_key("", qualified),
    }
}

/// Range [start, end) of the bucket records of one tenant (for ListBuckets).
pub fn bucket_range(tenant: &str) -> (Vec<u8>, Vec<u8>) {
    if tenant.is_empty() {
        (
            vec![FAMILY_SYSTEM, SYSTEM_BUCKET],
            vec![FAMILY_SYSTEM, SYSTEM_BUCKET + 1],
        )
    } else {
        (
            system_key(SYSTEM_TENANT_BUCKET, &[tenant.as_bytes(), b":"]),
            system_key(SYSTEM_TENANT_BUCKET, &[tenant.as_bytes(), b";"]),
        )
    }
}

/// The key of a tenant's record.
pub fn tenant_key(name: &str) -> Vec<u8> {
    system_key(SYSTEM_TENANT, &[name.as_bytes()])
}

/// Range of every tenant record.
pub fn tenant_range() -> (Vec<u8>, Vec<u8>) {
    (
        vec![FAMILY_SYSTEM, SYSTEM_TENANT],
        vec![FAMILY_SYSTEM, SYSTEM_TENANT + 1],
    )
}

/// The key of a user's record, by canonical id.
pub fn user_key(id: &str) -> Vec<u8> {
    system_key(SYSTEM_USER, &[id.as_bytes()])
}

/// Range of every user record.
pub fn user_range() -> (Vec<u8>, Vec<u8>) {
    (
        vec![FAMILY_SYSTEM, SYSTEM_USER],
        vec![FAMILY_SYSTEM, SYSTEM_USER + 1],
    )
}

/// The key naming the user called `name` in `tenant` (tenant names never hold 0x00).
pub fn user_name_key(tenant: &str, name: &str) -> Vec<u8> {
    system_key(
        SYSTEM_USER_NAME,
        &[tenant.as_bytes(), &[0], name.as_bytes()],
    )
}

/// Range of the user names of one tenant.
pub fn user_name_range(tenant: &str) -> (Vec<u8>, Vec<u8>) {
    (
        system_key(SYSTEM_USER_NAME, &[tenant.as_bytes(), &[0]]),
        system_key(SYSTEM_USER_NAME, &[tenant.as_bytes(), &[1]]),
    )
}

/// The key of an access key's record.
pub fn access_key_key(access_key: &str) -> Vec<u8> {
    system_key(SYSTEM_ACCESS_KEY, &[access_key.as_bytes()])
}

/// Range of every access key record.
pub fn access_key_range() -> (Vec<u8>, Vec<u8>) {
    (
        vec![FAMILY_SYSTEM, SYSTEM_ACCESS_KEY],
        vec![FAMILY_SYSTEM, SYSTEM_ACCESS_KEY + 1],
    )
}

/// Appends the escaped bytes of `key` (no terminator).
fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

/// `0x02 bucket_id enc(key)`: the prefix shared by every record of one object key.
pub fn object_prefix(bucket_id: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 8 + key.len() + 2 + 8);
    k.push(FAMILY_OBJECT);
    k.extend_from_slice(&bucket_id.to_be_bytes());
    escape_into(&mut k, key);
    k.extend_from_slice(&[0, 0]);
    k
}

/// The key of one version of an object (version 0 = null version).
pub fn object_version_key(bucket_id: u64, key: &[u8], version: u64) -> Vec<u8> {
    let mut k = object_prefix(bucket_id, key);
    k.extend_from_slice(&(!version).to_be_bytes());
    k
}

/// The version key 0: an object's null slot (see the module docs).
pub const NULL_VERSION: u64 = 0;

/// [start, end) of every version key of one object: its latest version is
/// the first key in it (cf META).
pub fn object_versions_range(bucket_id: u64, key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let start = object_prefix(bucket_id, key);
    (start, object_seek_after_key(bucket_id, key))
}

/// The smallest key after every record of the object `key` and before the
/// records of any other key: `enc(key)`'s terminator `0x00 0x00` raised to
/// `0x00 0x01` (an escaped byte inside a key is `0x00 0xFF`, so nothing of a
/// longer key sorts in between).
pub fn object_seek_after_key(bucket_id: u64, key: &[u8]) -> Vec<u8> {
    let mut k = object_prefix(bucket_id, key);
    if let Some(last) = k.last_mut() {
        *last = 1;
    }
    k
}

/// The key of an in-progress multipart upload (cf MPU).
pub fn upload_key(bucket_id: u64, key: &[u8], upload_id: &str) -> Vec<u8> {
    let mut k = object_prefix(bucket_id, key);
    k.extend_from_slice(upload_id.as_bytes());
    k
}

/// The key of one uploaded part (cf MPU). Upload ids have a fixed length, so a
/// part key is the upload key followed by 4 bytes.
pub fn part_key(bucket_id: u64, key: &[u8], upload_id: &str, part_number: u32) -> Vec<u8> {
    let mut k = upload_key(bucket_id, key, upload_id);
    k.extend_from_slice(&part_number.to_be_bytes());
    k
}

/// The key of a GC record for a body (cf GC).
pub fn gc_key(bucket_id: u64, key: &[u8], data_id: &[u8]) -> Vec<u8> {
    let mut k = object_prefix(bucket_id, key);
    k.extend_from_slice(data_id);
    k
}

/// The key of a usage delta written with an object change (cf USAGE); in
/// the object's region, so it commits in the same batch.
pub fn usage_delta_key(bucket_id: u64, key: &[u8], delta_id: &[u8; 16]) -> Vec<u8> {
    let mut k = object_prefix(bucket_id, key);
    k.extend_from_slice(delta_id);
    k
}

/// The key of a bucket's folded usage counter, grouped by tenant.
pub fn bucket_usage_key(tenant: &str, bucket_id: u64) -> Vec<u8> {
    system_key(
        SYSTEM_USAGE,
        &[tenant.as_bytes(), &[0], &bucket_id.to_be_bytes()],
    )
}

/// Range of the usage counters of one tenant's buckets.
pub fn tenant_usage_range(tenant: &str) -> (Vec<u8>, Vec<u8>) {
    (
        system_key(SYSTEM_USAGE, &[tenant.as_bytes(), &[0]]),
        system_key(SYSTEM_USAGE, &[tenant.as_bytes(), &[1]]),
    )
}

/// Range of every usage counter.
pub fn usage_range() -> (Vec<u8>, Vec<u8>) {
    (
        vec![FAMILY_SYSTEM, SYSTEM_USAGE],
        vec![FAMILY_SYSTEM, SYSTEM_USAGE + 1],
    )
}

/// The key of one gateway's traffic counts for one scope (`t/…`, `u/…`, `b/…`).
pub fn traffic_key(gateway: &str, scope: &str) -> Vec<u8> {
    system_key(
        SYSTEM_TRAFFIC,
        &[gateway.as_bytes(), &[0], scope.as_bytes()],
    )
}

/// Range of every traffic record.
pub fn traffic_range() -> (Vec<u8>, Vec<u8>) {
    (
        vec![FAMILY_SYSTEM, SYSTEM_TRAFFIC],
        vec![FAMILY_SYSTEM, SYSTEM_TRAFFIC + 1],
    )
}

/// The key of one metadata region's lifecycle lease and progress.
pub fn lifecycle_lease_key(region_id: u64) -> Vec<u8> {
    system_key(SYSTEM_LIFECYCLE, &[&region_id.to_be_bytes()])
}

/// Range of every lifecycle lease record.
pub fn lifecycle_lease_range() -> (Vec<u8>, Vec<u8>) {
    (
        vec![FAMILY_SYSTEM, SYSTEM_LIFECYCLE],
        vec![FAMILY_SYSTEM, SYSTEM_LIFECYCLE + 1],
    )
}

/// The ranges holding every bucket record: the root tenant's, then every
/// other tenant's (to find buckets with some configuration, e.g. lifecycle).
pub fn every_bucket_ranges() -> [(Vec<u8>, Vec<u8>); 2] {
    [
        (
            vec![FAMILY_SYSTEM, SYSTEM_BUCKET],
            vec![FAMILY_SYSTEM, SYSTEM_BUCKET + 1],
        ),
        (
            vec![FAMILY_SYSTEM, SYSTEM_TENANT_BUCKET],
            vec![FAMILY_SYSTEM, SYSTEM_TENANT_BUCKET + 1],
        ),
    ]
}

/// The scope part of a key built by [`traffic_key`].
pub fn traffic_scope_of(key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(&[FAMILY_SYSTEM, SYSTEM_TRAFFIC])?;
    let at = rest.iter().position(|&b| b == 0)?;
    String::from_utf8(rest[at + 1..].to_vec()).ok()
}

/// The whole object family (every bucket), e.g. to sweep cf USAGE.
pub fn object_family_range() -> (Vec<u8>, Vec<u8>) {
    (vec![FAMILY_OBJECT], vec![FAMILY_OBJECT + 1])
}

/// Start of the bucket's object range with keys starting with `prefix`.
/// All keys of the bucket that begin with `prefix` lie in [start, end).
pub fn object_range(bucket_id: u64, prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut start = Vec::with_capacity(9 + prefix.len());
    start.push(FAMILY_OBJECT);
    start.extend_from_slice(&bucket_id.to_be_bytes());
    escape_into(&mut start, prefix);
    let end = match prefix_successor(prefix) {
        Some(next) => {
            let mut e = Vec::with_capacity(9 + next.len());
            e.push(FAMILY_OBJECT);
            e.extend_from_slice(&bucket_id.to_be_bytes());
            escape_into(&mut e, &next);
            e
        }
        None => bucket_end(bucket_id),
    };
    (start, end)
}

/// The first key after every key of `bucket_id`.
pub fn bucket_end(bucket_id: u64) -> Vec<u8> {
    match bucket_id.checked_add(1) {
        Some(next) => {
            let mut e = vec![FAMILY_OBJECT];
            e.extend_from_slice(&next.to_be_bytes());
            e
        }
        None => vec![FAMILY_OBJECT + 1],
    }
}

/// The smallest key strictly after every object key starting with `key`
/// (`key` as a raw S3 key): the first key to seek to when skipping a whole
/// common prefix. Returns the encoded seek position within the bucket.
pub fn object_seek_after_prefix(bucket_id: u64, prefix: &[u8]) -> Vec<u8> {
    object_range(bucket_id, prefix).1
}

/// The shortest byte string greater than every string starting with `p`, or
/// `None` if there is none (all bytes 0xFF).
pub fn prefix_successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut v = p.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

/// A decoded object-family key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKeyParts {
    pub bucket_id: u64,
    pub key: Vec<u8>,
    /// Bytes after the terminator (inverted version, upload id, ...).
    pub suffix: Vec<u8>,
}

/// Decodes `0x02 bucket_id enc(key) suffix`. `None` when `raw` is not such a key.
pub fn decode_object_key(raw: &[u8]) -> Option<ObjectKeyParts> {
    if raw.len() < 11 || raw[0] != FAMILY_OBJECT {
        return None;
    }
    let bucket_id = u64::from_be_bytes(raw[1..9].try_into().ok()?);
    let mut key = Vec::new();
    let mut i = 9;
    loop {
        let b = *raw.get(i)?;
        if b == 0 {
            match *raw.get(i + 1)? {
                0xFF => key.push(0),
                0x00 => {
                    return Some(ObjectKeyParts {
                        bucket_id,
                        key,
                        suffix: raw[i + 2..].to_vec(),
                    });
                }
                _ => return None,
            }
            i += 2;
        } else {
            key.push(b);
            i += 1;
        }
    }
}

/// For a raw object-family key, the smallest key after every record of its
/// object (what [`object_seek_after_key`] builds from the decoded parts),
/// found without copying the key out: the end of `enc(key)` is the first
/// unescaped `0x00 0x00`. `None` when `raw` is not such a key.
pub fn seek_after_object_of(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() < 11 || raw[0] != FAMILY_OBJECT {
        return None;
    }
    let mut i = 9;
    loop {
        if *raw.get(i)? == 0 {
            match *raw.get(i + 1)? {
                0xFF => i += 2,
                0x00 => {
                    let mut k = raw[..i + 2].to_vec();
                    k[i + 1] = 1;
                    return Some(k);
                }
                _ => return None,
            }
        } else {
            i += 1;
        }
    }
}

/// A ListObjects delimiter as a scan applies it (`ScanRequest.delimiter`,
/// docs/decisions/0035): an object key whose S3 key, after `prefix`,
/// contains `delimiter` rolls up into the common prefix ending there, and
/// the scan seeks past every key under it instead of reading them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollup {
    /// The listing's prefix (raw S3 key bytes).
    pub prefix: Vec<u8>,
    /// Non-empty.
    pub delimiter: Vec<u8>,
}

impl Rollup {
    /// `None` for an empty delimiter (nothing rolls up).
    pub fn new(prefix: &[u8], delimiter: &[u8]) -> Option<Rollup> {
        (!delimiter.is_empty()).then(|| Rollup {
            prefix: prefix.to_vec(),
            delimiter: delimiter.to_vec(),
        })
    }

    /// For a raw object-family key that rolls up into a common prefix, the
    /// smallest key after every object key under that prefix (always past
    /// the key's own object); `None` when it does not roll up. Byte-wise, as
    /// the gateway's `str::find` on valid UTF-8 (a UTF-8 needle never
    /// matches mid-character).
    pub fn seek_past(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let parts = decode_object_key(raw)?;
        let rest = parts.key.strip_prefix(self.prefix.as_slice())?;
        let d = self.delimiter.as_slice();
        if d.is_empty() || rest.len() < d.len() {
            return None;
        }
        let pos = rest.windows(d.len()).position(|w| w == d)?;
        let cp = &parts.key[..self.prefix.len() + pos + d.len()];
        Some(object_seek_after_prefix(parts.bucket_id, cp))
    }
}

/// The version stored in an object version key's suffix.
pub fn decode_version(suffix: &[u8]) -> Option<u64> {
    Some(!u64::from_be_bytes(suffix.try_into().ok()?))
}

/// Prefixes a record's prost encoding with the value format byte.
pub fn encode_value<M: prost::Message>(m: &M) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + m.encoded_len());
    v.push(VALUE_FORMAT_V1);
    m.encode(&mut v).expect("encoding into a Vec cannot fail");
    v
}

#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("empty record value")]
    Empty,
    #[error("unknown record format version {0}")]
    UnknownFormat(u8),
    #[error("corrupt record: {0}")]
    Corrupt(#[from] prost::DecodeError),
}

/// Decodes a value written by [`encode_value`].
pub fn decode_value<M: prost::Message + Default>(v: &[u8]) -> Result<M, ValueError> {
    match v.first() {
        None => Err(ValueError::Empty),
        Some(&VALUE_FORMAT_V1) => Ok(M::decode(&v[1..])?),
        Some(&other) => Err(ValueError::UnknownFormat(other)),
    }
}

/// Local keys: per-store state that is never replicated, all in cf `raft`.
///
/// Region state, raft state and apply state use distinct one-byte prefixes so a
/// store's startup scans only the small region-state range, never the logs
/// (TiKV's `keys` crate makes the same split).
pub mod local {
    /// The store's identity (`StoreIdent`), written once after PD registration.
    pub const STORE_IDENT_KEY: &[u8] = &[0x01, b'i'];
    const REGION_STATE: u8 = 0x02;
    const RAFT_STATE: u8 = 0x03;
    const APPLY_STATE: u8 = 0x04;
    const RAFT_LOG: u8 = 0x05;
    const SNAPSHOT_APPLY: u8 = 0x06;

    fn region_key(prefix: u8, region_id: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(17);
        k.push(prefix);
        k.extend_from_slice(&region_id.to_be_bytes());
        k
    }

    /// `RegionLocalState` of one peer (region metadata + peer id).
    pub fn region_state_key(region_id: u64) -> Vec<u8> {
        region_key(REGION_STATE, region_id)
    }

    /// Range of every region state key, scanned at startup.
    pub fn region_state_range() -> (Vec<u8>, Vec<u8>) {
        (vec![REGION_STATE], vec![REGION_STATE + 1])
    }

    /// The region id of a key built by [`region_state_key`].
    pub fn region_id_of_state_key(key: &[u8]) -> Option<u64> {
        if key.len() != 9 || key[0] != REGION_STATE {
            return None;
        }
        Some(u64::from_be_bytes(key[1..9].try_into().ok()?))
    }

    /// `RaftLocalState`: hard state, conf state and last log index/term.
    pub fn raft_state_key(region_id: u64) -> Vec<u8> {
        region_key(RAFT_STATE, region_id)
    }

    /// `ApplyState`: applied index and the log truncation point.
    pub fn apply_state_key(region_id: u64) -> Vec<u8> {
        region_key(APPLY_STATE, region_id)
    }

    /// `SnapshotApplyState`: present while a snapshot's data is being
    /// written (redone from its file after a crash), deleted with its last batch.
    pub fn snapshot_apply_key(region_id: u64) -> Vec<u8> {
        region_key(SNAPSHOT_APPLY, region_id)
    }

    /// One raft log entry.
    pub fn raft_log_key(region_id: u64, index: u64) -> Vec<u8> {
        let mut k = region_key(RAFT_LOG, region_id);
        k.extend_from_slice(&index.to_be_bytes());
        k
    }

    /// [start, end) of log entries `from..to` of a region.
    pub fn raft_log_range(region_id: u64, from: u64, to: u64) -> (Vec<u8>, Vec<u8>) {
        (raft_log_key(region_id, from), raft_log_key(region_id, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_preserves_order() {
        let mut keys: Vec<&[u8]> = vec![
            b"", b"\0", b"\0\0", b"a", b"a\0", b"a\0b", b"a\xff", b"ab", b"b", b"\xff",
        ];
        keys.sort();
        let enc: Vec<Vec<u8>> = keys.iter().map(|k| object_version_key(7, k, 0)).collect();
        let mut sorted = enc.clone();
        sorted.sort();
        assert_eq!(enc, sorted);
    }

    #[test]
    fn roundtrip_and_prefix_range() {
        for k in [&b"x/y\0z"[..], b"", b"\0\xff\0"] {
            let raw = object_version_key(42, k, 9);
            let parts = decode_object_key(&raw).unwrap();
            assert_eq!(parts.bucket_id, 42);
            assert_eq!(parts.key, k);
            assert_eq!(decode_version(&parts.suffix), Some(9));
        }
        let (s, e) = object_range(1, b"photos/");
        let inside = object_version_key(1, b"photos/a.jpg", 0);
        let outside = object_version_key(1, b"photos0", 0);
        assert!(s <= inside && inside < e);
        assert!(outside >= e);
        let other_bucket = object_version_key(2, b"photos/a", 0);
        assert!(other_bucket >= e);
    }

    #[test]
    fn local_keys_are_disjoint_and_ordered() {
        let (s, e) = local::region_state_range();
        let rs = local::region_state_key(7);
        assert!(s <= rs && rs < e);
        assert_eq!(local::region_id_of_state_key(&rs), Some(7));
        assert!(local::raft_state_key(7) >= e);
        assert!(local::raft_log_key(7, 1) < local::raft_log_key(7, 2));
        assert!(local::raft_log_key(7, u64::MAX - 1) < local::raft_log_key(8, 0));
        assert!(local::STORE_IDENT_KEY < s.as_slice());
    }

    #[test]
    fn tenant_buckets_are_apart() {
        assert_eq!(bucket_key("photos"), tenant_bucket_key("", "photos"));
        assert_eq!(bucket_key(":photos"), tenant_bucket_key("", "photos"));
        assert_eq!(
            bucket_key("acme:photos"),
            tenant_bucket_key("acme", "photos")
        );
        assert_ne!(bucket_key("acme:photos"), bucket_key("photos"));
        let (s, e) = bucket_range("acme");
        let k = tenant_bucket_key("acme", "photos");
        assert!(s <= k && k < e);
        // Longer tenant names sort on either side, never inside.
        assert!(tenant_bucket_key("acme2", "photos") < s);
        assert!(tenant_bucket_key("acme_x", "photos") >= e);
        assert!(tenant_bucket_key("acm", "photos") < s);
        let (rs, re) = bucket_range("");
        assert!(!(rs <= k && k < re));
        let r = tenant_bucket_key("", "photos");
        assert!(rs <= r && r < re);
        let (s, e) = user_name_range("acme");
        let n = user_name_key("acme", "alice");
        assert!(s <= n && n < e);
        assert!(user_name_key("acme-2", "alice") >= e);
        let (s, e) = tenant_usage_range("acme");
        let q = bucket_usage_key("acme", u64::MAX);
        assert!(s <= q && q < e);
        assert!(bucket_usage_key("acme-2", 1) >= e);
        let t = traffic_key("127.0.0.1:9000", "b/acme:photos");
        assert_eq!(traffic_scope_of(&t).as_deref(), Some("b/acme:photos"));
        let (s, e) = traffic_range();
        assert!(s <= t && t < e);
        let d = usage_delta_key(7, b"k", &[0xff; 16]);
        let (s, e) = object_range(7, b"k");
        assert!(s <= d && d < e, "a delta sits with its object");
    }

    #[test]
    fn versions_stay_inside_their_object_range() {
        let (s, e) = object_versions_range(3, b"a");
        for v in [0, 1, 7, u64::MAX] {
            let k = object_version_key(3, b"a", v);
            assert!(s <= k && k < e, "version {v}");
        }
        // Neighbouring keys (longer, with a 0x00 byte, the next bucket) sort outside.
        for other in [
            object_version_key(3, b"a\0", u64::MAX),
            object_version_key(3, b"a\0\0", 0),
            object_version_key(3, b"ab", u64::MAX),
            object_version_key(3, b"b", 0),
            object_version_key(4, b"a", 5),
        ] {
            assert!(other >= e);
        }
        assert!(object_version_key(3, b"", 0) < s);
        assert_eq!(object_seek_after_key(3, b"a"), e);
        // The seek lands on the next key's first version.
        assert!(e <= object_version_key(3, b"a\0", u64::MAX));
        assert!(e <= object_version_key(3, b"a0", u64::MAX));
    }

    #[test]
    fn rollup_seeks_past_the_common_prefix() {
        let r = Rollup::new(b"a/", b"/").unwrap();
        assert_eq!(Rollup::new(b"a/", b""), None);
        // "a/b/c" rolls up into "a/b/": past every key under it, none after.
        let past = r.seek_past(&object_version_key(9, b"a/b/c", 5)).unwrap();
        for under in [&b"a/b/"[..], b"a/b/c", b"a/b/\xff\xff", b"a/b/\0"] {
            assert!(object_version_key(9, under, 0) < past, "{under:?}");
            assert!(upload_key(9, under, "u") < past, "{under:?}");
        }
        for after in [&b"a/b0"[..], b"a/c/x", b"a/c"] {
            assert!(object_version_key(9, after, u64::MAX) >= past, "{after:?}");
        }
        assert!(object_version_key(10, b"", u64::MAX) >= past);
        // Not under the prefix, no delimiter after it, or not an object key.
        assert_eq!(r.seek_past(&object_version_key(9, b"b/c", 1)), None);
        assert_eq!(r.seek_past(&object_version_key(9, b"a/bc", 1)), None);
        assert_eq!(r.seek_past(&object_version_key(9, b"a/", 1)), None);
        assert_eq!(r.seek_past(&bucket_key("b")), None);
        // The delimiter right after the prefix, a multi-byte delimiter, and
        // escaped zero bytes in the key.
        let root = Rollup::new(b"", b"/").unwrap();
        let past = root.seek_past(&object_version_key(9, b"/x", 1)).unwrap();
        assert_eq!(past, object_seek_after_prefix(9, b"/"));
        let multi = Rollup::new(b"", "é".as_bytes()).unwrap();
        let key = "xéy".as_bytes();
        assert_eq!(
            multi.seek_past(&object_version_key(9, key, 1)),
            Some(object_seek_after_prefix(9, "xé".as_bytes()))
        );
        let zero = Rollup::new(b"\0", b"/").unwrap();
        let past = zero
            .seek_past(&object_version_key(9, b"\0\0/z", 1))
            .unwrap();
        assert!(object_version_key(9, b"\0\0/zz", 0) < past);
        assert!(object_version_key(9, b"\0\0\x30", 0) >= past);
        assert!(object_version_key(9, b"\0\0\0", 0) < past);
    }

    #[test]
    fn seek_after_object_of_matches_the_decoded_form() {
        for k in [&b"a"[..], b"", b"a\0b", b"\0", b"x/\xff\0"] {
            let want = object_seek_after_key(9, k);
            for raw in [
                object_version_key(9, k, 3),
                upload_key(9, k, "u-1"),
                object_prefix(9, k),
            ] {
                assert_eq!(seek_after_object_of(&raw), Some(want.clone()), "{k:?}");
            }
        }
        assert_eq!(seek_after_object_of(&bucket_key("b")), None);
        assert_eq!(seek_after_object_of(&[FAMILY_OBJECT; 10]), None);
        // No terminator: not a complete object key.
        let mut open = vec![FAMILY_OBJECT];
        open.extend_from_slice(&1u64.to_be_bytes());
        open.extend_from_slice(b"abc");
        assert_eq!(seek_after_object_of(&open), None);
    }

    #[test]
    fn lifecycle_leases_and_bucket_ranges_are_apart() {
        let (s, e) = lifecycle_lease_range();
        let l = lifecycle_lease_key(u64::MAX);
        assert!(s <= l && l < e && lifecycle_lease_key(0) >= s);
        let [(rs, re), (ts, te)] = every_bucket_ranges();
        for k in [bucket_key("photos"), bucket_key("acme:photos")] {
            assert!((rs <= k && k < re) || (ts <= k && k < te));
            assert!(!(s <= k && k < e));
        }
        assert!(!((rs..re).contains(&l) || (ts..te).contains(&l)));
        let (us, ue) = usage_range();
        assert!(!(us <= l && l < ue));
    }

    #[test]
    fn newest_version_first() {
        assert!(object_version_key(1, b"k", 5) < object_version_key(1, b"k", 4));
        assert!(object_version_key(1, b"k", 1) < object_version_key(1, b"k", 0));
    }
}
