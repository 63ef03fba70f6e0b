//! Store tests: real files in a temp dir, no runtime.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use super::*;

const BS: u32 = 1024;

fn opts() -> StoreOptions {
    StoreOptions {
        segment_size: 256 << 20,
        min_free_bytes: 0,
        direct_io: DirectIo::Auto,
    }
}

/// End of a record's footer (`record_len` also covers the padding after it).
fn logical_end(l: &Location) -> u64 {
    l.first_block_offset + l.blocks as u64 * BLOCK_HEADER_LEN + l.length + FOOTER_LEN as u64
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

/// Opens with group commit off: every record takes a segment of its own (the pre-0039
/// write path, still used by records above `GROUP_COMMIT_MAX_RECORD`).
fn open_exclusive(dir: &Path, o: StoreOptions) -> Arc<Store> {
    let s = Store::open(dir, o).unwrap();
    s.set_group_commit_max_record(0);
    s
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
    // The read quarantined the fragment: it now looks missing, so it gets healed.
    assert!(s.location(&fid(1)).is_none());
    assert!(matches!(read_all(&s, 1), Err(StoreError::NotFound)));
    assert_eq!(s.live_fragments(), 0);
}

/// Flips one payload byte of block `block` of fragment `n` on disk.
fn corrupt_block(s: &Store, n: u32, block: u32) {
    let loc = s.location(&fid(n)).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment_path(s, loc.segment))
        .unwrap();
    let off = loc.block_offset(block) + BLOCK_HEADER_LEN + 3;
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, off).unwrap();
    f.write_all_at(&[byte[0] ^ 0x40], off).unwrap();
}

#[test]
fn quarantine_is_durable_and_a_rebuilt_copy_wins() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        put(&s, 1, &body(1, 3 * BS as usize));
        put(&s, 2, &body(2, 3 * BS as usize));
        corrupt_block(&s, 1, 2);
        assert!(matches!(read_all(&s, 1), Err(StoreError::Corrupt(_))));
        assert!(s.location(&fid(1)).is_none());
        // A second reader holding the old location finds it quarantined already.
        assert_eq!(read_all(&s, 2).unwrap(), body(2, 3 * BS as usize));
    }
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        assert!(s.location(&fid(1)).is_none(), "quarantine survives restart");
        assert_eq!(read_all(&s, 2).unwrap(), body(2, 3 * BS as usize));
        // The healer writes the fragment back.
        put(&s, 1, &body(1, 3 * BS as usize));
        assert_eq!(read_all(&s, 1).unwrap(), body(1, 3 * BS as usize));
    }
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(read_all(&s, 1).unwrap(), body(1, 3 * BS as usize));
    assert_eq!(s.live_fragments(), 2);
}

#[test]
fn quarantine_spares_a_newer_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    put(&s, 1, &body(1, 2 * BS as usize));
    let old = s.location(&fid(1)).unwrap();
    corrupt_block(&s, 1, 0);
    // Rebuilt before anyone read the bad copy.
    put(&s, 1, &body(5, 2 * BS as usize));
    assert!(matches!(s.read_block(&old, 0), Err(StoreError::Corrupt(_))));
    assert!(!s.quarantine(&old, "test"));
    assert_eq!(read_all(&s, 1).unwrap(), body(5, 2 * BS as usize));
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(read_all(&s, 1).unwrap(), body(5, 2 * BS as usize));
}

#[test]
fn scrub_finds_and_quarantines_corrupt_fragments() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let mut total = 0;
    for n in 0..40 {
        let len = (n as usize % 5) * BS as usize + n as usize;
        total += len as u64;
        let mut h = header(n);
        h.pg = n % 2;
        let mut w = s.begin_put(h).unwrap();
        for chunk in body(n, len).chunks(BS as usize) {
            w.append_block(chunk, crc32c(chunk)).unwrap();
        }
        w.commit().unwrap();
    }
    let clean = s.scrub(None, &mut scrub::Pacer::unlimited(), &mut |_, _| {});
    assert_eq!(
        clean,
        scrub::ScrubStats {
            fragments: 40,
            bytes: total,
            corrupt: 0,
            read_errors: 0,
            completed: true
        }
    );
    corrupt_block(&s, 7, 1); // pg 1
    corrupt_block(&s, 13, 0); // pg 1
    corrupt_block(&s, 22, 1); // pg 0
    let pg1 = s.scrub(Some(1), &mut scrub::Pacer::unlimited(), &mut |_, _| {});
    assert_eq!((pg1.fragments, pg1.corrupt), (18, 2));
    assert!(s.location(&fid(7)).is_none() && s.location(&fid(13)).is_none());
    assert!(
        s.location(&fid(22)).is_some(),
        "other placement groups untouched"
    );
    let mut seen = 0;
    let all = s.scrub(None, &mut scrub::Pacer::unlimited(), &mut |v, t| {
        assert!(v <= t);
        seen = v;
    });
    assert_eq!((all.fragments, all.corrupt, seen), (37, 1, 38));
    assert_eq!(s.live_fragments(), 37);
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.live_fragments(), 37);
    let again = s.scrub(None, &mut scrub::Pacer::unlimited(), &mut |_, _| {});
    assert_eq!((again.fragments, again.corrupt), (37, 0));
}

#[test]
fn truncated_segment_quarantines_what_it_cut() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    put(&s, 1, &body(1, 2 * BS as usize));
    put(&s, 2, &body(2, 2 * BS as usize));
    let l2 = s.location(&fid(2)).unwrap();
    OpenOptions::new()
        .write(true)
        .open(segment_path(&s, l2.segment))
        .unwrap()
        .set_len(l2.block_offset(1) + 5)
        .unwrap();
    let st = s.scrub(None, &mut scrub::Pacer::unlimited(), &mut |_, _| {});
    assert_eq!((st.fragments, st.corrupt), (1, 1));
    assert!(s.location(&fid(2)).is_none());
    assert_eq!(read_all(&s, 1).unwrap(), body(1, 2 * BS as usize));
}

