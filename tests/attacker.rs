//! Forged internal messages against a running `kura dev` cluster, sent the way
//! anyone on the network could (issue 15; docs/security.md, "Node identities
//! and message validation"): a forged tombstone Raft message, a heartbeat
//! whose commit index is far past the log end, a forged proposal, a
//! re-registration of a live store and a live data node with a wrong uuid,
//! and `u64::MAX` ids. Each is refused or dropped (and counted), nothing
//! changes, and afterwards every process still serves S3 PUT/GET.
//! Plaintext for now; the gRPC clients here dial through
//! `kura_pd_client::channel`, which uses the cluster TLS when it is installed.
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::Cluster;
use kura_pd_client::channel::lazy_channel;
use kura_pd_client::channel::Channel;
use kura_proto::common::{Labels, Region, RegionEpoch};
use kura_proto::metashard::metashard_client::MetashardClient;
use kura_proto::metashard::{RaftMessage, RaftMessageBatch, RegionStatus, RegionStatusRequest};
use kura_proto::pd::pd_client::PdClient as RawPd;
use kura_proto::pd::{
    AllocIdRequest, DataNode, GetPlacementRequest, GetRegionRequest, GetStoresRequest,
    RegisterDataNodeRequest, RegisterStoreRequest, Store,
};

const MSG_PROPOSE: u64 = 2;
const MSG_HEARTBEAT: u64 = 8;

