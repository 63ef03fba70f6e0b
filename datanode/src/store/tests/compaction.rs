//! Compaction: live fragments kept, deletes stay deleted, crashes and races.

use super::*;

/// Every record seals its segment: one record per segment.
fn one_record_per_segment() -> StoreOptions {
    StoreOptions {
        segment_size: 1,
        ..opts()
    }
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

    let st = s.compact(0.3, &mut Pacer::unlimited()).unwrap();
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
    assert_eq!(s.compact(0.3, &mut Pacer::unlimited()).unwrap().segments, 0);
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(live_set(&s), want);
    for n in [2, 4, 6, 8] {
        assert!(s.location(&fid(n)).is_none());
    }
}

#[test]
fn a_paced_compaction_takes_its_time_and_a_stopped_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let want = mostly_dead_store(dir.path());
    let s = Store::open(dir.path(), opts()).unwrap();
    let before = segment_ids(dir.path());
    let used = s.capacity().used_bytes;

    // Asked to stop before its first block is copied: the segment stays, and the
    // output begun for it is gone.
    let mut stopped = Pacer::new(0, Box::new(|| true));
    let st = s.compact_segment(before[0], &mut stopped).unwrap();
    assert_eq!(st, CompactStats::default());
    assert_eq!(segment_ids(dir.path()), before, "no output left behind");
    assert_eq!(s.capacity().used_bytes, used);
    assert_eq!(live_set(&s), want);
    // A whole pass asked to stop does not start.
    assert_eq!(
        s.compact(0.3, &mut stopped).unwrap(),
        CompactStats::default()
    );

    // At 32 KiB/s the six live fragments' ~5 KiB of blocks take at least ~0.1 s.
    let t = std::time::Instant::now();
    let st = s
        .compact(0.3, &mut Pacer::new(32 << 10, Box::new(|| false)))
        .unwrap();
    assert_eq!((st.segments, st.copied_puts), (1, 6));
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(80),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(live_set(&s), want);
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
    let st = s.compact_segment(2, &mut Pacer::unlimited()).unwrap();
    assert_eq!((st.kept_tombstones, st.dropped_tombstones), (1, 0));
    assert_eq!(segment_ids(dir.path()), vec![1, 3, 4]);
    drop(s);
    let s = Store::open(dir.path(), one_record_per_segment()).unwrap();
    assert!(s.location(&fid(1)).is_none(), "still deleted");
    // Now the PUT's segment (all dead) goes ...
    let st = s.compact(0.5, &mut Pacer::unlimited()).unwrap();
    assert_eq!((st.segments, st.copied_puts), (1, 0));
    assert_eq!(segment_ids(dir.path()), vec![3, 4]);
    // ... and the tombstone is no longer needed.
    let st = s.compact_segment(4, &mut Pacer::unlimited()).unwrap();
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
        s.compact(0.3, &mut Pacer::unlimited()).unwrap();
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
        assert!(s.compact(0.3, &mut Pacer::unlimited()).unwrap().segments >= 1);
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
        s.compact(0.3, &mut Pacer::unlimited()).unwrap();
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
    let st = s.compact(0.3, &mut Pacer::unlimited()).unwrap();
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
        s.compact_segment(seg, &mut Pacer::unlimited()),
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(
        s.compact(0.01, &mut Pacer::unlimited()).unwrap().segments,
        0
    );
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
                let st = s2.compact(0.2, &mut Pacer::unlimited()).unwrap();
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
    s.compact(0.01, &mut Pacer::unlimited()).unwrap();
    check(&s);
    drop(s);
    let s = Store::open(dir.path(), small).unwrap();
    check(&s);
    s.compact(0.01, &mut Pacer::unlimited()).unwrap();
    check(&s);
    drop(s);
    check(&Store::open(dir.path(), opts()).unwrap());
}
