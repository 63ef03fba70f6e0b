//! Three real stores (real gRPC on 127.0.0.1, real RocksDB in temp dirs)
//! replicating one region, driven through `MetaClient` and a minimal
//! in-process PD that only routes (regions, stores, heartbeats).
//!
//! Tests are grouped by what they exercise; `harness` starts the cluster.

mod harness;

mod membership;
mod reads;
mod replication;
mod snapshots;
mod split_merge;