/// A raft-rs `eraftpb::Message` in protobuf wire format (varint fields only:
/// 1 msg_type, 2 to, 3 from, 4 term, 8 commit), so the test needs no raft-rs.
fn raft_msg(fields: &[(u32, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    let varint = |mut v: u64, out: &mut Vec<u8>| loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    };
    for &(field, v) in fields {
        varint(u64::from(field) << 3, &mut out);
        varint(v, &mut out);
    }
    out
}

fn pd(c: &Cluster) -> RawPd<Channel> {
    RawPd::new(lazy_channel(&c.component("pd-1").grpc).expect("pd channel"))
}

fn metashard(addr: &str) -> MetashardClient<Channel> {
    MetashardClient::new(lazy_channel(addr).expect("metashard channel"))
}

async fn send_raft(addr: &str, msgs: Vec<RaftMessage>) {
    let batch = RaftMessageBatch { msgs };
    // The stream ends after the batch: the store has taken it when the call returns.
    metashard(addr)
        .raft(futures::stream::iter(vec![batch]))
        .await
        .expect("the raft stream takes the batch");
}

async fn status(addr: &str, region_id: u64) -> Option<RegionStatus> {
    metashard(addr)
        .region_status(RegionStatusRequest { region_id })
        .await
        .ok()?
        .into_inner()
        .status
}

fn dropped(status_addr: &str, reason: &str) -> f64 {
    common::metric(
        status_addr,
        &format!("kura_metashard_raft_messages_dropped_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

fn wait_dropped(status_addr: &str, reason: &str, above: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = dropped(status_addr, reason);
        if n > above {
            eprintln!("dropped for {reason}: {n}");
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "no raft message dropped for {reason} (count {n})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn put(c: &Cluster, dir: &std::path::Path, bucket: &str, key: &str, seed: u64) {
    let body = common::pattern(100_000 + seed as usize, seed);
    let src = dir.join(format!("{key}.in"));
    std::fs::write(&src, &body).expect("write body");
    c.must_put_file(bucket, key, &src);
}

fn get(c: &Cluster, dir: &std::path::Path, bucket: &str, key: &str, seed: u64) {
    let body = common::pattern(100_000 + seed as usize, seed);
    let out = dir.join(format!("{key}.out"));
    c.must_get_file(bucket, key, &out);
    assert_eq!(std::fs::read(&out).expect("read back"), body, "{key}");
}

#[test]
fn forged_internal_messages_are_refused_and_every_process_keeps_serving() {
    let c = Cluster::must_start();
    c.use_cluster_tls();
    let tmp = tempfile::tempdir().expect("tempdir");
    c.must_aws(&["s3", "mb", "s3://attacked"]);
    for i in 0..5 {
        put(&c, tmp.path(), "attacked", &format!("before-{i}"), i);
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut pd = pd(&c);
        let stores: Vec<Store> = pd
            .get_stores(GetStoresRequest {})
            .await
            .expect("stores")
            .into_inner()
            .stores;
        let addr_of: HashMap<u64, String> =
            stores.iter().map(|s| (s.id, s.address.clone())).collect();
        let status_of = |store_id: u64| {
            c.components()
                .into_iter()
                .find(|x| x.role == "metashard" && x.grpc == addr_of[&store_id])
                .expect("metashard component of the store")
                .status
        };
        let info = pd
            .get_region(GetRegionRequest {
                key: vec![0x02].into(),
            })
            .await
            .expect("region")
            .into_inner()
            .region
            .expect("a region holds the object keys");
        let region: Region = info.region.expect("region");
        let leader = info.leader.expect("the region has a leader");
        let victim = region
            .peers
            .iter()
            .find(|p| p.id != leader.id)
            .expect("a follower")
            .clone();
        let victim_addr = addr_of[&victim.store_id].clone();
        let victim_status = status_of(victim.store_id);
        let before = status(&victim_addr, region.id)
            .await
            .expect("victim hosts the region");

        // 1. A forged tombstone: a "newer" view without the victim's peer,
        // claimed by a real member (which, asked, says otherwise) and by a
        // store that does not exist.
        let epoch = region.epoch.unwrap_or_default();
        let forged_view = Region {
            peers: region
                .peers
                .iter()
                .filter(|p| p.id != victim.id)
                .cloned()
                .collect(),
            epoch: Some(RegionEpoch {
                conf_ver: epoch.conf_ver + 100,
                version: epoch.version,
            }),
            ..region.clone()
        };
        let refused_before = dropped(&victim_status, "tombstone_refused");
        let tombstone = |from_store: u64| RaftMessage {
            region_id: region.id,
            from_store,
            to_store: victim.store_id,
            region: Some(forged_view.clone()),
            message: Default::default(),
            tombstone: true,
        };
        send_raft(&victim_addr, vec![tombstone(leader.store_id)]).await;
        wait_dropped(&victim_status, "tombstone_refused", refused_before);
        let refused = dropped(&victim_status, "tombstone_refused");
        let mut bogus = tombstone(999_999);
        bogus.region.as_mut().expect("view").peers[0].store_id = 999_999;
        send_raft(&victim_addr, vec![bogus]).await;
        wait_dropped(&victim_status, "tombstone_refused", refused);
        let after = status(&victim_addr, region.id)
            .await
            .expect("the victim's replica is still there");
        assert_eq!(after.region, before.region, "the replica is unchanged");
        assert!(after.applied_index >= before.applied_index);

        // 2. A heartbeat committing far past the log end (raft-rs would
        // panic in commit_to), an absurd one, and a forged proposal.
        let past_before = dropped(&victim_status, "commit_past_log");
        let hb = |commit: u64, msg_type: u64| RaftMessage {
            region_id: region.id,
            from_store: leader.store_id,
            to_store: victim.store_id,
            region: Some(region.clone()),
            message: raft_msg(&[
                (1, msg_type),
                (2, victim.id),
                (3, leader.id),
                (4, after.term),
                (8, commit),
            ])
            .into(),
            tombstone: false,
        };
        send_raft(
            &victim_addr,
            vec![hb(after.last_log_index + 1_000_000, MSG_HEARTBEAT)],
        )
        .await;
        wait_dropped(&victim_status, "commit_past_log", past_before);
        let absurd_before = dropped(&victim_status, "absurd_value");
        send_raft(&victim_addr, vec![hb(u64::MAX, MSG_HEARTBEAT)]).await;
        wait_dropped(&victim_status, "absurd_value", absurd_before);
        let local_before = dropped(&victim_status, "local_only_type");
        send_raft(&victim_addr, vec![hb(0, MSG_PROPOSE)]).await;
        wait_dropped(&victim_status, "local_only_type", local_before);
        assert_eq!(
            common::http_status(&victim_status, "/ready"),
            Some(200),
            "the store still serves"
        );

        // 3. Re-registration of a live store and a live data node with a
        // wrong uuid: refused, nothing changed.
        let wrong = "0123456789abcdef0123456789abcdef".to_string();
        let live = stores[0].clone();
        let err = pd
            .register_store(RegisterStoreRequest {
                store: Some(Store {
                    address: "127.0.0.1:1".into(),
                    ..live.clone()
                }),
                uuid: wrong.clone(),
            })
            .await
            .expect_err("a live store's id with a wrong uuid");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        let map = pd
            .get_placement(GetPlacementRequest { known_version: 0 })
            .await
            .expect("placement")
            .into_inner()
            .map
            .expect("a placement map");
        let node = map.nodes[0].clone();
        let err = pd
            .register_data_node(RegisterDataNodeRequest {
                node: Some(DataNode {
                    address: "127.0.0.1:1".into(),
                    ..node.clone()
                }),
                uuid: wrong.clone(),
            })
            .await
            .expect_err("a live data node's id with a wrong uuid");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

        // 4. Ids nobody was given: refused, the allocator stays sane.
        for id in [u64::MAX, u64::MAX - 1, 1 << 63] {
            let err = pd
                .register_store(RegisterStoreRequest {
                    store: Some(Store {
                        id,
                        address: "127.0.0.1:2".into(),
                        labels: Some(Labels {
                            zone: "z1".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    uuid: wrong.clone(),
                })
                .await
                .expect_err("a made-up store id");
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
            let err = pd
                .register_data_node(RegisterDataNodeRequest {
                    node: Some(DataNode {
                        id,
                        address: "127.0.0.1:2".into(),
                        ..Default::default()
                    }),
                    uuid: wrong.clone(),
                })
                .await
                .expect_err("a made-up data node id");
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        }
        let next = pd
            .alloc_id(AllocIdRequest { count: 1 })
            .await
            .expect("alloc id")
            .into_inner()
            .first_id;
        assert!(next > 0 && next < 1 << 32, "the next id is sane: {next}");

        // Nothing changed in PD: same stores, same data node addresses.
        let stores_after = pd
            .get_stores(GetStoresRequest {})
            .await
            .expect("stores")
            .into_inner()
            .stores;
        assert_eq!(stores_after.len(), stores.len(), "no store was added");
        let live_after = stores_after
            .iter()
            .find(|s| s.id == live.id)
            .expect("live store");
        assert_eq!(live_after.address, live.address);
        let map_after = pd
            .get_placement(GetPlacementRequest { known_version: 0 })
            .await
            .expect("placement")
            .into_inner()
            .map
            .expect("map");
        let node_after = map_after
            .nodes
            .iter()
            .find(|n| n.id == node.id)
            .expect("node");
        assert_eq!(
            node_after.address, node.address,
            "the data node was not re-pointed"
        );
        assert_eq!(map_after.nodes.len(), map.nodes.len());
    });

    // 5. Every process still serves, and S3 works end to end.
    for comp in c.components() {
        assert_eq!(
            common::http_status(&comp.status, "/ready"),
            Some(200),
            "{} still ready",
            comp.id
        );
    }
    for i in 0..5 {
        get(&c, tmp.path(), "attacked", &format!("before-{i}"), i);
    }
    put(&c, tmp.path(), "attacked", "after", 99);
    get(&c, tmp.path(), "attacked", "after", 99);
}
