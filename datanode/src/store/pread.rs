//! Reading a block into a fresh buffer without zeroing it first.
//!
//! Every GET reads each 256 KiB block into a new buffer (it becomes the
//! `Bytes` sent on the wire), and `vec![0; n]` writes those bytes once more
//! before `pread` overwrites them: a second pass over every byte served. std's
//! `read_buf` into uninitialised memory is not stable yet, so this is the one
//! small unsafe step: `pread(2)` into the vector's spare capacity, and the
//! length set only to what the kernel filled.
//!
//! A GET's blocks are mostly in the page cache; `Wait::No` reads them on the
//! async thread that asked (`preadv2(RWF_NOWAIT)`), sparing each block the
//! hop to a blocking thread and back, and only a block that would wait for
//! the disk goes to a blocking thread.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether to wait for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Read as `pread(2)` does (on a blocking thread).
    Yes,
    /// Only what the page cache holds (`preadv2(RWF_NOWAIT)`): anything that
    /// would go to the disk fails with `WouldBlock` at once. Safe on an
    /// async worker thread.
    No,
}

/// Set once the kernel or filesystem refused `RWF_NOWAIT`: every later
/// cached-only read then answers `WouldBlock` without a system call.
static NOWAIT_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Exactly `len` bytes of `file` at `offset`, or `UnexpectedEof` if the file
/// ends first; with `Wait::No`, `WouldBlock` unless all of them are in the
/// page cache.
pub fn read_exact_at_uninit(
    file: &File,
    len: usize,
    offset: u64,
    wait: Wait,
) -> io::Result<Vec<u8>> {
    if wait == Wait::No && NOWAIT_UNSUPPORTED.load(Ordering::Relaxed) {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let fd = file.as_raw_fd();
    let mut filled = 0usize;
    while filled < len {
        let at = offset
            .checked_add(filled as u64)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
        // SAFETY: the destination is the vector's own allocation, from
        // `filled` to its capacity `len`, which nothing else references; the
        // kernel writes at most `len - filled` bytes there.
        let n = unsafe {
            let dst = buf.as_mut_ptr().add(filled).cast::<libc::c_void>();
            match wait {
                Wait::Yes => libc::pread(fd, dst, len - filled, at),
                Wait::No => {
                    let iov = libc::iovec {
                        iov_base: dst,
                        iov_len: len - filled,
                    };
                    libc::preadv2(fd, &iov, 1, at, libc::RWF_NOWAIT)
                }
            }
        };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => filled += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN) if wait == Wait::No => {
                        return Err(io::ErrorKind::WouldBlock.into())
                    }
                    Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) if wait == Wait::No => {
                        NOWAIT_UNSUPPORTED.store(true, Ordering::Relaxed);
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    _ => return Err(e),
                }
            }
        }
    }
    // SAFETY: pread initialised every byte in 0..len (the loop above ends
    // only when `filled == len`).
    unsafe { buf.set_len(len) };
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_exactly_or_reports_the_short_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let f = File::open(&path).unwrap();
        for wait in [Wait::Yes, Wait::No] {
            // Just written: in the page cache, so a cached-only read gets it too.
            assert_eq!(
                read_exact_at_uninit(&f, 262_144, 1000, wait).unwrap(),
                &data[1000..263_144]
            );
            assert_eq!(
                read_exact_at_uninit(&f, 0, 5, wait).unwrap(),
                Vec::<u8>::new()
            );
            let short = read_exact_at_uninit(&f, 10, 299_995, wait).unwrap_err();
            assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
