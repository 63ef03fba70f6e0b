//! Splits and merges, applied on every store.

use crate::harness::*;

/// A split is one raft command: proposals queued behind it with the old
/// epoch are answered `EpochNotMatch` naming both halves (never lost or
/// applied to the wrong range); the new region elects a leader at once,
/// serves writes, and survives a restart of every store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_applies_everywhere_and_rejects_stale_proposals() {
    use kura_metashard::fsm::StoreMsg;
    use tokio::sync::oneshot;
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..10).await;
    let leader = c.leader().await.expect("a leader");
    let router = c.nodes[&leader].store.as_ref().unwrap().router().clone();
    let split_key = key(5);
    // Reads establish the lease: the leader's read delegate then answers
    // reads of the whole region (decision 0050).
    // (The test lease is short: each try reads again to renew it.)
    let v1 = RegionEpoch {
        conf_ver: 1,
        version: 1,
    };
    let local = router.local_readers().clone();
    eventually_async("a read delegate", || async {
        check_all(&client, 10).await;
        local
            .grant(REGION_ID, Some(&v1), &[key(8).as_slice()])
            .is_some()
    })
    .await;

    // One burst, handled in one raftstore round: batches before the split
    // message, the split, batches after it (all against version 1).
    let mut before = Vec::new();
    let mut after = Vec::new();
    for i in 0..4 {
        let (tx, rx) = oneshot::channel();
        let k = format!("pre-{i}");
        let k = if i % 2 == 0 { key(1) } else { key(8) }
            .into_iter()
            .chain(k.bytes())
            .collect::<Vec<u8>>();
        router
            .send(StoreMsg::Batch {
                req: Box::new(raw_batch(REGION_ID, 1, &k)),
                cb: tx,
            })
            .unwrap();
        before.push((k, rx));
    }
    let (stx, srx) = oneshot::channel();
    router
        .send(StoreMsg::Split {
            region_id: REGION_ID,
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            split_key: split_key.clone(),
            new_region_id: 50,
            new_peer_ids: vec![51, 52, 53],
            cb: stx,
        })
        .unwrap();
    for i in 0..4 {
        let (tx, rx) = oneshot::channel();
        let k = if i % 2 == 0 { key(2) } else { key(7) };
        let k: Vec<u8> = k.into_iter().chain(*b"-post").collect();
        router
            .send(StoreMsg::Batch {
                req: Box::new(raw_batch(REGION_ID, 1, &k)),
                cb: tx,
            })
            .unwrap();
        after.push((k, rx));
    }
    let regions = srx.await.unwrap().expect("split applied");
    // Once the split's round ends, the parent's delegate vouches only for
    // its new epoch and range: a read with the old epoch, or of a key the
    // split moved, goes to the raftstore thread (EpochNotMatch), never to
    // the engine unchecked.
    let v2 = RegionEpoch {
        conf_ver: 1,
        version: 2,
    };
    eventually_async("the delegate follows the split", || async {
        client.get(Cf::Meta, &key(1)).await.expect("read");
        local
            .grant(REGION_ID, Some(&v1), &[key(1).as_slice()])
            .is_none()
            && local
                .grant(REGION_ID, Some(&v2), &[key(1).as_slice()])
                .is_some()
    })
    .await;
    assert!(local
        .grant(REGION_ID, Some(&v2), &[key(8).as_slice()])
        .is_none());
    assert!(local.grant(REGION_ID, None, &[key(8).as_slice()]).is_none());
    assert_eq!(regions.len(), 2);
    assert_eq!((regions[0].id, regions[1].id), (REGION_ID, 50));
    assert_eq!(regions[0].end_key.as_ref(), split_key.as_slice());
    assert_eq!(regions[1].start_key.as_ref(), split_key.as_slice());
    for (k, rx) in before {
        assert_eq!(
            rx.await.unwrap().expect("applied before the split"),
            (true, 0)
        );
        for id in 1..=3 {
            let e = c.engine(id).clone();
            eventually("pre-split write replicated", Duration::from_secs(5), || {
                e.get_data(Cf::Meta, &k).unwrap().is_some()
            })
            .await;
        }
    }
    for (k, rx) in after {
        let err = rx.await.unwrap().expect_err("stale epoch after the split");
        let en = err.epoch_not_match.expect("EpochNotMatch");
        let ids: Vec<u64> = en.current_regions.iter().map(|r| r.id).collect();
        assert!(ids.contains(&REGION_ID) && ids.contains(&50), "{ids:?}");
        assert_eq!(
            c.engine(leader).get_data(Cf::Meta, &k).unwrap(),
            None,
            "a rejected batch wrote nothing"
        );
    }
    // Stale epoch at propose time too, and keys outside the parent's new range.
    let (tx, rx) = oneshot::channel();
    router
        .send(StoreMsg::Batch {
            req: Box::new(raw_batch(REGION_ID, 1, &key(1))),
            cb: tx,
        })
        .unwrap();
    assert!(rx.await.unwrap().unwrap_err().epoch_not_match.is_some());
    let (tx, rx) = oneshot::channel();
    router
        .send(StoreMsg::Batch {
            req: Box::new(raw_batch(REGION_ID, 2, &key(8))),
            cb: tx,
        })
        .unwrap();
    assert!(rx.await.unwrap().unwrap_err().key_not_in_region.is_some());

    // Every store applied the split; the new region elects a leader fast.
    let deadline = Instant::now() + Duration::from_secs(5);
    let new_leader = loop {
        let mut found = None;
        for id in 1..=3 {
            let st = region_status_on(&c, id, 50).await;
            let parent = region_status_on(&c, id, REGION_ID).await;
            if let (Some(st), Some(parent)) = (st, parent) {
                assert_eq!(
                    parent.region.unwrap().end_key.as_ref(),
                    split_key.as_slice()
                );
                if st.leader_peer_id == 50 + id {
                    found = Some(id);
                }
            }
        }
        if let Some(id) = found {
            break id;
        }
        assert!(Instant::now() < deadline, "region 50 elected no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        new_leader, leader,
        "the parent's leader store campaigned first"
    );

    // The new region takes writes for its keys under version 2.
    let router = c.nodes[&new_leader]
        .store
        .as_ref()
        .unwrap()
        .router()
        .clone();
    let (tx, rx) = oneshot::channel();
    router
        .send(StoreMsg::Batch {
            req: Box::new(raw_batch(50, 2, b"\x7fnew")),
            cb: tx,
        })
        .unwrap();
    assert_eq!(rx.await.unwrap().unwrap(), (true, 0));

    // Restart every store: both regions come back from disk.
    for id in 1..=3 {
        c.stop(id).await;
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    for id in 1..=3 {
        let st = region_status_on(&c, id, 50)
            .await
            .expect("split region persisted");
        let r = st.region.unwrap();
        assert_eq!(r.start_key.as_ref(), split_key.as_slice());
        assert_eq!(r.epoch.unwrap().version, 2);
        let p = region_status_on(&c, id, REGION_ID)
            .await
            .unwrap()
            .region
            .unwrap();
        assert_eq!(p.end_key.as_ref(), split_key.as_slice());
        // Committed before the restart; applied everywhere once re-elected.
        let e = c.engine(id).clone();
        eventually(
            "new region's write applied",
            Duration::from_secs(10),
            || e.get_data(Cf::Meta, b"\x7fnew").unwrap().is_some(),
        )
        .await;
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// Merge is two raft commands in two logs: the source (right half of a
/// split) freezes itself, then the target absorbs it. A store that missed
/// source writes catches up before the commit (the operator's precondition);
/// a store down during the commit applies it after restarting; afterwards
/// one region covers the whole range on every store, the source's peers are
/// gone for good, and every write on either side is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merge_absorbs_the_right_half_on_every_store() {
    use kura_proto::metashard::{AdminRequest, CommitMerge, PrepareMerge, RequestHeader};
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..10).await;
    let leader = c.leader().await.expect("a leader");
    let (left, right) = split_at_key5(&c, leader).await;
    let source_id = right.id;
    let deadline = Instant::now() + Duration::from_secs(10);
    let sl = loop {
        if let Some(id) = leader_store(&c, &right).await {
            break id;
        }
        assert!(Instant::now() < deadline, "the source elected no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // One store misses source writes.
    let lagging = (1..=3).find(|id| *id != sl && *id != leader).unwrap_or(3);
    c.stop(lagging).await;
    let late: Vec<Vec<u8>> = (0..5)
        .map(|i| [key(7), format!("-late{i}").into_bytes()].concat())
        .collect();
    for k in &late {
        assert_eq!(
            propose(&c, sl, raw_batch(source_id, 2, k)).await.unwrap(),
            (true, 0)
        );
    }
    let (frozen, prepare_index) = merge_step(
        &c,
        sl,
        AdminRequest {
            header: Some(RequestHeader {
                region_id: source_id,
                epoch: right.epoch,
            }),
            prepare_merge: Some(PrepareMerge {
                target: Some(left.clone()),
            }),
            ..Default::default()
        },
    )
    .await
    .expect("prepare merge applied");
    assert_eq!(frozen.epoch.unwrap().version, 3);
    let err = propose(&c, sl, raw_batch(source_id, 3, &key(8)))
        .await
        .expect_err("a frozen source refuses writes");
    assert!(err.server_busy.is_some(), "{err:?}");

    // The lagging store catches its source up (what PD waits for) ...
    c.restart(lagging).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = region_status_on(&c, lagging, source_id).await;
        if st.is_some_and(|s| s.applied_index >= prepare_index && s.merge_target_id == REGION_ID) {
            break;
        }
        assert!(Instant::now() < deadline, "lagging source never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... then is down while the target commits.
    c.stop(lagging).await;
    let tl = loop {
        if let Some(l) = c.leader().await {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (merged, _) = merge_step(
        &c,
        tl,
        AdminRequest {
            header: Some(RequestHeader {
                region_id: REGION_ID,
                epoch: left.epoch,
            }),
            commit_merge: Some(CommitMerge {
                source: Some(frozen.clone()),
                prepare_index,
            }),
            ..Default::default()
        },
    )
    .await
    .expect("commit merge applied");
    assert!(merged.start_key.is_empty() && merged.end_key.is_empty());
    assert_eq!(merged.epoch.unwrap().version, 4, "newer than both halves");
    let after = [key(8), b"-after".to_vec()].concat();
    assert_eq!(
        propose(&c, tl, raw_batch(REGION_ID, 4, &after))
            .await
            .unwrap(),
        (true, 0),
        "the target serves the source's old range"
    );
    c.restart(lagging).await;
    for round in 0..2 {
        for id in 1..=3 {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let gone = region_status_on(&c, id, source_id).await.is_none();
                let whole = region_status_on(&c, id, REGION_ID)
                    .await
                    .and_then(|s| s.region)
                    .is_some_and(|r| r.end_key.is_empty() && r.epoch == merged.epoch);
                let e = c.engine(id);
                let data = has_all(e, 10)
                    && late
                        .iter()
                        .chain([&after])
                        .all(|k| e.get_data(Cf::Meta, k).unwrap().is_some());
                if gone && whole && data {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: store {id} gone={gone} whole={whole} data={data}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // The merge is durable: nothing comes back after a restart.
        for id in 1..=3 {
            c.stop(id).await;
        }
        for id in 1..=3 {
            c.restart(id).await;
        }
    }
    // Through the routing client too: one region, every key, in order.
    let all = client
        .scan(Cf::Meta, b"\x02", b"", usize::MAX, false)
        .await
        .unwrap();
    assert_eq!(all.len(), 10 + late.len() + 1);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key));
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// A split region's first campaign travels with the split's commit and
/// reaches the other stores before they apply the split: its vote requests
/// are kept until then, so the region has a leader within a few rounds, not
/// at the candidate's next re-campaign tick (one second here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_region_elects_its_leader_without_waiting_a_tick() {
    let mut c = Cluster::start_with(RaftConfig {
        tick: Duration::from_secs(1),
        election_ticks: 3,
        heartbeat_ticks: 1,
        ..raft_cfg()
    })
    .await;
    write_range(&c.client(), 0..10).await;
    let leader = c.leader().await.expect("a leader");
    // Three splits of the founding region, each cutting a new region off.
    for (at, new_id) in [(7, 50), (5, 60), (3, 70)] {
        let (_, right) = split_founding_region(&c, leader, at, new_id).await;
        let t = Instant::now();
        while leader_store(&c, &right).await.is_none() {
            assert!(
                t.elapsed() < Duration::from_millis(300),
                "region {new_id} had no leader {:?} after its split",
                t.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}
