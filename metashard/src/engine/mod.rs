//! The only module that calls RocksDB.
//!
//! One RocksDB per store at `<data_dir>/db` with column family `raft` (logs and
//! local state, see `keys::local`) and one data CF per [`Cf`]. Everything above
//! uses [`Engine`] and [`WriteBatch`]; nothing else names a RocksDB type.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use kura_proto::metashard::Cf;
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, Options, ReadOptions, WriteOptions, DB,
};

use crate::keys::{decode_value, encode_value, ValueError};

/// Column family of raft logs and local state.
pub const CF_RAFT: &str = "raft";

/// Every data column family, in a fixed order.
pub const DATA_CFS: [Cf; 5] = [Cf::Meta, Cf::Mpu, Cf::Gc, Cf::Orphan, Cf::Usage];

/// No data key starts with 0xFF (families are 0x01 and 0x02, see `keys`), so
/// this bounds the range deletion of a region without an end key; keys past it
/// are deleted one by one.
const RANGE_DELETE_MAX: &[u8] = &[0xFF; 16];

/// Deleted WAL files kept for reuse.
const WAL_RECYCLED_FILES: usize = 4;

/// Live WAL past which the CFs holding the oldest WAL file are flushed.
const MAX_TOTAL_WAL_BYTES: u64 = 256 << 20;

/// Bloom filter bits per key in data CFs (~1% false positives).
const BLOOM_BITS_PER_KEY: f64 = 10.0;

/// Memtable size of the queue-like CFs (usage deltas, GC records): written
/// and deleted within moments, so their memtable is mostly tombstones that
/// every scan steps over until a flush drops them.
const QUEUE_CF_WRITE_BUFFER: usize = 1 << 20;

/// Memtables of a queue-like CF that may wait for the flush thread before
/// writes stall (a 64 MiB flush of another CF can take seconds).
const QUEUE_CF_WRITE_BUFFERS: i32 = 4;

/// Whether files in `db_dir` (created if missing) can be written with
/// `O_DIRECT`: some filesystems refuse it (tmpfs before Linux 6.6, some FUSE
/// and network ones), and RocksDB would then fail its first flush rather
/// than fall back.
fn direct_io_works(db_dir: &Path) -> bool {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    const BLOCK: usize = 4096;
    if std::fs::create_dir_all(db_dir).is_err() {
        return false;
    }
    let probe = db_dir.join("DIRECT_IO_PROBE");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .and_then(|mut f| {
            // O_DIRECT wants an aligned buffer: a block-sized slice at a
            // block boundary inside a buffer twice that size.
            let buf = vec![0u8; 2 * BLOCK];
            let at = buf.as_ptr().align_offset(BLOCK);
            f.write_all(&buf[at..at + BLOCK])
        });
    let _ = std::fs::remove_file(&probe);
    if let Err(e) = &written {
        tracing::info!(dir = %db_dir.display(), error = %e, "no direct I/O here; RocksDB flushes and compactions go through the page cache");
    }
    written.is_ok()
}

/// The RocksDB column family name of a data CF.
pub fn data_cf_name(cf: Cf) -> &'static str {
    match cf {
        Cf::Meta => "meta",
        Cf::Mpu => "mpu",
        Cf::Gc => "gc",
        Cf::Orphan => "orphan",
        Cf::Usage => "usage",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt local state {what}: {source}")]
    Corrupt { what: String, source: ValueError },
    #[error("corrupt raft state {what}: {reason}")]
    CorruptRaft { what: String, reason: String },
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// A shared handle to the store's RocksDB.
#[derive(Clone)]
pub struct Engine {
    db: Arc<DB>,
}

/// A key/value pair as stored.
pub type Kv = (Vec<u8>, Vec<u8>);

/// How [`Engine::scan_data_opts`] reads (the `ScanRequest` options).
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanOpts {
    /// Return empty values.
    pub keys_only: bool,
    /// Only the first key of each object prefix; seek past the rest.
    pub first_per_object: bool,
}

/// What a scan returned, and what it cost the iterator.
#[derive(Debug, Default)]
pub struct ScanOut {
    pub kvs: Vec<Kv>,
    /// Iterator positions read (each a key, and its value unless keys_only).
    pub keys_read: u64,
    /// Iterator seeks, the first one included.
    pub seeks: u64,
}

/// How much of a range a pass reads, which decides whether the blocks it
/// reads go into RocksDB's block cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// A few pairs (a page, a raft log slice): cached like any read.
    Few,
    /// Everything in a range (split checks, raft snapshots, counts): read
    /// once, so its blocks would only evict the hot ones point reads use.
    Whole,
}

