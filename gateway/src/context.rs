//! What every operation needs: the three clients and the gateway's limits.

use std::sync::Arc;

use kura_datanode::client::DataNodeClient;
use kura_pd_client::PdClient;

use crate::authz::PolicyCache;
use crate::identity::{IdentityStore, RecordCache};
use crate::meta::Meta;
use crate::placement::{GroupView, PlacementCache};
use crate::usage::fold::Folder;
use crate::usage::quota::Quotas;
use kura_proto::meta::StorageClass;

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
    /// Tenants, users and access keys (cached).
    pub identity: Arc<IdentityStore>,
    /// Parsed bucket policies.
    pub policies: PolicyCache,
    /// Tenant and user records (quotas, rate limits), cached.
    pub records: RecordCache,
    /// Usage deltas waiting to be folded into their buckets' counters.
    pub folder: Arc<Folder>,
    /// Storage quota reservations and usage snapshots.
    pub quotas: Quotas,
    /// Requests and bytes per tenant, user and bucket through this gateway.
    pub traffic: Arc<crate::usage::traffic::Traffic>,
    /// Cluster-wide request-rate limits: this gateway's token buckets.
    pub ratelimit: Arc<crate::ratelimit::RateLimiter>,
    /// Bodies of at most this many bytes live in the metadata record.
    pub inline_threshold: usize,
    /// Target data bytes of one stripe (a fragment block is stripe / k).
    pub stripe_size: usize,
    /// Durable fragments needed before a commit; `None` = the default rule of [`Ctx::quorum`].
    pub write_quorum: Option<usize>,
    /// Storage class of new buckets (and of PUTs without x-amz-storage-class).
    pub default_class: StorageClass,
    /// A body's metadata commit must land within this of its fragments'
    /// creation (data nodes' orphan GC waits at least twice as long).
    pub max_commit_age: std::time::Duration,
    /// Region reported to clients.
    pub region: String,
}

impl Ctx {
    /// The write quorum of `group` (k data, m parity shards): the configured
    /// value, or by default k + 1 but no more than the fragments outside the
    /// group's most loaded zone, so writes go on through a whole-zone outage
    /// (4+2 over 3 zones: 4). Always within [k, k+m].
    pub fn quorum(&self, k: usize, m: usize, group: &GroupView) -> usize {
        let zone_safe = (k + m).saturating_sub(group.max_zone_share);
        let q = self.write_quorum.unwrap_or((k + 1).min(zone_safe));
        q.clamp(k.max(1), k + m)
    }
}