#[test]
fn pacer_limits_rate_and_stops() {
    let mut p = scrub::Pacer::new(10 << 20, Box::new(|| false));
    let t = Instant::now();
    for _ in 0..3 {
        assert!(p.consume(1 << 20));
    }
    // 2 MiB must have been paid for before the third MiB: >= 200 ms at 10 MiB/s.
    assert!(t.elapsed() >= std::time::Duration::from_millis(190));
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let mut p = scrub::Pacer::new(1, Box::new(move || s2.load(Ordering::Relaxed)));
    assert!(p.consume(1 << 20));
    stop.store(true, Ordering::Relaxed);
    assert!(!p.consume(1));
}

#[test]
fn tombstone_survives_restart_even_in_an_older_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open_exclusive(dir.path(), opts());
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
    for group in [false, true] {
        concurrent_puts(group);
    }
}

fn concurrent_puts(group: bool) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    if !group {
        s.set_group_commit_max_record(0);
    }
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
    if group {
        assert_eq!(s.segment_count(), 1, "small records share one segment");
        assert_eq!(s.commit_stats().group_records, 48);
    } else {
        assert!(
            s.segment_count() > 1,
            "concurrent writers used several segments"
        );
        assert_eq!(s.commit_stats().group_records, 0);
    }
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
    let s = open_exclusive(dir.path(), opts());
    put(&s, 1, &body(1, 10));
    let l1 = s.location(&fid(1)).unwrap();
    let path = segment_path(&s, l1.segment);
    let committed = std::fs::metadata(&path).unwrap().len();
    let mut w = s.begin_put(header(2)).unwrap();
    let blk = body(2, BS as usize);
    // Past one staging buffer, so part of the record is on disk (decision 0042).
    for _ in 0..direct::STAGING_LEN / BS as usize + 1 {
        w.append_block(&blk, crc32c(&blk)).unwrap();
    }
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
        let s = open_exclusive(dir.path(), opts());
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

// ---- compaction ---------------------------------------------------------------------

/// Every record seals its segment: one record per segment.
fn one_record_per_segment() -> StoreOptions {
    StoreOptions {
        segment_size: 1,
        ..opts()
    }
}

fn live_set(s: &Store) -> Vec<(u32, Vec<u8>)> {
    let (locs, more) = s.list_fragments(None, None, usize::MAX);
    assert!(!more);
    let mut out: Vec<_> = locs
        .iter()
        .map(|l| {
            let n = l.header.object_key["key-".len()..].parse::<u32>().unwrap();
            let mut data = Vec::new();
            for i in 0..l.blocks {
                data.extend_from_slice(&s.read_block(l, i).unwrap().0);
            }
            (n, data)
        })
        .collect();
    out.sort();
    out
}

fn segment_ids(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .filter_map(|e| parse_segment_file_name(e.unwrap().file_name().to_str()?))
        .collect();
    ids.sort();
    ids
}

/// Ten fragments in one segment; 2, 4, 6, 8 deleted and 9 rewritten; reopened so the
/// segment is sealed. Returns the expected live set.
fn mostly_dead_store(dir: &Path) -> Vec<(u32, Vec<u8>)> {
    let s = Store::open(dir, opts()).unwrap();
    for n in 1..=10 {
        put(&s, n, &body(n, (n as usize % 3) * BS as usize + 17));
    }
    for n in [2, 4, 6, 8] {
        assert!(s.delete(&fid(n)).unwrap());
    }
    put(&s, 9, &body(99, 5));
    let want = live_set(&s);
    assert_eq!(want.len(), 6);
    want
}

#[test]
fn compaction_keeps_live_fragments_and_deletes_stay_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let want = mostly_dead_store(dir.path());
    let s = Store::open(dir.path(), opts()).unwrap();
    let before = segment_ids(dir.path());
    assert_eq!(before.len(), 1);
    let used_before = s.capacity().used_bytes;
    assert!(s.dead_bytes(before[0]) > 0);
    // An unrelated reader holds a location in the old segment across the compaction.
    let held = s.location(&fid(10)).unwrap();

    let st = s.compact(0.3, &|| false).unwrap();
    assert_eq!(st.segments, 1);
    assert_eq!(st.copied_puts, 6);
    assert_eq!(
        st.dropped_tombstones, 4,
        "their PUTs went with the same segment"
    );
    assert_eq!(st.kept_tombstones, 0);
    assert!(st.reclaimed_bytes > 0);
    let after = segment_ids(dir.path());
    assert_eq!(after.len(), 1);
    assert!(after[0] > before[0]);
    assert_eq!(s.capacity().used_bytes, used_before - st.reclaimed_bytes);
    assert_eq!(
        std::fs::metadata(segment_path(&s, after[0])).unwrap().len(),
        s.capacity().used_bytes
    );
    assert_eq!(live_set(&s), want);
    assert_eq!(lock(&s.index).total_dead_bytes(), 0);
    // The old location is relocated by id and seq.
    let mut data = Vec::new();
    for i in 0..held.blocks {
        data.extend_from_slice(&s.read_block(&held, i).unwrap().0);
    }
    let n = 10usize;
    assert_eq!(data, body(10, (n % 3) * BS as usize + 17));
    // Nothing left to do.
    assert_eq!(s.compact(0.3, &|| false).unwrap().segments, 0);
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(live_set(&s), want);
    for n in [2, 4, 6, 8] {
        assert!(s.location(&fid(n)).is_none());
    }
}

#[test]
fn tombstone_outlives_the_put_it_shadows() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), one_record_per_segment()).unwrap();
        put(&s, 1, &body(1, 100)); // segment 1
        assert!(s.delete(&fid(1)).unwrap()); // tombstone: segment 2
        put(&s, 2, &body(2, 100)); // segment 3
        assert_eq!(segment_ids(dir.path()), vec![1, 2, 3]);
    }
    let s = Store::open(dir.path(), one_record_per_segment()).unwrap();
    // Compact the tombstone's segment first: the PUT is still in segment 1.
    let st = s.compact_segment(2).unwrap();
    assert_eq!((st.kept_tombstones, st.dropped_tombstones), (1, 0));
    assert_eq!(segment_ids(dir.path()), vec![1, 3, 4]);
    drop(s);
    let s = Store::open(dir.path(), one_record_per_segment()).unwrap();
    assert!(s.location(&fid(1)).is_none(), "still deleted");
    // Now the PUT's segment (all dead) goes ...
    let st = s.compact(0.5, &|| false).unwrap();
    assert_eq!((st.segments, st.copied_puts), (1, 0));
    assert_eq!(segment_ids(dir.path()), vec![3, 4]);
    // ... and the tombstone is no longer needed.
    let st = s.compact_segment(4).unwrap();
    assert_eq!((st.kept_tombstones, st.dropped_tombstones), (0, 1));
    assert_eq!(segment_ids(dir.path()), vec![3]);
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert!(s.location(&fid(1)).is_none());
    assert_eq!(read_all(&s, 2).unwrap(), body(2, 100));
}

