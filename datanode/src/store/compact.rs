//! Compaction: rewrites a sealed segment that is mostly dead into a new segment holding
//! only what still matters, then deletes the old file.
//!
//! Kept: PUT records that are the live version of their fragment, and tombstones still
//! needed — while another segment may hold a PUT of the same id with seq <= the
//! tombstone's (decision 0004), or an older commit is in flight. Copies keep their seq,
//! so a crash after the new segment is durable but before the old one is deleted leaves
//! two records with the same seq: the rebuild treats an equal-seq PUT as the same record,
//! and an equal-seq tombstone as a no-op, so the live set does not change.
//!
//! Steps: plan (index lock) → copy into a new segment, verifying every block's CRC32C,
//! at the pace of the caller's `Pacer` (a pass that stops midway abandons the copy) →
//! fsync → quarantine records found corrupt → swap index entries (only those still
//! pointing at the old record) → drop the old segment from the map, unlink it, fsync the
//! directory. A reader holding a location in the old segment either still holds the open
//! file (reads work on an unlinked file) or finds the segment gone and looks the record
//! up again by id and seq (`Store::read_block`).
//!
//! Output is always the current format (2): the kept records follow each other through
//! one aligned staging writer (O_DIRECT unless off) and only the end is padded, so
//! compaction also reclaims the padding of small records written one batch at a time.

use std::fs;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kura_proto::datanode::FragmentHeader;
use prost::Message;

use super::direct::StagedWriter;
use super::format::*;
use super::recovery::{
    find_next_record, parse_record, skip_padding, ParseError, ParsedRecord, RecordMeta,
};
use super::{identity, lock, ActiveSegment, Location, Pacer, Segment, Store};
use crate::crc::crc32c;
use crate::error::StoreError;
use crate::metrics;

/// What compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactStats {
    /// Segments rewritten or removed.
    pub segments: u64,
    /// Bytes of segment files freed (old length minus new length).
    pub reclaimed_bytes: u64,
    pub copied_puts: u64,
    pub kept_tombstones: u64,
    pub dropped_tombstones: u64,
    /// Live fragments found corrupt while copying (quarantined, not copied).
    pub corrupt: u64,
}

impl CompactStats {
    fn add(&mut self, o: CompactStats) {
        self.segments += o.segments;
        self.reclaimed_bytes += o.reclaimed_bytes;
        self.copied_puts += o.copied_puts;
        self.kept_tombstones += o.kept_tombstones;
        self.dropped_tombstones += o.dropped_tombstones;
        self.corrupt += o.corrupt;
    }
}

/// A record of the old segment that goes into the new one.
enum Keep {
    Put(ParsedRecord, FragmentHeader),
    Tombstone(ParsedRecord),
}

