//! Identities bound to data dirs (issue 15; decisions 0024 and 0044).
//!
//! A metashard store or data node whose data dir is wiped and that restarts
//! on the same address joins under a NEW id. The old id is never handed
//! back, so no Raft peer is revived with an empty log (amnesia) and no
//! placement slot points at an empty disk as if it held its fragments. PD
//! marks the old id `Replaced` at once: its region peers are replaced and its
//! PG slots moved well inside the down timeout (600 s here), and every object
//! reads back byte-identical.
//!
//! Heartbeats carry the uuid: after kill -9 of a store and a data node,
//! heartbeats forged for their ids over gRPC (the admin certificate in TLS
//! mode: an insider whose messages are still checked) with a wrong uuid or
//! none are refused and counted; both still turn Down and the store's peers
//! are replaced.
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Cluster;
use kura_proto::pd::{
    DataNodeHeartbeatRequest, GetStoresRequest, ScanRegionsRequest, StoreHeartbeatRequest,
};

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
        let mut pd = c.pd_grpc();
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
            Cluster::placement_map(&mut pd)
                .await
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
        let mut pd = c.pd_grpc();
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

/// Polls `f` every 300 ms until it answers, at most `secs`; the answer and
/// how long it took.
fn wait_for<T>(
    c: &Cluster,
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            eprintln!("{what}: after {:?}", started.elapsed());
            return (v, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// PD's HTTP row for store (`stores`) or data node `id`: `store` of
/// `/pd/api/v1/stores`, or one of `/pd/api/v1/datanodes`.
fn pd_row(c: &Cluster, stores: bool, id: u64) -> serde_json::Value {
    if stores {
        let v = c.pd_json("/pd/api/v1/stores");
        v["stores"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["store"]["id"].as_u64() == Some(id)))
            .map(|s| s["store"].clone())
            .unwrap_or_default()
    } else {
        let v = c.pd_json("/pd/api/v1/datanodes");
        v["datanodes"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["id"].as_u64() == Some(id)))
            .cloned()
            .unwrap_or_default()
    }
}

