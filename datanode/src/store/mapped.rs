//! Cached blocks served from a read-only mapping of their segment (decision 0049, second
//! addendum).
//!
//! A GET's blocks are mostly in the page cache. Read with `pread`, each is copied from the
//! page cache into a fresh buffer, and then once more into the socket: under 64 MiB GETs
//! the first copy was 31% of a data node's CPU. Through a mapping of the segment the block
//! is checked (CRC32C) and handed to h2 where it lies, and the socket send is the one copy.
//!
//! Only blocks whose every page is in the page cache right now are read this way (`mincore`),
//! so the check never waits for the disk on an async thread; anything else is read with
//! `pread` as before. A read through a mapping of a page the file no longer has raises
//! SIGBUS instead of returning an error, so the mapping is only ever read over committed
//! records, which nothing in this process truncates or rewrites: `discard_record` cuts only
//! an uncommitted tail, compaction sizes its own output before any record in it is indexed,
//! recovery runs before anything is served, and compaction removes whole files (a removed
//! file stays readable through the mapping until its last block is sent). The kernel's own
//! reads of a mapped page (the socket send) fail with an error, not a signal.
//!
//! One mapping per segment, made on first use and kept for the segment's life; it covers
//! the file rounded up to [`MAP_STEP`], so an active segment is mapped again only every
//! `MAP_STEP` of growth, not for every new record.

use std::fs::File;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

use super::lock;

/// Mappings grow in steps of this (bytes past the file's end are never read).
const MAP_STEP: u64 = 64 << 20;

/// A segment's read-only mapping.
#[derive(Default)]
pub(super) struct SegmentMap {
    map: Mutex<Option<Arc<Mmap>>>,
}

impl SegmentMap {
    /// `len` bytes of `file` at `off` as a `Bytes` over the mapping, if every page they
    /// touch is in the page cache now; `None`: read them some other way. The range must be
    /// a committed record's (module doc): the file's length is checked only when the
    /// mapping is made, not on every read.
    pub(super) fn cached(&self, file: &File, off: u64, len: usize) -> Option<Bytes> {
        let end = off.checked_add(len as u64)?;
        let map = self.covering(file, end)?;
        let (start, end) = (usize::try_from(off).ok()?, usize::try_from(end).ok()?);
        if !resident(map.get(start..end)?) {
            return None;
        }
        Some(Bytes::from_owner(MappedRange { map, start, end }))
    }

    /// The mapping, made (again) if it does not reach `end`; `None` past the file's end.
    fn covering(&self, file: &File, end: u64) -> Option<Arc<Mmap>> {
        let mut slot = lock(&self.map);
        if let Some(map) = slot.as_ref().filter(|m| m.len() as u64 >= end) {
            return Some(map.clone());
        }
        if file.metadata().ok()?.len() < end {
            return None;
        }
        let len = usize::try_from(end.div_ceil(MAP_STEP) * MAP_STEP).ok()?;
        // SAFETY: the mapping is read-only and read only over committed records, which no
        // one truncates or rewrites while the segment exists (module doc); the bytes are
        // checked against their CRC32C before they are used.
        let map = Arc::new(unsafe { MmapOptions::new().len(len).map(file) }.ok()?);
        *slot = Some(map.clone());
        Some(map)
    }
}

/// A range of a mapping, owned by the `Bytes` handed to h2.
struct MappedRange {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MappedRange {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

/// Whether every page `bytes` (a range of a mapping) touches is in the page cache.
fn resident(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let addr = bytes.as_ptr() as usize;
    let first = addr & !(page - 1);
    let span = addr + bytes.len() - first;
    let mut pages = vec![0u8; span.div_ceil(page)];
    // SAFETY: [first, first + span) lies within one mapping (mappings start on a page and
    // cover whole pages); `pages` has one byte per page of it.
    let r = unsafe { libc::mincore(first as *mut libc::c_void, span, pages.as_mut_ptr()) };
    r == 0 && pages.iter().all(|p| p & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn serves_cached_ranges_of_the_file_and_nothing_past_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(&data).unwrap();
        let map = SegmentMap::default();
        assert!(
            map.cached(&f, 299_000, 2000).is_none(),
            "past the end: not mapped"
        );
        // Just written: in the page cache.
        let b = map.cached(&f, 1000, 262_144).expect("cached");
        assert_eq!(&b[..], &data[1000..263_144]);
        // The file grows: the same mapping covers it (it was made a MAP_STEP long).
        f.write_all(&[7u8; 5000]).unwrap();
        let grown = map.cached(&f, 299_000, 2000).expect("within the file now");
        assert_eq!(&grown[..1000], &data[299_000..]);
        assert_eq!(&grown[1000..], &[7u8; 1000]);
        // A block's bytes outlive the segment's file and its map.
        drop(map);
        drop(f);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&b[..10], &data[1000..1010]);
    }

    #[test]
    fn pages_not_in_the_page_cache_are_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        std::fs::write(&path, vec![1u8; 1 << 20]).unwrap();
        let f = File::open(&path).unwrap();
        f.sync_all().unwrap();
        // SAFETY: advisory call on an fd we own.
        unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
                0,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        let map = SegmentMap::default();
        assert!(
            map.cached(&f, 4096, 262_144).is_none(),
            "dropped from the page cache: must be read, not mapped"
        );
        let mut buf = vec![0u8; 262_144];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 4096).unwrap();
        let b = map
            .cached(&f, 4096, 262_144)
            .expect("read back into the page cache");
        assert!(b.iter().all(|&x| x == 1));
    }
}
