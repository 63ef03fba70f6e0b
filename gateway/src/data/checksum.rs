//! Additional checksums (`x-amz-checksum-*`): computed in the same pass as
//! the MD5, verified against the header value or the streaming trailer, and
//! stored base64-encoded under the algorithm name ("CRC32", "SHA256", ...).
//!
//! s3s verifies signatures (including the trailer's) but not checksum values;
//! that is done here.
//!
//! Multipart uploads (docs/decisions/0033): CreateMultipartUpload names an
//! algorithm and a type ([`UploadChecksum`]); every part is checksummed with
//! it, and Complete derives the object's value from the parts' — COMPOSITE:
//! the hash of the concatenated binary part hashes, `-N` appended (what AWS
//! returns); FULL_OBJECT: the CRC of the whole body, combined from the part
//! CRCs and sizes (`crc-fast`'s combine, the crate the data nodes already use
//! for CRC32C), so no byte is read twice.

use std::collections::BTreeMap;

use base64::Engine;
use http::HeaderMap;
use s3s::crypto::{Checksum, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::TrailingHeaders;

use crate::error::{GwError, GwResult};
use kura_proto::meta::ChecksumType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algo {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algo {
    pub const ALL: [Algo; 5] = [
        Algo::Crc32,
        Algo::Crc32c,
        Algo::Crc64Nvme,
        Algo::Sha1,
        Algo::Sha256,
    ];

    /// The S3 algorithm name, also the key in `ObjectRecord.checksums`.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Crc32 => "CRC32",
            Algo::Crc32c => "CRC32C",
            Algo::Crc64Nvme => "CRC64NVME",
            Algo::Sha1 => "SHA1",
            Algo::Sha256 => "SHA256",
        }
    }

    pub fn header(self) -> &'static str {
        match self {
            Algo::Crc32 => "x-amz-checksum-crc32",
            Algo::Crc32c => "x-amz-checksum-crc32c",
            Algo::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algo::Sha1 => "x-amz-checksum-sha1",
            Algo::Sha256 => "x-amz-checksum-sha256",
        }
    }

    pub fn from_name(s: &str) -> Option<Algo> {
        let s = s.trim();
        Algo::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
    }

    fn from_header(s: &str) -> Option<Algo> {
        let s = s.trim();
        Algo::ALL
            .into_iter()
            .find(|a| a.header().eq_ignore_ascii_case(s))
    }
}

/// How an object's checksum covers it (`x-amz-checksum-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    FullObject,
    Composite,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::FullObject => "FULL_OBJECT",
            Kind::Composite => "COMPOSITE",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        match s.trim() {
            x if x.eq_ignore_ascii_case("FULL_OBJECT") => Some(Kind::FullObject),
            x if x.eq_ignore_ascii_case("COMPOSITE") => Some(Kind::Composite),
            _ => None,
        }
    }

    /// As stored (`kura.meta.ChecksumType`).
    pub fn to_stored(self) -> i32 {
        match self {
            Kind::FullObject => ChecksumType::FullObject as i32,
            Kind::Composite => ChecksumType::Composite as i32,
        }
    }

    pub fn from_stored(v: i32) -> Option<Kind> {
        match ChecksumType::try_from(v) {
            Ok(ChecksumType::FullObject) => Some(Kind::FullObject),
            Ok(ChecksumType::Composite) => Some(Kind::Composite),
            _ => None,
        }
    }

    /// The s3s value for outputs.
    pub fn dto(self) -> s3s::dto::ChecksumType {
        s3s::dto::ChecksumType::from(self.name().to_string())
    }
}

/// The checksum a multipart upload was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadChecksum {
    pub algo: Algo,
    pub kind: Kind,
}

