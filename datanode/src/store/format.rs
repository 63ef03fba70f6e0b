//! The bytes of a segment file, versions 1 and 2. Pure encode/decode; no I/O.
//! The layout and the reasons behind it are in docs/decisions/0004-segment-format.md;
//! version 2 (decision 0042) only adds zero padding, so segments can be written with
//! O_DIRECT: the first record starts at 4096, and a record may be followed by zeros up to
//! the next 4 KiB boundary (writers pad after each batch of records they write at once).
//! Version 1 segments (no padding, first record at 64) are still read and compacted.
//!
//! ```text
//! segment  = segment_header record*                          (version 1)
//! segment  = segment_header zeros(to 4096) (record+ zeros(to next 4 KiB))*  (version 2)
//! segment_header (64 B) = "KURASEG\0" | version u32 | header_len u32 | segment_id u64
//!                        | dir_uuid [16] | reserved [20] | crc32c u32 (of bytes 0..60)
//! record   = record_header block* footer
//! record_header = "KREC" | kind u8 | reserved [3] | meta_len u32 | meta | header_crc u32
//!     header_crc = crc32c(dir_uuid | segment_id u64 | "KREC".. meta)   (binds it to this segment)
//!     meta: kind 1 PUT = FragmentHeader (prost), kind 2 TOMBSTONE = FragmentId (prost)
//! block    = len u32 (1..=block_size) | crc32c u32 (of data) | data
//! footer (32 B) = "KFTR" | block_count u32 | total_len u64 | seq u64 | blocks_crc u32 | crc u32
//!     blocks_crc = crc32c(all 8-byte block headers of the record, in order)
//!     crc = crc32c(footer bytes 0..28 | header_crc u32)
//! ```
//! All integers little-endian. "KFTR" read as a block length is far above `MAX_BLOCK_SIZE`,
//! so a scanner tells a footer from a block by its first four bytes.

use crate::crc::crc32c;

pub const SEGMENT_MAGIC: [u8; 8] = *b"KURASEG\0";
/// Bump on any incompatible change; keep a decoder for every older version.
/// New segments are written in this version.
pub const SEGMENT_FORMAT_VERSION: u32 = 2;
/// No padding: records follow each other from offset 64 (written before decision 0042).
pub const SEGMENT_FORMAT_V1: u32 = 1;
pub const SEGMENT_HEADER_LEN: u64 = 64;
/// Version 2 pads to this boundary (the O_DIRECT alignment, `direct::ALIGN`).
pub const PAD_ALIGN: u64 = 4096;

/// Offset of the first record of a segment of `version`.
pub fn data_start(version: u32) -> u64 {
    if version >= 2 {
        PAD_ALIGN
    } else {
        SEGMENT_HEADER_LEN
    }
}

/// Whether records of a segment of `version` may be followed by zero padding.
pub fn is_padded(version: u32) -> bool {
    version >= 2
}
pub const RECORD_MAGIC: [u8; 4] = *b"KREC";
pub const FOOTER_MAGIC: [u8; 4] = *b"KFTR";
/// magic + kind + reserved + meta_len.
pub const RECORD_PREFIX_LEN: usize = 12;
pub const BLOCK_HEADER_LEN: u64 = 8;
pub const FOOTER_LEN: usize = 32;
/// Upper bound on a record's meta (a FragmentHeader with a 1 KiB key is far below).
pub const MAX_META_LEN: u32 = 64 * 1024;
/// Largest block size a fragment may declare.
pub const MAX_BLOCK_SIZE: u32 = 16 << 20;

const _: () = assert!(u32::from_le_bytes(FOOTER_MAGIC) > MAX_BLOCK_SIZE);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u32),
    #[error("checksum mismatch")]
    BadChecksum,
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("malformed: {0}")]
    Malformed(String),
}

/// What a record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A fragment: FragmentHeader meta, then its blocks.
    Put = 1,
    /// The FragmentId in meta is deleted as of this record's seq; no blocks.
    Tombstone = 2,
}

