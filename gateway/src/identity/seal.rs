//! Secrets at rest: access-key secrets are stored sealed with the cluster
//! key (AES-256-GCM, `ring`), never in the clear. The access key is the
//! associated data, so a sealed secret copied onto another key's record
//! does not open.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// The cluster key: 32 bytes, given to every gateway.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the system random generator failed")]
    Random,
    #[error("sealed secret does not open with this cluster key (wrong key or corrupt record)")]
    Open,
}

impl Sealer {
    pub fn new(cluster_key: &[u8; 32]) -> Self {
        let unbound =
            UnboundKey::new(&AES_256_GCM, cluster_key).expect("AES-256-GCM takes a 32-byte key");
        Sealer {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// A key derived from the root secret, for gateways started without a
    /// cluster key file (changing the root secret then makes stored secrets
    /// unreadable, hence the warning the gateway logs).
    pub fn derived_from_root(root_secret: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"kura cluster key v1\0");
        h.update(root_secret.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        Sealer::new(&key)
    }

    /// nonce (12 bytes) ++ ciphertext ++ tag.
    pub fn seal(&self, access_key: &str, secret: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut buf = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(access_key.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, access_key: &str, sealed: &[u8]) -> Result<String, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(access_key.as_bytes()), &mut buf)
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Open)
    }
}

/// Parses a cluster key file: 64 hex characters (whitespace around is ignored).
pub fn parse_key_file(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text.trim()).map_err(|e| format!("not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("expected 32 bytes (64 hex characters), got {}", b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let s = Sealer::new(&[7u8; 32]);
        let sealed = s.seal("AK1", "secret-value").unwrap();
        assert!(!sealed
            .windows(b"secret-value".len())
            .any(|w| w == b"secret-value"));
        assert_eq!(s.open("AK1", &sealed).unwrap(), "secret-value");
        // Bound to its access key, its cluster key, and its bytes.
        assert_eq!(s.open("AK2", &sealed), Err(SealError::Open));
        assert_eq!(
            Sealer::new(&[8u8; 32]).open("AK1", &sealed),
            Err(SealError::Open)
        );
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(s.open("AK1", &bad), Err(SealError::Open));
        assert_eq!(s.open("AK1", &[1, 2, 3]), Err(SealError::Open));
        // Two seals of one secret differ (fresh nonce).
        assert_ne!(sealed, s.seal("AK1", "secret-value").unwrap());
    }

    #[test]
    fn key_files() {
        let hex64 = "ab".repeat(32);
        assert_eq!(parse_key_file(&format!("{hex64}\n")).unwrap(), [0xab; 32]);
        assert!(parse_key_file("abcd").is_err());
        assert!(parse_key_file("zz").is_err());
    }
}