impl UploadChecksum {
    /// From CreateMultipartUpload's `x-amz-checksum-algorithm` and
    /// `x-amz-checksum-type`. The type defaults as AWS's: FULL_OBJECT for
    /// CRC64NVME (it has no composite form), else COMPOSITE.
    pub fn from_request(algorithm: Option<&str>, kind: Option<&str>) -> GwResult<Option<Self>> {
        let algo = match algorithm {
            None => {
                if kind.is_some() {
                    return Err(GwError::InvalidRequest(
                        "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header."
                            .into(),
                    ));
                }
                return Ok(None);
            }
            Some(a) => Algo::from_name(a).ok_or_else(|| {
                GwError::InvalidRequest(format!("Checksum algorithm {a:?} is not supported"))
            })?,
        };
        let kind = match kind {
            None if algo == Algo::Crc64Nvme => Kind::FullObject,
            None => Kind::Composite,
            Some(k) => Kind::from_name(k).ok_or_else(|| {
                GwError::InvalidRequest(format!(
                    "Value for x-amz-checksum-type header is invalid: {k:?}"
                ))
            })?,
        };
        let fits = match kind {
            Kind::FullObject => matches!(algo, Algo::Crc32 | Algo::Crc32c | Algo::Crc64Nvme),
            Kind::Composite => algo != Algo::Crc64Nvme,
        };
        if !fits {
            return Err(GwError::InvalidRequest(format!(
                "The {} checksum type cannot be used with the {} checksum algorithm.",
                kind.name(),
                algo.name().to_lowercase()
            )));
        }
        Ok(Some(UploadChecksum { algo, kind }))
    }

    /// As stored on the upload record (`checksum_algorithm`, `checksum_type`).
    pub fn from_stored(algorithm: &str, kind: i32) -> Option<Self> {
        let algo = Algo::from_name(algorithm)?;
        let kind = Kind::from_stored(kind).unwrap_or(Kind::Composite);
        Some(UploadChecksum { algo, kind })
    }

    /// The object's value from its parts' (base64 values and sizes, in order).
    pub fn combine(&self, parts: &[(&str, u64)]) -> GwResult<String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let raw = |v: &str| {
            b64.decode(v)
                .map_err(|_| GwError::Internal(format!("stored part checksum {v:?} is not base64")))
        };
        match self.kind {
            Kind::Composite => {
                let mut h = Hasher::new(self.algo);
                for (v, _) in parts {
                    h.update(&raw(v)?);
                }
                Ok(format!("{}-{}", h.finish_base64(), parts.len()))
            }
            Kind::FullObject => {
                let (crc, width) = match self.algo {
                    Algo::Crc32 => (crc_fast::CrcAlgorithm::Crc32IsoHdlc, 4),
                    Algo::Crc32c => (crc_fast::CrcAlgorithm::Crc32Iscsi, 4),
                    Algo::Crc64Nvme => (crc_fast::CrcAlgorithm::Crc64Nvme, 8),
                    a => {
                        return Err(GwError::Internal(format!(
                            "{} has no full-object combination",
                            a.name()
                        )))
                    }
                };
                let mut acc: Option<u64> = None;
                for (v, size) in parts {
                    let bytes = raw(v)?;
                    if bytes.len() != width {
                        return Err(GwError::Internal(format!(
                            "stored part checksum {v:?} has the wrong length"
                        )));
                    }
                    let mut be = [0u8; 8];
                    be[8 - width..].copy_from_slice(&bytes);
                    let value = u64::from_be_bytes(be);
                    acc = Some(match acc {
                        None => value,
                        Some(a) => crc_fast::checksum_combine(crc, a, value, *size),
                    });
                }
                let v = acc.unwrap_or(0).to_be_bytes();
                Ok(b64.encode(&v[8 - width..]))
            }
        }
    }
}

