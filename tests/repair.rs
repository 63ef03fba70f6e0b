//! The data nodes' repair worker: healing fragments that missed a write or
//! were found corrupt, and orphan GC of bodies no metadata references.
mod common;
use common::{datanode_metric_sum, pattern, wait_until, Cluster};
use std::path::Path;
use std::time::Duration;

const REPAIRED: &str = "kura_datanode_repaired_fragments_total";
const BACKLOG: &str = "kura_datanode_repair_backlog";
const PASSES: &str = "kura_datanode_repair_passes_total";

/// Waits until every data node finished a pass that started after now and
/// the summed repair backlog is zero.
fn wait_backlog_drained(c: &Cluster) {
    let passes = datanode_metric_sum(c, PASSES);
    wait_until(
        "two more repair passes with an empty backlog",
        120,
        c,
        || {
            datanode_metric_sum(c, PASSES) >= passes + 12.0
                && datanode_metric_sum(c, BACKLOG) == 0.0
        },
    );
}

/// Waits until `count` more fragments than `before` were rebuilt, then until
/// the backlog is drained.
fn wait_rebuilt(c: &Cluster, before: f64, count: usize) {
    wait_until("the missing fragments to be rebuilt", 120, c, || {
        datanode_metric_sum(c, REPAIRED) >= before + count as f64
    });
    wait_backlog_drained(c);
}

/// HEAD of `key` in bucket `heal` fails: no such object.
/// Waits until paused_put.py has paused AND the gateway is streaming its body
/// to all 6 data nodes. The paused file alone is not enough: the client's
/// first bytes may still sit in socket buffers before the gateway has even
/// looked up the bucket, and a test that kills the metashards then gets an
/// early (correct) 503 with no body stored at all.
fn wait_until_streaming(c: &Cluster, paused: &Path) {
    wait_until("the PUT to pause mid-body", 30, c, || {
        paused.exists() && datanode_metric_sum(c, "kura_datanode_fragment_puts_in_progress") >= 6.0
    });
}

fn assert_absent(c: &Cluster, key: &str) {
    let head = c.aws(&["s3api", "head-object", "--bucket", "heal", "--key", key]);
    assert!(!head.status.success(), "{key} must not exist");
}

fn put(c: &Cluster, key: &str, data: &[u8]) {
    let f = c.dir.join("put.tmp");
    std::fs::write(&f, data).unwrap();
    c.must_put_file("heal", key, &f);
}

fn check(c: &Cluster, key: &str, data: &[u8]) {
    let f = c.dir.join("get.tmp");
    c.must_get_file("heal", key, &f);
    assert!(std::fs::read(&f).unwrap() == data, "{key} differs");
}

/// Bodies written while a zone was down have only 4 of 6 fragments; once the
/// zone is back the repair worker rebuilds the missing ones first, so the
/// objects then survive losing a *different* zone.
#[test]
fn fragments_missed_during_a_zone_outage_are_healed() {
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://heal"]);
    let before: Vec<(String, Vec<u8>)> = (0..2)
        .map(|i| {
            (
                format!("before/{i}"),
                pattern((2 << 20) + i * 777, i as u64),
            )
        })
        .collect();
    for (k, d) in &before {
        put(&c, k, d);
    }
    for id in ["datanode-3", "datanode-4"] {
        c.must_kill9(id);
    }
    let during: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("during/{i}"),
                pattern((3 << 20) + i * 1001, 100 + i as u64),
            )
        })
        .collect();
    for (k, d) in &during {
        put(&c, k, d);
    }
    // Before the restart: nothing can be rebuilt onto the dead nodes yet.
    let repaired = datanode_metric_sum(&c, REPAIRED);
    for id in ["datanode-3", "datanode-4"] {
        c.must_restart(id);
    }
    wait_rebuilt(&c, repaired, 2 * during.len());
    // Each had exactly k = 4 fragments: rebuilt in a pass's urgent round,
    // ahead of any other PG's work.
    let urgent = datanode_metric_sum(&c, "kura_datanode_repair_urgent_bodies_total");
    assert!(
        urgent >= during.len() as f64,
        "{urgent} urgent rebuilds for {} bodies acked with k",
        during.len()
    );
    // Zone z1 goes now: the bodies written during the z2 outage need their
    // healed z2 fragments to be read.
    for id in ["datanode-1", "datanode-2"] {
        c.must_kill9(id);
    }
    for (k, d) in before.iter().chain(&during) {
        check(&c, k, d);
    }
}

/// Corrupt fragment files are detected by the scrubber (or a read),
/// quarantined and rebuilt, so the objects then survive losing two other nodes.
#[test]
fn corrupt_fragments_are_scrubbed_and_rebuilt() {
    let mut c = Cluster::must_start_with(&["--scrub-interval-secs", "3"]);
    c.must_aws(&["s3", "mb", "s3://heal"]);
    let objects: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("o{i}"), pattern((2 << 20) + 999 * i, 7 + i as u64)))
        .collect();
    for (k, d) in &objects {
        put(&c, k, d);
    }
    // Before the damage: nothing needs rebuilding yet.
    let repaired = datanode_metric_sum(&c, REPAIRED);
    for node in ["datanode-2", "datanode-6"] {
        flip_bytes_in_segments(&c.dir.join(node).join("segments"));
    }
    let corrupt = "kura_datanode_corrupt_fragments_total";
    wait_until(
        "the scrubber to quarantine the corrupt fragments",
        120,
        &c,
        || datanode_metric_sum(&c, corrupt) >= (2 * objects.len()) as f64,
    );
    wait_rebuilt(&c, repaired, 2 * objects.len());
    for id in ["datanode-1", "datanode-3"] {
        c.must_kill9(id);
    }
    for (k, d) in &objects {
        check(&c, k, d);
    }
}

