//! Prometheus metrics of the metashard store, in the default registry.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
};

const ONCE: &str = "metashard metrics are registered once per process";

pub static RAFT_MESSAGES_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kura_metashard_raft_messages_dropped_total",
        "Raft messages from the network dropped before raft-rs saw them, by reason \
         (fsm/validate.rs): forged, stale or malformed",
        &["reason"]
    )
    .expect(ONCE)
});
pub static CLIENT_REQUESTS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kura_metashard_client_requests_refused_total",
        "Client requests not proposed or read: `busy` (the store already had its most \
         requests in flight; answered ServerBusy at once) or `abandoned` (the client had \
         given up before the raftstore reached the request)",
        &["reason"]
    )
    .expect(ONCE)
});
pub static LOCAL_READS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_local_reads_total",
        "Reads the service answered from a leader's read delegate, without the raftstore thread"
    )
    .expect(ONCE)
});
pub static LEASE_READS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_lease_reads_total",
        "Reads a leader answered from its lease, without a ReadIndex round"
    )
    .expect(ONCE)
});
pub static READ_INDEX_RETRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_read_index_retries_total",
        "ReadIndex rounds that never came back within an election timeout; their reads went into a new round"
    )
    .expect(ONCE)
});
pub static PROPOSALS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("kura_metashard_proposals_total", "Batches proposed to raft").expect(ONCE)
});
pub static STREAM_CALLS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_stream_calls_total",
        "Client requests received as calls on a Calls stream rather than unary"
    )
    .expect(ONCE)
});
pub static CALL_STREAMS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "kura_metashard_call_streams",
        "Calls streams this store is serving (one per client process)"
    )
    .expect(ONCE)
});
pub static PROPOSALS_HELD: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_proposals_held_total",
        "Batches that waited for the leader's previous append to commit before being proposed"
    )
    .expect(ONCE)
});
pub static APPLY_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "kura_metashard_apply_duration_seconds",
        "Time to apply one committed batch",
        prometheus::exponential_buckets(0.00005, 2.0, 16).expect("valid buckets")
    )
    .expect(ONCE)
});
pub static ROUND_WRITES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kura_metashard_round_writes_total",
        "Poll rounds' RocksDB writes, by whether they were synced (new log entries, a vote or \
         a snapshot) or held only applied entries",
        &["sync"]
    )
    .expect(ONCE)
});
pub static READY_ROUNDS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_raft_ready_rounds_total",
        "Poll rounds that handled at least one Ready"
    )
    .expect(ONCE)
});
pub static LEADER_COUNT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("kura_metashard_leader_count", "Regions this store leads").expect(ONCE)
});
pub static REGION_COUNT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "kura_metashard_region_count",
        "Region peers hosted by this store"
    )
    .expect(ONCE)
});
pub static MERGES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_region_merges_total",
        "Region merges (CommitMerge) applied by this store"
    )
    .expect(ONCE)
});
pub static LOAD_SPLITS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_load_splits_total",
        "Splits this store proposed because a region it leads stayed busy (load_split)"
    )
    .expect(ONCE)
});
pub static SPLIT_CHECK_SCANS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_split_check_scans_total",
        "Regions the split checker counted by reading all their keys"
    )
    .expect(ONCE)
});
pub static SPLIT_CHECK_SCANNED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_split_check_scanned_bytes_total",
        "Bytes (keys and values) the split checker's scans read"
    )
    .expect(ONCE)
});
pub static SPLITS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_region_splits_total",
        "Region splits applied by this store"
    )
    .expect(ONCE)
});
pub static SNAPSHOTS_GENERATED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_snapshots_generated_total",
        "Raft snapshot files generated for followers"
    )
    .expect(ONCE)
});
pub static SNAPSHOTS_SENT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_snapshots_sent_total",
        "Raft snapshots sent to another store and accepted by it"
    )
    .expect(ONCE)
});
/// Snapshot transfers by direction (`send`, `receive`) and outcome
/// (`ok`, `failed`, `rejected`: bad size or checksum, or too many at once).
pub static SNAPSHOT_TRANSFERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kura_metashard_snapshot_transfers_total",
        "Raft snapshot transfers by direction and outcome",
        &["direction", "outcome"]
    )
    .expect(ONCE)
});
pub static SNAPSHOTS_APPLIED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_snapshots_applied_total",
        "Raft snapshots whose data is applied"
    )
    .expect(ONCE)
});
/// Snapshot file bytes by stage: `generated`, `sent`, `received`, `applied`.
pub static SNAPSHOT_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kura_metashard_snapshot_bytes_total",
        "Raft snapshot file bytes by stage",
        &["stage"]
    )
    .expect(ONCE)
});
/// Time of each snapshot stage: `generate`, `send`, `receive`, `apply`.
pub static SNAPSHOT_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "kura_metashard_snapshot_duration_seconds",
        "Time of one raft snapshot stage",
        &["stage"],
        prometheus::exponential_buckets(0.001, 2.0, 18).expect("valid buckets")
    )
    .expect(ONCE)
});
/// Vote requests for a region a local split was about to create, kept and
/// stepped once the split created it (`fsm::poller::EarlyVotes`).
pub static EARLY_VOTES_REPLAYED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_early_votes_replayed_total",
        "Vote requests kept until a local split created their region, then stepped"
    )
    .expect(ONCE)
});
/// Raft messages by outcome: `sent` or `dropped`.
pub static RAFT_MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kura_metashard_raft_messages_total",
        "Raft messages handed to the transport",
        &["outcome"]
    )
    .expect(ONCE)
});
/// Keys the `Scan` rpc's iterator read, by cf: with `first_per_object`
/// (decision 0034) one per listed object however many versions it has.
pub static SCAN_KEYS_READ: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kura_metashard_scan_keys_read_total",
        "Keys (iterator positions) read by client Scan requests, by column family",
        &["cf"]
    )
    .expect(ONCE)
});
/// Iterator seeks of the `Scan` rpc, by cf (one per request, plus one per
/// object skipped with `first_per_object`).
pub static SCAN_SEEKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kura_metashard_scan_seeks_total",
        "Iterator seeks made by client Scan requests, by column family",
        &["cf"]
    )
    .expect(ONCE)
});
/// Peers waiting for their first snapshot (`fsm::uninit`, decision 0045).
pub static UNINITIALIZED_PEERS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "kura_metashard_uninitialized_peers",
        "Empty region peers on this store waiting for their first snapshot (at most 128; \
         more are dropped as uninitialized_peers_full)"
    )
    .expect(ONCE)
});
pub static UNINITIALIZED_PEERS_DESTROYED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "kura_metashard_uninitialized_peers_destroyed_total",
        "Uninitialized peers destroyed because PD, asked after the grace, did not list them"
    )
    .expect(ONCE)
});
/// Snapshot files refused while or after receiving them, by reason:
/// `too_large` (the descriptor claims more than the cap), `descriptor` (it does
/// not match its message), `chunk` (a chunk over 1 MiB, or more chunks than the
/// size needs), `mismatch` (bytes received or checksum differ from the descriptor).
pub static SNAPSHOTS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kura_metashard_snapshots_refused_total",
        "Snapshot files refused on receive, by reason",
        &["reason"]
    )
    .expect(ONCE)
});
