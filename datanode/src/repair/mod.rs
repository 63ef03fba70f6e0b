//! The repair worker: keeps every placement group's members holding their
//! fragments. One pass, every `Repair::interval`:
//!
//! 1. Fetch the placement map from PD. For each PG this node belongs to, the
//!    *primary* is the first member in slot order that answers a probe; only
//!    the primary repairs the PG, so work is spread over the nodes and a dead
//!    node's PGs are taken over by the next member.
//! 2. The primary lists every member's fragments of the PG (`ListFragments`,
//!    in memory on each node) and plans (`plan`): bodies missing fragments
//!    with k left are rebuilt onto the members that miss them (`rebuild`):
//!    healing after a failed write, a lost disk, a quarantined corrupt
//!    fragment, or a slot PD moved to a new node (rebalance, decommission).
//!    Bodies with exactly k fragments left go first, across all PGs: a first
//!    round lists every PG and rebuilds only those; a second lists again the
//!    PGs that have anything else to do.
//! 3. Bodies with fewer than k fragments, and complete bodies older than
//!    `orphan_after` not yet known to be referenced, are checked against the
//!    metadata (`references`, linearizable reads); unreferenced ones are
//!    orphans (a PUT that never committed, a delete that missed a node) and
//!    are deleted everywhere. Referenced bodies below k are data loss: counted
//!    and logged, never deleted.
//! 4. Strays: local fragments whose slot now belongs to another node are
//!    deleted once that node has its copy.
//!
//! Bodies younger than `heal_after` are left alone: their PUT may still be
//! writing. Everything is idempotent, so two nodes that both think they are
//! primary only duplicate work.
//!
//! After each pass the worker publishes its progress ([`RepairProgress`]),
//! which the heartbeat reports to PD: PD paces slot movement on it and only
//! marks a leaving node decommissioned once every serving node's repair has
//! caught up with the map that took its last slot.

pub mod plan;
pub mod rebuild;
pub mod references;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kura_metashard::client::MetaClient;
use kura_pd_client::{PdClient, RegionCache};
use kura_proto::datanode::{FragmentEntry, FragmentId};
use kura_proto::meta::StorageClass;
use kura_proto::pd::PlacementMap;
use tokio::sync::watch;

use crate::client::{DataNodeClient, DataNodeError, PgFilter};
use crate::ec::Codec;
use crate::metrics;
use plan::{plan_pg, Action, BodyState};

/// Repair settings.
#[derive(Clone, Debug)]
pub struct Repair {
    /// Time between passes; zero turns repair off. Default 30 s.
    pub interval: Duration,
    /// Bodies younger than this are not repaired (their PUT may be running). Default 60 s.
    pub heal_after: Duration,
    /// Bodies older than this are checked for references; unreferenced ones
    /// are deleted. Must be far above the longest PUT. Default 1 h.
    pub orphan_after: Duration,
}

impl Default for Repair {
    fn default() -> Self {
        Repair {
            interval: Duration::from_secs(30),
            heal_after: Duration::from_secs(60),
            orphan_after: Duration::from_secs(3600),
        }
    }
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the in-memory set of bodies known to be referenced.
const MAX_KNOWN_REFERENCED: usize = 4_000_000;

/// How long after this node first sees a map version writers may still use
/// the previous one: a gateway polls the map every 3 s (and a PUT that
/// started just before keeps its PG's old members).
pub const MAP_PROPAGATION_SLACK: Duration = Duration::from_secs(5);

/// The last completed pass, shared with the heartbeat (which reports it to PD).
#[derive(Debug, Default)]
pub struct RepairProgress {
    backlog: AtomicU64,
    passes: AtomicU64,
    map_version: AtomicU64,
}

/// A snapshot of [`RepairProgress`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgressReport {
    /// Bodies missing fragments (plus PGs whose repair failed) found by the last pass.
    pub backlog: u64,
    /// Completed passes since the process started.
    pub passes: u64,
    /// The newest map version whose slot moves the last pass fully covered.
    pub map_version: u64,
}

