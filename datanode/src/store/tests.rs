//! Store tests: real files in a temp dir, no runtime.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use super::*;

const BS: u32 = 1024;

fn opts() -> StoreOptions {
    StoreOptions {
        segment_size: 256 << 20,
        min_free_bytes: 0,
    }
}

fn fid(n: u32) -> FragmentId {
    FragmentId {
        data_id: Bytes::from(vec![n as u8; 16]),
        shard: n % 6,
    }
}

fn header(n: u32) -> FragmentHeader {
    FragmentHeader {
        id: Some(fid(n)),
        bucket_id: 7,
        object_key: format!("key-{n}"),
        version: 1,
        block_size: BS,
        ..Default::default()
    }
}

/// Deterministic content: `len` bytes seeded by `seed`.
fn body(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed * 7) as u8)
        .collect()
}

fn put(store: &Arc<Store>, n: u32, data: &[u8]) -> PutOutcome {
    let mut w = store.begin_put(header(n)).unwrap();
    for chunk in data.chunks(BS as usize) {
        w.append_block(chunk, crc32c(chunk)).unwrap();
    }
    w.commit().unwrap()
}

fn read_all(store: &Store, n: u32) -> Result<Vec<u8>, StoreError> {
    let loc = store.location(&fid(n)).ok_or(StoreError::NotFound)?;
    let mut out = Vec::new();
    for i in 0..loc.blocks {
        out.extend_from_slice(&store.read_block(&loc, i)?.0);
    }
    Ok(out)
}

fn segment_path(store: &Store, id: u64) -> PathBuf {
    store.seg_dir.join(segment_file_name(id))
}

#[test]
fn put_read_stat_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = body(1, 2 * BS as usize + 100);
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        assert_eq!(
            put(&s, 1, &data),
            PutOutcome {
                length: data.len() as u64,
                blocks: 3
            }
        );
        assert_eq!(
            put(&s, 2, &[]),
            PutOutcome {
                length: 0,
                blocks: 0
            }
        );
        assert_eq!(read_all(&s, 1).unwrap(), data);
        let loc = s.location(&fid(1)).unwrap();
        assert_eq!(loc.header.object_key, "key-1");
        assert_eq!(s.read_block(&loc, 2).unwrap().0.len(), 100);
    }
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(read_all(&s, 1).unwrap(), data);
    assert_eq!(s.location(&fid(2)).unwrap().blocks, 0);
    assert_eq!(s.live_fragments(), 2);
}

#[test]
fn torn_tail_is_truncated_and_earlier_fragments_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (body(1, 3 * BS as usize), body(2, 3 * BS as usize));
    let (seg, cut) = {
        let s = Store::open(dir.path(), opts()).unwrap();
        put(&s, 1, &a);
        put(&s, 2, &b);
        let la = s.location(&fid(1)).unwrap();
        let lb = s.location(&fid(2)).unwrap();
        assert_eq!(
            la.segment, lb.segment,
            "sequential puts share the active segment"
        );
        assert_eq!(lb.record_offset, la.record_offset + la.record_len);
        // Cut B in the middle of its second block, as a crash would.
        (la.segment, lb.block_offset(1) + 100)
    };
    let path = dir.path().join("segments").join(segment_file_name(seg));
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(read_all(&s, 1).unwrap(), a);
    assert!(s.location(&fid(2)).is_none());
    let la = s.location(&fid(1)).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        la.record_offset + la.record_len
    );
    // The store keeps working, and a second restart is clean.
    put(&s, 3, &b);
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(read_all(&s, 3).unwrap(), b);
    assert_eq!(read_all(&s, 1).unwrap(), a);
}

