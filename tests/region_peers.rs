//! Region membership changes on a running cluster: a fourth metashard store
//! joins, `pdctl operator add transfer-peer` moves the region's replica from
//! the old z1 store to it (a learner catches up by snapshot, is promoted,
//! the old peer is removed and its store deletes the data) while a client
//! keeps writing: zero failed PUTs, nothing acknowledged lost; the new
//! store then carries the quorum through kill -9 of another store.
mod common;
use common::Cluster;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Polls `pdctl region check KIND` until it lists `want` regions.
fn check(c: &Cluster, kind: &str, want: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let v = c.must_pdctl(&["region", "check", kind]);
        if v["count"].as_u64() == Some(want) {
            return v;
        }
        assert!(Instant::now() < deadline, "region check {kind}: {v:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn wait_metric(status: &str, name: &str, want: f64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::metric(status, name) != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{what}: {name} = {:?}",
            common::metric(status, name)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn fourth_store_takes_over_a_replica_under_writes() {
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://peers"]);
    c.must_aws(&["s3", "mb", "s3://wrt"]);
    c.must_python("split_check.py", &["put", "peers", "obj", "200"]);
    let mut extra = c.start_extra_metashard(4, "z1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_store = loop {
        let v = c.must_pdctl(&["store"]);
        let found = v["stores"].as_array().and_then(|a| {
            a.iter()
                .find(|s| s["store"]["address"].as_str() == Some(extra.grpc.as_str()))
                .and_then(|s| s["store"]["id"].as_u64())
        });
        if let Some(id) = found {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "the fourth store never registered: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let region = &c.must_pdctl(&["region"])["regions"][0];
    let region_id = region["id"].as_u64().expect("region id");
    let stores = c.must_pdctl(&["store"]);
    let zone_of = |id: u64| {
        stores["stores"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["store"]["id"].as_u64() == Some(id)))
            .and_then(|s| {
                s["store"]["labels"]
                    .as_array()
                    .and_then(|l| l.iter().find(|x| x["key"] == "zone"))
                    .and_then(|x| x["value"].as_str())
                    .map(String::from)
            })
            .unwrap_or_default()
    };
    let peer_stores: Vec<u64> = region["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["store_id"].as_u64())
        .collect();
    let old_z1 = *peer_stores
        .iter()
        .find(|s| zone_of(**s) == "z1")
        .expect("a z1 peer");
    let z2 = *peer_stores
        .iter()
        .find(|s| zone_of(**s) == "z2")
        .expect("a z2 peer");
    let old_status = metashard_in_zone(&c, "z1").status;

    let writer = c.start_writer("wrt", "120");
    writer.wait_acks(10);

    // Two voters in z2 would break one-replica-per-zone: refused.
    let (ok, _, err) = c.pdctl(&[
        "operator",
        "add",
        "transfer-peer",
        &region_id.to_string(),
        &old_z1.to_string(),
        &z2.to_string(),
    ]);
    assert!(
        !ok,
        "a transfer onto a store already holding a peer must fail"
    );
    eprintln!("refused as expected: {}", err.trim());

    let started = Instant::now();
    let moved = c.must_pdctl(&[
        "operator",
        "add",
        "transfer-peer",
        &region_id.to_string(),
        &old_z1.to_string(),
        &new_store.to_string(),
    ]);
    eprintln!("transfer-peer took {:?}: {moved}", started.elapsed());
    let peers: Vec<(u64, bool)> = moved["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| (p[1].as_u64().unwrap_or(0), p[2].as_bool().unwrap_or(true)))
        .collect();
    assert_eq!(peers.len(), 3, "{moved:#}");
    assert!(peers.contains(&(new_store, false)), "{moved:#}");
    assert!(!peers.iter().any(|(s, _)| *s == old_z1), "{moved:#}");
    // The admin move went through PD's operator registry like a scheduler's.
    let ops = c.must_pdctl(&["operator", "show"]);
    let listed = ops["finished"].as_array().is_some_and(|f| {
        f.iter().any(|o| {
            o["region_id"].as_u64() == Some(region_id)
                && o["name"] == "move-peer"
                && o["source"] == "admin"
                && o["status"] == "done"
        })
    });
    assert!(
        listed,
        "the admin transfer-peer is not in operator show: {ops:#}"
    );
    // The old store dropped its peer; the new one holds it.
    wait_metric(&old_status, "kura_metashard_region_count", 0.0, "old store");
    wait_metric(
        &extra.status,
        "kura_metashard_region_count",
        1.0,
        "new store",
    );

    writer.wait_acks(writer.acked() + 20);
    // The new store carries the quorum: kill -9 the z2 store.
    let z2_id = metashard_in_zone(&c, "z2").id;
    c.must_kill9(&z2_id);
    writer.wait_acks(writer.acked() + 20);
    // The leader reports the dead peer; `region check down-peer` lists it.
    let down = check(&c, "down-peer", 1);
    eprintln!("down-peer: {}", down["regions"][0]["down_peers"]);
    assert_eq!(check(&c, "miss-peer", 0)["count"], 0, "still three voters");
    // And catches up after its own kill -9.
    extra.kill9();
    c.must_restart(&z2_id);
    extra.restart();
    writer.wait_acks(writer.acked() + 20);
    check(&c, "down-peer", 0);
    let (summary, _) = writer.finish(&c);
    assert!(summary.contains(" 0 failed"), "PUTs failed: {summary}");
    c.must_python("split_check.py", &["verify", "peers", "obj:200"]);
}

/// A store that stays down has its region peers re-created by PD's replica
/// checker on a live store in the same zone (a fourth store in z1 here):
/// the down peer disappears from `region check down-peer`, the region is
/// whole again, and every object reads back.
#[test]
fn replicas_of_a_down_store_are_recreated_in_its_zone() {
    let mut c = Cluster::must_start_with(&["--max-store-down-secs", "6"]);
    c.must_aws(&["s3", "mb", "s3://rep"]);
    c.must_python("split_check.py", &["put", "rep", "obj", "100"]);
    let extra = c.start_extra_metashard(4, "z1");
    let z1 = metashard_in_zone(&c, "z1").id;
    c.must_kill9(&z1);
    let started = Instant::now();
    c.must_python("split_check.py", &["put", "rep", "down", "30"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = &c.must_pdctl(&["region"])["regions"][0];
        let stores: Vec<u64> = r["peers"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["store_id"].as_u64()).collect())
            .unwrap_or_default();
        let on_new = c.must_pdctl(&["store"])["stores"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|s| s["store"]["address"].as_str() == Some(extra.grpc.as_str()))
                    .and_then(|s| s["store"]["id"].as_u64())
            })
            .is_some_and(|id| stores.contains(&id));
        if on_new && stores.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the down peer was never replaced: {r:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("replaced {:?} after the kill", started.elapsed());
    check(&c, "down-peer", 0);
    wait_metric(
        &extra.status,
        "kura_metashard_region_count",
        1.0,
        "new store",
    );
    c.must_python("split_check.py", &["verify", "rep", "obj:100,down:30"]);
}

/// A fourth store joins a cluster of six regions: balance-region moves the
/// z1 peers of half the regions onto it (one voter per zone all along) and
/// balance-leader gives it leaders, while a client keeps writing: 0 failed
/// PUTs, every acknowledged write and every object reads back.
#[test]
fn regions_and_leaders_rebalance_onto_a_fourth_store() {
    let c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://peers"]);
    c.must_aws(&["s3", "mb", "s3://wrt"]);
    c.must_python("split_check.py", &["put", "peers", "obj", "300"]);
    // Six regions: split the region with the most keys five times.
    split_biggest_region(&c, 5);
    let writer = c.start_writer("wrt", "180");
    writer.wait_acks(10);
    let extra = c.start_extra_metashard(4, "z1");
    let old_z1 = metashard_in_zone(&c, "z1").status;
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = |s: &str, name: &str| common::metric(s, name).unwrap_or(0.0);
        let (new_regions, old_regions) = (
            m(&extra.status, "kura_metashard_region_count"),
            m(&old_z1, "kura_metashard_region_count"),
        );
        let new_leaders = m(&extra.status, "kura_metashard_leader_count");
        if new_regions >= 3.0 && old_regions <= 3.0 && new_leaders >= 1.0 {
            eprintln!(
                "rebalanced in {:?}: new store {new_regions} regions ({new_leaders} leaders), \
                 old z1 store {old_regions}",
                started.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rebalance onto the new store: {new_regions} regions, {new_leaders} leaders, \
             old z1 store {old_regions}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    check(&c, "miss-peer", 0);
    writer.wait_acks(writer.acked() + 20);
    let (summary, _) = writer.finish(&c);
    assert!(summary.contains(" 0 failed"), "PUTs failed: {summary}");
    c.must_python("split_check.py", &["verify", "peers", "obj:300"]);
}

/// The store id PD gave the metashard listening on `grpc` (waits for it to register).
/// Splits the region holding the most keys, `times` times over.
fn split_biggest_region(c: &Cluster, times: usize) {
    for _ in 0..times {
        let biggest = c
            .regions()
            .iter()
            .max_by_key(|r| r["approximate_keys"].as_u64())
            .and_then(|r| r["id"].as_u64())
            .expect("a region");
        c.must_pdctl(&["operator", "add", "split-region", &biggest.to_string()]);
    }
}

/// The first metashard store of the cluster in `zone`.
fn metashard_in_zone(c: &Cluster, zone: &str) -> common::Component {
    c.components()
        .into_iter()
        .find(|x| x.role == "metashard" && x.zone == zone)
        .unwrap_or_else(|| panic!("no metashard in {zone}"))
}

fn store_id_of(c: &Cluster, grpc: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c.must_pdctl(&["store"]);
        let found = v["stores"].as_array().and_then(|a| {
            a.iter()
                .find(|s| s["store"]["address"].as_str() == Some(grpc))
                .and_then(|s| s["store"]["id"].as_u64())
        });
        if let Some(id) = found {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "store {grpc} never registered: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `pdctl store delete` of the first z1 store while a client writes, with a
/// fourth store in z1: the store goes Offline, the replica checker moves
/// every peer of its four regions to the new z1 store, and once it holds
/// none it is Tombstone. Deleting another store then (2 usable left) is
/// refused, as is an unknown id; 0 failed PUTs, everything reads back.
#[test]
fn a_deleted_store_drains_under_writes_and_becomes_tombstone() {
    let c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://del"]);
    c.must_aws(&["s3", "mb", "s3://wrt"]);
    c.must_python("split_check.py", &["put", "del", "obj", "200"]);
    split_biggest_region(&c, 3);
    // `region key BUCKET KEY`: the regions holding object metadata, in key order.
    let first = c.must_pdctl(&["region", "key", "del", "d0/obj00000"]);
    let last = c.must_pdctl(&["region", "key", "del", "d5/obj00197"]);
    let start = c.must_pdctl(&["region", "key", "del"]);
    let start_key = |r: &Value| r["start_key"].as_str().unwrap_or_default().to_string();
    assert!(first["id"].as_u64().is_some(), "{first:#}");
    assert!(
        start_key(&start) <= start_key(&first),
        "{start:#} {first:#}"
    );
    assert!(start_key(&first) <= start_key(&last), "{first:#} {last:#}");
    let (ok, _, err) = c.pdctl(&["region", "key", "no-such-bucket", "x"]);
    assert!(!ok && err.contains("not found"), "{err}");
    let extra = c.start_extra_metashard(4, "z1");
    let new_store = store_id_of(&c, &extra.grpc);
    let z1 = metashard_in_zone(&c, "z1");
    let old_z1 = store_id_of(&c, &z1.grpc);
    let z2 = metashard_in_zone(&c, "z2");
    let z2_store = store_id_of(&c, &z2.grpc);

    let writer = c.start_writer("wrt", "180");
    writer.wait_acks(10);
    let started = Instant::now();
    let v = c.must_pdctl(&["store", "delete", &old_z1.to_string()]);
    assert_eq!(v["store"]["state_name"], "Offline", "{v:#}");
    // Only z2's store, z3's and the new one would be usable: refused.
    let (ok, _, err) = c.pdctl(&["store", "delete", &z2_store.to_string()]);
    assert!(!ok, "deleting a second store must be refused");
    assert!(err.contains("max-replicas"), "{err}");
    let (ok, _, err) = c.pdctl(&["store", "delete", "999999"]);
    assert!(!ok && err.contains("not found"), "{err}");

    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let s = c.must_pdctl(&["store", &old_z1.to_string()]);
        if s["store"]["state_name"] == "Tombstone" {
            assert_eq!(s["status"]["region_count"], 0, "{s:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store {old_z1} never drained: {s:#}\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("store {old_z1} drained in {:?}", started.elapsed());
    wait_metric(
        &z1.status,
        "kura_metashard_region_count",
        0.0,
        "deleted store",
    );
    let n = c.must_pdctl(&["store", &new_store.to_string()]);
    let regions = c.must_pdctl(&["region"])["count"].as_u64().unwrap_or(0);
    assert_eq!(n["status"]["region_count"].as_u64(), Some(regions), "{n:#}");
    check(&c, "miss-peer", 0);
    check(&c, "offline-peer", 0);
    writer.wait_acks(writer.acked() + 20);
    let (summary, _) = writer.finish(&c);
    assert!(summary.contains(" 0 failed"), "PUTs failed: {summary}");
    c.must_python("split_check.py", &["verify", "del", "obj:200"]);
}

/// With `balance-region` removed and `balance-leader` paused (`pdctl
/// scheduler remove|pause`) a fourth store in z1 gets no peer by itself;
/// `operator add scatter-region` then moves one region's z1 peer onto it
/// (the emptiest zone-valid store) under a writer, and a second scatter of
/// the same region finds nothing to move. `config set` changes the
/// schedule interval at runtime. 0 failed PUTs, everything reads back.
#[test]
fn scatter_region_moves_a_region_onto_the_emptiest_store() {
    let c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://scat"]);
    c.must_aws(&["s3", "mb", "s3://wrt"]);
    c.must_python("split_check.py", &["put", "scat", "obj", "100"]);
    c.must_pdctl(&["scheduler", "remove", "balance-region"]);
    c.must_pdctl(&["scheduler", "pause", "balance-leader"]);
    let cfg = c.must_pdctl(&["config", "set", "schedule-interval", "1s"]);
    assert_eq!(cfg["schedule"]["schedule-interval"], "1s", "{cfg:#}");
    let sched = c.must_pdctl(&["scheduler", "show"]);
    let state = |name: &str| {
        sched["schedulers"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_default()
    };
    assert_eq!(state("balance-region")["disabled"], true, "{sched:#}");
    assert_eq!(state("balance-leader")["paused"], true, "{sched:#}");
    split_biggest_region(&c, 2);
    let extra = c.start_extra_metashard(4, "z1");
    let new_store = store_id_of(&c, &extra.grpc);
    let z1 = metashard_in_zone(&c, "z1");
    let old_z1 = store_id_of(&c, &z1.grpc);
    let writer = c.start_writer("wrt", "120");
    writer.wait_acks(10);
    // A few rounds: nothing moves onto the new store by itself.
    std::thread::sleep(Duration::from_secs(4));
    let s = c.must_pdctl(&["store", &new_store.to_string()]);
    assert_eq!(s["status"]["region_count"], 0, "{s:#}");

    let region_id = c.must_pdctl(&["region"])["regions"][0]["id"]
        .as_u64()
        .expect("region id");
    let started = Instant::now();
    let v = c.must_pdctl(&["operator", "add", "scatter-region", &region_id.to_string()]);
    eprintln!("scatter took {:?}: {v}", started.elapsed());
    assert_eq!(
        v["moves"],
        serde_json::json!([{"from_store_id": old_z1, "to_store_id": new_store}]),
        "{v:#}"
    );
    let stores: Vec<u64> = v["store_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    assert!(
        stores.contains(&new_store) && !stores.contains(&old_z1),
        "{v:#}"
    );
    wait_metric(
        &extra.status,
        "kura_metashard_region_count",
        1.0,
        "new store",
    );
    let again = c.must_pdctl(&["operator", "add", "scatter-region", &region_id.to_string()]);
    assert_eq!(again["moves"], serde_json::json!([]), "{again:#}");
    let ops = c.must_pdctl(&["operator", "show"]);
    assert!(
        ops["finished"].as_array().is_some_and(|a| a
            .iter()
            .any(|o| o["source"] == "scatter-region"
                && o["region_id"] == region_id
                && o["status"] == "done")),
        "{ops:#}"
    );
    let (ok, _, err) = c.pdctl(&["operator", "remove", &region_id.to_string()]);
    assert!(!ok && err.contains("no running operator"), "{err}");
    check(&c, "miss-peer", 0);
    writer.wait_acks(writer.acked() + 20);
    let (summary, _) = writer.finish(&c);
    assert!(summary.contains(" 0 failed"), "PUTs failed: {summary}");
    c.must_python("split_check.py", &["verify", "scat", "obj:100"]);
}
