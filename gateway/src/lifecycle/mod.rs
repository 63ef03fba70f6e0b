//! S3 bucket lifecycle (docs/decisions/0032): the stored rules
//! (`config.rs`: parsing and AWS's validation), what applies to what
//! (`rules.rs`, pure), the actions (`act.rs`: conditional single-region
//! batches through the versioning and multipart paths), per-region leases
//! with saved progress (`lease.rs`) and the background worker that ties
//! them together (`worker.rs`). The S3 operations are in `s3/lifecycle.rs`.

pub mod act;
pub mod config;
pub mod lease;
pub mod metrics;
pub mod rules;
pub mod worker;

use std::time::Duration;

/// How the worker runs (the `kura gateway --lifecycle-*` flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The length of a lifecycle "day" (86,400 s; shortened for tests).
    pub day: Duration,
    /// A region's next pass starts this long after its last one ended.
    pub interval: Duration,
    /// Most actions (deletes, markers, aborts) per second per gateway; 0: unpaced.
    pub ops_per_sec: u32,
    /// A region lease's term; renewed every third of it while a pass runs.
    pub lease_term: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            day: Duration::from_secs(86_400),
            interval: Duration::from_secs(3600),
            ops_per_sec: 100,
            lease_term: Duration::from_secs(30),
        }
    }
}

impl Settings {
    /// The settings for a `--lifecycle-interval-secs`: the lease term is
    /// 30 s (long against clock skew), shorter (down to 6 s) only when
    /// passes are seconds apart (tests), so a dead holder's pass is resumed soon.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(100));
        self.lease_term =
            (self.interval * 10).clamp(Duration::from_secs(6), Duration::from_secs(30));
        self
    }
}
