//! The MD5 lanes engine: one thread that hashes many bodies side by side in
//! the sixteen lanes of [`x16`] (decision 0051).
//!
//! A body registers once it has outgrown [`JOB_BYTES`] and from then on only
//! queues its chunks (shared `Bytes`, no copy). The engine lets work pile up
//! on purpose, because lanes are only cheap when full: it runs a pass when
//! [`TARGET_LANES`] bodies (or every open body, if fewer are open) have a job
//! ready or are finishing, when one holds more than [`CAP_BYTES`], or
//! [`MAX_WAIT`] after it last slept with anything queued. A pass hashes every whole block queued; it uses
//! the lanes while at least [`MIN_VECTOR_LANES`] bodies still have data and
//! hashes the rest one body at a time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::x16::{self, State16, LANES};
use crate::metrics;

/// A body's queued bytes make a job worth a lane from this size on.
pub const JOB_BYTES: usize = 256 * 1024;
/// Pass once this many bodies have a job ready.
pub const TARGET_LANES: usize = 12;
/// A body holding this much unhashed data forces a pass (bounds memory).
pub const CAP_BYTES: usize = 4 * 1024 * 1024;
/// Pass at the latest after this long with anything queued.
pub const MAX_WAIT: Duration = Duration::from_millis(4);
/// Below this many live lanes, one body at a time is cheaper: a run costs
/// the same whatever the number of live lanes.
pub const MIN_VECTOR_LANES: usize = 3;

const MD5_INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// What a finished body gets back: its state after every whole block, and
/// the bytes after the last whole block (fewer than 64).
struct Done {
    state: [u32; 4],
    tail: Vec<u8>,
}

struct Body {
    state: [u32; 4],
    /// Not yet hashed, in order; the first may be a partial block left over
    /// from the last pass.
    chunks: VecDeque<Bytes>,
    pending: usize,
    /// Set by `finish`: hash everything and answer here.
    finish: Option<oneshot::Sender<Done>>,
}

#[derive(Default)]
struct Queue {
    bodies: HashMap<u64, Body>,
    next_id: u64,
    /// The engine is asleep: `Some(true)` until a pass is due or the
    /// wait times out, `Some(false)` until anything is pushed.
    engine_waiting: Option<bool>,
    closed: bool,
}

impl Queue {
    /// Whether a pass is due now (see the module doc).
    fn due(&self) -> bool {
        let mut ready = 0;
        for b in self.bodies.values() {
            if b.pending >= CAP_BYTES {
                return true;
            }
            // A finishing body waits for company like any other job (at
            // most MAX_WAIT): passes run for one body are the costliest.
            if b.pending >= JOB_BYTES || b.finish.is_some() {
                ready += 1;
            }
        }
        ready > 0 && ready >= TARGET_LANES.min(self.bodies.len())
    }

    /// Whether a pass would have anything to do (or anyone to answer).
    fn anything_queued(&self) -> bool {
        self.bodies
            .values()
            .any(|b| b.pending >= 64 || b.finish.is_some())
    }
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves plain data behind; go on.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The engine; the thread stops when this is dropped.
pub struct Lanes {
    shared: Arc<Shared>,
}

/// One body's registration; dropping it without `finish` forgets the body.
pub struct LaneBody {
    shared: Arc<Shared>,
    id: u64,
    finished: bool,
}

/// The engine went away before answering (its thread panicked).
#[derive(Debug, thiserror::Error)]
#[error("the MD5 lanes engine stopped")]
pub struct EngineStopped;

impl Lanes {
    /// The engine, where the CPU has the lanes.
    pub fn start() -> Option<Lanes> {
        if !x16::available() {
            return None;
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("kura-md5-lanes".into())
            .spawn(move || run(&s))
            .ok()?;
        Some(Lanes { shared })
    }

    /// The process-wide engine (None where the CPU lacks the lanes).
    pub fn global() -> Option<&'static Lanes> {
        static GLOBAL: std::sync::OnceLock<Option<Lanes>> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(Lanes::start).as_ref()
    }

