//! The MD5 lanes engine: one thread that hashes many bodies side by side in
//! the sixteen lanes of [`x16`] (decision 0051).
//!
//! A body registers once it has outgrown [`JOB_BYTES`] and from then on only
//! queues its chunks (shared `Bytes`, no copy). When it has ended it is
//! *sealed*; its digest is *wanted* later, when its PUT needs the ETag (after
//! its fragments are durable): in between, the body is one more job that
//! fills lanes beside others, and nobody waits on it.
//!
//! The engine lets work pile up on purpose, because lanes are only cheap when
//! full: it runs a pass when a digest is wanted, when [`TARGET_LANES`] bodies
//! have a job ready or are sealed, when one holds more than [`CAP_BYTES`], or
//! when all together hold more than [`TOTAL_CAP_BYTES`] (that pass drains all).
//! Whatever else is queued rides along. A pass uses the lanes while at least
//! [`min_vector_lanes`] bodies still have data, and hashes one body at a time
//! only what must be drained (a wanted body, one over the cap) or all of a
//! pass too small for the lanes. Under 16 concurrent 1 MiB PUTs, passing as
//! soon as every open body had a job (and 4 ms after one finished) left 25%
//! of the bytes to one-at-a-time passes; waiting for the digest to be wanted
//! left 5% (decision 0051).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

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
/// All bodies together holding this much unhashed data force a pass that
/// drains them all: many slow or waiting bodies, each under the other
/// triggers, must not pin unbounded memory.
pub const TOTAL_CAP_BYTES: usize = 64 * 1024 * 1024;
/// Below this many live lanes, one body at a time is cheaper: a run costs
/// the same whatever the number of live lanes. `kura bench ec` prints the
/// kernel's rate by live lanes: with AVX-512 one live lane hashes as fast as
/// `md-5` on one body (538 vs 531 MiB/s on our 2-vCPU Xeon), so two already
/// win; with AVX2 one lane runs at about half a scalar stream (decision 0051
/// addendum), so it takes three.
pub fn min_vector_lanes() -> usize {
    match x16::kernel() {
        Some(x16::Kernel::Avx512) => 2,
        _ => 3,
    }
}

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
    /// Set when sealed: the body is complete; answer here once all of it is hashed.
    finish: Option<oneshot::Sender<Done>>,
    /// Its digest is wanted: hash everything in the next pass.
    wanted: bool,
}

#[derive(Default)]
struct Queue {
    bodies: HashMap<u64, Body>,
    next_id: u64,
    /// The engine sleeps until a pass is due.
    engine_asleep: bool,
    closed: bool,
}

impl Queue {
    /// Whether a pass is due now (see the module doc).
    fn due(&self) -> bool {
        if self.over_total_cap() {
            return true;
        }
        let mut ready = 0;
        for b in self.bodies.values() {
            if b.pending >= CAP_BYTES || b.wanted {
                return true;
            }
            // A sealed body is a job whatever its size.
            if b.pending >= JOB_BYTES || b.finish.is_some() {
                ready += 1;
            }
        }
        ready >= TARGET_LANES
    }

    /// Whether all bodies together hold [`TOTAL_CAP_BYTES`] unhashed.
    fn over_total_cap(&self) -> bool {
        self.bodies.values().map(|b| b.pending).sum::<usize>() >= TOTAL_CAP_BYTES
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

/// One body's registration; dropping it without `seal` forgets the body.
pub struct LaneBody {
    shared: Arc<Shared>,
    id: u64,
    sealed: bool,
}

/// A body that has ended, its digest not wanted yet; dropping it forgets
/// the body.
pub struct SealedBody {
    shared: Arc<Shared>,
    id: u64,
    answer: oneshot::Receiver<Done>,
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
                wanted: false,
            },
        );
        LaneBody {
            shared: self.shared.clone(),
            id,
            sealed: false,
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
        nudge(&self.shared, q);
    }