impl Store {
    /// Compacts every sealed segment whose dead bytes are at least `dead_fraction` of
    /// its length, most-dead first, copying at `pacer`'s rate until it says stop.
    /// `dead_fraction` <= 0 does nothing. Blocking.
    pub fn compact(
        &self,
        dead_fraction: f64,
        pacer: &mut Pacer,
    ) -> Result<CompactStats, StoreError> {
        let mut stats = CompactStats::default();
        if dead_fraction <= 0.0 || self.fs_read_only.load(Ordering::Relaxed) {
            return Ok(stats);
        }
        let segs: Vec<Arc<Segment>> = self
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.sealed.load(Ordering::Acquire))
            .cloned()
            .collect();
        let mut candidates = Vec::new();
        for seg in segs {
            let len = seg
                .file
                .metadata()
                .map_err(|e| StoreError::io(format!("stat segment {}", seg.id), e))?
                .len();
            let dead = self.dead_bytes(seg.id);
            if len > data_start(seg.version) && dead as f64 >= dead_fraction * len as f64 {
                candidates.push((dead, seg.id));
            }
        }
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        for (_, id) in candidates {
            if pacer.stopped() {
                break;
            }
            stats.add(self.compact_segment(id, pacer)?);
        }
        Ok(stats)
    }

    /// Rewrites sealed segment `id` (see the module doc), copying at `pacer`'s rate; when
    /// the pacer says stop, the copy is dropped and the segment left as it was. Blocking.
    pub fn compact_segment(&self, id: u64, pacer: &mut Pacer) -> Result<CompactStats, StoreError> {
        let _one = lock(&self.compacting);
        let mut stats = CompactStats::default();
        let Some(old) = self.segment(id) else {
            return Ok(stats);
        };
        if !old.sealed.load(Ordering::Acquire) {
            return Err(StoreError::InvalidArgument(format!(
                "segment {id} still takes records"
            )));
        }
        let old_len = old
            .file
            .metadata()
            .map_err(|e| StoreError::io(format!("stat segment {id}"), e))?
            .len();
        let records = self.read_records(&old, old_len)?;

        // Plan under the index lock: what is live / needed right now. Nothing decided
        // here can become wrong before the swap: a tombstone already applied to the
        // index shadows every older PUT, and new records take higher seqs.
        let mut keep = Vec::new();
        {
            let ix = lock(&self.index);
            for rec in records {
                match &rec.meta {
                    RecordMeta::Put(h) => {
                        let live =
                            h.id.as_ref()
                                .is_some_and(|fid| ix.is_live_at(fid, rec.seq, id));
                        if live {
                            let h = h.clone();
                            keep.push(Keep::Put(rec, h));
                        }
                    }
                    RecordMeta::Tombstone(fid) => {
                        if ix.tombstone_needed(fid, rec.seq, id) {
                            keep.push(Keep::Tombstone(rec));
                        } else {
                            stats.dropped_tombstones += 1;
                        }
                    }
                }
            }
        }

        let mut moved = Vec::new();
        let mut corrupt = Vec::new();
        let mut new_len = 0;
        if !keep.is_empty() {
            let mut out = self.create_segment()?;
            let copied = self.copy_records(
                &old,
                &keep,
                &mut out,
                pacer,
                &mut stats,
                &mut moved,
                &mut corrupt,
            );
            match copied {
                Ok(true) => new_len = out.len,
                Ok(false) => {
                    self.abandon_segment(&out);
                    return Ok(CompactStats::default());
                }
                Err(e) => {
                    self.abandon_segment(&out);
                    return Err(e);
                }
            }
            // Sealed from birth: compaction output never takes new records.
            out.seg.sealed.store(true, Ordering::Release);
            if moved.is_empty() && stats.kept_tombstones == 0 {
                self.abandon_segment(&out);
                new_len = 0;
            }
        }

        // Corrupt live records were not copied: take them out of service while the old
        // segment still backs their index entries.
        for (loc, why) in corrupt {
            if self.quarantine(&loc, &why) {
                stats.corrupt += 1;
            }
        }
        {
            let mut ix = lock(&self.index);
            for loc in moved {
                ix.relocate(Arc::new(loc), id);
            }
            ix.forget_segment(id);
        }
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let path = self.seg_dir.join(segment_file_name(id));
        fs::remove_file(&path)
            .map_err(|e| StoreError::io(format!("removing {}", path.display()), e))?;
        identity::sync_dir(&self.seg_dir)?;
        self.used_bytes.fetch_sub(old_len, Ordering::Relaxed);
        stats.segments = 1;
        stats.reclaimed_bytes = old_len.saturating_sub(new_len);
        metrics::COMPACTIONS.inc();
        metrics::COMPACTED_BYTES.inc_by(stats.reclaimed_bytes);
        metrics::SEGMENTS.set(self.segment_count() as i64);
        metrics::DEAD_BYTES.set(lock(&self.index).total_dead_bytes() as i64);
        tracing::info!(
            segment = id,
            old_len,
            new_len,
            copied = stats.copied_puts,
            tombstones_kept = stats.kept_tombstones,
            tombstones_dropped = stats.dropped_tombstones,
            "segment compacted"
        );
        Ok(stats)
    }

    /// Every complete record of a sealed segment, skipping corrupt ranges like recovery.
    fn read_records(&self, seg: &Segment, len: u64) -> Result<Vec<ParsedRecord>, StoreError> {
        let salt = self.salt(seg.id);
        let ctx = |off: u64| format!("segment {} at {off}", seg.id);
        let padded = is_padded(seg.version);
        let pad = |end: u64| -> Result<u64, StoreError> {
            if !padded {
                return Ok(end);
            }
            skip_padding(&seg.file, end, len).map_err(|e| StoreError::io(ctx(end), e))
        };
        let mut out = Vec::new();
        let mut off = pad(SEGMENT_HEADER_LEN)?;
        while off < len {
            match parse_record(&seg.file, salt, off, len) {
                Ok(rec) => {
                    off = pad(rec.end)?;
                    out.push(rec);
                }
                Err(ParseError::Io(e)) => return Err(StoreError::io(ctx(off), e)),
                Err(ParseError::Invalid(_)) => {
                    match find_next_record(&seg.file, salt, off + 1, len)
                        .map_err(|e| StoreError::io(ctx(off), e))?
                    {
                        Some(next) => off = next,
                        None => break,
                    }
                }
            }
        }
        Ok(out)
    }

    /// Writes `keep` into `out` and makes it durable; false when `pacer` said stop first.
    /// Live PUTs whose blocks fail their checksum are not copied but listed in `corrupt`
    /// (with their current location).
    #[allow(clippy::too_many_arguments)]
    fn copy_records(
        &self,
        old: &Segment,
        keep: &[Keep],
        out: &mut ActiveSegment,
        pacer: &mut Pacer,
        stats: &mut CompactStats,
        moved: &mut Vec<Location>,
        corrupt: &mut Vec<(Arc<Location>, String)>,
    ) -> Result<bool, StoreError> {
        let mut w = StagedWriter::new(self.take_staging(), out.len);
        let r = self.copy_into(old, keep, out, &mut w, pacer, stats, moved, corrupt);
        self.give_staging(w.into_buf());
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_into(
        &self,
        old: &Segment,
        keep: &[Keep],
        out: &mut ActiveSegment,
        w: &mut StagedWriter,
        pacer: &mut Pacer,
        stats: &mut CompactStats,
        moved: &mut Vec<Location>,
        corrupt: &mut Vec<(Arc<Location>, String)>,
    ) -> Result<bool, StoreError> {
        let salt = self.salt(out.seg.id);
        let seg_id = out.seg.id;
        let io_err = |e: std::io::Error| {
            self.note_write_error(&e);
            StoreError::io(format!("writing segment {seg_id}"), e)
        };
        let wfile = out.seg.writer();
        for k in keep {
            match k {
                Keep::Tombstone(rec) => {
                    let RecordMeta::Tombstone(fid) = &rec.meta else {
                        continue;
                    };
                    let (mut buf, hcrc) =
                        encode_record_header(salt, RecordKind::Tombstone, &fid.encode_to_vec());
                    buf.extend_from_slice(
                        &Footer {
                            block_count: 0,
                            total_len: 0,
                            seq: rec.seq,
                            blocks_crc: crc32c(&[]),
                        }
                        .encode(hcrc),
                    );
                    w.push(wfile, &buf).map_err(io_err)?;
                    stats.kept_tombstones += 1;
                }
                Keep::Put(rec, h) => {
                    let start = w.pos();
                    let (hbuf, hcrc) =
                        encode_record_header(salt, RecordKind::Put, &h.encode_to_vec());
                    w.push(wfile, &hbuf).map_err(io_err)?;
                    let first_block_offset = w.pos();
                    let bs = h.block_size as u64;
                    let mut block_headers = Vec::with_capacity(rec.blocks as usize * 8);
                    let mut bad = None;
                    for i in 0..rec.blocks {
                        let src = rec.first_block_offset + i as u64 * (BLOCK_HEADER_LEN + bs);
                        let len = if i + 1 < rec.blocks {
                            bs
                        } else {
                            rec.length - (rec.blocks as u64 - 1) * bs
                        };
                        if !pacer.consume(BLOCK_HEADER_LEN + len) {
                            return Ok(false);
                        }
                        let mut buf = vec![0u8; (BLOCK_HEADER_LEN + len) as usize];
                        old.file.read_exact_at(&mut buf, src).map_err(|e| {
                            StoreError::io(format!("reading segment {} at {src}", old.id), e)
                        })?;
                        let mut hb = [0u8; BLOCK_HEADER_LEN as usize];
                        hb.copy_from_slice(&buf[..BLOCK_HEADER_LEN as usize]);
                        let (blen, bcrc) = decode_block_header(&hb);
                        if blen as u64 != len || crc32c(&buf[BLOCK_HEADER_LEN as usize..]) != bcrc {
                            bad = Some(format!(
                                "block {i} at segment {} offset {src} fails its checksum (compaction)",
                                old.id
                            ));
                            break;
                        }
                        w.push(wfile, &buf).map_err(io_err)?;
                        block_headers.extend_from_slice(&hb);
                    }
                    if let Some(why) = bad {
                        // Overwritten by the next record, or cut below.
                        w.rewind(&out.seg.file, start).map_err(|e| {
                            StoreError::io(format!("reading back segment {seg_id}"), e)
                        })?;
                        let cur = h.id.as_ref().and_then(|fid| lock(&self.index).get(fid));
                        if let Some(cur) = cur.filter(|c| c.seq == rec.seq) {
                            corrupt.push((cur, why));
                        }
                        continue;
                    }
                    let footer = Footer {
                        block_count: rec.blocks,
                        total_len: rec.length,
                        seq: rec.seq,
                        blocks_crc: crc32c(&block_headers),
                    };
                    w.push(wfile, &footer.encode(hcrc)).map_err(io_err)?;
                    moved.push(Location {
                        seq: rec.seq,
                        segment: seg_id,
                        record_offset: start,
                        record_len: w.pos() - start,
                        first_block_offset,
                        blocks: rec.blocks,
                        length: rec.length,
                        header: h.clone(),
                    });
                    stats.copied_puts += 1;
                }
            }
        }
        let logical_end = w.pos();
        let pos = w.finish(wfile).map_err(io_err)?;
        // The end padding belongs to the last record when that is a copied PUT.
        if let Some(last) = moved.last_mut() {
            if last.record_offset + last.record_len == logical_end {
                last.record_len = pos - last.record_offset;
            }
        }
        // Cuts what a record rewound above may have left past the end.
        out.seg
            .file
            .set_len(pos)
            .map_err(|e| StoreError::io(format!("sizing segment {}", out.seg.id), e))?;
        self.used_bytes.fetch_add(pos - out.len, Ordering::Relaxed);
        out.len = pos;
        self.timed_sync(&out.seg)?;
        Ok(true)
    }

    /// Removes a compaction output that is not used (empty, or the copy failed).
    fn abandon_segment(&self, out: &ActiveSegment) {
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&out.seg.id);
        self.used_bytes.fetch_sub(out.len, Ordering::Relaxed);
        let path = self.seg_dir.join(segment_file_name(out.seg.id));
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an unused compaction output");
        }
    }
}