/// A pair of one data CF.
pub type CfKv = (Cf, Vec<u8>, Vec<u8>);

impl Engine {
    /// Opens (creating if missing) the DB at `path` with every column family.
    ///
    /// Write-path tuning (docs/decisions/0056): WAL files are recycled, the
    /// live WAL is bounded, flushes and compactions write with direct I/O
    /// where the filesystem allows it, data CFs carry bloom filters.
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_max_background_jobs(2);
        // A recycled WAL is overwritten in place: its pages are allocated
        // (on disk and in the page cache) and its size does not change, so a
        // synced write does not also commit file metadata.
        opts.set_recycle_log_file_num(WAL_RECYCLED_FILES);
        // Small CFs (usage, gc) would otherwise pin every WAL file until
        // their memtables fill: gigabytes of WAL to replay at restart.
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
        if direct_io_works(path) {
            // SST writes skip the page cache (no fresh page per written byte).
            opts.set_use_direct_io_for_flush_and_compaction(true);
        }
        let mut cfs = vec![ColumnFamilyDescriptor::new(CF_RAFT, Options::default())];
        for cf in DATA_CFS {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            // Point reads of absent keys (a new object's conditions at
            // apply) skip the SSTs that cannot hold them.
            let mut table = BlockBasedOptions::default();
            table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
            o.set_block_based_table_factory(&table);
            if matches!(cf, Cf::Usage | Cf::Gc) {
                o.set_write_buffer_size(QUEUE_CF_WRITE_BUFFER);
                o.set_max_write_buffer_number(QUEUE_CF_WRITE_BUFFERS);
                // Compacted after every flush: the deletes then meet their
                // puts in the last level and vanish, instead of piling up in
                // level 0 (four flushes' worth by default) for scans to skip.
                o.set_level_zero_file_num_compaction_trigger(1);
            }
            cfs.push(ColumnFamilyDescriptor::new(data_cf_name(cf), o));
        }
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Engine { db: Arc::new(db) })
    }

    fn handle(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    /// Point read in a data CF.
    pub fn get_data(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.handle(data_cf_name(cf)), key)?)
    }

    /// Point read of a local key.
    pub fn get_raft(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.handle(CF_RAFT), key)?)
    }

    /// Reads a local state value written by [`WriteBatch::put_raft_msg`].
    pub fn get_raft_msg<M: prost::Message + Default>(&self, key: &[u8]) -> Result<Option<M>> {
        decode_raft_msg(key, self.get_raft(key)?)
    }

    /// Up to `limit` pairs of `cf` in [start, end) (empty end: unbounded), in key order.
    pub fn scan_data(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
        keys_only: bool,
    ) -> Result<Vec<Kv>> {
        let mut out = Vec::new();
        self.for_each(data_cf_name(cf), start, end, None, Pass::Few, |k, v| {
            out.push((k.to_vec(), if keys_only { Vec::new() } else { v.to_vec() }));
            out.len() < limit
        })?;
        Ok(out)
    }

    /// A scan as the `Scan` rpc asks for it (`opts`), with what it cost. With
    /// `first_per_object`, after each object-family key the iterator *seeks*
    /// past the rest of that object's keys (`keys::seek_after_object_of`):
    /// in cf META an object's older versions are never read. `limit` counts
    /// returned pairs; the iterator stops right after the last one.
    pub fn scan_data_opts(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
        opts: ScanOpts,
    ) -> Result<ScanOut> {
        self.scan_data_rollup(cf, start, end, limit, opts, None)
    }

    /// [`Engine::scan_data_opts`] with a ListObjects delimiter (`rollup`,
    /// docs/decisions/0035): after a key that rolls up into a common prefix
    /// the iterator seeks past every key under that prefix, so a listing
    /// reads one key per common prefix.
    pub fn scan_data_rollup(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
        opts: ScanOpts,
        rollup: Option<&crate::keys::Rollup>,
    ) -> Result<ScanOut> {
        let mut ro = ReadOptions::default();
        if !end.is_empty() {
            ro.set_iterate_upper_bound(end.to_vec());
        }
        let mut it = self
            .db
            .raw_iterator_cf_opt(self.handle(data_cf_name(cf)), ro);
        let mut out = ScanOut {
            seeks: 1,
            ..Default::default()
        };
        it.seek(start);
        while out.kvs.len() < limit {
            let Some(k) = it.key() else { break };
            let k = k.to_vec();
            out.keys_read += 1;
            let v = match (opts.keys_only, it.value()) {
                (false, Some(v)) => v.to_vec(),
                _ => Vec::new(),
            };
            let past = match rollup.and_then(|r| r.seek_past(&k)) {
                Some(at) => Some(at),
                None if opts.first_per_object => crate::keys::seek_after_object_of(&k),
                None => None,
            };
            out.kvs.push((k, v));
            if out.kvs.len() >= limit {
                break;
            }
            match past {
                Some(at) => {
                    it.seek(&at);
                    out.seeks += 1;
                }
                None => it.next(),
            }
        }
        it.status()?;
        Ok(out)
    }

    /// The key in the middle of `cf`'s keys in [start, end) (empty end:
    /// unbounded), by count; `None` when the range is empty. Two passes over
    /// the keys, nothing held in memory: fine for a manual split.
    pub fn middle_data_key(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut n = 0u64;
        self.for_each(data_cf_name(cf), start, end, None, Pass::Whole, |_, _| {
            n += 1;
            true
        })?;
        if n == 0 {
            return Ok(None);
        }
        let (mut i, mut mid) = (0u64, None);
        self.for_each(data_cf_name(cf), start, end, None, Pass::Whole, |k, _| {
            if i == n / 2 {
                mid = Some(k.to_vec());
                return false;
            }
            i += 1;
            true
        })?;
        Ok(mid)
    }

    /// Calls `f` for each pair of `cf` in [start, end) (empty end: unbounded)
    /// until it returns false. A whole-range pass: its blocks are not cached.
    pub fn for_each_data(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.for_each(data_cf_name(cf), start, end, None, Pass::Whole, f)
    }

    /// Calls `f` for each local pair in [start, end) until it returns false.
    pub fn scan_raft(
        &self,
        start: &[u8],
        end: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.for_each(CF_RAFT, start, end, None, Pass::Few, f)
    }

    fn for_each(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        snap: Option<&rocksdb::Snapshot<'_>>,
        pass: Pass,
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let mut ro = ReadOptions::default();
        if !end.is_empty() {
            ro.set_iterate_upper_bound(end.to_vec());
        }
        if let Some(s) = snap {
            ro.set_snapshot(s);
        }
        ro.fill_cache(pass == Pass::Few);
        // The raw iterator lends each pair; the `Iterator` API would copy
        // every key and value into its own allocation.
        let mut it = self.db.raw_iterator_cf_opt(self.handle(cf), ro);
        it.seek(start);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !f(k, v) {
                return Ok(());
            }
            it.next();
        }
        it.status()?;
        Ok(())
    }

    /// Every pair of every data CF in [start, end), read from one consistent
    /// RocksDB snapshot.
    pub fn export_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<CfKv>> {
        let view = self.view();
        let mut out = Vec::new();
        for cf in DATA_CFS {
            view.for_each_data(cf, start, end, |k, v| {
                out.push((cf, k.to_vec(), v.to_vec()));
                true
            })?;
        }
        Ok(out)
    }

    /// A consistent read-only view of the whole DB as of now (a RocksDB
    /// snapshot: local state and data agree, e.g. for a raft snapshot).
    pub fn view(&self) -> View<'_> {
        View {
            engine: self,
            snap: self.db.snapshot(),
        }
    }

    /// The directory of the DB (the store's other files live next to it).
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Approximate on-disk bytes of [start, end) across the data CFs (SST files only).
    pub fn approximate_size(&self, start: &[u8], end: &[u8]) -> u64 {
        let end = if end.is_empty() {
            RANGE_DELETE_MAX
        } else {
            end
        };
        DATA_CFS
            .iter()
            .map(|cf| {
                let r = rocksdb::Range::new(start, end);
                self.db
                    .get_approximate_sizes_cf(self.handle(data_cf_name(*cf)), &[r])
                    .first()
                    .copied()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// A new empty write batch.
    pub fn batch(&self) -> WriteBatch {
        WriteBatch {
            inner: rocksdb::WriteBatch::default(),
            engine: self.clone(),
            data: None,
        }
    }

    /// A new empty write batch that also remembers its data writes, for
    /// applying several entries into one write ([`WriteBatch::pending_data`]).
    pub fn apply_batch(&self) -> WriteBatch {
        WriteBatch {
            data: Some(HashMap::new()),
            ..self.batch()
        }
    }

    /// Writes `wb` atomically; `sync` makes it durable (fsync of the WAL) before returning.
    pub fn write(&self, wb: WriteBatch, sync: bool) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb.inner, &wo)?;
        Ok(())
    }
}

