//! Stripe arithmetic: which fragment blocks hold which bytes of a body.

use std::ops::Range;

/// The shape of one stored body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// k: data fragments.
    pub data_shards: u32,
    /// m: parity fragments (copies for k = 1).
    pub parity_shards: u32,
    /// Bytes of one full fragment block (one stripe's shard).
    pub block_size: u32,
    /// Body bytes.
    pub size: u64,
}

/// Shard block sizes are rounded up to this, so SIMD kernels work on whole words.
const SHARD_ALIGN: u64 = 64;

impl Layout {
    /// The shard block size for a target stripe of about `stripe_bytes` data bytes.
    pub fn block_size_for(stripe_bytes: u64, data_shards: u32) -> u32 {
        let k = data_shards.max(1) as u64;
        let per = stripe_bytes.max(1).div_ceil(k);
        let per = if k == 1 {
            per
        } else {
            per.div_ceil(SHARD_ALIGN) * SHARD_ALIGN
        };
        per.min(u32::MAX as u64) as u32
    }

    pub fn k(&self) -> usize {
        self.data_shards.max(1) as usize
    }

    pub fn m(&self) -> usize {
        self.parity_shards as usize
    }

    /// k + m.
    pub fn width(&self) -> usize {
        self.k() + self.m()
    }

    /// Data bytes of a full stripe.
    pub fn stripe_bytes(&self) -> u64 {
        self.k() as u64 * self.block_size.max(1) as u64
    }

    pub fn num_stripes(&self) -> u64 {
        self.size.div_ceil(self.stripe_bytes())
    }

    /// Offset of stripe `s` in the body.
    pub fn stripe_start(&self, s: u64) -> u64 {
        s * self.stripe_bytes()
    }

    /// Body bytes in stripe `s` (0 past the end).
    pub fn stripe_data_len(&self, s: u64) -> u64 {
        self.size
            .saturating_sub(self.stripe_start(s))
            .min(self.stripe_bytes())
    }

    /// Length of every fragment's block `s`: the block size for a full stripe,
    /// ceil(data / k) for the short last one (0 past the end).
    pub fn shard_len(&self, s: u64) -> u64 {
        let d = self.stripe_data_len(s);
        if d == self.stripe_bytes() {
            self.block_size as u64
        } else {
            d.div_ceil(self.k() as u64)
        }
    }

    /// Bytes every fragment stores in total.
    pub fn fragment_len(&self) -> u64 {
        let n = self.num_stripes();
        if n == 0 {
            return 0;
        }
        (n - 1) * self.block_size as u64 + self.shard_len(n - 1)
    }

    /// Body range held by data shard `i` of stripe `s` (may be empty: padding).
    pub fn data_shard_range(&self, s: u64, i: usize) -> Range<u64> {
        let base = self.stripe_start(s);
        let l = self.shard_len(s);
        let end_of_data = base + self.stripe_data_len(s);
        let lo = (base + i as u64 * l).min(end_of_data);
        let hi = (base + (i as u64 + 1) * l).min(end_of_data);
        lo..hi
    }

    /// Stripes [first, last] covering body range [start, end) (end > start).
    pub fn stripe_span(&self, start: u64, end: u64) -> (u64, u64) {
        let sb = self.stripe_bytes();
        (start / sb, (end - 1) / sb)
    }

    /// Data shards of stripe `s` holding at least one byte of [start, end), ascending.
    pub fn needed_shards(&self, s: u64, start: u64, end: u64) -> Vec<usize> {
        (0..self.k())
            .filter(|&i| {
                let r = self.data_shard_range(s, i);
                r.start < r.end && r.start < end && start < r.end
            })
            .collect()
    }

    /// For each data shard, the stripes [first, last] in which it is needed
    /// for [start, end), or None. (The set is always contiguous: every
    /// stripe strictly inside the span needs every shard.)
    pub fn shard_stripe_spans(&self, start: u64, end: u64) -> Vec<Option<(u64, u64)>> {
        let (first, last) = self.stripe_span(start, end);
        let mut spans: Vec<Option<(u64, u64)>> = vec![None; self.k()];
        for s in [first, first + 1, last.saturating_sub(1), last] {
            if s < first || s > last {
                continue;
            }
            for i in self.needed_shards(s, start, end) {
                spans[i] = Some(match spans[i] {
                    None => (s, s),
                    Some((a, b)) => (a.min(s), b.max(s)),
                });
            }
        }
        spans
    }

