//! Store tests: real files in a temp dir, no runtime. The basics (put, read, reopen,
//! torn tails, corruption, quarantine, scrub, segments) and the helpers are here;
//! compaction, group commit and O_DIRECT / segment formats have their own files.

mod compaction;
mod direct_io;
mod group_commit;

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
        w.append_block(bytes::Bytes::copy_from_slice(chunk), crc32c(chunk))
            .unwrap();
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
    let (seg, a_off, end) = {
        let s = Store::open(dir.path(), opts()).unwrap();
        for n in 1..=3 {
            put(&s, n, &body(n, 2 * BS as usize));
        }
        let la = s.location(&fid(1)).unwrap();
        let lc = s.location(&fid(3)).unwrap();
        (
            la.segment,
            la.record_offset,
            lc.record_offset + lc.record_len,
        )
    };
    let path = dir.path().join("segments").join(segment_file_name(seg));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.write_all_at(b"XXXX", a_off).unwrap(); // smash A's record magic

    let s = Store::open(dir.path(), opts()).unwrap();
    assert!(s.location(&fid(1)).is_none());
    assert_eq!(read_all(&s, 2).unwrap(), body(2, 2 * BS as usize));
    assert_eq!(read_all(&s, 3).unwrap(), body(3, 2 * BS as usize));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        end,
        "nothing truncated but the zeros written ahead"
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
            w.append_block(bytes::Bytes::copy_from_slice(chunk), crc32c(chunk))
                .unwrap();
        }
        w.commit().unwrap();
    }
    let clean = s.scrub(None, &mut Pacer::unlimited(), &mut |_, _| {});
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
    let pg1 = s.scrub(Some(1), &mut Pacer::unlimited(), &mut |_, _| {});
    assert_eq!((pg1.fragments, pg1.corrupt), (18, 2));
    assert!(s.location(&fid(7)).is_none() && s.location(&fid(13)).is_none());
    assert!(
        s.location(&fid(22)).is_some(),
        "other placement groups untouched"
    );
    let mut seen = 0;
    let all = s.scrub(None, &mut Pacer::unlimited(), &mut |v, t| {
        assert!(v <= t);
        seen = v;
    });
    assert_eq!((all.fragments, all.corrupt, seen), (37, 1, 38));
    assert_eq!(s.live_fragments(), 37);
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.live_fragments(), 37);
    let again = s.scrub(None, &mut Pacer::unlimited(), &mut |_, _| {});
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
    let st = s.scrub(None, &mut Pacer::unlimited(), &mut |_, _| {});
    assert_eq!((st.fragments, st.corrupt), (1, 1));
    assert!(s.location(&fid(2)).is_none());
    assert_eq!(read_all(&s, 1).unwrap(), body(1, 2 * BS as usize));
}

#[test]
fn tombstone_survives_restart_even_in_an_older_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open_exclusive(dir.path(), opts());
        // Hold segment 1 with an open writer so fragment 2 lands in segment 2 ...
        let mut w = s.begin_put(header(1)).unwrap();
        put(&s, 2, &body(2, 100));
        w.append_block(
            bytes::Bytes::copy_from_slice(&[1, 2, 3]),
            crc32c(&[1, 2, 3]),
        )
        .unwrap();
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
                        w.append_block(bytes::Bytes::copy_from_slice(chunk), crc32c(chunk))
                            .unwrap();
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
        w.append_block(bytes::Bytes::copy_from_slice(&blk), crc32c(&blk))
            .unwrap();
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
        w.append_block(bytes::Bytes::copy_from_slice(&full), crc32c(&full) ^ 1),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        w.append_block(bytes::Bytes::copy_from_slice(&[]), 0),
        Err(StoreError::InvalidArgument(_))
    ));
    let big = body(1, BS as usize + 1);
    assert!(matches!(
        w.append_block(bytes::Bytes::copy_from_slice(&big), crc32c(&big)),
        Err(StoreError::InvalidArgument(_))
    ));
    w.append_block(
        bytes::Bytes::copy_from_slice(&full[..10]),
        crc32c(&full[..10]),
    )
    .unwrap();
    assert!(matches!(
        w.append_block(bytes::Bytes::copy_from_slice(&full), crc32c(&full)),
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

/// The index must not keep a slice of the message a header came in: tonic
/// decodes `data_id` as a view into the whole received buffer (the first
/// block with it), and holding it pinned that buffer for the fragment's life.
#[test]
fn the_index_owns_its_headers_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    // A received message: 16 bytes of id followed by a block's worth of data.
    let message = Bytes::from(vec![9u8; (16 + 256) << 10]);
    let mut h = header(9);
    h.id = Some(FragmentId {
        data_id: message.slice(0..16),
        shard: 3,
    });
    let id = h.id.clone().unwrap();
    let mut w = s.begin_put(h).unwrap();
    let block = vec![1u8; BS as usize];
    w.append_block(bytes::Bytes::copy_from_slice(&block), crc32c(&block))
        .unwrap();
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
