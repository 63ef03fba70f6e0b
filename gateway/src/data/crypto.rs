//! Encryption of bodies at rest (SSE-C and SSE-S3, docs/decisions/0029).
//!
//! A body is sealed as a sequence of chunks: every `chunk_size` plaintext
//! bytes (the last chunk may be shorter) become AES-256-GCM ciphertext
//! followed by its 16-byte tag. The nonce is the chunk index (plus a flag on
//! the last chunk), which is safe because every body — each PUT, each part,
//! each copy — has its own data key: SSE-S3 draws a random one and stores it
//! wrapped by the master key; SSE-C derives one from the customer key and a
//! random per-body salt. A nonce therefore never repeats under one key.
//!
//! Sealing happens before the data path cuts the body into stripes, so the
//! data nodes (and the metadata record, for inline bodies) only ever hold
//! ciphertext; a range read maps the plaintext range onto whole chunks, reads
//! just those, checks each chunk's tag and trims. A chunk whose tag does not
//! verify is a corruption error: its bytes are never sent.
//!
//! AES-GCM comes from `ring` (already the access-key sealer's, constant
//! time, hardware AES when the CPU has it).

use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use kura_proto::meta::SseBody;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::error::{GwError, GwResult};

/// Plaintext bytes per sealed chunk of new bodies. Small enough that a
/// range read decrypts at most 64 KiB it does not need on either side,
/// large enough that the tags cost 0.02 %.
pub const CHUNK_SIZE: u32 = 64 * 1024;
/// AES-GCM tag bytes after each chunk.
pub const TAG_LEN: u64 = 16;
pub const KEY_LEN: usize = 32;

const CHECK_LABEL: &[u8] = b"kura sse-c check v1\0";
const BODY_LABEL: &[u8] = b"kura sse-c body v1\0";
const WRAP_AAD: &[u8] = b"kura sse-s3 data key v1";
const KEY_ID_LABEL: &[u8] = b"kura master key id v1\0";

/// `n` bytes from the system's secure random generator.
pub fn random_bytes<const N: usize>() -> GwResult<[u8; N]> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| GwError::Internal("the system random generator failed".into()))?;
    Ok(out)
}

/// The AES-256-GCM key of one body and its chunk size.
pub struct BodyCipher {
    key: LessSafeKey,
    chunk: u32,
}

impl std::fmt::Debug for BodyCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BodyCipher(chunk {})", self.chunk)
    }
}

impl PartialEq for BodyCipher {
    /// Ciphers are compared by identity only (for `reader`'s derived
    /// equality in tests): two distinct ciphers are never "equal".
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl BodyCipher {
    pub fn new(key: &[u8; KEY_LEN], chunk: u32) -> GwResult<Self> {
        if chunk == 0 {
            return Err(GwError::Internal("encrypted body has chunk size 0".into()));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| GwError::Internal("AES-256-GCM rejected a 32-byte key".into()))?;
        Ok(BodyCipher {
            key: LessSafeKey::new(unbound),
            chunk,
        })
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk
    }

    fn nonce(index: u64, last: bool) -> Nonce {
        let mut n = [0u8; NONCE_LEN];
        n[..8].copy_from_slice(&index.to_be_bytes());
        n[NONCE_LEN - 1] = u8::from(last);
        Nonce::assume_unique_for_key(n)
    }

    /// Stored bytes of a body of `plain` plaintext bytes.
    pub fn sealed_len(&self, plain: u64) -> u64 {
        plain + plain.div_ceil(self.chunk as u64) * TAG_LEN
    }

    /// The sealed bytes to read for plaintext `range` of a body of `size`
    /// plaintext bytes, and the opener that turns them into that range.
    /// `range` must be non-empty and within `size`.
    pub fn open_range(self: &Arc<Self>, size: u64, range: Range<u64>) -> (Range<u64>, Opener) {
        let c = self.chunk as u64;
        let first = range.start / c;
        let last = range.end.saturating_sub(1) / c;
        let sealed = first * (c + TAG_LEN)..((last + 1) * (c + TAG_LEN)).min(self.sealed_len(size));
        let opener = Opener {
            cipher: self.clone(),
            size,
            index: first,
            skip: (range.start - first * c) as usize,
            remaining: range.end - range.start,
            buf: BytesMut::new(),
        };
        (sealed, opener)
    }
}

/// Seals a plaintext stream chunk by chunk.
pub struct Sealer {
    cipher: Arc<BodyCipher>,
    index: u64,
    buf: BytesMut,
}

impl Sealer {
    pub fn new(cipher: Arc<BodyCipher>) -> Self {
        Sealer {
            cipher,
            index: 0,
            buf: BytesMut::new(),
        }
    }