    /// Register a body that has hashed nothing yet.
    pub fn register(&self) -> LaneBody {
        let mut q = self.shared.lock();
        let id = q.next_id;
        q.next_id += 1;
        q.bodies.insert(
            id,
            Body {
                state: MD5_INIT,
                chunks: VecDeque::new(),
                pending: 0,
                finish: None,
            },
        );
        LaneBody {
            shared: self.shared.clone(),
            id,
            finished: false,
        }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

impl LaneBody {
    /// Queue the body's next bytes.
    pub fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        let mut q = self.shared.lock();
        if let Some(b) = q.bodies.get_mut(&self.id) {
            b.pending += chunk.len();
            b.chunks.push_back(chunk);
        }
        self.nudge(q);
    }

    /// The body's MD5 state after its last whole block, and the bytes after
    /// it; `finish_md5` turns them into the digest.
    async fn drain(mut self) -> Result<Done, EngineStopped> {
        let (tx, rx) = oneshot::channel();
        {
            let mut q = self.shared.lock();
            match q.bodies.get_mut(&self.id) {
                Some(b) => b.finish = Some(tx),
                None => return Err(EngineStopped),
            }
            self.finished = true;
            self.nudge(q);
        }
        rx.await.map_err(|_| EngineStopped)
    }

    /// The body's MD5, `len` bytes in all.
    pub async fn finish(self, len: u64) -> Result<[u8; 16], EngineStopped> {
        let done = self.drain().await?;
        Ok(finish_md5(done.state, &done.tail, len))
    }

    fn nudge(&self, mut q: MutexGuard<'_, Queue>) {
        let wake = match q.engine_waiting {
            Some(true) => q.due(),
            Some(false) => true,
            None => false,
        };
        if wake {
            q.engine_waiting = None;
            drop(q);
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for LaneBody {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.lock().bodies.remove(&self.id);
        }
    }
}

/// The digest from the state after the last whole block, the bytes after it
/// and the total length (RFC 1321 padding).
pub fn finish_md5(mut state: [u32; 4], tail: &[u8], len: u64) -> [u8; 16] {
    debug_assert!(tail.len() < 64);
    let mut last = [0u8; 128];
    last[..tail.len()].copy_from_slice(tail);
    last[tail.len()] = 0x80;
    let blocks = if tail.len() < 56 { 1 } else { 2 };
    last[blocks * 64 - 8..blocks * 64].copy_from_slice(&len.wrapping_mul(8).to_le_bytes());
    let (whole, _) = last[..blocks * 64].as_chunks::<64>();
    md5::block_api::compress(&mut state, whole);
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// One body's share of a pass, taken out of the queue.
struct Work {
    id: u64,
    state: [u32; 4],
    /// Whole blocks only, in order.
    runs: VecDeque<Bytes>,
    /// Bytes after the last whole block.
    tail: Bytes,
    finish: Option<oneshot::Sender<Done>>,
    /// Finishing or over the cap: everything is hashed in this pass.
    must_drain: bool,
}

impl Work {
    /// Cut a body's chunks into whole-block runs and a tail; a block that
    /// straddles two chunks is copied into a run of its own.
    fn take(id: u64, body: &mut Body) -> Work {
        let mut runs = VecDeque::new();
        let mut carry: Vec<u8> = Vec::new();
        for mut c in body.chunks.drain(..) {
            if !carry.is_empty() {
                let need = 64 - carry.len();
                let n = need.min(c.len());
                carry.extend_from_slice(&c.split_to(n));
                if carry.len() < 64 {
                    continue;
                }
                runs.push_back(Bytes::from(std::mem::take(&mut carry)));
            }
            let whole = c.len() / 64 * 64;
            if whole > 0 {
                runs.push_back(c.split_to(whole));
            }
            carry.extend_from_slice(&c);
        }
        let must_drain = body.finish.is_some() || body.pending >= CAP_BYTES;
        body.pending = 0;
        Work {
            id,
            state: body.state,
            runs,
            tail: Bytes::from(carry),
            finish: body.finish.take(),
            must_drain,
        }
    }
}

fn run(shared: &Shared) {
    loop {
        let mut work = {
            let mut q = shared.lock();
            loop {
                if q.closed {
                    return;
                }
                if q.due() {
                    break;
                }
                // With nothing queued there is nothing to time out for: sleep
                // until a push (which wakes an untimed wait at once).
                let timed = q.anything_queued();
                q.engine_waiting = Some(timed);
                let timed_out = if timed {
                    let (g, t) = shared
                        .wake
                        .wait_timeout(q, MAX_WAIT)
                        .unwrap_or_else(|p| p.into_inner());
                    q = g;
                    t.timed_out()
                } else {
                    q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                    false
                };
                q.engine_waiting = None;
                if timed_out && q.anything_queued() {
                    break;
                }
            }
            let mut work = Vec::new();
            for (id, b) in q.bodies.iter_mut() {
                if b.finish.is_some() || b.pending >= 64 {
                    work.push(Work::take(*id, b));
                }
            }
            work
        };
        hash(&mut work);
        let mut q = shared.lock();
        for w in work {
            match w.finish {
                Some(tx) => {
                    debug_assert!(w.runs.is_empty(), "a finishing body is drained");
                    q.bodies.remove(&w.id);
                    let _ = tx.send(Done {
                        state: w.state,
                        tail: w.tail.to_vec(),
                    });
                }
                None => {
                    // The body may have been dropped meanwhile.
                    if let Some(b) = q.bodies.get_mut(&w.id) {
                        b.state = w.state;
                        // Unhashed bytes go back in front of what was
                        // pushed meanwhile, in order.
                        for c in std::iter::once(w.tail).chain(w.runs.into_iter().rev()) {
                            if !c.is_empty() {
                                b.pending += c.len();
                                b.chunks.push_front(c);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Hash the work of a pass. While at least half the lanes (or all items,
/// if fewer) stay live, everything goes through the lanes; after that the
/// lanes go on only while a body that must be drained (finishing, or over
/// the cap) is in them, the others riding along for free. Bodies that need
/// not be drained keep what is left for the next pass, where they fill
/// lanes instead of idling beside them. What must be drained with too few
/// lanes live, or all work of a pass with too few bodies, is hashed one
/// body at a time.
fn hash(work: &mut [Work]) {
    let mut waiting: VecDeque<usize> = (0..work.len())
        .filter(|&i| !work[i].runs.is_empty())
        .collect();
    if waiting.len() >= MIN_VECTOR_LANES {
        let keep_going = (LANES / 2).min(waiting.len());
        vector(work, &mut waiting, keep_going);
        waiting.retain(|&i| work[i].must_drain);
    }
    for i in waiting {
        scalar(&mut work[i]);
    }
}

fn scalar(w: &mut Work) {
    for run in w.runs.drain(..) {
        let (blocks, _) = run.as_chunks::<64>();
        md5::block_api::compress(&mut w.state, blocks);
        metrics::add_md5_bytes("single", run.len() as u64);
    }
}

/// Hash in the lanes while at least `min_live` lanes have data, or at least
/// [`MIN_VECTOR_LANES`] do and one of them must be drained; items still
/// waiting, or put back with their progress, are left in `waiting`.
fn vector(work: &mut [Work], waiting: &mut VecDeque<usize>, min_live: usize) {
    // Per lane: the item it hashes, its current run and the offset in it.
    let mut lanes: [Option<(usize, Bytes, usize)>; LANES] = std::array::from_fn(|_| None);
    let mut state = State16::default();
    loop {
        for (l, lane) in lanes.iter_mut().enumerate() {
            if lane.is_some() {
                continue;
            }
            // Items in `waiting` have at least one run.
            while let Some(i) = waiting.pop_front() {
                if let Some(run) = work[i].runs.pop_front() {
                    state.set(l, work[i].state);
                    *lane = Some((i, run, 0));
                    break;
                }
            }
        }
        let live = lanes.iter().filter(|l| l.is_some()).count();
        let draining = lanes.iter().flatten().any(|(i, _, _)| work[*i].must_drain);
        if live < MIN_VECTOR_LANES || (live < min_live && !draining) {
            // Hand the rest back, each item with its progress.
            for (l, lane) in lanes.iter_mut().enumerate() {
                if let Some((i, run, off)) = lane.take() {
                    work[i].state = state.get(l);
                    work[i].runs.push_front(run.slice(off..));
                    waiting.push_front(i);
                }
            }
            return;
        }
        let mut ptrs = [x16::IDLE_BLOCK.as_ptr(); LANES];
        let mut is_live = [false; LANES];
        let mut blocks = usize::MAX;
        for (l, lane) in lanes.iter().enumerate() {
            if let Some((_, run, off)) = lane {
                ptrs[l] = run[*off..].as_ptr();
                is_live[l] = true;
                blocks = blocks.min((run.len() - off) / 64);
            }
        }
        // SAFETY: `Lanes::start` checked the CPU; each live pointer has at
        // least `blocks` whole blocks after it (runs are whole blocks), idle
        // lanes point at the 64-byte idle block.
        unsafe { x16::compress_run(&mut state, &ptrs, &is_live, blocks) };
        metrics::add_md5_bytes("lanes", (live * blocks * 64) as u64);
        metrics::add_md5_lane_slots((LANES * blocks) as u64);
        for (l, lane) in lanes.iter_mut().enumerate() {
            let Some((i, run, off)) = lane else { continue };
            *off += blocks * 64;
            if *off < run.len() {
                continue;
            }
            let i = *i;
            match work[i].runs.pop_front() {
                Some(next) => *lane = Some((i, next, 0)),
                None => {
                    work[i].state = state.get(l);
                    *lane = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest;

    fn data(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    fn reference(d: &[u8]) -> [u8; 16] {
        md5::Md5::digest(d).into()
    }

    #[test]
    fn finish_md5_pads_like_rfc_1321() {
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000] {
            let d = data(len, 7);
            let whole = len / 64 * 64;
            let mut state = MD5_INIT;
            md5::block_api::compress(&mut state, d[..whole].as_chunks::<64>().0);
            assert_eq!(
                finish_md5(state, &d[whole..], len as u64),
                reference(&d),
                "len {len}"
            );
        }
    }

    #[test]
    fn the_lanes_hash_every_body_like_the_reference() {
        let Some(lanes) = Lanes::start() else {
            eprintln!("no AVX-512 here: the lanes engine is off, bodies hash one by one");
            return;
        };
        // Bodies of unequal sizes and odd chunkings, so lanes retire at
        // different blocks, blocks straddle chunks and passes split bodies.
        let bodies: Vec<Vec<u8>> = (0..40)
            .map(|i| data(i * 37_123 + (i % 3) * 65_536 + 5, i as u32))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for (i, d) in bodies.iter().enumerate() {
                let body = lanes.register();
                let d = Bytes::from(d.clone());
                let chunk = [61, 63, 64, 1000, 65_536, 4099][i % 6];
                tasks.push(async move {
                    let mut off = 0;
                    while off < d.len() {
                        let n = chunk.min(d.len() - off);
                        body.push(d.slice(off..off + n));
                        off += n;
                        tokio::task::yield_now().await;
                    }
                    body.finish(d.len() as u64).await.unwrap()
                });
            }
            let lanes_before = metrics::md5_bytes("lanes");
            let got = futures::future::join_all(tasks).await;
            assert!(
                metrics::md5_bytes("lanes") > lanes_before,
                "forty bodies at once go through the lanes"
            );
            for (i, g) in got.into_iter().enumerate() {
                assert_eq!(g, reference(&bodies[i]), "body {i}");
            }
        });
    }

    #[test]
    fn the_kernel_matches_the_reference_lane_by_lane() {
        if !x16::available() {
            return;
        }
        let blocks = 9;
        let rows: Vec<Vec<u8>> = (0..LANES).map(|l| data(blocks * 64, l as u32)).collect();
        let mut state = State16::default();
        for l in 0..LANES {
            state.set(l, MD5_INIT);
        }
        let ptrs: [*const u8; LANES] = std::array::from_fn(|l| rows[l].as_ptr());
        let mut live = [true; LANES];
        live[5] = false;
        // SAFETY: checked above; each row holds `blocks` blocks.
        unsafe { x16::compress_run(&mut state, &ptrs, &live, blocks) };
        for l in 0..LANES {
            let mut want = MD5_INIT;
            let n = if live[l] { blocks } else { 0 };
            md5::block_api::compress(&mut want, rows[l][..n * 64].as_chunks::<64>().0);
            if live[l] {
                assert_eq!(state.get(l), want, "lane {l}");
            }
        }
    }

    #[test]
    fn a_dropped_body_is_forgotten() {
        let Some(lanes) = Lanes::start() else { return };
        let body = lanes.register();
        body.push(Bytes::from(data(JOB_BYTES * 2, 1)));
        drop(body);
        assert!(lanes.shared.lock().bodies.is_empty());
    }
}
