//! Identities bound to data dirs (issue 15; decision 0024): a metashard store
//! or data node whose data dir is wiped and that restarts on the same address
//! joins under a NEW id. The old id is never handed back, so no Raft peer is
//! revived with an empty log (amnesia) and no placement slot points at an
//! empty disk as if it held its fragments. For the store: its old peers are
//! replaced by PD's replica checker and every committed write reads back.
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Cluster;
use kura_pd_client::channel::lazy_channel;
use kura_proto::pd::pd_client::PdClient as RawPd;
use kura_proto::pd::{GetPlacementRequest, GetStoresRequest, ScanRegionsRequest};

fn data_dir(c: &Cluster, id: &str) -> std::path::PathBuf {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.dir.join("cluster.json")).expect("cluster.json"))
            .expect("json");
    let dir = v["components"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == id))
        .and_then(|x| x["data_dir"].as_str())
        .expect("data_dir of the component");
    dir.into()
}

fn put(c: &Cluster, dir: &Path, bucket: &str, key: &str, seed: u64) {
    let src = dir.join(format!("{key}.in"));
    std::fs::write(&src, common::pattern(20_000 + seed as usize, seed)).expect("write");
    c.must_put_file(bucket, key, &src);
}

fn must_read(c: &Cluster, dir: &Path, bucket: &str, key: &str, seed: u64) {
    let out = dir.join(format!("{key}.out"));
    c.must_get_file(bucket, key, &out);
    assert_eq!(
        std::fs::read(&out).expect("read"),
        common::pattern(20_000 + seed as usize, seed),
        "{key}"
    );
}

/// (id, address) of every store (metashard) or data node PD knows.
fn ids_at(rt: &tokio::runtime::Runtime, c: &Cluster, stores: bool) -> Vec<(u64, String)> {
    rt.block_on(async {
        let mut pd = RawPd::new(lazy_channel(&c.component("pd-1").grpc).expect("pd"));
        if stores {
            pd.get_stores(GetStoresRequest {})
                .await
                .expect("stores")
                .into_inner()
                .stores
                .into_iter()
                .map(|s| (s.id, s.address))
                .collect()
        } else {
            pd.get_placement(GetPlacementRequest { known_version: 0 })
                .await
                .expect("placement")
                .into_inner()
                .map
                .expect("map")
                .nodes
                .into_iter()
                .map(|n| (n.id, n.address))
                .collect()
        }
    })
}

/// The store ids holding a peer of any region.
fn peer_stores(rt: &tokio::runtime::Runtime, c: &Cluster) -> Vec<Vec<u64>> {
    rt.block_on(async {
        let mut pd = RawPd::new(lazy_channel(&c.component("pd-1").grpc).expect("pd"));
        pd.scan_regions(ScanRegionsRequest {
            start_key: Default::default(),
            end_key: Default::default(),
            limit: 1000,
        })
        .await
        .expect("regions")
        .into_inner()
        .regions
        .into_iter()
        .filter_map(|r| r.region)
        .map(|r| r.peers.iter().map(|p| p.store_id).collect())
        .collect()
    })
}

/// The new id at `addr` once PD lists one other than `old`.
fn wait_new_id(
    rt: &tokio::runtime::Runtime,
    c: &Cluster,
    stores: bool,
    addr: &str,
    old: u64,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let at: Vec<u64> = ids_at(rt, c, stores)
            .into_iter()
            .filter(|(_, a)| a == addr)
            .map(|(id, _)| id)
            .collect();
        if let Some(&new) = at.iter().find(|id| **id != old) {
            return new;
        }
        assert!(Instant::now() < deadline, "no new id at {addr}: {at:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_wiped_metashard_rejoins_under_a_new_id_and_no_committed_write_is_lost() {
    let mut c = Cluster::must_start_with(&["--max-store-down-secs", "6"]);
    c.use_cluster_tls();
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    c.must_aws(&["s3", "mb", "s3://wiped"]);
    const N: u64 = 20;
    for i in 0..N {
        put(&c, tmp.path(), "wiped", &format!("obj-{i}"), i);
    }
    let victim = c.component("metashard-3");
    let (old, _) = ids_at(&rt, &c, true)
        .into_iter()
        .find(|(_, a)| *a == victim.grpc)
        .expect("the store's id");
    c.must_kill9(&victim.id);
    std::fs::remove_dir_all(data_dir(&c, &victim.id)).expect("wipe the data dir");
    c.must_restart(&victim.id);
    let new = wait_new_id(&rt, &c, true, &victim.grpc, old);
    assert!(new > old, "a fresh id ({new}), not the old one ({old})");
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let regions = peer_stores(&rt, &c);
        let done = !regions.is_empty()
            && regions
                .iter()
                .all(|s| s.len() == 3 && !s.contains(&old) && s.contains(&new));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old store's peers were never replaced: {regions:?}\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "old store {old}'s peers replaced on new store {new} after {:?}",
        started.elapsed()
    );
    for i in 0..N {
        must_read(&c, tmp.path(), "wiped", &format!("obj-{i}"), i);
    }
    put(&c, tmp.path(), "wiped", "after", 99);
    must_read(&c, tmp.path(), "wiped", "after", 99);
    // A restart with the data dir intact keeps the new id.
    c.must_kill9(&victim.id);
    c.must_restart(&victim.id);
    let at: Vec<u64> = ids_at(&rt, &c, true)
        .into_iter()
        .filter(|(_, a)| *a == victim.grpc)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(at, vec![old, new], "no third id for an intact dir");
}

#[test]
fn a_wiped_data_node_rejoins_under_a_new_id_and_objects_still_read() {
    let mut c = Cluster::must_start();
    c.use_cluster_tls();
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    c.must_aws(&["s3", "mb", "s3://dnwiped"]);
    for i in 0..5 {
        put(&c, tmp.path(), "dnwiped", &format!("obj-{i}"), i);
    }
    let victim = c.component("datanode-1");
    let (old, _) = ids_at(&rt, &c, false)
        .into_iter()
        .find(|(_, a)| *a == victim.grpc)
        .expect("the node's id");
    c.must_kill9(&victim.id);
    std::fs::remove_dir_all(data_dir(&c, &victim.id)).expect("wipe the data dir");
    c.must_restart(&victim.id);
    let new = wait_new_id(&rt, &c, false, &victim.grpc, old);
    assert!(new > old, "a fresh id ({new}), not the old one ({old})");
    // EC 4+2 reads around the empty disk; nothing reads as lost.
    for i in 0..5 {
        must_read(&c, tmp.path(), "dnwiped", &format!("obj-{i}"), i);
    }
    put(&c, tmp.path(), "dnwiped", "after", 99);
    must_read(&c, tmp.path(), "dnwiped", "after", 99);
}
