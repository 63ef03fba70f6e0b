//! `kura_lifecycle_*` metrics (docs/operations.md "Lifecycle") and the
//! dead-bucket sweeper's `kura_gateway_*` ones (decision 0037).

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge};

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // A second registration (tests creating several gateways) is harmless.
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help).expect("valid metric"))
}

pub static OBJECTS_EXPIRED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "kura_lifecycle_objects_expired_total",
        "Current versions expired (deleted, or hidden by a delete marker in a versioned bucket)",
    )
});
pub static VERSIONS_EXPIRED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "kura_lifecycle_versions_expired_total",
        "Noncurrent versions deleted for good",
    )
});
pub static MARKERS_REMOVED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "kura_lifecycle_delete_markers_removed_total",
        "Expired object delete markers (the only version left of a key) removed",
    )
});
pub static UPLOADS_ABORTED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "kura_lifecycle_uploads_aborted_total",
        "Incomplete multipart uploads aborted",
    )
});
pub static LOCKED_SKIPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "kura_lifecycle_locked_skipped_total",
        "Versions due for expiry left alone because object lock protects them",
    )
});
pub static KEYS_SCANNED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "kura_lifecycle_records_scanned_total",
        "Version and upload records the lifecycle worker read",
    )
});
pub static PASSES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "kura_lifecycle_passes_total",
        "Region passes this gateway completed",
    )
});
pub static PASSES_RESUMED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "kura_lifecycle_passes_resumed_total",
        "Region passes this gateway took over half done (after a restart or another gateway's death) and resumed at their saved key",
    )
});
pub static ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "kura_lifecycle_errors_total",
        "Lifecycle rounds or actions that failed (retried on the next pass)",
    )
});
pub static LEASES_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "kura_lifecycle_leases_dropped_total",
        "Lease records of regions that no longer exist (merged away) deleted",
    )
});
pub static DEAD_BUCKETS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "kura_gateway_dead_buckets_found_total",
        "Bucket ids found with keys left under them but no bucket record (a write or DeleteBucket interrupted by a crash)",
    )
});
pub static DEAD_RECORDS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "kura_gateway_dead_bucket_records_deleted_total",
        "Versions, delete markers, uploads and parts deleted from under dead bucket ids (their bodies go to GC)",
    )
});
pub static DELETES_FINISHED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "kura_gateway_bucket_deletes_finished_total",
        "DeleteBucket operations left half done by a dead gateway that the sweeper carried on (deleted or found not empty)",
    )
});
pub static LEASES_HELD: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "kura_lifecycle_leases_held",
            "Region leases this gateway holds right now (it alone acts on those regions)",
        )
        .expect("valid metric"),
    )
});
pub static PASS_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register(
        Histogram::with_opts(
            HistogramOpts::new(
                "kura_lifecycle_pass_duration_seconds",
                "Wall time of one region pass (scan and actions)",
            )
            .buckets(vec![
                0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0, 14400.0,
            ]),
        )
        .expect("valid metric"),
    )
});

/// Makes every metric visible (at 0) before the first action.
pub fn init() {
    for c in [
        &OBJECTS_EXPIRED,
        &VERSIONS_EXPIRED,
        &MARKERS_REMOVED,
        &UPLOADS_ABORTED,
        &LOCKED_SKIPPED,
        &KEYS_SCANNED,
        &PASSES,
        &PASSES_RESUMED,
        &ERRORS,
        &LEASES_DROPPED,
        &DEAD_BUCKETS,
        &DEAD_RECORDS,
        &DELETES_FINISHED,
    ] {
        LazyLock::force(c);
    }
    LazyLock::force(&LEASES_HELD);
    LazyLock::force(&PASS_SECONDS);
}
