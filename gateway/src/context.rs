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
    /// Per-bucket odds that a PUT creates its key (blind commits, decision 0053).
    pub fresh_keys: crate::s3::fresh_keys::FreshKeys,
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
    /// The cluster master key wrapping SSE-S3 data keys; `None`: SSE-S3 is refused.
    pub master_key: Option<Arc<crate::data::crypto::MasterKey>>,
}

impl Ctx {
    /// The write quorum of `group` (k data, m parity shards) while the slots
    /// for which `down(i)` holds are known unable to take a fragment: the
    /// configured value, or by default k + 1, lowered to k only while every
    /// member of the group in one zone is down, so writes go on through a
    /// whole-zone outage (the durability policy, docs/architecture.md).
    /// Always within [k, k+m].
    pub fn quorum(
        &self,
        k: usize,
        m: usize,
        group: &GroupView,
        down: impl Fn(usize) -> bool,
    ) -> usize {
        quorum_rule(self.write_quorum, k, m, group, down)
    }
}

/// [`Ctx::quorum`] without the context.
pub fn quorum_rule(
    configured: Option<usize>,
    k: usize,
    m: usize,
    group: &GroupView,
    down: impl Fn(usize) -> bool,
) -> usize {
    let q = match configured {
        Some(q) => q,
        None if group.whole_zone_down(down) => k,
        None => k + 1,
    };
    q.clamp(k.max(1), k + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4+2 over three zones, two members each (the dev cluster's EC_4_2).
    fn ec42() -> GroupView {
        GroupView {
            id: 0,
            nodes: (0..6).map(|i| Some(format!("n{i}"))).collect(),
            read_only: vec![false; 6],
            max_zone_share: 2,
            zones: ["z1", "z1", "z2", "z2", "z3", "z3"]
                .map(String::from)
                .to_vec(),
        }
    }

    #[test]
    fn k_plus_one_unless_a_whole_zone_is_down() {
        let g = ec42();
        assert_eq!(quorum_rule(None, 4, 2, &g, |_| false), 5, "healthy: k+1");
        assert_eq!(quorum_rule(None, 4, 2, &g, |i| i == 2), 5, "one node down");
        assert_eq!(
            quorum_rule(None, 4, 2, &g, |i| i == 0 || i == 2),
            5,
            "two nodes in two zones: still k+1 (the PUT fails rather than ack at k)"
        );
        assert_eq!(
            quorum_rule(None, 4, 2, &g, |i| i == 2 || i == 3),
            4,
            "zone z2 down"
        );
        // REPLICA3 over three zones: 2 copies, 1 with a zone down.
        let r3 = GroupView {
            id: 0,
            nodes: (0..3).map(|i| Some(format!("n{i}"))).collect(),
            read_only: vec![false; 3],
            max_zone_share: 1,
            zones: ["z1", "z2", "z3"].map(String::from).to_vec(),
        };
        assert_eq!(quorum_rule(None, 1, 2, &r3, |_| false), 2);
        assert_eq!(quorum_rule(None, 1, 2, &r3, |i| i == 1), 1);
        // A configured quorum is kept as given, within [k, k+m].
        assert_eq!(quorum_rule(Some(6), 4, 2, &g, |i| i == 2 || i == 3), 6);
        assert_eq!(quorum_rule(Some(9), 4, 2, &g, |_| false), 6);
        assert_eq!(quorum_rule(Some(1), 4, 2, &g, |_| false), 4);
    }
}