impl RecordKind {
    fn from_u8(v: u8) -> Result<Self, FormatError> {
        match v {
            1 => Ok(RecordKind::Put),
            2 => Ok(RecordKind::Tombstone),
            other => Err(FormatError::UnknownKind(other)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// `SEGMENT_FORMAT_VERSION` for new segments; `SEGMENT_FORMAT_V1` in old ones.
    pub version: u32,
    pub segment_id: u64,
    pub dir_uuid: [u8; 16],
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        b[24..40].copy_from_slice(&self.dir_uuid);
        let crc = crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < SEGMENT_HEADER_LEN as usize {
            return Err(FormatError::Malformed("short segment header".into()));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = le_u32(&b[8..12]);
        if version != SEGMENT_FORMAT_VERSION && version != SEGMENT_FORMAT_V1 {
            return Err(FormatError::UnsupportedVersion(version));
        }
        if le_u32(&b[60..64]) != crc32c(&b[0..60]) {
            return Err(FormatError::BadChecksum);
        }
        if le_u32(&b[12..16]) as u64 != SEGMENT_HEADER_LEN {
            return Err(FormatError::Malformed("segment header length".into()));
        }
        let mut dir_uuid = [0u8; 16];
        dir_uuid.copy_from_slice(&b[24..40]);
        Ok(SegmentHeader {
            version,
            segment_id: le_u64(&b[16..24]),
            dir_uuid,
        })
    }
}

/// Identifies the segment a record belongs to; mixed into the record header CRC so bytes
/// copied from elsewhere (another disk, or a segment stored as object data) never parse
/// as a record here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSalt {
    pub dir_uuid: [u8; 16],
    pub segment_id: u64,
}

impl SegmentSalt {
    fn header_crc(&self, prefix_and_meta: &[u8]) -> u32 {
        let mut buf = Vec::with_capacity(24 + prefix_and_meta.len());
        buf.extend_from_slice(&self.dir_uuid);
        buf.extend_from_slice(&self.segment_id.to_le_bytes());
        buf.extend_from_slice(prefix_and_meta);
        crc32c(&buf)
    }
}

/// Encodes a record header; returns the bytes and the header CRC the footer must carry.
pub fn encode_record_header(salt: SegmentSalt, kind: RecordKind, meta: &[u8]) -> (Vec<u8>, u32) {
    let mut b = Vec::with_capacity(RECORD_PREFIX_LEN + meta.len() + 4);
    b.extend_from_slice(&RECORD_MAGIC);
    b.push(kind as u8);
    b.extend_from_slice(&[0u8; 3]);
    b.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    b.extend_from_slice(meta);
    let crc = salt.header_crc(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    (b, crc)
}

/// The fixed part of a record header, read before the meta length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPrefix {
    pub kind: RecordKind,
    pub meta_len: u32,
}

impl RecordPrefix {
    pub fn decode(b: &[u8; RECORD_PREFIX_LEN]) -> Result<Self, FormatError> {
        if b[0..4] != RECORD_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let kind = RecordKind::from_u8(b[4])?;
        if b[5..8] != [0, 0, 0] {
            return Err(FormatError::Malformed("reserved record bytes set".into()));
        }
        let meta_len = le_u32(&b[8..12]);
        if meta_len > MAX_META_LEN {
            return Err(FormatError::Malformed(format!("meta length {meta_len}")));
        }
        Ok(RecordPrefix { kind, meta_len })
    }

    /// Bytes from the record start to the first block: prefix, meta, header CRC.
    pub fn header_len(&self) -> u64 {
        RECORD_PREFIX_LEN as u64 + self.meta_len as u64 + 4
    }
}

/// Checks a whole record header (`prefix | meta | crc`) and returns its CRC.
pub fn check_record_header(salt: SegmentSalt, whole: &[u8]) -> Result<u32, FormatError> {
    if whole.len() < RECORD_PREFIX_LEN + 4 {
        return Err(FormatError::Malformed("short record header".into()));
    }
    let (body, crc) = whole.split_at(whole.len() - 4);
    let crc = le_u32(crc);
    if salt.header_crc(body) != crc {
        return Err(FormatError::BadChecksum);
    }
    Ok(crc)
}

pub fn encode_block_header(len: u32, crc: u32) -> [u8; BLOCK_HEADER_LEN as usize] {
    let mut b = [0u8; BLOCK_HEADER_LEN as usize];
    b[0..4].copy_from_slice(&len.to_le_bytes());
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

/// `(len, crc32c)` of a block header.
pub fn decode_block_header(b: &[u8; BLOCK_HEADER_LEN as usize]) -> (u32, u32) {
    (le_u32(&b[0..4]), le_u32(&b[4..8]))
}

/// True when the 4 bytes at a block position are a footer, not a block length.
pub fn is_footer_magic(b: &[u8]) -> bool {
    b.len() >= 4 && b[0..4] == FOOTER_MAGIC
}

/// Commit marker of a record: without a valid footer a record does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub block_count: u32,
    pub total_len: u64,
    /// Store-wide order of records: the highest seq for a FragmentId wins at rebuild.
    pub seq: u64,
    pub blocks_crc: u32,
}

impl Footer {
    pub fn encode(&self, header_crc: u32) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..4].copy_from_slice(&FOOTER_MAGIC);
        b[4..8].copy_from_slice(&self.block_count.to_le_bytes());
        b[8..16].copy_from_slice(&self.total_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..28].copy_from_slice(&self.blocks_crc.to_le_bytes());
        let crc = footer_crc(&b[0..28], header_crc);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; FOOTER_LEN], header_crc: u32) -> Result<Self, FormatError> {
        if !is_footer_magic(b) {
            return Err(FormatError::BadMagic);
        }
        if le_u32(&b[28..32]) != footer_crc(&b[0..28], header_crc) {
            return Err(FormatError::BadChecksum);
        }
        Ok(Footer {
            block_count: le_u32(&b[4..8]),
            total_len: le_u64(&b[8..16]),
            seq: le_u64(&b[16..24]),
            blocks_crc: le_u32(&b[24..28]),
        })
    }
}

