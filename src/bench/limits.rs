//! This machine's own ceilings, measured in the same run as the benchmark so
//! Kura's figures can be printed as ratios of them: sequential disk write and
//! read, 4 KiB write+fdatasync rate, loopback TCP throughput and the CPU a
//! MiB costs each side of it, MD5 and CRC32C throughput.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// Also the `limits` of a JSON report (`report::Report`), field for field.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Limits {
    pub disk_write_mib_s: f64,
    pub disk_read_mib_s: f64,
    pub fsync_per_s: f64,
    pub loopback_mib_s: f64,
    /// CPU of the sending thread per MiB over loopback TCP (on loopback the
    /// kernel's receive processing runs on the sender's CPU too).
    pub loopback_send_cpu_ms_per_mib: f64,
    /// CPU of the receiving thread per MiB (the copy out of the socket).
    pub loopback_recv_cpu_ms_per_mib: f64,
    pub md5_mib_s: f64,
    pub crc32c_mib_s: f64,
}

const MIB: f64 = 1024.0 * 1024.0;

/// Measures everything; `dir` must be on the disk the cluster uses.
pub fn measure(dir: &Path, disk_mib: usize) -> std::io::Result<Limits> {
    let (w, r) = disk_seq(dir, disk_mib)?;
    let tcp = loopback(1024)?;
    Ok(Limits {
        disk_write_mib_s: w,
        disk_read_mib_s: r,
        fsync_per_s: fsync_rate(dir, Duration::from_secs(2))?,
        loopback_mib_s: tcp.mib_s,
        loopback_send_cpu_ms_per_mib: tcp.send_cpu_ms_per_mib,
        loopback_recv_cpu_ms_per_mib: tcp.recv_cpu_ms_per_mib,
        md5_mib_s: md5_rate(Duration::from_secs(1)),
        crc32c_mib_s: crc32c_rate(Duration::from_secs(1)),
    })
}

fn disk_seq(dir: &Path, mib: usize) -> std::io::Result<(f64, f64)> {
    let path = dir.join(".kura-bench-disk");
    let block = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        for _ in 0..mib {
            f.write_all(&block)?;
        }
        f.sync_all()?;
    }
    let write = mib as f64 / start.elapsed().as_secs_f64();
    let mut f = OpenOptions::new().read(true).open(&path)?;
    // Drop the file from the page cache so the read hits the disk.
    // SAFETY: advisory call on an fd we own.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let read = total as f64 / MIB / start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok((write, read))
}

fn fsync_rate(dir: &Path, dur: Duration) -> std::io::Result<f64> {
    let path = dir.join(".kura-bench-fsync");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let block = [7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// One loopback TCP stream's rate and the CPU each side spent per MiB.
struct Loopback {
    mib_s: f64,
    send_cpu_ms_per_mib: f64,
    recv_cpu_ms_per_mib: f64,
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec we own; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sends `mib` MiB over one loopback TCP connection in 1 MiB writes, read
/// back in 1 MiB reads by a second thread (as a store's nodes send blocks).
fn loopback(mib: usize) -> std::io::Result<Loopback> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sink = std::thread::spawn(move || -> std::io::Result<(usize, Duration)> {
        let (mut s, _) = listener.accept()?;
        let cpu0 = thread_cpu();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok((total, thread_cpu().saturating_sub(cpu0)));
            }
            total += n;
        }
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let block = vec![1u8; 1 << 20];
    let start = Instant::now();
    let cpu0 = thread_cpu();
    for _ in 0..mib {
        s.write_all(&block)?;
    }
    let send_cpu = thread_cpu().saturating_sub(cpu0);
    drop(s);
    let (got, recv_cpu) = sink
        .join()
        .map_err(|_| std::io::Error::other("sink thread panicked"))??;
    let got_mib = (got as f64 / MIB).max(1.0);
    Ok(Loopback {
        mib_s: got as f64 / MIB / start.elapsed().as_secs_f64(),
        send_cpu_ms_per_mib: send_cpu.as_secs_f64() * 1e3 / got_mib,
        recv_cpu_ms_per_mib: recv_cpu.as_secs_f64() * 1e3 / got_mib,
    })
}

/// MD5 MiB/s on one core, hashing 1 MiB blocks for at least `min`.
pub fn md5_rate(min: Duration) -> f64 {
    use md5::{Digest, Md5};
    let block = vec![3u8; 1 << 20];
    let start = Instant::now();
    let mut h = Md5::new();
    let mut n = 0u64;
    while n < 64 || start.elapsed() < min {
        h.update(&block);
        n += 1;
    }
    std::hint::black_box(h.finalize());
    n as f64 / start.elapsed().as_secs_f64()
}

/// MiB/s of body bytes the gateway's MD5 lanes kernel hashes on one core
/// with `live` of its lanes busy (the others idle, as in a pass with fewer
/// bodies), or None where the CPU has no kernel. Next to [`md5_rate`] it says
/// from how many live lanes a run beats hashing one body at a time.
pub fn md5_lanes_rate(min: Duration, live: usize) -> Option<f64> {
    use kura_gateway::data::etag::x16;
    if !x16::available() || live == 0 || live > x16::LANES {
        return None;
    }
    const PER_LANE: usize = 1 << 20;
    let data = vec![9u8; live * PER_LANE];
    let mut ptrs = [x16::IDLE_BLOCK.as_ptr(); x16::LANES];
    let mut is_live = [false; x16::LANES];
    for l in 0..live {
        ptrs[l] = data[l * PER_LANE..].as_ptr();
        is_live[l] = true;
    }
    let mut state = x16::State16::default();
    let start = Instant::now();
    let mut runs = 0u64;
    while runs < 16 || start.elapsed() < min {
        // SAFETY: the kernel runs on this CPU (checked above); each live
        // pointer has PER_LANE bytes (whole blocks) after it, idle ones point
        // at the 64-byte idle block.
        unsafe { x16::compress_run(&mut state, &ptrs, &is_live, PER_LANE / 64) };
        runs += 1;
    }
    std::hint::black_box(&state);
    Some((runs * live as u64) as f64 / start.elapsed().as_secs_f64())
}

/// CRC32C MiB/s on one core (the data node's block checksum), for at least `min`.
pub fn crc32c_rate(min: Duration) -> f64 {
    let block = vec![5u8; 1 << 20];
    let start = Instant::now();
    let mut n = 0u64;
    let mut acc = 0u32;
    while n < 64 || start.elapsed() < min {
        acc ^= kura_datanode::crc::crc32c(std::hint::black_box(&block));
        n += 1;
    }
    std::hint::black_box(acc);
    n as f64 / start.elapsed().as_secs_f64()
}