#[test]
fn crash_after_copy_before_delete_recovers_the_same_live_set() {
    let dir = tempfile::tempdir().unwrap();
    let want = mostly_dead_store(dir.path());
    let old_id = segment_ids(dir.path())[0];
    let old_path = dir.path().join("segments").join(segment_file_name(old_id));
    let old_bytes = std::fs::read(&old_path).unwrap();
    let new_id = {
        let s = Store::open(dir.path(), opts()).unwrap();
        s.compact(0.3, &|| false).unwrap();
        segment_ids(dir.path())[0]
    };
    // "Crash" before the old file was unlinked: both files exist.
    std::fs::write(&old_path, &old_bytes).unwrap();
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        assert_eq!(
            live_set(&s),
            want,
            "duplicates with equal seqs are harmless"
        );
        for n in [2, 4, 6, 8] {
            assert!(s.location(&fid(n)).is_none());
        }
        // The duplicates are dead bytes of the old segment; compaction removes it.
        assert!(s.compact(0.3, &|| false).unwrap().segments >= 1);
        assert_eq!(live_set(&s), want);
    }
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(live_set(&s), want);
    assert!(!segment_ids(dir.path()).contains(&old_id));

    // And a crash while the copy was being written: a torn new segment next to the old.
    drop(s);
    let dir2 = tempfile::tempdir().unwrap();
    let want2 = mostly_dead_store(dir2.path());
    let old2 = dir2.path().join("segments").join(segment_file_name(old_id));
    let old2_bytes = std::fs::read(&old2).unwrap();
    {
        let s = Store::open(dir2.path(), opts()).unwrap();
        s.compact(0.3, &|| false).unwrap();
    }
    std::fs::write(&old2, &old2_bytes).unwrap();
    let new2 = dir2.path().join("segments").join(segment_file_name(new_id));
    let len = std::fs::metadata(&new2).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&new2)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let s = Store::open(dir2.path(), opts()).unwrap();
    assert_eq!(live_set(&s), want2);
}

#[test]
fn compaction_quarantines_corrupt_records_instead_of_copying_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut want = mostly_dead_store(dir.path());
    let s = Store::open(dir.path(), opts()).unwrap();
    corrupt_block(&s, 5, 1);
    let st = s.compact(0.3, &|| false).unwrap();
    assert_eq!((st.copied_puts, st.corrupt), (5, 1));
    assert!(s.location(&fid(5)).is_none());
    want.retain(|(n, _)| *n != 5);
    assert_eq!(live_set(&s), want);
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(live_set(&s), want);
}

