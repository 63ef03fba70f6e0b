//! The Reed-Solomon codec (reed-solomon-erasure over GF(2^8), SIMD kernels
//! with the `simd-accel` feature; measured in ../shared/DEPENDENCIES.md and by
//! `kura bench ec`). k = 1 is plain replication: "parity" shards are copies,
//! so REPLICA3 bodies use the same read and heal paths as erasure-coded ones.
//! Where the CPU has GFNI and AVX-512, parity is computed by [`GfniParity`] instead
//! (same coefficients, same bytes; decision 0060).

use bytes::{Bytes, BytesMut};
use reed_solomon_erasure::galois_8::ReedSolomon;

use super::gfni::GfniParity;
use crate::crc::{crc32c, CheckedBlock};

#[derive(Debug, thiserror::Error)]
pub enum EcError {
    #[error("unsupported erasure code {k}+{m}")]
    Unsupported { k: usize, m: usize },
    #[error("stripe needs {need} shards, only {have} available")]
    TooFewShards { need: usize, have: usize },
    #[error("shard lengths differ within one stripe")]
    LengthMismatch,
    #[error("reed-solomon: {0:?}")]
    Codec(reed_solomon_erasure::Error),
}

#[derive(Debug)]
pub struct Codec {
    k: usize,
    m: usize,
    rs: Option<ReedSolomon>,
    /// The parity kernel, where this CPU runs it.
    gfni: Option<GfniParity>,
}

impl Codec {
    pub fn new(k: usize, m: usize) -> Result<Codec, EcError> {
        let mut codec = Codec::portable(k, m)?;
        codec.gfni = codec.rs.as_ref().and_then(GfniParity::new);
        Ok(codec)
    }

    /// The codec with reed-solomon-erasure's kernels only (benchmarks compare both).
    pub fn portable(k: usize, m: usize) -> Result<Codec, EcError> {
        if k == 0 || k + m > 255 {
            return Err(EcError::Unsupported { k, m });
        }
        let rs = if k == 1 || m == 0 {
            None
        } else {
            Some(ReedSolomon::new(k, m).map_err(|_| EcError::Unsupported { k, m })?)
        };
        Ok(Codec {
            k,
            m,
            rs,
            gfni: None,
        })
    }

    /// Whether parity is computed by the GFNI kernel.
    pub fn uses_gfni(&self) -> bool {
        self.gfni.is_some()
    }

    pub fn data_shards(&self) -> usize {
        self.k
    }

    pub fn parity_shards(&self) -> usize {
        self.m
    }

    /// Cuts `stripe` (at most k × `shard_len` bytes) into k data blocks of
    /// `shard_len` bytes (the tail zero-padded) and appends the m parity
    /// blocks. Full data blocks are zero-copy slices of `stripe`.
    pub fn encode(&self, stripe: &Bytes, shard_len: usize) -> Result<Vec<Bytes>, EcError> {
        self.encode_with(stripe, shard_len, None)
    }

    /// [`Codec::encode`], each block with its CRC32C: with the GFNI kernel, taken a
    /// column at a time while the kernel has the bytes in the cache (the sender then
    /// need not read them again just for that).
    pub fn encode_checked(
        &self,
        stripe: &Bytes,
        shard_len: usize,
    ) -> Result<Vec<CheckedBlock>, EcError> {
        let mut crcs = vec![0u32; self.k + self.m];
        let blocks = self.encode_with(stripe, shard_len, Some(&mut crcs))?;
        Ok(blocks
            .into_iter()
            .zip(crcs)
            .map(|(data, crc32c)| CheckedBlock { data, crc32c })
            .collect())
    }

    /// [`Codec::encode`]; fills `crcs` (k + m slots) when given.
    fn encode_with(
        &self,
        stripe: &Bytes,
        shard_len: usize,
        crcs: Option<&mut [u32]>,
    ) -> Result<Vec<Bytes>, EcError> {
        if shard_len == 0 || stripe.len() > self.k * shard_len {
            return Err(EcError::LengthMismatch);
        }
        let mut shards: Vec<Bytes> = Vec::with_capacity(self.k + self.m);
        for i in 0..self.k {
            let lo = (i * shard_len).min(stripe.len());
            let hi = ((i + 1) * shard_len).min(stripe.len());
            if hi - lo == shard_len {
                shards.push(stripe.slice(lo..hi));
            } else {
                let mut b = BytesMut::zeroed(shard_len);
                b[..hi - lo].copy_from_slice(&stripe[lo..hi]);
                shards.push(b.freeze());
            }
        }
        let Some(rs) = &self.rs else {
            // Replication: the "parity" blocks are the same bytes, checked once.
            for _ in 0..self.m {
                shards.push(shards[0].clone());
            }
            if let Some(crcs) = crcs {
                crcs.fill(crc32c(&shards[0]));
            }
            return Ok(shards);
        };
        let data: Vec<&[u8]> = shards.iter().map(|b| &b[..]).collect();
        let mut crcs = crcs;
        let gfni = self
            .gfni
            .as_ref()
            .and_then(|g| g.encode(&data, crcs.as_deref_mut()));
        // The GFNI kernel filled `crcs` itself; else they are taken below.
        let checked = gfni.is_some();
        let parity = match gfni {
            Some(p) => p,
            None => {
                // One zeroed allocation each (`vec![v; m]` would copy the first
                // into the rest); `encode_sep` overwrites them whole.
                let mut p: Vec<Vec<u8>> = (0..self.m).map(|_| vec![0u8; shard_len]).collect();
                rs.encode_sep(&data, &mut p).map_err(EcError::Codec)?;
                p
            }
        };
        shards.extend(parity.into_iter().map(Bytes::from));
        if let Some(crcs) = crcs.filter(|_| !checked) {
            for (slot, b) in crcs.iter_mut().zip(&shards) {
                *slot = crc32c(b);
            }
        }
        Ok(shards)
    }

