//! MD5 over sixteen independent streams at once, one per 32-bit lane of an
//! AVX-512 register (decision 0051), or of two AVX2 registers of eight lanes
//! each on CPUs without AVX-512 (`x16/avx2.rs`, decision 0051 addendum).
//!
//! MD5 is one long dependency chain per stream, so a core hashing one body
//! waits on latency, not throughput. Sixteen bodies side by side cost about
//! the same time per block as one, which is why this kernel exists: the
//! `md5-many` crate does the same, but its incremental path runs through
//! non-inlined SIMD wrappers and lost its gain in our measurements.
//!
//! The caller keeps the sixteen states transposed ([`State16`]) and, per run,
//! hands one pointer per lane to whole 64-byte blocks. A lane with nothing to
//! hash points at a zero block and does not advance; its state is garbage
//! that the caller ignores and resets.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Lanes per pass.
pub const LANES: usize = 16;

/// Sixteen MD5 states, transposed: `words[w][lane]` is word `w` (A, B, C, D)
/// of `lane`'s state.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
pub struct State16 {
    pub words: [[u32; LANES]; 4],
}

impl State16 {
    pub fn set(&mut self, lane: usize, s: [u32; 4]) {
        for (w, v) in s.into_iter().enumerate() {
            self.words[w][lane] = v;
        }
    }

    pub fn get(&self, lane: usize) -> [u32; 4] {
        [
            self.words[0][lane],
            self.words[1][lane],
            self.words[2][lane],
            self.words[3][lane],
        ]
    }
}

/// One block of zeros for lanes with nothing to hash.
pub static IDLE_BLOCK: [u8; 64] = [0; 64];

/// The kernels, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Sixteen lanes in one AVX-512 register.
    Avx512,
    /// Sixteen lanes in two AVX2 registers.
    Avx2,
}

/// The best kernel this CPU runs, if any.
pub fn kernel() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Kernel::Avx512);
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some(Kernel::Avx2);
        }
    }
    None
}

/// Whether this CPU runs a kernel.
pub fn available() -> bool {
    kernel().is_some()
}

/// Hash `blocks` 64-byte blocks in every lane with the best kernel: lane `l`
/// reads from `ptrs[l]`, which advances by 64 bytes per block where
/// `live[l]` is set and stays put where it is not.
///
/// # Safety
/// [`available`] must be true, and every live lane's pointer must be valid
/// for `blocks * 64` bytes of reads, every idle lane's for 64 bytes.
pub unsafe fn compress_run(
    state: &mut State16,
    ptrs: &[*const u8; LANES],
    live: &[bool; LANES],
    blocks: usize,
) {
    let Some(k) = kernel() else {
        unreachable!("the MD5 lanes engine starts only where a kernel runs")
    };
    // SAFETY: the caller's promise, and `k` runs on this CPU.
    unsafe { compress_run_with(k, state, ptrs, live, blocks) }
}

/// [`compress_run`] with the kernel `k`.
///
/// # Safety
/// As [`compress_run`], and `k` must run on this CPU (`kernel()` is `k` or
/// [`Kernel::Avx512`]).
pub unsafe fn compress_run_with(
    k: Kernel,
    state: &mut State16,
    ptrs: &[*const u8; LANES],
    live: &[bool; LANES],
    blocks: usize,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded from the caller.
    unsafe {
        match k {
            Kernel::Avx512 => compress_run_avx512(state, ptrs, live, blocks),
            Kernel::Avx2 => avx2::compress_run(state, ptrs, live, blocks),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (k, state, ptrs, live, blocks);
        unreachable!("the MD5 lanes engine starts only where a kernel runs")
    }
}

/// The AVX-512 kernel of [`compress_run`].
///
/// # Safety
/// As [`compress_run`], and the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn compress_run_avx512(
    state: &mut State16,
    ptrs: &[*const u8; LANES],
    live: &[bool; LANES],
    blocks: usize,
) {
    let mut p = *ptrs;
    let mut step = [0usize; LANES];
    for l in 0..LANES {
        step[l] = if live[l] { 64 } else { 0 };
    }
    // SAFETY (for the whole body): the loads read 64 bytes from pointers the
    // caller vouched for; `State16` is 64-byte aligned.
    unsafe {
        let sp = state.words.as_mut_ptr() as *mut __m512i;
        let mut a = _mm512_load_si512(sp);
        let mut b = _mm512_load_si512(sp.add(1));
        let mut c = _mm512_load_si512(sp.add(2));
        let mut d = _mm512_load_si512(sp.add(3));
        for _ in 0..blocks {
            let mut rows = [_mm512_setzero_si512(); LANES];
            for l in 0..LANES {
                rows[l] = _mm512_loadu_si512(p[l] as *const __m512i);
                p[l] = p[l].add(step[l]);
            }
            let m = transpose(&rows);
            let (a1, b1, c1, d1) = rounds((a, b, c, d), &m);
            a = _mm512_add_epi32(a, a1);
            b = _mm512_add_epi32(b, b1);
            c = _mm512_add_epi32(c, c1);
            d = _mm512_add_epi32(d, d1);
        }
        _mm512_store_si512(sp, a);
        _mm512_store_si512(sp.add(1), b);
        _mm512_store_si512(sp.add(2), c);
        _mm512_store_si512(sp.add(3), d);
    }
}

