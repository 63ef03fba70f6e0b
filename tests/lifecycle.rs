//! Bucket lifecycle end to end on `kura dev --gateways 2` with a 2-second
//! lifecycle day (tests/py/lifecycle.py): the operations and their
//! refusals, expiration by days and date with prefix/tag/size filters,
//! disabled rules, versioned and suspended buckets (current-version rules
//! read one record per key; expiry markers numbered from the clock),
//! incomplete uploads,
//! a GET streaming an object while it expires, exactly one action per
//! expiry across both gateways (their metrics), and a pass whose gateway
//! is killed half way being resumed (by whichever gateway takes the lease).
mod common;
use std::time::{Duration, Instant};

use common::{metric, wait_until, Cluster, KURA};

const EXPIRED: &str = "kura_lifecycle_objects_expired_total";

fn gateway_ids(c: &Cluster) -> Vec<String> {
    c.components()
        .into_iter()
        .filter(|x| x.role == "gateway")
        .map(|x| x.id)
        .collect()
}

fn expired_on(c: &Cluster, id: &str) -> f64 {
    metric(&c.component(id).status, EXPIRED).unwrap_or(0.0)
}

#[test]
fn lifecycle_end_to_end() {
    let mut c = Cluster::must_start_with(&[
        "--gateways",
        "2",
        "--lifecycle-day-secs",
        "2",
        "--lifecycle-interval-secs",
        "1",
        "--lifecycle-ops-per-sec",
        "10",
    ]);
    let out = c.must_python_env(
        "lifecycle.py",
        &[("KURA_BIN", KURA), ("LIFECYCLE_PHASE", "main")],
    );
    println!("{out}");
    assert!(out.contains("all lifecycle checks passed"), "{out}");

    // A pass of 120 expiries at 10 a second takes 12 s: kill the gateway
    // running it once it has done some, and start it again.
    let ids = gateway_ids(&c);
    let base: Vec<f64> = ids.iter().map(|id| expired_on(&c, id)).collect();
    let out = c.must_python_env(
        "lifecycle.py",
        &[("KURA_BIN", KURA), ("LIFECYCLE_PHASE", "resume-setup")],
    );
    let bucket = out
        .lines()
        .find_map(|l| l.strip_prefix("BUCKET "))
        .expect("bucket name")
        .to_string();
    let mut owner = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while owner.is_none() && Instant::now() < deadline {
        owner = ids
            .iter()
            .zip(&base)
            .find(|(id, b)| expired_on(&c, id) - **b >= 20.0)
            .map(|(id, _)| id.clone());
        std::thread::sleep(Duration::from_millis(100));
    }
    let owner = owner.expect("a gateway expiring the objects");
    let other = ids
        .iter()
        .find(|id| **id != owner)
        .expect("two gateways")
        .clone();
    let done_before_kill =
        expired_on(&c, &owner) - base[ids.iter().position(|i| *i == owner).unwrap()];
    assert!(
        done_before_kill < 110.0,
        "the pass ended before the kill ({done_before_kill} done): nothing to resume"
    );
    println!("killing {owner} after {done_before_kill} expiries of its pass");
    c.must_kill9(&owner);
    c.must_restart(&owner);
    let out = c.must_python_env(
        "lifecycle.py",
        &[
            ("KURA_BIN", KURA),
            ("LIFECYCLE_PHASE", "resume-check"),
            ("LIFECYCLE_BUCKET", &bucket),
        ],
    );
    assert!(out.contains("resume check passed"), "{out}");
    // Whoever took the lease over resumed the saved pass.
    let resumed: f64 = [&owner, &other]
        .iter()
        .filter_map(|id| {
            metric(
                &c.component(id).status,
                "kura_lifecycle_passes_resumed_total",
            )
        })
        .sum();
    assert!(resumed >= 1.0, "no gateway resumed the interrupted pass");
    println!("resumed passes: {resumed}");
    // The restarted gateway's counters began at 0; the rest of the pass
    // was done once: what the survivors report is at most what was left.
    let other_base = base[ids.iter().position(|i| *i == other).unwrap()];
    let after_kill = expired_on(&c, &owner) + (expired_on(&c, &other) - other_base);
    assert!(
        after_kill <= 120.0 - done_before_kill,
        "{after_kill} expiries after the kill, {done_before_kill} before: some object was expired twice"
    );
    wait_until("both gateways ready", 30, &c, || {
        ids.iter()
            .all(|id| common::http_status(&c.component(id).status, "/ready") == Some(200))
    });
}