    /// Appends plaintext; every sealed chunk it completes is pushed to `out`.
    /// A full chunk is held back until more data arrives, since only then is
    /// it known not to be the last.
    pub fn push(&mut self, mut data: Bytes, out: &mut Vec<Bytes>) -> GwResult<()> {
        let c = self.cipher.chunk as usize;
        while !data.is_empty() {
            if self.buf.len() == c {
                out.push(self.seal(false)?);
            }
            let take = (c - self.buf.len()).min(data.len());
            if self.buf.capacity() < c + TAG_LEN as usize {
                self.buf.reserve(c + TAG_LEN as usize);
            }
            self.buf.extend_from_slice(&data[..take]);
            data.advance(take);
        }
        Ok(())
    }

    /// Seals the last chunk (nothing for an empty body).
    pub fn finish(mut self, out: &mut Vec<Bytes>) -> GwResult<()> {
        if !self.buf.is_empty() {
            out.push(self.seal(true)?);
        }
        Ok(())
    }

    fn seal(&mut self, last: bool) -> GwResult<Bytes> {
        let mut chunk = self.buf.split();
        self.cipher
            .key
            .seal_in_place_append_tag(
                BodyCipher::nonce(self.index, last),
                Aad::empty(),
                &mut chunk,
            )
            .map_err(|_| GwError::Internal("AES-GCM sealing failed".into()))?;
        self.index += 1;
        Ok(chunk.freeze())
    }
}

/// Opens the sealed chunks of one plaintext range (from `BodyCipher::open_range`).
pub struct Opener {
    cipher: Arc<BodyCipher>,
    size: u64,
    /// Index of the next chunk expected.
    index: u64,
    /// Plaintext bytes of the next chunk opened that precede the range.
    skip: usize,
    /// Plaintext bytes of the range not yet produced.
    remaining: u64,
    buf: BytesMut,
}

impl Opener {
    fn last_index(&self) -> u64 {
        self.size
            .div_ceil(self.cipher.chunk as u64)
            .saturating_sub(1)
    }

    /// Sealed bytes of chunk `i`.
    fn sealed_chunk_len(&self, i: u64) -> usize {
        let c = self.cipher.chunk as u64;
        let plain = c.min(self.size.saturating_sub(i * c));
        (plain + TAG_LEN) as usize
    }

    /// Takes sealed bytes in order; pushes the plaintext of the range they
    /// complete to `out`. Fails on a chunk whose tag does not verify.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Bytes>) -> GwResult<()> {
        self.buf.extend_from_slice(data);
        loop {
            if self.remaining == 0 {
                if !self.buf.is_empty() {
                    return Err(GwError::Internal(
                        "encrypted body read past its range".into(),
                    ));
                }
                return Ok(());
            }
            let want = self.sealed_chunk_len(self.index);
            if self.buf.len() < want {
                return Ok(());
            }
            let mut chunk = self.buf.split_to(want);
            let last = self.index == self.last_index();
            let plain_len = self
                .cipher
                .key
                .open_in_place(BodyCipher::nonce(self.index, last), Aad::empty(), &mut chunk)
                .map_err(|_| {
                    GwError::Internal(format!(
                        "chunk {} of an encrypted body failed authentication: corrupt data or a wrong key",
                        self.index
                    ))
                })?
                .len();
            chunk.truncate(plain_len);
            let mut plain = chunk.freeze();
            plain.advance(self.skip.min(plain.len()));
            self.skip = 0;
            if plain.len() as u64 > self.remaining {
                plain.truncate(self.remaining as usize);
            }
            self.remaining -= plain.len() as u64;
            self.index += 1;
            if !plain.is_empty() {
                out.push(plain);
            }
        }
    }

    /// Checks that the whole range was produced.
    pub fn finish(&self) -> GwResult<()> {
        if self.remaining > 0 || !self.buf.is_empty() {
            return Err(GwError::Internal(format!(
                "encrypted body ended {} bytes short of its range",
                self.remaining
            )));
        }
        Ok(())
    }
}

/// A body about to be written encrypted: its cipher and what the record
/// stores about it.
#[derive(Debug)]
pub struct NewBody {
    pub cipher: Arc<BodyCipher>,
    pub record: SseBody,
    /// SSE-C: the ETag must not be the plaintext's MD5 (it would let anyone
    /// without the key confirm a guessed content), as in AWS.
    pub opaque_etag: bool,
}