/// Every data node id in any placement group of any class.
fn placed_nodes(rt: &tokio::runtime::Runtime, c: &Cluster) -> Vec<u64> {
    rt.block_on(async {
        let map = Cluster::placement_map(&mut c.pd_grpc()).await;
        let mut ids: Vec<u64> = map
            .classes
            .iter()
            .flat_map(|cl| cl.groups.iter())
            .flat_map(|g| g.data_nodes.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    })
}

/// PD's count of refused heartbeats of `kind` for `reason`.
fn refused(c: &Cluster, kind: &str, reason: &str) -> f64 {
    common::metric(
        &c.component("pd-1").status,
        &format!("kura_pd_heartbeats_refused_total{{kind=\"{kind}\",reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

/// A uuid no data dir of the cluster has (128 random bits make a clash
/// impossible in practice), well-formed so only the identity check refuses it.
const FORGED_UUID: &str = "0123456789abcdef0123456789abcdef";

/// Forged heartbeats for `store` and data node `node`, with a wrong uuid and
/// with none, each of which PD must refuse with PermissionDenied. They claim
/// a healthy, busy process, which would keep the id `Up` if taken.
fn forge_heartbeats(rt: &tokio::runtime::Runtime, c: &Cluster, store: u64, node: u64) {
    rt.block_on(async {
        let mut pd = c.pd_grpc();
        for uuid in [FORGED_UUID, ""] {
            let err = pd
                .store_heartbeat(StoreHeartbeatRequest {
                    store_id: store,
                    region_count: 5,
                    leader_count: 5,
                    used_bytes: 1 << 20,
                    uuid: uuid.into(),
                    ..Default::default()
                })
                .await
                .expect_err("a forged store heartbeat must be refused");
            assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
            let err = pd
                .data_node_heartbeat(DataNodeHeartbeatRequest {
                    node_id: node,
                    capacity_bytes: 1 << 40,
                    uuid: uuid.into(),
                    ..Default::default()
                })
                .await
                .expect_err("a forged data node heartbeat must be refused");
            assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        }
    });
}

#[test]
fn forged_heartbeats_do_not_keep_a_dead_store_or_data_node_up() {
    let mut c = Cluster::must_start_with(&["--max-store-down-secs", "6"]);
    c.use_cluster_tls();
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    c.must_aws(&["s3", "mb", "s3://forged"]);
    const N: u64 = 10;
    for i in 0..N {
        put(&c, tmp.path(), "forged", &format!("obj-{i}"), i);
    }
    let victim = c.component("metashard-3");
    let (store, _) = ids_at(&rt, &c, true)
        .into_iter()
        .find(|(_, a)| *a == victim.grpc)
        .expect("the store's id");
    let dn = c.component("datanode-6");
    let (node, _) = ids_at(&rt, &c, false)
        .into_iter()
        .find(|(_, a)| *a == dn.grpc)
        .expect("the node's id");
    // Somewhere for the dead store's peers to go (same zone).
    let _extra = c.start_extra_metashard(4, &victim.zone);
    // Both have been heartbeating with their uuid every second since they
    // started, so a heartbeat without one is not theirs either.
    let before = [
        refused(&c, "store", "wrong_uuid"),
        refused(&c, "store", "no_uuid"),
        refused(&c, "data_node", "wrong_uuid"),
        refused(&c, "data_node", "no_uuid"),
    ];
    c.must_kill9(&victim.id);
    c.must_kill9(&dn.id);
    // Forged heartbeats all along; both still turn Down after the 6 s timeout.
    let (_, down) = wait_for(&c, "store and data node Down despite forgeries", 40, || {
        forge_heartbeats(&rt, &c, store, node);
        let s = pd_row(&c, true, store);
        let n = pd_row(&c, false, node);
        (s["state_name"] == "Down" && n["state_name"] == "Down").then_some(())
    });
    assert!(
        down >= Duration::from_secs(5),
        "Down only after the timeout"
    );
    let after = [
        refused(&c, "store", "wrong_uuid"),
        refused(&c, "store", "no_uuid"),
        refused(&c, "data_node", "wrong_uuid"),
        refused(&c, "data_node", "no_uuid"),
    ];
    for (b, a) in before.iter().zip(&after) {
        assert!(
            a > b,
            "every kind of forgery counted: {before:?} -> {after:?}"
        );
    }
    // The replica checker replaces its peers (forgeries go on meanwhile).
    wait_for(&c, "the dead store's peers replaced", 90, || {
        forge_heartbeats(&rt, &c, store, node);
        let regions = peer_stores(&rt, &c);
        (!regions.is_empty() && regions.iter().all(|s| s.len() == 3 && !s.contains(&store)))
            .then_some(())
    });
    assert_eq!(pd_row(&c, true, store)["state_name"], "Down");
    for i in 0..N {
        must_read(&c, tmp.path(), "forged", &format!("obj-{i}"), i);
    }
}

#[test]
fn a_wiped_node_is_replaced_at_once_and_every_object_reads_back() {
    // Down detection alone would take 600 s (stores) and 300 s (data nodes'
    // slots): everything below is the `Replaced` mark's doing.
    let mut c = Cluster::must_start_with(&[
        "--max-store-down-secs",
        "600",
        "--rebalance-interval-secs",
        "2",
        "--max-moves-per-step",
        "64",
    ]);
    c.use_cluster_tls();
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    c.must_aws(&["s3", "mb", "s3://wiped"]);
    const N: u64 = 20;
    for i in 0..N {
        put(&c, tmp.path(), "wiped", &format!("obj-{i}"), i);
    }

    // ---- a metashard store ----
    let victim = c.component("metashard-3");
    let (old, _) = ids_at(&rt, &c, true)
        .into_iter()
        .find(|(_, a)| *a == victim.grpc)
        .expect("the store's id");
    let old_prefix = pd_row(&c, true, old)["uuid_prefix"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(old_prefix.len(), 8, "a uuid prefix is shown");
    c.must_kill9(&victim.id);
    std::fs::remove_dir_all(data_dir(&c, &victim.id)).expect("wipe the data dir");
    c.must_restart(&victim.id);
    let ready = Instant::now();
    let new = wait_new_id(&rt, &c, true, &victim.grpc, old);
    assert!(new > old, "a fresh id ({new}), not the old one ({old})");
    // What an operator sees (pdctl store = PD's HTTP listing).
    let stores = c.must_pdctl(&["store"]);
    let row = |id: u64| {
        stores["stores"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["store"]["id"].as_u64() == Some(id)))
            .map(|s| s["store"].clone())
            .unwrap_or_default()
    };
    assert_eq!(row(old)["state_name"], "Replaced", "{stores}");
    assert_eq!(row(old)["replaced_by"].as_u64(), Some(new), "{stores}");
    assert_eq!(row(old)["uuid_prefix"], old_prefix.as_str());
    let new_prefix = row(new)["uuid_prefix"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        new_prefix.len() == 8 && new_prefix != old_prefix,
        "{stores}"
    );
    wait_for(&c, "the replaced store's peers replaced", 60, || {
        let regions = peer_stores(&rt, &c);
        let done = !regions.is_empty()
            && regions
                .iter()
                .all(|s| s.len() == 3 && !s.contains(&old) && s.contains(&new));
        done.then_some(())
    });
    let took = ready.elapsed();
    eprintln!("store {old}'s peers replaced {took:?} after the wiped store was ready");
    assert!(took < Duration::from_secs(60), "{took:?}");
    for i in 0..N {
        must_read(&c, tmp.path(), "wiped", &format!("obj-{i}"), i);
    }
    put(&c, tmp.path(), "wiped", "after-store", 98);
    must_read(&c, tmp.path(), "wiped", "after-store", 98);
    // A restart with the data dir intact keeps the new id and replaces nobody.
    c.must_kill9(&victim.id);
    c.must_restart(&victim.id);
    let at: Vec<u64> = ids_at(&rt, &c, true)
        .into_iter()
        .filter(|(_, a)| *a == victim.grpc)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(at, vec![old, new], "no third id for an intact dir");
    wait_for(&c, "the restarted store Up", 30, || {
        (pd_row(&c, true, new)["state_name"] == "Up").then_some(())
    });
    assert_eq!(pd_row(&c, true, old)["state_name"], "Replaced");

    // ---- a data node ----
    let victim = c.component("datanode-1");
    let (old, _) = ids_at(&rt, &c, false)
        .into_iter()
        .find(|(_, a)| *a == victim.grpc)
        .expect("the node's id");
    assert!(placed_nodes(&rt, &c).contains(&old));
    c.must_kill9(&victim.id);
    std::fs::remove_dir_all(data_dir(&c, &victim.id)).expect("wipe the data dir");
    c.must_restart(&victim.id);
    let ready = Instant::now();
    // The new id shows in the map once a slot moved to it.
    let new = wait_new_id(&rt, &c, false, &victim.grpc, old);
    assert!(new > old, "a fresh id ({new}), not the old one ({old})");
    wait_for(&c, "the replaced data node out of every PG", 60, || {
        let placed = placed_nodes(&rt, &c);
        (!placed.contains(&old) && placed.contains(&new)).then_some(())
    });
    let took = ready.elapsed();
    eprintln!("data node {old} out of every PG {took:?} after the wiped node was ready");
    assert!(took < Duration::from_secs(60), "{took:?}");
    let n = pd_row(&c, false, old);
    assert_eq!(n["state_name"], "Replaced", "{n}");
    assert_eq!(n["replaced_by"].as_u64(), Some(new), "{n}");
    assert_eq!(n["slots"].as_u64(), Some(0), "{n}");
    // Every object reads back byte-identical (EC reads around the empty disk
    // while repair rebuilds its fragments), and new writes land.
    for i in 0..N {
        must_read(&c, tmp.path(), "wiped", &format!("obj-{i}"), i);
    }
    must_read(&c, tmp.path(), "wiped", "after-store", 98);
    put(&c, tmp.path(), "wiped", "after", 99);
    must_read(&c, tmp.path(), "wiped", "after", 99);
}
