//! Object bodies and sizes for `kura bench`'s load runs. Bodies are slices of
//! one random buffer made once per run, taken at random offsets: no CPU per
//! request beyond picking an offset, and incompressible unless asked (a
//! store that compresses or deduplicates must not look faster than it is
//! on real data). Objects larger than one slice are streamed as a series of
//! slices, so no object is ever held whole.

use bytes::Bytes;
use rand::Rng;

/// The random buffer's size: far beyond any compressor's window that
/// matters for single objects (LZ4 64 KiB, zstd's default levels ≤ 8 MiB).
pub const BUFFER: usize = 16 << 20;
/// The longest single slice; larger bodies are streamed in slices this long.
pub const SLICE: usize = 4 << 20;
/// Compressibility is applied per block of this many bytes.
const BLOCK: usize = 4096;

/// The run's random source of bodies.
#[derive(Clone)]
pub struct Payload {
    buf: Bytes,
}

impl Payload {
    /// `compressible` in [0, 1]: that fraction of every 4 KiB block is
    /// zeros (which any compressor removes), the rest random bytes.
    pub fn new(compressible: f64) -> Payload {
        let mut buf = vec![0u8; BUFFER];
        let mut rng = rand::thread_rng();
        rng.fill(&mut buf[..]);
        let zeros = ((compressible.clamp(0.0, 1.0)) * BLOCK as f64).round() as usize;
        if zeros > 0 {
            for block in buf.chunks_mut(BLOCK) {
                let n = zeros.min(block.len());
                block[..n].fill(0);
            }
        }
        Payload { buf: buf.into() }
    }

    /// A body of `len` bytes: one slice when it fits, else a stream of
    /// slices (each from its own random offset) with a known length.
    pub fn body(&self, len: u64) -> reqwest::Body {
        if len as usize <= SLICE {
            return reqwest::Body::from(self.slice(len as usize));
        }
        let this = self.clone();
        let chunks = futures::stream::unfold(len, move |left| {
            let this = this.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let n = left.min(SLICE as u64);
                Some((
                    Ok::<Bytes, std::io::Error>(this.slice(n as usize)),
                    left - n,
                ))
            }
        });
        reqwest::Body::wrap_stream(chunks)
    }

    /// `len` (≤ [`SLICE`]) bytes from a random offset; shares the buffer.
    pub fn slice(&self, len: usize) -> Bytes {
        let len = len.min(SLICE);
        let start = rand::thread_rng().gen_range(0..=self.buf.len() - len);
        self.buf.slice(start..start + len)
    }
}

/// How object sizes are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sizes {
    Fixed(u64),
    /// Uniform between min and max (inclusive).
    Uniform {
        min: u64,
        max: u64,
    },
    /// Log-uniform between min and max: as many objects between 1 and 10 KiB
    /// as between 10 and 100 KiB (what warp's `--obj.randsize` does).
    Log {
        min: u64,
        max: u64,
    },
}

impl Sizes {
    pub fn draw(&self, rng: &mut impl Rng) -> u64 {
        match *self {
            Sizes::Fixed(n) => n,
            Sizes::Uniform { min, max } => rng.gen_range(min..=max),
            Sizes::Log { min, max } => {
                let (lo, hi) = ((min.max(1)) as f64, (max.max(1)) as f64);
                let x = (lo.ln() + rng.gen::<f64>() * (hi.ln() - lo.ln())).exp();
                (x.round() as u64).clamp(min, max)
            }
        }
    }

    pub fn max(&self) -> u64 {
        match *self {
            Sizes::Fixed(n) => n,
            Sizes::Uniform { max, .. } | Sizes::Log { max, .. } => max,
        }
    }

    /// For reports: `64KiB`, `uniform 1KiB..1MiB`.
    pub fn describe(&self) -> String {
        match *self {
            Sizes::Fixed(n) => human(n),
            Sizes::Uniform { min, max } => format!("uniform {}..{}", human(min), human(max)),
            Sizes::Log { min, max } => format!("log {}..{}", human(min), human(max)),
        }
    }
}

/// `4KiB`, `64MiB`, `1.5MiB`, `4096`, `10KB` (SI), `1 GiB`; None if not a size.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "ki" | "k" => 1 << 10,
        "mib" | "mi" | "m" => 1 << 20,
        "gib" | "gi" | "g" => 1 << 30,
        "tib" | "ti" | "t" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let v = n * mul as f64;
    // Sizes beyond 5 TiB (S3's object limit) are typos.
    if v > (5u64 << 40) as f64 || (v.fract() != 0.0) {
        return None;
    }
    Some(v as u64)
}

pub fn human(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift {
            return if n.is_multiple_of(1 << shift) {
                format!("{}{unit}", n >> shift)
            } else {
                format!("{:.1}{unit}", n as f64 / (1u64 << shift) as f64)
            };
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_si_units() {
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        assert_eq!(parse_size("1.5MiB"), Some(3 << 19));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("10KB"), Some(10_000));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("0"), Some(0));
        for bad in ["", "KiB", "12XB", "-1", "1.2345B", "9TiB", "nan"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(human(64 << 10), "64KiB");
        assert_eq!(human(1536), "1.5KiB");
        assert_eq!(human(17), "17B");
    }

    #[test]
    fn payload_is_random_and_compressibility_zeroes_that_fraction() {
        let p = Payload::new(0.0);
        let a = p.slice(1 << 20);
        // Random bytes: every byte value appears, none dominates.
        let mut counts = [0u32; 256];
        for &b in a.iter() {
            counts[b as usize] += 1;
        }
        let max = *counts.iter().max().unwrap_or(&0);
        assert!(counts.iter().all(|&c| c > 0), "not all byte values");
        assert!(max < 6000, "one byte value too frequent: {max}");
        // Two slices differ (random offsets into 16 MiB).
        assert_ne!(p.slice(4096), p.slice(4096));

        let half = Payload::new(0.5);
        let s = half.slice(1 << 20);
        let zeros = s.iter().filter(|&&b| b == 0).count() as f64 / s.len() as f64;
        assert!((zeros - 0.5).abs() < 0.02, "{zeros}");
    }

    #[test]
    fn drawn_sizes_stay_within_bounds_and_log_favours_small() {
        let mut rng = rand::thread_rng();
        let u = Sizes::Uniform { min: 10, max: 20 };
        let l = Sizes::Log {
            min: 1024,
            max: 1 << 20,
        };
        let mut below_32k = 0;
        for _ in 0..10_000 {
            let x = u.draw(&mut rng);
            assert!((10..=20).contains(&x));
            let y = l.draw(&mut rng);
            assert!((1024..=1 << 20).contains(&y));
            if y < 32 << 10 {
                below_32k += 1;
            }
        }
        // Log-uniform: half the draws lie below the geometric mean (32 KiB);
        // uniform would put 3% there.
        assert!((4000..6000).contains(&below_32k), "{below_32k}");
        assert_eq!(Sizes::Fixed(7).draw(&mut rng), 7);
    }
}