enum Hasher {
    Crc32(Crc32),
    Crc32c(Crc32c),
    Crc64Nvme(Crc64Nvme),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Hasher {
    fn new(a: Algo) -> Self {
        match a {
            Algo::Crc32 => Hasher::Crc32(Crc32::new()),
            Algo::Crc32c => Hasher::Crc32c(Crc32c::new()),
            Algo::Crc64Nvme => Hasher::Crc64Nvme(Crc64Nvme::new()),
            Algo::Sha1 => Hasher::Sha1(Sha1::new()),
            Algo::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc32(h) => h.update(data),
            Hasher::Crc32c(h) => h.update(data),
            Hasher::Crc64Nvme(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    fn finish_base64(self) -> String {
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        match self {
            Hasher::Crc32(h) => b64(h.finalize().as_ref()),
            Hasher::Crc32c(h) => b64(h.finalize().as_ref()),
            Hasher::Crc64Nvme(h) => b64(h.finalize().as_ref()),
            Hasher::Sha1(h) => b64(h.finalize().as_ref()),
            Hasher::Sha256(h) => b64(h.finalize().as_ref()),
        }
    }
}

/// What to compute and what to compare against, decided from the request headers.
pub struct ChecksumPlan {
    hashers: Vec<(Algo, Hasher)>,
    /// Values sent as headers.
    expected: Vec<(Algo, String)>,
    /// Algorithms whose value arrives in the streaming trailer.
    trailer: Vec<Algo>,
    trailing: Option<TrailingHeaders>,
}

impl ChecksumPlan {
    /// A plan that computes nothing.
    pub fn none() -> Self {
        ChecksumPlan {
            hashers: Vec::new(),
            expected: Vec::new(),
            trailer: Vec::new(),
            trailing: None,
        }
    }

    /// Computes the named algorithms (unknown names are ignored) without verifying anything.
    pub fn computing<'a>(names: impl IntoIterator<Item = &'a String>) -> Self {
        let mut algos: Vec<Algo> = names
            .into_iter()
            .filter_map(|n| Algo::from_name(n))
            .collect();
        algos.sort();
        algos.dedup();
        ChecksumPlan {
            hashers: algos.into_iter().map(|a| (a, Hasher::new(a))).collect(),
            expected: Vec::new(),
            trailer: Vec::new(),
            trailing: None,
        }
    }

    /// Reads `x-amz-checksum-<algo>` values, `x-amz-trailer` and
    /// `x-amz-sdk-checksum-algorithm` / `x-amz-checksum-algorithm`.
    pub fn from_headers(headers: &HeaderMap, trailing: Option<TrailingHeaders>) -> GwResult<Self> {
        let mut algos: Vec<Algo> = Vec::new();
        let mut expected = Vec::new();
        for a in Algo::ALL {
            if let Some(v) = headers.get(a.header()) {
                let v = v.to_str().map_err(|_| {
                    GwError::InvalidDigest(format!("invalid {} header", a.header()))
                })?;
                algos.push(a);
                expected.push((a, v.trim().to_string()));
            }
        }
        let mut trailer = Vec::new();
        if let Some(t) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
            for name in t.split(',') {
                if let Some(a) = Algo::from_header(name) {
                    algos.push(a);
                    trailer.push(a);
                }
            }
        }
        for h in ["x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm"] {
            if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok()) {
                match Algo::from_name(v) {
                    Some(a) => algos.push(a),
                    None => {
                        return Err(GwError::InvalidArgument(format!(
                            "unsupported checksum algorithm {v:?}"
                        )))
                    }
                }
            }
        }
        algos.sort();
        algos.dedup();
        Ok(ChecksumPlan {
            hashers: algos.into_iter().map(|a| (a, Hasher::new(a))).collect(),
            expected,
            trailer,
            trailing,
        })
    }

    /// A part of an upload created with `algo`: that algorithm is computed
    /// (and verified when sent); a value for another one is refused, as AWS.
    pub fn require(&mut self, algo: Algo) -> GwResult<()> {
        if let Some((other, _)) = self.hashers.iter().find(|(a, _)| *a != algo) {
            return Err(GwError::InvalidRequest(format!(
                "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                algo.name().to_lowercase(),
                other.name().to_lowercase()
            )));
        }
        if self.hashers.is_empty() {
            self.hashers.push((algo, Hasher::new(algo)));
        }
        Ok(())
    }

    pub fn update(&mut self, data: &[u8]) {
        for (_, h) in &mut self.hashers {
            h.update(data);
        }
    }

    /// Verifies every value we were given; returns algorithm name -> base64 value.
    /// Call only after the body stream ended (trailers arrive last).
    pub fn finish(self) -> GwResult<BTreeMap<String, String>> {
        let ChecksumPlan {
            hashers,
            expected,
            trailer,
            trailing,
        } = self;
        let computed: BTreeMap<Algo, String> = hashers
            .into_iter()
            .map(|(a, h)| (a, h.finish_base64()))
            .collect();
        let mut given = expected;
        if let Some(t) = trailing {
            for a in trailer {
                if let Some(v) = t
                    .read(|h| {
                        h.get(a.header())
                            .and_then(|v| v.to_str().ok())
                            .map(|s| s.trim().to_string())
                    })
                    .flatten()
                {
                    given.push((a, v));
                }
            }
        }
        for (a, v) in given {
            match computed.get(&a) {
                Some(c) if *c == v => {}
                _ => {
                    return Err(GwError::BadDigest(format!(
                        "The {} you specified did not match the calculated checksum.",
                        a.name()
                    )))
                }
            }
        }
        Ok(computed
            .into_iter()
            .map(|(a, v)| (a.name().to_string(), v))
            .collect())
    }
}

/// Fills the five checksum fields of an S3 output from a stored map.
pub struct ChecksumFields {
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub crc64nvme: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    /// `x-amz-checksum-type`, where the output has it (GET/HEAD); set by the caller.
    pub kind: Option<Kind>,
}

impl ChecksumFields {
    pub fn from_map<'a>(m: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        let mut f = ChecksumFields {
            crc32: None,
            crc32c: None,
            crc64nvme: None,
            sha1: None,
            sha256: None,
            kind: None,
        };
        for (k, v) in m {
            match Algo::from_name(k) {
                Some(Algo::Crc32) => f.crc32 = Some(v.clone()),
                Some(Algo::Crc32c) => f.crc32c = Some(v.clone()),
                Some(Algo::Crc64Nvme) => f.crc64nvme = Some(v.clone()),
                Some(Algo::Sha1) => f.sha1 = Some(v.clone()),
                Some(Algo::Sha256) => f.sha256 = Some(v.clone()),
                None => {}
            }
        }
        f
    }
}

