//! What every operation needs: the three clients and the gateway's limits.

use std::sync::Arc;

use kura_datanode::client::DataNodeClient;
use kura_pd_client::PdClient;

use crate::meta::Meta;
use crate::placement::PlacementCache;

/// S3 limits (as AWS).
pub const MAX_KEY_LEN: usize = 1024;
pub const MAX_SINGLE_PUT: u64 = 5 << 30;
pub const MAX_PART_SIZE: u64 = 5 << 30;
pub const MIN_PART_SIZE: u64 = 5 << 20;
pub const MAX_PART_NUMBER: i32 = 10_000;

pub struct Ctx {
    pub meta: Meta,
    pub data: Arc<DataNodeClient>,
    pub pd: PdClient,
    pub placement: Arc<PlacementCache>,
    /// Bodies of at most this many bytes live in the metadata record.
    pub inline_threshold: usize,
    /// Bytes of one fragment block.
    pub block_size: usize,
    /// Durable fragments needed before a commit; `None` = k + 1.
    pub write_quorum: Option<usize>,
    /// Region reported to clients.
    pub region: String,
}

impl Ctx {
    /// The write quorum for a map with `k` data and `m` parity shards:
    /// configured value clamped to [k, k+m], default k+1 (at most k+m).
    pub fn quorum(&self, k: usize, m: usize) -> usize {
        let q = self.write_quorum.unwrap_or(k + 1);
        q.clamp(k.max(1), k + m)
    }
}
