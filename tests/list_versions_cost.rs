//! What a LIST of a versioned bucket costs, measured by the metashard
//! stores' own count of keys their scans read (decision 0034): 2,000 keys
//! with 5 versions each list reading no more than 1.5× what the same keys
//! unversioned read, while ListObjectVersions of them reads every version
//! (tests/py/list_versions_cost.py). On the same cluster, object ACLs
//! addressed by `versionId` (tests/py/acl_versions.py).
mod common;
use common::{Cluster, KURA};

#[test]
fn versioned_list_costs_an_unversioned_list_and_acls_address_versions() {
    let c = Cluster::must_start();
    let out = c.must_python_env("list_versions_cost.py", &[("KURA_BIN", KURA)]);
    for line in out.lines() {
        eprintln!("{line}");
    }
    assert!(
        out.contains("all list_versions_cost checks passed"),
        "{out}"
    );
    let out = c.must_python_env("acl_versions.py", &[("KURA_BIN", KURA)]);
    for line in out.lines() {
        eprintln!("{line}");
    }
    assert!(out.contains("all acl_versions checks passed"), "{out}");
}