    /// The body has ended: the engine hashes the rest when lanes are
    /// cheap, until its digest is wanted.
    pub fn seal(mut self) -> SealedBody {
        let (tx, answer) = oneshot::channel();
        let mut q = self.shared.lock();
        if let Some(b) = q.bodies.get_mut(&self.id) {
            b.finish = Some(tx);
        }
        // Else the engine stopped: the answer's sender is dropped, and
        // `finish` says so.
        self.sealed = true;
        nudge(&self.shared, q);
        SealedBody {
            shared: self.shared.clone(),
            id: self.id,
            answer,
        }
    }

    /// The body's MD5, `len` bytes in all: seal, then wait.
    pub async fn finish(self, len: u64) -> Result<[u8; 16], EngineStopped> {
        self.seal().finish(len).await
    }
}

impl Drop for LaneBody {
    fn drop(&mut self) {
        if !self.sealed {
            self.shared.lock().bodies.remove(&self.id);
        }
    }
}

impl SealedBody {
    /// The body's MD5, `len` bytes in all: what is not hashed yet goes
    /// through the next pass.
    pub async fn finish(mut self, len: u64) -> Result<[u8; 16], EngineStopped> {
        {
            let mut q = self.shared.lock();
            // Absent: already answered (or the engine stopped).
            if let Some(b) = q.bodies.get_mut(&self.id) {
                b.wanted = true;
            }
            nudge(&self.shared, q);
        }
        let done = (&mut self.answer).await.map_err(|_| EngineStopped)?;
        Ok(finish_md5(done.state, &done.tail, len))
    }
}

impl Drop for SealedBody {
    fn drop(&mut self) {
        // Answered bodies are gone already; this forgets one whose PUT
        // failed before wanting its digest.
        self.shared.lock().bodies.remove(&self.id);
    }
}