#[test]
fn compaction_leaves_active_segments_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    put(&s, 1, &body(1, 100));
    assert!(s.delete(&fid(1)).unwrap());
    let seg = segment_ids(dir.path())[0];
    assert!(matches!(
        s.compact_segment(seg),
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(s.compact(0.01, &|| false).unwrap().segments, 0);
    put(&s, 2, &body(2, 100));
    assert_eq!(read_all(&s, 2).unwrap(), body(2, 100));
}

#[test]
fn compaction_races_with_writers_and_deleters() {
    let dir = tempfile::tempdir().unwrap();
    let small = StoreOptions {
        segment_size: 4 * BS as u64,
        ..opts()
    };
    let s = Store::open(dir.path(), small.clone()).unwrap();
    for n in 0..200 {
        put(&s, n, &body(n, BS as usize + n as usize));
    }
    let stop = AtomicBool::new(false);
    let compacted = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let s2 = s.clone();
        let (stop, compacted) = (&stop, &compacted);
        scope.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let st = s2.compact(0.2, &|| false).unwrap();
                compacted.fetch_add(st.segments, Ordering::Relaxed);
            }
        });
        for n in 0..200 {
            if n % 3 == 0 {
                assert!(s.delete(&fid(n)).unwrap());
            } else if n % 3 == 1 {
                put(&s, n, &body(n + 1000, 100));
            }
            if n % 7 == 0 {
                // Reads during compaction succeed or see the fragment as deleted.
                if let Some(l) = s.location(&fid(n + 1)) {
                    for i in 0..l.blocks {
                        match s.read_block(&l, i) {
                            Ok(_) | Err(StoreError::NotFound) => {}
                            Err(e) => panic!("read during compaction: {e}"),
                        }
                    }
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        compacted.load(Ordering::Relaxed) > 0,
        "compaction ran during the writes"
    );
    let expect = |n: u32| match n % 3 {
        0 => None,
        1 => Some(body(n + 1000, 100)),
        _ => Some(body(n, BS as usize + n as usize)),
    };
    let check = |s: &Store| {
        for n in 0..200 {
            assert_eq!(read_all(s, n).ok(), expect(n), "fragment {n}");
        }
    };
    check(&s);
    s.compact(0.01, &|| false).unwrap();
    check(&s);
    drop(s);
    let s = Store::open(dir.path(), small).unwrap();
    check(&s);
    s.compact(0.01, &|| false).unwrap();
    check(&s);
    drop(s);
    check(&Store::open(dir.path(), opts()).unwrap());
}

// ---- group commit (decision 0039) ---------------------------------------------------

/// A 64 KiB PUT under EC 4+2 sends each node one 16 KiB fragment in one block.
const FRAG: usize = 16 << 10;

fn frag_len(n: u32) -> usize {
    FRAG - (n as usize * 97) % 4096
}

fn put_frag(s: &Arc<Store>, n: u32) -> Result<PutOutcome, StoreError> {
    let data = body(n, frag_len(n));
    let mut w = s.begin_put(FragmentHeader {
        block_size: FRAG as u32,
        ..header(n)
    })?;
    w.append_block(&data, crc32c(&data))?;
    w.commit()
}

/// Runs `writers` threads that start together, each committing `per` fragments;
/// returns every fragment's number, commit latency and result.
fn concurrent_frags(
    s: &Arc<Store>,
    writers: u32,
    per: u32,
) -> Vec<(u32, std::time::Duration, Result<PutOutcome, StoreError>)> {
    let barrier = std::sync::Barrier::new(writers as usize);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|t| {
                let (s, barrier) = (s.clone(), &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    (0..per)
                        .map(|k| {
                            let n = t * 1000 + k;
                            let started = Instant::now();
                            let r = put_frag(&s, n);
                            (n, started.elapsed(), r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

#[test]
fn concurrent_commits_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    // A slow disk: commits arriving during one fsync must ride the next one together.
    s.hooks.sync_delay_ms.store(5, Ordering::Relaxed);
    let done = concurrent_frags(&s, 16, 4);
    let st = s.commit_stats();
    assert_eq!(st.group_records, 64);
    assert_eq!(st.record_syncs, st.group_batches, "one fsync per batch");
    assert!(
        st.group_batches * 4 <= 64,
        "16 writers should need at most one fsync per 4 fragments: {st:?}"
    );
    assert_eq!(s.segment_count(), 1);
    let check = |s: &Store| {
        for (n, _, r) in &done {
            assert_eq!(r.as_ref().unwrap().length, frag_len(*n) as u64);
            assert_eq!(read_all(s, *n).unwrap(), body(*n, frag_len(*n)));
        }
    };
    check(&s);
    drop(s);
    check(&Store::open(dir.path(), opts()).unwrap());
}

/// Measurement (issue 17), real fdatasync: `cargo nextest run -p kura-datanode
/// --run-ignored ignored-only group_commit_measurement --no-capture`.
#[test]
#[ignore = "measurement; prints fsyncs per fragment and latency"]
fn group_commit_measurement() {
    for group in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), opts()).unwrap();
        if !group {
            s.set_group_commit_max_record(0);
        }
        let (writers, per) = (16, 32);
        let started = Instant::now();
        let done = concurrent_frags(&s, writers, per);
        let wall = started.elapsed();
        let mut lat: Vec<_> = done
            .iter()
            .map(|(_, d, r)| {
                r.as_ref().unwrap();
                *d
            })
            .collect();
        lat.sort();
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
        let st = s.commit_stats();
        let frags = (writers * per) as f64;
        eprintln!(
            "{}: {writers} writers x {per} fragments of ~16 KiB: {:.3} fsyncs/fragment, \
             mean batch {:.1}, commit p50 {:?} p99 {:?}, {:.0} fragments/s",
            if group {
                "group commit"
            } else {
                "exclusive   "
            },
            st.record_syncs as f64 / frags,
            st.group_records as f64 / st.group_batches.max(1) as f64,
            q(0.5),
            q(0.99),
            frags / wall.as_secs_f64(),
        );
        if !group {
            assert_eq!(st.record_syncs, writers as u64 * per as u64);
        }
    }
}

/// Copies a store (identity and segments), the segment `seg` cut to `cut` bytes.
fn copy_with_cut(from: &Path, seg: u64, cut: usize) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    std::fs::create_dir(to.path().join("segments")).unwrap();
    std::fs::copy(
        identity::identity_path(from),
        identity::identity_path(to.path()),
    )
    .unwrap();
    let name = segment_file_name(seg);
    let bytes = std::fs::read(from.join("segments").join(&name)).unwrap();
    std::fs::write(to.path().join("segments").join(&name), &bytes[..cut]).unwrap();
    to
}

#[test]
fn concurrent_commits_survive_a_crash_at_any_point() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, recs) = {
        let s = Store::open(dir.path(), opts()).unwrap();
        s.hooks.sync_delay_ms.store(1, Ordering::Relaxed);
        let done = concurrent_frags(&s, 8, 5);
        assert!(s.commit_stats().group_batches < 40, "batches formed");
        let mut recs: Vec<_> = done
            .iter()
            .map(|(n, _, r)| {
                r.as_ref().unwrap();
                let l = s.location(&fid(*n)).unwrap();
                (
                    l.segment,
                    l.record_offset,
                    logical_end(&l),
                    *n,
                    l.record_len,
                )
            })
            .collect();
        recs.sort();
        assert!(recs.iter().all(|r| r.0 == recs[0].0), "one shared segment");
        for w in recs.windows(2) {
            assert_eq!(
                w[0].1 + w[0].4,
                w[1].1,
                "records (and batch padding) are contiguous, never interleaved"
            );
            // Inside a batch records follow each other; a batch starts 4 KiB-aligned.
            assert!(w[0].2 == w[1].1 || w[1].1 % direct::ALIGN == 0);
        }
        let recs: Vec<_> = recs
            .into_iter()
            .map(|(a, b, c, d, _)| (a, b, c, d))
            .collect();
        (recs[0].0, recs)
    };
    // The file as written: the last batch padded to 4 KiB.
    let full = std::fs::metadata(dir.path().join("segments").join(segment_file_name(seg)))
        .unwrap()
        .len() as usize;
    assert_eq!(full as u64, direct::align_up(recs.last().unwrap().2));
    // A crash before the fsync of the last batch(es) leaves any prefix of their bytes.
    let mut cuts = vec![full, full - 1, SEGMENT_HEADER_LEN as usize + 1];
    for &(_, start, end, _) in &recs {
        cuts.extend([
            start as usize + 3,
            end as usize - 5,
            (start + end) as usize / 2,
            // Inside the padding after a batch, and at its boundary.
            end as usize + 1,
            direct::align_up(end) as usize - 1,
            direct::align_up(end) as usize,
        ]);
    }
    cuts.retain(|&c| c <= full);
    cuts.sort();
    cuts.dedup();
    for cut in cuts {
        let d = copy_with_cut(dir.path(), seg, cut);
        let s = Store::open(d.path(), opts()).unwrap();
        // Truncated at the first torn record, or not at all when the cut fell into
        // padding (zeros to the end of the file).
        let mut kept = cut as u64;
        for &(_, start, end, n) in &recs {
            if end as usize <= cut {
                assert_eq!(read_all(&s, n).unwrap(), body(n, frag_len(n)), "cut {cut}");
            } else {
                kept = kept.min(start);
                assert!(
                    s.location(&fid(n)).is_none(),
                    "torn record {n} exposed (cut {cut})"
                );
            }
        }
        let path = d.path().join("segments").join(segment_file_name(seg));
        match std::fs::metadata(&path) {
            Ok(m) => assert_eq!(m.len(), kept, "torn tail truncated at cut {cut}"),
            // Nothing but (part of) the header block left: removed as empty at open.
            Err(_) => assert!(kept <= data_start(SEGMENT_FORMAT_VERSION), "cut {cut}"),
        }
        // Writing goes on in a new segment.
        put_frag(&s, 99_999).unwrap();
        assert!(s.location(&fid(99_999)).unwrap().segment > seg);
    }
    // Power loss may write a batch's pages out of order: a record in the middle torn
    // (never written: zeros), later ones whole. Nothing after the last fsync was
    // acknowledged; the torn record is skipped, never exposed.
    let (_, start, end, torn) = recs[recs.len() - 3];
    let d = copy_with_cut(dir.path(), seg, full);
    let path = d.path().join("segments").join(segment_file_name(seg));
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&vec![0u8; (end - start) as usize - 10], start + 10)
        .unwrap();
    drop(f);
    let s = Store::open(d.path(), opts()).unwrap();
    for &(_, _, _, n) in &recs {
        if n == torn {
            assert!(s.location(&fid(n)).is_none());
        } else {
            assert_eq!(read_all(&s, n).unwrap(), body(n, frag_len(n)));
        }
    }
}

