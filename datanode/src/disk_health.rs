//! Whether this node's disk answers: a probe that goes through the disk path.
//!
//! A data node whose disk hangs (a dead controller, a stuck NFS or iSCSI
//! mount, a device that queues I/O forever) still answers everything served
//! from memory: its fragment index, the repair worker's liveness probe, PD
//! heartbeats. Callers would keep choosing it and each pay a stall deadline.
//! So every `interval` the node writes a small file in its data dir, syncs it
//! and reads it back on a blocking thread. The disk is *healthy* while the
//! last probe succeeded within `stale_after` and none has been running
//! longer than `deadline`. While it is not, the node is not `/ready`, refuses
//! new fragment writes and liveness probes with `Unavailable` (gateways then
//! place around it at once, other PG members take over its repair), and
//! `kura_datanode_disk_healthy` is 0. Reads are still tried: blocks in the
//! page cache may well be served.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics;

/// The probe file, in the data dir.
pub const PROBE_FILE: &str = "kura-disk-probe";
const PROBE_LEN: usize = 4096;

/// Probe timing.
#[derive(Clone, Copy, Debug)]
pub struct ProbeTiming {
    pub interval: Duration,
    /// A probe running longer than this makes the disk unhealthy at once.
    pub deadline: Duration,
    /// The last success must be this recent.
    pub stale_after: Duration,
}

impl Default for ProbeTiming {
    fn default() -> Self {
        ProbeTiming {
            interval: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
            stale_after: Duration::from_secs(10),
        }
    }
}

#[derive(Default)]
struct State {
    last_ok: Option<Instant>,
    running_since: Option<Instant>,
}

/// The disk's health as the latest probes found it.
pub struct DiskHealth {
    path: PathBuf,
    timing: ProbeTiming,
    state: Mutex<State>,
}

impl DiskHealth {
    /// Healthy from the start (the store was just opened from this disk).
    pub fn new(dir: &Path, timing: ProbeTiming) -> Arc<Self> {
        Arc::new(DiskHealth {
            path: dir.join(PROBE_FILE),
            timing,
            state: Mutex::new(State {
                last_ok: Some(Instant::now()),
                running_since: None,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two timestamps, always consistent: a panic elsewhere
        // while holding the lock cannot leave it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the disk answered recently and is not stuck now.
    pub fn ok(&self) -> bool {
        let s = self.state();
        let now = Instant::now();
        let fresh = s
            .last_ok
            .is_some_and(|t| now.duration_since(t) <= self.timing.stale_after);
        let stuck = s
            .running_since
            .is_some_and(|t| now.duration_since(t) > self.timing.deadline);
        fresh && !stuck
    }

    /// Probes every `interval` until `stop`; after each, publishes the
    /// verdict to `ready` and the gauge. Also wakes between probes to notice
    /// one that runs past its deadline.
    pub async fn run(self: Arc<Self>, ready: Arc<AtomicBool>, mut stop: watch::Receiver<bool>) {
        loop {
            let me = self.clone();
            self.state().running_since = Some(Instant::now());
            let mut probe = tokio::task::spawn_blocking(move || me.probe_once());
            let outcome = loop {
                tokio::select! {
                    r = &mut probe => break Some(r),
                    _ = tokio::time::sleep(self.timing.deadline) => self.publish(&ready),
                    _ = stop.wait_for(|s| *s) => break None,
                }
            };
            let Some(outcome) = outcome else { return };
            {
                let mut s = self.state();
                s.running_since = None;
                match outcome {
                    Ok(Ok(())) => s.last_ok = Some(Instant::now()),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, path = %self.path.display(), "disk probe failed")
                    }
                    Err(e) => tracing::warn!(error = %e, "disk probe task failed"),
                }
            }
            self.publish(&ready);
            tokio::select! {
                _ = tokio::time::sleep(self.timing.interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    fn publish(&self, ready: &AtomicBool) {
        let ok = self.ok();
        let was = ready.swap(ok, Ordering::SeqCst);
        if was != ok {
            if ok {
                tracing::info!("disk answers again: ready");
            } else {
                tracing::error!(path = %self.path.display(), "disk does not answer: not ready, refusing writes");
            }
        }
        metrics::DISK_HEALTHY.set(i64::from(ok));
    }

    /// Writes, syncs and reads back the probe file.
    fn probe_once(&self) -> io::Result<()> {
        fail::fail_point!("datanode::disk_probe", |_| Err(io::Error::other(
            "failpoint datanode::disk_probe"
        )));
        let stamp = crate::now_unix_ms().to_le_bytes();
        let mut buf = vec![0u8; PROBE_LEN];
        for chunk in buf.chunks_mut(stamp.len()) {
            chunk.copy_from_slice(&stamp[..chunk.len()]);
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.path)?;
        f.write_all_at(&buf, 0)?;
        f.sync_data()?;
        let mut back = vec![0u8; PROBE_LEN];
        f.read_exact_at(&mut back, 0)?;
        if back != buf {
            return Err(io::Error::other("probe file read back differs"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_working_disk_is_healthy_and_a_stuck_or_stale_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let timing = ProbeTiming {
            interval: Duration::from_millis(20),
            deadline: Duration::from_millis(200),
            stale_after: Duration::from_millis(500),
        };
        let h = DiskHealth::new(dir.path(), timing);
        assert!(h.ok());
        h.probe_once().unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(PROBE_FILE))
                .unwrap()
                .len(),
            4096
        );

        let ready = Arc::new(AtomicBool::new(false));
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(h.clone().run(ready.clone(), rx));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(ready.load(Ordering::SeqCst), "ready after a good probe");
        tx.send(true).unwrap();
        task.await.unwrap();

        // A probe running past its deadline.
        h.state().running_since = Some(Instant::now() - Duration::from_millis(300));
        assert!(!h.ok());
        // No success for longer than stale_after.
        let mut s = h.state();
        s.running_since = None;
        s.last_ok = Some(Instant::now() - Duration::from_millis(600));
        drop(s);
        assert!(!h.ok());
    }
}