/// Wakes the engine if it sleeps and what changed under `q` concerns it.
fn nudge(shared: &Shared, mut q: MutexGuard<'_, Queue>) {
    if q.engine_asleep && q.due() {
        q.engine_asleep = false;
        drop(q);
        shared.wake.notify_one();
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
    /// Wanted or over a cap: everything is hashed in this pass.
    must_drain: bool,
    /// Why, or why not, for the metric of bytes hashed one body at a time.
    reason: &'static str,
}

impl Work {
    /// Cut a body's chunks into whole-block runs and a tail; a block that
    /// straddles two chunks is copied into a run of its own.
    fn take(id: u64, body: &mut Body, drain_all: bool) -> Work {
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
        let reason = if body.wanted {
            "wanted"
        } else if body.pending >= CAP_BYTES {
            "cap"
        } else if drain_all {
            "total_cap"
        } else {
            "small_pass"
        };
        let must_drain = reason != "small_pass";
        body.pending = 0;
        Work {
            id,
            state: body.state,
            runs,
            tail: Bytes::from(carry),
            finish: body.finish.take(),
            must_drain,
            reason,
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
                q.engine_asleep = true;
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                q.engine_asleep = false;
            }
            let drain_all = q.over_total_cap();
            let mut work = Vec::new();
            for (id, b) in q.bodies.iter_mut() {
                if b.finish.is_some() || b.pending >= 64 {
                    work.push(Work::take(*id, b, drain_all));
                }
            }
            work
        };
        hash(&mut work);
        let mut q = shared.lock();
        for w in work {
            debug_assert!(!w.must_drain || w.runs.is_empty(), "drained");
            match w.finish {
                // Sealed and all hashed: answer (the body may be wanted
                // later; the answer waits in the channel).
                Some(tx) if w.runs.is_empty() => {
                    q.bodies.remove(&w.id);
                    let _ = tx.send(Done {
                        state: w.state,
                        tail: w.tail.to_vec(),
                    });
                }
                finish => {
                    // The body may have been dropped meanwhile.
                    if let Some(b) = q.bodies.get_mut(&w.id) {
                        b.state = w.state;
                        // (A body taken unsealed may have been sealed
                        // meanwhile: keep that sender.)
                        if finish.is_some() {
                            b.finish = finish;
                        }
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
/// lanes go on only while a body that must be drained (wanted, or over
/// a cap) is in them, the others riding along for free. Bodies that need
/// not be drained keep what is left for the next pass, where they fill
/// lanes instead of idling beside them. What must be drained with too few
/// lanes live, or all work of a pass with too few bodies, is hashed one
/// body at a time.
fn hash(work: &mut [Work]) {
    let mut waiting: VecDeque<usize> = (0..work.len())
        .filter(|&i| !work[i].runs.is_empty())
        .collect();
    let floor = min_vector_lanes();
    if waiting.len() >= floor {
        let keep_going = (LANES / 2).min(waiting.len());
        vector(work, &mut waiting, keep_going, floor);
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
        metrics::add_md5_single_bytes(w.reason, run.len() as u64);
    }
}

/// Hash in the lanes while at least `min_live` lanes have data, or at least
/// `floor` ([`min_vector_lanes`]) do and one of them must be drained; items
/// still waiting, or put back with their progress, are left in `waiting`.
fn vector(work: &mut [Work], waiting: &mut VecDeque<usize>, min_live: usize, floor: usize) {
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
        if live < floor || (live < min_live && !draining) {
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

    /// Polls `done` until it holds; fails after 20 s.
    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "not {what} in time");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
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
            eprintln!("no AVX-512 nor AVX2 here: the lanes engine is off, bodies hash one by one");
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

    /// The kernels this CPU runs: the best one and every one below it.
    fn kernels() -> Vec<x16::Kernel> {
        match x16::kernel() {
            Some(x16::Kernel::Avx512) => vec![x16::Kernel::Avx512, x16::Kernel::Avx2],
            Some(k) => vec![k],
            None => {
                eprintln!("no MD5 lanes kernel runs on this CPU");
                Vec::new()
            }
        }
    }

    #[test]
    fn the_kernel_matches_the_reference_lane_by_lane() {
        let blocks = 9;
        let rows: Vec<Vec<u8>> = (0..LANES).map(|l| data(blocks * 64, l as u32)).collect();
        let ptrs: [*const u8; LANES] = std::array::from_fn(|l| rows[l].as_ptr());
        for k in kernels() {
            let mut state = State16::default();
            for l in 0..LANES {
                state.set(l, MD5_INIT);
            }
            let mut live = [true; LANES];
            live[5] = false;
            // SAFETY: `k` runs here; each row holds `blocks` blocks.
            unsafe { x16::compress_run_with(k, &mut state, &ptrs, &live, blocks) };
            for l in 0..LANES {
                let mut want = MD5_INIT;
                let n = if live[l] { blocks } else { 0 };
                md5::block_api::compress(&mut want, rows[l][..n * 64].as_chunks::<64>().0);
                if live[l] {
                    assert_eq!(state.get(l), want, "{k:?} lane {l}");
                }
            }
        }
    }

    /// Measurement, not a check: `cargo nextest run --workspace --features
    /// failpoints --run-ignored only -E 'test(kernel_speed)' --no-capture`
    /// (release numbers: add `--cargo-profile release`).
    #[test]
    #[ignore]
    fn kernel_speed() {
        let blocks = 4096; // 256 KiB per lane
        let rows: Vec<Vec<u8>> = (0..LANES).map(|l| data(blocks * 64, l as u32)).collect();
        let ptrs: [*const u8; LANES] = std::array::from_fn(|l| rows[l].as_ptr());
        let bytes = (LANES * blocks * 64) as f64;
        let t = std::time::Instant::now();
        let mut state = MD5_INIT;
        for r in &rows {
            md5::block_api::compress(&mut state, r.as_chunks::<64>().0);
        }
        eprintln!(
            "one stream at a time: {:.0} MiB/s",
            bytes / t.elapsed().as_secs_f64() / 1048576.0
        );
        for k in kernels() {
            let mut state = State16::default();
            let t = std::time::Instant::now();
            // SAFETY: `k` runs here; each row holds `blocks` blocks.
            unsafe { x16::compress_run_with(k, &mut state, &ptrs, &[true; LANES], blocks) };
            eprintln!(
                "{k:?}, sixteen lanes: {:.0} MiB/s",
                bytes / t.elapsed().as_secs_f64() / 1048576.0
            );
        }
    }

    #[test]
    fn two_bodies_over_the_cap_share_the_lanes_where_two_lanes_win() {
        let Some(lanes) = Lanes::start() else { return };
        let bodies: Vec<Bytes> = (0..2)
            .map(|i| Bytes::from(data(2 * CAP_BYTES + 64 * i + 17, 7 + i as u32)))
            .collect();
        let before = metrics::md5_bytes("lanes");
        let registered: Vec<LaneBody> = bodies.iter().map(|_| lanes.register()).collect();
        // Alternate 64 KiB chunks, so both bodies pass the cap together.
        for off in (0..bodies[1].len()).step_by(65_536) {
            for (b, d) in registered.iter().zip(&bodies) {
                if off < d.len() {
                    b.push(d.slice(off..(off + 65_536).min(d.len())));
                }
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (b, d) in registered.into_iter().zip(&bodies) {
            assert_eq!(rt.block_on(b.finish(d.len() as u64)).unwrap(), reference(d));
        }
        let in_lanes = metrics::md5_bytes("lanes") - before;
        if min_vector_lanes() <= 2 {
            assert!(
                in_lanes >= 2 * CAP_BYTES as u64,
                "two bodies over the cap went one at a time: {in_lanes} bytes in the lanes"
            );
        } else {
            assert_eq!(
                in_lanes, 0,
                "two live lanes lose to one body at a time here"
            );
        }
    }

    #[test]
    fn sealed_bodies_are_hashed_before_their_digest_is_wanted() {
        let Some(lanes) = Lanes::start() else { return };
        let bodies: Vec<Vec<u8>> = (0..TARGET_LANES)
            .map(|i| data((1 << 20) + i * 1_000 + 3, i as u32))
            .collect();
        let total: usize = bodies.iter().map(Vec::len).sum();
        let before = metrics::md5_bytes("lanes");
        let sealed: Vec<SealedBody> = bodies
            .iter()
            .map(|d| {
                let body = lanes.register();
                body.push(Bytes::from(d.clone()));
                body.seal()
            })
            .collect();
        // TARGET_LANES sealed bodies are enough for a pass with nobody
        // waiting: it runs the lanes until fewer than half are live, which
        // for bodies this close in size is nearly all of every one.
        wait_until("sealed bodies hashed", || {
            metrics::md5_bytes("lanes") - before >= (total as u64) * 9 / 10
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (s, d) in sealed.into_iter().zip(&bodies) {
            assert_eq!(rt.block_on(s.finish(d.len() as u64)).unwrap(), reference(d));
        }
    }

    #[test]
    fn many_small_queues_cannot_pin_unbounded_memory() {
        let Some(lanes) = Lanes::start() else { return };
        // Each body under every trigger of its own (no job, not sealed, not
        // wanted); together over the total cap.
        let chunk = Bytes::from(data(JOB_BYTES - 4096, 3));
        let n = TOTAL_CAP_BYTES / chunk.len() + 1;
        let bodies: Vec<LaneBody> = (0..n)
            .map(|_| {
                let body = lanes.register();
                body.push(chunk.clone());
                body
            })
            .collect();
        wait_until("the queues drained", || {
            !lanes.shared.lock().over_total_cap()
        });
        // And each body still hashes right from where the pass left it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let want = reference(&chunk);
        for body in bodies.into_iter().take(3) {
            assert_eq!(rt.block_on(body.finish(chunk.len() as u64)).unwrap(), want);
        }
    }

    #[test]
    fn a_dropped_sealed_body_is_forgotten() {
        let Some(lanes) = Lanes::start() else { return };
        let body = lanes.register();
        body.push(Bytes::from(data(JOB_BYTES / 2, 1)));
        drop(body.seal());
        assert!(lanes.shared.lock().bodies.is_empty());
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
