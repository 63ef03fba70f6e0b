//! Rate limit for background passes over a store (scrub, compaction): a budget in bytes
//! per second, checked between blocks, that also carries the pass's stop request.

use std::time::{Duration, Instant};

/// Rate limit for a pass: `consume(n)` blocks the calling thread until `n` more bytes fit
/// in `bytes_per_sec`, and reports false once `stop` says so. Time spent not consuming
/// (planning, a segment with nothing to copy) earns at most `MAX_CREDIT` of bytes ahead, so
/// a pass does not burst at full speed after a quiet stretch.
pub struct Pacer {
    bytes_per_sec: u64,
    /// When the next bytes may go.
    next: Instant,
    stop: Box<dyn Fn() -> bool + Send>,
}

const MAX_CREDIT: Duration = Duration::from_millis(100);

impl Pacer {
    /// `bytes_per_sec` 0 = no limit.
    pub fn new(bytes_per_sec: u64, stop: Box<dyn Fn() -> bool + Send>) -> Self {
        Pacer {
            bytes_per_sec,
            next: Instant::now(),
            stop,
        }
    }

    pub fn unlimited() -> Self {
        Pacer::new(0, Box::new(|| false))
    }

    /// Whether the pass was asked to stop.
    pub fn stopped(&self) -> bool {
        (self.stop)()
    }

    pub fn consume(&mut self, n: u64) -> bool {
        // Sleep in short steps so a stop request is seen within ~100 ms.
        const STEP: Duration = Duration::from_millis(100);
        if (self.stop)() {
            return false;
        }
        if self.bytes_per_sec == 0 {
            return true;
        }
        let now = Instant::now();
        if let Some(floor) = now.checked_sub(MAX_CREDIT) {
            self.next = self.next.max(floor);
        }
        let due = self.next;
        self.next += Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
        loop {
            let now = Instant::now();
            if now >= due {
                return true;
            }
            std::thread::sleep((due - now).min(STEP));
            if (self.stop)() {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn limits_rate_and_stops() {
        let mut p = Pacer::new(10 << 20, Box::new(|| false));
        let t = Instant::now();
        for _ in 0..3 {
            assert!(p.consume(1 << 20));
        }
        // 2 MiB must have been paid for before the third MiB: >= 200 ms at 10 MiB/s.
        assert!(t.elapsed() >= Duration::from_millis(190));
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let mut p = Pacer::new(1, Box::new(move || s2.load(Ordering::Relaxed)));
        assert!(p.consume(1 << 20));
        stop.store(true, Ordering::Relaxed);
        assert!(!p.consume(1));
    }

    #[test]
    fn a_quiet_stretch_earns_no_burst() {
        let mut p = Pacer::new(10 << 20, Box::new(|| false));
        std::thread::sleep(Duration::from_millis(400));
        // 400 ms idle would have paid for 4 MiB; at most MAX_CREDIT (1 MiB) is kept, so
        // the fourth MiB waits ~200 ms more.
        let t = Instant::now();
        for _ in 0..4 {
            assert!(p.consume(1 << 20));
        }
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
    }
}