fn footer_crc(first28: &[u8], header_crc: u32) -> u32 {
    let mut buf = [0u8; 32];
    buf[0..28].copy_from_slice(first28);
    buf[28..32].copy_from_slice(&header_crc.to_le_bytes());
    crc32c(&buf)
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[0..8]);
    u64::from_le_bytes(a)
}

/// File name of segment `id`; zero-padded so a directory listing sorts by id.
pub fn segment_file_name(id: u64) -> String {
    format!("seg-{id:010}.kseg")
}

/// The id in a segment file name, or None for any other file.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".kseg")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: SegmentSalt = SegmentSalt {
        dir_uuid: [7; 16],
        segment_id: 3,
    };

    #[test]
    fn segment_header_roundtrip_and_checks() {
        let h = SegmentHeader {
            version: SEGMENT_FORMAT_VERSION,
            segment_id: 42,
            dir_uuid: [9; 16],
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        let v1 = SegmentHeader {
            version: SEGMENT_FORMAT_V1,
            ..h.clone()
        };
        assert_eq!(SegmentHeader::decode(&v1.encode()).unwrap(), v1);
        assert_eq!((data_start(1), data_start(2)), (64, 4096));
        let mut bad = b;
        bad[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(FormatError::BadChecksum));
        let mut newer = b;
        newer[8] = 3;
        assert_eq!(
            SegmentHeader::decode(&newer),
            Err(FormatError::UnsupportedVersion(3))
        );
        assert_eq!(
            SegmentHeader::decode(&b[..10]).map(|_| ()),
            Err(FormatError::Malformed("short segment header".into()))
        );
    }

    #[test]
    fn record_header_roundtrip() {
        let (b, crc) = encode_record_header(SALT, RecordKind::Put, b"meta-bytes");
        let mut prefix = [0u8; RECORD_PREFIX_LEN];
        prefix.copy_from_slice(&b[..RECORD_PREFIX_LEN]);
        let p = RecordPrefix::decode(&prefix).unwrap();
        assert_eq!(
            p,
            RecordPrefix {
                kind: RecordKind::Put,
                meta_len: 10
            }
        );
        assert_eq!(p.header_len() as usize, b.len());
        assert_eq!(check_record_header(SALT, &b), Ok(crc));
        // Another segment (or disk) must not accept these bytes.
        let other = SegmentSalt {
            segment_id: 4,
            ..SALT
        };
        assert_eq!(
            check_record_header(other, &b),
            Err(FormatError::BadChecksum)
        );
        let mut flipped = b.clone();
        flipped[14] ^= 0x10;
        assert_eq!(
            check_record_header(SALT, &flipped),
            Err(FormatError::BadChecksum)
        );
    }

    #[test]
    fn record_prefix_rejects_garbage() {
        let mut p = [0u8; RECORD_PREFIX_LEN];
        assert_eq!(RecordPrefix::decode(&p), Err(FormatError::BadMagic));
        p[0..4].copy_from_slice(&RECORD_MAGIC);
        p[4] = 9;
        assert_eq!(RecordPrefix::decode(&p), Err(FormatError::UnknownKind(9)));
        p[4] = 2;
        p[8..12].copy_from_slice(&(MAX_META_LEN + 1).to_le_bytes());
        assert!(matches!(
            RecordPrefix::decode(&p),
            Err(FormatError::Malformed(_))
        ));
    }

    #[test]
    fn footer_roundtrip_bound_to_header() {
        let f = Footer {
            block_count: 3,
            total_len: 3 << 20,
            seq: 77,
            blocks_crc: 0xdead_beef,
        };
        let b = f.encode(1234);
        assert_eq!(Footer::decode(&b, 1234), Ok(f));
        assert_eq!(Footer::decode(&b, 1235), Err(FormatError::BadChecksum));
        let mut bad = b;
        bad[9] ^= 1;
        assert_eq!(Footer::decode(&bad, 1234), Err(FormatError::BadChecksum));
    }

    #[test]
    fn block_header_and_footer_magic_are_distinct() {
        let b = encode_block_header(MAX_BLOCK_SIZE, 5);
        assert_eq!(decode_block_header(&b), (MAX_BLOCK_SIZE, 5));
        assert!(!is_footer_magic(&b));
        assert!(is_footer_magic(
            &Footer {
                block_count: 0,
                total_len: 0,
                seq: 0,
                blocks_crc: 0
            }
            .encode(0)
        ));
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(12), "seg-0000000012.kseg");
        assert_eq!(parse_segment_file_name("seg-0000000012.kseg"), Some(12));
        assert_eq!(parse_segment_file_name("seg-12.kseg"), Some(12));
        assert_eq!(parse_segment_file_name("seg-x.kseg"), None);
        assert_eq!(parse_segment_file_name("identity.json"), None);
    }
}
