//! PD over real sockets: the gRPC service driven by `kura_pd_client::PdClient`,
//! the HTTP API by reqwest, `pdctl_main` against it, and a restart from the
//! state file.

mod common;
use common::uuid;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_pd_client::{PdClient, PdError};
use kura_proto::common::Labels;
use kura_proto::meta::StorageClass;
use kura_proto::pd::{
    DataNode, DataNodeHeartbeatRequest, RegionHeartbeatRequest, Store, StoreHeartbeatRequest,
};
use serde_json::Value;

struct RunningPd {
    grpc: SocketAddr,
    http: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), kura_pd::Error>>,
}

impl RunningPd {
    fn client(&self) -> PdClient {
        PdClient::new(&[self.grpc.to_string()])
            .unwrap()
            .with_attempts(2)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/pd/api/v1/{path}", self.http)
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

async fn must_start_pd(dir: &Path, tune: impl FnOnce(&mut kura_pd::Config)) -> RunningPd {
    let grpc_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc, http) = (grpc_l.local_addr().unwrap(), http_l.local_addr().unwrap());
    let mut cfg = kura_pd::Config::new(dir.to_path_buf(), grpc, http);
    cfg.placement_wait = Duration::from_secs(60);
    tune(&mut cfg);
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(kura_pd::serve(cfg, grpc_l, http_l, ready.clone(), rx));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.load(Ordering::Acquire) {
        assert!(Instant::now() < deadline, "PD did not become ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    RunningPd {
        grpc,
        http,
        stop,
        task,
    }
}

fn labels(zone: &str) -> Option<Labels> {
    Some(Labels {
        zone: zone.into(),
        rack: String::new(),
        host: String::new(),
    })
}

fn store(id: u64, addr: &str, zone: &str) -> Store {
    Store {
        id,
        address: addr.into(),
        labels: labels(zone),
        ..Default::default()
    }
}

fn data_node(id: u64, addr: &str, zone: &str) -> DataNode {
    DataNode {
        id,
        address: addr.into(),
        labels: labels(zone),
        ..Default::default()
    }
}

async fn get_json(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Runs pdctl on its own thread (it starts its own runtime) and returns its exit code.
async fn pdctl(args: &[&str]) -> i32 {
    let mut argv = vec!["pdctl".to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || kura_pd::pdctl_main(argv))
            .join()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_routing_placement_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pd = must_start_pd(dir.path(), |_| {}).await;
    let pd_client = pd.client();

    let cluster = pd_client.get_cluster().await.unwrap();
    assert!(cluster.cluster_id != 0);
    assert!(!cluster.bootstrapped);
    assert_eq!(cluster.max_replicas, 3);

    // Three stores in three zones: the first region is created.
    let mut store_ids = Vec::new();
    for (i, zone) in ["z1", "z2", "z3"].iter().enumerate() {
        store_ids.push(
            pd_client
                .register_store(
                    store(0, &format!("127.0.0.1:{}", 20160 + i), zone),
                    &uuid(&format!("127.0.0.1:{}", 20160 + i)),
                )
                .await
                .unwrap(),
        );
    }
    assert_eq!(store_ids.iter().collect::<BTreeSet<_>>().len(), 3);
    let hb = |store_id, region_count| StoreHeartbeatRequest {
        store_id,
        region_count,
        ..Default::default()
    };
    let resp = pd_client
        .store_heartbeat(hb(store_ids[0], 0))
        .await
        .unwrap();
    assert_eq!(resp.create_peers.len(), 1);
    let to_create = &resp.create_peers[0];
    assert!(to_create.initial);
    let region = to_create.region.clone().unwrap();
    assert!(region.start_key.is_empty() && region.end_key.is_empty());
    assert_eq!(region.peers.len(), 3);
    let peer_stores: BTreeSet<u64> = region.peers.iter().map(|p| p.store_id).collect();
    assert_eq!(peer_stores, store_ids.iter().copied().collect());
    assert!(region
        .peers
        .iter()
        .any(|p| p.id == to_create.peer_id && p.store_id == store_ids[0]));
    assert!(pd_client.get_cluster().await.unwrap().bootstrapped);

    // The store reports it hosts the region: no more create_peers for it.
    assert!(pd_client
        .store_heartbeat(hb(store_ids[0], 1))
        .await
        .unwrap()
        .create_peers
        .is_empty());
    assert_eq!(
        pd_client
            .store_heartbeat(hb(store_ids[1], 0))
            .await
            .unwrap()
            .create_peers
            .len(),
        1
    );

    // Before any leader is known, the region is there without one.
    let info = pd_client.get_region(b"some/key").await.unwrap().unwrap();
    assert_eq!(info.region.as_ref().unwrap().id, region.id);
    assert!(info.leader.is_none());

    // A leader on the second store reports in.
    let leader = region
        .peers
        .iter()
        .find(|p| p.store_id == store_ids[1])
        .cloned()
        .unwrap();
    pd_client
        .region_heartbeat(RegionHeartbeatRequest {
            region: Some(region.clone()),
            leader: Some(leader),
            approximate_size: 4096,
            approximate_keys: 7,
            term: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let info = pd_client.get_region(b"").await.unwrap().unwrap();
    assert_eq!(info.leader, Some(leader));
    assert_eq!(info.leader_addr, "127.0.0.1:20161");
    assert_eq!(info.approximate_keys, 7);
    assert!(pd_client
        .store_heartbeat(hb(store_ids[1], 0))
        .await
        .unwrap()
        .create_peers
        .is_empty());
    assert_eq!(
        pd_client
            .get_region_by_id(region.id)
            .await
            .unwrap()
            .unwrap()
            .leader_addr,
        "127.0.0.1:20161"
    );
    assert!(pd_client
        .get_region_by_id(region.id + 1000)
        .await
        .unwrap()
        .is_none());
    assert_eq!(pd_client.scan_regions(b"", b"", 0).await.unwrap().len(), 1);

    // The region cache resolves through the same answers.
    let cache = kura_pd_client::RegionCache::new(pd_client.clone());
    let route = cache.locate(b"bucket/object").await.unwrap().unwrap();
    assert!(route.has_leader());

    // Bad input is rejected, not retried.
    assert!(matches!(
        pd_client
            .register_store(store(0, "", "z1"), &uuid(""))
            .await,
        Err(PdError::Rejected(_))
    ));
    assert!(matches!(
        pd_client.store_heartbeat(hb(999_999, 0)).await,
        Err(PdError::Rejected(_))
    ));
    assert!(matches!(
        pd_client.alloc_ids(0).await,
        Err(PdError::Rejected(_))
    ));

    // Six data nodes, two per zone: the placement map appears at once.
    assert!(pd_client.get_placement(0).await.unwrap().is_none());
    let mut node_ids = Vec::new();
    for (i, zone) in ["z1", "z1", "z2", "z2", "z3", "z3"].iter().enumerate() {
        let addr = format!("127.0.0.1:{}", 30000 + i);
        node_ids.push(
            pd_client
                .register_data_node(data_node(0, &addr, zone), &uuid(&addr))
                .await
                .unwrap(),
        );
    }
    let map = pd_client
        .get_placement(0)
        .await
        .unwrap()
        .expect("maps built with 6 nodes in 3 zones");
    // REPLICA3 and EC_4_2 fit 6 nodes in 3 zones; EC_8_3 needs 11 in 4.
    let shapes: Vec<(i32, u32, u32, usize)> = map
        .classes
        .iter()
        .map(|c| {
            (
                c.storage_class,
                c.data_shards,
                c.parity_shards,
                c.groups.len(),
            )
        })
        .collect();
    assert_eq!(
        shapes,
        vec![
            (StorageClass::Replica3 as i32, 1, 2, 64),
            (StorageClass::Ec42 as i32, 4, 2, 64)
        ]
    );
    assert_eq!(map.nodes.len(), 6);
    let zone_of = |id: u64| {
        map.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap()
            .labels
            .clone()
            .unwrap()
            .zone
    };
    for (class, per_zone) in map.classes.iter().zip([1, 2]) {
        for g in &class.groups {
            let mut count: BTreeMap<String, usize> = BTreeMap::new();
            for id in &g.data_nodes {
                *count.entry(zone_of(*id)).or_default() += 1;
            }
            assert_eq!(count.len(), 3, "every zone in PG {}", g.id);
            assert!(count.values().all(|&n| n == per_zone), "{count:?}");
        }
    }
    assert!(
        pd_client
            .get_placement(map.version)
            .await
            .unwrap()
            .is_none(),
        "unchanged since that version"
    );

    let first_id = pd_client.alloc_ids(10).await.unwrap();
    let mut used: BTreeSet<u64> = store_ids.iter().chain(&node_ids).copied().collect();
    used.insert(region.id);
    used.extend(region.peers.iter().map(|p| p.id));
    assert!((first_id..first_id + 10).all(|id| !used.contains(&id)));

    // HTTP API, pd-ctl shaped.
    let (status, stores) = get_json(&pd.url("stores")).await;
    assert_eq!(status, 200);
    assert_eq!(stores["count"], 3);
    let s0 = &stores["stores"][0];
    assert_eq!(s0["store"]["state_name"], "Up");
    assert_eq!(s0["store"]["labels"][0]["key"], "zone");
    assert!(s0["status"]["last_heartbeat_ts"]
        .as_str()
        .unwrap()
        .contains('T'));
    let (status, r) = get_json(&pd.url(&format!("region/id/{}", region.id))).await;
    assert_eq!(status, 200);
    assert_eq!(r["leader"]["store_id"], store_ids[1]);
    assert_eq!(r["epoch"]["conf_ver"], 1);
    assert_eq!(r["peers"][0]["role_name"], "Voter");
    assert_eq!(r["start_key"], "");
    let (status, r) = get_json(&pd.url("region/key/6B6579")).await;
    assert_eq!((status, r["id"].as_u64()), (200, Some(region.id)));
    let (status, err) = get_json(&pd.url("region/id/424242")).await;
    assert_eq!(status, 404);
    assert!(err["error"].as_str().unwrap().contains("424242"));
    let (status, _) = get_json(&pd.url("region/key/zz")).await;
    assert_eq!(status, 400);
    let (_, regions) = get_json(&pd.url("regions")).await;
    assert_eq!(regions["count"], 1);
    let (_, p) = get_json(&pd.url("placement")).await;
    assert_eq!(p["version"], map.version);
    assert_eq!(p["classes"][0]["storage_class"], "REPLICA3");
    assert_eq!(p["classes"][0]["groups"].as_array().unwrap().len(), 64);
    assert_eq!(p["classes"][1]["storage_class"], "EC_4_2");
    assert_eq!(p["classes"][1]["built"], true);
    assert_eq!(p["classes"][2]["storage_class"], "EC_8_3");
    assert_eq!(p["classes"][2]["built"], false);
    assert_eq!(
        p["classes"][2]["blocker"],
        "need at least 11 data nodes, have 6"
    );
    assert_eq!(p["nodes"].as_array().unwrap().len(), 6);
    let (_, dn) = get_json(&pd.url("datanodes")).await;
    assert_eq!(dn["count"], 6);
    let (_, c) = get_json(&pd.url("cluster")).await;
    assert_eq!(c["bootstrapped"], true);
    let (status, h) = get_json(&pd.url("health")).await;
    assert_eq!((status, &h[0]["health"]), (200, &Value::Bool(true)));

    // pdctl against it.
    let url = format!("http://{}", pd.http);
    assert_eq!(pdctl(&["-u", &url, "store"]).await, 0);
    assert_eq!(pdctl(&["-u", &url, "--table", "region"]).await, 0);
    assert_eq!(
        pdctl(&["-u", &url, "region", "key", "--hex", "00"]).await,
        0
    );
    assert_eq!(pdctl(&["-u", &url, "--table", "placement"]).await, 0);
    assert_eq!(pdctl(&["-u", &url, "store", "987654"]).await, 1);
    assert_eq!(pdctl(&["-u", "http://127.0.0.1:1", "health"]).await, 1);

    // Restart from the state file: same cluster, ids and map.
    let cluster_id = cluster.cluster_id;
    pd.stop().await;
    let pd = must_start_pd(dir.path(), |_| {}).await;
    let pd_client = pd.client();
    let after = pd_client.get_cluster().await.unwrap();
    assert_eq!(after.cluster_id, cluster_id);
    assert!(after.bootstrapped);
    // A store restarting with its id and a new address keeps the id.
    assert_eq!(
        pd_client
            .register_store(
                store(store_ids[2], "127.0.0.1:21000", "z3"),
                &uuid("127.0.0.1:20162"),
            )
            .await
            .unwrap(),
        store_ids[2]
    );
    let map_after = pd_client.get_placement(0).await.unwrap().unwrap();
    assert_eq!(map_after.version, map.version);
    assert_eq!(map_after.classes, map.classes);
    // A data node re-registering at the same address keeps id and map version…
    let again = pd_client
        .register_data_node(
            data_node(node_ids[0], "127.0.0.1:30000", "z1"),
            &uuid("127.0.0.1:30000"),
        )
        .await
        .unwrap();
    assert_eq!(again, node_ids[0]);
    assert!(pd_client
        .get_placement(map.version)
        .await
        .unwrap()
        .is_none());
    // …a new address bumps the version so clients refetch addresses.
    pd_client
        .register_data_node(
            data_node(node_ids[0], "127.0.0.1:31000", "z1"),
            &uuid("127.0.0.1:30000"),
        )
        .await
        .unwrap();
    let moved = pd_client.get_placement(map.version).await.unwrap().unwrap();
    assert!(moved.version > map.version);
    assert_eq!(moved.classes, map.classes);
    // A new node joining does not change the map's groups.
    let newcomer = pd_client
        .register_data_node(
            data_node(0, "127.0.0.1:32000", "z1"),
            &uuid("127.0.0.1:32000"),
        )
        .await
        .unwrap();
    assert!(newcomer > first_id + 9, "ids never reused across restarts");
    assert_eq!(
        pd_client.get_placement(0).await.unwrap().unwrap().classes,
        map.classes
    );
    assert!(pd_client.alloc_id().await.unwrap() > newcomer);
    // The region and its peers survived; the leader is relearned from heartbeats.
    let info = pd_client.get_region(b"x").await.unwrap().unwrap();
    assert_eq!(info.region, Some(region));
    pd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_after_the_wait_and_down_detection() {
    let dir = tempfile::tempdir().unwrap();
    let pd = must_start_pd(dir.path(), |c| {
        c.placement_wait = Duration::from_millis(200);
        c.max_store_down_time = Duration::from_millis(800);
    })
    .await;
    let pd_client = pd.client();
    // Three nodes (fewer than the six expected) in three zones.
    for (i, zone) in ["z1", "z2", "z3"].iter().enumerate() {
        pd_client
            .register_data_node(
                data_node(0, &format!("127.0.0.1:{}", 40000 + i), zone),
                &uuid(&format!("127.0.0.1:{}", 40000 + i)),
            )
            .await
            .unwrap();
    }
    let store_id = pd_client
        .register_store(store(0, "127.0.0.1:20999", "z1"), &uuid("127.0.0.1:20999"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let map = loop {
        if let Some(m) = pd_client.get_placement(0).await.unwrap() {
            break m;
        }
        assert!(Instant::now() < deadline, "no placement map after the wait");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Only REPLICA3 fits three nodes; EC_4_2 says why it waits.
    assert_eq!(map.classes.len(), 1);
    assert_eq!(map.classes[0].storage_class, StorageClass::Replica3 as i32);
    assert!(map.classes[0]
        .groups
        .iter()
        .all(|g| g.data_nodes.len() == 3));
    let (_, p) = get_json(&pd.url("placement")).await;
    assert_eq!(
        p["classes"][1]["blocker"],
        "need at least 6 data nodes, have 3"
    );

    // Nobody heartbeats: after max_store_down_time the store shows Down.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, s) = get_json(&pd.url(&format!("store/{store_id}"))).await;
        if s["store"]["state_name"] == "Down" {
            break;
        }
        assert!(Instant::now() < deadline, "store never shown down: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, n) = get_json(&pd.url("datanodes")).await;
    assert_eq!(n["datanodes"][0]["state_name"], "Down");
    pd.stop().await;
}

/// Heartbeats of `ids` saying their repair caught up with the map in `placement`
/// (PD paces steps and decommissioning on it).
async fn report_repair_caught_up(pd: &PdClient, ids: &[u64], placement: &Value) {
    let version = placement["version"].as_u64().unwrap_or(0);
    for &id in ids {
        pd.data_node_heartbeat(DataNodeHeartbeatRequest {
            node_id: id,
            repair_passes: 1,
            repair_map_version: version,
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommission_over_http_and_pdctl_drains_a_node_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tune = |c: &mut kura_pd::Config| {
        c.num_pgs = 16;
        c.rebalance_interval = Duration::from_millis(50);
        c.max_moves_per_step = 4;
    };
    let pd = must_start_pd(dir.path(), tune).await;
    let pd_client = pd.client();
    let mut ids = Vec::new();
    for (i, zone) in ["z1", "z1", "z1", "z2", "z2", "z3", "z3"]
        .iter()
        .enumerate()
    {
        let addr = format!("127.0.0.1:{}", 31000 + i);
        ids.push(
            pd_client
                .register_data_node(data_node(0, &addr, zone), &uuid(&addr))
                .await
                .unwrap(),
        );
    }
    let url = format!("http://{}", pd.http);
    // Wait for the map (built at the sixth node) and the seventh node's share.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, p) = get_json(&pd.url("placement")).await;
        if p["version"].as_u64().unwrap_or(0) > 0 && p["rebalance"]["pending_moves"] == 0 {
            break;
        }
        report_repair_caught_up(&pd_client, &ids, &p).await;
        assert!(Instant::now() < deadline, "never balanced: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let victim = ids[0];
    let (_, n) = get_json(&pd.url(&format!("datanode/{victim}"))).await;
    assert_eq!(n["admin_state"], "Active");
    assert!(n["slots"].as_u64().unwrap() > 0, "{n}");
    assert!(n.get("draining").is_none());

    assert_eq!(
        pdctl(&["-u", &url, "datanode", "decommission", &victim.to_string()]).await,
        0
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let n = loop {
        let (_, n) = get_json(&pd.url(&format!("datanode/{victim}"))).await;
        if n["state_name"] == "Tombstone" {
            break n;
        }
        assert_eq!(n["state_name"], "Offline", "{n}");
        assert_eq!(n["draining"], "decommission");
        assert_eq!(n["slots_remaining"], n["slots"]);
        assert!(Instant::now() < deadline, "never drained: {n}");
        let (_, p) = get_json(&pd.url("placement")).await;
        report_repair_caught_up(&pd_client, &ids, &p).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(n["admin_state"], "Decommissioned");
    assert_eq!(n["slots"], 0);
    let (_, p) = get_json(&pd.url("placement")).await;
    assert!(p["rebalance"]["slots_moved"].as_u64().unwrap() > 0);
    assert!(p["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["id"] != victim));
    assert_eq!(pdctl(&["-u", &url, "--table", "datanode"]).await, 0);
    assert_eq!(
        pdctl(&["-u", &url, "datanode", "decommission", "999999"]).await,
        1
    );
    let resp = reqwest::Client::new()
        .post(pd.url("datanode/x/decommission"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // Restart: the decommissioned state and the moved map are kept.
    let version = p["version"].clone();
    pd.stop().await;
    let pd = must_start_pd(dir.path(), tune).await;
    let (_, n) = get_json(&pd.url(&format!("datanode/{victim}"))).await;
    assert_eq!(n["admin_state"], "Decommissioned");
    let (_, p) = get_json(&pd.url("placement")).await;
    assert_eq!(p["version"], version);

    // Cancelled: active again.
    let url = format!("http://{}", pd.http);
    assert_eq!(
        pdctl(&[
            "-u",
            &url,
            "datanode",
            "cancel-decommission",
            &victim.to_string()
        ])
        .await,
        0
    );
    let (_, n) = get_json(&pd.url(&format!("datanode/{victim}"))).await;
    assert_eq!(n["admin_state"], "Active");
    pd.stop().await;
}

/// `pdctl store label|weight|limit`, `config set` and `scheduler
/// remove|pause` change PD's persisted settings: bad ids, keys and values
/// exit 1 (bad usage 2), and everything set survives a PD restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_settings_config_and_schedulers_persist_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pd = must_start_pd(dir.path(), |_| {}).await;
    let client = pd.client();
    let mut ids = Vec::new();
    for (i, zone) in ["z1", "z2", "z3"].iter().enumerate() {
        let addr = format!("127.0.0.1:{}", 32000 + i);
        ids.push(
            client
                .register_store(store(0, &addr, zone), &uuid(&addr))
                .await
                .unwrap(),
        );
    }
    let (a, b) = (ids[0].to_string(), ids[1].to_string());
    let url = format!("http://{}", pd.http);
    let ctl = |args: &[&str]| {
        let mut v = vec!["-u".to_string(), url.clone()];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        pdctl(&refs).await
    };
    assert_eq!(
        run(ctl(&["store", "label", &a, "zone=z9", "rack=r1"])).await,
        0
    );
    assert_eq!(run(ctl(&["store", "label", "999999", "zone=z9"])).await, 1);
    assert_eq!(run(ctl(&["store", "label", &a, "zone"])).await, 2);
    assert_eq!(run(ctl(&["store", "weight", &a, "2", "3"])).await, 0);
    assert_eq!(run(ctl(&["store", "weight", &a, "0", "3"])).await, 2);
    assert_eq!(run(ctl(&["store", "limit", &b, "7"])).await, 0);
    assert_eq!(run(ctl(&["store", "limit", "999999"])).await, 1);
    assert_eq!(run(ctl(&["--table", "store", "limit"])).await, 0);
    assert_eq!(
        run(ctl(&["config", "set", "max-store-down-time", "1m"])).await,
        0
    );
    assert_eq!(run(ctl(&["config", "set", "no-such-key", "1"])).await, 1);
    assert_eq!(run(ctl(&["config", "set", "max-replicas", "5"])).await, 1);
    assert_eq!(
        run(ctl(&["config", "set", "split-merge-interval", "soon"])).await,
        1
    );
    assert_eq!(run(ctl(&["--table", "config", "show"])).await, 0);
    assert_eq!(
        run(ctl(&["scheduler", "remove", "balance-region"])).await,
        0
    );
    assert_eq!(run(ctl(&["scheduler", "pause", "balance-leader"])).await, 0);
    assert_eq!(run(ctl(&["scheduler", "remove", "no-such"])).await, 1);

    let check = |pd_url: String| {
        let ids = ids.clone();
        async move {
            let (_, s) = get_json(&format!("{pd_url}/store/{}", ids[0])).await;
            let labels = s["store"]["labels"].as_array().unwrap().clone();
            assert!(
                labels.contains(&serde_json::json!({"key": "zone", "value": "z9"})),
                "{s}"
            );
            assert!(labels.contains(&serde_json::json!({"key": "rack", "value": "r1"})));
            assert_eq!(s["status"]["leader_weight"], 2.0);
            assert_eq!(s["status"]["region_weight"], 3.0);
            let (_, l) = get_json(&format!("{pd_url}/stores/limit")).await;
            assert_eq!(l[ids[1].to_string()]["operators-per-minute"], 7, "{l}");
            assert_eq!(l[ids[1].to_string()]["own"], true);
            assert_eq!(l[ids[0].to_string()]["operators-per-minute"], 120, "{l}");
            let (_, c) = get_json(&format!("{pd_url}/config")).await;
            assert_eq!(c["schedule"]["max-store-down-time"], "1m", "{c}");
            assert_eq!(c["schedule"]["split-merge-interval"], "1h");
            assert_eq!(c["replication"]["max-replicas"], 3);
            let (_, sc) = get_json(&format!("{pd_url}/schedulers")).await;
            let sched = |name: &str| {
                sc["schedulers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["name"] == name)
                    .cloned()
                    .unwrap()
            };
            assert_eq!(sched("balance-region")["disabled"], true, "{sc}");
            assert_eq!(sched("balance-leader")["paused"], true, "{sc}");
            assert_eq!(sched("replica-checker")["paused"], false);
        }
    };
    check(format!("http://{}/pd/api/v1", pd.http)).await;
    pd.stop().await;
    let pd = must_start_pd(dir.path(), |_| {}).await;
    check(format!("http://{}/pd/api/v1", pd.http)).await;
    let url = format!("http://{}", pd.http);
    let mut args = vec!["-u".to_string(), url.clone()];
    args.extend(["scheduler", "add", "balance-region"].map(String::from));
    assert_eq!(run(args).await, 0);
    let (_, sc) = get_json(&pd.url("schedulers")).await;
    assert!(
        sc["schedulers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["disabled"] == false),
        "{sc}"
    );
    pd.stop().await;
}
