//! What one repair pass over one placement group should do, from the
//! fragment listings of its members. Pure logic.

use std::collections::BTreeMap;

use bytes::Bytes;
use kura_proto::datanode::{FragmentEntry, FragmentHeader};

/// One body (data id) as the members of its PG hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct BodyState {
    pub data_id: Bytes,
    /// A header from one of the fragments (owner, block size, created time).
    pub header: FragmentHeader,
    /// When the body's oldest fragment was stored, on the planning node's
    /// clock: derived from the holders' own ages of their fragments
    /// (`FragmentEntry::age_ms`), so no writer's or other node's clock is
    /// compared with ours; the header's `created_unix_ms` (the gateway's
    /// clock) only for fragments stored before nodes reported ages.
    pub written_unix_ms: i64,
    /// Blocks per fragment (every fragment of a body has the same count).
    pub blocks: u32,
    /// Slots whose member holds its fragment.
    pub present: Vec<usize>,
    /// Slots whose member answered and lacks its fragment.
    pub missing: Vec<usize>,
}

/// What to do with a body.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Rebuild `missing` from k of `present`.
    Rebuild(BodyState),
    /// Fewer than k fragments anywhere: either an orphan (a PUT that failed or
    /// a delete that missed a node), to be checked against metadata, or lost.
    BelowK(BodyState),
    /// Every fragment written long ago and still here: check it is referenced.
    CheckReferenced(BodyState),
}

/// When `e` was stored, on the clock whose present is `now_ms`.
pub fn written_at(e: &FragmentEntry, h: &FragmentHeader, now_ms: i64) -> i64 {
    match e.age_ms {
        Some(age) => now_ms.saturating_sub(i64::try_from(age).unwrap_or(i64::MAX)),
        None => h.created_unix_ms,
    }
}

/// The PG's listings: `listings[slot]` is what the member at that slot holds
/// of this PG and class (None when it did not answer), listed at about
/// `now_ms`. Bodies written after `young_before_ms` are skipped (their PUT may
/// still be running); complete bodies written before `orphan_before_ms` are
/// offered for a reference check. Rebuilds come first, those with the fewest
/// fragments left (a body acknowledged with k during a zone outage) first.
pub fn plan_pg(
    listings: &[Option<Vec<FragmentEntry>>],
    k: usize,
    now_ms: i64,
    young_before_ms: i64,
    orphan_before_ms: i64,
) -> Vec<Action> {
    let width = listings.len();
    let mut bodies: BTreeMap<Bytes, BodyState> = BTreeMap::new();
    for (slot, listing) in listings.iter().enumerate() {
        for e in listing.iter().flatten() {
            let Some(h) = e.header.as_ref() else { continue };
            let Some(id) = h.id.as_ref() else { continue };
            if id.shard as usize != slot {
                // Held at the wrong slot: a stray, the holder's own business.
                continue;
            }
            let written = written_at(e, h, now_ms);
            let b = bodies
                .entry(id.data_id.clone())
                .or_insert_with(|| BodyState {
                    data_id: id.data_id.clone(),
                    header: h.clone(),
                    written_unix_ms: written,
                    blocks: e.blocks,
                    present: Vec::new(),
                    missing: Vec::new(),
                });
            b.present.push(slot);
            // The oldest fragment wins: a rebuilt fragment is younger than the
            // body, whose PUT ended when the first ones were stored.
            if written < b.written_unix_ms {
                b.written_unix_ms = written;
                b.header = h.clone();
            }
        }
    }
    let mut actions = Vec::new();
    for (_, mut b) in bodies {
        if b.written_unix_ms >= young_before_ms {
            continue;
        }
        b.missing = (0..width)
            .filter(|s| !b.present.contains(s) && listings[*s].is_some())
            .collect();
        let unknown = width - b.present.len() - b.missing.len();
        if b.present.len() < k {
            if unknown == 0 {
                actions.push(Action::BelowK(b));
            }
        } else if !b.missing.is_empty() {
            actions.push(Action::Rebuild(b));
        } else if unknown == 0 && b.written_unix_ms < orphan_before_ms {
            actions.push(Action::CheckReferenced(b));
        }
    }
    // Stable: rebuilds by fragments left, then the rest in data id order.
    actions.sort_by_key(|a| match a {
        Action::Rebuild(b) => (0, b.present.len()),
        Action::BelowK(_) | Action::CheckReferenced(_) => (1, 0),
    });
    actions
}

