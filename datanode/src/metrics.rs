//! Prometheus metrics of the data node, registered in the default registry (the `kura`
//! binary serves it on /metrics). Process-wide: one data node per process in production.

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, register_gauge, register_histogram, register_int_counter,
    register_int_counter_vec, register_int_gauge, Gauge, Histogram, IntCounter, IntCounterVec,
    IntGauge,
};

pub static BYTES_WRITTEN: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_bytes_written_total",
        "Fragment payload bytes made durable"
    )
    .expect("metric registered once")
});
pub static BYTES_READ: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_bytes_read_total",
        "Block payload bytes read and verified"
    )
    .expect("metric registered once")
});
pub static FRAGMENTS_PUT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("kura_datanode_fragments_put_total", "Fragments committed")
        .expect("metric registered once")
});
/// Whole fragments received as calls on `PutFragments` streams (`calls`).
pub static STREAMED_FRAGMENT_PUTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_streamed_fragment_puts_total",
        "Whole fragments received as calls on PutFragments streams"
    )
    .expect("metric registered once")
});
/// Single blocks read as calls on `GetFragments` streams (`calls`).
pub static STREAMED_BLOCK_GETS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_streamed_block_gets_total",
        "Single blocks read as calls on GetFragments streams"
    )
    .expect("metric registered once")
});
/// `PutFragments` and `GetFragments` streams being served (about two per gateway process).
pub static CALL_STREAMS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "kura_datanode_call_streams",
        "PutFragments and GetFragments streams being served"
    )
    .expect("metric registered once")
});
/// Open fragment write streams: a writer (gateway or repair) is sending a body.
pub static FRAGMENT_PUTS_IN_PROGRESS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "kura_datanode_fragment_puts_in_progress",
        "Fragment write streams open (header received, not yet committed or aborted)"
    )
    .expect("metric registered once")
});
pub static FRAGMENTS_GET: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_fragments_get_total",
        "GetFragment requests served"
    )
    .expect("metric registered once")
});
pub static FRAGMENTS_DELETED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_fragments_deleted_total",
        "Tombstones written"
    )
    .expect("metric registered once")
});
/// `stage`: "receive" (sender's CRC does not match the bytes) or "read" (stored block is bad).
pub static CRC_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kura_datanode_crc_failures_total",
        "Blocks failing their CRC32C",
        &["stage"]
    )
    .expect("metric registered once")
});
pub static FSYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "kura_datanode_fsync_seconds",
        "Latency of segment fdatasync",
        exponential_buckets(0.0001, 2.0, 16).expect("valid buckets")
    )
    .expect("metric registered once")
});
/// Records made durable by one group-commit fdatasync (decision 0039); its `_count` is
/// the number of group fsyncs.
pub static GROUP_COMMIT_BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "kura_datanode_group_commit_batch_size",
        "Records (fragments, tombstones) made durable by one group-commit fdatasync",
        exponential_buckets(1.0, 2.0, 10).expect("valid buckets")
    )
    .expect("metric registered once")
});
/// From the leader's first byte written to the batch's fsync done.
pub static GROUP_COMMIT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "kura_datanode_group_commit_seconds",
        "Latency of one group-commit batch (write plus fdatasync)",
        exponential_buckets(0.0001, 2.0, 16).expect("valid buckets")
    )
    .expect("metric registered once")
});
pub static DISK_HEALTHY: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "kura_datanode_disk_healthy",
        "1 while the data dir's disk answers its probe (write, sync, read back), 0 while it does not (the node is then not ready and refuses writes)"
    )
    .expect("metric registered once")
});

pub static SEGMENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("kura_datanode_segments", "Segment files").expect("metric registered once")
});
pub static DIRECT_IO: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "kura_datanode_direct_io",
        "1 while segments are written with O_DIRECT, 0 through the page cache (--direct-io off, or a filesystem without O_DIRECT)"
    )
    .expect("metric registered once")
});
pub static USED_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("kura_datanode_used_bytes", "Bytes in segment files")
        .expect("metric registered once")
});
pub static DEAD_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "kura_datanode_dead_bytes",
        "Bytes of superseded or deleted records (reclaimable)"
    )
    .expect("metric registered once")
});
pub static SCRUB_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_scrub_bytes_total",
        "Block payload bytes verified by scrub"
    )
    .expect("metric registered once")
});
pub static SCRUB_FRAGMENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_scrub_fragments_total",
        "Fragments fully verified by scrub"
    )
    .expect("metric registered once")
});
pub static SCRUB_READ_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_scrub_read_errors_total",
        "Fragments scrub could not read (I/O error; not quarantined)"
    )
    .expect("metric registered once")
});
pub static CORRUPT_FRAGMENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_corrupt_fragments_total",
        "Fragments found corrupt (by scrub, a read or compaction) and quarantined"
    )
    .expect("metric registered once")
});
pub static SCRUB_PASS_PROGRESS: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "kura_datanode_scrub_pass_progress",
        "Fraction (0..1) of the fragments the running background scrub pass has visited"
    )
    .expect("metric registered once")
});
pub static SCRUB_LAST_PASS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "kura_datanode_scrub_last_pass_completed_seconds",
        "Unix time at which the last full background scrub pass completed (0: none yet)"
    )
    .expect("metric registered once")
});
pub static COMPACTED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_compacted_bytes_total",
        "Segment bytes reclaimed by compaction"
    )
    .expect("metric registered once")
});
pub static COMPACTIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_compactions_total",
        "Segments compacted (rewritten or removed)"
    )
    .expect("metric registered once")
});
pub static REPAIR_BACKLOG: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "kura_datanode_repair_backlog",
        "Bodies missing fragments in the placement groups this node repairs, as of the last pass"
    )
    .expect("metric registered once")
});
pub static URGENT_REBUILDS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_repair_urgent_bodies_total",
        "Bodies with no fragment to spare (exactly k left) whose rebuild a repair pass started before any other work"
    )
    .expect("metric registered once")
});

pub static REPAIRED_FRAGMENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_repaired_fragments_total",
        "Fragments rebuilt from the other fragments of their body and written to their member"
    )
    .expect("metric registered once")
});
pub static UNRECOVERABLE_BODIES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "kura_datanode_unrecoverable_bodies",
        "Referenced bodies with fewer than k fragments left, as of the last pass (data loss)"
    )
    .expect("metric registered once")
});
pub static ORPHANS_DELETED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_orphan_fragments_deleted_total",
        "Fragments deleted because no metadata references their body"
    )
    .expect("metric registered once")
});
pub static STRAYS_DELETED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_stray_fragments_deleted_total",
        "Local fragments deleted after their placement-group slot moved to another node that has them"
    )
    .expect("metric registered once")
});
pub static REPAIR_PASSES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_datanode_repair_passes_total",
        "Completed repair passes"
    )
    .expect("metric registered once")
});
