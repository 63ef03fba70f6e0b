//! Forged internal messages against a running `kura dev` cluster, sent the way
//! anyone on the network could (issue 15; docs/security.md, "Node identities
//! and message validation"): a forged tombstone Raft message, a heartbeat
//! whose commit index is far past the log end, a forged proposal, a
//! re-registration of a live store and a live data node with a wrong uuid,
//! and `u64::MAX` ids. Each is refused or dropped (and counted), nothing
//! changes, and afterwards every process still serves S3 PUT/GET.
//! Then (decision 0045): heartbeats for 2,000 made-up regions at a store
//! that hosts nothing (each would create an empty peer): at most 128 are
//! created, the rest dropped and counted, and PD-unknown ones are destroyed
//! after the grace; snapshots claiming an absurd size, more bytes than they
//! claim, a wrong checksum or another region are refused with nothing applied.
//! Plaintext for now; the gRPC clients here dial through
//! `kura_pd_client::channel`, which uses the cluster TLS when it is installed.
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::Cluster;
use kura_pd_client::channel::lazy_channel;
use kura_pd_client::channel::Channel;
use kura_proto::common::Peer;
use kura_proto::common::{Labels, Region, RegionEpoch};
use kura_proto::metashard::metashard_client::MetashardClient;
use kura_proto::metashard::{
    RaftMessage, RaftMessageBatch, RegionStatus, RegionStatusRequest, SnapshotChunk,
};
use kura_proto::pd::pd_client::PdClient as RawPd;
use kura_proto::pd::{
    AllocIdRequest, DataNode, GetRegionRequest, GetStoresRequest, RegisterDataNodeRequest,
    RegisterStoreRequest, Store,
};

const MSG_PROPOSE: u64 = 2;
const MSG_SNAPSHOT: u64 = 7;
const MSG_HEARTBEAT: u64 = 8;
/// `fsm::uninit::MAX_UNINITIALIZED`.
const MAX_UNINITIALIZED: f64 = 128.0;

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
}

/// A protobuf field: a varint, or length-delimited bytes (a nested message).
enum F {
    V(u32, u64),
    B(u32, Vec<u8>),
}

fn pb(fields: &[F]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        match f {
            F::V(n, v) => {
                varint(u64::from(*n) << 3, &mut out);
                varint(*v, &mut out);
            }
            F::B(n, b) => {
                varint((u64::from(*n) << 3) | 2, &mut out);
                varint(b.len() as u64, &mut out);
                out.extend_from_slice(b);
            }
        }
    }
    out
}

/// A raft-rs `eraftpb::Message` in protobuf wire format (varint fields only:
/// 1 msg_type, 2 to, 3 from, 4 term, 8 commit), so the test needs no raft-rs.
fn raft_msg(fields: &[(u32, u64)]) -> Vec<u8> {
    pb(&fields.iter().map(|&(n, v)| F::V(n, v)).collect::<Vec<_>>())
}

/// A `kura.common.Region` in wire format.
fn region_pb(r: &Region) -> Vec<u8> {
    let epoch = r.epoch.unwrap_or_default();
    let mut f = vec![
        F::V(1, r.id),
        F::B(2, r.start_key.to_vec()),
        F::B(3, r.end_key.to_vec()),
        F::B(4, pb(&[F::V(1, epoch.conf_ver), F::V(2, epoch.version)])),
    ];
    for p in &r.peers {
        f.push(F::B(
            5,
            pb(&[
                F::V(1, p.id),
                F::V(2, p.store_id),
                F::V(3, u64::from(p.is_learner)),
            ]),
        ));
    }
    pb(&f)
}

/// A MsgSnapshot installing `region` at `index`/`term`, whose descriptor
/// (`SnapshotDescriptor`: 1 region, 2 size, 3 crc32c, 4 keys, 5 index,
/// 6 term) claims `size` bytes with `crc`.
#[allow(clippy::too_many_arguments)]
fn snapshot_msg(
    region: &Region,
    desc_region_id: u64,
    to: u64,
    from: u64,
    index: u64,
    term: u64,
    size: u64,
    crc: u32,
) -> Vec<u8> {
    let desc_region = Region {
        id: desc_region_id,
        ..region.clone()
    };
    let desc = pb(&[
        F::B(1, region_pb(&desc_region)),
        F::V(2, size),
        F::V(3, u64::from(crc)),
        F::V(4, 1),
        F::V(5, index),
        F::V(6, term),
    ]);
    let mut conf = Vec::new();
    for p in &region.peers {
        conf.push(F::V(if p.is_learner { 2 } else { 1 }, p.id));
    }
    let meta = pb(&[F::B(1, pb(&conf)), F::V(2, index), F::V(3, term)]);
    pb(&[
        F::V(1, MSG_SNAPSHOT),
        F::V(2, to),
        F::V(3, from),
        F::V(4, term),
        F::B(9, pb(&[F::B(1, desc), F::B(2, meta)])),
    ])
}

