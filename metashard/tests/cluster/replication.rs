//! Replication, log compaction, restarts and proposal batching.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicate_failover_snapshot_restart() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut c = Cluster::start().await;
    let client = c.client();

    // Writes replicate to every store.
    write_range(&client, 0..20).await;
    let again = client
        .batch(vec![not_exists(&key(3))], vec![put(&key(3), b"x")])
        .await
        .unwrap();
    assert_eq!(again, BatchOutcome::ConditionFailed { index: 0 });
    check_all(&client, 20).await;
    let page = client
        .scan(Cf::Meta, &key(5), &key(12), 4, true)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|kv| kv.key.to_vec()).collect::<Vec<_>>(),
        (5..9).map(key).collect::<Vec<_>>()
    );
    assert!(page.iter().all(|kv| kv.value.is_empty()));
    for id in 1..=3 {
        let e = c.engine(id).clone();
        eventually("replication", Duration::from_secs(5), || has_all(&e, 20)).await;
    }
    // Rounds whose batch held only applied entries (the log entries were
    // synced in an earlier round) were written without an fsync.
    let round_writes = |sync| {
        kura_metashard::metrics::ROUND_WRITES
            .with_label_values(&[sync])
            .get()
    };
    assert!(round_writes("true") > 0 && round_writes("false") > 0);

    // Kill the leader: acknowledged writes stay readable, writes continue.
    let leader = c.leader().await.expect("a leader");
    c.stop(leader).await;
    check_all(&client, 20).await;
    // While it is down, commit far more than the GC threshold so the others
    // compact their logs past what it has.
    write_range(&client, 20..20 + 3 * GC_THRESHOLD as usize).await;
    let n = 20 + 3 * GC_THRESHOLD as usize;
    let live: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &live {
        let st = c.status(*id).await;
        assert!(
            st.first_log_index > 21,
            "store {id} compacted its log: {st:?}"
        );
    }

    // The old leader comes back and catches up by snapshot.
    let snaps_before = kura_metashard::metrics::SNAPSHOTS_APPLIED.get();
    c.restart(leader).await;
    let e = c.engine(leader).clone();
    eventually("snapshot catch-up", Duration::from_secs(10), || {
        has_all(&e, n)
    })
    .await;
    drop(e);
    assert!(
        kura_metashard::metrics::SNAPSHOTS_APPLIED.get() > snaps_before,
        "caught up via snapshot"
    );
    check_all(&client, n).await;

    // Restart everything from disk.
    for id in 1..=3 {
        c.stop(id).await;
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    check_all(&client, n).await;
    write_range(&client, n..n + 5).await;
    check_all(&client, n + 5).await;
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// A log of few but big entries is compacted by its size long before the
/// entry-count threshold, on every store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_log_is_compacted_by_size() {
    let mut c = Cluster::start_with(RaftConfig {
        log_gc_threshold: 100_000,
        log_gc_size_limit: 256 << 10,
        ..raft_cfg()
    })
    .await;
    let client = c.client();
    let big = vec![7u8; 32 << 10];
    for i in 0..40 {
        let out = client
            .batch(vec![], vec![put(&key(i), &big)])
            .await
            .unwrap();
        assert_eq!(out, BatchOutcome::Applied);
    }
    for id in 1..=3 {
        eventually_status(&c, id, |st| st.first_log_index > 20).await;
    }
    for i in 0..40 {
        let v = client.get(Cf::Meta, &key(i)).await.unwrap();
        assert_eq!(v.as_deref(), Some(big.as_slice()), "key {i}");
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// `run`: registers with PD (id allocated once, persisted), creates the peer PD
/// asks for, serves, stops on shutdown, and comes back with the same id and data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_registers_serves_and_restarts() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (pd, pd_addr) = start_fake_pd().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = kura_metashard::Config::new(
        dir.path().to_path_buf(),
        addr,
        addr.to_string(),
        vec![pd_addr.to_string()],
    );
    cfg.raft_tick_ms = 20;
    cfg.zone = "z1".into();
    let start = |cfg: kura_metashard::Config| {
        let ready = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let h = tokio::spawn(kura_metashard::run(cfg, ready.clone(), rx));
        (ready, tx, h)
    };

    let (ready, stop, h) = start(cfg.clone());
    eventually("ready", Duration::from_secs(10), || {
        ready.load(Ordering::SeqCst)
    })
    .await;
    let store_id = {
        let st = pd.0.lock().unwrap();
        assert_eq!(st.stores.len(), 1);
        let (id, s) = st.stores.iter().next().unwrap();
        assert_eq!(s.address, addr.to_string());
        assert_eq!(s.labels.as_ref().unwrap().zone, "z1");
        *id
    };
    let single = Region {
        id: 9,
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![Peer {
            id: 900,
            store_id,
            is_learner: false,
        }],
        ..Default::default()
    };
    pd.0.lock().unwrap().to_create.insert(
        store_id,
        vec![PeerToCreate {
            region: Some(single),
            peer_id: 900,
            initial: true,
        }],
    );
    let pd_client = PdClient::new(&[pd_addr.to_string()]).unwrap();
    let client = MetaClient::new(Arc::new(RegionCache::new(pd_client.clone())));
    write_range(&client, 0..3).await;
    stop.send(true).unwrap();
    h.await.unwrap().unwrap();
    assert!(!ready.load(Ordering::SeqCst));

    let (ready, stop, h) = start(cfg);
    eventually("ready again", Duration::from_secs(10), || {
        ready.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(
        pd.0.lock()
            .unwrap()
            .stores
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![store_id]
    );
    let client = MetaClient::new(Arc::new(RegionCache::new(pd_client)));
    for i in 0..3 {
        assert_eq!(
            client.get(Cf::Meta, &key(i)).await.unwrap().as_deref(),
            Some(format!("v{i}").as_bytes())
        );
    }
    stop.send(true).unwrap();
    h.await.unwrap().unwrap();
}

/// The client's point reads and batches travel as calls on one stream per
/// store. A store's restart ends its stream: the next calls to it open
/// another, and nothing acknowledged is lost. A client that goes away
/// leaves no stream behind on the stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_calls_share_a_stream_and_reopen_it_after_a_restart() {
    let mut c = Cluster::start().await;
    let client = c.client();
    let calls = || kura_metashard::metrics::STREAM_CALLS.get();
    let before = calls();
    write_range(&client, 0..20).await;
    check_all(&client, 20).await;
    let streamed = calls() - before;
    assert!(
        streamed >= 40,
        "{streamed} calls on streams for 20 batches and 20 reads"
    );

    let leader = c.leader().await.expect("a leader");
    c.stop(leader).await;
    c.restart(leader).await;
    // Lead from the restarted store again, so the client must reopen its stream there.
    eventually_async("leadership back on the restarted store", || async {
        match c.leader().await {
            Some(now) if now == leader => true,
            Some(now) => {
                let _ = transfer_leader_on(&c, now, 100 + leader).await;
                false
            }
            None => false,
        }
    })
    .await;
    let before = calls();
    write_range(&client, 20..40).await;
    check_all(&client, 40).await;
    let streamed = calls() - before;
    assert!(
        streamed >= 60,
        "{streamed} calls on streams after the restart"
    );
    // A client that goes away ends its streams on the stores.
    assert!(kura_metashard::metrics::CALL_STREAMS.get() > 0);
    drop(client);
    eventually(
        "the stores' call streams end with their client",
        Duration::from_secs(5),
        || kura_metashard::metrics::CALL_STREAMS.get() == 0,
    )
    .await;
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// A call stream stuck with its connection up (its server task stops
/// reading and answering) is retired when a call on it times out: the retry
/// opens another stream and the write lands within the client's deadline
/// (10 s). Without the retirement the retry waited on the stuck stream again
/// and the write failed after two timeouts.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_call_stream_is_retired_after_a_call_times_out() {
    let mut c = Cluster::start().await;
    let client = c.client();
    write_range(&client, 0..5).await;
    fail::cfg("metashard::call_stream_stall", "1*return").unwrap();
    let started = Instant::now();
    write_range(&client, 5..6).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "the first attempt waited for its timeout ({waited:?}): the stream did stall"
    );
    fail::remove("metashard::call_stream_stall");
    write_range(&client, 6..10).await;
    check_all(&client, 10).await;
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// A store that answers `Unimplemented` to `Calls` (a version from before
/// it, during a rolling upgrade) gets every read and batch as a unary call,
/// and the client does not ask it for a stream again.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_without_call_streams_gets_unary_calls() {
    let mut c = Cluster::start().await;
    fail::cfg("metashard::calls_unimplemented", "return").unwrap();
    let client = c.client();
    let streamed = kura_metashard::metrics::STREAM_CALLS.get();
    write_range(&client, 0..10).await;
    check_all(&client, 10).await;
    assert_eq!(
        kura_metashard::metrics::STREAM_CALLS.get(),
        streamed,
        "no call travelled on a stream"
    );
    // Remembered: with the store able again, this client stays unary.
    fail::remove("metashard::calls_unimplemented");
    write_range(&client, 10..20).await;
    check_all(&client, 20).await;
    assert_eq!(kura_metashard::metrics::STREAM_CALLS.get(), streamed);
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// Requests that come while the leader's previous append is being
/// replicated wait for it to commit and then go as one append: eight
/// writers, each sending its next write when the last one is answered (a
/// benchmark's closed loop), see every write applied in order on every
/// store, and some of their batches were held. Whether a write lands while
/// an append is in flight is timing (on a loaded machine all eight can land
/// in one round each time), so rounds of writes go on until one was held,
/// at most `ROUNDS`: with holding disabled none ever is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_during_an_append_wait_for_it() {
    const WRITERS: usize = 8;
    const WRITES: usize = 30;
    const ROUNDS: usize = 10;
    let mut c = Cluster::start().await;
    write_range(&c.client(), 0..1).await;
    let leader = c.leader().await.expect("a leader");
    let router = c.nodes[&leader].store.as_ref().unwrap().router().clone();
    let held_before = kura_metashard::metrics::PROPOSALS_HELD.get();
    let mut counters = Vec::new();
    for _ in 0..ROUNDS {
        let first = 100 + counters.len();
        counters.extend(first..first + WRITERS);
        let writers: Vec<_> = (first..first + WRITERS)
            .map(|n| {
                let router = router.clone();
                tokio::spawn(async move {
                    let counter = key(n);
                    for i in 0..WRITES {
                        let rx = send_counter_write(&router, &counter, i);
                        assert_eq!(rx.await.unwrap(), Ok((true, 0)), "counter {n}, write {i}");
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        if kura_metashard::metrics::PROPOSALS_HELD.get() > held_before {
            break;
        }
    }
    assert!(
        kura_metashard::metrics::PROPOSALS_HELD.get() > held_before,
        "no batch waited for an append in flight in {ROUNDS} rounds"
    );
    let last = (WRITES - 1).to_string().into_bytes();
    for id in 1..=3 {
        eventually(
            "every writer's last write on every store",
            Duration::from_secs(5),
            || {
                counters.iter().all(|n| {
                    c.engine(id).get_data(Cf::Meta, &key(*n)).unwrap().as_ref() == Some(&last)
                })
            },
        )
        .await;
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}

/// Requests that reach the leader in one round are proposed together: the
/// followers get one append for them rather than one per request (raft-rs
/// broadcasts per proposal step), and the entries keep the order the
/// requests came in: each request's condition is the previous one's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_of_one_round_share_one_append() {
    const N: usize = 64;
    let mut c = Cluster::start().await;
    write_range(&c.client(), 0..1).await;
    let leader = c.leader().await.expect("a leader");
    let router = c.nodes[&leader].store.as_ref().unwrap().router().clone();
    let counter = key(99);
    let sent = || {
        kura_metashard::metrics::RAFT_MESSAGES
            .with_label_values(&["sent"])
            .get()
    };
    let sent_before = sent();
    let answers: Vec<_> = (0..N)
        .map(|i| send_counter_write(&router, &counter, i))
        .collect();
    for (i, rx) in answers.into_iter().enumerate() {
        assert_eq!(rx.await.unwrap(), Ok((true, 0)), "request {i}");
    }
    let messages = sent() - sent_before;
    // One entry per append would be 2 × N appends and as many answers.
    assert!(
        messages < N as u64,
        "{messages} raft messages for {N} requests"
    );
    let last = (N - 1).to_string().into_bytes();
    for id in 1..=3 {
        eventually(
            "the last write on every store",
            Duration::from_secs(5),
            || c.engine(id).get_data(Cf::Meta, &counter).unwrap().as_ref() == Some(&last),
        )
        .await;
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}
