//! Multi-tenancy end to end on `kura dev --gateways 2`: tenants, users and
//! keys made with `kura admin`, then boto3 and plain HTTP as those users and
//! as nobody (tests/py/tenancy.py: the isolation matrix, policy grants,
//! anonymous reads, key changes seen by both gateways within 5 s).
mod common;
use common::{Cluster, KURA};

#[test]
fn tenants_users_keys_and_policies() {
    let c = Cluster::must_start_with(&["--gateways", "2"]);
    let out = c.must_python_env("tenancy.py", &[("KURA_BIN", KURA)]);
    assert!(out.contains("all tenancy checks passed"), "{out}");
}
