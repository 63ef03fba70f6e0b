//! Storage quotas and usage accounting on `kura dev --gateways 2`
//! (tests/py/quota.py):
//! bucket, user and tenant quotas at their exact boundaries, a burst of
//! parallel PUTs, overwrites and deletes counted, usage equal to listings;
//! then every metadata store is killed -9 and restarted, and the usage
//! report is unchanged.
mod common;
use common::{Cluster, KURA};

/// `kura admin usage --tenant acme`, when it succeeds.
fn usage(c: &Cluster) -> Option<serde_json::Value> {
    let out = std::process::Command::new(KURA)
        .arg("admin")
        .arg("--cluster")
        .arg(c.dir.join("cluster.json"))
        .args(["usage", "--tenant", "acme"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

#[test]
fn quotas_hold_at_the_boundary_and_usage_is_exact() {
    let mut c = Cluster::must_start_with(&["--gateways", "2"]);
    let out = c.must_python_env("quota.py", &[("KURA_BIN", KURA)]);
    assert!(out.contains("all quota checks passed"), "{out}");
    let before: serde_json::Value = serde_json::from_slice(
        &std::fs::read(c.dir.join("usage-before.json")).expect("usage-before.json"),
    )
    .expect("json");
    for id in c.ids_of("metashard") {
        c.must_kill9(&id);
    }
    for id in c.ids_of("metashard") {
        c.must_restart(&id);
    }
    common::wait_until("usage to be readable after the restart", 60, &c, || {
        usage(&c).is_some()
    });
    assert_eq!(
        usage(&c).map(stored),
        Some(stored(before)),
        "usage after kill -9 of every metadata store"
    );
}

/// A usage report without its traffic counts (requests go on meanwhile).
fn stored(mut v: serde_json::Value) -> serde_json::Value {
    for section in ["tenants", "users", "buckets"] {
        for e in v[section].as_array_mut().into_iter().flatten() {
            if let Some(o) = e.as_object_mut() {
                for k in ["requests", "bytes_in", "bytes_out"] {
                    o.remove(k);
                }
            }
        }
    }
    v
}
