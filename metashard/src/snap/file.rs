//! The snapshot file format (decision 0018).
//!
//! ```text
//! file   = MAGIC record*
//! MAGIC  = "KURASNP1"
//! record = cf:u8 key_len:u32le value_len:u32le key value
//! ```
//!
//! Records are in CF order, then key order (what a RocksDB iterator gives),
//! so applying is a sequential read. Size and CRC32C of the whole file are
//! not in the file: they travel in the `SnapshotDescriptor` the raft
//! message carries, which is what the receiver checks the bytes against.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use kura_proto::metashard::Cf;

use super::SnapError;

pub const MAGIC: &[u8; 8] = b"KURASNP1";

/// The largest key plus value a record may hold: every pair came from one
/// raft entry (`fsm::validate::MAX_ENTRY_BYTES`). A record claiming more is
/// corrupt, and is refused before anything is allocated for it.
pub const MAX_RECORD_BYTES: usize = crate::fsm::validate::MAX_ENTRY_BYTES;

/// A running CRC32C (the checksum of every snapshot file).
pub struct Crc(crc_fast::Digest);

impl Crc {
    pub fn new() -> Self {
        Crc(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }

    pub fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }

    pub fn finish(&self) -> u32 {
        self.0.finalize() as u32
    }
}

impl Default for Crc {
    fn default() -> Self {
        Crc::new()
    }
}

/// Writes a snapshot file, counting its size and checksum.
pub struct SnapWriter {
    out: BufWriter<File>,
    crc: Crc,
    size: u64,
    keys: u64,
}

impl SnapWriter {
    pub fn create(path: &Path) -> Result<Self, SnapError> {
        let f = File::create(path).map_err(|e| SnapError::io(path, e))?;
        let mut w = SnapWriter {
            out: BufWriter::with_capacity(1 << 20, f),
            crc: Crc::new(),
            size: 0,
            keys: 0,
        };
        w.write(MAGIC).map_err(|e| SnapError::io(path, e))?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b)?;
        self.crc.update(b);
        self.size += b.len() as u64;
        Ok(())
    }

    pub fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        let (kl, vl) = (len32(key.len())?, len32(value.len())?);
        let mut head = [0u8; 9];
        head[0] = cf as u8;
        head[1..5].copy_from_slice(&kl.to_le_bytes());
        head[5..9].copy_from_slice(&vl.to_le_bytes());
        self.write(&head)?;
        self.write(key)?;
        self.write(value)?;
        self.keys += 1;
        Ok(())
    }

    /// Flushes and fsyncs; returns (size, crc32c, keys).
    pub fn finish(self) -> std::io::Result<(u64, u32, u64)> {
        let f = self.out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok((self.size, self.crc.finish(), self.keys))
    }
}

fn len32(n: usize) -> std::io::Result<u32> {
    u32::try_from(n).map_err(|_| std::io::Error::other("key or value over 4 GiB"))
}

/// Reads the records of a snapshot file in order, checking the checksum
/// and size at the end.
pub struct SnapReader {
    input: BufReader<File>,
    crc: Crc,
    size: u64,
    /// The file's length when opened: no record may claim past it.
    len: u64,
}

/// One record of a snapshot file.
pub struct Record {
    pub cf: Cf,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl SnapReader {
    pub fn open(path: &Path) -> Result<Self, SnapError> {
        let f = File::open(path).map_err(|e| SnapError::io(path, e))?;
        let len = f.metadata().map_err(|e| SnapError::io(path, e))?.len();
        let mut r = SnapReader {
            input: BufReader::with_capacity(1 << 20, f),
            crc: Crc::new(),
            size: 0,
            len,
        };
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)
            .map_err(|e| SnapError::io(path, e))?;
        if &magic != MAGIC {
            return Err(SnapError::Corrupt("bad magic".into()));
        }
        Ok(r)
    }

    fn read_exact(&mut self, b: &mut [u8]) -> std::io::Result<()> {
        self.input.read_exact(b)?;
        self.crc.update(b);
        self.size += b.len() as u64;
        Ok(())
    }

