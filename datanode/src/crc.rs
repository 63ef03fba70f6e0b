//! CRC32C (Castagnoli), the checksum of every block on the wire and on disk.

use bytes::Bytes;

/// CRC32C of `bytes` (hardware-accelerated via `crc-fast`).
pub fn crc32c(bytes: &[u8]) -> u32 {
    // Crc32Iscsi is CRC-32C; the 64-bit return holds a 32-bit value.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// CRC32C of bytes fed in pieces (the same value as [`crc32c`] of them joined).
pub struct Crc32c(crc_fast::Digest);

impl Crc32c {
    pub fn new() -> Self {
        Crc32c(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn value(&self) -> u32 {
        self.0.finalize() as u32
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c::new()
    }
}

/// A block with its CRC32C, taken where the block was made (while its bytes are in
/// the cache) instead of where it is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckedBlock {
    pub data: Bytes,
    pub crc32c: u32,
}

impl CheckedBlock {
    /// `data` with its checksum computed now.
    pub fn new(data: Bytes) -> Self {
        let crc32c = crc32c(&data);
        CheckedBlock { data, crc32c }
    }
}

/// What a fragment writer takes as a block: one with its checksum, or plain bytes
/// (checksummed when sent).
pub trait IntoCheckedBlock: Send + 'static {
    fn into_checked(self) -> CheckedBlock;
    fn is_empty(&self) -> bool;
}

impl IntoCheckedBlock for CheckedBlock {
    fn into_checked(self) -> CheckedBlock {
        self
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl IntoCheckedBlock for Bytes {
    fn into_checked(self) -> CheckedBlock {
        CheckedBlock::new(self)
    }

    fn is_empty(&self) -> bool {
        Bytes::is_empty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_sum_to_the_whole() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let mut c = Crc32c::new();
        for piece in data.chunks(16_384 + 7) {
            c.update(piece);
        }
        assert_eq!(c.value(), crc32c(&data));
        assert_eq!(Crc32c::new().value(), crc32c(&[]));
    }

    #[test]
    fn known_vector() {
        // RFC 3720 B.4: CRC32C of "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }
}