    /// Fills in the missing data shards (indexes < k) of one stripe from any k
    /// present shards. `shards` has k + m slots; parity slots stay as given.
    pub fn reconstruct_data(&self, shards: &mut [Option<Bytes>]) -> Result<(), EcError> {
        let width = self.k + self.m;
        if shards.len() != width {
            return Err(EcError::LengthMismatch);
        }
        let have = shards.iter().filter(|s| s.is_some()).count();
        if shards[..self.k].iter().all(|s| s.is_some()) {
            return Ok(());
        }
        if have < self.k {
            return Err(EcError::TooFewShards { need: self.k, have });
        }
        let mut lens = shards.iter().flatten().map(|s| s.len());
        let len = lens.next().unwrap_or(0);
        if lens.any(|l| l != len) {
            return Err(EcError::LengthMismatch);
        }
        match &self.rs {
            None => {
                // Replication: any copy is the data.
                let copy = shards.iter().flatten().next().cloned();
                shards[0] = copy;
                Ok(())
            }
            Some(rs) => {
                let mut work: Vec<Option<Vec<u8>>> = shards
                    .iter()
                    .map(|s| s.as_ref().map(|b| b.to_vec()))
                    .collect();
                rs.reconstruct_data(&mut work).map_err(EcError::Codec)?;
                for (slot, rebuilt) in shards.iter_mut().zip(work).take(self.k) {
                    if slot.is_none() {
                        *slot = rebuilt.map(Bytes::from);
                    }
                }
                Ok(())
            }
        }
    }

    /// Every shard (data and parity) of one stripe from any k present ones:
    /// what a healer needs to rewrite a lost fragment.
    pub fn reconstruct_all(&self, shards: &mut [Option<Bytes>]) -> Result<(), EcError> {
        self.reconstruct_data(shards)?;
        if shards.iter().all(|s| s.is_some()) {
            return Ok(());
        }
        let Some(len) = shards[0].as_ref().map(|b| b.len()) else {
            return Err(EcError::LengthMismatch);
        };
        let data: Vec<Bytes> = shards[..self.k].iter().flatten().cloned().collect();
        let mut stripe = BytesMut::with_capacity(self.k * len);
        for d in &data {
            stripe.extend_from_slice(d);
        }
        let full = self.encode(&stripe.freeze(), len)?;
        for (slot, fresh) in shards.iter_mut().zip(full) {
            if slot.is_none() {
                *slot = Some(fresh);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripe(n: usize, seed: u8) -> Bytes {
        Bytes::from(
            (0..n)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn any_k_shards_rebuild_the_data() {
        for (k, m) in [(4usize, 2usize), (8, 3), (1, 2), (3, 0)] {
            let codec = Codec::new(k, m).unwrap();
            for len in [1usize, 5, 64, 100] {
                for data_len in [1, len * k / 2 + 1, len * k] {
                    let s = stripe(data_len, len as u8);
                    let shards = codec.encode(&s, len).unwrap();
                    assert_eq!(shards.len(), k + m);
                    assert!(shards.iter().all(|b| b.len() == len));
                    let joined: Vec<u8> = shards[..k].concat();
                    assert_eq!(&joined[..data_len], &s[..]);
                    assert!(joined[data_len..].iter().all(|&b| b == 0));
                    // Drop every combination of up to m shards.
                    for mask in 0u32..(1 << (k + m)) {
                        if mask.count_ones() as usize > m {
                            continue;
                        }
                        let mut got: Vec<Option<Bytes>> = shards
                            .iter()
                            .enumerate()
                            .map(|(i, b)| (mask & (1 << i) == 0).then(|| b.clone()))
                            .collect();
                        codec.reconstruct_all(&mut got).unwrap();
                        for (i, b) in got.iter().enumerate() {
                            assert_eq!(b.as_ref(), Some(&shards[i]), "{k}+{m} mask {mask:b}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn too_few_shards_is_an_error_not_garbage() {
        let codec = Codec::new(4, 2).unwrap();
        let shards = codec.encode(&stripe(400, 1), 100).unwrap();
        let mut got: Vec<Option<Bytes>> = shards.iter().cloned().map(Some).collect();
        got[0] = None;
        got[1] = None;
        got[4] = None;
        assert!(matches!(
            codec.reconstruct_data(&mut got),
            Err(EcError::TooFewShards { need: 4, have: 3 })
        ));
        let mut uneven: Vec<Option<Bytes>> = shards.iter().cloned().map(Some).collect();
        uneven[0] = None;
        uneven[5] = Some(Bytes::from_static(b"short"));
        assert!(matches!(
            codec.reconstruct_data(&mut uneven),
            Err(EcError::LengthMismatch)
        ));
        assert!(Codec::new(0, 2).is_err());
        assert!(codec.encode(&stripe(401, 1), 100).is_err());
    }
}
