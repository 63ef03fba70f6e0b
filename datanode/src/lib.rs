//! Kura data node: stores fragments (one shard of an object body) as checksummed blocks in
//! append-only segment files, serves them over gRPC (`kura.datanode.DataNode`), registers
//! with PD and heartbeats its capacity, and provides the client gateways use.
//!
//! Owns: the on-disk segment format (`store::format`, see docs/decisions/0004-segment-format.md),
//! the per-disk identity file (`store::identity`), the in-memory fragment index and its rebuild
//! at startup (`store::index`, `store::recovery`), the write/read/delete paths (`store`), the
//! gRPC service (`service`), the process lifecycle (`node`) and the client (`client`), with
//! the paths that bypass tonic's copies: raw fragment reads (`raw_read`, both sides),
//! PutFragment framed and decoded by hand (`raw_put`, both sides, over `grpc_frames`), and the
//! fragments and blocks of small bodies as calls on one stream per client and node (`calls`,
//! both sides; block reads over `grpc_frames` too).
//! Must not use: metashard or gateway code, RocksDB, or anything above it on the dependency
//! arrow; PD is reached only through `kura-pd-client`.
//! Start reading at `store/mod.rs` (the `Store` API), then `store/format.rs` for the bytes on
//! disk, then `service.rs` for how the wire maps onto the store.
//! Maintenance primitives (issue 6): `ListFragments` (index listing for heal/orphan GC),
//! scrub + quarantine (`store/scrub.rs`, `Store::quarantine`), compaction
//! (`store/compact.rs`), run in the background by `maintenance`.
//! Not yet here: a persisted index checkpoint; healing and GC themselves live in their
//! callers.

pub mod calls;
pub mod client;
pub mod crc;
pub mod disk_health;
pub mod ec;
pub mod error;
mod grpc_frames;
pub mod maintenance;
mod metrics;
pub mod node;
pub mod raw_put;
pub mod raw_read;
pub mod repair;
pub mod service;
pub mod store;

pub use client::{DataNodeClient, DataNodeError, PgFilter};
pub use error::{Error, StoreError};
pub use maintenance::Maintenance;
pub use node::{run, serve, Config, DEFAULT_MIN_FREE_BYTES, DEFAULT_SEGMENT_SIZE};
pub use repair::Repair;
pub use store::{DirectIo, Store, StoreOptions};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
