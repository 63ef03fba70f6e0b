//! S3 Object Lock end to end on `kura dev` (tests/py/object_lock.py): lock
//! buckets and their refusals, default retention, GOVERNANCE with and
//! without a bypass (and a user lacking s3:BypassGovernanceRetention),
//! COMPLIANCE and legal holds against the root key (also racing it),
//! copies, multipart and the aws CLI; the Content-MD5 or checksum the lock
//! XML bodies and DeleteObjects need (decision 0036).
mod common;
use common::{Cluster, KURA};

#[test]
fn retention_legal_hold_and_bypass_as_aws() {
    let c = Cluster::must_start();
    let out = c.must_python_env("object_lock.py", &[("KURA_BIN", KURA)]);
    for line in out.lines() {
        eprintln!("{line}");
    }
    assert!(out.contains("all object lock checks passed"), "{out}");
}
