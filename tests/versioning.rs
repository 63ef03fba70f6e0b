//! S3 object versioning end to end on `kura dev --gateways 2` (boto3 and the
//! aws CLI, tests/py/versioning.py): every bucket state and transition, the
//! null version, delete markers, GET/HEAD/DELETE/Copy by version id,
//! ListObjectVersions paging, DeleteObjects with versions, usage of every
//! version, two gateways writing versions of one key at once, and old
//! versions' bodies surviving the data nodes' orphan GC (which is why the
//! cluster runs with a short orphan age).
mod common;
use common::{Cluster, KURA};

#[test]
fn versioning_end_to_end() {
    let c = Cluster::must_start_with(&[
        "--gateways",
        "2",
        "--orphan-after-secs",
        "8",
        "--repair-interval-secs",
        "2",
    ]);
    let out = c.must_python_env("versioning.py", &[("KURA_BIN", KURA)]);
    assert!(out.contains("all versioning checks passed"), "{out}");
}