#[test]
fn failed_group_fsync_fails_every_waiter_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    // The first batch (one record, or all if they came together) takes 20 ms; any batch
    // of two or more fails its fsync.
    s.hooks.sync_delay_ms.store(20, Ordering::Relaxed);
    s.hooks.fail_sync_min_batch.store(2, Ordering::Relaxed);
    let done = concurrent_frags(&s, 8, 1);
    s.hooks.sync_delay_ms.store(0, Ordering::Relaxed);
    s.hooks.fail_sync_min_batch.store(0, Ordering::Relaxed);
    let (ok, failed): (Vec<_>, Vec<_>) = done.iter().partition(|(_, _, r)| r.is_ok());
    assert!(
        failed.len() >= 2,
        "a batch of several failed: {}",
        failed.len()
    );
    let st = s.commit_stats();
    assert_eq!(
        st.group_records as usize,
        ok.len(),
        "only single-record batches were acknowledged"
    );
    assert!(ok.len() <= 1);
    for (n, _, r) in &failed {
        assert!(matches!(r, Err(StoreError::Io { .. })), "{r:?}");
        assert!(
            s.location(&fid(*n)).is_none(),
            "unacknowledged {n} is invisible"
        );
    }
    for (n, _, _) in &ok {
        assert_eq!(read_all(&s, *n).unwrap(), body(*n, frag_len(*n)));
    }
    // The segment whose fsync failed is sealed; commits go on in a new one.
    assert!(s.segment(1).unwrap().sealed.load(Ordering::Acquire));
    put_frag(&s, 7777).unwrap();
    assert_eq!(s.location(&fid(7777)).unwrap().segment, 2);
    assert!(s.delete(&fid(7777)).unwrap(), "tombstones commit too");
    drop(s);
    // After a restart the failed records may come back (the page cache had them), whole.
    let s = Store::open(dir.path(), opts()).unwrap();
    for (n, _, _) in &ok {
        assert_eq!(read_all(&s, *n).unwrap(), body(*n, frag_len(*n)));
    }
    for (n, _, _) in &failed {
        if s.location(&fid(*n)).is_some() {
            assert_eq!(read_all(&s, *n).unwrap(), body(*n, frag_len(*n)));
        }
    }
    assert!(s.location(&fid(7777)).is_none());
}

#[test]
fn group_tombstones_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let big = body(2, 600 * BS as usize); // above GROUP_COMMIT_MAX_RECORD: own segment
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        // Put, delete, put again through the shared segment: the last one wins.
        put(&s, 1, &body(1, 100));
        assert!(s.delete(&fid(1)).unwrap());
        put(&s, 1, &body(11, 200));
        // A large PUT in a later segment, deleted by a tombstone in the earlier,
        // shared one: the seq decides, not the scan order.
        put(&s, 2, &big);
        let l2 = s.location(&fid(2)).unwrap();
        let shared = s.location(&fid(1)).unwrap().segment;
        assert!(l2.segment > shared, "the large record took its own segment");
        assert_eq!(s.commit_stats().group_records, 3);
        assert!(s.delete(&fid(2)).unwrap());
        assert_eq!(s.group.active_segment(), Some(shared));
    }
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        assert_eq!(read_all(&s, 1).unwrap(), body(11, 200));
        assert!(
            s.location(&fid(2)).is_none(),
            "tombstone in an older segment wins"
        );
        put(&s, 2, &body(22, 10));
    }
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(read_all(&s, 2).unwrap(), body(22, 10));

    // Concurrent puts and deletes of disjoint ids: each id ends as its last operation.
    std::thread::scope(|scope| {
        for t in 0..6u32 {
            let s = s.clone();
            scope.spawn(move || {
                for round in 0..4u32 {
                    for k in 0..5u32 {
                        let n = 100 + t * 10 + k;
                        if (round + k) % 3 == 2 {
                            s.delete(&fid(n)).unwrap();
                        } else {
                            put(&s, n, &body(n + round, 50 + k as usize));
                        }
                    }
                }
            });
        }
    });
    let expect = |n: u32| {
        let k = (n - 100) % 10;
        ((3 + k) % 3 != 2).then(|| body(n + 3, 50 + k as usize))
    };
    for n in (0..6).flat_map(|t| (0..5).map(move |k| 100 + t * 10 + k)) {
        assert_eq!(read_all(&s, n).ok(), expect(n), "fragment {n}");
    }
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    for n in (0..6).flat_map(|t| (0..5).map(move |k| 100 + t * 10 + k)) {
        assert_eq!(
            read_all(&s, n).ok(),
            expect(n),
            "fragment {n} after restart"
        );
    }
}