/// HMAC-SHA256 of `label || salt` under the customer key.
fn customer_mac(customer_key: &[u8; KEY_LEN], label: &[u8], salt: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, customer_key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(label);
    ctx.update(salt);
    ctx.sign()
}

/// What an SSE-C object stores to tell a wrong customer key from the right one.
pub fn customer_key_check(customer_key: &[u8; KEY_LEN], salt: &[u8]) -> Vec<u8> {
    customer_mac(customer_key, CHECK_LABEL, salt)
        .as_ref()
        .to_vec()
}

/// Whether `customer_key` is the one `check` was made with (constant time).
pub fn customer_key_matches(customer_key: &[u8; KEY_LEN], salt: &[u8], check: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, customer_key);
    let mut msg = Vec::with_capacity(CHECK_LABEL.len() + salt.len());
    msg.extend_from_slice(CHECK_LABEL);
    msg.extend_from_slice(salt);
    hmac::verify(&key, &msg, check).is_ok()
}

/// The data key of one SSE-C body: derived from the customer key and the
/// body's random salt, so no two bodies share a key.
pub fn customer_body_key(customer_key: &[u8; KEY_LEN], salt: &[u8]) -> [u8; KEY_LEN] {
    let tag = customer_mac(customer_key, BODY_LABEL, salt);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The cluster master key wrapping SSE-S3 data keys (the same on every gateway).
pub struct MasterKey {
    id: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    pub fn new(raw: &[u8; KEY_LEN]) -> Self {
        // A public fingerprint of the key: records name the key that wrapped
        // their data key, so a rotated-out key can still be found by id.
        let mut h = Sha256::new();
        h.update(KEY_ID_LABEL);
        h.update(raw);
        let id = hex::encode(&h.finalize()[..8]);
        let unbound = UnboundKey::new(&AES_256_GCM, raw).expect("AES-256-GCM takes a 32-byte key");
        MasterKey {
            id,
            key: LessSafeKey::new(unbound),
        }
    }

    /// Parses a master key file: 32 raw bytes, or their base64 (standard
    /// alphabet, whitespace around it ignored).
    pub fn parse_file(content: &[u8]) -> Result<[u8; KEY_LEN], String> {
        if let Ok(raw) = <[u8; KEY_LEN]>::try_from(content) {
            return Ok(raw);
        }
        use base64::Engine;
        let text = std::str::from_utf8(content)
            .map_err(|_| "neither 32 raw bytes nor base64 text".to_string())?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("not 32 raw bytes, and not base64: {e}"))?;
        <[u8; KEY_LEN]>::try_from(bytes.as_slice())
            .map_err(|_| format!("base64 of {} bytes; a master key is 32", bytes.len()))
    }

    /// A new random key in the file format (base64 and a newline).
    pub fn new_key_file() -> String {
        use base64::Engine;
        let key: [u8; KEY_LEN] = rand::random();
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// 12-byte nonce || sealed data key || tag.
    pub fn wrap(&self, data_key: &[u8; KEY_LEN]) -> GwResult<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = random_bytes()?;
        let mut buf = data_key.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(WRAP_AAD),
                &mut buf,
            )
            .map_err(|_| GwError::Internal("wrapping a data key failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn unwrap(&self, wrapped: &[u8]) -> GwResult<[u8; KEY_LEN]> {
        let bad = || {
            GwError::Internal(format!(
                "a wrapped data key does not open with master key {} (corrupt record)",
                self.id
            ))
        };
        if wrapped.len() != NONCE_LEN + KEY_LEN + TAG_LEN as usize {
            return Err(bad());
        }
        let (nonce, body) = wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut buf = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(WRAP_AAD), &mut buf)
            .map_err(|_| bad())?;
        <[u8; KEY_LEN]>::try_from(&plain[..]).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(chunk: u32) -> Arc<BodyCipher> {
        Arc::new(BodyCipher::new(&[7u8; 32], chunk).unwrap())
    }

    fn seal_all(c: &Arc<BodyCipher>, data: &[u8], step: usize) -> Vec<u8> {
        let mut s = Sealer::new(c.clone());
        let mut out = Vec::new();
        for piece in data.chunks(step.max(1)) {
            s.push(Bytes::copy_from_slice(piece), &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        out.concat()
    }

    fn open(
        c: &Arc<BodyCipher>,
        sealed: &[u8],
        size: u64,
        r: Range<u64>,
        step: usize,
    ) -> GwResult<Vec<u8>> {
        let (sr, mut o) = c.open_range(size, r);
        let mut out = Vec::new();
        for piece in sealed[sr.start as usize..sr.end as usize].chunks(step.max(1)) {
            o.push(piece, &mut out)?;
        }
        o.finish()?;
        Ok(out.concat())
    }

    #[test]
    fn round_trips_every_range_shape() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for chunk in [1u32, 7, 64, 1000, 4096] {
            let c = cipher(chunk);
            for step in [1usize, 13, 1000] {
                let sealed = seal_all(&c, &data, step);
                assert_eq!(sealed.len() as u64, c.sealed_len(data.len() as u64));
                assert_ne!(&sealed[..data.len().min(64)], &data[..data.len().min(64)]);
                for (a, b) in [
                    (0u64, 1000u64),
                    (0, 1),
                    (999, 1000),
                    (63, 65),
                    (100, 900),
                    (500, 501),
                ] {
                    let got = open(&c, &sealed, 1000, a..b, step).unwrap();
                    assert_eq!(
                        got,
                        &data[a as usize..b as usize],
                        "chunk {chunk} step {step} {a}..{b}"
                    );
                }
            }
        }
    }

    #[test]
    fn empty_body_is_empty() {
        let c = cipher(16);
        assert!(seal_all(&c, b"", 1).is_empty());
        assert_eq!(c.sealed_len(0), 0);
    }

    #[test]
    fn any_flipped_bit_or_wrong_key_is_refused() {
        let data = vec![42u8; 100];
        let c = cipher(32);
        let sealed = seal_all(&c, &data, 100);
        for i in [0usize, 31, 47, 48, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(open(&c, &bad, 100, 0..100, 100).is_err(), "byte {i}");
        }
        let other = Arc::new(BodyCipher::new(&[8u8; 32], 32).unwrap());
        assert!(open(&other, &sealed, 100, 0..100, 100).is_err());
        // Chunks swapped: their nonces no longer match.
        let mut swapped = sealed.clone();
        swapped[..48].copy_from_slice(&sealed[48..96]);
        swapped[48..96].copy_from_slice(&sealed[..48]);
        assert!(open(&c, &swapped, 100, 0..100, 100).is_err());
        // Truncated at a chunk boundary: the new last chunk lacks the last flag.
        assert!(open(&c, &sealed[..144], 96, 0..96, 100).is_err());
        // Short input is an error, not a short answer.
        let (r, mut o) = c.open_range(100, 0..100);
        let mut out = Vec::new();
        o.push(&sealed[r.start as usize..r.end as usize - 1], &mut out)
            .unwrap();
        assert!(o.finish().is_err());
    }

    #[test]
    fn customer_keys() {
        let k = [1u8; 32];
        let salt = [9u8; 32];
        let check = customer_key_check(&k, &salt);
        assert!(customer_key_matches(&k, &salt, &check));
        assert!(!customer_key_matches(&[2u8; 32], &salt, &check));
        assert!(!customer_key_matches(&k, &[0u8; 32], &check));
        assert_ne!(
            customer_body_key(&k, &salt),
            customer_body_key(&k, &[8u8; 32])
        );
        assert_ne!(customer_body_key(&k, &salt).to_vec(), check);
    }

    #[test]
    fn master_key_wraps_and_parses() {
        let m = MasterKey::new(&[3u8; 32]);
        let dk = [5u8; 32];
        let w = m.wrap(&dk).unwrap();
        assert_eq!(m.unwrap(&w).unwrap(), dk);
        assert_ne!(m.wrap(&dk).unwrap(), w, "random nonce per wrap");
        let other = MasterKey::new(&[4u8; 32]);
        assert!(other.unwrap(&w).is_err());
        assert_ne!(m.id(), other.id());
        assert_eq!(m.id().len(), 16);
        let mut bad = w.clone();
        bad[20] ^= 1;
        assert!(m.unwrap(&bad).is_err());
        assert!(m.unwrap(&w[..10]).is_err());

        assert_eq!(MasterKey::parse_file(&[1u8; 32]).unwrap(), [1u8; 32]);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode([2u8; 32]);
        assert_eq!(
            MasterKey::parse_file(format!("{b64}\n").as_bytes()).unwrap(),
            [2u8; 32]
        );
        assert!(MasterKey::parse_file(b"abc").is_err());
        let short = base64::engine::general_purpose::STANDARD.encode([2u8; 16]);
        assert!(MasterKey::parse_file(short.as_bytes()).is_err());
    }
}
