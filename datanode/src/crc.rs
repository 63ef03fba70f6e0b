//! CRC32C (Castagnoli), the checksum of every block on the wire and on disk.

/// CRC32C of `bytes` (hardware-accelerated via `crc-fast`).
pub fn crc32c(bytes: &[u8]) -> u32 {
    // Crc32Iscsi is CRC-32C; the 64-bit return holds a 32-bit value.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 3720 B.4: CRC32C of "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }
}
