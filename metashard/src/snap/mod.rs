//! Raft snapshots as files (decision 0018): generated, sent, received and
//! applied off the raftstore thread.
//!
//! - Generation: `PeerStorage::snapshot` asks [`SnapManager::snapshot`],
//!   which answers `SnapshotTemporarilyUnavailable` and queues the region on
//!   the `snap-gen` thread; that thread writes `gen_<region>_<term>_<index>.snap`
//!   from one RocksDB snapshot (data and local state agree), and raft's next
//!   try gets the metadata with a [`SnapshotDescriptor`] as data.
//! - Sending (`transport`): the file goes in 1 MiB chunks over the `Snapshot`
//!   call, a few at a time per store; the receiver ([`SnapManager::receiver`])
//!   writes `rcv_<region>_<term>_<index>.snap`, checks size and CRC32C, and
//!   only then hands the raft message to the poller.
//! - Applying: the poller persists the new raft/apply/region state plus a
//!   [`SnapshotApplyState`] marker in its round; the `snap-apply` thread then
//!   clears the ranges and streams the file into bounded write batches, the
//!   last one deleting the marker. A crash in between leaves the marker:
//!   the peer redoes the apply on restart (the file is kept until then).

pub mod file;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{unbounded, Receiver, Sender};
use kura_proto::common::Region;
use protobuf::Message as PbMessage;
use raft::prelude::{ConfState, Entry, Snapshot};
use raft::StorageError;
use tokio::sync::Semaphore;

use crate::engine::{Engine, DATA_CFS};
use crate::fsm::{Router, StoreMsg};
use crate::keys::local;
use crate::metrics;
use crate::peer::state::{
    ApplyState, RaftLocalState, RegionLocalState, SnapshotApplyState, SnapshotDescriptor,
};
use file::{Crc, SnapReader, SnapWriter};

/// Bytes of file data per `Snapshot` chunk.
pub const CHUNK_SIZE: usize = 1 << 20;
/// Snapshots this store sends at once (the others wait their turn).
pub const MAX_SENDING: usize = 2;
/// Snapshots this store receives at once (more are refused; raft retries).
pub const MAX_RECEIVING: usize = 2;
/// Bytes of data per write batch when applying a snapshot: bounds memory
/// and the time one RocksDB write holds the write path for other regions
/// (the raftstore's synced round write queues behind it: 4 MiB batches
/// delayed it by up to ~100 ms in tests, 1 MiB by ~20 ms).
pub const APPLY_BATCH_BYTES: usize = 1 << 20;
/// Generated files unused this long are deleted (and regenerated if raft
/// asks again), as are received files no apply needs.
pub const SNAP_TTL: Duration = Duration::from_secs(600);
/// How often the generation thread looks for such files.
const GC_INTERVAL: Duration = Duration::from_secs(60);

/// The least snapshot size cap, whatever the split size.
pub const MIN_MAX_SNAPSHOT_BYTES: u64 = 1 << 30;
/// The cap when regions are never split by size (`--region-split-size-mb 0`).
pub const UNSPLIT_MAX_SNAPSHOT_BYTES: u64 = 64 << 30;

/// The largest snapshot a store receives (decision 0045): ten times the
/// region split size, at least 1 GiB. A region outgrows its split size
/// between checks (1/16 of it) and by what one object's prefix holds (splits
/// never cut an object); the split size counts cf `meta` only while a file
/// holds every cf and 9 bytes per record; ten times covers all of that.
pub fn max_snapshot_bytes(split_size: u64) -> u64 {
    if split_size == 0 {
        return UNSPLIT_MAX_SNAPSHOT_BYTES;
    }
    split_size.saturating_mul(10).max(MIN_MAX_SNAPSHOT_BYTES)
}

/// Chunks a file of `size` bytes may come in: senders send [`CHUNK_SIZE`]
/// chunks after the first (which carries the message); any split into
/// pieces of 64 KiB or more is taken, a trickle of tiny or empty ones is not.
pub fn max_chunks(size: u64) -> u64 {
    size.div_ceil(64 << 10) + 2
}

#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    #[error("snapshot file i/o: {0}")]
    Io(String),
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
    #[error("engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error("snapshot worker stopped")]
    Stopped,
    /// Refused before or while receiving (the label is the metric's reason).
    #[error("snapshot refused ({0}): {1}")]
    Refused(&'static str, String),
}

