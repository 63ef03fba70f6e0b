//! Durability: acknowledged writes survive `kill -9` and full restarts.
mod common;
use common::{pattern, Cluster};
use std::time::Duration;

/// Write, stop the whole cluster, start it again on the same dir, read back.
#[test]
fn restart_keeps_every_bucket_and_object() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = common::free_port_range();
    let objects: Vec<(String, Vec<u8>)> = [0usize, 1, 4096, 70_000, (3 << 20) + 1]
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("k/{i}"), pattern(*s, i as u64)))
        .collect();
    {
        let c = Cluster::must_start_in(tmp.path(), port);
        c.must_aws(&["s3", "mb", "s3://keep"]);
        for (k, data) in &objects {
            let f = tmp.path().join("obj");
            std::fs::write(&f, data).unwrap();
            c.must_put_file("keep", k, &f);
        }
    } // dropped: kura dev stopped with SIGTERM
    let c = Cluster::must_start_in(tmp.path(), port);
    assert!(c.must_aws(&["s3", "ls"]).contains("keep"));
    for (k, data) in &objects {
        let f = tmp.path().join("back");
        c.must_get_file("keep", k, &f);
        assert_eq!(
            &std::fs::read(&f).unwrap(),
            data,
            "{k} differs after restart"
        );
    }
}

/// A client keeps writing while we kill -9 a data node, then the metadata
/// leader's store; every PUT that got 200 reads back identical once the
/// processes are restarted.
#[test]
fn kill9_datanode_and_meta_leader_loses_no_acked_write() {
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://dur"]);
    let ack = c.dir.join("acks.log");
    let stop = c.dir.join("stop-writer");
    let writer = c.spawn_python(
        "writer.py",
        &["dur", ack.to_str().unwrap(), stop.to_str().unwrap(), "120"],
    );
    let acked = || {
        std::fs::read_to_string(&ack)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let wait_acks = |n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while acked() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "writer made no progress ({} acked)",
                acked()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_acks(20);
    c.must_kill9("datanode-3");
    let before = acked();
    wait_acks(before + 20); // writes continue with one data node down
    let leader = common::meta_leader_component(&c);
    c.must_kill9(&leader);
    let before = acked();
    wait_acks(before + 20); // and after the metadata leader died
    c.must_restart("datanode-3");
    c.must_restart(&leader);
    let before = acked();
    wait_acks(before + 10);
    std::fs::write(&stop, b"").unwrap();
    let mut writer = writer;
    let _ = writer.wait();
    let out = c.must_python("verify.py", &["dur", ack.to_str().unwrap()]);
    assert!(out.contains(" 0 bad"), "{out}");
}

/// A metadata follower that was down while the Raft log grew past the GC
/// threshold (kura dev: 1000 entries) catches up from a snapshot, and is then
/// good enough to form the quorum that serves every key once the leader dies.
#[test]
fn restarted_follower_catches_up_by_snapshot_and_serves_after_leader_dies() {
    const KEYS: &str = "1100"; // > log_gc_threshold, one Raft entry per PUT
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://snap"]);
    let leader = common::meta_leader_component(&c);
    let follower = c
        .components()
        .into_iter()
        .find(|x| x.role == "metashard" && x.id != leader)
        .expect("a follower")
        .id;
    c.must_kill9(&follower);
    let out = c.must_python("many_puts.py", &["put", "snap", "k/", KEYS]);
    eprintln!("{}", out.trim());
    c.must_restart(&follower);

    let status = c.component(&follower).status;
    let snapshots = "kura_metashard_snapshots_applied_total";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if common::metric(&status, snapshots).unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{follower} applied no snapshot within 60s (metric {:?})\n{}",
            common::metric(&status, snapshots),
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent = common::metric(
        &c.component(&leader).status,
        "kura_metashard_snapshots_sent_total",
    );
    assert!(
        sent.unwrap_or(0.0) >= 1.0,
        "leader {leader} sent {sent:?} snapshots"
    );

    // Only the restarted follower and the third store remain: every read now
    // needs the follower in the quorum.
    c.must_kill9(&leader);
    let out = c.must_python("many_puts.py", &["verify", "snap", "k/", KEYS]);
    eprintln!("{}", out.trim());
    // For the log: whether the caught-up follower itself took over (PD learns
    // of the new leader through heartbeats, so this may lag).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let now = common::meta_leader_component(&c);
        if now != leader {
            eprintln!("new metadata leader: {now} (restarted follower: {follower})");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