/// A rebuild of a body with no fragment to spare (exactly k left, e.g. one
/// acknowledged with k while a zone was down): one more loss loses it, so
/// a pass does these before anything else in any PG.
pub fn is_urgent(a: &Action, k: usize) -> bool {
    matches!(a, Action::Rebuild(b) if b.present.len() <= k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_proto::datanode::FragmentId;

    fn entry(id: u8, shard: u32, created: i64) -> FragmentEntry {
        FragmentEntry {
            header: Some(FragmentHeader {
                id: Some(FragmentId {
                    data_id: Bytes::from(vec![id; 16]),
                    shard,
                }),
                created_unix_ms: created,
                ..Default::default()
            }),
            length: 10,
            blocks: 1,
            age_ms: None,
        }
    }

    /// Slot s holds the given (body, shard) fragments.
    fn listings(slots: Vec<Option<Vec<(u8, u32)>>>) -> Vec<Option<Vec<FragmentEntry>>> {
        slots
            .into_iter()
            .map(|l| l.map(|v| v.into_iter().map(|(b, s)| entry(b, s, 100)).collect()))
            .collect()
    }

    #[test]
    fn missing_fragments_are_rebuilt_when_k_remain() {
        // 4+2: body 1 lacks slots 2 and 5, body 2 is complete, body 3 has 3 of 6.
        let l = listings(vec![
            Some(vec![(1, 0), (2, 0), (3, 0)]),
            Some(vec![(1, 1), (2, 1), (3, 1)]),
            Some(vec![(2, 2), (3, 2)]),
            Some(vec![(1, 3), (2, 3)]),
            Some(vec![(1, 4), (2, 4)]),
            Some(vec![(2, 5)]),
        ]);
        let a = plan_pg(&l, 4, 0, 1_000, 50);
        assert_eq!(a.len(), 2, "{a:?}");
        match &a[0] {
            Action::Rebuild(b) => {
                assert_eq!(b.present, vec![0, 1, 3, 4]);
                assert_eq!(b.missing, vec![2, 5]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&a[1], Action::BelowK(b) if b.present == vec![0, 1, 2]));
    }

    #[test]
    fn unreachable_members_are_neither_rebuilt_nor_judged() {
        let l = listings(vec![Some(vec![(1, 0), (2, 0)]), None, Some(vec![(1, 2)])]);
        // REPLICA3 (k = 1): body 1 lacks nothing it can fix but slot 1 is unknown.
        let a = plan_pg(&l, 1, 0, 1_000, 50);
        assert_eq!(a.len(), 1);
        // Body 2 misses slot 2 (answered) and slot 1 is unknown: rebuild slot 2 only.
        assert!(matches!(&a[0], Action::Rebuild(b) if b.data_id[0] == 2 && b.missing == vec![2]));
        // Below k with an unknown slot: no verdict (it may be there).
        let l = listings(vec![
            Some(vec![(7, 0)]),
            None,
            Some(vec![]),
            Some(vec![]),
            Some(vec![]),
            Some(vec![]),
        ]);
        assert!(plan_pg(&l, 4, 0, 1_000, 50).is_empty());
    }

    #[test]
    fn young_bodies_and_strays_are_left_alone() {
        let mut l = listings(vec![Some(vec![(1, 0)]), Some(vec![]), Some(vec![(9, 0)])]);
        // Body 1 is younger than the cut-off: its PUT may still be writing.
        assert!(plan_pg(&l, 1, 0, 50, 10)
            .iter()
            .all(|a| !matches!(a, Action::Rebuild(b) if b.data_id[0] == 1)));
        // Body 9's fragment sits at slot 2 with shard 0: a stray, ignored.
        l[0] = Some(vec![]);
        assert!(plan_pg(&l, 1, 0, 50, 10).is_empty());
    }

    #[test]
    fn complete_old_bodies_are_checked_for_references() {
        let l = listings(vec![
            Some(vec![(1, 0)]),
            Some(vec![(1, 1)]),
            Some(vec![(1, 2)]),
        ]);
        assert!(
            plan_pg(&l, 1, 0, 1_000, 50).is_empty(),
            "not old enough for the orphan check"
        );
        let a = plan_pg(&l, 1, 0, 1_000, 500);
        assert!(matches!(&a[0], Action::CheckReferenced(_)));
    }

    /// A gateway whose clock is an hour behind stamps `created_unix_ms` an
    /// hour in the past; the holders report how long ago *they* stored the
    /// fragments, so a body still being written is young, never an orphan.
    #[test]
    fn age_comes_from_the_holders_clocks_not_the_writers() {
        let hour = 3_600_000i64;
        let now = 10 * hour;
        let fresh = |shard: u32| {
            let mut e = entry(1, shard, now - hour); // the skewed gateway's stamp
            e.age_ms = Some(2_000); // stored 2 s ago by the holder
            e
        };
        let l = vec![
            Some(vec![fresh(0)]),
            Some(vec![fresh(1)]),
            Some(vec![fresh(2)]),
        ];
        let (young_before, orphan_before) = (now - 60_000, now - hour / 2);
        assert!(
            plan_pg(&l, 1, now, young_before, orphan_before).is_empty(),
            "a 2 s old body is left alone whatever its header says"
        );
        // The same body below k (two fragments not written yet) is not judged either.
        let l = vec![
            Some(vec![fresh(0)]),
            Some(vec![]),
            Some(vec![]),
            Some(vec![]),
        ];
        assert!(plan_pg(&l, 2, now, young_before, orphan_before).is_empty());
        // Old by the holders' clocks: judged, even if the header says "just now"
        // (a gateway clock ahead of time cannot keep orphans forever either).
        let old = |shard: u32| {
            let mut e = entry(1, shard, now + hour);
            e.age_ms = Some(hour as u64);
            e
        };
        let l = vec![Some(vec![old(0)]), Some(vec![old(1)]), Some(vec![old(2)])];
        let a = plan_pg(&l, 1, now, young_before, orphan_before);
        assert!(matches!(&a[..], [Action::CheckReferenced(b)] if b.written_unix_ms == now - hour));
    }

    #[test]
    fn bodies_with_fewest_fragments_are_rebuilt_first() {
        // 4+2: body 1 lacks one fragment, body 2 two (acknowledged with k).
        let l = listings(vec![
            Some(vec![(1, 0), (2, 0)]),
            Some(vec![(1, 1), (2, 1)]),
            Some(vec![(1, 2), (2, 2)]),
            Some(vec![(1, 3), (2, 3)]),
            Some(vec![(1, 4)]),
            Some(vec![]),
        ]);
        let a = plan_pg(&l, 4, 0, 1_000, 50);
        let order: Vec<u8> = a
            .iter()
            .map(|a| match a {
                Action::Rebuild(b) => b.data_id[0],
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(order, vec![2, 1]);
    }

    #[test]
    fn only_rebuilds_with_no_fragment_to_spare_are_urgent() {
        let body = |present: Vec<usize>, missing: Vec<usize>| BodyState {
            data_id: Bytes::from_static(&[1; 16]),
            header: FragmentHeader::default(),
            written_unix_ms: 0,
            blocks: 1,
            present,
            missing,
        };
        // EC 4+2: 4 left is urgent, 5 left has one to spare.
        assert!(is_urgent(
            &Action::Rebuild(body(vec![0, 1, 2, 3], vec![4, 5])),
            4
        ));
        assert!(!is_urgent(
            &Action::Rebuild(body(vec![0, 1, 2, 3, 4], vec![5])),
            4
        ));
        assert!(!is_urgent(
            &Action::BelowK(body(vec![0, 1, 2], vec![3, 4, 5])),
            4
        ));
        assert!(!is_urgent(
            &Action::CheckReferenced(body(vec![0, 1, 2, 3, 4, 5], vec![])),
            4
        ));
    }
}
