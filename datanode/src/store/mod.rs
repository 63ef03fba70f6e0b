//! The fragment store of one data directory: append-only segment files plus an in-memory
//! index. Every method here is blocking; async callers run them on `spawn_blocking`.
//!
//! Write path (`begin_put` → `PutWriter::append_block`* → `PutWriter::commit`): a small
//! record (up to `group_commit_max_record` bytes of blocks) is kept in memory until
//! commit and then written by group commit (`group.rs`, decision 0039): many writers'
//! records share one segment and one fdatasync. A record that grows past that limit
//! takes an "active" segment exclusively for the rest of its life, so records never
//! interleave; its commit writes the footer and fdatasyncs alone. Either way the index
//! is updated, and the writer answered, only after the fsync covering its bytes. A
//! writer dropped before commit leaves nothing (truncates its partial record away).
//! Segments roll at a record boundary once past `segment_size`. Reads use positional
//! reads and verify every block's CRC32C; a block that is corrupt on disk quarantines its
//! fragment (`quarantine`). Scrub (`scrub.rs`) and compaction (`compact.rs`) are further
//! `impl Store` blocks.
//!
//! Layout of a data directory:
//! ```text
//! <data_dir>/kura-datanode-identity.json   (identity; see identity.rs)
//! <data_dir>/segments/seg-<n>.kseg         (see format.rs)
//! ```

mod compact;
mod direct;
pub mod format;
mod group;
pub mod identity;
pub mod index;
mod mapped;
mod pacer;
mod pread;
mod recovery;
pub mod scrub;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use bytes::Bytes;
use kura_proto::datanode::{FragmentHeader, FragmentId};
use prost::Message;

use crate::crc::crc32c;
use crate::error::StoreError;
use crate::metrics;
pub use compact::CompactStats;
pub use direct::DirectIo;
use direct::{AlignedBuf, StagedWriter};
use format::*;
use group::BufferedBlocks;
use identity::Identity;
use index::Index;
pub use index::Location;
pub use pacer::Pacer;
use pread::Wait;

/// Longest `data_id` accepted (DESIGN: 16 bytes; a little slack for other id schemes).
pub const MAX_DATA_ID_LEN: usize = 64;

/// Records with at most this many bytes of blocks go through group commit (a 64 KiB
/// object is six 16 KiB fragments under EC 4+2; a 1 MiB object, 256 KiB ones).
pub const GROUP_COMMIT_MAX_RECORD: u64 = 512 << 10;
/// All writers together keep at most this much in memory waiting for group commit;
/// beyond it new blocks go straight to an exclusive segment.
const GROUP_COMMIT_BUFFER_BUDGET: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A segment stops taking records once it is at least this long.
    pub segment_size: u64,
    /// New PUTs are refused when less than this much disk space is free.
    pub min_free_bytes: u64,
    /// Whether segment writes bypass the page cache (decision 0042).
    pub direct_io: DirectIo,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_size: 256 << 20,
            min_free_bytes: 1 << 30,
            direct_io: DirectIo::Auto,
        }
    }
}

/// Space as reported to PD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// `used_bytes` plus the space still available on the filesystem (the disk may be
    /// shared, so the filesystem's own total would overstate what Kura can use).
    pub capacity_bytes: u64,
    /// Bytes in this store's segment files.
    pub used_bytes: u64,
    /// Full (below `min_free_bytes`) or on a read-only filesystem: no new fragments.
    pub read_only: bool,
}

/// What a committed PUT stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub length: u64,
    pub blocks: u32,
}

struct Segment {
    id: u64,
    /// Format version (`format::SEGMENT_FORMAT_VERSION` for every segment made here).
    version: u32,
    /// Reads (buffered), truncation, fsync.
    file: File,
    /// Writes: an O_DIRECT fd while direct I/O is on; None for segments found at open
    /// (they are sealed and never written again).
    wfile: Option<File>,
    /// Takes no more records (full, recovered, or failed): only now may it be compacted.
    sealed: AtomicBool,
    /// Read-only mapping for serving cached blocks without a copy (`mapped`).
    map: mapped::SegmentMap,
}

impl Segment {
    fn writer(&self) -> &File {
        self.wfile.as_ref().unwrap_or(&self.file)
    }
}

/// A segment taken from the pool by one writer (or the group-commit leader); `len` is
/// its committed length (a multiple of 4 KiB: every write ends padded).
struct ActiveSegment {
    seg: Arc<Segment>,
    /// Where the next record goes: the end of the last one.
    len: u64,
    /// The shared (group commit) segment's file length: `len` plus the zeros written
    /// ahead (`group::FILL_AHEAD`), which later batches overwrite. Exclusive writers
    /// append at `len` and leave it behind (`filled.max(len)` is the length).
    filled: u64,
}

pub struct Store {
    dir: PathBuf,
    seg_dir: PathBuf,
    dir_uuid: [u8; 16],
    opts: StoreOptions,
    identity: Mutex<Identity>,
    /// Every segment, for reads.
    segments: RwLock<HashMap<u64, Arc<Segment>>>,
    /// Active segments no writer holds right now.
    pool: Mutex<Vec<ActiveSegment>>,
    next_segment_id: AtomicU64,
    index: Mutex<Index>,
    used_bytes: AtomicU64,
    /// Filesystem free space at the last refresh, and our usage at that moment.
    avail_at_refresh: AtomicU64,
    used_at_refresh: AtomicU64,
    fs_read_only: AtomicBool,
    /// One compaction at a time.
    compacting: Mutex<()>,
    group: group::GroupCommit,
    /// This store, for threads it starts itself (a group-commit leader for waiting tasks).
    me: std::sync::Weak<Store>,
    /// See `GROUP_COMMIT_MAX_RECORD`; 0 = off (every record takes its own segment).
    group_max_record: AtomicU64,
    /// Block bytes writers hold in memory for group commit (`GROUP_COMMIT_BUFFER_BUDGET`).
    buffered_bytes: AtomicU64,
    /// New segments are written with O_DIRECT (false: `DirectIo::Off`, or `Auto` on a
    /// filesystem without it).
    direct: AtomicBool,
    /// Reused staging buffers of exclusive writers and compaction (`direct::STAGING_LEN`).
    staging: Mutex<Vec<AlignedBuf>>,
    stats: Stats,
    #[cfg(test)]
    hooks: TestHooks,
}

