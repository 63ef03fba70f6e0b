//! Reads answered on the gRPC thread, without the raftstore thread (TiKV's
//! LocalReader).
//!
//! A leader whose lease is valid answers a read from its own engine (decision
//! 0013). Asking the raftstore thread for that go-ahead costs two thread
//! hand-offs per read — a quarter of a metashard's CPU under small GETs
//! (decision 0050). So at the end of every round the raftstore thread
//! publishes, per region it leads, a [`ReadDelegate`]: the region as applied
//! and how long reads may be answered alone. The service checks a read
//! against it and reads the engine at once; anything the delegate cannot
//! vouch for (no delegate, an epoch or key it does not match, the lease past
//! its first half) goes to the raftstore thread as before, which also renews
//! the lease.
//!
//! Why this is as safe as the raftstore path:
//! - A delegate exists only while the peer leads with a valid lease, has
//!   committed and applied an entry of its own term (so every write a former
//!   leader acknowledged is in the engine), is not merging, transferring
//!   leadership or applying a snapshot.
//! - It is published after the round's engine write, so the engine holds
//!   everything the delegate's region and applied state describe; writes are
//!   acknowledged only after their write, so a read that starts after an
//!   acknowledgement sees it.
//! - A leadership transfer revokes it before the transfer's first message
//!   can leave (the transferee may win at once, ignoring the lease); so does
//!   destroying the peer. Every other way to lose leadership needs another
//!   leader, which the lease rules out until it ends: the delegate stops at
//!   the lease's half.
//! - A split or merge applied in a round changes the epoch: until the round
//!   ends the delegate still describes the region before it, exactly as a
//!   read answered by the raftstore thread just before the apply would.

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use kura_proto::common::{Region, RegionEpoch};

use crate::flow::Flow;
use crate::fsm::ReadGrant;
use crate::load_split::{LoadSplitConfig, SharedLoad};

/// What the raftstore thread vouches for, for one region it leads.
pub struct ReadDelegate {
    /// The region as applied and written when this was published.
    pub region: Region,
    /// Reads may be answered alone before this (half the lease: the reads
    /// after it go to the raftstore thread, which renews the lease).
    pub serve_until: Instant,
    pub flow: Arc<Flow>,
    /// The leader's load tracker: local reads count for splits by load.
    pub load: Arc<SharedLoad>,
    pub load_cfg: LoadSplitConfig,
}

/// The delegates of the store, by region id.
#[derive(Default)]
pub struct LocalReaders {
    delegates: DashMap<u64, Arc<ReadDelegate>>,
}

impl LocalReaders {
    /// The go-ahead for a read of `keys` in region `region_id`, if a
    /// delegate vouches for it now; `None`: ask the raftstore thread.
    pub fn grant(
        &self,
        region_id: u64,
        epoch: Option<&RegionEpoch>,
        keys: &[&[u8]],
    ) -> Option<ReadGrant> {
        let d = self.delegates.get(&region_id)?.clone();
        if Instant::now() >= d.serve_until {
            return None;
        }
        // Mismatches get their precise error from the raftstore thread.
        crate::apply::check_epoch(&d.region, epoch).ok()?;
        crate::apply::check_keys(&d.region, keys.iter().copied()).ok()?;
        if let Some(k) = keys.first() {
            d.load.lock().record(&d.load_cfg, k);
        }
        crate::metrics::LOCAL_READS.inc();
        Some(ReadGrant {
            region: d.region.clone(),
            flow: d.flow.clone(),
        })
    }

    /// Called by the raftstore thread only.
    pub(crate) fn publish(&self, region_id: u64, delegate: ReadDelegate) {
        self.delegates.insert(region_id, Arc::new(delegate));
    }

    /// Called by the raftstore thread only: no more local reads of the region.
    pub(crate) fn revoke(&self, region_id: u64) {
        self.delegates.remove(&region_id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.delegates.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn region(version: u64) -> Region {
        Region {
            id: 7,
            start_key: b"b".to_vec().into(),
            end_key: b"m".to_vec().into(),
            epoch: Some(RegionEpoch {
                version,
                conf_ver: 1,
            }),
            ..Default::default()
        }
    }

    fn delegate(version: u64, serve_for: Duration) -> ReadDelegate {
        ReadDelegate {
            region: region(version),
            serve_until: Instant::now() + serve_for,
            flow: Arc::new(Flow::default()),
            load: Arc::new(SharedLoad::default()),
            load_cfg: LoadSplitConfig::default(),
        }
    }

    fn epoch(version: u64) -> RegionEpoch {
        RegionEpoch {
            version,
            conf_ver: 1,
        }
    }

    #[test]
    fn grants_only_what_the_delegate_vouches_for() {
        let r = LocalReaders::default();
        assert!(
            r.grant(7, Some(&epoch(2)), &[b"c"]).is_none(),
            "no delegate"
        );
        r.publish(7, delegate(2, Duration::from_secs(5)));
        let g = r.grant(7, Some(&epoch(2)), &[b"c"]).expect("granted");
        assert_eq!(g.region.id, 7);
        let refused: [(u64, u64, &[u8], &str); 5] = [
            (8, 2, b"c", "another region"),
            (7, 3, b"c", "newer epoch"),
            (7, 1, b"c", "older epoch"),
            (7, 2, b"m", "past the end"),
            (7, 2, b"a", "before the start"),
        ];
        for (region, version, key, why) in refused {
            assert!(
                r.grant(region, Some(&epoch(version)), &[key]).is_none(),
                "{why}"
            );
        }
        r.publish(7, delegate(2, Duration::ZERO));
        assert!(
            r.grant(7, Some(&epoch(2)), &[b"c"]).is_none(),
            "lease half gone"
        );
        r.publish(7, delegate(2, Duration::from_secs(5)));
        r.revoke(7);
        assert!(r.grant(7, Some(&epoch(2)), &[b"c"]).is_none(), "revoked");
        assert_eq!(r.len(), 0);
    }
}
