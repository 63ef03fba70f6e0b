//! Lease and ReadIndex reads around leader changes.

use crate::harness::*;

/// Leader lease reads: a steady read load is answered from the lease (no
/// ReadIndex round per read), mostly by the service itself from the read
/// delegate (no raftstore hop), and a leader that hands its leadership over
/// stops serving alone at once: every read through it afterwards either
/// sees the newest write or is told to go to the new leader, never stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_reads_are_fresh_across_a_leader_transfer() {
    use kura_proto::metashard::{RequestHeader, TransferLeaderRequest};
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..3).await;
    let counter = |name: &str| {
        prometheus::default_registry()
            .gather()
            .iter()
            .find(|m| m.name() == name)
            .map_or(0.0, |m| m.get_metric()[0].get_counter().get_value())
    };
    let lease_reads = || counter("kura_metashard_lease_reads_total");
    let local_reads = || counter("kura_metashard_local_reads_total");
    let (before, before_local) = (lease_reads() + local_reads(), local_reads());
    for _ in 0..50 {
        check_all(&client, 3).await;
    }
    assert!(
        lease_reads() + local_reads() > before + 50.0,
        "reads were served from the lease"
    );
    assert!(
        local_reads() > before_local + 50.0,
        "reads were answered by the service from the read delegate"
    );

    let old = c.leader().await.expect("a leader");
    let new = (1..=3).find(|id| *id != old).unwrap();
    let read_on_old = |c: &Cluster| read_key1(c.nodes[&old].store.as_ref().unwrap().router());
    let mut mc = MetashardClient::connect(format!("http://{}", c.nodes[&old].addr))
        .await
        .unwrap();
    mc.transfer_leader(TransferLeaderRequest {
        header: Some(RequestHeader {
            region_id: REGION_ID,
            epoch: None,
        }),
        to_peer_id: 100 + new,
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.leader().await != Some(new) {
        assert!(Instant::now() < deadline, "leadership did not move");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A write through the new leader, then reads through the old one.
    let k = key(1);
    let cur = client.get(Cf::Meta, &k).await.unwrap().unwrap();
    let out = client
        .batch(vec![value_equals(&k, &cur)], vec![put(&k, b"newest")])
        .await
        .unwrap();
    assert_eq!(out, BatchOutcome::Applied);
    let old_router = c.nodes[&old].store.as_ref().unwrap().router();
    assert!(
        old_router
            .local_readers()
            .grant(REGION_ID, None, &[k.as_slice()])
            .is_none(),
        "the old leader still vouches for local reads"
    );
    for _ in 0..20 {
        match read_on_old(&c).await.unwrap() {
            Err(e) => assert!(e.not_leader.is_some(), "{e:?}"),
            Ok(_) => {
                let v = c.engine(old).get_data(Cf::Meta, &k).unwrap();
                assert_eq!(
                    v.as_deref(),
                    Some(&b"newest"[..]),
                    "stale read on the old leader"
                );
            }
        }
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// A leader just elected has not committed an entry of its own term, and
/// raft-rs drops a ReadIndex then without a word. Reads that reach it in
/// that window must be answered once its first entry commits, not when the
/// caller's deadline (5 s in the service) runs out: a split's new region and
/// every leader transfer open that window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_reaching_a_new_leader_are_answered_at_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..3).await;
    for _ in 0..3 {
        let old = c.leader().await.expect("a leader");
        let new = (1..=3).find(|id| *id != old).unwrap();
        // Reads sent to the target one after another, before, during and
        // after it takes over (NotLeader until then, answered at once).
        let router = c.nodes[&new].store.as_ref().unwrap().router().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut slowest, mut served) = (Duration::ZERO, 0);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let answer =
                        tokio::time::timeout(Duration::from_secs(5), read_key1(&router)).await;
                    slowest = slowest.max(t.elapsed());
                    if let Ok(Ok(Ok(_))) = answer {
                        served += 1;
                    }
                }
                (slowest, served)
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(transfer_leader_on(&c, old, 100 + new).await, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.leader().await != Some(new) {
            assert!(Instant::now() < deadline, "leadership did not move");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let (slowest, served) = reader.await.unwrap();
        assert!(served > 0, "the new leader served no read");
        // Below the election timeout (500 ms here), after which a lost
        // ReadIndex round is retried: the reads were not lost at all.
        assert!(
            slowest < Duration::from_millis(400),
            "a read waited {slowest:?} at the new leader"
        );
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}
