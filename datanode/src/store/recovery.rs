//! Rebuilding the index from segment files at startup.
//!
//! Reads record headers and block headers, seeking over block payloads (payload CRCs are
//! checked on every read instead). A record counts only with a valid footer. At the first
//! record that does not parse, the rest of the file is searched for a later valid record:
//! if one exists the bad range is corruption in the middle (logged, skipped, never
//! truncated, so acknowledged records after it survive); if none exists it is a torn tail
//! from a crash and is truncated away. In a version 2 segment, zeros from a record's end
//! up to the next 4 KiB boundary are padding (never a record: a record starts "KREC"),
//! and count towards the record before them (`ParsedRecord` callers use `skip_padding`).
//! A tail of nothing but zeros is what group commit wrote ahead (`group::FILL_AHEAD`),
//! not a torn write: it is cut the same way, without a warning.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use kura_proto::datanode::{FragmentHeader, FragmentId};
use prost::Message;

use super::format::*;
use super::index::{Index, Location};
use crate::crc::crc32c;
use crate::error::StoreError;

/// Why bytes at an offset are not a record.
#[derive(Debug)]
pub(crate) enum ParseError {
    /// Structurally invalid or cut short: not a (complete) record.
    Invalid(String),
    /// The disk failed to read: not a verdict on the bytes.
    Io(io::Error),
}

impl From<FormatError> for ParseError {
    fn from(e: FormatError) -> Self {
        ParseError::Invalid(e.to_string())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RecordMeta {
    Put(FragmentHeader),
    Tombstone(FragmentId),
}

/// One complete, valid record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedRecord {
    pub meta: RecordMeta,
    pub offset: u64,
    pub first_block_offset: u64,
    pub blocks: u32,
    pub length: u64,
    pub seq: u64,
    /// Offset just past the footer.
    pub end: u64,
}

fn read_exact(file: &File, off: u64, len: usize, file_len: u64) -> Result<Vec<u8>, ParseError> {
    if off.checked_add(len as u64).is_none_or(|e| e > file_len) {
        return Err(ParseError::Invalid(format!(
            "record runs past end of file at {off}+{len}"
        )));
    }
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, off).map_err(ParseError::Io)?;
    Ok(buf)
}

/// Where the record after one ending at `end` starts in a segment with padding: the next
/// 4 KiB boundary when every byte up to it (or to the end of the file) is zero, else
/// `end` itself (records of one batch follow each other directly; anything else is a
/// torn or corrupt record that `parse_record` rejects there).
pub(crate) fn skip_padding(file: &File, end: u64, file_len: u64) -> Result<u64, io::Error> {
    if end.is_multiple_of(PAD_ALIGN) || end >= file_len {
        return Ok(end);
    }
    let to = end
        .div_ceil(PAD_ALIGN)
        .saturating_mul(PAD_ALIGN)
        .min(file_len);
    Ok(if all_zeros(file, end, to)? { to } else { end })
}