impl SnapError {
    fn io(path: &Path, e: std::io::Error) -> Self {
        SnapError::Io(format!("{}: {e}", path.display()))
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            SnapError::Io(_) | SnapError::Stopped => true,
            SnapError::Corrupt(_) | SnapError::Engine(_) | SnapError::Refused(..) => false,
        }
    }
}

#[allow(clippy::large_enum_variant)] // one per region being snapshotted
enum GenState {
    Generating,
    Ready {
        desc: SnapshotDescriptor,
        conf_state: ConfState,
        at: Instant,
    },
}

struct GenTask {
    region_id: u64,
}

struct ApplyTask {
    region_id: u64,
    state: SnapshotApplyState,
}

/// What the manager and its threads share.
#[derive(Default)]
struct Shared {
    generated: Mutex<HashMap<u64, GenState>>,
    /// Received files a queued or running apply needs.
    applying: Mutex<HashSet<PathBuf>>,
    /// Received and verified files with the descriptor they were checked
    /// against: a MsgSnapshot is stepped only with exactly that descriptor.
    received: Mutex<HashMap<PathBuf, SnapshotDescriptor>>,
}

/// The store's snapshot directory and workers.
pub struct SnapManager {
    dir: PathBuf,
    shared: Arc<Shared>,
    gen_tx: Mutex<Option<Sender<GenTask>>>,
    apply_tx: Mutex<Option<Sender<ApplyTask>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Bounds concurrent sends of this store (`transport`).
    pub send_limit: Arc<Semaphore>,
    /// Bounds concurrent receives of this store (`service`).
    pub recv_limit: Arc<Semaphore>,
    /// The largest snapshot received ([`max_snapshot_bytes`]).
    max_bytes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The snapshot directory of the store whose DB is `engine`: `<data>/snap`.
pub fn snap_dir_of(engine: &Engine) -> PathBuf {
    engine
        .path()
        .parent()
        .map_or_else(|| PathBuf::from("snap"), |p| p.join("snap"))
}

/// The descriptor a raft MsgSnapshot carries in its snapshot's data.
pub fn descriptor_of(snap: &Snapshot) -> Result<SnapshotDescriptor, SnapError> {
    prost::Message::decode(snap.data.as_ref())
        .map_err(|e| SnapError::Corrupt(format!("snapshot descriptor: {e}")))
}

/// The descriptor inside an encoded raft MsgSnapshot (`RaftMessage.message`).
pub fn descriptor_of_message(raw: &[u8]) -> Result<SnapshotDescriptor, SnapError> {
    let m = raft::prelude::Message::parse_from_bytes(raw)
        .map_err(|e| SnapError::Corrupt(format!("raft message: {e}")))?;
    descriptor_of(m.get_snapshot())
}

fn name(prefix: &str, d: &SnapshotDescriptor) -> String {
    let region = d.region.as_ref().map_or(0, |r| r.id);
    format!("{prefix}_{region}_{}_{}.snap", d.term, d.index)
}

impl SnapManager {
    /// Creates `dir` and starts the generation and apply threads (the
    /// poller then runs [`SnapManager::gc_on_start`] once it knows which
    /// received files unfinished applies need).
    pub fn start(engine: Engine, dir: PathBuf, router: Router) -> Result<Arc<Self>, SnapError> {
        std::fs::create_dir_all(&dir).map_err(|e| SnapError::io(&dir, e))?;
        let shared = Arc::new(Shared::default());
        let (gen_tx, gen_rx) = unbounded();
        let (apply_tx, apply_rx) = unbounded();
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| SnapError::Io(format!("cannot spawn {name}: {e}")))
        };
        {
            let (engine, dir, shared) = (engine.clone(), dir.clone(), shared.clone());
            threads.push(spawn(
                "snap-gen",
                Box::new(move || gen_loop(engine, dir, shared, gen_rx)),
            )?);
        }
        {
            let (dir, shared) = (dir.clone(), shared.clone());
            threads.push(spawn(
                "snap-apply",
                Box::new(move || apply_loop(engine, dir, shared, router, apply_rx)),
            )?);
        }
        let m = SnapManager {
            dir,
            shared,
            gen_tx: Mutex::new(Some(gen_tx)),
            apply_tx: Mutex::new(Some(apply_tx)),
            threads: Mutex::new(threads),
            send_limit: Arc::new(Semaphore::new(MAX_SENDING)),
            recv_limit: Arc::new(Semaphore::new(MAX_RECEIVING)),
            max_bytes: AtomicU64::new(max_snapshot_bytes(96 << 20)),
        };
        Ok(Arc::new(m))
    }

    /// Stops the workers after their current task (queued tasks are dropped:
    /// an unfinished apply is redone at the next start) and waits for them.
    pub fn stop(&self) {
        lock(&self.gen_tx).take();
        lock(&self.apply_tx).take();
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The largest snapshot file this store receives.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    pub fn set_max_bytes(&self, n: u64) {
        self.max_bytes.store(n, Ordering::Relaxed);
    }

    /// Where the leader's generated file of `d` is.
    pub fn gen_path(&self, d: &SnapshotDescriptor) -> PathBuf {
        self.dir.join(name("gen", d))
    }

    /// Where a received (verified) file of `d` is.
    pub fn rcv_path(&self, d: &SnapshotDescriptor) -> PathBuf {
        self.dir.join(name("rcv", d))
    }

    /// Deletes generated files (regenerated on demand), partial files, and
    /// received files no pending apply needs. Run once at start, before any
    /// snapshot moves.
    pub fn gc_on_start(&self, in_use: &[SnapshotDescriptor]) {
        let keep: Vec<PathBuf> = in_use.iter().map(|d| self.rcv_path(d)).collect();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if !keep.contains(&p) {
                if let Err(err) = std::fs::remove_file(&p) {
                    tracing::warn!(path = %p.display(), error = %err, "cannot remove old snapshot file");
                }
            }
        }
    }

    /// Raft asks for a snapshot of `region_id` (whose log starts after
    /// `truncated_index`): the ready one if still usable, else
    /// `SnapshotTemporarilyUnavailable` while the worker makes one.
    pub fn snapshot(
        &self,
        region_id: u64,
        request_index: u64,
        truncated_index: u64,
    ) -> raft::Result<Snapshot> {
        let unavailable = Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ));
        let mut g = lock(&self.shared.generated);
        match g.get(&region_id) {
            Some(GenState::Generating) => return unavailable,
            // Older than the log's start: the receiver could not catch up
            // from the log after it.
            Some(GenState::Ready {
                desc, conf_state, ..
            }) if desc.index >= truncated_index && desc.index >= request_index => {
                let mut snap = Snapshot {
                    data: prost::Message::encode_to_vec(desc).into(),
                    ..Default::default()
                };
                let meta = snap.mut_metadata();
                meta.index = desc.index;
                meta.term = desc.term;
                meta.set_conf_state(conf_state.clone());
                return Ok(snap);
            }
            Some(GenState::Ready { desc, .. }) => {
                // Senders have the file open already (unlink keeps it for them).
                let _ = std::fs::remove_file(self.gen_path(desc));
            }
            None => {}
        }
        let Some(tx) = lock(&self.gen_tx).clone() else {
            return unavailable;
        };
        if tx.send(GenTask { region_id }).is_ok() {
            g.insert(region_id, GenState::Generating);
        }
        unavailable
    }

    /// Queues the data apply of a snapshot whose raft state is persisted
    /// (with `state` as its marker); the poller hears `SnapshotApplied`.
    pub fn schedule_apply(&self, region_id: u64, state: SnapshotApplyState) {
        if let Some(d) = &state.descriptor {
            lock(&self.shared.applying).insert(self.rcv_path(d));
        }
        let sent = lock(&self.apply_tx)
            .as_ref()
            .is_some_and(|tx| tx.send(ApplyTask { region_id, state }).is_ok());
        if !sent {
            tracing::warn!(
                region_id,
                "snapshot apply not queued (store stopping); redone at restart"
            );
        }
    }

    /// Whether the file of this MsgSnapshot's descriptor was received and
    /// verified against this very descriptor (a message naming the file of
    /// another transfer with another size, checksum or region is not).
    pub fn has_received(&self, d: &SnapshotDescriptor) -> bool {
        let path = self.rcv_path(d);
        lock(&self.shared.received).get(&path) == Some(d) && path.is_file()
    }

    /// Starts receiving the file of `d`; refused at once when `d` claims
    /// more than [`SnapManager::max_bytes`] (nothing is written).
    pub async fn receiver(&self, d: &SnapshotDescriptor) -> Result<Receiving, SnapError> {
        let max = self.max_bytes();
        if d.size > max {
            return Err(refused(
                "too_large",
                format!("{} bytes claimed, at most {max} taken", d.size),
            ));
        }
        let path = self.rcv_path(d);
        // Unique: a retried send may overlap one still being received.
        let tmp = path.with_extension(format!("{:016x}.tmp", rand::random::<u64>()));
        let f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| SnapError::io(&tmp, e))?;
        Ok(Receiving {
            file: Some(f),
            tmp,
            path,
            crc: Crc::new(),
            size: 0,
            chunks: 0,
            desc: d.clone(),
            shared: self.shared.clone(),
            started: Instant::now(),
        })
    }
}