/// Per-store counters behind `commit_stats` (the metrics are process-wide).
#[derive(Default)]
struct Stats {
    record_syncs: AtomicU64,
    group_batches: AtomicU64,
    group_records: AtomicU64,
}

/// How commits were made durable since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// fdatasyncs that made records durable (group batches, exclusive PUTs, tombstones
    /// outside group commit); segment creation is not counted.
    pub record_syncs: u64,
    /// Group-commit batches made durable, and the records they held.
    pub group_batches: u64,
    pub group_records: u64,
}

/// Fault injection for store tests.
#[cfg(test)]
#[derive(Default)]
struct TestHooks {
    /// Added to every record fsync (a slow disk, so commits pile up).
    sync_delay_ms: AtomicU64,
    /// A group fsync of a batch with at least this many records fails (0 = never).
    fail_sync_min_batch: std::sync::atomic::AtomicUsize,
    /// Opening a segment with O_DIRECT fails with EINVAL, as on tmpfs.
    refuse_direct: AtomicBool,
    /// The next group fsync panics (a bug in the leader), after `sync_delay_ms`.
    panic_in_sync: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data in a consistent state.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens (or initialises) the store in `dir`: checks the identity file, scans every
    /// segment to rebuild the index, truncating torn tails. Existing segments are sealed;
    /// new records go to new segments.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Arc<Store>, StoreError> {
        let started = Instant::now();
        let seg_dir = dir.join("segments");
        fs::create_dir_all(&seg_dir)
            .map_err(|e| StoreError::io(format!("creating {}", seg_dir.display()), e))?;
        // A read-only filesystem still serves reads: open everything read-only, repair nothing.
        let (_, fs_ro) =
            statvfs(dir).map_err(|e| StoreError::io(format!("statvfs {}", dir.display()), e))?;
        if fs_ro {
            tracing::warn!(dir = %dir.display(), "filesystem is read-only: serving reads only");
        } else {
            identity::sync_dir(dir)?;
        }
        let mut ids = Vec::new();
        for entry in fs::read_dir(&seg_dir)
            .map_err(|e| StoreError::io(format!("listing {}", seg_dir.display()), e))?
        {
            let entry =
                entry.map_err(|e| StoreError::io(format!("listing {}", seg_dir.display()), e))?;
            if let Some(id) = entry.file_name().to_str().and_then(parse_segment_file_name) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let identity = identity::load_or_create(dir, !ids.is_empty())?;
        let dir_uuid = identity.uuid_bytes()?;

        let mut index = Index::for_recovery();
        let mut segments = HashMap::new();
        let mut used = 0;
        let mut removed_any = false;
        for &id in &ids {
            let path = seg_dir.join(segment_file_name(id));
            let file = OpenOptions::new()
                .read(true)
                .write(!fs_ro)
                .open(&path)
                .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
            match recovery::scan_segment(&file, id, dir_uuid, !fs_ro, &mut index)? {
                Some(scan) if scan.len > data_start(scan.version) || fs_ro => {
                    used += scan.len;
                    segments.insert(
                        id,
                        Arc::new(Segment {
                            id,
                            version: scan.version,
                            file,
                            wfile: None,
                            sealed: AtomicBool::new(true),
                            map: Default::default(),
                        }),
                    );
                }
                None if fs_ro => {}
                // Header only, or torn while being created: holds no record.
                Some(_) | None => {
                    fs::remove_file(&path).map_err(|e| {
                        StoreError::io(format!("removing empty {}", path.display()), e)
                    })?;
                    removed_any = true;
                }
            }
        }
        index.finish_recovery();
        if removed_any {
            identity::sync_dir(&seg_dir)?;
        }
        tracing::info!(
            dir = %dir.display(),
            segments = segments.len(),
            fragments = index.live_fragments(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        let direct = opts.direct_io != DirectIo::Off;
        metrics::DIRECT_IO.set(direct as i64);
        let store = Arc::new_cyclic(|me| Store {
            me: me.clone(),
            dir: dir.to_path_buf(),
            seg_dir,
            dir_uuid,
            opts,
            identity: Mutex::new(identity),
            segments: RwLock::new(segments),
            pool: Mutex::new(Vec::new()),
            next_segment_id: AtomicU64::new(ids.last().map_or(1, |m| m + 1)),
            index: Mutex::new(index),
            used_bytes: AtomicU64::new(used),
            avail_at_refresh: AtomicU64::new(u64::MAX),
            used_at_refresh: AtomicU64::new(used),
            fs_read_only: AtomicBool::new(fs_ro),
            compacting: Mutex::new(()),
            group: group::GroupCommit::new(),
            group_max_record: AtomicU64::new(GROUP_COMMIT_MAX_RECORD),
            buffered_bytes: AtomicU64::new(0),
            direct: AtomicBool::new(direct),
            staging: Mutex::new(Vec::new()),
            stats: Stats::default(),
            #[cfg(test)]
            hooks: TestHooks::default(),
        });
        store.refresh_capacity()?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records with at most `bytes` of blocks go through group commit; 0 turns it off
    /// (each record then takes its own segment and fsync). Affects writers begun later.
    pub fn set_group_commit_max_record(&self, bytes: u64) {
        self.group_max_record.store(bytes, Ordering::Relaxed);
    }

    /// Whether segments are being written with O_DIRECT right now.
    pub fn direct_io_active(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }

    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            record_syncs: self.stats.record_syncs.load(Ordering::Relaxed),
            group_batches: self.stats.group_batches.load(Ordering::Relaxed),
            group_records: self.stats.group_records.load(Ordering::Relaxed),
        }
    }

    /// The PD-assigned node id persisted in the identity file (0: not registered yet).
    pub fn node_id(&self) -> u64 {
        lock(&self.identity).node_id
    }

    /// The identity made with this data dir (32 hex digits): it proves the
    /// node id to PD, so a wiped dir can never take over the old id.
    pub fn uuid(&self) -> String {
        lock(&self.identity).uuid.clone()
    }

    /// Persists the PD-assigned node id.
    pub fn set_node_id(&self, node_id: u64) -> Result<(), StoreError> {
        let mut id = lock(&self.identity);
        if id.node_id == node_id {
            return Ok(());
        }
        let mut next = id.clone();
        next.node_id = node_id;
        identity::save(&self.dir, &next)?;
        *id = next;
        Ok(())
    }

    // ---- capacity -------------------------------------------------------------------

    /// Re-reads filesystem space (statvfs) and returns the capacity to report.
    pub fn refresh_capacity(&self) -> Result<Capacity, StoreError> {
        let (avail, ro) = statvfs(&self.dir)
            .map_err(|e| StoreError::io(format!("statvfs {}", self.dir.display()), e))?;
        self.used_at_refresh
            .store(self.used_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        self.avail_at_refresh.store(avail, Ordering::Relaxed);
        self.fs_read_only.store(ro, Ordering::Relaxed);
        let cap = self.capacity();
        metrics::USED_BYTES.set(cap.used_bytes as i64);
        metrics::SEGMENTS.set(self.segments.read().map(|s| s.len()).unwrap_or(0) as i64);
        metrics::DEAD_BYTES.set(lock(&self.index).total_dead_bytes() as i64);
        Ok(cap)
    }

    /// Capacity from the last refresh, adjusted by what was written since.
    pub fn capacity(&self) -> Capacity {
        let used = self.used_bytes.load(Ordering::Relaxed);
        let written_since = used.saturating_sub(self.used_at_refresh.load(Ordering::Relaxed));
        let avail = self
            .avail_at_refresh
            .load(Ordering::Relaxed)
            .saturating_sub(written_since);
        Capacity {
            capacity_bytes: used.saturating_add(avail),
            used_bytes: used,
            read_only: self.fs_read_only.load(Ordering::Relaxed)
                || avail < self.opts.min_free_bytes,
        }
    }

    /// Whether a one-block fragment of `len` bytes would be kept in memory for group
    /// commit (so `begin_put` and `append_block` do no I/O for it) as things stand now.
    pub fn would_buffer(&self, len: usize) -> bool {
        let add = BLOCK_HEADER_LEN + len as u64;
        add <= self.group_max_record.load(Ordering::Relaxed)
            && self.buffered_bytes.load(Ordering::Relaxed) + add <= GROUP_COMMIT_BUFFER_BUDGET
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.fs_read_only.load(Ordering::Relaxed) {
            return Err(StoreError::Full("filesystem is read-only".into()));
        }
        let cap = self.capacity();
        if cap.read_only {
            return Err(StoreError::Full(format!(
                "{} bytes free, below the floor of {}",
                cap.capacity_bytes - cap.used_bytes,
                self.opts.min_free_bytes
            )));
        }
        Ok(())
    }

    /// Remembers a read-only filesystem seen through a write error.
    fn note_write_error(&self, e: &std::io::Error) {
        if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
            self.fs_read_only.store(true, Ordering::Relaxed);
        }
    }

    // ---- segments -------------------------------------------------------------------

    fn salt(&self, segment_id: u64) -> SegmentSalt {
        SegmentSalt {
            dir_uuid: self.dir_uuid,
            segment_id,
        }
    }

    fn take_active(&self) -> Result<ActiveSegment, StoreError> {
        if let Some(a) = lock(&self.pool).pop() {
            return Ok(a);
        }
        self.create_segment()
    }

    fn create_segment(&self) -> Result<ActiveSegment, StoreError> {
        let id = self.next_segment_id.fetch_add(1, Ordering::Relaxed);
        let path = self.seg_dir.join(segment_file_name(id));
        let ctx = |what: &str| format!("{what} {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io(ctx("creating"), e))?;
        let header = SegmentHeader {
            version: SEGMENT_FORMAT_VERSION,
            segment_id: id,
            dir_uuid: self.dir_uuid,
        }
        .encode();
        // The header block (header + zeros to 4 KiB) is the first direct write: it also
        // probes whether the filesystem takes O_DIRECT.
        let init = self
            .init_segment(&path, &header)
            .and_then(|wfile| {
                file.sync_all()?;
                Ok(wfile)
            })
            .map_err(|e| {
                self.note_write_error(&e);
                StoreError::io(ctx("initialising"), e)
            })
            .and_then(|wfile| identity::sync_dir(&self.seg_dir).map(|()| wfile));
        let wfile = match init {
            Ok(w) => w,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        let seg = Arc::new(Segment {
            id,
            version: SEGMENT_FORMAT_VERSION,
            file,
            wfile: Some(wfile),
            sealed: AtomicBool::new(false),
            map: Default::default(),
        });
        let mut segs = self.segments.write().unwrap_or_else(|p| p.into_inner());
        segs.insert(id, seg.clone());
        metrics::SEGMENTS.set(segs.len() as i64);
        drop(segs);
        let start = data_start(SEGMENT_FORMAT_VERSION);
        self.used_bytes.fetch_add(start, Ordering::Relaxed);
        tracing::debug!(segment = id, "created segment");
        Ok(ActiveSegment {
            seg,
            len: start,
            filled: start,
        })
    }

    /// Opens the write fd of a new segment and writes its header block through it. With
    /// `DirectIo::Auto`, a filesystem that refuses O_DIRECT (EINVAL at open or at the
    /// write: tmpfs, some FUSE) turns it off for this store, once, with a warning.
    fn init_segment(&self, path: &Path, header: &[u8]) -> std::io::Result<File> {
        let mut block = AlignedBuf::new(PAD_ALIGN as usize);
        block.extend_some(header);
        block.pad();
        loop {
            let direct = self.direct.load(Ordering::Relaxed);
            #[cfg(test)]
            if direct && self.hooks.refuse_direct.load(Ordering::Relaxed) {
                // What tmpfs or FUSE answer to O_DIRECT.
                let e = std::io::Error::from_raw_os_error(libc::EINVAL);
                if self.opts.direct_io == DirectIo::On {
                    return Err(e);
                }
                self.direct.store(false, Ordering::Relaxed);
                metrics::DIRECT_IO.set(0);
                continue;
            }
            let r = direct::open_writer(path, direct)
                .and_then(|f| f.write_all_at(block.as_slice(), 0).map(|()| f));
            match r {
                Err(e) if direct && direct::is_unsupported(&e) => {
                    if self.opts.direct_io == DirectIo::On {
                        return Err(std::io::Error::new(
                            e.kind(),
                            format!("O_DIRECT not supported here and --direct-io is on: {e}"),
                        ));
                    }
                    if self.direct.swap(false, Ordering::Relaxed) {
                        metrics::DIRECT_IO.set(0);
                        tracing::warn!(dir = %self.dir.display(), error = %e, "the filesystem refuses O_DIRECT; writing segments through the page cache");
                    }
                }
                r => return r,
            }
        }
    }

    /// A staging buffer for a writer (reused: a fresh 1 MiB allocation would page-fault).
    fn take_staging(&self) -> AlignedBuf {
        lock(&self.staging)
            .pop()
            .unwrap_or_else(|| AlignedBuf::new(direct::STAGING_LEN))
    }

    fn give_staging(&self, buf: AlignedBuf) {
        // Enough for the usual number of concurrent large writers; the rest are freed.
        const KEEP: usize = 32;
        let mut pool = lock(&self.staging);
        if pool.len() < KEEP && buf.capacity() == direct::STAGING_LEN {
            pool.push(buf);
        }
    }

    /// Returns a segment to the pool, or seals it once it reached `segment_size`.
    fn release_active(&self, a: ActiveSegment) {
        if a.len >= self.opts.segment_size {
            a.seg.sealed.store(true, Ordering::Release);
            tracing::debug!(segment = a.seg.id, len = a.len, "segment sealed");
        } else {
            lock(&self.pool).push(a);
        }
    }

    /// Removes an uncommitted record at `start`. If the truncate fails the segment is
    /// sealed: appending after garbage would hide later records from recovery.
    fn discard_record(&self, a: ActiveSegment, start: u64) {
        match a.seg.file.set_len(start) {
            Ok(()) => self.release_active(ActiveSegment {
                len: start,
                filled: start,
                ..a
            }),
            Err(e) => {
                a.seg.sealed.store(true, Ordering::Release);
                tracing::error!(segment = a.seg.id, error = %e, "cannot truncate an aborted record; sealing the segment");
            }
        }
    }

    fn segment(&self, id: u64) -> Option<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    // ---- write ----------------------------------------------------------------------

    /// Starts storing a fragment. The writer keeps a small record in memory (group
    /// commit at `commit`); past `group_commit_max_record` it takes one segment for
    /// itself until committed or dropped (drop = abort).
    pub fn begin_put(self: &Arc<Self>, header: FragmentHeader) -> Result<PutWriter, StoreError> {
        validate_header(&header)?;
        let header = detached(header);
        self.check_writable()?;
        let meta = header.encode_to_vec();
        let mut st = WriteState {
            store: self.clone(),
            meta,
            header,
            sink: Sink::Buffered {
                body: BufferedBlocks::default(),
                budget: 0,
            },
            block_headers: Vec::new(),
            blocks: 0,
            length: 0,
            short_seen: false,
        };
        if self.group_max_record.load(Ordering::Relaxed) == 0 {
            st.spill()?;
        }
        Ok(PutWriter { state: Some(st) })
    }

    // ---- read -----------------------------------------------------------------------

    /// Where fragment `id` is, if it is stored.
    pub fn location(&self, id: &FragmentId) -> Option<Arc<Location>> {
        lock(&self.index).get(id)
    }

    /// Up to `limit` live fragments after `after` in (data_id, shard) order, of placement
    /// group `pg` (None: every group), and whether more follow. In-memory only.
    pub fn list_fragments(
        &self,
        pg: Option<u32>,
        after: Option<&FragmentId>,
        limit: usize,
    ) -> (Vec<Arc<Location>>, bool) {
        lock(&self.index).list(pg, after, limit)
    }

    /// Reads block `i` of a fragment and verifies its CRC32C. Returns the payload and CRC.
    ///
    /// A block that fails its checksum twice (or lies past the end of its segment) is
    /// corruption on disk: the fragment is quarantined (see `quarantine`) and `Corrupt`
    /// returned. An I/O error is returned as `Io` and quarantines nothing: it may be
    /// transient (a controller reset, a cable), and one bad disk must not look like
    /// thousands of missing fragments.
    pub fn read_block(&self, loc: &Location, i: u32) -> Result<(Bytes, u32), StoreError> {
        self.read_verified(loc, i, true, Wait::Yes)
    }

    /// [`Store::read_block`] if the block is in the page cache, without waiting for the
    /// disk (safe on an async thread); `None` when it would wait (read it on a blocking
    /// thread then).
    pub fn read_block_cached(
        &self,
        loc: &Location,
        i: u32,
    ) -> Option<Result<(Bytes, u32), StoreError>> {
        match self.read_verified(loc, i, true, Wait::No) {
            Err(StoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::WouldBlock =>
            {
                None
            }
            done => Some(done),
        }
    }

    /// `read_block`; `client_read` says whether it counts as served bytes.
    fn read_verified(
        &self,
        loc: &Location,
        i: u32,
        client_read: bool,
        wait: Wait,
    ) -> Result<(Bytes, u32), StoreError> {
        let count = |n: usize| {
            if client_read {
                metrics::BYTES_READ.inc_by(n as u64)
            }
        };
        if i >= loc.blocks {
            return Err(StoreError::InvalidArgument(format!(
                "block {i} of {}",
                loc.blocks
            )));
        }
        let relocated;
        let (seg, loc) = match self.segment(loc.segment) {
            Some(seg) => (seg, loc),
            None => {
                // Compaction moved the record (same seq) and removed the old segment.
                relocated = self.relocated(loc)?;
                let seg = self
                    .segment(relocated.segment)
                    .ok_or(StoreError::NotFound)?;
                (seg, &*relocated)
            }
        };
        let fault = match read_checked_block(&seg, loc, i, wait)? {
            Ok(ok) => {
                count(ok.0.len());
                return Ok(ok);
            }
            // Re-read once: a bad buffer in memory is not a bad disk.
            Err(BlockFault::Checksum(_)) => match read_checked_block(&seg, loc, i, wait)? {
                Ok(ok) => {
                    tracing::warn!(
                        segment = seg.id,
                        block = i,
                        "checksum failed once, then passed"
                    );
                    count(ok.0.len());
                    return Ok(ok);
                }
                Err(f) => f,
            },
            Err(f @ BlockFault::Short(_)) => f,
        };
        metrics::CRC_FAILURES.with_label_values(&["read"]).inc();
        let why = match fault {
            BlockFault::Checksum(m) | BlockFault::Short(m) => m,
        };
        tracing::error!(segment = seg.id, block = i, %why, "stored block is corrupt");
        self.quarantine(loc, &why);
        Err(StoreError::Corrupt(why))
    }

    /// The current location of `loc`'s record (same seq) after compaction moved it.
    fn relocated(&self, loc: &Location) -> Result<Arc<Location>, StoreError> {
        let id = loc.header.id.as_ref().ok_or(StoreError::NotFound)?;
        match lock(&self.index).get(id) {
            Some(cur) if cur.seq == loc.seq => Ok(cur),
            // Deleted or replaced since the caller looked it up.
            Some(_) | None => Err(StoreError::NotFound),
        }
    }

    /// Takes a corrupt fragment out of service: a tombstone carrying the corrupt record's
    /// own seq removes exactly that record, durably (a rebuilt copy has a higher seq and
    /// wins, whatever order the two are written or scanned in). The fragment then looks
    /// missing, so the healer rebuilds it from the other fragments of its stripe.
    /// If the tombstone cannot be written (read-only or failing disk) the fragment is
    /// still dropped from the index; after a restart the scrubber finds it again.
    /// Returns whether this call removed it.
    pub fn quarantine(&self, loc: &Location, why: &str) -> bool {
        let Some(id) = loc.header.id.clone() else {
            return false;
        };
        let seq = loc.seq;
        let still_live =
            move |ix: &Index, id: &FragmentId| ix.get(id).is_some_and(|cur| cur.seq == seq);
        if !still_live(&lock(&self.index), &id) {
            return false;
        }
        // Owns its id: group commit may run it on the leader's thread.
        let apply = move |id: FragmentId| {
            move |ix: &mut Index| still_live(ix, &id) && ix.apply_tombstone(&id, seq)
        };
        let removed = if self.fs_read_only.load(Ordering::Relaxed) {
            apply(id)(&mut lock(&self.index))
        } else {
            match self.append_tombstone(&id, seq, apply(id.clone())) {
                Ok(removed) => removed,
                Err(e) => {
                    tracing::error!(error = %e, "cannot write a quarantine tombstone; dropping the fragment from memory only");
                    apply(id)(&mut lock(&self.index))
                }
            }
        };
        if removed {
            metrics::CORRUPT_FRAGMENTS.inc();
            tracing::error!(
                segment = loc.segment,
                offset = loc.record_offset,
                seq = loc.seq,
                pg = loc.header.pg,
                %why,
                "fragment quarantined"
            );
        }
        removed
    }

    // ---- delete ---------------------------------------------------------------------

    /// Deletes fragment `id` with a durable tombstone. Returns whether it existed.
    pub fn delete(&self, id: &FragmentId) -> Result<bool, StoreError> {
        if self.fs_read_only.load(Ordering::Relaxed) {
            return Err(StoreError::Full("filesystem is read-only".into()));
        }
        let seq = {
            let mut ix = lock(&self.index);
            if ix.get(id).is_none() {
                return Ok(false);
            }
            ix.take_seq()
        };
        let owned = id.clone();
        let existed = self.append_tombstone(id, seq, move |ix| ix.apply_tombstone(&owned, seq))?;
        metrics::FRAGMENTS_DELETED.inc();
        Ok(existed)
    }

    /// Appends a tombstone for `id` with `seq`, makes it durable, then runs `apply` on the
    /// index *before* the segment goes back to the pool (or, under group commit, before
    /// the shared segment can be sealed): once the segment can be sealed and compacted,
    /// the index already reflects the tombstone.
    fn append_tombstone(
        &self,
        id: &FragmentId,
        seq: u64,
        apply: impl FnOnce(&mut Index) -> bool + Send + 'static,
    ) -> Result<bool, StoreError> {
        if self.group_max_record.load(Ordering::Relaxed) > 0 {
            return self.group_commit(group::GroupRecord {
                kind: RecordKind::Tombstone,
                meta: id.encode_to_vec(),
                body: BufferedBlocks::default(),
                block_count: 0,
                total_len: 0,
                seq,
                blocks_crc: crc32c(&[]),
                apply: Box::new(move |ix, _| apply(ix)),
                put_commit: None,
            });
        }
        let mut a = self.take_active()?;
        let (mut buf, header_crc) = encode_record_header(
            self.salt(a.seg.id),
            RecordKind::Tombstone,
            &id.encode_to_vec(),
        );
        buf.extend_from_slice(
            &Footer {
                block_count: 0,
                total_len: 0,
                seq,
                blocks_crc: crc32c(&[]),
            }
            .encode(header_crc),
        );
        let start = a.len;
        let mut w = StagedWriter::new(self.take_staging(), start);
        let written = w
            .push(a.seg.writer(), &buf)
            .and_then(|()| w.finish(a.seg.writer()));
        self.give_staging(w.into_buf());
        let end = match written {
            Ok(end) => end,
            Err(e) => {
                self.note_write_error(&e);
                self.discard_record(a, start);
                return Err(StoreError::io("writing tombstone", e));
            }
        };
        self.timed_sync(&a.seg).map_err(|e| {
            a.seg.sealed.store(true, Ordering::Release);
            tracing::error!(segment = a.seg.id, error = %e, "fsync failed; sealing the segment");
            e
        })?;
        a.len = end;
        self.used_bytes.fetch_add(end - start, Ordering::Relaxed);
        let r = apply(&mut lock(&self.index));
        self.release_active(a);
        Ok(r)
    }

    fn timed_sync(&self, seg: &Segment) -> Result<(), StoreError> {
        #[cfg(test)]
        std::thread::sleep(std::time::Duration::from_millis(
            self.hooks.sync_delay_ms.load(Ordering::Relaxed),
        ));
        self.stats.record_syncs.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        let r = seg.file.sync_data();
        metrics::FSYNC_SECONDS.observe(t.elapsed().as_secs_f64());
        r.map_err(|e| {
            self.note_write_error(&e);
            StoreError::io(format!("fsync segment {}", seg.id), e)
        })
    }

    // ---- introspection --------------------------------------------------------------

    pub fn segment_count(&self) -> usize {
        self.segments.read().map(|s| s.len()).unwrap_or(0)
    }

    pub fn live_fragments(&self) -> usize {
        lock(&self.index).live_fragments()
    }

    /// Bytes of superseded or deleted records in segment `id` (what compaction may reclaim).
    pub fn dead_bytes(&self, segment: u64) -> u64 {
        lock(&self.index).dead_bytes(segment)
    }
}

/// Why stored bytes cannot be served (a verdict on the bytes, unlike an I/O error).
enum BlockFault {
    Checksum(String),
    /// The segment ends before the block: the file was cut.
    Short(String),
}

fn read_checked_block(
    seg: &Segment,
    loc: &Location,
    i: u32,
    wait: Wait,
) -> Result<Result<(Bytes, u32), BlockFault>, StoreError> {
    let len = loc.block_len(i);
    let off = loc.block_offset(i);
    let total = BLOCK_HEADER_LEN as usize + len as usize;
    let mapped = match wait {
        Wait::No => seg.map.cached(&seg.file, off, total),
        // Scrub and reads that wait go to the disk's own bytes.
        Wait::Yes => None,
    };
    let buf = match mapped.map_or_else(
        || pread::read_exact_at_uninit(&seg.file, total, off, wait).map(Bytes::from),
        Ok,
    ) {
        Ok(buf) => buf,
        Err(e) => {
            return if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(Err(BlockFault::Short(format!(
                    "segment {} ends before block {i} at {off}",
                    seg.id
                ))))
            } else {
                Err(StoreError::io(
                    format!("reading segment {} at {off}", seg.id),
                    e,
                ))
            };
        }
    };
    let mut hb = [0u8; BLOCK_HEADER_LEN as usize];
    hb.copy_from_slice(&buf[..BLOCK_HEADER_LEN as usize]);
    let (stored_len, stored_crc) = decode_block_header(&hb);
    let data = buf.slice(BLOCK_HEADER_LEN as usize..);
    if stored_len != len || crc32c(&data) != stored_crc {
        return Ok(Err(BlockFault::Checksum(format!(
            "block {i} at segment {} offset {off} fails its checksum",
            seg.id
        ))));
    }
    Ok(Ok((data, stored_crc)))
}

/// `h` with byte fields that own their memory. Decoded by tonic, `data_id` is a slice of
/// the whole message it came in, the fragment's first block included: kept in the index as
/// is, it pinned that buffer (256 KiB and more) for as long as the fragment lived, so a data
/// node's memory grew by every byte it stored.
fn detached(mut h: FragmentHeader) -> FragmentHeader {
    if let Some(id) = h.id.as_mut() {
        id.data_id = Bytes::copy_from_slice(&id.data_id);
    }
    h
}

fn validate_header(h: &FragmentHeader) -> Result<(), StoreError> {
    let id =
        h.id.as_ref()
            .ok_or_else(|| StoreError::InvalidArgument("fragment header without id".into()))?;
    if id.data_id.is_empty() || id.data_id.len() > MAX_DATA_ID_LEN {
        return Err(StoreError::InvalidArgument(format!(
            "data_id of {} bytes",
            id.data_id.len()
        )));
    }
    if h.block_size == 0 || h.block_size > MAX_BLOCK_SIZE {
        return Err(StoreError::InvalidArgument(format!(
            "block_size {} not in 1..={MAX_BLOCK_SIZE}",
            h.block_size
        )));
    }
    if h.encoded_len() > MAX_META_LEN as usize {
        return Err(StoreError::InvalidArgument(
            "fragment header too large".into(),
        ));
    }
    Ok(())
}

/// Free bytes for unprivileged writers, and whether the filesystem is mounted read-only.
fn statvfs(path: &Path) -> std::io::Result<(u64, bool)> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let avail = (s.f_bavail as u64).saturating_mul(s.f_frsize as u64);
    Ok((avail, s.f_flag & libc::ST_RDONLY != 0))
}

/// One fragment being written. Dropping it without `commit` aborts: nothing of the
/// record stays (an exclusive segment's partial record is truncated away).
pub struct PutWriter {
    state: Option<WriteState>,
}

struct WriteState {
    store: Arc<Store>,
    /// The FragmentHeader, encoded (the record header's meta).
    meta: Vec<u8>,
    header: FragmentHeader,
    sink: Sink,
    block_headers: Vec<u8>,
    blocks: u32,
    length: u64,
    short_seen: bool,
}

/// Where a record's bytes go.
enum Sink {
    /// Small so far: block headers and payloads in memory, written by group commit.
    /// `budget`: bytes counted in `Store::buffered_bytes`.
    Buffered { body: BufferedBlocks, budget: u64 },
    /// A segment of its own (a large record), written as the blocks arrive.
    Exclusive(Exclusive),
}

struct Exclusive {
    active: ActiveSegment,
    record_start: u64,
    first_block_offset: u64,
    header_crc: u32,
    /// Bytes go out in whole aligned chunks (`direct::StagedWriter`); its `pos()` is
    /// where the next byte of the record goes.
    w: StagedWriter,
}

impl Exclusive {
    fn write(&mut self, store: &Store, bytes: &[u8]) -> Result<(), StoreError> {
        self.w.push(self.active.seg.writer(), bytes).map_err(|e| {
            store.note_write_error(&e);
            StoreError::io(format!("writing segment {}", self.active.seg.id), e)
        })
    }

    /// Writes the staged tail padded to 4 KiB; returns the padded end.
    fn finish(&mut self, store: &Store) -> Result<u64, StoreError> {
        self.w.finish(self.active.seg.writer()).map_err(|e| {
            store.note_write_error(&e);
            StoreError::io(format!("writing segment {}", self.active.seg.id), e)
        })
    }

    fn pos(&self) -> u64 {
        self.w.pos()
    }
}

impl WriteState {
    /// Moves the record to a segment of its own: writes the header and what was buffered.
    fn spill(&mut self) -> Result<(), StoreError> {
        if !matches!(self.sink, Sink::Buffered { .. }) {
            return Ok(());
        }
        let active = self.store.take_active()?;
        let Sink::Buffered { body, budget } = &mut self.sink else {
            return Ok(());
        };
        let body = std::mem::take(body);
        let budget = std::mem::take(budget);
        self.store
            .buffered_bytes
            .fetch_sub(budget, Ordering::Relaxed);
        let (hdr, header_crc) =
            encode_record_header(self.store.salt(active.seg.id), RecordKind::Put, &self.meta);
        let start = active.len;
        let mut x = Exclusive {
            active,
            record_start: start,
            first_block_offset: start + hdr.len() as u64,
            header_crc,
            w: StagedWriter::new(self.store.take_staging(), start),
        };
        let written = std::iter::once(&hdr[..])
            .chain(body.slices())
            .try_for_each(|part| x.write(&self.store, part));
        // Owned by the writer from here on, so a failed write is cut away on abort.
        self.sink = Sink::Exclusive(x);
        written
    }

    fn append(
        &mut self,
        hb: [u8; BLOCK_HEADER_LEN as usize],
        data: Bytes,
    ) -> Result<(), StoreError> {
        let add = (hb.len() + data.len()) as u64;
        if let Sink::Buffered { body, budget } = &mut self.sink {
            let max = self.store.group_max_record.load(Ordering::Relaxed);
            let total = self.store.buffered_bytes.fetch_add(add, Ordering::Relaxed) + add;
            *budget += add;
            if body.len() as u64 + add <= max && total <= GROUP_COMMIT_BUFFER_BUDGET {
                body.push(hb, data);
                return Ok(());
            }
            self.spill()?;
        }
        match &mut self.sink {
            Sink::Exclusive(x) => {
                x.write(&self.store, &hb)?;
                x.write(&self.store, &data)
            }
            Sink::Buffered { .. } => Err(StoreError::InvalidArgument(
                "writer lost its segment".into(),
            )),
        }
    }

    fn abort(self) {
        match self.sink {
            Sink::Buffered { budget, .. } => {
                self.store
                    .buffered_bytes
                    .fetch_sub(budget, Ordering::Relaxed);
            }
            Sink::Exclusive(x) => {
                self.store.give_staging(x.w.into_buf());
                self.store.discard_record(x.active, x.record_start)
            }
        }
    }
}

impl PutWriter {
    fn state_mut(&mut self) -> Result<&mut WriteState, StoreError> {
        self.state
            .as_mut()
            .ok_or_else(|| StoreError::InvalidArgument("writer already finished".into()))
    }

    /// Whether [`Self::append_block`] of `len` bytes would only copy them into
    /// the staging buffer of the record's own segment, with no write to disk:
    /// then it may run on an async thread (a blocking hop per block was a
    /// thread wake-up and two context switches).
    pub fn append_stays_in_memory(&self, len: usize) -> bool {
        match self.state.as_ref().map(|s| &s.sink) {
            Some(Sink::Exclusive(x)) => BLOCK_HEADER_LEN as usize + len < x.w.room(),
            _ => false,
        }
    }

    pub fn header(&self) -> Option<&FragmentHeader> {
        self.state.as_ref().map(|s| &s.header)
    }

    /// Appends one block after checking it against the sender's CRC32C. Every block but
    /// the last must be exactly `block_size` bytes; blocks are never empty. A small
    /// record keeps `data` itself until its group commit (no copy).
    pub fn append_block(&mut self, data: Bytes, sender_crc: u32) -> Result<(), StoreError> {
        let st = self.state_mut()?;
        let block_size = st.header.block_size as usize;
        if data.is_empty() || data.len() > block_size {
            return Err(StoreError::InvalidArgument(format!(
                "block {} has {} bytes; blocks hold 1..={block_size}",
                st.blocks,
                data.len()
            )));
        }
        if st.short_seen {
            return Err(StoreError::InvalidArgument(format!(
                "block {} follows a short block; only the last block may be shorter than block_size",
                st.blocks
            )));
        }
        let crc = crc32c(&data);
        if crc != sender_crc {
            metrics::CRC_FAILURES.with_label_values(&["receive"]).inc();
            return Err(StoreError::Corrupt(format!(
                "block {} arrived with crc32c {crc:08x}, sender computed {sender_crc:08x}",
                st.blocks
            )));
        }
        let blocks = st
            .blocks
            .checked_add(1)
            .ok_or_else(|| StoreError::InvalidArgument("too many blocks".into()))?;
        let hb = encode_block_header(data.len() as u32, crc);
        let len = data.len();
        st.append(hb, data)?;
        st.short_seen = len < block_size;
        st.blocks = blocks;
        st.length += len as u64;
        st.block_headers.extend_from_slice(&hb);
        Ok(())
    }

    /// Writes the footer, makes the record durable, publishes it in the index.
    pub fn commit(mut self) -> Result<PutOutcome, StoreError> {
        let st = self
            .state
            .take()
            .ok_or_else(|| StoreError::InvalidArgument("writer already finished".into()))?;
        // Every block is written, no footer: a crash leaves a torn record
        // that recovery truncates (or, buffered, nothing at all).
        fail::fail_point!("datanode::put_before_commit");
        let store = st.store.clone();
        let seq = lock(&store.index).begin_commit();
        let (blocks, length) = (st.blocks, st.length);
        let blocks_crc = crc32c(&st.block_headers);
        match st.sink {
            Sink::Buffered { body, budget } => {
                let rec =
                    buffered_record(st.header, st.meta, body, seq, blocks_crc, (blocks, length));
                let r = store.group_commit(rec);
                store.buffered_bytes.fetch_sub(budget, Ordering::Relaxed);
                r?;
            }
            Sink::Exclusive(mut x) => {
                let footer = Footer {
                    block_count: blocks,
                    total_len: length,
                    seq,
                    blocks_crc,
                };
                let id = st.header.id.clone().unwrap_or_default();
                let record_end = x.pos() + FOOTER_LEN as u64;
                let written = x
                    .write(&store, &footer.encode(x.header_crc))
                    .and_then(|()| x.finish(&store));
                let Exclusive {
                    active: mut a,
                    record_start,
                    first_block_offset,
                    w,
                    ..
                } = x;
                store.give_staging(w.into_buf());
                let padded_end = match written {
                    Ok(end) => end,
                    Err(e) => {
                        // A partial footer write may have landed whole before failing.
                        lock(&store.index).abort_commit(seq, Some((&id, a.seg.id)));
                        store.discard_record(a, record_start);
                        return Err(e);
                    }
                };
                debug_assert!(padded_end >= record_end);
                // Footer written, not fsynced, not acknowledged: after a process
                // crash the file (page cache or, with O_DIRECT, the disk) keeps it, so
                // the record comes back whole and unreferenced (orphan GC's case).
                fail::fail_point!("datanode::put_before_sync");
                if let Err(e) = store.timed_sync(&a.seg) {
                    // After a failed fsync the page cache cannot be trusted: seal the
                    // segment (not returned to the pool). The unacknowledged record may
                    // still appear after a restart; the orphan scrubber owns that case.
                    lock(&store.index).abort_commit(seq, Some((&id, a.seg.id)));
                    a.seg.sealed.store(true, Ordering::Release);
                    tracing::error!(segment = a.seg.id, error = %e, "fsync failed; sealing the segment");
                    return Err(e);
                }
                // The padding belongs to the record: dead with it, reclaimed with it.
                let loc = Location {
                    seq,
                    segment: a.seg.id,
                    record_offset: record_start,
                    record_len: padded_end - record_start,
                    first_block_offset,
                    blocks,
                    length,
                    header: st.header,
                };
                lock(&store.index).finish_commit(Arc::new(loc));
                store
                    .used_bytes
                    .fetch_add(padded_end - record_start, Ordering::Relaxed);
                a.len = padded_end;
                store.release_active(a);
            }
        }
        metrics::BYTES_WRITTEN.inc_by(length);
        metrics::FRAGMENTS_PUT.inc();
        Ok(PutOutcome { length, blocks })
    }

    /// Whether the record is still in memory, for the shared segment (a small fragment
    /// while group commit is on): then [`Self::commit_async`] takes it.
    pub fn is_buffered(&self) -> bool {
        matches!(
            self.state.as_ref().map(|s| &s.sink),
            Some(Sink::Buffered { .. })
        )
    }

    /// [`Self::commit`] for a buffered writer ([`Self::is_buffered`]), without
    /// blocking: the record is queued for the shared segment's next batch (led by a
    /// blocking thread) by this call, and the future resolves once it is durable and
    /// published. `Err(self)` when the writer is not buffered: commit it on a
    /// blocking thread.
    pub fn commit_async(
        mut self,
    ) -> Result<impl std::future::Future<Output = Result<PutOutcome, StoreError>>, Box<PutWriter>>
    {
        let Some(st) = self.state.take() else {
            return Err(Box::new(self));
        };
        let (body, budget) = match st.sink {
            Sink::Buffered { body, budget } => (body, budget),
            sink => {
                self.state = Some(WriteState { sink, ..st });
                return Err(Box::new(self));
            }
        };
        fail::fail_point!("datanode::put_before_commit");
        let store = st.store.clone();
        // Given back however the wait ends, also if the waiting task is dropped.
        let budget = BufferBudget {
            store: store.clone(),
            bytes: budget,
        };
        let seq = lock(&store.index).begin_commit();
        let (blocks, length) = (st.blocks, st.length);
        let blocks_crc = crc32c(&st.block_headers);
        let rec = buffered_record(st.header, st.meta, body, seq, blocks_crc, (blocks, length));
        // Queued now: the record is committed whether or not anyone waits for it.
        let answer = store.group_commit_async(rec);
        Ok(async move {
            let _budget = budget;
            answer.await.map_err(|_| {
                StoreError::io("group commit", std::io::Error::other("its leader is gone"))
            })??;
            metrics::BYTES_WRITTEN.inc_by(length);
            metrics::FRAGMENTS_PUT.inc();
            Ok(PutOutcome { length, blocks })
        })
    }

    /// Abandons the record (same as dropping the writer, but synchronous).
    pub fn abort(mut self) {
        if let Some(st) = self.state.take() {
            st.abort();
        }
    }
}

/// A buffered record's share of `GROUP_COMMIT_BUFFER_BUDGET`, given back on drop.
struct BufferBudget {
    store: Arc<Store>,
    bytes: u64,
}

impl Drop for BufferBudget {
    fn drop(&mut self) {
        self.store
            .buffered_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The group-commit record of a buffered fragment; `apply` publishes it in the index
/// where the batch placed it. `counts`: its blocks and payload bytes.
fn buffered_record(
    header: FragmentHeader,
    meta: Vec<u8>,
    body: BufferedBlocks,
    seq: u64,
    blocks_crc: u32,
    counts: (u32, u64),
) -> group::GroupRecord {
    let (blocks, length) = counts;
    let id = header.id.clone().unwrap_or_default();
    group::GroupRecord {
        kind: RecordKind::Put,
        meta,
        body,
        block_count: blocks,
        total_len: length,
        seq,
        blocks_crc,
        apply: Box::new(move |ix, p| {
            ix.finish_commit(Arc::new(Location {
                seq,
                segment: p.segment,
                record_offset: p.record_offset,
                record_len: p.record_len,
                first_block_offset: p.first_block_offset,
                blocks,
                length,
                header,
            }))
        }),
        put_commit: Some(id),
    }
}

impl Drop for PutWriter {
    fn drop(&mut self) {
        if let Some(st) = self.state.take() {
            if let Sink::Buffered { .. } = st.sink {
                return st.abort(); // memory only
            }
            // Truncating is a syscall: keep it off the async executor when there is one.
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(move || st.abort());
                }
                Err(_) => st.abort(),
            }
        }
    }
}

#[cfg(test)]
mod tests;
