//! Ids and identities: the allocator PD hands every id from, and the rules
//! for which process may claim an id (docs/decisions/0024).

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
