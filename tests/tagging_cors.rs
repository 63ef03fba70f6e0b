//! Object and bucket tagging and CORS end to end on `kura dev`: every
//! operation and limit through boto3 and the aws CLI, tag updates racing
//! overwrites, preflights and CORS headers as raw HTTP, and headless
//! Chromium fetching from another origin (tests/py/tagging_cors.py).
mod common;
use common::{Cluster, KURA};

#[test]
fn tagging_and_cors() {
    let c = Cluster::must_start();
    let out = c.must_python_env("tagging_cors.py", &[("KURA_BIN", KURA)]);
    assert!(out.contains("all tagging and cors checks passed"), "{out}");
}
