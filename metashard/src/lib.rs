//! Kura metashard: the multi-raft metadata KV engine (raft-rs + RocksDB), its
//! gRPC service and the routing client gateways use.
//!
//! Owns: the metadata key layout (`keys`), one RocksDB per store (`engine/`,
//! the only module that calls RocksDB), region peers and their raft storage
//! (`peer/`), the raftstore thread that drives all peers in batched rounds with
//! one synced write per round (`fsm/`), the state machine applying conditional
//! batches and region splits (`apply/`, entry format in `apply/cmd.rs`), raft
//! message streams between stores (`transport`), snapshot files generated,
//! streamed and applied off the raftstore thread (`snap`), the `Metashard` service
//! (`service`), automatic splits by size (`split_check`) and by load
//! (`load_split`), lease reads the service answers without the raftstore thread
//! (`local_read`), read/write flow counters reported to PD (`flow`), process lifecycle
//! and PD heartbeats (`server`), and `MetaClient` (`client`), whose point reads and
//! batches share one stream per store (`calls`).
//! Must not use: anything above it in the workspace (pd, gateway), or RocksDB
//! outside `engine/`. S3 semantics live in the gateway; records are opaque bytes here.
//! Start reading at `server::run`, then `fsm::poller` (the round), then
//! `peer` (Ready phases) and `apply` (what a committed batch does).

// `RegionError` is the wire type carried back to clients; the error paths are
// rare, so boxing it everywhere would only add noise.
#![allow(clippy::result_large_err)]

pub mod apply;
pub mod calls;
pub mod client;
pub mod engine;
mod errors;
pub mod flow;
pub mod fsm;
pub mod keys;
pub mod load_split;
pub mod local_read;
pub mod logger;
pub mod metrics;
pub mod peer;
pub mod server;
pub mod service;
pub mod snap;
pub mod split_check;
pub mod transport;

pub use client::{BatchOutcome, ClientError, MetaClient};
pub use errors::Error;
pub use server::{run, Config, Store, StoreOptions};
pub use transport::{PdStoreResolver, StaticResolver, StoreResolver};