#[test]
fn buffered_writer_spills_past_the_limit_and_aborts_without_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    s.set_group_commit_max_record(4 * BS as u64);
    put(&s, 1, &body(1, 100));
    let shared = s.location(&fid(1)).unwrap().segment;
    let path = segment_path(&s, shared);
    let len = std::fs::metadata(&path).unwrap().len();
    // Aborted while buffered: nothing was ever written.
    let mut w = s.begin_put(header(2)).unwrap();
    w.append_block(&body(2, BS as usize), crc32c(&body(2, BS as usize)))
        .unwrap();
    drop(w);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    assert_eq!(s.segment_count(), 1);
    assert_eq!(s.buffered_bytes.load(Ordering::Relaxed), 0);
    // Ten blocks: the fifth no longer fits, so the record moves to its own segment.
    let data = body(3, 10 * BS as usize);
    put(&s, 3, &data);
    assert_eq!(s.buffered_bytes.load(Ordering::Relaxed), 0);
    let l3 = s.location(&fid(3)).unwrap();
    assert_ne!(l3.segment, shared);
    assert_eq!(s.commit_stats().group_records, 1);
    put(&s, 4, &body(4, 100));
    assert_eq!(s.location(&fid(4)).unwrap().segment, shared);
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(read_all(&s, 3).unwrap(), data);
    assert_eq!(read_all(&s, 4).unwrap(), body(4, 100));
    assert!(s.location(&fid(2)).is_none());
}

// ---- O_DIRECT and segment format 2 (decision 0042) ---------------------------------

/// Whether `dir`'s filesystem takes an aligned O_DIRECT write (tmpfs on older kernels
/// and some FUSE filesystems do not).
fn fs_has_direct_io(dir: &Path) -> bool {
    let p = dir.join("direct-probe");
    std::fs::write(&p, b"").unwrap();
    let ok = direct::open_writer(&p, true).is_ok_and(|f| {
        let mut b = AlignedBuf::new(4096);
        b.pad();
        f.write_all_at(b.as_slice(), 0).is_ok()
    });
    std::fs::remove_file(&p).unwrap();
    ok
}

/// Checks a padded segment file: the length is 4 KiB-aligned, the header block is zeros
/// after the header, and each record's padding (`logical_end..record_offset+record_len`)
/// is zeros.
fn assert_padded(s: &Store, seg: u64, locs: &[Arc<Location>]) {
    let bytes = std::fs::read(segment_path(s, seg)).unwrap();
    assert_eq!(
        bytes.len() as u64 % direct::ALIGN,
        0,
        "segment {seg} length"
    );
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
    assert!(bytes[SEGMENT_HEADER_LEN as usize..4096]
        .iter()
        .all(|&b| b == 0));
    for l in locs.iter().filter(|l| l.segment == seg) {
        let (end, padded) = (logical_end(l), l.record_offset + l.record_len);
        assert!(padded >= end);
        assert!(
            bytes[end as usize..padded as usize].iter().all(|&b| b == 0),
            "padding after record at {}",
            l.record_offset
        );
    }
}

#[test]
fn records_are_aligned_and_padded_for_small_large_and_odd_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.direct_io_active(), fs_has_direct_io(dir.path()));
    let big = GROUP_COMMIT_MAX_RECORD as usize; // + block headers: past the group limit
    let sizes = [
        0,
        1,
        100,
        4096 - 60,
        4096,
        4097,
        BS as usize * 7 + 3,
        big,
        big + 1,
        2 * direct::STAGING_LEN + 5,
        3 * 4096,
    ];
    for (n, &len) in sizes.iter().enumerate() {
        put(&s, n as u32, &body(n as u32, len));
    }
    let locs: Vec<_> = (0..sizes.len())
        .map(|n| s.location(&fid(n as u32)).unwrap())
        .collect();
    for l in &locs {
        // Sequential commits: each batch (and each exclusive record) starts aligned.
        assert_eq!(l.record_offset % direct::ALIGN, 0, "{l:?}");
        assert_eq!((l.record_offset + l.record_len) % direct::ALIGN, 0);
    }
    let shared = s.group.active_segment().unwrap();
    let exclusive = locs.iter().filter(|l| l.segment != shared).count();
    assert_eq!(exclusive, 3, "the large ones took the exclusive path");
    let mut segs: Vec<_> = locs.iter().map(|l| l.segment).collect();
    segs.sort();
    segs.dedup();
    for &seg in &segs {
        assert_padded(&s, seg, &locs);
    }
    // Space accounting covers the padding: the files' lengths, all of it live.
    let files: u64 = segs
        .iter()
        .map(|&id| std::fs::metadata(segment_path(&s, id)).unwrap().len())
        .sum();
    assert_eq!(s.capacity().used_bytes, files);
    // Tombstones go through the same writers; their padding is accounted as well.
    assert!(s.delete(&fid(1)).unwrap());
    assert!(s.delete(&fid(8)).unwrap());
    let dead: u64 = segs.iter().map(|&id| s.dead_bytes(id)).sum();
    assert_eq!(dead, locs[1].record_len + locs[8].record_len);
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    for (n, &len) in sizes.iter().enumerate() {
        if n == 1 || n == 8 {
            assert!(s.location(&fid(n as u32)).is_none());
            continue;
        }
        assert_eq!(read_all(&s, n as u32).unwrap(), body(n as u32, len), "{n}");
        // Recovery attributes the padding exactly as the writers did.
        assert_eq!(
            s.location(&fid(n as u32)).unwrap().record_len,
            locs[n].record_len
        );
    }
    let dead: u64 = segs.iter().map(|&id| s.dead_bytes(id)).sum();
    assert!(dead >= locs[1].record_len + locs[8].record_len);
}