    /// The bytes of data shard block `block` (stripe `s`, shard `i`) that lie
    /// in [start, end), as a range into the block.
    pub fn trim(&self, s: u64, i: usize, start: u64, end: u64) -> Range<usize> {
        let r = self.data_shard_range(s, i);
        let lo = start.clamp(r.start, r.end);
        let hi = end.clamp(lo, r.end);
        let base = self.stripe_start(s) + i as u64 * self.shard_len(s);
        (lo - base) as usize..(hi - base) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(k: u32, m: u32, bs: u32, size: u64) -> Layout {
        Layout {
            data_shards: k,
            parity_shards: m,
            block_size: bs,
            size,
        }
    }

    #[test]
    fn block_size_targets_the_stripe() {
        assert_eq!(Layout::block_size_for(1 << 20, 1), 1 << 20);
        assert_eq!(Layout::block_size_for(1 << 20, 4), 256 << 10);
        assert_eq!(Layout::block_size_for(1 << 20, 8), 128 << 10);
        assert_eq!(Layout::block_size_for(1000, 3), 384);
    }

    #[test]
    fn stripes_and_shard_lengths() {
        let x = l(4, 2, 8, 70); // stripes of 32: 32, 32, 6
        assert_eq!(x.num_stripes(), 3);
        assert_eq!(x.shard_len(0), 8);
        assert_eq!(x.shard_len(2), 2);
        assert_eq!(x.fragment_len(), 18);
        assert_eq!(x.data_shard_range(2, 0), 64..66);
        assert_eq!(x.data_shard_range(2, 2), 68..70);
        assert_eq!(x.data_shard_range(2, 3), 70..70);
        let r = l(1, 2, 10, 25);
        assert_eq!(r.num_stripes(), 3);
        assert_eq!(r.shard_len(2), 5);
        assert_eq!(r.fragment_len(), 25);
        assert_eq!(l(4, 2, 8, 0).num_stripes(), 0);
    }

    /// Every body byte is in exactly one data shard range, in order, and the
    /// needed/trim helpers rebuild any range from the blocks.
    #[test]
    fn ranges_reassemble_from_shard_blocks() {
        for (k, bs) in [(1u32, 5u32), (4, 3), (4, 8), (8, 2), (3, 7)] {
            for size in [1u64, 2, 5, 11, 31, 32, 33, 64, 97] {
                let x = l(k, 2, bs, size);
                let body: Vec<u8> = (0..size).map(|v| (v * 7 % 251) as u8).collect();
                // Fragment blocks as a writer would cut them.
                let mut blocks = vec![Vec::new(); x.k()];
                for s in 0..x.num_stripes() {
                    for (i, b) in blocks.iter_mut().enumerate() {
                        let r = x.data_shard_range(s, i);
                        let mut v = body[r.start as usize..r.end as usize].to_vec();
                        v.resize(x.shard_len(s) as usize, 0);
                        b.push(v);
                    }
                }
                for start in 0..size {
                    for end in start + 1..=size {
                        let (f, lst) = x.stripe_span(start, end);
                        let spans = x.shard_stripe_spans(start, end);
                        let mut out = Vec::new();
                        for s in f..=lst {
                            for i in x.needed_shards(s, start, end) {
                                let (a, b) = spans[i].expect("needed shard has a span");
                                assert!(a <= s && s <= b);
                                out.extend_from_slice(
                                    &blocks[i][s as usize][x.trim(s, i, start, end)],
                                );
                            }
                        }
                        assert_eq!(
                            out,
                            &body[start as usize..end as usize],
                            "k={k} bs={bs} size={size} {start}..{end}"
                        );
                        // Spans are contiguous: needed in every stripe between.
                        for (i, sp) in spans.iter().enumerate() {
                            if let Some((a, b)) = sp {
                                for s in *a..=*b {
                                    assert!(x.needed_shards(s, start, end).contains(&i));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