    /// The next record; `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<Record>, SnapError> {
        let mut head = [0u8; 9];
        // A clean end of file only at a record boundary.
        match self.input.read(&mut head[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => {
                self.crc.update(&head[..1]);
                self.size += 1;
            }
            Err(e) => return Err(SnapError::Io(e.to_string())),
        }
        let io = |e: std::io::Error| SnapError::Corrupt(format!("truncated record: {e}"));
        self.read_exact(&mut head[1..]).map_err(io)?;
        let cf = Cf::try_from(head[0] as i32)
            .map_err(|_| SnapError::Corrupt(format!("unknown cf {}", head[0])))?;
        let kl = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
        let vl = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes")) as usize;
        let left = self.len.saturating_sub(self.size);
        if kl + vl > MAX_RECORD_BYTES || (kl + vl) as u64 > left {
            return Err(SnapError::Corrupt(format!(
                "record of {kl}+{vl} bytes ({left} left in the file, at most {MAX_RECORD_BYTES})"
            )));
        }
        let mut key = vec![0u8; kl];
        self.read_exact(&mut key).map_err(io)?;
        let mut value = vec![0u8; vl];
        self.read_exact(&mut value).map_err(io)?;
        Ok(Some(Record { cf, key, value }))
    }

    /// (size, crc32c) of what was read so far.
    pub fn sum(&self) -> (u64, u32) {
        (self.size, self.crc.finish())
    }
}

/// (size, crc32c) of the file at `path`, read in 1 MiB pieces.
pub fn sum_of(path: &Path) -> Result<(u64, u32), SnapError> {
    let mut f = File::open(path).map_err(|e| SnapError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut crc, mut size) = (Crc::new(), 0u64);
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok((size, crc.finish())),
            Ok(n) => {
                crc.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SnapError::io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_roundtrip_and_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.snap");
        let mut w = SnapWriter::create(&p).unwrap();
        w.put(Cf::Meta, b"k1", b"v1").unwrap();
        w.put(Cf::Orphan, b"", &[7u8; 3000]).unwrap();
        let (size, crc, keys) = w.finish().unwrap();
        assert_eq!(keys, 2);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len() as u64, size);
        let mut c = Crc::new();
        c.update(&bytes);
        assert_eq!(c.finish(), crc);

        let mut r = SnapReader::open(&p).unwrap();
        let a = r.next_record().unwrap().unwrap();
        assert_eq!(
            (a.cf, a.key.as_slice(), a.value.as_slice()),
            (Cf::Meta, &b"k1"[..], &b"v1"[..])
        );
        let b = r.next_record().unwrap().unwrap();
        assert_eq!((b.cf, b.key.len(), b.value.len()), (Cf::Orphan, 0, 3000));
        assert!(r.next_record().unwrap().is_none());
        assert_eq!(r.sum(), (size, crc));

        // A truncated file is an error, not a shorter snapshot.
        std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
        let mut r = SnapReader::open(&p).unwrap();
        r.next_record().unwrap();
        assert!(r.next_record().is_err());
    }

    #[test]
    fn a_record_claiming_more_than_the_file_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.snap");
        let mut w = SnapWriter::create(&p).unwrap();
        w.put(Cf::Meta, b"k1", b"v1").unwrap();
        let (size, crc, _) = w.finish().unwrap();
        assert_eq!(sum_of(&p).unwrap(), (size, crc));
        // A header claiming a 4 GiB value after the real record.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.push(Cf::Meta as u8);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.push(b'k');
        std::fs::write(&p, &bytes).unwrap();
        let mut r = SnapReader::open(&p).unwrap();
        assert!(r.next_record().unwrap().is_some());
        match r.next_record() {
            Err(SnapError::Corrupt(m)) => assert!(m.contains("left in the file"), "{m}"),
            other => panic!("expected a corrupt record, got {:?}", other.map(|_| ())),
        }
        // One within the file but over the record cap.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(size as usize);
        bytes.push(Cf::Meta as u8);
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&((MAX_RECORD_BYTES + 1) as u32).to_le_bytes());
        bytes.resize(bytes.len() + MAX_RECORD_BYTES + 1, 0);
        std::fs::write(&p, &bytes).unwrap();
        let mut r = SnapReader::open(&p).unwrap();
        assert!(r.next_record().unwrap().is_some());
        assert!(matches!(r.next_record(), Err(SnapError::Corrupt(_))));
    }
}
