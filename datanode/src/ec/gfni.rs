//! Parity blocks by the GFNI affine instruction (`GF2P8AFFINEQB`), 64 bytes of every data
//! block per step, on CPUs with GFNI and AVX-512 (decision 0060).
//!
//! Multiplying a byte by a constant `c` of GF(2^8) is linear over GF(2): an 8×8 bit
//! matrix, which is what one `GF2P8AFFINEQB` applies to 64 bytes at once. A parity
//! block is the XOR of its k data blocks, each multiplied by its coefficient. The
//! coefficients are read out of reed-solomon-erasure's own encoder (one byte per data
//! block, the i-th set to 1), so the parity is byte for byte what that crate writes and
//! stored stripes stay readable either way; reed-solomon-erasure keeps everything else
//! (decoding, and encoding where this kernel does not run). Its AVX2 kernels cost the
//! gateway ~0.3 ms per MiB of 4+2 PUT (12% of its CPU under 64 MiB PUTs).

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::crc::Crc32c;

/// Bytes per kernel step.
const STEP: usize = 64;
/// Bytes of every block per column when checksums are taken: k + m columns of 8 KiB
/// stay in a core's L1/L2 between the kernel and the checksum.
const COLUMN: usize = 8 * 1024;

/// The parity rows of one code, as bit matrices.
#[derive(Debug)]
pub struct GfniParity {
    k: usize,
    m: usize,
    /// Row-major `m × k`: the matrix multiplying data block `i` into parity `j` at `j * k + i`.
    matrices: Vec<u64>,
}

impl GfniParity {
    /// Whether this CPU runs the kernel.
    pub fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("gfni")
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The kernel for `rs`'s parity, where this CPU runs it.
    pub fn new(rs: &ReedSolomon) -> Option<GfniParity> {
        if !Self::available() {
            return None;
        }
        Self::from_code(rs)
    }

    /// The bit matrices of `rs`'s parity coefficients, whatever this CPU runs.
    fn from_code(rs: &ReedSolomon) -> Option<GfniParity> {
        let (k, m) = (rs.data_shard_count(), rs.parity_shard_count());
        let mut matrices = vec![0u64; k * m];
        for i in 0..k {
            let data: Vec<[u8; 1]> = (0..k).map(|d| [u8::from(d == i)]).collect();
            let mut parity = vec![[0u8; 1]; m];
            rs.encode_sep(&data, &mut parity).ok()?;
            for (j, p) in parity.iter().enumerate() {
                matrices[j * k + i] = affine_matrix(p[0]);
            }
        }
        Some(GfniParity { k, m, matrices })
    }

    /// The m parity blocks of `data` (k blocks of one length). Each is written whole,
    /// never zeroed first. With `crcs` (k + m slots), also the CRC32C of every data and
    /// parity block, taken a column of [`COLUMN`] bytes at a time right after the kernel
    /// went over it, while those bytes are in the cache. None if the shape is not this
    /// code's.
    pub fn encode(&self, data: &[&[u8]], crcs: Option<&mut [u32]>) -> Option<Vec<Vec<u8>>> {
        let len = data.first().map_or(0, |d| d.len());
        if data.len() != self.k || data.iter().any(|d| d.len() != len) {
            return None;
        }
        if crcs.as_ref().is_some_and(|c| c.len() != self.k + self.m) {
            return None;
        }
        let mut digests: Vec<Crc32c> = match crcs {
            Some(_) => (0..self.k + self.m).map(|_| Crc32c::new()).collect(),
            None => Vec::new(),
        };
        let mut out: Vec<Vec<u8>> = (0..self.m).map(|_| Vec::with_capacity(len)).collect();
        let whole = len / STEP;
        let src: Vec<*const u8> = data.iter().map(|d| d.as_ptr()).collect();
        let dst: Vec<*mut u8> = out.iter_mut().map(|o| o.as_mut_ptr()).collect();
        let mut first = 0;
        while first < whole {
            let steps = (COLUMN / STEP).min(whole - first);
            // SAFETY: `new` checked the CPU; every source holds `len >= whole * STEP`
            // bytes and every output the capacity for them.
            unsafe { self.run(&src, &dst, first, steps) };
            let (lo, hi) = (first * STEP, (first + steps) * STEP);
            if !digests.is_empty() {
                for (d, c) in data.iter().zip(&mut digests) {
                    c.update(&d[lo..hi]);
                }
                for (p, c) in dst.iter().zip(&mut digests[self.k..]) {
                    // SAFETY: bytes `lo..hi` of the output were written just above.
                    c.update(unsafe { std::slice::from_raw_parts(p.add(lo), hi - lo) });
                }
            }
            first += steps;
        }
        let tail = len - whole * STEP;
        if tail > 0 {
            // The last partial step through zero-padded copies.
            let padded: Vec<[u8; STEP]> = data
                .iter()
                .map(|d| {
                    let mut b = [0u8; STEP];
                    b[..tail].copy_from_slice(&d[whole * STEP..]);
                    b
                })
                .collect();
            let mut results = vec![[0u8; STEP]; self.m];
            let src: Vec<*const u8> = padded.iter().map(|b| b.as_ptr()).collect();
            let tmp: Vec<*mut u8> = results.iter_mut().map(|b| b.as_mut_ptr()).collect();
            // SAFETY: as above, one step over 64-byte buffers.
            unsafe { self.run(&src, &tmp, 0, 1) };
            for (o, r) in dst.iter().zip(&results) {
                // SAFETY: `tail` bytes after the `whole * STEP` written fit the capacity.
                unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), o.add(whole * STEP), tail) };
            }
            if !digests.is_empty() {
                let pieces = padded.iter().chain(&results);
                for (b, c) in pieces.zip(&mut digests) {
                    c.update(&b[..tail]);
                }
            }
        }
        for o in &mut out {
            // SAFETY: all `len` bytes were written above.
            unsafe { o.set_len(len) };
        }
        if let Some(crcs) = crcs {
            for (slot, c) in crcs.iter_mut().zip(&digests) {
                *slot = c.value();
            }
        }
        Some(out)
    }

    /// Steps `first..first + steps` of 64 bytes: reads `src[i]`, writes `dst[j]`.
    ///
    /// # Safety
    /// [`GfniParity::available`] holds; `src` has k pointers valid for
    /// `(first + steps) * 64` bytes of reads, `dst` m pointers valid for as many bytes
    /// of writes.
    unsafe fn run(&self, src: &[*const u8], dst: &[*mut u8], first: usize, steps: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded from the caller.
        unsafe {
            avx512::run(&self.matrices, self.k, src, dst, first, steps)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (src, dst, first, steps);
            unreachable!("GfniParity::new returns None off x86_64")
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// # Safety
    /// As [`super::GfniParity::run`]; `matrices` is `dst.len() × k`.
    #[target_feature(enable = "gfni,avx512f,avx512bw")]
    pub unsafe fn run(
        matrices: &[u64],
        k: usize,
        src: &[*const u8],
        dst: &[*mut u8],
        first: usize,
        steps: usize,
    ) {
        let mats: Vec<__m512i> = matrices
            .iter()
            .map(|&a| _mm512_set1_epi64(a as i64))
            .collect();
        for s in first..first + steps {
            let off = s * super::STEP;
            for (j, out) in dst.iter().enumerate() {
                let row = &mats[j * k..(j + 1) * k];
                let mut acc = _mm512_setzero_si512();
                for (p, mat) in src.iter().zip(row) {
                    // SAFETY: the caller's bounds.
                    let x = unsafe { _mm512_loadu_si512(p.add(off) as *const __m512i) };
                    acc = _mm512_xor_si512(acc, _mm512_gf2p8affine_epi64_epi8::<0>(x, *mat));
                }
                // SAFETY: the caller's bounds.
                unsafe { _mm512_storeu_si512(out.add(off) as *mut __m512i, acc) };
            }
        }
    }
}

/// `a · b` in GF(2^8) modulo x^8 + x^4 + x^3 + x^2 + 1 (0x11D, reed-solomon-erasure's field).
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= 0x1D;
        }
        b >>= 1;
    }
    p
}