impl RepairProgress {
    pub fn report(&self) -> ProgressReport {
        ProgressReport {
            backlog: self.backlog.load(Ordering::Acquire),
            passes: self.passes.load(Ordering::Acquire),
            map_version: self.map_version.load(Ordering::Acquire),
        }
    }

    fn publish(&self, backlog: u64, map_version: u64) {
        self.backlog.store(backlog, Ordering::Release);
        self.map_version.store(map_version, Ordering::Release);
        self.passes.fetch_add(1, Ordering::AcqRel);
    }
}

/// When this worker first saw each map version, to tell which version a pass
/// covers. A pass checks only bodies older than `heal_after`, so it vouches
/// for a version's moves only once every body written under an older map is
/// that old: the version must have been current for `heal_after` plus
/// [`MAP_PROPAGATION_SLACK`] when the pass began.
#[derive(Debug, Default)]
struct VersionClock {
    /// (version, first seen), oldest first, versions increasing.
    seen: VecDeque<(u64, Instant)>,
}

impl VersionClock {
    /// Records that `version` is current at `now`.
    fn saw(&mut self, version: u64, now: Instant) {
        if self.seen.back().is_none_or(|(v, _)| *v < version) {
            self.seen.push_back((version, now));
        }
    }

    /// The newest version seen at or before `now - wait` (0: none). Older
    /// entries are dropped: a newer covered version supersedes them.
    fn covered(&mut self, now: Instant, wait: Duration) -> u64 {
        let Some(cutoff) = now.checked_sub(wait) else {
            return 0;
        };
        while self.seen.len() > 1 && self.seen[1].1 <= cutoff {
            self.seen.pop_front();
        }
        match self.seen.front() {
            Some((v, at)) if *at <= cutoff => *v,
            _ => 0,
        }
    }
}

/// One placement group of one storage class, with its members' addresses in slot order.
#[derive(Clone, Copy)]
struct PgRef<'a> {
    class: StorageClass,
    pg: u32,
    codec: &'a Codec,
    members: &'a [String],
}

/// The two rounds of a pass over the PGs (see [`RepairWorker::pass`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    /// Rebuilds of bodies with exactly k fragments left.
    Urgent,
    /// Everything else the plan holds.
    Rest,
}

/// What one pass found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassStats {
    pub pgs_repaired: usize,
    pub backlog: usize,
    /// PGs whose repair failed (their bodies were not all checked).
    pub failed_pgs: usize,
    pub rebuilt: usize,
    pub orphans: usize,
    pub strays: usize,
    pub unrecoverable: usize,
}

pub struct RepairWorker {
    me: String,
    pd: PdClient,
    client: DataNodeClient,
    meta: MetaClient,
    cfg: Repair,
    /// Bodies a reference check found referenced (they stay so until deleted,
    /// and deletion removes their fragments).
    known_referenced: HashSet<Bytes>,
    progress: Arc<RepairProgress>,
    versions: VersionClock,
}

impl RepairWorker {
    /// `me` is this node's advertised address, as PD lists it.
    pub fn new(me: String, pd: PdClient, cfg: Repair) -> Self {
        let meta = MetaClient::new(Arc::new(RegionCache::new(pd.clone())));
        RepairWorker {
            me,
            pd,
            client: DataNodeClient::new(),
            meta,
            cfg,
            known_referenced: HashSet::new(),
            progress: Arc::new(RepairProgress::default()),
            versions: VersionClock::default(),
        }
    }

    /// The progress this worker publishes after each completed pass.
    pub fn progress(&self) -> Arc<RepairProgress> {
        self.progress.clone()
    }

    /// Runs passes until `shutdown`.
    pub async fn run(&mut self, mut shutdown: watch::Receiver<bool>) {
        if self.cfg.interval.is_zero() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            match self.pass().await {
                Ok(stats) => {
                    if stats != PassStats::default() {
                        tracing::info!(?stats, "repair pass");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "repair pass failed"),
            }
        }
    }