/// A point-in-time view of the DB; see [`Engine::view`].
pub struct View<'a> {
    engine: &'a Engine,
    snap: rocksdb::Snapshot<'a>,
}

impl View<'_> {
    /// Point read of a local key as of the view.
    pub fn get_raft(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.snap.get_cf(self.engine.handle(CF_RAFT), key)?)
    }

    /// A local state message as of the view.
    pub fn get_raft_msg<M: prost::Message + Default>(&self, key: &[u8]) -> Result<Option<M>> {
        decode_raft_msg(key, self.get_raft(key)?)
    }

    /// Calls `f` for each pair of `cf` in [start, end) (empty end:
    /// unbounded) as of the view, until it returns false. A whole-range
    /// pass: its blocks are not cached.
    pub fn for_each_data(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.engine.for_each(
            data_cf_name(cf),
            start,
            end,
            Some(&self.snap),
            Pass::Whole,
            f,
        )
    }
}

/// An atomic batch of writes across column families.
pub struct WriteBatch {
    inner: rocksdb::WriteBatch,
    engine: Engine,
    /// In a batch from [`Engine::apply_batch`]: the last value each data
    /// key was given by `put_data`/`delete_data`, so entries applied into
    /// one batch read what the earlier ones wrote
    /// ([`WriteBatch::pending_data`]). Range deletions are not in it: they
    /// never share a batch with applied entries.
    data: Option<PendingData>,
}

