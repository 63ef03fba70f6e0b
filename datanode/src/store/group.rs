//! Group commit: small records (whole fragments that fit in memory, tombstones) share one
//! active segment and one fdatasync per batch (decision 0039).
//!
//! Leader/follower, no extra thread: a committer queues its record and waits. Whoever
//! finds no leader becomes it, takes the queue (up to `MAX_BATCH_BYTES`), encodes the
//! records for the shared segment (the header CRC is salted with the segment number, so
//! bytes are laid out only now) into an aligned staging buffer padded to 4 KiB (decision
//! 0042: records inside a batch follow each other, only the batch's end is padded), writes
//! them with one `pwrite` (O_DIRECT unless off; a batch beyond the 4 MiB staging buffer
//! takes a few), fdatasyncs once, applies
//! every record to the index, and only then hands each waiter its result. Records that
//! queued meanwhile form the next batch. Any failure fails every waiter of the batch and
//! acknowledges none; a failed fsync seals the segment (the page cache can no longer be
//! trusted).
//!
//! Tasks wait without a thread (decision 0059): `group_commit_async` queues a record
//! with a oneshot for its result. When nobody leads, a blocking thread is started that
//! leads until the queue is empty (`lead_queued`); the last committing thread to leave a
//! non-empty queue without a leader starts one too, so a task's record never waits for a
//! commit that is not coming.
//!
//! Zeros ahead (decision 0058): a small batch (up to `FILL_MAX_BATCH`) that grows the
//! file also writes `FILL_AHEAD` zeros past its end, made durable by the same fdatasync,
//! and the next batches overwrite them. An fdatasync after writing into blocks that are
//! allocated, written and inside the file's size has no metadata to flush; one after
//! growing the file also writes the inode, block bitmap and group descriptor, one
//! synchronous I/O each (ext4; measured on this machine kind:
//! a 16 KiB record plus fdatasync took 113–120 µs of CPU and 250–313 µs growing the file,
//! 52–64 µs and 130–175 µs overwriting; writing the zeros costs 0.07 ms of CPU per MiB).
//! Bigger batches do not: every byte would be written twice, and under 1 MiB PUTs (256 KiB
//! fragments) that doubled a disk-bound write load (fdatasync 1.08 → 1.44 ms on average).
//! Recovery drops an all-zero tail silently; rolling to a new segment truncates it.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use kura_proto::datanode::FragmentId;

use super::direct::{self, AlignedBuf, StagedWriter};
use super::format::*;
use super::index::Index;
use super::{lock, ActiveSegment, Store};
use crate::error::StoreError;
use crate::metrics;

/// A leader writes at most this much in one batch (always at least one record).
const MAX_BATCH_BYTES: u64 = 16 << 20;

/// Zeros written past a batch that grew the shared segment (module doc).
pub(super) const FILL_AHEAD: u64 = 2 << 20;

/// Only a batch up to this size writes zeros ahead (module doc).
const FILL_MAX_BATCH: u64 = 128 << 10;

/// Where a record landed.
pub(super) struct Placed {
    pub segment: u64,
    pub record_offset: u64,
    pub first_block_offset: u64,
    pub record_len: u64,
}

/// Applied to the index once the record is durable, before the segment can be sealed
/// (so compaction never plans a sealed segment whose records the index has not seen).
pub(super) type ApplyFn = Box<dyn FnOnce(&mut Index, &Placed) -> bool + Send>;

/// A complete record waiting for the shared segment.
pub(super) struct GroupRecord {
    pub kind: RecordKind,
    /// FragmentHeader (PUT) or FragmentId (tombstone), prost-encoded.
    pub meta: Vec<u8>,
    /// The record's blocks, in order (none for a tombstone).
    pub body: BufferedBlocks,
    pub block_count: u32,
    pub total_len: u64,
    pub seq: u64,
    pub blocks_crc: u32,
    pub apply: ApplyFn,
    /// A PUT commit holding `seq` in the index: ended with `abort_commit` on failure.
    pub put_commit: Option<FragmentId>,
}

