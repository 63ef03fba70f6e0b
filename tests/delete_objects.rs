//! DeleteObjects on `kura dev` commits one metadata batch per region
//! (`gateway/src/s3/delete.rs`), with boto3 (tests/py/delete_objects.py):
//!
//! 1. 300 objects (some with EC bodies) split over four regions; one
//!    request deletes keys in all of them, with a duplicate key, a missing key
//!    and two If-Match ETags (one wrong): per-key answers as S3 gives them.
//! 2. A split between the gateway's reads and its commit (failpoint
//!    `gateway::delete_objects_before_commit` holds the commit) cuts a
//!    request's keys in two: its batch spans regions and is refused, and the
//!    keys are deleted one by one instead (or, if the gateway's region cache
//!    heard of the split first, the batches follow the new regions).
//! 3. A key overwritten between the gateway's reads and its commit (the
//!    same failpoint): the batch's condition fails and every key is read
//!    and deleted again.
//!
//! After each step the listing and `kura admin usage` agree.
mod common;
use common::{bucket_hex_by_split, metric, object_prefix_hex, split_at, Cluster};

/// `kura_gateway_delete_batches_total{outcome}` and the keys of applied ones.
fn batches(c: &Cluster) -> (f64, f64, f64) {
    let status = c.component("gateway-1").status;
    let n = |outcome: &str| {
        metric(
            &status,
            &format!("kura_gateway_delete_batches_total{{outcome=\"{outcome}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let keys = metric(&status, "kura_gateway_delete_batch_keys_total").unwrap_or(0.0);
    (n("applied"), keys, n("by_key"))
}

#[test]
fn delete_objects_commits_per_region_and_falls_back_key_by_key() {
    let c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://del"]);
    c.must_python("delete_objects.py", &["fill", "del", "300"]);
    let (bucket_hex, _) = bucket_hex_by_split(&c);
    for i in [100, 200] {
        split_at(&c, &object_prefix_hex(&bucket_hex, &format!("d/{i:05}")));
    }
    let out = c.must_python("delete_objects.py", &["spans", "del"]);
    assert!(out.contains("spans: ok"), "{out}");
    // 141 existing keys to delete (140 listed, 155; 20 listed twice is
    // deleted once in a batch, then again alone) in four regions: a few
    // batches, none sent again key by key.
    let (applied, keys, by_key) = batches(&c);
    assert!((3.0..=8.0).contains(&applied), "{applied} batches applied");
    assert_eq!(
        (keys, by_key),
        (141.0, 0.0),
        "keys in applied batches, by-key batches"
    );

    if !c.has_failpoints() {
        eprintln!("built without failpoints: the stale-cache and race steps are skipped");
        return;
    }
    // The gateway holds its commit (its reads are done) while the region
    // [d/00200, end) is cut at d/00250 behind its back.
    let hold = "gateway::delete_objects_before_commit";
    c.must_arm("gateway-1", hold, "return(6000)");
    let stale = c.spawn_python("delete_objects.py", &["stale", "del"]);
    common::wait_until("the stale step's request", 30, &c, || {
        c.dir.join("delete-sent").exists()
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    split_at(&c, &object_prefix_hex(&bucket_hex, "d/00250"));
    let out = stale.wait_with_output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("stale: ok"),
        "{stdout}\n{}",
        c.logs_tail()
    );
    // Unless the gateway's region cache learned the split first (then the
    // batches were cut per region), the one batch spanned two regions and
    // went key by key.
    let (_, _, by_key) = batches(&c);
    assert!(by_key <= 1.0, "{by_key} by-key batches");
    eprintln!("stale step: {by_key} batch(es) redone key by key");

    let out = c.must_python("delete_objects.py", &["race", "del"]);
    assert!(out.contains("race: ok"), "{out}");
    assert_eq!(
        batches(&c).2,
        by_key + 1.0,
        "the batch whose key changed went key by key"
    );
}
