//! The dead-bucket sweeper end to end (docs/decisions/0037) on `kura dev
//! --gateways 2 --lifecycle-interval-secs 1` (tests/py/dead_bucket.py):
//! - a PUT whose bucket is deleted while its body is half sent commits
//!   under the dead bucket id and its gateway dies before the check that
//!   would undo it: the sweeper deletes the version and its body is
//!   reclaimed, other buckets untouched;
//! - a DeleteBucket whose gateway dies after marking the bucket: the
//!   sweeper finishes it once the mark is stale (the bucket's upload is
//!   aborted, its part reclaimed);
//! - the lifecycle lease of a region merged away is deleted.
//!
//! Needs a `kura` built with `--features failpoints`; without, it says so
//! on stderr and returns.
mod common;
use std::time::Duration;

use common::{metric, wait_until, Cluster, KURA};

fn victim(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("VICTIM "))
        .expect("the victim gateway's id")
        .to_string()
}

/// The process of `id` logged that failpoint `name` aborted it.
fn must_have_aborted_at(c: &Cluster, id: &str, name: &str) {
    let log =
        std::fs::read_to_string(c.dir.join("logs").join(format!("{id}.log"))).unwrap_or_default();
    assert!(
        log.contains(&format!("failpoint {name}: abort")),
        "{id} did not die at {name}:\n{}",
        c.logs_tail()
    );
}

fn gateways_sum(c: &Cluster, name: &str) -> f64 {
    c.components()
        .into_iter()
        .filter(|x| x.role == "gateway")
        .filter_map(|x| metric(&x.status, name))
        .sum()
}

fn phase(c: &Cluster, phase: &str) -> String {
    let out = c.must_python_env(
        "dead_bucket.py",
        &[("KURA_BIN", KURA), ("DEAD_PHASE", phase)],
    );
    println!("{out}");
    out
}

#[test]
fn dead_buckets_are_swept() {
    let mut c = Cluster::must_start_with(&["--gateways", "2", "--lifecycle-interval-secs", "1"]);
    if !c.has_failpoints() {
        eprintln!(
            "SKIPPED: {KURA} was built without `--features failpoints` (GET /fail is 404); \
             `make test` builds it with them"
        );
        return;
    }

    // A write left under a deleted bucket.
    let id = victim(&phase(&c, "leak"));
    c.must_see_dead(&id, 30);
    must_have_aborted_at(&c, &id, "gateway::before_bucket_check");
    c.must_restart(&id);
    assert!(phase(&c, "leak-check").contains("leak check passed"));

    // A DeleteBucket left half done.
    let id = victim(&phase(&c, "half-delete"));
    c.must_see_dead(&id, 30);
    must_have_aborted_at(&c, &id, "gateway::delete_bucket_after_mark");
    c.must_restart(&id);
    assert!(phase(&c, "half-check").contains("half-delete check passed"));

    // A lease of a region merged away: split the object family off (its
    // region gets a lease at its first pass), merge it back.
    let r = c.must_pdctl(&["region", "key", "--hex", "02"]);
    let parent = r["id"].as_u64().expect("region id");
    if r["start_key"].as_str() != Some("02") {
        c.must_pdctl(&[
            "operator",
            "add",
            "split-region",
            &parent.to_string(),
            "--key",
            "02",
        ]);
    }
    wait_until("the object family in a region of its own", 30, &c, || {
        c.must_pdctl(&["region", "key", "--hex", "02"])["start_key"].as_str() == Some("02")
    });
    let right = c.must_pdctl(&["region", "key", "--hex", "02"])["id"]
        .as_u64()
        .expect("region id");
    let left = c.must_pdctl(&["region", "key", "--hex", "01"])["id"]
        .as_u64()
        .expect("region id");
    let passes = gateways_sum(&c, "kura_lifecycle_passes_total");
    wait_until("a lifecycle pass over the new region", 30, &c, || {
        gateways_sum(&c, "kura_lifecycle_passes_total") >= passes + 2.0
    });
    std::thread::sleep(Duration::from_secs(2));
    let dropped = gateways_sum(&c, "kura_lifecycle_leases_dropped_total");
    c.must_pdctl(&[
        "operator",
        "add",
        "merge-region",
        &right.to_string(),
        &left.to_string(),
    ]);
    wait_until(
        "the lease of the merged-away region to be deleted",
        60,
        &c,
        || gateways_sum(&c, "kura_lifecycle_leases_dropped_total") > dropped,
    );
}
