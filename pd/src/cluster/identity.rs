//! Ids and identities: the allocator PD hands every id from, the rules for
//! which process may claim an id (docs/decisions/0024), which heartbeats
//! count, and the replacement of an id whose address another data dir took
//! (docs/decisions/0044).

use std::collections::{BTreeMap, BTreeSet};

use kura_proto::pd::store::State as StoreState;

use super::{AdminState, Cluster};
use crate::Error;

/// Ids are handed out below a high-water mark that is on disk before any id
/// under it leaves PD, so a crash can never hand out an id twice. The mark is
/// raised in steps of this many ids to keep saves rare.
pub const ID_BATCH: u64 = 1000;

/// Every id PD hands out is below this (2^63 - 1): far beyond any real
/// cluster, and small enough that `id + 1` anywhere downstream cannot
/// overflow and ids survive JSON readers that parse numbers as i64.
pub const MAX_ID: u64 = (1 << 63) - 1;

/// Which kind of registered process an identity belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Store,
    DataNode,
}

/// A data-dir identity as processes present it: 32 lower-case hex digits.
pub(super) fn check_uuid(uuid: &str) -> Result<(), Error> {
    if uuid.len() == 32 && uuid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "uuid must be 32 lower-case hex digits (the data dir's identity)".into(),
        ))
    }
}

/// Whether a claim of the known id `id` with `presented` stands. Returns
/// whether to record `presented` (true only for an id PD has no identity
/// for: a cluster from before identities; trust on first use, the first
/// registration after the upgrade binds the id to that data dir).
pub(super) fn check_claim(
    kind: &str,
    id: u64,
    recorded: Option<&String>,
    presented: &str,
) -> Result<bool, Error> {
    match recorded {
        None => {
            tracing::warn!(
                kind,
                id,
                "no identity recorded for this id (registered before identities): adopting the one presented"
            );
            Ok(true)
        }
        Some(r) if r == presented => Ok(false),
        Some(_) => Err(Error::IdentityMismatch(format!(
            "{kind} {id} is registered with another data dir; a wiped or different dir registers with id 0"
        ))),
    }
}

impl NodeKind {
    /// The `kind` label of PD's metrics and the word in messages.
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Store => "store",
            NodeKind::DataNode => "data node",
        }
    }

    fn label(self) -> &'static str {
        match self {
            NodeKind::Store => "store",
            NodeKind::DataNode => "data_node",
        }
    }
}

/// What PD knows about an id's identity when one of its heartbeats arrives.
pub(super) struct BeatIdentity<'a> {
    /// The uuid its registration proved (None: registered before identities).
    pub recorded: Option<&'a str>,
    /// A heartbeat of this id has carried its uuid since it last registered:
    /// the process runs a binary that sends it, so an empty one is a forgery.
    pub proven: bool,
    /// The id that registered at this id's address with another data dir.
    pub replaced_by: Option<u64>,
}

/// Whether a heartbeat of the known id `id` presenting `presented` counts
/// (docs/decisions/0044). Refusals are counted in
/// `kura_pd_heartbeats_refused_total{kind, reason}` and change nothing.
/// Returns whether the heartbeat proves the id's process sends its uuid (to
/// record, so empty ones are refused from now on).
pub(super) fn check_heartbeat(
    kind: NodeKind,
    id: u64,
    known: BeatIdentity<'_>,
    presented: &str,
) -> Result<bool, Error> {
    let refuse = |reason: &'static str, why: String| {
        crate::metrics::metrics()
            .heartbeats_refused
            .with_label_values(&[kind.label(), reason])
            .inc();
        tracing::warn!(kind = kind.name(), id, reason, "heartbeat refused: {why}");
        Err(Error::IdentityMismatch(format!(
            "heartbeat of {} {id}: {why}",
            kind.name()
        )))
    };
    let proves = match (known.recorded, presented.is_empty()) {
        (Some(r), false) if r == presented => !known.proven,
        (Some(_), false) => {
            return refuse(
                "wrong_uuid",
                "not the data dir registered under this id".into(),
            )
        }
        // An old binary (a rolling upgrade) sends none; once this id's
        // process has sent its uuid, a heartbeat without one is not from it.
        (Some(_), true) if known.proven => {
            return refuse(
                "no_uuid",
                "no uuid, but this id's heartbeats carry one".into(),
            )
        }
        (Some(_), true) => false,
        // Registered before identities and not since: nothing to check
        // against (its next registration binds its uuid).
        (None, _) => false,
    };
    if let Some(by) = known.replaced_by {
        return refuse(
            "replaced",
            format!(
                "another data dir registered at its address as {} {by}; \
                 a process holding this id's data dir registers again to reclaim it",
                kind.name()
            ),
        );
    }
    Ok(proves)
}

impl Cluster {
    fn beats_uuid(&self, kind: NodeKind) -> &BTreeSet<u64> {
        match kind {
            NodeKind::Store => &self.store_beats_uuid,
            NodeKind::DataNode => &self.data_node_beats_uuid,
        }
    }

    fn replaced_map(&mut self, kind: NodeKind) -> &mut BTreeMap<u64, u64> {
        match kind {
            NodeKind::Store => &mut self.store_replaced,
            NodeKind::DataNode => &mut self.data_node_replaced,
        }
    }

    /// The id that registered at `id`'s address with another data dir, while
    /// `id`'s own has not registered again.
    pub fn replaced_by(&self, kind: NodeKind, id: u64) -> Option<u64> {
        match kind {
            NodeKind::Store => self.store_replaced.get(&id),
            NodeKind::DataNode => self.data_node_replaced.get(&id),
        }
        .copied()
    }