/// Per data CF, each key's last value in the batch (`None`: deleted).
type PendingData = HashMap<Cf, HashMap<Vec<u8>, Option<Vec<u8>>>>;

impl WriteBatch {
    pub fn put_data(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.inner
            .put_cf(self.engine.handle(data_cf_name(cf)), key, value);
        if let Some(d) = &mut self.data {
            d.entry(cf)
                .or_default()
                .insert(key.to_vec(), Some(value.to_vec()));
        }
    }

    pub fn delete_data(&mut self, cf: Cf, key: &[u8]) {
        self.inner
            .delete_cf(self.engine.handle(data_cf_name(cf)), key);
        if let Some(d) = &mut self.data {
            d.entry(cf).or_default().insert(key.to_vec(), None);
        }
    }

    /// What this batch wrote to a data key: `None` if it did not touch it,
    /// `Some(None)` if it deleted it.
    /// Always `None` for a batch from [`Engine::batch`], which does not
    /// remember (a snapshot's data, say, need not be kept twice).
    pub fn pending_data(&self, cf: Cf, key: &[u8]) -> Option<Option<&[u8]>> {
        self.data.as_ref()?.get(&cf)?.get(key).map(|v| v.as_deref())
    }

    /// Deletes [start, end) (empty end: unbounded) in every data CF.
    pub fn delete_data_range(&mut self, start: &[u8], end: &[u8]) -> Result<()> {
        for cf in DATA_CFS {
            let h = self.engine.handle(data_cf_name(cf));
            if end.is_empty() {
                if start < RANGE_DELETE_MAX {
                    self.inner.delete_range_cf(h, start, RANGE_DELETE_MAX);
                }
                let mut tail = Vec::new();
                let from = if start < RANGE_DELETE_MAX {
                    RANGE_DELETE_MAX
                } else {
                    start
                };
                self.engine
                    .for_each(data_cf_name(cf), from, &[], None, Pass::Whole, |k, _| {
                        tail.push(k.to_vec());
                        true
                    })?;
                for k in tail {
                    self.inner.delete_cf(h, k);
                }
            } else if start < end {
                self.inner.delete_range_cf(h, start, end);
            }
        }
        Ok(())
    }

