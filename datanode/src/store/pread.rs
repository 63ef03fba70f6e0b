//! Reading a block into a fresh buffer without zeroing it first.
//!
//! Every GET reads each 256 KiB block into a new buffer (it becomes the
//! `Bytes` sent on the wire), and `vec![0; n]` writes those bytes once more
//! before `pread` overwrites them: a second pass over every byte served. std's
//! `read_buf` into uninitialised memory is not stable yet, so this is the one
//! small unsafe step: `pread(2)` into the vector's spare capacity, and the
//! length set only to what the kernel filled.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Exactly `len` bytes of `file` at `offset`, or `UnexpectedEof` if the file
/// ends first.
pub fn read_exact_at_uninit(file: &File, len: usize, offset: u64) -> io::Result<Vec<u8>> {
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
            libc::pread(
                fd,
                buf.as_mut_ptr().add(filled).cast::<libc::c_void>(),
                len - filled,
                at,
            )
        };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => filled += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
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
        assert_eq!(
            read_exact_at_uninit(&f, 262_144, 1000).unwrap(),
            &data[1000..263_144]
        );
        assert_eq!(read_exact_at_uninit(&f, 0, 5).unwrap(), Vec::<u8>::new());
        let short = read_exact_at_uninit(&f, 10, 299_995).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
    }
}