    /// One pass over every PG this node is primary of, then its strays.
    pub async fn pass(&mut self) -> Result<PassStats, DataNodeError> {
        let started = Instant::now();
        let map = match self.pd.get_placement(0).await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(PassStats::default()),
            Err(e) => return Err(DataNodeError::Unavailable(format!("pd: {e}"))),
        };
        self.versions.saw(map.version, started);
        let mut stats = PassStats::default();
        let mut up: HashMap<String, bool> = HashMap::new();
        let read_only: HashSet<String> = map
            .nodes
            .iter()
            .filter(|n| n.read_only)
            .map(|n| n.address.clone())
            .collect();
        // The PGs this node is primary of, in map order.
        let mut codecs = Vec::new();
        for class in &map.classes {
            let storage_class =
                StorageClass::try_from(class.storage_class).unwrap_or(StorageClass::Unspecified);
            if let Ok(codec) = Codec::new(class.data_shards as usize, class.parity_shards as usize)
            {
                codecs.push((storage_class, codec, &class.groups));
            }
        }
        let mut mine = Vec::new();
        for (class, codec, groups) in &codecs {
            let width = codec.data_shards() + codec.parity_shards();
            for group in groups.iter() {
                let Some(members) = addresses(&map, &group.data_nodes) else {
                    continue;
                };
                if members.len() != width || !members.contains(&self.me) {
                    continue;
                }
                if self.is_primary(&members, &mut up).await {
                    mine.push((*class, group.id, codec, members));
                }
            }
        }
        stats.pgs_repaired = mine.len();
        // Degraded bodies are healed first, across all PGs (docs/architecture.md,
        // "what a body can lose"): the first round lists every PG and rebuilds
        // only bodies with no fragment to spare; the second lists again only
        // the PGs that had anything else to do, and does it.
        let mut later = Vec::new();
        for (class, pg, codec, members) in &mine {
            let target = PgRef {
                class: *class,
                pg: *pg,
                codec,
                members,
            };
            match self
                .repair_pg(target, Round::Urgent, &mut up, &read_only, &mut stats)
                .await
            {
                Ok(true) => later.push(target),
                Ok(false) => {}
                Err(e) => {
                    stats.failed_pgs += 1;
                    tracing::warn!(pg, class = ?class, error = %e, "PG repair failed");
                }
            }
        }
        for target in later {
            let round = self.repair_pg(target, Round::Rest, &mut up, &read_only, &mut stats);
            if let Err(e) = round.await {
                stats.failed_pgs += 1;
                tracing::warn!(pg = target.pg, class = ?target.class, error = %e, "PG repair failed");
            }
        }
        stats.strays = self.drop_strays(&map).await?;
        metrics::REPAIR_BACKLOG.set(stats.backlog as i64);
        metrics::UNRECOVERABLE_BODIES.set(stats.unrecoverable as i64);
        metrics::REPAIR_PASSES.inc();
        let covered = self
            .versions
            .covered(started, self.cfg.heal_after + MAP_PROPAGATION_SLACK);
        self.progress
            .publish((stats.backlog + stats.failed_pgs) as u64, covered);
        if self.known_referenced.len() > MAX_KNOWN_REFERENCED {
            self.known_referenced.clear();
        }
        Ok(stats)
    }

    /// Whether this node is the first member (in slot order) that is up.
    async fn is_primary(&self, members: &[String], up: &mut HashMap<String, bool>) -> bool {
        for addr in members {
            if *addr == self.me {
                return true;
            }
            let alive = match up.get(addr) {
                Some(a) => *a,
                None => {
                    let a = self.probe(addr).await;
                    up.insert(addr.clone(), a);
                    a
                }
            };
            if alive {
                return false;
            }
        }
        false
    }

    async fn probe(&self, addr: &str) -> bool {
        let id = FragmentId {
            data_id: Bytes::from_static(&[0u8; 16]),
            shard: 0,
        };
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, self.client.stat_fragment(addr, id)).await,
            Ok(Ok(_)) | Ok(Err(DataNodeError::NotFound))
        )
    }

    /// Lists the PG's members, plans, and does this round's part of the
    /// plan. In the urgent round, answers whether anything is left for the
    /// rest round.
    async fn repair_pg(
        &mut self,
        target: PgRef<'_>,
        round: Round,
        up: &mut HashMap<String, bool>,
        ro: &HashSet<String>,
        stats: &mut PassStats,
    ) -> Result<bool, DataNodeError> {
        let PgRef {
            class,
            pg,
            codec,
            members,
        } = target;
        let read_only: Vec<bool> = members.iter().map(|a| ro.contains(a)).collect();
        let mut listings: Vec<Option<Vec<FragmentEntry>>> = Vec::with_capacity(members.len());
        for addr in members {
            if up.get(addr) == Some(&false) {
                listings.push(None);
                continue;
            }
            let listed = tokio::time::timeout(
                LIST_TIMEOUT,
                self.client.list_all_fragments(addr, PgFilter::Pg(pg)),
            )
            .await;
            listings.push(match listed {
                Ok(Ok(all)) => Some(
                    all.into_iter()
                        .filter(|e| fragment_class(e) == class)
                        .collect(),
                ),
                Ok(Err(e)) if !e.is_unresponsive() => None,
                _ => {
                    // Down or hung: the rest of this pass skips it instead of
                    // paying the listing deadline again for every PG.
                    up.insert(addr.clone(), false);
                    None
                }
            });
        }
        let now = crate::now_unix_ms();
        // Ages come from each holder's own clock (FragmentEntry::age_ms).
        let actions = plan_pg(
            &listings,
            codec.data_shards(),
            now,
            now - self.cfg.heal_after.as_millis() as i64,
            now - self.cfg.orphan_after.as_millis() as i64,
        );
        let orphan_before = now - self.cfg.orphan_after.as_millis() as i64;
        let k = codec.data_shards();
        let (urgent, rest): (Vec<Action>, Vec<Action>) =
            actions.into_iter().partition(|a| plan::is_urgent(a, k));
        let (actions, left) = match round {
            Round::Urgent => {
                let left = rest.iter().any(|a| match a {
                    Action::CheckReferenced(b) => !self.known_referenced.contains(&b.data_id),
                    Action::Rebuild(_) | Action::BelowK(_) => true,
                });
                metrics::URGENT_REBUILDS.inc_by(urgent.len() as u64);
                (urgent, left)
            }
            Round::Rest => (rest, false),
        };
        for action in actions {
            match action {
                Action::Rebuild(mut body) => {
                    stats.backlog += 1;
                    // A full or read-only node takes no fragments; it waits for PD to move its slot.
                    body.missing.retain(|s| !read_only[*s]);
                    if body.missing.is_empty() {
                        continue;
                    }
                    match rebuild::rebuild(&self.client, codec, members, &body).await {
                        Ok(n) => {
                            stats.rebuilt += n;
                            metrics::REPAIRED_FRAGMENTS.inc_by(n as u64);
                        }
                        // A source gone since the listing: the body was deleted while
                        // this pass ran (or its fragment quarantined); the next pass
                        // lists it again and decides anew.
                        Err(DataNodeError::NotFound) => tracing::debug!(
                            pg,
                            "a fragment to rebuild from is gone (body deleted meanwhile?)"
                        ),
                        Err(e) => tracing::warn!(pg, error = %e, "rebuilding a body failed"),
                    }
                }
                Action::BelowK(body) => {
                    let referenced = self.referenced(&body).await?;
                    if referenced {
                        stats.unrecoverable += 1;
                        tracing::error!(
                            pg,
                            data_id = %hex(&body.data_id),
                            present = ?body.present,
                            "referenced body has fewer than k fragments: data lost"
                        );
                    } else if body.written_unix_ms < orphan_before {
                        stats.orphans += self.delete_everywhere(members, &body).await;
                    }
                }
                Action::CheckReferenced(body) => {
                    if !self.known_referenced.contains(&body.data_id)
                        && !self.referenced(&body).await?
                    {
                        stats.orphans += self.delete_everywhere(members, &body).await;
                    }
                }
            }
        }
        Ok(left)
    }

    async fn referenced(&mut self, body: &BodyState) -> Result<bool, DataNodeError> {
        if self.known_referenced.contains(&body.data_id) {
            return Ok(true);
        }
        let yes = references::is_referenced(&self.meta, &body.header, &body.data_id)
            .await
            .map_err(|e| DataNodeError::Unavailable(format!("metadata: {e}")))?;
        if yes {
            // A copy: the id is a slice of a whole listing page's buffer.
            self.known_referenced
                .insert(Bytes::copy_from_slice(&body.data_id));
        }
        Ok(yes)
    }

    /// Deletes every present fragment of an unreferenced body.
    async fn delete_everywhere(&self, members: &[String], body: &BodyState) -> usize {
        let mut deleted = 0;
        for &slot in &body.present {
            let id = FragmentId {
                data_id: body.data_id.clone(),
                shard: slot as u32,
            };
            if let Ok(true) = self.client.delete_fragment(&members[slot], id).await {
                deleted += 1;
            }
        }
        metrics::ORPHANS_DELETED.inc_by(deleted as u64);
        tracing::info!(data_id = %hex(&body.data_id), deleted, "deleted the fragments of an unreferenced body");
        deleted
    }

    /// Deletes local fragments whose slot belongs to another node that has its copy.
    async fn drop_strays(&self, map: &PlacementMap) -> Result<usize, DataNodeError> {
        let mine = self
            .client
            .list_all_fragments(&self.me, PgFilter::All)
            .await?;
        let mut dropped = 0;
        for e in mine {
            let Some(h) = e.header.as_ref() else { continue };
            let Some(id) = h.id.clone() else { continue };
            let class = fragment_class(&e);
            let Some(group) = map
                .classes
                .iter()
                .find(|c| c.storage_class == class as i32)
                .and_then(|c| c.groups.iter().find(|g| g.id == h.pg))
            else {
                continue;
            };
            let Some(owner) = group
                .data_nodes
                .get(id.shard as usize)
                .and_then(|n| addresses(map, &[*n]))
                .and_then(|mut a| a.pop())
            else {
                continue;
            };
            if owner == self.me {
                continue;
            }
            let theirs = self.client.stat_fragment(&owner, id.clone()).await;
            if matches!(theirs, Ok(ref s) if s.found && s.length == e.length) {
                if let Ok(true) = self.client.delete_fragment(&self.me, id).await {
                    dropped += 1;
                    metrics::STRAYS_DELETED.inc();
                }
            }
        }
        Ok(dropped)
    }
}

