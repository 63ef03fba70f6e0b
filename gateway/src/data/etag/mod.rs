//! The MD5 of an object body, its S3 ETag: the one pass over every byte a PUT
//! cannot avoid, and the costliest (decisions 0040 and 0051).
//!
//! Large bodies are hashed by the [`lanes`] engine, sixteen at a time in the
//! lanes of one AVX-512 register or two AVX2 ones ([`x16`]); [`BodyMd5`] decides
//! per body.
//! Everything else goes through [`EtagHasher`]: libcrypto's MD5
//! (hand-scheduled assembly) runs 1.2-1.3x faster than the pure-Rust `md-5`
//! on our machines. Where libcrypto refuses MD5 (a FIPS-only provider),
//! `md-5` takes over: the digest is the same, only slower.

pub mod lanes;
pub mod x16;

use bytes::Bytes;
use md5::Digest;
use openssl::hash::{Hasher, MessageDigest};

/// Incremental MD5 of a body.
pub struct EtagHasher(Inner);

enum Inner {
    Libcrypto(Hasher),
    Rust(md5::Md5),
}

impl EtagHasher {
    pub fn new() -> Self {
        match Hasher::new(MessageDigest::md5()) {
            Ok(h) => EtagHasher(Inner::Libcrypto(h)),
            Err(e) => {
                warn_fallback_once(&e);
                EtagHasher(Inner::Rust(md5::Md5::new()))
            }
        }
    }

    /// A hasher that has taken `chunks`.
    fn over(chunks: &[Bytes]) -> Result<Self, openssl::error::ErrorStack> {
        let mut h = Self::new();
        for c in chunks {
            h.update(c)?;
        }
        Ok(h)
    }

    pub fn update(&mut self, data: &[u8]) -> Result<(), openssl::error::ErrorStack> {
        match &mut self.0 {
            Inner::Libcrypto(h) => h.update(data),
            Inner::Rust(h) => {
                h.update(data);
                Ok(())
            }
        }
    }

    pub fn finish(self) -> Result<[u8; 16], openssl::error::ErrorStack> {
        match self.0 {
            Inner::Libcrypto(mut h) => {
                let d = h.finish()?;
                let mut out = [0u8; 16];
                out.copy_from_slice(&d);
                Ok(out)
            }
            Inner::Rust(h) => Ok(h.finalize().into()),
        }
    }
}

impl Default for EtagHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Why an ETag could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum EtagError {
    #[error("libcrypto MD5: {0}")]
    Libcrypto(#[from] openssl::error::ErrorStack),
    #[error(transparent)]
    Lanes(#[from] lanes::EngineStopped),
}

/// The MD5 of one streamed body. Chunks are held (shared, not copied) until
/// the body reaches [`lanes::JOB_BYTES`]; a body that ends before is hashed
/// on its own task, a larger one is queued to the lanes engine, where the
/// CPU has one.
pub struct BodyMd5 {
    len: u64,
    how: How,
}

enum How {
    Holding(Vec<Bytes>),
    Lanes(lanes::LaneBody),
    Task(EtagHasher),
}

impl BodyMd5 {
    pub fn new() -> Self {
        BodyMd5 {
            len: 0,
            how: How::Holding(Vec::new()),
        }
    }

    pub fn push(&mut self, chunk: &Bytes) -> Result<(), EtagError> {
        self.len += chunk.len() as u64;
        match &mut self.how {
            How::Holding(held) => {
                held.push(chunk.clone());
                if self.len >= lanes::JOB_BYTES as u64 {
                    let held = std::mem::take(held);
                    self.how = match lanes::Lanes::global() {
                        Some(engine) => {
                            let body = engine.register();
                            for c in held {
                                body.push(c);
                            }
                            How::Lanes(body)
                        }
                        None => How::Task(EtagHasher::over(&held)?),
                    };
                }
            }
            How::Lanes(body) => body.push(chunk.clone()),
            How::Task(h) => h.update(chunk)?,
        }
        Ok(())
    }

    /// The body has ended. Its digest is ready at once, or (from the lanes)
    /// when [`SealedMd5::finish`] is awaited: a PUT that needs the ETag only
    /// to commit asks for it once its fragments are durable, and the lanes
    /// have used the time to hash it beside other bodies.
    pub fn seal(self) -> Result<SealedMd5, EtagError> {
        Ok(SealedMd5(match self.how {
            How::Holding(held) => Sealed::Ready(EtagHasher::over(&held)?.finish()?),
            How::Lanes(body) => Sealed::Lanes(body.seal(), self.len),
            How::Task(h) => Sealed::Ready(h.finish()?),
        }))
    }

    /// The body's digest now: [`Self::seal`], then wait for it.
    pub async fn finish(self) -> Result<[u8; 16], EtagError> {
        self.seal()?.finish().await
    }
}

/// The MD5 of a body that has ended.
pub struct SealedMd5(Sealed);

enum Sealed {
    Ready([u8; 16]),
    Lanes(lanes::SealedBody, u64),
}

impl SealedMd5 {
    /// A digest already known.
    pub fn ready(digest: [u8; 16]) -> Self {
        SealedMd5(Sealed::Ready(digest))
    }

    pub async fn finish(self) -> Result<[u8; 16], EtagError> {
        match self.0 {
            Sealed::Ready(d) => Ok(d),
            Sealed::Lanes(body, len) => Ok(body.finish(len).await?),
        }
    }
}

impl Default for BodyMd5 {
    fn default() -> Self {
        Self::new()
    }
}

fn warn_fallback_once(e: &openssl::error::ErrorStack) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(error = %e, "libcrypto refuses MD5; hashing ETags with the slower md-5 crate");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rust_md5(data: &[u8]) -> [u8; 16] {
        md5::Md5::digest(data).into()
    }

    #[test]
    fn same_digest_as_md5_crate_over_any_chunking() {
        let data: Vec<u8> = (0..200_003u32)
            .map(|i| i.wrapping_mul(2_654_435_761) as u8)
            .collect();
        for chunk in [1, 63, 64, 65, 4096, 65_536, 200_003] {
            let mut h = EtagHasher::new();
            for c in data.chunks(chunk) {
                h.update(c).expect("update");
            }
            assert_eq!(
                h.finish().expect("finish"),
                rust_md5(&data),
                "chunk {chunk}"
            );
        }
        assert_eq!(
            hex::encode(EtagHasher::new().finish().expect("empty")),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
    }

    #[tokio::test]
    async fn body_md5_small_and_large_bodies() {
        for len in [
            0,
            1,
            4096,
            lanes::JOB_BYTES - 1,
            lanes::JOB_BYTES,
            3 * lanes::JOB_BYTES + 17,
        ] {
            let data: Vec<u8> = (0..len as u32).map(|i| (i % 251) as u8).collect();
            let data = Bytes::from(data);
            let mut h = BodyMd5::new();
            for off in (0..len).step_by(65_536) {
                h.push(&data.slice(off..(off + 65_536).min(len)))
                    .expect("push");
            }
            assert_eq!(
                h.finish().await.expect("finish"),
                rust_md5(&data),
                "len {len}"
            );
        }
    }

    #[test]
    fn the_fallback_hashes_the_same() {
        let mut h = EtagHasher(Inner::Rust(md5::Md5::new()));
        h.update(b"kura").expect("update");
        assert_eq!(h.finish().expect("finish"), rust_md5(b"kura"));
    }
}