/// An exclusive (streamed) record cut at every 4 KiB boundary and many points between:
/// the records before it survive, the torn one never appears, the tail is truncated.
#[test]
fn padded_exclusive_records_survive_cuts_at_many_points() {
    let dir = tempfile::tempdir().unwrap();
    let lens = [100usize, 3 * BS as usize + 5, 40 * BS as usize + 1];
    let (seg, locs) = {
        let s = open_exclusive(dir.path(), opts());
        for (n, &len) in lens.iter().enumerate() {
            put(&s, n as u32, &body(n as u32, len));
        }
        let locs: Vec<_> = (0..lens.len())
            .map(|n| s.location(&fid(n as u32)).unwrap())
            .collect();
        assert!(locs.iter().all(|l| l.segment == locs[0].segment));
        (locs[0].segment, locs)
    };
    let full = std::fs::metadata(dir.path().join("segments").join(segment_file_name(seg)))
        .unwrap()
        .len() as usize;
    let mut cuts: Vec<usize> = (0..=full).step_by(509).collect();
    for l in &locs {
        let (start, end) = (l.record_offset as usize, logical_end(l) as usize);
        cuts.extend([start, start + 1, end - 1, end, end + 1]);
        cuts.extend((start..end).step_by(4096));
    }
    cuts.retain(|&c| c >= SEGMENT_HEADER_LEN as usize && c <= full);
    cuts.sort();
    cuts.dedup();
    for cut in cuts {
        let d = copy_with_cut(dir.path(), seg, cut);
        let s = Store::open(d.path(), opts()).unwrap();
        for (n, l) in locs.iter().enumerate() {
            if logical_end(l) as usize <= cut {
                assert_eq!(read_all(&s, n as u32).unwrap(), body(n as u32, lens[n]));
            } else {
                assert!(
                    s.location(&fid(n as u32)).is_none(),
                    "torn {n} at cut {cut}"
                );
            }
        }
        put(&s, 77, &body(77, 10));
        drop(s);
        let s = Store::open(d.path(), opts()).unwrap();
        assert_eq!(read_all(&s, 77).unwrap(), body(77, 10), "cut {cut}");
    }
    // Garbage in the padding is corruption, not a torn tail: skipped, later records kept.
    let d = copy_with_cut(dir.path(), seg, full);
    let path = d.path().join("segments").join(segment_file_name(seg));
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"junk", logical_end(&locs[0]) + 10).unwrap();
    drop(f);
    let s = Store::open(d.path(), opts()).unwrap();
    for (n, &len) in lens.iter().enumerate() {
        assert_eq!(read_all(&s, n as u32).unwrap(), body(n as u32, len));
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, full);
}

/// Writes segment `id` in format version 1, as the code before decision 0042 did: the
/// header, then records back to back from offset 64, no padding. `recs`: (n, data, seq).
fn write_v1_segment(dir: &Path, dir_uuid: [u8; 16], id: u64, recs: &[(u32, Vec<u8>, u64)]) {
    let salt = SegmentSalt {
        dir_uuid,
        segment_id: id,
    };
    let mut out = SegmentHeader {
        version: SEGMENT_FORMAT_V1,
        segment_id: id,
        dir_uuid,
    }
    .encode()
    .to_vec();
    for (n, data, seq) in recs {
        let (hdr, hcrc) = encode_record_header(salt, RecordKind::Put, &header(*n).encode_to_vec());
        out.extend_from_slice(&hdr);
        let mut headers = Vec::new();
        for chunk in data.chunks(BS as usize) {
            let hb = encode_block_header(chunk.len() as u32, crc32c(chunk));
            headers.extend_from_slice(&hb);
            out.extend_from_slice(&hb);
            out.extend_from_slice(chunk);
        }
        out.extend_from_slice(
            &Footer {
                block_count: data.chunks(BS as usize).count() as u32,
                total_len: data.len() as u64,
                seq: *seq,
                blocks_crc: crc32c(&headers),
            }
            .encode(hcrc),
        );
    }
    std::fs::write(dir.join("segments").join(segment_file_name(id)), out).unwrap();
}

#[test]
fn version_1_segments_open_read_scrub_and_compact_with_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let uuid = Store::open(dir.path(), opts()).unwrap().dir_uuid;
    let old: Vec<_> = (1..=6u32)
        .map(|n| (n, body(n, n as usize * 700), n as u64))
        .collect();
    write_v1_segment(dir.path(), uuid, 1, &old);
    // A torn v1 tail is still truncated as before.
    let path = dir.path().join("segments").join(segment_file_name(1));
    let v1_len = std::fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(b"KREC\x01", v1_len)
        .unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), v1_len);
    for (n, data, _) in &old {
        assert_eq!(&read_all(&s, *n).unwrap(), data);
        let l = s.location(&fid(*n)).unwrap();
        assert_eq!(
            l.record_len,
            logical_end(&l) - l.record_offset,
            "no padding in v1"
        );
    }
    let st = s.scrub(None, &mut scrub::Pacer::unlimited(), &mut |_, _| {});
    assert_eq!((st.fragments, st.corrupt), (6, 0));
    // New writes go to a new (version 2) segment; old fragments die there.
    for n in [2, 3, 4, 5] {
        put(&s, n, &body(n + 100, 3000));
    }
    put(&s, 7, &body(7, 9000));
    assert!(s.delete(&fid(6)).unwrap());
    let newseg = s.location(&fid(7)).unwrap().segment;
    assert!(newseg > 1);
    drop(s);
    // Reopen (everything sealed), then compact both the old and the new segment.
    let s = Store::open(dir.path(), opts()).unwrap();
    let want = live_set(&s);
    assert_eq!(want.len(), 6);
    assert!(s.dead_bytes(1) > v1_len / 2);
    let st = s.compact_segment(1).unwrap();
    assert_eq!(
        st.copied_puts, 1,
        "only fragment 1 is still live in the v1 segment"
    );
    assert!(s.delete(&fid(7)).unwrap());
    let st = s.compact(0.01, &|| false).unwrap();
    assert!(st.segments >= 1);
    assert_eq!(live_set(&s), {
        let mut w = want.clone();
        w.retain(|(n, _)| *n != 7);
        w
    });
    // Compaction output is version 2 and packs records back to back.
    let ids = segment_ids(dir.path());
    assert!(!ids.contains(&1) && !ids.contains(&newseg));
    let (locs, _) = s.list_fragments(None, None, usize::MAX);
    for &id in &ids {
        assert_padded(&s, id, &locs);
    }
    let files: u64 = ids
        .iter()
        .map(|&id| std::fs::metadata(segment_path(&s, id)).unwrap().len())
        .sum();
    assert_eq!(s.capacity().used_bytes, files);
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(live_set(&s).len(), 5);
    assert!(s.location(&fid(6)).is_none() && s.location(&fid(7)).is_none());
}

