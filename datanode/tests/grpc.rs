//! The real gRPC server on an ephemeral port, driven by the real client.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kura_datanode::crc::crc32c;
use kura_datanode::disk_health::{DiskHealth, ProbeTiming};
use kura_datanode::{serve, Config, DataNodeClient, DataNodeError, Store, StoreOptions};
use kura_proto::datanode::data_node_client::DataNodeClient as RawClient;
use kura_proto::datanode::{BlockGet, FragmentHeader, FragmentId, PutFragmentChunk};
use kura_proto::pd::pd_server::{Pd, PdServer};
use kura_proto::pd::*;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

const MIB: usize = 1 << 20;

struct Node {
    addr: String,
    store: Arc<Store>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), kura_datanode::Error>>,
    _dir: tempfile::TempDir,
}

async fn start_node() -> Node {
    start_node_on("127.0.0.1:0").await
}

/// A node listening on `addr` (a port of a node stopped before, to restart it).
async fn start_node_on(addr: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            segment_size: 256 << 20,
            min_free_bytes: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, rx) = watch::channel(false);
    let disk = DiskHealth::new(dir.path(), ProbeTiming::default());
    let task = tokio::spawn(serve(store.clone(), disk, listener, rx));
    Node {
        addr,
        store,
        stop,
        task,
        _dir: dir,
    }
}

