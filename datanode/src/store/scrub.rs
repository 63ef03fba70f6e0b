//! Scrub: reads every block of every live fragment and verifies its CRC32C, so silent
//! corruption is found before a client (or a heal that needs this fragment) trips on it.
//!
//! A pass walks the index in (data_id, shard) order, a page at a time (the index lock is
//! held only to copy a page out), and reads each page's fragments in (segment, offset)
//! order for some locality. Corrupt fragments are quarantined by the read path itself
//! (`Store::read_block`); I/O errors are counted and skipped, never quarantined. The
//! caller paces the pass (`Pacer`) and may stop it between blocks.

use kura_proto::datanode::FragmentId;

use super::{Location, Pacer, Store};
use crate::error::StoreError;
use crate::metrics;

/// Fragments copied out of the index per step of a pass.
const PAGE: usize = 256;

/// What one pass (or a part of one) found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScrubStats {
    /// Fragments whose every block was read and verified.
    pub fragments: u64,
    /// Payload bytes verified.
    pub bytes: u64,
    /// Fragments found corrupt (and quarantined).
    pub corrupt: u64,
    /// Fragments skipped after an I/O error.
    pub read_errors: u64,
    /// False when the pass was stopped before it reached the end.
    pub completed: bool,
}

enum Verdict {
    Verified(u64),
    Corrupt,
    ReadError,
    /// Deleted, replaced or moved away meanwhile: nothing to say.
    Gone,
    Stopped,
}

impl Store {
    /// Verifies every block of the live fragments of `pg` (None: all). Blocking; paced by
    /// `pacer`; `progress(visited, total)` is called after each fragment.
    pub fn scrub(
        &self,
        pg: Option<u32>,
        pacer: &mut Pacer,
        progress: &mut dyn FnMut(u64, u64),
    ) -> ScrubStats {
        let total = self.live_fragments() as u64;
        let mut stats = ScrubStats::default();
        let mut visited = 0u64;
        let mut after: Option<FragmentId> = None;
        loop {
            let (mut page, more) = self.list_fragments(pg, after.as_ref(), PAGE);
            after = page.last().and_then(|l| l.header.id.clone());
            page.sort_by_key(|l| (l.segment, l.record_offset));
            for loc in page {
                match self.scrub_fragment(&loc, pacer) {
                    Verdict::Verified(bytes) => {
                        stats.fragments += 1;
                        stats.bytes += bytes;
                        metrics::SCRUB_FRAGMENTS.inc();
                    }
                    Verdict::Corrupt => stats.corrupt += 1,
                    Verdict::ReadError => {
                        stats.read_errors += 1;
                        metrics::SCRUB_READ_ERRORS.inc();
                    }
                    Verdict::Gone => {}
                    Verdict::Stopped => return stats,
                }
                visited += 1;
                progress(visited, total.max(visited));
            }
            if !more || after.is_none() {
                stats.completed = true;
                return stats;
            }
        }
    }

    fn scrub_fragment(&self, loc: &Location, pacer: &mut Pacer) -> Verdict {
        let current = loc
            .header
            .id
            .as_ref()
            .and_then(|id| self.location(id))
            .is_some_and(|cur| cur.seq == loc.seq);
        if !current {
            return Verdict::Gone;
        }
        let mut bytes = 0;
        for i in 0..loc.blocks {
            let len = loc.block_len(i) as u64;
            if !pacer.consume(len) {
                return Verdict::Stopped;
            }
            match self.read_verified(loc, i, false, super::pread::Wait::Yes) {
                Ok(_) => {
                    bytes += len;
                    metrics::SCRUB_BYTES.inc_by(len);
                }
                Err(StoreError::Corrupt(_)) => return Verdict::Corrupt,
                Err(StoreError::NotFound) => return Verdict::Gone,
                Err(e) => {
                    tracing::warn!(segment = loc.segment, offset = loc.record_offset, error = %e, "scrub cannot read a fragment; not quarantining it");
                    return Verdict::ReadError;
                }
            }
        }
        Verdict::Verified(bytes)
    }
}
