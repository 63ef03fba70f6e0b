//! The client side of PD: a connection that follows the PD endpoints, and the
//! region cache gateways and routing clients use to find a key's region leader.
//!
//! Owns: retries and endpoint failover for PD calls (`client`), the key → region
//! → leader cache with invalidation on routing errors (`region_cache`), the
//! process's mutual-TLS identity every internal channel and server uses (`tls`),
//! the restart-on-panic supervision of every role's background loops (`supervise`),
//! and the client half of the call streams to metadata stores and data nodes
//! (`call_table`).
//! Must not depend on any Kura crate but `kura-proto`: metashard, datanode, pd and
//! gateway all sit above it (see docs/decisions/0002-pd-client-crate.md).

pub mod call_table;
pub mod channel;
pub mod client;
pub mod cluster_id;
pub mod region_cache;
pub mod supervise;
pub mod tls;

pub use client::{PdClient, PdError};
pub use region_cache::{RegionCache, RegionRoute};