#[test]
fn corruption_inside_a_segment_does_not_truncate_later_records() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, a_off) = {
        let s = Store::open(dir.path(), opts()).unwrap();
        for n in 1..=3 {
            put(&s, n, &body(n, 2 * BS as usize));
        }
        let la = s.location(&fid(1)).unwrap();
        (la.segment, la.record_offset)
    };
    let path = dir.path().join("segments").join(segment_file_name(seg));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let len_before = f.metadata().unwrap().len();
    f.write_all_at(b"XXXX", a_off).unwrap(); // smash A's record magic

    let s = Store::open(dir.path(), opts()).unwrap();
    assert!(s.location(&fid(1)).is_none());
    assert_eq!(read_all(&s, 2).unwrap(), body(2, 2 * BS as usize));
    assert_eq!(read_all(&s, 3).unwrap(), body(3, 2 * BS as usize));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len_before,
        "nothing truncated"
    );
}

#[test]
fn flipped_byte_is_detected_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    put(&s, 1, &body(1, 3 * BS as usize));
    let loc = s.location(&fid(1)).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment_path(&s, loc.segment))
        .unwrap();
    let off = loc.block_offset(1) + BLOCK_HEADER_LEN + 10;
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, off).unwrap();
    f.write_all_at(&[byte[0] ^ 0x01], off).unwrap();

    assert!(s.read_block(&loc, 0).is_ok());
    assert!(matches!(s.read_block(&loc, 1), Err(StoreError::Corrupt(_))));
    assert!(s.read_block(&loc, 2).is_ok());
    assert!(matches!(read_all(&s, 1), Err(StoreError::Corrupt(_))));
}

#[test]
fn tombstone_survives_restart_even_in_an_older_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        // Hold segment 1 with an open writer so fragment 2 lands in segment 2 ...
        let mut w = s.begin_put(header(1)).unwrap();
        put(&s, 2, &body(2, 100));
        w.append_block(&[1, 2, 3], crc32c(&[1, 2, 3])).unwrap();
        w.commit().unwrap();
        let l2 = s.location(&fid(2)).unwrap();
        let l1 = s.location(&fid(1)).unwrap();
        assert!(l1.segment < l2.segment);
        // ... then its tombstone goes to segment 1 (the most recently released).
        assert!(s.delete(&fid(2)).unwrap());
        assert!(!s.delete(&fid(2)).unwrap());
        assert!(s.location(&fid(2)).is_none());
        assert!(s.dead_bytes(l2.segment) > 0);
    }
    let s = Store::open(dir.path(), opts()).unwrap();
    assert!(
        s.location(&fid(2)).is_none(),
        "the tombstone's higher seq wins over scan order"
    );
    assert_eq!(read_all(&s, 1).unwrap(), vec![1, 2, 3]);
    assert!(!s.delete(&fid(2)).unwrap());
}

#[test]
fn later_put_supersedes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        put(&s, 1, &body(1, 50));
        put(&s, 1, &body(9, 70));
        assert_eq!(read_all(&s, 1).unwrap(), body(9, 70));
    }
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(read_all(&s, 1).unwrap(), body(9, 70));
    assert_eq!(s.live_fragments(), 1);
}

#[test]
fn concurrent_puts_do_not_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    std::thread::scope(|scope| {
        for t in 0..8u32 {
            let s = s.clone();
            scope.spawn(move || {
                for k in 0..6u32 {
                    let n = t * 10 + k;
                    let mut w = s.begin_put(header(n)).unwrap();
                    let data = body(n, (n as usize % 4 + 1) * BS as usize - 7);
                    for chunk in data.chunks(BS as usize) {
                        w.append_block(chunk, crc32c(chunk)).unwrap();
                        std::thread::yield_now();
                    }
                    w.commit().unwrap();
                }
            });
        }
    });
    assert!(
        s.segment_count() > 1,
        "concurrent writers used several segments"
    );
    let check = |s: &Store| {
        for t in 0..8u32 {
            for k in 0..6u32 {
                let n = t * 10 + k;
                assert_eq!(
                    read_all(s, n).unwrap(),
                    body(n, (n as usize % 4 + 1) * BS as usize - 7)
                );
            }
        }
    };
    check(&s);
    drop(s);
    check(&Store::open(dir.path(), opts()).unwrap());
}

