//! Group commit on data nodes (decision 0039), end to end: concurrent small PUTs from
//! boto3 share fdatasyncs on the data nodes, and every acknowledged object reads back
//! after every data node was killed with SIGKILL and restarted.
mod common;
use common::{datanode_metric_sum, Cluster};

const OBJECTS: &str = "240";

#[test]
fn concurrent_small_puts_share_fsyncs_and_survive_kill9() {
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://gcommit"]);
    let records = |c: &Cluster| datanode_metric_sum(c, "kura_datanode_group_commit_batch_size_sum");
    let syncs = |c: &Cluster| datanode_metric_sum(c, "kura_datanode_group_commit_batch_size_count");
    let (r0, s0) = (records(&c), syncs(&c));
    let out = c.must_python("group_commit.py", &["put", "gcommit", OBJECTS, "16"]);
    eprint!("{out}");
    let (r, s) = (records(&c) - r0, syncs(&c) - s0);
    eprintln!(
        "data nodes: {r} records in {s} group fsyncs ({:.2} per fsync)",
        r / s.max(1.0)
    );
    let objects: f64 = OBJECTS.parse().unwrap();
    // Each PUT is acknowledged with at least k+1 = 5 fragments durable, all small.
    assert!(
        r >= 5.0 * objects,
        "small fragments did not go through group commit: {r} records"
    );
    assert!(
        s > 0.0 && s < r,
        "concurrent fragments should share fsyncs: {r} records, {s} fsyncs"
    );

    for id in c.ids_of("datanode") {
        c.must_kill9(&id);
    }
    for id in c.ids_of("datanode") {
        c.must_restart(&id);
    }
    c.must_python("group_commit.py", &["verify", "gcommit", OBJECTS]);
    if c.has_failpoints() {
        // A data node dies after writing a batch, before its fsync: nothing of that batch
        // was acknowledged by it; after recovery the object is whole or absent.
        let node = "datanode-2";
        c.must_arm(node, "datanode::put_before_sync", "abort");
        let data = common::pattern(64 << 10, 7);
        let f = c.dir.join("fp-body");
        std::fs::write(&f, &data).unwrap();
        let ok = c
            .aws(&["s3", "cp", f.to_str().unwrap(), "s3://gcommit/fp"])
            .status
            .success();
        c.must_see_dead(node, 10);
        let log = std::fs::read_to_string(c.dir.join("logs").join(format!("{node}.log")))
            .unwrap_or_default();
        assert!(
            log.contains("failpoint datanode::put_before_sync: abort"),
            "{node} did not die in the group commit path:\n{}",
            c.logs_tail()
        );
        c.must_restart(node);
        let exists = c
            .aws(&["s3api", "head-object", "--bucket", "gcommit", "--key", "fp"])
            .status
            .success();
        assert!(exists || !ok, "an acknowledged PUT is gone");
        if exists {
            let back = c.dir.join("fp-back");
            c.must_get_file("gcommit", "fp", &back);
            assert_eq!(std::fs::read(&back).unwrap(), data);
        }
        c.must_python("group_commit.py", &["verify", "gcommit", OBJECTS]);
    }
    // Reads need 4 of 6 fragments: with one node gone, what the other five recovered
    // from their shared segments must still hold every object.
    let victim = c.ids_of("datanode")[0].clone();
    c.must_kill9(&victim);
    c.must_python("group_commit.py", &["verify", "gcommit", OBJECTS]);
}
