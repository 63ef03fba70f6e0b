//! boto3 against a real cluster: buckets, objects, metadata, ranges,
//! conditionals, listing, multi-delete, multipart rules, presigned URLs,
//! SigV2, streaming checksums, wrong credentials and malformed requests.
mod common;
use common::Cluster;

#[test]
fn boto3_conformance_suite() {
    let c = Cluster::must_start();
    let out = c.must_python("s3_suite.py", &[]);
    assert!(out.contains("all checks passed"), "{out}");
}