/// Parses the record at `off`, reading headers only.
pub(crate) fn parse_record(
    file: &File,
    salt: SegmentSalt,
    off: u64,
    file_len: u64,
) -> Result<ParsedRecord, ParseError> {
    let prefix_bytes = read_exact(file, off, RECORD_PREFIX_LEN, file_len)?;
    let mut prefix = [0u8; RECORD_PREFIX_LEN];
    prefix.copy_from_slice(&prefix_bytes);
    let prefix = RecordPrefix::decode(&prefix)?;
    let whole = read_exact(file, off, prefix.header_len() as usize, file_len)?;
    let header_crc = check_record_header(salt, &whole)?;
    let meta_bytes = &whole[RECORD_PREFIX_LEN..RECORD_PREFIX_LEN + prefix.meta_len as usize];
    let (meta, block_size) = match prefix.kind {
        RecordKind::Put => {
            let h = FragmentHeader::decode(meta_bytes)
                .map_err(|e| ParseError::Invalid(format!("fragment header: {e}")))?;
            if h.id.is_none() || h.block_size == 0 || h.block_size > MAX_BLOCK_SIZE {
                return Err(ParseError::Invalid(
                    "fragment header without id or with bad block size".into(),
                ));
            }
            let bs = h.block_size;
            (RecordMeta::Put(h), bs)
        }
        RecordKind::Tombstone => {
            let id = FragmentId::decode(meta_bytes)
                .map_err(|e| ParseError::Invalid(format!("fragment id: {e}")))?;
            (RecordMeta::Tombstone(id), 0)
        }
    };

    let first_block_offset = off + prefix.header_len();
    let mut pos = first_block_offset;
    let mut blocks: u32 = 0;
    let mut length: u64 = 0;
    let mut short_seen = false;
    let mut block_headers = Vec::new();
    let footer = loop {
        let hb = read_exact(file, pos, BLOCK_HEADER_LEN as usize, file_len)?;
        if is_footer_magic(&hb) {
            let fb = read_exact(file, pos, FOOTER_LEN, file_len)?;
            let mut a = [0u8; FOOTER_LEN];
            a.copy_from_slice(&fb);
            break Footer::decode(&a, header_crc)?;
        }
        let mut a = [0u8; BLOCK_HEADER_LEN as usize];
        a.copy_from_slice(&hb);
        let (len, _crc) = decode_block_header(&a);
        if len == 0 || len > block_size || short_seen {
            return Err(ParseError::Invalid(format!(
                "bad block {blocks} header at {pos} (len {len})"
            )));
        }
        short_seen = len < block_size;
        blocks = blocks
            .checked_add(1)
            .ok_or_else(|| ParseError::Invalid("block count overflow".into()))?;
        length += len as u64;
        block_headers.extend_from_slice(&hb);
        pos += BLOCK_HEADER_LEN + len as u64;
    };
    if footer.block_count != blocks
        || footer.total_len != length
        || footer.blocks_crc != crc32c(&block_headers)
    {
        return Err(ParseError::Invalid(format!(
            "footer at {pos} disagrees with the blocks read"
        )));
    }
    Ok(ParsedRecord {
        meta,
        offset: off,
        first_block_offset,
        blocks,
        length,
        seq: footer.seq,
        end: pos + FOOTER_LEN as u64,
    })
}

/// The offset of the first complete valid record at or after `from`, if any.
pub(crate) fn find_next_record(
    file: &File,
    salt: SegmentSalt,
    from: u64,
    file_len: u64,
) -> Result<Option<u64>, io::Error> {
    const CHUNK: u64 = 1 << 20;
    let mut base = from;
    while base < file_len {
        let len = CHUNK.min(file_len - base) as usize;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, base)?;
        for i in 0..len.saturating_sub(3) {
            if buf[i..i + 4] == RECORD_MAGIC {
                match parse_record(file, salt, base + i as u64, file_len) {
                    Ok(_) => return Ok(Some(base + i as u64)),
                    Err(ParseError::Invalid(_)) => {}
                    Err(ParseError::Io(e)) => return Err(e),
                }
            }
        }
        // Overlap by 3 bytes so a magic split across chunks is still seen.
        if base + len as u64 >= file_len {
            break;
        }
        base += (len as u64).saturating_sub(3).max(1);
    }
    Ok(None)
}

/// What scanning one segment found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SegmentScan {
    /// Format version from the segment header.
    pub version: u32,
    /// Length of the file after recovery.
    pub len: u64,
    pub records: u64,
    pub skipped_bytes: u64,
    /// A torn tail cut away.
    pub truncated_bytes: u64,
    /// Zeros written ahead, cut away.
    pub zero_tail_bytes: u64,
}

/// Whether `[from, to)` of `file` holds only zeros (padding, or zeros written ahead).
fn all_zeros(file: &File, from: u64, to: u64) -> io::Result<bool> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK.min(to.saturating_sub(from)) as usize];
    let mut off = from;
    while off < to {
        let n = CHUNK.min(to - off) as usize;
        file.read_exact_at(&mut buf[..n], off)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}