/// Resident memory (KiB) of the process whose command line holds `needle`
/// (its listen address), for the figures in docs/security.md.
fn rss_kib(needle: &str) -> Option<u64> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmd).contains(needle) {
            continue;
        }
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        return status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok();
    }
    None
}

fn metric(status_addr: &str, name: &str) -> f64 {
    common::metric(status_addr, name).unwrap_or(0.0)
}

fn refused(status_addr: &str, reason: &str) -> f64 {
    metric(
        status_addr,
        &format!("kura_metashard_snapshots_refused_total{{reason=\"{reason}\"}}"),
    )
}

/// Sends one snapshot transfer (the message, then `data` in one chunk);
/// the store's answer.
async fn send_snapshot(addr: &str, msg: RaftMessage, data: Vec<u8>) -> Result<(), tonic::Status> {
    let chunks = vec![
        SnapshotChunk {
            message: Some(msg),
            data: Default::default(),
        },
        SnapshotChunk {
            message: None,
            data: data.into(),
        },
    ];
    metashard(addr)
        .snapshot(futures::stream::iter(chunks))
        .await
        .map(|_| ())
}

fn pd(c: &Cluster) -> RawPd<Channel> {
    c.pd_grpc()
}

/// The region holding the object keys, its leader and one follower, as PD
/// has them.
async fn object_region_follower(pd: &mut RawPd<Channel>) -> (Region, Peer, Peer) {
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
    let victim = *region
        .peers
        .iter()
        .find(|p| p.id != leader.id)
        .expect("a follower");
    (region, leader, victim)
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
        let (region, leader, victim) = object_region_follower(&mut pd).await;
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
        let map = Cluster::placement_map(&mut pd).await;
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
        let map_after = Cluster::placement_map(&mut pd).await;
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

    // 6. Heartbeats for 2,000 made-up regions at a store that hosts nothing
    // yet, so no range of theirs overlaps a local region: each would create
    // an empty peer. At most 128 exist at once, the rest are dropped and
    // counted; PD knows none of them, so each is destroyed after the grace.
    let extra = c.start_extra_metashard(4, "z1");
    rt.block_on(async {
        let mut pd = pd(&c);
        let stores = pd
            .get_stores(GetStoresRequest {})
            .await
            .expect("stores")
            .into_inner()
            .stores;
        let target = stores
            .iter()
            .find(|s| s.address == extra.grpc)
            .expect("the extra store registered")
            .id;
        let sender = stores
            .iter()
            .find(|s| s.id != target)
            .expect("a real store")
            .id;
        let full_before = dropped(&extra.status, "uninitialized_peers_full");
        let destroyed_before = metric(
            &extra.status,
            "kura_metashard_uninitialized_peers_destroyed_total",
        );
        const JUNK: u64 = 2_000;
        let junk_region = |i: u64| {
            let key = |j: u64| [b"\x7fjunk".as_slice(), &j.to_be_bytes()].concat();
            Region {
                id: 1_000_000 + i,
                start_key: key(i).into(),
                end_key: key(i + 1).into(),
                epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version: 1,
                }),
                peers: vec![
                    Peer {
                        id: 3_000_000 + i,
                        store_id: sender,
                        is_learner: false,
                    },
                    Peer {
                        id: 2_000_000 + i,
                        store_id: target,
                        is_learner: false,
                    },
                ],
            }
        };
        let rss_before = rss_kib(&extra.grpc);
        let started = Instant::now();
        for chunk in (0..JUNK).collect::<Vec<_>>().chunks(200) {
            let msgs = chunk
                .iter()
                .map(|&i| RaftMessage {
                    region_id: 1_000_000 + i,
                    from_store: sender,
                    to_store: target,
                    region: Some(junk_region(i)),
                    message: raft_msg(&[
                        (1, MSG_HEARTBEAT),
                        (2, 2_000_000 + i),
                        (3, 3_000_000 + i),
                        (4, 5),
                        (8, 0),
                    ])
                    .into(),
                    tombstone: false,
                })
                .collect();
            send_raft(&extra.grpc, msgs).await;
        }
        let full = wait_dropped(
            &extra.status,
            "uninitialized_peers_full",
            full_before + (JUNK as f64 - MAX_UNINITIALIZED) - 50.0,
        ) - full_before;
        let uninit = metric(&extra.status, "kura_metashard_uninitialized_peers");
        eprintln!(
            "{JUNK} junk regions sent in {:?}: {uninit} uninitialized peers, {full} dropped; \
             store RSS {rss_before:?} KiB before, {:?} KiB after",
            started.elapsed(),
            rss_kib(&extra.grpc)
        );
        assert!(
            (MAX_UNINITIALIZED - 8.0..=MAX_UNINITIALIZED).contains(&uninit),
            "the bound holds: {uninit}"
        );
        assert!(
            status(&extra.grpc, 1_000_000).await.is_some(),
            "the first junk region got an empty peer"
        );
        assert!(
            status(&extra.grpc, 1_000_000 + JUNK - 1).await.is_none(),
            "the last one did not"
        );
        // Collected: asked about after a 30 s grace, 16 questions at a time.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let left = metric(&extra.status, "kura_metashard_uninitialized_peers");
            let destroyed = metric(
                &extra.status,
                "kura_metashard_uninitialized_peers_destroyed_total",
            ) - destroyed_before;
            if left == 0.0 && destroyed >= uninit {
                eprintln!(
                    "junk collected {:?} after the flood: {destroyed} destroyed; store RSS {:?} KiB",
                    started.elapsed(),
                    rss_kib(&extra.grpc)
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "junk not collected: {left} left, {destroyed} destroyed"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            status(&extra.grpc, 1_000_000).await.is_none(),
            "the junk peer and its raft state are gone"
        );
        assert_eq!(common::http_status(&extra.status, "/ready"), Some(200));

        // 7. Forged snapshots at a follower of the object region: an absurd
        // claimed size, more bytes than claimed, a wrong checksum, another
        // region's descriptor, and a MsgSnapshot with no received file on the
        // raft stream. All refused and counted; nothing applied.
        let (region, leader, victim) = object_region_follower(&mut pd).await;
        let victim_addr = stores
            .iter()
            .find(|s| s.id == victim.store_id)
            .expect("victim store")
            .address
            .clone();
        let victim_status = c
            .components()
            .into_iter()
            .find(|x| x.role == "metashard" && x.grpc == victim_addr)
            .expect("victim component")
            .status;
        let before = status(&victim_addr, region.id).await.expect("hosted");
        let applied_before = metric(&victim_status, "kura_metashard_snapshots_applied_total");
        let index = before.applied_index + 1_000;
        let forged = |desc_region_id: u64, size: u64, crc: u32| RaftMessage {
            region_id: region.id,
            from_store: leader.store_id,
            to_store: victim.store_id,
            region: Some(region.clone()),
            message: snapshot_msg(
                &region,
                desc_region_id,
                victim.id,
                leader.id,
                index,
                before.term,
                size,
                crc,
            )
            .into(),
            tombstone: false,
        };
        let cases: [(&str, RaftMessage, Vec<u8>, tonic::Code); 4] = [
            (
                "too_large",
                forged(region.id, 1 << 40, 0),
                vec![0; 16],
                tonic::Code::InvalidArgument,
            ),
            (
                "mismatch",
                forged(region.id, 64, 0),
                vec![7; 128],
                tonic::Code::DataLoss,
            ),
            (
                "mismatch",
                forged(region.id, 64, 0x1234_5678),
                vec![7; 64],
                tonic::Code::DataLoss,
            ),
            (
                "descriptor",
                forged(region.id + 77, 64, 0),
                vec![7; 64],
                tonic::Code::InvalidArgument,
            ),
        ];
        for (reason, msg, data, code) in cases {
            let n = refused(&victim_status, reason);
            let err = send_snapshot(&victim_addr, msg, data)
                .await
                .expect_err("a forged snapshot is refused");
            assert_eq!(err.code(), code, "{reason}: {err}");
            assert_eq!(refused(&victim_status, reason), n + 1.0, "{reason} counted");
            eprintln!("forged snapshot refused ({reason}): {}", err.message());
        }
        let bad_before = dropped(&victim_status, "bad_snapshot");
        send_raft(&victim_addr, vec![forged(region.id, 64, 0)]).await;
        wait_dropped(&victim_status, "bad_snapshot", bad_before);
        let after = status(&victim_addr, region.id).await.expect("hosted");
        assert_eq!(after.region, before.region, "the replica is unchanged");
        assert!(!after.applying_snapshot, "no snapshot being applied");
        assert!(after.applied_index < index, "not moved to the forged index");
        assert_eq!(
            metric(&victim_status, "kura_metashard_snapshots_applied_total"),
            applied_before,
            "nothing applied"
        );
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