/// A small record's blocks held in memory until its batch is written: each block's
/// header and its payload as received. The payloads are the `Bytes` the request
/// decoded (views into what h2 received, request-scoped as decision 0048 allows), so
/// the batch's staging buffer is the only copy a byte makes on its way to disk.
#[derive(Default)]
pub(super) struct BufferedBlocks {
    blocks: Vec<([u8; BLOCK_HEADER_LEN as usize], Bytes)>,
    len: usize,
}

impl BufferedBlocks {
    pub(super) fn push(&mut self, header: [u8; BLOCK_HEADER_LEN as usize], data: Bytes) {
        self.len += header.len() + data.len();
        self.blocks.push((header, data));
    }

    /// Encoded length: block headers and payloads.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The encoded bytes, in order, as slices.
    pub(super) fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.blocks.iter().flat_map(|(h, d)| [&h[..], &d[..]])
    }
}

impl GroupRecord {
    fn encoded_len(&self) -> u64 {
        (RECORD_PREFIX_LEN + self.meta.len() + 4 + self.body.len() + FOOTER_LEN) as u64
    }
}

pub(super) struct GroupCommit {
    state: Mutex<GroupState>,
    cv: Condvar,
    /// The shared active segment (None: create one at the next batch). Only the leader
    /// touches it, so the lock is never contended.
    active: Mutex<Option<ActiveSegment>>,
    /// The leader's staging buffer (taken while it holds `active`).
    staging: Mutex<Option<AlignedBuf>>,
    /// `FILL_AHEAD` zeros, aligned for O_DIRECT; made at the first fill.
    zeros: OnceLock<AlignedBuf>,
}

#[derive(Default)]
struct GroupState {
    queue: Vec<(u64, GroupRecord)>,
    leader: bool,
    next_ticket: u64,
    /// Results for threads waiting in `group_commit`.
    done: HashMap<u64, Result<bool, StoreError>>,
    /// Tickets whose waiter is a task (`group_commit_async`), answered here.
    replies: HashMap<u64, Reply>,
    /// Threads waiting in `group_commit` (told of each finished batch).
    threads_waiting: usize,
    /// A thread was spawned to lead (`lead_queued`) and has not started yet.
    lead_spawned: bool,
}

/// How a task waiting on `group_commit_async` gets its result.
type Reply = tokio::sync::oneshot::Sender<Result<bool, StoreError>>;

/// A ticket's result, to a waiting task or to the threads' `done` map.
/// Replies are sent by the caller once the state lock is released.
fn settle(
    st: &mut GroupState,
    ticket: u64,
    result: Result<bool, StoreError>,
    replies: &mut Vec<(Reply, Result<bool, StoreError>)>,
) {
    match st.replies.remove(&ticket) {
        Some(reply) => replies.push((reply, result)),
        None => {
            st.done.insert(ticket, result);
        }
    }
}

/// Takes the next batch off the queue: up to `MAX_BATCH_BYTES`, always one record.
fn take_batch(st: &mut GroupState) -> Vec<(u64, GroupRecord)> {
    let mut bytes = 0;
    let n = st
        .queue
        .iter()
        .take_while(|(_, r)| {
            let first = bytes == 0;
            bytes += r.encoded_len();
            first || bytes <= MAX_BATCH_BYTES
        })
        .count();
    st.queue.drain(..n).collect()
}

impl GroupCommit {
    pub(super) fn new() -> Self {
        GroupCommit {
            state: Mutex::new(GroupState::default()),
            cv: Condvar::new(),
            active: Mutex::new(None),
            staging: Mutex::new(None),
            zeros: OnceLock::new(),
        }
    }

    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        lock(&self.state).queue.len()
    }

    #[cfg(test)]
    pub(super) fn active_segment(&self) -> Option<u64> {
        lock(&self.active).as_ref().map(|a| a.seg.id)
    }
}

/// Each waiter of a failed batch gets its own copy of the batch's error.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Io { context, source } => StoreError::Io {
            context: context.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Full(m) => StoreError::Full(m.clone()),
        StoreError::InvalidArgument(m) => StoreError::InvalidArgument(m.clone()),
        StoreError::Identity(m) => StoreError::Identity(m.clone()),
    }
}