/// Scans segment `id`, applying its records to `index` (truncating a torn tail when
/// `may_truncate`). Returns None when the file is too
/// short to hold even its header (a crash while creating it): it holds no records.
pub(crate) fn scan_segment(
    file: &File,
    id: u64,
    dir_uuid: [u8; 16],
    may_truncate: bool,
    index: &mut Index,
) -> Result<Option<SegmentScan>, StoreError> {
    let ctx = |what: &str| format!("segment {id}: {what}");
    let mut file_len = file
        .metadata()
        .map_err(|e| StoreError::io(ctx("stat"), e))?
        .len();
    if file_len < SEGMENT_HEADER_LEN {
        return Ok(None);
    }
    let mut hb = vec![0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact_at(&mut hb, 0)
        .map_err(|e| StoreError::io(ctx("reading header"), e))?;
    let header = match SegmentHeader::decode(&hb) {
        Ok(h) => h,
        Err(FormatError::UnsupportedVersion(v)) => {
            return Err(StoreError::Identity(ctx(&format!(
                "format version {v} is not supported by this binary"
            ))))
        }
        Err(e) => {
            return Err(StoreError::Corrupt(ctx(&format!(
                "bad segment header ({e}); move the file away to start"
            ))))
        }
    };
    if header.segment_id != id || header.dir_uuid != dir_uuid {
        return Err(StoreError::Identity(ctx(
            "header names another segment or another disk",
        )));
    }
    let salt = SegmentSalt {
        dir_uuid,
        segment_id: id,
    };
    let mut scan = SegmentScan {
        version: header.version,
        ..SegmentScan::default()
    };
    let padded = is_padded(header.version);
    let pad = |end: u64, file_len: u64| -> Result<u64, StoreError> {
        if !padded {
            return Ok(end);
        }
        skip_padding(file, end, file_len).map_err(|e| StoreError::io(ctx("reading padding"), e))
    };
    let mut off = pad(SEGMENT_HEADER_LEN, file_len)?;
    while off < file_len {
        match parse_record(file, salt, off, file_len) {
            Ok(rec) => {
                let next = pad(rec.end, file_len)?;
                apply(index, id, &rec, next - rec.offset);
                scan.records += 1;
                off = next;
            }
            Err(ParseError::Io(e)) => {
                return Err(StoreError::io(ctx(&format!("reading at {off}")), e))
            }
            Err(ParseError::Invalid(why)) => {
                match find_next_record(file, salt, off + 1, file_len)
                    .map_err(|e| StoreError::io(ctx("searching"), e))?
                {
                    Some(next) => {
                        tracing::error!(segment = id, from = off, to = next, %why, "corrupt range inside segment; skipping it");
                        scan.skipped_bytes += next - off;
                        off = next;
                    }
                    None => {
                        let zeros = all_zeros(file, off, file_len)
                            .map_err(|e| StoreError::io(ctx("reading the tail"), e))?;
                        if zeros {
                            tracing::debug!(
                                segment = id,
                                at = off,
                                bytes = file_len - off,
                                "cutting the zeros written ahead"
                            );
                        } else {
                            tracing::warn!(segment = id, at = off, bytes = file_len - off, %why, "truncating torn tail");
                        }
                        if may_truncate {
                            file.set_len(off)
                                .map_err(|e| StoreError::io(ctx("truncating torn tail"), e))?;
                            file.sync_all()
                                .map_err(|e| StoreError::io(ctx("syncing after truncate"), e))?;
                        }
                        // Read-only disk: the tail stays on disk but is ignored (nothing appends).
                        if zeros {
                            scan.zero_tail_bytes += file_len - off;
                        } else {
                            scan.truncated_bytes += file_len - off;
                        }
                        file_len = off;
                    }
                }
            }
        }
    }
    scan.len = file_len;
    Ok(Some(scan))
}

/// `record_len`: the record and the padding after it (dead together once it is replaced).
fn apply(index: &mut Index, segment: u64, rec: &ParsedRecord, record_len: u64) {
    index.observe_seq(rec.seq);
    match &rec.meta {
        RecordMeta::Put(h) => {
            index.apply_put(Arc::new(Location {
                seq: rec.seq,
                segment,
                record_offset: rec.offset,
                record_len,
                first_block_offset: rec.first_block_offset,
                blocks: rec.blocks,
                length: rec.length,
                header: h.clone(),
            }));
        }
        RecordMeta::Tombstone(id) => {
            index.apply_tombstone(id, rec.seq);
        }
    }
}