/// The bit matrix of "multiply by `c`" as `GF2P8AFFINEQB` takes it: bit `i` of a result
/// is the parity of the source byte ANDed with byte `7 - i` of the matrix, so that byte
/// holds, at bit `j`, bit `i` of `c · 2^j`.
fn affine_matrix(c: u8) -> u64 {
    let mut m = 0u64;
    for i in 0..8 {
        let mut row = 0u8;
        for j in 0..8 {
            if (gf_mul(c, 1 << j) >> i) & 1 != 0 {
                row |= 1 << j;
            }
        }
        m |= u64::from(row) << (8 * (7 - i));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc::crc32c;

    /// `GF2P8AFFINEQB` on one byte, as Intel's pseudocode defines it.
    fn affine_byte(m: u64, x: u8) -> u8 {
        let mut r = 0u8;
        for i in 0..8 {
            let row = (m >> (8 * (7 - i))) as u8;
            r |= (((row & x).count_ones() & 1) as u8) << i;
        }
        r
    }

    #[test]
    fn the_matrices_multiply_in_the_codes_field() {
        for c in 0..=255u8 {
            let m = affine_matrix(c);
            for x in 0..=255u8 {
                assert_eq!(affine_byte(m, x), gf_mul(c, x), "{c} · {x}");
                assert_eq!(gf_mul(c, x), reed_solomon_erasure::galois_8::mul(c, x));
            }
        }
    }

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn parity_is_reed_solomon_erasures_byte_for_byte() {
        if !GfniParity::available() {
            eprintln!("no GFNI + AVX-512 here: reed-solomon-erasure encodes alone");
            return;
        }
        for (k, m) in [(4, 2), (2, 1), (6, 3), (8, 4), (10, 4)] {
            let rs = ReedSolomon::new(k, m).unwrap();
            let g = GfniParity::new(&rs).unwrap();
            for len in [0, 1, 63, 64, 65, 1000, 4096, 65_536 + 17, 262_144] {
                let data: Vec<Vec<u8>> =
                    (0..k).map(|i| bytes(len, (i * 31 + len) as u64)).collect();
                let refs: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
                let mut want = vec![vec![0u8; len]; m];
                if len > 0 {
                    rs.encode_sep(&refs, &mut want).unwrap();
                }
                assert_eq!(g.encode(&refs, None).unwrap(), want, "{k}+{m}, {len} bytes");
                let mut crcs = vec![0u32; k + m];
                assert_eq!(g.encode(&refs, Some(&mut crcs)).unwrap(), want);
                let all = refs.iter().copied().chain(want.iter().map(|p| &p[..]));
                let each: Vec<u32> = all.map(crc32c).collect();
                assert_eq!(crcs, each, "{k}+{m}, {len} bytes: checksums");
            }
            // Not this code's shape: refused, not guessed.
            let short: Vec<&[u8]> = vec![&[1u8, 2][..]; k - 1];
            assert!(g.encode(&short, None).is_none());
            let ok: Vec<&[u8]> = vec![&[1u8, 2][..]; k];
            assert!(
                g.encode(&ok, Some(&mut vec![0u32; k])).is_none(),
                "k + m slots"
            );
            let uneven: Vec<&[u8]> = (0..k).map(|i| &[0u8; 16][..i + 1]).collect();
            assert!(g.encode(&uneven, None).is_none());
        }
    }
}
