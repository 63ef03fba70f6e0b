use std::time::{Duration, Instant};

use kura_proto::common::{Peer as PeerMeta, Region};
use kura_proto::metashard::Cf;
use raft::Storage;

use super::*;
use crate::fsm::Router;
use crate::peer::storage::{PeerStorage, INIT_LOG_INDEX};

fn region() -> Region {
    Region {
        id: 3,
        peers: vec![PeerMeta {
            id: 7,
            store_id: 1,
            is_learner: false,
        }],
        ..Default::default()
    }
}

struct Store {
    engine: Engine,
    snap: Arc<SnapManager>,
    rx: crate::fsm::Mailbox,
}

fn store(dir: &Path) -> Store {
    let engine = Engine::open(&dir.join("db")).unwrap();
    let (router, rx) = Router::channel();
    let snap = SnapManager::start(engine.clone(), snap_dir_of(&engine), router).unwrap();
    Store { engine, snap, rx }
}

/// Asks raft's storage for a snapshot until the worker has made it.
fn wait_snapshot(s: &PeerStorage) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match s.snapshot(0, 8) {
            Ok(snap) => return snap,
            Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "no snapshot generated");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

#[test]
fn generated_off_thread_received_and_applied_by_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let a = store(&dir.path().join("a"));
    let mut wb = a.engine.batch();
    let mut s = PeerStorage::create(a.engine.clone(), region(), 7, true, &mut wb);
    s.set_snap_manager(a.snap.clone());
    wb.put_data(Cf::Meta, b"k1", b"v1");
    wb.put_data(Cf::Gc, b"k2", b"v2");
    a.engine.write(wb, true).unwrap();
    assert!(
        matches!(
            s.snapshot(0, 8),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ),
        "never built on the caller's thread"
    );
    let snap = wait_snapshot(&s);
    assert_eq!(snap.get_metadata().index, INIT_LOG_INDEX);
    assert_eq!(snap.get_metadata().get_conf_state().voters, vec![7]);
    let desc = descriptor_of(&snap).unwrap();
    assert_eq!(desc.keys, 2);
    assert!(snap.data.len() < 100, "metadata only: {}", snap.data.len());

    // "Send" it: the receiver checks size and checksum.
    let b = store(&dir.path().join("b"));
    let bytes = std::fs::read(a.snap.gen_path(&desc)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut bad = bytes.clone();
        bad[12] ^= 1;
        let mut r = b.snap.receiver(&desc).await.unwrap();
        r.write(&bad).await.unwrap();
        assert!(matches!(
            r.finish().await,
            Err(SnapError::Refused("mismatch", _))
        ));
        assert!(!b.snap.has_received(&desc), "a corrupt file is not kept");
        // A claimed size over the cap is refused before a file exists.
        let mut huge = desc.clone();
        huge.size = b.snap.max_bytes() + 1;
        assert!(matches!(
            b.snap.receiver(&huge).await,
            Err(SnapError::Refused("too_large", _))
        ));
        // More chunks than the size needs (a trickle holding the slot).
        let mut r = b.snap.receiver(&desc).await.unwrap();
        r.write(&[]).await.unwrap();
        r.write(&[]).await.unwrap();
        r.write(&bytes[..1]).await.unwrap();
        assert!(matches!(
            r.write(&bytes[1..2]).await,
            Err(SnapError::Refused("chunk", _))
        ));
        drop(r);
        let mut r = b.snap.receiver(&desc).await.unwrap();
        r.write(&bytes[..10]).await.unwrap();
        r.write(&bytes[10..]).await.unwrap();
        r.finish().await.unwrap();
    });
    assert!(b.snap.has_received(&desc));
    // The same file name with another descriptor (a forged MsgSnapshot
    // naming this transfer's file) is not a received snapshot.
    let mut other = desc.clone();
    other.crc32c ^= 1;
    assert!(!b.snap.has_received(&other));
    assert_eq!(crate::snap::max_chunks(desc.size), 3, "{}", desc.size);
    assert_eq!(crate::snap::max_snapshot_bytes(96 << 20), 1 << 30);
    assert_eq!(crate::snap::max_snapshot_bytes(1 << 30), 10 << 30);
    assert_eq!(crate::snap::max_snapshot_bytes(0), 64 << 30);

    let mut wb = b.engine.batch();
    wb.put_data(Cf::Meta, b"stale", b"x");
    let mut t = PeerStorage::create(b.engine.clone(), region(), 8, false, &mut wb);
    b.engine.write(wb, true).unwrap();
    let mut wb = b.engine.batch();
    let (_, state) = t.apply_snapshot(&snap, &mut wb).unwrap();
    b.engine.write(wb, true).unwrap();
    assert!(t.is_initialized());
    assert!(t.applying_snapshot().is_some());
    assert_eq!(t.applied_index(), INIT_LOG_INDEX);
    assert_eq!(t.first_index().unwrap(), INIT_LOG_INDEX + 1);
    // Restarted now, the peer knows it must redo the data.
    let back = PeerStorage::load(b.engine.clone(), 3).unwrap().unwrap();
    assert_eq!(back.applying_snapshot(), Some(&state));

    b.snap.schedule_apply(3, state);
    match b.rx.recv_timeout(Duration::from_secs(30)).unwrap() {
        StoreMsg::SnapshotApplied {
            region_id,
            index,
            ok,
        } => {
            assert_eq!((region_id, index, ok), (3, INIT_LOG_INDEX, true))
        }
        _ => panic!("unexpected message"),
    }
    assert!(t.finish_snapshot_apply(INIT_LOG_INDEX));
    let e2 = &b.engine;
    assert_eq!(
        e2.get_data(Cf::Meta, b"k1").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(
        e2.get_data(Cf::Gc, b"k2").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    assert_eq!(
        e2.get_data(Cf::Meta, b"stale").unwrap(),
        None,
        "old data replaced"
    );
    assert!(PeerStorage::load(e2.clone(), 3)
        .unwrap()
        .unwrap()
        .applying_snapshot()
        .is_none());
    assert!(!b.snap.has_received(&desc), "applied file removed");
    a.snap.stop();
    b.snap.stop();
}

#[test]
fn an_interrupted_apply_is_redone_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let b = store(dir.path());
    // Over two apply batches of data.
    let n = 2 * APPLY_BATCH_BYTES / 4096 + 50;
    let d = SnapshotDescriptor {
        region: Some(region()),
        index: 20,
        term: 6,
        ..Default::default()
    };
    let mut w = SnapWriter::create(&b.snap.rcv_path(&d)).unwrap();
    for i in 0..n {
        w.put(Cf::Meta, format!("k{i:06}").as_bytes(), &value(i, 4096))
            .unwrap();
    }
    let (size, crc, keys) = w.finish().unwrap();
    let d = SnapshotDescriptor {
        size,
        crc32c: crc,
        keys,
        ..d
    };
    let mut wb = b.engine.batch();
    wb.put_data(Cf::Meta, b"k000001", b"old");
    wb.put_data(Cf::Mpu, b"zz", b"old");
    let state = SnapshotApplyState {
        descriptor: Some(d.clone()),
        old_region: None,
    };
    wb.put_raft_msg(&local::snapshot_apply_key(3), &state);
    b.engine.write(wb, true).unwrap();

    let err = apply_file(&b.engine, b.snap.dir(), 3, &state, Some(1)).unwrap_err();
    assert!(matches!(err, SnapError::Stopped));
    assert!(
        b.engine
            .get_raft(&local::snapshot_apply_key(3))
            .unwrap()
            .is_some(),
        "the marker stays until the last batch"
    );
    assert_eq!(b.engine.get_data(Cf::Mpu, b"zz").unwrap(), None);

    apply_file(&b.engine, b.snap.dir(), 3, &state, None).unwrap();
    assert!(b
        .engine
        .get_raft(&local::snapshot_apply_key(3))
        .unwrap()
        .is_none());
    let got = b
        .engine
        .scan_data(Cf::Meta, b"", b"", n + 10, false)
        .unwrap();
    assert_eq!(got.len(), n);
    for (i, (k, v)) in got.iter().enumerate() {
        assert_eq!(k, format!("k{i:06}").as_bytes());
        assert_eq!(v, &value(i, 4096));
    }
    assert!(!b.snap.has_received(&d));
    b.snap.stop();
}

#[test]
fn start_keeps_only_files_a_pending_apply_needs() {
    let dir = tempfile::tempdir().unwrap();
    let b = store(dir.path());
    let d = |index| SnapshotDescriptor {
        region: Some(region()),
        index,
        term: 1,
        ..Default::default()
    };
    for p in [
        b.snap.rcv_path(&d(1)),
        b.snap.rcv_path(&d(2)),
        b.snap.gen_path(&d(3)),
        b.snap.dir().join("x.tmp"),
    ] {
        std::fs::write(p, b"x").unwrap();
    }
    b.snap.gc_on_start(&[d(2)]);
    let left: Vec<_> = std::fs::read_dir(b.snap.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, vec![b.snap.rcv_path(&d(2))]);
    b.snap.stop();
}