    pub fn put_raft(&mut self, key: &[u8], value: &[u8]) {
        self.inner.put_cf(self.engine.handle(CF_RAFT), key, value);
    }

    /// Writes a local state message with the value format byte (see `keys::encode_value`).
    pub fn put_raft_msg<M: prost::Message>(&mut self, key: &[u8], m: &M) {
        let v = encode_value(m);
        self.put_raft(key, &v);
    }

    pub fn delete_raft(&mut self, key: &[u8]) {
        self.inner.delete_cf(self.engine.handle(CF_RAFT), key);
    }

    pub fn delete_raft_range(&mut self, start: &[u8], end: &[u8]) {
        self.inner
            .delete_range_cf(self.engine.handle(CF_RAFT), start, end);
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Number of operations in the batch.
    pub fn len(&self) -> usize {
        self.inner.len()
    }
}

/// Decodes the local state message stored under `key` (if any).
fn decode_raft_msg<M: prost::Message + Default>(
    key: &[u8],
    v: Option<Vec<u8>>,
) -> Result<Option<M>> {
    match v {
        None => Ok(None),
        Some(v) => decode_value(&v)
            .map(Some)
            .map_err(|source| EngineError::Corrupt {
                what: format!("{key:?}"),
                source,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_inodes(dir: &Path) -> Vec<u64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(dir)
            .unwrap()
            .map(|f| f.unwrap())
            .filter(|f| f.file_name().to_string_lossy().ends_with(".log"))
            .map(|f| f.metadata().unwrap().ino())
            .collect()
    }

    fn flush_everything(e: &Engine) {
        for cf in [CF_RAFT].into_iter().chain(DATA_CFS.map(data_cf_name)) {
            e.db.flush_cf(e.handle(cf)).unwrap();
        }
    }

    /// WAL recycling (decision 0056) must not lose a synced write nor bring
    /// back an old one: writes land in a recycled WAL file whose tail still
    /// holds older records, the DB is closed without a flush, and reopening
    /// replays exactly what was written last.
    #[test]
    fn writes_in_a_recycled_wal_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let put = |e: &Engine, round: u32, n: u32| {
            let mut wb = e.batch();
            for i in 0..n {
                let v = format!("round {round} value {i} {}", "x".repeat(2000));
                wb.put_data(Cf::Meta, format!("k{i:04}").as_bytes(), v.as_bytes());
                wb.put_raft(format!("r{i:04}").as_bytes(), v.as_bytes());
            }
            e.write(wb, true).unwrap();
        };
        let first_wals;
        {
            let e = Engine::open(dir.path()).unwrap();
            first_wals = wal_inodes(dir.path());
            put(&e, 1, 500);
            flush_everything(&e);
            put(&e, 2, 500);
            flush_everything(&e);
            // The first WAL is obsolete by now: the next one reuses its file.
            put(&e, 3, 100);
            let mut wb = e.batch();
            wb.delete_data(Cf::Meta, b"k0150");
            e.write(wb, true).unwrap();
            assert!(
                wal_inodes(dir.path())
                    .iter()
                    .any(|i| first_wals.contains(i)),
                "a WAL file was recycled"
            );
        }
        let e = Engine::open(dir.path()).unwrap();
        for i in [0u32, 99] {
            let v = e
                .get_data(Cf::Meta, format!("k{i:04}").as_bytes())
                .unwrap()
                .unwrap();
            assert!(v.starts_with(b"round 3 value"), "key {i}");
        }
        let v = e.get_data(Cf::Meta, b"k0100").unwrap().unwrap();
        assert!(v.starts_with(b"round 2 value 100"));
        assert_eq!(
            e.get_data(Cf::Meta, b"k0150").unwrap(),
            None,
            "a delete stays"
        );
        let v = e.get_raft(b"r0042").unwrap().unwrap();
        assert!(v.starts_with(b"round 3 value 42"));
    }

    /// A delimiter (`Rollup`) returns one key per common prefix and reads
    /// nothing else under it; keys that do not roll up come back as before.
    #[test]
    fn scan_rollup_seeks_past_common_prefixes() {
        use crate::keys::{object_range, object_version_key, Rollup};
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        let mut wb = e.batch();
        let mut names: Vec<String> = Vec::new();
        for d in ["a", "b", "c"] {
            for i in 0..50 {
                names.push(format!("{d}/{i:02}"));
            }
        }
        names.extend(["a0".to_string(), "b".to_string(), "z".to_string()]);
        for n in &names {
            for v in 0..3u64 {
                wb.put_data(Cf::Meta, &object_version_key(7, n.as_bytes(), v), b"v");
            }
        }
        e.write(wb, true).unwrap();
        let (s7, e7) = object_range(7, b"");
        let keys = |out: &ScanOut| -> Vec<String> {
            out.kvs
                .iter()
                .map(|kv| {
                    let p = crate::keys::decode_object_key(&kv.0).unwrap();
                    String::from_utf8(p.key).unwrap()
                })
                .collect()
        };
        let first = ScanOpts {
            first_per_object: true,
            ..Default::default()
        };
        let root = Rollup::new(b"", b"/").unwrap();
        let out = e
            .scan_data_rollup(Cf::Meta, &s7, &e7, 100, first, Some(&root))
            .unwrap();
        assert_eq!(keys(&out), ["a/00", "a0", "b", "b/00", "c/00", "z"]);
        assert_eq!(out.keys_read, 6, "nothing under a common prefix was read");
        // Without first_per_object an object that does not roll up shows
        // every version; the rolled-up ones still one key each.
        let plain = e
            .scan_data_rollup(Cf::Meta, &s7, &e7, 100, ScanOpts::default(), Some(&root))
            .unwrap();
        assert_eq!(plain.kvs.len(), 3 + 3 * 3, "{:?}", keys(&plain));
        // Under a prefix: "a/" lists a/00..a/49 one key each, no rollup.
        let (sa, ea) = object_range(7, b"a/");
        let under = Rollup::new(b"a/", b"/").unwrap();
        let out = e
            .scan_data_rollup(Cf::Meta, &sa, &ea, 1000, first, Some(&under))
            .unwrap();
        assert_eq!(out.kvs.len(), 50);
        // The limit counts returned keys.
        let two = e
            .scan_data_rollup(Cf::Meta, &s7, &e7, 2, first, Some(&root))
            .unwrap();
        assert_eq!((keys(&two).len(), two.keys_read), (2, 2));
        // No rollup: what scan_data_opts returns.
        let none = e
            .scan_data_rollup(Cf::Meta, &s7, &e7, 1000, first, None)
            .unwrap();
        assert_eq!(none.kvs.len(), names.len());
    }

    /// `first_per_object` returns each object's first key (its latest
    /// version in cf META), reads nothing else of it, keeps non-object keys,
    /// respects the end bound and the limit, and starts mid-object at the
    /// first key at or after `start`.
    #[test]
    fn scan_first_per_object_seeks_past_older_versions() {
        use crate::keys::{bucket_key, object_seek_after_key, object_version_key, upload_key};
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        let mut wb = e.batch();
        wb.put_data(Cf::Meta, &bucket_key("b"), b"bucket");
        // Ten objects with v versions each (v = 1..=10); "k\0" and "k0"
        // sort right after "k" and must not be taken for its versions.
        let names: Vec<Vec<u8>> = (0..10u8)
            .map(|i| vec![b'k', b'0' + i])
            .chain([b"k".to_vec(), b"k\0".to_vec()])
            .collect();
        for (i, n) in names.iter().enumerate() {
            for v in 0..=(i as u64 % 10) {
                wb.put_data(
                    Cf::Meta,
                    &object_version_key(7, n, v),
                    format!("{v}").as_bytes(),
                );
            }
        }
        // Another bucket's keys follow.
        wb.put_data(Cf::Meta, &object_version_key(8, b"a", 1), b"1");
        wb.put_data(Cf::Meta, &object_version_key(8, b"a", 0), b"0");
        e.write(wb, true).unwrap();
        let first = ScanOpts {
            first_per_object: true,
            ..Default::default()
        };
        let all = e.scan_data_opts(Cf::Meta, b"", b"", 1000, first).unwrap();
        // One bucket record + 12 objects of bucket 7 + 1 of bucket 8.
        assert_eq!(all.kvs.len(), 14);
        assert_eq!(all.keys_read, 14, "no older version was read");
        let total = e.scan_data(Cf::Meta, b"", b"", 1000, false).unwrap().len();
        assert!(total > 50, "{total}");
        let mut names_sorted = names.clone();
        names_sorted.sort();
        for (kv, n) in all.kvs[1..13].iter().zip(&names_sorted) {
            let parts = crate::keys::decode_object_key(&kv.0).unwrap();
            assert_eq!(&parts.key, n);
            // The newest version of each object.
            let i = names.iter().position(|x| x == n).unwrap() as u64 % 10;
            assert_eq!(kv.1, format!("{i}").as_bytes());
        }
        // Limit counts returned keys; the end bound holds.
        let (s7, e7) = crate::keys::object_range(7, b"");
        let two = e.scan_data_opts(Cf::Meta, &s7, &e7, 2, first).unwrap();
        assert_eq!(two.kvs.len(), 2);
        assert_eq!(two.keys_read, 2);
        assert_eq!(two.seeks, 2, "no seek after the last returned key");
        let bucket7 = e.scan_data_opts(Cf::Meta, &s7, &e7, 1000, first).unwrap();
        assert_eq!(bucket7.kvs.len(), 12);
        // Resuming past an object lands on the next object's first key.
        let after = object_seek_after_key(7, b"k");
        let r = e.scan_data_opts(Cf::Meta, &after, &e7, 1, first).unwrap();
        assert_eq!(
            crate::keys::decode_object_key(&r.kvs[0].0).unwrap().key,
            b"k\0"
        );
        // Starting mid-object yields the first key at or after the start.
        let mid = object_version_key(7, b"k5", 2);
        let r = e.scan_data_opts(Cf::Meta, &mid, &e7, 2, first).unwrap();
        assert_eq!(r.kvs[0].0, mid);
        assert_eq!(
            crate::keys::decode_object_key(&r.kvs[1].0).unwrap().key,
            b"k6"
        );
        // Other kinds of records under an object prefix count as its keys too (cf MPU).
        let mut wb = e.batch();
        wb.put_data(Cf::Mpu, &upload_key(7, b"u", "up1"), b"x");
        wb.put_data(Cf::Mpu, &upload_key(7, b"u", "up2"), b"x");
        e.write(wb, false).unwrap();
        let r = e.scan_data_opts(Cf::Mpu, b"", b"", 10, first).unwrap();
        assert_eq!(r.kvs.len(), 1);
        // Without the option every key comes back.
        let plain = e
            .scan_data_opts(Cf::Meta, b"", b"", 1000, ScanOpts::default())
            .unwrap();
        assert_eq!(plain.kvs.len(), total);
        assert_eq!(plain.keys_read as usize, total);
        let keys_only = ScanOpts {
            keys_only: true,
            first_per_object: true,
        };
        let r = e.scan_data_opts(Cf::Meta, &s7, &e7, 3, keys_only).unwrap();
        assert!(r.kvs.iter().all(|kv| kv.1.is_empty()));
    }

    #[test]
    fn scan_and_range_delete() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        let mut wb = e.batch();
        for k in [
            &b"\x01a"[..],
            b"\x02b",
            b"\x02c",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        ] {
            wb.put_data(Cf::Meta, k, b"v");
        }
        wb.put_data(Cf::Gc, b"\x02b", b"g");
        e.write(wb, true).unwrap();
        assert_eq!(
            e.scan_data(Cf::Meta, b"\x02", b"", 10, false)
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            e.scan_data(Cf::Meta, b"", b"\x02c", 10, true)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(e.scan_data(Cf::Meta, b"", b"", 1, false).unwrap().len(), 1);
        assert_eq!(e.export_range(b"\x02", b"").unwrap().len(), 4);
        assert_eq!(
            e.middle_data_key(Cf::Meta, b"", b"").unwrap().as_deref(),
            Some(&b"\x02c"[..])
        );
        assert_eq!(
            e.middle_data_key(Cf::Meta, b"\x01", b"\x02c")
                .unwrap()
                .as_deref(),
            Some(&b"\x02b"[..])
        );
        assert_eq!(e.middle_data_key(Cf::Meta, b"\x03", b"\x04").unwrap(), None);
        let mut wb = e.batch();
        wb.delete_data_range(b"\x02", b"").unwrap();
        e.write(wb, false).unwrap();
        assert_eq!(
            e.export_range(b"", b"").unwrap(),
            vec![(Cf::Meta, b"\x01a".to_vec(), b"v".to_vec())]
        );
    }

    fn level0_files(e: &Engine, cf: Cf) -> u64 {
        e.db.property_int_value_cf(e.handle(data_cf_name(cf)), "rocksdb.num-files-at-level0")
            .unwrap()
            .unwrap()
    }

    /// The queue-like CFs (usage deltas, GC records) compact each flush at
    /// once, so the deletes of their consumed entries meet the puts in the
    /// last level and vanish instead of waiting in level 0 for every scan to
    /// step over (decision 0056, addendum); the other data CFs keep the
    /// default of four level-0 files.
    #[test]
    fn a_queue_cf_drops_its_deleted_entries_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        for cf in [Cf::Usage, Cf::Meta] {
            for round in 0..2 {
                let mut wb = e.batch();
                for i in 0..2_000u32 {
                    let k = format!("k{i:05}");
                    if round == 0 {
                        wb.put_data(cf, k.as_bytes(), b"delta");
                    } else {
                        wb.delete_data(cf, k.as_bytes());
                    }
                }
                e.write(wb, false).unwrap();
                e.db.flush_cf(e.handle(data_cf_name(cf))).unwrap();
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while level0_files(&e, Cf::Usage) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "usage CF still has level-0 files"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let live = |cf: Cf| {
            e.db.property_int_value_cf(e.handle(data_cf_name(cf)), "rocksdb.estimate-num-keys")
                .unwrap()
                .unwrap()
        };
        assert_eq!(live(Cf::Usage), 0, "deleted deltas compacted away");
        assert_eq!(level0_files(&e, Cf::Meta), 2, "meta waits for four flushes");
        assert!(e
            .scan_data(Cf::Usage, b"", b"", 10, false)
            .unwrap()
            .is_empty());
    }
}