    /// Whether `id`'s heartbeats carry its uuid (persistence, tests).
    pub fn heartbeats_carry_uuid(&self, kind: NodeKind, id: u64) -> bool {
        self.beats_uuid(kind).contains(&id)
    }

    /// Restores what the state file says about `id`'s heartbeats and
    /// replacement (format 6; `replaced_by` 0: not replaced).
    pub fn restore_beat_identity(
        &mut self,
        kind: NodeKind,
        id: u64,
        carries_uuid: bool,
        replaced_by: u64,
    ) {
        if carries_uuid {
            match kind {
                NodeKind::Store => self.store_beats_uuid.insert(id),
                NodeKind::DataNode => self.data_node_beats_uuid.insert(id),
            };
        }
        if replaced_by != 0 {
            self.replaced_map(kind).insert(id, replaced_by);
        }
    }

    /// What a heartbeat of `id` is checked against.
    pub(super) fn beat_identity(&self, kind: NodeKind, id: u64) -> BeatIdentity<'_> {
        BeatIdentity {
            recorded: self.uuid_of(kind, id),
            proven: self.beats_uuid(kind).contains(&id),
            replaced_by: self.replaced_by(kind, id),
        }
    }

    /// Checks a heartbeat of the known id `id` (see [`check_heartbeat`]) and
    /// records that its heartbeats carry the uuid. Returns whether to persist.
    pub(super) fn accept_heartbeat(
        &mut self,
        kind: NodeKind,
        id: u64,
        presented: &str,
    ) -> Result<bool, Error> {
        let proves = check_heartbeat(kind, id, self.beat_identity(kind, id), presented)?;
        if proves {
            match kind {
                NodeKind::Store => self.store_beats_uuid.insert(id),
                NodeKind::DataNode => self.data_node_beats_uuid.insert(id),
            };
        }
        Ok(proves)
    }

    /// After `id` registered at `address` under its own data dir: it is not
    /// replaced (any more), its next heartbeats prove the uuid afresh (a
    /// downgraded binary may send none), and every other id of this kind
    /// registered at `address` is replaced by it: the process holding that
    /// address now is another data dir, so the other identity cannot be live
    /// there. Returns whether anything to persist changed.
    pub(super) fn registered_at(&mut self, kind: NodeKind, id: u64, address: &str) -> bool {
        let mut changed = self.replaced_map(kind).remove(&id).is_some();
        changed |= match kind {
            NodeKind::Store => self.store_beats_uuid.remove(&id),
            NodeKind::DataNode => self.data_node_beats_uuid.remove(&id),
        };
        let others: Vec<u64> = match kind {
            NodeKind::Store => self
                .stores
                .values()
                .filter(|s| s.meta.state() != StoreState::Tombstone)
                .filter(|s| s.meta.id != id && s.meta.address == address)
                .map(|s| s.meta.id)
                .collect(),
            NodeKind::DataNode => self
                .data_nodes
                .values()
                .filter(|n| self.data_node_admin_state(n.id) != AdminState::Decommissioned)
                .filter(|n| n.id != id && n.address == address)
                .map(|n| n.id)
                .collect(),
        };
        for other in others {
            if self.replaced_map(kind).insert(other, id) != Some(id) {
                tracing::warn!(
                    kind = kind.name(),
                    old = other,
                    new = id,
                    address,
                    "another data dir registered at this address: the old id is replaced \
                     (its slots or peers move at once; its own data dir may register again)"
                );
                changed = true;
            }
        }
        changed
    }
}

/// Cluster-wide unique ids: stores, data nodes, regions and peers share one space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdAllocator {
    next: u64,
    /// Every id handed out is below this (saved with the state).
    high: u64,
    /// The mark known to be on disk.
    durable_high: u64,
}

impl IdAllocator {
    /// A fresh cluster: ids start at 1.
    pub fn new() -> Self {
        IdAllocator {
            next: 1,
            high: 1,
            durable_high: 1,
        }
    }

    /// After a restart: continue above the saved mark, skipping what the
    /// previous run may have handed out.
    pub fn restored(high_water: u64) -> Self {
        let h = high_water.max(1);
        IdAllocator {
            next: h,
            high: h,
            durable_high: h,
        }
    }

    /// Takes `count` consecutive ids; raises the mark when they do not fit.
    /// The caller must persist (see [`Self::needs_persist`]) before using them.
    /// Checked: ids stay below [`MAX_ID`], so no id can wrap and come back.
    pub fn alloc(&mut self, count: u64) -> Result<u64, Error> {
        let first = self.next;
        let next = first
            .checked_add(count)
            .filter(|n| *n <= MAX_ID)
            .ok_or(Error::IdsExhausted { next: first, count })?;
        self.next = next;
        if self.next > self.high {
            // Below MAX_ID + ID_BATCH, so it cannot overflow either.
            self.high = self.next + ID_BATCH;
        }
        Ok(first)
    }

    /// The id the next allocation starts at: every id PD ever handed out is
    /// below it.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The mark to save.
    pub fn high_water(&self) -> u64 {
        self.high
    }

    /// Whether ids were handed out above the mark on disk.
    pub fn needs_persist(&self) -> bool {
        self.high > self.durable_high
    }

    /// Records that a state with `high_water` is on disk.
    pub fn mark_durable(&mut self, high_water: u64) {
        self.durable_high = self.durable_high.max(high_water);
    }
}

impl Default for IdAllocator {
    fn default() -> Self {
        Self::new()
    }
}