/// The storage class a fragment was written for (unset = REPLICA3, the only
/// class before classes existed).
fn fragment_class(e: &FragmentEntry) -> StorageClass {
    e.header
        .as_ref()
        .and_then(|h| StorageClass::try_from(h.storage_class).ok())
        .filter(|c| *c != StorageClass::Unspecified)
        .unwrap_or(StorageClass::Replica3)
}

/// Addresses of `ids` in slot order; None if any is unknown.
fn addresses(map: &PlacementMap, ids: &[u64]) -> Option<Vec<String>> {
    ids.iter()
        .map(|id| {
            map.nodes
                .iter()
                .find(|n| n.id == *id && !n.address.is_empty())
                .map(|n| n.address.clone())
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_covered_once_it_was_current_for_the_wait() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = VersionClock::default();
        assert_eq!(c.covered(t0, s(0)), 0, "nothing seen");
        c.saw(3, t0);
        assert_eq!(c.covered(t0 + s(5), s(10)), 0, "3 is too recent");
        c.saw(3, t0 + s(5)); // seen again: keeps its first sighting
        c.saw(4, t0 + s(8));
        assert_eq!(c.covered(t0 + s(12), s(10)), 3);
        assert_eq!(c.covered(t0 + s(17), s(10)), 3);
        assert_eq!(c.covered(t0 + s(18), s(10)), 4);
        assert_eq!(c.seen.len(), 1, "older versions dropped");
        c.saw(2, t0 + s(20)); // an older map (another PD answer): ignored
        assert_eq!(c.covered(t0 + s(40), s(10)), 4);
    }

    #[test]
    fn progress_counts_passes_and_keeps_the_last_numbers() {
        let p = RepairProgress::default();
        assert_eq!(p.report(), ProgressReport::default());
        p.publish(7, 3);
        p.publish(0, 4);
        assert_eq!(
            p.report(),
            ProgressReport {
                backlog: 0,
                passes: 2,
                map_version: 4
            }
        );
    }
}