/// Fails a leader's batch if it unwinds, so its waiters never hang on a lost result,
/// and hands what is queued behind it to a new leader when no thread is left to
/// take it (tasks' records would otherwise wait for the next commit).
struct LeaderGuard<'a> {
    store: &'a Store,
    tickets: Vec<u64>,
    armed: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        let group = &self.store.group;
        let mut replies = Vec::new();
        let mut st = lock(&group.state);
        if self.armed {
            for &t in &self.tickets {
                let failed = Err(StoreError::io(
                    "group commit",
                    io::Error::other("the committing thread panicked"),
                ));
                settle(&mut st, t, failed, &mut replies);
            }
        }
        st.leader = false;
        if st.threads_waiting > 0 {
            group.cv.notify_all();
        } else if self.armed && !st.queue.is_empty() {
            self.store.spawn_leader(&mut st);
        }
        drop(st);
        for (reply, r) in replies {
            let _ = reply.send(r);
        }
    }
}

impl Store {
    /// Commits `rec` through the shared segment; returns what its `apply` returned, once
    /// the record is durable and applied. Blocks: the caller waits, or leads batches.
    pub(super) fn group_commit(&self, rec: GroupRecord) -> Result<bool, StoreError> {
        let g = &self.group;
        let mut st = lock(&g.state);
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push((ticket, rec));
        st.threads_waiting += 1;
        loop {
            if let Some(r) = st.done.remove(&ticket) {
                st.threads_waiting -= 1;
                // The last thread out leaves no record behind without a leader:
                // those of waiting tasks would wait for the next commit otherwise.
                if !st.leader && !st.queue.is_empty() && st.threads_waiting == 0 {
                    self.spawn_leader(&mut st);
                }
                return r;
            }
            if !st.leader {
                st.leader = true;
                let batch = take_batch(&mut st);
                drop(st);
                self.run_batch(batch);
                st = lock(&g.state);
                continue;
            }
            st = g.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Queues `rec` for the shared segment without blocking: the receiver gets what
    /// its `apply` returned once the record is durable and applied. Batches are led by
    /// a blocking thread, so a task waits without holding one (decision 0059).
    pub(super) fn group_commit_async(
        &self,
        rec: GroupRecord,
    ) -> tokio::sync::oneshot::Receiver<Result<bool, StoreError>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let mut st = lock(&self.group.state);
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push((ticket, rec));
        st.replies.insert(ticket, reply);
        if !st.leader {
            self.spawn_leader(&mut st);
        }
        answer
    }

    /// Starts a thread that leads the queued batches, unless one is starting: a
    /// blocking thread of the runtime, or a thread of its own outside one (a caller
    /// that is not a task of it, e.g. in tests).
    fn spawn_leader(&self, st: &mut GroupState) {
        if st.lead_spawned {
            return;
        }
        let Some(store) = self.me.upgrade() else {
            return; // the store is being dropped: nobody is left to wait
        };
        st.lead_spawned = true;
        let lead = move || store.lead_queued();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(lead)),
            Err(_) => drop(std::thread::spawn(lead)),
        }
    }

    /// Leads batches on this thread until the queue is empty or another leader took over.
    fn lead_queued(&self) {
        lock(&self.group.state).lead_spawned = false;
        loop {
            let mut st = lock(&self.group.state);
            if st.leader || st.queue.is_empty() {
                return;
            }
            st.leader = true;
            let batch = take_batch(&mut st);
            drop(st);
            self.run_batch(batch);
        }
    }

    /// Commits one batch as its leader and settles every ticket of it; leadership
    /// ends with it (also if it unwinds: then every ticket fails).
    fn run_batch(&self, batch: Vec<(u64, GroupRecord)>) {
        let mut guard = LeaderGuard {
            store: self,
            tickets: batch.iter().map(|(t, _)| *t).collect(),
            armed: true,
        };
        let results = self.commit_batch(batch);
        guard.armed = false;
        let mut replies = Vec::new();
        let mut st = lock(&self.group.state);
        for (t, r) in results {
            settle(&mut st, t, r, &mut replies);
        }
        drop(st);
        drop(guard); // clears `leader`, wakes waiting threads
        for (reply, r) in replies {
            let _ = reply.send(r);
        }
    }

    /// Writes, syncs and applies one batch. Returns each ticket's result.
    fn commit_batch(&self, batch: Vec<(u64, GroupRecord)>) -> Vec<(u64, Result<bool, StoreError>)> {
        let mut slot = lock(&self.group.active);
        if let Some(a) = slot.take() {
            // Full, or sealed by a failure outside this path: roll to a new segment.
            if a.len >= self.opts.segment_size || a.seg.sealed.load(Ordering::Acquire) {
                self.roll(&a);
            } else {
                *slot = Some(a);
            }
        }
        let mut a = match slot.take() {
            Some(a) => a,
            None => match self.create_segment() {
                Ok(a) => a,
                Err(e) => return self.fail_batch(batch, &e, None),
            },
        };
        let start = a.len;
        let salt = self.salt(a.seg.id);
        let buf = lock(&self.group.staging)
            .take()
            .unwrap_or_else(|| AlignedBuf::new(direct::GROUP_STAGING_LEN));
        let mut w = StagedWriter::new(buf, start);
        let mut placed = Vec::with_capacity(batch.len());
        let t = Instant::now();
        let mut write = || -> io::Result<u64> {
            for (_, r) in &batch {
                let record_offset = w.pos();
                let (hdr, header_crc) = encode_record_header(salt, r.kind, &r.meta);
                w.push(a.seg.writer(), &hdr)?;
                let first_block_offset = w.pos();
                for part in r.body.slices() {
                    w.push(a.seg.writer(), part)?;
                }
                let footer = Footer {
                    block_count: r.block_count,
                    total_len: r.total_len,
                    seq: r.seq,
                    blocks_crc: r.blocks_crc,
                };
                w.push(a.seg.writer(), &footer.encode(header_crc))?;
                placed.push(Placed {
                    segment: a.seg.id,
                    record_offset,
                    first_block_offset,
                    record_len: w.pos() - record_offset,
                });
            }
            let end = w.finish(a.seg.writer())?;
            // The padding belongs to the batch's last record (dead with it).
            if let Some(last) = placed.last_mut() {
                last.record_len = end - last.record_offset;
            }
            Ok(end)
        };
        let written = write();
        *lock(&self.group.staging) = Some(w.into_buf());
        let end = match written {
            Ok(end) => end,
            Err(e) => {
                self.note_write_error(&e);
                let e = StoreError::io(format!("writing segment {}", a.seg.id), e);
                // Part of the batch may be on disk: cut it away, or seal if that fails.
                let seg = a.seg.id;
                return match a.seg.file.set_len(start) {
                    Ok(()) => {
                        self.used_bytes
                            .fetch_sub(a.filled.max(start) - start, Ordering::Relaxed);
                        a.filled = start;
                        *slot = Some(a);
                        self.fail_batch(batch, &e, None)
                    }
                    Err(te) => {
                        tracing::error!(segment = seg, error = %te, "cannot truncate a failed batch; sealing the segment");
                        self.seal(&a);
                        self.fail_batch(batch, &e, Some(seg))
                    }
                };
            }
        };
        let was = a.filled.max(start);
        a.filled = self.fill_ahead(&a, was, start, end);
        // Counted before the sync: a failed sync seals the segment with these bytes.
        self.used_bytes.fetch_add(a.filled - was, Ordering::Relaxed);
        if batch.iter().any(|(_, r)| r.put_commit.is_some()) {
            // Footers written, not fsynced, not acknowledged (see PutWriter::commit).
            fail::fail_point!("datanode::put_before_sync");
        }
        if let Err(e) = self.sync_batch(&a, batch.len()) {
            // The page cache can no longer be trusted: seal, fail everyone. The records
            // may still appear after a restart, unacknowledged (orphan GC's case).
            tracing::error!(segment = a.seg.id, records = batch.len(), error = %e, "group fsync failed; sealing the segment");
            let seg = a.seg.id;
            self.seal(&a);
            return self.fail_batch(batch, &e, Some(seg));
        }
        a.len = end;
        self.stats.group_batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .group_records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        metrics::GROUP_COMMIT_BATCH_SIZE.observe(batch.len() as f64);
        metrics::GROUP_COMMIT_SECONDS.observe(t.elapsed().as_secs_f64());
        let results: Vec<_> = {
            let mut ix = lock(&self.index);
            batch
                .into_iter()
                .zip(&placed)
                .map(|((ticket, r), p)| (ticket, Ok((r.apply)(&mut ix, p))))
                .collect()
        };
        // Applied first, sealed second: a sealed segment's records are all in the index.
        if a.len >= self.opts.segment_size {
            self.roll(&a);
        } else {
            *slot = Some(a);
        }
        results
    }

    /// fdatasync for a batch (test builds can delay it or make it fail).
    fn sync_batch(&self, a: &ActiveSegment, records: usize) -> Result<(), StoreError> {
        #[cfg(test)]
        {
            let min = self.hooks.fail_sync_min_batch.load(Ordering::Relaxed);
            if min > 0 && records >= min {
                std::thread::sleep(std::time::Duration::from_millis(
                    self.hooks.sync_delay_ms.load(Ordering::Relaxed),
                ));
                return Err(StoreError::io(
                    format!("fsync segment {}", a.seg.id),
                    io::Error::other("injected fsync failure"),
                ));
            }
            if self.hooks.panic_in_sync.swap(false, Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(
                    self.hooks.sync_delay_ms.load(Ordering::Relaxed),
                ));
                panic!("injected panic in a group fsync");
            }
        }
        let _ = records;
        self.timed_sync(&a.seg)
    }

    fn seal(&self, a: &ActiveSegment) {
        a.seg.sealed.store(true, Ordering::Release);
        tracing::debug!(segment = a.seg.id, len = a.len, "shared segment sealed");
    }

    /// Seals the segment group commit is done with, first cutting the zeros written
    /// ahead (nothing reads there; a failed cut leaves them to recovery).
    fn roll(&self, a: &ActiveSegment) {
        if a.filled > a.len {
            match a.seg.file.set_len(a.len) {
                Ok(()) => {
                    self.used_bytes
                        .fetch_sub(a.filled - a.len, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(segment = a.seg.id, error = %e, "cannot cut the zeros after a full segment")
                }
            }
        }
        self.seal(a);
    }

    /// After a batch wrote `[start, end)` into a file `was` long: when a small batch
    /// grew the file, writes `FILL_AHEAD` zeros after `end` (module doc). Returns the
    /// file's length. Best effort: a failed write (a full disk) is cut away and the
    /// records stand as they are.
    fn fill_ahead(&self, a: &ActiveSegment, was: u64, start: u64, end: u64) -> u64 {
        if end <= was {
            return was;
        }
        if end >= self.opts.segment_size || end - start > FILL_MAX_BATCH {
            // The segment rolls after this batch; or big batches, whose one fdatasync
            // covers enough bytes that writing each byte twice would cost more.
            return end;
        }
        let zeros = self
            .group
            .zeros
            .get_or_init(|| AlignedBuf::zeroed(FILL_AHEAD as usize));
        match a.seg.writer().write_all_at(zeros.as_slice(), end) {
            Ok(()) => end + FILL_AHEAD,
            Err(e) => {
                tracing::debug!(segment = a.seg.id, error = %e, "no zeros written ahead");
                match a.seg.file.set_len(end) {
                    Ok(()) => end,
                    // Part of the zeros may stand: the file is as long as it is.
                    Err(_) => a.seg.file.metadata().map_or(end, |m| m.len().max(end)),
                }
            }
        }
    }

    /// Fails every record of a batch. `written`: the segment the records may be in.
    fn fail_batch(
        &self,
        batch: Vec<(u64, GroupRecord)>,
        e: &StoreError,
        written: Option<u64>,
    ) -> Vec<(u64, Result<bool, StoreError>)> {
        let mut ix = lock(&self.index);
        batch
            .into_iter()
            .map(|(ticket, r)| {
                if let Some(id) = &r.put_commit {
                    ix.abort_commit(r.seq, written.map(|seg| (id, seg)));
                }
                (ticket, Err(copy_error(e)))
            })
            .collect()
    }
}
