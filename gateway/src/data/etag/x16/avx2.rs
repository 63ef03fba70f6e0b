//! The sixteen lanes as two AVX2 registers of eight, for CPUs without
//! AVX-512 (AMD Zen 2 and 3, Intel client cores): the same state layout and
//! step table as the AVX-512 kernel. Both halves advance in the same step, so
//! the core overlaps their two dependency chains; MD5's chain, not the
//! register width, is what bounds a lane.

use std::arch::x86_64::*;

use super::{State16, LANES};

/// The round functions over (b, c, d), in forms of two or three operations:
/// F = (b & c) | (!b & d), G = (b & d) | (c & !d), H = b ^ c ^ d,
/// I = c ^ (b | !d).
macro_rules! round {
    (F, $b:expr, $c:expr, $d:expr) => {
        _mm256_xor_si256($d, _mm256_and_si256($b, _mm256_xor_si256($c, $d)))
    };
    (G, $b:expr, $c:expr, $d:expr) => {
        _mm256_xor_si256($c, _mm256_and_si256($d, _mm256_xor_si256($b, $c)))
    };
    (H, $b:expr, $c:expr, $d:expr) => {
        _mm256_xor_si256(_mm256_xor_si256($b, $c), $d)
    };
    (I, $b:expr, $c:expr, $d:expr) => {
        _mm256_xor_si256(
            $c,
            _mm256_or_si256($b, _mm256_xor_si256($d, _mm256_set1_epi32(-1))),
        )
    };
}

/// One MD5 step on both halves: `a = b + rotl(a + f(b, c, d) + k + m, s)`.
macro_rules! step2 {
    ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:expr) => {
        for h in 0..2 {
            let f = round!($f, $b[h], $c[h], $d[h]);
            let t = _mm256_add_epi32(
                _mm256_add_epi32($a[h], f),
                _mm256_add_epi32($m[h], _mm256_set1_epi32($k as i32)),
            );
            let r = _mm256_or_si256(
                _mm256_slli_epi32::<{ $s }>(t),
                _mm256_srli_epi32::<{ 32 - $s }>(t),
            );
            $a[h] = _mm256_add_epi32($b[h], r);
        }
    };
}

/// Lanes 0–7 and 8–15 of one word.
type Pair = [__m256i; 2];

/// [`super::compress_run`] on AVX2.
///
/// # Safety
/// As [`super::compress_run`], and the CPU has AVX2.
// `h` indexes the half of several arrays at once (lanes, words, pointers).
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2")]
pub unsafe fn compress_run(
    state: &mut State16,
    ptrs: &[*const u8; LANES],
    live: &[bool; LANES],
    blocks: usize,
) {
    let mut p = *ptrs;
    let step: [usize; LANES] = std::array::from_fn(|l| if live[l] { 64 } else { 0 });
    // SAFETY (for the whole body): the loads read 64 bytes from pointers the
    // caller vouched for; `State16` is 64-byte aligned, so each half of a
    // word (eight u32) is 32-byte aligned.
    unsafe {
        let w = state.words.as_mut_ptr() as *mut u32;
        let half = |word: usize, h: usize| w.add(word * LANES + h * 8) as *mut __m256i;
        let load = |word: usize| -> Pair {
            [
                _mm256_load_si256(half(word, 0)),
                _mm256_load_si256(half(word, 1)),
            ]
        };
        let (mut a, mut b, mut c, mut d) = (load(0), load(1), load(2), load(3));
        for _ in 0..blocks {
            let mut m = [[_mm256_setzero_si256(); 2]; 16];
            for h in 0..2 {
                let mut lo = [_mm256_setzero_si256(); 8];
                let mut hi = [_mm256_setzero_si256(); 8];
                for l in 0..8 {
                    let lane = 8 * h + l;
                    lo[l] = _mm256_loadu_si256(p[lane] as *const __m256i);
                    hi[l] = _mm256_loadu_si256(p[lane].add(32) as *const __m256i);
                    p[lane] = p[lane].add(step[lane]);
                }
                let (w0, w8) = (transpose8(&lo), transpose8(&hi));
                for i in 0..8 {
                    m[i][h] = w0[i];
                    m[8 + i][h] = w8[i];
                }
            }
            let (a0, b0, c0, d0) = (a, b, c, d);
            md5_steps!(step2, a, b, c, d, m);
            for h in 0..2 {
                a[h] = _mm256_add_epi32(a[h], a0[h]);
                b[h] = _mm256_add_epi32(b[h], b0[h]);
                c[h] = _mm256_add_epi32(c[h], c0[h]);
                d[h] = _mm256_add_epi32(d[h], d0[h]);
            }
        }
        for (word, v) in [a, b, c, d].into_iter().enumerate() {
            _mm256_store_si256(half(word, 0), v[0]);
            _mm256_store_si256(half(word, 1), v[1]);
        }
    }
}

/// Rows are eight lanes' eight words; the result's vector `w` holds word `w`
/// of every lane: 32-bit and 64-bit unpacks within 128-bit halves, then the
/// halves exchanged.
#[target_feature(enable = "avx2")]
#[inline]
fn transpose8(r: &[__m256i; 8]) -> [__m256i; 8] {
    let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
    let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
    let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
    let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    // u0: words 0 and 4 of rows 0-3 (low and high half); u1: 1 and 5; ...
    let u0 = _mm256_unpacklo_epi64(t0, t2);
    let u1 = _mm256_unpackhi_epi64(t0, t2);
    let u2 = _mm256_unpacklo_epi64(t1, t3);
    let u3 = _mm256_unpackhi_epi64(t1, t3);
    let u4 = _mm256_unpacklo_epi64(t4, t6);
    let u5 = _mm256_unpackhi_epi64(t4, t6);
    let u6 = _mm256_unpacklo_epi64(t5, t7);
    let u7 = _mm256_unpackhi_epi64(t5, t7);
    [
        _mm256_permute2x128_si256::<0x20>(u0, u4),
        _mm256_permute2x128_si256::<0x20>(u1, u5),
        _mm256_permute2x128_si256::<0x20>(u2, u6),
        _mm256_permute2x128_si256::<0x20>(u3, u7),
        _mm256_permute2x128_si256::<0x31>(u0, u4),
        _mm256_permute2x128_si256::<0x31>(u1, u5),
        _mm256_permute2x128_si256::<0x31>(u2, u6),
        _mm256_permute2x128_si256::<0x31>(u3, u7),
    ]
}