/// Rows are lanes' blocks (16 words each); the result's vector `w` holds
/// word `w` of every lane. Four shuffle stages: 32-bit and 64-bit unpacks
/// within 128-bit lanes, then a 4x4 transpose of 128-bit lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn transpose(r: &[__m512i; LANES]) -> [__m512i; LANES] {
    let mut out = [_mm512_setzero_si512(); LANES];
    // u[g][k]: 128-bit lane L holds rows 4g..4g+3, word 4L+k.
    let mut u = [[_mm512_setzero_si512(); 4]; 4];
    for g in 0..4 {
        let (r0, r1, r2, r3) = (r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]);
        let t0 = _mm512_unpacklo_epi32(r0, r1);
        let t1 = _mm512_unpackhi_epi32(r0, r1);
        let t2 = _mm512_unpacklo_epi32(r2, r3);
        let t3 = _mm512_unpackhi_epi32(r2, r3);
        u[g][0] = _mm512_unpacklo_epi64(t0, t2);
        u[g][1] = _mm512_unpackhi_epi64(t0, t2);
        u[g][2] = _mm512_unpacklo_epi64(t1, t3);
        u[g][3] = _mm512_unpackhi_epi64(t1, t3);
    }
    for k in 0..4 {
        let v0 = _mm512_shuffle_i32x4::<0x44>(u[0][k], u[1][k]);
        let v1 = _mm512_shuffle_i32x4::<0xEE>(u[0][k], u[1][k]);
        let v2 = _mm512_shuffle_i32x4::<0x44>(u[2][k], u[3][k]);
        let v3 = _mm512_shuffle_i32x4::<0xEE>(u[2][k], u[3][k]);
        out[k] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
        out[4 + k] = _mm512_shuffle_i32x4::<0xDD>(v0, v2);
        out[8 + k] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
        out[12 + k] = _mm512_shuffle_i32x4::<0xDD>(v1, v3);
    }
    out
}