#[test]
fn without_o_direct_the_store_falls_back_to_buffered_writes() {
    // auto: the refusal (EINVAL, as from tmpfs) turns direct I/O off, same format.
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    s.hooks.refuse_direct.store(true, Ordering::Relaxed);
    let big = body(2, GROUP_COMMIT_MAX_RECORD as usize + 5000);
    put(&s, 1, &body(1, 300));
    put(&s, 2, &big);
    assert!(!s.direct_io_active());
    let locs = vec![s.location(&fid(1)).unwrap(), s.location(&fid(2)).unwrap()];
    for l in &locs {
        assert_padded(&s, l.segment, &locs);
    }
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(read_all(&s, 2).unwrap(), big);
    assert_eq!(read_all(&s, 1).unwrap(), body(1, 300));

    // on: no fallback, the write fails and nothing is left behind.
    let dir = tempfile::tempdir().unwrap();
    let on = StoreOptions {
        direct_io: DirectIo::On,
        ..opts()
    };
    let s = Store::open(dir.path(), on.clone()).unwrap();
    s.hooks.refuse_direct.store(true, Ordering::Relaxed);
    let mut w = s.begin_put(header(1)).unwrap();
    w.append_block(b"x", crc32c(b"x")).unwrap();
    assert!(matches!(w.commit(), Err(StoreError::Io { .. })));
    assert!(s.direct_io_active());
    assert_eq!(s.segment_count(), 0);
    assert!(segment_ids(dir.path()).is_empty());

    // off: buffered from the start.
    let dir = tempfile::tempdir().unwrap();
    let off = StoreOptions {
        direct_io: DirectIo::Off,
        ..opts()
    };
    let s = Store::open(dir.path(), off.clone()).unwrap();
    assert!(!s.direct_io_active());
    put(&s, 3, &big);
    drop(s);
    let s = Store::open(dir.path(), on).unwrap();
    assert_eq!(read_all(&s, 3).unwrap(), big);
}

/// Process CPU time (user + system) so far, in seconds.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: `u` is a properly sized out-parameter.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(u.ru_utime), s(u.ru_stime))
}

/// Measurement for decision 0042, not a check: N concurrent writers stream 64 MiB
/// fragments (256 KiB blocks: a 1 MiB stripe under EC 4+2) into one store and commit,
/// buffered vs O_DIRECT; prints CPU ms per MiB (user, system) and MB/s. Run with
/// `cargo nextest run -p kura-datanode --run-ignored ignored-only direct_io_measurement
/// --no-capture` (a release build: `--release`).
#[test]
#[ignore]
fn direct_io_measurement() {
    const BLOCK: usize = 256 << 10;
    const FRAG: usize = 64 << 20;
    let writers: usize = std::env::var("KURA_BENCH_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let block = body(5, BLOCK);
    let crc = crc32c(&block);
    for mode in [DirectIo::Off, DirectIo::On, DirectIo::Off, DirectIo::On] {
        let dir =
            tempfile::tempdir_in(std::env::var("KURA_BENCH_DIR").unwrap_or(".".into())).unwrap();
        let s = Store::open(
            dir.path(),
            StoreOptions {
                direct_io: mode,
                ..opts()
            },
        )
        .unwrap();
        let (u0, s0) = cpu_seconds();
        let t = Instant::now();
        std::thread::scope(|sc| {
            for w in 0..writers {
                let (s, block) = (&s, &block);
                sc.spawn(move || {
                    let mut h = header(w as u32);
                    h.block_size = BLOCK as u32;
                    let mut pw = s.begin_put(h).unwrap();
                    for _ in 0..FRAG / BLOCK {
                        pw.append_block(block, crc).unwrap();
                    }
                    pw.commit().unwrap();
                });
            }
        });
        let wall = t.elapsed().as_secs_f64();
        let (u1, s1) = cpu_seconds();
        assert_eq!(s.direct_io_active(), mode == DirectIo::On);
        let mib = (writers * FRAG) as f64 / (1 << 20) as f64;
        println!(
            "{mode:>4}: {writers} x 64 MiB in {wall:.2} s = {:.0} MB/s; CPU per MiB: user {:.3} ms, sys {:.3} ms, total {:.3} ms",
            mib * 1.048576 / wall,
            (u1 - u0) * 1e3 / mib,
            (s1 - s0) * 1e3 / mib,
            (u1 - u0 + s1 - s0) * 1e3 / mib,
        );
    }
}

/// The index must not keep a slice of the message a header came in: tonic
/// decodes `data_id` as a view into the whole received buffer (the first
/// block with it), and holding it pinned that buffer for the fragment's life.
#[test]
fn the_index_owns_its_headers_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    // A received message: 16 bytes of id followed by a block's worth of data.
    let message = Bytes::from(vec![9u8; 16 + 256 << 10]);
    let mut h = header(9);
    h.id = Some(FragmentId {
        data_id: message.slice(0..16),
        shard: 3,
    });
    let id = h.id.clone().unwrap();
    let mut w = s.begin_put(h).unwrap();
    let block = vec![1u8; BS as usize];
    w.append_block(&block, crc32c(&block)).unwrap();
    w.commit().unwrap();
    let loc = s.location(&id).unwrap();
    let kept = loc.header.id.as_ref().unwrap().data_id.as_ptr() as usize;
    let (start, end) = (
        message.as_ptr() as usize,
        message.as_ptr() as usize + message.len(),
    );
    assert!(
        !(start..end).contains(&kept),
        "the index holds a view into the received message"
    );
    assert_eq!(loc.header.id.as_ref().unwrap().data_id, id.data_id);
}
