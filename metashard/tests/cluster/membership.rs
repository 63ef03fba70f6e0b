//! Conf changes and leader transfer.

use crate::harness::*;

/// Conf change: a peer removed while its store is down destroys itself
/// (region state and data) when the store comes back and hears from the
/// others; a learner added on that store gets everything by snapshot, is
/// promoted, and then carries a quorum with the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_then_add_learner_and_promote() {
    use raft::prelude::ConfChangeType::*;
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..10).await;
    let leader = c.leader().await.expect("a leader");
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let other = (1..=3).find(|id| *id != leader && *id != victim).unwrap();
    let old = Peer {
        id: 100 + victim,
        store_id: victim,
        is_learner: false,
    };
    let self_removal = Peer {
        id: 100 + leader,
        store_id: leader,
        is_learner: false,
    };
    let e = change_peer(&c, leader, RemoveNode, self_removal)
        .await
        .expect_err("the leader cannot remove itself");
    assert!(e.server_busy.is_some(), "{e:?}");

    c.stop(victim).await;
    let (r, _) = change_peer(&c, leader, RemoveNode, old)
        .await
        .expect("remove applied");
    assert_eq!(r.peers.len(), 2);
    assert_eq!(r.epoch.unwrap().conf_ver, 2);
    write_range(&client, 10..20).await;
    // Back up, the removed peer campaigns, is told it is gone, and goes.
    c.restart(victim).await;
    eventually_async("the removed peer to destroy itself", || async {
        region_status_on(&c, victim, REGION_ID).await.is_none()
            && c.engine(victim)
                .get_data(Cf::Meta, &key(0))
                .unwrap()
                .is_none()
    })
    .await;

    let learner = Peer {
        id: 200 + victim,
        store_id: victim,
        is_learner: true,
    };
    let (r, _) = change_peer(&c, leader, AddLearnerNode, learner)
        .await
        .expect("learner added");
    assert!(r.peers.iter().any(|p| p.id == learner.id && p.is_learner));
    let dup = Peer {
        id: 300 + victim,
        ..learner
    };
    assert!(
        change_peer(&c, leader, AddLearnerNode, dup).await.is_err(),
        "one peer per store"
    );
    eventually_async("the learner to catch up by snapshot", || async {
        has_all(c.engine(victim), 20)
    })
    .await;
    let (r, _) = change_peer(&c, leader, AddNode, learner)
        .await
        .expect("learner promoted");
    assert!(r.peers.iter().all(|p| !p.is_learner) && r.peers.len() == 3);
    // The promoted peer now makes the quorum with the leader.
    c.stop(other).await;
    write_range(&client, 20..25).await;
    eventually_async("the promoted peer to apply new writes", || async {
        has_all(c.engine(victim), 25)
    })
    .await;
    c.restart(other).await;
    check_all(&client, 25).await;
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// `TransferLeader`: moves leadership to a caught-up follower (writes go
/// on), answers `NotLeader` on a follower, and refuses a target that is
/// not heard from (a stopped store) instead of stalling the region.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_leader_moves_leadership_and_refuses_a_stopped_target() {
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..10).await;
    let leader = c.leader().await.expect("a leader");
    let target = (1..=3).find(|id| *id != leader).expect("a follower");
    let other = (1..=3)
        .find(|id| *id != leader && *id != target)
        .expect("a third store");

    let e = transfer_leader_on(&c, target, 100 + other)
        .await
        .expect("a follower refuses");
    assert!(e.not_leader.is_some(), "{e:?}");

    assert_eq!(transfer_leader_on(&c, leader, 100 + target).await, None);
    let t0 = Instant::now();
    loop {
        if c.leader().await == Some(target) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "leadership never moved to store {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    write_range(&client, 10..20).await;
    check_all(&client, 20).await;

    // A stopped store's peer is not recently active once the leader's
    // quorum check has run (every election timeout, 500 ms here).
    c.stop(other).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = transfer_leader_on(&c, target, 100 + other)
        .await
        .expect("a stopped target is refused");
    assert!(
        e.server_busy.is_some() && e.message.contains("not caught up"),
        "{e:?}"
    );
    assert_eq!(c.leader().await, Some(target), "leadership stayed");
    write_range(&client, 20..25).await;
    check_all(&client, 25).await;
    for id in [leader, target] {
        c.stop(id).await;
    }
}
