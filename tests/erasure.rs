//! Erasure coding (EC 4+2, the `kura dev` default) under failure: a whole
//! zone down, more than m nodes down, corrupt fragment files. Every read is
//! compared byte for byte; a read may fail with 503 but never return wrong
//! bytes.
mod common;
use common::{load_status, pattern, Cluster};
use std::time::{Duration, Instant};

fn datanodes_of_zone(c: &Cluster, zone: &str) -> Vec<String> {
    c.components()
        .into_iter()
        .filter(|x| x.role == "datanode" && x.zone == zone)
        .map(|x| x.id)
        .collect()
}

fn reconstructed(c: &Cluster) -> f64 {
    common::metric(
        &c.component("gateway-1").status,
        "kura_gateway_reconstructed_stripes_total",
    )
    .unwrap_or(0.0)
}

/// Kill -9 both data nodes of one zone while a client reads (whole objects
/// and random ranges) and writes: every read returns the exact bytes, every
/// PUT succeeds, and every acknowledged PUT reads back, before and after the
/// nodes return.
#[test]
fn zone_outage_keeps_reads_exact_and_writes_going() {
    let mut c = Cluster::must_start();
    let common::MixedLoad {
        child: load,
        acks,
        status,
        stop,
    } = c.start_mixed_load("ecb", "240");
    let wait_for = |what: &str, done: &dyn Fn([u64; 5]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !done(load_status(&status)) {
            assert!(
                Instant::now() < deadline,
                "load made no progress ({what}): {:?}",
                load_status(&status)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("warm-up", &|s| s[0] >= 5 && s[3] >= 5);
    let before_kill = load_status(&status);
    let reconstructed_before = reconstructed(&c);
    let zone = datanodes_of_zone(&c, "z2");
    assert_eq!(zone.len(), 2, "kura dev has two data nodes per zone");
    for id in &zone {
        c.must_kill9(id);
    }
    let at_kill = load_status(&status);
    wait_for("zone down", &|s| {
        s[0] >= at_kill[0] + 30 && s[3] >= at_kill[3] + 15
    });
    let during = load_status(&status);
    assert!(
        reconstructed(&c) > reconstructed_before,
        "reads with a zone down must have reconstructed stripes"
    );
    for id in &zone {
        c.must_restart(id);
    }
    let back = load_status(&status);
    wait_for("zone back", &|s| {
        s[0] >= back[0] + 10 && s[3] >= back[3] + 5
    });
    std::fs::write(&stop, b"").unwrap();
    let out = load.wait_with_output().expect("load output");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    let end = load_status(&status);
    assert_eq!(end[1], 0, "wrong bytes returned:\n{report}");
    assert_eq!(
        end[2], 0,
        "reads failed (before kill {before_kill:?}, during {during:?}):\n{report}"
    );
    assert_eq!(
        end[4], 0,
        "PUTs failed (before kill {before_kill:?}, during {during:?}):\n{report}"
    );
    assert!(out.status.success(), "{report}");
    let verify = c.must_python("verify.py", &["ecb", acks.to_str().unwrap()]);
    assert!(verify.contains(" 0 bad"), "{verify}");
}

/// With three of the six fragments of a 4+2 body gone, a GET fails with a
/// 503 (never partial or wrong bytes); with one node back it succeeds again.
#[test]
fn more_than_m_nodes_down_fails_cleanly_with_503() {
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://ecb"]);
    let data = pattern(3 << 20, 11);
    let src = c.dir.join("obj");
    std::fs::write(&src, &data).unwrap();
    c.must_put_file("ecb", "big", &src);
    for id in ["datanode-1", "datanode-3", "datanode-5"] {
        c.must_kill9(id);
    }
    let out_path = c.dir.join("back");
    let out = c.aws(&[
        "s3api",
        "get-object",
        "--bucket",
        "ecb",
        "--key",
        "big",
        out_path.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "GET with 3 of 6 fragments must fail");
    assert!(
        err.contains("ServiceUnavailable") || err.contains("503") || err.contains("SlowDown"),
        "expected a 503, got: {err}"
    );
    if let Ok(partial) = std::fs::read(&out_path) {
        assert!(
            partial.is_empty(),
            "no bytes of a failed read may reach the file"
        );
    }
    // Metadata still answers.
    assert!(c
        .must_aws(&["s3api", "head-object", "--bucket", "ecb", "--key", "big"])
        .contains("3145728"));
    c.must_restart("datanode-3");
    c.must_get_file("ecb", "big", &out_path);
    assert_eq!(std::fs::read(&out_path).unwrap(), data);
}

/// Flips bytes all through the segment files of two data nodes (m = 2): GETs
/// of whole objects and of ranges still return the exact bytes.
#[test]
fn flipped_bytes_in_fragment_files_are_read_around() {
    let c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://ecb"]);
    let objects: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("o{i}"), pattern((2 << 20) + 1000 * i, i as u64)))
        .collect();
    let src = c.dir.join("obj");
    for (k, data) in &objects {
        std::fs::write(&src, data).unwrap();
        c.must_put_file("ecb", k, &src);
    }
    let before = reconstructed(&c);
    for node in ["datanode-2", "datanode-6"] {
        let dir = c.dir.join(node).join("segments");
        for entry in std::fs::read_dir(&dir).expect("segments dir") {
            let path = entry.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            // Skip the segment header; flip one byte every 4 KiB after it.
            let mut flipped = 0;
            for off in (4096..bytes.len()).step_by(4096) {
                bytes[off] ^= 0x5a;
                flipped += 1;
            }
            if flipped > 0 {
                // Rewrite in place (same inode: the node's open handle sees it).
                use std::io::{Seek, Write};
                let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.seek(std::io::SeekFrom::Start(0)).unwrap();
                f.write_all(&bytes).unwrap();
                f.sync_all().unwrap();
            }
        }
    }
    let back = c.dir.join("back");
    for (k, data) in &objects {
        c.must_get_file("ecb", k, &back);
        assert_eq!(&std::fs::read(&back).unwrap(), data, "{k} differs");
        let range = format!("bytes={}-{}", 300_000, 1_700_000);
        c.must_aws(&[
            "s3api",
            "get-object",
            "--bucket",
            "ecb",
            "--key",
            k,
            "--range",
            &range,
            back.to_str().unwrap(),
        ]);
        assert_eq!(
            std::fs::read(&back).unwrap(),
            &data[300_000..=1_700_000],
            "{k} range differs"
        );
    }
    assert!(
        reconstructed(&c) > before,
        "corrupt fragments must have been read around by reconstruction"
    );
}

/// A data node whose disk is "full" (free space below its floor) takes no
/// new fragments; PD's map marks it read-only, writers skip it, and PUTs keep
/// succeeding on the other five nodes. Reads still use it.
#[test]
fn full_data_node_is_skipped_by_writes() {
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://ecb"]);
    let old = pattern(2 << 20, 1);
    let src = c.dir.join("obj");
    std::fs::write(&src, &old).unwrap();
    c.must_put_file("ecb", "old", &src);
    c.must_kill9("datanode-1");
    // 1 PB floor: no disk here has that much free.
    c.must_restart_with("datanode-1", &["--min-free-bytes", "1000000000000000"]);
    common::wait_until("PD to see the node read-only", 30, &c, || {
        c.pd_json("/pd/api/v1/datanodes")["datanodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["read_only"] == true)
    });
    std::thread::sleep(Duration::from_secs(4)); // the gateway polls the map every 3 s
    let put_before = common::metric(
        &c.component("datanode-1").status,
        "kura_datanode_fragments_put_total",
    );
    for i in 0..4 {
        let data = pattern((1 << 20) + i * 3, 50 + i as u64);
        std::fs::write(&src, &data).unwrap();
        c.must_put_file("ecb", &format!("new{i}"), &src);
        let back = c.dir.join("back");
        c.must_get_file("ecb", &format!("new{i}"), &back);
        assert_eq!(std::fs::read(&back).unwrap(), data);
    }
    assert_eq!(
        common::metric(
            &c.component("datanode-1").status,
            "kura_datanode_fragments_put_total"
        ),
        put_before,
        "the full node must not have stored fragments"
    );
    let back = c.dir.join("back");
    c.must_get_file("ecb", "old", &back);
    assert_eq!(std::fs::read(&back).unwrap(), old);
}

/// Every data node full, or data nodes killed in the middle of a PUT: the
/// client gets the S3 XML error, never a reset connection, also when it
/// sends its whole body before reading the answer (no `Expect:
/// 100-continue`); an answered 200 means the exact bytes are stored.
#[test]
fn puts_refused_early_get_their_answer() {
    const BODY: usize = 48 << 20;
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://ecb"]);
    let answers = |c: &Cluster, mode: &str, key: &str| -> Vec<String> {
        let args = [mode, "ecb", key, &BODY.to_string(), "3"];
        c.must_python("whole_body_put.py", &args)
            .lines()
            .map(str::to_string)
            .collect()
    };
    // Refused before the body is read: the access check.
    assert_eq!(answers(&c, "anonymous", "anon"), ["403 AccessDenied"; 3]);
    // The placement group has no writable data node.
    let datanodes = c.ids_of("datanode");
    for id in &datanodes {
        c.must_kill9(id);
        c.must_restart_with(id, &["--min-free-bytes", "1000000000000000"]);
    }
    let read_only_count = |c: &Cluster| {
        c.pd_json("/pd/api/v1/datanodes")["datanodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["read_only"] == true)
            .count()
    };
    common::wait_until("PD to see every node read-only", 30, &c, || {
        read_only_count(&c) == datanodes.len()
    });
    std::thread::sleep(Duration::from_secs(4)); // the gateway polls the map every 3 s
    assert_eq!(answers(&c, "signed", "full"), ["503 ServiceUnavailable"; 3]);
    for id in &datanodes {
        c.must_kill9(id);
        c.must_restart(id);
    }
    common::wait_until("PD to see the nodes writable", 30, &c, || {
        read_only_count(&c) == 0
    });
    std::thread::sleep(Duration::from_secs(4));
    // Two nodes of different zones die while the body streams: fewer than
    // k + 1 fragments can be written.
    let (paused, resume, md5) = (
        c.dir.join("paused"),
        c.dir.join("resume"),
        c.dir.join("md5"),
    );
    let put = c.spawn_python(
        "paused_put.py",
        &[
            "ecb",
            "mid",
            &(24 << 20).to_string(),
            &(8 << 20).to_string(),
            paused.to_str().unwrap(),
            resume.to_str().unwrap(),
            md5.to_str().unwrap(),
        ],
    );
    common::wait_until("the PUT to pause mid-body", 30, &c, || {
        paused.exists()
            && common::datanode_metric_sum(&c, "kura_datanode_fragment_puts_in_progress") >= 6.0
    });
    c.must_kill9("datanode-1");
    c.must_kill9("datanode-3");
    std::fs::write(&resume, b"").unwrap();
    let out = put.wait_with_output().expect("paused put");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the answer was lost: {stdout}");
    let answer = stdout.lines().last().unwrap_or_default();
    if answer.starts_with("200") {
        let back = c.dir.join("back");
        c.must_get_file("ecb", "mid", &back);
        let sent = std::fs::read_to_string(&md5).unwrap();
        use md5::{Digest, Md5};
        let got = hex::encode(Md5::digest(std::fs::read(&back).unwrap()));
        assert_eq!(got, sent, "an acknowledged PUT must read back exactly");
    } else {
        assert!(
            answer.starts_with("503") && answer.contains("<Code>ServiceUnavailable</Code>"),
            "a PUT that lost its quorum answers 503 in XML: {stdout}"
        );
    }
}

/// EC 8+3 (S3 `STANDARD_IA`) needs 11 data nodes in at least 4 zones: with
/// five more nodes (one more in z1..z3, two in a new zone z4) PD builds its
/// map, a PUT with that class is stored 8+3 (1.375× on disk), reads survive
/// any three nodes down and fail cleanly with a fourth.
#[test]
fn ec_8_3_with_eleven_nodes_in_four_zones() {
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://wide"]);
    let put_ia = |c: &Cluster, key: &str, data: &[u8]| {
        let f = c.dir.join("obj");
        std::fs::write(&f, data).unwrap();
        c.must_aws(&[
            "s3api",
            "put-object",
            "--bucket",
            "wide",
            "--key",
            key,
            "--storage-class",
            "STANDARD_IA",
            "--body",
            f.to_str().unwrap(),
        ]);
    };
    // Not placeable yet: six nodes in three zones.
    let f = c.dir.join("obj");
    std::fs::write(&f, pattern(100_000, 1)).unwrap();
    let refused = c.aws(&[
        "s3api",
        "put-object",
        "--bucket",
        "wide",
        "--key",
        "early",
        "--storage-class",
        "STANDARD_IA",
        "--body",
        f.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("InvalidStorageClass"));

    let extra: Vec<common::ExtraNode> = [(7, "z1"), (8, "z2"), (9, "z3"), (10, "z4"), (11, "z4")]
        .iter()
        .map(|(n, z)| c.start_extra_datanode(*n, z))
        .collect();
    common::wait_until("PD to build EC_8_3", 60, &c, || {
        c.pd_json("/pd/api/v1/placement")["classes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k["storage_class"] == "EC_8_3" && k["built"] == true)
    });
    std::thread::sleep(Duration::from_secs(4)); // the gateway polls the map every 3 s
    let data = pattern((5 << 20) + 12_345, 83);
    put_ia(&c, "big", &data);
    let head = c.must_aws(&["s3api", "head-object", "--bucket", "wide", "--key", "big"]);
    assert!(head.contains("STANDARD_IA"), "{head}");
    let back = c.dir.join("back");
    c.must_get_file("wide", "big", &back);
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // Every EC_8_3 PG spans all 11 nodes: any three may go.
    for id in ["datanode-1", "datanode-3", "datanode-5"] {
        c.must_kill9(id);
    }
    c.must_get_file("wide", "big", &back);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        data,
        "read with 3 of 11 down"
    );
    c.must_kill9("datanode-2");
    let out = c.aws(&[
        "s3api",
        "get-object",
        "--bucket",
        "wide",
        "--key",
        "big",
        back.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "4 of 11 down: 8+3 cannot be read");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ServiceUnavailable"));
    drop(extra);
}
