//! O_DIRECT and segment format 2 (decision 0042); format 1 segments still read.

use super::*;

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
    let st = s.scrub(None, &mut Pacer::unlimited(), &mut |_, _| {});
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
    let st = s.compact_segment(1, &mut Pacer::unlimited()).unwrap();
    assert_eq!(
        st.copied_puts, 1,
        "only fragment 1 is still live in the v1 segment"
    );
    assert!(s.delete(&fid(7)).unwrap());
    let st = s.compact(0.01, &mut Pacer::unlimited()).unwrap();
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
    w.append_block(bytes::Bytes::from_static(b"x"), crc32c(b"x"))
        .unwrap();
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
    let block = bytes::Bytes::from(body(5, BLOCK));
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
                        pw.append_block(block.clone(), crc).unwrap();
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