/// The 64 steps of one MD5 block, generated from RFC 1321: step i uses
/// K[i] = floor(|sin(i + 1)| * 2^32), the round's shift for i mod 4 and
/// message word g(i). `$step!(round, a, b, c, d, word, k, shift)` is the
/// kernel's own step; `round` is one of the idents F, G, H, I.
macro_rules! md5_steps {
    ($step:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:ident) => {
        $step!(F, $a, $b, $c, $d, $m[0], 0xd76aa478u32, 7);
        $step!(F, $d, $a, $b, $c, $m[1], 0xe8c7b756u32, 12);
        $step!(F, $c, $d, $a, $b, $m[2], 0x242070dbu32, 17);
        $step!(F, $b, $c, $d, $a, $m[3], 0xc1bdceeeu32, 22);
        $step!(F, $a, $b, $c, $d, $m[4], 0xf57c0fafu32, 7);
        $step!(F, $d, $a, $b, $c, $m[5], 0x4787c62au32, 12);
        $step!(F, $c, $d, $a, $b, $m[6], 0xa8304613u32, 17);
        $step!(F, $b, $c, $d, $a, $m[7], 0xfd469501u32, 22);
        $step!(F, $a, $b, $c, $d, $m[8], 0x698098d8u32, 7);
        $step!(F, $d, $a, $b, $c, $m[9], 0x8b44f7afu32, 12);
        $step!(F, $c, $d, $a, $b, $m[10], 0xffff5bb1u32, 17);
        $step!(F, $b, $c, $d, $a, $m[11], 0x895cd7beu32, 22);
        $step!(F, $a, $b, $c, $d, $m[12], 0x6b901122u32, 7);
        $step!(F, $d, $a, $b, $c, $m[13], 0xfd987193u32, 12);
        $step!(F, $c, $d, $a, $b, $m[14], 0xa679438eu32, 17);
        $step!(F, $b, $c, $d, $a, $m[15], 0x49b40821u32, 22);
        $step!(G, $a, $b, $c, $d, $m[1], 0xf61e2562u32, 5);
        $step!(G, $d, $a, $b, $c, $m[6], 0xc040b340u32, 9);
        $step!(G, $c, $d, $a, $b, $m[11], 0x265e5a51u32, 14);
        $step!(G, $b, $c, $d, $a, $m[0], 0xe9b6c7aau32, 20);
        $step!(G, $a, $b, $c, $d, $m[5], 0xd62f105du32, 5);
        $step!(G, $d, $a, $b, $c, $m[10], 0x02441453u32, 9);
        $step!(G, $c, $d, $a, $b, $m[15], 0xd8a1e681u32, 14);
        $step!(G, $b, $c, $d, $a, $m[4], 0xe7d3fbc8u32, 20);
        $step!(G, $a, $b, $c, $d, $m[9], 0x21e1cde6u32, 5);
        $step!(G, $d, $a, $b, $c, $m[14], 0xc33707d6u32, 9);
        $step!(G, $c, $d, $a, $b, $m[3], 0xf4d50d87u32, 14);
        $step!(G, $b, $c, $d, $a, $m[8], 0x455a14edu32, 20);
        $step!(G, $a, $b, $c, $d, $m[13], 0xa9e3e905u32, 5);
        $step!(G, $d, $a, $b, $c, $m[2], 0xfcefa3f8u32, 9);
        $step!(G, $c, $d, $a, $b, $m[7], 0x676f02d9u32, 14);
        $step!(G, $b, $c, $d, $a, $m[12], 0x8d2a4c8au32, 20);
        $step!(H, $a, $b, $c, $d, $m[5], 0xfffa3942u32, 4);
        $step!(H, $d, $a, $b, $c, $m[8], 0x8771f681u32, 11);
        $step!(H, $c, $d, $a, $b, $m[11], 0x6d9d6122u32, 16);
        $step!(H, $b, $c, $d, $a, $m[14], 0xfde5380cu32, 23);
        $step!(H, $a, $b, $c, $d, $m[1], 0xa4beea44u32, 4);
        $step!(H, $d, $a, $b, $c, $m[4], 0x4bdecfa9u32, 11);
        $step!(H, $c, $d, $a, $b, $m[7], 0xf6bb4b60u32, 16);
        $step!(H, $b, $c, $d, $a, $m[10], 0xbebfbc70u32, 23);
        $step!(H, $a, $b, $c, $d, $m[13], 0x289b7ec6u32, 4);
        $step!(H, $d, $a, $b, $c, $m[0], 0xeaa127fau32, 11);
        $step!(H, $c, $d, $a, $b, $m[3], 0xd4ef3085u32, 16);
        $step!(H, $b, $c, $d, $a, $m[6], 0x04881d05u32, 23);
        $step!(H, $a, $b, $c, $d, $m[9], 0xd9d4d039u32, 4);
        $step!(H, $d, $a, $b, $c, $m[12], 0xe6db99e5u32, 11);
        $step!(H, $c, $d, $a, $b, $m[15], 0x1fa27cf8u32, 16);
        $step!(H, $b, $c, $d, $a, $m[2], 0xc4ac5665u32, 23);
        $step!(I, $a, $b, $c, $d, $m[0], 0xf4292244u32, 6);
        $step!(I, $d, $a, $b, $c, $m[7], 0x432aff97u32, 10);
        $step!(I, $c, $d, $a, $b, $m[14], 0xab9423a7u32, 15);
        $step!(I, $b, $c, $d, $a, $m[5], 0xfc93a039u32, 21);
        $step!(I, $a, $b, $c, $d, $m[12], 0x655b59c3u32, 6);
        $step!(I, $d, $a, $b, $c, $m[3], 0x8f0ccc92u32, 10);
        $step!(I, $c, $d, $a, $b, $m[10], 0xffeff47du32, 15);
        $step!(I, $b, $c, $d, $a, $m[1], 0x85845dd1u32, 21);
        $step!(I, $a, $b, $c, $d, $m[8], 0x6fa87e4fu32, 6);
        $step!(I, $d, $a, $b, $c, $m[15], 0xfe2ce6e0u32, 10);
        $step!(I, $c, $d, $a, $b, $m[6], 0xa3014314u32, 15);
        $step!(I, $b, $c, $d, $a, $m[13], 0x4e0811a1u32, 21);
        $step!(I, $a, $b, $c, $d, $m[4], 0xf7537e82u32, 6);
        $step!(I, $d, $a, $b, $c, $m[11], 0xbd3af235u32, 10);
        $step!(I, $c, $d, $a, $b, $m[2], 0x2ad7d2bbu32, 15);
        $step!(I, $b, $c, $d, $a, $m[9], 0xeb86d391u32, 21);
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2;

// The four round functions as `vpternlogd` truth tables over (b, c, d):
// F = (b & c) | (!b & d), G = (b & d) | (c & !d), H = b ^ c ^ d,
// I = c ^ (b | !d).
const F: i32 = 0xCA;
const G: i32 = 0xE4;
const H: i32 = 0x96;
const I: i32 = 0x39;

/// One MD5 step: `a = b + rotl(a + f(b, c, d) + k + m, s)`.
macro_rules! step {
    ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:expr) => {
        let f = _mm512_ternarylogic_epi32::<{ $f }>($b, $c, $d);
        let t = _mm512_add_epi32(
            _mm512_add_epi32($a, f),
            _mm512_add_epi32($m, _mm512_set1_epi32($k as i32)),
        );
        $a = _mm512_add_epi32($b, _mm512_rol_epi32::<{ $s }>(t));
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn rounds(
    state: (__m512i, __m512i, __m512i, __m512i),
    m: &[__m512i; LANES],
) -> (__m512i, __m512i, __m512i, __m512i) {
    let (mut a, mut b, mut c, mut d) = state;
    md5_steps!(step, a, b, c, d, m);
    (a, b, c, d)
}