#[test]
fn aborted_write_is_truncated_and_the_segment_reused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    put(&s, 1, &body(1, 10));
    let l1 = s.location(&fid(1)).unwrap();
    let path = segment_path(&s, l1.segment);
    let committed = std::fs::metadata(&path).unwrap().len();
    let mut w = s.begin_put(header(2)).unwrap();
    let blk = body(2, BS as usize);
    w.append_block(&blk, crc32c(&blk)).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > committed);
    drop(w); // no runtime here: aborts inline
    assert_eq!(std::fs::metadata(&path).unwrap().len(), committed);
    put(&s, 3, &body(3, 10));
    assert_eq!(s.location(&fid(3)).unwrap().segment, l1.segment);
    assert!(s.location(&fid(2)).is_none());
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(read_all(&s, 3).unwrap(), body(3, 10));
}

#[test]
fn bad_blocks_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let full = body(1, BS as usize);
    let mut w = s.begin_put(header(1)).unwrap();
    assert!(matches!(
        w.append_block(&full, crc32c(&full) ^ 1),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        w.append_block(&[], 0),
        Err(StoreError::InvalidArgument(_))
    ));
    let big = body(1, BS as usize + 1);
    assert!(matches!(
        w.append_block(&big, crc32c(&big)),
        Err(StoreError::InvalidArgument(_))
    ));
    w.append_block(&full[..10], crc32c(&full[..10])).unwrap();
    assert!(matches!(
        w.append_block(&full, crc32c(&full)),
        Err(StoreError::InvalidArgument(_))
    ));
    drop(w);
    let bad_header = FragmentHeader {
        block_size: 0,
        ..header(2)
    };
    assert!(matches!(
        s.begin_put(bad_header),
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        s.begin_put(FragmentHeader {
            id: None,
            ..header(2)
        }),
        Err(StoreError::InvalidArgument(_))
    ));
}

#[test]
fn full_disk_refuses_puts_but_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        put(&s, 1, &body(1, 10));
    }
    let s = Store::open(
        dir.path(),
        StoreOptions {
            min_free_bytes: u64::MAX,
            ..opts()
        },
    )
    .unwrap();
    assert!(s.capacity().read_only);
    assert!(matches!(s.begin_put(header(2)), Err(StoreError::Full(_))));
    assert_eq!(read_all(&s, 1).unwrap(), body(1, 10));
    let cap = Store::open(tempfile::tempdir().unwrap().path(), opts())
        .unwrap()
        .refresh_capacity()
        .unwrap();
    assert!(!cap.read_only && cap.capacity_bytes >= cap.used_bytes);
}

#[test]
fn segments_roll_at_record_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        StoreOptions {
            segment_size: 2 * BS as u64,
            ..opts()
        },
    )
    .unwrap();
    for n in 0..4 {
        put(&s, n, &body(n, 3 * BS as usize));
    }
    assert_eq!(
        s.segment_count(),
        4,
        "each record overflows the segment size, so each gets its own"
    );
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    for n in 0..4 {
        assert_eq!(read_all(&s, n).unwrap(), body(n, 3 * BS as usize));
    }
}

#[test]
fn identity_is_required_once_segments_exist() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        put(&s, 1, &body(1, 10));
        s.set_node_id(42).unwrap();
    }
    assert_eq!(Store::open(dir.path(), opts()).unwrap().node_id(), 42);
    std::fs::remove_file(identity::identity_path(dir.path())).unwrap();
    assert!(matches!(
        Store::open(dir.path(), opts()),
        Err(StoreError::Identity(_))
    ));
}

#[test]
fn empty_segments_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        let w = s.begin_put(header(1)).unwrap();
        drop(w); // segment 1 now holds only its header
        assert_eq!(s.segment_count(), 1);
    }
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.segment_count(), 0);
    put(&s, 1, &body(1, 10));
    assert_eq!(
        s.location(&fid(1)).unwrap().segment,
        2,
        "segment ids are never reused"
    );
}