/// Counts a refused snapshot file and makes its error.
pub fn refused(reason: &'static str, what: String) -> SnapError {
    metrics::SNAPSHOTS_REFUSED
        .with_label_values(&[reason])
        .inc();
    SnapError::Refused(reason, what)
}

/// A snapshot file being received; removed unless [`Receiving::finish`] succeeds.
/// Everything is bounded by what arrives and by the descriptor (itself under
/// the cap): nothing is allocated from a claimed size.
pub struct Receiving {
    file: Option<tokio::fs::File>,
    tmp: PathBuf,
    path: PathBuf,
    crc: Crc,
    size: u64,
    chunks: u64,
    desc: SnapshotDescriptor,
    shared: Arc<Shared>,
    started: Instant,
}

impl Receiving {
    /// One chunk's data (the first chunk's too, usually empty).
    pub async fn write(&mut self, b: &[u8]) -> Result<(), SnapError> {
        use tokio::io::AsyncWriteExt;
        self.chunks += 1;
        if b.len() > CHUNK_SIZE || self.chunks > max_chunks(self.desc.size) {
            // Tiny or empty chunks would let a sender hold a receive slot
            // far longer than the file needs.
            return Err(refused(
                "chunk",
                format!(
                    "chunk {} of {} bytes (at most {} chunks of {CHUNK_SIZE})",
                    self.chunks,
                    b.len(),
                    max_chunks(self.desc.size)
                ),
            ));
        }
        self.size += b.len() as u64;
        if self.size > self.desc.size {
            return Err(refused(
                "mismatch",
                format!("more than the {} bytes announced", self.desc.size),
            ));
        }
        self.crc.update(b);
        let f = self.file.as_mut().ok_or(SnapError::Stopped)?;
        f.write_all(b)
            .await
            .map_err(|e| SnapError::io(&self.tmp, e))
    }

