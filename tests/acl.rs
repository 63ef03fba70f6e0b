//! S3 ACLs end to end on `kura dev`: canned and explicit ACLs on buckets and
//! objects, BucketOwnerEnforced, PublicAccessBlock, with users made by
//! `kura admin`, boto3, the aws CLI and unsigned HTTP (tests/py/acl.py).
mod common;
use common::{Cluster, KURA};

#[test]
fn acls_ownership_and_public_access_block() {
    let c = Cluster::must_start();
    let out = c.must_python_env("acl.py", &[("KURA_BIN", KURA)]);
    assert!(out.contains("all acl checks passed"), "{out}");
}
