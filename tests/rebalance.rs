//! Data nodes joining and leaving a running cluster: PD moves placement-group
//! slots step by step, the data nodes' repair rebuilds the moved fragments on
//! their new members, and no read or write fails meanwhile.
mod common;
use common::{datanode_metric_sum, load_status, wait_until, Cluster};
use std::time::Instant;

fn pending_moves(c: &Cluster) -> Option<u64> {
    c.pd_json("/pd/api/v1/placement")["rebalance"]["pending_moves"].as_u64()
}

/// Slots a data node (by status address) holds, per PD.
fn slots_of(c: &Cluster, address: &str) -> Option<u64> {
    let v = c.pd_json("/pd/api/v1/datanodes");
    v["datanodes"]
        .as_array()?
        .iter()
        .find(|n| n["address"].as_str() == Some(address))
        .and_then(|n| n["slots"].as_u64())
}

/// Two data nodes join a running `kura dev` under read/write load: slots move
/// to them, the repair rebuilds their fragments, no request fails. Then one
/// is decommissioned: its slots move away and its fragments are rebuilt
/// elsewhere before it is released, so every object still reads after it is
/// killed.
#[test]
fn data_nodes_join_and_leave_without_failing_a_request() {
    let c = Cluster::must_start_with(&[
        "--rebalance-interval-secs",
        "2",
        "--max-moves-per-step",
        "64",
    ]);
    let common::MixedLoad {
        child: load,
        acks,
        status,
        stop,
    } = c.start_mixed_load("move", "400");
    wait_until("load warm-up", 60, &c, || load_status(&status)[0] >= 5);

    let n7 = c.start_extra_datanode(7, "z1");
    let n8 = c.start_extra_datanode(8, "z2");
    let (a7, a8) = (n7.grpc.clone(), n8.grpc.clone());
    // Each step waits for the data nodes' repair of the previous one (about
    // heal-after + 5 s + a pass in kura dev), so the moves take a few steps of ~20 s.
    let joined = Instant::now();
    wait_until("slots to move to the new nodes", 180, &c, || {
        slots_of(&c, &a7).unwrap_or(0) > 0
            && slots_of(&c, &a8).unwrap_or(0) > 0
            && pending_moves(&c) == Some(0)
    });
    eprintln!("moves to the new nodes done in {:?}", joined.elapsed());
    let fragments_on = |node: &common::ExtraNode| {
        common::metric(&node.status, "kura_datanode_fragments_put_total").unwrap_or(0.0)
    };
    wait_until(
        "the new nodes to receive rebuilt fragments",
        120,
        &c,
        || fragments_on(&n7) > 0.0 && fragments_on(&n8) > 0.0,
    );
    let backlog = |c: &Cluster| {
        datanode_metric_sum(c, "kura_datanode_repair_backlog")
            + common::metric(&n7.status, "kura_datanode_repair_backlog").unwrap_or(0.0)
            + common::metric(&n8.status, "kura_datanode_repair_backlog").unwrap_or(0.0)
    };
    let passes = |c: &Cluster| {
        datanode_metric_sum(c, "kura_datanode_repair_passes_total")
            + common::metric(&n7.status, "kura_datanode_repair_passes_total").unwrap_or(0.0)
            + common::metric(&n8.status, "kura_datanode_repair_passes_total").unwrap_or(0.0)
    };
    let wait_drained = |c: &Cluster| {
        let start = passes(c);
        wait_until("the repair backlog to drain", 180, c, || {
            passes(c) >= start + 16.0 && backlog(c) == 0.0
        });
    };
    wait_drained(&c);
    assert!(
        datanode_metric_sum(&c, "kura_datanode_stray_fragments_deleted_total") > 0.0,
        "old members must drop the fragments whose slots moved"
    );

    // Decommission datanode-7: its slots move away, its fragments are rebuilt elsewhere.
    let pdctl = c.must_run_kura(&[
        "pdctl",
        "-u",
        &c.pd_url(),
        "datanode",
        "decommission",
        &node_id(&c, &a7).to_string(),
    ]);
    assert!(
        pdctl.contains("Leaving") || pdctl.contains("Decommissioned"),
        "{pdctl}"
    );
    let leaving = Instant::now();
    wait_until("datanode-7 to be decommissioned", 240, &c, || {
        let v = c.pd_json("/pd/api/v1/datanodes");
        v["datanodes"].as_array().into_iter().flatten().any(|n| {
            n["address"].as_str() == Some(a7.as_str())
                && n["admin_state"].as_str() == Some("Decommissioned")
        })
    });
    eprintln!("datanode-7 decommissioned in {:?}", leaving.elapsed());
    // Decommissioned only once every serving node's repair covered the map that
    // took its last slot: each reports its passes to PD.
    let v = c.pd_json("/pd/api/v1/datanodes");
    for n in v["datanodes"].as_array().into_iter().flatten() {
        if n["state_name"].as_str() == Some("Up") {
            assert!(n["repair_passes"].as_u64().unwrap_or(0) > 0, "{n}");
            assert!(n["repair_map_version"].as_u64().unwrap_or(0) > 0, "{n}");
        }
    }
    wait_drained(&c);
    drop(n7); // released: its process goes away

    std::fs::write(&stop, b"").unwrap();
    let out = load.wait_with_output().expect("load output");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    let s = load_status(&status);
    assert_eq!(s[1], 0, "wrong bytes:\n{report}");
    assert_eq!(s[2], 0, "reads failed during the moves:\n{report}");
    assert_eq!(s[4], 0, "PUTs failed during the moves:\n{report}");
    // Everything written, before and during the moves, reads back without datanode-7.
    let verify = c.must_python("verify.py", &["move", acks.to_str().unwrap()]);
    assert!(verify.contains(" 0 bad"), "{verify}");
    drop(n8);
}

fn node_id(c: &Cluster, address: &str) -> u64 {
    let v = c.pd_json("/pd/api/v1/datanodes");
    v["datanodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["address"].as_str() == Some(address))
        .and_then(|n| n["id"].as_u64())
        .expect("node registered with PD")
}