    /// Checks size and checksum, makes the file durable under its final name.
    pub async fn finish(mut self) -> Result<u64, SnapError> {
        if self.size != self.desc.size || self.crc.finish() != self.desc.crc32c {
            return Err(refused(
                "mismatch",
                format!(
                    "received {} bytes with crc32c {:08x}, expected {} bytes with {:08x}",
                    self.size,
                    self.crc.finish(),
                    self.desc.size,
                    self.desc.crc32c
                ),
            ));
        }
        let f = self.file.take().ok_or(SnapError::Stopped)?;
        f.sync_all()
            .await
            .map_err(|e| SnapError::io(&self.tmp, e))?;
        drop(f);
        tokio::fs::rename(&self.tmp, &self.path)
            .await
            .map_err(|e| SnapError::io(&self.path, e))?;
        lock(&self.shared.received).insert(self.path.clone(), self.desc.clone());
        metrics::SNAPSHOT_DURATION
            .with_label_values(&["receive"])
            .observe(self.started.elapsed().as_secs_f64());
        Ok(self.size)
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Not finished: nothing of it may be applied.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn gen_loop(engine: Engine, dir: PathBuf, shared: Arc<Shared>, rx: Receiver<GenTask>) {
    let mut last_gc = Instant::now();
    loop {
        let task = match rx.recv_timeout(GC_INTERVAL) {
            Ok(t) => Some(t),
            Err(crossbeam::channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam::channel::RecvTimeoutError::Disconnected) => return,
        };
        if last_gc.elapsed() >= GC_INTERVAL {
            last_gc = Instant::now();
            gc(&dir, &shared);
        }
        let Some(task) = task else {
            continue;
        };
        let started = Instant::now();
        match generate(&engine, &dir, task.region_id) {
            Ok((desc, conf_state)) => {
                let secs = started.elapsed().as_secs_f64();
                metrics::SNAPSHOTS_GENERATED.inc();
                metrics::SNAPSHOT_BYTES
                    .with_label_values(&["generated"])
                    .inc_by(desc.size);
                metrics::SNAPSHOT_DURATION
                    .with_label_values(&["generate"])
                    .observe(secs);
                tracing::info!(
                    region_id = task.region_id,
                    index = desc.index,
                    keys = desc.keys,
                    bytes = desc.size,
                    secs,
                    "generated snapshot"
                );
                let ready = GenState::Ready {
                    desc,
                    conf_state,
                    at: Instant::now(),
                };
                lock(&shared.generated).insert(task.region_id, ready);
            }
            Err(e) => {
                tracing::warn!(region_id = task.region_id, error = %e, "snapshot generation failed");
                lock(&shared.generated).remove(&task.region_id);
            }
        }
    }
}

/// Deletes generated files older than [`SNAP_TTL`] (a region this store no
/// longer leads, a follower long caught up) and received or partial files
/// that old that no apply needs (raft did not take the snapshot).
fn gc(dir: &Path, shared: &Shared) {
    let mut gone = Vec::new();
    lock(&shared.generated).retain(|_, g| match g {
        GenState::Ready { desc, at, .. } if at.elapsed() >= SNAP_TTL => {
            gone.push(dir.join(name("gen", desc)));
            false
        }
        _ => true,
    });
    for p in gone {
        let _ = std::fs::remove_file(p);
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let applying = lock(&shared.applying).clone();
    for e in rd.flatten() {
        let p = e.path();
        let is_received = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("rcv_"));
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= SNAP_TTL);
        if is_received && old && !applying.contains(&p) {
            tracing::info!(path = %p.display(), "removing an unused received snapshot");
            let _ = std::fs::remove_file(&p);
            lock(&shared.received).remove(&p);
        }
    }
}

/// Writes the snapshot of `region_id` as of one RocksDB snapshot: its
/// applied index, the term of that entry, its conf state and region, and
/// every data pair of its range.
fn generate(
    engine: &Engine,
    dir: &Path,
    region_id: u64,
) -> Result<(SnapshotDescriptor, ConfState), SnapError> {
    let view = engine.view();
    if view
        .get_raft(&local::snapshot_apply_key(region_id))?
        .is_some()
    {
        return Err(SnapError::Corrupt(
            "the region is still applying a snapshot".into(),
        ));
    }
    let rs: RegionLocalState = view
        .get_raft_msg(&local::region_state_key(region_id))?
        .ok_or_else(|| SnapError::Corrupt("no region state".into()))?;
    let apply: ApplyState = view
        .get_raft_msg(&local::apply_state_key(region_id))?
        .unwrap_or_default();
    let raft: RaftLocalState = view
        .get_raft_msg(&local::raft_state_key(region_id))?
        .unwrap_or_default();
    let conf_state = ConfState::parse_from_bytes(&raft.conf_state)
        .map_err(|e| SnapError::Corrupt(format!("conf state: {e}")))?;
    let index = apply.applied_index;
    let term = if index == apply.truncated_index {
        apply.truncated_term
    } else {
        let e = view
            .get_raft(&local::raft_log_key(region_id, index))?
            .ok_or_else(|| SnapError::Corrupt(format!("no log entry at applied {index}")))?;
        Entry::parse_from_bytes(&e)
            .map_err(|e| SnapError::Corrupt(format!("log entry: {e}")))?
            .term
    };
    let region: Region = rs.region.unwrap_or_default();
    let mut desc = SnapshotDescriptor {
        region: Some(region.clone()),
        index,
        term,
        ..Default::default()
    };
    let path = dir.join(name("gen", &desc));
    let tmp = path.with_extension("tmp");
    let mut w = SnapWriter::create(&tmp)?;
    let mut err = None;
    for cf in DATA_CFS {
        view.for_each_data(cf, &region.start_key, &region.end_key, |k, v| {
            match w.put(cf, k, v) {
                Ok(()) => true,
                Err(e) => {
                    err = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = err.take() {
            let _ = std::fs::remove_file(&tmp);
            return Err(SnapError::io(&tmp, e));
        }
    }
    let (size, crc, keys) = w.finish().map_err(|e| SnapError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| SnapError::io(&path, e))?;
    desc.size = size;
    desc.crc32c = crc;
    desc.keys = keys;
    Ok((desc, conf_state))
}

fn apply_loop(
    engine: Engine,
    dir: PathBuf,
    shared: Arc<Shared>,
    router: Router,
    rx: Receiver<ApplyTask>,
) {
    for task in rx {
        let started = Instant::now();
        let desc = task.state.descriptor.clone().unwrap_or_default();
        let res = apply_file(&engine, &dir, task.region_id, &task.state, None);
        lock(&shared.applying).remove(&dir.join(name("rcv", &desc)));
        lock(&shared.received).remove(&dir.join(name("rcv", &desc)));
        let ok = match res {
            Ok(()) => {
                let secs = started.elapsed().as_secs_f64();
                metrics::SNAPSHOTS_APPLIED.inc();
                metrics::SNAPSHOT_BYTES
                    .with_label_values(&["applied"])
                    .inc_by(desc.size);
                metrics::SNAPSHOT_DURATION
                    .with_label_values(&["apply"])
                    .observe(secs);
                tracing::info!(
                    region_id = task.region_id,
                    index = desc.index,
                    keys = desc.keys,
                    secs,
                    "snapshot data applied"
                );
                true
            }
            Err(e) => {
                // The marker stays: the peer keeps refusing to serve and
                // the apply is tried again at the next start.
                tracing::error!(region_id = task.region_id, error = %e, "snapshot apply failed");
                false
            }
        };
        let _ = router.send(StoreMsg::SnapshotApplied {
            region_id: task.region_id,
            index: desc.index,
            ok,
        });
    }
}

/// Clears the old and new ranges and writes every pair of the received file
/// in batches of about [`APPLY_BATCH_BYTES`]; the last (synced) batch also
/// deletes the marker. Idempotent: a crash anywhere before that last batch
/// leaves the marker, and doing it all again gives the same result.
/// `stop_after`: give up after that many batches (tests of an interrupted apply).
fn apply_file(
    engine: &Engine,
    dir: &Path,
    region_id: u64,
    state: &SnapshotApplyState,
    stop_after: Option<usize>,
) -> Result<(), SnapError> {
    let desc = state
        .descriptor
        .as_ref()
        .ok_or_else(|| SnapError::Corrupt("apply state without descriptor".into()))?;
    let path = dir.join(name("rcv", desc));
    // Nothing is cleared for a file that is not the one described (it was
    // checked on receipt; a disk can still lose or flip bytes since).
    let sum = file::sum_of(&path)?;
    if sum != (desc.size, desc.crc32c) {
        return Err(SnapError::Corrupt(format!(
            "file {} is {} bytes with crc32c {:08x}, its descriptor says {} with {:08x}",
            path.display(),
            sum.0,
            sum.1,
            desc.size,
            desc.crc32c
        )));
    }
    let mut r = SnapReader::open(&path)?;
    let region = desc.region.clone().unwrap_or_default();
    let mut wb = engine.batch();
    if let Some(old) = &state.old_region {
        wb.delete_data_range(&old.start_key, &old.end_key)?;
    }
    wb.delete_data_range(&region.start_key, &region.end_key)?;
    // The clearing goes first on its own: from here until the last batch
    // the range is incomplete, and only the marker makes that safe.
    engine.write(std::mem::replace(&mut wb, engine.batch()), false)?;
    fail::fail_point!("metashard::snapshot_apply_data");
    let (mut bytes, mut batches) = (0usize, 0usize);
    while let Some(rec) = r.next_record()? {
        bytes += rec.key.len() + rec.value.len();
        wb.put_data(rec.cf, &rec.key, &rec.value);
        if bytes >= APPLY_BATCH_BYTES {
            engine.write(std::mem::replace(&mut wb, engine.batch()), false)?;
            bytes = 0;
            batches += 1;
            fail::fail_point!("metashard::snapshot_apply_data");
            if stop_after.is_some_and(|n| batches >= n) {
                return Err(SnapError::Stopped);
            }
        }
    }
    if r.sum() != (desc.size, desc.crc32c) {
        return Err(SnapError::Corrupt(format!(
            "file {} does not match its descriptor",
            path.display()
        )));
    }
    wb.delete_raft(&local::snapshot_apply_key(region_id));
    engine.write(wb, true)?;
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove applied snapshot file");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
