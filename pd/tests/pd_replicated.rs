//! A replicated PD in one process: three members (`Config::replication`)
//! on real sockets, driven by `PdClient` over all three endpoints and by
//! the HTTP API. Checks that a leader change loses no acknowledged write,
//! never hands out an id twice, and that a restarted member rejoins.

mod common;
use common::uuid;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_pd::replication::PeerSpec;
use kura_pd_client::PdClient;
use kura_proto::common::Labels;
use kura_proto::pd::DataNode;
use serde_json::Value;

/// A running member's stop switch and its `serve` task.
type Running = (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), kura_pd::Error>>,
);

struct Member {
    id: u64,
    grpc: SocketAddr,
    http: SocketAddr,
    dir: PathBuf,
    running: Option<Running>,
}

struct Group {
    members: Vec<Member>,
    peers: Vec<PeerSpec>,
}

impl Group {
    async fn must_start(dir: &Path) -> Group {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            let g = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let h = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.push((g, h));
        }
        let peers: Vec<PeerSpec> = listeners
            .iter()
            .enumerate()
            .map(|(i, (g, h))| PeerSpec {
                id: i as u64 + 1,
                grpc: g.local_addr().unwrap().to_string(),
                http: h.local_addr().unwrap().to_string(),
            })
            .collect();
        let mut group = Group {
            members: Vec::new(),
            peers,
        };
        for (i, (g, h)) in listeners.into_iter().enumerate() {
            let mut m = Member {
                id: i as u64 + 1,
                grpc: g.local_addr().unwrap(),
                http: h.local_addr().unwrap(),
                dir: dir.join(format!("pd-{}", i + 1)),
                running: None,
            };
            group.launch(&mut m, g, h);
            group.members.push(m);
        }
        group
    }

    fn launch(&self, m: &mut Member, g: tokio::net::TcpListener, h: tokio::net::TcpListener) {
        let mut cfg = kura_pd::Config::new(m.dir.clone(), m.grpc, m.http);
        cfg.placement_wait = Duration::from_secs(60);
        cfg.replication = Some((m.id, self.peers.clone()));
        let (stop, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(kura_pd::serve(
            cfg,
            g,
            h,
            Arc::new(AtomicBool::new(false)),
            rx,
        ));
        m.running = Some((stop, task));
    }

    async fn must_stop(&mut self, id: u64) {
        let m = &mut self.members[id as usize - 1];
        let (stop, task) = m.running.take().expect("running");
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("member stops")
            .unwrap()
            .unwrap();
    }

    async fn must_restart(&mut self, id: u64) {
        let (grpc, http) = {
            let m = &self.members[id as usize - 1];
            (m.grpc, m.http)
        };
        let g = tokio::net::TcpListener::bind(grpc).await.unwrap();
        let h = tokio::net::TcpListener::bind(http).await.unwrap();
        let mut m = std::mem::replace(
            &mut self.members[id as usize - 1],
            Member {
                id,
                grpc,
                http,
                dir: PathBuf::new(),
                running: None,
            },
        );
        self.launch(&mut m, g, h);
        self.members[id as usize - 1] = m;
    }

    fn client(&self) -> PdClient {
        let eps: Vec<String> = self.members.iter().map(|m| m.grpc.to_string()).collect();
        PdClient::new(&eps).unwrap()
    }

    /// Waits until some running member says it leads; returns its id.
    async fn must_find_leader(&self, not: Option<u64>) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            for m in self.members.iter().filter(|m| m.running.is_some()) {
                let c = PdClient::new(&[m.grpc.to_string()])
                    .unwrap()
                    .with_attempts(1);
                if let Ok(r) = c.get_members().await {
                    if let Some(l) = r.leader {
                        let alive = self.members[l.id as usize - 1].running.is_some();
                        // Serving too, not just elected.
                        if alive && Some(l.id) != not && c.get_cluster().await.is_ok() {
                            return l.id;
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "no PD leader elected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn node(addr: &str, zone: &str) -> DataNode {
    DataNode {
        address: addr.into(),
        labels: Some(Labels {
            zone: zone.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn http_json(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_change_keeps_every_acknowledged_write_and_never_reuses_an_id() {
    let tmp = tempfile::tempdir().unwrap();
    let mut group = Group::must_start(tmp.path()).await;
    let pd = group.client();
    let leader = group.must_find_leader(None).await;
    let cluster_id = pd.get_cluster().await.unwrap().cluster_id;
    assert_ne!(cluster_id, 0);

    let mut ids = BTreeSet::new();
    for _ in 0..20 {
        let first = pd.alloc_ids(5).await.unwrap();
        for id in first..first + 5 {
            assert!(ids.insert(id), "id {id} handed out twice");
        }
    }
    let mut nodes = Vec::new();
    for (i, zone) in ["z1", "z2", "z3"].iter().enumerate() {
        let id = pd
            .register_data_node(node(&format!("d:{i}"), zone), &uuid(&format!("d:{i}")))
            .await
            .unwrap();
        assert!(ids.insert(id), "node id {id} reused an allocated id");
        nodes.push(id);
    }

    // Every member answers who leads; followers' HTTP redirects to the leader.
    let follower = group.members.iter().find(|m| m.id != leader).unwrap();
    let (code, members) = http_json(&format!("http://{}/pd/api/v1/members", follower.http)).await;
    assert_eq!(code, 200);
    assert_eq!(members["members"].as_array().unwrap().len(), 3);
    assert_eq!(members["leader"]["member_id"], leader);
    let (code, dn) = http_json(&format!("http://{}/pd/api/v1/datanodes", follower.http)).await;
    assert_eq!(code, 200, "followed the redirect: {dn}");
    assert_eq!(dn["count"].as_u64(), Some(3), "{dn}");
    // A write through a follower's HTTP API lands on the leader (307, POST kept).
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/pd/api/v1/datanode/{}/decommission",
            follower.http, nodes[0]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Admin settings too: a runtime config value and a paused scheduler.
    let r = reqwest::Client::new()
        .post(format!("http://{}/pd/api/v1/config", follower.http))
        .json(&serde_json::json!({"max-store-down-time": "2m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/pd/api/v1/schedulers/balance-leader/pause",
            follower.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Raw gRPC to a follower: Unavailable naming the leader.
    let raw = PdClient::new(&[follower.grpc.to_string()])
        .unwrap()
        .with_attempts(1);
    let err = raw.alloc_id().await.unwrap_err().to_string();
    assert!(err.contains("not the leader"), "{err}");

    // The leader goes away: another takes over with everything acknowledged.
    group.must_stop(leader).await;
    let started = Instant::now();
    let second = group.must_find_leader(Some(leader)).await;
    assert_ne!(second, leader);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "election took {took:?}");
    assert_eq!(pd.get_cluster().await.unwrap().cluster_id, cluster_id);
    let first = pd.alloc_ids(5).await.unwrap();
    assert!(
        first > *ids.last().unwrap(),
        "after failover ids start above every id handed out ({first})"
    );
    for id in first..first + 5 {
        assert!(ids.insert(id));
    }
    let extra = pd
        .register_data_node(node("d:late", "z1"), &uuid("d:late"))
        .await
        .unwrap();
    assert!(ids.insert(extra));
    nodes.push(extra);

    // The old leader rejoins; then the second leader goes: the state written
    // while the first was down survives on whichever of the two leads next.
    group.must_restart(leader).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    group.must_stop(second).await;
    let third = group.must_find_leader(Some(second)).await;
    let http = group.members[third as usize - 1].http;
    let (code, dn) = http_json(&format!("http://{http}/pd/api/v1/datanodes")).await;
    assert_eq!(code, 200);
    let got: BTreeSet<u64> = dn["datanodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_u64())
        .collect();
    assert_eq!(got, nodes.iter().copied().collect(), "{dn}");
    let state = |id: u64| {
        dn["datanodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"].as_u64() == Some(id))
            .and_then(|n| n["admin_state"].as_str())
            .map(str::to_string)
    };
    assert_ne!(
        state(nodes[0]).as_deref(),
        Some("Active"),
        "the decommission survived two leader changes"
    );
    assert_eq!(state(nodes[1]).as_deref(), Some("Active"));
    let (_, cfg) = http_json(&format!("http://{http}/pd/api/v1/config")).await;
    assert_eq!(
        cfg["schedule"]["max-store-down-time"], "2m",
        "config set survived two leader changes: {cfg}"
    );
    let (_, sc) = http_json(&format!("http://{http}/pd/api/v1/schedulers")).await;
    assert!(
        sc["schedulers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "balance-leader" && s["paused"] == true),
        "{sc}"
    );
    let first = pd.alloc_ids(1).await.unwrap();
    assert!(first > *ids.last().unwrap());

    for id in 1..=3 {
        if group.members[id as usize - 1].running.is_some() {
            group.must_stop(id).await;
        }
    }
}

/// A member that was down while the log was compacted past it catches up
/// from the leader's snapshot: once it is one of the only two running, it
/// carries every write and can lead with all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_behind_a_compacted_log_catches_up_by_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let mut group = Group::must_start(tmp.path()).await;
    let pd = group.client();
    let leader = group.must_find_leader(None).await;
    let others: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    let (behind, third) = (others[0], others[1]);
    pd.register_data_node(node("d:0", "z1"), &uuid("d:0"))
        .await
        .unwrap();
    group.must_stop(behind).await;

    // Each allocation past the saved mark is one committed entry: well past
    // a compaction.
    let mut last = 0;
    for _ in 0..100 {
        last = pd.alloc_ids(2_000).await.unwrap() + 1_999;
    }
    let late = pd
        .register_data_node(node("d:late", "z2"), &uuid("d:late"))
        .await
        .unwrap();

    // Only `leader` and `behind` left: a write commits only once `behind`
    // holds the log, which it can only get from the snapshot.
    group.must_restart(behind).await;
    group.must_stop(third).await;
    let first = pd.alloc_ids(1).await.unwrap();
    assert!(first > last);
    // A registration is always saved (a small allocation may not be: the
    // saved mark runs ahead).
    let latest = pd
        .register_data_node(node("d:latest", "z3"), &uuid("d:latest"))
        .await
        .unwrap();
    assert!(
        kura_pd::metrics::metrics().snapshots_applied.get() > 0,
        "caught up by snapshot, not by log"
    );
    // `behind` and `third` left: `behind` has the newest log, so it leads,
    // with everything.
    group.must_stop(leader).await;
    group.must_restart(third).await;
    let now = group.must_find_leader(Some(leader)).await;
    assert_eq!(now, behind, "the member with the whole log wins");
    let http = group.members[now as usize - 1].http;
    let (code, dn) = http_json(&format!("http://{http}/pd/api/v1/datanodes")).await;
    assert_eq!(code, 200);
    let ids: Vec<u64> = dn["datanodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_u64())
        .collect();
    assert!(ids.contains(&late) && ids.contains(&latest), "{dn}");
    assert!(pd.alloc_ids(1).await.unwrap() > first);
    assert!(
        group.members[behind as usize - 1].dir.join("raft").exists(),
        "the log lives under the PD data dir"
    );
    for id in 1..=3 {
        if group.members[id as usize - 1].running.is_some() {
            group.must_stop(id).await;
        }
    }
}