impl Node {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// The segment file holding the fragment at `loc`.
fn segment_path(node: &Node, loc: &kura_datanode::store::Location) -> std::path::PathBuf {
    node.store
        .dir()
        .join("segments")
        .join(kura_datanode::store::format::segment_file_name(loc.segment))
}

fn fid(n: u8) -> FragmentId {
    FragmentId {
        data_id: Bytes::from(vec![n; 16]),
        shard: 1,
    }
}

fn header(n: u8, block_size: u32) -> FragmentHeader {
    FragmentHeader {
        id: Some(fid(n)),
        bucket_id: 1,
        object_key: "k".into(),
        block_size,
        ..Default::default()
    }
}

fn blocks(seed: u8, count: usize, size: usize) -> Vec<Bytes> {
    (0..count)
        .map(|b| {
            Bytes::from(
                (0..size)
                    .map(|i| (i as u8).wrapping_add(seed).wrapping_add(b as u8 * 3))
                    .collect::<Vec<_>>(),
            )
        })
        .collect()
}

async fn collect(
    s: futures::stream::BoxStream<'static, Result<Bytes, DataNodeError>>,
) -> Result<Vec<Bytes>, DataNodeError> {
    s.collect::<Vec<_>>().await.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_range_read_stat_delete_over_grpc() {
    let node = start_node().await;
    let client = DataNodeClient::new();
    let data = blocks(5, 3, MIB);

    let resp = client
        .put_fragment(
            &node.addr,
            header(1, MIB as u32),
            futures::stream::iter(data.clone()),
        )
        .await
        .unwrap();
    assert_eq!((resp.length, resp.blocks), (3 * MIB as u64, 3));

    let mid = collect(client.get_fragment(&node.addr, fid(1), 1, 1).await.unwrap())
        .await
        .unwrap();
    assert_eq!(mid, vec![data[1].clone()]);
    let tail = collect(client.get_fragment(&node.addr, fid(1), 1, 0).await.unwrap())
        .await
        .unwrap();
    assert_eq!(tail, data[1..].to_vec());
    let all = collect(client.get_fragment(&node.addr, fid(1), 0, 0).await.unwrap())
        .await
        .unwrap();
    assert_eq!(all, data);
    assert!(matches!(
        client.get_fragment(&node.addr, fid(1), 2, 5).await.err(),
        Some(DataNodeError::InvalidArgument(_))
    ));

    let st = client.stat_fragment(&node.addr, fid(1)).await.unwrap();
    assert!(st.found);
    assert_eq!((st.length, st.blocks), (3 * MIB as u64, 3));
    assert_eq!(st.header.unwrap().object_key, "k");

    assert!(client.delete_fragment(&node.addr, fid(1)).await.unwrap());
    assert!(!client.delete_fragment(&node.addr, fid(1)).await.unwrap());
    assert!(
        !client
            .stat_fragment(&node.addr, fid(1))
            .await
            .unwrap()
            .found
    );
    assert!(matches!(
        client.get_fragment(&node.addr, fid(1), 0, 0).await.err(),
        Some(DataNodeError::NotFound)
    ));

    // An empty fragment and a short last block.
    let r = client
        .put_fragment(
            &node.addr,
            header(2, 1024),
            futures::stream::empty::<Bytes>(),
        )
        .await
        .unwrap();
    assert_eq!((r.length, r.blocks), (0, 0));
    assert!(
        collect(client.get_fragment(&node.addr, fid(2), 0, 0).await.unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    let odd = vec![blocks(1, 1, 1024)[0].clone(), Bytes::from_static(b"tail")];
    let r = client
        .put_fragment(
            &node.addr,
            header(3, 1024),
            futures::stream::iter(odd.clone()),
        )
        .await
        .unwrap();
    assert_eq!((r.length, r.blocks), (1028, 2));
    assert_eq!(
        collect(client.get_fragment(&node.addr, fid(3), 0, 0).await.unwrap())
            .await
            .unwrap(),
        odd
    );
    node.stop().await;
}

/// Gateways of older builds send PutFragment through tonic's encoder (each
/// message in one piece, cut into frames as h2 likes): the node's own
/// decoder must take them as before, blocks larger than a frame included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_grpc_client_still_puts() {
    let node = start_node().await;
    let mut raw = RawClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap()
        .max_encoding_message_size(20 << 20);
    let data = blocks(3, 2, 2 * MIB);
    let msgs = vec![
        PutFragmentChunk {
            header: Some(header(1, 2 * MIB as u32)),
            crc32c: crc32c(&data[0]),
            data: data[0].clone(),
            last: false,
        },
        PutFragmentChunk {
            header: None,
            crc32c: crc32c(&data[1]),
            data: data[1].clone(),
            last: false,
        },
        PutFragmentChunk {
            header: None,
            data: Bytes::new(),
            crc32c: 0,
            last: true,
        },
    ];
    let resp = raw
        .put_fragment(futures::stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((resp.length, resp.blocks), (4 * MIB as u64, 2));
    let client = DataNodeClient::new();
    let back = collect(client.get_fragment(&node.addr, fid(1), 0, 0).await.unwrap())
        .await
        .unwrap();
    assert_eq!(back, data);

    // GetFragments is served ahead of tonic, framed by hand: a plain gRPC
    // client's calls (an older gateway's) get the same messages.
    let calls = [1u32, 7].map(|block| BlockGet {
        id: u64::from(block),
        fragment: Some(fid(1)),
        block,
    });
    let mut answers = raw
        .max_decoding_message_size(4 * MIB)
        .get_fragments(futures::stream::iter(calls))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(a) = answers.message().await.unwrap() {
        got.push(a);
    }
    got.sort_by_key(|a| a.id);
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].id, got[0].code), (1, 0));
    assert_eq!(got[0].data, data[1]);
    assert_eq!(got[0].crc32c, crc32c(&data[1]));
    assert_eq!(got[1].id, 7);
    assert_eq!(
        got[1].code,
        tonic::Code::OutOfRange as i32,
        "{:?}",
        got[1].message
    );
    assert!(got[1].data.is_empty());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_puts_store_nothing() {
    let node = start_node().await;
    let client = DataNodeClient::new();

    // Blocks of the wrong size: the node refuses the stream.
    let wrong = vec![Bytes::from(vec![1u8; 10]), Bytes::from(vec![2u8; 1024])];
    let err = client
        .put_fragment(&node.addr, header(1, 1024), futures::stream::iter(wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, DataNodeError::InvalidArgument(_)), "{err:?}");

    // A block whose CRC does not match what the sender claims.
    let mut raw = RawClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let msgs = vec![PutFragmentChunk {
        header: Some(header(2, 1024)),
        data: Bytes::from_static(b"abc"),
        crc32c: crc32c(b"abd"),
        last: true,
    }];
    let status = raw
        .put_fragment(futures::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DataLoss);

    // A stream without last=true.
    let msgs = vec![PutFragmentChunk {
        header: Some(header(3, 1024)),
        data: Bytes::new(),
        crc32c: 0,
        last: false,
    }];
    let status = raw
        .put_fragment(futures::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // A writer that goes away mid-fragment (the caller drops the future).
    let stalled =
        futures::stream::iter(vec![Bytes::from(vec![7u8; 1024])]).chain(futures::stream::pending());
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        client.put_fragment(&node.addr, header(4, 1024), stalled),
    )
    .await;
    assert!(r.is_err(), "put must still be waiting for its last block");

    for n in 1..=4 {
        assert!(
            !client
                .stat_fragment(&node.addr, fid(n))
                .await
                .unwrap()
                .found,
            "fragment {n}"
        );
    }
    // The store still works after all that, and the aborted record left no garbage behind.
    let ok = blocks(9, 2, 1024);
    client
        .put_fragment(
            &node.addr,
            header(5, 1024),
            futures::stream::iter(ok.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        collect(client.get_fragment(&node.addr, fid(5), 0, 0).await.unwrap())
            .await
            .unwrap(),
        ok
    );
    // Segment files hold exactly the committed bytes once the aborts (async) have run.
    let on_disk = || {
        std::fs::read_dir(node.store.dir().join("segments"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum::<u64>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while on_disk() != node.store.capacity().used_bytes {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} on disk vs {} committed",
            on_disk(),
            node.store.capacity().used_bytes
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_block_reaches_client_as_corrupt() {
    use std::os::unix::fs::FileExt;
    let node = start_node().await;
    let client = DataNodeClient::new();
    client
        .put_fragment(
            &node.addr,
            header(1, 4096),
            futures::stream::iter(blocks(3, 3, 4096)),
        )
        .await
        .unwrap();
    let loc = node.store.location(&fid(1)).unwrap();
    let path = segment_path(&node, &loc);
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(b"\xff\xfe", loc.block_offset(2) + 100)
        .unwrap();

    let got: Vec<_> = client
        .get_fragment(&node.addr, fid(1), 0, 0)
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(got.len(), 3);
    assert!(got[0].is_ok() && got[1].is_ok());
    assert!(
        matches!(got[2], Err(DataNodeError::Corrupt(_))),
        "{:?}",
        got[2]
    );
    // Quarantined by that read: it now looks missing everywhere.
    assert!(
        !client
            .stat_fragment(&node.addr, fid(1))
            .await
            .unwrap()
            .found
    );
    let listed = client
        .list_all_fragments(&node.addr, kura_datanode::PgFilter::All)
        .await
        .unwrap();
    assert!(listed.is_empty());

    // A block read as a call (`get_block`) meets the same check.
    let data = blocks(4, 3, 4096);
    client
        .put_fragment(
            &node.addr,
            header(2, 4096),
            futures::stream::iter(data.clone()),
        )
        .await
        .unwrap();
    let loc = node.store.location(&fid(2)).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(segment_path(&node, &loc))
        .unwrap();
    f.write_all_at(b"\xff\xfe", loc.block_offset(2) + 100)
        .unwrap();
    assert_eq!(
        client.get_block(&node.addr, fid(2), 1).await.unwrap(),
        data[1]
    );
    let via_call = client.get_block(&node.addr, fid(2), 2).await;
    assert!(
        matches!(via_call, Err(DataNodeError::Corrupt(_))),
        "{via_call:?}"
    );
    assert!(matches!(
        client.get_block(&node.addr, fid(2), 0).await,
        Err(DataNodeError::NotFound)
    ));

    // ScrubNow finds corruption nobody has read yet.
    for n in 2..5 {
        client
            .put_fragment(
                &node.addr,
                header(n, 4096),
                futures::stream::iter(blocks(n, 2, 4096)),
            )
            .await
            .unwrap();
    }
    let l3 = node.store.location(&fid(3)).unwrap();
    let p3 = segment_path(&node, &l3);
    std::fs::OpenOptions::new()
        .write(true)
        .open(p3)
        .unwrap()
        .write_all_at(b"\x00\x01\x02", l3.block_offset(1) + 50)
        .unwrap();
    let st = client
        .scrub_now(&node.addr, kura_datanode::PgFilter::All, 0)
        .await
        .unwrap();
    assert_eq!((st.fragments, st.corrupt, st.read_errors), (2, 1, 0));
    assert_eq!(st.bytes, 2 * 2 * 4096);
    assert!(matches!(
        client.get_fragment(&node.addr, fid(3), 0, 0).await.err(),
        Some(DataNodeError::NotFound)
    ));
    node.stop().await;
}

/// Just enough PD to register and heartbeat data nodes.
#[derive(Default)]
struct FakePd {
    next_id: AtomicU64,
    registered: Mutex<Vec<kura_proto::pd::DataNode>>,
    heartbeats: AtomicU64,
}

type R<T> = Result<Response<T>, Status>;

struct FakePdSvc(Arc<FakePd>);

#[tonic::async_trait]
impl Pd for FakePdSvc {
    async fn get_cluster(&self, _: Request<GetClusterRequest>) -> R<GetClusterResponse> {
        Err(Status::unimplemented(""))
    }
    async fn alloc_id(&self, _: Request<AllocIdRequest>) -> R<AllocIdResponse> {
        Err(Status::unimplemented(""))
    }
    async fn register_store(&self, _: Request<RegisterStoreRequest>) -> R<RegisterStoreResponse> {
        Err(Status::unimplemented(""))
    }
    async fn store_heartbeat(
        &self,
        _: Request<StoreHeartbeatRequest>,
    ) -> R<StoreHeartbeatResponse> {
        Err(Status::unimplemented(""))
    }
    async fn region_heartbeat(
        &self,
        _: Request<RegionHeartbeatRequest>,
    ) -> R<RegionHeartbeatResponse> {
        Err(Status::unimplemented(""))
    }
    async fn get_stores(&self, _: Request<GetStoresRequest>) -> R<GetStoresResponse> {
        Err(Status::unimplemented(""))
    }
    async fn get_region(&self, _: Request<GetRegionRequest>) -> R<GetRegionResponse> {
        Err(Status::unimplemented(""))
    }
    async fn get_region_by_id(&self, _: Request<GetRegionByIdRequest>) -> R<GetRegionResponse> {
        Err(Status::unimplemented(""))
    }
    async fn scan_regions(&self, _: Request<ScanRegionsRequest>) -> R<ScanRegionsResponse> {
        Err(Status::unimplemented(""))
    }
    async fn register_data_node(
        &self,
        r: Request<RegisterDataNodeRequest>,
    ) -> R<RegisterDataNodeResponse> {
        let node = r.into_inner().node.unwrap_or_default();
        let id = if node.id == 0 {
            self.0.next_id.fetch_add(1, Ordering::SeqCst) + 100
        } else {
            node.id
        };
        self.0.registered.lock().unwrap().push(node);
        Ok(Response::new(RegisterDataNodeResponse {
            error: None,
            node_id: id,
        }))
    }
    async fn data_node_heartbeat(
        &self,
        r: Request<DataNodeHeartbeatRequest>,
    ) -> R<DataNodeHeartbeatResponse> {
        let hb = r.into_inner();
        assert!(hb.node_id >= 100 && hb.capacity_bytes >= hb.used_bytes);
        self.0.heartbeats.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(DataNodeHeartbeatResponse { error: None }))
    }
    async fn get_placement(&self, _: Request<GetPlacementRequest>) -> R<GetPlacementResponse> {
        Err(Status::unimplemented(""))
    }

    async fn get_members(&self, _: Request<GetMembersRequest>) -> R<GetMembersResponse> {
        Err(Status::unimplemented(""))
    }

    async fn rate_share(&self, _: Request<RateShareRequest>) -> R<RateShareResponse> {
        Err(Status::unimplemented(""))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_registers_persists_id_and_heartbeats() {
    let pd = Arc::new(FakePd::default());
    let pd_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pd_addr = pd_listener.local_addr().unwrap().to_string();
    let pd_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PdServer::new(FakePdSvc(pd.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(pd_listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: "127.0.0.1:1".into(),
        status_advertise: "127.0.0.1:2".into(),
        pd_endpoints: vec![pd_addr],
        zone: "z1".into(),
        rack: "r1".into(),
        host: "h1".into(),
        segment_size: 1 << 20,
        min_free_bytes: 0,
        direct_io: Default::default(),
        maintenance: Default::default(),
        repair: kura_datanode::Repair {
            interval: std::time::Duration::ZERO,
            ..Default::default()
        },
    };
    for round in 0..2 {
        let ready = Arc::new(AtomicBool::new(false));
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(kura_datanode::run(cfg.clone(), ready.clone(), rx));
        let before = pd.heartbeats.load(Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !(ready.load(Ordering::SeqCst) && pd.heartbeats.load(Ordering::SeqCst) > before) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: not ready/heartbeating"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
        assert!(!ready.load(Ordering::SeqCst));
    }
    let reg = pd.registered.lock().unwrap().clone();
    assert_eq!(reg.len(), 2);
    assert_eq!(reg[0].id, 0, "first start asks for an id");
    assert_eq!(reg[1].id, 100, "restart re-registers with the persisted id");
    assert_eq!(reg[1].labels.as_ref().unwrap().zone, "z1");
    pd_server.abort();
}

#[tokio::test]
async fn run_without_pd_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: "127.0.0.1:1".into(),
        status_advertise: String::new(),
        pd_endpoints: vec!["127.0.0.1:9".into()],
        zone: "z1".into(),
        rack: String::new(),
        host: String::new(),
        segment_size: 1 << 20,
        min_free_bytes: 0,
        direct_io: Default::default(),
        maintenance: Default::default(),
        repair: kura_datanode::Repair {
            interval: std::time::Duration::ZERO,
            ..Default::default()
        },
    };
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(kura_datanode::run(cfg, ready.clone(), rx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ready.load(Ordering::SeqCst));
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_fragments_pages_through_everything_in_order() {
    use kura_datanode::PgFilter;
    let node = start_node().await;
    let client = DataNodeClient::new();
    // 2300 fragments (more than two default pages), pg = i % 4, written out of order.
    let n = 2300u32;
    let ids: Vec<FragmentId> = (0..n)
        .map(|i| FragmentId {
            data_id: Bytes::from((i.wrapping_mul(2654435761)).to_be_bytes().repeat(4)),
            shard: i % 3,
        })
        .collect();
    let s = node.store.clone();
    let ids2 = ids.clone();
    tokio::task::spawn_blocking(move || {
        for (i, id) in ids2.iter().enumerate() {
            let mut w = s
                .begin_put(FragmentHeader {
                    id: Some(id.clone()),
                    pg: i as u32 % 4,
                    block_size: 16,
                    ..Default::default()
                })
                .unwrap();
            w.append_block(
                bytes::Bytes::from_static(b"0123456789"),
                crc32c(b"0123456789"),
            )
            .unwrap();
            w.commit().unwrap();
        }
    })
    .await
    .unwrap();
    let key = |id: &FragmentId| (id.data_id.clone(), id.shard);

    let all = client
        .list_all_fragments(&node.addr, PgFilter::All)
        .await
        .unwrap();
    let got: Vec<_> = all
        .iter()
        .map(|e| key(e.header.as_ref().unwrap().id.as_ref().unwrap()))
        .collect();
    let mut want: Vec<_> = ids.iter().map(key).collect();
    want.sort();
    assert_eq!(got, want, "complete, ordered, no duplicates");
    assert!(all.iter().all(|e| e.length == 10 && e.blocks == 1));

    // One placement group, with a small explicit page size.
    let mut pg2 = Vec::new();
    let mut after = None;
    loop {
        let page = client
            .list_fragments(&node.addr, PgFilter::Pg(2), after, 7)
            .await
            .unwrap();
        assert!(page.fragments.len() <= 7);
        for e in &page.fragments {
            assert_eq!(e.header.as_ref().unwrap().pg, 2);
        }
        after = page
            .fragments
            .last()
            .and_then(|e| e.header.as_ref().unwrap().id.clone());
        pg2.extend(page.fragments);
        if !page.more {
            break;
        }
    }
    let mut want2: Vec<_> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 == 2)
        .map(|(_, id)| key(id))
        .collect();
    want2.sort();
    let got2: Vec<_> = pg2
        .iter()
        .map(|e| key(e.header.as_ref().unwrap().id.as_ref().unwrap()))
        .collect();
    assert_eq!(got2, want2);

    // Deleted fragments disappear from the listing.
    assert!(client
        .delete_fragment(&node.addr, ids[2].clone())
        .await
        .unwrap());
    let page = client
        .list_fragments(&node.addr, PgFilter::Pg(2), None, 5000)
        .await
        .unwrap();
    assert_eq!(page.fragments.len(), want2.len() - 1);
    assert!(!page.more);
    node.stop().await;
}

/// A sealed put commits only on the seal: a stream that just ends (its writer
/// gave up midway) stores nothing, whatever was sent before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsealed_put_stores_nothing() {
    let node = start_node().await;
    let client = DataNodeClient::new();
    let data = blocks(9, 3, 1024);
    let unsealed = client
        .put_fragment_sealed(
            &node.addr,
            header(7, 1024),
            futures::stream::iter(data.clone()),
        )
        .await;
    assert!(unsealed.is_err(), "an unsealed put must fail");
    assert!(
        !client
            .stat_fragment(&node.addr, fid(7))
            .await
            .unwrap()
            .found
    );

    let mut sealed = data.clone();
    sealed.push(Bytes::new());
    let r = client
        .put_fragment_sealed(&node.addr, header(7, 1024), futures::stream::iter(sealed))
        .await
        .unwrap();
    assert_eq!((r.length, r.blocks), (3 * 1024, 3));
    let back = collect(client.get_fragment(&node.addr, fid(7), 0, 0).await.unwrap())
        .await
        .unwrap();
    assert_eq!(back, data);
}

/// A metric of this process's registry (the node runs in the test's process).
fn metric(name: &str) -> f64 {
    prometheus::gather()
        .iter()
        .find(|f| f.name() == name)
        .map(|f| {
            let m = &f.get_metric()[0];
            match f.get_field_type() {
                prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                _ => m.get_gauge().get_value(),
            }
        })
        .unwrap_or(0.0)
}

/// Whole fragments go as calls on one stream per node (`calls`): many at
/// once share it, a refused one leaves it usable, a block too large for it
/// goes as a call of its own, the node's stop ends it (its graceful shutdown
/// is not held open), and the next put after a restart opens another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_fragments_share_one_stream_and_reopen_it_after_a_restart() {
    const BS: usize = 16 << 10;
    let node = start_node().await;
    let addr = node.addr.clone();
    let client = DataNodeClient::new();
    let data = blocks(7, 40, BS);
    let puts = data.iter().enumerate().map(|(i, b)| {
        let (client, addr, b) = (client.clone(), addr.clone(), b.clone());
        async move {
            client
                .put_whole_fragment(&addr, header(i as u8, BS as u32), b)
                .await
        }
    });
    for r in futures::future::join_all(puts).await {
        let r = r.unwrap();
        assert_eq!((r.length, r.blocks), (BS as u64, 1));
    }
    assert_eq!(metric("kura_datanode_streamed_fragment_puts_total"), 40.0);
    assert_eq!(metric("kura_datanode_call_streams"), 1.0);
    for (i, b) in data.iter().enumerate() {
        let got = collect(
            client
                .get_fragment(&addr, fid(i as u8), 0, 0)
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(got, vec![b.clone()], "fragment {i}");
    }

    // Read back as calls on the node's block stream too (a second stream),
    // each block verified; a block past the end or of an unknown fragment
    // is refused in its answer, and the stream takes the next call.
    let reads = data.iter().enumerate().map(|(i, _)| {
        let (client, addr) = (client.clone(), addr.clone());
        async move { client.get_block(&addr, fid(i as u8), 0).await }
    });
    for (i, got) in futures::future::join_all(reads)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(got.unwrap(), data[i], "block of fragment {i}");
    }
    assert_eq!(metric("kura_datanode_streamed_block_gets_total"), 40.0);
    assert_eq!(metric("kura_datanode_call_streams"), 2.0);
    let past = client.get_block(&addr, fid(0), 1).await;
    assert!(
        matches!(past, Err(DataNodeError::InvalidArgument(_))),
        "{past:?}"
    );
    let unknown = client.get_block(&addr, fid(200), 0).await;
    assert!(
        matches!(unknown, Err(DataNodeError::NotFound)),
        "{unknown:?}"
    );
    assert_eq!(client.get_block(&addr, fid(1), 0).await.unwrap(), data[1]);

    // Refused (a block larger than the header's block size): the error comes
    // back as the call's answer, and the stream takes the next call.
    let refused = client
        .put_whole_fragment(&addr, header(100, 1024), blocks(1, 1, 2048).remove(0))
        .await;
    assert!(
        matches!(refused, Err(DataNodeError::InvalidArgument(_))),
        "{refused:?}"
    );
    assert!(!client.stat_fragment(&addr, fid(100)).await.unwrap().found);
    let ok = client
        .put_whole_fragment(&addr, header(101, BS as u32), data[0].clone())
        .await
        .unwrap();
    assert_eq!(ok.length, BS as u64);
    assert_eq!(metric("kura_datanode_streamed_fragment_puts_total"), 42.0);

    // Too large for the stream: a PutFragment call of its own.
    let big = blocks(3, 1, MIB).remove(0);
    let r = client
        .put_whole_fragment(&addr, header(102, MIB as u32), big.clone())
        .await
        .unwrap();
    assert_eq!(r.length, MIB as u64);
    assert_eq!(metric("kura_datanode_streamed_fragment_puts_total"), 42.0);
    let got = collect(client.get_fragment(&addr, fid(102), 0, 0).await.unwrap())
        .await
        .unwrap();
    assert_eq!(got, vec![big]);

    // Stopping the node ends the stream it serves, with the client still holding it.
    tokio::time::timeout(Duration::from_secs(10), node.stop())
        .await
        .expect("the node stops with a put stream open");
    assert_eq!(metric("kura_datanode_call_streams"), 0.0);
    let down = client
        .put_whole_fragment(&addr, header(103, BS as u32), data[1].clone())
        .await;
    assert!(down.as_ref().is_err_and(|e| e.is_retryable()), "{down:?}");

    // Back on the same address: the next put opens a new stream.
    let node = start_node_on(&addr).await;
    let r = client
        .put_whole_fragment(&addr, header(104, BS as u32), data[2].clone())
        .await
        .unwrap();
    assert_eq!(r.length, BS as u64);
    assert_eq!(metric("kura_datanode_call_streams"), 1.0);
    assert_eq!(metric("kura_datanode_streamed_fragment_puts_total"), 43.0);
    assert_eq!(client.get_block(&addr, fid(104), 0).await.unwrap(), data[2]);
    assert_eq!(metric("kura_datanode_call_streams"), 2.0);
    let got = collect(client.get_fragment(&addr, fid(104), 0, 0).await.unwrap())
        .await
        .unwrap();
    assert_eq!(got, vec![data[2].clone()]);
    drop(client);
    node.stop().await;
}
