//! Uninitialized peers: bounded, and collected when PD does not know them
//! (decision 0045).
//!
//! A raft message for a region this store does not host creates an empty
//! peer that waits for the leader's snapshot (how an added peer starts).
//! The message is unauthenticated without mutual TLS, so a forger could make
//! a store hold any number of them, each with raft state in RocksDB and
//! memory. Two rules bound that:
//! - at most [`MAX_UNINITIALIZED`] at once; a message that would create one
//!   more is dropped (`uninitialized_peers_full`): a real leader retries;
//! - a peer still uninitialized [`GRACE`] after it appeared is checked with
//!   PD; unless PD's region lists it (this peer id on this store), it is
//!   destroyed. The grace is PD's lag: the leader reports a conf change to PD
//!   at once, and again every region heartbeat (10 s), while it may start
//!   sending to the new peer before PD has heard.
//!
//! Destroying an uninitialized peer loses nothing: it has no data, and a
//! real leader's next message creates it again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kura_proto::common::Region;

/// Most uninitialized peers a store holds at once. Real ones exist only
/// between an add-peer and its snapshot (a couple of seconds, a few at a
/// time: PD moves replicas a few at a time, and a store receives two
/// snapshots at once); beyond it the leader's next heartbeat retries.
pub const MAX_UNINITIALIZED: usize = 128;

/// How long an uninitialized peer may wait before PD is asked about it.
pub const GRACE: Duration = Duration::from_secs(30);

/// Between two questions about a peer PD lists (it may yet be removed before
/// its snapshot) or that PD could not answer about.
pub const RECHECK: Duration = Duration::from_secs(30);

/// Questions to PD in flight at once (a flood of junk peers asks in turns).
pub const MAX_CHECKS_IN_FLIGHT: usize = 16;

/// What PD's answer means for an uninitialized peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// PD lists the peer: a real add waiting for its snapshot.
    Keep,
    /// PD does not know the region, or its region does not list the peer.
    Destroy,
    /// PD could not be asked: ask again later.
    Unknown,
}

/// PD's answer about `region_id` (`Err`: no answer) judged for our peer.
pub fn verdict(
    answer: &Result<Option<Region>, String>,
    region_id: u64,
    peer_id: u64,
    store_id: u64,
) -> Verdict {
    match answer {
        Err(_) => Verdict::Unknown,
        Ok(None) => Verdict::Destroy,
        Ok(Some(r)) if r.id != region_id => Verdict::Unknown,
        Ok(Some(r)) => {
            if r.peers
                .iter()
                .any(|p| p.id == peer_id && p.store_id == store_id)
            {
                Verdict::Keep
            } else {
                Verdict::Destroy
            }
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// When it may next be asked about.
    next_check: Instant,
    asking: bool,
}

/// The store's uninitialized peers, by region id (owned by the raftstore thread).
#[derive(Debug, Default)]
pub struct Tracker {
    peers: HashMap<u64, Entry>,
    in_flight: usize,
}

impl Tracker {
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Whether a message may create one more.
    pub fn has_room(&self) -> bool {
        self.peers.len() < MAX_UNINITIALIZED
    }

    /// An uninitialized peer of `region_id` appeared (created, or loaded at start).
    pub fn insert(&mut self, region_id: u64, now: Instant) {
        self.peers.entry(region_id).or_insert(Entry {
            next_check: now + GRACE,
            asking: false,
        });
    }

    /// The peer was initialized (snapshot) or destroyed.
    pub fn remove(&mut self, region_id: u64) {
        if let Some(e) = self.peers.remove(&region_id) {
            if e.asking {
                self.in_flight -= 1;
            }
        }
    }

    pub fn regions(&self) -> Vec<u64> {
        self.peers.keys().copied().collect()
    }

    /// Peers to ask PD about now (marked as being asked), at most as many as
    /// the in-flight bound leaves.
    pub fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        for (id, e) in self.peers.iter_mut() {
            if self.in_flight >= MAX_CHECKS_IN_FLIGHT {
                break;
            }
            if !e.asking && e.next_check <= now {
                e.asking = true;
                self.in_flight += 1;
                out.push(*id);
            }
        }
        out
    }

    /// PD answered about `region_id` (judged as `v`); true: destroy it now.
    /// An answer about a peer no longer tracked (initialized meanwhile, or
    /// asked for before a restart) changes nothing.
    pub fn on_answer(&mut self, region_id: u64, v: Verdict, now: Instant) -> bool {
        let Some(e) = self.peers.get_mut(&region_id) else {
            return false;
        };
        if e.asking {
            e.asking = false;
            self.in_flight -= 1;
        }
        match v {
            Verdict::Destroy => true,
            Verdict::Keep | Verdict::Unknown => {
                e.next_check = now + RECHECK;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kura_proto::common::Peer;

    use super::*;

    fn region(id: u64, peers: &[(u64, u64)]) -> Region {
        Region {
            id,
            peers: peers
                .iter()
                .map(|&(id, store_id)| Peer {
                    id,
                    store_id,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn pd_decides_only_when_it_answered() {
        let ok = |r| Ok(Some(r));
        assert_eq!(verdict(&Err("down".into()), 7, 70, 1), Verdict::Unknown);
        assert_eq!(verdict(&Ok(None), 7, 70, 1), Verdict::Destroy);
        assert_eq!(
            verdict(&ok(region(7, &[(70, 1), (71, 2)])), 7, 70, 1),
            Verdict::Keep
        );
        // Our peer id on another store, or another id on ours: not ours.
        assert_eq!(
            verdict(&ok(region(7, &[(70, 2), (71, 1)])), 7, 70, 1),
            Verdict::Destroy
        );
        assert_eq!(
            verdict(&ok(region(8, &[(70, 1)])), 7, 70, 1),
            Verdict::Unknown
        );
    }

    #[test]
    fn peers_are_asked_after_the_grace_a_few_at_a_time() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        for id in 0..(MAX_UNINITIALIZED as u64) {
            assert!(t.has_room());
            t.insert(id, t0);
        }
        assert!(!t.has_room());
        assert!(t.due(t0).is_empty(), "nothing before the grace");
        assert!(t.due(t0 + GRACE - Duration::from_millis(1)).is_empty());
        let asked = t.due(t0 + GRACE);
        assert_eq!(asked.len(), MAX_CHECKS_IN_FLIGHT);
        assert!(t.due(t0 + GRACE).is_empty(), "the in-flight bound holds");
        // One destroyed, one kept (asked again after RECHECK), one removed.
        assert!(t.on_answer(asked[0], Verdict::Destroy, t0 + GRACE));
        t.remove(asked[0]);
        assert!(!t.on_answer(asked[1], Verdict::Keep, t0 + GRACE));
        t.remove(asked[2]);
        assert_eq!(t.len(), MAX_UNINITIALIZED - 2);
        assert!(t.has_room());
        let next = t.due(t0 + GRACE);
        assert_eq!(next.len(), 3, "three places freed");
        assert!(!next.contains(&asked[1]));
        // An answer for a region no longer tracked changes nothing.
        assert!(!t.on_answer(asked[0], Verdict::Destroy, t0 + GRACE));
        for id in t.regions() {
            t.on_answer(id, Verdict::Unknown, t0 + GRACE);
        }
        assert_eq!(t.in_flight, 0);
        assert!(t
            .due(t0 + GRACE + RECHECK - Duration::from_millis(1))
            .is_empty());
        assert_eq!(
            t.due(t0 + GRACE + RECHECK).len(),
            MAX_CHECKS_IN_FLIGHT,
            "asked again after RECHECK"
        );
    }
}