/// Builds the s3s output `Out { fields.. }` with the five checksum fields of a
/// [`ChecksumFields`] and the rest defaulted. The outputs (PutObject,
/// UploadPart, GetObject, HeadObject, CopyObjectResult) share the field names
/// but no trait, hence a macro:
/// `with_checksums!(sums, PutObjectOutput { e_tag: Some(tag) })`.
macro_rules! with_checksums {
    ($sums:expr, $out:ident { $($field:ident: $value:expr),* $(,)? }) => {{
        let sums: $crate::data::checksum::ChecksumFields = $sums;
        // Some outputs have no other field left to default.
        #[allow(clippy::needless_update)]
        let out = $out {
            $($field: $value,)*
            checksum_crc32: sums.crc32,
            checksum_crc32c: sums.crc32c,
            checksum_crc64nvme: sums.crc64nvme,
            checksum_sha1: sums.sha1,
            checksum_sha256: sums.sha256,
            ..Default::default()
        };
        out
    }};
}
pub(crate) use with_checksums;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_header_values() {
        let mut h = HeaderMap::new();
        // CRC32 of "hello" is 0x3610a686.
        h.insert("x-amz-checksum-crc32", "NhCmhg==".parse().unwrap());
        let mut p = ChecksumPlan::from_headers(&h, None).unwrap();
        p.update(b"hel");
        p.update(b"lo");
        let out = p.finish().unwrap();
        assert_eq!(out.get("CRC32").map(String::as_str), Some("NhCmhg=="));

        let mut p = ChecksumPlan::from_headers(&h, None).unwrap();
        p.update(b"hellO");
        assert!(matches!(p.finish(), Err(GwError::BadDigest(_))));
    }

    #[test]
    fn computes_requested_algorithm_without_value() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-sdk-checksum-algorithm", "SHA256".parse().unwrap());
        let mut p = ChecksumPlan::from_headers(&h, None).unwrap();
        p.update(b"");
        let out = p.finish().unwrap();
        assert_eq!(
            out.get("SHA256").map(String::as_str),
            Some("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        );

        h.insert("x-amz-sdk-checksum-algorithm", "MD4".parse().unwrap());
        assert!(ChecksumPlan::from_headers(&h, None).is_err());
    }

    fn crc(algo: Algo, data: &[u8]) -> String {
        let mut h = Hasher::new(algo);
        h.update(data);
        h.finish_base64()
    }

    #[test]
    fn full_object_crcs_combine_to_the_whole_body_crc() {
        let body: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let cuts = [0, 3000, 3001, 7000, 10_000];
        for algo in [Algo::Crc32, Algo::Crc32c, Algo::Crc64Nvme] {
            let parts: Vec<(String, u64)> = cuts
                .windows(2)
                .map(|w| (crc(algo, &body[w[0]..w[1]]), (w[1] - w[0]) as u64))
                .collect();
            let refs: Vec<(&str, u64)> = parts.iter().map(|(v, n)| (v.as_str(), *n)).collect();
            let u = UploadChecksum {
                algo,
                kind: Kind::FullObject,
            };
            assert_eq!(u.combine(&refs).unwrap(), crc(algo, &body), "{algo:?}");
        }
    }

    #[test]
    fn composite_is_the_hash_of_the_part_hashes() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let (a, b) = (
            crc(Algo::Sha256, b"part one"),
            crc(Algo::Sha256, b"part two"),
        );
        let mut cat = b64.decode(&a).unwrap();
        cat.extend(b64.decode(&b).unwrap());
        let want = format!("{}-2", crc(Algo::Sha256, &cat));
        let u = UploadChecksum {
            algo: Algo::Sha256,
            kind: Kind::Composite,
        };
        assert_eq!(u.combine(&[(&a, 8), (&b, 8)]).unwrap(), want);
    }

    #[test]
    fn upload_checksum_requests() {
        let p = |a: Option<&str>, k: Option<&str>| UploadChecksum::from_request(a, k);
        assert_eq!(p(None, None).unwrap(), None);
        assert!(p(None, Some("COMPOSITE")).is_err());
        assert_eq!(
            p(Some("CRC32"), None).unwrap().unwrap().kind,
            Kind::Composite
        );
        assert_eq!(
            p(Some("crc64nvme"), None).unwrap().unwrap().kind,
            Kind::FullObject
        );
        assert!(p(Some("CRC64NVME"), Some("COMPOSITE")).is_err());
        assert!(p(Some("SHA256"), Some("FULL_OBJECT")).is_err());
        assert!(p(Some("MD5"), None).is_err());
        assert!(p(Some("CRC32C"), Some("BOTH")).is_err());
        assert_eq!(
            p(Some("CRC32C"), Some("FULL_OBJECT")).unwrap(),
            Some(UploadChecksum {
                algo: Algo::Crc32c,
                kind: Kind::FullObject
            })
        );
    }

    #[test]
    fn parts_must_use_the_uploads_algorithm() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-checksum-sha1", "x".parse().unwrap());
        let mut p = ChecksumPlan::from_headers(&h, None).unwrap();
        assert!(matches!(
            p.require(Algo::Crc32),
            Err(GwError::InvalidRequest(_))
        ));
        let mut p = ChecksumPlan::from_headers(&HeaderMap::new(), None).unwrap();
        p.require(Algo::Crc32).unwrap();
        p.update(b"hello");
        assert_eq!(
            p.finish().unwrap().get("CRC32").map(String::as_str),
            Some("NhCmhg==")
        );
    }

    #[test]
    fn nothing_requested_nothing_computed() {
        let p = ChecksumPlan::from_headers(&HeaderMap::new(), None).unwrap();
        assert!(p.finish().unwrap().is_empty());
    }
}
