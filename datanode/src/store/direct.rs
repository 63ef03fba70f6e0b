//! O_DIRECT segment writes (decision 0042): the I/O mode, a 4 KiB-aligned staging buffer,
//! and a writer that only ever issues aligned writes through it.
//!
//! O_DIRECT wants the buffer address, the file offset and the length aligned to the
//! device's logical block size; 4 KiB is safe everywhere. Segment format 2 lets records
//! be followed by zero padding up to the next 4 KiB boundary, so every write starts at an
//! aligned offset and ends on one. Reads stay buffered, through the segment's ordinary
//! fd: Linux invalidates the page cache over a range written with O_DIRECT, so the two
//! fds stay coherent.

use std::alloc::{self, Layout};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;
use std::str::FromStr;

/// Alignment of every O_DIRECT write (offset, length and buffer address).
pub const ALIGN: u64 = 4096;

/// Staging buffer of an exclusive writer (and of compaction): whole buffers are written.
pub(super) const STAGING_LEN: usize = 1 << 20;
/// Staging buffer of the group-commit leader: most batches go out in one write.
pub(super) const GROUP_STAGING_LEN: usize = 4 << 20;

pub fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

pub fn align_down(x: u64) -> u64 {
    x / ALIGN * ALIGN
}

/// How a data node writes segment files (`kura datanode --direct-io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectIo {
    /// O_DIRECT where the filesystem supports it, buffered writes where it does not.
    #[default]
    Auto,
    /// O_DIRECT or fail (creating a segment errors on a filesystem without it).
    On,
    /// Buffered writes through the page cache (same on-disk format).
    Off,
}

impl FromStr for DirectIo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DirectIo::Auto),
            "on" => Ok(DirectIo::On),
            "off" => Ok(DirectIo::Off),
            other => Err(format!("{other:?}: expected auto, on or off")),
        }
    }
}

impl fmt::Display for DirectIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DirectIo::Auto => "auto",
            DirectIo::On => "on",
            DirectIo::Off => "off",
        })
    }
}

/// Opens the fd segment writes go through; `direct` adds O_DIRECT.
pub(super) fn open_writer(path: &Path, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

/// True for the error a filesystem without O_DIRECT gives (at open or at the first write).
pub(super) fn is_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// A heap buffer whose address is `ALIGN`-aligned and whose capacity is a multiple of it.
pub(super) struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub(super) fn new(cap: usize) -> Self {
        let cap = (align_up(cap.max(1) as u64)) as usize;
        let layout = Self::layout(cap);
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, cap, len: 0 }
    }

    /// A full buffer of zeros, `len` rounded up to `ALIGN`.
    pub(super) fn zeroed(len: usize) -> Self {
        let mut b = AlignedBuf::new(len);
        b.pad_to(b.cap);
        b
    }

    fn layout(cap: usize) -> Layout {
        // Cannot fail: ALIGN is a power of two and cap a small multiple of it.
        Layout::from_size_align(cap, ALIGN as usize).expect("aligned layout")
    }

    pub(super) fn capacity(&self) -> usize {
        self.cap
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn clear(&mut self) {
        self.len = 0;
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are initialised (written by extend/pad/fill).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Appends as much of `b` as fits; returns how many bytes were taken.
    pub(super) fn extend_some(&mut self, b: &[u8]) -> usize {
        let n = b.len().min(self.cap - self.len);
        // SAFETY: `len + n <= cap`; `b` cannot overlap a buffer we own mutably.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), self.ptr.as_ptr().add(self.len), n);
        }
        self.len += n;
        n
    }

    /// Zero-fills up to the next `ALIGN` boundary (the capacity is a multiple of it).
    pub(super) fn pad(&mut self) {
        self.pad_to(align_up(self.len as u64) as usize);
    }

    /// Zero-fills from `len` up to `end` (`len <= end <= cap`).
    fn pad_to(&mut self, end: usize) {
        assert!(self.len <= end && end <= self.cap);
        // SAFETY: `len..end` lies inside the allocation (checked above).
        unsafe {
            std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), 0, end - self.len);
        }
        self.len = end;
    }

    /// Makes the buffer hold `n` bytes read from `file` at `off`.
    fn fill_from(&mut self, file: &File, off: u64, n: usize) -> io::Result<()> {
        debug_assert!(n <= self.cap);
        // SAFETY: `n <= cap`; read_exact_at initialises all `n` bytes or fails, and on
        // failure `len` stays 0.
        self.len = 0;
        let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), n) };
        file.read_exact_at(dst, off)?;
        self.len = n;
        Ok(())
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) }
    }
}

/// Appends bytes to a file from an aligned offset, writing only whole aligned chunks:
/// bytes collect in the staging buffer, which goes out whenever it is full, and `finish`
/// pads the rest with zeros to the next boundary. Works the same on an O_DIRECT fd and on
/// a buffered one (then it merely batches small writes).
pub(super) struct StagedWriter {
    buf: AlignedBuf,
    /// File offset of `buf[0]`; always aligned.
    base: u64,
}

impl StagedWriter {
    pub(super) fn new(mut buf: AlignedBuf, at: u64) -> Self {
        debug_assert_eq!(at % ALIGN, 0, "staged writes start aligned");
        buf.clear();
        StagedWriter { buf, base: at }
    }

    /// Bytes that can be pushed before the staging buffer goes out.
    pub(super) fn room(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }

    /// Where the next pushed byte lands.
    pub(super) fn pos(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    pub(super) fn push(&mut self, file: &File, mut b: &[u8]) -> io::Result<()> {
        while !b.is_empty() {
            let n = self.buf.extend_some(b);
            b = &b[n..];
            if self.buf.len() == self.buf.capacity() {
                file.write_all_at(self.buf.as_slice(), self.base)?;
                self.base += self.buf.len() as u64;
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Pads to the next boundary with zeros and writes what is staged. Returns the padded
    /// end (the writer may go on from there).
    pub(super) fn finish(&mut self, file: &File) -> io::Result<u64> {
        self.buf.pad();
        if self.buf.len() > 0 {
            file.write_all_at(self.buf.as_slice(), self.base)?;
            self.base += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(self.base)
    }

    /// Moves the write position back to `to` (dropping what was pushed after it). If that
    /// is before the staged bytes, the partial block before `to` is read back through
    /// `reader` (the buffered fd) so the next write can start aligned again.
    pub(super) fn rewind(&mut self, reader: &File, to: u64) -> io::Result<()> {
        if to >= self.base {
            self.buf.len = ((to - self.base) as usize).min(self.buf.len);
            return Ok(());
        }
        let base = align_down(to);
        self.buf.fill_from(reader, base, (to - base) as usize)?;
        self.base = base;
        Ok(())
    }

    pub(super) fn into_buf(self) -> AlignedBuf {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpfile(dir: &Path, name: &str) -> (File, std::path::PathBuf) {
        let p = dir.join(name);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        (f, p)
    }

    #[test]
    fn aligned_buf_is_aligned_and_pads() {
        let mut b = AlignedBuf::new(5000);
        assert_eq!(b.capacity(), 8192);
        assert_eq!(b.as_slice().as_ptr() as usize % ALIGN as usize, 0);
        assert_eq!(b.extend_some(&[1; 10]), 10);
        b.pad();
        assert_eq!(b.len(), 4096);
        assert!(b.as_slice()[10..].iter().all(|&x| x == 0));
        assert_eq!(b.extend_some(&[2; 10_000]), 4096);
    }

    /// Every write the staged writer issues is aligned in offset and length, on a real
    /// O_DIRECT fd when the filesystem has it (it fails with EINVAL otherwise).
    #[test]
    fn staged_writes_are_aligned_for_small_large_and_odd_sizes() {
        let dir = tempfile::tempdir().unwrap();
        for (i, sizes) in [
            vec![1usize],
            vec![4095],
            vec![4096],
            vec![4097],
            vec![12, 70_000, 3, STAGING_LEN, STAGING_LEN + 1, 511],
            vec![3 * STAGING_LEN + 17],
        ]
        .into_iter()
        .enumerate()
        {
            let (reader, path) = tmpfile(dir.path(), &format!("f{i}"));
            let direct = open_writer(&path, true);
            let w = match direct {
                Ok(f) => f,
                Err(e) if is_unsupported(&e) => open_writer(&path, false).unwrap(),
                Err(e) => panic!("{e}"),
            };
            let mut sw = StagedWriter::new(AlignedBuf::new(STAGING_LEN), ALIGN);
            let mut expect = vec![0u8; ALIGN as usize];
            let mut n = 0u8;
            for &s in &sizes {
                let chunk: Vec<u8> = (0..s)
                    .map(|_| {
                        n = n.wrapping_add(7) | 1; // never zero: padding is visible
                        n
                    })
                    .collect();
                sw.push(&w, &chunk).unwrap();
                expect.extend_from_slice(&chunk);
            }
            assert_eq!(sw.pos(), expect.len() as u64);
            let end = sw.finish(&w).unwrap();
            assert_eq!(end, align_up(expect.len() as u64));
            let got = std::fs::read(&path).unwrap();
            assert_eq!(got.len() as u64, end, "{sizes:?}");
            assert_eq!(
                &got[ALIGN as usize..expect.len()],
                &expect[ALIGN as usize..]
            );
            assert!(got[expect.len()..].iter().all(|&b| b == 0), "zero padding");
            drop(reader);
        }
    }

    #[test]
    fn rewind_reads_back_the_partial_block() {
        let dir = tempfile::tempdir().unwrap();
        let (reader, path) = tmpfile(dir.path(), "r");
        let w = open_writer(&path, false).unwrap();
        let mut sw = StagedWriter::new(AlignedBuf::new(8192), 0);
        sw.push(&w, &[5u8; 10_000]).unwrap(); // 8192 written, 1808 staged
        sw.rewind(&reader, 9000).unwrap(); // inside the staged part
        assert_eq!(sw.pos(), 9000);
        sw.rewind(&reader, 5000).unwrap(); // inside the written part
        assert_eq!(sw.pos(), 5000);
        sw.push(&w, &[6u8; 100]).unwrap();
        let end = sw.finish(&w).unwrap();
        assert_eq!(end, 8192);
        let got = std::fs::read(&path).unwrap();
        assert!(got[..5000].iter().all(|&b| b == 5));
        assert!(got[5000..5100].iter().all(|&b| b == 6));
        assert!(got[5100..8192].iter().all(|&b| b == 0));
    }

    #[test]
    fn direct_io_flag_parses() {
        for m in [DirectIo::Auto, DirectIo::On, DirectIo::Off] {
            assert_eq!(m.to_string().parse::<DirectIo>(), Ok(m));
        }
        assert!("yes".parse::<DirectIo>().is_err());
    }
}
