//! Versioning under IAM and skewed clocks on `kura dev --gateways 2`
//! (tests/py/versioning_iam.py, docs/decisions/0035): users whose policies
//! allow only the plain actions (s3:GetObject, s3:DeleteObject, ...) or only
//! their *Version forms get exactly what AWS gives them, through boto3; and a
//! gateway whose clock runs an hour behind (failpoint
//! `gateway::clock_offset_ms`) still makes each of its writes the
//! latest version.
mod common;
use common::{Cluster, KURA};

#[test]
fn version_actions_and_a_lagging_gateway() {
    let c = Cluster::must_start_with(&["--gateways", "2"]);
    let skewed = c.has_failpoints();
    if skewed {
        c.must_arm("gateway-2", "gateway::clock_offset_ms", "return(-3600000)");
    } else {
        eprintln!("built without --features failpoints: clock skew not exercised");
    }
    let out = c.must_python_env(
        "versioning_iam.py",
        &[
            ("KURA_BIN", KURA),
            ("SKEWED", if skewed { "1" } else { "0" }),
        ],
    );
    for line in out.lines() {
        eprintln!("{line}");
    }
    assert!(out.contains("all versioning_iam checks passed"), "{out}");
    if skewed {
        assert!(
            out.contains("ok   a gateway an hour behind still writes the latest version"),
            "{out}"
        );
    }
}