/// Flips one byte every 4 KiB after the segment header, in place.
fn flip_bytes_in_segments(dir: &Path) {
    use std::io::{Seek, Write};
    for entry in std::fs::read_dir(dir).expect("segments dir") {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        for off in (4096..bytes.len()).step_by(4096) {
            bytes[off] ^= 0x5a;
        }
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
    }
}

/// A PUT whose body was stored but whose metadata commit failed (the
/// metadata stores died meanwhile) leaves an orphan: orphan GC deletes its
/// fragments once it is older than --orphan-after-secs, after checking the
/// metadata; a committed object of the same age is never collected.
#[test]
fn orphan_gc_deletes_uncommitted_bodies_and_keeps_committed_ones() {
    let mut c = Cluster::must_start_with(&["--orphan-after-secs", "20"]);
    c.must_aws(&["s3", "mb", "s3://heal"]);
    let keep = pattern(3 << 20, 5);
    put(&c, "keep", &keep);

    let (paused, resume) = (c.dir.join("paused"), c.dir.join("resume"));
    let put = c.spawn_python(
        "paused_put.py",
        &[
            "heal",
            "orphan",
            &(6 << 20).to_string(),
            &(2 << 20).to_string(),
            paused.to_str().unwrap(),
            resume.to_str().unwrap(),
        ],
    );
    wait_until_streaming(&c, &paused);
    let stores = c.ids_of("metashard");
    for id in &stores {
        c.must_kill9(id);
    }
    std::fs::write(&resume, b"").unwrap();
    let out = put.wait_with_output().expect("paused put");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.starts_with("503"),
        "the PUT cannot commit without metadata: {answer}"
    );
    for id in &stores {
        c.must_restart(id);
    }
    wait_until("orphan GC to delete the 6 fragments", 150, &c, || {
        datanode_metric_sum(&c, "kura_datanode_orphan_fragments_deleted_total") >= 6.0
    });
    assert_absent(&c, "orphan");
    // Older than --orphan-after by now, referenced, so kept.
    wait_backlog_drained(&c);
    check(&c, "keep", &keep);
    assert_eq!(
        datanode_metric_sum(&c, "kura_datanode_orphan_fragments_deleted_total"),
        6.0,
        "only the orphan's fragments may be deleted"
    );
}

/// Deleting an object while one of its data nodes is down leaves that
/// node's fragment and the GC record; once the node is back the gateway's GC
/// sweeper deletes the fragment and drains the queue.
#[test]
fn gc_sweeper_finishes_deletes_that_missed_a_node() {
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://heal"]);
    let data = pattern(2 << 20, 3);
    put(&c, "gone", &data);
    c.must_kill9("datanode-5");
    c.must_aws(&["s3", "rm", "s3://heal/gone"]);
    let gw = c.component("gateway-1").status;
    wait_until("the GC record to be counted as backlog", 60, &c, || {
        common::metric(&gw, "kura_gateway_gc_backlog").unwrap_or(0.0) >= 1.0
    });
    c.must_restart("datanode-5");
    let node = c.component("datanode-5").status;
    wait_until("the sweeper to delete the missed fragment", 60, &c, || {
        common::metric(&node, "kura_datanode_fragments_deleted_total").unwrap_or(0.0) >= 1.0
            && common::metric(&gw, "kura_gateway_gc_backlog") == Some(0.0)
            && common::metric(&gw, "kura_gateway_gc_reclaimed_total").unwrap_or(0.0) >= 1.0
    });
}

/// A PUT cut off midway — the client disconnects, or the gateway is killed —
/// never commits a fragment on any data node: the nodes abort the unfinished
/// records, so nothing is left for orphan GC, and no object appears.
#[test]
fn aborted_puts_leave_no_fragment() {
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://heal"]);
    let keep = pattern(2 << 20, 9);
    put(&c, "keep", &keep);
    let committed = |c: &Cluster| datanode_metric_sum(c, "kura_datanode_fragments_put_total");
    let before = committed(&c);
    for (round, victim) in ["client", "gateway"].iter().enumerate() {
        let (paused, resume) = (
            c.dir.join(format!("paused{round}")),
            c.dir.join(format!("resume{round}")),
        );
        let mut client = c.spawn_python(
            "paused_put.py",
            &[
                "heal",
                &format!("cut-{victim}"),
                &(8 << 20).to_string(),
                &(3 << 20).to_string(),
                paused.to_str().unwrap(),
                resume.to_str().unwrap(),
            ],
        );
        wait_until_streaming(&c, &paused);
        if *victim == "gateway" {
            c.must_kill9("gateway-1");
        }
        let _ = client.kill();
        let _ = client.wait();
        if *victim == "gateway" {
            c.must_restart("gateway-1");
            c.must_become_ready(Duration::from_secs(60));
        }
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(
            committed(&c),
            before,
            "a PUT cut off by its {victim} must not commit fragments"
        );
        assert_absent(&c, &format!("cut-{victim}"));
    }
    check(&c, "keep", &keep);
}
