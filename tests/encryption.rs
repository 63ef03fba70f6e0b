//! Server-side encryption end to end on `kura dev` (tests/py/encryption.py):
//! SSE-C and SSE-S3 with boto3 and the aws CLI, bucket default encryption,
//! SSE-KMS refused, and a plaintext marker searched for in every file of
//! the data nodes' and metashards' data dirs: absent when written
//! encrypted, present when written in the clear.
mod common;
use common::{Cluster, KURA};

#[test]
fn sse_c_sse_s3_bucket_default_and_ciphertext_on_disk() {
    let c = Cluster::must_start();
    assert!(
        c.dir.join("master.key").exists(),
        "kura dev makes a master key under its data dir"
    );
    let out = c.must_python_env("encryption.py", &[("KURA_BIN", KURA)]);
    assert!(out.contains("all encryption checks passed"), "{out}");
}
